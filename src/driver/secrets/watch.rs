//! The end of swarm tasks: the watcher that asks the engine which tasks holding a token still
//! run, and revokes the others' tokens; the tokens taken back after a restart.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{jitter, valid_secret_name, valid_task_id, Issued, TaskKey, TaskLease, TASK_POLL};
use crate::dockerd::Engine;
use crate::driver::restore::left_until;
use crate::driver::{Driver, Edges};
use crate::lease::plan::{Action, Deadline};
use crate::lease::Job;
use crate::report::chain;
use crate::state::{Holder, Store};
use crate::vault::{IssuedToken, Lease};

pub(super) fn poll_interval() -> Duration {
    std::env::var("VAULT_SECRETS_TASK_POLL_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(TASK_POLL)
}

impl<E: Edges> Driver<E> {
    /// Asks the engine which of the tasks holding a token still run, and ends those that do
    /// not; returns how many it ended. While the engine cannot tell, nothing is ended.
    pub async fn check_tasks(&self) -> usize {
        let keys = self.tasks.keys();
        if keys.is_empty() {
            return 0;
        }
        let mut ids: Vec<String> = keys.iter().map(|k| k.task.clone()).collect();
        ids.dedup();
        let asked = async { self.swarm_engine()?.tasks(&ids).await };
        let found = match asked.await {
            Ok(found) => found,
            Err(e) => {
                if !self.tasks.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %chain(&e), "cannot list the swarm's tasks: the tokens of swarm secrets are kept, and renewed no more, until it answers");
                }
                return 0;
            }
        };
        if self.tasks.failing.swap(false, Ordering::Relaxed) {
            tracing::info!("the swarm's tasks can be listed again");
        }
        let now = Instant::now();
        let mut ended = 0;
        for key in keys {
            let state = found.iter().find(|t| t.id == key.task);
            match state {
                Some(t) if !t.ended() => {
                    if let Some(slot) = self.tasks.slot(&key) {
                        if let Some(issued) = slot.lock().await.as_mut() {
                            issued.seen = Some(now);
                        }
                    }
                }
                _ => {
                    let state = state.map_or("gone", |t| t.state.as_str());
                    ended += usize::from(self.end_task(&key, state).await);
                }
            }
        }
        ended
    }

    /// Revokes the token of a task that ended (and with it every lease it made).
    async fn end_task(&self, key: &TaskKey, state: &str) -> bool {
        let Some(slot) = self.tasks.slot(key) else { return false };
        let mut guard = slot.lock().await;
        let Some(issued) = guard.take() else { return false };
        self.leases.remove(&Job::task(&key.task, &key.secret));
        let span = tracing::info_span!("task", secret = %key.secret, task = %key.task);
        let _enter = span.enter();
        let token = &issued.token;
        self.revoke(&key.secret, &Holder::Task(key.task.clone()), &token.token, &token.accessor)
            .await;
        if let Err(e) = self.store.delete_task(&key.task, &key.secret) {
            tracing::error!(error = %chain(&e), "cannot delete the task's record");
        }
        drop(guard);
        self.tasks.forget(key, &slot);
        tracing::info!(state, accessor = %token.accessor, "the swarm task ended: its token revoked");
        true
    }

    /// Takes back the tasks' tokens a previous run recorded; the watcher then ends those whose
    /// tasks are gone.
    pub fn restore_tasks(&self) {
        let now = Instant::now();
        let mut restored = 0;
        for record in self.store.load_tasks() {
            if !valid_secret_name(&record.secret) || !valid_task_id(&record.task) {
                continue;
            }
            let key = TaskKey { task: record.task.clone(), secret: record.secret.clone() };
            let left = record.token_expires_at.map(left_until).unwrap_or_default();
            let leases = record.leases.iter().map(|l| {
                let lease = Lease {
                    id: l.id.clone(),
                    duration: crate::vault::ttl(l.duration_secs),
                    renewable: l.renewable,
                };
                // Renewed at two thirds of what is left (what was asked is not known here).
                let left = l.expires_at.map(left_until).unwrap_or(lease.duration);
                let d = Deadline::after_grant(now, left, left, lease.renewable, jitter());
                TaskLease { lease, deadline: (d.action == Action::Renew).then_some(d) }
            });
            let issued = Issued {
                service: record.service.clone(),
                token: IssuedToken {
                    token: record.token.clone(),
                    accessor: record.accessor.clone(),
                    ttl: left,
                    renewable: true,
                },
                ttl: Duration::from_secs(record.ttl_secs),
                // What was left, not what was asked: renewed soon.
                deadline: Deadline::after_grant(now, left, left, true, jitter()),
                leases: leases.collect(),
                seen: None,
                failing_since: None,
            };
            self.leases.set(Job::task(&key.task, &key.secret), issued.next());
            self.tasks.slots.lock().unwrap().insert(key, Arc::new(Some(issued).into()));
            restored += 1;
        }
        if restored > 0 {
            tracing::info!(restored, "swarm tasks' tokens taken back from the private tmpfs");
            self.tasks.added.notify_one();
        }
    }

    /// Polls the engine every second while any task holds a token (see [`Self::check_tasks`]).
    pub async fn watch_tasks(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let interval = poll_interval();
        loop {
            if self.tasks.keys().is_empty() {
                tokio::select! {
                    _ = self.tasks.added.notified() => {}
                    _ = shutdown.changed() => return,
                }
            }
            self.check_tasks().await;
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// How many tasks hold a token (for tests and status).
    pub fn task_tokens(&self) -> usize {
        self.tasks.keys().len()
    }
}

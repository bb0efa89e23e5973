//! Swarm secrets: Docker's secret provider (`/SecretProvider.GetSecret`, swarmkit
//! `manager/drivers/secrets.go`). A manager's dispatcher calls it when it assigns a task that
//! uses a secret created with `--driver` this plugin; the secret's labels are its options.
//!
//! - **Labels** ([`parse_labels`]): `path`, `field`, `format` (`json`, `env`), `param.KEY`,
//!   `ttl`, `policies`, validated by [`VolumeSpec::parse`] as the volume options of the same
//!   names. Without `field` the value is the data as JSON (`format=json`). Volume options that
//!   make no sense for one value Docker writes itself (`path.NAME`, `file`, `template`, `uid`,
//!   `gid`, `mode`, `size`, `refresh`, `signal`, `role-id`) and `wrapped-token` (labels are
//!   shown by `docker secret inspect`) are refused by name. Labels with a `.` in their name
//!   (`com.docker.stack.namespace`, which `docker stack deploy` adds) belong to other tools and
//!   are ignored; any other label is refused as unknown.
//! - **Each task its own value** (`DoNotReuse`): a child token of the plugin's identity (`ttl`,
//!   `policies`), recorded at once in the private tmpfs (never the value), the path read with
//!   it. Any failure revokes it. Its token and leases are renewed while the task runs.
//! - **Asked again** for the same task and secret (the dispatcher asks again when a node's
//!   session with it starts over): the path is read again with the task's token; what either
//!   read made (two database users) ends with the task.
//! - **The end of a task**: [`Driver::watch_tasks`] polls the engine's `GET /tasks` (Engine
//!   20.10 and 26.1 emit no task events) every second while any task holds a token; a task
//!   that is gone or in a state it never leaves (`complete`, `failed`, `shutdown`, `rejected`,
//!   `orphaned`, `remove`) has its token revoked, and with it every lease it made. A token is
//!   renewed only while the watcher has lately seen its task alive: when the engine cannot
//!   tell, the token ends at its TTL.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::Notify;
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::mount::unix_at;
use super::{jitter, Driver, DriverError, Edges};
use crate::audit::{Event, Kind};
use crate::files::{self, RenderError};
use crate::lease::plan::{self, Action, Deadline};
use crate::lease::Job;
use crate::report::chain;
use crate::state::{Holder, LeaseRecord, StateError, Store, TaskRecord};
use crate::vault::{ChildTokenRequest, IssuedToken, Lease, Token, Vault, VaultError};
use crate::volume::{OptionError, VolumeSpec};

mod labels;
mod status;
mod watch;
use labels::valid_task_id;
pub use labels::{parse_labels, valid_secret_name};
pub use status::{TaskLeaseState, TaskLeaseStatus, TaskStatus};
use watch::poll_interval;

/// The largest value a swarm secret holds (swarmkit `validation.MaxSecretSize`, 500 KiB).
pub const MAX_VALUE: usize = 500 * 1024;

/// How often the engine is asked which tasks still run, while any task holds a token.
/// `VAULT_SECRETS_TASK_POLL_MS` overrides it.
pub const TASK_POLL: Duration = Duration::from_secs(1);

/// How recently the watcher must have seen a task alive for its token to be renewed.
const SEEN_WITHIN: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("invalid secret name {name:?}: expected 1 to 64 letters, digits, `_`, `.` or `-`, starting with a letter or digit")]
    InvalidName { name: String },
    #[error("invalid task ID {id:?}: expected 1 to 64 letters and digits (the request must come from a swarm manager's dispatcher)")]
    InvalidTask { id: String },
    #[error("secret {secret}: label `{}`: {}", .label.option, .label.message)]
    Labels {
        secret: String,
        /// Shown in the message itself (not a `source`: its text is the message).
        label: OptionError,
    },
    #[error("the plugin is not logged in to vault: {reason}")]
    NoIdentity { reason: String },
    #[error("cannot create the token of task {task} for secret {secret}")]
    Token {
        secret: String,
        task: String,
        #[source]
        source: VaultError,
    },
    #[error("cannot read secret {secret} for task {task}")]
    Read {
        secret: String,
        task: String,
        #[source]
        source: VaultError,
    },
    #[error("cannot make the value of secret {secret}")]
    Render {
        secret: String,
        #[source]
        source: RenderError,
    },
    #[error("the value of secret {secret} is {size} bytes; a swarm secret holds at most {MAX_VALUE}: give a `field`")]
    TooLarge { secret: String, size: usize },
    #[error("cannot record the token of task {task} for secret {secret}")]
    State {
        secret: String,
        task: String,
        #[source]
        source: StateError,
    },
    #[error("secret {secret} failed inside the plugin ({message}); its token was revoked")]
    Internal { secret: String, message: String },
}

/// What the dispatcher asks for (the fields of swarmkit's `SecretsProviderRequest` the plugin
/// uses).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretRequest {
    /// The swarm secret's name.
    pub secret: String,
    /// The secret's labels: its options.
    pub labels: BTreeMap<String, String>,
    pub task: String,
    /// The service's name (for the token's metadata and the logs).
    pub service: String,
}

/// A secret's value. `Debug` shows only its length; zeroed when dropped.
pub struct SecretValue(pub Zeroizing<Vec<u8>>);

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretValue({} bytes)", self.0.len())
    }
}

/// The key of one task's secret.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct TaskKey {
    task: String,
    secret: String,
}

/// A lease of a task's secret, and when to renew it (`None`: it cannot be renewed further and
/// ends at its expiry; a swarm secret cannot change under a running task).
struct TaskLease {
    lease: Lease,
    deadline: Option<Deadline>,
}

/// The token a task's secret was read with, and its leases.
struct Issued {
    service: String,
    token: IssuedToken,
    /// The TTL asked for (renewals ask for it again).
    ttl: Duration,
    deadline: Deadline,
    leases: Vec<TaskLease>,
    /// When the watcher last saw the task alive.
    seen: Option<Instant>,
    /// Since when its renewals have failed (none succeeded since).
    failing_since: Option<Instant>,
}

impl Issued {
    fn next(&self) -> Instant {
        let leases = self.leases.iter().filter_map(|l| l.deadline.map(|d| d.act_at));
        leases.fold(self.deadline.act_at, Instant::min)
    }

    fn record(&self, key: &TaskKey) -> TaskRecord {
        let now = Instant::now();
        TaskRecord {
            task: key.task.clone(),
            secret: key.secret.clone(),
            service: self.service.clone(),
            token: self.token.token.clone(),
            accessor: self.token.accessor.clone(),
            ttl_secs: self.ttl.as_secs(),
            token_expires_at: unix_at(self.deadline.remaining(now)),
            leases: self
                .leases
                .iter()
                .map(|l| LeaseRecord {
                    source: 0,
                    id: l.lease.id.clone(),
                    duration_secs: l.lease.duration.as_secs(),
                    renewable: l.lease.renewable,
                    expires_at: unix_at(
                        l.deadline.map_or(Some(l.lease.duration), |d| d.remaining(now)),
                    ),
                })
                .collect(),
        }
    }
}

type TaskSlot = Arc<tokio::sync::Mutex<Option<Issued>>>;

/// The tasks holding a token, each in a slot locked across its Vault calls.
#[derive(Default)]
pub(super) struct Tasks {
    slots: Mutex<BTreeMap<TaskKey, TaskSlot>>,
    /// Wakes the watcher when a task comes.
    added: Notify,
    /// The engine's last answer failed (logged once per outage).
    failing: AtomicBool,
}

impl Tasks {
    fn slot(&self, key: &TaskKey) -> Option<TaskSlot> {
        self.slots.lock().unwrap().get(key).cloned()
    }

    fn keys(&self) -> Vec<TaskKey> {
        self.slots.lock().unwrap().keys().cloned().collect()
    }

    fn forget(&self, key: &TaskKey, slot: &TaskSlot) {
        let mut slots = self.slots.lock().unwrap();
        if slots.get(key).is_some_and(|current| Arc::ptr_eq(current, slot)) {
            slots.remove(key);
        }
    }
}

impl<E: Edges> Driver<E> {
    /// `/SecretProvider.GetSecret`: the value of `request.secret` for `request.task`, read
    /// with a token of the task's own.
    #[tracing::instrument(skip_all, fields(secret = %shown(&request.secret), task = %shown(&request.task)))]
    pub async fn get_secret(&self, request: &SecretRequest) -> Result<SecretValue, SecretError> {
        let result = self.value_for(request).await;
        if let Err(e) = &result {
            let event = Event::new(Kind::Error, shown(&request.secret)).mount(shown(&request.task));
            self.audit.record(event.detail(format!("secret failed: {}", chain(e))));
            tracing::warn!(error = %chain(e), "a swarm secret failed: the task does not get it");
        }
        result
    }

    async fn value_for(&self, request: &SecretRequest) -> Result<SecretValue, SecretError> {
        let secret = &request.secret;
        if !valid_secret_name(secret) {
            return Err(SecretError::InvalidName { name: secret.chars().take(100).collect() });
        }
        if !valid_task_id(&request.task) {
            return Err(SecretError::InvalidTask { id: request.task.chars().take(100).collect() });
        }
        let spec = parse_labels(&request.labels, &self.defaults)
            .map_err(|label| SecretError::Labels { secret: secret.clone(), label })?;
        let key = TaskKey { task: request.task.clone(), secret: secret.clone() };
        let (slot, mut guard) = loop {
            let slot = self.tasks.slots.lock().unwrap().entry(key.clone()).or_default().clone();
            let guard = slot.clone().lock_owned().await;
            // The watcher may have ended it while this waited: take a fresh slot then.
            if self.tasks.slot(&key).is_some_and(|current| Arc::ptr_eq(&current, &slot)) {
                break (slot, guard);
            }
        };
        let result = match guard.as_mut() {
            Some(issued) => self.read_again(&key, &spec, issued).await,
            None => match self.issue(&key, &spec, request).await {
                Ok((issued, value)) => {
                    self.leases.set(Job::task(&key.task, secret), issued.next());
                    *guard = Some(issued);
                    self.tasks.added.notify_one();
                    Ok(value)
                }
                Err(e) => Err(e),
            },
        };
        if guard.is_none() {
            drop(guard);
            self.tasks.forget(&key, &slot);
        }
        result
    }

    /// A fresh token for the task, recorded before it is used; the path read with it. Any
    /// failure (a panic included) revokes it.
    async fn issue(
        &self,
        key: &TaskKey,
        spec: &VolumeSpec,
        request: &SecretRequest,
    ) -> Result<(Issued, SecretValue), SecretError> {
        let service = if crate::volume::valid_volume_name(&request.service) {
            request.service.clone()
        } else {
            String::new() // only for metadata and logs: a strange one is left out
        };
        let child = ChildTokenRequest {
            policies: spec.policies.clone(),
            ttl: spec.ttl,
            display_name: format!("vault-secrets-swarm-{}", key.secret),
            meta: vec![
                ("secret".into(), key.secret.clone()),
                ("task_id".into(), key.task.clone()),
                ("service".into(), service.clone()),
            ],
        };
        // Through `as_plugin`: a plugin token Vault no longer knows is replaced by a login, and
        // the token create tried once more, as for a mount.
        let created = self
            .as_plugin(|parent| {
                let child = &child;
                // In the secret's `namespace`: the child, and every request made with it.
                let parent = parent.in_namespace(spec.namespace.as_ref());
                async move { self.vault.create_child_token(&parent, child).await }
            })
            .await
            .map_err(|e| match e {
                DriverError::NoIdentity { reason } => SecretError::NoIdentity { reason },
                other => SecretError::NoIdentity { reason: chain(&other) },
            })?;
        let token = created.map_err(|source| SecretError::Token {
            secret: key.secret.clone(),
            task: key.task.clone(),
            source,
        })?;
        let now = Instant::now();
        let deadline = Deadline::after_grant(now, token.ttl, spec.ttl, token.renewable, jitter());
        let mut issued = Issued {
            service,
            token,
            ttl: spec.ttl,
            deadline,
            leases: Vec::new(),
            seen: None,
            failing_since: None,
        };
        // Recorded before anything is read with it: a crash from here on is cleaned up at the
        // next start, when the task turns out to be gone.
        let recorded = self.store.save_task(&issued.record(key)).map_err(|source| {
            SecretError::State { secret: key.secret.clone(), task: key.task.clone(), source }
        });
        let read = match recorded {
            Ok(()) => AssertUnwindSafe(self.read_value(key, spec, &issued.token.token))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| {
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic".into());
                    tracing::error!(%message, "a swarm secret panicked; cleaning up");
                    Err(SecretError::Internal { secret: key.secret.clone(), message })
                }),
            Err(e) => Err(e),
        };
        match read {
            Ok((value, lease)) => {
                issued.leases.extend(lease.map(|l| task_lease(l, now)));
                self.save(key, &issued);
                let leases = issued.leases.iter().map(|l| l.lease.id.as_str());
                self.audit.record(
                    Event::new(Kind::Secret, &key.secret)
                        .mount(&key.task)
                        .accessor(&issued.token.accessor)
                        .leases(leases)
                        .detail(format!("swarm task of service {}", issued.service)),
                );
                tracing::info!(accessor = %issued.token.accessor, service = %issued.service, "swarm secret issued to a task");
                Ok((issued, value))
            }
            Err(e) => {
                let token = &issued.token;
                self.revoke(
                    &key.secret,
                    &Holder::Task(key.task.clone()),
                    &token.token,
                    &token.accessor,
                )
                .await;
                let _ = self.store.delete_task(&key.task, &key.secret);
                Err(e)
            }
        }
    }

    /// The same task asks again: the path is read again with its token.
    async fn read_again(
        &self,
        key: &TaskKey,
        spec: &VolumeSpec,
        issued: &mut Issued,
    ) -> Result<SecretValue, SecretError> {
        let (value, lease) = self.read_value(key, spec, &issued.token.token).await?;
        issued.leases.extend(lease.map(|l| task_lease(l, Instant::now())));
        self.save(key, issued);
        self.leases.set(Job::task(&key.task, &key.secret), issued.next());
        tracing::info!(accessor = %issued.token.accessor, "the task asked again: read again with its token");
        Ok(value)
    }

    /// Reads the secret's path with `token` and renders its value.
    async fn read_value(
        &self,
        key: &TaskKey,
        spec: &VolumeSpec,
        token: &Token,
    ) -> Result<(SecretValue, Option<Lease>), SecretError> {
        let secret = self.vault.read(token, &spec.sources[0]).await.map_err(|source| {
            SecretError::Read { secret: key.secret.clone(), task: key.task.clone(), source }
        })?;
        let lease = secret.lease.clone();
        let rendered = files::render(spec, std::slice::from_ref(&secret), &self.templates_dir)
            .map_err(|source| SecretError::Render { secret: key.secret.clone(), source });
        let value = match rendered {
            Ok(files) => files.into_iter().next().map(|f| f.contents).unwrap_or_default(),
            Err(e) => return Err(e),
        };
        if value.len() > MAX_VALUE {
            return Err(SecretError::TooLarge { secret: key.secret.clone(), size: value.len() });
        }
        Ok((SecretValue(value), lease))
    }

    fn save(&self, key: &TaskKey, issued: &Issued) {
        if let Err(e) = self.store.save_task(&issued.record(key)) {
            // It works without it; only a restart of the plugin would lose track of it.
            tracing::error!(error = %chain(&e), "cannot record the task's token in the private runtime directory");
        }
    }

    /// Renews what is due of a task's token and leases; returns when to come back.
    #[tracing::instrument(skip_all, fields(secret = %secret, task = %task))]
    pub(super) async fn task_upkeep(&self, task: &str, secret: &str) -> Option<Instant> {
        let key = TaskKey { task: task.to_owned(), secret: secret.to_owned() };
        let slot = self.tasks.slot(&key)?;
        let mut guard = slot.lock().await;
        let issued = guard.as_mut()?;
        let now = Instant::now();
        if issued.deadline.expired(now) {
            // Nothing of it is left in Vault: its leases went with it.
            tracing::warn!(accessor = %issued.token.accessor, "the task's token expired");
            *guard = None;
            drop(guard);
            self.tasks.forget(&key, &slot);
            let _ = self.store.delete_task(task, secret);
            return None;
        }
        if issued.seen.is_none_or(|at| now.duration_since(at) >= SEEN_WITHIN) {
            // The watcher has not seen the task alive lately: no renewal (the token ends at its
            // TTL unless the task is seen again before).
            return Some(now + poll_interval());
        }
        // After a failure: the backoff of how long this task has been failing, spread over the
        // outage's length, never past two thirds of what its token or a lease has left — as a
        // mount's (`plan::retry_wait`).
        let retry = |issued: &mut Issued| {
            let failing = now.saturating_duration_since(*issued.failing_since.get_or_insert(now));
            let remaining: Vec<Duration> = issued
                .leases
                .iter()
                .filter_map(|l| l.deadline.and_then(|d| d.remaining(now)))
                .chain(issued.deadline.remaining(now))
                .collect();
            now + plan::retry_wait(failing, self.leases.upkeep_failed(now), &remaining, jitter())
        };
        let (mut failed, mut renewed) = (false, false);
        if issued.deadline.act_at <= now {
            match self.vault.renew_self(&issued.token.token, issued.ttl).await {
                Ok(ttl) => {
                    renewed = true;
                    issued.deadline = Deadline::after_grant(now, ttl, issued.ttl, true, jitter());
                    if issued.deadline.action == Action::Replace {
                        tracing::warn!(ttl = %crate::report::duration(ttl), "the task's token reached its max TTL: it and its leases end then");
                        issued.deadline.act_at = issued.deadline.expires_at.unwrap_or(now);
                    }
                }
                Err(e) if e.is_transient() => {
                    issued.deadline.act_at = retry(issued);
                    failed = true;
                }
                Err(e) => {
                    tracing::error!(error = %chain(&e), "the task's token was refused (revoked?): its value no longer works");
                    issued.deadline.act_at = issued.deadline.expires_at.unwrap_or(now);
                }
            }
        }
        for i in 0..issued.leases.len() {
            let l = &issued.leases[i];
            let Some(deadline) = l.deadline.filter(|d| d.act_at <= now) else { continue };
            let (id, asked, renewable) = (l.lease.id.clone(), l.lease.duration, l.lease.renewable);
            let next = match self.vault.renew_lease(&issued.token.token, &id, asked).await {
                Ok(d) => {
                    renewed = true;
                    let next = Deadline::after_grant(now, d, asked, renewable, jitter());
                    if next.action == Action::Replace {
                        tracing::warn!(lease = %id, left = %crate::report::duration(d), "a lease of the task's secret cannot be renewed further: the task's value stops working when it ends (a swarm secret cannot change under a running task; `docker service update --force` gives the tasks fresh ones)");
                    }
                    (next.action == Action::Renew).then_some(next)
                }
                Err(e) if e.is_transient() => {
                    failed = true;
                    Some(Deadline { act_at: retry(issued), ..deadline })
                }
                Err(e) => {
                    tracing::error!(lease = %id, error = %chain(&e), "a lease of the task's secret was refused");
                    None
                }
            };
            issued.leases[i].deadline = next;
        }
        if renewed {
            self.leases.upkeep_succeeded();
        }
        if !failed {
            issued.failing_since = None;
        }
        self.save(&key, issued);
        Some(issued.next())
    }
}

fn task_lease(lease: Lease, now: Instant) -> TaskLease {
    let d = Deadline::after_grant(now, lease.duration, lease.duration, lease.renewable, jitter());
    TaskLease { lease, deadline: (d.action == Action::Renew).then_some(d) }
}

/// A name as logged: itself, or `(invalid)` (no newline or escape from a request reaches a
/// log line).
fn shown(name: &str) -> &str {
    if valid_secret_name(name) {
        name
    } else {
        "(invalid)"
    }
}

#[cfg(test)]
mod tests;

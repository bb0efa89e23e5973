//! The one task that owns the upkeep schedule of every mount: token renewals, lease renewals
//! and replacements, KV refreshes, revocation of replaced generations; and the renewals of the
//! tokens the plugin itself holds (its own, volumes' and swarm tasks').
//!
//! The schedule holds one deadline per mount (the earliest of its [`plan::Timers`]); the task
//! sleeps until the first or until woken by a change, and hands each due mount to the
//! [`Worker`] (the driver), in a task of its own so a slow Vault delays nobody else. The worker
//! answers with the mount's next deadline.

pub mod plan;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::time::Instant;

/// What a deadline is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Job {
    /// The upkeep of one container mount: its token, leases, refreshes.
    Mount { volume: String, id: String },
    /// The renewal of a volume's own identity token (from `wrapped-token`).
    Identity { volume: String },
    /// The renewal of the token and leases a swarm task's secret was read with.
    Task { task: String, secret: String },
    /// The renewal of the plugin's own token (or a login again when it cannot be renewed).
    Plugin,
}

impl Job {
    pub fn mount(volume: &str, id: &str) -> Job {
        Job::Mount { volume: volume.to_owned(), id: id.to_owned() }
    }

    pub fn identity(volume: &str) -> Job {
        Job::Identity { volume: volume.to_owned() }
    }

    pub fn task(task: &str, secret: &str) -> Job {
        Job::Task { task: task.to_owned(), secret: secret.to_owned() }
    }
}

/// Does the work when a job's deadline comes.
pub trait Worker: Send + Sync + 'static {
    /// Does what is due for `job`; returns its next deadline, or `None` when it is gone.
    fn tick(&self, job: &Job) -> impl Future<Output = Option<Instant>> + Send;
}

#[derive(Debug, Default)]
struct Schedule {
    queue: BTreeSet<(Instant, Job)>,
    at: HashMap<Job, Instant>,
}

impl Schedule {
    fn set(&mut self, key: Job, at: Instant) {
        if let Some(old) = self.at.insert(key.clone(), at) {
            self.queue.remove(&(old, key.clone()));
        }
        self.queue.insert((at, key));
    }

    fn remove(&mut self, key: &Job) {
        if let Some(old) = self.at.remove(key) {
            self.queue.remove(&(old, key.clone()));
        }
    }

    fn next(&self) -> Option<Instant> {
        self.queue.first().map(|(at, _)| *at)
    }

    fn pop_due(&mut self, now: Instant) -> Vec<Job> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.queue.first() {
            if *at > now {
                break;
            }
            let (_, key) = self.queue.pop_first().expect("first exists");
            self.at.remove(&key);
            due.push(key);
        }
        due
    }
}

/// The schedule and its task.
#[derive(Debug, Default)]
pub struct LeaseManager {
    schedule: Mutex<Schedule>,
    changed: Notify,
    /// Since when every upkeep has failed (none succeeded since): the outage's start.
    failing_since: Mutex<Option<Instant>>,
}

impl LeaseManager {
    /// An upkeep failed at `now`: how long upkeeps have been failing, without a success in
    /// between (zero for the first failure). The retry backoff grows with it
    /// ([`plan::Timers::failed`]).
    pub fn upkeep_failed(&self, now: Instant) -> std::time::Duration {
        let since = *self.failing_since.lock().unwrap().get_or_insert(now);
        now.saturating_duration_since(since)
    }

    /// An upkeep succeeded: whatever outage there was is over.
    pub fn upkeep_succeeded(&self) {
        *self.failing_since.lock().unwrap() = None;
    }

    /// (Re)schedules `key` at `at`.
    pub fn set(&self, key: Job, at: Instant) {
        let mut schedule = self.schedule.lock().unwrap();
        let earlier = schedule.next().is_none_or(|next| at < next);
        schedule.set(key, at);
        if earlier {
            self.changed.notify_one();
        }
    }

    /// Forgets `key` (its mount is gone).
    pub fn remove(&self, key: &Job) {
        self.schedule.lock().unwrap().remove(key);
    }

    /// When `key` is due next, if it is scheduled.
    pub fn deadline(&self, key: &Job) -> Option<Instant> {
        self.schedule.lock().unwrap().at.get(key).copied()
    }

    /// How many mounts are scheduled.
    pub fn len(&self) -> usize {
        self.schedule.lock().unwrap().at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs until `shutdown` fires.
    pub async fn run<W: Worker>(
        self: Arc<Self>,
        worker: Arc<W>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let far = || Instant::now() + std::time::Duration::from_secs(3600);
        loop {
            let next = self.schedule.lock().unwrap().next().unwrap_or_else(far);
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = self.changed.notified() => continue,
                _ = shutdown.changed() => return,
            }
            let due = self.schedule.lock().unwrap().pop_due(Instant::now());
            for key in due {
                let (manager, worker) = (self.clone(), worker.clone());
                tokio::spawn(async move {
                    if let Some(at) = worker.tick(&key).await {
                        manager.set(key, at);
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Records ticks; each mount asks to come back every `period` until told to stop.
    #[derive(Default)]
    struct Recorder {
        ticks: Mutex<Vec<(Job, Instant)>>,
        stop: Mutex<Vec<Job>>,
    }

    impl Worker for Recorder {
        async fn tick(&self, key: &Job) -> Option<Instant> {
            let now = Instant::now();
            self.ticks.lock().unwrap().push((key.clone(), now));
            (!self.stop.lock().unwrap().contains(key)).then(|| now + Duration::from_secs(10))
        }
    }

    fn key(id: &str) -> Job {
        Job::mount("vol", id)
    }

    fn id(job: &Job) -> String {
        match job {
            Job::Mount { id, .. } => id.clone(),
            Job::Identity { volume } => volume.clone(),
            Job::Task { task, .. } => task.clone(),
            Job::Plugin => "plugin".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ticks_come_at_their_deadlines_in_order() {
        let manager = Arc::new(LeaseManager::default());
        let worker = Arc::new(Recorder::default());
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let start = Instant::now();
        manager.set(key("b"), start + Duration::from_secs(5));
        manager.set(key("a"), start + Duration::from_secs(2));
        tokio::spawn(manager.clone().run(worker.clone(), rx));
        tokio::time::sleep(Duration::from_secs(16)).await;
        let ticks: Vec<(String, u64)> = worker
            .ticks
            .lock()
            .unwrap()
            .iter()
            .map(|(k, at)| (id(k), (*at - start).as_secs()))
            .collect();
        assert_eq!(
            ticks,
            vec![("a".into(), 2), ("b".into(), 5), ("a".into(), 12), ("b".into(), 15)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_wakes_the_task_and_removed_mounts_never_tick() {
        let manager = Arc::new(LeaseManager::default());
        let worker = Arc::new(Recorder::default());
        let (tx, rx) = tokio::sync::watch::channel(false);
        let start = Instant::now();
        manager.set(key("late"), start + Duration::from_secs(100));
        manager.set(key("gone"), start + Duration::from_secs(1));
        manager.remove(&key("gone"));
        let task = tokio::spawn(manager.clone().run(worker.clone(), rx));
        tokio::time::sleep(Duration::from_secs(1)).await;
        worker.stop.lock().unwrap().push(key("soon"));
        manager.set(key("soon"), Instant::now() + Duration::from_secs(1));
        tokio::time::sleep(Duration::from_secs(2)).await;
        let ticks: Vec<String> = worker.ticks.lock().unwrap().iter().map(|(k, _)| id(k)).collect();
        assert_eq!(ticks, vec!["soon"]);
        assert_eq!(manager.len(), 1, "a finished mount is not rescheduled");
        tx.send(true).unwrap();
        task.await.unwrap();
    }
}

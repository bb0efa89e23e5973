//! Keeping mounted volumes current while their containers run: the [`Worker`] the lease
//! manager calls at each mount's deadline, `rotate`, signals to containers, and the sweep of
//! mounts whose containers are gone.
//!
//! - A due token or renewable lease is renewed with what it was first granted.
//! - A lease that cannot be renewed further, an expired one, or a refused renewal brings a
//!   fresh *generation*: a new child token, every source read again with it, the files swapped
//!   (each one atomically), and the old token — with all of its leases — revoked after a short
//!   grace ([`plan::grace`]).
//! - A secret that expires without a lease (a PKI certificate's `expiration`) is followed like
//!   a lease that cannot be renewed: a fresh generation at about two thirds of its validity.
//! - Static sources are re-read every `refresh` (those with parameters, whose read is a write,
//!   and those that expire, never); files are rewritten only when they changed.
//! - While Vault is out of reach the files stay as they are and the mount retries with backoff
//!   (growing with how long it has failed and with the outage's length, so that a returning Vault
//!   sees the retries spread); the error shows in `status`.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{fresh_timers, jitter, named, short, Active, Driver, DriverError, Edges, Volume};
use crate::audit::Event;
use crate::dockerd::Engine;
use crate::files::{self, Ownership, WriteError};
use crate::lease::plan::{self, Due};
use crate::lease::plan::{Deadline, SourceTimer};
use crate::lease::Job;
use crate::lease::Worker;
use crate::metrics::METRICS;
use crate::report::chain;
use crate::state::Container;
use crate::tmpfs::Mounter;
use crate::vault::Secret;
use crate::vault::Vault;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// How long after its Mount a mount's container is looked for every few seconds (later, only
/// by the sweep): a container starts within it, or a mount was made without one.
const TIE_WINDOW: Duration = Duration::from_secs(60);

impl<E: Edges> Worker for Driver<E> {
    async fn tick(&self, job: &Job) -> Option<Instant> {
        match job {
            Job::Mount { volume, id } => self.upkeep(volume, id).await,
            Job::Identity { volume } => self.renew_own(volume).await,
            Job::Task { task, secret } => self.task_upkeep(task, secret).await,
        }
    }
}

/// How long a container still being started (`created`) that uses a volume keeps that
/// volume's mounts from the sweep: a start takes seconds, a container created and never
/// started never asked for a mount.
pub const STARTING_LIMIT: Duration = Duration::from_secs(600);

impl<E: Edges> Driver<E> {
    #[tracing::instrument(skip_all, fields(volume = %name, id = %short(id)))]
    async fn upkeep(&self, name: &str, id: &str) -> Option<Instant> {
        let volume = self.volume(name).ok()?;
        let slot = volume.slot(id)?;
        let mut guard = slot.lock().await;
        let active = guard.as_mut().filter(|a| !a.ended)?;
        let now = Instant::now();
        active.timers.retiring = active.retiring.iter().map(|r| r.1).collect();
        let due = active.timers.due(now);
        let outcome = self.do_due(&volume, id, active, due, now).await;
        self.settle(&volume, id, active, outcome, now);
        Some(active.timers.next())
    }

    /// Records the outcome of an upkeep: the error for `status` and a retry, or recovery.
    fn settle(
        &self,
        volume: &Volume,
        id: &str,
        active: &mut Active,
        outcome: Result<(), DriverError>,
        now: Instant,
    ) {
        match outcome {
            Ok(()) => {
                self.leases.upkeep_succeeded();
                if active.last_error.take().is_some() {
                    tracing::info!("recovered: the mount is current again");
                }
                active.timers.succeeded();
            }
            Err(e) => {
                let message = chain(&e);
                let event = Event::new("error", &volume.record.name).mount(id);
                let event = event.held_by(active.container.as_ref());
                self.audit.record(event.accessor(&active.token.accessor).detail(&message));
                active.timers.failed(now, self.leases.upkeep_failed(now), jitter());
                let retry = active.timers.retry_at.map(|r| r - now).unwrap_or_default();
                tracing::warn!(error = %message, ?retry, "upkeep failed; the files stay as they are");
                active.last_error = Some(message);
            }
        }
        active.timers.retiring = active.retiring.iter().map(|r| r.1).collect();
        self.save_record(volume, id, active);
    }

    async fn do_due(
        &self,
        volume: &Volume,
        id: &str,
        active: &mut Active,
        due: Due,
        now: Instant,
    ) -> Result<(), DriverError> {
        let name = &volume.record.name;
        if due.retire {
            let (ended, kept): (Vec<_>, Vec<_>) =
                active.retiring.drain(..).partition(|(_, at)| *at <= now);
            active.retiring = kept;
            let held = active.container.as_ref();
            for (token, _) in ended {
                self.revoke_held(name, id, &token.token, &token.accessor, held).await;
            }
        }
        if due.replace {
            return self
                .replace(volume, id, active, "a lease or the token cannot be renewed further")
                .await;
        }
        let renew_err = |source| DriverError::Renew { volume: name.clone(), source };
        if due.renew_token {
            match self.vault.renew_self(&active.token.token, volume.spec.ttl).await {
                Ok(ttl) => {
                    METRICS.renewals.inc();
                    self.audit.record(
                        Event::new("renew", name)
                            .mount(id)
                            .held_by(active.container.as_ref())
                            .accessor(&active.token.accessor)
                            .detail("token"),
                    );
                    active.timers.token =
                        Deadline::after_grant(now, ttl, volume.spec.ttl, true, jitter());
                }
                Err(e) if !e.is_transient() => {
                    return self.replace(volume, id, active, "the token renewal was refused").await
                }
                Err(e) => {
                    METRICS.renewal_failures.inc();
                    return Err(renew_err(e));
                }
            }
        }
        for i in due.renew_leases {
            let Some(lease) = active.leases.get(i).cloned().flatten() else { continue };
            match self.vault.renew_lease(&active.token.token, &lease.id, lease.duration).await {
                Ok(granted) => {
                    METRICS.renewals.inc();
                    self.audit.record(
                        Event::new("renew", name)
                            .mount(id)
                            .held_by(active.container.as_ref())
                            .accessor(&active.token.accessor)
                            .leases([lease.id.as_str()]),
                    );
                    let deadline = Deadline::after_grant(
                        now,
                        granted,
                        lease.duration,
                        lease.renewable,
                        jitter(),
                    );
                    active.timers.sources[i] = SourceTimer::Leased(deadline);
                }
                Err(e) if !e.is_transient() => {
                    return self.replace(volume, id, active, "a lease renewal was refused").await
                }
                Err(e) => {
                    METRICS.renewal_failures.inc();
                    return Err(renew_err(e));
                }
            }
        }
        if due.refresh {
            self.refresh(volume, id, active, now).await?;
        }
        Ok(())
    }

    /// Re-reads the static sources that are read every `refresh` (not those with parameters:
    /// their read is a write); rewrites the files only when they changed.
    async fn refresh(
        &self,
        volume: &Volume,
        id: &str,
        active: &mut Active,
        now: Instant,
    ) -> Result<(), DriverError> {
        let spec = &volume.spec;
        let statics: Vec<usize> = (0..spec.sources.len())
            .filter(|i| {
                matches!(active.timers.sources[*i], SourceTimer::Static { refresh_at: Some(_) })
            })
            .collect();
        if active.secrets.is_none() && statics.len() < spec.sources.len() {
            // After a restart the leased data is not in memory: render from a fresh generation.
            return self
                .replace(volume, id, active, "refresh of a mount carried over a restart")
                .await;
        }
        let mut fresh = Vec::with_capacity(statics.len());
        for &i in &statics {
            match self.vault.read(&active.token.token, &spec.sources[i]).await {
                Ok(secret) => fresh.push((i, secret)),
                // The token may have expired while Vault was out of reach.
                Err(e) if e.is_denied() && active.timers.token.expired(now) => {
                    return self.replace(volume, id, active, "the token expired").await
                }
                Err(source) => {
                    return Err(DriverError::Read { volume: volume.record.name.clone(), source })
                }
            }
        }
        let secrets: Vec<Secret> = match active.secrets.take() {
            Some(mut current) => {
                for (i, secret) in fresh {
                    current[i] = secret;
                }
                current
            }
            None => fresh.into_iter().map(|(_, s)| s).collect(),
        };
        let written = self.write_files(volume, id, active, &secrets).await;
        active.secrets = Some(secrets);
        for &i in &statics {
            active.timers.sources[i] = SourceTimer::Static { refresh_at: Some(now + spec.refresh) };
        }
        active.last_refresh = Some(SystemTime::now());
        if written? {
            tracing::info!("a secret changed: files rewritten");
            self.signal(volume, active).await;
        }
        Ok(())
    }

    /// Renders `secrets` and writes what changed; true when a file changed.
    ///
    /// The tmpfs is one a container has seen, so the writing runs off the runtime
    /// (`spawn_blocking`): whatever is in it, no request of another mount waits on it. It is
    /// written only while it is still mounted: never onto the disk below a vanished tmpfs.
    async fn write_files(
        &self,
        volume: &Volume,
        id: &str,
        active: &mut Active,
        secrets: &[Secret],
    ) -> Result<bool, DriverError> {
        let name = &volume.record.name;
        let rendered = files::render(&volume.spec, secrets, &self.templates_dir)
            .map_err(|source| DriverError::Render { volume: name.clone(), source })?;
        let root = self.files_dir(name, id);
        let write_err = |source| DriverError::Write { volume: name.clone(), source };
        if !self.mounter.is_mounted(&root) {
            return Err(write_err(WriteError {
                path: root,
                source: std::io::Error::other("the mount's tmpfs is gone; nothing is written"),
            }));
        }
        let owner = Ownership::of(&volume.spec);
        let mut digests = std::mem::take(&mut active.digests);
        let (result, digests) = tokio::task::spawn_blocking(move || {
            let result = files::write(&root, &rendered, owner, &mut digests);
            (result, digests)
        })
        .await
        .map_err(|e| {
            write_err(WriteError {
                path: self.files_dir(name, id),
                source: std::io::Error::other(format!("the writing task failed: {e}")),
            })
        })?;
        active.digests = digests;
        result.map_err(write_err)
    }

    /// A fresh generation: a new child token, every source read with it, the files swapped;
    /// the old token (and every lease it made) revoked after a short grace.
    pub(super) async fn replace(
        &self,
        volume: &Volume,
        id: &str,
        active: &mut Active,
        why: &str,
    ) -> Result<(), DriverError> {
        let name = &volume.record.name;
        let token =
            self.issue_token(volume, id).await.inspect_err(|_| METRICS.rotation_failures.inc())?;
        let fetched = match self.read_all(volume, &token.token).await {
            Ok(secrets) => self
                .write_files(volume, id, active, &secrets)
                .await
                .map(|changed| (secrets, changed)),
            Err(e) => Err(e),
        };
        let (secrets, changed) = match fetched {
            Ok(done) => done,
            Err(e) => {
                METRICS.rotation_failures.inc();
                let held = active.container.as_ref();
                self.revoke_held(name, id, &token.token, &token.accessor, held).await;
                return Err(e);
            }
        };
        let now = Instant::now();
        let old_left = active
            .timers
            .sources
            .iter()
            .filter_map(|s| match s {
                SourceTimer::Leased(d) => d.remaining(now),
                SourceTimer::Static { .. } => None,
            })
            .min();
        let grace = plan::grace(old_left);
        let old = std::mem::replace(&mut active.token, token);
        active.retiring.push((old.clone(), now + grace));
        active.leases = secrets.iter().map(|s| s.lease.clone()).collect();
        active.expirations = secrets.iter().map(Secret::expiration).collect();
        active.timers =
            fresh_timers(&volume.spec, &active.token, &active.leases, &active.expirations, now);
        active.timers.retiring = active.retiring.iter().map(|r| r.1).collect();
        active.secrets = Some(secrets);
        active.last_refresh = Some(SystemTime::now());
        METRICS.rotations.inc();
        let leases = active.leases.iter().flatten().map(|l| l.id.as_str());
        let event = Event::new("rotate", name).mount(id).held_by(active.container.as_ref());
        let event = event.accessor(&active.token.accessor).leases(leases);
        self.audit.record(event.detail(format!(
            "{why}; the previous token {} is revoked after {grace:?}",
            old.accessor
        )));
        tracing::info!(why, accessor = %active.token.accessor, old_accessor = %old.accessor, ?grace, changed, "fresh generation");
        self.save_record(volume, id, active);
        if changed {
            self.signal(volume, active).await;
        }
        Ok(())
    }

    /// `rotate VOLUME`: a fresh generation for every mount of the volume, now.
    #[tracing::instrument(skip_all, fields(volume = %named(name)))]
    pub async fn rotate(&self, name: &str) -> Result<usize, DriverError> {
        let volume = self.volume(name)?;
        let mut rotated = 0;
        for (id, slot) in volume.slots() {
            let mut guard = slot.lock().await;
            let Some(active) = guard.as_mut().filter(|a| !a.ended) else { continue };
            let now = Instant::now();
            let result = self.replace(&volume, &id, active, "rotate requested").await;
            let failed = result.as_ref().err().map(|e| chain(e));
            self.settle(&volume, &id, active, result, now);
            self.leases.set(Job::mount(name, &id), active.timers.next());
            if let Some(message) = failed {
                return Err(DriverError::Rotate {
                    volume: name.to_owned(),
                    id: short(&id).to_owned(),
                    message,
                });
            }
            rotated += 1;
        }
        Ok(rotated)
    }

    /// The running containers that hold each of the plugin's tmpfs mounts, by device; only
    /// those with a volume `of` accepts are asked.
    async fn holders(
        &self,
        of: impl Fn(&str) -> bool,
    ) -> Result<HashMap<String, Vec<Container>>, crate::dockerd::EngineError> {
        let mounts = self.engine.volume_mounts(&self.driver_name).await?;
        self.holders_in(mounts, of).await
    }

    /// [`Driver::holders`] among the containers of `mounts`.
    async fn holders_in(
        &self,
        mounts: Vec<crate::dockerd::ContainerMount>,
        of: impl Fn(&str) -> bool,
    ) -> Result<HashMap<String, Vec<Container>>, crate::dockerd::EngineError> {
        let running: BTreeMap<String, String> = mounts
            .into_iter()
            .filter(|m| m.running && of(&m.volume))
            .map(|m| (m.container_id, m.container_name))
            .collect();
        let mut holders: HashMap<String, Vec<Container>> = HashMap::new();
        for (id, name) in running {
            match self.engine.container_devices(&id).await {
                Ok(devices) => {
                    for device in devices {
                        let container = Container { id: id.clone(), name: name.clone() };
                        holders.entry(device).or_default().push(container);
                    }
                }
                // Gone between the two questions: it holds nothing.
                Err(e) if e.status() == Some(404) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(holders)
    }

    /// Ties the mounts not yet tied to a container to the running container that holds their
    /// tmpfs (found by device, as the sweep finds them): a `container` line in the audit log,
    /// the container kept in the record and named in the mount's later lines. Returns how
    /// many mounts younger than `TIE_WINDOW` (a minute) are still untied (to look again soon).
    pub async fn tie_containers(&self) -> usize {
        let untied: HashSet<String> = self.untied_volumes();
        if untied.is_empty() {
            return 0;
        }
        match self.holders(|volume| untied.contains(volume)).await {
            Ok(holders) => self.tie(&holders),
            Err(e) => {
                tracing::debug!(error = %chain(&e), "docker not reachable: the containers of new mounts are looked for later");
                self.tie(&HashMap::new())
            }
        }
    }

    /// The volumes with a mount not tied to a container.
    fn untied_volumes(&self) -> HashSet<String> {
        let volumes: Vec<Arc<Volume>> = self.volumes.lock().unwrap().values().cloned().collect();
        let untied = |volume: &Volume| {
            volume.slots().iter().any(|(_, slot)| match slot.try_lock() {
                Ok(guard) => guard.as_ref().is_some_and(|a| a.container.is_none()),
                Err(_) => true, // under way (a Mount, an upkeep): it may be
            })
        };
        volumes.iter().filter(|v| untied(v)).map(|v| v.record.name.clone()).collect()
    }

    /// [`Driver::tie_containers`] with the holders known.
    fn tie(&self, holders: &HashMap<String, Vec<Container>>) -> usize {
        let volumes: Vec<Arc<Volume>> = self.volumes.lock().unwrap().values().cloned().collect();
        let mut waiting = 0;
        for volume in volumes {
            for (id, slot) in volume.slots() {
                let Ok(mut guard) = slot.try_lock() else {
                    waiting += 1;
                    continue;
                };
                let Some(active) = guard.as_mut().filter(|a| a.container.is_none()) else {
                    continue;
                };
                let held = active.device.as_ref().and_then(|d| holders.get(d)?.first());
                let Some(container) = held.cloned() else {
                    waiting += usize::from(active.mounted_at.elapsed() < TIE_WINDOW);
                    continue;
                };
                tracing::info!(volume = %volume.record.name, id = %short(&id), container = %short(&container.id), name = %container.name, "the mount's container is known");
                let event = Event::new("container", &volume.record.name).mount(&id);
                let leases = active.leases.iter().flatten().map(|l| l.id.as_str());
                let event = event.accessor(&active.token.accessor).leases(leases);
                self.audit.record(event.held_by(Some(&container)));
                active.container = Some(container);
                self.save_record(&volume, &id, active);
            }
        }
        waiting
    }

    /// Container `container_id` died (Docker's `die` event): every mount tied to it ends now —
    /// its tokens revoked, and with them its leases; off the schedule — without waiting for
    /// the Unmount. Docker Engine 20.10 logs `die` before it tears the container down and
    /// sends the Unmount only after that (0.15 s later at p50, up to seconds while it tears
    /// down many containers at once); it always sends it, restart policy or not, and a
    /// restarted container mounts its volumes afresh. The tmpfs stays, with its files, until
    /// that Unmount (or the sweep). Mounts not yet tied to a container (younger than a
    /// second or so) are left to the Unmount. Returns how many mounts ended.
    pub async fn container_died(&self, container_id: &str) -> usize {
        let volumes: Vec<Arc<Volume>> = self.volumes.lock().unwrap().values().cloned().collect();
        let mut ended = 0;
        let mut busy = Vec::new();
        for volume in &volumes {
            for (id, slot) in volume.slots() {
                match slot.clone().try_lock_owned() {
                    Ok(mut guard) => {
                        ended += self.end_held(volume, &id, &mut guard, container_id).await
                    }
                    Err(_) => busy.push((volume.clone(), id, slot)),
                }
            }
        }
        // Those under way (a Mount, an upkeep) are waited for only after the others ended.
        for (volume, id, slot) in busy {
            let mut guard = slot.lock().await;
            ended += self.end_held(&volume, &id, &mut guard, container_id).await;
        }
        ended
    }

    /// [`Driver::container_died`] for one mount: ends it if `container_id` holds it.
    async fn end_held(
        &self,
        volume: &Volume,
        id: &str,
        slot: &mut Option<Active>,
        container_id: &str,
    ) -> usize {
        let held = |a: &&mut Active| a.container.as_ref().is_some_and(|c| c.id == container_id);
        let Some(active) = slot.as_mut().filter(|a| !a.ended).filter(held) else {
            return 0;
        };
        let name = &volume.record.name;
        active.ended = true;
        self.leases.remove(&Job::mount(name, id));
        let held = active.container.as_ref();
        let leases = active.leases.iter().flatten().map(|l| l.id.as_str());
        let event = Event::new("die", name).mount(id).held_by(held);
        self.audit.record(event.accessor(&active.token.accessor).leases(leases));
        tracing::info!(volume = %name, id = %short(id), container = %short(container_id), "its container died: revoking now");
        for (old, _) in std::mem::take(&mut active.retiring) {
            self.revoke_held(name, id, &old.token, &old.accessor, held).await;
        }
        self.revoke_held(name, id, &active.token.token, &active.token.accessor, held).await;
        active.timers.retiring.clear();
        self.save_record(volume, id, active);
        1
    }

    /// Waits for a new mount whose container is to be looked for.
    pub async fn mounted(&self) {
        self.untied.notified().await
    }

    /// Sends the volume's `signal` to the running containers that hold this mount.
    async fn signal(&self, volume: &Volume, active: &Active) {
        let Some(signal) = &volume.spec.signal else { return };
        let Some(device) = &active.device else { return };
        let of = |v: &str| v == volume.record.name;
        let containers = match self.holders(of).await {
            Ok(mut holders) => holders.remove(device).unwrap_or_default(),
            Err(e) => {
                return tracing::warn!(error = %chain(&e), "cannot find the containers to signal")
            }
        };
        if containers.is_empty() {
            tracing::info!("files changed; no running container holds this mount to signal");
        }
        for container in containers {
            match self.engine.signal(&container.id, signal).await {
                Ok(()) => {
                    let event = Event::new("signal", &volume.record.name).held_by(Some(&container));
                    self.audit
                        .record(event.accessor(&active.token.accessor).detail(signal.as_str()));
                    tracing::info!(container = %short(&container.id), signal, "signalled");
                }
                Err(e) => {
                    tracing::warn!(container = %short(&container.id), error = %chain(&e), "cannot signal")
                }
            }
        }
    }

    /// Releases mounts no running container uses any more (a Docker daemon crash sends no
    /// Unmount), once older than `min_age`; ties the others to their containers. Does nothing
    /// when Docker cannot be asked.
    pub async fn sweep_stale(&self, min_age: Duration) -> usize {
        // Volumes of containers being started (`created`: dockerd has mounted their volumes,
        // their process is not there yet) keep their young mounts: a start slower than
        // `min_age` (a loaded host, a dockerd just restarted) must not lose its credentials.
        let mounts = match self.engine.volume_mounts(&self.driver_name).await {
            Ok(mounts) => mounts,
            Err(e) => {
                tracing::debug!(error = %chain(&e), "docker not reachable: no sweep of stale mounts");
                return 0;
            }
        };
        let starting: HashSet<String> =
            mounts.iter().filter(|m| m.starting).map(|m| m.volume.clone()).collect();
        let held: HashSet<String> = match self.holders_in(mounts, |_| true).await {
            Ok(holders) => {
                self.tie(&holders);
                holders.into_keys().collect()
            }
            Err(e) => {
                tracing::debug!(error = %chain(&e), "docker not reachable (or a container not readable): no sweep of stale mounts");
                return 0;
            }
        };
        let volumes: Vec<Arc<Volume>> = self.volumes.lock().unwrap().values().cloned().collect();
        let mut released = 0;
        for volume in volumes {
            let name = &volume.record.name;
            for (id, slot) in volume.slots() {
                let Ok(mut guard) = slot.try_lock() else { continue };
                // A mount whose device is unknown is never taken for stale.
                let stale = guard.as_ref().is_some_and(|a| {
                    let age = a.mounted_at.elapsed();
                    age >= min_age
                        && a.device.as_ref().is_some_and(|d| !held.contains(d))
                        && !(starting.contains(name) && age < STARTING_LIMIT)
                });
                if !stale {
                    continue;
                }
                let active = guard.take().expect("checked");
                tracing::warn!(volume = %name, id = %short(&id), "no running container uses this mount any more: releasing it");
                let event = Event::new("unmount", name).mount(&id);
                let event = event.detail("no running container uses it any more (no Unmount came)");
                self.finish(&volume, &id, active, event).await;
                released += 1;
            }
        }
        released
    }
}

//! Keeping mounted volumes current while their containers run: the [`Worker`] the lease
//! manager calls at each mount's deadline, and `rotate`. (Signals to their containers are in
//! `containers`, the sweep of mounts whose containers are gone in `sweep`.)
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

use super::{fresh_timers, jitter, named, short, Active, Driver, DriverError, Edges, Volume};
use crate::audit::{Event, Kind};
use crate::files::{self, Digests, Ownership, WriteError};
use crate::lease::plan::{self, Due};
use crate::lease::plan::{Deadline, SourceTimer};
use crate::lease::Job;
use crate::lease::Worker;
use crate::metrics::METRICS;
use crate::report::chain;
use crate::tmpfs::seal::Which;
use crate::tmpfs::{MountError, Mounter};
use crate::vault::Secret;
use crate::vault::Vault;
use std::path::Path;
use std::time::SystemTime;
use tokio::time::Instant;

impl<E: Edges> Worker for Driver<E> {
    async fn tick(&self, job: &Job) -> Option<Instant> {
        match job {
            Job::Mount { volume, id } => self.upkeep(volume, id).await,
            Job::Identity { volume } => self.renew_own(volume).await,
            Job::Task { task, secret } => self.task_upkeep(task, secret).await,
            Job::Plugin => self.renew_plugin().await,
        }
    }
}

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
        let resealing = active.reseal_at.is_some_and(|at| at <= now);
        if resealing {
            self.reseal(name, id, active).await;
        }
        // A reseal's tick does only that, unless the rest is due too (never before a retry's
        // backoff is over).
        if !resealing || active.timers.next() <= now {
            let outcome = self.do_due(&volume, id, active, due, now).await;
            self.settle(&volume, id, active, outcome, now);
        }
        Some(active.next_due())
    }

    /// Tries again to make read-only the tmpfs a write left writable (a replaced file was still
    /// open). While the kernel still refuses, every view of it is sealed per mount — one a
    /// container made since the write too (Podman shares one mount between a volume's
    /// containers, and a runtime may remount its bind writable) — and it is tried again in
    /// [`RESEAL`].
    async fn reseal(&self, name: &str, id: &str, active: &mut Active) {
        let (root, mounter) = (self.files_dir(name, id), self.mounter.clone());
        let done = tokio::task::spawn_blocking(move || {
            if !mounter.is_mounted(&root) {
                return Ok(true); // gone: nothing to seal
            }
            match mounter.set_read_only(&root, true) {
                Ok(()) => Ok(true),
                Err(e) if busy(&e) => mounter.seal_views(&root, Which::Writable).map(|_| false),
                Err(e) => Err(e),
            }
        })
        .await;
        active.reseal_at = match done {
            Ok(Ok(true)) => {
                tracing::debug!("the tmpfs is read-only");
                None
            }
            Ok(Ok(false)) => Some(Instant::now() + RESEAL),
            Ok(Err(e)) => {
                METRICS.seal_failures.inc();
                tracing::warn!(error = %chain(&e), "cannot make the tmpfs read-only again; tried again shortly");
                Some(Instant::now() + RESEAL)
            }
            Err(e) => {
                tracing::warn!(error = %e, "the task making the tmpfs read-only again failed; tried again shortly");
                Some(Instant::now() + RESEAL)
            }
        };
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
                let event = Event::new(Kind::Error, &volume.record.name).mount(id);
                let event = event.held_by(active.container.as_ref());
                self.audit.record(event.accessor(&active.token.accessor).detail(&message));
                active.timers.failed(now, self.leases.upkeep_failed(now), jitter());
                let retry = active.timers.retry_at.map(|r| r - now).unwrap_or_default();
                tracing::warn!(error = %message, ?retry, "upkeep failed; the files stay as they are");
                active.last_error = Some(message);
            }
        }
        active.timers.retiring = active.retiring.iter().map(|r| r.1).collect();
        self.update_record(volume, id, active);
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
                        Event::new(Kind::Renew, name)
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
                        Event::new(Kind::Renew, name)
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
        // What is kept and what is read again together, within the mount's read budget.
        let mut held = super::mount::Held::new(volume);
        for kept in active.secrets.iter().flatten().filter(|s| !s.data.is_empty()) {
            held.add(kept)?;
        }
        let mut fresh = Vec::with_capacity(statics.len());
        for &i in &statics {
            match self.vault.read(&active.token.token, &spec.sources[i]).await {
                Ok(secret) => {
                    held.add(&secret)?;
                    fresh.push((i, secret));
                }
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
        let (secrets, written) = self.write_files(volume, id, active, secrets).await;
        active.secrets = secrets.and_then(|s| super::retain::retained(spec, &active.timers, s));
        for &i in &statics {
            active.timers.sources[i] = SourceTimer::Static { refresh_at: Some(now + spec.refresh) };
        }
        active.last_refresh = Some(SystemTime::now());
        if written? {
            tracing::info!("a secret changed: files rewritten");
            self.signal(volume, id, active).await;
        }
        Ok(())
    }

    /// Renders `secrets` and writes what changed; true when a file changed. Gives `secrets`
    /// back (not after a panic of the task).
    ///
    /// The tmpfs is one a container has seen, and the data can be megabytes of a Docker
    /// user's sources, so rendering and writing run off the runtime (`spawn_blocking`):
    /// whatever is in it, no request of another mount waits on it. It is written only while it
    /// is still mounted: never onto the disk below a vanished tmpfs.
    ///
    /// The tmpfs is read-only at its superblock (what keeps every container's view read-only,
    /// whatever its runtime made of the bind): a change first seals every view of it per mount
    /// ([`Mounter::seal_views`]), and only then is the superblock writable, for the time of the
    /// write. A view that cannot be sealed keeps the old files: the write is not attempted.
    async fn write_files(
        &self,
        volume: &Volume,
        id: &str,
        active: &mut Active,
        secrets: Vec<Secret>,
    ) -> (Option<Vec<Secret>>, Result<bool, DriverError>) {
        let name = volume.record.name.clone();
        let root = self.files_dir(&name, id);
        let write_err = |name: String, source| DriverError::Write { volume: name, source };
        if !self.mounter.is_mounted(&root) {
            let gone = std::io::Error::other("the mount's tmpfs is gone; nothing is written");
            return (Some(secrets), Err(write_err(name, WriteError { path: root, source: gone })));
        }
        let (spec, templates) = (volume.spec.clone(), self.templates_dir.clone());
        let mut digests = std::mem::take(&mut active.digests);
        let (task_name, mounter) = (name.clone(), self.mounter.clone());
        let done = tokio::task::spawn_blocking(move || {
            let mut writable = false;
            // The files' owner is the tmpfs root's, which its Mount set (the host ids of the
            // volume's `uid` and `gid`: see `userns`); no container can change it.
            let result = files::render(&spec, &secrets, &templates)
                .map_err(|source| DriverError::Render { volume: task_name.clone(), source })
                .and_then(|rendered| {
                    let root_dir = std::fs::symlink_metadata(&root)
                        .map_err(|source| WriteError { path: root.clone(), source })
                        .map_err(|source| write_err(task_name.clone(), source))?;
                    use std::os::unix::fs::MetadataExt;
                    let owner = Ownership {
                        uid: root_dir.uid(),
                        gid: root_dir.gid(),
                        ..Ownership::of(&spec)
                    };
                    let written = write_sealed(&*mounter, &root, &rendered, owner, &mut digests);
                    written
                        .map(|w| {
                            writable = w.writable;
                            w.changed
                        })
                        .map_err(|e| match e {
                            Sealed::Write(source) => write_err(task_name, source),
                            Sealed::ReadOnly(source) => {
                                METRICS.seal_failures.inc();
                                DriverError::ReadOnly { volume: task_name, source }
                            }
                        })
                });
            (secrets, digests, result, writable)
        })
        .await;
        match done {
            Ok((secrets, digests, result, writable)) => {
                active.digests = digests;
                // After a failed write too: its window may not have closed.
                active.reseal_at = (writable || result.is_err()).then(|| Instant::now() + RESEAL);
                (Some(secrets), result)
            }
            Err(e) => {
                let source = std::io::Error::other(format!("the writing task failed: {e}"));
                let path = self.files_dir(&name, id);
                (None, Err(write_err(name, WriteError { path, source })))
            }
        }
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
        let fetched = match self.read_all(volume, id, &token.token).await {
            Ok(secrets) => match self.write_files(volume, id, active, secrets).await {
                (Some(secrets), Ok(changed)) => Ok((secrets, changed)),
                (Some(secrets), Err(e)) => {
                    // Not written: the certificates the new generation issued go with it.
                    let issued = super::certificates::issued(&volume.spec, &secrets);
                    drop(secrets);
                    let held = active.container.as_ref();
                    self.revoke_certificates(name, id, &issued, held).await;
                    Err(e)
                }
                (None, Err(e)) => Err(e),
                (None, Ok(_)) => unreachable!("the data comes back with every success"),
            },
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
        let certificates = self.certificates_of(&volume.spec, &secrets, &active.token.token).await;
        let replaced = std::mem::replace(&mut active.certificates, certificates);
        active.leases = secrets.iter().map(|s| s.lease.clone()).collect();
        active.expirations = secrets.iter().map(Secret::expiration).collect();
        active.timers =
            fresh_timers(&volume.spec, &active.token, &active.leases, &active.expirations, now);
        active.timers.retiring = active.retiring.iter().map(|r| r.1).collect();
        active.secrets = super::retain::retained(&volume.spec, &active.timers, secrets);
        active.last_refresh = Some(SystemTime::now());
        METRICS.rotations.inc();
        let leases = active.leases.iter().flatten().map(|l| l.id.as_str());
        let event = Event::new(Kind::Rotate, name).mount(id).held_by(active.container.as_ref());
        let event = event.accessor(&active.token.accessor).leases(leases);
        self.audit.record(event.detail(format!(
            "{why}; the previous token {} is revoked after {grace:?}",
            old.accessor
        )));
        tracing::info!(why, accessor = %active.token.accessor, old_accessor = %old.accessor, ?grace, changed, "fresh generation");
        self.update_record(volume, id, active);
        // Their successors are in place: the replaced certificates go now.
        if volume.spec.revoke_replaced {
            let held = active.container.as_ref();
            self.revoke_certificates(name, id, &replaced, held).await;
        } else if !replaced.is_empty() {
            tracing::info!(
                count = replaced.len(),
                "revoke-replaced=false: the replaced certificates stay valid until they expire"
            );
        }
        if changed {
            self.signal(volume, id, active).await;
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
            self.leases.set(Job::mount(name, &id), active.next_due());
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
}

enum Sealed {
    Write(WriteError),
    ReadOnly(MountError),
}

/// Blocking: writes `rendered` into the read-only tmpfs at `root`. Unchanged files need no
/// write (the superblock only made read-only again, for a tmpfs of an earlier release); a change
/// is written in a window: every view sealed, the superblock writable, the write, read-only
/// again.
///
/// The kernel refuses a read-only remount (`EBUSY`) while a file the rewrite replaced is still
/// open (its inode unlinked, not yet freed: a container's process holding `password` open), so
/// "read-only again" can fail after the files are written. That is not a failed write: the new
/// files are in place (the caller signals, a new generation keeps its token), every view is
/// sealed per mount, and the next call makes the superblock read-only once the file is closed.
/// A panic of the write makes it read-only too ([`ReadOnlyAgain`]).
fn write_sealed(
    mounter: &impl Mounter,
    root: &Path,
    rendered: &[files::File],
    owner: Ownership,
    digests: &mut Digests,
) -> Result<Written, Sealed> {
    let read_only = match mounter.set_read_only(root, true) {
        Ok(()) => true,
        // Left writable by the last window (a replaced file still open): sealed and written
        // below like a change.
        Err(e) if busy(&e) => false,
        Err(e) => return Err(Sealed::ReadOnly(e)),
    };
    if read_only && digests.unchanged(rendered) {
        match files::write(root, rendered, owner, digests) {
            // Something to repair (only a tmpfs an earlier release left writable can need it).
            Err(e) if e.source.raw_os_error() == Some(rustix::io::Errno::ROFS.raw_os_error()) => {}
            result => {
                let changed = result.map_err(Sealed::Write)?;
                return Ok(Written { changed, writable: false });
            }
        }
    }
    let sealed = mounter.seal_views(root, Which::Writable).map_err(Sealed::ReadOnly)?;
    tracing::debug!(sealed, "every view of the tmpfs is read-only; writing");
    mounter.set_read_only(root, false).map_err(Sealed::ReadOnly)?;
    let window = ReadOnlyAgain { mounter, root, armed: true };
    let written = files::write(root, rendered, owner, digests);
    let closed = window.close();
    let changed = written.map_err(Sealed::Write)?;
    if let Err(e) = &closed {
        // Written: reported as such. The views stay sealed per mount; the superblock is made
        // read-only by the upkeep's next tries ([`RESEAL`]) or the next call.
        tracing::warn!(error = %chain(e), "the files are written but the tmpfs stays writable until its replaced files are closed (every view of it is read-only per mount)");
    }
    Ok(Written { changed, writable: closed.is_err() })
}

/// What [`write_sealed`] did.
struct Written {
    /// A file changed.
    changed: bool,
    /// The tmpfs stays writable (a replaced file still open): to be made read-only again.
    writable: bool,
}

/// How soon a tmpfs a write left writable is tried again ([`Driver::reseal`]).
const RESEAL: std::time::Duration = std::time::Duration::from_secs(5);

/// A read-only remount refused because an unlinked file of the tmpfs is still open.
fn busy(e: &MountError) -> bool {
    matches!(e, MountError::Remount { source, .. }
        if source.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error()))
}

/// The superblock made read-only again when the window ends, by [`ReadOnlyAgain::close`] or, on
/// a panic of the write, by its drop.
struct ReadOnlyAgain<'a, M: Mounter> {
    mounter: &'a M,
    root: &'a Path,
    armed: bool,
}

impl<M: Mounter> ReadOnlyAgain<'_, M> {
    fn close(mut self) -> Result<(), MountError> {
        self.armed = false;
        self.mounter.set_read_only(self.root, true)
    }
}

impl<M: Mounter> Drop for ReadOnlyAgain<'_, M> {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.mounter.set_read_only(self.root, true);
        }
    }
}

//! Per-mount state and its records: the [`Active`] mount in its slot, Mount (a token, the
//! sources read, the tmpfs filled and bound read-only), Unmount and the release of what a mount
//! holds.

use super::{named, short, Driver, DriverError, Edges, Volume};
use crate::audit::{Event, Kind};
use crate::files::{self, Digests, Ownership};
use crate::lease::plan::{Deadline, SourceTimer, Timers};
use crate::lease::Job;
use crate::metrics::METRICS;
use crate::state::{Container, ExpiryRecord, LeaseRecord, MountRecord};
use crate::state::{StateError, Store};
use crate::tmpfs::Mounter;
use crate::tmpfs::TmpfsOptions;
use crate::vault::Vault;
use crate::vault::{validity, ChildTokenRequest, IssuedToken, Lease, Secret, Token};
use crate::volume::VolumeSpec;
use futures_util::FutureExt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// One active mount of a volume by one container mount point.
pub(super) struct Active {
    pub(super) refs: u32,
    pub(super) mountpoint: PathBuf,
    /// When this run of the plugin mounted (or adopted) it.
    pub(super) mounted_at: Instant,
    /// The tmpfs's device, to find the container it was made for in containers' mount tables.
    pub(super) device: Option<String>,
    /// The container its engine made it for (see `containers`), named in the audit lines from
    /// then on.
    pub(super) container: Option<Container>,
    /// That container's engine (its name: the API socket).
    pub(super) engine: Option<String>,
    pub(super) token: IssuedToken,
    /// The lease of each source (`None` for static secrets), index for index with the sources.
    pub(super) leases: Vec<Option<Lease>>,
    /// When each source without a lease expires by its own data (a certificate's
    /// `expiration`, seconds since the epoch), index for index with the sources.
    pub(super) expirations: Vec<Option<u64>>,
    /// The data last read, to render again when one source changes; `None` after a restart
    /// (the next change then fetches a fresh generation).
    pub(super) secrets: Option<Vec<Secret>>,
    pub(super) timers: Timers,
    /// Tokens of replaced generations, revoked when their grace is over.
    pub(super) retiring: Vec<(IssuedToken, Instant)>,
    /// The certificates this generation's sources issued without a lease, revoked when the
    /// mount ends (`certificates`).
    pub(super) certificates: Vec<crate::vault::pki::Issued>,
    /// What was last written into the tmpfs, to tell what changed without reading it back.
    pub(super) digests: Digests,
    pub(super) last_refresh: Option<SystemTime>,
    pub(super) last_error: Option<String>,
    /// Its container died (Docker's `die` event): its tokens are revoked and it is off the
    /// schedule; only the tmpfs is left, for the Unmount that follows (or the sweep).
    pub(super) ended: bool,
    /// A write left the tmpfs writable (a replaced file still open): when to try again to make
    /// it read-only, sealing meanwhile every view of it that appeared since (`upkeep`).
    pub(super) reseal_at: Option<Instant>,
}

impl Active {
    /// When its upkeep is due next: its timers', or an earlier try to make it read-only again.
    pub(super) fn next_due(&self) -> Instant {
        let next = self.timers.next();
        self.reseal_at.map_or(next, |at| next.min(at))
    }

    /// Each leased source: its index, its lease, and its deadline when it has one.
    pub(super) fn leased(&self) -> impl Iterator<Item = (usize, &Lease, Option<Deadline>)> + '_ {
        self.leases.iter().enumerate().filter_map(|(i, lease)| {
            let deadline = match self.timers.sources.get(i) {
                Some(SourceTimer::Leased(d)) => Some(*d),
                _ => None,
            };
            Some((i, lease.as_ref()?, deadline))
        })
    }

    /// Each source that expires without a lease: its index, its expiration (seconds since the
    /// epoch) and its deadline (to replace it).
    pub(super) fn expiring(&self) -> impl Iterator<Item = (usize, u64, Deadline)> + '_ {
        self.expirations.iter().enumerate().filter_map(|(i, at)| {
            match (at, self.timers.sources.get(i)) {
                (Some(at), Some(SourceTimer::Leased(d))) => Some((i, *at, *d)),
                _ => None,
            }
        })
    }
}

pub(super) type Slot = Arc<tokio::sync::Mutex<Option<Active>>>;

pub(super) fn valid_mount_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
}

/// Seconds since the epoch at which something `remaining` from now happens (for records).
pub(super) fn unix_at(remaining: Option<Duration>) -> Option<u64> {
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    remaining.map(|r| now.saturating_add(r).as_secs())
}

pub(super) fn jitter() -> f64 {
    fastrand::f64()
}

/// The timers of a freshly issued generation: a lease is renewed; a secret that expires
/// without a lease (`expirations`, read just now) is followed like a lease that cannot be
/// renewed — replaced at about two thirds of its validity, never on `refresh`; a source with
/// parameters (its read is a write) is read once per generation; the rest every `refresh`.
pub(super) fn fresh_timers(
    spec: &VolumeSpec,
    token: &IssuedToken,
    leases: &[Option<Lease>],
    expirations: &[Option<u64>],
    now: Instant,
) -> Timers {
    let refresh_at = (!spec.refresh.is_zero()).then(|| now + spec.refresh);
    let wall = SystemTime::now();
    let source_timer = |i: usize, lease: &Option<Lease>| {
        if let Some(l) = lease {
            let d = Deadline::after_issue(now, l.duration, l.duration, l.renewable, jitter());
            return SourceTimer::Leased(d);
        }
        // An expiration already past gives nothing to follow (replacing it at once, again
        // and again, would only hammer Vault): the source is then read as if it had none.
        let validity = expirations.get(i).copied().flatten().map(|at| validity(at, wall));
        if let Some(validity) = validity.filter(|v| !v.is_zero()) {
            let d = Deadline::after_grant(now, validity, validity, false, jitter());
            return SourceTimer::Leased(d);
        }
        let writes = spec.sources.get(i).is_some_and(|s| !s.params.is_empty());
        SourceTimer::Static { refresh_at: if writes { None } else { refresh_at } }
    };
    Timers {
        token: Deadline::after_issue(now, token.ttl, spec.ttl, token.renewable, jitter()),
        sources: leases.iter().enumerate().map(|(i, lease)| source_timer(i, lease)).collect(),
        retiring: Vec::new(),
        retry_at: None,
        failing_since: None,
    }
}

impl<E: Edges> Driver<E> {
    /// Mounts the volume for mount `id`: a child token, every source read with it, a fresh
    /// tmpfs with the files. A repeated `id` only counts one more reference.
    #[tracing::instrument(skip_all, fields(volume = %named(name), id = %short(id)))]
    pub async fn mount(&self, name: &str, id: &str) -> Result<PathBuf, DriverError> {
        if !valid_mount_id(id) {
            return Err(DriverError::InvalidMountId { id: id.chars().take(140).collect() });
        }
        let volume = self.volume(name)?;
        let (slot, mut guard) = loop {
            let slot = volume.slots.lock().unwrap().entry(id.to_owned()).or_default().clone();
            let guard = slot.clone().lock_owned().await;
            // While this waited, the last Unmount (or a failed Mount) may have taken the slot
            // out of the map: a mount made in it could never be found again. Take a fresh one.
            if volume.slot(id).is_some_and(|current| Arc::ptr_eq(&current, &slot)) {
                break (slot, guard);
            }
        };
        if let Some(active) = guard.as_mut() {
            if active.ended {
                // Mounted again after its container died, before the Unmount: its files are
                // those of revoked tokens. A fresh generation, kept up again.
                self.replace(&volume, id, active, "mounted again after its container died").await?;
                active.ended = false;
                self.leases.set(Job::mount(name, id), active.next_due());
            }
            active.refs += 1;
            self.update_record(&volume, id, active);
            tracing::info!(refs = active.refs, "mount ID seen again; reference counted");
            return Ok(active.mountpoint.clone());
        }
        let started = Instant::now();
        match self.mount_new(&volume, id).await {
            Ok(active) => {
                METRICS.mounts.inc();
                METRICS.mount_latency.observe(started.elapsed());
                let leases = active.leases.iter().flatten().map(|l| l.id.as_str());
                self.audit.record(
                    Event::new(Kind::Mount, name)
                        .mount(id)
                        .accessor(&active.token.accessor)
                        .leases(leases),
                );
                let mountpoint = active.mountpoint.clone();
                tracing::info!(accessor = %active.token.accessor, leases = active.leases.iter().flatten().count(), "mounted");
                self.leases.set(Job::mount(name, id), active.next_due());
                *guard = Some(active);
                self.untied.notify_one(); // its container is looked for shortly

                Ok(mountpoint)
            }
            Err(e) => {
                drop(guard);
                let mut slots = volume.slots.lock().unwrap();
                if slots.get(id).is_some_and(|current| Arc::ptr_eq(current, &slot)) {
                    slots.remove(id);
                }
                drop(slots);
                METRICS.mount_failures.inc();
                self.audit.record(
                    Event::new(Kind::Error, name)
                        .mount(id)
                        .detail(format!("mount failed: {}", crate::report::chain(&e))),
                );
                Err(e)
            }
        }
    }

    pub(super) fn child_token_request(&self, volume: &Volume, id: &str) -> ChildTokenRequest {
        let name = &volume.record.name;
        ChildTokenRequest {
            policies: volume.spec.policies.clone(),
            ttl: volume.spec.ttl,
            display_name: format!("vault-secrets-{name}"),
            meta: vec![("volume".into(), name.clone()), ("mount_id".into(), short(id).to_owned())],
        }
    }

    /// Reads every source with `token`, holding at most the volume's
    /// [read budget](crate::volume::bounds::read_budget) of what they return.
    ///
    /// A failure part way (a source refused, or over the budget) revokes the certificates the
    /// sources read so far issued (mount `id`'s): its token's revocation does not take them.
    pub(super) async fn read_all(
        &self,
        volume: &Volume,
        id: &str,
        token: &Token,
    ) -> Result<Vec<Secret>, DriverError> {
        let mut held = Held::new(volume);
        let mut secrets = Vec::with_capacity(volume.spec.sources.len());
        for source in &volume.spec.sources {
            let read = self
                .vault
                .read(token, source)
                .await
                .map_err(|source| DriverError::Read { volume: volume.record.name.clone(), source });
            let kept = read.and_then(|secret| held.add(&secret).map(|()| secret));
            match kept {
                Ok(secret) => secrets.push(secret),
                Err(e) => {
                    // What was read goes (its strings zeroed) before the revocations.
                    let issued = super::certificates::issued(&volume.spec, &secrets);
                    drop(secrets);
                    let name = &volume.record.name;
                    self.revoke_certificates(name, id, &issued, None).await;
                    return Err(e);
                }
            }
        }
        Ok(secrets)
    }

    pub(super) async fn mount_new(&self, volume: &Volume, id: &str) -> Result<Active, DriverError> {
        let name = &volume.record.name;
        let mountpoint = self.mounts_root.join(name).join(id);
        let files_dir = self.files_dir(name, id);
        // The tmpfs and its read-only bind are made ready on a blocking thread while Vault
        // creates the token: the Vault round trips are most of a Mount's time, and the mount(2)
        // calls need nothing of them. (Nobody sees the empty bind: its parents are 0700, and
        // Docker learns its path only from the reply, once the files are written.)
        // Under a remapping engine, `uid` and `gid` are the container's (see `userns`).
        let owner = self.host_owner(name, &volume.spec, id).await?;
        let ready = self.make_tmpfs(volume, owner, &files_dir, &mountpoint);
        let (token, ready) = tokio::join!(self.issue_token(volume, id), ready);
        let ready = ready.unwrap_or_else(|panic| {
            Err(DriverError::Internal { volume: name.clone(), message: panic.to_string() })
        });
        let token = match token {
            Ok(token) => token,
            Err(e) => {
                unmount_dir(&*self.mounter, &mountpoint);
                unmount_dir(&*self.mounter, &files_dir);
                return Err(e);
            }
        };
        let timers = fresh_timers(&volume.spec, &token, &[], &[], Instant::now());
        let mut active = Active {
            refs: 1,
            mountpoint,
            mounted_at: Instant::now(),
            device: None,
            container: None,
            engine: None,
            token,
            leases: Vec::new(),
            expirations: Vec::new(),
            secrets: None,
            timers,
            retiring: Vec::new(),
            certificates: Vec::new(),
            digests: Digests::default(),
            last_refresh: None,
            last_error: None,
            ended: false,
            reseal_at: None,
        };
        // Recorded before anything else is obtained: a crash from here on is cleaned up at the
        // next start (the token revoked, with every lease it made). A mount that cannot be
        // recorded does not run: a restart would lose its token, never revoked.
        let recorded = self
            .save_record(volume, id, &active)
            .map_err(|source| DriverError::Record { volume: name.clone(), source });
        // A panic on the way (a bug, or input nobody foresaw) must not leave a token unrevoked
        // or a tmpfs mounted: it is caught here and cleaned up like any failure.
        let filled = match ready.and_then(|device| recorded.map(|()| device)) {
            Ok(device) => {
                active.device = device;
                AssertUnwindSafe(self.fill(volume, id, owner, &mut active)).catch_unwind().await
            }
            Err(e) => Ok(Err(e)),
        };
        let error = match filled {
            Ok(Ok(())) => match self.save_record(volume, id, &active) {
                Ok(()) => return Ok(active),
                Err(source) => DriverError::Record { volume: name.clone(), source },
            },
            Ok(Err(e)) => e,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                tracing::error!(%message, "a mount panicked; cleaning up");
                DriverError::Internal { volume: volume.record.name.clone(), message }
            }
        };
        let (token, certificates) = (Some(&active.token), &active.certificates);
        self.release(&volume.record.name, id, token, certificates, &active.mountpoint, None).await;
        Err(error)
    }

    /// On a blocking thread: the two directories of a mount (empty, their parents 0700), the
    /// tmpfs mounted on the first and bound read-only on the second, where Docker finds it.
    /// Returns the tmpfs's device (as the bind shows it). `owner`: the host uid and gid.
    fn make_tmpfs(
        &self,
        volume: &Volume,
        (uid, gid): (u32, u32),
        files_dir: &Path,
        mountpoint: &Path,
    ) -> tokio::task::JoinHandle<Result<Option<String>, DriverError>> {
        let spec = &volume.spec;
        let options = TmpfsOptions { size: spec.size, mode: spec.dir_mode(), uid, gid };
        let (mounter, name) = (self.mounter.clone(), volume.record.name.clone());
        let (files_dir, mountpoint) = (files_dir.to_owned(), mountpoint.to_owned());
        tokio::task::spawn_blocking(move || {
            prepare_dir(&*mounter, &files_dir)?;
            prepare_dir(&*mounter, &mountpoint)?;
            let err = |source| DriverError::Mount { volume: name.clone(), source };
            mounter.mount_tmpfs(&files_dir, &options).map_err(err)?;
            // Bound while the plugin's own mount of the tmpfs is read-only: the copies that
            // propagation makes of the bind (a managed plugin's, in the host's namespace, which
            // dockerd binds into containers) take the flags of the mount bound, and the bind's
            // own remount never reaches them. Then writable again, on this mount alone, to fill.
            mounter.set_read_only(&files_dir, true).map_err(err)?;
            mounter.bind_read_only(&files_dir, &mountpoint).map_err(err)?;
            mounter.set_read_only(&files_dir, false).map_err(err)?;
            Ok(mounter.device(&mountpoint))
        })
    }

    /// Reads every source with the mount's token and fills the tmpfs [`Driver::make_tmpfs`]
    /// mounted, its files owned by `owner` (host ids), on a blocking thread.
    pub(super) async fn fill(
        &self,
        volume: &Volume,
        id: &str,
        (uid, gid): (u32, u32),
        active: &mut Active,
    ) -> Result<(), DriverError> {
        let name = &volume.record.name;
        let spec = &volume.spec;
        let secrets = self.read_all(volume, id, &active.token.token).await?;
        // Recorded first: a failure from here on revokes them with the token.
        active.certificates = self.certificates_of(spec, &secrets, &active.token.token).await;
        self.save_record(volume, id, active)
            .map_err(|source| DriverError::Record { volume: name.clone(), source })?;
        active.leases = secrets.iter().map(|s| s.lease.clone()).collect();
        active.expirations = secrets.iter().map(Secret::expiration).collect();
        // Rendering and writing take time in proportion to the data (megabytes, from a
        // Docker user's sources): on a blocking thread, so that no other request waits on it.
        let (spec_owned, templates) = (spec.clone(), self.templates_dir.clone());
        let (files_dir, volume_name) = (self.files_dir(name, id), name.clone());
        let mounter = self.mounter.clone();
        let (secrets, digests) = tokio::task::spawn_blocking(move || {
            let owner = Ownership { uid, gid, ..Ownership::of(&spec_owned) };
            let digests = files::render(&spec_owned, &secrets, &templates)
                .map_err(|source| DriverError::Render { volume: volume_name.clone(), source })
                .and_then(|rendered| {
                    files::write_new(&files_dir, &rendered, owner).map_err(|source| {
                        DriverError::Write { volume: volume_name.clone(), source }
                    })
                })
                .and_then(|digests| {
                    // From now on no view of it, whatever its per-mount flags, can write. (A
                    // remount: a blocking call, kept on this thread.)
                    mounter
                        .set_read_only(&files_dir, true)
                        .map_err(|source| DriverError::Mount { volume: volume_name, source })?;
                    Ok(digests)
                });
            (secrets, digests)
        })
        .await
        .map_err(|e| DriverError::Internal { volume: name.clone(), message: e.to_string() })?;
        active.digests = digests?;
        active.timers =
            fresh_timers(spec, &active.token, &active.leases, &active.expirations, Instant::now());
        active.secrets = super::retain::retained(spec, &active.timers, secrets);
        active.last_refresh = Some(SystemTime::now());
        Ok(())
    }

    /// Records a mount that is already recorded (its token is known to the next start
    /// whatever happens here): a failure is logged, the record on disk left as it was.
    pub(super) fn update_record(&self, volume: &Volume, id: &str, active: &Active) {
        if let Err(e) = self.save_record(volume, id, active) {
            tracing::error!(error = %crate::report::chain(&e), "cannot update the mount's record in the private runtime directory; the one before stays");
        }
    }

    pub(super) fn save_record(
        &self,
        volume: &Volume,
        id: &str,
        active: &Active,
    ) -> Result<(), StateError> {
        let now = Instant::now();
        let leases = active
            .leased()
            .map(|(i, lease, deadline)| LeaseRecord {
                source: i,
                id: lease.id.clone(),
                duration_secs: lease.duration.as_secs(),
                renewable: lease.renewable,
                expires_at: unix_at(deadline.map_or(Some(lease.duration), |d| d.remaining(now))),
            })
            .collect();
        let expiring = active
            .expiring()
            .map(|(i, at, deadline)| ExpiryRecord {
                source: i,
                expires_at: at,
                replace_at: unix_at(Some(deadline.act_at.saturating_duration_since(now))),
            })
            .collect();
        let record = MountRecord {
            volume: volume.record.name.clone(),
            id: id.to_owned(),
            refs: active.refs,
            mountpoint: active.mountpoint.clone(),
            token: active.token.token.clone(),
            accessor: active.token.accessor.clone(),
            token_expires_at: unix_at(active.timers.token.remaining(now)),
            leases,
            expiring,
            retiring: active.retiring.iter().map(|(t, _)| t.token.clone()).collect(),
            digests: active.digests.clone(),
            container: active.container.clone(),
            engine: active.engine.clone(),
            ended: active.ended,
            certificates: active.certificates.clone(),
        };
        self.store.save_mount(&record)
    }

    /// Drops one reference of mount `id`; the last one revokes its token (and with it every
    /// lease it created) and removes its tmpfs. An unknown ID is not an error: Docker may
    /// repeat an Unmount, or send one for a mount a previous run already released.
    #[tracing::instrument(skip_all, fields(volume = %named(name), id = %short(id)))]
    pub async fn unmount(&self, name: &str, id: &str) -> Result<(), DriverError> {
        if !valid_mount_id(id) {
            return Err(DriverError::InvalidMountId { id: id.chars().take(140).collect() });
        }
        let volume = self.volume(name)?;
        let Some(slot) = volume.slot(id) else {
            tracing::warn!("unmount of a mount ID that is not active; nothing to do");
            return Ok(());
        };
        let mut guard = slot.lock().await;
        let Some(active) = guard.as_mut() else {
            return Ok(());
        };
        active.refs -= 1;
        if active.refs > 0 {
            self.update_record(&volume, id, active);
            tracing::info!(refs = active.refs, "one reference released; still mounted");
            return Ok(());
        }
        let active = guard.take().expect("checked above");
        self.finish(&volume, id, active, Event::new(Kind::Unmount, name).mount(id)).await;
        tracing::info!("unmounted and revoked");
        Ok(())
    }

    /// Ends an active mount taken out of its slot: `event` audited (before the `revoke` lines
    /// it leads to), off the schedule, every token of it revoked (and with them its leases),
    /// its tmpfs removed, the slot gone.
    pub(super) async fn finish(&self, volume: &Volume, id: &str, active: Active, event: Event) {
        let name = &volume.record.name;
        let held = active.container.as_ref();
        self.audit.record(event.accessor(&active.token.accessor).held_by(held));
        self.leases.remove(&Job::mount(name, id));
        for (old, _) in &active.retiring {
            self.revoke_held(name, id, &old.token, &old.accessor, held).await;
        }
        let token = (!active.ended).then_some(&active.token);
        self.release(name, id, token, &active.certificates, &active.mountpoint, held).await;
        volume.slots.lock().unwrap().remove(id);
    }

    /// Revokes `certificates` and `token` (none when its container's death revoked them
    /// already), then unmounts and removes `mountpoint` (the read-only bind) and the tmpfs
    /// behind it, and forgets the record. `held` names the container in the audit line.
    ///
    /// The revocation comes first, so that the credential's life ends with the container's
    /// whatever the unmounts cost (and a tmpfs gone means its token is revoked, or kept for a
    /// retry). `umount(2)` waits on the kernel's mount lock, which dockerd holds while it
    /// unmounts the root file systems of containers stopping at the same moment: the unmounts
    /// run off the runtime (`spawn_blocking`), so that no other mount's Unmount or revocation
    /// waits on them.
    pub(super) async fn release(
        &self,
        volume: &str,
        id: &str,
        token: Option<&IssuedToken>,
        certificates: &[crate::vault::pki::Issued],
        mountpoint: &Path,
        held: Option<&Container>,
    ) {
        self.revoke_certificates(volume, id, certificates, held).await;
        if let Some(token) = token {
            self.revoke_held(volume, id, &token.token, &token.accessor, held).await;
        }
        if !mountpoint.as_os_str().is_empty() {
            let (mounter, bind, files) =
                (self.mounter.clone(), mountpoint.to_owned(), self.files_dir(volume, id));
            let span = tracing::Span::current();
            let unmounted = tokio::task::spawn_blocking(move || {
                let _span = span.enter();
                unmount_dir(&*mounter, &bind);
                unmount_dir(&*mounter, &files);
            });
            if let Err(e) = unmounted.await {
                tracing::error!(error = %e, "the unmounting task failed");
            }
        }
        if let Err(e) = self.store.delete_mount(volume, id) {
            tracing::error!(error = %crate::report::chain(&e), "cannot delete the mount record");
        }
    }
}

/// Unmounts `path` if something is mounted there, and removes it and, when no other mount of
/// the volume is left, its parent.
fn unmount_dir(mounter: &impl Mounter, path: &Path) {
    if mounter.is_mounted(path) {
        if let Err(e) = mounter.unmount(path) {
            tracing::error!(error = %crate::report::chain(&e), "cannot unmount");
        }
    }
    let _ = std::fs::remove_dir(path);
    if let Some(parent) = path.parent() {
        let _ = std::fs::remove_dir(parent);
    }
}

/// Makes `mountpoint` an empty directory to mount on (its parents mode 0700), unmounting
/// whatever a crash left there.
pub(super) fn prepare_dir(mounter: &impl Mounter, mountpoint: &Path) -> Result<(), DriverError> {
    use std::os::unix::fs::DirBuilderExt;
    let err = |source| DriverError::Directory { path: mountpoint.to_owned(), source };
    if let Some(parent) = mountpoint.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(parent).map_err(err)?;
    }
    if mounter.is_mounted(mountpoint) {
        tracing::warn!(path = %mountpoint.display(), "a stale mount was in the way; unmounting it");
        let _ = mounter.unmount(mountpoint);
    }
    match std::fs::create_dir(mountpoint) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(err(e)),
        _ => Ok(()),
    }
}

/// What a mount holds of what its sources returned, within its
/// [read budget](crate::volume::bounds::read_budget).
pub(super) struct Held<'a> {
    volume: &'a Volume,
    budget: u64,
    bytes: u64,
    read: usize,
}

impl<'a> Held<'a> {
    pub(super) fn new(volume: &'a Volume) -> Held<'a> {
        let budget = crate::volume::bounds::read_budget(&volume.spec);
        Held { volume, budget, bytes: 0, read: 0 }
    }

    /// Counts `secret` in; refused when the mount would hold more than its budget.
    pub(super) fn add(&mut self, secret: &Secret) -> Result<(), DriverError> {
        self.read += 1;
        self.bytes = self.bytes.saturating_add(secret.weight());
        if self.bytes <= self.budget {
            return Ok(());
        }
        let (read, bytes, budget) = (self.read, self.bytes, self.budget);
        let sources = self.volume.spec.sources.len();
        let source = files::RenderError::TooMuchRead { read, sources, bytes, budget };
        Err(DriverError::Render { volume: self.volume.record.name.clone(), source })
    }
}

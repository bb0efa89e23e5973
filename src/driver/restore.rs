//! Recovery after a restart: definitions from `state_dir`, mount records and identities from
//! the private tmpfs; mounts still in place are adopted, the others released; strays removed.

use super::volume_identity;
use super::{fresh_timers, jitter, short, Active, Driver, Edges, Volume};
use crate::lease::plan::{Action, Deadline, SourceTimer};
use crate::lease::Job;
use crate::state::Store;
use crate::state::{Holder, MountRecord};
use crate::tmpfs::Mounter;
use crate::vault::{IssuedToken, Lease};
use crate::volume::{IdentityKind, VolumeSpec};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// What is left until a recorded epoch second; zero when past.
/// (A huge one is far away, bounded like a TTL.)
pub(super) fn left_until(unix: u64) -> Duration {
    crate::vault::validity(unix, SystemTime::now())
}

/// An active mount rebuilt from its record after a restart: its deadlines from the recorded
/// expiries; its data unknown until the next generation.
pub(super) fn restored(spec: &VolumeSpec, record: &MountRecord) -> Active {
    let now = Instant::now();
    let token = IssuedToken {
        token: record.token.clone(),
        accessor: record.accessor.clone(),
        ttl: record.token_expires_at.map(left_until).unwrap_or(spec.ttl),
        renewable: true,
    };
    let mut leases = vec![None; spec.sources.len()];
    let mut expirations = vec![None; spec.sources.len()];
    let mut timers = fresh_timers(spec, &token, &leases, &expirations, now);
    // The token's TTL was what was left, not what was asked: renew it soon after a restart.
    timers.token = Deadline::after_grant(now, token.ttl, token.ttl, true, jitter());
    for l in &record.leases {
        if l.source < leases.len() {
            let lease = Lease {
                id: l.id.clone(),
                duration: crate::vault::ttl(l.duration_secs),
                renewable: l.renewable,
            };
            let left = l.expires_at.map(left_until).unwrap_or(lease.duration);
            let mut deadline =
                Deadline::after_grant(now, left, lease.duration, lease.renewable, jitter());
            if left.is_zero() {
                deadline.action = Action::Replace;
                deadline.act_at = now;
            }
            timers.sources[l.source] = SourceTimer::Leased(deadline);
            leases[l.source] = Some(lease);
        }
    }
    let sources = expirations.len();
    for e in record.expiring.iter().filter(|e| e.source < sources) {
        // Replaced when it was due to be (at once when that is past), never after it expires.
        let left = left_until(e.expires_at);
        let act = e.replace_at.map_or(left.mul_f64(2.0 / 3.0), left_until).min(left);
        let deadline =
            Deadline { act_at: now + act, expires_at: Some(now + left), action: Action::Replace };
        timers.sources[e.source] = SourceTimer::Leased(deadline);
        expirations[e.source] = Some(e.expires_at);
    }
    Active {
        refs: record.refs,
        mountpoint: record.mountpoint.clone(),
        mounted_at: now,
        device: None,
        // A container found by an earlier build's rule (any container that could see the
        // tmpfs) is looked for again by the engine's account.
        container: record.engine.as_ref().and(record.container.clone()),
        engine: record.engine.clone(),
        token,
        leases,
        expirations,
        secrets: None,
        timers,
        retiring: Vec::new(),
        certificates: record.certificates.clone(),
        digests: record.digests.clone(),
        last_refresh: None,
        last_error: None,
        ended: record.ended,
        // The last run may have left it writable (a replaced file still open, or a tmpfs 0.1.0
        // mounted writable): made read-only at the first tick, or tried again until it can be.
        reseal_at: Some(now),
    }
}

/// The token of a mount record, as issued.
pub(super) fn issued_of(record: &MountRecord) -> IssuedToken {
    IssuedToken {
        token: record.token.clone(),
        accessor: record.accessor.clone(),
        ttl: Duration::ZERO,
        renewable: false,
    }
}

impl<E: Edges> Driver<E> {
    /// Loads the volume definitions and the mount records a previous run left: mounts still in
    /// place are served (and kept up) again; the others (the tmpfs gone, or a revocation
    /// pending) are revoked and cleaned up. Stray mount directories are removed.
    pub async fn restore(&self) {
        let mut identities: BTreeMap<String, volume_identity::Own> = BTreeMap::new();
        for record in self.store.load_volume_identities() {
            if let Some(own) = volume_identity::Own::from_record(&record) {
                identities.insert(record.volume.clone(), own);
            }
        }
        for record in self.store.load_volumes() {
            match VolumeSpec::parse_stored(&record.options, &self.defaults) {
                Ok((spec, over)) => {
                    if let Some(bound) = over {
                        tracing::warn!(volume = %record.name, bound = %bound, "a stored volume exceeds a bound that new volumes are held to; it is served as it was created (create it again within the bound)");
                    }
                    let own = identities.remove(&record.name);
                    if own.is_none() && spec.identity != IdentityKind::Plugin {
                        tracing::warn!(volume = %record.name, "the volume's own identity did not survive a reboot: its mounts will fail until it is created again with a fresh wrapped-token");
                    }
                    if matches!(
                        own.as_ref().map(|o| &o.identity),
                        Some(volume_identity::OwnIdentity::Token { .. })
                    ) {
                        self.leases.set(Job::identity(&record.name), Instant::now());
                    }
                    let volume = Volume::new(record, spec, own);
                    self.volumes
                        .lock()
                        .unwrap()
                        .insert(volume.record.name.clone(), Arc::new(volume));
                }
                Err(e) => {
                    tracing::error!(volume = %record.name, error = %e, "a stored volume definition is no longer valid; it is kept on disk but not served, and its mounts left by the previous run are released")
                }
            }
        }
        *self.pending.lock().unwrap() = self.store.load_revocations();
        *self.pending_certificates.lock().unwrap() = self.store.load_certificates();
        self.retry_revocations().await;
        let mut adopted = 0;
        for record in self.store.load_mounts() {
            for old in &record.retiring {
                let holder = Holder::Mount(record.id.clone());
                self.revoke_for(&record.volume, &holder, old, None, None).await;
            }
            let volume = self.volumes.lock().unwrap().get(&record.volume).cloned();
            match volume {
                Some(volume)
                    if record.refs > 0
                        && self.mounter.is_mounted(&self.files_dir(&record.volume, &record.id))
                        && self.bound_again(&record) =>
                {
                    let mut active = restored(&volume.spec, &record);
                    active.device = self.mounter.device(&record.mountpoint);
                    if active.engine.as_deref().is_some_and(|e| self.engine_named(e).is_none()) {
                        // Its engine is no longer configured: looked for again among those that are.
                        (active.engine, active.container) = (None, None);
                    }
                    self.update_record(&volume, &record.id, &active);
                    if !active.ended {
                        self.leases.set(Job::mount(&record.volume, &record.id), active.next_due());
                    }
                    let slot = Arc::new(tokio::sync::Mutex::new(Some(active)));
                    volume.slots.lock().unwrap().insert(record.id.clone(), slot);
                    adopted += 1;
                }
                _ => {
                    tracing::info!(volume = %record.volume, id = %short(&record.id), "releasing a mount left by a previous run");
                    let token = issued_of(&record);
                    self.release(
                        &record.volume,
                        &record.id,
                        (!record.ended).then_some(&token),
                        &record.certificates,
                        &record.mountpoint,
                        record.container.as_ref(),
                    )
                    .await;
                }
            }
        }
        self.remove_strays();
        if adopted > 0 {
            self.untied.notify_one(); // their containers are looked for (again) shortly
        }
        tracing::info!(
            volumes = self.volumes.lock().unwrap().len(),
            mounts = adopted,
            "state restored"
        );
    }

    /// The record's read-only bind is in place, or made again from its tmpfs: a managed
    /// plugin's binds are in its propagated mount, which dockerd unmounts when the plugin stops
    /// (`disable`, a dockerd restart), while the tmpfs mounts, in the `runtime` directory,
    /// outlive it and the containers still hold their views of them.
    fn bound_again(&self, record: &MountRecord) -> bool {
        if self.mounter.is_mounted(&record.mountpoint) {
            return true;
        }
        let files = self.files_dir(&record.volume, &record.id);
        // Bound from a read-only superblock, as a Mount binds: the copies propagation makes of
        // the bind take the flags of the mount bound. An earlier build left it writable; it
        // stays read-only (files are only written in a rewrite's window). Refused while a file
        // an earlier rewrite replaced is still open (`EBUSY`): bound all the same, and every
        // view is sealed at the next rewrite.
        if let Err(error) = self.mounter.set_read_only(&files, true) {
            tracing::warn!(volume = %record.volume, id = %short(&record.id), error = %crate::report::chain(&error), "the tmpfs cannot be made read-only before it is bound again");
        }
        let bound = super::mount::prepare_dir(&*self.mounter, &record.mountpoint)
            .map_err(|e| crate::report::chain(&e))
            .and_then(|()| {
                self.mounter
                    .bind_read_only(&files, &record.mountpoint)
                    .map_err(|e| crate::report::chain(&e))
            });
        match bound {
            Ok(()) => {
                tracing::info!(volume = %record.volume, id = %short(&record.id), "the mount's tmpfs outlived its bind: bound again");
                true
            }
            Err(error) => {
                tracing::error!(volume = %record.volume, id = %short(&record.id), %error, "cannot bind the mount's tmpfs again");
                false
            }
        }
    }

    /// Unmounts and removes mount directories that no active mount owns (a crash between
    /// mount(2) and recording it), binds first.
    pub(super) fn remove_strays(&self) {
        for root in [&self.mounts_root, &self.files_root] {
            self.remove_strays_below(root);
        }
    }

    pub(super) fn remove_strays_below(&self, root: &Path) {
        let Ok(volume_dirs) = std::fs::read_dir(root) else { return };
        for volume_dir in volume_dirs.flatten() {
            let name = volume_dir.file_name().to_string_lossy().into_owned();
            let volume = self.volumes.lock().unwrap().get(&name).cloned();
            let Ok(mount_dirs) = std::fs::read_dir(volume_dir.path()) else { continue };
            for mount_dir in mount_dirs.flatten() {
                let id = mount_dir.file_name().to_string_lossy().into_owned();
                if volume.as_ref().is_some_and(|v| v.slot(&id).is_some()) {
                    continue;
                }
                let path = mount_dir.path();
                tracing::warn!(path = %path.display(), "removing a stray mount directory");
                if self.mounter.is_mounted(&path) {
                    let _ = self.mounter.unmount(&path);
                }
                let _ = std::fs::remove_dir(&path);
            }
            let _ = std::fs::remove_dir(volume_dir.path());
        }
    }
}

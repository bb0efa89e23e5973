//! The volume lifecycle: create, mount, unmount, remove, and recovery after a restart; the
//! upkeep of mounted volumes (renewal, replacement, refresh) is in `upkeep.rs`.
//!
//! [`Driver`] is generic over the edges ([`Vault`], [`Mounter`], [`Store`], [`Engine`]) so unit
//! tests run it with fakes. Each `(volume, mount ID)` pair has its own slot, locked across the
//! Vault calls of its Mount, Unmount or upkeep, so mounts of different containers proceed
//! concurrently while a repeated ID is reference-counted, never mounted twice.

mod identity;
mod upkeep;

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::FutureExt;
use serde_json::json;
use tokio::time::Instant;

use crate::audit::{Audit, Event};
use crate::engine::Engine;
use crate::files::{self, Digests, Ownership, RenderError, WriteError};
use crate::lease::plan::{Deadline, SourceTimer, Timers};
use crate::lease::{Job, LeaseManager};
use crate::metrics::METRICS;
use crate::state::{LeaseRecord, MountRecord, PendingRevocation, StateError, Store, VolumeRecord};
use crate::tmpfs::{MountError, Mounter, TmpfsOptions};
use crate::vault::identity::IdentitySlot;
use crate::vault::{ChildTokenRequest, IssuedToken, Lease, Secret, Token, Vault, VaultError};
use crate::volume::{
    valid_volume_name, Defaults, IdentityKind, OptionError, VolumeSpec, UNWRAPPED,
};

pub use upkeep::{LeaseStatus, MountStatus, VolumeStatus};

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("invalid volume name {name:?}: expected letters, digits, `_`, `.` or `-`, starting with a letter or digit")]
    InvalidName { name: String },
    #[error("invalid mount ID {id:?}: expected 1 to 128 letters, digits, `_` or `-`")]
    InvalidMountId { id: String },
    #[error("volume {volume}")]
    Options {
        volume: String,
        #[source]
        source: OptionError,
    },
    #[error("volume {volume} already exists with different options; remove it first, or create it with the same options")]
    Exists { volume: String },
    #[error("no such volume: {volume}")]
    NoSuchVolume { volume: String },
    #[error("volume {volume} is in use by {mounts} mount(s); stop the containers using it first")]
    InUse { volume: String, mounts: usize },
    #[error("cannot create the mount's token for volume {volume}")]
    ChildToken {
        volume: String,
        #[source]
        source: VaultError,
    },
    #[error("volume {volume} had an identity of its own from a wrapped token, which did not survive a reboot of the host (it is never written to disk): remove the volume and create it again with a fresh wrapped-token")]
    IdentityGone { volume: String },
    #[error("the plugin is not logged in to vault: {reason}")]
    NoIdentity { reason: String },
    #[error("cannot read the secrets of volume {volume}")]
    Read {
        volume: String,
        #[source]
        source: VaultError,
    },
    #[error("cannot renew the token or a lease of volume {volume}")]
    Renew {
        volume: String,
        #[source]
        source: VaultError,
    },
    #[error("cannot rotate mount {id} of volume {volume}: {message}")]
    Rotate { volume: String, id: String, message: String },
    #[error("cannot write the files of volume {volume}")]
    Render {
        volume: String,
        #[source]
        source: RenderError,
    },
    #[error("cannot mount volume {volume}")]
    Mount {
        volume: String,
        #[source]
        source: MountError,
    },
    #[error("cannot write the files of volume {volume}")]
    Write {
        volume: String,
        #[source]
        source: WriteError,
    },
    #[error("cannot prepare the mount directory {path}")]
    Directory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mount of volume {volume} failed inside the plugin ({message}); its token was revoked and nothing is left mounted")]
    Internal { volume: String, message: String },
    #[error("cannot record volume {volume}")]
    State {
        volume: String,
        #[source]
        source: StateError,
    },
}

/// What Docker's Get and List show of a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    pub name: String,
    pub mountpoint: Option<PathBuf>,
    pub created_at: String,
    pub status: serde_json::Value,
}

/// One active mount of a volume by one container mount point.
struct Active {
    refs: u32,
    mountpoint: PathBuf,
    /// When this run of the plugin mounted (or adopted) it.
    mounted_at: Instant,
    /// The tmpfs's device, to find the containers that hold it.
    device: Option<String>,
    token: IssuedToken,
    /// The lease of each source (`None` for static secrets), index for index with the sources.
    leases: Vec<Option<Lease>>,
    /// The data last read, to render again when one source changes; `None` after a restart
    /// (the next change then fetches a fresh generation).
    secrets: Option<Vec<Secret>>,
    timers: Timers,
    /// Tokens of replaced generations, revoked when their grace is over.
    retiring: Vec<(IssuedToken, Instant)>,
    /// What was last written into the tmpfs, to tell what changed without reading it back.
    digests: Digests,
    last_refresh: Option<SystemTime>,
    last_error: Option<String>,
}

impl Active {
    /// Each leased source: its index, its lease, and its deadline when it has one.
    fn leased(&self) -> impl Iterator<Item = (usize, &Lease, Option<Deadline>)> + '_ {
        self.leases.iter().enumerate().filter_map(|(i, lease)| {
            let deadline = match self.timers.sources.get(i) {
                Some(SourceTimer::Leased(d)) => Some(*d),
                _ => None,
            };
            Some((i, lease.as_ref()?, deadline))
        })
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<Active>>>;

struct Volume {
    record: VolumeRecord,
    spec: VolumeSpec,
    /// One slot per mount ID: present while a Mount is under way or the mount is active.
    slots: Mutex<BTreeMap<String, Slot>>,
    /// The volume's own identity (from `wrapped-token`), if it has one and it is known.
    own: Mutex<Option<identity::Own>>,
}

impl Volume {
    fn new(record: VolumeRecord, spec: VolumeSpec, own: Option<identity::Own>) -> Volume {
        Volume { record, spec, slots: Mutex::default(), own: Mutex::new(own) }
    }
}

impl Volume {
    fn slot(&self, id: &str) -> Option<Slot> {
        self.slots.lock().unwrap().get(id).cloned()
    }

    fn slots(&self) -> Vec<(String, Slot)> {
        self.slots.lock().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// The volume driver.
pub struct Driver<V, M, S, E> {
    vault: Arc<V>,
    mounter: M,
    store: Arc<S>,
    engine: Arc<E>,
    identity: Arc<IdentitySlot>,
    leases: Arc<LeaseManager>,
    defaults: Defaults,
    /// Where the read-only binds handed to Docker live: `mounts_root/NAME/ID`.
    mounts_root: PathBuf,
    /// Where the tmpfs mounts themselves live (`files_root/NAME/ID`, mode 0700): only the
    /// plugin writes through them.
    files_root: PathBuf,
    /// The driver name, to find our mounts among the containers' (signals, stale mounts).
    driver_name: String,
    templates_dir: PathBuf,
    audit: Arc<Audit>,
    volumes: Mutex<BTreeMap<String, Arc<Volume>>>,
    /// Tokens whose revocation failed while Vault was out of reach; retried until it works.
    pending: Mutex<Vec<PendingRevocation>>,
}

/// The edges and settings a [`Driver`] is made of.
pub struct Parts<V, M, S, E> {
    pub vault: Arc<V>,
    pub mounter: M,
    pub store: Arc<S>,
    pub engine: Arc<E>,
    pub identity: Arc<IdentitySlot>,
    pub defaults: Defaults,
    pub mounts_root: PathBuf,
    pub files_root: PathBuf,
    pub driver_name: String,
    pub templates_dir: PathBuf,
    pub audit: Arc<Audit>,
}

fn valid_mount_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Seconds since the epoch at which something `remaining` from now happens (for records).
fn unix_at(remaining: Option<Duration>) -> Option<u64> {
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    remaining.map(|r| now.saturating_add(r).as_secs())
}

/// What is left until a recorded epoch second; zero when past.
fn left_until(unix: u64) -> Duration {
    let at = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(unix));
    let left = at.and_then(|at| at.duration_since(SystemTime::now()).ok()).unwrap_or_default();
    left.min(crate::vault::MAX_TTL)
}

fn jitter() -> f64 {
    fastrand::f64()
}

/// The timers of a freshly issued generation.
fn fresh_timers(
    spec: &VolumeSpec,
    token: &IssuedToken,
    leases: &[Option<Lease>],
    now: Instant,
) -> Timers {
    let refresh_at = (!spec.refresh.is_zero()).then(|| now + spec.refresh);
    Timers {
        token: Deadline::after_grant(now, token.ttl, spec.ttl, token.renewable, jitter()),
        sources: leases
            .iter()
            .map(|lease| match lease {
                Some(l) => SourceTimer::Leased(Deadline::after_grant(
                    now,
                    l.duration,
                    l.duration,
                    l.renewable,
                    jitter(),
                )),
                None => SourceTimer::Static { refresh_at },
            })
            .collect(),
        retiring: Vec::new(),
        retry_at: None,
        failures: 0,
    }
}

impl<V: Vault, M: Mounter, S: Store, E: Engine> Driver<V, M, S, E> {
    pub fn new(parts: Parts<V, M, S, E>) -> Self {
        Driver {
            vault: parts.vault,
            mounter: parts.mounter,
            store: parts.store,
            engine: parts.engine,
            identity: parts.identity,
            leases: Arc::new(LeaseManager::default()),
            defaults: parts.defaults,
            mounts_root: parts.mounts_root,
            files_root: parts.files_root,
            driver_name: parts.driver_name,
            templates_dir: parts.templates_dir,
            audit: parts.audit,
            volumes: Mutex::new(BTreeMap::new()),
            pending: Mutex::new(Vec::new()),
        }
    }

    /// The upkeep schedule, for the task that runs it.
    pub fn lease_manager(&self) -> Arc<LeaseManager> {
        self.leases.clone()
    }

    /// The tmpfs of mount `id` of `volume`, which only the plugin writes through.
    fn files_dir(&self, volume: &str, id: &str) -> PathBuf {
        self.files_root.join(volume).join(id)
    }

    fn volume(&self, name: &str) -> Result<Arc<Volume>, DriverError> {
        if !valid_volume_name(name) {
            return Err(DriverError::InvalidName { name: name.chars().take(300).collect() });
        }
        self.volumes
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .ok_or_else(|| DriverError::NoSuchVolume { volume: name.to_owned() })
    }

    /// Validates the options, unwraps a `wrapped-token`, checks `policies`, then persists the
    /// definition (with the wrapping token replaced by a marker: it is used up, and it is not
    /// to be on disk). Idempotent for the same options.
    #[tracing::instrument(skip_all, fields(volume = %named(name)))]
    pub async fn create(
        &self,
        name: &str,
        mut options: BTreeMap<String, String>,
    ) -> Result<(), DriverError> {
        if !valid_volume_name(name) {
            return Err(DriverError::InvalidName { name: name.to_owned() });
        }
        let spec = VolumeSpec::parse(&options, &self.defaults)
            .map_err(|source| DriverError::Options { volume: name.to_owned(), source })?;
        if let Some(template) = &spec.template {
            files::check_template(&self.templates_dir.join(template)).map_err(|e| {
                DriverError::Options {
                    volume: name.to_owned(),
                    source: OptionError {
                        option: "template".into(),
                        message: crate::report::chain(&e),
                    },
                }
            })?;
        }
        let wrapping = options
            .get_mut("wrapped-token")
            .map(|v| Token::new(std::mem::replace(v, UNWRAPPED.into())));
        if wrapping.as_ref().is_some_and(|w| w.expose() == UNWRAPPED) {
            return Err(DriverError::Options {
                volume: name.to_owned(),
                source: OptionError {
                    option: "wrapped-token".into(),
                    message: "give the response-wrapping token itself".into(),
                },
            });
        }
        if let Some(existing) = self.volumes.lock().unwrap().get(name) {
            let same_token = match (&wrapping, existing.own.lock().unwrap().as_ref()) {
                (None, _) => true,
                (Some(w), Some(own)) => w.expose() == own.wrapping.expose(),
                (Some(_), None) => false,
            };
            return if existing.record.options == options && same_token {
                Ok(())
            } else {
                Err(DriverError::Exists { volume: name.to_owned() })
            };
        }
        let own = match wrapping {
            Some(w) => Some(self.unwrap_identity(name, &spec.identity, w).await?),
            None => None,
        };
        let result = self.persist_new(name, options, spec, own.clone()).await;
        if let (Err(_), Some(identity::OwnIdentity::Token { issued, .. })) =
            (&result, own.map(|o| o.identity))
        {
            self.revoke(name, "create", &issued.token, &issued.accessor).await; // nothing is left half-done
        }
        result
    }

    async fn persist_new(
        &self,
        name: &str,
        options: BTreeMap<String, String>,
        spec: VolumeSpec,
        own: Option<identity::Own>,
    ) -> Result<(), DriverError> {
        let state_err = |source| DriverError::State { volume: name.to_owned(), source };
        self.check_policies(name, &spec, own.as_ref()).await?;
        if let Some(own) = &own {
            self.store.save_volume_identity(&own.record(name)).map_err(state_err)?;
        }
        let record = VolumeRecord { name: name.to_owned(), options, created_at: now_rfc3339() };
        let mut volumes = self.volumes.lock().unwrap();
        if volumes.contains_key(name) {
            return Err(DriverError::Exists { volume: name.to_owned() }); // a concurrent create won
        }
        if let Err(e) = self.store.save_volume(&record) {
            let _ = self.store.delete_volume_identity(name);
            return Err(state_err(e));
        }
        tracing::info!(sources = spec.sources.len(), identity = ?spec.identity, "volume created");
        let accessor = match own.as_ref().map(|o| &o.identity) {
            Some(identity::OwnIdentity::Token { issued, .. }) => issued.accessor.as_str(),
            _ => "",
        };
        self.audit.record(
            Event::new("create", name)
                .accessor(accessor)
                .detail(format!("identity: {:?}", spec.identity)),
        );
        if let Some(identity::OwnIdentity::Token { renew_at, issued }) =
            own.as_ref().map(|o| &o.identity)
        {
            if !issued.ttl.is_zero() {
                self.leases.set(Job::identity(name), *renew_at);
            }
        }
        volumes.insert(name.to_owned(), Arc::new(Volume::new(record, spec, own)));
        Ok(())
    }

    /// Deletes the definition; refused while any mount of the volume is active or under way.
    #[tracing::instrument(skip_all, fields(volume = %named(name)))]
    pub async fn remove(&self, name: &str) -> Result<(), DriverError> {
        let volume = {
            let mut volumes = self.volumes.lock().unwrap();
            let volume = volumes
                .get(name)
                .ok_or_else(|| DriverError::NoSuchVolume { volume: name.to_owned() })?;
            let mounts = volume.slots.lock().unwrap().len();
            if mounts > 0 {
                return Err(DriverError::InUse { volume: name.to_owned(), mounts });
            }
            self.store
                .delete_volume(name)
                .map_err(|source| DriverError::State { volume: name.to_owned(), source })?;
            volumes.remove(name).expect("checked above")
        };
        self.leases.remove(&Job::identity(name));
        let own = volume.own.lock().unwrap().take();
        if let Some(identity::OwnIdentity::Token { issued, .. }) = own.map(|o| o.identity) {
            self.revoke(name, "remove", &issued.token, &issued.accessor).await;
        }
        if let Err(e) = self.store.delete_volume_identity(name) {
            tracing::error!(error = %crate::report::chain(&e), "cannot delete the volume's identity record");
        }
        self.audit.record(Event::new("remove", name));
        tracing::info!("volume removed");
        Ok(())
    }

    pub fn get(&self, name: &str) -> Result<VolumeInfo, DriverError> {
        Ok(self.info(&*self.volume(name)?))
    }

    pub fn list(&self) -> Vec<VolumeInfo> {
        let volumes: Vec<Arc<Volume>> = self.volumes.lock().unwrap().values().cloned().collect();
        volumes.iter().map(|v| self.info(v)).collect()
    }

    /// The mount point of an active mount of the volume, if any.
    pub fn path(&self, name: &str) -> Result<Option<PathBuf>, DriverError> {
        Ok(self.info(&*self.volume(name)?).mountpoint)
    }

    fn info(&self, volume: &Volume) -> VolumeInfo {
        let mut active = 0;
        let mut mountpoint = None;
        for (_, slot) in volume.slots() {
            // A slot locked by a Mount or an upkeep under way: skip it, never wait.
            if let Ok(guard) = slot.try_lock() {
                if let Some(a) = guard.as_ref() {
                    active += 1;
                    mountpoint.get_or_insert_with(|| a.mountpoint.clone());
                }
            }
        }
        let spec = &volume.spec;
        VolumeInfo {
            name: volume.record.name.clone(),
            mountpoint,
            created_at: volume.record.created_at.clone(),
            status: json!({
                "sources": spec.sources.iter().map(|s| match &s.dir {
                    Some(dir) => format!("{dir}: {}", s.path),
                    None => s.path.clone(),
                }).collect::<Vec<_>>(),
                "active_mounts": active,
                "format": format!("{:?}", spec.format).to_lowercase(),
                "owner": format!("{}:{}", spec.uid, spec.gid),
                "mode": format!("{:04o}", spec.mode),
                "token_ttl": humantime::format_duration(spec.ttl).to_string(),
                "refresh": humantime::format_duration(spec.refresh).to_string(),
            }),
        }
    }

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
            active.refs += 1;
            self.save_record(&volume, id, active);
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
                    Event::new("mount", name)
                        .mount(id)
                        .accessor(&active.token.accessor)
                        .leases(leases),
                );
                let mountpoint = active.mountpoint.clone();
                tracing::info!(accessor = %active.token.accessor, leases = active.leases.iter().flatten().count(), "mounted");
                self.leases.set(Job::mount(name, id), active.timers.next());
                *guard = Some(active);
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
                    Event::new("error", name)
                        .mount(id)
                        .detail(format!("mount failed: {}", crate::report::chain(&e))),
                );
                Err(e)
            }
        }
    }

    fn child_token_request(&self, volume: &Volume, id: &str) -> ChildTokenRequest {
        let name = &volume.record.name;
        ChildTokenRequest {
            policies: volume.spec.policies.clone(),
            ttl: volume.spec.ttl,
            display_name: format!("vault-secrets-{name}"),
            meta: vec![("volume".into(), name.clone()), ("mount_id".into(), short(id).to_owned())],
        }
    }

    /// Reads every source with `token`.
    async fn read_all(&self, volume: &Volume, token: &Token) -> Result<Vec<Secret>, DriverError> {
        let mut secrets = Vec::with_capacity(volume.spec.sources.len());
        for source in &volume.spec.sources {
            let secret = self.vault.read(token, source).await.map_err(|source| {
                DriverError::Read { volume: volume.record.name.clone(), source }
            })?;
            secrets.push(secret);
        }
        Ok(secrets)
    }

    async fn mount_new(&self, volume: &Volume, id: &str) -> Result<Active, DriverError> {
        let token = self.issue_token(volume, id).await?;
        let timers = fresh_timers(&volume.spec, &token, &[], Instant::now());
        let mut active = Active {
            refs: 1,
            mountpoint: self.mounts_root.join(&volume.record.name).join(id),
            mounted_at: Instant::now(),
            device: None,
            token,
            leases: Vec::new(),
            secrets: None,
            timers,
            retiring: Vec::new(),
            digests: Digests::default(),
            last_refresh: None,
            last_error: None,
        };
        // Recorded before anything else is obtained: a crash from here on is cleaned up at the
        // next start (the token revoked, with every lease it made).
        self.save_record(volume, id, &active);
        // A panic on the way (a bug, or input nobody foresaw) must not leave a token unrevoked
        // or a tmpfs mounted: it is caught here and cleaned up like any failure.
        let filled = AssertUnwindSafe(self.fill(volume, id, &mut active)).catch_unwind().await;
        let error = match filled {
            Ok(Ok(())) => {
                self.save_record(volume, id, &active);
                return Ok(active);
            }
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
        self.release(&volume.record.name, id, &active.token, &active.mountpoint).await;
        Err(error)
    }

    /// Reads every source with the mount's token, then mounts and fills the tmpfs and binds it
    /// read-only where Docker will find it. (The tmpfs is fresh and no container sees it yet:
    /// nothing in it can block, so it is written here, on the runtime.)
    async fn fill(
        &self,
        volume: &Volume,
        id: &str,
        active: &mut Active,
    ) -> Result<(), DriverError> {
        let name = &volume.record.name;
        let spec = &volume.spec;
        let secrets = self.read_all(volume, &active.token.token).await?;
        active.leases = secrets.iter().map(|s| s.lease.clone()).collect();
        let rendered = files::render(spec, &secrets, &self.templates_dir)
            .map_err(|source| DriverError::Render { volume: name.clone(), source })?;
        let mountpoint = &active.mountpoint;
        let files_dir = self.files_dir(name, id);
        self.prepare_dir(&files_dir)?;
        self.prepare_dir(mountpoint)?;
        let options =
            TmpfsOptions { size: spec.size, mode: spec.dir_mode(), uid: spec.uid, gid: spec.gid };
        let mount_err = |source| DriverError::Mount { volume: name.clone(), source };
        self.mounter.mount_tmpfs(&files_dir, &options).map_err(mount_err)?;
        active.digests = files::write_new(&files_dir, &rendered, Ownership::of(spec))
            .map_err(|source| DriverError::Write { volume: name.clone(), source })?;
        self.mounter.bind_read_only(&files_dir, mountpoint).map_err(mount_err)?;
        active.device = self.mounter.device(mountpoint);
        active.timers = fresh_timers(spec, &active.token, &active.leases, Instant::now());
        active.secrets = Some(secrets);
        active.last_refresh = Some(SystemTime::now());
        Ok(())
    }

    /// Makes `mountpoint` an empty directory to mount on (its parents mode 0700), unmounting
    /// whatever a crash left there.
    fn prepare_dir(&self, mountpoint: &Path) -> Result<(), DriverError> {
        use std::os::unix::fs::DirBuilderExt;
        let err = |source| DriverError::Directory { path: mountpoint.to_owned(), source };
        if let Some(parent) = mountpoint.parent() {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(parent).map_err(err)?;
        }
        if self.mounter.is_mounted(mountpoint) {
            tracing::warn!(path = %mountpoint.display(), "a stale mount was in the way; unmounting it");
            let _ = self.mounter.unmount(mountpoint);
        }
        match std::fs::create_dir(mountpoint) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(err(e)),
            _ => Ok(()),
        }
    }

    fn save_record(&self, volume: &Volume, id: &str, active: &Active) {
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
        let record = MountRecord {
            volume: volume.record.name.clone(),
            id: id.to_owned(),
            refs: active.refs,
            mountpoint: active.mountpoint.clone(),
            token: active.token.token.clone(),
            accessor: active.token.accessor.clone(),
            token_expires_at: unix_at(active.timers.token.remaining(now)),
            leases,
            retiring: active.retiring.iter().map(|(t, _)| t.token.clone()).collect(),
            digests: active.digests.clone(),
        };
        if let Err(e) = self.store.save_mount(&record) {
            // The mount works without it; only a restart of the plugin would lose track of it.
            tracing::error!(error = %crate::report::chain(&e), "cannot record the mount in the private runtime directory");
        }
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
            self.save_record(&volume, id, active);
            tracing::info!(refs = active.refs, "one reference released; still mounted");
            return Ok(());
        }
        let active = guard.take().expect("checked above");
        self.finish(&volume, id, active, Event::new("unmount", name).mount(id)).await;
        tracing::info!("unmounted and revoked");
        Ok(())
    }

    /// Ends an active mount taken out of its slot: off the schedule, every token of it revoked
    /// (and with them its leases), its tmpfs removed, the slot gone, `event` audited.
    async fn finish(&self, volume: &Volume, id: &str, active: Active, event: Event) {
        let name = &volume.record.name;
        self.leases.remove(&Job::mount(name, id));
        for (old, _) in &active.retiring {
            self.revoke(name, id, &old.token, &old.accessor).await;
        }
        self.release(name, id, &active.token, &active.mountpoint).await;
        volume.slots.lock().unwrap().remove(id);
        self.audit.record(event.accessor(&active.token.accessor));
    }

    /// Revokes `token`; true when nothing of it is left in Vault. A failure while Vault is out
    /// of reach is kept and retried (as a record with no references).
    async fn revoke(&self, volume: &str, id: &str, token: &Token, accessor: &str) -> bool {
        let event = |name| Event::new(name, volume).mount(id).accessor(accessor);
        match self.vault.revoke_self(token).await {
            Ok(()) => {
                METRICS.revocations.inc();
                self.audit.record(event("revoke"));
                true
            }
            // Expired or already revoked: nothing of it is left in Vault.
            Err(e) if e.is_denied() => {
                tracing::info!("the token had already expired");
                true
            }
            Err(e) => {
                METRICS.revocation_failures.inc();
                self.audit.record(
                    event("error")
                        .detail(format!("cannot revoke, will retry: {}", crate::report::chain(&e))),
                );
                tracing::error!(error = %crate::report::chain(&e), "cannot revoke a token; will retry");
                // Kept under a name of its own: one mount may have several tokens to revoke.
                let record = PendingRevocation {
                    key: format!("{:016x}", fastrand::u64(..)),
                    volume: volume.to_owned(),
                    mount: id.to_owned(),
                    token: token.clone(),
                    accessor: accessor.to_owned(),
                };
                if let Err(e) = self.store.save_revocation(&record) {
                    tracing::error!(error = %crate::report::chain(&e), "cannot record the pending revocation; it is retried while the plugin runs");
                }
                self.pending.lock().unwrap().push(record);
                false
            }
        }
    }

    /// Unmounts and removes `mountpoint` (the read-only bind) and the tmpfs behind it, revokes
    /// `token`, forgets the record.
    async fn release(&self, volume: &str, id: &str, token: &IssuedToken, mountpoint: &Path) {
        if !mountpoint.as_os_str().is_empty() {
            self.unmount_dir(mountpoint);
            self.unmount_dir(&self.files_dir(volume, id));
        }
        self.revoke(volume, id, &token.token, &token.accessor).await;
        if let Err(e) = self.store.delete_mount(volume, id) {
            tracing::error!(error = %crate::report::chain(&e), "cannot delete the mount record");
        }
    }

    /// Unmounts `path` if something is mounted there, and removes it and, when no other mount
    /// of the volume is left, its parent.
    fn unmount_dir(&self, path: &Path) {
        if self.mounter.is_mounted(path) {
            if let Err(e) = self.mounter.unmount(path) {
                tracing::error!(error = %crate::report::chain(&e), "cannot unmount");
            }
        }
        let _ = std::fs::remove_dir(path);
        if let Some(parent) = path.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }

    /// Retries the revocations that failed; returns how many are still pending.
    pub async fn retry_revocations(&self) -> usize {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap());
        for record in pending {
            // A failed retry is recorded again, under a new name: this one goes either way.
            self.revoke(&record.volume, &record.mount, &record.token, &record.accessor).await;
            let _ = self.store.delete_revocation(&record.key);
        }
        self.pending.lock().unwrap().len()
    }

    /// Loads the volume definitions and the mount records a previous run left: mounts still in
    /// place are served (and kept up) again; the others (the tmpfs gone, or a revocation
    /// pending) are revoked and cleaned up. Stray mount directories are removed.
    pub async fn restore(&self) {
        let mut identities: BTreeMap<String, identity::Own> = BTreeMap::new();
        for record in self.store.load_volume_identities() {
            if let Some(own) = identity::Own::from_record(&record) {
                identities.insert(record.volume.clone(), own);
            }
        }
        for record in self.store.load_volumes() {
            match VolumeSpec::parse(&record.options, &self.defaults) {
                Ok(spec) => {
                    let own = identities.remove(&record.name);
                    if own.is_none() && spec.identity != IdentityKind::Plugin {
                        tracing::warn!(volume = %record.name, "the volume's own identity did not survive a reboot: its mounts will fail until it is created again with a fresh wrapped-token");
                    }
                    if matches!(
                        own.as_ref().map(|o| &o.identity),
                        Some(identity::OwnIdentity::Token { .. })
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
                    tracing::error!(volume = %record.name, error = %e, "a stored volume definition is no longer valid; it is kept on disk but not served")
                }
            }
        }
        *self.pending.lock().unwrap() = self.store.load_revocations();
        self.retry_revocations().await;
        let mut adopted = 0;
        for record in self.store.load_mounts() {
            for old in &record.retiring {
                self.revoke(&record.volume, &record.id, old, "").await;
            }
            let volume = self.volumes.lock().unwrap().get(&record.volume).cloned();
            match volume {
                Some(volume)
                    if record.refs > 0
                        && self.mounter.is_mounted(&record.mountpoint)
                        && self.mounter.is_mounted(&self.files_dir(&record.volume, &record.id)) =>
                {
                    let mut active = restored(&volume.spec, &record);
                    active.device = self.mounter.device(&record.mountpoint);
                    self.save_record(&volume, &record.id, &active);
                    self.leases.set(Job::mount(&record.volume, &record.id), active.timers.next());
                    let slot = Arc::new(tokio::sync::Mutex::new(Some(active)));
                    volume.slots.lock().unwrap().insert(record.id.clone(), slot);
                    adopted += 1;
                }
                _ => {
                    tracing::info!(volume = %record.volume, id = %short(&record.id), "releasing a mount left by a previous run");
                    self.release(
                        &record.volume,
                        &record.id,
                        &issued_of(&record),
                        &record.mountpoint,
                    )
                    .await;
                }
            }
        }
        self.remove_strays();
        tracing::info!(
            volumes = self.volumes.lock().unwrap().len(),
            mounts = adopted,
            "state restored"
        );
    }

    /// Unmounts and removes mount directories that no active mount owns (a crash between
    /// mount(2) and recording it), binds first.
    fn remove_strays(&self) {
        for root in [&self.mounts_root, &self.files_root] {
            self.remove_strays_below(root);
        }
    }

    fn remove_strays_below(&self, root: &Path) {
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

/// An active mount rebuilt from its record after a restart: its deadlines from the recorded
/// expiries; its data unknown until the next generation.
fn restored(spec: &VolumeSpec, record: &MountRecord) -> Active {
    let now = Instant::now();
    let token = IssuedToken {
        token: record.token.clone(),
        accessor: record.accessor.clone(),
        ttl: record.token_expires_at.map(left_until).unwrap_or(spec.ttl),
        renewable: true,
    };
    let mut leases = vec![None; spec.sources.len()];
    let mut timers = fresh_timers(spec, &token, &leases, now);
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
                deadline.replace = true;
                deadline.act_at = now;
            }
            timers.sources[l.source] = SourceTimer::Leased(deadline);
            leases[l.source] = Some(lease);
        }
    }
    Active {
        refs: record.refs,
        mountpoint: record.mountpoint.clone(),
        mounted_at: now,
        device: None,
        token,
        leases,
        secrets: None,
        timers,
        retiring: Vec::new(),
        digests: record.digests.clone(),
        last_refresh: None,
        last_error: None,
    }
}

/// The token of a mount record, as issued.
fn issued_of(record: &MountRecord) -> IssuedToken {
    IssuedToken {
        token: record.token.clone(),
        accessor: record.accessor.clone(),
        ttl: Duration::ZERO,
        renewable: false,
    }
}

/// The first 12 characters of a mount ID, as Docker shortens IDs; enough to tell them apart in
/// logs.
pub fn short(id: &str) -> &str {
    if !valid_mount_id(id) {
        return "(invalid)"; // logged before it is refused: no newline or escape reaches a log
    }
    id.get(..12).unwrap_or(id)
}

/// A volume name as logged: the name, or `(invalid)` for one that is refused (so no newline or
/// escape from a request reaches a log line).
pub fn named(name: &str) -> &str {
    if valid_volume_name(name) {
        name
    } else {
        "(invalid)"
    }
}

#[cfg(test)]
mod tests;

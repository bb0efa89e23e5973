//! The volume lifecycle: create, mount, unmount, remove, and recovery after a restart; the
//! upkeep of mounted volumes (renewal, replacement, refresh) is in `upkeep.rs`.
//!
//! [`Driver`] is generic over the edges ([`Vault`], [`Mounter`], [`Store`], [`Engine`]) so unit
//! tests run it with fakes. Each `(volume, mount ID)` pair has its own slot, locked across the
//! Vault calls of its Mount, Unmount or upkeep, so mounts of different containers proceed
//! concurrently while a repeated ID is reference-counted, never mounted twice.

mod certificates;
mod containers;
mod login;
mod mount;
mod ports;
mod restore;
mod retain;
mod revoke;
mod secrets;
mod status;
mod sweep;
mod upkeep;
mod userns;
mod volume_identity;

use mount::{fresh_timers, jitter, valid_mount_id, Active, Slot};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::audit::{Audit, Event, Kind};
use crate::dockerd::{Engine, EngineError};
use crate::files::{self, RenderError, WriteError};
use crate::identity::IdentitySlot;
use crate::lease::{Job, LeaseManager};
use crate::state::{Holder, PendingRevocation, StateError, Store, VolumeRecord};
use crate::tmpfs::{MountError, Mounter};
use crate::vault::{Token, Vault, VaultError};
use crate::volume::{valid_volume_name, Defaults, OptionError, VolumeSpec, UNWRAPPED};

pub use crate::lease::plan::Action;
pub use ports::{Backend, Operations};
pub use secrets::{
    parse_labels, SecretError, SecretRequest, SecretValue, TaskLeaseState, TaskLeaseStatus,
    TaskStatus,
};
pub use status::{
    AtStop, CertificateStatus, ExpiryStatus, LeaseStatus, MountStatus, VolumeDetails, VolumeStatus,
};

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
    #[error("volume {volume}: cannot tell which host ids its container ids are")]
    Userns {
        volume: String,
        #[source]
        source: EngineError,
    },
    #[error("volume {volume}: the engines that could have made the mount map user ids differently ({engines}); list one of them in plugin.engines, or set [userns]")]
    UsernsDiffer { volume: String, engines: String },
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
    #[error("cannot keep the view of volume {volume} read-only while its files change; the old files stay")]
    ReadOnly {
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
    #[error("cannot record the mount of volume {volume}, so it does not run: its token was revoked and nothing is left mounted")]
    Record {
        volume: String,
        #[source]
        source: StateError,
    },
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
    /// Always `None` from the driver: see [`Driver::path`].
    pub mountpoint: Option<PathBuf>,
    pub created_at: String,
    pub status: VolumeDetails,
}

struct Volume {
    record: VolumeRecord,
    spec: VolumeSpec,
    /// One slot per mount ID: present while a Mount is under way or the mount is active.
    slots: Mutex<BTreeMap<String, Slot>>,
    /// The volume's own identity (from `wrapped-token`), if it has one and it is known.
    own: Mutex<Option<volume_identity::Own>>,
}

impl Volume {
    fn new(record: VolumeRecord, spec: VolumeSpec, own: Option<volume_identity::Own>) -> Volume {
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

/// The edges a [`Driver`] works through, as one type: the host's real ones
/// ([`crate::daemon::Host`]), or fakes in unit tests.
pub trait Edges: Send + Sync + 'static {
    type Vault: Vault;
    type Mounter: Mounter;
    type Store: Store;
    type Engine: Engine;
}

/// The volume driver.
pub struct Driver<E: Edges> {
    vault: Arc<E::Vault>,
    /// Shared with the blocking threads that make a mount's tmpfs ready and that unmount
    /// (see `release`).
    mounter: Arc<E::Mounter>,
    store: Arc<E::Store>,
    /// The container engines whose containers use the plugin's volumes (each mount is its
    /// engine's: see `containers`); the first one is asked about swarm tasks.
    engines: Vec<Arc<E::Engine>>,
    identity: Arc<IdentitySlot>,
    leases: Arc<LeaseManager>,
    defaults: Defaults,
    /// `[userns]`: the Docker engines' user namespace remapping, when configured.
    userns: Option<crate::dockerd::userns::IdMap>,
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
    /// Certificates whose revocation failed likewise (`certificates`).
    pending_certificates: Mutex<Vec<crate::state::PendingCertificate>>,
    /// The swarm tasks holding a token of a swarm secret (`secrets`).
    tasks: secrets::Tasks,
    /// Notified by each new mount: its container is looked for shortly after.
    untied: tokio::sync::Notify,
}

/// The edges and settings a [`Driver`] is made of.
pub struct Parts<E: Edges> {
    pub vault: Arc<E::Vault>,
    pub mounter: E::Mounter,
    pub store: Arc<E::Store>,
    /// Each made once, for every task that asks it.
    pub engines: Vec<Arc<E::Engine>>,
    pub identity: Arc<IdentitySlot>,
    pub defaults: Defaults,
    /// `[userns]` (see `userns`).
    pub userns: Option<crate::dockerd::userns::IdMap>,
    pub mounts_root: PathBuf,
    pub files_root: PathBuf,
    pub driver_name: String,
    pub templates_dir: PathBuf,
    pub audit: Arc<Audit>,
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

impl<E: Edges> Driver<E> {
    pub fn new(parts: Parts<E>) -> Self {
        Driver {
            vault: parts.vault,
            mounter: Arc::new(parts.mounter),
            store: parts.store,
            engines: parts.engines,
            identity: parts.identity,
            leases: Arc::new(LeaseManager::default()),
            defaults: parts.defaults,
            userns: parts.userns,
            mounts_root: parts.mounts_root,
            files_root: parts.files_root,
            driver_name: parts.driver_name,
            templates_dir: parts.templates_dir,
            audit: parts.audit,
            volumes: Mutex::new(BTreeMap::new()),
            pending: Mutex::new(Vec::new()),
            pending_certificates: Mutex::new(Vec::new()),
            tasks: secrets::Tasks::default(),
            untied: tokio::sync::Notify::new(),
        }
    }

    /// The upkeep schedule, for the task that runs it.
    pub fn lease_manager(&self) -> Arc<LeaseManager> {
        self.leases.clone()
    }

    /// The engine asked about swarm tasks: the first one.
    fn swarm_engine(&self) -> Result<&E::Engine, EngineError> {
        self.engines.first().map(|e| &**e).ok_or(EngineError::NoEngine)
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
        self.check_ids(name, &spec).await?;
        if let Some(template) = &spec.template {
            files::check_template(&self.templates_dir.join(template), &spec).map_err(|e| {
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
            .map(|v| Token::new(std::mem::replace(v, UNWRAPPED.into())))
            // Unwrapped (and looked up) in the volume's namespace, where it was made.
            .map(|w| w.in_namespace(spec.namespace.as_ref()));
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
        if let (Err(_), Some(volume_identity::OwnIdentity::Token { issued, .. })) =
            (&result, own.map(|o| o.identity))
        {
            self.revoke(name, &Holder::Create, &issued.token, &issued.accessor).await;
            // nothing is left half-done
        }
        result
    }

    async fn persist_new(
        &self,
        name: &str,
        options: BTreeMap<String, String>,
        spec: VolumeSpec,
        own: Option<volume_identity::Own>,
    ) -> Result<(), DriverError> {
        let state_err = |source| DriverError::State { volume: name.to_owned(), source };
        self.check_policies(name, &spec, own.as_ref()).await?;
        let record = VolumeRecord { name: name.to_owned(), options, created_at: now_rfc3339() };
        let mut volumes = self.volumes.lock().unwrap();
        if volumes.contains_key(name) {
            // A concurrent Create won (another engine's, or dockerd's retry of a slow one): its
            // records are left as they are.
            return Err(DriverError::Exists { volume: name.to_owned() });
        }
        if let Some(own) = &own {
            self.store.save_volume_identity(&own.record(name)).map_err(state_err)?;
        }
        if let Err(e) = self.store.save_volume(&record) {
            let _ = self.store.delete_volume_identity(name);
            return Err(state_err(e));
        }
        tracing::info!(sources = spec.sources.len(), identity = ?spec.identity, "volume created");
        let event = Event::new(Kind::Create, name).detail(format!("identity: {:?}", spec.identity));
        self.audit.record(match own.as_ref().map(|o| &o.identity) {
            Some(volume_identity::OwnIdentity::Token { issued, .. }) => {
                event.accessor(&issued.accessor)
            }
            _ => event,
        });
        if let Some(volume_identity::OwnIdentity::Token { renew_at, issued }) =
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
        if let Some(volume_identity::OwnIdentity::Token { issued, .. }) = own.map(|o| o.identity) {
            self.revoke(name, &Holder::Remove, &issued.token, &issued.accessor).await;
        }
        if let Err(e) = self.store.delete_volume_identity(name) {
            tracing::error!(error = %crate::report::chain(&e), "cannot delete the volume's identity record");
        }
        self.audit.record(Event::new(Kind::Remove, name));
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

    /// Never a mount point: each mount is one container's, and Path names no container, so
    /// any path would be some other container's. Docker takes a container's path from the
    /// reply to its Mount; an empty Path (and Get's Mountpoint) is what its adapter expects of
    /// a volume not mounted for the caller (moby `volume/drivers/adapter.go`).
    pub fn path(&self, name: &str) -> Result<Option<PathBuf>, DriverError> {
        self.volume(name)?;
        Ok(None)
    }

    fn info(&self, volume: &Volume) -> VolumeInfo {
        let mut active = 0;
        for (_, slot) in volume.slots() {
            // A slot locked by a Mount or an upkeep under way: skip it, never wait.
            if let Ok(guard) = slot.try_lock() {
                active += usize::from(guard.is_some());
            }
        }
        VolumeInfo {
            name: volume.record.name.clone(),
            mountpoint: None,
            created_at: volume.record.created_at.clone(),
            status: VolumeDetails::of(&volume.spec, active),
        }
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

#[cfg(test)]
mod tests_readonly;

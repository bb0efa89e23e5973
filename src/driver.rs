//! The volume lifecycle: create, mount, unmount, remove, and recovery after a restart.
//!
//! [`Driver`] is generic over the edges ([`Vault`], [`Mounter`], [`Store`]) so unit tests run it
//! with fakes. Each `(volume, mount ID)` pair has its own slot, locked across the Vault calls of
//! its Mount or Unmount, so mounts of different containers proceed concurrently while a repeated
//! ID is reference-counted, never mounted twice.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::files::{self, Ownership, RenderError, WriteError};
use crate::state::{MountRecord, StateError, Store, VolumeRecord};
use crate::tmpfs::{MountError, Mounter, TmpfsOptions};
use crate::vault::identity::IdentitySlot;
use crate::vault::{ChildTokenRequest, IssuedToken, Lease, Token, Vault, VaultError};
use crate::volume::{valid_volume_name, Defaults, OptionError, VolumeSpec};

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
    #[error("the plugin is not logged in to vault: {reason}")]
    NoIdentity { reason: String },
    #[error("cannot read the secrets of volume {volume}")]
    Read {
        volume: String,
        #[source]
        source: VaultError,
    },
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
#[derive(Debug)]
struct Active {
    refs: u32,
    mountpoint: PathBuf,
    token: IssuedToken,
    leases: Vec<Lease>,
}

type Slot = Arc<tokio::sync::Mutex<Option<Active>>>;

#[derive(Debug)]
struct Volume {
    record: VolumeRecord,
    spec: VolumeSpec,
    /// One slot per mount ID: present while a Mount is under way or the mount is active.
    slots: Mutex<BTreeMap<String, Slot>>,
}

impl Volume {
    fn slot(&self, id: &str) -> Option<Slot> {
        self.slots.lock().unwrap().get(id).cloned()
    }
}

/// The volume driver.
pub struct Driver<V, M, S> {
    vault: Arc<V>,
    mounter: M,
    store: Arc<S>,
    identity: Arc<IdentitySlot>,
    defaults: Defaults,
    mounts_root: PathBuf,
    volumes: Mutex<BTreeMap<String, Arc<Volume>>>,
    /// Tokens whose revocation failed while Vault was out of reach; retried until it works.
    pending: Mutex<Vec<MountRecord>>,
}

fn valid_mount_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

impl<V: Vault, M: Mounter, S: Store> Driver<V, M, S> {
    pub fn new(
        vault: Arc<V>,
        mounter: M,
        store: Arc<S>,
        identity: Arc<IdentitySlot>,
        defaults: Defaults,
        mounts_root: PathBuf,
    ) -> Self {
        Driver {
            vault,
            mounter,
            store,
            identity,
            defaults,
            mounts_root,
            volumes: Mutex::new(BTreeMap::new()),
            pending: Mutex::new(Vec::new()),
        }
    }

    fn volume(&self, name: &str) -> Result<Arc<Volume>, DriverError> {
        self.volumes
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .ok_or_else(|| DriverError::NoSuchVolume { volume: name.to_owned() })
    }

    /// Validates the options, then persists the definition. Idempotent for the same options.
    #[tracing::instrument(skip_all, fields(volume = %name))]
    pub fn create(&self, name: &str, options: BTreeMap<String, String>) -> Result<(), DriverError> {
        if !valid_volume_name(name) {
            return Err(DriverError::InvalidName { name: name.to_owned() });
        }
        let spec = VolumeSpec::parse(&options, &self.defaults)
            .map_err(|source| DriverError::Options { volume: name.to_owned(), source })?;
        let mut volumes = self.volumes.lock().unwrap();
        if let Some(existing) = volumes.get(name) {
            return if existing.record.options == options {
                Ok(())
            } else {
                Err(DriverError::Exists { volume: name.to_owned() })
            };
        }
        let record = VolumeRecord { name: name.to_owned(), options, created_at: now_rfc3339() };
        self.store
            .save_volume(&record)
            .map_err(|source| DriverError::State { volume: name.to_owned(), source })?;
        tracing::info!(sources = spec.sources.len(), "volume created");
        volumes.insert(name.to_owned(), Arc::new(Volume { record, spec, slots: Mutex::default() }));
        Ok(())
    }

    /// Deletes the definition; refused while any mount of the volume is active or under way.
    #[tracing::instrument(skip_all, fields(volume = %name))]
    pub fn remove(&self, name: &str) -> Result<(), DriverError> {
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
        volumes.remove(name);
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
        let slots: Vec<Slot> = volume.slots.lock().unwrap().values().cloned().collect();
        let mut active = 0;
        let mut mountpoint = None;
        for slot in slots {
            // A slot locked by a Mount under way is not active yet: skip it, never wait.
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
            }),
        }
    }

    /// Mounts the volume for mount `id`: a child token, every source read with it, a fresh
    /// tmpfs with the files. A repeated `id` only counts one more reference.
    #[tracing::instrument(skip_all, fields(volume = %name, id = %short(id)))]
    pub async fn mount(&self, name: &str, id: &str) -> Result<PathBuf, DriverError> {
        if !valid_mount_id(id) {
            return Err(DriverError::InvalidMountId { id: id.chars().take(140).collect() });
        }
        let volume = self.volume(name)?;
        let slot = volume.slots.lock().unwrap().entry(id.to_owned()).or_default().clone();
        let mut guard = slot.lock().await;
        if let Some(active) = guard.as_mut() {
            active.refs += 1;
            self.save_record(&volume, id, active);
            tracing::info!(refs = active.refs, "mount ID seen again; reference counted");
            return Ok(active.mountpoint.clone());
        }
        let result = self.mount_new(&volume, id).await;
        match result {
            Ok(active) => {
                let mountpoint = active.mountpoint.clone();
                tracing::info!(accessor = %active.token.accessor, leases = active.leases.len(), "mounted");
                *guard = Some(active);
                Ok(mountpoint)
            }
            Err(e) => {
                drop(guard);
                volume.slots.lock().unwrap().remove(id);
                Err(e)
            }
        }
    }

    async fn mount_new(&self, volume: &Volume, id: &str) -> Result<Active, DriverError> {
        let name = &volume.record.name;
        let spec = &volume.spec;
        let request = ChildTokenRequest {
            policies: spec.policies.clone(),
            ttl: spec.ttl,
            display_name: format!("vault-secrets-{name}"),
            meta: vec![("volume".into(), name.clone()), ("mount_id".into(), short(id).to_owned())],
        };
        let parent = self.identity.token().map_err(|reason| DriverError::NoIdentity { reason })?;
        let token = self
            .vault
            .create_child_token(&parent, &request)
            .await
            .map_err(|source| DriverError::ChildToken { volume: name.clone(), source })?;
        let mut active = Active {
            refs: 1,
            mountpoint: self.mounts_root.join(name).join(id),
            token,
            leases: Vec::new(),
        };
        // Recorded before anything else is obtained: a crash from here on is cleaned up at the
        // next start (the token revoked, with every lease it made).
        self.save_record(volume, id, &active);
        match self.fill(volume, &mut active).await {
            Ok(()) => {
                self.save_record(volume, id, &active);
                Ok(active)
            }
            Err(e) => {
                self.release(name, id, &active.token.token, &active.mountpoint).await;
                Err(e)
            }
        }
    }

    /// Reads every source with the mount's token, then mounts and fills the tmpfs.
    async fn fill(&self, volume: &Volume, active: &mut Active) -> Result<(), DriverError> {
        let name = &volume.record.name;
        let spec = &volume.spec;
        let mut secrets = Vec::with_capacity(spec.sources.len());
        for source in &spec.sources {
            let secret = self
                .vault
                .read(&active.token.token, source)
                .await
                .map_err(|source| DriverError::Read { volume: name.clone(), source })?;
            active.leases.extend(secret.lease.clone());
            secrets.push(secret);
        }
        let rendered = files::render(spec, &secrets)
            .map_err(|source| DriverError::Render { volume: name.clone(), source })?;
        drop(secrets);
        let mountpoint = &active.mountpoint;
        self.prepare_dir(mountpoint)?;
        let options =
            TmpfsOptions { size: spec.size, mode: spec.dir_mode(), uid: spec.uid, gid: spec.gid };
        self.mounter
            .mount_tmpfs(mountpoint, &options)
            .map_err(|source| DriverError::Mount { volume: name.clone(), source })?;
        files::write(mountpoint, &rendered, Ownership::of(spec))
            .map_err(|source| DriverError::Write { volume: name.clone(), source })
    }

    fn prepare_dir(&self, mountpoint: &Path) -> Result<(), DriverError> {
        let err = |source| DriverError::Directory { path: mountpoint.to_owned(), source };
        if let Some(parent) = mountpoint.parent() {
            std::fs::create_dir_all(parent).map_err(err)?;
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
        let record = MountRecord {
            volume: volume.record.name.clone(),
            id: id.to_owned(),
            refs: active.refs,
            mountpoint: active.mountpoint.clone(),
            token: active.token.token.clone(),
            accessor: active.token.accessor.clone(),
            leases: active.leases.iter().map(Into::into).collect(),
        };
        if let Err(e) = self.store.save_mount(&record) {
            // The mount works without it; only a restart of the plugin would lose track of it.
            tracing::error!(error = %format!("{e:#}"), "cannot record the mount in the private runtime directory");
        }
    }

    /// Drops one reference of mount `id`; the last one revokes its token (and with it every
    /// lease it created) and removes its tmpfs. An unknown ID is not an error: Docker may
    /// repeat an Unmount, or send one for a mount a previous run already released.
    #[tracing::instrument(skip_all, fields(volume = %name, id = %short(id)))]
    pub async fn unmount(&self, name: &str, id: &str) -> Result<(), DriverError> {
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
        self.release(name, id, &active.token.token, &active.mountpoint).await;
        volume.slots.lock().unwrap().remove(id);
        tracing::info!(accessor = %active.token.accessor, "unmounted and revoked");
        Ok(())
    }

    /// Revokes `token`, unmounts and removes `mountpoint`, forgets the record. A revocation
    /// that fails because Vault is out of reach is kept and retried.
    async fn release(&self, volume: &str, id: &str, token: &Token, mountpoint: &Path) {
        if self.mounter.is_mounted(mountpoint) {
            if let Err(e) = self.mounter.unmount(mountpoint) {
                tracing::error!(error = %format!("{e:#}"), "cannot unmount");
            }
        }
        let _ = std::fs::remove_dir(mountpoint);
        if let Some(parent) = mountpoint.parent() {
            let _ = std::fs::remove_dir(parent); // only when no other mount of the volume is left
        }
        match self.vault.revoke_self(token).await {
            Ok(()) => {}
            // Expired or already revoked: nothing of it is left in Vault.
            Err(e) if e.is_denied() => tracing::info!("the mount's token had already expired"),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot revoke the mount's token; will retry");
                let record = MountRecord {
                    volume: volume.to_owned(),
                    id: id.to_owned(),
                    refs: 0,
                    mountpoint: mountpoint.to_owned(),
                    token: token.clone(),
                    accessor: String::new(),
                    leases: Vec::new(),
                };
                let _ = self.store.save_mount(&record);
                self.pending.lock().unwrap().push(record);
                return;
            }
        }
        if let Err(e) = self.store.delete_mount(volume, id) {
            tracing::error!(error = %format!("{e:#}"), "cannot delete the mount record");
        }
    }

    /// Retries the revocations that failed; returns how many are still pending.
    pub async fn retry_revocations(&self) -> usize {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap());
        for record in pending {
            self.release(&record.volume, &record.id, &record.token, &record.mountpoint).await;
        }
        self.pending.lock().unwrap().len()
    }

    /// Loads the volume definitions and the mount records a previous run left: mounts still in
    /// place are served again; the others (the tmpfs gone, or a revocation pending) are
    /// revoked and cleaned up. Stray mount directories are removed.
    pub async fn restore(&self) {
        for record in self.store.load_volumes() {
            match VolumeSpec::parse(&record.options, &self.defaults) {
                Ok(spec) => {
                    let volume = Volume { record, spec, slots: Mutex::default() };
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
        let mut adopted = 0;
        for record in self.store.load_mounts() {
            let volume = self.volumes.lock().unwrap().get(&record.volume).cloned();
            match volume {
                Some(volume) if record.refs > 0 && self.mounter.is_mounted(&record.mountpoint) => {
                    let active = Active {
                        refs: record.refs,
                        mountpoint: record.mountpoint.clone(),
                        token: IssuedToken {
                            token: record.token.clone(),
                            accessor: record.accessor.clone(),
                            ttl: volume.spec.ttl,
                            renewable: true,
                        },
                        leases: record
                            .leases
                            .iter()
                            .map(|l| Lease {
                                id: l.id.clone(),
                                duration: std::time::Duration::from_secs(l.duration_secs),
                                renewable: l.renewable,
                            })
                            .collect(),
                    };
                    let slot = Arc::new(tokio::sync::Mutex::new(Some(active)));
                    volume.slots.lock().unwrap().insert(record.id.clone(), slot);
                    adopted += 1;
                }
                _ => {
                    tracing::info!(volume = %record.volume, id = %short(&record.id), "releasing a mount left by a previous run");
                    self.release(&record.volume, &record.id, &record.token, &record.mountpoint)
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
    /// mount(2) and recording it).
    fn remove_strays(&self) {
        let Ok(volume_dirs) = std::fs::read_dir(&self.mounts_root) else { return };
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

/// The first 12 characters of a mount ID, as Docker shortens IDs; enough to tell them apart in
/// logs.
pub fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
#[path = "driver_tests.rs"]
mod tests;

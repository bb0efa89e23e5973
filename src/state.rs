//! What the plugin remembers across restarts, behind the [`Store`] trait.
//!
//! Two places, two kinds of data:
//! - `state_dir` (persistent disk): volume definitions, the options `docker volume create` was
//!   given and when. Never a secret, never a token.
//! - the private tmpfs under `runtime_dir` (memory only, mode 0700): each active mount's record
//!   with its token, so a restarted plugin still revokes it at Unmount; and each swarm task's
//!   secret token, so it is still revoked when the task ends. It survives a plugin
//!   restart, not a host reboot.
//!
//! Every file is versioned JSON, written to a temporary file, fsynced and renamed into place.
//!
//! # Formats: upgrades and downgrades
//!
//! Upgrading is restarting on a new binary (or `docker plugin upgrade`) while containers run:
//! the new build must take over every record the old one left, or those containers' tokens
//! are never revoked and their mounts are released under them. So:
//!
//! - Each kind of record has a **format**, written in every file as `version`
//!   ([`format::Record::FORMAT`]; the table of kinds is in [`mod@format`]). A build reads every
//!   format of a kind from 1 up to its own and writes its own: a record it takes over is
//!   written back in the new format at its next save.
//! - **A format a release has written is frozen.** Adding a field to such a kind (or to a
//!   record nested in it), or changing one, bumps that kind's `FORMAT` — once per release, for
//!   all the fields its development adds. A new field takes `#[serde(default)]` (what an older
//!   record gets) or a [`format::Record::migrate`] step. The bump is needed even for a
//!   defaulted field: an older build would read the record, silently drop the field, act
//!   without it (revoke in the wrong namespace, leave a certificate unrevoked, ask the wrong
//!   engine) and write the record back without it.
//! - A change of the **layout** a mount record describes (where its tmpfs and its read-only
//!   bind are) is a format change too, with its migration: 0.1.0's builds before the read-only
//!   bind kept the tmpfs where the bind now is, and the first build with the bind released
//!   their mounts at its first start because nothing told it the layout had changed.
//! - **A newer format than this build's is refused**: [`DirStore::open`] fails, naming the file,
//!   its format, the newest this build reads, and what to do; `serve` stops before it touches
//!   a mount. Skipping the record instead would leave its token unrevoked and take the mount
//!   for a stray. Nothing is removed. So a downgrade works only while no record of a changed
//!   kind exists (e.g. with no container using the plugin's volumes: no mount record), and
//!   0.1.0 builds, which read format 1 only and skip the rest, must not be downgraded to
//!   while containers run.
//! - The records every release wrote are kept as fixtures (`tests/fixtures/state/RELEASE/`):
//!   a unit test reads each with this build without losing a field, and fails when a kind
//!   whose format a release wrote gains a field without a new format. Adding a release there
//!   freezes its formats.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::files::Digests;
use crate::vault::pki::Issued;
use crate::vault::Token;

pub mod format;
pub mod quota;
mod tokens;

use tokens::{opt_token_serde, token_serde, tokens_serde};

use format::{encode, load, load_dir, save};
use quota::Quota;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot remove {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds a {kind} record in format {found}, written by a newer vault-secrets; this build reads {kind} formats 1 to {supported} and would lose what that build recorded (a downgrade): {remedy}")]
    Newer { path: PathBuf, kind: &'static str, found: u32, supported: u32, remedy: &'static str },
    #[error("no room to record {path}: the records of mounts and swarm tasks take {used} of the {limit} bytes of the private tmpfs they may take (the rest is kept for the plugin's own records); it has room again as containers stop")]
    Full { path: PathBuf, used: u64, limit: u64 },
    #[error("the record {path} would take {size} bytes; a record takes at most {limit} (a digest per file: a volume with fewer files fits)")]
    TooLarge { path: PathBuf, size: u64, limit: u64 },
}

/// A volume definition as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub name: String,
    pub options: BTreeMap<String, String>,
    /// RFC 3339.
    pub created_at: String,
}

/// An active mount as kept in the private tmpfs. `Debug` never shows the token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MountRecord {
    pub volume: String,
    pub id: String,
    pub refs: u32,
    pub mountpoint: PathBuf,
    #[serde(with = "token_serde")]
    pub token: Token,
    pub accessor: String,
    /// When the token expires (seconds since the epoch), as last renewed.
    #[serde(default)]
    pub token_expires_at: Option<u64>,
    #[serde(default)]
    pub leases: Vec<LeaseRecord>,
    /// The sources that expire without a lease (certificates), with when to replace them.
    #[serde(default)]
    pub expiring: Vec<ExpiryRecord>,
    /// Tokens of replaced generations not yet revoked.
    #[serde(default, with = "tokens_serde")]
    pub retiring: Vec<Token>,
    /// What was last written into the mount's tmpfs (digests, never contents).
    #[serde(default)]
    pub digests: Digests,
    /// The container that holds the mount, once it is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    /// The engine (its API socket) whose record says the mount is `container`'s; none in
    /// records of earlier builds, whose `container` was found by another rule and is looked
    /// for again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// Its container died and its tokens were revoked: nothing of it is left to renew.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ended: bool,
    /// The certificates its sources issued without a lease, revoked when it ends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<Issued>,
}

/// A container, as the audit log and the mount records name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    /// Its name, without Docker's leading `/` (empty if the engine gave none).
    pub name: String,
}

/// A lease of one source of a mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The index of the source in the volume's sources.
    pub source: usize,
    pub id: String,
    /// The duration it was issued with (what renewals ask for).
    pub duration_secs: u64,
    pub renewable: bool,
    /// When it expires (seconds since the epoch), as last renewed.
    pub expires_at: Option<u64>,
}

/// A source of a mount that expires without a lease (a certificate's `expiration`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpiryRecord {
    /// The index of the source in the volume's sources.
    pub source: usize,
    /// When it expires (seconds since the epoch), from its data.
    pub expires_at: u64,
    /// When it is due to be replaced (seconds since the epoch).
    pub replace_at: Option<u64>,
}

/// The plugin's own identity as kept in the private tmpfs, so a restart needs no new login
/// (and the file of a wrapped secret_id, deleted after its unwrap, is not needed again).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdentityRecord {
    #[serde(with = "token_serde")]
    pub token: Token,
    #[serde(default, with = "opt_token_serde")]
    pub secret_id: Option<Token>,
}

/// A token whose revocation failed while Vault was out of reach, kept in the private tmpfs
/// and retried until it works (also after a restart). `Debug` never shows the token.
#[derive(Clone, Serialize, Deserialize)]
pub struct PendingRevocation {
    /// Its name in the store.
    pub key: String,
    pub volume: String,
    /// The mount ID it was issued for, or what it was (`create`, `remove` for a volume's own
    /// identity): for the audit log.
    pub mount: String,
    #[serde(with = "token_serde")]
    pub token: Token,
    pub accessor: String,
}

impl std::fmt::Debug for PendingRevocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingRevocation")
            .field("volume", &self.volume)
            .field("mount", &self.mount)
            .field("accessor", &self.accessor)
            .finish_non_exhaustive()
    }
}

/// A certificate whose revocation failed while Vault was out of reach (or the plugin had no
/// identity), kept in the private tmpfs and retried like a [`PendingRevocation`]; revoked
/// with the plugin's token in `namespace`. Holds no secret: a serial and an API path.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingCertificate {
    /// Its name in the store.
    pub key: String,
    pub volume: String,
    /// The mount ID it was issued for: for the audit log.
    pub mount: String,
    /// The volume's namespace, where the certificate was issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub certificate: Issued,
}

/// A Swarm task's secret (`/SecretProvider.GetSecret`) as kept in the private tmpfs: the token
/// it was read with and that token's leases, so that a restarted plugin still revokes them when
/// the task ends. Never the value. `Debug` never shows the token.
#[derive(Clone, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The swarm task ID.
    pub task: String,
    /// The swarm secret's name.
    pub secret: String,
    #[serde(default)]
    pub service: String,
    #[serde(with = "token_serde")]
    pub token: Token,
    pub accessor: String,
    /// The TTL asked for the token (its renewals ask for it again).
    pub ttl_secs: u64,
    /// When the token expires (seconds since the epoch), as last renewed.
    #[serde(default)]
    pub token_expires_at: Option<u64>,
    #[serde(default)]
    pub leases: Vec<LeaseRecord>,
}

impl std::fmt::Debug for TaskRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskRecord")
            .field("task", &self.task)
            .field("secret", &self.secret)
            .field("accessor", &self.accessor)
            .finish_non_exhaustive()
    }
}

/// A volume's own identity (from `wrapped-token`), kept in the private tmpfs only: it
/// survives a plugin restart, not a reboot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumeIdentityRecord {
    pub volume: String,
    /// The token a wrapped token held (its mounts get child tokens of it)…
    #[serde(default, with = "opt_token_serde")]
    pub token: Option<Token>,
    #[serde(default)]
    pub accessor: String,
    /// …or the AppRole credentials a wrapped secret_id gave (each mount logs in).
    #[serde(default)]
    pub role_id: Option<String>,
    #[serde(default, with = "opt_token_serde")]
    pub secret_id: Option<Token>,
    /// The wrapping token used at create, to recognise a repeated Create.
    #[serde(with = "token_serde")]
    pub wrapping: Token,
}

/// Persistence of volume definitions, mount records and the identity.
pub trait Store: Send + Sync + 'static {
    fn load_volumes(&self) -> Vec<VolumeRecord>;
    fn save_volume(&self, record: &VolumeRecord) -> Result<(), StateError>;
    fn delete_volume(&self, name: &str) -> Result<(), StateError>;
    fn load_mounts(&self) -> Vec<MountRecord>;
    fn save_mount(&self, record: &MountRecord) -> Result<(), StateError>;
    fn delete_mount(&self, volume: &str, id: &str) -> Result<(), StateError>;
    fn load_revocations(&self) -> Vec<PendingRevocation>;
    fn save_revocation(&self, record: &PendingRevocation) -> Result<(), StateError>;
    fn delete_revocation(&self, key: &str) -> Result<(), StateError>;
    fn load_certificates(&self) -> Vec<PendingCertificate>;
    fn save_certificate(&self, record: &PendingCertificate) -> Result<(), StateError>;
    fn delete_certificate(&self, key: &str) -> Result<(), StateError>;
    fn load_identity(&self) -> Option<IdentityRecord>;
    fn save_identity(&self, record: &IdentityRecord) -> Result<(), StateError>;
    fn load_volume_identities(&self) -> Vec<VolumeIdentityRecord>;
    fn save_volume_identity(&self, record: &VolumeIdentityRecord) -> Result<(), StateError>;
    fn delete_volume_identity(&self, volume: &str) -> Result<(), StateError>;
    fn load_tasks(&self) -> Vec<TaskRecord>;
    fn save_task(&self, record: &TaskRecord) -> Result<(), StateError>;
    fn delete_task(&self, task: &str, secret: &str) -> Result<(), StateError>;
}

/// The real store: JSON files in `state_dir/volumes/` and in the private tmpfs.
#[derive(Debug)]
pub struct DirStore {
    volumes: PathBuf,
    private: PathBuf,
    /// What mount and task records (Docker users') take of the private tmpfs.
    quota: Quota,
}

impl DirStore {
    /// `state_dir` must exist; `private` is the (already mounted) private tmpfs. Refuses a
    /// store holding a record of a newer format than this build's (a downgrade).
    pub fn open(state_dir: &Path, private: &Path) -> Result<DirStore, StateError> {
        DirStore::open_sized(state_dir, private, quota::CAPACITY)
    }

    /// [`DirStore::open`] over a private tmpfs of `capacity` bytes: users' records may take
    /// three quarters of it.
    pub fn open_sized(
        state_dir: &Path,
        private: &Path,
        capacity: u64,
    ) -> Result<DirStore, StateError> {
        let volumes = state_dir.join("volumes");
        let mounts = private.join("mounts");
        let identities = private.join("identities");
        let revocations = private.join("revocations");
        let tasks = private.join("tasks");
        let certificates = private.join("certificates");
        for dir in [&volumes, &mounts, &identities, &revocations, &tasks, &certificates] {
            create_private_dir(dir)?;
        }
        use format::{files_in, refuse_newer};
        refuse_newer::<VolumeRecord>(&files_in(&volumes))?;
        refuse_newer::<MountRecord>(&files_in(&mounts))?;
        refuse_newer::<VolumeIdentityRecord>(&files_in(&identities))?;
        refuse_newer::<PendingRevocation>(&files_in(&revocations))?;
        refuse_newer::<TaskRecord>(&files_in(&tasks))?;
        refuse_newer::<PendingCertificate>(&files_in(&certificates))?;
        refuse_newer::<IdentityRecord>(&[private.join("identity.json")])?;
        let quota = Quota::new(quota::user_records(capacity), &[&mounts, &tasks]);
        Ok(DirStore { volumes, private: private.to_owned(), quota })
    }

    /// Writes a Docker user's record within the quota: refused, nothing written, when it
    /// would take more than users' records may.
    fn save_charged<T: format::Record>(&self, path: &Path, record: &T) -> Result<(), StateError> {
        let bytes = encode(record);
        let before = self.quota.charge(path, bytes.len() as u64)?;
        atomic_write(path, &bytes, false).inspect_err(|_| self.quota.restore(path, before))
    }

    fn remove_charged(&self, path: &Path) -> Result<(), StateError> {
        remove(path)?;
        self.quota.release(path);
        Ok(())
    }

    fn mount_path(&self, volume: &str, id: &str) -> PathBuf {
        // `@` is in neither a volume name nor a mount ID, so the pair maps to one name.
        self.private.join("mounts").join(format!("{volume}@{id}.json"))
    }

    fn task_path(&self, task: &str, secret: &str) -> PathBuf {
        // `@` is in neither a task ID nor a secret name.
        self.private.join("tasks").join(format!("{task}@{secret}.json"))
    }
}

/// The identity record a running plugin keeps in its private tmpfs at `private`, read without
/// creating anything (for `check`).
pub fn peek_identity(private: &Path) -> Option<IdentityRecord> {
    let path = private.join("identity.json");
    path.exists().then(|| load(&path)).flatten()
}

/// Creates `dir` (and parents) with mode 0700.
pub fn create_private_dir(dir: &Path) -> Result<(), StateError> {
    let err = |source| StateError::Write { path: dir.to_owned(), source };
    std::fs::create_dir_all(dir).map_err(err)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)
}

/// Writes `bytes` to `path` atomically: temporary file (mode 0600), then rename; with
/// `durable`, fsyncs the file and the directory too (pointless on a tmpfs).
pub fn atomic_write(path: &Path, bytes: &[u8], durable: bool) -> Result<(), StateError> {
    let err = |source| StateError::Write { path: path.to_owned(), source };
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(bytes)?;
        if durable {
            file.sync_all()?;
        }
        std::fs::rename(&temp, path)?;
        if durable {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result.map_err(err)
}

fn remove(path: &Path) -> Result<(), StateError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(StateError::Remove { path: path.to_owned(), source: e })
        }
        _ => Ok(()),
    }
}

impl Store for DirStore {
    fn load_volumes(&self) -> Vec<VolumeRecord> {
        load_dir(&self.volumes)
    }

    fn save_volume(&self, record: &VolumeRecord) -> Result<(), StateError> {
        save(&self.volumes.join(format!("{}.json", record.name)), record, true)
    }

    fn delete_volume(&self, name: &str) -> Result<(), StateError> {
        remove(&self.volumes.join(format!("{name}.json")))
    }

    fn load_mounts(&self) -> Vec<MountRecord> {
        load_dir(&self.private.join("mounts"))
    }

    fn save_mount(&self, record: &MountRecord) -> Result<(), StateError> {
        self.save_charged(&self.mount_path(&record.volume, &record.id), record)
    }

    fn delete_mount(&self, volume: &str, id: &str) -> Result<(), StateError> {
        self.remove_charged(&self.mount_path(volume, id))
    }

    fn load_revocations(&self) -> Vec<PendingRevocation> {
        load_dir(&self.private.join("revocations"))
    }

    fn save_revocation(&self, record: &PendingRevocation) -> Result<(), StateError> {
        let path = self.private.join("revocations").join(format!("{}.json", record.key));
        save(&path, record, false)
    }

    fn delete_revocation(&self, key: &str) -> Result<(), StateError> {
        remove(&self.private.join("revocations").join(format!("{key}.json")))
    }

    fn load_certificates(&self) -> Vec<PendingCertificate> {
        load_dir(&self.private.join("certificates"))
    }

    fn save_certificate(&self, record: &PendingCertificate) -> Result<(), StateError> {
        let path = self.private.join("certificates").join(format!("{}.json", record.key));
        save(&path, record, false)
    }

    fn delete_certificate(&self, key: &str) -> Result<(), StateError> {
        remove(&self.private.join("certificates").join(format!("{key}.json")))
    }

    fn load_identity(&self) -> Option<IdentityRecord> {
        load(&self.private.join("identity.json"))
    }

    fn save_identity(&self, record: &IdentityRecord) -> Result<(), StateError> {
        save(&self.private.join("identity.json"), record, false)
    }

    fn load_volume_identities(&self) -> Vec<VolumeIdentityRecord> {
        load_dir(&self.private.join("identities"))
    }

    fn save_volume_identity(&self, record: &VolumeIdentityRecord) -> Result<(), StateError> {
        save(
            &self.private.join("identities").join(format!("{}.json", record.volume)),
            record,
            false,
        )
    }

    fn delete_volume_identity(&self, volume: &str) -> Result<(), StateError> {
        remove(&self.private.join("identities").join(format!("{volume}.json")))
    }

    fn load_tasks(&self) -> Vec<TaskRecord> {
        load_dir(&self.private.join("tasks"))
    }

    fn save_task(&self, record: &TaskRecord) -> Result<(), StateError> {
        self.save_charged(&self.task_path(&record.task, &record.secret), record)
    }

    fn delete_task(&self, task: &str, secret: &str) -> Result<(), StateError> {
        self.remove_charged(&self.task_path(task, secret))
    }
}

/// An in-memory store for unit tests.
#[derive(Debug, Default)]
pub struct MemoryStore {
    pub volumes: Mutex<BTreeMap<String, VolumeRecord>>,
    pub mounts: Mutex<BTreeMap<(String, String), MountRecord>>,
    pub identity: Mutex<Option<IdentityRecord>>,
    pub volume_identities: Mutex<BTreeMap<String, VolumeIdentityRecord>>,
    pub revocations: Mutex<BTreeMap<String, PendingRevocation>>,
    pub certificates: Mutex<BTreeMap<String, PendingCertificate>>,
    pub tasks: Mutex<BTreeMap<(String, String), TaskRecord>>,
    /// Refuses every mount record while set, as a full private tmpfs does.
    pub full: std::sync::atomic::AtomicBool,
}

impl Store for MemoryStore {
    fn load_volumes(&self) -> Vec<VolumeRecord> {
        self.volumes.lock().unwrap().values().cloned().collect()
    }

    fn save_volume(&self, record: &VolumeRecord) -> Result<(), StateError> {
        self.volumes.lock().unwrap().insert(record.name.clone(), record.clone());
        Ok(())
    }

    fn delete_volume(&self, name: &str) -> Result<(), StateError> {
        self.volumes.lock().unwrap().remove(name);
        Ok(())
    }

    fn load_mounts(&self) -> Vec<MountRecord> {
        self.mounts.lock().unwrap().values().cloned().collect()
    }

    fn save_mount(&self, record: &MountRecord) -> Result<(), StateError> {
        if self.full.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StateError::Full { path: PathBuf::from("mounts"), used: 1, limit: 1 });
        }
        let key = (record.volume.clone(), record.id.clone());
        self.mounts.lock().unwrap().insert(key, record.clone());
        Ok(())
    }

    fn delete_mount(&self, volume: &str, id: &str) -> Result<(), StateError> {
        self.mounts.lock().unwrap().remove(&(volume.to_owned(), id.to_owned()));
        Ok(())
    }

    fn load_revocations(&self) -> Vec<PendingRevocation> {
        self.revocations.lock().unwrap().values().cloned().collect()
    }

    fn save_revocation(&self, record: &PendingRevocation) -> Result<(), StateError> {
        self.revocations.lock().unwrap().insert(record.key.clone(), record.clone());
        Ok(())
    }

    fn delete_revocation(&self, key: &str) -> Result<(), StateError> {
        self.revocations.lock().unwrap().remove(key);
        Ok(())
    }

    fn load_certificates(&self) -> Vec<PendingCertificate> {
        self.certificates.lock().unwrap().values().cloned().collect()
    }

    fn save_certificate(&self, record: &PendingCertificate) -> Result<(), StateError> {
        self.certificates.lock().unwrap().insert(record.key.clone(), record.clone());
        Ok(())
    }

    fn delete_certificate(&self, key: &str) -> Result<(), StateError> {
        self.certificates.lock().unwrap().remove(key);
        Ok(())
    }

    fn load_identity(&self) -> Option<IdentityRecord> {
        self.identity.lock().unwrap().clone()
    }

    fn save_identity(&self, record: &IdentityRecord) -> Result<(), StateError> {
        *self.identity.lock().unwrap() = Some(record.clone());
        Ok(())
    }

    fn load_volume_identities(&self) -> Vec<VolumeIdentityRecord> {
        self.volume_identities.lock().unwrap().values().cloned().collect()
    }

    fn save_volume_identity(&self, record: &VolumeIdentityRecord) -> Result<(), StateError> {
        self.volume_identities.lock().unwrap().insert(record.volume.clone(), record.clone());
        Ok(())
    }

    fn delete_volume_identity(&self, volume: &str) -> Result<(), StateError> {
        self.volume_identities.lock().unwrap().remove(volume);
        Ok(())
    }

    fn load_tasks(&self) -> Vec<TaskRecord> {
        self.tasks.lock().unwrap().values().cloned().collect()
    }

    fn save_task(&self, record: &TaskRecord) -> Result<(), StateError> {
        let key = (record.task.clone(), record.secret.clone());
        self.tasks.lock().unwrap().insert(key, record.clone());
        Ok(())
    }

    fn delete_task(&self, task: &str, secret: &str) -> Result<(), StateError> {
        self.tasks.lock().unwrap().remove(&(task.to_owned(), secret.to_owned()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_round_trip_and_hold_no_secret() {
        let state = tempfile::tempdir().unwrap();
        let private = tempfile::tempdir().unwrap();
        let store = DirStore::open(state.path(), private.path()).unwrap();
        let record = VolumeRecord {
            name: "app".into(),
            options: [("path".to_string(), "kv/app".to_string())].into(),
            created_at: "2026-01-01T00:00:00Z".into(),
        };
        store.save_volume(&record).unwrap();
        assert_eq!(store.load_volumes(), vec![record]);
        let mode =
            std::fs::metadata(state.path().join("volumes/app.json")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        store.delete_volume("app").unwrap();
        store.delete_volume("app").unwrap();
        assert!(store.load_volumes().is_empty());
    }

    #[test]
    fn mount_records_keep_their_token_in_the_private_dir_only() {
        let state = tempfile::tempdir().unwrap();
        let private = tempfile::tempdir().unwrap();
        let store = DirStore::open(state.path(), private.path()).unwrap();
        let record = MountRecord {
            volume: "app".into(),
            id: "abc".into(),
            refs: 2,
            mountpoint: "/run/x".into(),
            token: Token::new("s.secret-token".into()),
            accessor: "acc".into(),
            token_expires_at: Some(1),
            leases: vec![],
            expiring: vec![ExpiryRecord { source: 0, expires_at: 9, replace_at: Some(7) }],
            retiring: vec![Token::new("s.old-token".into())],
            digests: Digests::default(),
            container: Some(Container { id: "c0ffee".into(), name: "web-1".into() }),
            engine: Some("/run/podman/podman.sock".into()),
            ended: true,
            certificates: vec![crate::vault::pki::Issued {
                revoke_path: "pki/revoke".into(),
                serial: "7b:a2".into(),
                not_stored: true,
            }],
        };
        store.save_mount(&record).unwrap();
        let loaded = store.load_mounts();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].token.expose(), "s.secret-token");
        assert_eq!(loaded[0].refs, 2);
        assert_eq!(loaded[0].retiring[0].expose(), "s.old-token");
        assert_eq!(loaded[0].certificates, record.certificates);
        assert_eq!(loaded[0].expiring, record.expiring);
        assert_eq!(loaded[0].container, record.container);
        assert_eq!(loaded[0].engine, record.engine);
        assert!(!format!("{record:?}").contains("s.secret-token"));
        let on_disk = std::process::Command::new("grep")
            .args(["-r", "s.secret-token"])
            .arg(state.path())
            .output()
            .unwrap();
        assert!(on_disk.stdout.is_empty());
        store.delete_mount("app", "abc").unwrap();
        assert!(store.load_mounts().is_empty());
    }

    #[test]
    fn unknown_versions_and_garbage_are_skipped_not_deleted() {
        let state = tempfile::tempdir().unwrap();
        let private = tempfile::tempdir().unwrap();
        let store = DirStore::open(state.path(), private.path()).unwrap();
        let bad = state.path().join("volumes/bad.json");
        std::fs::write(&bad, "{not json").unwrap();
        std::fs::write(state.path().join("volumes/new.json"), r#"{"version":9,"name":"n"}"#)
            .unwrap();
        assert!(store.load_volumes().is_empty());
        assert!(bad.exists());
    }
}

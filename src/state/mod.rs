//! What the plugin remembers across restarts, behind the [`Store`] trait: the records and the
//! trait are here, [`DirStore`] keeps them in files, [`MemoryStore`] in maps for unit tests.
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
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::files::Digests;
use crate::vault::pki::Issued;
use crate::vault::Token;

mod dir;
pub mod format;
mod memory;
pub mod quota;
mod tokens;

pub use dir::{atomic_write, create_private_dir, peek_identity, DirStore};
pub use memory::MemoryStore;

use tokens::{opt_token_serde, token_serde, tokens_serde};

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

/// A kind of record the store keeps many of, each under its own key. What a store does with
/// them is written once for every kind ([`Keeps`]); [`Store`]'s methods by kind are made of it.
pub trait Keyed: format::Record + Clone + Send + 'static {
    /// What tells two records of the kind apart: a name, or a pair of names.
    type Key: Ord + Send;
    /// The directory of its records, in the private tmpfs or, if [`Keyed::PERSISTENT`], in
    /// `state_dir`.
    const DIR: &'static str;
    /// Kept on the persistent disk and written durably, not in the private tmpfs: never a
    /// secret, never a token.
    const PERSISTENT: bool = false;
    /// A Docker user's record (a mount, a swarm task): it takes room of what users' records may
    /// take of the private tmpfs ([`quota`]), and is refused when they take all of it.
    const CHARGED: bool = false;

    /// The key the record is kept under.
    fn key(&self) -> Self::Key;
}

impl Keyed for VolumeRecord {
    type Key = String;
    const DIR: &'static str = "volumes";
    const PERSISTENT: bool = true;
    fn key(&self) -> String {
        self.name.clone()
    }
}

impl Keyed for MountRecord {
    /// The volume and the mount ID.
    type Key = (String, String);
    const DIR: &'static str = "mounts";
    const CHARGED: bool = true;
    fn key(&self) -> (String, String) {
        (self.volume.clone(), self.id.clone())
    }
}

impl Keyed for PendingRevocation {
    type Key = String;
    const DIR: &'static str = "revocations";
    fn key(&self) -> String {
        self.key.clone()
    }
}

impl Keyed for PendingCertificate {
    type Key = String;
    const DIR: &'static str = "certificates";
    fn key(&self) -> String {
        self.key.clone()
    }
}

impl Keyed for VolumeIdentityRecord {
    /// The volume.
    type Key = String;
    const DIR: &'static str = "identities";
    fn key(&self) -> String {
        self.volume.clone()
    }
}

impl Keyed for TaskRecord {
    /// The swarm task ID and the secret's name.
    type Key = (String, String);
    const DIR: &'static str = "tasks";
    const CHARGED: bool = true;
    fn key(&self) -> (String, String) {
        (self.task.clone(), self.secret.clone())
    }
}

/// Keeps the records of one [`Keyed`] kind: what each store implements once, for every kind.
pub trait Keeps<T: Keyed> {
    /// Every record of the kind that can be read.
    fn load(&self) -> Vec<T>;
    /// Writes `record`, in place of the one under its key if there is one.
    fn save(&self, record: &T) -> Result<(), StateError>;
    /// Removes the record under `key`; that there is none is no error.
    fn delete(&self, key: T::Key) -> Result<(), StateError>;
}

/// Persistence of volume definitions, mount records and the identity: a store keeps every
/// [`Keyed`] kind of record, and the plugin's identity.
pub trait Store:
    Keeps<VolumeRecord>
    + Keeps<MountRecord>
    + Keeps<PendingRevocation>
    + Keeps<PendingCertificate>
    + Keeps<VolumeIdentityRecord>
    + Keeps<TaskRecord>
    + Send
    + Sync
    + 'static
{
    fn load_identity(&self) -> Option<IdentityRecord>;
    fn save_identity(&self, record: &IdentityRecord) -> Result<(), StateError>;

    fn load_volumes(&self) -> Vec<VolumeRecord> {
        Keeps::<VolumeRecord>::load(self)
    }
    fn save_volume(&self, record: &VolumeRecord) -> Result<(), StateError> {
        Keeps::<VolumeRecord>::save(self, record)
    }
    fn delete_volume(&self, name: &str) -> Result<(), StateError> {
        Keeps::<VolumeRecord>::delete(self, name.to_owned())
    }
    fn load_mounts(&self) -> Vec<MountRecord> {
        Keeps::<MountRecord>::load(self)
    }
    fn save_mount(&self, record: &MountRecord) -> Result<(), StateError> {
        Keeps::<MountRecord>::save(self, record)
    }
    fn delete_mount(&self, volume: &str, id: &str) -> Result<(), StateError> {
        Keeps::<MountRecord>::delete(self, (volume.to_owned(), id.to_owned()))
    }
    fn load_revocations(&self) -> Vec<PendingRevocation> {
        Keeps::<PendingRevocation>::load(self)
    }
    fn save_revocation(&self, record: &PendingRevocation) -> Result<(), StateError> {
        Keeps::<PendingRevocation>::save(self, record)
    }
    fn delete_revocation(&self, key: &str) -> Result<(), StateError> {
        Keeps::<PendingRevocation>::delete(self, key.to_owned())
    }
    fn load_certificates(&self) -> Vec<PendingCertificate> {
        Keeps::<PendingCertificate>::load(self)
    }
    fn save_certificate(&self, record: &PendingCertificate) -> Result<(), StateError> {
        Keeps::<PendingCertificate>::save(self, record)
    }
    fn delete_certificate(&self, key: &str) -> Result<(), StateError> {
        Keeps::<PendingCertificate>::delete(self, key.to_owned())
    }
    fn load_volume_identities(&self) -> Vec<VolumeIdentityRecord> {
        Keeps::<VolumeIdentityRecord>::load(self)
    }
    fn save_volume_identity(&self, record: &VolumeIdentityRecord) -> Result<(), StateError> {
        Keeps::<VolumeIdentityRecord>::save(self, record)
    }
    fn delete_volume_identity(&self, volume: &str) -> Result<(), StateError> {
        Keeps::<VolumeIdentityRecord>::delete(self, volume.to_owned())
    }
    fn load_tasks(&self) -> Vec<TaskRecord> {
        Keeps::<TaskRecord>::load(self)
    }
    fn save_task(&self, record: &TaskRecord) -> Result<(), StateError> {
        Keeps::<TaskRecord>::save(self, record)
    }
    fn delete_task(&self, task: &str, secret: &str) -> Result<(), StateError> {
        Keeps::<TaskRecord>::delete(self, (task.to_owned(), secret.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record<T: Keyed>(value: serde_json::Value) -> T {
        serde_json::from_value(value).unwrap()
    }

    /// Saves, replaces and deletes records of every kind in `store`, and says what is left.
    fn exercise(store: &impl Store) -> Vec<String> {
        let (token, accessor) = ("t", "a");
        let volume = |name| record(json!({"name": name, "options": {}, "created_at": "now"}));
        let mount = |id, refs| {
            record(json!({"volume": "app", "id": id, "refs": refs, "mountpoint": "/m",
                "token": token, "accessor": accessor}))
        };
        let revocation = |key| {
            record(json!({"key": key, "volume": "app", "mount": "m", "token": token,
                "accessor": accessor}))
        };
        let certificate = |key| {
            record(json!({"key": key, "volume": "app", "mount": "m",
                "certificate": {"revoke_path": "pki/revoke", "serial": "7b"}}))
        };
        let identity = |volume| record(json!({"volume": volume, "wrapping": "w"}));
        let task = |task| {
            record(json!({"task": task, "secret": "s", "token": token, "accessor": accessor,
                "ttl_secs": 60}))
        };
        for name in ["app", "db"] {
            store.save_volume(&volume(name)).unwrap();
            store.save_revocation(&revocation(name)).unwrap();
            store.save_certificate(&certificate(name)).unwrap();
            store.save_volume_identity(&identity(name)).unwrap();
            store.save_task(&task(name)).unwrap();
        }
        store.save_mount(&mount("a", 1)).unwrap();
        store.save_mount(&mount("a", 2)).unwrap();
        store.save_mount(&mount("b", 1)).unwrap();
        for _ in 0..2 {
            store.delete_volume("db").unwrap();
            store.delete_mount("app", "b").unwrap();
            store.delete_revocation("db").unwrap();
            store.delete_certificate("db").unwrap();
            store.delete_volume_identity("db").unwrap();
            store.delete_task("db", "s").unwrap();
        }
        let mut left: Vec<String> = store.load_volumes().iter().map(|r| r.name.clone()).collect();
        left.extend(
            store.load_mounts().iter().map(|r| format!("{}@{} {}", r.volume, r.id, r.refs)),
        );
        left.extend(store.load_revocations().iter().map(|r| r.key.clone()));
        left.extend(store.load_certificates().iter().map(|r| r.key.clone()));
        left.extend(store.load_volume_identities().iter().map(|r| r.volume.clone()));
        left.extend(store.load_tasks().iter().map(|r| format!("{}@{}", r.task, r.secret)));
        left
    }

    #[test]
    fn the_fake_keeps_records_as_the_real_store_does() {
        let (state, private) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let real = DirStore::open(state.path(), private.path()).unwrap();
        let expected = ["app", "app@a 2", "app", "app", "app", "app@s"];
        assert_eq!(exercise(&real), expected);
        assert_eq!(exercise(&MemoryStore::default()), expected);
    }
}

//! What the plugin remembers across restarts, behind the [`Store`] trait: the trait is here,
//! with the records it keeps by key ([`Keyed`]); [`DirStore`] keeps them in files,
//! [`MemoryStore`] in maps for unit tests.
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

use std::path::PathBuf;

mod dir;
pub mod format;
mod memory;
pub mod quota;
mod records;
mod tokens;

pub use dir::{atomic_write, create_private_dir, peek_identity, DirStore};
pub use memory::MemoryStore;
pub use records::{
    Container, ExpiryRecord, Holder, IdentityRecord, LeaseRecord, MountRecord, PendingCertificate,
    PendingRevocation, TaskRecord, VolumeIdentityRecord, VolumeRecord,
};

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
    /// A Docker user's record (a mount, a swarm task, a volume's own identity): it takes room of
    /// what users' records may take of the private tmpfs ([`quota`]), and is refused when they
    /// take all of it.
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
    /// Made by a Docker user's Create: without the charge, one user's volumes of their own
    /// identity filled the plugin's quarter, and its pending revocations went unrecorded.
    const CHARGED: bool = true;
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

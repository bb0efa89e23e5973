//! [`DirStore`], the real [`Store`]: a JSON file per record, volume definitions in
//! `state_dir`, everything that holds a token in the private tmpfs, Docker users' records
//! within their quota.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::format::{self, encode, load, load_dir};
use super::quota::{self, Quota};
use super::{
    IdentityRecord, Keeps, Keyed, MountRecord, PendingCertificate, PendingRevocation, StateError,
    Store, TaskRecord, VolumeIdentityRecord, VolumeRecord,
};

/// The plugin's identity, in the private tmpfs.
const IDENTITY: &str = "identity.json";

/// The real store: JSON files in `state_dir/volumes/` and in the private tmpfs.
#[derive(Debug)]
pub struct DirStore {
    state: PathBuf,
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
        let volumes = dir::<VolumeRecord>(state_dir, private);
        let mounts = dir::<MountRecord>(state_dir, private);
        let identities = dir::<VolumeIdentityRecord>(state_dir, private);
        let revocations = dir::<PendingRevocation>(state_dir, private);
        let tasks = dir::<TaskRecord>(state_dir, private);
        let certificates = dir::<PendingCertificate>(state_dir, private);
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
        refuse_newer::<IdentityRecord>(&[private.join(IDENTITY)])?;
        let quota = Quota::new(quota::user_records(capacity), &[&mounts, &tasks, &identities]);
        Ok(DirStore { state: state_dir.to_owned(), private: private.to_owned(), quota })
    }

    /// The file of `T`'s record under `key`.
    fn path<T>(&self, key: &T::Key) -> PathBuf
    where
        T: Keyed,
        T::Key: FileName,
    {
        dir::<T>(&self.state, &self.private).join(key.file_name())
    }

    /// Writes a Docker user's record within the quota: refused, nothing written, when it
    /// would take more than users' records may.
    fn save_charged<T: format::Record>(&self, path: &Path, record: &T) -> Result<(), StateError> {
        let bytes = encode(record);
        let before = self.quota.charge(path, bytes.len() as u64)?;
        atomic_write(path, &bytes, false).inspect_err(|_| self.quota.restore(path, before))
    }
}

/// The directory of `T`'s records in a store over `state_dir` and `private`.
fn dir<T: Keyed>(state_dir: &Path, private: &Path) -> PathBuf {
    if T::PERSISTENT { state_dir } else { private }.join(T::DIR)
}

/// A record's key as the name of its file.
trait FileName {
    fn file_name(&self) -> String;
}

impl FileName for String {
    fn file_name(&self) -> String {
        format!("{self}.json")
    }
}

impl FileName for (String, String) {
    fn file_name(&self) -> String {
        // `@` is in none of a volume name, a mount ID, a task ID and a secret name, so a pair
        // maps to one name.
        format!("{}@{}.json", self.0, self.1)
    }
}

/// The identity record a running plugin keeps in its private tmpfs at `private`, read without
/// creating anything (for `check`).
pub fn peek_identity(private: &Path) -> Option<IdentityRecord> {
    let path = private.join(IDENTITY);
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

impl<T> Keeps<T> for DirStore
where
    T: Keyed,
    T::Key: FileName,
{
    fn load(&self) -> Vec<T> {
        load_dir(&dir::<T>(&self.state, &self.private))
    }

    fn save(&self, record: &T) -> Result<(), StateError> {
        let path = self.path::<T>(&record.key());
        if T::CHARGED {
            self.save_charged(&path, record)
        } else {
            format::save(&path, record, T::PERSISTENT)
        }
    }

    fn delete(&self, key: T::Key) -> Result<(), StateError> {
        let path = self.path::<T>(&key);
        remove(&path)?;
        if T::CHARGED {
            self.quota.release(&path);
        }
        Ok(())
    }
}

impl Store for DirStore {
    fn load_identity(&self) -> Option<IdentityRecord> {
        load(&self.private.join(IDENTITY))
    }

    fn save_identity(&self, record: &IdentityRecord) -> Result<(), StateError> {
        format::save(&self.private.join(IDENTITY), record, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::Digests;
    use crate::state::quota::PAGE;
    use crate::state::{Container, ExpiryRecord};
    use crate::vault::Token;

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

    fn record(id: &str) -> MountRecord {
        serde_json::from_value(serde_json::json!({
            "volume": "app", "id": id, "refs": 1, "mountpoint": "/m", "token": "t",
            "accessor": "a",
        }))
        .unwrap()
    }

    #[test]
    fn the_store_charges_mount_records_and_counts_those_left_by_a_previous_run() {
        let (state, private) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let store = DirStore::open(state.path(), private.path()).unwrap();
        store.save_mount(&record("a")).unwrap();
        store.save_mount(&record("a")).unwrap();
        store.save_mount(&record("b")).unwrap();
        assert_eq!(store.quota.used(), 2 * PAGE);
        store.delete_mount("app", "b").unwrap();
        let reopened = DirStore::open(state.path(), private.path()).unwrap();
        assert_eq!(reopened.quota.used(), PAGE, "a restart counts what is there");
        // The plugin's own records are not charged.
        reopened
            .save_revocation(
                &serde_json::from_value(serde_json::json!({
                    "key": "k", "token": "t", "accessor": "a", "volume": "app", "mount": "x"
                }))
                .unwrap(),
            )
            .unwrap();
        assert_eq!(reopened.quota.used(), PAGE);
    }

    #[test]
    fn volume_identities_are_charged_so_the_plugins_quarter_stays_for_its_revocations() {
        let (state, private) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        // Room for four users' records of a page each.
        let store = DirStore::open_sized(state.path(), private.path(), 16 * PAGE / 3).unwrap();
        let identity = |volume: &str| -> VolumeIdentityRecord {
            serde_json::from_value(serde_json::json!({
                "volume": volume, "token": "t", "accessor": "a", "wrapping": "w"
            }))
            .unwrap()
        };
        for volume in ["a", "b", "c", "d"] {
            store.save_volume_identity(&identity(volume)).unwrap();
        }
        let e = store.save_volume_identity(&identity("e")).unwrap_err().to_string();
        assert!(e.contains("no room"), "{e}");
        // The plugin's own records still fit.
        let revocation = serde_json::json!({
            "key": "k", "token": "t", "accessor": "a", "volume": "app", "mount": "x"
        });
        store.save_revocation(&serde_json::from_value(revocation).unwrap()).unwrap();
        // Removed, its room is free again; a restart counts those left.
        store.delete_volume_identity("a").unwrap();
        store.save_volume_identity(&identity("e")).unwrap();
        let reopened = DirStore::open_sized(state.path(), private.path(), 16 * PAGE / 3).unwrap();
        assert_eq!(reopened.quota.used(), 4 * PAGE);
    }
}

//! The format of each kind of record, and how a build reads formats older and newer than its
//! own (the policy is in [`crate::state`]'s documentation).
//!
//! Every file is `{"version": N, …the record's fields…}`, where N is the format of that kind of
//! record ([`Record::FORMAT`] when this build wrote it). Reading accepts formats 1 to
//! `FORMAT`: a field added since is filled by its `#[serde(default)]`, anything else by
//! [`Record::migrate`]. [`refuse_newer`] finds a record of a newer format before the plugin
//! acts on any, so that a downgrade stops at start-up with an error instead of skipping it.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{
    atomic_write, IdentityRecord, MountRecord, PendingCertificate, PendingRevocation, StateError,
    TaskRecord, VolumeIdentityRecord, VolumeRecord,
};

/// A kind of record, with the format this build writes.
pub trait Record: Serialize + DeserializeOwned {
    /// What errors and logs call it.
    const KIND: &'static str;
    /// The format this build writes, and the newest it reads. Bumped when a field is added to,
    /// or changed in, a format a release has written (see [`crate::state`]).
    const FORMAT: u32;
    /// What the operator does about a record of a newer format, for the downgrade error.
    const NEWER: &'static str;

    /// Brings a record read in format `from` (older than [`Record::FORMAT`]) up to date: what
    /// a field's `#[serde(default)]` cannot say. Written back in the new format at its next save.
    fn migrate(self, _from: u32) -> Self {
        self
    }
}

impl Record for VolumeRecord {
    const KIND: &'static str = "volume definition";
    const FORMAT: u32 = 1;
    const NEWER: &'static str =
        "start the newer build again, or move the file away and create the volume anew";
}

impl Record for MountRecord {
    const KIND: &'static str = "mount";
    /// 1: 0.1.0. 2: 0.2.0, with the fields added in its development (which containers' engine,
    /// namespace, certificates to revoke…): 0.1.0 would drop them.
    const FORMAT: u32 = 2;
    const NEWER: &'static str = "start the newer build again; to go back, first stop the containers that use the plugin's volumes while it runs (their mounts are revoked and their records removed)";
}

impl Record for IdentityRecord {
    const KIND: &'static str = "plugin identity";
    const FORMAT: u32 = 1;
    const NEWER: &'static str =
        "start the newer build again, or remove the file: this build then logs in anew";
}

impl Record for VolumeIdentityRecord {
    const KIND: &'static str = "volume identity";
    /// 1: 0.1.0. 2: 0.2.0, whose tokens of a volume's namespace are written with it
    /// (`{"token", "namespace"}`): 0.1.0 could not read them.
    const FORMAT: u32 = 2;
    const NEWER: &'static str = "start the newer build again, or remove the file and create the volume anew with a fresh wrapped-token";
}

impl Record for PendingRevocation {
    const KIND: &'static str = "pending revocation";
    /// 1: 0.1.0. 2: 0.2.0, whose tokens of a volume's namespace are written with it
    /// (`{"token", "namespace"}`): 0.1.0 could not read them.
    const FORMAT: u32 = 2;
    const NEWER: &'static str =
        "start the newer build again and let it finish its revocations while Vault is reachable";
}

impl Record for PendingCertificate {
    const KIND: &'static str = "pending certificate revocation";
    /// 1: 0.2.0.
    const FORMAT: u32 = 1;
    const NEWER: &'static str =
        "start the newer build again and let it finish its revocations while Vault is reachable";
}

impl Record for TaskRecord {
    const KIND: &'static str = "swarm task";
    /// 1: 0.1.0. 2: 0.2.0, whose tokens of a volume's namespace are written with it
    /// (`{"token", "namespace"}`): 0.1.0 could not read them.
    const FORMAT: u32 = 2;
    const NEWER: &'static str = "start the newer build again; to go back, first let the swarm tasks that use its secrets end while it runs";
}

/// What a record file holds, as written.
#[derive(Serialize)]
struct Versioned<'a, T> {
    version: u32,
    #[serde(flatten)]
    inner: &'a T,
}

/// What a record file holds, as read: its format first.
#[derive(Deserialize)]
struct Header {
    version: u32,
}

/// Writes `record` to `path` in this build's format (see [`atomic_write`] for `durable`).
pub fn save<T: Record>(path: &Path, record: &T, durable: bool) -> Result<(), StateError> {
    atomic_write(path, &encode(record), durable)
}

/// The bytes [`save`] writes for `record` (zeroed when dropped: a record may hold a token).
pub fn encode<T: Record>(record: &T) -> zeroize::Zeroizing<Vec<u8>> {
    zeroize::Zeroizing::new(
        serde_json::to_vec_pretty(&Versioned { version: T::FORMAT, inner: record })
            .expect("records serialize"),
    )
}

/// Reads the record at `path`, from any format up to this build's; `None` (logged, the file
/// left as it is) for one that cannot be read.
pub fn load<T: Record>(path: &Path) -> Option<T> {
    let bytes = zeroize::Zeroizing::new(std::fs::read(path).ok()?);
    let skip = |error: String| {
        tracing::error!(path = %path.display(), kind = T::KIND, %error, "state file is not valid; left as it is");
        None
    };
    let version = match serde_json::from_slice::<Header>(&bytes) {
        Ok(header) => header.version,
        Err(e) => return skip(e.to_string()),
    };
    if !(1..=T::FORMAT).contains(&version) {
        return skip(format!("format {version}; this build reads formats 1 to {}", T::FORMAT));
    }
    match serde_json::from_slice::<T>(&bytes) {
        Ok(record) if version < T::FORMAT => Some(record.migrate(version)),
        Ok(record) => Some(record),
        Err(e) => skip(e.to_string()),
    }
}

/// The record files in `dir`, in name order (temporary files left out).
pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter(|p| !p.file_name().unwrap_or_default().to_string_lossy().starts_with('.'))
        .collect();
    paths.sort();
    paths
}

/// Every record in `dir` that can be read.
pub fn load_dir<T: Record>(dir: &Path) -> Vec<T> {
    files_in(dir).iter().filter_map(|p| load(p)).collect()
}

/// The first of `paths` that holds a record of a newer format than this build's, as the error
/// that refuses the downgrade. Files that cannot be read at all are left to [`load`].
pub fn refuse_newer<T: Record>(paths: &[PathBuf]) -> Result<(), StateError> {
    for path in paths {
        let Ok(bytes) = std::fs::read(path).map(zeroize::Zeroizing::new) else { continue };
        if let Ok(Header { version }) = serde_json::from_slice(&bytes) {
            if version > T::FORMAT {
                return Err(StateError::Newer {
                    path: path.clone(),
                    kind: T::KIND,
                    found: version,
                    supported: T::FORMAT,
                    remedy: T::NEWER,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The records each release wrote, one file per kind, every field set.
    fn fixture(release: &str, kind: &str) -> Value {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/state")
            .join(release)
            .join(format!("{kind}.json"));
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
    }

    /// The releases whose records this build must read, oldest first.
    const RELEASES: [&str; 1] = ["0.1.0"];

    /// Loads `kind`'s fixture of `release` as `T` and writes it again in this build's format;
    /// every field it had keeps its value, unless a migration says otherwise.
    fn round_trip<T: Record>(release: &str, kind: &str) {
        let dir = tempfile::tempdir().unwrap();
        let old = fixture(release, kind);
        let path = dir.path().join("r.json");
        std::fs::write(&path, old.to_string()).unwrap();
        let record: T = load(&path).unwrap_or_else(|| panic!("{release} {kind} not read"));
        save(&path, &record, false).unwrap();
        let new: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(new["version"], T::FORMAT);
        for (key, value) in old.as_object().unwrap().iter().filter(|(k, _)| *k != "version") {
            assert_eq!(&new[key], value, "{release} {kind}: field {key} lost or changed");
        }
    }

    #[test]
    fn every_released_format_is_read_without_loss() {
        for release in RELEASES {
            round_trip::<VolumeRecord>(release, "volume");
            round_trip::<MountRecord>(release, "mount");
            round_trip::<IdentityRecord>(release, "identity");
            round_trip::<VolumeIdentityRecord>(release, "volume-identity");
            round_trip::<PendingRevocation>(release, "revocation");
            round_trip::<TaskRecord>(release, "task");
        }
    }

    /// The fields serde knows a struct by, read through a deserializer that only listens.
    fn fields_of<T: DeserializeOwned>() -> Vec<&'static str> {
        use serde::de::{Error as _, Visitor};
        type Error = serde::de::value::Error;
        struct Listen<'a>(&'a mut Vec<&'static str>);
        impl<'de> serde::Deserializer<'de> for Listen<'_> {
            type Error = Error;
            fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
                Err(Error::custom("not a struct"))
            }
            fn deserialize_struct<V: Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                _: V,
            ) -> Result<V::Value, Error> {
                self.0.extend(fields);
                Err(Error::custom("listened"))
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
                byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
                identifier ignored_any
            }
        }
        let mut fields = Vec::new();
        let _ = T::deserialize(Listen(&mut fields));
        fields.sort_unstable();
        fields
    }

    fn keys(value: &Value) -> Vec<&str> {
        let mut keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .filter(|k| *k != "version")
            .collect();
        keys.sort_unstable();
        keys
    }

    /// A released format is frozen: a kind whose format is still the one the newest release
    /// wrote has exactly that release's fields (nested records included). Adding a field means
    /// bumping the kind's FORMAT — see `crate::state` for why even a defaulted one does.
    #[test]
    fn a_released_format_gets_no_new_field_without_a_new_format() {
        let release = RELEASES[RELEASES.len() - 1];
        let checks: [(&str, u32, Value, Vec<&str>); 9] = [
            (
                "volume",
                VolumeRecord::FORMAT,
                fixture(release, "volume"),
                fields_of::<VolumeRecord>(),
            ),
            ("mount", MountRecord::FORMAT, fixture(release, "mount"), fields_of::<MountRecord>()),
            (
                "mount",
                MountRecord::FORMAT,
                fixture(release, "mount")["leases"][0].clone(),
                fields_of::<super::super::LeaseRecord>(),
            ),
            (
                "mount",
                MountRecord::FORMAT,
                fixture(release, "mount")["expiring"][0].clone(),
                fields_of::<super::super::ExpiryRecord>(),
            ),
            (
                "mount",
                MountRecord::FORMAT,
                fixture(release, "mount")["container"].clone(),
                fields_of::<super::super::Container>(),
            ),
            (
                "identity",
                IdentityRecord::FORMAT,
                fixture(release, "identity"),
                fields_of::<IdentityRecord>(),
            ),
            (
                "volume-identity",
                VolumeIdentityRecord::FORMAT,
                fixture(release, "volume-identity"),
                fields_of::<VolumeIdentityRecord>(),
            ),
            (
                "revocation",
                PendingRevocation::FORMAT,
                fixture(release, "revocation"),
                fields_of::<PendingRevocation>(),
            ),
            ("task", TaskRecord::FORMAT, fixture(release, "task"), fields_of::<TaskRecord>()),
        ];
        for (kind, format, old, fields) in checks {
            assert!(!fields.is_empty(), "{kind}: no fields listened to");
            let released = fixture(release, kind)["version"].as_u64().unwrap() as u32;
            assert!(format >= released, "{kind}: format {format} is older than {release}'s");
            if format == released {
                assert_eq!(
                    fields,
                    keys(&old),
                    "the {kind} record's fields changed, but its FORMAT is still {format}, the one {release} wrote: bump FORMAT in src/state/format.rs (an older build would drop the new field) and note it in CHANGELOG.md"
                );
            }
        }
    }

    #[test]
    fn newer_formats_are_refused_naming_the_file_and_both_formats() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("a.json");
        let newer = dir.path().join("b.json");
        std::fs::write(&old, fixture("0.1.0", "mount").to_string()).unwrap();
        let mut record = fixture("0.1.0", "mount");
        record["version"] = (MountRecord::FORMAT + 1).into();
        record["a_field_of_the_future"] = "x".into();
        std::fs::write(&newer, record.to_string()).unwrap();
        let garbage = dir.path().join("c.json");
        std::fs::write(&garbage, "{not json").unwrap();
        let files = files_in(dir.path());
        assert_eq!(files.len(), 3);
        let err = refuse_newer::<MountRecord>(&files).unwrap_err().to_string();
        assert!(err.contains(&newer.display().to_string()), "{err}");
        assert!(
            err.contains(&format!("format {}", MountRecord::FORMAT + 1))
                && err.contains(&format!("1 to {}", MountRecord::FORMAT)),
            "{err}"
        );
        assert!(err.contains("newer vault-secrets"), "{err}");
        assert!(!err.contains("hvs."), "no token in the error: {err}");
        // Read one by one (after start-up), the newer one and the garbage are skipped, and kept.
        assert_eq!(load_dir::<MountRecord>(dir.path()).len(), 1);
        assert!(newer.exists() && garbage.exists());
        assert!(refuse_newer::<MountRecord>(&files[..1]).is_ok());
    }

    #[test]
    fn a_record_without_a_format_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.json");
        let mut record = fixture("0.1.0", "volume");
        record.as_object_mut().unwrap().remove("version");
        std::fs::write(&path, record.to_string()).unwrap();
        assert!(load::<VolumeRecord>(&path).is_none());
        record["version"] = 0.into();
        std::fs::write(&path, record.to_string()).unwrap();
        assert!(load::<VolumeRecord>(&path).is_none());
    }
}

//! [`MemoryStore`], the fake [`Store`] of unit tests: records in maps, and a switch that
//! makes it as full as a private tmpfs can be.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::{
    IdentityRecord, Keeps, Keyed, MountRecord, PendingCertificate, PendingRevocation, StateError,
    Store, TaskRecord, VolumeIdentityRecord, VolumeRecord,
};

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
    /// Refuses every Docker user's record (mounts, swarm tasks) while set, as a full private
    /// tmpfs does.
    pub full: AtomicBool,
}

/// The map of a [`MemoryStore`] that keeps a kind of record.
trait Table: Keyed {
    fn table(store: &MemoryStore) -> &Mutex<BTreeMap<Self::Key, Self>>;
}

impl Table for VolumeRecord {
    fn table(store: &MemoryStore) -> &Mutex<BTreeMap<String, Self>> {
        &store.volumes
    }
}

impl Table for MountRecord {
    fn table(store: &MemoryStore) -> &Mutex<BTreeMap<(String, String), Self>> {
        &store.mounts
    }
}

impl Table for PendingRevocation {
    fn table(store: &MemoryStore) -> &Mutex<BTreeMap<String, Self>> {
        &store.revocations
    }
}

impl Table for PendingCertificate {
    fn table(store: &MemoryStore) -> &Mutex<BTreeMap<String, Self>> {
        &store.certificates
    }
}

impl Table for VolumeIdentityRecord {
    fn table(store: &MemoryStore) -> &Mutex<BTreeMap<String, Self>> {
        &store.volume_identities
    }
}

impl Table for TaskRecord {
    fn table(store: &MemoryStore) -> &Mutex<BTreeMap<(String, String), Self>> {
        &store.tasks
    }
}

impl<T: Table> Keeps<T> for MemoryStore {
    fn load(&self) -> Vec<T> {
        T::table(self).lock().unwrap().values().cloned().collect()
    }

    fn save(&self, record: &T) -> Result<(), StateError> {
        if T::CHARGED && self.full.load(Ordering::SeqCst) {
            return Err(StateError::Full { path: PathBuf::from(T::DIR), used: 1, limit: 1 });
        }
        T::table(self).lock().unwrap().insert(record.key(), record.clone());
        Ok(())
    }

    fn delete(&self, key: T::Key) -> Result<(), StateError> {
        T::table(self).lock().unwrap().remove(&key);
        Ok(())
    }
}

impl Store for MemoryStore {
    fn load_identity(&self) -> Option<IdentityRecord> {
        self.identity.lock().unwrap().clone()
    }

    fn save_identity(&self, record: &IdentityRecord) -> Result<(), StateError> {
        *self.identity.lock().unwrap() = Some(record.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_fake_refuses_docker_users_records_only() {
        let store = MemoryStore::default();
        store.full.store(true, Ordering::SeqCst);
        let mount = serde_json::from_value(serde_json::json!({"volume": "app", "id": "a",
            "refs": 1, "mountpoint": "/m", "token": "t", "accessor": "a"}));
        let task = serde_json::from_value(serde_json::json!({"task": "t", "secret": "s",
            "token": "t", "accessor": "a", "ttl_secs": 60}));
        let full = |e| matches!(e, Err(StateError::Full { .. }));
        assert!(full(store.save_mount(&mount.unwrap())));
        assert!(full(store.save_task(&task.unwrap())));
        let revocation = serde_json::from_value(serde_json::json!({"key": "k", "volume": "app",
            "mount": "a", "token": "t", "accessor": "a"}));
        store.save_revocation(&revocation.unwrap()).unwrap();
        assert!(store.load_mounts().is_empty() && store.load_tasks().is_empty());
        assert_eq!(store.load_revocations().len(), 1);
    }
}

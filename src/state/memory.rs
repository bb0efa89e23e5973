//! [`MemoryStore`], the fake [`Store`] of unit tests: records in maps, and a switch that
//! makes it as full as a private tmpfs can be.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use super::{
    IdentityRecord, MountRecord, PendingCertificate, PendingRevocation, StateError, Store,
    TaskRecord, VolumeIdentityRecord, VolumeRecord,
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

//! What the inbound adapters ([`crate::api`]) ask of the driver, as two narrow traits the driver
//! implements: [`Backend`] for the Docker plugin protocol, [`Operations`] for the admin socket
//! and metrics. The adapters are generic over them (their tests use fakes) and implement
//! nothing of the driver's.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;

use super::{
    Driver, DriverError, Edges, SecretError, SecretRequest, SecretValue, TaskStatus, VolumeInfo,
    VolumeStatus,
};

/// The operations behind the plugin protocol. [`Driver`] is the real one.
pub trait Backend: Send + Sync + 'static {
    fn create(
        &self,
        name: &str,
        opts: BTreeMap<String, String>,
    ) -> impl Future<Output = Result<(), DriverError>> + Send;
    fn remove(&self, name: &str) -> impl Future<Output = Result<(), DriverError>> + Send;
    fn mount(
        &self,
        name: &str,
        id: &str,
    ) -> impl Future<Output = Result<PathBuf, DriverError>> + Send;
    fn unmount(&self, name: &str, id: &str)
        -> impl Future<Output = Result<(), DriverError>> + Send;
    fn path(&self, name: &str) -> Result<Option<PathBuf>, DriverError>;
    fn get(&self, name: &str) -> Result<VolumeInfo, DriverError>;
    fn list(&self) -> Vec<VolumeInfo>;
    /// A swarm secret's value for one task.
    fn secret(
        &self,
        request: SecretRequest,
    ) -> impl Future<Output = Result<SecretValue, SecretError>> + Send;
}

impl<E: Edges> Backend for Driver<E> {
    async fn create(&self, name: &str, opts: BTreeMap<String, String>) -> Result<(), DriverError> {
        Driver::create(self, name, opts).await
    }
    async fn remove(&self, name: &str) -> Result<(), DriverError> {
        Driver::remove(self, name).await
    }
    async fn mount(&self, name: &str, id: &str) -> Result<PathBuf, DriverError> {
        Driver::mount(self, name, id).await
    }
    async fn unmount(&self, name: &str, id: &str) -> Result<(), DriverError> {
        Driver::unmount(self, name, id).await
    }
    fn path(&self, name: &str) -> Result<Option<PathBuf>, DriverError> {
        Driver::path(self, name)
    }
    fn get(&self, name: &str) -> Result<VolumeInfo, DriverError> {
        Driver::get(self, name)
    }
    fn list(&self) -> Vec<VolumeInfo> {
        Driver::list(self)
    }
    async fn secret(&self, request: SecretRequest) -> Result<SecretValue, SecretError> {
        Driver::get_secret(self, &request).await
    }
}

/// What operators ask of the driver: its status, and a rotation now.
pub trait Operations: Send + Sync + 'static {
    /// Every volume with its active mounts (never a token or a value).
    fn status(&self) -> impl Future<Output = Vec<VolumeStatus>> + Send;
    /// Every swarm task holding a token for a secret of this driver.
    fn tasks(&self) -> impl Future<Output = Vec<TaskStatus>> + Send;
    /// A fresh generation for every mount of `volume`; how many were rotated.
    fn rotate(&self, volume: &str) -> impl Future<Output = Result<usize, DriverError>> + Send;
    /// Tokens whose revocation failed and is retried.
    fn pending_revocations(&self) -> usize;
}

impl<E: Edges> Operations for Driver<E> {
    async fn status(&self) -> Vec<VolumeStatus> {
        Driver::status(self).await
    }

    async fn tasks(&self) -> Vec<TaskStatus> {
        Driver::task_status(self).await
    }

    async fn rotate(&self, volume: &str) -> Result<usize, DriverError> {
        Driver::rotate(self, volume).await
    }

    fn pending_revocations(&self) -> usize {
        Driver::pending_revocations(self)
    }
}

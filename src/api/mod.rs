//! The plugin's inbound adapters, side by side: the Docker volume plugin protocol ([`plugin`]),
//! the admin socket behind `status` and `rotate` ([`admin`]), Prometheus metrics ([`metrics`]),
//! all served by one bounded accept loop ([`listener`]). Each is a thin layer over a narrow
//! trait of the driver: [`plugin::Backend`] for the protocol, [`Operations`] for the rest.

pub mod admin;
pub mod listener;
pub mod metrics;
pub mod plugin;

use std::future::Future;

use crate::driver::{Driver, DriverError, Edges, TaskStatus, VolumeStatus};

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

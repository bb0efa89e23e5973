//! The plugin's own identity in the driver's hands: the first login, retried with backoff while
//! Vault is out of reach (Get, List and Path are served meanwhile; Mount says why it cannot
//! proceed), then the token's renewals as a job of the lease manager ([`Job::Plugin`]) beside
//! every mount's — one owner of time.

use std::sync::Arc;

use tokio::time::Instant;

use super::{jitter, Driver, Edges};
use crate::config::AuthConfig;
use crate::identity::Identity;
use crate::lease::plan;
use crate::lease::Job;

impl<E: Edges> Driver<E> {
    /// Logs in as `auth` says until it works or `shutdown` fires; then schedules the token's
    /// renewal.
    pub async fn log_in(
        self: Arc<Self>,
        auth: AuthConfig,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut failures = 0u32;
        loop {
            match Identity::login(&*self.vault, &auth, &*self.store).await {
                Ok(identity) => {
                    let identity = Arc::new(identity);
                    self.identity.set(Ok(identity.clone()));
                    tracing::info!("logged in to vault");
                    if let Some(at) = identity.first_renewal(Instant::now()) {
                        self.leases.set(Job::Plugin, at);
                    }
                    return;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let wait = plan::backoff(failures, jitter());
                    let reason = crate::report::chain(&e);
                    tracing::error!(error = %reason, retry_in = ?wait, "cannot log in to vault");
                    self.identity.set(Err(reason));
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        }
    }

    /// The lease manager's tick for [`Job::Plugin`].
    pub(super) async fn renew_plugin(&self) -> Option<Instant> {
        let identity = self.identity.get().ok()?;
        identity.upkeep(&*self.vault, &*self.store, Instant::now()).await
    }
}

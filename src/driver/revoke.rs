//! Revocation of tokens, and the retry of those that failed while Vault was out of reach.

use super::{Driver, Edges};
use crate::audit::{Event, Kind};
use crate::metrics::METRICS;
use crate::state::Store;
use crate::state::{Container, Holder, PendingRevocation};
use crate::vault::Token;
use crate::vault::Vault;

impl<E: Edges> Driver<E> {
    /// Revokes `token`, issued in `volume` for `holder`; true when nothing of it is left in
    /// Vault. A failure while Vault is out of reach is kept and retried (as a record with no
    /// references).
    pub(super) async fn revoke(
        &self,
        volume: &str,
        holder: &Holder,
        token: &Token,
        accessor: &str,
    ) -> bool {
        self.revoke_for(volume, holder, token, Some(accessor), None).await
    }

    /// [`Driver::revoke`] of a token of the mount `id` that `held` (when known) holds, named
    /// in the audit line.
    pub(super) async fn revoke_held(
        &self,
        volume: &str,
        id: &str,
        token: &Token,
        accessor: &str,
        held: Option<&Container>,
    ) -> bool {
        self.revoke_for(volume, &Holder::Mount(id.to_owned()), token, Some(accessor), held).await
    }

    /// [`Driver::revoke`] of a token whose accessor may not be known, in an audit line that
    /// names `held` when known.
    pub(super) async fn revoke_for(
        &self,
        volume: &str,
        holder: &Holder,
        token: &Token,
        accessor: Option<&str>,
        held: Option<&Container>,
    ) -> bool {
        let id = holder.to_string();
        let event = |name| {
            let event = Event::new(name, volume).mount(&id).held_by(held);
            match accessor {
                Some(accessor) => event.accessor(accessor),
                None => event,
            }
        };
        match self.vault.revoke_self(token).await {
            Ok(()) => {
                METRICS.revocations.inc();
                self.audit.record(event(Kind::Revoke));
                true
            }
            // Expired or already revoked: nothing of it is left in Vault.
            Err(e) if e.is_denied() => {
                tracing::info!("the token had already expired");
                true
            }
            Err(e) => {
                METRICS.revocation_failures.inc();
                self.audit.record(
                    event(Kind::Error)
                        .detail(format!("cannot revoke, will retry: {}", crate::report::chain(&e))),
                );
                tracing::error!(error = %crate::report::chain(&e), "cannot revoke a token; will retry");
                // Kept under a name of its own: one mount may have several tokens to revoke.
                let record = PendingRevocation {
                    key: format!("{:016x}", fastrand::u64(..)),
                    volume: volume.to_owned(),
                    mount: holder.clone(),
                    token: token.clone(),
                    accessor: accessor.map(str::to_owned),
                };
                if let Err(e) = self.store.save_revocation(&record) {
                    tracing::error!(error = %crate::report::chain(&e), "cannot record the pending revocation; it is retried while the plugin runs");
                }
                self.pending.lock().unwrap().push(record);
                false
            }
        }
    }

    /// Retries the revocations that failed (certificates first: they need no token of the
    /// mount); returns how many are still pending.
    pub async fn retry_revocations(&self) -> usize {
        let certificates = self.retry_certificates().await;
        // Each stays listed while it is retried, so that the count never dips meanwhile.
        let pending = self.pending.lock().unwrap().clone();
        for record in pending {
            // A failed retry is recorded again, under a new name: this one goes either way.
            let accessor = record.accessor.as_deref();
            self.revoke_for(&record.volume, &record.mount, &record.token, accessor, None).await;
            self.pending.lock().unwrap().retain(|r| r.key != record.key);
            let _ = self.store.delete_revocation(&record.key);
        }
        self.pending.lock().unwrap().len() + certificates
    }

    /// How many tokens and certificates wait for their revocation to be retried (each token
    /// counted once, however many times it failed: a retry that fails records it again before
    /// the earlier record goes). Told apart by the tokens themselves: several kept from before
    /// a restart may have no accessor known.
    pub fn pending_revocations(&self) -> usize {
        let pending = self.pending.lock().unwrap();
        let tokens = pending
            .iter()
            .map(|r| r.token.expose())
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        tokens + self.pending_certificates.lock().unwrap().len()
    }
}

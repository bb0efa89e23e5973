//! Certificates a mount's PKI sources issued without a lease ([`crate::vault::pki`]): revoked
//! by serial when the mount ends (before its token), and a replaced one once its successor is
//! in place (unless `revoke-replaced=false`); a revocation that fails while Vault is out of
//! reach is kept ([`PendingCertificate`]) and retried with the token revocations, also after
//! a restart. They are revoked with the plugin's token, in the volume's namespace: the
//! mount's token may be gone by then, and a retry outlives it.

use super::{Driver, Edges};
use crate::audit::{Event, Kind};
use crate::state::{Container, PendingCertificate, Store};
use crate::vault::pki::{self, Issued};
use crate::vault::{Namespace, Secret, Vault};
use crate::volume::VolumeSpec;

/// The certificates `secrets` (read for `spec`'s sources, index for index) hold.
pub(super) fn issued(spec: &VolumeSpec, secrets: &[Secret]) -> Vec<Issued> {
    spec.sources.iter().zip(secrets).filter_map(|(s, secret)| pki::issued(s, secret)).collect()
}

/// What became of one revocation.
enum Outcome {
    Revoked,
    /// Never possible (the role has `no_store`), or refused by the policy: not retried.
    Refused,
    /// Vault out of reach, or no identity: retried.
    Later,
}

impl<E: Edges> Driver<E> {
    /// The certificates `secrets` hold, each looked up (`MOUNT/cert/SERIAL`, with `token`)
    /// to learn whether Vault keeps it: a `no_store` role's cannot be revoked, which `status`
    /// then says. A lookup that fails otherwise changes nothing.
    pub(super) async fn certificates_of(
        &self,
        spec: &VolumeSpec,
        secrets: &[Secret],
        token: &crate::vault::Token,
    ) -> Vec<Issued> {
        let mut certificates = issued(spec, secrets);
        for certificate in &mut certificates {
            if let Err(crate::vault::VaultError::NotFound { .. }) =
                self.vault.read(token, &certificate.lookup()).await
            {
                tracing::warn!(serial = %certificate.serial, "vault keeps no record of the certificate (its role has no_store): it cannot be revoked at stop");
                certificate.not_stored = true;
            }
        }
        certificates
    }

    /// Revokes the certificates mount `id` of volume `name` was issued; a failure while Vault
    /// is out of reach is kept and retried.
    pub(super) async fn revoke_certificates(
        &self,
        name: &str,
        id: &str,
        certificates: &[Issued],
        held: Option<&Container>,
    ) {
        if certificates.is_empty() {
            return;
        }
        let namespace =
            self.volumes.lock().unwrap().get(name).and_then(|v| v.spec.namespace.clone());
        for certificate in certificates {
            if certificate.not_stored {
                let what =
                    format!("certificate {} ({})", certificate.serial, certificate.revoke_path);
                let detail = format!(
                    "{what} is not revoked: its role has no_store; it stays valid until it expires"
                );
                tracing::info!(serial = %certificate.serial, "{detail}");
                self.audit
                    .record(Event::new(Kind::Error, name).mount(id).held_by(held).detail(detail));
                continue;
            }
            if let Outcome::Later =
                self.revoke_certificate(name, id, namespace.as_ref(), certificate, held).await
            {
                let record = PendingCertificate {
                    key: format!("{:016x}", fastrand::u64(..)),
                    volume: name.to_owned(),
                    mount: id.to_owned(),
                    namespace: namespace.as_ref().map(|n| n.as_str().to_owned()),
                    certificate: certificate.clone(),
                };
                if let Err(e) = self.store.save_certificate(&record) {
                    tracing::error!(error = %crate::report::chain(&e), "cannot record the pending certificate revocation; it is retried while the plugin runs");
                }
                self.pending_certificates.lock().unwrap().push(record);
            }
        }
    }

    async fn revoke_certificate(
        &self,
        name: &str,
        id: &str,
        namespace: Option<&Namespace>,
        certificate: &Issued,
        held: Option<&Container>,
    ) -> Outcome {
        let what = format!("certificate {} ({})", certificate.serial, certificate.revoke_path);
        let event = |kind| Event::new(kind, name).mount(id).held_by(held);
        let result = self
            .as_plugin(|token| {
                let token = token.in_namespace(namespace);
                async move { self.vault.revoke_certificate(&token, certificate).await }
            })
            .await;
        let error = match result {
            Ok(Ok(())) => {
                self.audit.record(event(Kind::Revoke).detail(what));
                tracing::info!(serial = %certificate.serial, "certificate revoked");
                return Outcome::Revoked;
            }
            Ok(Err(e)) if pki::not_stored(&e) => {
                let detail = format!("{what} cannot be revoked: vault keeps no record of it (its role has no_store); it stays valid until it expires");
                tracing::warn!(serial = %certificate.serial, "{detail}");
                self.audit.record(event(Kind::Error).detail(detail));
                return Outcome::Refused;
            }
            Ok(Err(e)) if !e.is_transient() => {
                let detail = format!(
                    "cannot revoke {what}: {}; give the plugin's policy `update` on {}",
                    crate::report::chain(&e),
                    certificate.revoke_path
                );
                tracing::error!("{detail}");
                self.audit.record(event(Kind::Error).detail(detail));
                return Outcome::Refused;
            }
            Ok(Err(e)) => crate::report::chain(&e),
            Err(e) => crate::report::chain(&e),
        };
        tracing::error!(%error, serial = %certificate.serial, "cannot revoke a certificate; will retry");
        self.audit.record(
            event(Kind::Error).detail(format!("cannot revoke {what}, will retry: {error}")),
        );
        Outcome::Later
    }

    /// Retries the certificate revocations that failed; returns how many are still pending.
    /// Each stays recorded until it is done (revoking a serial twice is harmless).
    pub(super) async fn retry_certificates(&self) -> usize {
        let pending = self.pending_certificates.lock().unwrap().clone();
        for record in pending {
            let namespace = record.namespace.as_deref().and_then(|n| Namespace::parse(n).ok());
            let outcome = self
                .revoke_certificate(
                    &record.volume,
                    &record.mount,
                    namespace.as_ref(),
                    &record.certificate,
                    None,
                )
                .await;
            if !matches!(outcome, Outcome::Later) {
                self.pending_certificates.lock().unwrap().retain(|r| r.key != record.key);
                let _ = self.store.delete_certificate(&record.key);
            }
        }
        self.pending_certificates.lock().unwrap().len()
    }
}

//! Certificates a PKI source issued, and their revocation (`MOUNT/revoke` by serial).
//!
//! A PKI role issues with `generate_lease=false` by default: the certificate has no lease, so
//! revoking the mount's token leaves it valid until it expires. The plugin revokes it by its
//! serial when the mount ends, and a replaced one once its successor is in place. The revoke
//! endpoint is on the mount of the issuing one: `pki_int/issue/web` is revoked at
//! `pki_int/revoke` — the configured source path with its last two segments replaced, nothing
//! else; the serial is checked to be one (hex and `:`) before it goes into a request body.

use reqwest::Method;
use serde_json::{json, Value};

use super::{HttpVault, Secret, Token, VaultError};
use crate::volume::Source;

/// A certificate a source issued, as far as its revocation needs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Issued {
    /// `MOUNT/revoke`, from the source's configured path.
    pub revoke_path: String,
    /// The certificate's serial, as Vault gives it (`7b:a2:…`).
    pub serial: String,
    /// Vault keeps no record of it (its role has `no_store`: `MOUNT/cert/SERIAL` does not
    /// know it), so it cannot be revoked.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub not_stored: bool,
}

impl Issued {
    /// `MOUNT/cert/SERIAL` (unauthenticated in Vault's PKI), where Vault shows what it keeps
    /// of the certificate: nothing for a `no_store` role's.
    pub fn lookup(&self) -> Source {
        let mount = self.revoke_path.strip_suffix("/revoke").unwrap_or(&self.revoke_path);
        Source {
            dir: None,
            path: format!("{mount}/cert/{}", self.serial),
            params: Default::default(),
        }
    }
}

/// The revoke endpoint of a PKI source's mount: `MOUNT/revoke` for `MOUNT/issue/ROLE` and
/// `MOUNT/sign/ROLE`; `None` for any other path.
pub fn revoke_path(source_path: &str) -> Option<String> {
    let segments: Vec<&str> = source_path.split('/').collect();
    let n = segments.len();
    (n >= 3 && matches!(segments[n - 2], "issue" | "sign"))
        .then(|| format!("{}/revoke", segments[..n - 2].join("/")))
}

/// Whether `serial` is a certificate serial as Vault writes it: hex digits, `:` or `-`.
fn valid_serial(serial: &str) -> bool {
    (1..=128).contains(&serial.len())
        && serial.chars().all(|c| c.is_ascii_hexdigit() || c == ':' || c == '-')
}

/// The certificate `secret` holds when `source` issued one without a lease (a lease is
/// revoked with the token); `None` otherwise.
pub fn issued(source: &Source, secret: &Secret) -> Option<Issued> {
    if secret.lease.is_some() || !secret.data.contains_key("certificate") {
        return None;
    }
    let serial = secret.data.get("serial_number")?.as_str().filter(|s| valid_serial(s))?;
    let revoke_path = revoke_path(&source.path)?;
    Some(Issued { revoke_path, serial: serial.to_owned(), not_stored: false })
}

/// Why a revocation did not happen and will not: the role keeps no record of what it issues
/// (`no_store`), so Vault cannot revoke it by serial.
pub fn not_stored(e: &VaultError) -> bool {
    match e {
        VaultError::Status { status: 400 | 404, message, .. } => {
            let m = message.to_ascii_lowercase();
            m.contains("not found") || m.contains("no_store") || m.contains("not stored")
        }
        VaultError::NotFound { .. } => true,
        _ => false,
    }
}

impl HttpVault {
    /// `MOUNT/revoke` of one serial, with `token` (in its namespace).
    pub(crate) async fn revoke_serial(
        &self,
        token: &Token,
        certificate: &Issued,
    ) -> Result<(), VaultError> {
        if !valid_serial(&certificate.serial) {
            return Err(VaultError::BadPath {
                path: certificate.revoke_path.clone(),
                message: "the serial is not a certificate serial".into(),
            });
        }
        let body: Value = json!({ "serial_number": certificate.serial });
        self.call(Method::POST, &certificate.revoke_path, Some(token), Some(&body)).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::Lease;
    use std::time::Duration;

    fn source(path: &str) -> Source {
        Source { dir: None, path: path.into(), params: Default::default() }
    }

    fn cert(serial: Value) -> Secret {
        let data = json!({"certificate": "-----BEGIN CERTIFICATE-----", "serial_number": serial, "expiration": 1});
        Secret { data: data.as_object().unwrap().clone(), lease: None, kv_version: None }
    }

    #[test]
    fn the_revoke_endpoint_is_on_the_issuing_mount_and_only_a_real_serial_is_taken() {
        assert_eq!(revoke_path("pki/issue/web").as_deref(), Some("pki/revoke"));
        assert_eq!(revoke_path("team/pki_int/sign/web").as_deref(), Some("team/pki_int/revoke"));
        for other in ["secret/data/app", "issue/web", "pki/roles/web", "pki/issue"] {
            assert_eq!(revoke_path(other), None, "{other}");
        }
        let s = cert(json!("7b:a2:00:ff"));
        let got = issued(&source("pki/issue/web"), &s).unwrap();
        let want = Issued {
            revoke_path: "pki/revoke".into(),
            serial: "7b:a2:00:ff".into(),
            not_stored: false,
        };
        assert_eq!(got, want);
        assert_eq!(got.lookup().path, "pki/cert/7b:a2:00:ff");
        assert_eq!(issued(&source("secret/data/app"), &s), None, "not a PKI issue path");
        for hostile in
            [json!("7b a2"), json!("x/../y"), json!(""), json!(7), json!("f".repeat(200))]
        {
            assert_eq!(issued(&source("pki/issue/web"), &cert(hostile.clone())), None, "{hostile}");
        }
        let mut leased = cert(json!("7b"));
        leased.lease = Some(Lease {
            id: "pki/issue/web/1".into(),
            duration: Duration::from_secs(9),
            renewable: false,
        });
        assert_eq!(issued(&source("pki/issue/web"), &leased), None, "a lease goes with the token");
    }
}

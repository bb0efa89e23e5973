//! The fake's secrets: reads by path, leases and their renewal, certificates issued without a
//! lease and their revocation by serial.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use serde_json::{json, Map, Value};

use super::{denied, FakeVault};
use crate::vault::{pki, Lease, Secret, Token, VaultError};
use crate::volume::Source;

/// The `expiration` a certificate of a path in `certified` carries.
#[derive(Debug, Clone)]
pub enum Expiration {
    /// This many seconds after it is read.
    In(u64),
    /// This JSON value, whatever it is.
    Raw(Value),
}

impl FakeVault {
    pub(super) fn read_source(&self, token: &Token, source: &Source) -> Result<Secret, VaultError> {
        let path = &source.path;
        if let Some((mount, _serial)) = path.split_once("/cert/") {
            // PKI's record of a certificate (unauthenticated): none for a `no_store` role's.
            if self.not_stored.lock().unwrap().iter().any(|m| m == mount) {
                return Err(VaultError::NotFound { path: path.clone() });
            }
            let data = json!({"certificate": "kept"}).as_object().unwrap().clone();
            return Ok(Secret { data, lease: None, kv_version: None });
        }
        self.known(token, path)?;
        let n = self.reads.fetch_add(1, Ordering::SeqCst);
        let mut data = match self.secrets.lock().unwrap().get(path) {
            Some(Value::Object(data)) => numbered(data, n),
            Some(_) => return Err(denied(path)),
            None => return Err(VaultError::NotFound { path: path.clone() }),
        };
        let lease = self.leased.lock().unwrap().get(path).map(|secs| Lease {
            id: format!("{path}/{n}"),
            duration: Duration::from_secs(*secs),
            renewable: true,
        });
        if let Some(lease) = &lease {
            self.leases.lock().unwrap().insert(lease.id.clone(), token.expose().to_owned());
        }
        if let Some(expiration) = self.certified.lock().unwrap().get(path) {
            let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
            let expiration = match expiration {
                Expiration::In(secs) => json!(now + secs),
                Expiration::Raw(value) => value.clone(),
            };
            data.insert("certificate".into(), Value::String(format!("cert-{n}")));
            data.insert("serial_number".into(), Value::String(format!("{n:02x}")));
            data.insert("expiration".into(), expiration);
        }
        Ok(Secret { data, lease, kv_version: None })
    }

    /// `sys/leases/renew` of a lease alive (400 otherwise, as Vault answers).
    pub(super) fn renew(
        &self,
        token: &Token,
        lease_id: &str,
        increment: Duration,
    ) -> Result<Duration, VaultError> {
        let path = "sys/leases/renew";
        self.known(token, path)?;
        if !self.leases.lock().unwrap().contains_key(lease_id) {
            return Err(VaultError::Status {
                path: path.into(),
                status: 400,
                message: "lease not found or lease is not renewable".into(),
            });
        }
        let cap = *self.lease_renew_cap.lock().unwrap();
        Ok(cap.map_or(increment, |cap| increment.min(cap)))
    }

    /// `MOUNT/revoke` of a serial; Vault knows none of a `no_store` mount's.
    pub(super) fn revoke_serial(
        &self,
        token: &Token,
        certificate: &pki::Issued,
    ) -> Result<(), VaultError> {
        let path = &certificate.revoke_path;
        if self.unreachable_revoke.load(Ordering::SeqCst) {
            return Err(VaultError::Status {
                path: path.clone(),
                status: 503,
                message: "sealed".into(),
            });
        }
        self.known(token, path)?;
        let mount = path.strip_suffix("/revoke").unwrap_or(path);
        if self.not_stored.lock().unwrap().iter().any(|m| m == mount) {
            let message = format!("certificate with serial {} not found", certificate.serial);
            return Err(VaultError::Status { path: path.clone(), status: 400, message });
        }
        self.certificates_revoked.lock().unwrap().push(certificate.serial.clone());
        Ok(())
    }
}

/// `data` with `{n}` in its strings replaced by `n`.
fn numbered(data: &Map<String, Value>, n: usize) -> Map<String, Value> {
    let mut data = data.clone();
    for value in data.values_mut() {
        if let Value::String(s) = value {
            if s.contains("{n}") {
                *s = s.replace("{n}", &n.to_string());
            }
        }
    }
    data
}

//! The one fake [`Vault`] of the unit tests: the plugin's identity, `check`, the driver, swarm
//! secrets. It keeps what a Vault server keeps, in memory, and answers as Vault answers.
//!
//! What it models:
//! - **Tokens** ([`tokens`]): those it knows (`tokens`), and nothing else is valid — a request
//!   with an unknown, revoked or forgotten token is denied (403), a renewal too. Child tokens
//!   (`child-N`, accessor `acc-N`) belong to their parent, take its policies unless they name
//!   a subset, and go with it at its revocation, with every lease they read. Logins: an AppRole
//!   ([`ROLE_ID`] with [`SECRET_ID`] or a wrapped secret_id), a cert role (`node` or none), a
//!   JWT (`jwt`, role `hosts`); each gives `login-N`, for 60 s. Wrapping tokens (`wrapped`)
//!   hold a token or a secret_id and are used up by their unwrap.
//! - **Secrets** ([`secrets`]): data by path (`secrets`; a value that is not an object is a
//!   path the token may not read, 403; a missing one, 404), in whose strings `{n}` becomes the
//!   number of the read (dynamic credentials, new at each read); a lease for the paths in
//!   `leased`; certificates without a lease for those in `certified`, and PKI's record of them
//!   (`MOUNT/cert/SERIAL`, unauthenticated), none for a `no_store` mount (`not_stored`).
//! - **The server**: `sealed` — every request answers 503, `sys/health` too;
//!   `unreachable_revoke` — revocations answer 503 while the rest works; renewals granting less
//!   than asked (`token_renew_cap`, `lease_renew_cap`: a max TTL near).
//! - **What was asked**: the counters and logs (`reads`, `children`, `revoked`, renewals,
//!   `logins`, the namespace of each create, read and revoke).
//!
//! What it does not model: time (a TTL never runs out: a token or lease lives until revoked,
//! and a renewal sets the TTL `lookup-self` shows); policies beyond `auth/token/create`
//! (`no_child_tokens`: tokens whose policy denies it); namespaces (recorded, not enforced: a
//! token is valid in any); the number of uses of a token; several nodes (`nodes` is empty);
//! the HTTP layer (its errors are [`super::client`]'s, tested there).

mod secrets;
mod tests;
mod tokens;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

use super::{
    ChildTokenRequest, IssuedToken, Login, Secret, Token, TokenInfo, Unwrapped, Vault, VaultError,
};
use crate::volume::Source;

pub use secrets::Expiration;

/// The role_id of the AppRole the fake knows.
pub const ROLE_ID: &str = "role-1";
/// The secret_id [`ROLE_ID`] always accepts.
pub const SECRET_ID: &str = "secret-1";

#[derive(Default)]
pub struct FakeVault {
    /// Tokens Vault knows (valid, not revoked), by value.
    pub tokens: Mutex<BTreeMap<String, Known>>,
    /// Tokens whose policy denies `auth/token/create`: they can make no child token.
    pub no_child_tokens: Mutex<BTreeSet<String>>,
    /// What a token renewal grants at most (a max TTL near); `None`: what was asked.
    pub token_renew_cap: Mutex<Option<Duration>>,
    /// The child tokens created, in order.
    pub children: Mutex<Vec<Child>>,
    /// The tokens revoked by `revoke-self`, in order (not the children that went with them).
    pub revoked: Mutex<Vec<String>>,
    /// `renew-self` requests, answered or not.
    pub token_renewals: AtomicUsize,
    /// Logins that gave a token (AppRole, cert, JWT).
    pub logins: AtomicUsize,
    /// The JWT the jwt method accepts (for role `hosts`).
    pub jwt: Mutex<String>,
    /// Secret ids [`ROLE_ID`] accepts besides [`SECRET_ID`]: those issued wrapped.
    secret_ids: Mutex<BTreeSet<String>>,
    /// Wrapping tokens not yet used.
    pub wrapped: Mutex<BTreeMap<String, Wrapping>>,
    /// What the next lookup of a wrapping token meets: another node unwrapping it at that very
    /// moment (the token is gone after it), as Vault answers then.
    pub lookup_race: Mutex<Option<VaultError>>,

    /// The data at each path.
    pub secrets: Mutex<BTreeMap<String, Value>>,
    /// Paths whose reads carry a lease of this many seconds.
    pub leased: Mutex<BTreeMap<String, u64>>,
    /// Leases alive, by id, with the token that read them (revoked with it).
    pub leases: Mutex<BTreeMap<String, String>>,
    /// What a lease renewal grants at most; `None`: what was asked.
    pub lease_renew_cap: Mutex<Option<Duration>>,
    /// Reads of secrets (PKI's records of certificates not counted); the `{n}` of the next.
    pub reads: AtomicUsize,
    /// `sys/leases/renew` requests, answered or not.
    pub lease_renewals: AtomicUsize,
    /// Paths that issue a certificate without a lease (PKI's `generate_lease=false`).
    pub certified: Mutex<BTreeMap<String, Expiration>>,
    /// The serials of the certificates revoked, in order.
    pub certificates_revoked: Mutex<Vec<String>>,
    /// PKI mounts whose certificates Vault keeps no record of (`no_store` roles).
    pub not_stored: Mutex<Vec<String>>,

    /// Every request answers 503, as a sealed Vault does.
    pub sealed: AtomicBool,
    /// Revocations (of tokens and certificates) answer 503; the rest works.
    pub unreachable_revoke: AtomicBool,
    /// The namespace of each token a create, read or revoke was made with (`None`:
    /// vault.namespace).
    pub namespaces: Mutex<Vec<(&'static str, Option<String>)>>,
}

/// A token Vault knows.
#[derive(Debug, Clone)]
pub struct Known {
    /// What `lookup-self` says of it.
    pub info: TokenInfo,
    /// The token it is a child of, revoked with it.
    pub parent: Option<String>,
}

/// A child token created.
#[derive(Debug, Clone)]
pub struct Child {
    pub parent: String,
    pub request: ChildTokenRequest,
}

/// A wrapping token: the path that made it and what it holds.
#[derive(Debug, Clone)]
pub struct Wrapping {
    pub creation_path: String,
    pub holds: Wrapped,
}

#[derive(Debug, Clone)]
pub enum Wrapped {
    /// A token, known once unwrapped (for an hour, policy `default`).
    Token(String),
    /// An AppRole secret_id for [`ROLE_ID`].
    SecretId(String),
}

impl FakeVault {
    /// The error of every request while `sealed`.
    fn answers(&self, path: &str) -> Result<(), VaultError> {
        if self.sealed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(VaultError::Status {
                path: path.into(),
                status: 503,
                message: "Vault is sealed".into(),
            });
        }
        Ok(())
    }

    /// Records the namespace `token` is used in, for `op`.
    fn saw(&self, op: &'static str, token: &Token) {
        let ns = token.namespace().map(|n| n.as_str().to_owned());
        self.namespaces.lock().unwrap().push((op, ns));
    }
}

fn denied(path: &str) -> VaultError {
    VaultError::Denied { path: path.into() }
}

impl Vault for FakeVault {
    async fn create_child_token(
        &self,
        parent: &Token,
        request: &ChildTokenRequest,
    ) -> Result<IssuedToken, VaultError> {
        self.saw("create", parent);
        self.answers("auth/token/create")?;
        self.create_child(parent, request)
    }

    async fn read(&self, token: &Token, source: &Source) -> Result<Secret, VaultError> {
        self.saw("read", token);
        self.answers(&source.path)?;
        self.read_source(token, source)
    }

    async fn revoke_certificate(
        &self,
        token: &Token,
        certificate: &super::pki::Issued,
    ) -> Result<(), VaultError> {
        self.answers(&certificate.revoke_path)?;
        self.revoke_serial(token, certificate)
    }

    async fn revoke_self(&self, token: &Token) -> Result<(), VaultError> {
        tokio::task::yield_now().await; // a real revocation is a round trip: let others run
        self.saw("revoke", token);
        self.answers("auth/token/revoke-self")?;
        self.revoke_token(token)
    }

    async fn renew_self(&self, token: &Token, increment: Duration) -> Result<Duration, VaultError> {
        self.token_renewals.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.answers("auth/token/renew-self")?;
        self.renew_token(token, increment)
    }

    async fn renew_lease(
        &self,
        token: &Token,
        lease_id: &str,
        increment: Duration,
    ) -> Result<Duration, VaultError> {
        self.lease_renewals.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.answers("sys/leases/renew")?;
        self.renew(token, lease_id, increment)
    }

    async fn lookup_self(&self, token: &Token) -> Result<TokenInfo, VaultError> {
        let path = "auth/token/lookup-self";
        self.answers(path)?;
        self.known(token, path).map(|known| known.info)
    }

    async fn capabilities_self(
        &self,
        token: &Token,
        path: &str,
    ) -> Result<Vec<String>, VaultError> {
        self.answers("sys/capabilities-self")?;
        self.known(token, "sys/capabilities-self")?;
        let deny = path == "auth/token/create"
            && self.no_child_tokens.lock().unwrap().contains(token.expose());
        Ok(vec![if deny { "deny" } else { "update" }.into()])
    }

    async fn health(&self) -> Result<(), VaultError> {
        self.answers("sys/health")
    }

    async fn wrapping_creation_path(&self, wrapping: &Token) -> Result<String, VaultError> {
        self.answers("sys/wrapping/lookup")?;
        self.creation_path(wrapping)
    }

    async fn unwrap(&self, wrapping: &Token) -> Result<Unwrapped, VaultError> {
        self.answers("sys/wrapping/unwrap")?;
        let unwrapped = self.unwrap_token(wrapping);
        tokio::task::yield_now().await; // a round trip: another Create may run meanwhile
        unwrapped
    }

    async fn approle_login(
        &self,
        role_id: &str,
        secret_id: &Token,
    ) -> Result<IssuedToken, VaultError> {
        let path = "auth/approle/login";
        self.answers(path)?;
        let valid = secret_id.expose() == SECRET_ID
            || self.secret_ids.lock().unwrap().contains(secret_id.expose());
        if role_id != ROLE_ID || !valid {
            return Err(denied(path));
        }
        Ok(self.issue_login())
    }

    async fn login(&self, login: &Login<'_>) -> Result<IssuedToken, VaultError> {
        self.answers(&login.path())?;
        let refused = |message: &str| VaultError::Status {
            path: login.path(),
            status: 400,
            message: message.into(),
        };
        match login {
            Login::Cert { role: None | Some("node"), .. } => Ok(self.issue_login()),
            Login::Cert { .. } => {
                Err(refused("invalid certificate or no client certificate supplied"))
            }
            Login::Jwt { role: "hosts", jwt, .. } if jwt.expose() == *self.jwt.lock().unwrap() => {
                Ok(self.issue_login())
            }
            Login::Jwt { .. } => {
                Err(refused("error validating token: invalid audience (aud) claim"))
            }
        }
    }
}

//! Talking to Vault / OpenBao: the [`Vault`] trait the driver is generic over, its HTTP
//! implementation ([`client::HttpVault`]), the files the plugin's own identity is made of
//! ([`credentials`]; the identity itself, above this module: [`crate::identity`]), and the
//! types that carry tokens and secrets.
//!
//! Tokens are [`Token`]s and secret data lives in [`Secret`]s: neither prints its value with
//! `Debug` or `Display`, and both are zeroed when dropped.

pub mod client;
pub mod credentials;
#[cfg(test)]
pub mod fake;
pub mod pki;

use std::future::Future;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use zeroize::Zeroize;

use crate::volume::Source;

pub use crate::namespace::Namespace;
pub use client::HttpVault;

/// A Vault token, and the namespace it belongs to when that is a volume's
/// ([`crate::namespace`]; `None`: `vault.namespace`, the plugin's). `Debug` prints `Token(***)` (and
/// the namespace); the value is zeroed on drop.
#[derive(Clone)]
pub struct Token {
    value: SecretString,
    namespace: Option<Namespace>,
}

impl Token {
    pub fn new(value: String) -> Token {
        Token { value: SecretString::from(value), namespace: None }
    }

    pub fn expose(&self) -> &str {
        self.value.expose_secret()
    }

    /// The same token, used in `namespace` (every request made with it names it); `None`
    /// keeps the token's own.
    pub fn in_namespace(&self, namespace: Option<&Namespace>) -> Token {
        let namespace = namespace.cloned().or_else(|| self.namespace.clone());
        Token { value: self.value.clone(), namespace }
    }

    /// The volume's namespace the token belongs to; `None` for `vault.namespace`.
    pub fn namespace(&self) -> Option<&Namespace> {
        self.namespace.as_ref()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            None => f.write_str("Token(***)"),
            Some(ns) => write!(f, "Token(***, namespace {ns})"),
        }
    }
}

/// A token Vault issued, with what is safe to log about it (its accessor).
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: Token,
    pub accessor: String,
    pub ttl: Duration,
    pub renewable: bool,
}

/// What a child token is created with.
#[derive(Debug, Clone)]
pub struct ChildTokenRequest {
    pub policies: Option<Vec<String>>,
    pub ttl: Duration,
    pub display_name: String,
    pub meta: Vec<(String, String)>,
}

/// A lease attached to a secret read (dynamic credentials, certificates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub id: String,
    pub duration: Duration,
    pub renewable: bool,
}

/// The data of one source read. Strings are zeroed on drop; `Debug` shows only the keys.
pub struct Secret {
    pub data: Map<String, Value>,
    pub lease: Option<Lease>,
    /// For a KV v2 read, the version that was read.
    pub kv_version: Option<u64>,
}

impl Secret {
    /// About how many bytes its data holds in memory: every string's (keys' too), and a parsed
    /// value's 32 for each value. What a mount may hold of its sources is bounded by it
    /// ([`crate::volume::bounds::read_budget`]), and what it keeps for a refresh
    /// (`driver::retain`).
    pub fn weight(&self) -> u64 {
        const VALUE: u64 = 32;
        fn weight(value: &Value) -> u64 {
            VALUE
                + match value {
                    Value::String(s) => s.len() as u64,
                    Value::Array(items) => items.iter().map(weight).sum(),
                    Value::Object(members) => members.iter().map(member).sum(),
                    Value::Null | Value::Bool(_) | Value::Number(_) => 0,
                }
        }
        fn member((key, value): (&String, &Value)) -> u64 {
            key.len() as u64 + weight(value)
        }
        self.data.iter().map(member).sum()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .field("lease", &self.lease)
            .field("kv_version", &self.kv_version)
            .finish()
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        for value in self.data.values_mut() {
            wipe(value);
        }
    }
}

/// The longest TTL taken from Vault (ten years): a larger one (a hostile or broken reply can
/// say `u64::MAX`) is read as this, so no deadline computed from it can overflow.
pub const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

impl Secret {
    /// When a secret without a lease says it expires (seconds since the epoch): a PKI
    /// certificate issued with the default `generate_lease=false` carries its `expiration`
    /// beside its `certificate`. `None` for a leased secret, for data without both, and for an
    /// `expiration` that is not a positive number of seconds (a hostile or broken reply); a
    /// fraction is cut off and a huge value saturates (bounded later, like a TTL).
    pub fn expiration(&self) -> Option<u64> {
        if self.lease.is_some() || !self.data.contains_key("certificate") {
            return None;
        }
        let n = self.data.get("expiration")?.as_number()?;
        let secs = match (n.as_u64(), n.as_f64()) {
            (Some(secs), _) => secs,
            // `as` saturates: 1e300 becomes u64::MAX; NaN cannot come out of JSON.
            (None, Some(f)) if f.is_finite() && f > 0.0 => f as u64,
            _ => return None,
        };
        (secs > 0).then_some(secs)
    }
}

/// What is left of a validity ending at `expiration` (seconds since the epoch) at `now`,
/// bounded by [`MAX_TTL`]; zero when it is past.
pub fn validity(expiration: u64, now: std::time::SystemTime) -> Duration {
    let now = now.duration_since(std::time::SystemTime::UNIX_EPOCH).unwrap_or_default();
    ttl(expiration.saturating_sub(now.as_secs()))
}

/// A TTL in seconds as Vault gives it, bounded by [`MAX_TTL`].
pub fn ttl(secs: u64) -> Duration {
    Duration::from_secs(secs).min(MAX_TTL)
}

/// Whether a JSON value holds `needle` inside any of its strings.
pub(crate) fn holds(value: &Value, needle: &str) -> bool {
    match value {
        Value::String(s) => !needle.is_empty() && s.contains(needle),
        Value::Array(items) => items.iter().any(|v| holds(v, needle)),
        Value::Object(map) => map.values().any(|v| holds(v, needle)),
        _ => false,
    }
}

/// Zeroes every string inside a JSON value.
pub(crate) fn wipe(value: &mut Value) {
    match value {
        Value::String(s) => s.zeroize(),
        Value::Array(items) => items.iter_mut().for_each(wipe),
        Value::Object(map) => map.values_mut().for_each(wipe),
        _ => {}
    }
}

/// Errors from Vault, each naming what the operator needs: the address, the API path.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("vault at {address} is unreachable")]
    Unreachable {
        address: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("vault at {address} did not answer within {timeout:?} ({path})")]
    Timeout { address: String, path: String, timeout: Duration },
    #[error("permission denied on {path}")]
    Denied { path: String },
    #[error("no secret at {path}")]
    NotFound { path: String },
    /// The request's namespace (a volume's `namespace`, or `vault.namespace`) does not exist.
    #[error("vault has no namespace {namespace:?} ({path}): create it, or give an existing one (the full path from the root namespace)")]
    NoNamespace { namespace: String, path: String },
    #[error("vault answered {status} for {path}: {message}")]
    Status { path: String, status: u16, message: String },
    #[error("vault's reply for {path} is not what was expected: {message}")]
    BadReply { path: String, message: String },
    #[error("{path:?} is not a Vault API path: {message}")]
    BadPath { path: String, message: String },
    #[error("vault's reply for {path} is larger than {limit} bytes")]
    TooLarge { path: String, limit: usize },
    #[error("cannot use the CA certificate {path}: {message}")]
    CaCert { path: String, message: String },
    #[error("cannot use {path} for the client certificate: {message}")]
    ClientCert { path: String, message: String },
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
    /// With several nodes: none could serve the request, each round of them retried with
    /// backoff for `waited` (a leader election, the cluster down).
    #[error("no vault node could serve {path} (tried for {}): {nodes}", crate::report::duration(*.waited))]
    NoNode { path: String, nodes: String, waited: Duration },
}

impl VaultError {
    /// Whether the token used was rejected (expired, revoked, unknown), as opposed to Vault
    /// being out of reach.
    pub fn is_denied(&self) -> bool {
        matches!(self, VaultError::Denied { .. })
    }

    /// Whether retrying later may help: Vault unreachable, timing out, sealed or overloaded.
    pub fn is_transient(&self) -> bool {
        match self {
            VaultError::Unreachable { .. }
            | VaultError::Timeout { .. }
            | VaultError::NoNode { .. } => true,
            VaultError::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

/// The Vault operations the plugin uses. [`HttpVault`] is the real one; unit tests use the one
/// fake, `fake::FakeVault` (test builds only).
pub trait Vault: Send + Sync + 'static {
    /// `auth/token/create` as `parent`: a child token, revoked with its parent.
    fn create_child_token(
        &self,
        parent: &Token,
        request: &ChildTokenRequest,
    ) -> impl Future<Output = Result<IssuedToken, VaultError>> + Send;

    /// Reads one source with `token` (a write when the source has parameters).
    fn read(
        &self,
        token: &Token,
        source: &Source,
    ) -> impl Future<Output = Result<Secret, VaultError>> + Send;

    /// `auth/token/revoke-self`: the token, its children and every lease it created.
    fn revoke_self(&self, token: &Token) -> impl Future<Output = Result<(), VaultError>> + Send;

    /// `auth/token/renew-self`; returns the new TTL.
    fn renew_self(
        &self,
        token: &Token,
        increment: Duration,
    ) -> impl Future<Output = Result<Duration, VaultError>> + Send;

    /// `sys/leases/renew`; returns the new lease duration.
    fn renew_lease(
        &self,
        token: &Token,
        lease_id: &str,
        increment: Duration,
    ) -> impl Future<Output = Result<Duration, VaultError>> + Send;

    /// `auth/token/lookup-self`: what the token is (its TTL left, renewable, policies).
    fn lookup_self(
        &self,
        token: &Token,
    ) -> impl Future<Output = Result<TokenInfo, VaultError>> + Send;

    /// `MOUNT/revoke` of a certificate a source issued, by its serial ([`pki`]).
    fn revoke_certificate(
        &self,
        token: &Token,
        certificate: &pki::Issued,
    ) -> impl Future<Output = Result<(), VaultError>> + Send;

    /// `sys/capabilities-self`: what `token` may do on `path` (`["update"]`, `["deny"]`, …).
    fn capabilities_self(
        &self,
        token: &Token,
        path: &str,
    ) -> impl Future<Output = Result<Vec<String>, VaultError>> + Send;

    /// `sys/health`: Vault answers, unsealed (a standby counts: it forwards).
    fn health(&self) -> impl Future<Output = Result<(), VaultError>> + Send;

    /// What each configured node says of itself (`sys/health`, one request to each), for
    /// `check`; empty where the implementation has no nodes to tell apart.
    fn nodes(&self) -> impl Future<Output = Vec<NodeHealth>> + Send {
        std::future::ready(Vec::new())
    }

    /// `sys/wrapping/lookup`: the path that created a wrapping token, without using it up.
    fn wrapping_creation_path(
        &self,
        wrapping: &Token,
    ) -> impl Future<Output = Result<String, VaultError>> + Send;

    /// `sys/wrapping/unwrap`: what the wrapping token wraps (used up by this call).
    fn unwrap(
        &self,
        wrapping: &Token,
    ) -> impl Future<Output = Result<Unwrapped, VaultError>> + Send;

    /// `auth/approle/login`.
    fn approle_login(
        &self,
        role_id: &str,
        secret_id: &Token,
    ) -> impl Future<Output = Result<IssuedToken, VaultError>> + Send;

    /// `auth/MOUNT/login` of the cert or jwt method.
    fn login(
        &self,
        login: &Login<'_>,
    ) -> impl Future<Output = Result<IssuedToken, VaultError>> + Send;
}

/// A login of the plugin's identity other than AppRole's.
#[derive(Debug, Clone, Copy)]
pub enum Login<'a> {
    /// TLS certificate auth: the credential is the client certificate the connection presents;
    /// `role` (the cert role's name) narrows which trusted certificate entry is matched.
    Cert { mount: &'a str, role: Option<&'a str> },
    /// JWT auth: the JWT, for `role`.
    Jwt { mount: &'a str, role: &'a str, jwt: &'a Token },
}

impl Login<'_> {
    /// The API path of the login.
    pub fn path(&self) -> String {
        match self {
            Login::Cert { mount, .. } | Login::Jwt { mount, .. } => format!("auth/{mount}/login"),
        }
    }
}

/// One node of the cluster and its state, as `check` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeHealth {
    pub address: String,
    pub state: NodeState,
}

/// What `sys/health` of one node says (its status code), or why it did not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeState {
    /// 200: unsealed, the active node.
    Active,
    /// 429: unsealed, a standby (it forwards requests to the active node).
    Standby,
    /// 473: a performance standby.
    PerformanceStandby,
    /// 472: a disaster-recovery secondary (serves nothing the plugin asks).
    DrSecondary,
    /// 501: not initialised.
    Uninitialized,
    /// 503: sealed.
    Sealed,
    /// Any other status.
    Unexpected(u16),
    /// No answer: the reason, one line.
    Unreachable(String),
}

impl NodeState {
    pub fn of_status(status: u16) -> NodeState {
        match status {
            200 => NodeState::Active,
            429 => NodeState::Standby,
            473 => NodeState::PerformanceStandby,
            472 => NodeState::DrSecondary,
            501 => NodeState::Uninitialized,
            503 => NodeState::Sealed,
            other => NodeState::Unexpected(other),
        }
    }

    /// Whether the node can serve the plugin's requests (itself or by forwarding them).
    pub fn serves(&self) -> bool {
        matches!(self, NodeState::Active | NodeState::Standby | NodeState::PerformanceStandby)
    }
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeState::Active => f.write_str("active"),
            NodeState::Standby => f.write_str("standby (unsealed; forwards to the active node)"),
            NodeState::PerformanceStandby => f.write_str("performance standby (unsealed)"),
            NodeState::DrSecondary => f.write_str("disaster-recovery secondary (serves nothing)"),
            NodeState::Uninitialized => f.write_str("not initialised"),
            NodeState::Sealed => f.write_str("sealed"),
            NodeState::Unexpected(s) => write!(f, "answers sys/health with status {s}"),
            NodeState::Unreachable(why) => write!(f, "unreachable ({why})"),
        }
    }
}

/// What `lookup-self` says of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// Time left; zero for a token that does not expire.
    pub ttl: Duration,
    pub renewable: bool,
    pub policies: Vec<String>,
}

/// What a response-wrapping token held.
#[derive(Debug)]
pub enum Unwrapped {
    /// A token (from `auth/token/create`).
    Token(IssuedToken),
    /// An AppRole secret_id (from `auth/approle/role/NAME/secret-id`).
    SecretId(Token),
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cert(expiration: Value) -> Secret {
        let data = json!({"certificate": "-----BEGIN CERTIFICATE-----", "expiration": expiration});
        Secret { data: data.as_object().unwrap().clone(), lease: None, kv_version: None }
    }

    #[test]
    fn an_expiration_is_taken_only_from_a_certificate_without_a_lease_and_hostile_ones_are_bounded()
    {
        assert_eq!(cert(json!(1_900_000_000)).expiration(), Some(1_900_000_000));
        assert_eq!(cert(json!(1_900_000_000.7)).expiration(), Some(1_900_000_000));
        assert_eq!(cert(json!(1e300)).expiration(), Some(u64::MAX));
        assert_eq!(cert(json!(u64::MAX)).expiration(), Some(u64::MAX));
        for hostile in [json!(-5), json!(-1e300), json!(0), json!("1900000000"), json!(null)] {
            assert_eq!(cert(hostile.clone()).expiration(), None, "{hostile}");
        }
        let mut leased = cert(json!(1_900_000_000));
        leased.lease =
            Some(Lease { id: "pki/x".into(), duration: Duration::from_secs(9), renewable: false });
        assert_eq!(leased.expiration(), None, "a lease is followed as a lease");
        let kv = json!({"expiration": 1_900_000_000});
        let kv = Secret { data: kv.as_object().unwrap().clone(), lease: None, kv_version: None };
        assert_eq!(kv.expiration(), None, "only a certificate's expiration counts");

        let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(validity(1_060, now), Duration::from_secs(60));
        assert_eq!(validity(10, now), Duration::ZERO, "past");
        assert_eq!(validity(u64::MAX, now), MAX_TTL, "bounded like a TTL");
    }

    #[test]
    fn token_debug_is_redacted() {
        let t = Token::new("hvs.very-secret".into());
        assert_eq!(format!("{t:?}"), "Token(***)");
    }
}

//! The HTTP implementation of [`Vault`](super::Vault): one kept-alive `reqwest` client, strict
//! reply parsing, bounded reply sizes, errors that name the address and the API path.
//!
//! Here: the [`HttpVault`] type, how it is built, and the connection and namespace it sends
//! with. Beside it: `cluster` (which node a request goes to: failover, the active node, the
//! budget), `node` (one request to one node, and what the node did with it), `replies`
//! (Vault's JSON turned into typed values, sizes bounded) and `endpoints` (the
//! [`Vault`](super::Vault) operations).

mod cluster;
mod endpoints;
mod node;
mod replies;

use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::{IssuedToken, Token, VaultError};
use crate::config::VaultConfig;

pub use cluster::{replayable, FAILOVER_BUDGET};
pub use replies::{secret_from_reply, AuthReply, Reply, MAX_REPLY};

/// Vault over HTTP(S): one node, or the nodes of a cluster tried in turn (see docs/many-nodes.md, "Vault HA").
#[derive(Clone)]
pub struct HttpVault {
    /// Shared by every clone; replaced when a certificate login presented a certificate read
    /// anew (see [`HttpVault::cert_login`]).
    http: Arc<std::sync::RwLock<reqwest::Client>>,
    nodes: Arc<[Node]>,
    /// The index of the node that answered last: tried first. Shared by every clone.
    preferred: Arc<AtomicUsize>,
    /// The index of the node last found active, for the requests that go to the active node
    /// only. Shared by every clone; a std mutex, never held across an await.
    active: Arc<std::sync::Mutex<Option<usize>>>,
    /// [`FAILOVER_BUDGET`]; shorter in unit tests.
    failover_budget: Duration,
    namespace: Option<String>,
    /// A volume's namespace for the requests that carry no token of it (an AppRole login, a
    /// wrapping lookup): see [`HttpVault::in_namespace`].
    scope: Option<super::Namespace>,
    timeout: Duration,
    /// The CA certificates trusted beside the system's (`ca_cert`), for the login clients.
    roots: Arc<[reqwest::Certificate]>,
    /// `method = "cert"`: the client certificate and key files, read again at every login.
    client_cert: Option<(PathBuf, PathBuf)>,
}

/// One configured node: its API base (`…/v1/`) and its address as errors name it.
struct Node {
    base: reqwest::Url,
    address: String,
}

impl HttpVault {
    pub fn new(config: &VaultConfig) -> Result<HttpVault, VaultError> {
        let mut roots = Vec::new();
        if let Some(path) = &config.ca_cert {
            let ca_err =
                |message: String| VaultError::CaCert { path: path.display().to_string(), message };
            // Bounded, and never a FIFO or a device: the start cannot hang on this file.
            let pem = super::credentials::read_bounded(
                "CA certificate",
                path,
                super::credentials::MAX_PEM,
            )
            .map_err(|e| ca_err(e.to_string()))?;
            roots =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_err(e.to_string()))?;
            if roots.is_empty() {
                return Err(ca_err("no PEM certificate in the file".into()));
            }
        }
        let mut http = client(config.timeout, &roots);
        let client_cert = match &config.auth {
            crate::config::AuthConfig::Cert { client_cert, client_key, .. } => {
                // Presented on every connection: OpenBao's cert auth method checks, at each
                // renewal of the token a login gave, the certificate that logged in. Read
                // again at every login.
                let identity = super::credentials::client_certificate(client_cert, client_key)?;
                http = http.identity(identity);
                Some((client_cert.clone(), client_key.clone()))
            }
            _ => None,
        };
        let nodes = config
            .address
            .iter()
            .map(|url| Node {
                base: url.join("v1/").expect("a validated base URL joins"),
                address: url.as_str().trim_end_matches('/').to_owned(),
            })
            .collect();
        Ok(HttpVault {
            http: Arc::new(std::sync::RwLock::new(http.build().map_err(VaultError::Client)?)),
            nodes,
            preferred: Arc::new(AtomicUsize::new(0)),
            active: Arc::default(),
            failover_budget: FAILOVER_BUDGET,
            namespace: config.namespace.clone(),
            scope: None,
            timeout: config.timeout,
            roots: roots.into(),
            client_cert,
        })
    }

    /// A certificate login: the certificate and key read from their files now, so that a node
    /// certificate renewed on disk is used from the next login on, with no restart. Once the
    /// login succeeded, every request presents that certificate (the token's renewals must).
    async fn cert_login(&self, path: &str, body: &Value) -> Result<IssuedToken, VaultError> {
        let Some((cert, key)) = &self.client_cert else {
            return self.call_auth(path, None, body).await;
        };
        let identity = super::credentials::load_client_certificate(cert, key).await?;
        let http = client(self.timeout, &self.roots).identity(identity);
        let http = http.build().map_err(VaultError::Client)?;
        let login =
            HttpVault { http: Arc::new(std::sync::RwLock::new(http.clone())), ..self.clone() };
        let issued = login.call_auth(path, None, body).await?;
        *self.http.write().unwrap() = http;
        Ok(issued)
    }

    /// This client with every request in `namespace` (a volume's), for the requests whose
    /// credential is not a [`Token`] of it; the clone shares the connections.
    fn in_namespace(&self, namespace: Option<&super::Namespace>) -> HttpVault {
        HttpVault { scope: namespace.cloned().or_else(|| self.scope.clone()), ..self.clone() }
    }

    /// The namespace a request names: its token's, else this client's scope, else
    /// `vault.namespace`.
    fn namespace_of<'a>(&'a self, token: Option<&'a Token>) -> Option<&'a str> {
        token
            .and_then(Token::namespace)
            .or(self.scope.as_ref())
            .map(super::Namespace::as_str)
            .or(self.namespace.as_deref())
    }

    fn http(&self) -> reqwest::Client {
        self.http.read().unwrap().clone()
    }

    fn transport_error(&self, node: &Node, path: &str, e: reqwest::Error) -> VaultError {
        if e.is_timeout() {
            VaultError::Timeout {
                address: node.address.clone(),
                path: path.to_owned(),
                timeout: self.timeout,
            }
        } else {
            VaultError::Unreachable { address: node.address.clone(), source: e }
        }
    }
}

/// The HTTP client's settings, every one explicit: nothing is taken from `VAULT_*` variables
/// behind our back. `roots`: trusted beside the system's CAs.
fn client(timeout: Duration, roots: &[reqwest::Certificate]) -> reqwest::ClientBuilder {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("vault-secrets-plugin/", env!("CARGO_PKG_VERSION")));
    for cert in roots {
        builder = builder.add_root_certificate(cert.clone());
    }
    builder
}

/// A client of `addresses` with the token method, for the unit tests of the submodules.
#[cfg(test)]
fn vault_of(addresses: &[&str], timeout: Duration) -> HttpVault {
    let config = VaultConfig {
        address: crate::config::Addresses::parse("vault.address", addresses).unwrap(),
        ca_cert: None,
        namespace: None,
        timeout,
        auth: crate::config::AuthConfig::Token { token_file: "/nonexistent".into() },
    };
    HttpVault::new(&config).unwrap()
}

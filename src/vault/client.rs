//! The HTTP implementation of [`Vault`]: one kept-alive `reqwest` client, strict reply parsing,
//! bounded reply sizes, errors that name the address and the API path.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use zeroize::Zeroizing;

use super::{
    ChildTokenRequest, IssuedToken, Lease, Login, NodeHealth, NodeState, Secret, Token, TokenInfo,
    Unwrapped, Vault, VaultError,
};
use crate::config::VaultConfig;
use crate::volume::Source;

/// The largest reply accepted from Vault: secrets are small; a PEM chain is a few KiB.
pub const MAX_REPLY: usize = 1024 * 1024;

/// Vault over HTTP(S): one node, or the nodes of a cluster tried in turn (see docs/many-nodes.md, "Vault HA").
#[derive(Clone)]
pub struct HttpVault {
    /// Shared by every clone; replaced when a certificate login presented a certificate read
    /// anew (see [`HttpVault::cert_login`]).
    http: Arc<std::sync::RwLock<reqwest::Client>>,
    nodes: Arc<[Node]>,
    /// The index of the node that answered last: tried first. Shared by every clone.
    preferred: Arc<AtomicUsize>,
    /// One more than the index of the node last found active (0: not known), for the requests
    /// that go to the active node only.
    active: Arc<AtomicUsize>,
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

/// How long a request waits, with several nodes, for one of them to serve it: rounds of every
/// node, with backoff, while a leader is being elected or the cluster is out of reach. Below
/// dockerd's two minutes for a Mount, above an election (a few seconds).
pub const FAILOVER_BUDGET: Duration = Duration::from_secs(30);

/// The parts of a Vault reply the plugin reads. Unknown fields are ignored (Vault adds fields
/// across versions); the fields' types are checked. Public for the fuzz targets.
#[derive(Deserialize)]
pub struct Reply {
    #[serde(default)]
    pub lease_id: String,
    #[serde(default)]
    pub renewable: bool,
    #[serde(default)]
    pub lease_duration: u64,
    #[serde(default)]
    pub data: Option<Value>,
    #[serde(default)]
    pub auth: Option<AuthReply>,
    /// Present when Vault wrapped the reply: a wrapping token, which no source may yield.
    #[serde(default)]
    pub wrap_info: Option<Value>,
}

/// The `auth` part of a Vault reply. Public for the fuzz targets (a field of [`Reply`]).
#[derive(Deserialize)]
pub struct AuthReply {
    pub client_token: String,
    #[serde(default)]
    pub accessor: String,
    #[serde(default)]
    pub lease_duration: u64,
    #[serde(default)]
    pub renewable: bool,
}

impl AuthReply {
    pub(crate) fn into_issued(self) -> IssuedToken {
        IssuedToken {
            token: Token::new(self.client_token),
            accessor: self.accessor,
            ttl: super::ttl(self.lease_duration),
            renewable: self.renewable,
        }
    }
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
                let identity = super::identity::client_certificate(client_cert, client_key)?;
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
            active: Arc::new(AtomicUsize::new(0)),
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

    /// The URL of an API path on `node`: its configured address and `v1`, then the path's
    /// segments pushed one by one (each percent-encoded where it must be), a `?query` of the
    /// plugin's own kept as the query. Never a `join` of text: no path, whatever it holds, can
    /// name another host, and the origin is checked all the same before any token is sent.
    fn url(node: &Node, path: &str) -> Result<reqwest::Url, VaultError> {
        let bad =
            |message: &str| VaultError::BadPath { path: path.to_owned(), message: message.into() };
        let (segments, query) = path.split_once('?').map_or((path, None), |(p, q)| (p, Some(q)));
        let mut url = node.base.clone();
        {
            let mut push =
                url.path_segments_mut().map_err(|()| bad("the address takes no path"))?;
            push.pop_if_empty();
            for segment in segments.split('/') {
                if segment.is_empty() || segment == "." || segment == ".." {
                    return Err(bad("empty, `.` and `..` segments are not API paths"));
                }
                push.push(segment);
            }
        }
        url.set_query(query);
        if url.origin() != node.base.origin() {
            return Err(bad("it does not lead to the configured vault address"));
        }
        Ok(url)
    }

    /// Sends one request and returns the parsed reply (`None` for 204 No Content).
    ///
    /// With several nodes, the one that answered last is tried first, then the others in the
    /// configured order; a node that cannot serve the request sends it on to the next: no
    /// connection, a sealed node or one without a leader (503), a redirect (a standby that
    /// cannot forward: a redirect to a configured node tries that node next; nothing is ever
    /// sent anywhere else). A connection that broke after the request went out sends it on
    /// only when a second delivery is harmless ([`replayable`]); a request that is not goes to
    /// the active node only ([`HttpVault::round_on_active`]). When no node could serve it,
    /// the round is repeated with backoff for up to [`FAILOVER_BUDGET`]. With one node, its
    /// answer or error is returned as it is.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&Token>,
        body: Option<&Value>,
    ) -> Result<Option<Reply>, VaultError> {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut failures = match self.round(&method, path, token, body).await {
                Ok(result) => return result,
                Err(failures) => failures,
            };
            if self.nodes.len() == 1 {
                return Err(failures.pop().expect("one node tried").1);
            }
            let left = self.failover_budget.saturating_sub(started.elapsed());
            if left.is_zero() {
                let nodes = failures
                    .iter()
                    .map(|(i, e)| {
                        format!("{}: {}", self.nodes[*i].address, crate::report::chain(e))
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                let nodes = crate::report::one_line(&nodes, 600);
                return Err(VaultError::NoNode {
                    path: path.to_owned(),
                    nodes,
                    waited: started.elapsed(),
                });
            }
            // The last pause ends at the budget, for one more round then.
            let jitter = Duration::from_millis(fastrand::u64(0..=backoff.as_millis() as u64 / 2));
            let pause = (backoff + jitter).min(left);
            tracing::debug!(path, retry_in = ?pause, "no vault node could serve the request");
            tokio::time::sleep(pause).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// The nodes in the order they are tried: the one that answered last, then the others in
    /// the configured order.
    fn order(&self) -> VecDeque<usize> {
        let first = self.preferred.load(Ordering::Relaxed) % self.nodes.len();
        std::iter::once(first).chain((0..self.nodes.len()).filter(|i| *i != first)).collect()
    }

    /// One round over the nodes: `Ok` with the first node's answer that settles the request
    /// (a success, or an error every node would give), `Err` with each node's failure when
    /// none could serve it.
    async fn round(
        &self,
        method: &Method,
        path: &str,
        token: Option<&Token>,
        body: Option<&Value>,
    ) -> Result<Result<Option<Reply>, VaultError>, Vec<(usize, VaultError)>> {
        if self.nodes.len() > 1 && !replayable(path) {
            return self.round_on_active(method, path, token, body).await;
        }
        let mut queue = self.order();
        let mut failures = Vec::new();
        while let Some(i) = queue.pop_front() {
            match self.attempt(&self.nodes[i], method.clone(), path, token, body).await {
                Attempt::Answered(result) => {
                    self.preferred.store(i, Ordering::Relaxed);
                    return Ok(result);
                }
                Attempt::NotSent(e) => failures.push((i, e)),
                Attempt::Broken(e) if replayable(path) => failures.push((i, e)),
                Attempt::Broken(e) => return Ok(Err(e)),
                Attempt::CannotServe { error, location } => {
                    if let Some(j) = location.and_then(|l| self.node_at(&l)) {
                        if let Some(k) = queue.iter().position(|q| *q == j) {
                            queue.remove(k);
                            queue.push_front(j);
                        }
                    }
                    failures.push((i, error));
                }
            }
        }
        Err(failures)
    }

    /// A round for a request that must not be sent twice ([`replayable`]): to the active node
    /// only. A standby would forward it, and during an election its forward fails by dropping
    /// the connection, which cannot be told from a request served and its reply lost; the
    /// active node is found with `sys/health` (unauthenticated) and remembered until it fails.
    async fn round_on_active(
        &self,
        method: &Method,
        path: &str,
        token: Option<&Token>,
        body: Option<&Value>,
    ) -> Result<Result<Option<Reply>, VaultError>, Vec<(usize, VaultError)>> {
        let i = match self.active.load(Ordering::Relaxed) {
            0 => self.find_active().await?,
            known => known - 1,
        };
        match self.attempt(&self.nodes[i], method.clone(), path, token, body).await {
            Attempt::Answered(result) => {
                self.preferred.store(i, Ordering::Relaxed);
                Ok(result)
            }
            // It may have been served: not sent again; the next request looks for the active
            // node anew.
            Attempt::Broken(e) => {
                self.active.store(0, Ordering::Relaxed);
                Ok(Err(e))
            }
            // It is gone, sealed or no longer active: the request did not go beyond it.
            Attempt::NotSent(e) | Attempt::CannotServe { error: e, .. } => {
                self.active.store(0, Ordering::Relaxed);
                Err(vec![(i, e)])
            }
        }
    }

    /// Asks every node's `sys/health` at once: the active one, remembered; else what each said.
    async fn find_active(&self) -> Result<usize, Vec<(usize, VaultError)>> {
        let probes = self.nodes.iter().map(|node| self.probe(node));
        let answers = futures_util::future::join_all(probes).await;
        if let Some(i) = answers.iter().position(|a| matches!(a, Ok(200))) {
            self.active.store(i + 1, Ordering::Relaxed);
            return Ok(i);
        }
        Err(answers
            .into_iter()
            .enumerate()
            .map(|(i, answer)| {
                let e = answer.map_or_else(
                    |e| e,
                    |status| VaultError::Status {
                        path: "sys/health".into(),
                        status,
                        message: format!(
                            "the node is {}, not active",
                            NodeState::of_status(status)
                        ),
                    },
                );
                (i, e)
            })
            .collect())
    }

    /// `sys/health` of one node (no token, no `standbyok`): its status code.
    async fn probe(&self, node: &Node) -> Result<u16, VaultError> {
        let url = Self::url(node, "sys/health").expect("a fixed path");
        match self.http().get(url).send().await {
            Ok(response) => Ok(response.status().as_u16()),
            Err(e) => Err(self.transport_error(node, "sys/health", e)),
        }
    }

    /// The configured node a redirect's `Location` points at, if any.
    fn node_at(&self, location: &str) -> Option<usize> {
        let url = reqwest::Url::parse(location).ok()?;
        self.nodes.iter().position(|n| n.base.origin() == url.origin())
    }

    /// Sends the request to one node.
    async fn attempt(
        &self,
        node: &Node,
        method: Method,
        path: &str,
        token: Option<&Token>,
        body: Option<&Value>,
    ) -> Attempt {
        let url = match Self::url(node, path) {
            Ok(url) => url,
            Err(e) => return Attempt::Answered(Err(e)),
        };
        let op = crate::metrics::vault_op(method.as_str(), path.split('?').next().unwrap_or(path));
        let mut request = self.http().request(method, url);
        if let Some(token) = token {
            request = request.header("X-Vault-Token", token.expose());
        }
        let namespace = self.namespace_of(token);
        if let Some(ns) = namespace {
            request = request.header("X-Vault-Namespace", ns);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let started = Instant::now();
        let response = request.send().await;
        crate::metrics::METRICS.observe_vault(op, started.elapsed());
        if response.is_err() {
            crate::metrics::METRICS.vault_unanswered(op);
        }
        let response = match response {
            Ok(response) => response,
            // No connection: the request did not reach the node.
            Err(e) if e.is_connect() => {
                return Attempt::NotSent(self.transport_error(node, path, e))
            }
            Err(e) => return Attempt::Broken(self.transport_error(node, path, e)),
        };
        let status = response.status();
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(str::to_owned);
        let body = match self.read_body(node, path, response).await {
            Ok(body) => body,
            Err(e @ VaultError::TooLarge { .. }) => return Attempt::Answered(Err(e)),
            Err(e) => return Attempt::Broken(e),
        };
        let error = || VaultError::Status {
            path: path.to_owned(),
            status: status.as_u16(),
            message: error_messages(&body),
        };
        match status {
            s if s.is_redirection() => {
                let error = VaultError::Status {
                    path: path.to_owned(),
                    status: s.as_u16(),
                    message: redirect_message(&node.address, location.as_deref(), self.nodes.len()),
                };
                Attempt::CannotServe { error, location }
            }
            // Sealed, or a standby without a leader to forward to (an election).
            StatusCode::SERVICE_UNAVAILABLE => {
                Attempt::CannotServe { error: error(), location: None }
            }
            StatusCode::NOT_FOUND if crate::namespace::not_found(&error_messages(&body)) => {
                Attempt::Answered(Err(VaultError::NoNamespace {
                    namespace: namespace.unwrap_or_default().to_owned(),
                    path: path.to_owned(),
                }))
            }
            s => {
                Attempt::Answered(parse_reply(path, s, &body).map_err(|e| e.unwrap_or_else(error)))
            }
        }
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

    async fn read_body(
        &self,
        node: &Node,
        path: &str,
        response: reqwest::Response,
    ) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        if response.content_length().is_some_and(|n| n > MAX_REPLY as u64) {
            return Err(VaultError::TooLarge { path: path.to_owned(), limit: MAX_REPLY });
        }
        let mut body = Zeroizing::new(Vec::with_capacity(
            response.content_length().unwrap_or(1024).min(MAX_REPLY as u64) as usize,
        ));
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.transport_error(node, path, e))?;
            if body.len() + chunk.len() > MAX_REPLY {
                return Err(VaultError::TooLarge { path: path.to_owned(), limit: MAX_REPLY });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// A call whose reply must carry `auth` (login, token create, unwrap of a token).
    pub(crate) async fn call_auth(
        &self,
        path: &str,
        token: Option<&Token>,
        body: &Value,
    ) -> Result<IssuedToken, VaultError> {
        let reply = self.call(Method::POST, path, token, Some(body)).await?;
        let mut issued = reply
            .and_then(|r| r.auth)
            .filter(|a| !a.client_token.is_empty())
            .map(AuthReply::into_issued)
            .ok_or_else(|| VaultError::BadReply {
                path: path.to_owned(),
                message: "no auth.client_token in the reply".into(),
            })?;
        // A token made in a volume's namespace belongs there.
        let namespace = token.and_then(Token::namespace).or(self.scope.as_ref());
        issued.token = issued.token.in_namespace(namespace);
        Ok(issued)
    }
}

/// What one node did with a request.
enum Attempt {
    /// It answered, and that answer settles the request.
    Answered(Result<Option<Reply>, VaultError>),
    /// No connection could be made: the request never left.
    NotSent(VaultError),
    /// The connection broke or timed out after the request went out: it may have been served.
    Broken(VaultError),
    /// It answered that it cannot serve the request (sealed, no leader, a redirect).
    CannotServe { error: VaultError, location: Option<String> },
}

/// Whether a request that may have been served already can be sent again (to the next node)
/// without harm. Not so for what creates a token nobody else knows of — `auth/token/create`,
/// any `auth/…/login`, and `sys/wrapping/unwrap` (one use only): sent twice, the first token
/// would live out its TTL unrevoked. Everything else the plugin sends is harmless twice:
/// reads; renewals; `revoke-self` (a second one finds the token gone, which counts as
/// revoked); and a source's read, with or without `param.*`: what it creates (a lease, a
/// certificate) belongs to the mount's token and goes with it, or was only in the lost reply.
pub fn replayable(path: &str) -> bool {
    let path = path.split('?').next().unwrap_or(path);
    let login = path.starts_with("auth/") && path.split('/').any(|s| s == "login");
    !(login || path.starts_with("auth/token/create") || path == "sys/wrapping/unwrap")
}

/// A node's answer as the result of the request: the parsed reply for a success; `Err(None)`
/// for a status that is only a status (the caller names it).
fn parse_reply(
    path: &str,
    status: StatusCode,
    body: &[u8],
) -> Result<Option<Reply>, Option<VaultError>> {
    match status {
        StatusCode::NO_CONTENT => Ok(None),
        s if s.is_success() => {
            if body.is_empty() {
                return Ok(None);
            }
            serde_json::from_slice(body).map(Some).map_err(|e| {
                Some(VaultError::BadReply {
                    path: path.to_owned(),
                    // Position and kind only: serde's text can quote a value of the reply.
                    message: format!(
                        "not a Vault JSON reply ({:?} error at line {} column {})",
                        e.classify(),
                        e.line(),
                        e.column()
                    ),
                })
            })
        }
        StatusCode::FORBIDDEN => Err(Some(VaultError::Denied { path: path.to_owned() })),
        StatusCode::NOT_FOUND => Err(Some(VaultError::NotFound { path: path.to_owned() })),
        _ => Err(None),
    }
}

/// What a redirect means, for its error: where it pointed (the origin only), and that it is not
/// followed.
fn redirect_message(from: &str, location: Option<&str>, nodes: usize) -> String {
    let target = location
        .and_then(|l| reqwest::Url::parse(l).ok())
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|| "no usable Location".into());
    let advice = if nodes == 1 { "; list the cluster's nodes in vault.address" } else { "" };
    crate::report::one_line(
        &format!(
            "{from} redirects to {target} (a standby that cannot forward the request), not followed: a token goes only to a listed node{advice}"
        ),
        300,
    )
}

/// Vault's `{"errors": [...]}`, joined and bounded; never the raw body.
fn error_messages(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<String>,
    }
    match serde_json::from_slice::<Errors>(body) {
        Ok(e) if !e.errors.is_empty() => crate::report::one_line(&e.errors.join("; "), 300),
        _ => "no error message".to_owned(),
    }
}

/// Turns a read's reply into a [`Secret`]; a KV v2 reply (`data.data` + `data.metadata`) is
/// flattened to its inner data, as Vault Agent users would otherwise write `.Data.data`.
/// Public for the fuzz targets.
pub fn secret_from_reply(path: &str, reply: Option<Reply>) -> Result<Secret, VaultError> {
    let bad =
        |message: &str| VaultError::BadReply { path: path.to_owned(), message: message.to_owned() };
    let reply = reply.ok_or_else(|| bad("the reply is empty"))?;
    // A source is a secret, never a login, a token or a wrapping token: a mount's token (or
    // any other) must not reach a container through its files.
    if reply.auth.is_some() || reply.wrap_info.is_some() {
        return Err(bad("it carries a token (an `auth` or `wrap_info` block); a token is never written into a container"));
    }
    let lease = (!reply.lease_id.is_empty()).then(|| Lease {
        id: reply.lease_id.clone(),
        duration: super::ttl(reply.lease_duration),
        renewable: reply.renewable,
    });
    let mut data = match reply.data {
        Some(Value::Object(map)) => map,
        Some(_) => return Err(bad("`data` is not a JSON object")),
        None => return Err(VaultError::NotFound { path: path.to_owned() }),
    };
    let mut kv_version = None;
    if is_kv2(&data) {
        kv_version = data["metadata"].get("version").and_then(Value::as_u64);
        data = match data.remove("data") {
            Some(Value::Object(inner)) => inner,
            // A deleted or destroyed version reads as `"data": null`.
            _ => return Err(VaultError::NotFound { path: path.to_owned() }),
        };
    }
    Ok(Secret { data, lease, kv_version })
}

fn is_kv2(data: &Map<String, Value>) -> bool {
    data.len() == 2
        && data.get("metadata").is_some_and(|m| m.get("version").is_some())
        && data.contains_key("data")
}

fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs().max(1))
}

impl Vault for HttpVault {
    async fn create_child_token(
        &self,
        parent: &Token,
        request: &ChildTokenRequest,
    ) -> Result<IssuedToken, VaultError> {
        let meta: Map<String, Value> =
            request.meta.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
        let mut body = json!({
            "ttl": secs(request.ttl),
            "display_name": request.display_name,
            "renewable": true,
            "meta": meta,
        });
        if let Some(policies) = &request.policies {
            body["policies"] = json!(policies);
        }
        self.call_auth("auth/token/create", Some(parent), &body).await
    }

    async fn read(&self, token: &Token, source: &Source) -> Result<Secret, VaultError> {
        let reply = if source.params.is_empty() {
            self.call(Method::GET, &source.path, Some(token), None).await?
        } else {
            let body = Value::Object(
                source.params.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect(),
            );
            self.call(Method::POST, &source.path, Some(token), Some(&body)).await?
        };
        let secret = secret_from_reply(&source.path, reply)?;
        if secret.data.values().any(|v| super::holds(v, token.expose())) {
            // `auth/token/lookup-self` and the like, reached some other way (a namespace prefix).
            return Err(VaultError::BadReply {
                path: source.path.clone(),
                message:
                    "it holds the mount's own token; a token is never written into a container"
                        .into(),
            });
        }
        Ok(secret)
    }

    async fn revoke_certificate(
        &self,
        token: &Token,
        certificate: &super::pki::Issued,
    ) -> Result<(), VaultError> {
        self.revoke_serial(token, certificate).await
    }

    async fn revoke_self(&self, token: &Token) -> Result<(), VaultError> {
        self.call(Method::POST, "auth/token/revoke-self", Some(token), None).await.map(drop)
    }

    async fn renew_self(&self, token: &Token, increment: Duration) -> Result<Duration, VaultError> {
        let body = json!({ "increment": secs(increment) });
        let issued = self.call_auth("auth/token/renew-self", Some(token), &body).await?;
        Ok(issued.ttl)
    }

    async fn renew_lease(
        &self,
        token: &Token,
        lease_id: &str,
        increment: Duration,
    ) -> Result<Duration, VaultError> {
        let path = "sys/leases/renew";
        let body = json!({ "lease_id": lease_id, "increment": increment.as_secs() });
        let reply = self.call(Method::PUT, path, Some(token), Some(&body)).await?;
        match reply {
            Some(r) if r.lease_id == lease_id => Ok(super::ttl(r.lease_duration)),
            _ => Err(VaultError::BadReply {
                path: path.to_owned(),
                message: "the reply does not carry the renewed lease".into(),
            }),
        }
    }

    async fn lookup_self(&self, token: &Token) -> Result<TokenInfo, VaultError> {
        let path = "auth/token/lookup-self";
        let data = self.call(Method::GET, path, Some(token), None).await?.and_then(|r| r.data);
        let data = data
            .ok_or_else(|| VaultError::BadReply { path: path.into(), message: "no data".into() })?;
        let policies = data.get("policies").and_then(Value::as_array).ok_or_else(|| {
            VaultError::BadReply { path: path.into(), message: "no data.policies".into() }
        })?;
        Ok(TokenInfo {
            ttl: super::ttl(data.get("ttl").and_then(Value::as_u64).unwrap_or(0)),
            renewable: data.get("renewable").and_then(Value::as_bool).unwrap_or(false),
            policies: policies.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        })
    }

    async fn capabilities_self(
        &self,
        token: &Token,
        path: &str,
    ) -> Result<Vec<String>, VaultError> {
        let call = "sys/capabilities-self";
        let body = json!({ "paths": [path] });
        let data =
            self.call(Method::POST, call, Some(token), Some(&body)).await?.and_then(|r| r.data);
        let list = data.as_ref().and_then(|d| d.get(path).or_else(|| d.get("capabilities")));
        list.and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .ok_or_else(|| VaultError::BadReply {
                path: call.into(),
                message: format!("no data.{path}"),
            })
    }

    async fn health(&self) -> Result<(), VaultError> {
        self.call(Method::GET, "sys/health?standbyok=true&perfstandbyok=true", None, None)
            .await
            .map(drop)
    }

    async fn nodes(&self) -> Vec<NodeHealth> {
        let probes = self.nodes.iter().map(|node| async move {
            let state = match self.probe(node).await {
                Ok(status) => NodeState::of_status(status),
                Err(e) => {
                    NodeState::Unreachable(crate::report::one_line(&crate::report::chain(&e), 200))
                }
            };
            NodeHealth { address: node.address.clone(), state }
        });
        futures_util::future::join_all(probes).await
    }

    async fn wrapping_creation_path(&self, wrapping: &Token) -> Result<String, VaultError> {
        let path = "sys/wrapping/lookup";
        let body = json!({ "token": wrapping.expose() });
        let scoped = self.in_namespace(wrapping.namespace());
        let data = scoped.call(Method::POST, path, None, Some(&body)).await?.and_then(|r| r.data);
        data.as_ref()
            .and_then(|d| d.get("creation_path"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| VaultError::BadReply {
                path: path.into(),
                message: "no data.creation_path".into(),
            })
    }

    async fn unwrap(&self, wrapping: &Token) -> Result<Unwrapped, VaultError> {
        let path = "sys/wrapping/unwrap";
        let reply = self.call(Method::POST, path, Some(wrapping), None).await?;
        let bad =
            |message: &str| VaultError::BadReply { path: path.into(), message: message.into() };
        let reply = reply.ok_or_else(|| bad("the reply is empty"))?;
        if let Some(auth) = reply.auth.filter(|a| !a.client_token.is_empty()) {
            let mut issued = auth.into_issued();
            issued.token = issued.token.in_namespace(wrapping.namespace());
            return Ok(Unwrapped::Token(issued));
        }
        let mut data = reply.data.ok_or_else(|| bad("it wrapped neither a token nor data"))?;
        let secret_id = data
            .get("secret_id")
            .and_then(Value::as_str)
            .map(|s| Token::new(s.to_owned()).in_namespace(wrapping.namespace()));
        super::wipe(&mut data);
        secret_id
            .map(Unwrapped::SecretId)
            .ok_or_else(|| bad("it wrapped neither a token nor a secret_id"))
    }

    async fn approle_login(
        &self,
        role_id: &str,
        secret_id: &Token,
    ) -> Result<IssuedToken, VaultError> {
        let mut body = json!({ "role_id": role_id, "secret_id": secret_id.expose() });
        let scoped = self.in_namespace(secret_id.namespace());
        let result = scoped.call_auth("auth/approle/login", None, &body).await;
        super::wipe(&mut body);
        result
    }

    async fn login(&self, login: &Login<'_>) -> Result<IssuedToken, VaultError> {
        let mut body = match login {
            Login::Cert { role: Some(role), .. } => json!({ "name": role }),
            Login::Cert { role: None, .. } => json!({}),
            Login::Jwt { role, jwt, .. } => json!({ "role": role, "jwt": jwt.expose() }),
        };
        let result = match login {
            Login::Cert { .. } => self.cert_login(&login.path(), &body).await,
            Login::Jwt { .. } => self.call_auth(&login.path(), None, &body).await,
        };
        super::wipe(&mut body);
        result
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

#[cfg(test)]
mod tests {
    use super::*;

    fn vault(address: &str) -> HttpVault {
        vault_of(&[address], Duration::from_secs(1))
    }

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

    #[test]
    fn urls_are_built_segment_by_segment_and_never_leave_the_address() {
        let v = vault("http://127.0.0.1:8200");
        let url = |p| HttpVault::url(&v.nodes[0], p).map(|u| u.to_string());
        assert_eq!(url("secret/data/app").unwrap(), "http://127.0.0.1:8200/v1/secret/data/app");
        // What a URL parser would take for another host stays a path below /v1/ of this one.
        for hostile in [
            "http:127.0.0.1:18999/x",
            "https:evil.example/a",
            "//evil.example/a",
            "http://evil.example/a",
        ] {
            match HttpVault::url(&v.nodes[0], hostile) {
                Ok(u) => assert_eq!(u.origin(), v.nodes[0].base.origin(), "{hostile} -> {u}"),
                Err(e) => assert!(matches!(e, VaultError::BadPath { .. }), "{hostile}: {e}"),
            }
        }
        assert_eq!(
            url("http:127.0.0.1:18999/x").unwrap(),
            "http://127.0.0.1:8200/v1/http:127.0.0.1:18999/x"
        );
        assert!(url("kv/../sys/x").is_err() && url("kv//x").is_err());
        assert_eq!(url("kv/a b%2F").unwrap(), "http://127.0.0.1:8200/v1/kv/a%20b%252F");
        assert_eq!(
            url("sys/health?standbyok=true").unwrap(),
            "http://127.0.0.1:8200/v1/sys/health?standbyok=true"
        );
    }

    #[test]
    fn replies_carrying_a_token_are_refused() {
        for text in [
            r#"{"auth":{"client_token":"hvs.x","accessor":"a","lease_duration":60}}"#,
            r#"{"wrap_info":{"token":"hvs.w","ttl":60}}"#,
        ] {
            let e = secret_from_reply("p/x", reply(text)).unwrap_err().to_string();
            assert!(e.contains("carries a token") && !e.contains("hvs."), "{e}");
        }
    }

    #[test]
    fn hostile_durations_are_bounded() {
        let text = format!(
            r#"{{"lease_id":"db/creds/x/1","renewable":true,"lease_duration":{},"data":{{"a":"b"}}}}"#,
            u64::MAX
        );
        let secret = secret_from_reply("db/creds/x", reply(&text)).unwrap();
        assert_eq!(secret.lease.as_ref().unwrap().duration, crate::vault::MAX_TTL);
    }

    fn reply(text: &str) -> Option<Reply> {
        Some(serde_json::from_str(text).unwrap())
    }

    #[test]
    fn kv2_replies_are_flattened() {
        let r = reply(
            r#"{"lease_id":"","renewable":false,"lease_duration":0,
                "data":{"data":{"password":"p","n":3},"metadata":{"version":7,"created_time":"x"}}}"#,
        );
        let s = secret_from_reply("secret/data/app", r).unwrap();
        assert_eq!(s.data["password"], "p");
        assert_eq!(s.data["n"], 3);
        assert_eq!(s.kv_version, Some(7));
        assert!(s.lease.is_none());
    }

    #[test]
    fn deleted_kv2_version_is_not_found() {
        let r = reply(r#"{"data":{"data":null,"metadata":{"version":2,"deletion_time":"t"}}}"#);
        assert!(matches!(
            secret_from_reply("secret/data/app", r),
            Err(VaultError::NotFound { .. })
        ));
    }

    #[test]
    fn leased_replies_keep_the_lease() {
        let r = reply(
            r#"{"lease_id":"database/creds/app/abc","renewable":true,"lease_duration":3600,
                "data":{"username":"u","password":"p"}}"#,
        );
        let s = secret_from_reply("database/creds/app", r).unwrap();
        let lease = s.lease.clone().unwrap();
        assert_eq!(lease.id, "database/creds/app/abc");
        assert_eq!(lease.duration, Duration::from_secs(3600));
        assert!(lease.renewable);
        assert!(!format!("{s:?}").contains("\"p\""));
    }

    #[test]
    fn hostile_replies_are_refused() {
        assert!(secret_from_reply("kv/a", None).is_err());
        assert!(secret_from_reply("kv/a", reply(r#"{"data":[1,2]}"#)).is_err());
        assert!(serde_json::from_str::<Reply>(r#"{"lease_duration":"soon"}"#).is_err());
    }

    #[test]
    fn error_messages_are_bounded_and_single_line() {
        let long = format!(r#"{{"errors":["{}"]}}"#, "x".repeat(1000));
        assert!(error_messages(long.as_bytes()).len() < 310);
        assert_eq!(error_messages(b"<html>"), "no error message");
        assert_eq!(error_messages(br#"{"errors":["a\nb","c"]}"#), "a b; c");
    }

    #[test]
    fn token_debug_is_redacted() {
        let t = Token::new("hvs.very-secret".into());
        assert_eq!(format!("{t:?}"), "Token(***)");
    }

    /// A loopback HTTP server answering every request with what `answer` says (`None`: hang up
    /// after reading the request), counting the requests by their first line.
    struct Node {
        address: String,
        requests: Arc<std::sync::Mutex<Vec<String>>>,
    }

    impl Node {
        fn start(answer: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> Node {
            use std::io::{Read, Write};
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let address = format!("http://{}", listener.local_addr().unwrap());
            let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
            let (seen, answer) = (requests.clone(), Arc::new(answer));
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    let (Ok(mut conn), seen, answer) = (conn, seen.clone(), answer.clone()) else {
                        continue;
                    };
                    std::thread::spawn(move || {
                        let mut head = Vec::new();
                        let mut buf = [0u8; 4096];
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                            match conn.read(&mut buf) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                        }
                        let text = String::from_utf8_lossy(&head).into_owned();
                        let line = text.lines().next().unwrap_or("").to_owned();
                        seen.lock().unwrap().push(line.clone());
                        if let Some(reply) = answer(&line) {
                            let _ = conn.write_all(reply.as_bytes());
                        }
                    });
                }
            });
            Node { address, requests }
        }

        fn requests(&self) -> Vec<String> {
            self.requests.lock().unwrap().clone()
        }
    }

    fn answer(status: &str, headers: &str, body: &str) -> Option<String> {
        Some(format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n{body}",
            body.len()
        ))
    }

    fn ok(_: &str) -> Option<String> {
        answer("200 OK", "", r#"{"data":{"password":"p"}}"#)
    }

    fn sealed(_: &str) -> Option<String> {
        answer("503 Service Unavailable", "", r#"{"errors":["Vault is sealed"]}"#)
    }

    /// An address nothing listens on (connection refused).
    fn refused() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    }

    fn source() -> Source {
        Source { dir: None, path: "secret/data/app".into(), params: Default::default() }
    }

    fn token() -> Token {
        Token::new("hvs.test".into())
    }

    const READ: &str = "GET /v1/secret/data/app HTTP/1.1";

    #[tokio::test]
    async fn refused_and_sealed_nodes_are_passed_over_and_the_node_that_answered_goes_first() {
        let (down, sealed, good) = (refused(), Node::start(sealed), Node::start(ok));
        let v = vault_of(&[&down, &sealed.address, &good.address], Duration::from_secs(2));
        let secret = v.read(&token(), &source()).await.unwrap();
        assert_eq!(secret.data["password"], "p");
        assert_eq!(sealed.requests(), [READ]);
        assert_eq!(good.requests(), [READ]);
        v.clone().read(&token(), &source()).await.unwrap();
        assert_eq!(sealed.requests(), [READ], "the node that answered last is tried first");
        assert_eq!(good.requests(), [READ, READ]);
    }

    #[tokio::test]
    async fn a_redirect_to_a_configured_node_goes_there_next_and_one_elsewhere_is_never_followed() {
        let (skipped, target) = (Node::start(ok), Node::start(ok));
        let location = format!("Location: {}/v1/secret/data/app\r\n", target.address);
        let standby = Node::start(move |_| answer("307 Temporary Redirect", &location, ""));
        let v = vault_of(
            &[&standby.address, &skipped.address, &target.address],
            Duration::from_secs(2),
        );
        v.read(&token(), &source()).await.unwrap();
        assert_eq!((standby.requests().len(), target.requests().len()), (1, 1));
        assert!(skipped.requests().is_empty(), "the redirect's node is tried next");

        let elsewhere = Node::start(ok);
        let location = format!("Location: {}/v1/secret/data/app\r\n", elsewhere.address);
        let standby = Node::start(move |_| answer("307 Temporary Redirect", &location, ""));
        let good = Node::start(ok);
        let v = vault_of(&[&standby.address, &good.address], Duration::from_secs(2));
        v.read(&token(), &source()).await.unwrap();
        assert_eq!(good.requests(), [READ]);
        assert!(elsewhere.requests().is_empty(), "followed: {:?}", elsewhere.requests());
        let v = vault_of(&[&standby.address], Duration::from_secs(2));
        let e = v.read(&token(), &source()).await.unwrap_err();
        assert!(matches!(e, VaultError::Status { status: 307, .. }), "{e:?}");
        let text = e.to_string();
        let redirect = format!("{} redirects to {}", standby.address, elsewhere.address);
        assert!(text.contains(&redirect), "{text}");
        assert!(text.contains("not followed") && text.contains("vault.address"), "{text}");
        assert!(elsewhere.requests().is_empty(), "followed: {:?}", elsewhere.requests());
    }

    const CREATE: &str = "POST /v1/auth/token/create HTTP/1.1";

    fn create_request() -> ChildTokenRequest {
        ChildTokenRequest {
            policies: None,
            ttl: Duration::from_secs(60),
            display_name: "x".into(),
            meta: Vec::new(),
        }
    }

    /// A node that says it is active (or a standby) and hangs up on everything else.
    fn hanging_up(health: &'static str) -> Node {
        Node::start(move |l| l.contains("sys/health").then(|| answer(health, "", "{}")).flatten())
    }

    #[tokio::test]
    async fn a_connection_broken_after_sending_replays_a_read_but_never_a_token_create() {
        let (hangup, good) = (hanging_up("429 Too Many Requests"), Node::start(ok));
        let v = vault_of(&[&hangup.address, &good.address], Duration::from_secs(2));
        v.read(&token(), &source()).await.unwrap();
        assert_eq!(good.requests(), [READ], "a read is sent on");
        // A token create goes to the active node only (found by sys/health): never to a standby,
        // whose failed forward would look the same as a reply lost.
        // (`good` answers it without an `auth` block: refused, but it got there.)
        let e = v.create_child_token(&token(), &create_request()).await.unwrap_err();
        assert!(matches!(e, VaultError::BadReply { .. }), "{e:?}");
        assert_eq!(good.requests(), [READ, "GET /v1/sys/health HTTP/1.1", CREATE]);
        assert!(!hangup.requests().contains(&CREATE.to_owned()), "{:?}", hangup.requests());
        // The active node breaking the connection: it may have made the token; not sent again.
        let standby = Node::start(|l| {
            if l.contains("sys/health") {
                answer("429 Too Many Requests", "", "{}")
            } else {
                ok(l)
            }
        });
        let active = hanging_up("200 OK");
        let v = vault_of(&[&standby.address, &active.address], Duration::from_secs(2));
        let e = v.create_child_token(&token(), &create_request()).await.unwrap_err();
        assert!(
            matches!(&e, VaultError::Unreachable { address, .. } if *address == active.address),
            "{e:?}"
        );
        assert_eq!(active.requests().last().unwrap(), CREATE);
        assert!(!standby.requests().contains(&CREATE.to_owned()), "{:?}", standby.requests());
        for (path, again) in [
            ("auth/token/create", false),
            ("auth/token/create-orphan", false),
            ("auth/approle/login", false),
            ("auth/cert/login", false),
            ("auth/jwt/login", false),
            ("sys/wrapping/unwrap", false),
            ("auth/token/revoke-self", true),
            ("auth/token/renew-self", true),
            ("sys/leases/renew", true),
            ("database/creds/app", true),
            ("pki/issue/web", true),
            ("sys/health?standbyok=true", true),
        ] {
            assert_eq!(replayable(path), again, "{path}");
        }
    }

    #[tokio::test]
    async fn a_token_create_waits_for_an_active_node_and_follows_it_when_it_goes() {
        let elected = Instant::now() + Duration::from_millis(800);
        let standby = |_: &str| answer("429 Too Many Requests", "", "{}");
        let electing = Node::start(move |l| {
            if Instant::now() < elected {
                sealed(l)
            } else if l.contains("sys/health") {
                answer("200 OK", "", "{}")
            } else {
                answer("200 OK", "", r#"{"auth":{"client_token":"hvs.child","accessor":"a"}}"#)
            }
        });
        let other = Node::start(standby);
        let v = vault_of(&[&other.address, &electing.address], Duration::from_secs(2));
        let started = Instant::now();
        let issued = v.create_child_token(&token(), &create_request()).await.unwrap();
        assert_eq!(issued.accessor, "a");
        assert!(started.elapsed() >= Duration::from_millis(700), "{:?}", started.elapsed());
        assert!(!other.requests().contains(&CREATE.to_owned()), "{:?}", other.requests());
        let creates = |n: &Node| n.requests().iter().filter(|r| *r == CREATE).count();
        v.create_child_token(&token(), &create_request()).await.unwrap();
        assert_eq!(creates(&electing), 2, "the active node is remembered");
    }

    #[tokio::test]
    async fn an_election_is_waited_out_within_the_budget_and_then_named_node_by_node() {
        let elected = Instant::now() + Duration::from_millis(800);
        let electing =
            Node::start(move |l| if Instant::now() < elected { sealed(l) } else { ok(l) });
        let v = vault_of(&[&refused(), &electing.address], Duration::from_secs(2));
        let started = Instant::now();
        v.read(&token(), &source()).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(700), "{:?}", started.elapsed());
        assert!(electing.requests().len() >= 3, "retried: {:?}", electing.requests());

        let (down, sealed) = (refused(), Node::start(sealed));
        let mut v = vault_of(&[&down, &sealed.address], Duration::from_secs(2));
        v.failover_budget = Duration::from_secs(1);
        let started = Instant::now();
        let e = v.read(&token(), &source()).await.unwrap_err();
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(1) && waited < Duration::from_secs(3), "{waited:?}");
        assert!(e.is_transient());
        let text = e.to_string();
        assert!(text.starts_with("no vault node could serve secret/data/app"), "{text}");
        assert!(text.contains(&format!("{down}: vault at {down} is unreachable")), "{text}");
        assert!(text.contains(&format!("{}: vault answered 503", sealed.address)), "{text}");
        assert!(text.contains("Vault is sealed") && !text.contains("hvs."), "{text}");
    }

    #[tokio::test]
    async fn nodes_reports_each_node_s_state() {
        let standby = Node::start(|_| answer("429 Too Many Requests", "", "{}"));
        let (active, sealed, down) = (Node::start(ok), Node::start(sealed), refused());
        let v = vault_of(
            &[&active.address, &standby.address, &sealed.address, &down],
            Duration::from_secs(2),
        );
        let states: Vec<NodeState> = v.nodes().await.into_iter().map(|n| n.state).collect();
        assert_eq!(&states[..3], [NodeState::Active, NodeState::Standby, NodeState::Sealed]);
        assert!(
            matches!(&states[3], NodeState::Unreachable(why) if why.contains(&down)),
            "{states:?}"
        );
    }
}

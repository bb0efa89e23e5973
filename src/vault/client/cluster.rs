//! Which node a request goes to: the node that answered last first, the others in turn when
//! one cannot serve it, a request that must not be sent twice to the active node only, and
//! rounds repeated with backoff while an election lasts ([`FAILOVER_BUDGET`]).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;

use super::node::Attempt;
use super::{HttpVault, Reply};
use crate::vault::{NodeState, Token, VaultError};

/// How long a request waits, with several nodes, for one of them to serve it: rounds of every
/// node, with backoff, while a leader is being elected or the cluster is out of reach. Below
/// dockerd's two minutes for a Mount, above an election (a few seconds).
pub const FAILOVER_BUDGET: Duration = Duration::from_secs(30);

/// What one round over the nodes came to.
enum Round {
    /// A node's answer that settles the request: a success, or an error every node would give.
    Settled(Result<Option<Reply>, VaultError>),
    /// No node could serve it: each node's failure, with the node's index.
    Unserved(Vec<(usize, VaultError)>),
}

impl HttpVault {
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
                Round::Settled(result) => return result,
                Round::Unserved(failures) => failures,
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

    /// One round over the nodes: the first node's answer that settles the request, or each
    /// node's failure when none could serve it.
    async fn round(
        &self,
        method: &Method,
        path: &str,
        token: Option<&Token>,
        body: Option<&Value>,
    ) -> Round {
        if self.nodes.len() > 1 && !replayable(path) {
            return self.round_on_active(method, path, token, body).await;
        }
        let mut queue = self.order();
        let mut failures = Vec::new();
        while let Some(i) = queue.pop_front() {
            match self.attempt(&self.nodes[i], method.clone(), path, token, body).await {
                Attempt::Answered(result) => {
                    self.preferred.store(i, Ordering::Relaxed);
                    return Round::Settled(result);
                }
                Attempt::NotSent(e) => failures.push((i, e)),
                Attempt::Broken(e) if replayable(path) => failures.push((i, e)),
                Attempt::Broken(e) => return Round::Settled(Err(e)),
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
        Round::Unserved(failures)
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
    ) -> Round {
        let known = *self.active.lock().unwrap();
        let i = match known {
            Some(i) => i,
            None => match self.find_active().await {
                Ok(i) => i,
                Err(failures) => return Round::Unserved(failures),
            },
        };
        match self.attempt(&self.nodes[i], method.clone(), path, token, body).await {
            Attempt::Answered(result) => {
                self.preferred.store(i, Ordering::Relaxed);
                Round::Settled(result)
            }
            // It may have been served: not sent again; the next request looks for the active
            // node anew.
            Attempt::Broken(e) => {
                *self.active.lock().unwrap() = None;
                Round::Settled(Err(e))
            }
            // It is gone, sealed or no longer active: the request did not go beyond it.
            Attempt::NotSent(e) | Attempt::CannotServe { error: e, .. } => {
                *self.active.lock().unwrap() = None;
                Round::Unserved(vec![(i, e)])
            }
        }
    }

    /// Asks every node's `sys/health` at once: the active one, remembered; else what each said.
    async fn find_active(&self) -> Result<usize, Vec<(usize, VaultError)>> {
        let probes = self.nodes.iter().map(|node| self.probe(node));
        let answers = futures_util::future::join_all(probes).await;
        if let Some(i) = answers.iter().position(|a| matches!(a, Ok(200))) {
            *self.active.lock().unwrap() = Some(i);
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

    /// The configured node a redirect's `Location` points at, if any.
    fn node_at(&self, location: &str) -> Option<usize> {
        let url = reqwest::Url::parse(location).ok()?;
        self.nodes.iter().position(|n| n.base.origin() == url.origin())
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::client::vault_of;
    use crate::vault::{ChildTokenRequest, Vault};
    use crate::volume::Source;
    use std::sync::Arc;

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

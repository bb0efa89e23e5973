//! One request to one node: its URL (never leaving the node's address), the request sent with
//! its token and namespace, and what the node did with it ([`Attempt`]), for the cluster's
//! routing to act on.

use std::time::Instant;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::replies::{error_messages, parse_reply};
use super::{HttpVault, Node, Reply};
use crate::vault::{Token, VaultError};

impl HttpVault {
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

    /// `sys/health` of one node (no token, no `standbyok`): its status code.
    pub(super) async fn probe(&self, node: &Node) -> Result<u16, VaultError> {
        let url = Self::url(node, "sys/health").expect("a fixed path");
        match self.http().get(url).send().await {
            Ok(response) => Ok(response.status().as_u16()),
            Err(e) => Err(self.transport_error(node, "sys/health", e)),
        }
    }

    /// Sends the request to one node.
    pub(super) async fn attempt(
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
        let body_len = body.len();
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
                let owned = path.to_owned();
                let answer = move || {
                    parse_reply(&owned, s, &body).map_err(|e| {
                        e.unwrap_or_else(|| VaultError::Status {
                            message: error_messages(&body),
                            status: s.as_u16(),
                            path: owned.clone(),
                        })
                    })
                };
                if body_len <= PARSED_ON_THE_RUNTIME {
                    return Attempt::Answered(answer());
                }
                // A large reply (up to MAX_REPLY, a Vault a user's secret fills) is parsed off
                // the runtime: no other request waits on it.
                Attempt::Answered(tokio::task::spawn_blocking(answer).await.unwrap_or_else(|e| {
                    Err(VaultError::BadReply {
                        path: path.to_owned(),
                        message: format!("parsing the reply failed: {e}"),
                    })
                }))
            }
        }
    }
}

/// The size of a reply parsed on the runtime; larger ones are parsed on a blocking thread (a
/// 1 MiB reply takes milliseconds, and a mount may read 64).
const PARSED_ON_THE_RUNTIME: usize = 64 << 10;

/// What one node did with a request.
pub(super) enum Attempt {
    /// It answered, and that answer settles the request.
    Answered(Result<Option<Reply>, VaultError>),
    /// No connection could be made: the request never left.
    NotSent(VaultError),
    /// The connection broke or timed out after the request went out: it may have been served.
    Broken(VaultError),
    /// It answered that it cannot serve the request (sealed, no leader, a redirect).
    CannotServe { error: VaultError, location: Option<String> },
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::client::vault_of;
    use std::time::Duration;

    fn vault(address: &str) -> HttpVault {
        vault_of(&[address], Duration::from_secs(1))
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
}

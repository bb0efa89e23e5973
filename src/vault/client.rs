//! The HTTP implementation of [`Vault`]: one kept-alive `reqwest` client, strict reply parsing,
//! bounded reply sizes, errors that name the address and the API path.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use zeroize::Zeroizing;

use super::{
    ChildTokenRequest, IssuedToken, Lease, Login, Secret, Token, TokenInfo, Unwrapped, Vault,
    VaultError,
};
use crate::config::VaultConfig;
use crate::volume::Source;

/// The largest reply accepted from Vault: secrets are small; a PEM chain is a few KiB.
pub const MAX_REPLY: usize = 1024 * 1024;

/// Vault over HTTP(S).
#[derive(Clone)]
pub struct HttpVault {
    http: reqwest::Client,
    base: reqwest::Url,
    address: String,
    namespace: Option<String>,
    timeout: Duration,
}

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
        // Every setting is explicit: nothing is taken from VAULT_* variables behind our back.
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("vault-secrets-plugin/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &config.ca_cert {
            let ca_err =
                |message: String| VaultError::CaCert { path: path.display().to_string(), message };
            let pem = std::fs::read(path).map_err(|e| ca_err(e.to_string()))?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_err(e.to_string()))?;
            if certs.is_empty() {
                return Err(ca_err("no PEM certificate in the file".into()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let crate::config::AuthConfig::Cert { client_cert, client_key, .. } = &config.auth {
            // Presented on every connection; only the cert auth method's login reads it.
            builder =
                builder.identity(super::identity::client_certificate(client_cert, client_key)?);
        }
        let address = config.address.as_str().trim_end_matches('/').to_owned();
        Ok(HttpVault {
            http: builder.build().map_err(VaultError::Client)?,
            base: config.address.join("v1/").expect("a validated base URL joins"),
            address,
            namespace: config.namespace.clone(),
            timeout: config.timeout,
        })
    }

    /// The URL of an API path: the configured address and `v1`, then the path's segments
    /// pushed one by one (each percent-encoded where it must be), a `?query` of the plugin's own
    /// kept as the query. Never a `join` of text: no path, whatever it holds, can name another
    /// host, and the origin is checked all the same before any token is sent.
    fn url(&self, path: &str) -> Result<reqwest::Url, VaultError> {
        let bad =
            |message: &str| VaultError::BadPath { path: path.to_owned(), message: message.into() };
        let (segments, query) = path.split_once('?').map_or((path, None), |(p, q)| (p, Some(q)));
        let mut url = self.base.clone();
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
        if url.origin() != self.base.origin() {
            return Err(bad("it does not lead to the configured vault address"));
        }
        Ok(url)
    }

    /// Sends one request and returns the parsed reply (`None` for 204 No Content).
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&Token>,
        body: Option<&Value>,
    ) -> Result<Option<Reply>, VaultError> {
        let url = self.url(path)?;
        let request_method = method.clone();
        let mut request = self.http.request(method, url);
        if let Some(token) = token {
            request = request.header("X-Vault-Token", token.expose());
        }
        if let Some(ns) = &self.namespace {
            request = request.header("X-Vault-Namespace", ns);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let started = std::time::Instant::now();
        let op = crate::metrics::vault_op(
            request_method.as_str(),
            path.split('?').next().unwrap_or(path),
        );
        let response = request.send().await.map_err(|e| self.transport_error(path, e));
        crate::metrics::METRICS.observe_vault(op, started.elapsed());
        let response = response?;
        let status = response.status();
        let body = self.read_body(path, response).await?;
        match status {
            StatusCode::NO_CONTENT => Ok(None),
            s if s.is_success() => {
                if body.is_empty() {
                    return Ok(None);
                }
                serde_json::from_slice(&body).map(Some).map_err(|e| VaultError::BadReply {
                    path: path.to_owned(),
                    // Position and kind only: serde's text can quote a value of the reply.
                    message: format!(
                        "not a Vault JSON reply ({:?} error at line {} column {})",
                        e.classify(),
                        e.line(),
                        e.column()
                    ),
                })
            }
            StatusCode::FORBIDDEN => Err(VaultError::Denied { path: path.to_owned() }),
            StatusCode::NOT_FOUND => Err(VaultError::NotFound { path: path.to_owned() }),
            s => Err(VaultError::Status {
                path: path.to_owned(),
                status: s.as_u16(),
                message: error_messages(&body),
            }),
        }
    }

    fn transport_error(&self, path: &str, e: reqwest::Error) -> VaultError {
        if e.is_timeout() {
            VaultError::Timeout {
                address: self.address.clone(),
                path: path.to_owned(),
                timeout: self.timeout,
            }
        } else {
            VaultError::Unreachable { address: self.address.clone(), source: e }
        }
    }

    async fn read_body(
        &self,
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
            let chunk = chunk.map_err(|e| self.transport_error(path, e))?;
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
        reply
            .and_then(|r| r.auth)
            .filter(|a| !a.client_token.is_empty())
            .map(AuthReply::into_issued)
            .ok_or_else(|| VaultError::BadReply {
                path: path.to_owned(),
                message: "no auth.client_token in the reply".into(),
            })
    }
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

    async fn wrapping_creation_path(&self, wrapping: &Token) -> Result<String, VaultError> {
        let path = "sys/wrapping/lookup";
        let body = json!({ "token": wrapping.expose() });
        let data = self.call(Method::POST, path, None, Some(&body)).await?.and_then(|r| r.data);
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
            return Ok(Unwrapped::Token(auth.into_issued()));
        }
        let mut data = reply.data.ok_or_else(|| bad("it wrapped neither a token nor data"))?;
        let secret_id =
            data.get("secret_id").and_then(Value::as_str).map(|s| Token::new(s.to_owned()));
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
        let result = self.call_auth("auth/approle/login", None, &body).await;
        super::wipe(&mut body);
        result
    }

    async fn login(&self, login: &Login<'_>) -> Result<IssuedToken, VaultError> {
        let mut body = match login {
            Login::Cert { role: Some(role), .. } => json!({ "name": role }),
            Login::Cert { role: None, .. } => json!({}),
            Login::Jwt { role, jwt, .. } => json!({ "role": role, "jwt": jwt.expose() }),
        };
        let result = self.call_auth(&login.path(), None, &body).await;
        super::wipe(&mut body);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault(address: &str) -> HttpVault {
        let config = VaultConfig {
            address: crate::config::parse_vault_address("vault.address", address).unwrap(),
            ca_cert: None,
            namespace: None,
            timeout: Duration::from_secs(1),
            auth: crate::config::AuthConfig::Token { token_file: "/nonexistent".into() },
        };
        HttpVault::new(&config).unwrap()
    }

    #[test]
    fn urls_are_built_segment_by_segment_and_never_leave_the_address() {
        let v = vault("http://127.0.0.1:8200");
        let url = |p| v.url(p).map(|u| u.to_string());
        assert_eq!(url("secret/data/app").unwrap(), "http://127.0.0.1:8200/v1/secret/data/app");
        // What a URL parser would take for another host stays a path below /v1/ of this one.
        for hostile in [
            "http:127.0.0.1:18999/x",
            "https:evil.example/a",
            "//evil.example/a",
            "http://evil.example/a",
        ] {
            match v.url(hostile) {
                Ok(u) => assert_eq!(u.origin(), v.base.origin(), "{hostile} -> {u}"),
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
}

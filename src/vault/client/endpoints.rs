//! The [`Vault`] operations over HTTP: tokens (create, renew, revoke, look up), reads of
//! sources, leases, capabilities, health, wrapping, logins.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Map, Value};

use super::{secret_from_reply, AuthReply, HttpVault};
use crate::vault::{
    ChildTokenRequest, IssuedToken, Login, NodeHealth, NodeState, Secret, Token, TokenInfo,
    Unwrapped, Vault, VaultError,
};
use crate::volume::Source;

impl HttpVault {
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
        if secret.data.values().any(|v| crate::vault::holds(v, token.expose())) {
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
        certificate: &crate::vault::pki::Issued,
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
            Some(r) if r.lease_id == lease_id => Ok(crate::vault::ttl(r.lease_duration)),
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
            ttl: crate::vault::ttl(data.get("ttl").and_then(Value::as_u64).unwrap_or(0)),
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
        crate::vault::wipe(&mut data);
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
        crate::vault::wipe(&mut body);
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
        crate::vault::wipe(&mut body);
        result
    }
}

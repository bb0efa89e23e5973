//! Vault's replies turned into typed values: the reply's parts the plugin reads, a node's
//! answer as the request's result, a read as a [`Secret`]; every reply bounded in size
//! ([`MAX_REPLY`]) and never quoted in an error.

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::{HttpVault, Node};
use crate::vault::{IssuedToken, Lease, Secret, Token, VaultError};

/// The largest reply accepted from Vault: secrets are small; a PEM chain is a few KiB.
pub const MAX_REPLY: usize = 1024 * 1024;

/// The most JSON values (an object's member counts once) a reply may hold. A secret holds a few
/// dozen, a PKI issue a few more, a JSON document kept as a KV value some thousands; without a
/// bound a 1 MiB reply of `[0,0,…]` parses into half a million values, 16 MiB held, and a volume
/// of 64 such sources made one Mount hold a gigabyte. Bounded, a reply's parsed form stays
/// within about five times its size.
pub const MAX_REPLY_VALUES: usize = 64 * 1024;

/// Whether `body` holds more than `limit` JSON values, counted without parsing it: every `,`,
/// `[` and `{` outside a string begins one more (an object's member counts once, its key with
/// its value; an empty array or object counts like a value).
fn values_over(body: &[u8], limit: usize) -> bool {
    let (mut values, mut in_string, mut escaped) = (1usize, false, false);
    for &b in body {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b',' | b'[' | b'{' => {
                values += 1;
                if values > limit {
                    return true;
                }
            }
            _ => {}
        }
    }
    false
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
            ttl: crate::vault::ttl(self.lease_duration),
            renewable: self.renewable,
        }
    }
}

impl HttpVault {
    pub(super) async fn read_body(
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
}

/// A node's answer as the result of the request: the parsed reply for a success; `Err(None)`
/// for a status that is only a status (the caller names it).
pub(super) fn parse_reply(
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
            if values_over(body, MAX_REPLY_VALUES) {
                return Err(Some(VaultError::BadReply {
                    path: path.to_owned(),
                    message: format!(
                        "it holds more than {MAX_REPLY_VALUES} JSON values (a secret holds a few dozen)"
                    ),
                }));
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

/// Vault's `{"errors": [...]}`, joined and bounded; never the raw body.
pub(super) fn error_messages(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<String>,
    }
    if values_over(body, MAX_REPLY_VALUES) {
        return "an error reply of too many JSON values, not read".to_owned();
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
        duration: crate::vault::ttl(reply.lease_duration),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
    fn a_reply_of_too_many_values_is_refused_before_it_is_parsed() {
        let ok = StatusCode::OK;
        // 64 Ki values parse; one more is refused, however few bytes each takes.
        let at = format!(r#"{{"data":{{"a":[{}]}}}}"#, vec!["0"; MAX_REPLY_VALUES - 3].join(","));
        assert!(parse_reply("kv/a", ok, at.as_bytes()).unwrap().is_some());
        let over = format!(r#"{{"data":{{"a":[{}]}}}}"#, vec!["0"; MAX_REPLY_VALUES - 2].join(","));
        let e = parse_reply("kv/a", ok, over.as_bytes()).err().flatten().unwrap().to_string();
        assert!(e.contains("more than 65536 JSON values") && e.contains("kv/a"), "{e}");
        // Commas and brackets inside strings (escaped quotes too) are not values.
        let text = format!(r#"{{"data":{{"a":"{}\",[{{"}}}}"#, ",[{".repeat(MAX_REPLY_VALUES));
        assert!(!values_over(text.as_bytes(), 10), "{}", &text[..40]);
        assert!(parse_reply("kv/a", ok, text.as_bytes()).unwrap().is_some());
        // A PKI issue's reply is far below.
        let pem = "-----BEGIN CERTIFICATE-----\\nMIIB\\n-----END CERTIFICATE-----";
        let pki = format!(
            r#"{{"data":{{"certificate":"{pem}","ca_chain":["{pem}","{pem}"],"serial_number":"1a:2b"}}}}"#
        );
        assert!(!values_over(pki.as_bytes(), 10));
    }

    #[test]
    fn error_messages_are_bounded_and_single_line() {
        let long = format!(r#"{{"errors":["{}"]}}"#, "x".repeat(1000));
        assert!(error_messages(long.as_bytes()).len() < 310);
        assert_eq!(error_messages(b"<html>"), "no error message");
        assert_eq!(error_messages(br#"{"errors":["a\nb","c"]}"#), "a b; c");
        let many = format!(r#"{{"errors":[{}]}}"#, vec![r#""""#; MAX_REPLY_VALUES].join(","));
        assert_eq!(
            error_messages(many.as_bytes()),
            "an error reply of too many JSON values, not read"
        );
    }
}

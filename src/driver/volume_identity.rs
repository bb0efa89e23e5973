//! Volumes with an identity of their own, so the plugin itself needs no read access to anyone's
//! secrets: a `wrapped-token` unwrapped exactly once at create, holding either a token (each
//! mount gets a child token of it) or, with `role-id`, an AppRole secret_id (each mount logs
//! in for a token of its own).
//!
//! Before unwrapping, the wrapping token is looked up and refused unless a token create or an
//! AppRole secret-id made it (a substituted token would hand its maker's identity to the
//! volume). The identity lives in memory and the private tmpfs only (SPEC "Restart"); its
//! token is renewed by the lease manager as its own job ([`crate::lease::Job::Identity`]).

use super::{jitter, Driver, DriverError, Edges, Volume};
use crate::lease::plan;
use crate::lease::plan::Deadline;
use crate::state::{Holder, VolumeIdentityRecord};
use crate::vault::Unwrapped;
use crate::vault::Vault;
use crate::vault::{IssuedToken, Token, VaultError};
use crate::volume::IdentityKind;
use crate::volume::{OptionError, VolumeSpec};
use std::time::Duration;
use tokio::time::Instant;

/// A volume's own identity, in memory.
#[derive(Debug, Clone)]
pub(super) enum OwnIdentity {
    Token { issued: IssuedToken, renew_at: Instant },
    AppRole { role_id: String, secret_id: Token },
}

/// The identity and the wrapping token it came from (to recognise a repeated Create).
#[derive(Debug, Clone)]
pub(super) struct Own {
    pub identity: OwnIdentity,
    pub wrapping: Token,
}

impl Own {
    pub(super) fn record(&self, volume: &str) -> VolumeIdentityRecord {
        let (token, accessor, role_id, secret_id) = match &self.identity {
            OwnIdentity::Token { issued, .. } => {
                (Some(issued.token.clone()), Some(issued.accessor.clone()), None, None)
            }
            OwnIdentity::AppRole { role_id, secret_id } => {
                (None, None, Some(role_id.clone()), Some(secret_id.clone()))
            }
        };
        VolumeIdentityRecord {
            volume: volume.to_owned(),
            token,
            accessor,
            role_id,
            secret_id,
            wrapping: self.wrapping.clone(),
        }
    }

    pub(super) fn from_record(record: &VolumeIdentityRecord) -> Option<Own> {
        let identity = match (&record.token, &record.role_id, &record.secret_id) {
            (Some(token), _, _) => OwnIdentity::Token {
                issued: IssuedToken {
                    token: token.clone(),
                    accessor: record.accessor.clone().unwrap_or_default(),
                    ttl: Duration::ZERO,
                    renewable: true,
                },
                renew_at: Instant::now(),
            },
            (None, Some(role_id), Some(secret_id)) => {
                OwnIdentity::AppRole { role_id: role_id.clone(), secret_id: secret_id.clone() }
            }
            _ => return None,
        };
        Some(Own { identity, wrapping: record.wrapping.clone() })
    }
}

fn made_by_token_create(path: &str) -> bool {
    path == "auth/token/create"
        || path == "auth/token/create-orphan"
        || path.starts_with("auth/token/create/")
}

fn made_by_secret_id(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    parts.len() >= 5
        && parts[0] == "auth"
        && parts[parts.len() - 1] == "secret-id"
        && parts[parts.len() - 3] == "role"
}

fn wrapped_err(volume: &str, message: impl Into<String>) -> DriverError {
    DriverError::Options {
        volume: volume.to_owned(),
        source: OptionError { option: "wrapped-token".into(), message: message.into() },
    }
}

/// What the error of a refused wrapping token says first: Swarm runs a service's volume
/// create on every node its tasks land on, and each node's plugin unwraps at create.
pub const SINGLE_USE: &str =
    "a wrapped token can be unwrapped once: for a service on several nodes, give each node its identity";

/// Where a wrapping token was refused: at the lookup before the unwrap, or at the unwrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    Lookup,
    Unwrap,
}

/// Vault's answer for a wrapping token that was used, has expired or never existed. Vault
/// says the same for all three (`400 wrapping token is not valid or does not exist`, at lookup
/// and unwrap alike); a token that passed its lookup and is refused at the unwrap a moment
/// later was unwrapped by someone else in between — another node, most likely.
fn wrapping_refused(volume: &str, e: VaultError, at: Refused) -> DriverError {
    match e {
        VaultError::Status { status: 400, .. } | VaultError::Denied { .. } | VaultError::NotFound { .. } => wrapped_err(
            volume,
            match at {
                Refused::Lookup => format!("the wrapping token is used, expired or unknown (vault does not say which). {SINGLE_USE}. If no other node was given this token, it may have been intercepted: issue a new one and create the volume with it"),
                Refused::Unwrap => format!("the wrapping token was unwrapped by someone else between its lookup and its unwrap: used, a moment ago. {SINGLE_USE}. If no other node was given this token, it was intercepted: issue a new one and create the volume with it"),
            },
        ),
        ref e if at == Refused::Lookup && mid_unwrap(e) => wrapped_err(
            volume,
            format!("the wrapping token was being unwrapped by someone else at its lookup (vault found no wrapping information left: used, this very moment). {SINGLE_USE}. If no other node was given this token, it was intercepted: issue a new one and create the volume with it"),
        ),
        source => DriverError::Read { volume: volume.to_owned(), source },
    }
}

/// What `sys/wrapping/lookup` answers for a token being unwrapped by someone else at that
/// moment: the token still resolves, but its wrapping information is already gone — a reply
/// without `creation_path`, or OpenBao's and Vault's internal error for the missing
/// information. A sealed or unreachable Vault is none of these.
fn mid_unwrap(e: &VaultError) -> bool {
    match e {
        VaultError::BadReply { path, .. } => path == "sys/wrapping/lookup",
        VaultError::Status { path, status: 500, message } => {
            path == "sys/wrapping/lookup"
                && (message.contains("wrapping information")
                    || message.contains("no information found"))
        }
        _ => false,
    }
}

impl<E: Edges> Driver<E> {
    /// Looks the wrapping token up, refuses a substituted one, unwraps it, and checks that
    /// what it held works.
    pub(super) async fn unwrap_identity(
        &self,
        volume: &str,
        kind: &IdentityKind,
        wrapping: Token,
    ) -> Result<Own, DriverError> {
        let path = self
            .vault
            .wrapping_creation_path(&wrapping)
            .await
            .map_err(|e| wrapping_refused(volume, e, Refused::Lookup))?;
        let (fits, wanted) = match kind {
            IdentityKind::WrappedSecretId { .. } => {
                (made_by_secret_id(&path), "an AppRole secret-id (it goes with `role-id`)")
            }
            _ => (made_by_token_create(&path), "a token create (auth/token/create)"),
        };
        if !fits && matches!(kind, IdentityKind::WrappedToken) && made_by_secret_id(&path) {
            return Err(wrapped_err(
                volume,
                format!("it holds an AppRole secret_id (made by `{path}`): give its role_id with `-o role-id=…`; the token was not used"),
            ));
        }
        if !fits {
            return Err(wrapped_err(
                volume,
                format!("it was made by `{path}`, not by {wanted}; refusing it without using it (a substituted token?)"),
            ));
        }
        let unwrapped = self
            .vault
            .unwrap(&wrapping)
            .await
            .map_err(|e| wrapping_refused(volume, e, Refused::Unwrap))?;
        let identity = match (kind, unwrapped) {
            (IdentityKind::WrappedToken, Unwrapped::Token(issued)) => {
                self.check_creates_children(volume, &issued).await?;
                let renew_at = Deadline::after_grant(
                    Instant::now(),
                    issued.ttl,
                    issued.ttl,
                    issued.renewable,
                    jitter(),
                )
                .act_at;
                OwnIdentity::Token { issued, renew_at }
            }
            (IdentityKind::WrappedSecretId { role_id }, Unwrapped::SecretId(secret_id)) => {
                // Log in once now, so a wrong role_id fails the create rather than every mount.
                let probe =
                    self.vault.approle_login(role_id, &secret_id).await.map_err(|source| {
                        DriverError::ChildToken { volume: volume.to_owned(), source }
                    })?;
                self.revoke(volume, &Holder::Create, &probe.token, &probe.accessor).await;
                OwnIdentity::AppRole { role_id: role_id.clone(), secret_id }
            }
            (_, Unwrapped::Token(issued)) => {
                self.revoke(volume, &Holder::Create, &issued.token, &issued.accessor).await;
                return Err(wrapped_err(
                    volume,
                    "it held a token, but `role-id` asks for a wrapped secret_id",
                ));
            }
            (_, Unwrapped::SecretId(_)) => {
                return Err(wrapped_err(
                    volume,
                    "it held an AppRole secret_id: give its role_id with `-o role-id=…`",
                ));
            }
        };
        Ok(Own { identity, wrapping })
    }

    /// Checks at create that a wrapped token may make its mounts' child tokens (`update` on
    /// `auth/token/create`), rather than letting every mount fail; a token that may not is
    /// revoked. An answer that is no answer (the check itself refused) lets the create go on:
    /// the first mount then says what is wrong.
    async fn check_creates_children(
        &self,
        volume: &str,
        issued: &IssuedToken,
    ) -> Result<(), DriverError> {
        let path = "auth/token/create";
        let caps = match self.vault.capabilities_self(&issued.token, path).await {
            Ok(caps) => caps,
            Err(e) => {
                tracing::warn!(error = %crate::report::chain(&e), "cannot check the wrapped token's capabilities on auth/token/create");
                return Ok(());
            }
        };
        if caps.iter().any(|c| matches!(c.as_str(), "update" | "sudo" | "root")) {
            return Ok(());
        }
        self.revoke(volume, &Holder::Create, &issued.token, &issued.accessor).await;
        Err(wrapped_err(
            volume,
            format!(
                "its token may not create its mounts' child tokens (capabilities on {path}: {}; it needs `update`); the token was revoked: grant `update` on {path} to its policy and wrap a new one",
                crate::report::one_line(&caps.join(", "), 200)
            ),
        ))
    }

    /// Checks at create that `policies` are a subset of the identity's (a root token may grant
    /// any), so the error comes at create and names the option; and, for a volume of the
    /// plugin's identity in a `namespace`, that the namespace exists (the lookup is made there).
    pub(super) async fn check_policies(
        &self,
        volume: &str,
        spec: &VolumeSpec,
        own: Option<&Own>,
    ) -> Result<(), DriverError> {
        if spec.policies.is_none() && (spec.namespace.is_none() || own.is_some()) {
            return Ok(());
        }
        let namespace = spec.namespace.as_ref();
        let looked_up = match own.map(|o| &o.identity) {
            Some(OwnIdentity::Token { issued, .. }) => self.vault.lookup_self(&issued.token).await,
            Some(OwnIdentity::AppRole { .. }) => return Ok(()),
            None => {
                self.as_plugin(|token| async move {
                    self.vault.lookup_self(&token.in_namespace(namespace)).await
                })
                .await?
            }
        };
        let have = looked_up
            .map_err(|source| DriverError::ChildToken { volume: volume.to_owned(), source })?
            .policies;
        let Some(wanted) = &spec.policies else { return Ok(()) };
        if have.iter().any(|p| p == "root") {
            return Ok(());
        }
        let extra: Vec<&String> =
            wanted.iter().filter(|p| !have.contains(p) && *p != "default").collect();
        if extra.is_empty() {
            return Ok(());
        }
        Err(DriverError::Options {
            volume: volume.to_owned(),
            source: OptionError {
                option: "policies".into(),
                message: format!(
                    "{} not among the identity's policies ({}); a mount's token can only narrow them",
                    extra.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", "),
                    have.join(", ")
                ),
            },
        })
    }

    /// A token for a mount: a child of the plugin's or the volume's token, or an AppRole login.
    pub(super) async fn issue_token(
        &self,
        volume: &Volume,
        id: &str,
    ) -> Result<IssuedToken, DriverError> {
        let name = &volume.record.name;
        let err = |source| DriverError::ChildToken { volume: name.clone(), source };
        let own = volume.own.lock().unwrap().clone();
        match (&volume.spec.identity, own.map(|o| o.identity)) {
            (IdentityKind::Plugin, _) => {
                let request = &self.child_token_request(volume, id);
                // In the volume's namespace: the child, and so every request made with it.
                let namespace = volume.spec.namespace.as_ref();
                self.as_plugin(|parent| async move {
                    let parent = parent.in_namespace(namespace);
                    self.vault.create_child_token(&parent, request).await
                })
                .await?
                .map_err(err)
            }
            (_, Some(OwnIdentity::Token { issued, .. })) => self
                .vault
                .create_child_token(&issued.token, &self.child_token_request(volume, id))
                .await
                .map_err(err),
            (_, Some(OwnIdentity::AppRole { role_id, secret_id })) => {
                self.vault.approle_login(&role_id, &secret_id).await.map_err(err)
            }
            (_, None) => Err(DriverError::IdentityGone { volume: name.clone() }),
        }
    }

    /// Makes `call` with the plugin's token. When Vault refuses it because the token is gone
    /// (revoked, expired: `lookup-self` says so), the plugin logs in again and `call` is made
    /// once more with the new token; a refusal that is the policy's stands.
    pub(super) async fn as_plugin<T, F, Fut>(
        &self,
        call: F,
    ) -> Result<Result<T, VaultError>, DriverError>
    where
        F: Fn(Token) -> Fut,
        Fut: std::future::Future<Output = Result<T, VaultError>>,
    {
        let identity = self.identity.get().map_err(|reason| DriverError::NoIdentity { reason })?;
        let token = identity.token();
        match call(token.clone()).await {
            Err(e) if e.is_denied() => {
                match identity.recover_from_refusal(&*self.vault, &*self.store, &token).await {
                    Ok(true) => Ok(call(identity.token()).await),
                    Ok(false) => Ok(Err(e)),
                    Err(login) => Err(DriverError::NoIdentity {
                        reason: format!(
                            "its token is no longer valid (revoked or expired), and logging in again failed: {}",
                            chain(&login)
                        ),
                    }),
                }
            }
            done => Ok(done),
        }
    }

    /// Renews a volume's own token; returns when to do it again.
    pub(super) async fn renew_own(&self, name: &str) -> Option<Instant> {
        let volume = self.volume(name).ok()?;
        let issued = match volume.own.lock().unwrap().as_ref().map(|o| o.identity.clone()) {
            Some(OwnIdentity::Token { issued, .. }) if issued.renewable => issued,
            _ => return None,
        };
        let asked = issued.ttl.max(volume.spec.ttl);
        match self.vault.renew_self(&issued.token, asked).await {
            Ok(ttl) if ttl.is_zero() => None,
            Ok(ttl) => {
                let renew_at =
                    Deadline::after_grant(Instant::now(), ttl, ttl, true, jitter()).act_at;
                if let Some(Own { identity: OwnIdentity::Token { issued, renew_at: at }, .. }) =
                    volume.own.lock().unwrap().as_mut()
                {
                    issued.ttl = ttl;
                    *at = renew_at;
                }
                Some(renew_at)
            }
            Err(e) if e.is_transient() => Some(Instant::now() + plan::backoff(3, jitter())),
            Err(e) => {
                tracing::error!(volume = %name, error = %chain(&e), "the volume's own token was refused (revoked or expired): its new mounts will fail; create the volume again with a fresh wrapped-token");
                None
            }
        }
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    crate::report::chain(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_wrapping_token_says_it_is_single_use_and_where_it_was_refused() {
        let gone = || VaultError::Status {
            path: "sys/wrapping/unwrap".into(),
            status: 400,
            message: "wrapping token is not valid or does not exist".into(),
        };
        for (at, says) in [
            (Refused::Lookup, "used, expired or unknown"),
            (Refused::Unwrap, "unwrapped by someone else between its lookup and its unwrap"),
        ] {
            let e = crate::report::chain(&wrapping_refused("v", gone(), at));
            assert!(e.contains(SINGLE_USE) && e.contains(says) && e.contains("intercepted"), "{e}");
            assert!(e.contains("option `wrapped-token`"), "{e}");
        }
        // Vault out of reach is not a used token.
        let down = VaultError::Status {
            path: "sys/wrapping/lookup".into(),
            status: 503,
            message: "Vault is sealed".into(),
        };
        let e = crate::report::chain(&wrapping_refused("v", down, Refused::Lookup));
        assert!(!e.contains(SINGLE_USE) && e.contains("sealed"), "{e}");
    }

    #[test]
    fn creation_paths_are_told_apart() {
        assert!(made_by_token_create("auth/token/create"));
        assert!(made_by_token_create("auth/token/create/team-a"));
        assert!(made_by_token_create("auth/token/create-orphan"));
        assert!(!made_by_token_create("auth/token/create-orphanx/../"));
        assert!(!made_by_token_create("secret/data/x"));
        assert!(made_by_secret_id("auth/approle/role/web/secret-id"));
        assert!(made_by_secret_id("auth/team/approle/role/web/secret-id"));
        assert!(!made_by_secret_id("auth/approle/role/web/secret-id-accessor/lookup"));
        assert!(!made_by_secret_id("sys/wrapping/wrap"));
        assert!(!made_by_secret_id("auth/approle/login"));
    }
}

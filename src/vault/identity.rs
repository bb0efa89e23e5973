//! The plugin's own identity: logging in (a token file, or AppRole with a secret_id that may be
//! response-wrapped), keeping the token renewed, logging in again when it must.
//!
//! The current token is kept in memory and in the private tmpfs ([`IdentityRecord`]), so a
//! restarted plugin carries on with the same token — whose child tokens are the running
//! containers' — instead of logging in anew, and a wrapped secret_id's file, deleted after its
//! one unwrap, is not needed again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use super::{HttpVault, Token, Unwrapped, Vault, VaultError};
use crate::config::AuthConfig;
use crate::state::{IdentityRecord, Store};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read {what} from {path}")]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is empty; it must hold the {what}")]
    EmptyFile { what: &'static str, path: PathBuf },
    #[error("cannot unwrap the secret_id in {path}: the wrapping token is used, expired or unknown (it may have been intercepted); issue a new one")]
    Unwrap {
        path: PathBuf,
        #[source]
        source: VaultError,
    },
    #[error("the token in {path} was refused by vault")]
    BadToken {
        path: PathBuf,
        #[source]
        source: VaultError,
    },
    #[error("AppRole login failed")]
    Login(#[source] VaultError),
    #[error("the plugin's token cannot be renewed and there is no AppRole to log in again with")]
    CannotRelogin,
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
}

/// Where the current token is, how long it lives, how to get a new one.
pub struct Identity {
    current: RwLock<Token>,
    ttl: RwLock<Duration>,
    renewable: RwLock<bool>,
    approle: Option<(Token, Token)>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").field("ttl", &self.ttl()).finish_non_exhaustive()
    }
}

impl Identity {
    /// An identity with a fixed token that is never renewed (tests, root tokens).
    pub fn fixed(token: Token) -> Identity {
        Identity {
            current: RwLock::new(token),
            ttl: RwLock::new(Duration::ZERO),
            renewable: RwLock::new(false),
            approle: None,
        }
    }

    /// The token to act with now.
    pub fn token(&self) -> Token {
        self.current.read().unwrap().clone()
    }

    fn ttl(&self) -> Duration {
        *self.ttl.read().unwrap()
    }

    /// Logs in as `auth` says, reusing a still-valid token from the private store first.
    pub async fn login<S: Store>(
        vault: &HttpVault,
        auth: &AuthConfig,
        store: &S,
    ) -> Result<Identity, IdentityError> {
        let saved = store.load_identity();
        if let Some(saved) = &saved {
            if let Ok(info) = lookup_self(vault, &saved.token).await {
                tracing::info!(ttl = ?info.0, "carrying on with the identity token kept from before the restart");
                return Ok(Identity {
                    current: RwLock::new(saved.token.clone()),
                    ttl: RwLock::new(info.0),
                    renewable: RwLock::new(info.1),
                    approle: match auth {
                        AuthConfig::AppRole { role_id_file, .. } => saved
                            .secret_id
                            .clone()
                            .map(|s| read_secret_file("role_id", role_id_file).map(|r| (r, s)))
                            .transpose()?,
                        AuthConfig::Token { .. } => None,
                    },
                });
            }
        }
        let identity = match auth {
            AuthConfig::Token { token_file } => {
                let token = read_secret_file("token", token_file)?;
                let (ttl, renewable) = lookup_self(vault, &token).await.map_err(|source| {
                    IdentityError::BadToken { path: token_file.clone(), source }
                })?;
                Identity {
                    current: RwLock::new(token),
                    ttl: RwLock::new(ttl),
                    renewable: RwLock::new(renewable),
                    approle: None,
                }
            }
            AuthConfig::AppRole { role_id_file, secret_id_file, secret_id_wrapped } => {
                let role_id = read_secret_file("role_id", role_id_file)?;
                let secret_id = match (saved.and_then(|s| s.secret_id), secret_id_file.exists()) {
                    (Some(kept), false) => kept,
                    _ => {
                        let file = read_secret_file("secret_id", secret_id_file)?;
                        if *secret_id_wrapped {
                            let unwrapped =
                                unwrap_secret_id(vault, &file).await.map_err(|source| {
                                    IdentityError::Unwrap { path: secret_id_file.clone(), source }
                                })?;
                            // Used once: the file is worthless now, and must not linger.
                            if let Err(e) = std::fs::remove_file(secret_id_file) {
                                tracing::warn!(path = %secret_id_file.display(), error = %e, "cannot delete the used wrapped secret_id file");
                            }
                            unwrapped
                        } else {
                            file
                        }
                    }
                };
                let issued = vault
                    .approle_login(role_id.expose(), &secret_id)
                    .await
                    .map_err(IdentityError::Login)?;
                Identity {
                    current: RwLock::new(issued.token),
                    ttl: RwLock::new(issued.ttl),
                    renewable: RwLock::new(issued.renewable),
                    approle: Some((role_id, secret_id)),
                }
            }
        };
        identity.save(store)?;
        Ok(identity)
    }

    fn save<S: Store>(&self, store: &S) -> Result<(), IdentityError> {
        store.save_identity(&IdentityRecord {
            token: self.token(),
            secret_id: self.approle.as_ref().map(|(_, s)| s.clone()),
        })?;
        Ok(())
    }

    /// Keeps the token alive until `shutdown` fires: renews at two thirds of its TTL, logs in
    /// again (AppRole) when renewal is refused or the TTL stops growing, backs off while Vault
    /// is out of reach.
    pub async fn keep_alive<S: Store>(
        self: Arc<Self>,
        vault: HttpVault,
        store: Arc<S>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut backoff = Duration::from_secs(1);
        loop {
            let ttl = self.ttl();
            if ttl.is_zero() && !*self.renewable.read().unwrap() {
                return; // A token without expiry (or not renewable) needs no care.
            }
            let wait = if backoff > Duration::from_secs(1) { backoff } else { ttl * 2 / 3 };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
            match self.refresh(&vault, &*store).await {
                Ok(()) => backoff = Duration::from_secs(1),
                Err(e) => {
                    backoff = (backoff * 2)
                        .min(Duration::from_secs(60))
                        .min(ttl / 4)
                        .max(Duration::from_secs(2));
                    tracing::error!(error = %format!("{e:#}"), retry_in = ?backoff, "cannot keep the plugin's vault token alive");
                }
            }
        }
    }

    async fn refresh<S: Store>(&self, vault: &HttpVault, store: &S) -> Result<(), IdentityError> {
        let asked = self.ttl();
        let renewed = if *self.renewable.read().unwrap() {
            Some(vault.renew_self(&self.token(), asked).await)
        } else {
            None
        };
        match renewed {
            // Renewed fully: a periodic token, or one still below its max TTL.
            Some(Ok(ttl)) if ttl + Duration::from_secs(5) >= asked || self.approle.is_none() => {
                *self.ttl.write().unwrap() = ttl;
                Ok(())
            }
            Some(Err(e)) if !e.is_denied() => Err(e.into()),
            _ => {
                let (role_id, secret_id) =
                    self.approle.as_ref().ok_or(IdentityError::CannotRelogin)?;
                let issued = vault
                    .approle_login(role_id.expose(), secret_id)
                    .await
                    .map_err(IdentityError::Login)?;
                tracing::warn!("logged in again: the plugin's token reached its max TTL; give the AppRole a token_period so running mounts' child tokens are not cut off with it");
                *self.current.write().unwrap() = issued.token;
                *self.ttl.write().unwrap() = issued.ttl;
                *self.renewable.write().unwrap() = issued.renewable;
                self.save(store)
            }
        }
    }
}

/// The identity once logged in, or why it is not (yet): mounts fail with that reason while
/// Get, List and Path keep working.
pub struct IdentitySlot {
    inner: RwLock<Result<Arc<Identity>, String>>,
}

impl IdentitySlot {
    pub fn new(initial: Result<Arc<Identity>, String>) -> IdentitySlot {
        IdentitySlot { inner: RwLock::new(initial) }
    }

    pub fn set(&self, value: Result<Arc<Identity>, String>) {
        *self.inner.write().unwrap() = value;
    }

    pub fn get(&self) -> Result<Arc<Identity>, String> {
        self.inner.read().unwrap().clone()
    }

    /// The token to act with now, or why there is none.
    pub fn token(&self) -> Result<Token, String> {
        self.get().map(|i| i.token())
    }
}

fn read_secret_file(what: &'static str, path: &Path) -> Result<Token, IdentityError> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path).map_err(|source| IdentityError::ReadFile {
            what,
            path: path.to_owned(),
            source,
        })?,
    );
    let value = text.trim();
    if value.is_empty() {
        return Err(IdentityError::EmptyFile { what, path: path.to_owned() });
    }
    Ok(Token::new(value.to_owned()))
}

/// `auth/token/lookup-self`: the token's remaining TTL and whether it is renewable.
pub async fn lookup_self(vault: &HttpVault, token: &Token) -> Result<(Duration, bool), VaultError> {
    let path = "auth/token/lookup-self";
    let reply = vault.call(Method::GET, path, Some(token), None).await?;
    let data = reply
        .and_then(|r| r.data)
        .ok_or_else(|| VaultError::BadReply { path: path.into(), message: "no data".into() })?;
    let ttl = data.get("ttl").and_then(Value::as_u64).unwrap_or(0);
    let renewable = data.get("renewable").and_then(Value::as_bool).unwrap_or(false);
    Ok((super::ttl(ttl), renewable))
}

async fn unwrap_secret_id(vault: &HttpVault, wrapping: &Token) -> Result<Token, VaultError> {
    match vault.unwrap(wrapping).await? {
        Unwrapped::SecretId(secret_id) => Ok(secret_id),
        Unwrapped::Token(issued) => {
            // Not what the file should hold: do not keep a token nobody asked for.
            let _ = vault.revoke_self(&issued.token).await;
            Err(VaultError::BadReply {
                path: "sys/wrapping/unwrap".into(),
                message: "the wrapping token held a token, not a secret_id".into(),
            })
        }
    }
}

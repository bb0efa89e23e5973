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

use super::{Token, Unwrapped, Vault, VaultError};
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
    pub async fn login<V: Vault, S: Store>(
        vault: &V,
        auth: &AuthConfig,
        store: &S,
    ) -> Result<Identity, IdentityError> {
        let saved = store.load_identity();
        if let Some(saved) = &saved {
            if let Ok(info) = vault.lookup_self(&saved.token).await {
                tracing::info!(ttl = ?info.ttl, "carrying on with the identity token kept from before the restart");
                return Ok(Identity {
                    current: RwLock::new(saved.token.clone()),
                    ttl: RwLock::new(info.ttl),
                    renewable: RwLock::new(info.renewable),
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
                let info = vault.lookup_self(&token).await.map_err(|source| {
                    IdentityError::BadToken { path: token_file.clone(), source }
                })?;
                Identity {
                    current: RwLock::new(token),
                    ttl: RwLock::new(info.ttl),
                    renewable: RwLock::new(info.renewable),
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
    pub async fn keep_alive<V: Vault, S: Store>(
        self: Arc<Self>,
        vault: Arc<V>,
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
            match self.refresh(&*vault, &*store).await {
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

    async fn refresh<V: Vault, S: Store>(&self, vault: &V, store: &S) -> Result<(), IdentityError> {
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

/// A secret from a file (a token, a role_id, a secret_id): trimmed, never empty, zeroed when
/// dropped. The one reader of such files, for `serve` and `check` alike.
pub fn read_secret_file(what: &'static str, path: &Path) -> Result<Token, IdentityError> {
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

async fn unwrap_secret_id<V: Vault>(vault: &V, wrapping: &Token) -> Result<Token, VaultError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemoryStore;
    use crate::vault::fake::{FakeVault, ROLE_ID, SECRET_ID};
    use std::sync::atomic::Ordering;

    fn approle(dir: &Path, wrapped: bool) -> AuthConfig {
        std::fs::write(dir.join("role-id"), ROLE_ID).unwrap();
        std::fs::write(dir.join("secret-id"), if wrapped { "wrap-1" } else { SECRET_ID }).unwrap();
        AuthConfig::AppRole {
            role_id_file: dir.join("role-id"),
            secret_id_file: dir.join("secret-id"),
            secret_id_wrapped: wrapped,
        }
    }

    #[tokio::test]
    async fn a_wrapped_secret_id_is_unwrapped_once_then_kept_and_the_file_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let vault = FakeVault::default();
        vault
            .wrapped
            .lock()
            .unwrap()
            .insert("wrap-1".into(), "auth/approle/role/r/secret-id".into());
        let store = MemoryStore::default();
        let auth = approle(dir.path(), true);
        let identity = Identity::login(&vault, &auth, &store).await.unwrap();
        assert_eq!(identity.token().expose(), "login-0");
        assert!(!dir.path().join("secret-id").exists(), "the used wrapping token's file is gone");
        let kept = store.load_identity().unwrap();
        assert_eq!(kept.secret_id.unwrap().expose(), SECRET_ID);
        // A restart carries on with the kept token: no second login, no file needed.
        let again = Identity::login(&vault, &auth, &store).await.unwrap();
        assert_eq!(again.token().expose(), "login-0");
        assert_eq!(vault.logins.load(Ordering::SeqCst), 1);
        // Once the kept token is gone, the kept secret_id logs in again.
        vault.tokens.lock().unwrap().clear();
        let third = Identity::login(&vault, &auth, &store).await.unwrap();
        assert_eq!(third.token().expose(), "login-1");
    }

    #[tokio::test]
    async fn a_full_renewal_keeps_the_token_and_a_capped_one_logs_in_again() {
        let dir = tempfile::tempdir().unwrap();
        let vault = FakeVault::default();
        let store = MemoryStore::default();
        let identity = Identity::login(&vault, &approle(dir.path(), false), &store).await.unwrap();
        identity.refresh(&vault, &store).await.unwrap();
        assert_eq!(identity.token().expose(), "login-0", "renewed in full: the same token");
        assert_eq!(identity.ttl(), Duration::from_secs(60));
        // The max TTL is near: Vault grants 10 s of the 60 asked. Log in again, and keep it.
        *vault.renew_cap.lock().unwrap() = Some(Duration::from_secs(10));
        identity.refresh(&vault, &store).await.unwrap();
        assert_eq!(identity.token().expose(), "login-1");
        assert_eq!(store.load_identity().unwrap().token.expose(), "login-1");
        // A token Vault no longer knows (revoked): log in again too.
        *vault.renew_cap.lock().unwrap() = None;
        vault.tokens.lock().unwrap().clear();
        identity.refresh(&vault, &store).await.unwrap();
        assert_eq!(identity.token().expose(), "login-2");
    }

    #[tokio::test]
    async fn a_token_file_identity_carries_on_when_capped_and_fails_when_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "plugin-token\n").unwrap();
        let auth = AuthConfig::Token { token_file: dir.path().join("token") };
        let vault = FakeVault::default();
        let store = MemoryStore::default();
        let e = Identity::login(&vault, &auth, &store).await.unwrap_err().to_string();
        assert!(e.contains("was refused by vault") && e.contains("token"), "{e}");
        vault.knows("plugin-token", Duration::from_secs(100));
        let identity = Identity::login(&vault, &auth, &store).await.unwrap();
        *vault.renew_cap.lock().unwrap() = Some(Duration::from_secs(10));
        identity.refresh(&vault, &store).await.unwrap();
        assert_eq!(identity.ttl(), Duration::from_secs(10), "no AppRole: it carries on");
        vault.tokens.lock().unwrap().clear();
        let e = identity.refresh(&vault, &store).await.unwrap_err();
        assert!(matches!(e, IdentityError::CannotRelogin), "{e}");
        std::fs::write(dir.path().join("token"), " \n").unwrap();
        let e = read_secret_file("token", &dir.path().join("token")).unwrap_err().to_string();
        assert!(e.contains("is empty"), "{e}");
    }
}

//! The plugin's own Vault identity: logging in (a token file; AppRole with a secret_id that may
//! be response-wrapped; a TLS client certificate; a JWT from a file), keeping the token renewed,
//! logging in again when it must: at its max TTL, and when Vault no longer knows it (revoked,
//! expired) — found at the next renewal, or at once when a mount's child token is refused.
//! The renewals are not a task of their own: the lease manager, which owns every deadline,
//! calls [`Identity::upkeep`] when the token's comes ([`crate::lease::Job::Plugin`]).
//! It sits above [`crate::vault`] (the calls, and the files the credentials are read from:
//! [`crate::vault::credentials`]) and [`crate::state`] (where the token is kept).
//!
//! The current token is kept in memory and in the private tmpfs ([`IdentityRecord`]), so a
//! restarted plugin carries on with the same token — whose child tokens are the running
//! containers' — instead of logging in anew, and a wrapped secret_id's file, deleted after its
//! one unwrap, is not needed again. A certificate or a JWT needs nothing kept: they are on the
//! host's disk and survive a reboot, so a node logs in by itself after one.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::AuthConfig;
use crate::lease::plan;
use crate::state::{IdentityRecord, Store};
use crate::vault::credentials::{load_jwt, load_secret_file, CredentialError};
use crate::vault::{IssuedToken, Login, Token, Unwrapped, Vault, VaultError};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(transparent)]
    Credential(#[from] CredentialError),
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
    #[error("{method} login failed")]
    Login {
        method: &'static str,
        #[source]
        source: VaultError,
    },
    #[error("the plugin's token cannot be renewed and there is no AppRole, certificate or JWT to log in again with")]
    CannotRelogin,
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
}

/// How the plugin logs in again when its token is gone.
enum Relogin {
    AppRole { role_id: Token, secret_id: Token },
    Cert { mount: String, role: Option<String> },
    Jwt { mount: String, role: String, jwt_file: PathBuf },
}

impl Relogin {
    /// The certificate or JWT login `auth` configures (they need nothing kept).
    fn configured(auth: &AuthConfig) -> Option<Relogin> {
        match auth {
            AuthConfig::Cert { mount, role, .. } => {
                Some(Relogin::Cert { mount: mount.clone(), role: role.clone() })
            }
            AuthConfig::Jwt { jwt_file, role, mount } => Some(Relogin::Jwt {
                mount: mount.clone(),
                role: role.clone(),
                jwt_file: jwt_file.clone(),
            }),
            AuthConfig::Token { .. } | AuthConfig::AppRole { .. } => None,
        }
    }

    async fn login<V: Vault>(&self, vault: &V) -> Result<IssuedToken, IdentityError> {
        match self {
            Relogin::AppRole { role_id, secret_id } => vault
                .approle_login(role_id.expose(), secret_id)
                .await
                .map_err(|source| IdentityError::Login { method: "AppRole", source }),
            Relogin::Cert { mount, role } => vault
                .login(&Login::Cert { mount, role: role.as_deref() })
                .await
                .map_err(|source| IdentityError::Login { method: "certificate", source }),
            Relogin::Jwt { mount, role, jwt_file } => {
                let jwt = load_jwt(jwt_file).await?;
                vault
                    .login(&Login::Jwt { mount, role, jwt: &jwt })
                    .await
                    .map_err(|source| IdentityError::Login { method: "JWT", source })
            }
        }
    }

    fn secret_id(&self) -> Option<Token> {
        match self {
            Relogin::AppRole { secret_id, .. } => Some(secret_id.clone()),
            _ => None,
        }
    }
}

/// Where the current token is, how long it lives, how to get a new one.
pub struct Identity {
    current: RwLock<Token>,
    ttl: RwLock<Duration>,
    /// When Vault told that TTL (at the login, lookup or renewal).
    ttl_since: RwLock<Instant>,
    renewable: RwLock<bool>,
    relogin: Option<Relogin>,
    /// Renewals that failed in a row (the backoff grows with them).
    failures: AtomicU32,
    /// Held across a login (a tokio mutex: across `.await`), so that the renewal job and the
    /// mounts refused at the same moment log in once, not once each.
    logging_in: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").field("ttl", &self.ttl()).finish_non_exhaustive()
    }
}

impl Identity {
    fn new(token: Token, ttl: Duration, renewable: bool, relogin: Option<Relogin>) -> Identity {
        Identity {
            current: RwLock::new(token),
            ttl: RwLock::new(ttl),
            ttl_since: RwLock::new(Instant::now()),
            renewable: RwLock::new(renewable),
            relogin,
            failures: AtomicU32::new(0),
            logging_in: tokio::sync::Mutex::new(()),
        }
    }

    /// An identity with a fixed token that is never renewed (tests, root tokens).
    pub fn fixed(token: Token) -> Identity {
        Identity::new(token, Duration::ZERO, false, None)
    }

    /// The token to act with now.
    pub fn token(&self) -> Token {
        self.current.read().unwrap().clone()
    }

    fn ttl(&self) -> Duration {
        *self.ttl.read().unwrap()
    }

    fn set_ttl(&self, ttl: Duration) {
        *self.ttl.write().unwrap() = ttl;
        *self.ttl_since.write().unwrap() = Instant::now();
    }

    /// What the token has left at `now`, as far as the plugin knows.
    fn remaining(&self, now: Instant) -> Duration {
        self.ttl().saturating_sub(now.saturating_duration_since(*self.ttl_since.read().unwrap()))
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
                let relogin = match auth {
                    AuthConfig::AppRole { role_id_file, .. } => match &saved.secret_id {
                        Some(secret_id) => Some(Relogin::AppRole {
                            role_id: load_secret_file("role_id", role_id_file).await?,
                            secret_id: secret_id.clone(),
                        }),
                        None => None,
                    },
                    other => Relogin::configured(other),
                };
                return Ok(Identity::new(saved.token.clone(), info.ttl, info.renewable, relogin));
            }
        }
        let identity = match auth {
            AuthConfig::Token { token_file } => {
                let token = load_secret_file("token", token_file).await?;
                let info = vault.lookup_self(&token).await.map_err(|source| {
                    IdentityError::BadToken { path: token_file.clone(), source }
                })?;
                Identity::new(token, info.ttl, info.renewable, None)
            }
            AuthConfig::AppRole { role_id_file, secret_id_file, secret_id_wrapped } => {
                let role_id = load_secret_file("role_id", role_id_file).await?;
                let secret_id = match (saved.and_then(|s| s.secret_id), secret_id_file.exists()) {
                    (Some(kept), false) => kept,
                    _ => {
                        let file = load_secret_file("secret_id", secret_id_file).await?;
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
                Identity::logged_in(vault, Relogin::AppRole { role_id, secret_id }).await?
            }
            other => {
                let relogin = Relogin::configured(other).expect("a certificate or JWT login");
                Identity::logged_in(vault, relogin).await?
            }
        };
        identity.save(store)?;
        Ok(identity)
    }

    async fn logged_in<V: Vault>(vault: &V, relogin: Relogin) -> Result<Identity, IdentityError> {
        let issued = relogin.login(vault).await?;
        Ok(Identity::new(issued.token, issued.ttl, issued.renewable, Some(relogin)))
    }

    fn save<S: Store>(&self, store: &S) -> Result<(), IdentityError> {
        store.save_identity(&IdentityRecord {
            token: self.token(),
            secret_id: self.relogin.as_ref().and_then(Relogin::secret_id),
        })?;
        Ok(())
    }

    /// When the token is first due for renewal (two thirds of its TTL from `now`, at least a
    /// second: a renewable token of no TTL must not be renewed in a busy loop), or `None` when
    /// it needs no care (no expiry, or neither renewable nor replaceable by a login).
    pub fn first_renewal(&self, now: Instant) -> Option<Instant> {
        self.needs_care().then(|| now + (self.ttl() * 2 / 3).max(Duration::from_secs(1)))
    }

    fn needs_care(&self) -> bool {
        !self.ttl().is_zero() || *self.renewable.read().unwrap()
    }

    /// One step of the token's upkeep, at the deadline the lease manager keeps for it
    /// ([`crate::lease::Job::Plugin`]): renews it, or logs in again when renewal is refused or
    /// the TTL stops growing. Returns the next deadline: two thirds of the TTL after a success,
    /// the backoff of [`plan::backoff`] while Vault is out of reach — never past two thirds of
    /// what the token has left, never under a second; `None` when the token needs no care.
    pub async fn upkeep<V: Vault, S: Store>(
        &self,
        vault: &V,
        store: &S,
        now: Instant,
    ) -> Option<Instant> {
        if !self.needs_care() {
            return None;
        }
        match self.refresh(vault, store).await {
            Ok(()) => {
                self.failures.store(0, Ordering::Relaxed);
                self.first_renewal(now)
            }
            Err(e) => {
                let failures = self.failures.fetch_add(1, Ordering::Relaxed).saturating_add(1);
                let wait = plan::backoff(failures, fastrand::f64())
                    .min(self.remaining(now) * 2 / 3)
                    .max(Duration::from_secs(1));
                tracing::error!(error = %format!("{e:#}"), retry_in = ?wait, "cannot keep the plugin's vault token alive");
                Some(now + wait)
            }
        }
    }

    async fn refresh<V: Vault, S: Store>(&self, vault: &V, store: &S) -> Result<(), IdentityError> {
        let (token, asked) = (self.token(), self.ttl());
        let renewed = if *self.renewable.read().unwrap() {
            Some(vault.renew_self(&token, asked).await)
        } else {
            None
        };
        match renewed {
            // Renewed fully: a periodic token, or one still below its max TTL.
            Some(Ok(ttl)) if ttl + Duration::from_secs(5) >= asked || self.relogin.is_none() => {
                self.set_ttl(ttl);
                Ok(())
            }
            Some(Err(e)) if !e.is_denied() => Err(e.into()),
            Some(Ok(_)) => self.login_again(vault, store, &token, "the plugin's token reached its max TTL; give the auth role a token_period so running mounts' child tokens are not cut off with it").await,
            Some(Err(_)) => self.login_again(vault, store, &token, "at its renewal, vault no longer knew the plugin's token (revoked or expired): its mounts' child tokens went with it").await,
            None => self.login_again(vault, store, &token, "the plugin's token is not renewable").await,
        }
    }

    /// Logs in anew in place of `stale`, unless that was done meanwhile (by the renewal job
    /// or another mount refused at the same moment).
    async fn login_again<V: Vault, S: Store>(
        &self,
        vault: &V,
        store: &S,
        stale: &Token,
        why: &'static str,
    ) -> Result<(), IdentityError> {
        let relogin = self.relogin.as_ref().ok_or(IdentityError::CannotRelogin)?;
        let _one = self.logging_in.lock().await;
        if self.token().expose() != stale.expose() {
            return Ok(());
        }
        let issued = relogin.login(vault).await?;
        tracing::warn!(why, accessor = %issued.accessor, "logged in to vault again");
        *self.current.write().unwrap() = issued.token;
        self.set_ttl(issued.ttl);
        *self.renewable.write().unwrap() = issued.renewable;
        self.save(store)
    }

    /// After Vault refused a request made with `stale` (a mount's child token): whether the
    /// token is gone — revoked or expired: then log in again, and the caller retries (`true`)
    /// — or still valid, the refusal being the policy's (`false`: the caller's error stands).
    /// Costs one `lookup-self` per refusal; with a token file there is nothing to do.
    pub async fn recover_from_refusal<V: Vault, S: Store>(
        &self,
        vault: &V,
        store: &S,
        stale: &Token,
    ) -> Result<bool, IdentityError> {
        if self.relogin.is_none() {
            return Ok(false);
        }
        if self.token().expose() != stale.expose() {
            return Ok(true); // Logged in again meanwhile.
        }
        match vault.lookup_self(stale).await {
            Ok(_) => Ok(false),
            Err(e) if e.is_denied() => {
                self.login_again(vault, store, stale, "a mount's token was refused: vault no longer knows the plugin's token (revoked or expired); the running mounts' child tokens went with it").await?;
                Ok(true)
            }
            Err(e) => Err(e.into()),
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
    use crate::vault::credentials::read_secret_file;
    use crate::vault::fake::{FakeVault, ROLE_ID, SECRET_ID};
    use std::path::Path;
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
        vault.wraps_secret_id("wrap-1", "auth/approle/role/r/secret-id", SECRET_ID);
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
        *vault.token_renew_cap.lock().unwrap() = Some(Duration::from_secs(10));
        identity.refresh(&vault, &store).await.unwrap();
        assert_eq!(identity.token().expose(), "login-1");
        assert_eq!(store.load_identity().unwrap().token.expose(), "login-1");
        // A token Vault no longer knows (revoked): log in again too.
        *vault.token_renew_cap.lock().unwrap() = None;
        vault.tokens.lock().unwrap().clear();
        identity.refresh(&vault, &store).await.unwrap();
        assert_eq!(identity.token().expose(), "login-2");
    }

    /// The token's upkeep step: renewed at two thirds of its TTL; while Vault cannot answer,
    /// retried on the one backoff (1 s, then up to 2 s, 4 s …), then back to two thirds.
    #[tokio::test(start_paused = true)]
    async fn upkeep_renews_at_two_thirds_and_backs_off_while_vault_cannot_answer() {
        let dir = tempfile::tempdir().unwrap();
        let vault = FakeVault::default();
        let store = MemoryStore::default();
        let identity = Identity::login(&vault, &approle(dir.path(), false), &store).await.unwrap();
        let now = Instant::now();
        assert_eq!(identity.first_renewal(now), Some(now + Duration::from_secs(40)));
        assert_eq!(identity.upkeep(&vault, &store, now).await, Some(now + Duration::from_secs(40)));
        vault.sealed.store(true, Ordering::SeqCst);
        assert_eq!(identity.upkeep(&vault, &store, now).await, Some(now + Duration::from_secs(1)));
        let second = identity.upkeep(&vault, &store, now).await.unwrap() - now;
        assert!(second >= Duration::from_secs(1) && second <= Duration::from_secs(2), "{second:?}");
        let third = identity.upkeep(&vault, &store, now).await.unwrap() - now;
        assert!(third >= Duration::from_secs(2) && third <= Duration::from_secs(4), "{third:?}");
        // 3 s before the token expires: the retry comes within two thirds of that, not after
        // the 4 to 8 s of the fourth backoff.
        tokio::time::advance(Duration::from_secs(57)).await;
        let later = Instant::now();
        let fourth = identity.upkeep(&vault, &store, later).await.unwrap() - later;
        assert_eq!(fourth, Duration::from_secs(2));
        vault.sealed.store(false, Ordering::SeqCst);
        assert_eq!(identity.upkeep(&vault, &store, now).await, Some(now + Duration::from_secs(40)));
        assert_eq!(identity.token().expose(), "login-0", "renewed, not replaced");
        assert_eq!(
            identity.upkeep(&vault, &store, now).await,
            Some(now + Duration::from_secs(40)),
            "the failures were forgotten: no backoff"
        );
        assert_eq!(Identity::fixed(Token::new("root".into())).first_renewal(now), None);
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
        *vault.token_renew_cap.lock().unwrap() = Some(Duration::from_secs(10));
        identity.refresh(&vault, &store).await.unwrap();
        assert_eq!(identity.ttl(), Duration::from_secs(10), "no AppRole: it carries on");
        vault.tokens.lock().unwrap().clear();
        let e = identity.refresh(&vault, &store).await.unwrap_err();
        assert!(matches!(e, IdentityError::CannotRelogin), "{e}");
        std::fs::write(dir.path().join("token"), " \n").unwrap();
        let e = read_secret_file("token", &dir.path().join("token")).unwrap_err().to_string();
        assert!(e.contains("is empty"), "{e}");
    }

    const JWT_A: &str = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJub2RlLTAxIn0.c2lnbmF0dXJl";
    const JWT_B: &str = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJub2RlLTAyIn0.c2lnbmF0dXJl";

    fn cert(role: Option<&str>) -> AuthConfig {
        AuthConfig::Cert {
            client_cert: "/unused/node.pem".into(),
            client_key: "/unused/node-key.pem".into(),
            role: role.map(str::to_owned),
            mount: "cert".into(),
        }
    }

    #[tokio::test]
    async fn a_revoked_token_is_replaced_by_one_login_however_many_ask() {
        let vault = FakeVault::default();
        let store = MemoryStore::default();
        let identity = Identity::login(&vault, &cert(Some("node")), &store).await.unwrap();
        let first = identity.token();
        assert_eq!(first.expose(), "login-0");
        // Still valid: the refusal was the policy's, and nothing is done.
        assert!(!identity.recover_from_refusal(&vault, &store, &first).await.unwrap());
        assert_eq!(vault.logins.load(Ordering::SeqCst), 1);
        // Revoked: the mounts refused at the same moment and the renewal job log in once.
        vault.tokens.lock().unwrap().clear();
        let (a, b, c) = tokio::join!(
            identity.recover_from_refusal(&vault, &store, &first),
            identity.recover_from_refusal(&vault, &store, &first),
            identity.refresh(&vault, &store),
        );
        assert!(a.unwrap() && b.unwrap());
        c.unwrap();
        assert_eq!(vault.logins.load(Ordering::SeqCst), 2, "one login for all three");
        assert_eq!(identity.token().expose(), "login-1");
        assert_eq!(store.load_identity().unwrap().token.expose(), "login-1");
        assert!(store.load_identity().unwrap().secret_id.is_none(), "a certificate keeps nothing");
        // A restart carries on with the kept token, and can still log in again by itself.
        let again = Identity::login(&vault, &cert(Some("node")), &store).await.unwrap();
        assert_eq!(again.token().expose(), "login-1");
        vault.tokens.lock().unwrap().clear();
        again.refresh(&vault, &store).await.unwrap();
        assert_eq!(again.token().expose(), "login-2");
        // A role vault refuses: the error is vault's reason.
        let e = Identity::login(&vault, &cert(Some("other")), &MemoryStore::default()).await;
        let e = crate::report::chain(&e.unwrap_err());
        assert!(
            e.starts_with("certificate login failed") && e.contains("invalid certificate"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_jwt_is_read_again_at_every_login() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token.jwt");
        std::fs::write(&file, format!("{JWT_A}\n")).unwrap();
        let auth =
            AuthConfig::Jwt { jwt_file: file.clone(), role: "hosts".into(), mount: "jwt".into() };
        let vault = FakeVault::default();
        *vault.jwt.lock().unwrap() = JWT_A.into();
        let store = MemoryStore::default();
        let identity = Identity::login(&vault, &auth, &store).await.unwrap();
        assert_eq!(identity.token().expose(), "login-0");
        // The identity provider renewed the file: the next login sends the new JWT.
        std::fs::write(&file, JWT_B).unwrap();
        *vault.jwt.lock().unwrap() = JWT_B.into();
        vault.tokens.lock().unwrap().clear();
        identity.refresh(&vault, &store).await.unwrap();
        assert_eq!(identity.token().expose(), "login-1");
        // A JWT vault refuses: its reason; the JWT itself is never in the error.
        std::fs::write(&file, JWT_A).unwrap();
        vault.tokens.lock().unwrap().clear();
        let e = crate::report::chain(&identity.refresh(&vault, &store).await.unwrap_err());
        assert!(e.starts_with("JWT login failed") && e.contains("invalid audience"), "{e}");
        assert!(!e.contains(JWT_A), "{e}");
    }
}

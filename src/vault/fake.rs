//! A fake [`Vault`] for the unit tests of the plugin's identity and of `check`: tokens it
//! knows, an AppRole, wrapping tokens, and renewals that can be capped (a max TTL reached).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::{
    ChildTokenRequest, IssuedToken, Login, Secret, Token, TokenInfo, Unwrapped, Vault, VaultError,
};
use crate::volume::Source;

pub const ROLE_ID: &str = "role-1";
pub const SECRET_ID: &str = "secret-1";

#[derive(Default)]
pub struct FakeVault {
    /// Tokens Vault knows, with what lookup-self says of them.
    pub tokens: Mutex<BTreeMap<String, TokenInfo>>,
    /// What a renewal grants at most (a max TTL near); `None`: what was asked.
    pub renew_cap: Mutex<Option<Duration>>,
    /// Wrapping tokens not yet used, with what they wrap.
    pub wrapped: Mutex<BTreeMap<String, String>>,
    pub logins: AtomicUsize,
    pub sealed: AtomicBool,
    /// The JWT the jwt method accepts (for role `hosts`); the cert method accepts role `node`
    /// or none.
    pub jwt: Mutex<String>,
}

impl FakeVault {
    pub fn knows(&self, token: &str, ttl: Duration) {
        let info = TokenInfo { ttl, renewable: true, policies: vec!["default".into()] };
        self.tokens.lock().unwrap().insert(token.into(), info);
    }

    fn denied(path: &str) -> VaultError {
        VaultError::Denied { path: path.into() }
    }

    fn issue(&self) -> IssuedToken {
        let n = self.logins.fetch_add(1, Ordering::SeqCst);
        let token = format!("login-{n}");
        self.knows(&token, Duration::from_secs(60));
        IssuedToken {
            token: Token::new(token),
            accessor: format!("acc-{n}"),
            ttl: Duration::from_secs(60),
            renewable: true,
        }
    }
}

impl Vault for FakeVault {
    async fn create_child_token(
        &self,
        _: &Token,
        _: &ChildTokenRequest,
    ) -> Result<IssuedToken, VaultError> {
        Err(Self::denied("auth/token/create"))
    }

    async fn read(&self, _: &Token, source: &Source) -> Result<Secret, VaultError> {
        Err(VaultError::NotFound { path: source.path.clone() })
    }

    async fn revoke_certificate(
        &self,
        _: &Token,
        _: &super::pki::Issued,
    ) -> Result<(), VaultError> {
        Ok(())
    }

    async fn revoke_self(&self, token: &Token) -> Result<(), VaultError> {
        self.tokens.lock().unwrap().remove(token.expose());
        Ok(())
    }

    async fn renew_self(&self, token: &Token, increment: Duration) -> Result<Duration, VaultError> {
        self.health().await?;
        let mut tokens = self.tokens.lock().unwrap();
        let info = tokens.get_mut(token.expose()).ok_or_else(|| Self::denied("renew-self"))?;
        info.ttl = self.renew_cap.lock().unwrap().map_or(increment, |cap| increment.min(cap));
        Ok(info.ttl)
    }

    async fn renew_lease(&self, _: &Token, _: &str, _: Duration) -> Result<Duration, VaultError> {
        Err(Self::denied("sys/leases/renew"))
    }

    async fn lookup_self(&self, token: &Token) -> Result<TokenInfo, VaultError> {
        self.tokens
            .lock()
            .unwrap()
            .get(token.expose())
            .cloned()
            .ok_or_else(|| Self::denied("auth/token/lookup-self"))
    }

    async fn capabilities_self(&self, _: &Token, _: &str) -> Result<Vec<String>, VaultError> {
        Ok(vec!["update".into()])
    }

    async fn health(&self) -> Result<(), VaultError> {
        if self.sealed.load(Ordering::SeqCst) {
            return Err(VaultError::Status {
                path: "sys/health".into(),
                status: 503,
                message: "Vault is sealed".into(),
            });
        }
        Ok(())
    }

    async fn wrapping_creation_path(&self, wrapping: &Token) -> Result<String, VaultError> {
        let wrapped = self.wrapped.lock().unwrap();
        wrapped.get(wrapping.expose()).cloned().ok_or_else(|| Self::denied("sys/wrapping/lookup"))
    }

    async fn unwrap(&self, wrapping: &Token) -> Result<Unwrapped, VaultError> {
        let secret = self.wrapped.lock().unwrap().remove(wrapping.expose());
        secret
            .map(|_| Unwrapped::SecretId(Token::new(SECRET_ID.into())))
            .ok_or_else(|| Self::denied("sys/wrapping/unwrap"))
    }

    async fn approle_login(
        &self,
        role_id: &str,
        secret_id: &Token,
    ) -> Result<IssuedToken, VaultError> {
        if role_id != ROLE_ID || secret_id.expose() != SECRET_ID {
            return Err(Self::denied("auth/approle/login"));
        }
        Ok(self.issue())
    }

    async fn login(&self, login: &Login<'_>) -> Result<IssuedToken, VaultError> {
        let refused = |message: &str| VaultError::Status {
            path: login.path(),
            status: 400,
            message: message.into(),
        };
        match login {
            Login::Cert { role: None | Some("node"), .. } => Ok(self.issue()),
            Login::Cert { .. } => {
                Err(refused("invalid certificate or no client certificate supplied"))
            }
            Login::Jwt { role: "hosts", jwt, .. } if jwt.expose() == *self.jwt.lock().unwrap() => {
                Ok(self.issue())
            }
            Login::Jwt { .. } => {
                Err(refused("error validating token: invalid audience (aud) claim"))
            }
        }
    }
}

//! The fake's tokens: those it knows, child tokens and their revocation with their parent,
//! renewals, logins, wrapping tokens.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{denied, Child, FakeVault, Known, Wrapped, Wrapping};
use crate::vault::{ChildTokenRequest, IssuedToken, Token, TokenInfo, Unwrapped, VaultError};

/// How long a login's token lives.
const LOGIN_TTL: Duration = Duration::from_secs(60);
/// How long an unwrapped token lives.
const UNWRAPPED_TTL: Duration = Duration::from_secs(3600);

impl FakeVault {
    /// Vault knows `token` (renewable, policy `default`), with `ttl` left.
    pub fn knows(&self, token: &str, ttl: Duration) {
        self.knows_info(
            token,
            TokenInfo { ttl, renewable: true, policies: vec!["default".into()] },
        );
    }

    /// Vault knows `token`, as `info` says.
    pub fn knows_info(&self, token: &str, info: TokenInfo) {
        self.tokens.lock().unwrap().insert(token.into(), Known { info, parent: None });
    }

    /// A wrapping token that `creation_path` made, holding `token`.
    pub fn wraps_token(&self, wrapping: &str, creation_path: &str, token: &str) {
        let wrapped =
            Wrapping { creation_path: creation_path.into(), holds: Wrapped::Token(token.into()) };
        self.wrapped.lock().unwrap().insert(wrapping.into(), wrapped);
    }

    /// A wrapping token that `creation_path` made, holding a secret_id of [`super::ROLE_ID`].
    pub fn wraps_secret_id(&self, wrapping: &str, creation_path: &str, secret_id: &str) {
        self.secret_ids.lock().unwrap().insert(secret_id.into());
        let holds = Wrapped::SecretId(secret_id.into());
        let wrapped = Wrapping { creation_path: creation_path.into(), holds };
        self.wrapped.lock().unwrap().insert(wrapping.into(), wrapped);
    }

    /// How many child tokens were created.
    pub fn created(&self) -> usize {
        self.children.lock().unwrap().len()
    }

    /// The parent of each child token created, in order.
    pub fn parents(&self) -> Vec<String> {
        self.children.lock().unwrap().iter().map(|c| c.parent.clone()).collect()
    }

    /// What Vault knows of `token`; denied (403) for a token it does not know.
    pub(super) fn known(&self, token: &Token, path: &str) -> Result<Known, VaultError> {
        self.tokens.lock().unwrap().get(token.expose()).cloned().ok_or_else(|| denied(path))
    }

    pub(super) fn create_child(
        &self,
        parent: &Token,
        request: &ChildTokenRequest,
    ) -> Result<IssuedToken, VaultError> {
        let path = "auth/token/create";
        let of_parent = self.known(parent, path)?.info.policies;
        if self.no_child_tokens.lock().unwrap().contains(parent.expose()) {
            return Err(denied(path));
        }
        let policies = request.policies.clone().unwrap_or_else(|| of_parent.clone());
        if let Some(extra) = policies.iter().find(|p| !of_parent.contains(p)) {
            return Err(VaultError::Status {
                path: path.into(),
                status: 400,
                message: format!("child policies must be subset of parent ({extra})"),
            });
        }
        let mut children = self.children.lock().unwrap();
        let n = children.len();
        children.push(Child { parent: parent.expose().to_owned(), request: request.clone() });
        let token = format!("child-{n}");
        let info = TokenInfo { ttl: request.ttl, renewable: true, policies };
        let known = Known { info, parent: Some(parent.expose().to_owned()) };
        self.tokens.lock().unwrap().insert(token.clone(), known);
        Ok(IssuedToken {
            // Made in the parent's namespace, as HttpVault tags it.
            token: Token::new(token).in_namespace(parent.namespace()),
            accessor: format!("acc-{n}"),
            ttl: request.ttl,
            renewable: true,
        })
    }

    /// `revoke-self`: the token, its children (theirs too) and every lease they read.
    pub(super) fn revoke_token(&self, token: &Token) -> Result<(), VaultError> {
        let path = "auth/token/revoke-self";
        if self.unreachable_revoke.load(Ordering::SeqCst) {
            return Err(VaultError::Status {
                path: path.into(),
                status: 503,
                message: "sealed".into(),
            });
        }
        let mut tokens = self.tokens.lock().unwrap();
        if tokens.remove(token.expose()).is_none() {
            return Err(denied(path));
        }
        let mut gone = vec![token.expose().to_owned()];
        let mut i = 0;
        while i < gone.len() {
            let children: Vec<String> = tokens
                .iter()
                .filter(|(_, known)| known.parent.as_deref() == Some(gone[i].as_str()))
                .map(|(child, _)| child.clone())
                .collect();
            for child in children {
                tokens.remove(&child);
                gone.push(child);
            }
            i += 1;
        }
        self.leases.lock().unwrap().retain(|_, owner| !gone.contains(owner));
        self.revoked.lock().unwrap().push(token.expose().to_owned());
        Ok(())
    }

    pub(super) fn renew_token(
        &self,
        token: &Token,
        increment: Duration,
    ) -> Result<Duration, VaultError> {
        let cap = *self.token_renew_cap.lock().unwrap();
        let mut tokens = self.tokens.lock().unwrap();
        let known =
            tokens.get_mut(token.expose()).ok_or_else(|| denied("auth/token/renew-self"))?;
        known.info.ttl = cap.map_or(increment, |cap| increment.min(cap));
        Ok(known.info.ttl)
    }

    /// A login's token: `login-N`, known for [`LOGIN_TTL`].
    pub(super) fn issue_login(&self) -> IssuedToken {
        let n = self.logins.fetch_add(1, Ordering::SeqCst);
        let token = format!("login-{n}");
        self.knows(&token, LOGIN_TTL);
        IssuedToken {
            token: Token::new(token),
            accessor: format!("login-acc-{n}"),
            ttl: LOGIN_TTL,
            renewable: true,
        }
    }

    /// Vault's answer for a wrapping token it does not know (used, expired, never made).
    fn not_wrapping(path: &str) -> VaultError {
        VaultError::Status {
            path: path.into(),
            status: 400,
            message: "wrapping token is not valid or does not exist".into(),
        }
    }

    pub(super) fn creation_path(&self, wrapping: &Token) -> Result<String, VaultError> {
        let mut wrapped = self.wrapped.lock().unwrap();
        if let Some(race) = self.lookup_race.lock().unwrap().take() {
            wrapped.remove(wrapping.expose());
            return Err(race);
        }
        let path = "sys/wrapping/lookup";
        wrapped
            .get(wrapping.expose())
            .map(|w| w.creation_path.clone())
            .ok_or_else(|| Self::not_wrapping(path))
    }

    pub(super) fn unwrap_token(&self, wrapping: &Token) -> Result<Unwrapped, VaultError> {
        let held = self.wrapped.lock().unwrap().remove(wrapping.expose());
        match held.map(|w| w.holds) {
            Some(Wrapped::SecretId(secret_id)) => Ok(Unwrapped::SecretId(Token::new(secret_id))),
            Some(Wrapped::Token(token)) => {
                self.knows(&token, UNWRAPPED_TTL);
                Ok(Unwrapped::Token(IssuedToken {
                    token: Token::new(token),
                    accessor: "acc-unwrapped".into(),
                    ttl: UNWRAPPED_TTL,
                    renewable: true,
                }))
            }
            None => Err(Self::not_wrapping("sys/wrapping/unwrap")),
        }
    }
}

//! The fake answers as Vault does, so the tests over it test the plugin, not the fake.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;

use super::{FakeVault, ROLE_ID, SECRET_ID};
use crate::vault::{ChildTokenRequest, Unwrapped, Vault, VaultError};
use crate::vault::{Login, Token};
use crate::volume::Source;

fn request(policies: Option<&[&str]>) -> ChildTokenRequest {
    ChildTokenRequest {
        policies: policies.map(|p| p.iter().map(|s| s.to_string()).collect()),
        ttl: Duration::from_secs(60),
        display_name: "test".into(),
        meta: Vec::new(),
    }
}

fn source(path: &str) -> Source {
    Source { dir: None, path: path.into(), params: Default::default() }
}

fn status(e: VaultError) -> u16 {
    match e {
        VaultError::Status { status, .. } => status,
        VaultError::Denied { .. } => 403,
        VaultError::NotFound { .. } => 404,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_revoked_token_takes_its_children_and_their_leases_and_unknown_tokens_are_denied() {
    let vault = FakeVault::default();
    vault.knows("parent", Duration::from_secs(600));
    vault.secrets.lock().unwrap().insert("db/creds/r".into(), json!({"username": "u-{n}"}));
    vault.leased.lock().unwrap().insert("db/creds/r".into(), 60);
    let parent = Token::new("parent".into());
    let child = vault.create_child_token(&parent, &request(None)).await.unwrap().token;
    let grandchild = vault.create_child_token(&child, &request(None)).await.unwrap().token;
    let secret = vault.read(&grandchild, &source("db/creds/r")).await.unwrap();
    assert_eq!(secret.data["username"], "u-0", "{{n}}: the number of the read");
    let lease = secret.lease.clone().unwrap().id;
    let renewed = vault.renew_lease(&grandchild, &lease, Duration::from_secs(30)).await;
    assert_eq!(renewed.unwrap(), Duration::from_secs(30));
    assert_eq!(vault.lookup_self(&child).await.unwrap().policies, ["default"], "the parent's");

    vault.revoke_self(&parent).await.unwrap();
    assert_eq!(*vault.revoked.lock().unwrap(), ["parent"]);
    for token in [&parent, &child, &grandchild] {
        assert!(vault.lookup_self(token).await.unwrap_err().is_denied());
        assert!(vault.renew_self(token, Duration::from_secs(60)).await.unwrap_err().is_denied());
        assert!(vault.read(token, &source("db/creds/r")).await.unwrap_err().is_denied());
        assert!(vault.revoke_self(token).await.unwrap_err().is_denied(), "already gone");
    }
    vault.knows("other", Duration::from_secs(600));
    let e = vault.renew_lease(&Token::new("other".into()), &lease, Duration::from_secs(30)).await;
    assert_eq!(status(e.unwrap_err()), 400, "the lease went with its token");
}

#[tokio::test]
async fn child_tokens_are_refused_beyond_the_parent_s_policies_or_capability() {
    let vault = FakeVault::default();
    vault.knows("parent", Duration::from_secs(600));
    let parent = Token::new("parent".into());
    let wider = vault.create_child_token(&parent, &request(Some(&["default", "admin"]))).await;
    assert_eq!(status(wider.unwrap_err()), 400);
    vault.no_child_tokens.lock().unwrap().insert("parent".into());
    let caps = vault.capabilities_self(&parent, "auth/token/create").await.unwrap();
    assert_eq!(caps, ["deny"]);
    let e = vault.create_child_token(&parent, &request(None)).await.unwrap_err();
    assert!(e.is_denied(), "{e:?}");
    assert_eq!(vault.created(), 0);
}

#[tokio::test]
async fn a_sealed_vault_answers_503_to_everything() {
    let vault = FakeVault::default();
    vault.knows("t", Duration::from_secs(600));
    vault.wraps_token("w", "auth/token/create", "own");
    vault.sealed.store(true, Ordering::SeqCst);
    let t = Token::new("t".into());
    let w = Token::new("w".into());
    let d = Duration::from_secs(60);
    let login = Login::Cert { mount: "cert", role: None };
    let answers = [
        vault.health().await.err(),
        vault.lookup_self(&t).await.err(),
        vault.renew_self(&t, d).await.err(),
        vault.renew_lease(&t, "l", d).await.err(),
        vault.read(&t, &source("kv/a")).await.err(),
        vault.create_child_token(&t, &request(None)).await.err(),
        vault.revoke_self(&t).await.err(),
        vault.capabilities_self(&t, "auth/token/create").await.err(),
        vault.wrapping_creation_path(&w).await.err(),
        vault.unwrap(&w).await.err(),
        vault.approle_login(ROLE_ID, &Token::new(SECRET_ID.into())).await.err(),
        vault.login(&login).await.err(),
    ];
    for e in answers {
        assert_eq!(status(e.expect("refused while sealed")), 503);
    }
    vault.sealed.store(false, Ordering::SeqCst);
    assert!(vault.lookup_self(&t).await.is_ok(), "nothing was lost");
    assert!(vault.wrapped.lock().unwrap().contains_key("w"), "nor used");
}

#[tokio::test]
async fn a_wrapping_token_is_used_up_by_its_unwrap() {
    let vault = FakeVault::default();
    vault.wraps_secret_id("w", "auth/approle/role/r/secret-id", "s-2");
    let w = Token::new("w".into());
    let path = vault.wrapping_creation_path(&w).await.unwrap();
    assert_eq!(path, "auth/approle/role/r/secret-id");
    let Unwrapped::SecretId(secret_id) = vault.unwrap(&w).await.unwrap() else { panic!() };
    assert_eq!(status(vault.unwrap(&w).await.unwrap_err()), 400);
    assert_eq!(status(vault.wrapping_creation_path(&w).await.unwrap_err()), 400);
    let login = vault.approle_login(ROLE_ID, &secret_id).await.unwrap();
    assert_eq!(login.token.expose(), "login-0");
    assert!(vault.lookup_self(&login.token).await.is_ok(), "a login's token is known");
    let wrong = vault.approle_login(ROLE_ID, &Token::new("s-3".into())).await;
    assert!(wrong.unwrap_err().is_denied());
}

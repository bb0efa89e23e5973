//! A volume's own identity from `wrapped-token`: unwrapped once, checked before it is used (its
//! creation path, its capability to make child tokens), a wrapped secret_id logging each mount
//! in, and what a second node or a reboot meets.

use super::*;

#[tokio::test]
async fn a_wrapped_token_becomes_the_volume_identity_once() {
    let f = fixture();
    f.vault.wraps_token("wrap-1", "auth/token/create", "own-token");
    f.driver
        .create("team", opts(&[("path", "kv/app"), ("wrapped-token", "wrap-1")]))
        .await
        .unwrap();
    // Docker may repeat the Create with the same (now used) wrapping token.
    f.driver
        .create("team", opts(&[("path", "kv/app"), ("wrapped-token", "wrap-1")]))
        .await
        .unwrap();
    let stored = &f.store.load_volumes()[0];
    assert_eq!(
        stored.options["wrapped-token"],
        crate::volume::UNWRAPPED,
        "the wrapping token never reaches the disk"
    );
    assert_eq!(f.store.load_volume_identities()[0].token.as_ref().unwrap().expose(), "own-token");
    f.driver.mount("team", ID).await.unwrap();
    assert_eq!(
        f.vault.parents(),
        vec!["own-token"],
        "mounts get child tokens of the volume's token"
    );
    f.driver.unmount("team", ID).await.unwrap();
    // A used wrapping token cannot make another volume.
    let e = crate::report::chain(
        &f.driver
            .create("other", opts(&[("path", "kv/app"), ("wrapped-token", "wrap-1")]))
            .await
            .unwrap_err(),
    );
    assert!(e.contains("used, expired or unknown") && e.contains("intercepted"), "{e}");
    f.driver.remove("team").await.unwrap();
    assert!(
        f.vault.revoked.lock().unwrap().contains(&"own-token".to_string()),
        "remove revokes the volume's identity"
    );
    assert!(f.store.load_volume_identities().is_empty());
}

#[tokio::test]
async fn a_wrapped_token_that_cannot_create_child_tokens_is_refused_at_create() {
    let f = fixture();
    f.vault.wraps_token("wrap-n", "auth/token/create", "no-create-token");
    f.vault.no_child_tokens.lock().unwrap().insert("no-create-token".into());
    let e = crate::report::chain(
        &f.driver
            .create("team", opts(&[("path", "kv/app"), ("wrapped-token", "wrap-n")]))
            .await
            .unwrap_err(),
    );
    assert!(
        e.contains("option `wrapped-token`")
            && e.contains("may not create its mounts' child tokens")
            && e.contains("deny"),
        "{e}"
    );
    assert!(!e.contains("no-create-token"), "never the token: {e}");
    assert!(f.vault.revoked.lock().unwrap().contains(&"no-create-token".to_string()));
    assert!(f.store.load_volumes().is_empty() && f.store.load_volume_identities().is_empty());
}

#[tokio::test]
async fn a_substituted_wrapping_token_is_refused_unused() {
    let f = fixture();
    f.vault.wraps_token("wrap-x", "sys/wrapping/wrap", "attacker-token");
    let e = crate::report::chain(
        &f.driver
            .create("team", opts(&[("path", "kv/app"), ("wrapped-token", "wrap-x")]))
            .await
            .unwrap_err(),
    );
    assert!(e.contains("`sys/wrapping/wrap`") && e.contains("refusing"), "{e}");
    assert!(f.vault.wrapped.lock().unwrap().contains_key("wrap-x"), "not unwrapped");
    assert!(f.store.load_volumes().is_empty());
}

#[tokio::test]
async fn a_wrapped_secret_id_logs_each_mount_in() {
    let f = fixture();
    f.vault.wraps_secret_id("wrap-s", "auth/approle/role/web/secret-id", "secret-id:abc");
    f.driver
        .create(
            "web",
            opts(&[("path", "kv/app"), ("wrapped-token", "wrap-s"), ("role-id", "role-1")]),
        )
        .await
        .unwrap();
    assert_eq!(
        *f.vault.revoked.lock().unwrap(),
        vec!["login-0"],
        "the probe login at create is revoked"
    );
    let path = f.driver.mount("web", ID).await.unwrap();
    assert_eq!(read(&path, "password"), "pw");
    assert!(f.vault.parents().is_empty(), "no child tokens: a login per mount");
    f.driver.unmount("web", ID).await.unwrap();
    assert_eq!(*f.vault.revoked.lock().unwrap(), vec!["login-0", "login-1"]);
}

#[tokio::test]
async fn a_volume_whose_identity_did_not_survive_a_reboot_says_so() {
    let f = fixture();
    f.vault.wraps_token("wrap-1", "auth/token/create", "own-token");
    f.driver
        .create("team", opts(&[("path", "kv/app"), ("wrapped-token", "wrap-1")]))
        .await
        .unwrap();
    f.store.volume_identities.lock().unwrap().clear(); // the private tmpfs is gone
    let restarted =
        f.restarted(FakeMounter::default(), Arc::new(IdentitySlot::new(Err("no".into()))));
    restarted.restore().await;
    let e = crate::report::chain(&restarted.mount("team", ID).await.unwrap_err());
    assert!(e.contains("did not survive a reboot") && e.contains("fresh wrapped-token"), "{e}");
}

#[tokio::test]
async fn a_wrapped_token_in_a_service_definition_fails_on_the_second_node_saying_why() {
    let f = fixture();
    f.vault.wraps_token("wrap-svc", "auth/token/create", "own-token");
    let definition = opts(&[("path", "kv/app"), ("wrapped-token", "wrap-svc")]);
    f.driver.create("svc", definition.clone()).await.unwrap();
    // A second node: its own plugin and state, the same Vault, the same volume definition.
    let dir = tempfile::tempdir().unwrap();
    let node_two = Driver::<Fakes>::new(Parts {
        vault: f.vault.clone(),
        mounter: FakeMounter::default(),
        store: Arc::new(MemoryStore::default()),
        engines: vec![Arc::new(FakeEngine::default())],
        identity: Arc::new(IdentitySlot::new(Ok(Arc::new(Identity::fixed(Token::new(
            "node-two-token".into(),
        )))))),
        defaults: Defaults::default(),
        userns: None,
        mounts_root: dir.path().join("mounts"),
        files_root: dir.path().join("files"),
        driver_name: "vault-secrets".into(),
        templates_dir: PathBuf::from("/nonexistent"),
        audit: Arc::new(crate::audit::Audit::memory()),
    });
    let e = crate::report::chain(&node_two.create("svc", definition).await.unwrap_err());
    assert!(e.contains(volume_identity::SINGLE_USE), "{e}");
    assert!(e.starts_with("volume svc: option `wrapped-token`"), "{e}");
    assert!(!e.contains("wrap-svc"), "the wrapping token is not quoted: {e}");
    assert!(node_two.list().is_empty(), "nothing half-done on the second node");
    assert_eq!(f.driver.list().len(), 1, "the first node keeps its volume");
}

/// Two Creates of one name with different wrapped tokens at once (two engines, or dockerd's
/// retry of a slow Create): the loser is refused and its token revoked; the winner's identity
/// record is not overwritten by the loser's, so its mounts work after a restart too.
#[tokio::test]
async fn a_create_that_loses_a_race_leaves_the_winners_identity_record() {
    let f = fixture();
    f.vault.wraps_token("wrap-a", "auth/token/create", "token-a");
    f.vault.wraps_token("wrap-b", "auth/token/create", "token-b");
    let (a, b) = tokio::join!(
        f.driver.create("team", opts(&[("path", "kv/app"), ("wrapped-token", "wrap-a")])),
        f.driver.create("team", opts(&[("path", "kv/app"), ("wrapped-token", "wrap-b")])),
    );
    let (won, lost) = match (&a, &b) {
        (Ok(()), Err(_)) => ("token-a", "token-b"),
        (Err(_), Ok(())) => ("token-b", "token-a"),
        other => panic!("one Create wins: {other:?}"),
    };
    let stored = f.store.load_volume_identities();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].token.as_ref().unwrap().expose(), won, "the winner's record");
    assert_eq!(*f.vault.revoked.lock().unwrap(), vec![lost.to_string()], "the loser's revoked");
    let restarted = f.restarted(FakeMounter::default(), f.driver.identity.clone());
    restarted.restore().await;
    restarted.mount("team", ID).await.unwrap();
    assert_eq!(f.vault.parents(), vec![won], "mounts are children of the winner's token");
}

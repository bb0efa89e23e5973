//! What a mount leaves in the plugin: a mount whose record cannot be saved fails and is
//! undone (nothing runs unrecorded); parsed data is dropped once rendered.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;

use super::{fixture, opts, ID};
use crate::lease::{Job, Worker};
use crate::state::Store;

#[tokio::test]
async fn a_mount_that_cannot_be_recorded_fails_and_is_undone() {
    let f = fixture();
    f.driver.create("app", opts(&[("path", "kv/app")])).await.unwrap();
    f.store.full.store(true, Ordering::SeqCst);
    let e = f.driver.mount("app", ID).await.unwrap_err();
    let chain = crate::report::chain(&e);
    assert!(chain.contains("cannot record the mount of volume app, so it does not run"), "{chain}");
    assert!(chain.contains("no room to record"), "{chain}");
    assert_eq!(*f.vault.revoked.lock().unwrap(), vec!["child-0"], "its token is revoked");
    assert_eq!(f.vault.reads.load(Ordering::SeqCst), 0, "nothing was read with it");
    assert!(f.driver.mounter.mounted.lock().unwrap().is_empty(), "nothing is left mounted");
    assert!(f.store.load_mounts().is_empty());
    assert_eq!(f.driver.get("app").unwrap().mountpoint, None);

    // With room again, the same ID mounts and is recorded.
    f.store.full.store(false, Ordering::SeqCst);
    f.driver.mount("app", ID).await.unwrap();
    assert_eq!(f.store.load_mounts().len(), 1);
}

/// The data the mount `ID` of `volume` keeps after its files are written.
async fn kept(f: &super::Fixture, volume: &str) -> Option<Vec<Vec<String>>> {
    let slot = f.driver.volume(volume).unwrap().slot(ID).unwrap();
    let guard = slot.lock().await;
    let secrets = guard.as_ref().unwrap().secrets.as_ref()?;
    Some(secrets.iter().map(|s| s.data.keys().cloned().collect()).collect())
}

#[tokio::test(start_paused = true)]
async fn parsed_data_is_dropped_once_rendered_but_what_a_refresh_needs() {
    let f = fixture();
    f.vault
        .secrets
        .lock()
        .unwrap()
        .insert("database/creds/app".into(), json!({"username": "user-{n}", "password": "db"}));
    f.vault.leased.lock().unwrap().insert("database/creds/app".into(), 3600);
    f.driver.create("kv", opts(&[("path", "kv/app"), ("refresh", "10s")])).await.unwrap();
    f.driver
        .create(
            "both",
            opts(&[("path", "kv/app"), ("path.db", "database/creds/app"), ("refresh", "10s")]),
        )
        .await
        .unwrap();
    f.driver
        .create("off", opts(&[("path.db", "database/creds/app"), ("refresh", "0")]))
        .await
        .unwrap();
    f.driver.mount("kv", ID).await.unwrap();
    let path = f.driver.mount("both", ID).await.unwrap();
    f.driver.mount("off", ID).await.unwrap();
    assert_eq!(kept(&f, "kv").await, None, "a refresh reads every source again");
    assert_eq!(kept(&f, "off").await, None, "no refresh: nothing is needed");
    assert_eq!(
        kept(&f, "both").await,
        Some(vec![vec![], vec!["password".to_string(), "username".to_string()]]),
        "only the leased source's data, which a refresh does not read again"
    );
    // A refresh renders the kept lease's data with the fresh KV data.
    f.vault.secrets.lock().unwrap().insert("kv/app".into(), json!({"password": "new"}));
    tokio::time::advance(Duration::from_secs(10)).await;
    f.driver.tick(&Job::mount("both", ID)).await.unwrap();
    assert_eq!(std::fs::read_to_string(path.join("password")).unwrap(), "new");
    assert_eq!(std::fs::read_to_string(path.join("db/password")).unwrap(), "db");
    assert_eq!(f.vault.created(), 3, "no fresh generation was needed");
}

/// Each token waiting for its revocation is counted once: a failed retry records it again
/// before the earlier record goes, and tokens kept from before a restart may have no accessor.
#[tokio::test]
async fn pending_revocations_count_each_token_once_with_or_without_an_accessor() {
    let f = fixture();
    f.vault.unreachable_revoke.store(true, Ordering::SeqCst);
    let kept = [("t-1", None), ("t-2", None), ("t-3", Some("acc-3")), ("t-3", Some("acc-3"))];
    for (token, accessor) in kept {
        f.vault.knows(token, Duration::from_secs(60));
        let token = crate::vault::Token::new(token.into());
        let holder = crate::state::Holder::Remove;
        assert!(!f.driver.revoke_for("app", &holder, &token, accessor, None).await);
    }
    assert_eq!(f.driver.pending_revocations(), 3, "t-1, t-2 and t-3");
    f.vault.unreachable_revoke.store(false, Ordering::SeqCst);
    assert_eq!(f.driver.retry_revocations().await, 0);
    assert_eq!(f.driver.pending_revocations(), 0);
}

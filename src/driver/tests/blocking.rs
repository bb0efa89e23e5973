//! What must never block or mislead: `status` with busy mounts, and a wrapped token met at
//! its lookup while another node unwraps it.

use super::*;

/// `status` (and every metrics scrape) waits for busy mounts once, for all of them together,
/// and lists those still busy: never 2 s per busy mount one after another.
#[tokio::test(start_paused = true)]
async fn status_waits_once_for_all_busy_mounts_and_lists_them_as_busy() {
    let f = fixture();
    f.driver.create("app", opts(&[("path", "kv/app")])).await.unwrap();
    let ids = ["busy-a", "busy-b", "busy-c", "idle"];
    for id in ids {
        f.driver.mount("app", id).await.unwrap();
    }
    let volume = f.driver.volume("app").unwrap();
    let mut held = Vec::new();
    for id in &ids[..3] {
        held.push(volume.slot(id).unwrap().lock_owned().await);
    }
    let started = Instant::now();
    let status = f.driver.status().await;
    let waited = started.elapsed();
    assert!(waited <= status::STATUS_WAIT, "waited {waited:?} for 3 busy mounts");
    assert_eq!(status[0].busy, ["busy-a", "busy-b", "busy-c"]);
    let shown: Vec<&str> = status[0].mounts.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(shown, ["idle"]);
    drop(held);
    let status = f.driver.status().await;
    assert!(status[0].busy.is_empty());
    assert_eq!(status[0].mounts.len(), 4);
}

/// Swarm creates a service's volume on every node at once: a node whose lookup meets the
/// token while another node unwraps it gets a reply without `creation_path` (or Vault's
/// internal error for the missing wrapping information). It must still say the token is
/// single-use, not that Vault's reply was unexpected.
#[tokio::test]
async fn a_wrapped_token_met_mid_unwrap_at_its_lookup_says_it_is_single_use() {
    let races = [
        // HttpVault's error for a 200 reply whose data has no creation_path.
        VaultError::BadReply {
            path: "sys/wrapping/lookup".into(),
            message: "no data.creation_path".into(),
        },
        VaultError::Status {
            path: "sys/wrapping/lookup".into(),
            status: 500,
            message: "1 error occurred:\n\t* wrapping information was nil; wrapping token may be from a previous Vault version".into(),
        },
        VaultError::Status {
            path: "sys/wrapping/lookup".into(),
            status: 400,
            message: "wrapping token is not valid or does not exist".into(),
        },
    ];
    for race in races {
        let f = fixture();
        f.vault.wraps_token("wrap-1", "auth/token/create", "own-token");
        *f.vault.lookup_race.lock().unwrap() = Some(race);
        let e = crate::report::chain(
            &f.driver
                .create("team", opts(&[("path", "kv/app"), ("wrapped-token", "wrap-1")]))
                .await
                .unwrap_err(),
        );
        assert!(e.contains(crate::driver::volume_identity::SINGLE_USE), "{e}");
        assert!(!e.contains("not what was expected") && !e.contains("wrap-1"), "{e}");
        assert!(f.store.load_volumes().is_empty(), "nothing half-made");
    }
    // A sealed Vault at the lookup is not a used token.
    let f = fixture();
    f.vault.wraps_token("wrap-1", "auth/token/create", "own-token");
    *f.vault.lookup_race.lock().unwrap() = Some(VaultError::Status {
        path: "sys/wrapping/lookup".into(),
        status: 503,
        message: "Vault is sealed".into(),
    });
    let e = crate::report::chain(
        &f.driver
            .create("team", opts(&[("path", "kv/app"), ("wrapped-token", "wrap-1")]))
            .await
            .unwrap_err(),
    );
    assert!(!e.contains(crate::driver::volume_identity::SINGLE_USE) && e.contains("sealed"), "{e}");
}

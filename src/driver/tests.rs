//! Driver unit tests over the fakes: Vault ([`crate::vault::fake`]), the recording mounter,
//! the memory store. What a user would see: paths, reference counts, revocations, errors, no leftovers.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use super::*;
use crate::dockerd::FakeEngine;
use crate::identity::Identity;
use crate::lease::{plan, Worker};
use crate::state::{Holder, MemoryStore};
use crate::tmpfs::FakeMounter;
use crate::vault::fake::{Expiration, FakeVault};
use crate::vault::TokenInfo;

/// The fake edges of the unit tests.
pub(super) struct Fakes;

impl Edges for Fakes {
    type Vault = FakeVault;
    type Mounter = FakeMounter;
    type Store = MemoryStore;
    type Engine = FakeEngine;
}

mod blocking;
mod certificates;
mod containers;
mod login;
mod records;
mod userns;

pub(super) struct Fixture {
    pub(super) driver: Driver<Fakes>,
    pub(super) vault: Arc<FakeVault>,
    store: Arc<MemoryStore>,
    /// The driver's (first) engine.
    engine: Arc<FakeEngine>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// A new driver over the same Vault and store, as after a restart of the plugin.
    fn restarted(&self, mounter: FakeMounter, identity: Arc<IdentitySlot>) -> Driver<Fakes> {
        Driver::<Fakes>::new(Parts {
            vault: self.vault.clone(),
            mounter,
            store: self.store.clone(),
            engines: vec![self.engine.clone()],
            identity,
            defaults: Defaults::default(),
            userns: None,
            mounts_root: self._dir.path().join("mounts"),
            files_root: self._dir.path().join("files"),
            driver_name: "vault-secrets".into(),
            templates_dir: PathBuf::from("/nonexistent"),
            audit: Arc::new(crate::audit::Audit::memory()),
        })
    }
}

pub(super) fn fixture() -> Fixture {
    fixture_with(vec![Arc::new(FakeEngine::default())])
}

/// [`fixture`] over these engines.
fn fixture_with(engines: Vec<Arc<FakeEngine>>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let vault = Arc::new(FakeVault::default());
    let policies = vec!["default".into(), "app".into()];
    let info = TokenInfo { ttl: Duration::from_secs(3600), renewable: true, policies };
    vault.knows_info("plugin-token", info);
    vault.secrets.lock().unwrap().insert("kv/app".into(), json!({"password": "pw", "user": "u"}));
    vault.secrets.lock().unwrap().insert("kv/denied".into(), json!("denied"));
    vault.secrets.lock().unwrap().insert("kv/badkey".into(), json!({"../escape": "x"}));
    let store = Arc::new(MemoryStore::default());
    let identity = Arc::new(IdentitySlot::new(Ok(Arc::new(Identity::fixed(Token::new(
        "plugin-token".into(),
    ))))));
    let uid = rustix::process::getuid().as_raw().to_string();
    let mut defaults = Defaults::default();
    defaults.set("uid", &uid).unwrap();
    defaults.set("gid", &rustix::process::getgid().as_raw().to_string()).unwrap();
    let driver = Driver::<Fakes>::new(Parts {
        vault: vault.clone(),
        mounter: FakeMounter::default(),
        store: store.clone(),
        engines: engines.clone(),
        identity,
        defaults,
        userns: None,
        mounts_root: dir.path().join("mounts"),
        files_root: dir.path().join("files"),
        driver_name: "vault-secrets".into(),
        templates_dir: PathBuf::from("/nonexistent"),
        audit: Arc::new(crate::audit::Audit::memory()),
    });
    let engine = engines.first().cloned().unwrap_or_default();
    Fixture { driver, vault, store, engine, _dir: dir }
}

pub(super) fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

pub(super) const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[tokio::test]
async fn mount_writes_files_and_unmount_revokes() {
    let f = fixture();
    f.driver.create("app", opts(&[("path", "kv/app")])).await.unwrap();
    let path = f.driver.mount("app", ID).await.unwrap();
    assert!(path.ends_with(format!("mounts/app/{ID}")));
    assert_eq!(std::fs::read_to_string(path.join("password")).unwrap(), "pw");
    assert!(f.driver.mounter.is_mounted(&path));
    assert_eq!(f.store.load_mounts().len(), 1);
    // Get and Path never show a mount's path: it is one container's, and they name none.
    assert_eq!(f.driver.get("app").unwrap().mountpoint, None);
    assert_eq!(f.driver.path("app").unwrap(), None);
    assert_eq!(f.driver.get("app").unwrap().status.active_mounts, 1);
    f.driver.unmount("app", ID).await.unwrap();
    assert!(!f.driver.mounter.is_mounted(&path));
    assert!(!path.exists());
    assert_eq!(*f.vault.revoked.lock().unwrap(), vec!["child-0"]);
    assert!(f.store.load_mounts().is_empty());
    assert_eq!(f.driver.get("app").unwrap().mountpoint, None);
}

#[tokio::test]
async fn same_id_twice_is_reference_counted() {
    let f = fixture();
    f.driver.create("app", opts(&[("path", "kv/app")])).await.unwrap();
    let a = f.driver.mount("app", ID).await.unwrap();
    let b = f.driver.mount("app", ID).await.unwrap();
    assert_eq!(a, b);
    assert_eq!(f.vault.created(), 1, "one token for one ID");
    assert_eq!(f.vault.reads.load(Ordering::SeqCst), 1, "one read for one ID");
    f.driver.unmount("app", ID).await.unwrap();
    assert!(f.driver.mounter.is_mounted(&a));
    assert!(f.vault.revoked.lock().unwrap().is_empty());
    f.driver.unmount("app", ID).await.unwrap();
    assert!(!f.driver.mounter.is_mounted(&a));
    f.driver.unmount("app", ID).await.unwrap(); // a repeated Unmount is harmless
}

#[tokio::test]
async fn two_ids_get_two_tokens_and_two_tmpfs() {
    let f = fixture();
    f.driver.create("app", opts(&[("path", "kv/app")])).await.unwrap();
    let (a, b) = tokio::join!(f.driver.mount("app", "id-a"), f.driver.mount("app", "id-b"));
    assert_ne!(a.unwrap(), b.unwrap());
    assert_eq!(f.vault.created(), 2);
    f.driver.unmount("app", "id-a").await.unwrap();
    assert_eq!(f.vault.revoked.lock().unwrap().len(), 1);
    assert_eq!(f.driver.mounter.mounted.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn failures_leave_nothing_behind_and_say_why() {
    let f = fixture();
    f.driver.create("denied", opts(&[("path", "kv/denied")])).await.unwrap();
    f.driver.create("missing", opts(&[("path", "kv/nothing")])).await.unwrap();
    f.driver.create("badkey", opts(&[("path", "kv/badkey")])).await.unwrap();
    for (name, needle) in [
        ("denied", "permission denied on kv/denied"),
        ("missing", "no secret at kv/nothing"),
        ("badkey", "\"../escape\""),
    ] {
        let e = crate::report::chain(&f.driver.mount(name, ID).await.unwrap_err());
        assert!(e.contains(needle), "{e}");
    }
    assert_eq!(f.vault.revoked.lock().unwrap().len(), 3, "every token made was revoked");
    assert!(f.driver.mounter.mounted.lock().unwrap().is_empty());
    assert!(f.store.load_mounts().is_empty());
    // a failed mount does not block Remove
    f.driver.remove("denied").await.unwrap();

    f.driver.create("app", opts(&[("path", "kv/app")])).await.unwrap();
    f.driver.mounter.fail_mount.store(true, Ordering::SeqCst);
    let e = crate::report::chain(&f.driver.mount("app", ID).await.unwrap_err());
    assert!(e.contains("cannot mount volume app"), "{e}");
    assert_eq!(f.vault.revoked.lock().unwrap().len(), 4);
    assert!(!f._dir.path().join("mounts/app").join(ID).exists());

    // No token: the tmpfs made ready meanwhile is unmounted and its directories removed.
    f.driver.mounter.fail_mount.store(false, Ordering::SeqCst);
    f.vault.sealed.store(true, Ordering::SeqCst);
    let e = crate::report::chain(&f.driver.mount("app", ID).await.unwrap_err());
    assert!(e.contains("app"), "{e}");
    assert!(f.driver.mounter.mounted.lock().unwrap().is_empty(), "nothing left mounted");
    for dir in ["mounts/app", "files/app"] {
        assert!(!f._dir.path().join(dir).exists(), "{dir} removed");
    }
    assert!(f.store.load_mounts().is_empty());
}

#[tokio::test]
async fn create_is_idempotent_validated_and_remove_refuses_while_mounted() {
    let f = fixture();
    f.driver.create("app", opts(&[("path", "kv/app")])).await.unwrap();
    f.driver.create("app", opts(&[("path", "kv/app")])).await.unwrap();
    let e = f.driver.create("app", opts(&[("path", "kv/other")])).await.unwrap_err();
    assert!(matches!(e, DriverError::Exists { .. }));
    let e = crate::report::chain(
        &f.driver.create("x", opts(&[("path", "kv/a"), ("bogus", "1")])).await.unwrap_err(),
    );
    assert!(e.contains("bogus"), "{e}");
    assert!(matches!(
        f.driver.create("../x", opts(&[("path", "kv/a")])).await,
        Err(DriverError::InvalidName { .. })
    ));
    assert!(matches!(
        f.driver.mount("app", "../../etc").await,
        Err(DriverError::InvalidMountId { .. })
    ));
    f.driver.mount("app", ID).await.unwrap();
    assert!(matches!(f.driver.remove("app").await, Err(DriverError::InUse { mounts: 1, .. })));
    f.driver.unmount("app", ID).await.unwrap();
    f.driver.remove("app").await.unwrap();
    assert!(f.store.load_volumes().is_empty());
    assert!(matches!(f.driver.get("app"), Err(DriverError::NoSuchVolume { .. })));
}

#[tokio::test]
async fn failed_revocations_are_kept_and_retried() {
    let f = fixture();
    f.driver.create("app", opts(&[("path", "kv/app")])).await.unwrap();
    let path = f.driver.mount("app", ID).await.unwrap();
    f.vault.unreachable_revoke.store(true, Ordering::SeqCst);
    f.driver.unmount("app", ID).await.unwrap();
    assert!(!f.driver.mounter.is_mounted(&path), "the tmpfs goes at once");
    assert!(f.store.load_mounts().is_empty(), "the mount is gone");
    let pending = f.store.load_revocations();
    assert_eq!(pending.len(), 1, "the token is kept for a retry");
    assert_eq!((pending[0].volume.as_str(), &pending[0].mount), ("app", &Holder::Mount(ID.into())));
    assert!(!format!("{:?}", pending[0]).contains("child-0"), "Debug shows no token");
    assert_eq!(f.driver.retry_revocations().await, 1);
    // A restarted plugin retries what the store kept.
    let restarted =
        f.restarted(FakeMounter::default(), Arc::new(IdentitySlot::new(Err("not yet".into()))));
    f.vault.unreachable_revoke.store(false, Ordering::SeqCst);
    restarted.restore().await;
    assert_eq!(restarted.retry_revocations().await, 0);
    assert_eq!(*f.vault.revoked.lock().unwrap(), vec!["child-0"]);
    assert!(f.store.load_revocations().is_empty());
}

#[tokio::test]
async fn restore_serves_live_mounts_and_revokes_gone_ones() {
    let f = fixture();
    f.driver.create("app", opts(&[("path", "kv/app")])).await.unwrap();
    let live = f.driver.mount("app", "live").await.unwrap();
    f.driver.mount("app", "gone").await.unwrap();
    // A new driver over the same store and mounts, as after a restart; one tmpfs vanished.
    let mounter = FakeMounter::default();
    let live_files = f._dir.path().join("files/app/live");
    let options = f.driver.mounter.mounted.lock().unwrap()[0].1.clone();
    mounter.mounted.lock().unwrap().push((live_files.clone(), options));
    mounter.binds.lock().unwrap().push((live.clone(), live_files));
    let identity = Arc::new(IdentitySlot::new(Err("not yet".into())));
    let restarted = f.restarted(mounter, identity);
    restarted.restore().await;
    assert_eq!(restarted.list().len(), 1);
    assert_eq!(
        *f.vault.revoked.lock().unwrap(),
        vec!["child-1"],
        "the vanished mount's token is revoked"
    );
    assert_eq!(restarted.get("app").unwrap().status.active_mounts, 1, "{live:?} restored");
    restarted.unmount("app", "live").await.unwrap();
    assert_eq!(f.vault.revoked.lock().unwrap().len(), 2);
    let e = crate::report::chain(&restarted.mount("app", ID).await.unwrap_err());
    assert!(e.contains("not logged in to vault: not yet"), "{e}");
}

/// A managed plugin's binds go with its propagated mount when it stops (`disable`, a dockerd
/// restart), while the tmpfs mounts, in its `runtime` directory, stay: restore binds them again
/// and adopts the mount, whose Unmount then revokes its token.
#[tokio::test]
async fn restore_binds_again_a_tmpfs_whose_bind_is_gone() {
    let f = fixture();
    f.driver.create("app", opts(&[("path", "kv/app")])).await.unwrap();
    let live = f.driver.mount("app", "live").await.unwrap();
    // dockerd unmounted the bind; the tmpfs, with its files, is still there.
    std::fs::remove_file(&live).unwrap();
    std::fs::create_dir(&live).unwrap();
    let mounter = FakeMounter::default();
    let files = f._dir.path().join("files/app/live");
    let options = f.driver.mounter.mounted.lock().unwrap()[0].1.clone();
    mounter.mounted.lock().unwrap().push((files.clone(), options));
    let restarted = f.restarted(mounter, Arc::new(IdentitySlot::new(Err("not yet".into()))));
    restarted.restore().await;
    assert!(f.vault.revoked.lock().unwrap().is_empty(), "the mount's token is kept");
    assert_eq!(*restarted.mounter.binds.lock().unwrap(), vec![(live.clone(), files.clone())]);
    assert_eq!(read(&live, "password"), "pw");
    restarted.unmount("app", "live").await.unwrap();
    assert_eq!(*f.vault.revoked.lock().unwrap(), vec!["child-0"]);
    assert!(restarted.mounter.binds.lock().unwrap().is_empty());
}

pub(super) fn key(id: &str) -> Job {
    Job::mount("db", id)
}

pub(super) fn read(path: &std::path::Path, name: &str) -> String {
    std::fs::read_to_string(path.join(name)).unwrap()
}

#[tokio::test(start_paused = true)]
async fn leases_are_renewed_then_replaced_by_a_fresh_generation() {
    let f = fixture();
    f.vault
        .secrets
        .lock()
        .unwrap()
        .insert("database/creds/app".into(), json!({"username": "user-{n}", "password": "pw"}));
    f.vault.leased.lock().unwrap().insert("database/creds/app".into(), 60);
    f.driver.create("db", opts(&[("path", "database/creds/app")])).await.unwrap();
    let path = f.driver.mount("db", ID).await.unwrap();
    assert_eq!(read(&path, "username"), "user-0");
    // At two thirds of the lease: a renewal, nothing else.
    tokio::time::advance(Duration::from_secs(41)).await;
    let next = f.driver.tick(&key(ID)).await.unwrap();
    assert_eq!(f.vault.lease_renewals.load(Ordering::SeqCst), 1);
    assert_eq!(f.vault.created(), 1);
    // The max TTL is near: Vault grants 6 s only, so the next tick fetches a fresh secret.
    *f.vault.lease_renew_cap.lock().unwrap() = Some(Duration::from_secs(6));
    tokio::time::sleep_until(next).await;
    let next = f.driver.tick(&key(ID)).await.unwrap();
    tokio::time::sleep_until(next).await;
    f.driver.tick(&key(ID)).await.unwrap();
    assert_eq!(f.vault.created(), 2, "a new token for the new generation");
    assert_eq!(read(&path, "username"), "user-1", "the files were swapped");
    assert!(f.vault.revoked.lock().unwrap().is_empty(), "the old generation has a grace");
    let status = f.driver.status().await;
    assert_eq!(status[0].mounts[0].accessor, "acc-1");
    assert_eq!(status[0].mounts[0].leases[0].lease_id, "database/creds/app/1");
    let record = f.store.load_mounts();
    assert_eq!(record[0].retiring.len(), 1, "the old token is recorded until revoked");
    tokio::time::advance(plan::MAX_GRACE).await;
    f.driver.tick(&key(ID)).await.unwrap();
    assert_eq!(
        *f.vault.revoked.lock().unwrap(),
        vec!["child-0"],
        "old token revoked after the grace"
    );
    f.driver.unmount("db", ID).await.unwrap();
    assert_eq!(*f.vault.revoked.lock().unwrap(), vec!["child-0", "child-1"]);
    assert!(f.driver.leases.is_empty());
}

#[tokio::test(start_paused = true)]
async fn kv_refresh_rewrites_only_on_change_and_survives_an_outage() {
    let f = fixture();
    f.driver.create("db", opts(&[("path", "kv/app"), ("refresh", "10s")])).await.unwrap();
    let path = f.driver.mount("db", ID).await.unwrap();
    let written = std::fs::metadata(path.join("password")).unwrap().modified().unwrap();
    tokio::time::advance(Duration::from_secs(10)).await;
    let next = f.driver.tick(&key(ID)).await.unwrap();
    assert_eq!(f.vault.reads.load(Ordering::SeqCst), 2);
    assert_eq!(
        std::fs::metadata(path.join("password")).unwrap().modified().unwrap(),
        written,
        "unchanged: not rewritten"
    );
    f.vault.secrets.lock().unwrap().insert("kv/app".into(), json!({"password": "new"}));
    f.vault.sealed.store(true, Ordering::SeqCst);
    tokio::time::sleep_until(next).await;
    let retry = f.driver.tick(&key(ID)).await.unwrap();
    assert_eq!(read(&path, "password"), "pw", "the files stay while Vault is down");
    let status = f.driver.status().await;
    assert!(status[0].mounts[0].last_error.as_deref().unwrap().contains("503"), "{status:?}");
    assert!(retry - Instant::now() <= Duration::from_secs(1), "a quick first retry");
    f.vault.sealed.store(false, Ordering::SeqCst);
    tokio::time::sleep_until(retry).await;
    f.driver.tick(&key(ID)).await.unwrap();
    assert_eq!(read(&path, "password"), "new");
    assert!(!path.join("user").exists(), "a key gone from the secret is gone from the volume");
    assert_eq!(f.driver.status().await[0].mounts[0].last_error, None);
}

#[tokio::test]
async fn rotate_fetches_a_fresh_generation_for_every_mount() {
    let f = fixture();
    f.vault
        .secrets
        .lock()
        .unwrap()
        .insert("database/creds/app".into(), json!({"username": "user-{n}", "password": "pw"}));
    f.vault.leased.lock().unwrap().insert("database/creds/app".into(), 3600);
    f.driver.create("db", opts(&[("path", "database/creds/app")])).await.unwrap();
    let a = f.driver.mount("db", "a").await.unwrap();
    let b = f.driver.mount("db", "b").await.unwrap();
    assert_eq!(f.driver.rotate("db").await.unwrap(), 2);
    assert_ne!(read(&a, "username"), "user-0");
    assert_ne!(read(&b, "username"), "user-1");
    assert_eq!(f.vault.created(), 4);
    assert!(matches!(f.driver.rotate("nope").await, Err(DriverError::NoSuchVolume { .. })));
}

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
async fn policies_must_be_a_subset_of_the_identity_s() {
    let f = fixture();
    f.driver.create("ok", opts(&[("path", "kv/app"), ("policies", "app")])).await.unwrap();
    let e = crate::report::chain(
        &f.driver
            .create("wide", opts(&[("path", "kv/app"), ("policies", "app,admin")]))
            .await
            .unwrap_err(),
    );
    assert!(
        e.contains("option `policies`") && e.contains("`admin`") && e.contains("default, app"),
        "{e}"
    );
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
async fn the_audit_log_has_each_event_and_never_a_token() {
    let f = fixture();
    f.driver.create("app", opts(&[("path", "kv/app")])).await.unwrap();
    f.driver.mount("app", ID).await.unwrap();
    f.driver.unmount("app", ID).await.unwrap();
    f.driver.create("bad", opts(&[("path", "kv/denied")])).await.unwrap();
    f.driver.mount("bad", ID).await.unwrap_err();
    f.driver.remove("app").await.unwrap();
    let lines = f.driver.audit.lines();
    let events: Vec<String> = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        events,
        ["create", "mount", "unmount", "revoke", "create", "revoke", "error", "remove"]
    );
    let mount: Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(
        (mount["volume"].as_str(), mount["mount_id"].as_str(), mount["accessor"].as_str()),
        (Some("app"), Some(ID), Some("acc-0"))
    );
    assert!(lines[6].contains("permission denied on kv/denied"));
    for line in &lines {
        assert!(
            !line.contains("child-") && !line.contains("plugin-token") && !line.contains("\"pw\""),
            "{line}"
        );
    }
}

#[tokio::test]
async fn a_mount_racing_the_last_unmount_of_its_id_stays_findable() {
    let f = fixture();
    f.driver.create("app", opts(&[("path", "kv/app")])).await.unwrap();
    f.driver.mount("app", ID).await.unwrap();
    // The Unmount takes the slot and yields while revoking; the Mount of the same ID queues
    // on that slot, which the Unmount then takes out of the map.
    let (unmounted, mounted) = tokio::join!(f.driver.unmount("app", ID), f.driver.mount("app", ID));
    unmounted.unwrap();
    let path = mounted.unwrap();
    assert!(f.driver.mounter.is_mounted(&path));
    f.driver.unmount("app", ID).await.unwrap();
    assert_eq!(
        *f.vault.revoked.lock().unwrap(),
        vec!["child-0", "child-1"],
        "the second mount's token is revoked too"
    );
    assert!(f.driver.mounter.mounted.lock().unwrap().is_empty(), "nothing left mounted");
}

#[tokio::test]
async fn a_huge_lease_from_vault_neither_panics_nor_leaves_a_mount_unrevoked() {
    let f = fixture();
    f.vault
        .secrets
        .lock()
        .unwrap()
        .insert("database/creds/app".into(), json!({"username": "user-{n}", "password": "pw"}));
    f.vault.leased.lock().unwrap().insert("database/creds/app".into(), u64::MAX);
    f.driver.create("db", opts(&[("path", "database/creds/app")])).await.unwrap();
    let path = f.driver.mount("db", ID).await.unwrap();
    assert!(f.driver.mounter.is_mounted(&path));
    f.driver.unmount("db", ID).await.unwrap();
    assert_eq!(f.vault.revoked.lock().unwrap().len(), 1, "the mount's token is revoked");
    assert!(f.driver.mounter.mounted.lock().unwrap().is_empty());
    assert!(f.driver.mounter.binds.lock().unwrap().is_empty());
}

#[tokio::test]
async fn docker_gets_a_read_only_bind_and_unmount_ids_are_checked_like_mount_ids() {
    let f = fixture();
    f.driver.create("app", opts(&[("path", "kv/app")])).await.unwrap();
    let path = f.driver.mount("app", ID).await.unwrap();
    let files = f._dir.path().join("files/app").join(ID);
    assert_eq!(*f.driver.mounter.binds.lock().unwrap(), vec![(path.clone(), files.clone())]);
    assert_eq!(f.driver.mounter.mounted.lock().unwrap()[0].0, files, "the tmpfs is the plugin's");
    let e = f.driver.unmount("app", "bad\nid").await.unwrap_err();
    assert!(matches!(e, DriverError::InvalidMountId { .. }) && e.to_string().contains("\\n"));
    let e = f.driver.unmount("bad\nname", ID).await.unwrap_err();
    assert!(matches!(e, DriverError::InvalidName { .. }));
    f.driver.unmount("app", ID).await.unwrap();
    assert!(!files.exists() && !path.exists(), "both directories are removed");
}

fn certify(f: &Fixture, path: &str, expiration: Expiration) {
    f.vault.secrets.lock().unwrap().insert(path.into(), json!({"private_key": "key"}));
    f.vault.certified.lock().unwrap().insert(path.into(), expiration);
}

#[tokio::test(start_paused = true)]
async fn a_certificate_without_a_lease_is_replaced_at_two_thirds_of_its_validity_not_at_refresh() {
    let f = fixture();
    certify(&f, "pki/issue/web", Expiration::In(60));
    let options = [("path", "pki/issue/web"), ("param.common_name", "web"), ("refresh", "10s")];
    f.driver.create("db", opts(&options)).await.unwrap();
    let start = Instant::now();
    let path = f.driver.mount("db", ID).await.unwrap();
    assert_eq!(read(&path, "certificate"), "cert-0");
    let status = f.driver.status().await;
    let expiring = &status[0].mounts[0].expiring[0];
    assert_eq!(
        (expiring.source.as_str(), expiring.state),
        ("pki/issue/web", plan::Action::Replace)
    );
    assert!(expiring.expires_in_secs.is_some_and(|s| (59..=60).contains(&s)), "{expiring:?}");
    let record = &f.store.load_mounts()[0];
    assert_eq!(record.expiring.len(), 1, "the deadline is recorded for a restart");
    assert!(record.expiring[0].replace_at.is_some_and(|at| at < record.expiring[0].expires_at));
    // `refresh` comes round: nothing is issued again.
    tokio::time::advance(Duration::from_secs(11)).await;
    let next = f.driver.tick(&key(ID)).await.unwrap();
    assert_eq!(f.vault.reads.load(Ordering::SeqCst), 1, "not re-issued on refresh");
    let at = next - start;
    assert!(at > Duration::from_secs(33) && at <= Duration::from_secs(40), "{at:?}");
    // At about two thirds of its validity: a fresh generation with a new certificate.
    tokio::time::sleep_until(next).await;
    let next = f.driver.tick(&key(ID)).await.unwrap();
    assert_eq!(f.vault.reads.load(Ordering::SeqCst), 2);
    assert_eq!(f.vault.created(), 2, "a new token for the new generation");
    assert_eq!(read(&path, "certificate"), "cert-1");
    assert!(next - Instant::now() > Duration::from_secs(4), "the old token's grace comes first");
    assert_eq!(f.driver.status().await[0].mounts[0].expiring.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_source_with_parameters_is_read_once_per_generation() {
    let f = fixture();
    let options = [("path", "kv/app"), ("param.x", "y"), ("refresh", "2s")];
    f.driver.create("db", opts(&options)).await.unwrap();
    f.driver.mount("db", ID).await.unwrap();
    for _ in 0..5 {
        tokio::time::advance(Duration::from_secs(3)).await;
        f.driver.tick(&key(ID)).await.unwrap();
    }
    assert_eq!(f.vault.reads.load(Ordering::SeqCst), 1, "a write is not repeated on refresh");
    assert!(f.driver.status().await[0].mounts[0].expiring.is_empty());
    f.driver.rotate("db").await.unwrap();
    assert_eq!(f.vault.reads.load(Ordering::SeqCst), 2, "read again for a fresh generation");
}

#[tokio::test(start_paused = true)]
async fn hostile_expirations_neither_panic_nor_spin() {
    let f = fixture();
    let hostile =
        [json!(-5), json!(0), json!(-1e300), json!(1e300), json!(u64::MAX), json!("soon")];
    for (i, value) in hostile.iter().enumerate() {
        let path = format!("pki/issue/h{i}");
        certify(&f, &path, Expiration::Raw(value.clone()));
        let name = format!("h{i}");
        let options = [("path", path.as_str()), ("param.common_name", "x"), ("refresh", "1s")];
        f.driver.create(&name, opts(&options)).await.unwrap();
        f.driver.mount(&name, ID).await.unwrap();
    }
    assert_eq!(f.vault.reads.load(Ordering::SeqCst), hostile.len());
    tokio::time::advance(Duration::from_secs(5)).await;
    for (i, value) in hostile.iter().enumerate() {
        let next = f.driver.tick(&Job::mount(&format!("h{i}"), ID)).await.unwrap();
        assert!(next > Instant::now() + Duration::from_secs(60), "{value}: {next:?}");
    }
    assert_eq!(f.vault.reads.load(Ordering::SeqCst), hostile.len(), "none is read again");
    for volume in f.driver.status().await {
        let expiring = &volume.mounts[0].expiring;
        let far = |e: &ExpiryStatus| {
            e.expires_in_secs.is_some_and(|s| s <= crate::vault::MAX_TTL.as_secs())
        };
        match volume.name.as_str() {
            "h3" | "h4" => assert!(expiring.len() == 1 && far(&expiring[0]), "{expiring:?}"),
            name => assert!(expiring.is_empty(), "{name}: a past or bad expiration is ignored"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_certificate_s_deadline_survives_a_restart() {
    let f = fixture();
    certify(&f, "pki/issue/web", Expiration::In(60));
    f.driver.create("db", opts(&[("path", "pki/issue/web"), ("param.cn", "w")])).await.unwrap();
    let path = f.driver.mount("db", ID).await.unwrap();
    let record = f.store.load_mounts().remove(0);
    let spec = f.driver.volume("db").unwrap().spec.clone();
    let active = restore::restored(&spec, &record);
    let (_, expiration, deadline) = active.expiring().next().expect("carried over");
    assert_eq!(expiration, record.expiring[0].expires_at);
    assert!(
        deadline.action == plan::Action::Replace && deadline.act_at < deadline.expires_at.unwrap()
    );
    let act = deadline.act_at - Instant::now();
    assert!(act >= Duration::from_secs(32) && act <= Duration::from_secs(41), "{act:?}");
    assert_eq!(read(&path, "certificate"), "cert-0");
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

#[tokio::test]
async fn a_volumes_details_are_written_as_they_were_built_with_json() {
    let f = fixture();
    f.driver.create("app", opts(&[("path", "kv/app"), ("format", "env")])).await.unwrap();
    let both = opts(&[("path.db", "kv/db"), ("path.web", "kv/web"), ("uid", "container")]);
    f.driver.create("two", both).await.unwrap();
    for name in ["app", "two"] {
        let details = f.driver.get(name).unwrap().status;
        let spec = f.driver.volume(name).unwrap().spec.clone();
        // What the Get reply's Status was built with before it had a type.
        let before = serde_json::json!({
            "sources": spec.sources.iter().map(|s| match &s.dir {
                Some(dir) => format!("{dir}: {}", s.path),
                None => s.path.clone(),
            }).collect::<Vec<_>>(),
            "active_mounts": 0,
            "format": format!("{:?}", spec.format).to_lowercase(),
            "owner": if spec.uid_of_container {
                format!("container (its --user; group {} unless it names one)", spec.gid)
            } else {
                format!("{}:{}", spec.uid, spec.gid)
            },
            "mode": format!("{:04o}", spec.mode),
            "token_ttl": crate::report::duration(spec.ttl),
            "refresh": crate::report::duration(spec.refresh),
        });
        assert_eq!(serde_json::to_value(&details).unwrap().to_string(), before.to_string());
    }
    let two = f.driver.get("two").unwrap().status;
    assert_eq!((two.sources[0].as_str(), &two.owner[..9]), ("db: kv/db", "container"));
}

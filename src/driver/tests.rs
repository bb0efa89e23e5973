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
use crate::vault::fake::FakeVault;
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
mod wrapping;

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
    pub(super) fn restarted(
        &self,
        mounter: FakeMounter,
        identity: Arc<IdentitySlot>,
    ) -> Driver<Fakes> {
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

/// A Mount holds at most its read budget (twice its `size`, 4 MiB at least) of what its sources
/// return: the volume's fifth source of 1 MB is not read and the mount fails naming `size`,
/// leaving nothing behind; with a `size` that fits them, all ten are read and written.
#[tokio::test]
async fn a_mount_holds_at_most_twice_its_size_of_what_it_reads() {
    let f = fixture();
    let big = json!({ "blob": "x".repeat(1_000_000) });
    f.vault.secrets.lock().unwrap().insert("kv/big".into(), big);
    let sources: Vec<(String, String)> =
        (0..10).map(|i| (format!("path.s{i}"), "kv/big".to_owned())).collect();
    let pairs: Vec<(&str, &str)> = sources.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    f.driver.create("hog", opts(&pairs)).await.unwrap();
    let e = crate::report::chain(&f.driver.mount("hog", ID).await.unwrap_err());
    assert!(
        e.contains("option `size`: 5 of its 10 sources hold about 5000")
            && e.contains("about 4194304 bytes at most"),
        "{e}"
    );
    assert_eq!(f.vault.reads.load(Ordering::SeqCst), 5, "no source read past the budget");
    assert_eq!(f.vault.revoked.lock().unwrap().len(), 1, "its token revoked");
    assert!(f.driver.mounter.mounted.lock().unwrap().is_empty(), "nothing left mounted");
    assert!(f.store.load_mounts().is_empty());

    let mut pairs = pairs;
    pairs.push(("size", "16m"));
    f.driver.create("fits", opts(&pairs)).await.unwrap();
    let mountpoint = f.driver.mount("fits", ID).await.unwrap();
    assert_eq!(read(&mountpoint, "s9/blob").len(), 1_000_000);
}

/// The read budget holds at a refresh too: sources that grew past it are not written, the mount
/// keeps its files and says why.
#[tokio::test(start_paused = true)]
async fn a_refresh_of_sources_grown_past_the_read_budget_keeps_the_files() {
    let f = fixture();
    let pairs = [("path", "kv/app"), ("path.b", "kv/b"), ("path.c", "kv/c"), ("refresh", "10s")];
    for path in ["kv/b", "kv/c"] {
        f.vault.secrets.lock().unwrap().insert(path.into(), json!({ "blob": "small" }));
    }
    f.driver.create("db", opts(&pairs)).await.unwrap();
    let path = f.driver.mount("db", ID).await.unwrap();
    for path in ["kv/b", "kv/c"] {
        let big = json!({ "blob": "x".repeat(2_200_000) });
        f.vault.secrets.lock().unwrap().insert(path.into(), big);
    }
    tokio::time::advance(Duration::from_secs(10)).await;
    f.driver.tick(&key(ID)).await.unwrap();
    assert_eq!(read(&path, "b/blob"), "small", "the files stay");
    let status = f.driver.status().await;
    let error = status[0].mounts[0].last_error.clone().unwrap_or_default();
    assert!(error.contains("3 of its 3 sources hold about 4400"), "{error}");
}

/// A definition stored before a bound (0.1.0 had none) or under other `[defaults]` is served
/// after the restart and its mounts kept, where refusing it would revoke running containers'
/// secrets; a Create like it is refused.
#[tokio::test]
async fn a_stored_volume_over_a_bound_new_volumes_are_held_to_keeps_its_mounts() {
    let f = fixture();
    f.driver.create("app", opts(&[("path", "kv/app")])).await.unwrap();
    let live = f.driver.mount("app", "live").await.unwrap();
    // As an earlier build stored it: eleven sources re-read every second.
    let mut over: Vec<(String, String)> =
        (0..10).map(|i| (format!("path.s{i}"), "kv/app".to_owned())).collect();
    over.extend([("path".to_owned(), "kv/app".to_owned()), ("refresh".into(), "1s".into())]);
    let options: BTreeMap<String, String> = over.into_iter().collect();
    f.store.volumes.lock().unwrap().get_mut("app").unwrap().options = options.clone();
    let mounter = FakeMounter::default();
    let files = f._dir.path().join("files/app/live");
    let mount_options = f.driver.mounter.mounted.lock().unwrap()[0].1.clone();
    mounter.mounted.lock().unwrap().push((files.clone(), mount_options));
    mounter.binds.lock().unwrap().push((live.clone(), files));
    let restarted = f.restarted(mounter, f.driver.identity.clone());
    restarted.restore().await;
    assert!(f.vault.revoked.lock().unwrap().is_empty(), "the running mount's token is kept");
    assert_eq!(restarted.get("app").unwrap().status.active_mounts, 1, "served and adopted");
    let e = restarted.create("again", options).await.unwrap_err();
    assert!(crate::report::chain(&e).contains("at most 10 are allowed"), "{e}");
    restarted.unmount("app", "live").await.unwrap();
    assert_eq!(*f.vault.revoked.lock().unwrap(), vec!["child-0"]);
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

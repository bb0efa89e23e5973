//! Ids in the container under a remapping engine: the tmpfs and files owned by the host ids,
//! ids outside the range refused at Create, `[userns]`, and engines that disagree; `uid=container`.

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use super::{fixture, fixture_with, opts, Fakes, Fixture, ID};
use crate::dockerd::userns::IdMap;
use crate::dockerd::{EngineKind, FakeEngine, PODMAN_MOUNT_ID};
use crate::driver::{Driver, DriverError, Parts};
use crate::identity::{Identity, IdentitySlot};
use crate::tmpfs::FakeMounter;
use crate::vault::Token;
use crate::volume::Defaults;

/// The uid and gid the tmpfs was mounted with (the last mount).
fn tmpfs_owner(f: &Fixture) -> (u32, u32) {
    let mounted = f.driver.mounter.mounted.lock().unwrap();
    let (_, options) = mounted.last().expect("a tmpfs was mounted");
    (options.uid, options.gid)
}

fn remapping(f: &Fixture) {
    *f.engine.id_map.lock().unwrap() = Some(IdMap::single(100000, 100000, 65536));
}

/// The fixture's driver made again with `[userns]` set.
fn configured(f: &Fixture, map: IdMap) -> Driver<Fakes> {
    let identity = Identity::fixed(Token::new("plugin-token".into()));
    Driver::<Fakes>::new(Parts {
        vault: f.vault.clone(),
        mounter: FakeMounter::default(),
        store: f.store.clone(),
        engines: vec![f.engine.clone()],
        identity: Arc::new(IdentitySlot::new(Ok(Arc::new(identity)))),
        defaults: Defaults::default(),
        userns: Some(map),
        mounts_root: f._dir.path().join("mounts-configured"),
        files_root: f._dir.path().join("files-configured"),
        driver_name: "vault-secrets".into(),
        templates_dir: "/nonexistent".into(),
        audit: Arc::new(crate::audit::Audit::memory()),
    })
}

#[tokio::test]
async fn without_remapping_the_ids_are_the_hosts() {
    let f = fixture();
    f.driver.create("app", opts(&[("path", "kv/app"), ("uid", "1000")])).await.unwrap();
    let path = f.driver.mount("app", ID).await.unwrap();
    assert_eq!(tmpfs_owner(&f), (1000, 0));
    assert_eq!(std::fs::metadata(path.join("password")).unwrap().uid(), 1000);
}

#[tokio::test]
async fn under_a_remapping_engine_ids_are_the_containers() {
    let f = fixture();
    remapping(&f);
    let o = opts(&[("path", "kv/app"), ("uid", "1000"), ("gid", "1001")]);
    f.driver.create("app", o).await.unwrap();
    let path = f.driver.mount("app", ID).await.unwrap();
    assert_eq!(tmpfs_owner(&f), (101000, 101001));
    let meta = std::fs::metadata(path.join("password")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (101000, 101001));
    // Root by default: the container's root.
    f.driver.create("root", opts(&[("path", "kv/app")])).await.unwrap();
    f.driver.mount("root", ID).await.unwrap();
    assert_eq!(tmpfs_owner(&f), (100000, 100000));
}

#[tokio::test]
async fn a_fresh_generation_keeps_the_host_owner() {
    let f = fixture();
    remapping(&f);
    f.vault.secrets.lock().unwrap().insert(
        "database/creds/app".into(),
        serde_json::json!({"username": "user-{n}", "password": "pw"}),
    );
    f.vault.leased.lock().unwrap().insert("database/creds/app".into(), 3600);
    let o = opts(&[("path", "database/creds/app"), ("uid", "1000"), ("gid", "1000")]);
    f.driver.create("db", o).await.unwrap();
    let path = f.driver.mount("db", ID).await.unwrap();
    let before = std::fs::read(path.join("username")).unwrap();
    assert_eq!(f.driver.rotate("db").await.unwrap(), 1);
    assert_ne!(std::fs::read(path.join("username")).unwrap(), before, "rewritten");
    let meta = std::fs::metadata(path.join("username")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (101000, 101000));
}

#[tokio::test]
async fn an_id_outside_the_mapped_range_is_refused_at_create_naming_it() {
    let f = fixture();
    remapping(&f);
    for (option, value) in [("uid", "65536"), ("gid", "101000")] {
        let e = f.driver.create("app", opts(&[("path", "kv/app"), (option, value)])).await;
        let e = crate::report::chain(&e.unwrap_err());
        assert!(
            e.contains(&format!("option `{option}`"))
                && e.contains(value)
                && e.contains("accepted: 0-65535")
                && e.contains("container root is host 100000:100000"),
            "{e}"
        );
    }
    assert!(f.driver.list().is_empty(), "nothing was created");
}

#[tokio::test]
async fn an_engine_out_of_reach_is_not_asked() {
    let f = fixture();
    f.engine.unreachable.store(true, std::sync::atomic::Ordering::Relaxed);
    // An engine out of reach makes no mounts: it is not asked.
    f.driver.create("app", opts(&[("path", "kv/app"), ("uid", "1000")])).await.unwrap();
    f.driver.mount("app", ID).await.unwrap();
    assert_eq!(tmpfs_owner(&f), (1000, 0));
}

#[tokio::test]
async fn userns_configured_applies_to_dockers_mounts_not_podmans() {
    let f = fixture();
    let driver = configured(&f, IdMap::single(231072, 231072, 1000));
    let e = driver.create("big", opts(&[("path", "kv/app"), ("uid", "1000")])).await;
    assert!(crate::report::chain(&e.unwrap_err()).contains("accepted: 0-999"));
    driver.create("app", opts(&[("path", "kv/app"), ("uid", "999")])).await.unwrap();
    driver.mount("app", ID).await.unwrap();
    driver.mount("app", PODMAN_MOUNT_ID).await.unwrap();
    let mounted = driver.mounter.mounted.lock().unwrap();
    let owners: Vec<(u32, u32)> = mounted.iter().map(|(_, o)| (o.uid, o.gid)).collect();
    assert_eq!(owners, vec![(232071, 231072), (999, 0)]);
}

#[tokio::test]
async fn engines_that_map_differently_refuse_the_mount_naming_them() {
    let docker = Arc::new(FakeEngine::named("/run/a.sock", EngineKind::Docker));
    let other = Arc::new(FakeEngine::named("/run/b.sock", EngineKind::Docker));
    let podman = Arc::new(FakeEngine::named("/run/podman.sock", EngineKind::Podman));
    let f = fixture_with(vec![docker.clone(), other, podman.clone()]);
    *docker.id_map.lock().unwrap() = Some(IdMap::single(100000, 100000, 65536));
    // Podman's mounts are Podman's: it maps nothing here, and the Docker engine does not count.
    f.driver.create("app", opts(&[("path", "kv/app")])).await.unwrap();
    f.driver.mount("app", PODMAN_MOUNT_ID).await.unwrap();
    assert_eq!(tmpfs_owner(&f), (0, 0));
    let e = f.driver.mount("app", ID).await.unwrap_err();
    assert!(matches!(e, DriverError::UsernsDiffer { .. }), "{e:?}");
    let e = crate::report::chain(&e);
    assert!(
        e.contains("/run/a.sock: container root is host 100000")
            && e.contains("/run/b.sock: no remapping"),
        "{e}"
    );
}

/// The Mount's error, as Docker shows it.
async fn refused(f: &Fixture, volume: &str, id: &str) -> String {
    crate::report::chain(&f.driver.mount(volume, id).await.unwrap_err())
}

#[tokio::test]
async fn uid_container_takes_the_starting_containers_numeric_user() {
    let f = fixture();
    let o = opts(&[("path", "kv/app"), ("uid", "container"), ("gid", "7")]);
    f.driver.create("app", o).await.unwrap();
    // A running container of the volume is not the one being started.
    f.engine.runs("c0", "app", "/run/secrets", "0:99");
    f.engine.users.lock().unwrap().insert("c0".into(), "2000".into());
    f.engine.starts("c1", "app", "1000:1001");
    let path = f.driver.mount("app", ID).await.unwrap();
    assert_eq!(tmpfs_owner(&f), (1000, 1001));
    assert_eq!(std::fs::metadata(path.join("password")).unwrap().uid(), 1000);
    // No group in --user: the volume's gid. No user: root.
    f.driver
        .create("b", opts(&[("path", "kv/app"), ("uid", "container"), ("gid", "7")]))
        .await
        .unwrap();
    f.engine.starts("c2", "b", "1000");
    f.driver.mount("b", "m2").await.unwrap();
    assert_eq!(tmpfs_owner(&f), (1000, 7));
    f.driver.create("c", opts(&[("path", "kv/app"), ("uid", "container")])).await.unwrap();
    f.engine.starts("c3", "c", "");
    f.driver.mount("c", "m3").await.unwrap();
    assert_eq!(tmpfs_owner(&f), (0, 0));
}

#[tokio::test]
async fn uid_container_is_the_containers_id_under_a_remapping_engine() {
    let f = fixture();
    remapping(&f);
    f.driver.create("app", opts(&[("path", "kv/app"), ("uid", "container")])).await.unwrap();
    f.engine.starts("c1", "app", "1000:1000");
    f.driver.mount("app", ID).await.unwrap();
    assert_eq!(tmpfs_owner(&f), (101000, 101000));
    f.driver.create("far", opts(&[("path", "kv/app"), ("uid", "container")])).await.unwrap();
    f.engine.starts("c2", "far", "70000");
    let e = refused(&f, "far", "m2").await;
    assert!(e.contains("70000 is not an id in the container") && e.contains("0-65535"), "{e}");
}

#[tokio::test]
async fn uid_container_refuses_what_it_cannot_tell_and_leaves_nothing() {
    let f = fixture();
    let created = || f.vault.created();
    let start = created();
    f.driver.create("app", opts(&[("path", "kv/app"), ("uid", "container")])).await.unwrap();
    // No container of the volume is starting.
    let e = refused(&f, "app", ID).await;
    assert!(
        e.contains("uid=container: no container using volume app is being started on fake"),
        "{e}"
    );
    // A user name: it would be looked up in the container's own /etc/passwd.
    f.engine.starts("c1", "app", "app");
    let e = refused(&f, "app", ID).await;
    assert!(e.contains("container name-c1: its user `app` is not numeric"), "{e}");
    // Two starting containers with different users: either could be this mount's.
    f.driver.create("two", opts(&[("path", "kv/app"), ("uid", "container")])).await.unwrap();
    f.engine.starts("c2", "two", "1000");
    f.engine.starts("c3", "two", "2000:2000");
    let e = refused(&f, "two", ID).await;
    assert!(e.contains("different users: name-c2 (1000), name-c3 (2000:2000)"), "{e}");
    // The same user: no doubt.
    f.engine.users.lock().unwrap().insert("c3".into(), "1000".into());
    f.driver.mount("two", ID).await.unwrap();
    f.driver.unmount("two", ID).await.unwrap();
    let before = created();
    // Podman's one mount for all of a volume's containers.
    let e = refused(&f, "two", PODMAN_MOUNT_ID).await;
    assert!(e.contains("Podman mounts a volume once"), "{e}");
    // The engine out of reach.
    f.engine.unreachable.store(true, std::sync::atomic::Ordering::Relaxed);
    let e = refused(&f, "two", ID).await;
    assert!(e.contains("cannot ask fake which container is starting"), "{e}");
    // Nothing made by a refusal: no token (one for the one mount that was served), no tmpfs.
    assert_eq!(created(), before);
    assert_eq!(created(), start + 1);
    assert_eq!(f.driver.mounter.mounted.lock().unwrap().len(), 0);
}

#[tokio::test]
async fn uid_container_bounds_the_containers_it_reads() {
    let f = fixture();
    f.driver.create("app", opts(&[("path", "kv/app"), ("uid", "container")])).await.unwrap();
    for n in 0..17 {
        f.engine.starts(&format!("c{n}"), "app", "1000");
    }
    let e = refused(&f, "app", ID).await;
    assert!(e.contains("more than 16 containers that are not running use volume app"), "{e}");
}

#[tokio::test]
async fn uid_container_is_a_volume_option_and_named_in_the_error() {
    let f = fixture();
    let e =
        f.driver.create("app", opts(&[("path", "kv/app"), ("uid", "nobody")])).await.unwrap_err();
    let e = crate::report::chain(&e);
    assert!(e.contains("`nobody` is not a numeric id") && e.contains("or `container`"), "{e}");
}

#[tokio::test]
async fn uid_container_counts_a_restarting_container_as_a_candidate() {
    // A container its restart policy restarts is being started too: another user's container
    // created on the volume meanwhile cannot take its files.
    let f = fixture();
    f.driver.create("app", opts(&[("path", "kv/app"), ("uid", "container")])).await.unwrap();
    f.engine.starts("mine", "app", "1000");
    f.engine.mounts.lock().unwrap()[0].running = true;
    f.engine.mounts.lock().unwrap()[0].restarting = true;
    f.engine.starts("theirs", "app", "0");
    let e = refused(&f, "app", ID).await;
    assert!(e.contains("different users: name-mine (1000), name-theirs (0)"), "{e}");
}

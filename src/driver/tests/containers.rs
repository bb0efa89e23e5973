//! Which container a mount belongs to, with fake engines: tying, signals, deaths, the sweep,
//! several engines, Podman's shared mounts, and the loops that drive them.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::{fixture, fixture_with, opts, Fixture, ID};
use crate::dockerd::{ContainerMount, EngineKind, FakeEngine, PODMAN_MOUNT_ID};
use crate::state::Container;
use crate::tmpfs::Mounter;

/// The device the fake mounter gives the mount at `path`.
fn device(path: &Path) -> String {
    format!("fake:{}", path.display())
}

fn audit(f: &Fixture) -> Vec<Value> {
    f.driver.audit.lines().iter().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn events(f: &Fixture) -> Vec<String> {
    audit(f).iter().map(|l| l["event"].as_str().unwrap().to_owned()).collect()
}

fn revoked(f: &Fixture) -> Vec<String> {
    f.vault.revoked.lock().unwrap().clone()
}

/// The container each mount of "app" is tied to, by mount ID.
async fn tied(f: &Fixture) -> Vec<(String, Option<String>)> {
    let volume = f.driver.volume("app").unwrap();
    let mut found = Vec::new();
    for (id, slot) in volume.slots() {
        let guard = slot.lock().await;
        let container = guard.as_ref().and_then(|a| a.container.as_ref()).map(|c| c.id.clone());
        found.push((id, container));
    }
    found
}

const V: &str = "ffff0000"; // the victim: its ID sorts after the watcher's
const A: &str = "0000ffff";
const OTHER: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";

#[tokio::test]
async fn a_mount_is_tied_to_the_container_its_engine_made_it_for_and_its_lines_name_it() {
    let f = fixture();
    f.driver.create("app", opts(&[("path", "kv/app")])).await.unwrap();
    let path = f.driver.mount("app", ID).await.unwrap();
    assert_eq!(f.driver.tie_containers().await, 1, "no container holds it yet: looked for again");
    f.engine.runs("c1", "app", "/run/secrets", &device(&path));
    assert_eq!(f.driver.tie_containers().await, 0);
    assert_eq!(f.driver.tie_containers().await, 0, "tied once");
    let record = f.store.mounts.lock().unwrap().values().next().cloned().unwrap();
    let container = Container { id: "c1".into(), name: "name-c1".into() };
    assert_eq!(record.container, Some(container));
    assert_eq!(record.engine.as_deref(), Some("fake"), "the record says which engine");
    let status = f.driver.status().await;
    let mount = &status[0].mounts[0];
    assert_eq!(mount.container.as_ref().map(|c| c.id.as_str()), Some("c1"), "status says");
    assert_eq!(mount.engine.as_deref(), Some("fake"));
    f.driver.rotate("app").await.unwrap();
    f.driver.unmount("app", ID).await.unwrap();
    let lines = audit(&f);
    assert_eq!(
        events(&f),
        ["create", "mount", "container", "rotate", "unmount", "revoke", "revoke"]
    );
    assert_eq!(lines[2]["accessor"], lines[1]["accessor"]);
    assert_eq!(lines[2]["detail"], "engine fake");
    for line in &lines[2..] {
        assert_eq!(
            (line["container_id"].as_str(), line["container_name"].as_str()),
            (Some("c1"), Some("name-c1")),
            "{line}"
        );
    }
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=7).collect::<Vec<_>>());
}

/// The repro: V and A use the same volume; A also binds the plugin's mounts directory
/// (`rslave`), so V's tmpfs shows in A's mount table too; A's ID sorts first. A's death must
/// not touch V's mount, and a change of V's files signals V alone.
#[tokio::test]
async fn a_container_that_only_sees_a_mount_is_never_its_holder() {
    let f = fixture();
    f.driver.create("app", opts(&[("path", "kv/app"), ("signal", "SIGHUP")])).await.unwrap();
    let a_path = f.driver.mount("app", ID).await.unwrap();
    f.engine.runs(A, "app", "/s", &device(&a_path));
    f.engine.shows_line(A, "50 1 0:20 /vault-secrets/mounts /x rw master:7 - tmpfs tmpfs rw");
    let v_path = f.driver.mount("app", OTHER).await.unwrap();
    f.engine.runs(V, "app", "/s", &device(&v_path));
    let below =
        format!("51 50 {} / /x/app/{OTHER} ro master:9 - tmpfs vault-secrets rw", device(&v_path));
    f.engine.shows_line(A, &below);
    assert_eq!(f.driver.tie_containers().await, 0);
    let mut ties = tied(&f).await;
    ties.sort();
    let expected = [(ID.to_owned(), Some(A.to_owned())), (OTHER.to_owned(), Some(V.to_owned()))];
    assert_eq!(ties, expected);

    f.vault.secrets.lock().unwrap().insert("kv/app".into(), serde_json::json!({"password": "new"}));
    f.driver.rotate("app").await.unwrap();
    let mut signalled: Vec<String> =
        f.engine.signals.lock().unwrap().iter().map(|(c, _)| c.clone()).collect();
    signalled.sort();
    assert_eq!(signalled, [A, V], "each container once, for its own mount");

    f.engine.stops(A);
    assert_eq!(f.driver.container_died("fake", A).await, 1, "A's own mount only");
    let status = f.driver.status().await;
    let died: Vec<(String, bool)> =
        status[0].mounts.iter().map(|m| (m.id.clone(), m.container_died)).collect();
    assert!(died.contains(&(OTHER.to_owned(), false)), "V's mount is fine: {died:?}");
    let v_accessor = status[0].mounts.iter().find(|m| m.id == OTHER).unwrap().accessor.clone();
    assert_eq!(v_accessor, "acc-3", "V's current token, from the rotate");
    let lines = audit(&f);
    let about_v = |l: &&Value| l["mount_id"] == OTHER && l["event"] != "mount";
    let v_events: Vec<&Value> = lines.iter().filter(about_v).collect();
    assert!(
        v_events.iter().all(|l| l["event"] != "die" && l["event"] != "revoke"),
        "nothing revoked of V's: {v_events:?}"
    );
    // A's tokens: its first (retiring since the rotate) and its current one; V's are kept.
    let mut gone = revoked(&f);
    gone.sort();
    assert_eq!(gone, ["child-0", "child-2"]);
    assert_eq!(f.driver.container_died("fake", V).await, 1);
}

#[tokio::test]
async fn the_sweep_releases_what_no_running_container_was_given_whoever_sees_it() {
    let f = fixture();
    f.driver.create("app", opts(&[("path", "kv/app")])).await.unwrap();
    let used = f.driver.mount("app", ID).await.unwrap();
    let gone = f.driver.mount("app", OTHER).await.unwrap();
    f.engine.runs("c1", "app", "/run/secrets", &device(&used));
    // A watcher using the volume sees the gone mount through a bind of the mounts directory.
    f.engine.shows_line("c1", "50 1 0:20 /m /x rw - tmpfs tmpfs rw");
    f.engine.shows_line(
        "c1",
        &format!("51 50 {} / /x/app/{OTHER} ro - tmpfs vault-secrets rw", device(&gone)),
    );
    assert_eq!(f.driver.sweep_stale(Duration::from_secs(3600)).await, 0, "too young to be swept");
    assert_eq!(f.driver.sweep_stale(Duration::ZERO).await, 1);
    assert!(!f.driver.mounter.is_mounted(&gone));
    assert!(f.driver.mounter.is_mounted(&used));
    assert_eq!(revoked(&f).len(), 1);

    // A container of the volume still being started (`created`, no process yet to hold the
    // tmpfs): the volume's young mounts stay, whatever the sweep's age limit.
    let starting = f.driver.mount("app", "starting").await.unwrap();
    f.engine.mounts.lock().unwrap().push(ContainerMount {
        container_id: "c2".into(),
        container_name: "web-2".into(),
        running: false,
        starting: true,
        restarting: false,
        volume: "app".into(),
        destination: "/s".into(),
        source: Default::default(),
    });
    assert_eq!(f.driver.sweep_stale(Duration::ZERO).await, 0, "a container is being started");
    assert!(f.driver.mounter.is_mounted(&starting));
    f.engine.mounts.lock().unwrap().retain(|m| !m.starting);
    assert_eq!(f.driver.sweep_stale(Duration::ZERO).await, 1, "it never started: swept");
    assert!(!f.driver.mounter.is_mounted(&starting));

    f.engine.stops("c1");
    f.engine.unreachable.store(true, Ordering::SeqCst);
    assert_eq!(f.driver.sweep_stale(Duration::ZERO).await, 0, "its engine cannot be asked");
    assert!(f.driver.mounter.is_mounted(&used));
    f.engine.unreachable.store(false, Ordering::SeqCst);
    assert_eq!(f.driver.sweep_stale(Duration::ZERO).await, 1, "its container is gone");
}

#[tokio::test]
async fn a_changed_mount_signals_its_container_only() {
    let f = fixture();
    f.driver.create("app", opts(&[("path", "kv/app"), ("signal", "SIGHUP")])).await.unwrap();
    let path = f.driver.mount("app", ID).await.unwrap();
    f.engine.runs("c1", "app", "/s", &device(&path));
    // c3 uses the volume and sees the mount elsewhere; c2 is stopped.
    f.engine.runs("c3", "app", "/s", "fake:another-mount");
    f.engine.shows("c3", "/host/run/vault-secrets/mounts/app/x", &device(&path));
    f.engine.runs("c2", "app", "/s", &device(&path));
    f.engine.stops("c2");
    f.vault.secrets.lock().unwrap().insert("kv/app".into(), serde_json::json!({"password": "new"}));
    f.driver.rotate("app").await.unwrap();
    assert_eq!(*f.engine.signals.lock().unwrap(), [("c1".to_owned(), "SIGHUP".to_owned())]);
    f.driver.rotate("app").await.unwrap();
    assert_eq!(f.engine.signals.lock().unwrap().len(), 1, "nothing changed: no signal");
}

#[tokio::test]
async fn a_mount_two_containers_claim_is_tied_to_neither() {
    let f = fixture();
    f.driver.create("app", opts(&[("path", "kv/app"), ("signal", "SIGHUP")])).await.unwrap();
    let path = f.driver.mount("app", ID).await.unwrap();
    f.engine.runs("c1", "app", "/s", &device(&path));
    f.engine.runs("c2", "app", "/t", &device(&path));
    assert_eq!(f.driver.tie_containers().await, 0, "contradicted: not looked for again soon");
    assert_eq!(tied(&f).await, [(ID.to_owned(), None)]);
    f.vault.secrets.lock().unwrap().insert("kv/app".into(), serde_json::json!({"password": "new"}));
    f.driver.rotate("app").await.unwrap();
    assert!(f.engine.signals.lock().unwrap().is_empty(), "neither is signalled");
    assert_eq!(f.driver.container_died("fake", "c1").await, 0);
    assert_eq!(f.driver.sweep_stale(Duration::ZERO).await, 0, "but it is in use");
}

#[tokio::test]
async fn a_dead_containers_mount_is_revoked_at_once_and_its_unmount_revokes_nothing_more() {
    let f = fixture();
    f.driver.create("app", opts(&[("path", "kv/app")])).await.unwrap();
    let held = f.driver.mount("app", ID).await.unwrap();
    let kept = f.driver.mount("app", OTHER).await.unwrap();
    f.engine.runs("c1", "app", "/s", &device(&held));
    f.engine.runs("c2", "app", "/s", &device(&kept));
    assert_eq!(f.driver.tie_containers().await, 0, "both tied");
    assert_eq!(f.driver.container_died("fake", "c3").await, 0, "a container holding none");
    assert_eq!(f.driver.container_died("other-engine", "c1").await, 0, "another engine's c1");
    assert!(revoked(&f).is_empty());

    assert_eq!(f.driver.container_died("fake", "c1").await, 1);
    assert_eq!(revoked(&f), ["child-0"], "revoked before the Unmount");
    assert_eq!(f.driver.lease_manager().len(), 1, "off the schedule; the other one stays");
    assert_eq!(f.driver.container_died("fake", "c1").await, 0, "ended once");
    let status = f.driver.status().await;
    let died: Vec<bool> = status[0].mounts.iter().map(|m| m.container_died).collect();
    assert_eq!(died.iter().filter(|d| **d).count(), 1, "{died:?}");
    let record = f.store.mounts.lock().unwrap().get(&("app".to_owned(), ID.to_owned())).cloned();
    assert!(record.is_some_and(|r| r.ended), "the record says so, for a restart");
    assert!(f.driver.mounter.is_mounted(&held), "the tmpfs waits for the Unmount");

    f.driver.unmount("app", ID).await.unwrap();
    assert_eq!(revoked(&f).len(), 1, "nothing more to revoke");
    assert!(!f.driver.mounter.is_mounted(&held));
    let lines = audit(&f);
    assert_eq!(
        events(&f),
        ["create", "mount", "mount", "container", "container", "die", "revoke", "unmount"]
    );
    assert_eq!(lines[5]["container_id"], "c1");
    f.driver.unmount("app", OTHER).await.unwrap();
    assert_eq!(revoked(&f).len(), 2);
}

#[tokio::test]
async fn a_mount_id_mounted_again_after_its_container_died_gets_a_fresh_generation() {
    let f = fixture();
    f.driver.create("app", opts(&[("path", "kv/app")])).await.unwrap();
    let path = f.driver.mount("app", ID).await.unwrap();
    f.engine.runs("c1", "app", "/s", &device(&path));
    f.driver.tie_containers().await;
    assert_eq!(f.driver.container_died("fake", "c1").await, 1);
    assert_eq!(f.driver.mount("app", ID).await.unwrap(), path);
    assert_eq!(f.driver.lease_manager().len(), 1, "kept up again");
    let status = f.driver.status().await;
    assert!(!status[0].mounts[0].container_died);
    assert_ne!(status[0].mounts[0].accessor, "acc-0", "a token of its own again");
    f.driver.unmount("app", ID).await.unwrap();
    f.driver.unmount("app", ID).await.unwrap();
    let revoked: std::collections::BTreeSet<String> = revoked(&f).into_iter().collect();
    assert_eq!(revoked, ["child-0", "child-1"].map(String::from).into(), "every token revoked");
}

/// Podman mounts a volume once (always the same mount ID) for every container that uses it.
#[tokio::test]
async fn a_mount_podman_shares_is_signalled_in_each_container_and_ends_with_the_last() {
    let podman = Arc::new(FakeEngine::named("/run/podman/podman.sock", EngineKind::Podman));
    let f = fixture_with(vec![podman.clone()]);
    f.driver.create("app", opts(&[("path", "kv/app"), ("signal", "SIGHUP")])).await.unwrap();
    let path = f.driver.mount("app", PODMAN_MOUNT_ID).await.unwrap();
    podman.runs("p1", "app", "/s", &device(&path));
    podman.runs("p2", "app", "/t", &device(&path));
    assert_eq!(f.driver.tie_containers().await, 0);
    assert_eq!(tied(&f).await, [(PODMAN_MOUNT_ID.to_owned(), Some("p1".to_owned()))]);

    f.vault.secrets.lock().unwrap().insert("kv/app".into(), serde_json::json!({"password": "new"}));
    f.driver.rotate("app").await.unwrap();
    let signalled: Vec<String> =
        podman.signals.lock().unwrap().iter().map(|s| s.0.clone()).collect();
    assert_eq!(signalled, ["p1", "p2"], "both use that one mount");

    podman.stops("p1");
    assert_eq!(
        f.driver.container_died("/run/podman/podman.sock", "p1").await,
        0,
        "p2 still uses it"
    );
    assert_eq!(tied(&f).await, [(PODMAN_MOUNT_ID.to_owned(), Some("p2".to_owned()))]);
    assert!(revoked(&f).is_empty());
    podman.stops("p2");
    assert_eq!(f.driver.container_died("/run/podman/podman.sock", "p2").await, 1, "the last one");
    assert_eq!(revoked(&f).len(), 2, "the token and the one rotate retired");
}

/// Docker and Podman on one host: each engine is asked about its own mounts only, and an
/// engine that cannot be asked keeps its mounts.
#[tokio::test]
async fn with_docker_and_podman_each_engine_keeps_its_own_mounts() {
    let docker = Arc::new(FakeEngine::named("/var/run/docker.sock", EngineKind::Docker));
    let podman = Arc::new(FakeEngine::named("/run/podman/podman.sock", EngineKind::Podman));
    let f = fixture_with(vec![docker.clone(), podman.clone()]);
    f.driver.create("app", opts(&[("path", "kv/app")])).await.unwrap();
    let d_path = f.driver.mount("app", ID).await.unwrap();
    let p_path = f.driver.mount("app", PODMAN_MOUNT_ID).await.unwrap();
    docker.runs("d1", "app", "/s", &device(&d_path));
    podman.runs("p1", "app", "/s", &device(&p_path));
    assert_eq!(f.driver.sweep_stale(Duration::ZERO).await, 0, "both in use");
    let record = |id: &str| {
        f.store.mounts.lock().unwrap().get(&("app".to_owned(), id.to_owned())).cloned().unwrap()
    };
    assert_eq!(record(ID).engine.as_deref(), Some("/var/run/docker.sock"));
    assert_eq!(record(PODMAN_MOUNT_ID).engine.as_deref(), Some("/run/podman/podman.sock"));

    // Podman's API goes away, and its container with it: Podman's mount waits for it.
    podman.stops("p1");
    podman.unreachable.store(true, Ordering::SeqCst);
    assert_eq!(f.driver.sweep_stale(Duration::ZERO).await, 0);
    assert!(f.driver.mounter.is_mounted(&p_path));
    // Docker's container goes too: Docker's mount is released; Podman's still waits.
    docker.stops("d1");
    assert_eq!(f.driver.sweep_stale(Duration::ZERO).await, 1);
    assert!(!f.driver.mounter.is_mounted(&d_path) && f.driver.mounter.is_mounted(&p_path));
    podman.unreachable.store(false, Ordering::SeqCst);
    assert_eq!(f.driver.sweep_stale(Duration::ZERO).await, 1, "Podman says it is unused");
}

#[tokio::test]
async fn an_untied_mount_waits_for_every_engine_that_could_have_made_it() {
    let docker = Arc::new(FakeEngine::named("/var/run/docker.sock", EngineKind::Docker));
    let podman = Arc::new(FakeEngine::named("/run/podman/podman.sock", EngineKind::Podman));
    let unknown = Arc::new(FakeEngine::named("/run/other.sock", EngineKind::Unknown));
    let f = fixture_with(vec![docker.clone(), podman.clone(), unknown.clone()]);
    f.driver.create("app", opts(&[("path", "kv/app")])).await.unwrap();
    let d_path = f.driver.mount("app", ID).await.unwrap();
    let p_path = f.driver.mount("app", PODMAN_MOUNT_ID).await.unwrap();
    // An engine not reached yet could have made either: nothing is released.
    unknown.unreachable.store(true, Ordering::SeqCst);
    assert_eq!(f.driver.sweep_stale(Duration::ZERO).await, 0);
    // Without it, Docker's silence keeps only a Docker mount, Podman's only Podman's.
    let f = fixture_with(vec![docker.clone(), podman.clone()]);
    f.driver.create("app", opts(&[("path", "kv/app")])).await.unwrap();
    let d_path2 = f.driver.mount("app", ID).await.unwrap();
    let p_path2 = f.driver.mount("app", PODMAN_MOUNT_ID).await.unwrap();
    docker.unreachable.store(true, Ordering::SeqCst);
    assert_eq!(f.driver.sweep_stale(Duration::ZERO).await, 1);
    assert!(f.driver.mounter.is_mounted(&d_path2) && !f.driver.mounter.is_mounted(&p_path2));
    let _ = (d_path, p_path);
    // No engine at all (`plugin.engines = []`): nothing can tell, nothing is released.
    let f = fixture_with(vec![]);
    f.driver.create("app", opts(&[("path", "kv/app")])).await.unwrap();
    f.driver.mount("app", ID).await.unwrap();
    assert_eq!(f.driver.sweep_stale(Duration::ZERO).await, 0);
    assert_eq!(f.driver.tie_containers().await, 1);
}

#[tokio::test]
async fn a_container_an_earlier_build_found_is_looked_for_again_after_a_restart() {
    let f = fixture();
    f.driver.create("app", opts(&[("path", "kv/app")])).await.unwrap();
    let old = f.driver.mount("app", ID).await.unwrap();
    let moved = f.driver.mount("app", OTHER).await.unwrap();
    // As an earlier build recorded one: a container, found by who could see the tmpfs, and no
    // engine; the other tied through an engine no longer configured.
    let watcher = Container { id: "watcher".into(), name: "watcher".into() };
    for (id, engine) in [(ID, None), (OTHER, Some("/gone/docker.sock".to_owned()))] {
        let key = ("app".to_owned(), id.to_owned());
        let mut record = f.store.mounts.lock().unwrap().get(&key).cloned().unwrap();
        (record.container, record.engine) = (Some(watcher.clone()), engine);
        f.store.mounts.lock().unwrap().insert(key, record);
    }
    let mounter = crate::tmpfs::FakeMounter::default();
    for (id, path) in [(ID, &old), (OTHER, &moved)] {
        let files = f.driver.files_dir("app", id);
        let options = f.driver.mounter.mounted.lock().unwrap()[0].1.clone();
        mounter.mounted.lock().unwrap().push((files.clone(), options));
        mounter.binds.lock().unwrap().push((path.clone(), files));
    }
    let identity = f.driver.identity.clone();
    let again = f.restarted(mounter, identity);
    again.restore().await;
    assert_eq!(again.container_died("fake", "watcher").await, 0, "untied at the restart");
    f.engine.runs("c1", "app", "/s", &device(&old));
    f.engine.runs("c2", "app", "/s", &device(&moved));
    assert_eq!(again.tie_containers().await, 0);
    let tied_to = |id: &str| {
        let key = ("app".to_owned(), id.to_owned());
        let record = f.store.mounts.lock().unwrap().get(&key).cloned().unwrap();
        (record.container.map(|c| c.id), record.engine)
    };
    assert_eq!(tied_to(ID), (Some("c1".into()), Some("fake".into())));
    assert_eq!(tied_to(OTHER), (Some("c2".into()), Some("fake".into())));
}

/// Polls `done` while the (paused) clock runs on.
async fn until(mut done: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not done within 100 s of the paused clock");
}

#[tokio::test]
async fn deaths_are_followed_and_followed_again_after_the_engine_hangs_up() {
    let f = fixture();
    f.driver.create("app", opts(&[("path", "kv/app")])).await.unwrap();
    let one = f.driver.mount("app", ID).await.unwrap();
    let two = f.driver.mount("app", OTHER).await.unwrap();
    f.engine.runs("c1", "app", "/s", &device(&one));
    f.engine.runs("c2", "app", "/s", &device(&two));
    f.driver.tie_containers().await;
    let (vault, engine) = (f.vault.clone(), f.engine.clone());
    let driver = Arc::new(f.driver);
    tokio::time::pause();
    engine.unreachable.store(true, Ordering::SeqCst);
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(driver.clone().follow_deaths(shutdown));
    tokio::time::sleep(Duration::from_secs(5)).await;
    engine.unreachable.store(false, Ordering::SeqCst);
    until(|| engine.followed.load(Ordering::SeqCst) == 1).await;
    engine.die("c1");
    until(|| vault.revoked.lock().unwrap().len() == 1).await;
    assert_eq!(*vault.revoked.lock().unwrap(), ["child-0"]);
    engine.hang_up();
    until(|| engine.followed.load(Ordering::SeqCst) == 2).await;
    engine.die("c2");
    until(|| vault.revoked.lock().unwrap().len() == 2).await;
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn a_new_mount_is_tied_by_the_loop_as_soon_as_its_container_shows() {
    let f = fixture();
    f.driver.create("app", opts(&[("path", "kv/app")])).await.unwrap();
    let path = f.driver.mount("app", ID).await.unwrap();
    let (store, engine) = (f.store.clone(), f.engine.clone());
    let driver = Arc::new(f.driver);
    tokio::time::pause();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(driver.clone().tie_new_mounts(shutdown));
    tokio::time::sleep(Duration::from_secs(3)).await; // the container takes a while to start
    engine.runs("c1", "app", "/s", &device(&path));
    let key = ("app".to_owned(), ID.to_owned());
    let tied = || store.mounts.lock().unwrap().get(&key).is_some_and(|r| r.container.is_some());
    let started = tokio::time::Instant::now();
    until(tied).await;
    assert!(started.elapsed() <= Duration::from_secs(5), "looked for at least every 5 s");
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn the_sweep_loop_releases_a_mount_whose_container_is_gone() {
    let f = fixture();
    f.driver.create("app", opts(&[("path", "kv/app")])).await.unwrap();
    let kept = f.driver.mount("app", ID).await.unwrap();
    let gone = f.driver.mount("app", OTHER).await.unwrap();
    f.engine.runs("c1", "app", "/s", &device(&kept));
    let driver = Arc::new(f.driver);
    tokio::time::pause();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(driver.clone().sweep_every(Duration::from_secs(60), shutdown));
    until(|| !driver.mounter.is_mounted(&gone)).await;
    assert!(driver.mounter.is_mounted(&kept));
    assert_eq!(*f.vault.revoked.lock().unwrap(), ["child-1"]);
    stop.send(true).unwrap();
    task.await.unwrap();
}

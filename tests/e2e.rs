//! End to end with the real Docker engine and CLI: `docker volume create --driver`,
//! `docker run` reading the secret from a tmpfs, `docker stop` revoking.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::*;

// The harness these tests share with every module that drives Docker is `util::docker`; tests
// written against `crate::e2e::…` still find it here.
#[allow(unused_imports)]
pub use crate::util::docker::{docker, docker_lock, docker_ok, image, DockerLock, E2e, DRIVER};

#[test]
fn docker_run_reads_the_secret_from_a_tmpfs_and_stop_revokes_its_token_on_every_engine() {
    let mut t = E2e::start();
    t.bao.put_kv2("e2e", json!({"password": "from-vault", "user": "app"}));
    let vol = t.volume("e2e", &["path=secret/data/e2e", "uid=1000", "gid=1000", "mode=0440"]);
    let before = t.bao.accessors();
    let c = t.run_detached(&vol);
    assert_eq!(docker_ok(&["exec", &c, "cat", "/run/secrets/password"]), "from-vault");
    assert_eq!(
        docker_ok(&["exec", &c, "stat", "-c", "%u %g %a", "/run/secrets/password"]),
        "1000 1000 440"
    );
    let mounts = docker_ok(&["exec", &c, "grep", " /run/secrets ", "/proc/mounts"]);
    assert!(mounts.starts_with("vault-secrets /run/secrets tmpfs ro,"), "{mounts}");
    assert!(mounts.contains("size=1024k") && mounts.contains("noswap"), "{mounts}");
    // runc's read-only bind remount does not carry the per-mount flags into the container; the
    // tmpfs itself, on the host, has them (and no file is ever executable: see `mode`).
    let host = t.plugin.mounts_left();
    assert_eq!(host.len(), 1, "one tmpfs on the host: {host:?}");
    let opts = mount_options(Path::new(&host[0])).unwrap();
    for o in ["nosuid", "nodev", "noexec"] {
        assert!(opts.contains(o), "{o} missing on the host: {opts}");
    }
    // A non-root user in the container reads it through its group.
    assert_eq!(docker_ok(&["exec", "-u", "2000:1000", &c, "cat", "/run/secrets/user"]), "app");
    assert!(!docker(&["exec", "-u", "2000:2000", &c, "cat", "/run/secrets/user"]).status.success());
    assert_eq!(
        t.bao.accessors().len(),
        before.len() + 1,
        "the container's mount has its own token"
    );
    docker_ok(&["stop", "-t", "1", &c]);
    assert_eq!(t.bao.accessors(), before, "docker stop revoked the mount's token");
    assert!(t.plugin.mounts_left().is_empty(), "the tmpfs is gone");
    docker_ok(&["rm", &c]);
    docker_ok(&["volume", "rm", &vol]);
    assert!(!docker_ok(&["volume", "ls", "-q"]).lines().any(|l| l == vol));
}

#[test]
fn docker_volume_create_with_an_unknown_option_names_it_on_every_engine() {
    let t = E2e::start();
    let name = unique("bad");
    let out = docker(&[
        "volume",
        "create",
        "--driver",
        DRIVER,
        "-o",
        "path=secret/data/x",
        "-o",
        "colour=red",
        &name,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("colour") && stderr.contains("accepted"),
        "{stderr}"
    );
    let out = docker(&["volume", "create", "--driver", DRIVER, &name]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("path"), "a missing path is named");
    drop(t);
}

#[test]
fn a_restarted_plugin_keeps_its_volumes_and_running_containers_on_every_engine() {
    let mut t = E2e::start();
    t.bao.put_kv2("restart", json!({"password": "kept"}));
    let vol = t.volume("restart", &["path=secret/data/restart"]);
    let c = t.run_detached(&vol);
    let before_stop = t.bao.accessors().len();
    t.plugin.stop(true);
    t.plugin.restart();
    let inspect = docker_ok(&["volume", "inspect", "--format", "{{.Driver}} {{.Name}}", &vol]);
    assert_eq!(inspect, format!("{DRIVER} {vol}"));
    assert_eq!(docker_ok(&["exec", &c, "cat", "/run/secrets/password"]), "kept");
    let mount = format!("{vol}:/s:ro");
    assert_eq!(
        docker_ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            &mount,
            &image(),
            "cat",
            "/s/password"
        ]),
        "kept"
    );
    docker_ok(&["stop", "-t", "1", &c]);
    assert_eq!(
        t.bao.accessors().len(),
        before_stop - 1,
        "the restarted plugin revoked the older mount's token"
    );
    assert!(t.plugin.mounts_left().is_empty());
}

#[test]
fn a_database_user_lives_as_long_as_its_container_on_every_engine() {
    let mut t = E2e::start();
    t.bao.database_role("e2e", "1h", "2h");
    let vol = t.volume("db", &["path=database/creds/e2e"]);
    let c = t.run_detached(&vol);
    let user = docker_ok(&["exec", &c, "cat", "/run/secrets/username"]);
    assert!(pg_role_exists(&user));
    docker_ok(&["stop", "-t", "1", &c]);
    let stopped = Instant::now();
    assert!(
        wait_until(Duration::from_secs(5), || !pg_role_exists(&user)),
        "the database user was not dropped"
    );
    let delay = stopped.elapsed();
    eprintln!("database user dropped {} ms after `docker stop` returned", delay.as_millis());
}

#[test]
fn mounts_no_container_holds_are_released_and_running_ones_kept_on_every_engine() {
    let mut t = E2e::start();
    t.plugin.env.push(("VAULT_SECRETS_SWEEP_INTERVAL".into(), "1".into()));
    t.plugin.stop(false);
    t.plugin.restart();
    t.bao.put_kv2("sweep", json!({"password": "kept"}));
    let vol = t.volume("sweep", &["path=secret/data/sweep"]);
    let before = t.bao.accessors().len();
    let c = t.run_detached(&vol);
    // A mount that no container holds, as after a Docker daemon crash (no Unmount comes).
    let orphan = t.plugin.mount(&vol, &mount_id());
    assert_eq!(t.bao.accessors().len(), before + 2);
    assert!(
        wait_until(Duration::from_secs(10), || mount_options(&orphan).is_none()),
        "the orphaned mount is released by the sweep"
    );
    assert_eq!(t.bao.accessors().len(), before + 1, "and its token revoked");
    // Several sweeps later, the running container's mount and token are still there.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(docker_ok(&["exec", &c, "cat", "/run/secrets/password"]), "kept");
    assert_eq!(t.bao.accessors().len(), before + 1, "the running container's token is kept");
    assert_eq!(t.plugin.mounts_left().len(), 1);
    docker_ok(&["stop", "-t", "1", &c]);
    assert_eq!(t.bao.accessors().len(), before);
}

/// Engine ≥ 26's `volume-subpath` (API 1.45): the engine opens the sub-path once, at container
/// start, and binds what it found. On a file, that pins the file's inode: the plugin rewrites a
/// changed file by rename, so a file sub-path never sees a rotation. A directory sub-path (a
/// `path.NAME` source's directory) is the directory itself and shows every new file.
#[test]
fn a_file_subpath_never_sees_a_rotated_file_and_a_directory_subpath_does_on_current_engines() {
    let mut t = E2e::start();
    let key = unique("subpath");
    t.bao.put_kv2(&key, json!({"password": "one"}));
    let path = format!("path=secret/data/{key}");
    let db = format!("path.db=secret/data/{key}");
    let vol = t.volume("subpath", &[&path, &db, "refresh=1s"]);
    let file = format!("type=volume,src={vol},dst=/file,volume-subpath=password,readonly");
    let dir = format!("type=volume,src={vol},dst=/dir,volume-subpath=db,readonly");
    let c = docker_ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--mount",
        &file,
        "--mount",
        &dir,
        &image(),
        "sleep",
        "600",
    ]);
    t.containers.push(c.clone());
    assert_eq!(docker_ok(&["exec", &c, "cat", "/file"]), "one");
    assert_eq!(docker_ok(&["exec", &c, "cat", "/dir/password"]), "one");

    t.bao.put_kv2(&key, json!({"password": "two"}));
    assert!(
        wait_until(Duration::from_secs(10), || docker_ok(&["exec", &c, "cat", "/dir/password"])
            == "two"),
        "the directory sub-path shows the rotated file"
    );
    // Both mounts (one per mount point) have rewritten their files on the host by now.
    let rotated = || {
        let host = t.plugin.mounts_left();
        host.len() == 2
            && host.iter().all(|m| {
                std::fs::read_to_string(Path::new(m).join("password")).is_ok_and(|p| p == "two")
            })
    };
    assert!(
        wait_until(Duration::from_secs(10), rotated),
        "both tmpfs mounts hold the new value: {:?}",
        t.plugin.mounts_left()
    );
    assert_eq!(
        docker_ok(&["exec", &c, "cat", "/file"]),
        "one",
        "the file sub-path still shows the file it was started with"
    );
}

/// Stops the engine under test (by its recorded pid: one `tests/engines.sh` started) and starts
/// it again through tests/engines.sh with `flags` (`VAULT_SECRETS_DOCKERD_FLAGS`), waiting for
/// each.
fn restart_engine(flags: &str) {
    let engine = test_engine();
    let pidfile = engine.pidfile.as_ref().expect("an engine tests/engines.sh runs");
    let pid = std::fs::read_to_string(pidfile).expect("the engine's pid file");
    let pid = pid.trim().to_owned();
    let gone = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
            .unwrap_or(true)
    };
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert!(wait_until(Duration::from_secs(60), gone), "dockerd (pid {pid}) did not stop");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/engines.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .arg(engine.name)
        .env("VAULT_SECRETS_DOCKERD_FLAGS", flags)
        .output()
        .unwrap();
    assert!(out.status.success(), "tests/engines.sh: {}", String::from_utf8_lossy(&out.stderr));
}

/// Puts the engine back as tests/engines.sh starts it (no live-restore), whatever happened.
struct NoLiveRestore;

impl Drop for NoLiveRestore {
    fn drop(&mut self) {
        restart_engine("");
    }
}

/// With live-restore, a dockerd restart leaves running containers running and makes no Mount or
/// Unmount call (moby's plugin volumes have no live-restore hook; dockerd takes its references
/// back from its own records): the container keeps its files and token, and the Unmount comes
/// when the container stops. On the engines tests/engines.sh runs: the test restarts the engine
/// it drives.
#[test]
fn with_live_restore_a_daemon_restart_makes_no_mount_or_unmount_on_current_engines() {
    let mut t = E2e::start();
    restart_engine("--live-restore");
    let _restore = NoLiveRestore;
    assert_eq!(docker_ok(&["info", "--format", "{{.LiveRestoreEnabled}}"]), "true");
    let key = unique("live-restore");
    t.bao.put_kv2(&key, json!({"password": "kept"}));
    let vol = t.volume("live", &[&format!("path=secret/data/{key}")]);
    let before = t.bao.accessors();
    let c = t.run_detached(&vol);
    assert_eq!(docker_ok(&["exec", &c, "cat", "/run/secrets/password"]), "kept");
    // The audit log (stderr, in the plugin's log here) has one line per mount and unmount.
    let events = |e: &str| t.plugin.log().matches(&format!("\"event\":\"{e}\"")).count();
    let (mounts, unmounts) = (events("mount"), events("unmount"));
    assert!(mounts >= 1, "the audit log counts mounts:\n{}", t.plugin.log());

    restart_engine("--live-restore");
    assert_eq!(docker_ok(&["inspect", "--format", "{{.State.Running}}", &c]), "true");
    assert_eq!(docker_ok(&["exec", &c, "cat", "/run/secrets/password"]), "kept");
    assert_eq!((events("mount"), events("unmount")), (mounts, unmounts), "no Mount, no Unmount");
    assert_eq!(t.bao.accessors().len(), before.len() + 1, "the mount's token is still there");

    docker_ok(&["stop", "-t", "1", &c]);
    assert!(
        wait_until(Duration::from_secs(10), || t.bao.accessors() == before),
        "the stop after the restart revoked the token"
    );
    assert_eq!(events("unmount"), unmounts + 1);
}

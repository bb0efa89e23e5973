//! Upgrades that keep running containers. The earlier release — 0.1.0, its last commit
//! [`EARLIER`], built from this repository's history by [`earlier_build`] — serves a container
//! a KV volume and a database lease of a few seconds; the plugin is upgraded while the container
//! runs — the legacy install by restarting on this build, the managed plugin by `docker plugin
//! upgrade` — and this build must then: keep the container's files, renew the lease past its
//! TTL, bring a KV change into the container, and revoke everything when it stops.
//!
//! And the other way: records of a newer format than this build's (a downgrade) stop it at
//! start-up, touching nothing; two plugins never share a state directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::managed::{
    build_plugin, config_dir, host_status, musl_target_dir, put_kv2, settings, Cleanup, Registry,
    RuntimeDir, MUSL_BUILD,
};
use crate::util::docker::{docker, docker_ok, image, E2e};
use crate::util::vault::{pg_login, status_mounts, Creds};
use crate::util::*;

/// The earlier release upgraded from: its version, and the commit it was built from.
const EARLIER: (&str, &str) = ("0.1.0", "4194f3a");

/// The earlier release's managed plugin (`config.json` and `rootfs/`, whose static binary is
/// also its legacy install), built by its own `plugin/build.sh` from [`earlier_source`] (in
/// `target/earlier/COMMIT`, its musl dependencies shared with this build's), once per machine:
/// kept in `/var/cache/vault-secrets-test/earlier/COMMIT`.
fn earlier_build() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let (version, commit) = EARLIER;
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = repo.join("target/earlier").join(commit);
        let cache = Path::new("/var/cache/vault-secrets-test/earlier").join(commit);
        let plugin = cache.join("plugin");
        let binary = plugin.join("rootfs/vault-secrets-plugin");
        if !binary.exists() {
            let src = dir.join("src");
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&src).unwrap();
            let started = Instant::now();
            earlier_source(repo, &src);
            let _build = MUSL_BUILD.lock().unwrap_or_else(|p| p.into_inner());
            let out = Command::new("bash")
                .arg(src.join("plugin/build.sh"))
                .arg(dir.join("plugin.new"))
                .env("CARGO_TARGET_DIR", musl_target_dir())
                .output()
                .expect("bash plugin/build.sh");
            assert!(
                out.status.success(),
                "{commit}'s plugin/build.sh failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::fs::create_dir_all(&cache).unwrap();
            let _ = std::fs::remove_dir_all(&plugin);
            let moved =
                Command::new("mv").arg(dir.join("plugin.new")).arg(&plugin).status().unwrap();
            assert!(
                moved.success(),
                "mv {} {}",
                dir.join("plugin.new").display(),
                plugin.display()
            );
            let _ = std::fs::remove_dir_all(&dir);
            eprintln!("{version} ({commit}) built in {:.0} s", started.elapsed().as_secs_f64());
        }
        let said = Command::new(&binary).arg("--version").output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&said.stdout).trim(),
            format!("vault-secrets-plugin {version}"),
            "{} is not {version}",
            binary.display()
        );
        plugin
    })
}

/// The earlier release's source, unpacked into `src`: `git archive` of [`EARLIER`]'s commit when
/// this clone holds it (and then the committed archive must be that same tree), else the archive
/// `tests/fixtures/earlier/VERSION-COMMIT.tar.gz` (a shallow clone, a source tarball).
fn earlier_source(repo: &Path, src: &Path) {
    let (version, commit) = EARLIER;
    let archive = repo.join(format!("tests/fixtures/earlier/{version}-{commit}.tar.gz"));
    let in_history = Command::new("git")
        .args(["cat-file", "-e", &format!("{commit}^{{commit}}")])
        .current_dir(repo)
        .status()
        .is_ok_and(|s| s.success());
    let unpack = |what: &str| {
        let ok = Command::new("sh").args(["-c", what]).status().unwrap().success();
        assert!(ok, "{what}");
    };
    if !in_history {
        eprintln!(
            "commit {commit} is not in this clone: building {version} from {}",
            archive.display()
        );
        return unpack(&format!("tar -xzf {} -C {}", archive.display(), src.display()));
    }
    unpack(&format!("git -C {} archive {commit} | tar -x -C {}", repo.display(), src.display()));
    let listed = |command: String| {
        let out = Command::new("sh").args(["-c", &command]).output().unwrap();
        assert!(out.status.success(), "{command}");
        out.stdout
    };
    let from_git = listed(format!("git -C {} archive {commit} | tar -tv | sort", repo.display()));
    let from_file = listed(format!("tar -tvzf {} | sort", archive.display()));
    assert!(from_git == from_file, "{} is not the tree of {commit}", archive.display());
}

/// `username` and `password` from `/run/db` in container `c`, in one `docker exec`.
fn db_creds(c: &str) -> Creds {
    let out =
        docker(&["exec", c, "sh", "-c", "cat /run/db/username && echo && cat /run/db/password"]);
    assert!(out.status.success(), "reading /run/db: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let (user, password) = text.split_once('\n').expect("two files");
    Creds { user: user.to_owned(), password: password.to_owned() }
}

fn kv_password(c: &str) -> String {
    docker_ok(&["exec", c, "cat", "/run/kv/password"])
}

/// The database role, the KV secret and the two volume options of the scenario.
const TTL: Duration = Duration::from_secs(6);

fn prepare_vault(bao: &Bao) {
    bao.database_role("upgrade", "6s", "10m");
    put_kv2(bao, "upgrade", json!({ "password": "before-the-upgrade" }));
}

const KV: [&str; 2] = ["path=secret/data/upgrade", "refresh=1s"];
const DB: [&str; 1] = ["path=database/creds/upgrade"];

/// A container using both volumes (`/run/kv`, `/run/db`), named up front for `containers`.
fn run_container(containers: &mut Vec<String>, kv: &str, db: &str) -> String {
    let name = unique("upgrade");
    containers.push(name.clone());
    let (kv, db) = (format!("{kv}:/run/kv:ro"), format!("{db}:/run/db:ro"));
    let image = image();
    let args = ["run", "-d", "--name", &name, "--network", "none", "-v", &kv, "-v", &db, &image];
    docker_ok(&[&args[..], &["sleep", "600"]].concat());
    name
}

/// What the new build must do for the running container `c` after the upgrade at `upgraded`:
/// its files are there, its database user (`before`) keeps working well past the lease's TTL
/// (the old plugin is gone: only the new build can have renewed it), a KV change reaches it,
/// and `docker stop` revokes its tokens (`accessors`) and drops the user. Prints the figures.
fn the_new_build_took_over(
    bao: &Bao,
    c: &str,
    before: &Creds,
    accessors: &[String],
    upgraded: Instant,
) {
    assert_eq!(kv_password(c), "before-the-upgrade", "the KV file after the upgrade");
    assert_eq!(&db_creds(c), before, "the database files after the upgrade");
    let mut checks = 0;
    while upgraded.elapsed() < 3 * TTL {
        let creds = db_creds(c);
        assert_eq!(creds.user, before.user, "the lease was replaced, not renewed");
        pg_login(&creds).unwrap_or_else(|e| {
            panic!(
                "{} cannot log in {:.1} s after the upgrade: {e}",
                creds.user,
                upgraded.elapsed().as_secs_f64()
            )
        });
        checks += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "{}: logged in {checks} times over {:.0} s after the upgrade (the lease's TTL: {} s)",
        before.user,
        upgraded.elapsed().as_secs_f64(),
        TTL.as_secs()
    );
    put_kv2(bao, "upgrade", json!({ "password": "after-the-upgrade" }));
    let changed = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || kv_password(c) == "after-the-upgrade"),
        "the KV change did not reach the container within 10 s"
    );
    eprintln!("KV change in the container after {} ms (refresh=1s)", changed.elapsed().as_millis());
    docker_ok(&["stop", "-t", "1", c]);
    let stopped = Instant::now();
    assert!(
        wait_until(Duration::from_secs(5), || !pg_role_exists(&before.user)),
        "{} still exists 5 s after docker stop",
        before.user
    );
    let dropped = stopped.elapsed();
    assert!(
        wait_until(Duration::from_secs(5), || {
            let left = bao.accessors();
            accessors.iter().all(|a| !left.contains(a))
        }),
        "a mount token outlived its container"
    );
    eprintln!("docker stop: user dropped after {} ms, both tokens revoked", dropped.as_millis());
}

/// Whether `log` has this build's start-up line (`serving`, with `version="0.2.0 …"`; in
/// dockerd's log, a managed plugin's line is quoted again: `version=\"0.2.0 …`).
fn this_build_serves(log: &str) -> bool {
    let version = env!("CARGO_PKG_VERSION");
    log.lines().any(|l| {
        l.contains("serving")
            && (l.contains(&format!("version=\"{version} "))
                || l.contains(&format!("version=\\\"{version} ")))
    })
}

/// The mount records in a private tmpfs: each one's format and accessor.
fn records(private: &Path) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(private.join("mounts")).unwrap().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let record: Value = serde_json::from_str(&text).unwrap();
        out.push((
            record["version"].as_u64().unwrap(),
            record["accessor"].as_str().unwrap().to_owned(),
        ));
    }
    out
}

#[test]
fn a_legacy_install_restarted_on_this_build_keeps_its_containers_on_every_engine() {
    let earlier = earlier_build().join("rootfs/vault-secrets-plugin");
    let mut t = E2e::start();
    prepare_vault(&t.bao);
    // The earlier release on the e2e driver's socket, as it ran until now.
    t.plugin.stop(true);
    let socket = t.plugin.socket.clone();
    t.plugin = Plugin::configure(Some(&socket), &t.bao.address(), &t.bao.token, "");
    t.plugin.program = earlier;
    t.plugin.restart();
    let kv = t.volume("upgrade-kv", &KV);
    let db = t.volume("upgrade-db", &DB);
    let c = run_container(&mut t.containers, &kv, &db);
    let before = db_creds(&c);
    pg_login(&before).expect("the earlier release's credentials work");
    let private = t.plugin.runtime.join("private");
    let old = records(&private);
    assert_eq!(old.len(), 2, "two mount records: {old:?}");
    assert!(old.iter().all(|(format, _)| *format == 1), "{} writes format 1: {old:?}", EARLIER.0);
    let accessors: Vec<String> = old.into_iter().map(|(_, a)| a).collect();

    // The upgrade: SIGTERM (mounts kept), and the new binary on the same configuration.
    let upgraded = Instant::now();
    t.plugin.stop(false);
    t.plugin.program = PathBuf::from(BIN);
    t.plugin.restart();
    eprintln!(
        "upgrade: the plugin answered again {} ms after its SIGTERM",
        upgraded.elapsed().as_millis()
    );
    let log = t.plugin.log();
    assert!(
        !log.contains("releasing a mount left by a previous run"),
        "a mount was released:\n{log}"
    );
    assert!(this_build_serves(&log), "not this build:\n{log}");
    let adopted = records(&private);
    assert!(
        adopted.iter().all(|(format, _)| *format == 2) && adopted.len() == 2,
        "the adopted records are written in this build's format: {adopted:?}"
    );
    the_new_build_took_over(&t.bao, &c, &before, &accessors, upgraded);
    assert!(
        wait_until(Duration::from_secs(5), || t.plugin.mounts_left().is_empty()),
        "mounts left: {:?}",
        t.plugin.mounts_left()
    );
}

#[test]
fn a_managed_plugin_upgraded_with_docker_plugin_upgrade_keeps_its_containers_on_every_engine() {
    let earlier = earlier_build();
    let build = build_plugin();
    let _lock = crate::util::docker::docker_lock();
    let registry = Registry::start();
    let reference = |version: &str| format!("127.0.0.1:{}/vault-secrets:{version}", registry.port);
    let (old_ref, new_ref) = (reference(EARLIER.0), reference(env!("CARGO_PKG_VERSION")));
    let mut cleanup = Cleanup::new(&old_ref);
    for (reference, dir) in [(&old_ref, earlier), (&new_ref, build.path())] {
        cleanup.plugin = reference.clone();
        docker_ok(&["plugin", "create", reference, &dir.display().to_string()]);
        docker_ok(&["plugin", "push", reference]);
        docker_ok(&["plugin", "rm", reference]);
    }

    let bao = Bao::start();
    prepare_vault(&bao);
    let config = config_dir(&bao);
    let runtime = RuntimeDir::new();
    let name = unique("vault-secrets-upgrade-test");
    cleanup.plugin = name.clone();
    // 0.1.0 has no `state` mount: its definitions live in its rootfs.
    let new_settings = settings(config.path(), &runtime, &test_engine().socket, None);
    let old_settings: Vec<&str> =
        new_settings.iter().map(String::as_str).filter(|s| !s.starts_with("state.")).collect();
    let install = ["plugin", "install", "--alias", &name, "--grant-all-permissions", &old_ref];
    docker_ok(&[&install[..], &old_settings].concat());
    let kv = unique("upgrade-kv");
    let db = unique("upgrade-db");
    for (volume, options) in [(&kv, &KV[..]), (&db, &DB[..])] {
        let mut args = vec!["volume", "create", "--driver", &name];
        for o in options {
            args.extend(["-o", o]);
        }
        args.push(volume);
        docker_ok(&args);
        cleanup.volumes.push(volume.clone());
    }
    let c = run_container(&mut cleanup.containers, &kv, &db);
    let before = db_creds(&c);
    pg_login(&before).expect("the earlier release's credentials work");
    let status = host_status(earlier, config.path(), &runtime);
    let accessors: Vec<String> = [&kv, &db]
        .iter()
        .flat_map(|v| status_mounts(&status, v))
        .map(|m| m["accessor"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(accessors.len(), 2, "{status}");

    // The upgrade, as CHANGELOG.md says: 0.1.0's definitions out of its rootfs (once: later
    // releases keep them in `state.source`), disable, upgrade, the mounts' sources set again
    // (an upgrade resets them to config.json's), enable.
    let upgraded = Instant::now();
    let id = docker_ok(&["plugin", "inspect", "--format", "{{.Id}}", &name]);
    let data_root = docker_ok(&["info", "--format", "{{.DockerRootDir}}"]);
    let definitions = Path::new(&data_root)
        .join("plugins")
        .join(&id)
        .join("rootfs/var/lib/vault-secrets/volumes");
    let copied =
        Command::new("cp").arg("-a").arg(&definitions).arg(runtime.state()).status().unwrap();
    assert!(copied.success(), "cp -a {} {}", definitions.display(), runtime.state().display());
    docker_ok(&["plugin", "disable", "-f", &name]);
    docker_ok(&[
        "plugin",
        "upgrade",
        "--skip-remote-check",
        "--grant-all-permissions",
        &name,
        &new_ref,
    ]);
    let set = ["plugin", "set", &name];
    docker_ok(&[&set[..], &new_settings.iter().map(String::as_str).collect::<Vec<_>>()].concat());
    docker_ok(&["plugin", "enable", &name]);
    eprintln!("upgrade: disable, upgrade, set, enable in {} ms", upgraded.elapsed().as_millis());
    let log = cleanup.plugin_log().join("\n");
    assert!(
        !log.contains("releasing a mount left by a previous run"),
        "a mount was released:\n{log}"
    );
    assert!(this_build_serves(&log), "not this build:\n{log}");
    the_new_build_took_over(&bao, &c, &before, &accessors, upgraded);

    // The next upgrade needs no copy: the definitions are in `state.source`. A container started
    // after it gets the volume.
    docker_ok(&["plugin", "disable", "-f", &name]);
    docker_ok(&[
        "plugin",
        "upgrade",
        "--skip-remote-check",
        "--grant-all-permissions",
        &name,
        &new_ref,
    ]);
    docker_ok(&[&set[..], &new_settings.iter().map(String::as_str).collect::<Vec<_>>()].concat());
    docker_ok(&["plugin", "enable", &name]);
    let again = run_container(&mut cleanup.containers, &kv, &db);
    assert_eq!(kv_password(&again), "after-the-upgrade");
    pg_login(&db_creds(&again)).expect("credentials after the second upgrade");
    drop(cleanup);
    drop(registry);
}

/// The config of a plugin of its own over `dir`'s state directory and runtime directory.
fn serve(config: &Path) -> std::process::Output {
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .env_remove("VAULT_ADDR")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve did not stop at start-up: {:?}", child.wait_with_output());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn records_of_a_newer_format_stop_the_start_and_are_kept() {
    let bao = Bao::start();
    bao.put_kv2("newer", json!({ "password": "p" }));
    let mut plugin = Plugin::start(None, &bao.address(), &bao.token, "");
    plugin.create("newer", json!({ "path": "secret/data/newer" }));
    let id = mount_id();
    let mountpoint = plugin.mount("newer", &id);
    plugin.stop(false);
    // What a newer build would have written: a format this one does not know.
    let record = plugin.runtime.join(format!("private/mounts/newer@{id}.json"));
    let text = std::fs::read_to_string(&record).unwrap();
    let mut value: Value = serde_json::from_str(&text).unwrap();
    let format = value["version"].as_u64().unwrap();
    value["version"] = (format + 1).into();
    let accessor = value["accessor"].as_str().unwrap().to_owned();
    std::fs::write(&record, value.to_string()).unwrap();

    let out = serve(&plugin.config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "exit status of a downgrade: {stderr}");
    for part in [
        record.display().to_string(),
        format!("format {}", format + 1),
        format!("formats 1 to {format}"),
        "newer vault-secrets".into(),
    ] {
        assert!(stderr.contains(&part), "{part:?} in: {stderr}");
    }
    assert!(!stderr.contains(value["token"].as_str().unwrap()), "no token in the error");
    // Nothing was touched: the mount, its record, its token.
    assert!(mount_options(&mountpoint).is_some(), "the mount is still there");
    assert!(bao.accessors().contains(&accessor), "the token is still valid");
    assert_eq!(std::fs::read_to_string(&record).unwrap(), value.to_string());

    // The newer build's record put back as it was, this build takes the mount over again.
    std::fs::write(&record, text).unwrap();
    plugin.restart();
    plugin.unmount("newer", &id);
    assert!(!bao.accessors().contains(&accessor), "revoked at the last unmount");
}

#[test]
fn two_plugins_never_share_a_state_directory() {
    let bao = Bao::start();
    let first = Plugin::start(None, &bao.address(), &bao.token, "");
    let second = Plugin::configure(None, &bao.address(), &bao.token, "");
    // The second one's own socket and runtime directory, but the first one's state directory.
    let text = std::fs::read_to_string(&second.config).unwrap();
    let state = |p: &Plugin| format!("{}/state", p.dir.path().display());
    std::fs::write(&second.config, text.replace(&state(&second), &state(&first))).unwrap();
    let out = serve(&second.config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "state_dir {} is in use by another vault-secrets plugin",
            state(&first)
        )),
        "{stderr}"
    );
    assert_eq!(first.call("/Plugin.Activate", None).unwrap().0, 200, "the first one serves on");
}

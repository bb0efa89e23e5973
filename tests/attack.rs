//! Attacks on the host through a secrets volume, run as an attacker would: from inside a real
//! container that owns its mount (root in the container, `-v` without `:ro`), and from
//! `docker volume create` with hostile options. Each must have no effect on the host, on other
//! mounts or on the plugin, which keeps serving and refreshing.

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::util::docker::{docker, docker_ok, image, E2e, DRIVER};
use crate::util::*;

/// A directory on the host that an attacker would like to write into, with one file in it.
struct HostDir(tempfile::TempDir);

impl HostDir {
    fn new() -> HostDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keep"), "host file").unwrap();
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        HostDir(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    /// Nothing was added, removed, rewritten, chowned or chmodded.
    fn untouched(&self) {
        let names: Vec<String> = std::fs::read_dir(self.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["keep"], "nothing was written into the host directory");
        assert_eq!(std::fs::read_to_string(self.path().join("keep")).unwrap(), "host file");
        let meta = std::fs::metadata(self.path()).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o7777), (0, 0, 0o755));
    }
}

/// `docker run -d` with the volume mounted read-write as far as Docker is concerned (no `:ro`),
/// as root in the container.
fn run_writable(t: &mut E2e, volume: &str, user: Option<&str>) -> String {
    let mount = format!("{volume}:/run/secrets");
    let mut args = vec!["run", "-d", "--network", "none", "-v", &mount];
    if let Some(u) = user {
        args.extend(["--user", u]);
    }
    let image = image();
    args.extend([image.as_str(), "sleep", "600"]);
    let id = docker_ok(&args);
    t.containers.push(id.clone());
    id
}

/// Runs `script` in the container; returns (success, stdout + stderr).
fn sh(container: &str, script: &str) -> (bool, String) {
    let out = docker(&["exec", container, "sh", "-c", script]);
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn a_container_cannot_write_into_its_secrets_volume_whatever_v_says_on_every_engine() {
    let mut t = E2e::start();
    let host = HostDir::new();
    t.bao.put_kv2("atk", json!({"password": "one", "empty": ""}));
    t.bao.put_kv2("atk-db", json!({"username": "u"}));
    let vol = t.volume(
        "atk",
        &["path=secret/data/atk", "path.db=secret/data/atk-db", "refresh=1s", "mode=0600"],
    );
    let c = run_writable(&mut t, &vol, None);
    let mounts = docker_ok(&["exec", &c, "grep", " /run/secrets ", "/proc/mounts"]);
    assert!(
        mounts.contains(" ro,") || mounts.contains(" ro "),
        "read-only in the container: {mounts}"
    );
    let target = host.path().display().to_string();
    // Each attack of the security review, as root in the container.
    let attacks = [
        format!("rm -rf /run/secrets/db && ln -s {target} /run/secrets/db"),
        format!("rm -f /run/secrets/password && ln -s {target}/keep /run/secrets/password"),
        "rm /run/secrets/empty && mkfifo /run/secrets/empty".to_string(),
        "ln /run/secrets/password /run/secrets/hardlink".to_string(),
        "mv /run/secrets/db /run/secrets/db2".to_string(),
        "echo x > /run/secrets/password".to_string(),
        "chmod 0777 /run/secrets".to_string(),
        "mount -o remount,rw /run/secrets".to_string(),
    ];
    for attack in &attacks {
        let (ok, out) = sh(&c, attack);
        assert!(!ok, "`{attack}` succeeded in the container: {out}");
    }
    // A racer swapping names for symlinks for a few seconds, across refreshes.
    let (ok, _) = sh(
        &c,
        &format!(
            "end=$(($(date +%s)+3)); while [ $(date +%s) -lt $end ]; do \
             mv /run/secrets/db /run/secrets/x 2>/dev/null; ln -sfn {target} /run/secrets/db 2>/dev/null; \
             done; ls -la /run/secrets"
        ),
    );
    assert!(ok);
    t.bao.put_kv2("atk", json!({"password": "two", "empty": ""}));
    assert!(
        wait_until(Duration::from_secs(10), || {
            docker(&["exec", &c, "cat", "/run/secrets/password"]).stdout == b"two"
        }),
        "the plugin still refreshes the volume"
    );
    assert_eq!(docker_ok(&["exec", &c, "cat", "/run/secrets/db/username"]), "u");
    host.untouched();
    let log = t.plugin.log();
    assert!(!log.contains("panicked"), "the plugin did not panic");
}

#[test]
fn a_container_cannot_reach_another_mount_or_the_plugin_s_own_path_on_every_engine() {
    let mut t = E2e::start();
    t.bao.put_kv2("atk-a", json!({"password": "a-secret"}));
    t.bao.put_kv2("atk-b", json!({"password": "b-secret"}));
    let a = t.volume("atk-a", &["path=secret/data/atk-a", "refresh=1s", "uid=1000", "mode=0600"]);
    let b = t.volume("atk-b", &["path=secret/data/atk-b", "refresh=1s"]);
    let ca = run_writable(&mut t, &a, Some("1000"));
    let cb = run_writable(&mut t, &b, None);
    // The other mount's directory on the host, as a container that learnt it would aim at it.
    let other = t.plugin.mounts_left().into_iter().find(|m| m.contains(&b)).unwrap();
    for attack in [
        format!("rm -f /run/secrets/password && ln -s {other}/password /run/secrets/password"),
        "touch /run/secrets/new".to_string(),
    ] {
        let (ok, out) = sh(&ca, &attack);
        assert!(!ok, "`{attack}` succeeded as uid 1000: {out}");
    }
    t.bao.put_kv2("atk-a", json!({"password": "a-rotated"}));
    assert!(wait_until(Duration::from_secs(10), || {
        docker(&["exec", &ca, "cat", "/run/secrets/password"]).stdout == b"a-rotated"
    }));
    assert_eq!(docker_ok(&["exec", &cb, "cat", "/run/secrets/password"]), "b-secret");
    // The tmpfs the plugin writes through is in a 0700 directory no container sees.
    let files = t.plugin.runtime.join("files");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&files).unwrap().mode() & 0o777, 0o700);
    let (ok, _) = sh(&ca, &format!("ls {}", files.display()));
    assert!(!ok, "the plugin's own path is not visible in the container");
}

/// A listener that records whether anything connected to it.
fn listener() -> (u16, Arc<AtomicBool>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let hit = Arc::new(AtomicBool::new(false));
    let h = hit.clone();
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let end = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < end {
            if let Ok((mut s, _)) = l.accept() {
                h.store(true, Ordering::SeqCst);
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    (port, hit)
}

#[test]
fn volume_options_cannot_send_the_token_elsewhere_or_into_the_container_on_every_engine() {
    let mut t = E2e::start();
    let (port, hit) = listener();
    let refused = |opt: &str, expect: &str| {
        let name = unique("atk-path");
        let out = docker(&["volume", "create", "--driver", DRIVER, "-o", opt, &name]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{opt} was accepted");
        assert!(stderr.contains(expect), "{opt}: {stderr}");
    };
    refused(&format!("path=http:127.0.0.1:{port}/x"), "starts like a URL");
    refused("path=https:evil.example/a", "starts like a URL");
    refused("path=auth/token/lookup-self", "refused as sources");
    refused("path.tok=auth/token/create", "refused as sources");
    refused("path=sys/wrapping/wrap", "refused as sources");
    refused("path=cubbyhole/response", "refused as sources");
    // Through the plugin protocol too, where Docker's CLI is not in the way.
    let e = t.plugin.err(
        "/VolumeDriver.Create",
        json!({"Name": unique("atk-raw"), "Opts": {"path": format!("http:127.0.0.1:{port}/x")}}),
    );
    assert!(e.contains("starts like a URL"), "{e}");
    // A path whose first segment merely contains a colon further on is a Vault path, read from
    // Vault and nowhere else.
    let vol = t.volume("atk-colon", &[&format!("path=secret/data/x:127.0.0.1:{port}")]);
    let mount = format!("{vol}:/s:ro");
    let out = docker(&["run", "--rm", "--network", "none", "-v", &mount, &image(), "true"]);
    assert!(!out.status.success(), "no such secret in Vault");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no secret at"), "{stderr}");
    std::thread::sleep(Duration::from_millis(200));
    assert!(!hit.load(Ordering::SeqCst), "nothing connected to the foreign listener");
}

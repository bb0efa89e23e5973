//! The read-only view (issue 20, Deliver 1): with and without `:ro`, on Docker and on Podman, a
//! container cannot create, overwrite, chmod, link, rename or remove anything in its mount, nor
//! write something there and run it; the mount keeps `nosuid,nodev`; a KV change (a short
//! `refresh`) still reaches the running container, which still cannot write after it.
//!
//! Podman 4.3 has runc remount its bind of the volume `rw,nosuid,nodev` without `:ro`: what
//! keeps it read-only is the tmpfs's read-only superblock, and at a rewrite the plugin's sealing
//! of every view (src/tmpfs/seal.rs).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::docker::{docker_ok, image, E2e};
use crate::util::podman::{podman, podman_ok, test_podman};
use crate::util::*;

/// Each attack that succeeds prints `BROKE NAME`; the script ends with `END`.
const ATTACKS: &str = r#"
D=/run/secrets
try() { name=$1; shift; if "$@" >/dev/null 2>&1; then echo "BROKE $name"; fi; }
try create touch $D/new
try overwrite sh -c "echo changed > $D/password"
try append sh -c "echo more >> $D/password"
try chmod-dir chmod 0777 $D
try chmod-file chmod 0666 $D/password
try chown-file chown 1:1 $D/password
try link ln $D/password $D/hard
try symlink ln -s /etc/passwd $D/sym
try rename mv $D/password $D/moved
try remove rm $D/password
try mkdir mkdir $D/dir
try write-then-run sh -c "printf '#!/bin/sh\necho ran\n' > $D/run.sh; chmod 0755 $D/run.sh; $D/run.sh"
try copy-then-run sh -c "cp /bin/busybox $D/bb && $D/bb true"
echo END
"#;

/// Runs the attacks through `exec` (`docker` or `podman`) in `container`; panics on any that
/// worked, checks the password is still `password` and the mount `nosuid,nodev`.
fn attack(exec: &dyn Fn(&[&str]) -> String, container: &str, password: &str, what: &str) {
    attack_holding(exec, container, password, &["password"], what)
}

/// [`attack`] on a mount holding the files `names` (`ls -a` order), `password` among them.
pub(crate) fn attack_holding(
    exec: &dyn Fn(&[&str]) -> String,
    container: &str,
    password: &str,
    names: &[&str],
    what: &str,
) {
    let out = exec(&["exec", container, "sh", "-c", ATTACKS]);
    assert!(out.ends_with("END"), "{what}: the attacks did not run: {out}");
    assert!(!out.contains("BROKE"), "{what}: the container wrote to its mount:\n{out}");
    assert_eq!(exec(&["exec", container, "cat", "/run/secrets/password"]), password, "{what}");
    let ls = exec(&["exec", container, "ls", "-a", "/run/secrets"]);
    let listed: Vec<&str> = ls.lines().filter(|l| *l != "." && *l != "..").collect();
    assert_eq!(listed, names, "{what}: nothing new in the mount");
    // The plugin seals the container's view once it knows the container (shortly after the
    // start): a runtime's remount of a `:ro` bind (runc's, on Docker) drops nosuid and nodev.
    let mut line = String::new();
    let kept = wait_until(Duration::from_secs(5), || {
        line = exec(&["exec", container, "grep", " /run/secrets ", "/proc/self/mountinfo"]);
        let options = line.split(' ').nth(5).unwrap_or_default();
        ["nosuid", "nodev"].iter().all(|f| options.split(',').any(|o| o == *f))
    });
    assert!(kept, "{what}: not nosuid,nodev: {line}");
    let options = line.split(' ').nth(5).unwrap_or_default().to_owned();
    eprintln!("{what}: every attack failed; per-mount options {options}");
}

/// Changes the KV secret and waits for each container to see it (refresh=1s).
fn rotate(
    bao: &Bao,
    path: &str,
    value: &str,
    exec: &dyn Fn(&[&str]) -> String,
    containers: &[&str],
) {
    bao.put_kv2(path, json!({ "password": value }));
    let started = Instant::now();
    for c in containers {
        assert!(
            wait_until(Duration::from_secs(15), || {
                exec(&["exec", c, "cat", "/run/secrets/password"]) == value
            }),
            "the change did not reach {c}"
        );
    }
    eprintln!("the change reached every container in {} ms", started.elapsed().as_millis());
}

#[test]
fn a_container_cannot_write_its_mount_with_or_without_ro_on_every_engine() {
    let mut t = E2e::start();
    t.bao.put_kv2("readonly", json!({"password": "v0"}));
    let vol = t.volume("readonly", &["path=secret/data/readonly", "refresh=1s"]);
    let mut containers = Vec::new();
    for suffix in [":ro", ""] {
        let mount = format!("{vol}:/run/secrets{suffix}");
        let id =
            docker_ok(&["run", "-d", "--network", "none", "-v", &mount, &image(), "sleep", "600"]);
        t.containers.push(id.clone());
        containers.push(id);
    }
    let exec = |args: &[&str]| {
        let out = crate::util::docker::docker(args);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    for (c, what) in containers.iter().zip(["docker -v :ro", "docker -v"]) {
        attack(&exec, c, "v0", what);
    }
    let ids: Vec<&str> = containers.iter().map(String::as_str).collect();
    rotate(&t.bao, "readonly", "v1", &exec, &ids);
    for (c, what) in containers.iter().zip(["docker -v :ro, rotated", "docker -v, rotated"]) {
        attack(&exec, c, "v1", what);
    }
    assert!(!t.plugin.log().contains("cannot keep the view"), "{}", t.plugin.log());
}

/// The drop-in and what the test made in Podman, removed on drop.
struct Cleanup {
    drop_in: PathBuf,
    containers: Vec<String>,
    volumes: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = podman(&["rm", "-f", "-t", "0", c]);
        }
        for v in &self.volumes {
            let _ = podman(&["volume", "rm", "-f", v]);
        }
        let _ = std::fs::remove_file(&self.drop_in);
    }
}

#[test]
fn a_podman_container_cannot_write_its_mount_with_or_without_ro_on_every_podman() {
    const DRIVER: &str = "vault-secrets-readonly-test";
    let bao = Bao::start();
    bao.put_kv2("readonly", json!({"password": "v0"}));
    let run = test_podman().run_dir();
    let socket = run.join(format!("{}.sock", unique("vst-ro")));
    let mut plugin = Plugin::configure_in(&run, Some(&socket), &bao.address(), &bao.token, "");
    plugin.restart();
    let drop_ins = test_podman().drop_in_dir();
    std::fs::create_dir_all(&drop_ins).unwrap();
    let drop_in = drop_ins.join(format!("{}.conf", unique("vault-secrets-test")));
    let mut cleanup =
        Cleanup { drop_in: drop_in.clone(), containers: Vec::new(), volumes: Vec::new() };
    std::fs::write(
        &drop_in,
        format!(
            "[engine.volume_plugins]\n{DRIVER} = \"{}\"\n\n[containers]\ndefault_ulimits = []\n",
            plugin.socket.display()
        ),
    )
    .unwrap();
    let mut names = Vec::new();
    for suffix in [":ro", ""] {
        // A volume each: Podman shares one volume's mount among its containers.
        let vol = unique("readonly");
        podman_ok(&[
            "volume",
            "create",
            "--driver",
            DRIVER,
            "-o",
            "path=secret/data/readonly",
            "-o",
            "refresh=1s",
            &vol,
        ]);
        cleanup.volumes.push(vol.clone());
        let name = unique("vst-ro");
        cleanup.containers.push(name.clone());
        let mount = format!("{vol}:/run/secrets{suffix}");
        podman_ok(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            "none",
            "-v",
            &mount,
            &image(),
            "sleep",
            "600",
        ]);
        names.push(name);
    }
    let exec = |args: &[&str]| {
        let out = podman(args);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let which = format!("podman {}", test_podman().name);
    for (c, suffix) in names.iter().zip([" :ro", ""]) {
        attack(&exec, c, "v0", &format!("{which} -v{suffix}"));
    }
    let ids: Vec<&str> = names.iter().map(String::as_str).collect();
    rotate(&bao, "readonly", "v1", &exec, &ids);
    for (c, suffix) in names.iter().zip([" :ro", ""]) {
        attack(&exec, c, "v1", &format!("{which} -v{suffix}, rotated"));
    }
    assert!(!plugin.log().contains("cannot keep the view"), "{}", plugin.log());
    drop(cleanup);
}

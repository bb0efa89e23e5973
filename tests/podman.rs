//! Podman (Debian 12's 4.3, rootful), end to end: the plugin declared in `[engine.volume_plugins]`
//! of a `containers.conf.d` drop-in, as docs/engines.md, "Podman", says;
//! `podman volume create --driver`, `podman run` reading the secret from the tmpfs, `podman stop`
//! revoking the mount's token, `podman volume rm` removing the volume from the plugin.
//!
//! The drop-in also sets `[containers] default_ulimits = []`: this sandbox refuses Podman's
//! default nofile and nproc limits (nothing the plugin needs).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::e2e::image;
use crate::util::*;

const DRIVER: &str = "vault-secrets-podman-test";
const DROP_IN_DIR: &str = "/etc/containers/containers.conf.d";

fn podman(args: &[&str]) -> Output {
    Command::new("podman")
        .args(args)
        .env_remove("CONTAINERS_CONF")
        .output()
        .expect("podman (apt-get install podman: tests/engines.sh does)")
}

fn podman_ok(args: &[&str]) -> String {
    let out = podman(args);
    assert!(
        out.status.success(),
        "podman {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The drop-in, and what the test made in Podman: removed on drop, whatever state the test
/// stopped in (the drop-in last: removing a volume needs its driver).
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

fn plugin_volumes(plugin: &Plugin) -> Vec<String> {
    let v = plugin.ok("/VolumeDriver.List", json!({}));
    v["Volumes"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v["Name"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

#[test]
fn podman_runs_a_container_with_its_secret_and_stop_revokes_it() {
    let version = podman(&["version", "--format", "{{.Client.Version}}"]);
    assert!(
        version.status.success(),
        "no podman: run tests/engines.sh ({})",
        String::from_utf8_lossy(&version.stderr)
    );
    eprintln!("podman {}", String::from_utf8_lossy(&version.stdout).trim());

    let bao = Bao::start();
    bao.put_kv2("podman", json!({"password": "from-podman", "user": "app"}));
    let mut plugin = Plugin::start(None, &bao.address(), &bao.token, "");
    // Podman has no Docker API: the plugin is given none, so that its sweep (which goes by a
    // Docker engine's containers) never takes Podman's mounts for stale ones; with sweeps every
    // second, the running container's mount must outlive several.
    plugin.env.push(("DOCKER_HOST".into(), "unix:///nonexistent/docker.sock".into()));
    plugin.env.push(("VAULT_SECRETS_SWEEP_INTERVAL".into(), "1".into()));
    plugin.stop(false);
    plugin.restart();

    std::fs::create_dir_all(DROP_IN_DIR).unwrap();
    let drop_in = Path::new(DROP_IN_DIR).join(format!("{}.conf", unique("vault-secrets-test")));
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

    let vol = unique("podman");
    podman_ok(&[
        "volume",
        "create",
        "--driver",
        DRIVER,
        "-o",
        "path=secret/data/podman",
        "-o",
        "mode=0440",
        &vol,
    ]);
    cleanup.volumes.push(vol.clone());
    assert_eq!(podman_ok(&["volume", "inspect", "--format", "{{.Driver}}", &vol]), DRIVER);
    assert!(plugin_volumes(&plugin).contains(&vol), "the volume is the plugin's");

    let before = bao.accessors();
    let name = unique("vst-podman");
    cleanup.containers.push(name.clone());
    let mount = format!("{vol}:/run/secrets:ro");
    let started = Instant::now();
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
    eprintln!("podman run -d: {} ms", started.elapsed().as_millis());
    assert_eq!(podman_ok(&["exec", &name, "cat", "/run/secrets/password"]), "from-podman");
    assert_eq!(podman_ok(&["exec", &name, "stat", "-c", "%a", "/run/secrets/user"]), "440");
    let mounts = podman_ok(&["exec", &name, "grep", " /run/secrets ", "/proc/mounts"]);
    assert!(mounts.contains(" /run/secrets tmpfs ro,"), "a read-only tmpfs: {mounts}");
    assert_eq!(bao.accessors().len(), before.len() + 1, "the container's mount has its own token");
    assert_eq!(plugin.mounts_left().len(), 1);
    // Three sweep rounds (each logs that it found no Docker Engine to ask), then still there.
    let sweeps = || plugin.log().matches("no sweep of stale mounts").count();
    let first = sweeps();
    assert!(
        wait_until(Duration::from_secs(10), || sweeps() >= first + 3),
        "the plugin's sweep did not run every second:\n{}",
        plugin.log()
    );
    assert_eq!(podman_ok(&["exec", &name, "cat", "/run/secrets/password"]), "from-podman");
    assert_eq!(bao.accessors().len(), before.len() + 1, "no sweep took the running mount");

    podman_ok(&["stop", "-t", "1", &name]);
    let stopped = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || bao.accessors() == before),
        "podman stop did not revoke the mount's token:\n{}",
        plugin.log()
    );
    eprintln!("podman stop → token revoked: {} ms", stopped.elapsed().as_millis());
    assert!(
        wait_until(Duration::from_secs(5), || plugin.mounts_left().is_empty()),
        "the tmpfs is gone"
    );

    // Started again, it gets a fresh mount (and token); removed, the token goes again.
    podman_ok(&["start", &name]);
    assert_eq!(podman_ok(&["exec", &name, "cat", "/run/secrets/password"]), "from-podman");
    assert_eq!(bao.accessors().len(), before.len() + 1);
    podman_ok(&["rm", "-f", "-t", "1", &name]);
    cleanup.containers.clear();
    assert!(
        wait_until(Duration::from_secs(10), || bao.accessors() == before),
        "podman rm -f revoked it"
    );

    podman_ok(&["volume", "rm", &vol]);
    cleanup.volumes.clear();
    assert!(!plugin_volumes(&plugin).contains(&vol), "podman volume rm removed it from the plugin");
    assert!(!podman_ok(&["volume", "ls", "-q"]).lines().any(|l| l == vol));
    assert!(plugin.mounts_left().is_empty());
}

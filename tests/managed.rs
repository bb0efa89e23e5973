//! The managed plugin, end to end: `plugin/build.sh` builds it (static musl binary, config.json,
//! rootfs), and the real docker CLI creates, configures and enables it with no registry, as the
//! README's "Managed plugin" section tells a user to; then containers read their secret from it.
//!
//! The build runs every time, in its own cargo target directory (`target/musl`, or
//! `VAULT_SECRETS_MUSL_TARGET_DIR`), so it never waits on the lock of the `cargo test` that runs
//! it, and before the Docker lock is taken; cargo makes it a no-op when nothing changed (a
//! first build takes a few minutes).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::e2e::{docker, docker_ok, image};
use crate::util::*;

/// Runs `plugin/build.sh` into a fresh temporary directory; returns it.
fn build_plugin() -> tempfile::TempDir {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("VAULT_SECRETS_MUSL_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target").join("musl"));
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = Command::new("bash")
        .arg(root.join("plugin/build.sh"))
        .arg(dir.path())
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("bash plugin/build.sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "plugin/build.sh failed:\n{stderr}");
    eprintln!("plugin/build.sh: {:.1} s", started.elapsed().as_secs_f64());
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(config["entrypoint"], json!(["/vault-secrets-plugin", "serve"]));
    assert_eq!(config["linux"]["capabilities"], json!(["CAP_SYS_ADMIN"]));
    dir
}

/// Removes what the test made, whatever state it stopped in; on failure prints the plugin's
/// log lines from the dockerd log.
struct Cleanup {
    plugin: String,
    volumes: Vec<String>,
    containers: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            print_plugin_log(&self.plugin);
        }
        for c in &self.containers {
            let _ = docker(&["rm", "-f", c]);
        }
        // A volume is removed through its driver: the plugin must be enabled for that.
        let _ = docker(&["plugin", "enable", &self.plugin]);
        for v in &self.volumes {
            let _ = docker(&["volume", "rm", "-f", v]);
        }
        let _ = docker(&["plugin", "disable", "-f", &self.plugin]);
        let _ = docker(&["plugin", "rm", "-f", &self.plugin]);
    }
}

/// dockerd logs a managed plugin's output with `plugin=ID`; tests/env.sh sends its log to
/// /var/log/dockerd.log (Engine 26's: see `TestEngine::log`).
fn print_plugin_log(plugin: &str) {
    let out = docker(&["plugin", "inspect", "--format", "{{.Id}}", plugin]);
    if !out.status.success() {
        return;
    }
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let path = &test_engine().log;
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(&id)).collect();
    eprintln!("--- {plugin} ({id}) in {} ---", path.display());
    for l in &lines[lines.len().saturating_sub(60)..] {
        eprintln!("{l}");
    }
}

/// Mount points on the host below the plugin's directory in dockerd's data root, except the
/// propagated mount itself (dockerd binds it onto itself to make it shared).
fn host_mounts(plugin_id: &str) -> Vec<String> {
    let data_root = docker_ok(&["info", "--format", "{{.DockerRootDir}}"]);
    let dir = Path::new(&data_root).join("plugins").join(plugin_id);
    let shared = dir.join("propagated-mount").display().to_string();
    mounts_below(&dir).into_iter().filter(|m| *m != shared).collect()
}

fn volume_names() -> Vec<String> {
    docker_ok(&["volume", "ls", "-q"]).lines().map(str::to_owned).collect()
}

#[test]
fn a_managed_plugin_from_build_sh_serves_secrets_with_no_registry() {
    // Built before taking the Docker lock: the other Docker tests need not wait for cargo.
    let build = build_plugin();
    let _lock = crate::e2e::docker_lock();
    let started = Instant::now();
    let out = docker(&["info", "--format", "{{.ServerVersion}}"]);
    assert!(
        out.status.success(),
        "no Docker engine: run tests/env.sh first ({})",
        String::from_utf8_lossy(&out.stderr)
    );

    let bao = Bao::start();
    bao.put_kv2("managed", json!({"password": "from-the-managed-plugin"}));
    let config = config_dir(&bao);

    // A plugin name of its own per run: plugin names are image-like references (NAME:latest).
    let name = unique("vault-secrets-managed-test");
    let mut cleanup = Cleanup { plugin: name.clone(), volumes: Vec::new(), containers: Vec::new() };
    docker_ok(&["plugin", "create", &name, &build.path().display().to_string()]);
    drop(build); // dockerd copied the rootfs
    docker_ok(&["plugin", "set", &name, &format!("config.source={}", config.path().display())]);
    docker_ok(&["plugin", "enable", &name]);
    assert_eq!(
        docker_ok(&["plugin", "inspect", "--format", "{{.Enabled}} {{.Name}}", &name]),
        format!("true {name}:latest")
    );
    let plugin_id = docker_ok(&["plugin", "inspect", "--format", "{{.Id}}", &name]);

    let vol = unique("managed");
    docker_ok(&["volume", "create", "--driver", &name, "-o", "path=secret/data/managed", &vol]);
    cleanup.volumes.push(vol.clone());
    // dockerd names a managed plugin's driver with its tag.
    assert_eq!(
        docker_ok(&["volume", "inspect", "--format", "{{.Driver}}", &vol]),
        format!("{name}:latest")
    );

    let before = bao.accessors();
    let mount = format!("{vol}:/run/secrets:ro");
    let c = docker_ok(&["run", "-d", "--network", "none", "-v", &mount, &image(), "sleep", "600"]);
    cleanup.containers.push(c.clone());
    assert_eq!(docker_ok(&["exec", &c, "cat", "/run/secrets/password"]), "from-the-managed-plugin");
    let mounts = docker_ok(&["exec", &c, "grep", " /run/secrets ", "/proc/mounts"]);
    assert!(mounts.starts_with("vault-secrets /run/secrets tmpfs ro,"), "{mounts}");
    assert_eq!(bao.accessors().len(), before.len() + 1, "the container's mount has its own token");
    // On the host, the tmpfs is in the plugin's propagated mount, where dockerd found it to
    // bind into the container; the plugin's private tmpfs (its tokens) stays inside the plugin.
    let host = host_mounts(&plugin_id);
    let prefix = format!("/propagated-mount/{vol}/");
    assert!(!host.is_empty() && host.iter().all(|m| m.contains(&prefix)), "{host:?}");
    for m in &host {
        let opts = mount_options(Path::new(m)).unwrap();
        assert!(["nosuid", "nodev", "noexec"].iter().all(|o| opts.contains(o)), "{m}: {opts}");
    }

    docker_ok(&["stop", "-t", "1", &c]);
    assert!(
        wait_until(Duration::from_secs(10), || bao.accessors() == before),
        "the stopped container's token was not revoked"
    );
    assert!(
        wait_until(Duration::from_secs(10), || host_mounts(&plugin_id).is_empty()),
        "the tmpfs is gone from the host"
    );
    docker_ok(&["rm", &c]);
    cleanup.containers.clear();

    // While a volume exists dockerd holds a reference on its driver: a plain disable is refused,
    // `-f` disables it; the volume comes back with the plugin, from the plugin's state.
    let refused = docker(&["plugin", "disable", &name]);
    assert!(
        !refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("in use"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    docker_ok(&["plugin", "disable", "-f", &name]);
    docker_ok(&["plugin", "enable", &name]);
    assert!(
        wait_until(Duration::from_secs(20), || volume_names().contains(&vol)),
        "the re-enabled plugin lists its volume"
    );
    let again = docker_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &mount,
        &image(),
        "cat",
        "/run/secrets/password",
    ]);
    assert_eq!(again, "from-the-managed-plugin");
    assert!(
        wait_until(Duration::from_secs(10), || bao.accessors() == before),
        "the --rm container's token was not revoked"
    );

    docker_ok(&["volume", "rm", &vol]);
    cleanup.volumes.clear();
    assert!(!volume_names().contains(&vol));
    drop(cleanup);
    assert!(
        !docker_ok(&["plugin", "ls", "--format", "{{.Name}}"])
            .lines()
            .any(|l| l.starts_with(&name)),
        "the plugin is removed"
    );
    eprintln!("managed plugin test: {:.1} s with the Docker lock", started.elapsed().as_secs_f64());
}

/// Debian 12's docker-registry (`tests/engines.sh` unpacks it) on a free loopback port, with its
/// own configuration and storage in a temporary directory; killed (by its pid) on drop.
struct Registry {
    port: u16,
    child: std::process::Child,
    dir: tempfile::TempDir,
}

const REGISTRY: &str = "/opt/vault-secrets-test/registry/usr/bin/docker-registry";

impl Registry {
    fn start() -> Registry {
        assert!(Path::new(REGISTRY).exists(), "no {REGISTRY}: run tests/engines.sh");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}/storage\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(REGISTRY)
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let registry = Registry { port, child, dir };
        let http = reqwest::blocking::Client::new();
        let url = format!("http://127.0.0.1:{port}/v2/");
        assert!(
            wait_until(Duration::from_secs(20), || http
                .get(&url)
                .send()
                .is_ok_and(|r| r.status().is_success())),
            "docker-registry did not answer on 127.0.0.1:{port}: {}",
            registry.log()
        );
        registry
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- docker-registry log ---\n{}", self.log());
        }
    }
}

/// As users install plugins: pushed to a registry (Debian's docker-registry on loopback: dockerd
/// allows plain HTTP to 127.0.0.0/8), removed, then `docker plugin install` from there with
/// `config.source`, and a container reads its secret.
#[test]
fn a_managed_plugin_installs_from_a_registry() {
    let build = build_plugin();
    let _lock = crate::e2e::docker_lock();
    let registry = Registry::start();
    let reference =
        format!("127.0.0.1:{}/vault-secrets:{}", registry.port, env!("CARGO_PKG_VERSION"));

    // The publisher's side: create from build.sh's directory, push, and remove the local copy.
    let started = Instant::now();
    let mut cleanup =
        Cleanup { plugin: reference.clone(), volumes: Vec::new(), containers: Vec::new() };
    docker_ok(&["plugin", "create", &reference, &build.path().display().to_string()]);
    drop(build);
    docker_ok(&["plugin", "push", &reference]);
    docker_ok(&["plugin", "rm", &reference]);
    eprintln!("plugin create + push: {:.1} s", started.elapsed().as_secs_f64());

    // The user's side, as README's "Managed plugin" says.
    let bao = Bao::start();
    bao.put_kv2("registry", json!({"password": "from-the-registry"}));
    let config = config_dir(&bao);
    let alias = unique("vault-secrets-registry-test");
    cleanup.plugin = alias.clone();
    let started = Instant::now();
    docker_ok(&[
        "plugin",
        "install",
        "--alias",
        &alias,
        "--grant-all-permissions",
        &reference,
        &format!("config.source={}", config.path().display()),
    ]);
    eprintln!("docker plugin install: {:.1} s", started.elapsed().as_secs_f64());
    assert_eq!(
        docker_ok(&["plugin", "inspect", "--format", "{{.Enabled}} {{.PluginReference}}", &alias]),
        format!("true {reference}"),
        "installed from the registry, and enabled"
    );

    let vol = unique("registry");
    docker_ok(&["volume", "create", "--driver", &alias, "-o", "path=secret/data/registry", &vol]);
    cleanup.volumes.push(vol.clone());
    let before = bao.accessors();
    let mount = format!("{vol}:/run/secrets:ro");
    let c = docker_ok(&["run", "-d", "--network", "none", "-v", &mount, &image(), "sleep", "600"]);
    cleanup.containers.push(c.clone());
    assert_eq!(docker_ok(&["exec", &c, "cat", "/run/secrets/password"]), "from-the-registry");
    assert_eq!(bao.accessors().len(), before.len() + 1, "the container's mount has its own token");
    docker_ok(&["stop", "-t", "1", &c]);
    assert!(
        wait_until(Duration::from_secs(10), || bao.accessors() == before),
        "the stopped container's token was not revoked"
    );
    drop(cleanup);
    drop(registry);
}

/// The directory `config.source` points at: config.toml and the token (0600), as a user
/// writes them.
fn config_dir(bao: &Bao) -> tempfile::TempDir {
    let config = tempfile::tempdir().unwrap();
    std::fs::write(
        config.path().join("config.toml"),
        format!(
            "[vault]\naddress = \"{}\"\n\n[vault.auth]\nmethod = \"token\"\ntoken_file = \"/etc/vault-secrets/token\"\n",
            bao.address()
        ),
    )
    .unwrap();
    let token = config.path().join("token");
    std::fs::write(&token, &bao.token).unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    config
}

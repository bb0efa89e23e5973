//! The managed plugin, end to end: `plugin/build.sh` builds it (static musl binary, config.json,
//! rootfs), and the real docker CLI creates, configures and enables it with no registry, as the
//! docs/engines.md, "Managed plugin", tells a user to; then containers read their secret from it.
//! With the Docker API socket and the host PID namespace it signals containers and releases
//! the mounts of containers a dockerd crash took away; with its `runtime` directory on the host
//! it keeps its tokens across `disable`/`enable` and answers `status` from the host.
//!
//! The build runs every time, in its own cargo target directory (`target/musl`, or
//! `VAULT_SECRETS_MUSL_TARGET_DIR`), so it never waits on the lock of the `cargo test` that runs
//! it, and before the Docker lock is taken; cargo makes it a no-op when nothing changed (a
//! first build takes a few minutes).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::docker::{docker, docker_ok, image, DockerCli};
use crate::util::vault::status_mounts;
use crate::util::*;

/// The cargo target directory of the musl builds (`target/musl`, or
/// `VAULT_SECRETS_MUSL_TARGET_DIR`), shared by this build's and an earlier release's (their
/// dependencies are built once).
pub(crate) fn musl_target_dir() -> PathBuf {
    std::env::var_os("VAULT_SECRETS_MUSL_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("musl"))
}

/// Held while a `plugin/build.sh` runs in [`musl_target_dir`]: cargo copies each build's binary
/// to the same path there, and build.sh takes it from that path right after.
pub(crate) static MUSL_BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `plugin/build.sh` into a fresh temporary directory; returns it.
pub(crate) fn build_plugin() -> tempfile::TempDir {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = {
        let _build = MUSL_BUILD.lock().unwrap_or_else(|p| p.into_inner());
        Command::new("bash")
            .arg(root.join("plugin/build.sh"))
            .arg(dir.path())
            .env("CARGO_TARGET_DIR", musl_target_dir())
            .output()
            .expect("bash plugin/build.sh")
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "plugin/build.sh failed:\n{stderr}");
    eprintln!("plugin/build.sh: {:.1} s", started.elapsed().as_secs_f64());
    let said = Command::new(dir.path().join("rootfs/vault-secrets-plugin"))
        .arg("--version")
        .output()
        .expect("the built binary runs");
    let said = String::from_utf8_lossy(&said.stdout);
    let this = concat!("vault-secrets-plugin ", env!("CARGO_PKG_VERSION"));
    assert!(said.starts_with(this), "build.sh gave a binary that says {said:?}, not {this}");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(config["entrypoint"], json!(["/vault-secrets-plugin", "serve"]));
    assert_eq!(config["linux"]["capabilities"], json!(["CAP_SYS_ADMIN", "CAP_SYS_PTRACE"]));
    dir
}

/// Removes what the test made, whatever state it stopped in; on failure prints the plugin's
/// log lines from the dockerd log.
pub(crate) struct Cleanup {
    pub(crate) plugin: String,
    pub(crate) volumes: Vec<String>,
    pub(crate) containers: Vec<String>,
    /// The docker CLI against the dockerd: the engine under test's, or a private one's.
    cli: DockerCli,
    /// That dockerd's log, where its managed plugins' output goes.
    log: PathBuf,
}

impl Cleanup {
    pub(crate) fn new(plugin: &str) -> Cleanup {
        Cleanup {
            plugin: plugin.to_owned(),
            volumes: Vec::new(),
            containers: Vec::new(),
            cli: DockerCli::engine(),
            log: test_engine().log.clone(),
        }
    }

    /// The docker CLI against this test's dockerd.
    fn docker(&self, args: &[&str]) -> std::process::Output {
        self.cli.docker(args)
    }

    pub(crate) fn docker_ok(&self, args: &[&str]) -> String {
        self.cli.docker_ok(args)
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_plugin_log();
        }
        for c in &self.containers {
            let _ = self.docker(&["rm", "-f", c]);
        }
        // A volume is removed through its driver: the plugin must be enabled for that.
        let _ = self.docker(&["plugin", "enable", &self.plugin]);
        for v in &self.volumes {
            let _ = self.docker(&["volume", "rm", "-f", v]);
        }
        let _ = self.docker(&["plugin", "disable", "-f", &self.plugin]);
        let _ = self.docker(&["plugin", "rm", "-f", &self.plugin]);
    }
}

impl Cleanup {
    /// The plugin's lines in the dockerd log: dockerd logs a managed plugin's output with
    /// `plugin=ID`; tests/env.sh sends its log to /var/log/dockerd.log (Engine 26's: see
    /// `TestEngine::log`).
    pub(crate) fn plugin_log(&self) -> Vec<String> {
        let out = self.docker(&["plugin", "inspect", "--format", "{{.Id}}", &self.plugin]);
        if !out.status.success() {
            return Vec::new();
        }
        let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines().filter(|l| l.contains(&id)).map(str::to_owned).collect()
    }

    fn print_plugin_log(&self) {
        let lines = self.plugin_log();
        eprintln!("--- {} in {} ---", self.plugin, self.log.display());
        for l in &lines[lines.len().saturating_sub(60)..] {
            eprintln!("{l}");
        }
    }
}

/// A host directory for the plugin's `runtime` mount, made a shared mount (bound onto itself)
/// as every mount is on a systemd host (this machine's `/` is private): the tmpfs mounts the
/// plugin makes in it then reach the host and outlive the plugin. Dropped, it is detached with
/// everything below it, and removed.
/// Beside it, the host directory of the plugin's `state` mount (its volume definitions).
pub(crate) struct RuntimeDir {
    dir: tempfile::TempDir,
    state: tempfile::TempDir,
}

impl RuntimeDir {
    pub(crate) fn new() -> RuntimeDir {
        use rustix::mount::{mount_bind, mount_change, MountPropagationFlags};
        let dir = tempfile::tempdir().unwrap();
        mount_bind(dir.path(), dir.path()).expect("bind the runtime directory onto itself");
        mount_change(dir.path(), MountPropagationFlags::SHARED).expect("make it shared");
        RuntimeDir { dir, state: tempfile::tempdir().unwrap() }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The `state.source` directory: the plugin's volume definitions.
    pub(crate) fn state(&self) -> &Path {
        self.state.path()
    }

    pub(crate) fn admin_socket(&self) -> PathBuf {
        self.path().join("admin.sock")
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        for m in mounts_below(self.dir.path()).into_iter().rev() {
            let _ = rustix::mount::unmount(m.as_str(), rustix::mount::UnmountFlags::DETACH);
        }
        let _ = rustix::mount::unmount(self.dir.path(), rustix::mount::UnmountFlags::DETACH);
    }
}

/// `plugin set` arguments for a test: `config.source`, `runtime.source`, `state.source` (the
/// runtime directory's companion), `docker.source` (the dockerd's own API socket) and, if given, the sweep's interval in seconds. (A mount is
/// released when no running container holds it for that long: a short one can release a
/// container's mount before the container, slow to start on a loaded machine, runs.)
pub(crate) fn settings(
    config: &Path,
    runtime: &RuntimeDir,
    docker_socket: &Path,
    sweep: Option<u32>,
) -> Vec<String> {
    let mut settings = vec![
        format!("config.source={}", config.display()),
        format!("runtime.source={}", runtime.path().display()),
        format!("state.source={}", runtime.state().display()),
        format!("docker.source={}", docker_socket.display()),
    ];
    settings.extend(sweep.map(|s| format!("VAULT_SECRETS_SWEEP_INTERVAL={s}")));
    settings
}

/// Writes a KV v2 secret, waiting while a fresh OpenBao's KV mount still upgrades (it answers
/// 400 "Upgrading from non-versioned to versioned data" for a moment after it starts).
pub(crate) fn put_kv2(bao: &Bao, path: &str, data: serde_json::Value) {
    let body = json!({ "data": data });
    let path = format!("secret/data/{path}");
    let mut last = None;
    let written = wait_until(Duration::from_secs(20), || {
        let reply = bao.api_as(&bao.token, "POST", &path, Some(body.clone())).unwrap();
        let ok = reply.0 < 400;
        last = Some(reply);
        ok
    });
    assert!(written, "POST {path}: {last:?}");
}

/// `vault-secrets-plugin ARGS` run on the host with the binary `plugin/build.sh` put in the
/// rootfs, reaching the plugin through the admin socket in its `runtime` directory.
pub(crate) fn host_cli(build: &Path, config: &Path, runtime: &RuntimeDir, args: &[&str]) -> String {
    let out = Command::new(build.join("rootfs/vault-secrets-plugin"))
        .args(args)
        .arg("--config")
        .arg(config.join("config.toml"))
        .env("VAULT_SECRETS_ADMIN_SOCKET", runtime.admin_socket())
        .env_remove("VAULT_ADDR")
        .output()
        .expect("run the host binary");
    assert!(
        out.status.success(),
        "vault-secrets-plugin {args:?} on the host: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn host_status(build: &Path, config: &Path, runtime: &RuntimeDir) -> serde_json::Value {
    serde_json::from_str(&host_cli(build, config, runtime, &["status", "--json"])).unwrap()
}

/// When the token behind `accessor` expires (OpenBao's `expire_time`), or `None` once revoked.
pub(crate) fn expire_time(bao: &Bao, accessor: &str) -> Option<String> {
    let body = json!({ "accessor": accessor });
    let (status, v) =
        bao.api_as(&bao.token, "POST", "auth/token/lookup-accessor", Some(body)).unwrap();
    (status == 200).then(|| v["data"]["expire_time"].as_str().unwrap_or_default().to_owned())
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
fn a_managed_plugin_from_build_sh_serves_secrets_with_no_registry_on_every_engine() {
    // Built before taking the Docker lock: the other Docker tests need not wait for cargo.
    let build = build_plugin();
    let _lock = crate::util::docker::docker_lock();
    let started = Instant::now();
    let out = docker(&["info", "--format", "{{.ServerVersion}}"]);
    assert!(
        out.status.success(),
        "no Docker engine: run tests/env.sh first ({})",
        String::from_utf8_lossy(&out.stderr)
    );

    let bao = Bao::start();
    put_kv2(&bao, "managed", json!({"password": "from-the-managed-plugin"}));
    let config = config_dir(&bao);
    let runtime = RuntimeDir::new();

    // A plugin name of its own per run: plugin names are image-like references (NAME:latest).
    let name = unique("vault-secrets-managed-test");
    let mut cleanup = Cleanup::new(&name);
    docker_ok(&["plugin", "create", &name, &build.path().display().to_string()]);
    drop(build); // dockerd copied the rootfs
    let settings = settings(config.path(), &runtime, &test_engine().socket, None);
    let mut set = vec!["plugin", "set", &name];
    set.extend(settings.iter().map(String::as_str));
    docker_ok(&set);
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
    // On the host, the read-only bind is in the plugin's propagated mount, where dockerd found
    // it to bind into the container; the tmpfs behind it and the plugin's private tmpfs (its
    // tokens) are in the runtime directory.
    let host = host_mounts(&plugin_id);
    let prefix = format!("/propagated-mount/{vol}/");
    assert!(!host.is_empty() && host.iter().all(|m| m.contains(&prefix)), "{host:?}");
    for m in &host {
        let opts = mount_options(Path::new(m)).unwrap();
        // `ro` too: the bind is made while the plugin's own mount of the tmpfs is read-only,
        // so the copies propagation makes here (what dockerd binds into containers) are.
        let read_only = opts.split(',').any(|o| o == "ro");
        assert!(read_only, "{m}: {opts}");
        assert!(["nosuid", "nodev", "noexec"].iter().all(|o| opts.contains(o)), "{m}: {opts}");
    }
    assert_eq!(mounts_below(&runtime.path().join("files")).len(), 1);
    assert!(mount_options(&runtime.path().join("private")).is_some(), "the tokens' tmpfs");

    docker_ok(&["stop", "-t", "1", &c]);
    assert!(
        wait_until(Duration::from_secs(10), || bao.accessors() == before),
        "the stopped container's token was not revoked"
    );
    assert!(
        wait_until(Duration::from_secs(10), || host_mounts(&plugin_id).is_empty()
            && mounts_below(&runtime.path().join("files")).is_empty()),
        "the tmpfs is gone from the host"
    );
    docker_ok(&["rm", &c]);
    cleanup.containers.clear();

    // -o uid=container: the managed plugin reads dockerd's record of the container through
    // /proc/PID/root of dockerd (pidhost, CAP_SYS_PTRACE).
    let follow = unique("managed-follow");
    let opts = ["-o", "path=secret/data/managed", "-o", "uid=container"];
    docker_ok(&[&["volume", "create", "--driver", &name][..], &opts, &[&follow]].concat());
    cleanup.volumes.push(follow.clone());
    let mount = format!("{follow}:/run/secrets");
    let stat = "stat -c '%u %g' /run/secrets/password && cat /run/secrets/password";
    let args = ["run", "--rm", "--user", "1000:1000", "--network", "none", "-v", &mount];
    let seen = docker_ok(&[&args[..], &[image().as_str(), "sh", "-c", stat]].concat());
    assert_eq!(seen, "1000 1000\nfrom-the-managed-plugin", "uid=container, managed");
    assert!(
        wait_until(Duration::from_secs(10), || bao.accessors() == before),
        "the --rm container's token was not revoked"
    );

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
pub(crate) struct Registry {
    pub(crate) port: u16,
    child: std::process::Child,
    dir: tempfile::TempDir,
}

const REGISTRY: &str = "/opt/vault-secrets-test/registry/usr/bin/docker-registry";

impl Registry {
    pub(crate) fn start() -> Registry {
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
fn a_managed_plugin_installs_from_a_registry_on_every_engine() {
    let build = build_plugin();
    let _lock = crate::util::docker::docker_lock();
    let registry = Registry::start();
    let reference =
        format!("127.0.0.1:{}/vault-secrets:{}", registry.port, env!("CARGO_PKG_VERSION"));

    // The publisher's side: create from build.sh's directory, push, and remove the local copy.
    let started = Instant::now();
    let mut cleanup = Cleanup::new(&reference);
    docker_ok(&["plugin", "create", &reference, &build.path().display().to_string()]);
    drop(build);
    docker_ok(&["plugin", "push", &reference]);
    docker_ok(&["plugin", "rm", &reference]);
    eprintln!("plugin create + push: {:.1} s", started.elapsed().as_secs_f64());

    // The user's side, as docs/engines.md, "Managed plugin", says.
    let bao = Bao::start();
    put_kv2(&bao, "registry", json!({"password": "from-the-registry"}));
    let config = config_dir(&bao);
    let runtime = RuntimeDir::new();
    let alias = unique("vault-secrets-registry-test");
    cleanup.plugin = alias.clone();
    let started = Instant::now();
    let settings = settings(config.path(), &runtime, &test_engine().socket, None);
    let mut install = vec!["plugin", "install", "--alias", &alias, "--grant-all-permissions"];
    install.push(&reference);
    install.extend(settings.iter().map(String::as_str));
    docker_ok(&install);
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
pub(crate) fn config_dir(bao: &Bao) -> tempfile::TempDir {
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

/// The configured managed plugin on the engine under test: created from `build`, its
/// settings set, enabled. Returns its name.
fn install(cleanup: &Cleanup, build: &Path, settings: &[String]) {
    cleanup.docker_ok(&["plugin", "create", &cleanup.plugin, &build.display().to_string()]);
    let mut set = vec!["plugin", "set", cleanup.plugin.as_str()];
    set.extend(settings.iter().map(String::as_str));
    cleanup.docker_ok(&set);
    cleanup.docker_ok(&["plugin", "enable", &cleanup.plugin]);
}

/// The accessor of the one mount of `volume` that `status --json` on the host lists, once it
/// lists it.
fn host_accessor(build: &Path, config: &Path, runtime: &RuntimeDir, volume: &str) -> String {
    let mut mounts = Vec::new();
    let listed = wait_until(Duration::from_secs(20), || {
        mounts = status_mounts(&host_status(build, config, runtime), volume);
        mounts.len() == 1
    });
    assert!(listed, "status on the host does not list the mount of {volume}: {mounts:?}");
    mounts[0]["accessor"].as_str().unwrap().to_owned()
}

/// Issue 10, on the engine under test: `signal` reaches a running container through the Docker
/// API socket, `status` works from the host through the `runtime` directory, and `disable -f` +
/// `enable` with the container running keeps its token (renewed by the new plugin process, and
/// revoked when the container stops) and its files (still rewritten, still signalled).
#[test]
fn a_managed_plugin_signals_answers_status_on_the_host_and_keeps_tokens_across_disable_on_every_engine(
) {
    let build = build_plugin();
    let _lock = crate::util::docker::docker_lock();
    let bao = Bao::start();
    put_kv2(&bao, "managed-signal", json!({"value": "v1"}));
    let config = config_dir(&bao);
    let runtime = RuntimeDir::new();
    let mut cleanup = Cleanup::new(&unique("vault-secrets-managed-signal"));
    let name = cleanup.plugin.clone();
    let settings = settings(config.path(), &runtime, &test_engine().socket, None);
    install(&cleanup, build.path(), &settings);

    let vol = unique("managed-signal");
    let opts = ["path=secret/data/managed-signal", "refresh=1s", "signal=SIGHUP", "ttl=15s"];
    let mut create = vec!["volume", "create", "--driver", &name];
    for o in &opts {
        create.extend(["-o", o]);
    }
    create.push(&vol);
    docker_ok(&create);
    cleanup.volumes.push(vol.clone());
    let before = bao.accessors();
    // The trap records the value the container sees when the signal arrives.
    let script = "trap 'cat /run/secrets/value >> /tmp/hup; echo >> /tmp/hup' HUP; while true; do sleep 0.2; done";
    let mount = format!("{vol}:/run/secrets:ro");
    let c =
        docker_ok(&["run", "-d", "--network", "none", "-v", &mount, &image(), "sh", "-c", script]);
    cleanup.containers.push(c.clone());
    let hups =
        || String::from_utf8_lossy(&docker(&["exec", &c, "cat", "/tmp/hup"]).stdout).into_owned();

    // `status` from the host, with the binary build.sh made, through the runtime directory.
    let accessor = host_accessor(build.path(), config.path(), &runtime, &vol);
    assert!(!before.contains(&accessor) && bao.accessors().contains(&accessor));
    let table = host_cli(build.path(), config.path(), &runtime, &["status"]);
    eprintln!("`vault-secrets-plugin status` on the host:\n{table}");
    assert!(table.contains(&vol) && table.contains(&accessor), "{table}");
    // runc's remount of the `:ro` bind drops nosuid,nodev; the plugin seals the view again
    // from inside the container's mount namespace (setns).
    let view = || {
        let table = docker_ok(&["exec", &c, "cat", "/proc/self/mountinfo"]);
        let line = table.lines().find(|l| l.split(' ').nth(4) == Some("/run/secrets"));
        line.and_then(|l| l.split(' ').nth(5)).unwrap_or_default().to_owned()
    };
    assert!(
        wait_until(Duration::from_secs(10), || {
            let options = view();
            ["ro", "nosuid", "nodev", "noexec"].iter().all(|f| options.split(',').any(|o| o == *f))
        }),
        "the container's view is {:?}, not ro,nosuid,nodev,noexec",
        view()
    );

    // The secret changes: the files follow and the container gets SIGHUP.
    put_kv2(&bao, "managed-signal", json!({"value": "v2"}));
    let changed = Instant::now();
    assert!(wait_until(Duration::from_secs(10), || hups() == "v2\n"), "no SIGHUP: {:?}", hups());
    eprintln!("SIGHUP received {} ms after the change (refresh=1s)", changed.elapsed().as_millis());

    // disable -f with the container running: the token stays; enable: the new plugin process
    // finds it (and the mount) again, and renews it.
    let disabled = Instant::now();
    docker_ok(&["plugin", "disable", "-f", &name]);
    assert!(bao.accessors().contains(&accessor), "disable revoked the running container's token");
    assert_eq!(docker_ok(&["exec", &c, "cat", "/run/secrets/value"]), "v2");
    docker_ok(&["plugin", "enable", &name]);
    eprintln!("disable -f + enable: {:.1} s", disabled.elapsed().as_secs_f64());
    assert_eq!(host_accessor(build.path(), config.path(), &runtime, &vol), accessor);
    let expiry = expire_time(&bao, &accessor).expect("the token is alive after enable");
    assert!(
        wait_until(Duration::from_secs(20), || expire_time(&bao, &accessor)
            .is_some_and(|e| e > expiry)),
        "the re-enabled plugin did not renew the token (ttl=15s)"
    );
    // Its files are still the container's, still rewritten and signalled.
    put_kv2(&bao, "managed-signal", json!({"value": "v3"}));
    assert!(
        wait_until(Duration::from_secs(10), || hups() == "v2\nv3\n"),
        "no SIGHUP after enable: {:?}",
        hups()
    );
    assert_eq!(docker_ok(&["exec", &c, "cat", "/run/secrets/value"]), "v3");

    docker_ok(&["stop", "-t", "1", &c]);
    assert!(
        wait_until(Duration::from_secs(10), || !bao.accessors().contains(&accessor)),
        "docker stop after disable/enable did not revoke the container's token"
    );
    assert!(
        wait_until(Duration::from_secs(10), || mounts_below(&runtime.path().join("files"))
            .is_empty()),
        "the tmpfs is gone from the runtime directory"
    );
    assert_eq!(bao.accessors(), before);
}

/// Issue 10, on a dockerd of the test's own (this one is SIGKILLed): with a container holding
/// database credentials, dockerd dies and starts again; the plugin keeps nothing of the gone
/// container: its token is revoked, and with it its database user.
#[test]
fn after_a_dockerd_crash_the_managed_plugin_revokes_the_gone_containers_token_and_lease_on_every_engine(
) {
    let build = build_plugin();
    let bao = Bao::start();
    bao.database_role("managed-crash", "1h", "2h");
    let config = config_dir(&bao);
    let runtime = RuntimeDir::new();
    let mut dockerd = crate::util::dockerd::Dockerd::start("managed-kill");
    let mut cleanup = Cleanup::new(&unique("vault-secrets-managed-crash"));
    cleanup.cli = dockerd.cli.clone();
    cleanup.log = dockerd.log.clone();
    // A sweep every 5 s: the gone container's mount is released soon after dockerd is back.
    install(&cleanup, build.path(), &settings(config.path(), &runtime, &dockerd.socket, Some(5)));

    let vol = unique("managed-crash");
    let name = cleanup.plugin.clone();
    let path = "path=database/creds/managed-crash";
    cleanup.docker_ok(&["volume", "create", "--driver", &name, "-o", path, &vol]);
    cleanup.volumes.push(vol.clone());
    let mount = format!("{vol}:/run/secrets:ro");
    let c = cleanup.docker_ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "-v",
        &mount,
        &image(),
        "sleep",
        "600",
    ]);
    cleanup.containers.push(c.clone());
    let user = cleanup.docker_ok(&["exec", &c, "cat", "/run/secrets/username"]);
    assert!(pg_role_exists(&user));
    let accessor = host_accessor(build.path(), config.path(), &runtime, &vol);

    dockerd.kill();
    // With no dockerd to ask, nothing is released (sweeps are once a second).
    std::thread::sleep(Duration::from_secs(3));
    assert!(bao.accessors().contains(&accessor) && pg_role_exists(&user));
    let killed = Instant::now();
    dockerd.restart();
    assert!(
        wait_until(Duration::from_secs(60), || !bao.accessors().contains(&accessor)),
        "the gone container's token was not revoked after the dockerd crash"
    );
    assert!(
        wait_until(Duration::from_secs(10), || !pg_role_exists(&user)),
        "the gone container's database user was not dropped"
    );
    eprintln!(
        "token and database user revoked {:.1} s after dockerd was started again",
        killed.elapsed().as_secs_f64()
    );
    let state = cleanup.docker_ok(&["inspect", "--format", "{{.State.Status}}", &c]);
    assert_ne!(state, "running", "the container did not survive the crash");
    // Released by the sweep, or by an Unmount from the restarted dockerd: either way it is gone.
    let log = std::fs::read_to_string(&dockerd.log).unwrap_or_default();
    let swept = log.lines().any(|l| l.contains("no running container uses it any more"));
    eprintln!("container {state}; released by {}", if swept { "the sweep" } else { "an Unmount" });
    drop(cleanup);
}

/// Issue 20, Deliver 2, the managed plugin on a dockerd of the test's own started with
/// `--userns-remap=default`: the plugin (not remapped itself) serves a root container and a
/// `--user 1000:1000` one (`-o uid=1000`, and `-o uid=container`) their files, owned by the
/// remapped host ids, and `docker stop` revokes.
#[test]
fn a_managed_plugin_on_a_userns_remapped_dockerd_serves_root_and_user_containers_on_one_engine() {
    let build = build_plugin();
    let bao = Bao::start();
    put_kv2(&bao, "managed-userns", json!({"password": "remapped"}));
    let config = config_dir(&bao);
    let runtime = RuntimeDir::new();
    let dockerd =
        crate::util::dockerd::Dockerd::start_with("managed-userns", &["--userns-remap=default"]);
    let mut cleanup = Cleanup::new(&unique("vault-secrets-managed-userns"));
    cleanup.cli = dockerd.cli.clone();
    cleanup.log = dockerd.log.clone();
    install(&cleanup, build.path(), &settings(config.path(), &runtime, &dockerd.socket, None));
    let root_dir = cleanup.docker_ok(&["info", "--format", "{{.DockerRootDir}}"]);
    let (base, gid_base) = root_dir.rsplit('/').next().unwrap().split_once('.').expect(&root_dir);
    let (base, gid_base): (u32, u32) = (base.parse().unwrap(), gid_base.parse().unwrap());

    let name = cleanup.plugin.clone();
    let before = bao.accessors();
    for (opts, user, expected) in [
        (vec!["path=secret/data/managed-userns"], None, (0, 0)),
        (
            vec!["path=secret/data/managed-userns", "uid=1000", "gid=1000"],
            Some("1000:1000"),
            (1000, 1000),
        ),
        (vec!["path=secret/data/managed-userns", "uid=container"], Some("1000:1000"), (1000, 1000)),
    ] {
        let vol = unique("managed-userns");
        let mut create = vec!["volume", "create", "--driver", &name];
        create.extend(opts.iter().flat_map(|o| ["-o", *o]));
        create.push(&vol);
        cleanup.docker_ok(&create);
        cleanup.volumes.push(vol.clone());
        let mount = format!("{vol}:/run/secrets");
        let mut run = vec!["run", "-d", "--network", "none", "-v", &mount];
        if let Some(user) = user {
            run.extend(["--user", user]);
        }
        let image = image();
        run.extend([image.as_str(), "sleep", "600"]);
        let c = cleanup.docker_ok(&run);
        cleanup.containers.push(c.clone());
        let read = cleanup.docker(&["exec", &c, "cat", "/run/secrets/password"]);
        assert!(read.status.success(), "{opts:?}: {}", String::from_utf8_lossy(&read.stderr));
        assert_eq!(String::from_utf8_lossy(&read.stdout), "remapped", "{opts:?}");
        let stat = cleanup.docker_ok(&["exec", &c, "stat", "-c", "%u %g", "/run/secrets/password"]);
        assert_eq!(stat, format!("{} {}", expected.0, expected.1), "{opts:?}: in the container");
        let files = mounts_below(&runtime.path().join("files"));
        let meta = std::fs::metadata(Path::new(&files[0]).join("password")).unwrap();
        use std::os::unix::fs::MetadataExt;
        let host = (base + expected.0, gid_base + expected.1);
        assert_eq!((meta.uid(), meta.gid()), host, "{opts:?}: on the host");
        eprintln!("managed plugin, userns-remap, {opts:?} --user {user:?}: host owner {host:?}");
        cleanup.docker_ok(&["stop", "-t", "1", &c]);
        assert!(
            wait_until(Duration::from_secs(10), || bao.accessors() == before),
            "{opts:?}: docker stop did not revoke"
        );
        assert!(
            wait_until(Duration::from_secs(10), || mounts_below(&runtime.path().join("files"))
                .is_empty()),
            "{opts:?}: the tmpfs is gone"
        );
    }
}

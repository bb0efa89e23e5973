//! Shared test helpers: a real OpenBao dev server on a free loopback port, the plugin binary on
//! a socket, a small client for the plugin protocol, PostgreSQL and Docker CLI helpers.
//!
//! Needs root (mounts) and what `tests/env.sh` brings up: `bao` on PATH, PostgreSQL, dockerd.

#![allow(dead_code)]

pub mod docker;
pub mod dockerd;
pub mod hosts;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_vault-secrets-plugin");

/// The Docker Engine the end-to-end tests drive, chosen by `VAULT_SECRETS_TEST_ENGINE`:
/// - `20` (the default): Debian 12's dockerd on /var/run/docker.sock, `docker` from PATH,
///   docker-compose 1.29;
/// - `26`: Debian 13's Engine 26.1 (containerd 1.7, Compose 2.26);
/// - `28`: Debian unstable's Engine 28.5 (containerd 2.1, Compose 2.40) at Engine 29's API
///   floor (`DOCKER_MIN_API_VERSION=1.44`) with the containerd image store.
///
/// `tests/engines.sh` unpacks 26 and 28 into their prefixes and runs each beside 20.10, with its
/// own docker CLI and Compose v2 as `docker compose`. The plugin processes the tests start get
/// the engine's socket as `DOCKER_HOST`; a test's own dockerd ([`dockerd`]) runs its binaries
/// with its environment and flags.
pub struct TestEngine {
    /// `20`, `26` or `28`.
    pub name: &'static str,
    /// dockerd's API socket.
    pub socket: PathBuf,
    /// The docker CLI.
    pub docker: PathBuf,
    /// `DOCKER_CONFIG` for the CLI (where `docker compose` is found), if not the default.
    pub docker_config: Option<PathBuf>,
    /// The compose command: `docker-compose` (1.29) or `docker compose` (v2).
    pub compose: Vec<String>,
    /// dockerd's log (managed plugins log there).
    pub log: PathBuf,
    /// Where `tests/engines.sh` unpacked it (`usr/bin`, `usr/sbin`); `None`: Debian 12's.
    pub prefix: Option<PathBuf>,
    /// dockerd's pid file, for an engine `tests/engines.sh` starts (and a test may restart).
    pub pidfile: Option<PathBuf>,
    /// The environment dockerd runs with, beside `PATH`.
    pub dockerd_env: &'static [(&'static str, &'static str)],
    /// dockerd's flags beside its directories and sockets.
    pub dockerd_flags: &'static [&'static str],
}

/// What the test set-up makes, and where (`tests/lib.sh`'s `VST_*`, the shell side).
pub mod paths {
    /// Data roots, the busybox rootfs tarball.
    pub const STATE: &str = "/var/lib/vault-secrets-test";
    /// Sockets and pid files of the engines `tests/engines.sh` starts.
    pub const RUN: &str = "/run/vault-secrets-test";
    /// Unpacked engines (`dockerN`), Podman 5's root.
    pub const OPT: &str = "/opt/vault-secrets-test";
    /// The busybox rootfs every engine imports the test image from.
    pub const ROOTFS: &str = "/var/lib/vault-secrets-test/busybox-rootfs.tar";
}

/// The test image (`tests/env.sh` imports it into the engines): busybox-static.
pub fn test_image() -> String {
    std::env::var("VAULT_SECRETS_TEST_IMAGE")
        .unwrap_or_else(|_| "vault-secrets-test/busybox:latest".into())
}

/// Where tests/engines.sh unpacks Docker Engine `name` (`26`, `28`).
pub fn engine_prefix(name: &str) -> PathBuf {
    Path::new(paths::OPT).join(format!("docker{name}"))
}

impl TestEngine {
    /// `DOCKER_HOST` for this engine.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The major version, to compare (`26`).
    pub fn version(&self) -> u32 {
        self.name.parse().expect("an engine's name is its major version")
    }

    /// A command for compose against this engine.
    pub fn compose_command(&self) -> Command {
        let mut c = Command::new(&self.compose[0]);
        c.args(&self.compose[1..]);
        self.env(&mut c);
        c
    }

    fn env(&self, c: &mut Command) {
        c.env("DOCKER_HOST", self.host());
        match &self.docker_config {
            Some(d) => c.env("DOCKER_CONFIG", d),
            None => c.env_remove("DOCKER_CONFIG"),
        };
    }

    /// Whether this is Compose v2 (`docker compose`).
    pub fn compose_v2(&self) -> bool {
        self.compose.len() > 1
    }

    /// dockerd, and the `PATH` it runs with (its prefix's binaries first: its containerd).
    pub fn dockerd(&self) -> (PathBuf, String) {
        let path = std::env::var("PATH").unwrap_or_default();
        match &self.prefix {
            Some(p) => (
                p.join("usr/sbin/dockerd"),
                format!("{}:{}:{path}", p.join("usr/bin").display(), p.join("usr/sbin").display()),
            ),
            None => ("dockerd".into(), path),
        }
    }

    /// Debian 12's engine, 20.10, the one `tests/env.sh` runs.
    fn debian12() -> TestEngine {
        TestEngine {
            name: "20",
            socket: "/var/run/docker.sock".into(),
            docker: "docker".into(),
            docker_config: None,
            compose: vec!["docker-compose".into()],
            log: "/var/log/dockerd.log".into(),
            prefix: None,
            pidfile: None,
            dockerd_env: &[],
            dockerd_flags: &[],
        }
    }

    /// An engine `tests/engines.sh` unpacked and runs: `26` or `28`.
    fn unpacked(name: &'static str) -> TestEngine {
        let prefix = engine_prefix(name);
        let docker = prefix.join("usr/bin/docker");
        assert!(
            docker.exists(),
            "VAULT_SECRETS_TEST_ENGINE={name} but no {}: run tests/engines.sh",
            docker.display()
        );
        let run = Path::new(paths::RUN);
        TestEngine {
            name,
            socket: run.join(format!("docker{name}.sock")),
            docker: docker.clone(),
            docker_config: Some(prefix.join("docker-config")),
            compose: vec![docker.display().to_string(), "compose".into()],
            log: format!("/var/log/vault-secrets-test/docker{name}.log").into(),
            pidfile: Some(run.join(format!("docker{name}.pid"))),
            prefix: Some(prefix),
            // As tests/engines.sh starts them: Engine 28 at Engine 29's API floor and image store.
            dockerd_env: if name == "28" { &[("DOCKER_MIN_API_VERSION", "1.44")] } else { &[] },
            dockerd_flags: if name == "28" {
                &["--feature", "containerd-snapshotter"]
            } else {
                &[]
            },
        }
    }
}

pub fn test_engine() -> &'static TestEngine {
    static ENGINE: std::sync::OnceLock<TestEngine> = std::sync::OnceLock::new();
    ENGINE.get_or_init(|| match std::env::var("VAULT_SECRETS_TEST_ENGINE").as_deref() {
        Ok("") | Ok("20") | Err(_) => TestEngine::debian12(),
        Ok("26") => TestEngine::unpacked("26"),
        Ok("28") => TestEngine::unpacked("28"),
        Ok(other) => panic!("VAULT_SECRETS_TEST_ENGINE={other}: expected 20, 26 or 28"),
    })
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A loopback port nothing listens on, and the port after it free too (an OpenBao dev server
/// listens there for its cluster).
///
/// Taken below the kernel's ephemeral range, so that no outgoing connection can take it between
/// this call and the server's bind (a port the kernel handed out and took back, as binding to
/// port 0 would give, is one an outgoing connection may be given next); each call of this test
/// process takes the next pair, so two servers of one run never meet.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOWEST: u32 = 10_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    if ephemeral < LOWEST + 2_000 {
        // No room below the ephemeral range: a port the kernel chooses.
        return std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    }
    let span = (ephemeral - LOWEST) / 2;
    // Runs one after another (an engine each) start at different pairs.
    let _ =
        NEXT.compare_exchange(0, std::process::id() % span + 1, Ordering::SeqCst, Ordering::SeqCst);
    let free = |port: u32| std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok();
    for _ in 0..span {
        let pair = NEXT.fetch_add(1, Ordering::SeqCst) % span;
        let port = LOWEST + 2 * pair;
        if free(port) && free(port + 1) {
            return port as u16;
        }
    }
    panic!("no two free loopback ports from {LOWEST} to {ephemeral}");
}

mod bao;
pub use bao::{bao_exe, Bao};

pub fn pg_password() -> String {
    std::env::var("VAULT_SECRETS_TEST_PG_PASSWORD").unwrap_or_else(|_| "vault-secrets-test".into())
}

/// Whether the PostgreSQL role exists.
pub fn pg_role_exists(role: &str) -> bool {
    assert!(
        role.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
        "unexpected role name"
    );
    let out = Command::new("psql")
        .env("PGPASSWORD", pg_password())
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-tAc"])
        .arg(format!("SELECT count(*) FROM pg_roles WHERE rolname = '{role}'"))
        .output()
        .expect("psql");
    assert!(out.status.success(), "psql failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim() == "1"
}

/// The plugin binary serving on a socket, with its own state and runtime directories.
pub struct Plugin {
    pub socket: PathBuf,
    pub dir: tempfile::TempDir,
    pub runtime: PathBuf,
    pub config: PathBuf,
    /// `VAULT_SECRETS_LOG` for the next (re)start.
    pub log_filter: String,
    /// More environment for the next (re)start.
    pub env: Vec<(String, String)>,
    /// The command the plugin is run through at the next (re)start (empty: run directly), such
    /// as `nsenter … --` into a host of [`hosts`].
    pub wrap: Vec<String>,
    /// The binary the next (re)start runs: this build's, or an earlier release's (upgrades).
    pub program: PathBuf,
    child: Option<Child>,
}

impl Plugin {
    /// Starts the plugin on `socket` (default: one in its own temporary directory) against
    /// `vault_address`, with a token file holding `token` and `extra` appended to the
    /// configuration.
    pub fn start(socket: Option<&Path>, vault_address: &str, token: &str, extra: &str) -> Plugin {
        let mut plugin = Plugin::configure(socket, vault_address, token, extra);
        plugin.restart();
        plugin
    }

    /// [`Plugin::start`] without the start: set `env` or `wrap`, then [`Plugin::restart`].
    pub fn configure(
        socket: Option<&Path>,
        vault_address: &str,
        token: &str,
        extra: &str,
    ) -> Plugin {
        Plugin::configure_in(Path::new("/run"), socket, vault_address, token, extra)
    }

    /// [`Plugin::configure`] with the runtime directory below `run` instead of /run: for an
    /// engine that sees the host below a root of its own (Podman 5: [`podman::TestPodman`]).
    pub fn configure_in(
        run: &Path,
        socket: Option<&Path>,
        vault_address: &str,
        token: &str,
        extra: &str,
    ) -> Plugin {
        let dir = tempfile::tempdir().unwrap();
        let socket =
            socket.map(Path::to_owned).unwrap_or_else(|| dir.path().join("vault-secrets-it.sock"));
        let runtime =
            run.join(format!("vst-{}", dir.path().file_name().unwrap().to_string_lossy()));
        std::fs::write(dir.path().join("token"), token).unwrap();
        let config = dir.path().join("config.toml");
        let text = format!(
            "[plugin]\nsocket = \"{}\"\nstate_dir = \"{}/state\"\nruntime_dir = \"{}\"\n\n[vault]\naddress = \"{vault_address}\"\ntimeout = \"3s\"\n\n{}",
            socket.display(),
            dir.path().display(),
            runtime.display(),
            if extra.contains("[vault.auth]") {
                extra.to_owned()
            } else {
                format!("[vault.auth]\nmethod = \"token\"\ntoken_file = \"{}/token\"\n{extra}", dir.path().display())
            }
        );
        std::fs::write(&config, text).unwrap();
        Plugin {
            socket,
            dir,
            runtime,
            config,
            log_filter: "vault_secrets=debug,info".into(),
            env: Vec::new(),
            wrap: Vec::new(),
            program: PathBuf::from(BIN),
            child: None,
        }
    }

    /// The plugin process's ID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("plugin.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts (again) the plugin process and waits for it to answer Activate.
    pub fn restart(&mut self) {
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).unwrap();
        let child = wrapped(&self.wrap, &self.program)
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("VAULT_SECRETS_LOG", &self.log_filter)
            // The engine's API (signal, the sweep): the one the tests drive.
            .env("DOCKER_HOST", test_engine().host())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("VAULT_ADDR")
            .env_remove("VAULT_TOKEN")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start plugin");
        self.child = Some(child);
        // A loaded CI machine may take a while; a process that exits is reported at once.
        let mut exited = None;
        let ok = wait_until(Duration::from_secs(60), || {
            exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            exited.is_some()
                || self.call("/Plugin.Activate", None).map(|r| r.0 == 200).unwrap_or(false)
        });
        if let Some(status) = exited {
            self.child = None;
            panic!("the plugin {status} before it answered:\n{}", self.log());
        }
        assert!(ok, "plugin did not answer within 60 s:\n{}", self.log());
    }

    /// Sends SIGTERM (or SIGKILL) and waits for the process to end.
    pub fn stop(&mut self, kill: bool) {
        if let Some(mut c) = self.child.take() {
            if kill {
                let _ = c.kill();
            } else {
                let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            }
            let _ = c.wait();
        }
    }

    /// One protocol call, as dockerd makes it: POST, no Content-Type, a JSON body or none.
    pub fn call(&self, path: &str, body: Option<Value>) -> std::io::Result<(u16, Value)> {
        let body = body.map(|b| b.to_string() + "\n").unwrap_or_default();
        let mut stream = UnixStream::connect(&self.socket)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nHost: plugin\r\nAccept: application/vnd.docker.plugins.v1.2+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw);
        let (head, payload) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        Ok((status, serde_json::from_str(payload).unwrap_or_else(|_| json!({ "_raw": payload }))))
    }

    pub fn ok(&self, path: &str, body: Value) -> Value {
        let (status, v) = self.call(path, Some(body.clone())).expect("plugin reachable");
        assert!(
            status == 200 && v["Err"].as_str().unwrap_or("").is_empty(),
            "{path} {body}: {status} {v}\n{}",
            self.log()
        );
        v
    }

    pub fn err(&self, path: &str, body: Value) -> String {
        let (_, v) = self.call(path, Some(body.clone())).expect("plugin reachable");
        let e = v["Err"].as_str().unwrap_or("").to_owned();
        assert!(!e.is_empty(), "{path} {body} should have failed: {v}");
        e
    }

    pub fn create(&self, name: &str, opts: Value) {
        self.ok("/VolumeDriver.Create", json!({ "Name": name, "Opts": opts }));
    }

    pub fn mount(&self, name: &str, id: &str) -> PathBuf {
        let v = self.ok("/VolumeDriver.Mount", json!({ "Name": name, "ID": id }));
        PathBuf::from(v["Mountpoint"].as_str().unwrap())
    }

    pub fn unmount(&self, name: &str, id: &str) {
        self.ok("/VolumeDriver.Unmount", json!({ "Name": name, "ID": id }));
    }

    /// Container mounts of this plugin still in place: each is a read-only bind below
    /// `runtime/mounts` of a tmpfs below `runtime/files`. A tmpfs left without its bind counts
    /// as one too, so that nothing left behind goes unseen.
    pub fn mounts_left(&self) -> Vec<String> {
        let (binds, files) = (self.runtime.join("mounts"), self.runtime.join("files"));
        let mut left = mounts_below(&binds);
        let bound = |m: &String| {
            let rel = Path::new(m).strip_prefix(&files).unwrap();
            left.contains(&binds.join(rel).display().to_string())
        };
        let orphans: Vec<String> = mounts_below(&files).into_iter().filter(|m| !bound(m)).collect();
        left.extend(orphans);
        left
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        self.stop(true);
        for m in mounts_below(&self.runtime).into_iter().rev() {
            let _ = Command::new("umount").args(["-l", &m]).status();
        }
        let _ = std::fs::remove_dir_all(&self.runtime);
        if std::thread::panicking() {
            eprintln!("--- plugin log ---\n{}", self.log());
        }
    }
}

/// Mount points below `dir`, from /proc/self/mountinfo.
pub fn mounts_below(dir: &Path) -> Vec<String> {
    let prefix = format!("{}/", dir.display());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|m| m.starts_with(&prefix) || m == &dir.display().to_string())
        .collect()
}

/// The options of the mount at `path` (fields 4 and the super options), as one string.
pub fn mount_options(path: &Path) -> Option<String> {
    let path = path.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().find_map(|l| {
        let fields: Vec<&str> = l.split(' ').collect();
        (fields.get(4) == Some(&path.as_str())).then(|| {
            let sep = fields.iter().position(|f| *f == "-").unwrap();
            format!("{} {} {}", fields[5], fields[sep + 1], fields.get(sep + 3).unwrap_or(&""))
        })
    })
}

/// A random 64-hex mount ID, as dockerd makes them.
pub fn mount_id() -> String {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom").unwrap().read_exact(&mut bytes).unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A unique name for a test's volumes.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &mount_id()[..10])
}
pub mod podman;
pub mod raft;
pub mod rootless;
pub mod tier;
pub mod tls;
pub mod vault;

/// `program`, run through `wrap` when it is not empty (a command that ends by exec'ing its
/// arguments, such as `nsenter … --`: the pid the child gets is the program's).
pub fn wrapped(wrap: &[String], program: impl AsRef<std::ffi::OsStr>) -> Command {
    match wrap.split_first() {
        Some((prefix, args)) => {
            let mut c = Command::new(prefix);
            c.args(args).arg(program);
            c
        }
        None => Command::new(program),
    }
}

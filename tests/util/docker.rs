//! The Docker harness of the end-to-end tests: [`DockerCli`], how the docker CLI reaches an
//! engine (the engine under test, [`super::test_engine`]; a private dockerd; the rootless one),
//! with [`docker`] and [`docker_ok`] against the engine under test; the Docker lock, the test
//! image and [`E2e`] (the shared driver's plugin against a fresh OpenBao).
//!
//! dockerd remembers every legacy driver it has talked to, and retries dead ones on lookups, so
//! all these tests share one driver name and run one at a time (a process-wide lock, and a
//! machine-wide one for other test runs).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

use super::*;

pub const DRIVER: &str = "vault-secrets-e2e";

pub static DOCKER: Mutex<()> = Mutex::new(());

/// The Docker lock across processes too: two test runs on one dockerd share the driver socket.
pub struct DockerLock {
    // Declared first, dropped first: the time is the lock's, until it is released.
    _held: tier::Held,
    _thread: MutexGuard<'static, ()>,
    _file: std::fs::File,
}

/// Takes the Docker lock: this process's, then the machine's (`flock` on a file in /run). The
/// test that takes it drives Docker: its name says on which engines it runs
/// ([`tier::assert_docker_tier`]).
pub fn docker_lock() -> DockerLock {
    tier::assert_docker_tier();
    let thread = DOCKER.lock().unwrap_or_else(|p| p.into_inner());
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/run/vault-secrets-e2e.lock")
        .expect("lock file");
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).expect("flock");
    DockerLock { _held: tier::Held::now(), _thread: thread, _file: file }
}

/// The test image ([`test_image`]).
pub use super::test_image as image;

/// How the docker CLI reaches one engine: which `docker` binary, which socket (`DOCKER_HOST`)
/// and which client configuration (`DOCKER_CONFIG`). Every helper that runs `docker` runs it
/// through one of these: the engine under test's ([`DockerCli::engine`]), a private dockerd's
/// ([`DockerCli::at`]), the rootless engine's ([`DockerCli::debian`]).
#[derive(Clone, Debug)]
pub struct DockerCli {
    /// The docker CLI: the engine under test's (26 and 28: the one in its prefix), or `docker`
    /// from PATH (Debian 12's 20.10).
    pub program: PathBuf,
    /// `DOCKER_HOST`: `unix://…`.
    pub host: String,
    /// `DOCKER_CONFIG` (26 and 28: where `docker compose` is found); `None`: removed from the
    /// environment, so the CLI's default.
    pub config: Option<PathBuf>,
    /// Which engine this is, for failures: `Engine 28`, `private dockerd`, `rootless`.
    pub what: String,
}

impl DockerCli {
    /// The CLI of the engine under test ([`test_engine`]), against it.
    pub fn engine() -> DockerCli {
        DockerCli::of(test_engine())
    }

    /// The CLI of `engine`, against it.
    pub fn of(engine: &TestEngine) -> DockerCli {
        DockerCli {
            program: engine.docker.clone(),
            host: engine.host(),
            config: engine.docker_config.clone(),
            what: format!("Engine {}", engine.name),
        }
    }

    /// This CLI against another dockerd of its version, at `host` (a private one,
    /// [`super::dockerd::Dockerd`]).
    pub fn at(&self, host: &str) -> DockerCli {
        DockerCli { host: host.to_owned(), what: "private dockerd".into(), ..self.clone() }
    }

    /// Debian 12's CLI (`docker` from PATH, its default configuration), against `host`: for an
    /// engine of Debian 12's 20.10 whatever the engine under test (rootless Docker).
    pub fn debian(host: &str, what: &str) -> DockerCli {
        DockerCli {
            program: "docker".into(),
            host: host.to_owned(),
            config: None,
            what: what.into(),
        }
    }

    /// The command `docker ARGS` against this engine.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.program);
        c.args(args).env("DOCKER_HOST", &self.host);
        match &self.config {
            Some(d) => c.env("DOCKER_CONFIG", d),
            None => c.env_remove("DOCKER_CONFIG"),
        };
        c
    }

    /// Imports the test image ([`test_image`]) from the rootfs tarball `tests/env.sh` built,
    /// unless the engine has it: for an engine of a test's own.
    pub fn import_test_image(&self) {
        let image = test_image();
        if !self.docker(&["image", "inspect", &image]).status.success() {
            let rootfs = Path::new(paths::ROOTFS);
            assert!(rootfs.exists(), "no {}: run tests/env.sh", rootfs.display());
            let rootfs = rootfs.display().to_string();
            self.docker_ok(&["import", "--change", "CMD [\"sh\"]", &rootfs, &image]);
        }
    }

    /// Runs `docker ARGS` against this engine.
    pub fn docker(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("docker CLI")
    }

    /// Runs `docker ARGS` and returns its trimmed stdout; panics with the command, the engine,
    /// its exit status and its stderr on failure.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {} ({}, {}) failed, {}: {}",
            args.join(" "),
            self.what,
            self.host,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

/// Runs the docker CLI against the engine under test (`VAULT_SECRETS_TEST_ENGINE`).
pub fn docker(args: &[&str]) -> Output {
    DockerCli::engine().docker(args)
}

/// Runs docker against the engine under test and returns its trimmed stdout
/// ([`DockerCli::docker_ok`]).
pub fn docker_ok(args: &[&str]) -> String {
    DockerCli::engine().docker_ok(args)
}

/// The shared driver's plugin against a fresh OpenBao, with the Docker lock held.
pub struct E2e {
    pub bao: Bao,
    pub plugin: Plugin,
    pub containers: Vec<String>,
    pub volumes: Vec<String>,
    _lock: DockerLock,
}

impl E2e {
    pub fn start() -> E2e {
        let lock = docker_lock();
        let out = docker(&["info", "--format", "{{.ServerVersion}}"]);
        // Engine 26.1's CLI exits 0 with an empty version when it cannot connect.
        assert!(
            out.status.success() && !String::from_utf8_lossy(&out.stdout).trim().is_empty(),
            "no Docker engine {} at {}: run tests/env.sh (and tests/engines.sh for 26 and 28) first ({})",
            test_engine().name,
            test_engine().socket.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let bao = Bao::start();
        let socket = Path::new("/run/docker/plugins").join(format!("{DRIVER}.sock"));
        let plugin = Plugin::start(Some(&socket), &bao.address(), &bao.token, "");
        E2e { bao, plugin, containers: Vec::new(), volumes: Vec::new(), _lock: lock }
    }

    pub fn volume(&mut self, prefix: &str, opts: &[&str]) -> String {
        let name = unique(prefix);
        let mut args = vec!["volume", "create", "--driver", DRIVER];
        for o in opts {
            args.extend(["-o", o]);
        }
        args.push(&name);
        docker_ok(&args);
        self.volumes.push(name.clone());
        name
    }

    /// `docker run -d` of `sleep` with the volume at /run/secrets; returns the container ID.
    pub fn run_detached(&mut self, volume: &str) -> String {
        let mount = format!("{volume}:/run/secrets:ro");
        let id =
            docker_ok(&["run", "-d", "--network", "none", "-v", &mount, &image(), "sleep", "600"]);
        self.containers.push(id.clone());
        id
    }
}

impl Drop for E2e {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = docker(&["rm", "-f", c]);
        }
        for v in &self.volumes {
            let _ = docker(&["volume", "rm", "-f", v]);
        }
    }
}

/// A command's environment changes, program and arguments, as a shell would show them
/// (`-VAR`: removed), to compare.
fn command_line(c: &Command) -> String {
    let mut words: Vec<String> = c
        .get_envs()
        .map(|(k, v)| match v {
            Some(v) => format!("{}={}", k.to_string_lossy(), v.to_string_lossy()),
            None => format!("-{}", k.to_string_lossy()),
        })
        .collect();
    words.push(c.get_program().to_string_lossy().into_owned());
    words.extend(c.get_args().map(|a| a.to_string_lossy().into_owned()));
    words.join(" ")
}

/// The `docker` command line for each kind of engine, as the helpers ran it before
/// [`DockerCli`] (whatever engine this run tests; no engine is run).
#[test]
fn docker_cli_command_lines() {
    let args = ["info", "--format", "{{.ID}}"];
    let line = |cli: &DockerCli| command_line(&cli.command(&args));
    let debian12 = DockerCli::of(&TestEngine::debian12());
    let unpacked = DockerCli::of(&TestEngine {
        name: "28",
        socket: "/run/vault-secrets-test/docker28.sock".into(),
        docker: "/opt/vault-secrets-test/docker28/usr/bin/docker".into(),
        docker_config: Some("/opt/vault-secrets-test/docker28/docker-config".into()),
        ..TestEngine::debian12()
    });
    let private = "unix:///run/vst-dockerd/x/docker.sock";
    let rootless = "unix:///run/user/1000/docker.sock";
    let expected = [
        (
            debian12.clone(),
            "-DOCKER_CONFIG DOCKER_HOST=unix:///var/run/docker.sock docker info --format {{.ID}}",
        ),
        (
            debian12.at(private),
            "-DOCKER_CONFIG DOCKER_HOST=unix:///run/vst-dockerd/x/docker.sock \
             docker info --format {{.ID}}",
        ),
        (
            unpacked.clone(),
            "DOCKER_CONFIG=/opt/vault-secrets-test/docker28/docker-config \
             DOCKER_HOST=unix:///run/vault-secrets-test/docker28.sock \
             /opt/vault-secrets-test/docker28/usr/bin/docker info --format {{.ID}}",
        ),
        (
            unpacked.at(private),
            "DOCKER_CONFIG=/opt/vault-secrets-test/docker28/docker-config \
             DOCKER_HOST=unix:///run/vst-dockerd/x/docker.sock \
             /opt/vault-secrets-test/docker28/usr/bin/docker info --format {{.ID}}",
        ),
        (
            DockerCli::debian(rootless, "rootless"),
            "-DOCKER_CONFIG DOCKER_HOST=unix:///run/user/1000/docker.sock \
             docker info --format {{.ID}}",
        ),
    ];
    for (cli, want) in expected {
        assert_eq!(line(&cli), want, "{cli:?}");
    }
    assert_eq!(line(&DockerCli::engine()), line(&DockerCli::of(test_engine())));
}

//! The Docker harness of the end-to-end tests: the docker CLI against the engine under test
//! ([`super::test_engine`]), the Docker lock, the test image and [`E2e`] (the shared driver's
//! plugin against a fresh OpenBao).
//!
//! dockerd remembers every legacy driver it has talked to, and retries dead ones on lookups, so
//! all these tests share one driver name and run one at a time (a process-wide lock, and a
//! machine-wide one for other test runs).

use std::path::Path;
use std::process::Output;
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

/// Runs the docker CLI against the engine under test (`VAULT_SECRETS_TEST_ENGINE`).
pub fn docker(args: &[&str]) -> Output {
    test_engine().docker_command().args(args).output().expect("docker CLI")
}

/// Runs docker and returns its stdout; panics with its stderr on failure.
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
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

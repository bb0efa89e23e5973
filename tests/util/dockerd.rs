//! A dockerd of a test's own, for what must not happen to the shared engines: SIGKILL, restart.
//!
//! It runs the binaries of the engine under test ([`super::test_engine`]: Debian 12's 20.10 or
//! the 26.1 or 28.5 that `tests/engines.sh` unpacks), with that engine's environment and flags
//! (28: its API floor and image store), its own data-root, exec-root, pid file, API socket and
//! log, and starts its own containerd. It shares the host's network namespace (no
//! bridge, no iptables: containers run `--network none`) and `/run/docker/plugins`, so a legacy
//! plugin for it must use a driver name no other dockerd uses. The test image is imported from
//! the rootfs tarball `tests/env.sh` built.
//!
//! [`Dockerd::start_in`] runs it through a command prefix instead (`nsenter -t PID -m -n -u --`:
//! the namespaces of a host of `super::hosts`), where its network, mounts and
//! `/run/docker/plugins` are its own.
//!
//! Dropping it removes its containers, stops dockerd and its containerd (by pid), unmounts what
//! is left below its directories and removes them.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::docker::DockerCli;
use super::{test_engine, unique, wait_until};

static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub struct Dockerd {
    /// `DOCKER_HOST` of this dockerd: `unix://…`.
    pub host: String,
    /// Its API socket.
    pub socket: PathBuf,
    /// The docker CLI against it (the engine under test's).
    pub cli: DockerCli,
    /// Its log (dockerd's and its managed plugins' output), kept after the drop.
    pub log: PathBuf,
    data_root: PathBuf,
    exec_root: PathBuf,
    pidfile: PathBuf,
    /// The command dockerd is run through (empty: run directly).
    wrap: Vec<String>,
    /// Flags of the test's own (`--userns-remap=default`).
    flags: Vec<String>,
    child: Option<Child>,
}

impl Dockerd {
    /// Starts a dockerd named after `tag` (which keeps its paths apart from every other one),
    /// waits until it answers and imports the test image into it.
    pub fn start(tag: &str) -> Dockerd {
        Dockerd::start_in(tag, &[])
    }

    /// [`Dockerd::start`] with more dockerd flags, such as `--userns-remap=default`.
    pub fn start_with(tag: &str, flags: &[&str]) -> Dockerd {
        Dockerd::start_wrapped(tag, &[], flags)
    }

    /// [`Dockerd::start`], with dockerd run through `wrap` (a command that ends by exec'ing its
    /// arguments, such as `nsenter … --`: the pid it gets is dockerd's).
    pub fn start_in(tag: &str, wrap: &[String]) -> Dockerd {
        Dockerd::start_wrapped(tag, wrap, &[])
    }

    fn start_wrapped(tag: &str, wrap: &[String], flags: &[&str]) -> Dockerd {
        super::tier::assert_docker_tier();
        // One private dockerd starts (and takes the test image) at a time, in this process:
        // two three-node clusters started together on Engine 26 saw `docker import` fail now and
        // then just after `docker info` had answered (see tests/hosts.rs), and chaos:: starts
        // one beside them.
        let _starting = STARTING.lock().unwrap_or_else(|p| p.into_inner());
        let name = unique(tag);
        // The exec-root holds containerd's socket: keep it short (sun_path is 108 bytes).
        let exec_root = PathBuf::from("/run/vst-dockerd").join(&name);
        let data_root = Path::new(super::paths::STATE).join("dockerd").join(&name);
        for d in [&exec_root, &data_root] {
            std::fs::create_dir_all(d).expect("dockerd directories");
        }
        let host = format!("unix://{}", exec_root.join("docker.sock").display());
        let mut d = Dockerd {
            socket: exec_root.join("docker.sock"),
            cli: DockerCli::engine().at(&host),
            host,
            log: PathBuf::from("/var/log/vault-secrets-test").join(format!("dockerd-{name}.log")),
            pidfile: exec_root.join("docker.pid"),
            data_root,
            exec_root,
            wrap: wrap.to_vec(),
            flags: flags.iter().map(|f| f.to_string()).collect(),
            child: None,
        };
        d.spawn();
        d.cli.import_test_image();
        d
    }

    /// Runs the docker CLI against this dockerd.
    pub fn docker(&self, args: &[&str]) -> Output {
        self.cli.docker(args)
    }

    /// Runs docker against this dockerd and returns its trimmed stdout
    /// ([`DockerCli::docker_ok`]).
    pub fn docker_ok(&self, args: &[&str]) -> String {
        self.cli.docker_ok(args)
    }

    /// dockerd's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILLs dockerd, as a crash would: its containerd and the containers' shims stay, and no
    /// plugin gets an Unmount.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts dockerd again on the same directories (after [`Dockerd::kill`] or
    /// [`Dockerd::stop`]) and waits until it answers.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// After [`Dockerd::kill`]: the drop does not start it again to remove its containers (a
    /// dead node's tasks would wait for its dead volume plugin); it kills their shims instead.
    pub fn abandon(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.socket);
    }

    /// Stops dockerd with SIGTERM and waits for it (it stops its containers first).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Signalled only while it is not reaped: until `try_wait` has reaped it, its pid is
            // its own (a zombie keeps it), never another process's.
            if c.try_wait().ok().flatten().is_some() {
                return;
            }
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let end = std::time::Instant::now() + Duration::from_secs(30);
            while c.try_wait().ok().flatten().is_none() && std::time::Instant::now() < end {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn spawn(&mut self) {
        // The containerd of a killed dockerd gets SIGKILL too (Pdeathsig), and may stay a zombie
        // for a while (PID 1 here reaps slowly): dockerd counts a zombie as running and waits
        // for it in vain, so wait for it to end and forget a dead one.
        let containerd_pid = self.exec_root.join("containerd/containerd.pid");
        wait_until(Duration::from_secs(5), || !pid_file_alive(&containerd_pid));
        if !pid_file_alive(&containerd_pid) {
            let _ = std::fs::remove_file(&containerd_pid);
        }
        let _ = std::fs::remove_file(&self.pidfile);
        if let Some(dir) = self.log.parent() {
            std::fs::create_dir_all(dir).expect("dockerd log's directory");
        }
        let log = File::options().create(true).append(true).open(&self.log).expect("dockerd log");
        let engine = test_engine();
        let (dockerd, path) = engine.dockerd();
        let child = super::wrapped(&self.wrap, dockerd)
            .arg("--data-root")
            .arg(&self.data_root)
            .arg("--exec-root")
            .arg(&self.exec_root)
            .arg("--pidfile")
            .arg(&self.pidfile)
            .arg("-H")
            .arg(&self.host)
            .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
            .args(engine.dockerd_flags)
            .args(&self.flags)
            .env("PATH", path)
            .envs(engine.dockerd_env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        self.child = Some(child);
        let cli = &self.cli;
        let answers = || {
            // Engine 26.1's CLI exits 0 with an empty ID when it cannot connect (a dockerd
            // that takes 10 s to stop a killed one's containers is not listening yet).
            let out = cli.docker(&["info", "--format", "{{.ID}}"]);
            out.status.success() && !String::from_utf8_lossy(&out.stdout).trim().is_empty()
        };
        let what = format!("private dockerd on {}", self.host);
        wait_up(&mut self.child, answers, &what, &self.log);
    }
}

/// Waits up to 60 s until a dockerd just started as `child` `answers`, or ends; panics with
/// the tail of its `log` if it did not come up (`child` is then `None` if it ended: reaped,
/// nothing of it to stop any more).
pub fn wait_up(
    child: &mut Option<Child>,
    mut answers: impl FnMut() -> bool,
    what: &str,
    log: &Path,
) {
    let up = wait_until(Duration::from_secs(60), || {
        child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_some()) || answers()
    });
    let exited = child.as_mut().and_then(|c| c.try_wait().ok().flatten());
    if exited.is_some() {
        *child = None;
    }
    assert!(
        up && exited.is_none(),
        "{what} did not come up ({exited:?}); its log:\n{}",
        tail(log, 30)
    );
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if self.child.is_none() && self.socket.exists() {
            // Killed and not restarted: start it once more so its containers can be removed.
            self.spawn_quietly();
        }
        if self.child.is_some() {
            let ids = self.docker(&["ps", "-aq"]);
            let ids = String::from_utf8_lossy(&ids.stdout).to_string();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(&ids);
                let _ = self.docker(&args);
            }
            self.stop();
        }
        let containerd_pid = self.exec_root.join("containerd/containerd.pid");
        if pid_file_alive(&containerd_pid) {
            if let Some(pid) = read_pid(&containerd_pid) {
                let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
                wait_until(Duration::from_secs(10), || !pid_file_alive(&containerd_pid));
            }
        }
        // A dockerd that would not come back leaves its containers and their shims: each
        // container's init pid is recorded below the exec-root, its shim is its parent.
        let tasks = self.exec_root.join("containerd/daemon/io.containerd.runtime.v2.task/moby");
        for task in std::fs::read_dir(&tasks).into_iter().flatten().flatten() {
            let Some(init) = read_pid(&task.path().join("init.pid")) else { continue };
            let shim = std::fs::read_to_string(format!("/proc/{init}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(") ")?.1.split(' ').nth(1)?.parse::<u32>().ok())
                .filter(|ppid| {
                    std::fs::read(format!("/proc/{ppid}/cmdline"))
                        .is_ok_and(|c| String::from_utf8_lossy(&c).contains("containerd-shim"))
                });
            for pid in std::iter::once(init).chain(shim) {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            }
        }
        for root in [&self.exec_root, &self.data_root] {
            for m in mounts_below(root) {
                let _ = Command::new("umount").args(["-l", &m]).status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.exec_root);
        let _ = std::fs::remove_dir_all(&self.data_root);
    }
}

impl Dockerd {
    fn spawn_quietly(&mut self) {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.spawn()));
        if result.is_err() {
            self.child = None;
        }
    }
}

/// Mount points at or below `dir`, deepest first.
fn mounts_below(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = dir.display().to_string();
    let mut found: Vec<String> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| *m == prefix || m.starts_with(&format!("{prefix}/")))
        .map(str::to_string)
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.len()));
    found
}

fn read_pid(file: &Path) -> Option<u32> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// Whether the process in `file` runs: it exists and is not a zombie.
fn pid_file_alive(file: &Path) -> bool {
    read_pid(file).is_some_and(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
            .unwrap_or(false)
    })
}

/// The last `lines` lines of a dockerd's log, without gRPC's connection chatter.
pub fn tail(file: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    // gRPC's connection chatter hides the cause.
    let all: Vec<&str> = text.lines().filter(|l| !l.contains("module=grpc")).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

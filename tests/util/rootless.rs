//! A rootless Docker of a test's own: Debian 12's `dockerd-rootless.sh` (docker.io's contrib
//! script: rootlesskit, then Debian's dockerd 20.10) run as the user [`USER`] that
//! `tests/engines.sh` creates with its subordinate ids, as `docs/rootless.md` describes.
//!
//! rootlesskit's user networking is `host` (`DOCKERD_ROOTLESS_ROOTLESSKIT_NET=host`, no port
//! driver): slirp4netns cannot open `/dev/net/tun` on this machine; containers run
//! `--network none`. dockerd runs in rootlesskit's user and mount namespaces, where `/run` is
//! a copy of the host's (so `/run/docker/plugins` is its own); a plugin for it runs there too
//! ([`RootlessDockerd::enter`]), and the test reaches that plugin's socket through
//! `/proc/PID/root` ([`RootlessDockerd::host_path`]).
//!
//! Dropping it removes its containers and volumes, stops rootlesskit with SIGTERM (by pid: it
//! ends dockerd, its containerd and the namespaces) and removes its data root.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::docker::DockerCli;
use super::dockerd::wait_up;

/// The user the rootless engine runs as (`tests/engines.sh` creates it).
pub const USER: &str = "vst-rootless";
/// Debian 12's docker.io ships it here, not on PATH.
const SCRIPT_DIR: &str = "/usr/share/docker.io/contrib";

pub struct RootlessDockerd {
    /// [`USER`]'s uid and gid on the host.
    pub uid: u32,
    pub gid: u32,
    /// `DOCKER_HOST` of this engine: `unix:///run/user/UID/docker.sock`, the same path on the
    /// host and in its namespaces.
    pub host: String,
    /// rootlesskit's and dockerd's output.
    pub log: PathBuf,
    /// The docker CLI against it: Debian 12's, the engine's own version.
    pub cli: DockerCli,
    home: PathBuf,
    /// rootlesskit (the parent: setpriv and the script exec into it).
    child: Option<Child>,
}

impl RootlessDockerd {
    /// Starts the rootless engine, waits until it answers and imports the test image.
    pub fn start() -> RootlessDockerd {
        super::tier::assert_docker_tier();
        let (uid, gid, home) = user();
        for (file, id) in [("/etc/subuid", "subuid"), ("/etc/subgid", "subgid")] {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            assert!(
                text.lines().any(|l| l.starts_with(&format!("{USER}:"))),
                "{USER} has no {id} range in {file}: run tests/engines.sh"
            );
        }
        assert!(
            Path::new("/usr/bin/rootlesskit").exists() && Path::new("/usr/bin/newuidmap").exists(),
            "no rootlesskit or newuidmap: run tests/engines.sh (Debian's rootlesskit and uidmap)"
        );
        let xdg = runtime_dir(uid, gid);
        let socket = xdg.join("docker.sock");
        assert!(
            !socket.exists() || !Self::answers(&format!("unix://{}", socket.display())),
            "a rootless dockerd of {USER} already runs at {}: end it first",
            socket.display()
        );
        let log = PathBuf::from("/var/log/vault-secrets-test/dockerd-rootless.log");
        let out = std::fs::File::options().create(true).append(true).open(&log).unwrap();
        let child = Command::new("setpriv")
            .args([format!("--reuid={uid}"), format!("--regid={gid}"), "--init-groups".into()])
            .args(["env", "-i"])
            .arg(format!("HOME={}", home.display()))
            .arg(format!("USER={USER}"))
            .arg(format!("XDG_RUNTIME_DIR={}", xdg.display()))
            .arg(format!("PATH={SCRIPT_DIR}:/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin"))
            .args([
                "DOCKERD_ROOTLESS_ROOTLESSKIT_NET=host",
                "DOCKERD_ROOTLESS_ROOTLESSKIT_PORT_DRIVER=none",
                "dockerd-rootless.sh",
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
            ])
            .current_dir(&home)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start dockerd-rootless.sh");
        let host = format!("unix://{}", socket.display());
        let mut d = RootlessDockerd {
            uid,
            gid,
            cli: DockerCli::debian(&host, "rootless"),
            host,
            log,
            home,
            child: Some(child),
        };
        let host = d.host.clone();
        wait_up(&mut d.child, || Self::answers(&host), "rootless dockerd", &d.log);
        let info = d.docker_ok(&["info", "--format", "{{.SecurityOptions}}"]);
        assert!(info.contains("rootless"), "not a rootless engine: {info}");
        d.cli.import_test_image();
        d
    }

    fn answers(host: &str) -> bool {
        DockerCli::debian(host, "rootless")
            .command(&["info", "--format", "{{.ID}}"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// dockerd's pid (its pid file, in the user's runtime directory): the process whose
    /// namespaces a plugin for it enters.
    pub fn dockerd_pid(&self) -> u32 {
        let file = format!("/run/user/{}/docker.pid", self.uid);
        std::fs::read_to_string(&file)
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no pid in {file}"))
    }

    /// The command prefix that runs a program in dockerd's user and mount namespaces, as root
    /// there (the user on the host): what `docs/rootless.md` says to run the plugin with.
    pub fn enter(&self) -> Vec<String> {
        let pid = self.dockerd_pid().to_string();
        ["nsenter", "-t", &pid, "-U", "-m", "--"].map(str::to_owned).to_vec()
    }

    /// A path of dockerd's mount namespace, as the host reaches it.
    pub fn host_path(&self, inside: &Path) -> PathBuf {
        let rel = inside.strip_prefix("/").unwrap_or(inside);
        PathBuf::from(format!("/proc/{}/root", self.dockerd_pid())).join(rel)
    }

    /// Runs the docker CLI against this engine.
    pub fn docker(&self, args: &[&str]) -> Output {
        self.cli.docker(args)
    }

    /// Runs docker against this engine and returns its trimmed stdout
    /// ([`DockerCli::docker_ok`]).
    pub fn docker_ok(&self, args: &[&str]) -> String {
        self.cli.docker_ok(args)
    }
}

impl Drop for RootlessDockerd {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if child.try_wait().ok().flatten().is_none() {
            let ids = self.docker(&["ps", "-aq"]);
            let ids = String::from_utf8_lossy(&ids.stdout).to_string();
            for id in ids.split_whitespace() {
                let _ = self.docker(&["rm", "-f", id]);
            }
            let vols = self.docker(&["volume", "ls", "-q"]);
            for v in String::from_utf8_lossy(&vols.stdout).split_whitespace() {
                let _ = self.docker(&["volume", "rm", "-f", v]);
            }
            // rootlesskit passes SIGTERM on to dockerd and ends with it; its namespaces, and
            // every mount made in them, go with their last process.
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let end = std::time::Instant::now() + Duration::from_secs(30);
            while child.try_wait().ok().flatten().is_none() && std::time::Instant::now() < end {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
        }
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(self.home.join(".local/share/docker"));
        let _ = std::fs::remove_dir_all(format!("/run/user/{}/docker", self.uid));
    }
}

/// The command prefix that runs a program as [`USER`] (its uid, gid and groups), with its
/// `HOME`, `USER` and `XDG_RUNTIME_DIR` (made if missing), the rest of the environment kept:
/// how the rootless Podman test runs `podman` and `podman unshare`.
pub fn as_user() -> Vec<String> {
    let (uid, gid, home) = user();
    let xdg = runtime_dir(uid, gid);
    vec![
        "setpriv".into(),
        format!("--reuid={uid}"),
        format!("--regid={gid}"),
        "--init-groups".into(),
        "env".into(),
        format!("HOME={}", home.display()),
        format!("USER={USER}"),
        format!("XDG_RUNTIME_DIR={}", xdg.display()),
    ]
}

/// `/run/user/UID`, [`USER`]'s (0700), made if missing.
fn runtime_dir(uid: u32, gid: u32) -> PathBuf {
    let xdg = PathBuf::from(format!("/run/user/{uid}"));
    std::fs::create_dir_all(&xdg).unwrap();
    rustix::fs::chown(
        &xdg,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    )
    .unwrap();
    std::fs::set_permissions(&xdg, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    xdg
}

/// Gives `paths` to [`USER`] (a plugin run as that user reads its configuration and token file
/// and writes its state directory).
pub fn give(paths: &[&Path]) {
    let (uid, gid, _) = user();
    for p in paths {
        rustix::fs::chown(
            *p,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        )
        .unwrap();
    }
}

/// [`USER`]'s uid, gid and home, from the passwd database.
pub fn user() -> (u32, u32, PathBuf) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let fields: Vec<&str> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&USER) && f.len() >= 6)
        .unwrap_or_else(|| panic!("no user {USER}: run tests/engines.sh"))
        .to_vec();
    (fields[2].parse().unwrap(), fields[3].parse().unwrap(), PathBuf::from(fields[5]))
}

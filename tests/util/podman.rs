//! The Podman the tests drive, chosen by `VAULT_SECRETS_TEST_PODMAN`:
//! - `4` (the default): Debian 12's Podman 4.3, `podman` from PATH;
//! - `5`: Debian 13's Podman 5.4, in the Debian 13 root `tests/engines.sh` makes (Podman 5 needs
//!   glibc ≥ 2.38), run in the mount namespace whose root that root is (`nsenter` to the holder
//!   process `tests/engines.sh` records). A host path below the root means the same thing in it
//!   (the root's own path is a symlink to `/` there) and what the host mounts below it reaches
//!   the namespace, so a plugin for it keeps its socket and runtime directory below the root
//!   ([`TestPodman::run_dir`]).
//!
//! Rootful both. A test that drives Podman ends its name with [`super::tier::EVERY_PODMAN`] (or a
//! Docker tier, when it drives Docker too).

use std::path::PathBuf;
use std::process::{Command, Output};

pub struct TestPodman {
    /// `4` or `5`.
    pub name: &'static str,
    /// The root of the mount namespace it runs in; `None`: the host's.
    pub root: Option<PathBuf>,
}

/// The pid file of the process that holds Podman 5's mount namespace (tests/engines.sh).
pub const PODMAN5_HOLDER: &str = "/run/vault-secrets-test/podman5.pid";

/// Where tests/engines.sh makes Podman 5's Debian 13 root (below [`super::paths::OPT`]).
pub const PODMAN5_ROOT: &str = "/opt/vault-secrets-test/podman5";

impl TestPodman {
    /// A `podman` command (with the configuration files of its own root, never `CONTAINERS_CONF`).
    pub fn command(&self) -> Command {
        let mut c = match &self.root {
            Some(_) => {
                let holder = std::fs::read_to_string(PODMAN5_HOLDER)
                    .expect("Podman 5's namespace (run tests/engines.sh podman5)");
                let mut c = Command::new("nsenter");
                c.args(["-t", holder.trim(), "-m", "--", "podman"]);
                c.env("PODMAN_IGNORE_CGROUPSV1_WARNING", "1");
                c
            }
            None => Command::new("podman"),
        };
        c.env_remove("CONTAINERS_CONF");
        c
    }

    /// Where its `containers.conf` drop-ins go (a host path).
    pub fn drop_in_dir(&self) -> PathBuf {
        self.host_path("/etc/containers/containers.conf.d")
    }

    /// Where a plugin for it keeps its socket and runtime directory (a host path Podman finds
    /// under the same name).
    pub fn run_dir(&self) -> PathBuf {
        self.host_path("/run")
    }

    fn host_path(&self, path: &str) -> PathBuf {
        match &self.root {
            Some(root) => root.join(path.trim_start_matches('/')),
            None => path.into(),
        }
    }
}

pub fn test_podman() -> &'static TestPodman {
    static PODMAN: std::sync::OnceLock<TestPodman> = std::sync::OnceLock::new();
    PODMAN.get_or_init(|| match std::env::var("VAULT_SECRETS_TEST_PODMAN").as_deref() {
        Ok("") | Ok("4") | Err(_) => TestPodman { name: "4", root: None },
        Ok("5") => {
            let root = PathBuf::from(PODMAN5_ROOT);
            assert!(
                root.join("usr/bin/podman").exists(),
                "VAULT_SECRETS_TEST_PODMAN=5 but no Podman in {}: run tests/engines.sh podman5",
                root.display()
            );
            TestPodman { name: "5", root: Some(root) }
        }
        Ok(other) => panic!("VAULT_SECRETS_TEST_PODMAN={other}: expected 4 or 5"),
    })
}

/// Runs the Podman under test; its name says the test drives Podman ([`super::tier`]).
pub fn podman(args: &[&str]) -> Output {
    super::tier::assert_podman_tier();
    test_podman()
        .command()
        .args(args)
        .output()
        .expect("podman (apt-get install podman, or tests/engines.sh podman5)")
}

/// Runs podman and returns its trimmed stdout; panics with its stderr on failure.
pub fn podman_ok(args: &[&str]) -> String {
    let out = podman(args);
    assert!(
        out.status.success(),
        "podman {} {args:?} failed: {}",
        test_podman().name,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

//! Which engines a test runs on, by the end of its name: the convention `tests/run.sh` selects
//! by (`cargo test -- --list` shows it), described in `tests/tests.rs`.
//!
//! The Docker harness ([`super::docker::docker_lock`], [`super::dockerd::Dockerd`]) and the Podman
//! one ([`super::podman::podman`]) check it: a test that drives an engine and has no tier fails,
//! saying how to name it, and so does a test run on an engine its tier cannot run on. Nothing is
//! skipped by the test itself.

use super::test_engine;

/// A test that drives Docker, run on every engine (`tests/run.sh`: 20.10, 26.1, 28.5).
pub const EVERY_ENGINE: &str = "_on_every_engine";
/// A test of what Engine ≥ 26 does (`volume-subpath`), or that restarts the engine it drives
/// (only `tests/engines.sh`'s may be): run on the unpacked engines, 26.1 and 28.5.
pub const CURRENT_ENGINES: &str = "_on_current_engines";
/// A long test that drives Docker (three-node swarms, chaos, HA, 64 containers), or an engine of
/// its own whatever the pass's (rootless Docker and Podman, `tests/rootless.rs`): run on one
/// engine, 28.5 (any engine can run it by hand).
pub const ONE_ENGINE: &str = "_on_one_engine";

/// A test that drives Podman: run on Podman 4.3 and 5.4 (`VAULT_SECRETS_TEST_PODMAN`). A test
/// that drives Docker and Podman takes a Docker tier (and runs with Podman 4.3).
pub const EVERY_PODMAN: &str = "_on_every_podman";

/// The running test's name, from its own thread (libtest names it after the test); `None` from
/// any other thread.
fn running_test() -> Option<String> {
    std::thread::current().name().filter(|n| n.contains("::")).map(str::to_owned)
}

/// Panics unless the running test's name ends with [`EVERY_PODMAN`] or a Docker tier.
pub fn assert_podman_tier() {
    let Some(test) = running_test() else { return };
    assert!(
        [EVERY_PODMAN, EVERY_ENGINE, CURRENT_ENGINES, ONE_ENGINE].iter().any(|t| test.ends_with(t)),
        "{test} drives Podman, so its name ends with {EVERY_PODMAN} (see tests/tests.rs)"
    );
}

/// Panics unless the running test's name ends with a tier, and one that the engine under test
/// can run (`_on_current_engines` needs Engine ≥ 26). Called from the test's own thread (libtest
/// names it after the test); from any other thread it checks nothing.
pub fn assert_docker_tier() {
    let Some(test) = running_test() else { return };
    let engine = test_engine();
    if test.ends_with(CURRENT_ENGINES) {
        assert!(
            engine.version() >= 26,
            "{test} runs on Engine 26 or 28 (VAULT_SECRETS_TEST_ENGINE=26 or 28), not on {}",
            engine.name
        );
    } else if !test.ends_with(EVERY_ENGINE) && !test.ends_with(ONE_ENGINE) {
        panic!(
            "{test} drives Docker, so its name ends with the engines it runs on: \
             {EVERY_ENGINE}, {CURRENT_ENGINES} or {ONE_ENGINE} (see tests/tests.rs)"
        );
    }
}

/// How long a test held the Docker lock, written when it lets go to the file
/// `VAULT_SECRETS_TEST_TIMINGS` names (if any) as `ENGINE<tab>TEST<tab>SECONDS`: a test's own
/// time, whatever it waited for the lock (`tests/run.sh` sums them by tier, as the budget's
/// figures on a machine that other work shares).
pub struct Held {
    since: std::time::Instant,
}

impl Held {
    pub fn now() -> Held {
        Held { since: std::time::Instant::now() }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        use std::io::Write;
        let (Some(file), Some(test)) =
            (std::env::var_os("VAULT_SECRETS_TEST_TIMINGS"), running_test())
        else {
            return;
        };
        let line =
            format!("{}\t{test}\t{:.1}\n", test_engine().name, self.since.elapsed().as_secs_f64());
        let log = std::fs::OpenOptions::new().create(true).append(true).open(file);
        // One write per line (O_APPEND): lines of concurrent tests never mix.
        let _ = log.and_then(|mut f| f.write_all(line.as_bytes()));
    }
}

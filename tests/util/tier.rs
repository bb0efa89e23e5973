//! Which engines a test runs on, by the end of its name: the convention `tests/run.sh` selects
//! by (`cargo test -- --list` shows it), described in `tests/tests.rs`.
//!
//! The Docker harness ([`crate::e2e::docker_lock`], [`super::dockerd::Dockerd`]) checks it: a
//! test that drives Docker and has no tier fails, saying how to name it, and so does a test run
//! on an engine its tier cannot run on. Nothing is skipped by the test itself.

use super::test_engine;

/// A test that drives Docker, run on every engine (`tests/run.sh`: 20.10, 26.1, 28.5).
pub const EVERY_ENGINE: &str = "_on_every_engine";
/// A test of what Engine ≥ 26 does (`volume-subpath`), or that restarts the engine it drives
/// (only `tests/engines.sh`'s may be): run on the unpacked engines, 26.1 and 28.5.
pub const CURRENT_ENGINES: &str = "_on_current_engines";
/// A long test that drives Docker (three-node swarms, chaos, HA, 64 containers): run on one
/// engine, 28.5 (any engine can run it by hand).
pub const ONE_ENGINE: &str = "_on_one_engine";

/// Panics unless the running test's name ends with a tier, and one that the engine under test
/// can run (`_on_current_engines` needs Engine ≥ 26). Called from the test's own thread (libtest
/// names it after the test); from any other thread it checks nothing.
pub fn assert_docker_tier() {
    let thread = std::thread::current();
    let Some(test) = thread.name().filter(|n| n.contains("::")) else { return };
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

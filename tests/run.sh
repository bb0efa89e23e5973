#!/usr/bin/env bash
# The whole test suite, every tier. Run as root on Debian 12:
#   bash tests/run.sh
# 1. brings up what the tests need, installing what is missing: tests/env.sh (Docker Engine
#    20.10 with docker-compose 1.29, OpenBao CLI, PostgreSQL, the busybox test image),
#    tests/engines.sh (Docker Engines 26.1 and 28.5 beside it, with Compose v2; Podman 4.3,
#    Podman 5.4 in a Debian 13 root, docker-registry);
# 2. unit tests (fakes behind traits), then the fuzz targets for a bounded time, then the
#    release checked (tests/release.sh);
# 3. the integration tests (the plugin binary against a real OpenBao and PostgreSQL, real tmpfs,
#    Podman) and the end-to-end tests (the real docker CLI and engine, Podman), one pass per
#    engine (VAULT_SECRETS_TEST_ENGINE, VAULT_SECRETS_TEST_PODMAN; same build). Which tests a
#    pass runs goes by the end of their names (tests/tests.rs has the table; `cargo test --test
#    tests -- --list` shows them):
#      _on_every_engine     Docker Engine 20.10, 26.1 and 28.5
#      _on_current_engines  26.1 and 28.5 (what Engine >= 26 does; restarts of its engine)
#      _on_one_engine       28.5 (long: three-node swarms, chaos, HA, 64 containers)
#      _on_every_podman     Podman 4.3 and 5.4
#      anything else        drives no engine: once, in the first pass
#    The Docker tests of a pass run one at a time (they share the driver and its lock), beside
#    one test that drives no engine (--test-threads 2);
# 4. the shared contract check (../shared/contract/check.py), when it is there.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || {
    echo "tests/run.sh: cargo not found; install a Rust toolchain (https://rustup.rs)" >&2
    exit 1
}
# took STEP: how long STEP took (the tiers' durations, for the CI log).
step_started=$SECONDS
took() { echo "-- $1: $((SECONDS - step_started)) s"; step_started=$SECONDS; }
# shellcheck source=tests/env.sh
source tests/env.sh
bash tests/engines.sh
took "set-up"

echo "== unit tests"
cargo test --lib --bins
took "unit tests"
echo "== fuzzing: every target, 15 s each (fuzz/run.sh installs cargo-fuzz when missing)"
bash fuzz/run.sh 15
took "fuzzing"
echo "== the release: plugin/release.sh, lintian, install/remove/purge in a clean Debian 12 root, promtool (tests/release.sh)"
bash tests/release.sh
took "release"
# Each Docker test writes how long it held the Docker lock (its own time, without what it waited
# for other tests, on this machine or from other runs) to this file: per pass, a sum by tier.
VAULT_SECRETS_TEST_TIMINGS=$(mktemp)
export VAULT_SECRETS_TEST_TIMINGS
trap 'rm -f "$VAULT_SECRETS_TEST_TIMINGS"' EXIT
# pass ENGINE PODMAN WHAT FILTERS...: the tests FILTERS select (cargo test's filters and --skip)
# with Docker Engine ENGINE and Podman PODMAN; prints how many, runs them, then how long they
# took (the pass, and its Docker tests by tier).
pass() {
    local engine=$1 podman=$2 what=$3 n
    shift 3
    export VAULT_SECRETS_TEST_ENGINE=$engine VAULT_SECRETS_TEST_PODMAN=$podman
    n=$(cargo test -q --test tests -- --list "$@" | grep -c ': test$')
    echo "== $what: $n tests"
    : >"$VAULT_SECRETS_TEST_TIMINGS"
    cargo test --test tests -- --test-threads 2 "$@"
    took "$what"
    awk -F '\t' '{ t = $2; sub(/.*_on_/, "_on_", t); s[t] += $3; n[t]++ }
        END { for (t in s) printf "   %s: %d Docker tests, %.0f s holding the Docker lock\n", t, n[t], s[t] }' \
        "$VAULT_SECRETS_TEST_TIMINGS"
}
pass 20 4 "Docker Engine 20.10 (docker-compose 1.29), Podman 4.3: _on_every_engine, _on_every_podman, no engine" \
    --skip _on_current_engines --skip _on_one_engine
pass 20 5 "Podman 5.4 (in a Debian 13 root): _on_every_podman" _on_every_podman
pass 26 4 "Docker Engine 26.1 (Compose 2.26): _on_every_engine, _on_current_engines" \
    _on_every_engine _on_current_engines
pass 28 4 "Docker Engine 28.5 (containerd 2.1 image store, Compose 2.40): every Docker tier" \
    _on_every_engine _on_current_engines _on_one_engine
if [[ -f ../shared/contract/check.py ]]; then
    echo "== contract check"
    cargo build --release --quiet
    python3 ../shared/contract/check.py --binary target/release/vault-secrets-plugin
fi

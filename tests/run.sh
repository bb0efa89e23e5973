#!/usr/bin/env bash
# The whole test suite, every tier. Run as root on Debian 12:
#   bash tests/run.sh
# 1. brings up what the tests need, installing what is missing: tests/env.sh (Docker Engine
#    20.10, OpenBao CLI, PostgreSQL, the busybox test image), tests/engines.sh (Docker Engine
#    26.1 with Compose v2 beside it, Podman, docker-registry);
# 2. unit tests (fakes behind traits), then the fuzz targets for a bounded time, then the
#    release checked (tests/release.sh);
# 3. integration tests (the plugin binary against a real OpenBao and PostgreSQL, real tmpfs) and
#    end-to-end tests (the real docker CLI and Engine 20.10, docker-compose 1.29, Podman);
# 4. the end-to-end tests that drive Docker again, on Engine 26.1 with Compose v2
#    (VAULT_SECRETS_TEST_ENGINE=26; same build);
# 5. the shared contract check (../shared/contract/check.py), when it is there.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || {
    echo "tests/run.sh: cargo not found; install a Rust toolchain (https://rustup.rs)" >&2
    exit 1
}
# shellcheck source=tests/env.sh
# took STEP: how long STEP took (the tiers' durations, for the CI log).
step_started=$SECONDS
took() { echo "-- $1: $((SECONDS - step_started)) s"; step_started=$SECONDS; }
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
echo "== integration and end-to-end tests (real OpenBao, PostgreSQL, Docker Engine 20.10, docker-compose 1.29, Podman)"
VAULT_SECRETS_TEST_ENGINE=20 cargo test --test tests -- --test-threads 2 --skip chaos::
took "integration and end-to-end tests, Engine 20.10"
# What drives Docker, again: volumes, database revoke at stop, restart, sweep, signal, which
# container a mount belongs to, leases,
# compose (v2 here), swarm, swarm secrets, the three-node swarm, managed plugin, registry
# install, 64 containers at once, the attacks from containers, the audit trail, the chaos soak
# (run on this engine only: its private dockerd is an Engine 26 one; the Engine 20 pass above
# skips it).
echo "== end-to-end tests on Docker Engine 26.1 (Compose v2)"
VAULT_SECRETS_TEST_ENGINE=26 cargo test --test tests -- --test-threads 2 \
    e2e:: engine:: containers:: compose:: secrets:: hosts:: leases:: managed:: soak::sixty_four attack:: audit:: chaos::
took "end-to-end tests, Engine 26.1"
if [[ -f ../shared/contract/check.py ]]; then
    echo "== contract check"
    cargo build --release --quiet
    python3 ../shared/contract/check.py --binary target/release/vault-secrets-plugin
fi

#!/usr/bin/env bash
# The whole test suite, every tier. Run as root on Debian 12:
#   bash tests/run.sh
# 1. brings up what the tests need (tests/env.sh: Docker Engine, OpenBao CLI, PostgreSQL,
#    the busybox test image), installing what is missing;
# 2. unit tests (fakes behind traits), then the fuzz targets for a bounded time;
# 3. integration tests: the plugin binary against a real OpenBao and PostgreSQL, real tmpfs;
# 4. end-to-end tests: the real docker CLI and engine using the plugin;
# 5. the shared contract check (../shared/contract/check.py), when it is there.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || {
    echo "tests/run.sh: cargo not found; install a Rust toolchain (https://rustup.rs)" >&2
    exit 1
}
# shellcheck source=tests/env.sh
source tests/env.sh

echo "== unit tests"
cargo test --lib --bins
echo "== fuzzing: every target, 15 s each (fuzz/run.sh installs cargo-fuzz when missing)"
bash fuzz/run.sh 15
echo "== integration and end-to-end tests (real OpenBao, PostgreSQL, Docker)"
cargo test --test tests -- --test-threads 2
if [[ -f ../shared/contract/check.py ]]; then
    echo "== contract check"
    cargo build --release --quiet
    python3 ../shared/contract/check.py --binary target/release/vault-secrets-plugin
fi

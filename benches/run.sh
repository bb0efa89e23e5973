#!/usr/bin/env bash
# The figures of SPEC.md ("Figures to reach"), each printed next to its baseline measured in the
# same run: a release build of the plugin against its own OpenBao dev server, with PostgreSQL and
# Docker from tests/env.sh. Run as root; about 35 s (plus the release build).
#   sudo bash benches/run.sh                 # every figure
#   sudo bash benches/run.sh mount memory    # only the figures whose key contains a word
# Keys: mount concurrent requests first rotation revocation docker memory burst (burst: about
# 2 min more: 64 containers on each engine, Engine 26 from tests/engines.sh for compose down).
cd "$(dirname "$0")/.." || exit 1
# shellcheck source=../tests/env.sh
source tests/env.sh || { echo "run.sh: tests/env.sh failed" >&2; exit 1; }
set -euo pipefail
start=$SECONDS
cargo bench --bench figures -- "$@"
echo "benches/run.sh: $((SECONDS - start)) s, build included"

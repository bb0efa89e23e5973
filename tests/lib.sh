# shellcheck shell=bash disable=SC2034 # (the VST_* are for the scripts that source this)
# The shell pieces the test scripts share (tests/env.sh, tests/engines.sh, tests/reset.sh,
# plugin/quickstart.sh). Sourced, never run:
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#   on_error engines.sh      # fail and the ERR trap now name engines.sh
# It defines the set-up's paths (VST_*) and functions; it changes no option and runs nothing.
# The Rust side of the same paths is tests/util/mod.rs (TestEngine).

# What the set-up makes, and where (tests/reset.sh removes it).
VST_STATE=/var/lib/vault-secrets-test # data roots, the busybox rootfs tarball
VST_RUN=/run/vault-secrets-test       # sockets, pid files
VST_OPT=/opt/vault-secrets-test       # unpacked engines, private apt lists
VST_LOGS=/var/log/vault-secrets-test  # the engines' logs
VST_IMAGE=vault-secrets-test/busybox:latest
VST_ROOTFS=$VST_STATE/busybox-rootfs.tar

# fail WHAT [HOW TO FIX]: every failure says what failed and what to do about it, then exits.
fail() {
    echo "${VST_SCRIPT:-tests}: FAILED: $1" >&2
    [[ -z ${2:-} ]] || echo "${VST_SCRIPT:-tests}: to fix: $2" >&2
    exit 1
}

# on_error SCRIPT: fail's messages name SCRIPT, and any other command that fails under set -e
# says where and what. (Run with set -E, the trap reaches functions; command substitutions, a
# subshell deeper than the caller, are left to their caller's test.)
on_error() {
    VST_SCRIPT=$1
    VST_LEVEL=$BASH_SUBSHELL
    trap 'on_error_report $? "${BASH_SOURCE[0]}" "$LINENO" "$BASH_COMMAND"' ERR
}
# on_error_report STATUS FILE LINE COMMAND: the ERR trap's message.
on_error_report() {
    ((BASH_SUBSHELL > VST_LEVEL)) && return
    echo "$VST_SCRIPT: FAILED (exit $1) at $2 line $3: $4" >&2
    echo "$VST_SCRIPT: to fix: run the command above by hand to see why; bash -x shows every step" >&2
}

# pid_alive PID: a live process; a zombie counts as gone (PID 1 here reaps orphans lazily, and
# a daemon's zombie would block its next start).
pid_alive() { [[ $(ps -o stat= -p "$1" 2>/dev/null) == [^Z]* ]]; }

# alive PIDFILE: the pid in PIDFILE is a live process.
alive() {
    local p
    p=$(cat "$1" 2>/dev/null) && pid_alive "$p"
}

# exe_of PID: the executable of a process (empty when gone).
exe_of() { readlink "/proc/$1/exe" 2>/dev/null || true; }

# stop_pid PID WHAT: SIGTERM, then wait (60 s) until it is gone.
stop_pid() {
    local pid=$1 what=$2 end=$((SECONDS + 60))
    pid_alive "$pid" || return 0
    echo "$VST_SCRIPT: stopping $what (pid $pid)"
    kill -TERM "$pid"
    while pid_alive "$pid"; do
        ((SECONDS < end)) || fail "$what (pid $pid) still runs 60 s after SIGTERM" "kill -KILL $pid"
        sleep 0.2
    done
}

# close_fds: closes every file descriptor of this (sub)shell but 0, 1 and 2. A daemon must not
# keep what its starter had open: a dockerd started by a script that held the Docker tests'
# lock (/run/vault-secrets-e2e.lock, as tests/reset.sh holds it) would hold that lock for as
# long as it runs, and every test waiting for it would wait for ever.
close_fds() {
    local fd
    for fd in /proc/"$BASHPID"/fd/*; do
        fd=${fd##*/}
        if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
}

# fds_closed COMMAND...: COMMAND with none of this shell's file descriptors but 0, 1 and 2.
fds_closed() { (close_fds && exec "$@"); }

# detached LOG COMMAND...: COMMAND in a session of its own (setsid, nohup: it outlives this
# shell), in the background with its output appended to LOG and none of this shell's other file
# descriptors; $! is its pid.
detached() {
    local log=$1
    shift
    { close_fds && exec setsid nohup "$@"; } >>"$log" 2>&1 </dev/null &
}

# start_dockerd WHAT DOCKER PIDFILE CONTAINERD_PIDFILE LOG COMMAND...: unless the engine already
# answers `DOCKER info` (DOCKER: a command or function driving its CLI), starts COMMAND (dockerd
# and its flags) detached (setsid, nohup: it outlives this shell) with its output in LOG, and
# waits (60 s) until it answers. A dockerd still starting (its PIDFILE alive) is waited for,
# not started twice; a dead one's pid files (its containerd's too) are dropped first, as dockerd
# refuses to start over them. Sets DOCKERD_STARTED to the pid it started (empty: none).
start_dockerd() {
    local what=$1 docker=$2 pidfile=$3 containerd_pidfile=$4 log=$5 pid end
    shift 5
    DOCKERD_STARTED=
    "$docker" info >/dev/null 2>&1 && return 0
    mkdir -p "$(dirname "$log")"
    if alive "$pidfile"; then
        pid=$(<"$pidfile") # still starting up
    else
        alive "$containerd_pidfile" || rm -f "$containerd_pidfile"
        rm -f "$pidfile"
        echo "$VST_SCRIPT: starting $what (log: $log)"
        detached "$log" "$@"
        pid=$!
        DOCKERD_STARTED=$pid
    fi
    end=$((SECONDS + 60))
    until "$docker" info >/dev/null 2>&1; do
        pid_alive "$pid" || { tail -n 20 "$log" >&2; fail "$what exited (its log above)" "see $log"; }
        ((SECONDS < end)) || { tail -n 20 "$log" >&2; fail "$what: docker info not ready after 60 s" "see $log"; }
        sleep 0.2
    done
}

# image_ready DOCKER WHAT: the test image in the engine that DOCKER (docker, podman, or a function
# driving one) talks to, imported from the busybox rootfs tarball when missing; then one
# container of it runs.
image_ready() {
    local docker=$1 what=$2
    [[ -s $VST_ROOTFS ]] || fail "no $VST_ROOTFS (the busybox rootfs every engine imports)" "bash tests/env.sh"
    if ! "$docker" image inspect "$VST_IMAGE" >/dev/null 2>&1; then
        echo "$VST_SCRIPT: importing $VST_IMAGE into $what"
        # From stdin: a Podman in a root of its own cannot see the tarball's path. Its progress
        # is shown only when it fails.
        local out
        out=$("$docker" import --change 'CMD ["sh"]' - "$VST_IMAGE" <"$VST_ROOTFS" 2>&1) ||
            fail "$docker import $VST_ROOTFS $VST_IMAGE ($what): $out" "$docker image rm $VST_IMAGE; rm $VST_ROOTFS; bash tests/env.sh"
    fi
    "$docker" run --rm --network none "$VST_IMAGE" id | grep -q 'uid=0' ||
        fail "$docker run --network none $VST_IMAGE ($what)" "$docker info; see the engine's log"
}

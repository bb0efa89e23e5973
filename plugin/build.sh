#!/usr/bin/env bash
# Builds vault-secrets as a managed Docker plugin, no registry needed:
#   bash plugin/build.sh DIR
#   docker plugin create vault-secrets DIR
#   docker plugin set vault-secrets config.source=/etc/vault-secrets   # holds config.toml
#   docker plugin enable vault-secrets
# (runtime.source, default /run/vault-secrets, must exist on the host, on a shared mount;
# state.source, default /var/lib/vault-secrets, must exist on the host; docker.source, default
# /var/run/docker.sock, is this dockerd's API socket: docs/engines.md "Managed plugin".)
# Writes DIR/config.json and DIR/rootfs/: the static (musl) binary, the empty directories it
# and runc mount on, and the build machine's CA bundle (system roots for an https Vault with
# a public certificate). Nothing else: no shell, no libc.
#
# Needs the musl target and a musl C compiler (ring's C and assembly parts):
#   rustup target add x86_64-unknown-linux-musl && apt-get install musl-tools
# Honours CARGO_TARGET_DIR; cargo rebuilds only what changed.
set -euo pipefail

TARGET=x86_64-unknown-linux-musl
BIN=vault-secrets-plugin
die() { echo "build.sh: $*" >&2; exit 1; }

[[ $# == 1 && -n $1 ]] || die "usage: $0 DIR (DIR receives config.json and rootfs/)"
out=$1
repo=$(cd "$(dirname "$0")/.." && pwd)

# 1. The toolchain: say exactly what is missing rather than let cc-rs fail deep in ring.
if command -v rustup >/dev/null && ! grep -qx "$TARGET" <<<"$(rustup target list --installed)"; then
    die "the Rust target $TARGET is missing: rustup target add $TARGET"
fi
# cc-rs finds x86_64-linux-musl-gcc by itself; a bare musl-gcc has to be named.
cc_var=CC_${TARGET//-/_}
if [[ -z ${!cc_var:-} ]] && ! command -v x86_64-linux-musl-gcc >/dev/null; then
    command -v musl-gcc >/dev/null || die "no musl C compiler (musl-gcc): apt-get install musl-tools"
    export "$cc_var=musl-gcc"
fi

# 2. The static binary.
target_dir=${CARGO_TARGET_DIR:-$repo/target}
[[ $target_dir == /* ]] || target_dir=$repo/$target_dir # cargo runs in $repo
(cd "$repo" && cargo build --release --target "$TARGET" --bin "$BIN") || die "cargo build failed"
exe=$target_dir/$TARGET/release/$BIN
[[ -x $exe ]] || die "cargo built no $exe"
# Static: no program interpreter, no shared library needed (musl gives a static-pie).
if readelf -lW "$exe" | grep -q 'program interpreter' || readelf -dW "$exe" | grep -q '(NEEDED)'; then
    die "$exe is not statically linked"
fi

# 3. rootfs/, assembled beside the old one and swapped in whole.
mkdir -p "$out"
rm -rf "$out/rootfs.new"
root=$out/rootfs.new
install -D -m 0755 "$exe" "$root/$BIN"
# Where the plugin works (the defaults of every [plugin] path) and where runc mounts:
#   etc/vault-secrets       the settable `config` bind mount (config.toml, token or AppRole files)
#   run/docker/plugins      the plugin socket, bound by dockerd to its own plugin directory
#   run/vault-secrets       the settable `runtime` bind mount (a host directory): admin.sock,
#                           private/ (the tmpfs of tokens and mount records) and files/ (one
#                           tmpfs per container mount), which all outlive a disable
#   run/vault-secrets-mounts  the propagatedMount: the read-only binds of files/ that dockerd
#                           finds (VAULT_SECRETS_MOUNTS_DIR; outside run/vault-secrets, which
#                           runc mounts after it and would hide it)
#   var/run/docker.sock     the settable `docker` bind mount: the Docker Engine API socket
#   var/lib/vault-secrets   the settable `state` bind mount (a host directory): the volume
#                           definitions (options only), which must outlive the rootfs that
#                           `docker plugin upgrade` replaces
install -d -m 0755 "$root"/{etc/vault-secrets,etc/ssl/certs,run/docker/plugins,var/lib,var/run,proc,sys,dev}
install -d -m 0700 "$root"/run/vault-secrets{,-mounts} "$root"/var/lib/vault-secrets
install -d -m 1777 "$root/tmp"
: >"$root/var/run/docker.sock" # a file to bind the socket onto
# dockerd binds the host's /etc/hosts and /etc/resolv.conf here (host network): the binary's
# resolver reads them to find Vault by name.
: >"$root/etc/hosts"
: >"$root/etc/resolv.conf"
ca=/etc/ssl/certs/ca-certificates.crt
if [[ -s $ca ]]; then
    install -m 0644 "$ca" "$root$ca"
else
    echo "build.sh: no $ca on this machine: only [vault] ca_cert will be trusted" >&2
fi
rm -rf "$out/rootfs"
mv "$root" "$out/rootfs"

# 4. config.json (https://docs.docker.com/engine/extend/config/).
cat >"$out/config.json" <<'JSON'
{
  "description": "Secrets from HashiCorp Vault or OpenBao as files on a per-container tmpfs, revoked when the container stops",
  "entrypoint": ["/vault-secrets-plugin", "serve"],
  "workdir": "/",
  "interface": {
    "socket": "vault-secrets.sock",
    "types": ["docker.volumedriver/1.0", "docker.secretprovider/1.0"]
  },
  "network": { "type": "host" },
  "pidhost": true,
  "linux": { "capabilities": ["CAP_SYS_ADMIN", "CAP_SYS_PTRACE"] },
  "propagatedMount": "/run/vault-secrets-mounts",
  "mounts": [
    {
      "name": "config",
      "description": "host directory holding config.toml and the identity's files (token, or role-id and secret-id), read-only",
      "settable": ["source"],
      "source": "/etc/vault-secrets",
      "destination": "/etc/vault-secrets",
      "type": "bind",
      "options": ["rbind", "ro"]
    },
    {
      "name": "runtime",
      "description": "host directory (on a shared mount) for admin.sock and the tmpfs mounts of tokens and files, which outlive a disable",
      "settable": ["source"],
      "source": "/run/vault-secrets",
      "destination": "/run/vault-secrets",
      "type": "bind",
      "options": ["rbind", "rshared"]
    },
    {
      "name": "state",
      "description": "host directory for the volume definitions (the options given at create, never a secret or a token): they outlive the plugin's rootfs, which docker plugin upgrade replaces",
      "settable": ["source"],
      "source": "/var/lib/vault-secrets",
      "destination": "/var/lib/vault-secrets",
      "type": "bind",
      "options": ["rbind"]
    },
    {
      "name": "docker",
      "description": "the Docker Engine API socket: which containers hold which mount (signal, and the release of mounts whose containers are gone)",
      "settable": ["source"],
      "source": "/var/run/docker.sock",
      "destination": "/var/run/docker.sock",
      "type": "bind",
      "options": ["rbind"]
    }
  ],
  "env": [
    {
      "name": "VAULT_SECRETS_LOG",
      "description": "log level: info, debug, or per module (vault_secrets=debug)",
      "settable": ["value"],
      "value": "info"
    },
    {
      "name": "VAULT_SECRETS_SWEEP_INTERVAL",
      "description": "seconds between two looks for mounts whose containers are gone",
      "settable": ["value"],
      "value": "60"
    },
    {
      "name": "VAULT_SECRETS_MOUNTS_DIR",
      "description": "the propagatedMount, where dockerd finds the mounts",
      "value": "/run/vault-secrets-mounts"
    }
  ]
}
JSON
echo "build.sh: $out/config.json and $out/rootfs/ ($(du -sh "$out/rootfs" | cut -f1)); next:"
echo "  docker plugin create vault-secrets $out"

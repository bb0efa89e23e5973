#!/usr/bin/env bash
# The release, checked as a user and a packager would, as root on Debian 12:
#   bash tests/release.sh [DIR]
# 1. `bash plugin/release.sh DIR` (default: a temporary directory), then SHA256SUMS, and the
#    three archives' contents: one static binary in all three, saying this version and commit;
# 2. lintian on the .deb: its tags are printed, an error fails;
# 3. piuparts-style, in a clean Debian 12 root (mmdebstrap, minbase and systemd, which the unit
#    needs to be verified; kept as a tarball in /var/cache/vault-secrets-test for a week): install (nothing enabled or started, the
#    configuration valid to the binary), `systemd-analyze verify` of the installed unit,
#    remove (the conffile stays), purge (what the plugin made goes too): nothing left that was
#    not there before;
# 4. `promtool test rules` on the alerting rules (promtool from Debian's prometheus package,
#    unpacked into /opt/vault-secrets-test/prometheus: no Prometheus server installed);
# 5. `docker plugin create` from the managed plugin's tarball, and `docker plugin install` of the
#    plugin release.sh pushed to a registry (Debian's docker-registry on loopback) with --registry
#    (the engine of tests/env.sh).
# Installs what it needs (lintian, mmdebstrap), idempotently. Ends only what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
fail() { echo "tests/release.sh: FAILED: $*" >&2; exit 1; }
step() { printf '== %s\n' "$*"; }
[[ $EUID == 0 ]] || fail "run as root (chroot, mounts): bash tests/release.sh"
started=$SECONDS
took() { echo "-- $1: $((SECONDS - started)) s"; started=$SECONDS; }

missing=()
for pair in lintian:lintian mmdebstrap:mmdebstrap systemd-analyze:systemd unshare:util-linux; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
if ((${#missing[@]})); then
    step "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null ||
        fail "apt-get install ${missing[*]}"
fi

work=$(mktemp -d /var/tmp/vault-secrets-release.XXXXXX)
created=()
registry_pid=
cleanup() {
    for p in "${created[@]}"; do docker plugin rm -f "$p" >/dev/null 2>&1 || true; done
    # (wait gives the registry's own status, 143 after the SIGTERM: not this script's)
    [[ -z $registry_pid ]] || { kill "$registry_pid" 2>/dev/null; wait "$registry_pid" 2>/dev/null || true; }
    # The chroot's /proc lived in unshare's mount namespace: nothing is mounted in $work.
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT
out=${1:-$work/out}

# A registry to push to: Debian's docker-registry (tests/engines.sh unpacks it) on a free
# loopback port (dockerd allows plain HTTP to 127.0.0.0/8), ended by its pid.
registry_bin=/opt/vault-secrets-test/registry/usr/bin/docker-registry
[[ -x $registry_bin ]] || fail "no $registry_bin: run tests/engines.sh first"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
    "$work/registry" "$port" >"$work/registry.yml"
"$registry_bin" serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$port/v2/" >/dev/null || fail "docker-registry did not start: $(cat "$work/registry.log")"
registry=127.0.0.1:$port

# 1. The release command, and what it wrote.
# A checkout with changes (a test run's, a development tree) makes a test build.
release_args=()
if [[ -n $(git status --porcelain 2>/dev/null) ]]; then
    echo "tests/release.sh: the checkout has changes: a test build (--allow-dirty)"
    release_args=(--allow-dirty)
fi
step "bash plugin/release.sh ${release_args[*]} --registry $registry $out"
bash plugin/release.sh "${release_args[@]}" --registry "$registry" "$out"
version=$(cargo metadata --no-deps --format-version 1 --locked |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["packages"][0]["version"])')
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || true)
deb=$out/vault-secrets_${version}_amd64.deb
plain=vault-secrets-plugin-$version-x86_64-linux-musl
managed=vault-secrets-managed-plugin-$version
(cd "$out" && sha256sum --check --strict SHA256SUMS) || fail "SHA256SUMS does not match"
[[ $(wc -l <"$out/SHA256SUMS") == 3 ]] || fail "SHA256SUMS should list 3 files"
mkdir -p "$work/x/deb"
tar -C "$work/x" -xzf "$out/$plain.tar.gz"
tar -C "$work/x" -xzf "$out/$managed.tar.gz"
dpkg-deb -x "$deb" "$work/x/deb"
for f in vault-secrets-plugin README.md LICENSE CHANGELOG.md vault-secrets.service config.toml \
    vault-secrets-plugin.1 THIRD-PARTY.txt ops/vault-secrets.rules.yml ops/vault-secrets.dashboard.json; do
    [[ -s $work/x/$plain/$f ]] || fail "$plain.tar.gz has no $f"
done
grep -qx 'ExecStart=/usr/local/bin/vault-secrets-plugin serve --config /etc/vault-secrets/config.toml' \
    "$work/x/$plain/vault-secrets.service" || fail "the tarball's unit does not start /usr/local/bin/vault-secrets-plugin"
[[ -s $work/x/$managed/config.json && -x $work/x/$managed/rootfs/vault-secrets-plugin ]] ||
    fail "$managed.tar.gz has no config.json or rootfs/vault-secrets-plugin"
sums=$(sha256sum "$work/x/$plain/vault-secrets-plugin" "$work/x/$managed/rootfs/vault-secrets-plugin" \
    "$work/x/deb/usr/bin/vault-secrets-plugin" | cut -d' ' -f1 | sort -u | wc -l)
[[ $sums == 1 ]] || fail "the three artifacts do not hold the same binary"
exe=$work/x/$plain/vault-secrets-plugin
if readelf -lW "$exe" | grep -q 'program interpreter' || readelf -dW "$exe" | grep -q '(NEEDED)'; then
    fail "the binary is not statically linked"
fi
said=$("$exe" --version)
[[ $said == "vault-secrets-plugin $version (commit $commit)" || -z $commit ]] ||
    fail "--version says '$said', expected version $version and commit $commit"
echo "ok: $said; sizes:"
(cd "$out" && du -h --apparent-size -- *.deb *.tar.gz | sed 's/^/  /')
took "release command and contents"

# 2. lintian.
step "lintian $(basename "$deb")"
lintian --display-info --fail-on error "$deb" || fail "lintian reports an error"
echo "ok: lintian reports no error"
took "lintian"

# 3. A clean Debian 12 root.
cache=/var/cache/vault-secrets-test
base=$cache/bookworm-minbase-systemd.tar
if [[ ! -f $base || ! -s $base ]] || [[ -n $(find "$base" -maxdepth 0 -mtime +7) ]]; then
    step "mmdebstrap --variant=minbase --include=systemd bookworm (cached in $base)"
    mkdir -p "$cache"
    # (the name's .tar is what makes mmdebstrap write a tarball)
    mmdebstrap --variant=minbase --include=systemd --quiet bookworm "$base.new.tar" \
        http://deb.debian.org/debian ||
        fail "mmdebstrap"
    mv "$base.new.tar" "$base"
fi
root=$work/root
mkdir -p "$root"
tar -C "$root" -xf "$base"
# in_root CMD…: CMD in the root, with its own /proc (in a mount namespace of its own, gone
# when it ends: nothing stays mounted) and no network (loopback only, nobody listening).
in_root() { unshare --mount --net --fork --mount-proc="$root/proc" chroot "$root" "$@"; }
# snapshot: every path of the root with its type and mode, but what dpkg and apt keep about
# themselves and what is never packaged state.
snapshot() {
    (cd "$root" && find . -xdev \( -path ./proc -o -path ./sys -o -path ./dev -o -path ./tmp \
        -o -path ./var/lib/dpkg -o -path ./var/log/dpkg.log -o -path ./var/log/apt \
        -o -path ./var/cache/debconf -o -path ./var/cache/ldconfig \) -prune -o -printf '%y %m %p\n' | sort)
}
snapshot >"$work/before"
cp "$deb" "$root/tmp/"
step "dpkg -i in a clean Debian 12 root"
in_root dpkg -i "/tmp/$(basename "$deb")" || fail "dpkg -i"
in_root dpkg-query -W -f='${Status} ${Version}\n' vault-secrets | grep -qx "install ok installed $version" ||
    fail "the package is not installed"
for f in /usr/bin/vault-secrets-plugin /lib/systemd/system/vault-secrets.service /etc/vault-secrets/config.toml \
    /usr/share/man/man1/vault-secrets-plugin.1.gz /usr/share/doc/vault-secrets/copyright \
    /usr/share/vault-secrets/prometheus/vault-secrets.rules.yml /usr/share/vault-secrets/grafana/vault-secrets.dashboard.json; do
    [[ -e $root$f ]] || fail "the package installed no $f"
done
[[ $(stat -c %a "$root/etc/vault-secrets") == 700 ]] || fail "/etc/vault-secrets is not mode 0700"
grep -qx 'ExecStart=/usr/bin/vault-secrets-plugin serve --config /etc/vault-secrets/config.toml' \
    "$root/lib/systemd/system/vault-secrets.service" || fail "the unit does not start /usr/bin/vault-secrets-plugin"
in_root dpkg-query -W -f='${Conffiles}\n' vault-secrets | grep -q '/etc/vault-secrets/config.toml' ||
    fail "/etc/vault-secrets/config.toml is not a conffile"
# Nothing configured: nothing enabled, nothing started.
if find "$root/etc/systemd/system" -name 'vault-secrets*' 2>/dev/null | grep -q .; then
    fail "installing enabled the unit: $(find "$root/etc/systemd/system" -name 'vault-secrets*')"
fi
[[ ! -e $root/run/vault-secrets && ! -e $root/var/lib/vault-secrets ]] || fail "installing ran the plugin"
[[ $(in_root vault-secrets-plugin --version) == "vault-secrets-plugin $version"* ]] || fail "the installed binary does not run"
# The shipped configuration is valid to the shipped binary: `check` gets as far as Vault (exit 1,
# no network here), not a configuration error (78).
rc=0
msg=$(in_root vault-secrets-plugin check 2>&1) || rc=$?
[[ $rc == 1 && $msg == *"vault health"* ]] || fail "check on the shipped configuration: exit $rc: $msg"
echo "ok: installed; nothing enabled or started; the configuration is valid (check: exit 1, ${msg:0:60}…)"

step "dpkg -i again (an upgrade): the operator's configuration is kept"
echo '# changed by the operator' >>"$root/etc/vault-secrets/config.toml"
in_root dpkg -i --force-confold "/tmp/$(basename "$deb")" >/dev/null || fail "dpkg -i over the installed package"
grep -qx '# changed by the operator' "$root/etc/vault-secrets/config.toml" || fail "the upgrade replaced the changed conffile"
echo "ok: upgraded in place; the changed configuration kept"

step "systemd-analyze verify vault-secrets.service"
verify=$(systemd-analyze verify --root="$root" --man=no /lib/systemd/system/vault-secrets.service 2>&1) ||
    fail "systemd-analyze verify: $verify"
[[ -z $verify ]] || fail "systemd-analyze verify says: $verify"
echo "ok: systemd-analyze verify is silent"

step "dpkg -r, then dpkg -P (after the plugin made its state, its log and its runtime directory)"
in_root dpkg -r vault-secrets || fail "dpkg -r"
[[ ! -e $root/usr/bin/vault-secrets-plugin && ! -e $root/lib/systemd/system/vault-secrets.service ]] ||
    fail "dpkg -r left the binary or the unit"
[[ -s $root/etc/vault-secrets/config.toml ]] || fail "dpkg -r removed the conffile"
# What a plugin that ran leaves (files only: nothing is mounted in this root).
install -d -m 0700 "$root"/var/lib/vault-secrets/volumes "$root"/var/log/vault-secrets "$root"/run/vault-secrets/private
echo '{"version":1,"name":"v","options":{},"created_at":"x"}' >"$root/var/lib/vault-secrets/volumes/v.json"
echo '{}' >"$root/var/log/vault-secrets/audit.log"
: >"$root/run/vault-secrets/lock"
in_root dpkg -P vault-secrets || fail "dpkg -P"
snapshot >"$work/after"
if ! diff -u "$work/before" "$work/after"; then
    fail "the purge left the root different from before the install (above)"
fi
echo "ok: installed, removed, purged: the root is as it was"
took "install, verify, remove, purge in a clean root"

# 4. The alerting rules.
prometheus=/opt/vault-secrets-test/prometheus
promtool=$prometheus/usr/bin/promtool
if [[ ! -x $promtool ]]; then
    step "promtool: Debian's prometheus package, unpacked into $prometheus"
    rm -rf "$work/apt" && mkdir -p "$work/apt" "$prometheus"
    (cd "$work/apt" && apt-get -o APT::Sandbox::User=root download prometheus >/dev/null) ||
        fail "apt-get download prometheus"
    dpkg-deb -x "$work"/apt/prometheus_*.deb "$prometheus"
fi
step "promtool test rules"
(cd plugin/ops && "$promtool" check rules vault-secrets.rules.yml && "$promtool" test rules vault-secrets.rules.test.yml) ||
    fail "promtool"
took "promtool"

# 5. The managed plugin: its tarball, as `docker plugin create` takes it; what was pushed, as
# `docker plugin install` takes it (left disabled: enabling it is tests/managed.rs's).
expected='["/vault-secrets-plugin","serve"] ["docker.volumedriver/1.0","docker.secretprovider/1.0"]'
step "docker plugin create from $managed.tar.gz, docker plugin install $registry/vault-secrets:$version"
created+=("vault-secrets-release-test-$$" "vault-secrets-release-pushed-$$")
docker plugin create "${created[0]}" "$work/x/$managed" >/dev/null || fail "docker plugin create"
docker plugin install --disable --grant-all-permissions --alias "${created[1]}" \
    "$registry/vault-secrets:$version" >/dev/null || fail "docker plugin install of what release.sh pushed"
for p in "${created[@]}"; do
    config=$(docker plugin inspect --format '{{json .Config.Entrypoint}} {{json .Config.Interface.Types}}' "$p")
    [[ $config == "$expected" ]] || fail "$p's config: $config"
done
[[ $(docker plugin inspect --format '{{.PluginReference}}' "${created[1]}") == "$registry/vault-secrets:$version" ]] ||
    fail "the installed plugin's reference"
for p in "${created[@]}"; do docker plugin rm "$p" >/dev/null; done
created=()
echo "ok: docker plugin create takes the tarball, docker plugin install what was pushed ($expected)"
took "docker plugin create and install"
echo "tests/release.sh: all passed"

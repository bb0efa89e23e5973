#!/usr/bin/env bash
# The release, from a clean checkout:
#   bash plugin/release.sh [--registry REGISTRY] [--allow-dirty] DIR
# writes into DIR, VERSION being Cargo.toml's:
#   vault-secrets_VERSION_amd64.deb                     the Debian package (dpkg-deb)
#   vault-secrets-plugin-VERSION-x86_64-linux-musl.tar.gz  the static binary, README, LICENSE,
#                                                       CHANGELOG, the systemd unit, the example
#                                                       configuration, the man page, the ops kit
#   vault-secrets-managed-plugin-VERSION.tar.gz         the managed plugin (config.json and
#                                                       rootfs/) for `docker plugin create`
#   SHA256SUMS                                          of the three
# With --registry, the managed plugin is also pushed as REGISTRY/vault-secrets:VERSION (the
# docker CLI and its dockerd; nothing is left installed there).
#
# One static (musl) binary goes into all three, built by plugin/build.sh (in target/musl, or
# CARGO_TARGET_DIR) with the commit it comes from (`vault-secrets-plugin --version`). The
# archives are reproducible: owners, modes and times are fixed (SOURCE_DATE_EPOCH: the
# commit's time). Needs what plugin/build.sh needs, dpkg-deb, python3, gzip; runs as any user
# who can build (pushing needs one who may use docker). tests/release.sh checks the result.
set -euo pipefail

die() { echo "release.sh: $*" >&2; exit 1; }
usage="usage: $0 [--registry REGISTRY] [--allow-dirty] DIR"
registry=
allow_dirty=
out=
while (($#)); do
    case $1 in
        --registry) [[ $# -ge 2 && -n $2 ]] || die "$usage"; registry=${2%/}; shift 2 ;;
        --allow-dirty) allow_dirty=1; shift ;;
        -*) die "unknown option $1; $usage" ;;
        *) [[ -z $out ]] || die "$usage"; out=$1; shift ;;
    esac
done
[[ -n $out ]] || die "$usage"
repo=$(cd "$(dirname "$0")/.." && pwd -P)
for tool in dpkg-deb python3 gzip sha256sum strip; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install dpkg-dev python3 gzip coreutils binutils)"
done

# 1. What is released: the version, the commit, the time.
version=$(cd "$repo" && cargo metadata --no-deps --format-version 1 --locked |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["packages"][0]["version"])')
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "Cargo.toml's version $version is not MAJOR.MINOR.PATCH"
if git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1 &&
    [[ $(git -C "$repo" rev-parse --show-toplevel) == "$repo" ]]; then
    if [[ -n $(git -C "$repo" status --porcelain) && -z $allow_dirty ]]; then
        die "the checkout has changes (git status): a release is built from a commit; commit them, or pass --allow-dirty for a test build"
    fi
    export VAULT_SECRETS_COMMIT=${VAULT_SECRETS_COMMIT:-$(git -C "$repo" rev-parse --short=12 HEAD)}
    export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct)}
else
    # A source tarball: VAULT_SECRETS_COMMIT may say which commit it is.
    export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(stat -c %Y "$repo/Cargo.toml")}
fi
echo "release.sh: vault-secrets $version${VAULT_SECRETS_COMMIT:+ (commit $VAULT_SECRETS_COMMIT)}"

mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# 2. The static binary and the managed plugin (config.json + rootfs/), stripped of symbols.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target/musl}
managed=vault-secrets-managed-plugin-$version
bash "$repo/plugin/build.sh" "$work/$managed" >/dev/null || die "plugin/build.sh failed"
exe=$work/$managed/rootfs/vault-secrets-plugin
# As dh_strip does: the symbols, and the sections nothing reads.
strip --strip-all --remove-section=.comment --remove-section=.note "$exe"
said=$("$exe" --version) || die "the built binary does not run"
[[ $said == "vault-secrets-plugin $version"* ]] || die "the binary says '$said', not version $version"
[[ -z ${VAULT_SECRETS_COMMIT:-} || $said == *"commit $VAULT_SECRETS_COMMIT"* ]] ||
    die "the binary says '$said', not commit $VAULT_SECRETS_COMMIT"

# tarball NAME DIR: $work/DIR as the archive $out/NAME (DIR/ inside), reproducibly: owned by
# root, sorted, dated.
tarball() {
    tar -C "$work" --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 \
        --numeric-owner --format=gnu -cf - "$2" | gzip -9n >"$out/$1"
}
tarball "$managed.tar.gz" "$managed"

# The crates linked into the binary and their licences (for the copyright notices).
third_party() {
    (cd "$repo" && cargo metadata --format-version 1 --locked \
        --filter-platform x86_64-unknown-linux-musl) | python3 -c '
import json, sys
m = json.load(sys.stdin)
packages = {p["id"]: p for p in m["packages"]}
nodes = {n["id"]: n for n in m["resolve"]["nodes"]}
root, seen, todo = m["resolve"]["root"], set(), [m["resolve"]["root"]]
while todo:
    for dep in nodes[todo.pop()]["deps"]:
        p = packages[dep["pkg"]]
        linked = any(k["kind"] is None for k in dep["dep_kinds"])
        macro = any("proc-macro" in t["kind"] for t in p["targets"])
        if linked and not macro and dep["pkg"] not in seen:
            seen.add(dep["pkg"])
            todo.append(dep["pkg"])
print("vault-secrets-plugin is one static binary: the Rust crates below (from crates.io), the")
print("Rust standard library (MIT OR Apache-2.0) and musl libc (MIT) are linked into it.\n")
for p in sorted((packages[i] for i in seen), key=lambda p: (p["name"], p["version"])):
    print("%s %s: %s" % (p["name"], p["version"], p["license"] or "see its repository"))
'
}

# 3. The tarball: the binary and what a host install needs beside it.
plain=vault-secrets-plugin-$version-x86_64-linux-musl
mkdir -p "$work/$plain/ops"
install -m 0755 "$exe" "$work/$plain/vault-secrets-plugin"
install -m 0644 "$repo"/{README.md,LICENSE,CHANGELOG.md} "$repo/plugin/vault-secrets-plugin.1" \
    "$repo/config/config.toml" "$work/$plain/"
if [[ -d $repo/docs ]]; then
    mkdir -p "$work/$plain/docs" && install -m 0644 "$repo"/docs/*.md "$work/$plain/docs/"
fi
sed 's|^ExecStart=/usr/bin/|ExecStart=/usr/local/bin/|' "$repo/plugin/vault-secrets.service" \
    >"$work/$plain/vault-secrets.service"
grep -q '^ExecStart=/usr/local/bin/vault-secrets-plugin ' "$work/$plain/vault-secrets.service" ||
    die "the unit's ExecStart is not /usr/bin/vault-secrets-plugin"
install -m 0644 "$repo"/plugin/ops/vault-secrets.{rules.yml,rules.test.yml,dashboard.json} \
    "$work/$plain/ops/"
third_party >"$work/$plain/THIRD-PARTY.txt"
tarball "$plain.tar.gz" "$plain"

# 4. The Debian package, from a control directory (dpkg-deb).
pkg=$work/deb
doc=$pkg/usr/share/doc/vault-secrets
install -D -m 0755 "$exe" "$pkg/usr/bin/vault-secrets-plugin"
install -D -m 0644 "$repo/plugin/vault-secrets.service" "$pkg/lib/systemd/system/vault-secrets.service"
# The configuration directory holds the identity's files too (token, secret_id, key): 0700.
install -d -m 0700 "$pkg/etc/vault-secrets"
install -m 0644 "$repo/config/config.toml" "$pkg/etc/vault-secrets/config.toml"
install -D -m 0644 "$repo/plugin/vault-secrets-plugin.1" "$pkg/usr/share/man/man1/vault-secrets-plugin.1"
gzip -9n "$pkg/usr/share/man/man1/vault-secrets-plugin.1"
install -D -m 0644 "$repo/plugin/ops/vault-secrets.rules.yml" \
    "$pkg/usr/share/vault-secrets/prometheus/vault-secrets.rules.yml"
install -D -m 0644 "$repo/plugin/ops/vault-secrets.dashboard.json" \
    "$pkg/usr/share/vault-secrets/grafana/vault-secrets.dashboard.json"
install -d -m 0755 "$doc/examples"
install -m 0644 "$repo"/config/{config.toml,minimal.toml,compose.yaml} "$doc/examples/"
install -m 0644 "$repo/README.md" "$doc/README.md"
if [[ -d $repo/docs ]]; then
    install -d -m 0755 "$doc/docs" && install -m 0644 "$repo"/docs/*.md "$doc/docs/"
fi
install -m 0644 "$repo/CHANGELOG.md" "$doc/NEWS.md"
third_party >"$doc/THIRD-PARTY.txt"
maintainer="vault-secrets maintainers <maintainers@users.noreply.r-seed-368fee7c.example>"
date_rfc2822=$(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH")
cat >"$doc/changelog" <<EOF
vault-secrets ($version) stable; urgency=medium

  * Release $version: see NEWS.md.gz (the project's CHANGELOG.md) for what changed.

 -- $maintainer  $date_rfc2822
EOF
year=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y)
cat >"$doc/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: vault-secrets
Comment: vault-secrets-plugin is one statically linked binary: THIRD-PARTY.txt beside this file
 lists the Rust crates linked into it, each with its licence.

Files: *
Copyright: $year vault-secrets contributors
License: Apache-2.0

License: Apache-2.0
 On Debian systems, the full text of the Apache License 2.0 can be found in
 /usr/share/common-licenses/Apache-2.0.
EOF
find "$doc" -type f \( -name '*.md' -o -name changelog -o -name '*.txt' \) -exec gzip -9n {} +
install -d -m 0755 "$pkg/DEBIAN"
echo /etc/vault-secrets/config.toml >"$pkg/DEBIAN/conffiles"
install -m 0755 "$repo"/plugin/debian/{postinst,prerm,postrm} "$pkg/DEBIAN/"
installed_size=$(du -sk --exclude=DEBIAN "$pkg" | cut -f1)
cat >"$pkg/DEBIAN/control" <<EOF
Package: vault-secrets
Version: $version
Architecture: amd64
Maintainer: $maintainer
Installed-Size: $installed_size
Section: admin
Priority: optional
Suggests: docker.io | docker-ce | podman, prometheus
Description: Docker volume plugin for secrets from HashiCorp Vault or OpenBao
 vault-secrets puts a container's secrets from HashiCorp Vault or OpenBao onto
 a fresh in-memory tmpfs when the container starts, as files it can only read.
 Every container mount gets a child token of its own; leases are renewed and
 the files rewritten when secrets change while the container runs, and the
 token is revoked, with every lease it created, the moment it stops.
 .
 The package installs the plugin (/usr/bin/vault-secrets-plugin), its systemd
 unit (disabled until the identity in /etc/vault-secrets/config.toml is set
 up), a man page, Prometheus alerting rules and a Grafana dashboard.
EOF
(cd "$pkg" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z |
    xargs -0 md5sum) >"$pkg/DEBIAN/md5sums"
chmod 0644 "$pkg/DEBIAN/md5sums" "$pkg/DEBIAN/control" "$pkg/DEBIAN/conffiles"
find "$pkg" -newermt "@$SOURCE_DATE_EPOCH" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
deb=vault-secrets_${version}_amd64.deb
dpkg-deb --root-owner-group -Zxz --build "$pkg" "$out/$deb" >/dev/null

# 5. The checksums, and the registry.
(cd "$out" && sha256sum "$deb" "$plain.tar.gz" "$managed.tar.gz" >SHA256SUMS)
if [[ -n $registry ]]; then
    reference=$registry/vault-secrets:$version
    command -v docker >/dev/null || die "--registry needs the docker CLI"
    if docker plugin inspect "$reference" >/dev/null 2>&1; then
        die "a plugin $reference is installed on this dockerd already: remove it first (docker plugin rm $reference), it is not this script's to remove"
    fi
    docker plugin create "$reference" "$work/$managed" >/dev/null || die "docker plugin create $reference failed"
    pushed=0
    docker plugin push "$reference" && pushed=1
    docker plugin rm "$reference" >/dev/null || echo "release.sh: could not remove $reference from this dockerd" >&2
    ((pushed)) || die "docker plugin push $reference failed"
    echo "release.sh: pushed $reference"
fi
echo "release.sh: in $out:"
(cd "$out" && for f in "$deb" "$plain.tar.gz" "$managed.tar.gz" SHA256SUMS; do
    printf '  %-58s %8s\n' "$f" "$(du -h --apparent-size "$f" | cut -f1)"
done)

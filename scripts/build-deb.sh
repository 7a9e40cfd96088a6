#!/usr/bin/env bash
# Builds the pgbaton Debian package from a release binary: target/debian/pgbaton_<version>_<arch>.deb
#   /usr/bin/pgbaton
#   /lib/systemd/system/pgbaton.service, pgbaton-router.service (Type=notify, watchdog, journal)
#   /etc/pgbaton/pgbaton.yml, router.yml (conffiles: an upgrade keeps the operator's edits)
#   /usr/share/doc/pgbaton/ (README, CONFIGURATION, ARCHITECTURE, DEPLOYMENT when present)
# Usage: scripts/build-deb.sh [--binary PATH] [--out DIR] [--version V] [--compression xz|gzip|none]
# Needs dpkg-deb (Debian's dpkg). `make deb` builds the release binary first.
set -euo pipefail
cd "$(dirname "$0")/.."
binary=target/release/pgbaton
out=target/debian
version=
compression=xz
while (($#)); do
    case "$1" in
        --binary) binary=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --version) version=$2; shift 2 ;;
        --compression) compression=$2; shift 2 ;;
        *) echo "usage: $0 [--binary PATH] [--out DIR] [--version V] [--compression xz|gzip|none]" >&2; exit 2 ;;
    esac
done
[ -x "$binary" ] || { echo "error: $binary is not an executable: build it with cargo build --release -p pgbaton" >&2; exit 1; }
command -v dpkg-deb >/dev/null || { echo "error: dpkg-deb not found: apt-get install dpkg" >&2; exit 1; }
version=${version:-$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)}
[ -n "$version" ] || { echo "error: no version in Cargo.toml [workspace.package]" >&2; exit 1; }
arch=$(dpkg --print-architecture)
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
chmod 0755 "$root"
install -D -m 0755 "$binary" "$root/usr/bin/pgbaton"
install -D -m 0644 packaging/systemd/pgbaton.service "$root/lib/systemd/system/pgbaton.service"
install -D -m 0644 packaging/systemd/pgbaton-router.service "$root/lib/systemd/system/pgbaton-router.service"
install -D -m 0640 packaging/etc/pgbaton.yml "$root/etc/pgbaton/pgbaton.yml"
install -D -m 0640 packaging/etc/router.yml "$root/etc/pgbaton/router.yml"
for doc in README.md docs/CONFIGURATION.md docs/ARCHITECTURE.md docs/DEPLOYMENT.md; do
    [ -f "$doc" ] && install -D -m 0644 "$doc" "$root/usr/share/doc/pgbaton/$(basename "$doc")"
done
mkdir -p "$root/DEBIAN"
cat > "$root/DEBIAN/control" <<CONTROL
Package: pgbaton
Version: $version
Architecture: $arch
Maintainer: pgbaton maintainers <pgbaton@localhost>
Depends: postgresql-15, postgresql-client-15, libc6
Recommends: etcd-client
Section: database
Priority: optional
Installed-Size: $(du -k -s "$root" | cut -f1)
Description: PostgreSQL high availability in one binary
 A per-node agent (etcd leases, bootstrap, clones, failover, switchover, rejoin), a router
 (writes to the leader, lag-aware reads), and a CLI and REST API compatible with Patroni's.
CONTROL
printf '%s\n' /etc/pgbaton/pgbaton.yml /etc/pgbaton/router.yml > "$root/DEBIAN/conffiles"
cat > "$root/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
# Installs or upgrades: configuration and data directories are never touched here.
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
POSTINST
cat > "$root/DEBIAN/prerm" <<'PRERM'
#!/bin/sh
# Removal stops the services; an upgrade leaves them running (the new binary takes over at
# the next restart, which the operator chooses: a leader restarting is a failover).
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    systemctl stop pgbaton-router.service pgbaton.service >/dev/null 2>&1 || true
fi
exit 0
PRERM
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm"
mkdir -p "$out"
deb="$out/pgbaton_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Z"$compression" --build "$root" "$deb" >/dev/null
echo "$deb"

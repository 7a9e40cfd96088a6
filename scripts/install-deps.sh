#!/usr/bin/env bash
# Installs what pgbaton and its tests need on Debian 12: PostgreSQL 15 server binaries, etcd
# 3.4, protoc and the well-known .proto files it includes (etcd-client's build script needs
# both: protobuf-compiler alone, without its Recommends, lacks google/protobuf/*.proto), psql
# and pgbench; nftables and iproute2 for the chaos suite's network namespaces; Patroni and
# HAProxy for the side-by-side benchmark and its test; gcc with libc6-dev (the linker cargo
# calls: gcc alone, without its Recommends, cannot link) and ca-certificates for cargo's downloads;
# systemd for `systemd-analyze verify` of the package's units (nothing is started); chromium
# (headless) and a font for the router status page's browser test; curl for the deployment
# guide's test (docs/DEPLOYMENT.md); pgbackrest for the WAL archive, backup and replica-method tests.
# The router's driver tests: python3-psycopg2, libpostgresql-jdbc-java with a Java runtime,
# node and npm (Debian's nodejs/npm unless a node is already on PATH; the tests fetch npm's
# `pg` and `pg-copy-streams` themselves into the build's temp dir).
# Idempotent and quiet; fails loudly. scripts/fresh-debian-check.sh proves it on a minimal
# Debian 12 root.
set -euo pipefail
packages=(postgresql-15 postgresql-client-15 postgresql-contrib etcd-server etcd-client
          protobuf-compiler libprotobuf-dev make gcc libc6-dev ca-certificates
          nftables iproute2 patroni haproxy openssl systemd chromium fonts-dejavu-core curl
          pgbackrest)
packages+=(python3-psycopg2 libpostgresql-jdbc-java default-jre-headless)
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    packages+=(nodejs npm)
fi
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    sudo_cmd=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || {
            echo "error: not root and no sudo: run as root: apt-get install -y ${missing[*]}" >&2
            exit 1
        }
        sudo_cmd=(sudo)
    fi
    out=$(mktemp)
    trap 'rm -f "$out"' EXIT
    if ! "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >"$out" 2>&1 ||
       ! "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive \
           apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$out" 2>&1; then
        cat "$out" >&2
        echo "error: apt-get failed installing: ${missing[*]}" >&2
        exit 1
    fi
fi
for f in /usr/lib/postgresql/15/bin/postgres /usr/lib/postgresql/15/bin/pgbench /usr/bin/psql \
         /usr/bin/etcd /usr/bin/protoc /usr/sbin/nft /bin/ip /usr/bin/patroni /usr/sbin/haproxy \
         /usr/bin/openssl /usr/bin/systemd-analyze /usr/bin/dpkg-deb /usr/bin/chromium /usr/bin/curl; do
    [ -x "$f" ] || { echo "error: $f missing after install" >&2; exit 1; }
done
command -v java >/dev/null || { echo "error: java missing after install" >&2; exit 1; }
command -v node >/dev/null && command -v npm >/dev/null ||
    { echo "error: node or npm missing after install" >&2; exit 1; }
for f in /usr/share/java/postgresql.jar /usr/include/google/protobuf/descriptor.proto /usr/include/google/protobuf/timestamp.proto \
         /etc/ssl/certs/ca-certificates.crt; do
    [ -f "$f" ] || { echo "error: $f missing after install" >&2; exit 1; }
done
# Debian's package may have started its own cluster on 5432; pgbaton never uses it.
exit 0

#!/usr/bin/env bash
# Installs what pgbaton and its tests need on Debian 12: PostgreSQL 15 server binaries, etcd
# 3.4, protoc (etcd-client's build needs it), psql and pgbench; nftables and iproute2 for the
# chaos suite's network namespaces; Patroni and HAProxy for the side-by-side benchmark and its
# test. Idempotent and quiet; fails loudly.
set -euo pipefail
packages=(postgresql-15 postgresql-client-15 postgresql-contrib etcd-server etcd-client protobuf-compiler make gcc
          nftables iproute2 patroni haproxy openssl)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    "${sudo_cmd[@]}" apt-get update -qq
    "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
for bin in /usr/lib/postgresql/15/bin/postgres /usr/bin/etcd /usr/bin/protoc /usr/sbin/nft /usr/bin/patroni /usr/sbin/haproxy; do
    [ -x "$bin" ] || { echo "error: $bin missing after install" >&2; exit 1; }
done
# Debian's package may have started its own cluster on 5432; pgbaton never uses it.
exit 0

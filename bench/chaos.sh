#!/usr/bin/env bash
# Fault-injection run on a pgbaton cluster of network-namespace hosts (see bench/chaos/README.md).
# Builds pgbaton and the harness in release mode, then runs `chaos` with every argument given, e.g.
#   bench/chaos.sh --duration 90 --seed 1 --mode sync
# (the CI run). Needs root, postgresql-15, etcd-server, iproute2 and nftables. The binary under
# test is copied into the run directory at start, so a rebuild during the run does not change it.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p pgbaton -p pgbaton-chaos
exec target/release/chaos "$@"

#!/usr/bin/env bash
# Build pgbaton and the bench in release mode, then run every benchmark (about 15-20 min).
# Extra arguments go to `pgbaton-bench all`, e.g. `bash bench/run.sh --runs 7 --json out.json`.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p pgbaton -p pgbaton-bench
# Bench a copy: a rebuild of target/release/pgbaton during the bench must not change it.
bin=$(mktemp -d /tmp/pgbaton-bench-bin.XXXXXX)
trap 'rm -rf "$bin"' EXIT
cp target/release/pgbaton "$bin/pgbaton"
target/release/pgbaton-bench all --pgbaton "$bin/pgbaton" "$@"

#!/usr/bin/env bash
# The poolers' own work, counted rather than timed: user-space instructions per transaction
# and per connection of pgbaton's router and of PgBouncer 1.18, each running under valgrind's
# callgrind (which counts every instruction the process executes, the same for the same
# binary and load whatever else the machine is doing; the kernel's share is not counted).
# Both pool in transaction mode, pool 20, trust, in front of one PostgreSQL 15 server.
#
#   bash bench/pool/instructions.sh                         # builds the release router
#   ROUTER_BIN=/tmp/old/pgbaton bash bench/pool/instructions.sh   # another build
#   KEEP=1 ...                                               # keep the callgrind files
#
# Loads, each after zeroing the counters of both poolers: pgbench -S -c 8 -j 2 -t 2000
# (16,000 transactions on 8 connections) and pgbench -S -C -c 8 -j 2 -t 200 (1,600
# transactions, each on a new connection). A connection's figure includes its one
# transaction. Everything the pooler does in that time counts (its timers, the router's
# etcd watch), which a few hundred instructions per transaction cover.
#
# For the functions behind the figures, build with symbols (`cargo build --profile profiling
# -p pgbaton`), run with KEEP=1 and read the files with callgrind_annotate.
#
# Needs root, valgrind, postgresql-15, etcd-server + etcd-client, pgbouncer. Ports
# BASE_PORT..BASE_PORT+6 on 127.0.0.1 (default 17900).
set -euo pipefail
cd "$(dirname "$0")/../.."

BASE_PORT=${BASE_PORT:-17900}
PG_BIN=/usr/lib/postgresql/15/bin
PG_PORT=$BASE_PORT
ETCD_PORT=$((BASE_PORT + 1))
ETCD_PEER=$((BASE_PORT + 2))
PGB_PORT=$((BASE_PORT + 3))
RT_PORT=$((BASE_PORT + 5))

for bin in "$PG_BIN/postgres" /usr/bin/etcd /usr/bin/etcdctl /usr/sbin/pgbouncer /usr/bin/pgbench /usr/bin/psql /usr/bin/valgrind /usr/bin/callgrind_control; do
    [ -x "$bin" ] || { echo "missing $bin: apt-get install -y valgrind postgresql-15 etcd-server etcd-client pgbouncer" >&2; exit 1; }
done

DIR=$(mktemp -d /tmp/pgbaton-instructions.XXXXXX)
chmod 755 "$DIR"
if [ -n "${ROUTER_BIN:-}" ]; then
    cp "$ROUTER_BIN" "$DIR/pgbaton"
else
    cargo build --release -p pgbaton >&2
    cp target/release/pgbaton "$DIR/pgbaton"
fi
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$DIR/pg" -m immediate stop >/dev/null 2>&1 || true
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ -n "${KEEP:-}" ]; then
        echo "callgrind files kept in $DIR/cg" >&2
    else
        rm -rf "$DIR"
    fi
}
trap cleanup EXIT

mkdir -p "$DIR/pg" "$DIR/sock" "$DIR/cg"
chown postgres:postgres "$DIR/pg" "$DIR/sock" "$DIR/cg" "$DIR"
chmod 700 "$DIR/pg"
runuser -u postgres -- "$PG_BIN/initdb" -D "$DIR/pg" -A trust -U postgres >/dev/null
cat >>"$DIR/pg/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$DIR/sock'
max_connections = 100
synchronous_commit = off
EOF
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$DIR/pg" -l "$DIR/sock/pg.log" -w start >/dev/null
pgbench -i -q -s 1 -h 127.0.0.1 -p "$PG_PORT" -U postgres postgres >/dev/null 2>&1
echo '"postgres" ""' >"$DIR/userlist.txt"
chown postgres "$DIR/userlist.txt"

etcd --name instructions --data-dir "$DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
    --initial-cluster "instructions=http://127.0.0.1:$ETCD_PEER" >"$DIR/etcd.log" 2>&1 &
PIDS+=($!)
export ETCDCTL_API=3
for _ in $(seq 100); do
    etcdctl --endpoints "127.0.0.1:$ETCD_PORT" endpoint health >/dev/null 2>&1 && break
    sleep 0.1
done
etcdctl --endpoints "127.0.0.1:$ETCD_PORT" put /service/bench/members/node1 \
    "{\"conn_url\":\"postgres://127.0.0.1:$PG_PORT/postgres\",\"api_url\":\"http://127.0.0.1:8008/patroni\",\"state\":\"running\",\"role\":\"master\",\"version\":\"0.1.0\",\"xlog_location\":0}" >/dev/null
etcdctl --endpoints "127.0.0.1:$ETCD_PORT" put /service/bench/leader node1 >/dev/null

cat >"$DIR/router.yml" <<EOF
scope: bench
etcd3:
  hosts: [127.0.0.1:$ETCD_PORT]
lag_source: dcs
write:
  listen: 127.0.0.1:$RT_PORT
read:
  listen: 127.0.0.1:$((RT_PORT + 1))
auth:
  auth_type: trust
  auth_file: $DIR/userlist.txt
pool:
  pool_mode: transaction
  default_pool_size: 20
EOF
PGBATON_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$DIR/cg/router.%p" \
    "$DIR/pgbaton" router --threads 1 --config "$DIR/router.yml" >"$DIR/router.log" 2>&1 &
PIDS+=($!)
cat >"$DIR/pgbouncer.ini" <<EOF
[databases]
postgres = host=127.0.0.1 port=$PG_PORT dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGB_PORT
unix_socket_dir =
auth_type = trust
auth_file = $DIR/userlist.txt
pool_mode = transaction
default_pool_size = 20
logfile = $DIR/pgbouncer.log
EOF
chown postgres "$DIR/pgbouncer.ini"
runuser -u postgres -- valgrind --tool=callgrind --callgrind-out-file="$DIR/cg/pgbouncer.%p" \
    /usr/sbin/pgbouncer -q "$DIR/pgbouncer.ini" 2>"$DIR/pgbouncer.valgrind" &
PIDS+=($!)
for port in $RT_PORT $PGB_PORT; do
    for _ in $(seq 300); do
        psql -X -qtA -h 127.0.0.1 -p "$port" -U postgres postgres -c 'select 1' >/dev/null 2>&1 && break
        sleep 0.2
    done
    psql -X -qtA -h 127.0.0.1 -p "$port" -U postgres postgres -c 'select 1' >/dev/null \
        || { echo "no pooler on port $port: $(tail -5 "$DIR/router.log")" >&2; exit 1; }
done

# Both poolers' counters (callgrind_control reaches the processes of the user it runs as).
control() {
    callgrind_control "$@" >/dev/null 2>&1
    runuser -u postgres -- callgrind_control "$@" >/dev/null 2>&1
}
# The instructions of the dump named $1 in the files of $2 (router or pgbouncer).
counted() {
    grep -l "^desc: Trigger: dump $1\$" "$DIR/cg/$2".* | xargs grep -h '^totals:' | awk '{print $2}'
}
# Warm both (the pools' connections, the router's login cache) outside the counts.
for port in $RT_PORT $PGB_PORT; do
    pgbench -n -S -c 8 -j 2 -t 200 -h 127.0.0.1 -p "$port" -U postgres postgres >/dev/null 2>&1
    pgbench -n -S -C -c 8 -j 2 -t 20 -h 127.0.0.1 -p "$port" -U postgres postgres >/dev/null 2>&1
done

echo "| load | router: instructions per transaction | PgBouncer 1.18 | router / PgBouncer |"
echo "|---|---|---|---|"
for load in "tx:-S -c 8 -j 2 -t 2000:16000" "conn:-S -C -c 8 -j 2 -t 200:1600"; do
    IFS=: read -r name args count <<<"$load"
    for who in router pgbouncer; do
        port=$RT_PORT
        [ "$who" = pgbouncer ] && port=$PGB_PORT
        control -z
        # shellcheck disable=SC2086
        done_count=$(pgbench -n $args -h 127.0.0.1 -p "$port" -U postgres postgres 2>&1 |
            awk '/number of transactions actually processed/ {split($NF, a, "/"); print a[1]}')
        [ "$done_count" = "$count" ] || { echo "$who: $done_count of $count transactions" >&2; exit 1; }
        control -d "$name-$who"
    done
    sleep 1
    router=$(counted "$name-router" router)
    pgbouncer=$(counted "$name-pgbouncer" pgbouncer)
    label="pgbench $args"
    awk -v l="$label" -v r="$router" -v p="$pgbouncer" -v n="$count" \
        'BEGIN { printf "| `%s` | %.0f | %.0f | %.2f |\n", l, r / n, p / n, r / p }'
done

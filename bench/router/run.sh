#!/usr/bin/env bash
# Router throughput benchmark: pgbench through pgbaton's router vs direct to PostgreSQL vs
# through HAProxy 2.6 (the seed's section 7.5 layout, TCP health check), side by side in one
# run against the same PostgreSQL 15 server.
#
#   bash bench/router/run.sh                 # ~6 min; prints a Markdown table
#   DURATION=5 bash bench/router/run.sh      # quicker, noisier
#   ONLY='-S\) 8' bash bench/router/run.sh    # only the rows whose "workload clients" match
#
# Workloads: pgbench -S (select-only) and the default TPC-B-like script, scale 10, with
# -c 8 and -c 64 (-j 2), and -C (a new connection per transaction) with -c 8. Each
# configuration runs direct, router, haproxy back to back.
#
# Needs root, postgresql-15, etcd-server (+ etcd-client for etcdctl), haproxy:
#   apt-get install -y postgresql-15 etcd-server etcd-client haproxy
# Ports BASE_PORT..BASE_PORT+8 on 127.0.0.1 (default 17400).
#
# Two routers run side by side: the default multi-threaded runtime (one worker per core) and
# a single-threaded one (PGBATON_ROUTER_THREADS=1), which avoids cross-thread wake-ups on a
# machine whose cores are busy with PostgreSQL and the clients.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-15}
SCALE=${SCALE:-10}
BASE_PORT=${BASE_PORT:-17400}
PG_BIN=/usr/lib/postgresql/15/bin
PG_PORT=$BASE_PORT
ETCD_PORT=$((BASE_PORT + 1))
ETCD_PEER=$((BASE_PORT + 2))
WRITE_PORT=$((BASE_PORT + 3))
READ_PORT=$((BASE_PORT + 4))
API_PORT=$((BASE_PORT + 5))
HAPROXY_PORT=$((BASE_PORT + 6))
WRITE1_PORT=$((BASE_PORT + 7))
READ1_PORT=$((BASE_PORT + 8))

for bin in "$PG_BIN/postgres" /usr/bin/etcd /usr/bin/etcdctl /usr/sbin/haproxy /usr/bin/pgbench; do
    [ -x "$bin" ] || { echo "missing $bin: apt-get install -y postgresql-15 etcd-server etcd-client haproxy" >&2; exit 1; }
done

cargo build --release -p pgbaton-router >&2
DIR=$(mktemp -d /tmp/pgbaton-router-bench.XXXXXX)
chmod 755 "$DIR"
cp target/release/pgbaton-router "$DIR/pgbaton-router"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$DIR/pg" -m immediate stop >/dev/null 2>&1 || true
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$DIR"
}
trap cleanup EXIT

# PostgreSQL: trust on 127.0.0.1, enough connections for -c 64 through two proxies.
mkdir -p "$DIR/pg" "$DIR/sock"
chown postgres:postgres "$DIR/pg" "$DIR/sock"
chmod 700 "$DIR/pg"
runuser -u postgres -- "$PG_BIN/initdb" -D "$DIR/pg" -A trust -U postgres >/dev/null
cat >>"$DIR/pg/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$DIR/sock'
max_connections = 200
shared_buffers = 256MB
synchronous_commit = off
EOF
(cd "$DIR" && runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$DIR/pg" -l "$DIR/sock/pg.log" -w start >/dev/null)
pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" -U postgres postgres >/dev/null 2>&1

# etcd with the cluster state an agent would write: node1 leads.
etcd --name bench --data-dir "$DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
    --initial-cluster "bench=http://127.0.0.1:$ETCD_PEER" >"$DIR/etcd.log" 2>&1 &
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
write:
  listen: 127.0.0.1:$WRITE_PORT
read:
  listen: 127.0.0.1:$READ_PORT
api:
  listen: 127.0.0.1:$API_PORT
EOF
RUST_LOG=warn "$DIR/pgbaton-router" --config "$DIR/router.yml" >"$DIR/router.log" 2>&1 &
PIDS+=($!)
ROUTER_PID=$!
sed -e "s/:$WRITE_PORT/:$WRITE1_PORT/" -e "s/:$READ_PORT/:$READ1_PORT/" -e '/^api:/,$d' \
    "$DIR/router.yml" >"$DIR/router1.yml"
PGBATON_ROUTER_THREADS=1 RUST_LOG=warn "$DIR/pgbaton-router" --config "$DIR/router1.yml" >"$DIR/router1.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$API_PORT/status" 2>/dev/null | grep -q '"name":"node1"' && break
    sleep 0.1
done

# HAProxy as in the seed (7.5), with a TCP check instead of the REST API check.
cat >"$DIR/haproxy.cfg" <<EOF
global
    maxconn 1000
defaults
    mode tcp
    timeout connect 10s
    timeout client 30m
    timeout server 30m
frontend pg_write
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend pg_write_backend
backend pg_write_backend
    default-server inter 3s fall 3 rise 2 on-marked-down shutdown-sessions
    server node1 127.0.0.1:$PG_PORT check
EOF
haproxy -f "$DIR/haproxy.cfg" -db >"$DIR/haproxy.log" 2>&1 &
PIDS+=($!)
sleep 0.5

port_of() {
    case $1 in
        direct) echo "$PG_PORT" ;;
        router) echo "$WRITE_PORT" ;;
        router1) echo "$WRITE1_PORT" ;;
        haproxy) echo "$HAPROXY_PORT" ;;
    esac
}

# One pgbench run; prints "tps latency_ms".
run() {
    local target=$1 clients=$2 shift_args=("${@:3}")
    local out
    out=$(pgbench -n -h 127.0.0.1 -p "$(port_of "$target")" -U postgres -T "$DURATION" \
        -c "$clients" -j 2 "${shift_args[@]}" postgres 2>&1) || { echo "pgbench failed: $out" >&2; exit 1; }
    local tps lat
    tps=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\) .*/\1/p' | head -1)
    lat=$(echo "$out" | sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' | head -1)
    echo "$tps $lat"
}

echo "## pgbench through the router vs direct vs HAProxy"
echo
echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'), $(haproxy -v | head -1 | awk '{print "HAProxy", $3}'), scale $SCALE, -T $DURATION, -j 2, synchronous_commit=off"
echo
echo "| workload | clients | direct tps (lat ms) | router tps (lat ms) | router 1-thread tps (lat ms) | HAProxy tps (lat ms) | router/direct | router 1-thread/direct | HAProxy/direct |"
echo "|---|---|---|---|---|---|---|---|---|"
for spec in "select-only (-S)|8|-S" "select-only (-S)|64|-S" "TPC-B-like|8|" "TPC-B-like|64|" \
    "select-only, new connection per tx (-S -C)|8|-S -C" "TPC-B-like, new connection per tx (-C)|8|-C"; do
    IFS='|' read -r name clients flags <<<"$spec"
    [[ "$name $clients" =~ ${ONLY:-.} ]] || continue
    # shellcheck disable=SC2206
    extra=($flags)
    read -r d_tps d_lat < <(run direct "$clients" "${extra[@]}")
    read -r r_tps r_lat < <(run router "$clients" "${extra[@]}")
    read -r s_tps s_lat < <(run router1 "$clients" "${extra[@]}")
    read -r h_tps h_lat < <(run haproxy "$clients" "${extra[@]}")
    ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }
    printf "| %s | %s | %.0f (%s) | %.0f (%s) | %.0f (%s) | %.0f (%s) | %s | %s | %s |\n" "$name" "$clients" \
        "$d_tps" "$d_lat" "$r_tps" "$r_lat" "$s_tps" "$s_lat" "$h_tps" "$h_lat" \
        "$(ratio "$r_tps" "$d_tps")" "$(ratio "$s_tps" "$d_tps")" "$(ratio "$h_tps" "$d_tps")"
done
echo
echo "Router RSS after the run: $(awk '/VmRSS/ {print $2, $3}' "/proc/$ROUTER_PID/status")"

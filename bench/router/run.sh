#!/usr/bin/env bash
# Router benchmark: pgbench through pgbaton's router vs direct to PostgreSQL vs through
# HAProxy 2.6 (the seed's section 7.5 layout, TCP health check), side by side in one run
# against the same PostgreSQL 15 server; then each proxy's memory with 1,000 idle sessions.
#
#   bash bench/router/run.sh                  # ~20 min; prints Markdown tables
#   DURATION=5 REPEAT=1 bash bench/router/run.sh   # quicker, noisier
#   ONLY='-S\) (8|64)' bash bench/router/run.sh     # only rows whose "workload clients" match
#   IDLE=0 bash bench/router/run.sh           # skip the idle-memory measurement
#   BASELINE_BIN=/path/to/old/pgbaton bash bench/router/run.sh   # A/B: adds a column for
#                                             # another build's `pgbaton router`
#   NICE=-10 bash bench/router/run.sh         # adds a single-threaded router and a HAProxy
#                                             # run at that nice value (higher CPU priority)
#
# Workloads: pgbench -S (select-only) and the default TPC-B-like script, scale 10, with
# -c 8 and -c 64 (-j 2), and -C (a new connection per transaction) with -c 8. For each
# workload the targets run back to back, and that round is repeated REPEAT times (default 3):
# the tables show the median of the rounds, and the raw tps of every round follow them.
# "proxy CPU" is the CPU time (user + system, from /proc/PID/stat) the proxy process used
# during a run divided by the transactions pgbench completed; "machine CPU" is the time all
# cores were busy (/proc/stat: every process, kernel threads, interrupts) divided the same
# way. On a 2-core machine shared by PostgreSQL, pgbench and the proxy, machine CPU per
# transaction is what decides throughput; with kernel forwarding the proxy process itself
# uses almost none (the kernel's workers move the bytes), so only the machine column shows
# what forwarding costs.
#
# Idle memory: bench/router/idle_clients.py opens IDLE (default 1000) client connections
# through each proxy in turn, completes their startup and holds them; the proxy's VmRSS is
# read before, with the connections open, and after they closed.
#
# Needs root, python3, postgresql-15, etcd-server (+ etcd-client for etcdctl), haproxy:
#   apt-get install -y postgresql-15 etcd-server etcd-client haproxy
# Ports BASE_PORT..BASE_PORT+13 on 127.0.0.1 (default 17400).
#
# Two routers run side by side, both single-threaded as `pgbaton router` runs: "router" with
# the default `forwarding: auto` (kernel forwarding when run as root on Linux 5.13+) and
# "router, userspace relay" with `forwarding: userspace` (the router's thread reads and
# writes every message).
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-10}
REPEAT=${REPEAT:-3}
SCALE=${SCALE:-10}
IDLE=${IDLE:-1000}
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
WRITEB_PORT=$((BASE_PORT + 9))
READB_PORT=$((BASE_PORT + 10))
WRITEN_PORT=$((BASE_PORT + 11))
READN_PORT=$((BASE_PORT + 12))
HAPROXYN_PORT=$((BASE_PORT + 13))

for bin in "$PG_BIN/postgres" /usr/bin/etcd /usr/bin/etcdctl /usr/sbin/haproxy /usr/bin/pgbench /usr/bin/psql; do
    [ -x "$bin" ] || { echo "missing $bin: apt-get install -y postgresql-15 etcd-server etcd-client haproxy" >&2; exit 1; }
done
command -v python3 >/dev/null || { echo "missing python3: apt-get install -y python3" >&2; exit 1; }

DIR=$(mktemp -d /tmp/pgbaton-router-bench.XXXXXX)
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
    rm -rf "$DIR"
}
trap cleanup EXIT

# PostgreSQL: trust on 127.0.0.1, enough connections for the idle measurement (IDLE through
# one proxy at a time) and -c 64.
mkdir -p "$DIR/pg" "$DIR/sock"
chown postgres:postgres "$DIR/pg" "$DIR/sock"
chmod 700 "$DIR/pg"
runuser -u postgres -- "$PG_BIN/initdb" -D "$DIR/pg" -A trust -U postgres >/dev/null
cat >>"$DIR/pg/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$DIR/sock'
max_connections = $((IDLE + 200))
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
PGBATON_LOG=warn "$DIR/pgbaton" router --config "$DIR/router.yml" >"$DIR/router.log" 2>&1 &
PIDS+=($!)
ROUTER_PID=$!
sed -e "s/:$WRITE_PORT/:$WRITE1_PORT/" -e "s/:$READ_PORT/:$READ1_PORT/" -e '/^api:/,$d' \
    "$DIR/router.yml" >"$DIR/relay.yml"
echo "forwarding: userspace" >>"$DIR/relay.yml"
PGBATON_LOG=warn "$DIR/pgbaton" router --config "$DIR/relay.yml" >"$DIR/relay.log" 2>&1 &
PIDS+=($!)
RELAY_PID=$!
TARGETS=(direct router relay)
if [ -n "${BASELINE_BIN:-}" ]; then
    cp "$BASELINE_BIN" "$DIR/pgbaton-baseline"
    sed -e "s/:$WRITE_PORT/:$WRITEB_PORT/" -e "s/:$READ_PORT/:$READB_PORT/" -e '/^api:/,$d' \
        "$DIR/router.yml" >"$DIR/routerb.yml"
    PGBATON_LOG=warn "$DIR/pgbaton-baseline" router --config "$DIR/routerb.yml" >"$DIR/routerb.log" 2>&1 &
    PIDS+=($!)
    BASELINE_PID=$!
    TARGETS+=(baseline)
fi
if [ -n "${NICE:-}" ]; then
    sed -e "s/:$WRITE_PORT/:$WRITEN_PORT/" -e "s/:$READ_PORT/:$READN_PORT/" -e '/^api:/,$d' \
        "$DIR/router.yml" >"$DIR/routern.yml"
    PGBATON_LOG=warn nice -n "$NICE" "$DIR/pgbaton" router --config "$DIR/routern.yml" >"$DIR/routern.log" 2>&1 &
    PIDS+=($!)
    NICE_ROUTER_PID=$!
    TARGETS+=(router1nice)
fi
TARGETS+=(haproxy)

# HAProxy as in the seed (7.5), with a TCP check instead of the REST API check.
cat >"$DIR/haproxy.cfg" <<EOF
global
    maxconn $((IDLE + 1000))
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
HAPROXY_PID=$!
if [ -n "${NICE:-}" ]; then
    sed -e "s/:$HAPROXY_PORT\$/:$HAPROXYN_PORT/" "$DIR/haproxy.cfg" >"$DIR/haproxyn.cfg"
    nice -n "$NICE" haproxy -f "$DIR/haproxyn.cfg" -db >"$DIR/haproxyn.log" 2>&1 &
    PIDS+=($!)
    NICE_HAPROXY_PID=$!
    TARGETS+=(haproxynice)
fi

port_of() {
    case $1 in
        direct) echo "$PG_PORT" ;;
        router) echo "$WRITE_PORT" ;;
        relay) echo "$WRITE1_PORT" ;;
        baseline) echo "$WRITEB_PORT" ;;
        haproxy) echo "$HAPROXY_PORT" ;;
        router1nice) echo "$WRITEN_PORT" ;;
        haproxynice) echo "$HAPROXYN_PORT" ;;
    esac
}
pid_of() {
    case $1 in
        direct) echo "" ;;
        router) echo "$ROUTER_PID" ;;
        relay) echo "$RELAY_PID" ;;
        baseline) echo "$BASELINE_PID" ;;
        haproxy) echo "$HAPROXY_PID" ;;
        router1nice) echo "$NICE_ROUTER_PID" ;;
        haproxynice) echo "$NICE_HAPROXY_PID" ;;
    esac
}
title_of() {
    case $1 in
        direct) echo "direct" ;;
        router) echo "router" ;;
        relay) echo "router, userspace relay" ;;
        baseline) echo "baseline router 1-thread" ;;
        haproxy) echo "HAProxy" ;;
        router1nice) echo "router 1-thread nice $NICE" ;;
        haproxynice) echo "HAProxy nice $NICE" ;;
    esac
}

# Every target must answer before measuring.
for target in "${TARGETS[@]}"; do
    ok=
    for _ in $(seq 100); do
        if psql -h 127.0.0.1 -p "$(port_of "$target")" -U postgres -Atc 'select 1' postgres >/dev/null 2>&1; then
            ok=1
            break
        fi
        sleep 0.1
    done
    [ -n "$ok" ] || { echo "$target on port $(port_of "$target") does not answer" >&2; tail -n 20 "$DIR"/*.log >&2; exit 1; }
done

# CPU ticks (user + system) a process has used so far; 0 for "direct".
cpu_ticks() {
    [ -n "$1" ] || { echo 0; return; }
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}
# CPU ticks the whole machine has been busy so far (every process, kernel threads, interrupts).
machine_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# One pgbench run; prints "tps latency_ms proxy_cpu_us_per_tx machine_cpu_us_per_tx".
run() {
    local target=$1 clients=$2 extra=("${@:3}")
    local pid out before after mbefore mafter
    pid=$(pid_of "$target")
    before=$(cpu_ticks "$pid")
    mbefore=$(machine_ticks)
    out=$(pgbench -n -h 127.0.0.1 -p "$(port_of "$target")" -U postgres -T "$DURATION" \
        -c "$clients" -j 2 "${extra[@]}" postgres 2>&1) || { echo "pgbench failed: $out" >&2; exit 1; }
    after=$(cpu_ticks "$pid")
    mafter=$(machine_ticks)
    local tps lat txs
    tps=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\) .*/\1/p' | head -1)
    lat=$(echo "$out" | sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' | head -1)
    txs=$(echo "$out" | sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' | head -1)
    awk -v t="$tps" -v l="$lat" -v n="$txs" -v c=$((after - before)) -v m=$((mafter - mbefore)) \
        -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%s %s %.1f %.1f\n", t, l, c * 1e6 / hz / n, m * 1e6 / hz / n }'
}
median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "## pgbench through the router vs direct vs HAProxy"
echo
echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'), $(haproxy -v | head -1 | awk '{print "HAProxy", $3}'), scale $SCALE, -T $DURATION, -j 2, synchronous_commit=off, median of $REPEAT interleaved rounds"
echo
header="| workload | clients |"
rule="|---|---|"
for target in "${TARGETS[@]}"; do header+=" $(title_of "$target") tps (lat ms) |"; rule+="---|"; done
for target in "${TARGETS[@]:1}"; do header+=" $(title_of "$target")/direct |"; rule+="---|"; done
for target in "${TARGETS[@]:1}"; do header+=" $(title_of "$target") CPU µs/tx |"; rule+="---|"; done
for target in "${TARGETS[@]}"; do header+=" machine CPU µs/tx $(title_of "$target") |"; rule+="---|"; done
echo "$header"
echo "$rule"
RAW=()
for spec in "select-only (-S)|8|-S" "select-only (-S)|64|-S" "TPC-B-like|8|" "TPC-B-like|64|" \
    "select-only, new connection per tx (-S -C)|8|-S -C" "TPC-B-like, new connection per tx (-C)|8|-C"; do
    IFS='|' read -r name clients flags <<<"$spec"
    [[ "$name $clients" =~ ${ONLY:-.} ]] || continue
    # shellcheck disable=SC2206
    extra=($flags)
    declare -A TPS=() LAT=() CPU=() MCPU=()
    for _ in $(seq "$REPEAT"); do
        for target in "${TARGETS[@]}"; do
            result=$(run "$target" "$clients" "${extra[@]}")
            read -r tps lat cpu mcpu <<<"$result"
            TPS[$target]+="$tps "
            LAT[$target]+="$lat "
            CPU[$target]+="$cpu "
            MCPU[$target]+="$mcpu "
        done
    done
    row="| $name | $clients |"
    declare -A MED=()
    for target in "${TARGETS[@]}"; do
        MED[$target]=$(echo "${TPS[$target]}" | median)
        row+=" $(printf '%.0f' "${MED[$target]}") ($(echo "${LAT[$target]}" | median)) |"
    done
    for target in "${TARGETS[@]:1}"; do
        row+=" $(awk -v a="${MED[$target]}" -v b="${MED[direct]}" 'BEGIN { printf "%.2fx", a / b }') |"
    done
    for target in "${TARGETS[@]:1}"; do row+=" $(echo "${CPU[$target]}" | median) |"; done
    for target in "${TARGETS[@]}"; do row+=" $(echo "${MCPU[$target]}" | median) |"; done
    echo "$row"
    raw="- $name, -c $clients:"
    for target in "${TARGETS[@]}"; do raw+=" $(title_of "$target") ${TPS[$target]% };"; done
    RAW+=("${raw%;}")
    unset TPS LAT CPU MCPU MED
done
echo
echo "tps of each round (in run order):"
echo
printf '%s\n' "${RAW[@]}"

[ "$IDLE" -gt 0 ] || exit 0

# Client backends PostgreSQL has now.
backends() {
    psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -Atc \
        "select count(*) from pg_stat_activity where backend_type = 'client backend'" postgres
}

# Opens IDLE idle sessions through a proxy; prints "rss_before rss_with rss_after" in kB.
idle_rss() {
    local target=$1 pid
    pid=$(pid_of "$target")
    local before with after holder
    before=$(rss_kb "$pid")
    : >"$DIR/idle.out"
    python3 bench/router/idle_clients.py --port "$(port_of "$target")" --count "$IDLE" --timeout 600 \
        >"$DIR/idle.out" 2>"$DIR/idle.err" &
    holder=$!
    # The client gives up by itself after its --timeout.
    while ! grep -q '^ready' "$DIR/idle.out"; do
        kill -0 "$holder" 2>/dev/null || { echo "idle clients through $target failed: $(cat "$DIR/idle.err")" >&2; exit 1; }
        sleep 0.2
    done
    with=$(rss_kb "$pid")
    kill "$holder"
    wait "$holder" 2>/dev/null || true
    for _ in $(seq 600); do
        [ "$(backends)" -lt 5 ] && break
        sleep 0.1
    done
    after=$(rss_kb "$pid")
    echo "$before $with $after"
}

echo
echo "## Proxy memory with $IDLE idle client sessions"
echo
echo "Each proxy in turn holds $IDLE sessions that completed their startup (bench/router/idle_clients.py); VmRSS of the proxy process."
echo
echo "| proxy | RSS before (MB) | RSS with $IDLE idle sessions (MB) | per session (kB) | RSS after they closed (MB) |"
echo "|---|---|---|---|---|"
for target in "${TARGETS[@]:1}"; do
    [[ $target == *nice ]] && continue
    result=$(idle_rss "$target")
    read -r before with after <<<"$result"
    awk -v n="$(title_of "$target")" -v b="$before" -v w="$with" -v a="$after" -v c="$IDLE" \
        'BEGIN { printf "| %s | %.1f | %.1f | %.1f | %.1f |\n", n, b / 1024, w / 1024, (w - b) / c, a / 1024 }'
done

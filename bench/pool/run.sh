#!/usr/bin/env bash
# Pooler benchmark: pgbaton's router pooling in transaction mode against PgBouncer 1.18
# (Debian 12's package), side by side in one run on the same PostgreSQL 15 server
# (max_connections 100), both with pool_mode transaction, default_pool_size 20, and the same
# client authentication: trust, and scram-sha-256 from a userlist.txt holding the server's
# SCRAM secret. Then the router in session mode against direct connections, and each
# pooler's memory with IDLE (default 10,000) idle clients.
#
#   bash bench/pool/run.sh                           # ~20 min; prints Markdown tables
#   DURATION=4 REPEAT=1 bash bench/pool/run.sh       # quicker, noisier
#   ONLY='c 8$' bash bench/pool/run.sh               # only rows whose label matches
#   IDLE=0 bash bench/pool/run.sh                    # skip the idle-memory measurement
#   PARTS='idle session' bash bench/pool/run.sh      # some of: tx idle session
#
# Rows: pgbench -S (select-only, scale 10) with -c 8 / 64 / 256 / 1000, -C -c 8 (a new
# connection per transaction), -M prepared -c 64. Within a round every target runs the row
# back to back; REPEAT rounds (default 3), medians shown. Columns: tps (excluding connection
# time, as pgbench reports it), p99 latency (from pgbench's per-transaction log, 10% sample),
# the most server connections the pooler held during the run (its TCP connections to
# PostgreSQL, sampled every 0.5 s with ss; for direct runs pgbench's backends), the
# pooler's CPU time (user + system, /proc/PID/stat) per transaction in microseconds,
# failed runs. -M prepared runs with -j = -c: pgbench prepares synchronously, and with fewer
# threads a thread can wait for a connection its own clients hold (docs/CONFIGURATION.md).
#
# The router runs as `pgbaton router` does by default, on one thread (ROUTER_THREADS=N: N
# worker threads, 0 one per core; on this 2-core machine one thread cost the least CPU per
# transaction, docs/BENCHMARKS.md).
#
# Needs root, python3, postgresql-15, etcd-server + etcd-client, pgbouncer:
#   apt-get install -y postgresql-15 etcd-server etcd-client pgbouncer
# Ports BASE_PORT..BASE_PORT+13 on 127.0.0.1 (default 17600).
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-8}
REPEAT=${REPEAT:-3}
SCALE=${SCALE:-10}
IDLE=${IDLE:-10000}
ONLY=${ONLY:-}
PARTS=${PARTS:-tx idle session}
part() { [[ " $PARTS " == *" $1 "* ]]; }
BASE_PORT=${BASE_PORT:-17600}
PG_BIN=/usr/lib/postgresql/15/bin
PG_PORT=$BASE_PORT
ETCD_PORT=$((BASE_PORT + 1))
ETCD_PEER=$((BASE_PORT + 2))
PGB_TRUST_PORT=$((BASE_PORT + 3))
PGB_SCRAM_PORT=$((BASE_PORT + 4))
RT_TRUST_PORT=$((BASE_PORT + 5))
RT_SCRAM_PORT=$((BASE_PORT + 7))
RT_SESSION_PORT=$((BASE_PORT + 9))
RT_SESSION_API=$((BASE_PORT + 11))
RT_SESSION_USER_PORT=$((BASE_PORT + 12))

for bin in "$PG_BIN/postgres" /usr/bin/etcd /usr/bin/etcdctl /usr/sbin/pgbouncer /usr/bin/pgbench /usr/bin/psql; do
    [ -x "$bin" ] || { echo "missing $bin: apt-get install -y postgresql-15 etcd-server etcd-client pgbouncer" >&2; exit 1; }
done
command -v python3 >/dev/null || { echo "missing python3" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)"

DIR=$(mktemp -d /tmp/pgbaton-pool-bench.XXXXXX)
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

mkdir -p "$DIR/pg" "$DIR/sock" "$DIR/log"
chown postgres:postgres "$DIR/pg" "$DIR/sock" "$DIR/log" "$DIR"
chmod 700 "$DIR/pg"
runuser -u postgres -- "$PG_BIN/initdb" -D "$DIR/pg" -A trust -U postgres >/dev/null
cat >>"$DIR/pg/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$DIR/sock'
max_connections = 100
shared_buffers = 256MB
synchronous_commit = off
EOF
(cd "$DIR" && runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$DIR/pg" -l "$DIR/sock/pg.log" -w start >/dev/null)
pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" -U postgres postgres >/dev/null 2>&1
sql() { psql -X -qtA -h "$DIR/sock" -p "$PG_PORT" -U postgres postgres -c "$1"; }
sql "ALTER ROLE postgres PASSWORD 'bench pw'" >/dev/null
SECRET=$(sql "SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres'")
printf '"postgres" "%s"\n' "$SECRET" >"$DIR/userlist.txt"
chown postgres "$DIR/userlist.txt"

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

# Routers: trust and scram in transaction mode, trust in session mode (kernel forwarding).
router() { # name write_port auth_type mode pool_size [api_port] [forwarding]
    cat >"$DIR/$1.yml" <<EOF
scope: bench
etcd3:
  hosts: [127.0.0.1:$ETCD_PORT]
lag_source: dcs
write:
  listen: 127.0.0.1:$2
read:
  listen: 127.0.0.1:$(($2 + 1))
auth:
  auth_type: $3
  auth_file: $DIR/userlist.txt
pool:
  pool_mode: $4
  default_pool_size: $5
  max_client_conn: $((IDLE + 2000))
  server_idle_timeout: ${SERVER_IDLE_TIMEOUT:-600}
EOF
    [ -z "${6:-}" ] || printf 'api:\n  listen: 127.0.0.1:%s\n' "$6" >>"$DIR/$1.yml"
    [ -z "${7:-}" ] || printf 'forwarding: %s\n' "$7" >>"$DIR/$1.yml"
    PGBATON_LOG=warn "$DIR/pgbaton" router --threads "${ROUTER_THREADS:-1}" --config "$DIR/$1.yml" >"$DIR/$1.log" 2>&1 &
    PIDS+=($!)
    eval "${1}_PID=$!"
}
router rt_trust "$RT_TRUST_PORT" trust transaction 20
router rt_scram "$RT_SCRAM_PORT" scram-sha-256 transaction 20
# Session mode: a client keeps its server connection, so the pool must fit -c 64.
router rt_session "$RT_SESSION_PORT" trust session 80 "$RT_SESSION_API"
# The same with the router's own relay (no kernel forwarding), for comparison. Its server
# connections stay in its pool after a session (the kernel's end with it): idle ones are
# closed after 1 s so that direct runs find the server's connections free.
SERVER_IDLE_TIMEOUT=1 router rt_session_user "$RT_SESSION_USER_PORT" trust session 80 "" userspace

pgbouncer_start() { # name port auth_type
    cat >"$DIR/$1.ini" <<EOF
[databases]
postgres = host=127.0.0.1 port=$PG_PORT dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $2
unix_socket_dir =
auth_type = $3
auth_file = $DIR/userlist.txt
pool_mode = transaction
default_pool_size = 20
max_client_conn = $((IDLE + 2000))
logfile = $DIR/log/$1.log
pidfile = $DIR/log/$1.pid
EOF
    chown postgres "$DIR/$1.ini"
    runuser -u postgres -- bash -c "ulimit -n $(ulimit -Hn); exec /usr/sbin/pgbouncer -q $DIR/$1.ini" &
    PIDS+=($!)
    for _ in $(seq 100); do [ -s "$DIR/log/$1.pid" ] && break; sleep 0.1; done
    eval "${1}_PID=$(cat "$DIR/log/$1.pid")"
    PIDS+=("$(cat "$DIR/log/$1.pid")")
}
pgbouncer_start pgb_trust "$PGB_TRUST_PORT" trust
pgbouncer_start pgb_scram "$PGB_SCRAM_PORT" scram-sha-256
export PGPASSWORD='bench pw'
for port in $RT_TRUST_PORT $RT_SCRAM_PORT $RT_SESSION_PORT $RT_SESSION_USER_PORT $PGB_TRUST_PORT $PGB_SCRAM_PORT; do
    for _ in $(seq 100); do
        psql -X -qtA -h 127.0.0.1 -p "$port" -U postgres postgres -c 'select 1' >/dev/null 2>&1 && break
        sleep 0.1
    done
done

port_of() {
    case $1 in
        direct) echo "$PG_PORT" ;;
        pgb_trust) echo "$PGB_TRUST_PORT" ;;
        pgb_scram) echo "$PGB_SCRAM_PORT" ;;
        rt_trust) echo "$RT_TRUST_PORT" ;;
        rt_scram) echo "$RT_SCRAM_PORT" ;;
        rt_session) echo "$RT_SESSION_PORT" ;;
        rt_session_user) echo "$RT_SESSION_USER_PORT" ;;
    esac
}
pid_of() { eval "echo \${${1}_PID}"; }
label_of() {
    case $1 in
        direct) echo "direct" ;;
        pgb_trust) echo "PgBouncer 1.18 trust" ;;
        pgb_scram) echo "PgBouncer 1.18 scram" ;;
        rt_trust) echo "router trust" ;;
        rt_scram) echo "router scram" ;;
        rt_session) echo "router session mode" ;;
        rt_session_user) echo "router session mode, forwarding: userspace" ;;
    esac
}
# Server connections a target holds now: the pooler process's TCP connections to PostgreSQL
# (ss), or pgbench's own backends for direct runs.
servers() { # target
    if [ "$1" = direct ]; then
        sql "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgbench'"
    else
        ss -Htnp state established "( dport = :$PG_PORT )" | grep -c "pid=$(pid_of "$1")," || true
    fi
}

# CPU clock ticks the pooler process has used (none for direct runs).
cpu_ticks() { # target
    [ "$1" = direct ] || awk '{print $14 + $15}' "/proc/$(pid_of "$1")/stat"
}

# One run: prints "tps p99_ms max_servers ok cpu_us_per_transaction".
run() { # target args...
    local target=$1
    shift
    local port prefix sampler maxfile out tps p99 max ok cpu_before cpu txns
    port=$(port_of "$target")
    prefix="$DIR/log/run"
    rm -f "$prefix".*
    maxfile="$DIR/max"
    echo 0 >"$maxfile"
    (while true; do
        n=$(servers "$target" 2>/dev/null || echo 0)
        [ "$n" -gt "$(cat "$maxfile")" ] && echo "$n" >"$maxfile"
        sleep 0.5
    done) &
    sampler=$!
    ok=1
    # Session-mode routers close their idle server connections within 2 s (see above).
    [ "$target" != direct ] || sleep 2
    cpu_before=$(cpu_ticks "$target")
    out=$(cd "$DIR/log" && pgbench -n -h 127.0.0.1 -p "$port" -U postgres -T "$DURATION" \
        -l --sampling-rate 0.1 --log-prefix "$prefix" "$@" postgres 2>&1) || ok=0
    kill "$sampler" 2>/dev/null
    wait "$sampler" 2>/dev/null || true
    tps=$(echo "$out" | awk '/^tps/ {print int($3)}' | tail -1)
    [ -n "$tps" ] || tps=0
    echo "$out" | grep -q "number of failed transactions: 0" || ok=0
    p99=$(cat "$prefix".* 2>/dev/null | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {if (NR) printf "%.2f", a[int(NR*0.99)+(NR*0.99>int(NR*0.99))]/1000; else print "-"}')
    max=$(cat "$maxfile")
    [ "$ok" = 1 ] || echo "$target $*: $(echo "$out" | grep -iE 'error|fatal' | head -2)" >>"$DIR/failures"
    # The pooler's CPU time (user + system) per transaction, in microseconds: what the
    # pooler costs the machine, which the load of a shared machine does not skew as much
    # as throughput.
    txns=$(echo "$out" | awk '/^number of transactions actually processed/ {print $NF}' | tail -1)
    txns=${txns%%/*}
    cpu=-
    if [ -n "$cpu_before" ] && [ "${txns:-0}" -gt 0 ]; then
        cpu=$(( ($(cpu_ticks "$target") - cpu_before) * 1000000 / $(getconf CLK_TCK) / txns ))
    fi
    echo "$tps $p99 $max $ok $cpu"
}

median() { sort -n | awk '{a[NR]=$1} END {if (NR) print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

POOLERS=(pgb_trust rt_trust pgb_scram rt_scram)
ROWS=(
    "-S -c 8|-S -c 8 -j 2"
    "-S -c 64|-S -c 64 -j 2"
    "-S -c 256|-S -c 256 -j 2"
    "-S -c 1000|-S -c 1000 -j 2"
    "-S -C -c 8|-S -C -c 8 -j 2"
    "-S -M prepared -c 64|-S -M prepared -c 64 -j 64"
)
: >"$DIR/failures"
declare -A RESULT
table() { # title rows targets...
    local title=$1
    shift
    local -n rows=$1
    shift
    local targets=("$@")
    for round in $(seq "$REPEAT"); do
        for row in "${rows[@]}"; do
            local label=${row%%|*} args=${row#*|}
            [ -z "$ONLY" ] || echo "$label" | grep -qE -- "$ONLY" || continue
            for target in "${targets[@]}"; do
                # shellcheck disable=SC2086
                RESULT["$label|$target|$round"]=$(run "$target" $args)
                echo "round $round: $label $(label_of "$target"): ${RESULT["$label|$target|$round"]}" >&2
            done
        done
    done
    echo
    echo "### $title"
    echo
    local header="| pgbench |" rule="|---|"
    for target in "${targets[@]}"; do
        header+=" $(label_of "$target"): tps / p99 ms / servers / CPU µs per txn |"
        rule+="---|"
    done
    echo "$header"
    echo "$rule"
    for row in "${rows[@]}"; do
        local label=${row%%|*}
        [ -z "$ONLY" ] || echo "$label" | grep -qE -- "$ONLY" || continue
        local line="| \`$label\` |"
        for target in "${targets[@]}"; do
            local tps p99 max cpu fails=0
            tps=$(for r in $(seq "$REPEAT"); do echo "${RESULT["$label|$target|$r"]}" | awk '{print $1}'; done | median)
            p99=$(for r in $(seq "$REPEAT"); do echo "${RESULT["$label|$target|$r"]}" | awk '{print $2}'; done | { grep -v -- - || true; } | median)
            max=$(for r in $(seq "$REPEAT"); do echo "${RESULT["$label|$target|$r"]}" | awk '{print $3}'; done | sort -n | tail -1)
            for r in $(seq "$REPEAT"); do
                [ "$(echo "${RESULT["$label|$target|$r"]}" | awk '{print $4}')" = 1 ] || fails=$((fails + 1))
            done
            cpu=$(for r in $(seq "$REPEAT"); do echo "${RESULT["$label|$target|$r"]}" | awk '{print $5}'; done | { grep -v -- - || true; } | median)
            local cell="$tps / ${p99:--} / $max / ${cpu:--}"
            [ "$fails" = 0 ] || cell+=" ($fails of $REPEAT runs failed)"
            line+=" $cell |"
        done
        echo "$line"
    done
    echo
    echo "Every round's tps:"
    echo
    for row in "${rows[@]}"; do
        local label=${row%%|*}
        [ -z "$ONLY" ] || echo "$label" | grep -qE -- "$ONLY" || continue
        local line="- \`$label\`:"
        for target in "${targets[@]}"; do
            line+=" $(label_of "$target") $(for r in $(seq "$REPEAT"); do echo "${RESULT["$label|$target|$r"]}" | awk '{print $1}'; done | paste -sd/);"
        done
        echo "$line"
    done
}

echo "## Pooling: pgbaton router vs PgBouncer 1.18 ($(date -u +%Y-%m-%d), $(nproc) cores, pgbench -T $DURATION, median of $REPEAT rounds)"
if part tx; then
    table "Transaction mode, pool 20, server max_connections 100" ROWS "${POOLERS[@]}"
fi

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
if part idle && [ "$IDLE" -gt 0 ]; then
    echo
    echo "### Memory with $IDLE idle clients (trust, transaction mode)"
    echo
    echo "| pooler | RSS before | RSS with $IDLE idle clients | after they left |"
    echo "|---|---|---|---|"
    for target in pgb_trust rt_trust; do
        pid=$(pid_of "$target")
        before=$(rss_kb "$pid")
        : >"$DIR/idle.out"
        python3 bench/router/idle_clients.py --port "$(port_of "$target")" --count "$IDLE" --timeout 600 \
            >"$DIR/idle.out" 2>"$DIR/idle.err" &
        holder=$!
        while ! grep -q '^ready' "$DIR/idle.out"; do
            kill -0 "$holder" 2>/dev/null || { echo "idle clients through $target failed: $(cat "$DIR/idle.err")" >&2; exit 1; }
            sleep 0.2
        done
        sleep 1
        with=$(rss_kb "$pid")
        kill "$holder"
        wait "$holder" 2>/dev/null || true
        sleep 3
        after=$(rss_kb "$pid")
        echo "| $(label_of "$target") | $((before / 1024)) MB | $((with / 1024)) MB | $((after / 1024)) MB |"
    done
fi

if part session; then
    # The transaction-mode poolers hold 80 server connections: stop them, so that direct
    # runs have the server's 100.
    for target in "${POOLERS[@]}"; do kill "$(pid_of "$target")" 2>/dev/null || true; done
    sleep 2
    SESSION_ROWS=("-S -c 8|-S -c 8 -j 2" "-S -c 64|-S -c 64 -j 2")
    table "Session mode (router, kernel forwarding where available) vs direct" SESSION_ROWS direct rt_session rt_session_user
    # Whether the kernel forwarded those sessions: the router's own count of them.
    metrics=$(python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())' \
        "http://127.0.0.1:$RT_SESSION_API/metrics" 2>/dev/null || true)
    kernel=$(echo "$metrics" | awk '/^pgbaton_router_kernel_forwarded_sessions_total / {print $2}')
    echo
    echo "Router session mode: ${kernel:-unknown} sessions forwarded by the kernel (pgbaton_router_kernel_forwarded_sessions_total)."
fi
if [ -s "$DIR/failures" ]; then
    echo
    echo "Failed runs:"
    echo
    sed 's/^/- /' "$DIR/failures"
fi

#!/usr/bin/env bash
# fresh-debian-check.sh: does the README's first command work on a fresh Debian 12?
#
# Builds a minimal Debian 12 (bookworm) root with debootstrap (--variant=minbase) holding only
# what "a fresh machine with the Rust toolchain" has: gcc, make, git, ca-certificates, plus the
# host's rustup toolchain bind-mounted read-only (cargo's registry is a new, empty one inside
# the root: every crate is downloaded as for a new user). In a clean `git clone` of the
# committed HEAD (or --rev) it runs `make run` (install-deps.sh with apt, release build,
# `pgbaton local up`), waits for the cluster and the router, writes a row through the router's
# write port with psql and reads it back (and from the read port), then sends SIGINT to `make
# run`'s process group, as Ctrl-C does, and checks that it exits 0 and leaves no process behind.
# Ends with `fresh-debian-check: PASS` or `fresh-debian-check: FAIL: <reason>`.
#
# The debootstrapped base is the read-only lower layer of an overlay: each run starts from a
# pristine base, and --keep keeps the base (the next run then skips debootstrap) and the
# run's upper layer for inspection. Whatever happens, every process started in the root is
# killed and every mount is undone (checked with findmnt).
#
# Needs root, network access to the Debian archive and crates.io; uses 127.0.0.1 ports
# BASE..BASE+30 only. Takes 15-25 minutes on 2 cores, most of it the release build.
set -euo pipefail

usage() {
    cat <<EOF
usage: $0 [--root DIR] [--keep] [--rev REV] [--base-port N] [--timeout MIN] [--rebuild-base]
  --root DIR       work directory (default /var/tmp/pgbaton-fresh-root); removed at the end
  --keep           keep DIR: the debootstrapped base (reused by the next run) and this run's files
  --rev REV        the commit of this repository to clone (default HEAD)
  --base-port N    pgbaton local up --base-port (default 26000; uses 127.0.0.1:N..N+30)
  --timeout MIN    give up when the cluster is not up after MIN minutes of make run (default 40)
  --rebuild-base   debootstrap again even when DIR holds a base from an earlier --keep run
EOF
}

root=/var/tmp/pgbaton-fresh-root
keep=0
rev=HEAD
base_port=26000
timeout_min=40
rebuild_base=0
while (($#)); do
    case $1 in
        --root) root=${2:?--root needs a directory}; shift 2 ;;
        --keep) keep=1; shift ;;
        --rev) rev=${2:?--rev needs a commit}; shift 2 ;;
        --base-port) base_port=${2:?--base-port needs a port}; shift 2 ;;
        --timeout) timeout_min=${2:?--timeout needs minutes}; shift 2 ;;
        --rebuild-base) rebuild_base=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done

repo=$(cd "$(dirname "$0")/.." && pwd)
started=$(date +%s)
reason=""
passed=0
mounts=()   # mount points, in the order they were mounted
run_pid=""  # the session leader of `make run` in the root

step() { printf '[%s +%4ss] %s\n' "$(date +%T)" "$(($(date +%s) - started))" "$*"; }
fail() { reason=$*; exit 1; }

# --- cleanup: processes first, then mounts (reverse order), then the directory ------------------

# Pids of processes whose root directory is inside $root (chrooted there).
procs_in_root() {
    local p r
    for p in /proc/[0-9]*; do
        r=$(readlink "$p/root" 2>/dev/null) || continue
        case $r in "$root" | "$root"/*) echo "${p#/proc/}" ;; esac
    done
}

describe_procs() {
    local p
    for p in "$@"; do
        printf '    pid %s: %s\n' "$p" "$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -c1-150)"
    done
}

kill_procs_in_root() {
    local pids i
    if [ -n "$run_pid" ] && kill -0 "$run_pid" 2>/dev/null; then
        kill -TERM -- "-$run_pid" 2>/dev/null || true
    fi
    for i in $(seq 1 20); do
        mapfile -t pids < <(procs_in_root)
        ((${#pids[@]})) || return 0
        if ((i == 1)); then
            step "cleanup: stopping ${#pids[@]} process(es) left in the root"
            describe_procs "${pids[@]}"
        fi
        if ((i < 12)); then kill -TERM "${pids[@]}" 2>/dev/null || true
        else kill -KILL "${pids[@]}" 2>/dev/null || true; fi
        sleep 0.5
    done
    mapfile -t pids < <(procs_in_root)
    ((${#pids[@]} == 0)) || { echo "error: processes still in the root:" >&2; describe_procs "${pids[@]}" >&2; }
}

unmount_all() {
    local i t
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
        t=${mounts[i]}
        findmnt -rn --mountpoint "$t" >/dev/null 2>&1 || continue
        umount "$t" 2>/dev/null || { echo "warning: $t busy; lazy unmount" >&2; umount -l "$t" || true; }
    done
    mounts=()
}

# Mount points under $root that are still mounted, deepest first.
mounts_under_root() {
    findmnt -rn -o TARGET | awk -v r="$root" 'index($0, r "/") == 1 || $0 == r' | sort -r
}

cleanup() {
    local rc=$? left t
    set +e
    trap - EXIT INT TERM
    kill_procs_in_root
    unmount_all
    mapfile -t left < <(mounts_under_root)
    for t in "${left[@]}"; do
        echo "warning: unmounting $t, still mounted" >&2
        umount "$t" 2>/dev/null || umount -l "$t"
    done
    mapfile -t left < <(mounts_under_root)
    if ((${#left[@]})); then
        echo "error: still mounted: ${left[*]}; not removing $root" >&2
        [ -n "$reason" ] || reason="mounts left behind: ${left[*]}"
        passed=0
    elif ((keep)); then
        step "cleanup: kept $root (base reused by the next run; --rebuild-base to debootstrap again)"
    elif [ -f "$root/.pgbaton-fresh-root" ]; then
        step "cleanup: removing $root"
        rm -rf --one-file-system "$root"
        step "cleanup: removed $root"
    fi
    step "cleanup: no process left in the root, no mount left under $root"
    if ((passed && rc == 0)); then
        echo "fresh-debian-check: PASS (make run on a fresh Debian 12 minbase root: build, cluster, write and read through the router, clean Ctrl-C; $(($(date +%s) - started)) s)"
        exit 0
    fi
    [ -n "$reason" ] || reason="interrupted or unexpected error (exit status $rc)"
    echo "fresh-debian-check: FAIL: $reason"
    exit 1
}
trap cleanup EXIT
trap 'reason="interrupted"; exit 130' INT TERM

# --- checks on the host ---------------------------------------------------------------------------

[ "$(id -u)" -eq 0 ] || fail "run as root (debootstrap, chroot and mount need it)"
case $root in /*) ;; *) root=$(pwd)/$root ;; esac
root=$(realpath -m "$root")
case $root in / | /var | /var/tmp | /tmp | /root | /home | /usr | /etc) fail "--root $root: choose a directory of its own" ;; esac
if [ -e "$root" ] && [ ! -f "$root/.pgbaton-fresh-root" ] && [ -n "$(ls -A "$root" 2>/dev/null)" ]; then
    reason="$root exists, is not empty and was not made by this script; choose another --root"
    trap - EXIT; echo "fresh-debian-check: FAIL: $reason"; exit 1
fi
if [ -n "$(mounts_under_root)" ]; then
    reason="something is mounted under $root already (another run?): $(mounts_under_root | tr '\n' ' ')"
    trap - EXIT; echo "fresh-debian-check: FAIL: $reason"; exit 1
fi
if ! [[ $base_port =~ ^[0-9]+$ ]] || ((base_port < 1024 || base_port > 65000)); then
    fail "--base-port $base_port: choose 1024 to 65000"
fi

step "host: checking tools"
export DEBIAN_FRONTEND=noninteractive
if ! command -v debootstrap >/dev/null; then
    step "host: installing debootstrap"
    { apt-get update -q && apt-get install -y -q debootstrap; } >/tmp/fresh-check-debootstrap-install.log 2>&1 ||
        { cat /tmp/fresh-check-debootstrap-install.log; fail "apt-get install debootstrap failed on the host"; }
fi
for tool in git chroot findmnt setsid realpath; do
    command -v "$tool" >/dev/null || fail "$tool not found on the host"
done
cargo_path=$(command -v cargo || true)
[ -n "$cargo_path" ] || [ ! -x "$HOME/.cargo/bin/cargo" ] || cargo_path=$HOME/.cargo/bin/cargo
[ -n "$cargo_path" ] || fail "cargo not found on the host (PATH or ~/.cargo/bin): this check lends the host's Rust toolchain to the root"
cargo_bin=$(dirname "$(realpath -s "$cargo_path")")
[ -x "$cargo_bin/rustup" ] || fail "$cargo_bin has no rustup: this check expects a rustup installation (found $cargo_path)"
rustup_home=${RUSTUP_HOME:-$("$cargo_bin/rustup" show home 2>/dev/null || echo "$HOME/.rustup")}
[ -d "$rustup_home/toolchains" ] || fail "no rustup toolchains in $rustup_home"
step "host: Rust toolchain: $cargo_bin (rustup home $rustup_home, $("$cargo_bin/rustc" --version))"

# The Debian mirror this machine uses (deb822 .sources or one-line .list), else deb.debian.org.
mirror=""
security=""
for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    while IFS= read -r line; do
        case $line in
            URIs:*debian-security*) [ -n "$security" ] || security=$(awk '{print $2}' <<<"$line") ;;
            URIs:*/debian | URIs:*/debian/) [ -n "$mirror" ] || mirror=$(awk '{print $2}' <<<"$line") ;;
        esac
    done <"$f"
done
if [ -z "$mirror" ]; then
    mirror=$(awk '$1 == "deb" && $3 == "bookworm" && $2 !~ /^\[/ {print $2; exit}' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}
mirror=${mirror%/}
security=${security:-http://deb.debian.org/debian-security}
security=${security%/}
step "host: Debian mirror $mirror (security: $security)"

sha=$(git -C "$repo" rev-parse --verify "$rev^{commit}") || fail "--rev $rev: not a commit of $repo"
step "source: $repo at $(git -C "$repo" log -1 --format='%h %s' "$sha" | cut -c1-100)"
if [ "$rev" = HEAD ] && [ -n "$(git -C "$repo" status --porcelain -- scripts Makefile)" ]; then
    step "note: uncommitted changes under scripts/ or in Makefile are NOT tested (the root gets a clone of the commit):"
    git -C "$repo" status --porcelain -- scripts Makefile | sed 's/^/    /'
fi

mkdir -p "$root"
touch "$root/.pgbaton-fresh-root"
base=$root/base
upper=$root/upper
work=$root/work
merged=$root/merged
runlog=$root/make-run.log

do_mount() { # mount ARGS... TARGET (the last argument)
    local target=${*: -1}
    mount "$@" || fail "mount $* failed"
    mounts+=("$target")
    mount --make-private "$target" 2>/dev/null || true
}

# /proc, /sys, a small /dev of its own (tmpfs with the usual nodes, not the host's /dev), /dev/pts
# and /dev/shm: what apt's scripts, PostgreSQL (POSIX shared memory) and the router need.
mount_system() {
    local r=$1 n
    do_mount -t proc -o nosuid,nodev,noexec proc "$r/proc"
    do_mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$r/sys"
    do_mount -t tmpfs -o mode=0755,nosuid,size=16m tmpfs "$r/dev"
    for n in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
        IFS=: read -r name major minor <<<"$n"
        mknod -m 0666 "$r/dev/$name" c "$major" "$minor" || fail "mknod $r/dev/$name failed"
    done
    ln -s /proc/self/fd "$r/dev/fd"
    ln -s /proc/self/fd/0 "$r/dev/stdin"
    ln -s /proc/self/fd/1 "$r/dev/stdout"
    ln -s /proc/self/fd/2 "$r/dev/stderr"
    ln -s pts/ptmx "$r/dev/ptmx"
    mkdir -p "$r/dev/pts" "$r/dev/shm"
    do_mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5,nosuid,noexec devpts "$r/dev/pts"
    do_mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$r/dev/shm"
}

# The environment of a fresh login as root on the new machine (nothing of the host's).
root_env=(HOME=/root USER=root LOGNAME=root SHELL=/bin/bash TERM=dumb
          PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
          RUSTUP_HOME=/root/.rustup CARGO_HOME=/root/.cargo)
in_root() { # in_root DIR COMMAND...
    local r=$1
    shift
    chroot "$r" /usr/bin/env -i "${root_env[@]}" "$@"
}

# Certificates the host trusts that the root's ca-certificates lacks (a TLS-intercepting proxy's
# CA on the way to crates.io, for instance) become local CAs of this run's root, as an admin
# would add them on a new machine behind that proxy; without them cargo cannot download.
trust_host_cas() {
    local bundle=/etc/ssl/certs/ca-certificates.crt dir=$merged/usr/local/share/ca-certificates/fresh-check-host n
    [ -f "$bundle" ] || return 0
    mkdir -p "$dir"
    awk -v dir="$dir" '
        /-----BEGIN CERTIFICATE-----/ { cert = "" }
        { cert = cert $0 "\n" }
        /-----END CERTIFICATE-----/ {
            if (FILENAME == ARGV[1]) known[cert] = 1
            else if (!(cert in known)) { n++; printf "%s", cert > (dir "/host-" n ".crt"); close(dir "/host-" n ".crt") }
        }' "$merged/etc/ssl/certs/ca-certificates.crt" "$bundle"
    n=$(find "$dir" -name '*.crt' | wc -l)
    if ((n == 0)); then
        rmdir "$dir"
        return 0
    fi
    in_root "$merged" update-ca-certificates >"$root/update-ca-certificates.log" 2>&1 ||
        { cat "$root/update-ca-certificates.log"; fail "update-ca-certificates in the root failed"; }
    step "root: trusting $n CA certificate(s) that the host trusts and Debian's ca-certificates lacks: $(
        for f in "$dir"/*.crt; do
            openssl x509 -noout -subject -nameopt multiline -in "$f" 2>/dev/null | awk -F' = ' '/commonName/ {print $2}'
        done | sort | paste -sd ';' | sed 's/;/; /g' | cut -c1-300)"
}

# --- the base system: debootstrap minbase + gcc, make, git, ca-certificates -------------------------

if ((rebuild_base)) || [ ! -f "$base/.pgbaton-base-ok" ]; then
    rm -rf --one-file-system "$base" "$upper" "$work" "$merged"
    step "base: debootstrap --variant=minbase bookworm $base $mirror (~2 min)"
    debootstrap --variant=minbase bookworm "$base" "$mirror" >"$root/debootstrap.log" 2>&1 ||
        { tail -n 20 "$root/debootstrap.log"; fail "debootstrap failed (log: $root/debootstrap.log)"; }
    # A real Debian 12 install: bookworm, bookworm-updates and security.
    rm -f "$base/etc/apt/sources.list"
    cat >"$base/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    # A chroot is not a booted system: packages must not start services (Debian's postgresql
    # and etcd-server would listen on the host's 5432 and 2379).
    printf '#!/bin/sh\nexit 101\n' >"$base/usr/sbin/policy-rc.d"
    chmod 0755 "$base/usr/sbin/policy-rc.d"
    rm -f "$base/etc/resolv.conf"
    cp /etc/resolv.conf "$base/etc/resolv.conf"
    mount_system "$base"
    step "base: apt-get install gcc make git ca-certificates (as a user would: with Recommends)"
    in_root "$base" /bin/sh -c 'export DEBIAN_FRONTEND=noninteractive; apt-get update -q && apt-get install -y -q gcc make git ca-certificates && apt-get clean' \
        >"$root/base-packages.log" 2>&1 ||
        { tail -n 20 "$root/base-packages.log"; fail "installing gcc make git ca-certificates in the base failed"; }
    unmount_all
    date -u +%FT%TZ >"$base/.pgbaton-base-ok"
else
    step "base: reusing $base from $(cat "$base/.pgbaton-base-ok") (--rebuild-base to debootstrap again)"
fi
# shellcheck disable=SC2016 # ${Status} is dpkg-query's
if in_root "$base" dpkg-query -W -f='${Status}\n' libprotobuf-dev protobuf-compiler postgresql-15 2>/dev/null | grep -q 'install ok installed'; then
    fail "the base is not pristine (protobuf or PostgreSQL installed); run with --rebuild-base"
fi

# --- this run's root: an overlay on the base, the toolchain, the clone ----------------------------

rm -rf --one-file-system "$upper" "$work" "$merged" "$runlog"
mkdir -p "$upper" "$work" "$merged"
do_mount -t overlay overlay -o "lowerdir=$base,upperdir=$upper,workdir=$work" "$merged"
mount_system "$merged"
rm -f "$merged/etc/resolv.conf" "$merged/etc/hosts"   # never write through a symlink of the root
cp /etc/resolv.conf "$merged/etc/resolv.conf"
cp /etc/hosts "$merged/etc/hosts"
trust_host_cas
mkdir -p "$merged/root/.rustup" "$merged/root/.cargo/bin"
do_mount --bind "$rustup_home" "$merged/root/.rustup"
mount -o remount,bind,ro "$merged/root/.rustup" || fail "cannot make $merged/root/.rustup read-only"
do_mount --bind "$cargo_bin" "$merged/root/.cargo/bin"
mount -o remount,bind,ro "$merged/root/.cargo/bin" || fail "cannot make $merged/root/.cargo/bin read-only"
in_root "$merged" cargo --version >/dev/null 2>&1 || fail "cargo does not run in the root: $(in_root "$merged" cargo --version 2>&1 | tail -1)"
step "root: $merged ready: $(in_root "$merged" cargo --version), $(in_root "$merged" gcc --version | head -1), registry cache empty: $([ -e "$merged/root/.cargo/registry" ] && echo no || echo yes)"

git clone -q --no-hardlinks "$repo" "$merged/root/pgbaton" || fail "git clone $repo failed"
git -C "$merged/root/pgbaton" checkout -q --detach "$sha" || fail "git checkout $sha failed"
step "root: cloned $repo into /root/pgbaton at $(git -C "$merged/root/pgbaton" log -1 --format=%h)"

# --- make run ---------------------------------------------------------------------------------------

args="--base-port $base_port"
step "run: make run ARGS=\"$args\" in /root/pgbaton (apt, release build, local up; log: $runlog)"
run_started=$(date +%s)
# A background job of a non-interactive shell is not a process group leader, so setsid makes
# this very process (chroot, then env, bash, make by exec) the leader of a new session/group.
setsid chroot "$merged" /usr/bin/env -i "${root_env[@]}" /bin/bash -c \
    "cd /root/pgbaton && exec make run ARGS=\"$args\"" </dev/null >"$runlog" 2>&1 &
run_pid=$!

seen=""
milestone() { # milestone KEY PATTERN MESSAGE: print MESSAGE the first time PATTERN is in the log
    case " $seen " in *" $1 "*) return ;; esac
    if grep -qE -- "$2" "$runlog"; then
        seen="$seen $1"
        step "run: $3"
    fi
}
last_report=$(date +%s)
deadline=$((run_started + timeout_min * 60))
while :; do
    milestone apt '^installing: ' "install-deps.sh: $(grep -m1 '^installing: ' "$runlog" | cut -c1-160)"
    milestone compile '^ +Compiling ' "cargo: downloading done, compiling"
    milestone built '^ +Finished .release' "cargo: $(grep -m1 -E '^ +Finished .release' "$runlog" | sed 's/^ *//')"
    milestone etcd '^etcd running at ' "$(grep -m1 '^etcd running at ' "$runlog")"
    if grep -q '^Ctrl-C stops the cluster' "$runlog"; then
        break
    fi
    if ! kill -0 "$run_pid" 2>/dev/null; then
        rc=0
        wait "$run_pid" || rc=$?
        run_pid=""
        echo "---- last 40 lines of make run ----"
        tail -n 40 "$runlog" | cut -c1-400
        echo "-----------------------------------"
        if grep -q 'descriptor.proto: File not found' "$runlog"; then
            fail "make run exited with status $rc before the cluster came up: protoc cannot find google/protobuf/descriptor.proto (libprotobuf-dev missing)"
        fi
        fail "make run exited with status $rc before the cluster came up (last line: $(grep -v '^\s*$' "$runlog" | tail -n 1 | cut -c1-160))"
    fi
    now=$(date +%s)
    if ((now >= deadline)); then
        echo "---- last 40 lines of make run ----"
        tail -n 40 "$runlog"
        fail "the cluster was not up after $timeout_min minutes of make run"
    fi
    if ((now - last_report >= 60)); then
        last_report=$now
        step "run: waiting ($(grep -v '^\s*$' "$runlog" | tail -n 1 | sed 's/^ *//' | cut -c1-110))"
    fi
    sleep 3
done
step "run: cluster up $(($(date +%s) - run_started)) s after make run started; local up printed:"
sed -n '/^+ Cluster:/,/^Ctrl-C stops/p' "$runlog" | sed 's/^/    /'

# router: write 127.0.0.1:N+2 (leader)  read 127.0.0.1:N+3 (replicas)  status http://...
router_line=$(grep -m1 '^router: write ' "$runlog" || true)
write_addr=$(grep -oE 'write [0-9.]+:[0-9]+' <<<"$router_line" | cut -d' ' -f2 || true)
read_addr=$(grep -oE 'read [0-9.]+:[0-9]+' <<<"$router_line" | cut -d' ' -f2 || true)
[[ $write_addr == 127.0.0.1:* ]] || fail "no router write address (127.0.0.1:PORT) in local up's output"
[[ $read_addr == 127.0.0.1:* ]] || fail "no router read address (127.0.0.1:PORT) in local up's output"

# --- a write and a read-back through the router -----------------------------------------------------

psql_at() { # psql_at HOST:PORT SQL...: psql of the root, through the router
    local addr=$1 a
    shift
    local cmd=(psql -X -qAt -F ' ' -v ON_ERROR_STOP=1 -h "${addr%:*}" -p "${addr##*:}" -U postgres -d postgres)
    for a in "$@"; do cmd+=(-c "$a"); done
    in_root "$merged" env PGPASSWORD=postgres PGCONNECT_TIMEOUT=10 "${cmd[@]}"
}
token="fresh-check-$(date +%s)-$$"
step "sql: write through the router's write port $write_addr"
out=$(psql_at "$write_addr" \
    "CREATE TABLE IF NOT EXISTS fresh_check (id bigserial PRIMARY KEY, token text NOT NULL, at timestamptz NOT NULL DEFAULT now())" \
    "INSERT INTO fresh_check (token) VALUES ('$token') RETURNING id" 2>&1) ||
    fail "psql write through $write_addr failed: $(tr '\n' ' ' <<<"$out")"
step "sql: inserted id $out"
out=$(psql_at "$write_addr" \
    "SELECT token, pg_is_in_recovery(), inet_server_port() FROM fresh_check WHERE token = '$token'" 2>&1) ||
    fail "psql read-back through $write_addr failed: $(tr '\n' ' ' <<<"$out")"
read -r got_token in_recovery server_port <<<"$out"
[ "$got_token" = "$token" ] || fail "read back through $write_addr: expected '$token', got '$out'"
[ "$in_recovery" = f ] || fail "the write port $write_addr reached a member in recovery (port $server_port)"
step "sql: read back '$got_token' through $write_addr: the leader on port $server_port, not in recovery"
got=""
for _ in $(seq 1 30); do
    got=$(psql_at "$read_addr" \
        "SELECT count(*), pg_is_in_recovery(), inet_server_port() FROM fresh_check WHERE token = '$token'" 2>/dev/null || true)
    [[ $got == "1 t "* ]] && break
    sleep 0.5
done
[[ $got == "1 t "* ]] || fail "the row did not reach a replica through the read port $read_addr within 15 s (last answer: '$got')"
step "sql: the row is on the replica on port ${got##* } (read port $read_addr)"

# --- Ctrl-C -------------------------------------------------------------------------------------------

step "stop: SIGINT to make run's process group (what Ctrl-C does)"
kill -INT -- "-$run_pid" || fail "cannot signal make run's process group $run_pid"
stop_started=$(date +%s)
while kill -0 "$run_pid" 2>/dev/null; do
    if (($(date +%s) - stop_started > 120)); then
        tail -n 20 "$runlog"
        fail "make run did not exit within 120 s of SIGINT"
    fi
    sleep 0.5
done
rc=0
wait "$run_pid" || rc=$?
run_pid=""
step "stop: make run exited with status $rc after $(($(date +%s) - stop_started)) s; its last lines:"
sed -n '/^Ctrl-C stops the cluster/,$p' "$runlog" | tail -n +2 | tail -n 12 | sed 's/^/    /'
((rc == 0)) || fail "make run exited with status $rc after SIGINT (expected 0)"
grep -q '^stopped; data kept in' "$runlog" || fail "local up did not print 'stopped; data kept in ...' after SIGINT"
for _ in 1 2 3 4 5 6; do
    mapfile -t left < <(procs_in_root)
    ((${#left[@]})) || break
    sleep 0.5
done
if ((${#left[@]})); then
    describe_procs "${left[@]}"
    fail "${#left[@]} process(es) still running in the root 3 s after make run exited (postgres/etcd/agents not stopped)"
fi
step "stop: no process left in the root (no postgres, etcd, agent or router)"
passed=1

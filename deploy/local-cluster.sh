#!/usr/bin/env bash
# Start a local shoal cluster of 3 nodes on 127.0.0.1, wait until every node
# is ready, print Django CACHES settings for it, and stay in the foreground.
# Ctrl-C (or SIGTERM) stops every node gracefully.
#
#   deploy/local-cluster.sh [--base-port PORT] [-m MB] [--nodes N]
#                           [--timeout SECONDS] [--log-dir DIR] [--no-build]
#                           [-- EXTRA SHOAL FLAGS...]
#
# Node i (shoal-0, shoal-1, ...) listens on 127.0.0.1 with
#   memcache  BASE+i      (11211, 11212, 11213)
#   gossip    BASE+10+i   (11221, 11222, 11223; UDP)
#   peer      BASE+20+i   (11231, 11232, 11233; gRPC)
#   http      BASE+30+i   (11241, 11242, 11243; /metrics /healthz /readyz)
# so one --base-port (or SHOAL_BASE_PORT) moves them all. shoal-0 starts the
# cluster (no --seeds); the others join with --seeds 127.0.0.1:BASE+10.
# -m is each node's item memory in megabytes (default 64); flags after --
# go to every node as they are (e.g. -- -v).
#
# Environment:
#   SHOAL_BIN            the shoal binary to run (default: build it with
#                        cargo, then run target/release/shoal)
#   SHOAL_BASE_PORT      as --base-port (default 11211)
#   SHOAL_READY_TIMEOUT  as --timeout (default 60 seconds)
# Other SHOAL_* variables the binary reads (SHOAL_MAX_ITEM_SIZE,
# SHOAL_THREADS, SHOAL_LOG, ...) reach every node; SHOAL_SEEDS,
# SHOAL_ADVERTISE_HOST and SHOAL_UNIX_SOCKET are cleared, since one value
# cannot fit three nodes (and shoal-0 must start without seeds).
set -euo pipefail

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

die() {
    printf 'local-cluster: %s\n' "$*" >&2
    exit 1
}

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

nodes=3
base_port=${SHOAL_BASE_PORT:-11211}
memory=64
ready_timeout=${SHOAL_READY_TIMEOUT:-60}
stop_timeout=20
log_dir=""
build=1
extra=()

while (($#)); do
    case $1 in
        --base-port) base_port=${2:?--base-port needs a port}; shift 2 ;;
        --base-port=*) base_port=${1#*=}; shift ;;
        -m | --memory) memory=${2:?-m needs megabytes}; shift 2 ;;
        --memory=*) memory=${1#*=}; shift ;;
        --nodes) nodes=${2:?--nodes needs a count}; shift 2 ;;
        --nodes=*) nodes=${1#*=}; shift ;;
        --timeout) ready_timeout=${2:?--timeout needs seconds}; shift 2 ;;
        --timeout=*) ready_timeout=${1#*=}; shift ;;
        --log-dir) log_dir=${2:?--log-dir needs a directory}; shift 2 ;;
        --log-dir=*) log_dir=${1#*=}; shift ;;
        --no-build) build=0; shift ;;
        -h | --help) usage; exit 0 ;;
        --) shift; extra=("$@"); break ;;
        *) die "unknown argument '$1' (see --help; shoal's own flags go after --)" ;;
    esac
done

is_uint "$base_port" || die "--base-port must be a number, not '$base_port'"
if ! is_uint "$nodes" || ((nodes < 1 || nodes > 10)); then
    die "--nodes must be 1 to 10, not '$nodes'"
fi
is_uint "$ready_timeout" || die "--timeout must be whole seconds, not '$ready_timeout'"
((base_port >= 1024 && base_port + 39 <= 65535)) ||
    die "--base-port must leave room for 40 ports between 1024 and 65535, not $base_port"

# --- the binary --------------------------------------------------------------

if [[ -n ${SHOAL_BIN:-} ]]; then
    bin=$SHOAL_BIN
    [[ -x $bin && ! -d $bin ]] || die "SHOAL_BIN=$bin is not an executable file"
else
    target_dir=${CARGO_TARGET_DIR:-target}
    [[ $target_dir == /* ]] || target_dir=$root/$target_dir
    bin=$target_dir/release/shoal
    if ((build)) && command -v cargo > /dev/null; then
        # Cargo rebuilds only what changed: quick when the binary is current.
        echo "==> cargo build --release -p shoal-server --bin shoal"
        (cd "$root" && cargo build --release -p shoal-server --bin shoal) ||
            die "the build failed"
    elif [[ -x $bin ]]; then
        ((build)) && echo "local-cluster: cargo not found; running the existing $bin" >&2
    else
        if ((build)); then
            die "no binary at $bin: install Rust (cargo) or set SHOAL_BIN"
        fi
        die "no binary at $bin: build it (drop --no-build) or set SHOAL_BIN"
    fi
fi

# --- ports, logs -------------------------------------------------------------

mc_port() { echo $((base_port + $1)); }
gossip_port() { echo $((base_port + 10 + $1)); }
peer_port() { echo $((base_port + 20 + $1)); }
http_port() { echo $((base_port + 30 + $1)); }

# A TCP port something already answers on would make a node fail to bind.
# (UDP gossip ports cannot be probed this way; a node that cannot bind its
# gossip port exits, and that is reported below with its log.)
tcp_in_use() { (exec 3<> "/dev/tcp/127.0.0.1/$1") 2> /dev/null; }
for ((i = 0; i < nodes; i++)); do
    for port in "$(mc_port "$i")" "$(peer_port "$i")" "$(http_port "$i")"; do
        if tcp_in_use "$port"; then
            die "127.0.0.1:$port is already in use (another shoal or memcached?); choose other ports with --base-port"
        fi
    done
done

if [[ -n $log_dir ]]; then
    mkdir -p "$log_dir"
else
    log_dir=$(mktemp -d "${TMPDIR:-/tmp}/shoal-local.XXXXXX")
fi

# One value of these cannot serve three nodes; the flags below set the rest.
unset SHOAL_SEEDS SHOAL_ADVERTISE_HOST SHOAL_UNIX_SOCKET SHOAL_NODE_NAME

# --- readiness probe ---------------------------------------------------------

# Prints the HTTP status of GET http://127.0.0.1:PORT/PATH, or 000 when
# nothing answered. curl when there is one, else bash's /dev/tcp.
if command -v curl > /dev/null; then
    http_status() {
        curl --silent --noproxy '*' --connect-timeout 1 --max-time 2 \
            --output /dev/null --write-out '%{http_code}' \
            "http://127.0.0.1:$1$2" 2> /dev/null || true
    }
else
    http_status() {
        local line
        line=$(
            exec 2> /dev/null
            exec 3<> "/dev/tcp/127.0.0.1/$1" || exit 0
            printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' "$2" "$1" >&3
            IFS= read -r -t 2 status_line <&3 && printf '%s' "$status_line"
        ) || true
        if [[ $line =~ ^HTTP/[0-9.]+\ ([0-9][0-9][0-9]) ]]; then
            echo "${BASH_REMATCH[1]}"
        else
            echo 000
        fi
    }
fi

# --- start, stop -------------------------------------------------------------

pids=()
running=()    # 1 while node i has not been seen to exit
stopping=0

alive() { kill -0 "${pids[$1]}" 2> /dev/null; }

show_log() {
    local log=$log_dir/shoal-$1.log
    printf '    --- last lines of %s ---\n' "$log" >&2
    tail -n 15 "$log" 2> /dev/null | sed 's/^/    /' >&2 || true
}

# SIGTERM to every node, then wait for each (a node leaves the cluster
# gracefully on SIGTERM); one that is still there after $stop_timeout
# seconds is killed.
stop_nodes() {
    ((stopping)) && return 0
    stopping=1
    local i pid deadline left
    for i in "${!pids[@]}"; do
        if ((running[i])) && alive "$i"; then
            kill -TERM "${pids[$i]}" 2> /dev/null || true
        fi
    done
    deadline=$((SECONDS + stop_timeout))
    while :; do
        left=0
        for i in "${!pids[@]}"; do
            alive "$i" && left=1
        done
        ((left && SECONDS < deadline)) || break
        sleep 0.1
    done
    for i in "${!pids[@]}"; do
        if alive "$i"; then
            echo "local-cluster: shoal-$i did not stop within ${stop_timeout}s; killing it" >&2
            kill -KILL "${pids[$i]}" 2> /dev/null || true
        fi
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2> /dev/null || true
    done
    echo "==> stopped; logs are in $log_dir"
}

on_signal() {
    trap '' INT TERM
    echo
    local i n=0
    for i in "${!pids[@]}"; do
        alive "$i" && n=$((n + 1))
    done
    echo "==> $1: stopping $n nodes (SIGTERM, then waiting)"
    stop_nodes
    trap - EXIT
    exit "$2"
}
trap 'on_signal SIGINT 130' INT
trap 'on_signal SIGTERM 143' TERM
trap 'stop_nodes' EXIT

echo "==> starting $nodes shoal nodes ($bin); logs in $log_dir"
# Job control puts each node in a process group of its own, so a Ctrl-C in
# the terminal reaches this script only, and each node gets exactly one
# SIGTERM from stop_nodes (not a SIGINT from the terminal as well).
set -m
for ((i = 0; i < nodes; i++)); do
    args=(-p "$(mc_port "$i")" -l 127.0.0.1 --node-name "shoal-$i"
        --gossip-port "$(gossip_port "$i")" --peer-port "$(peer_port "$i")"
        --http-port "$(http_port "$i")" -m "$memory")
    ((i == 0)) || args+=(--seeds "127.0.0.1:$(gossip_port 0)")
    args+=(${extra[@]+"${extra[@]}"})
    printf '    shoal-%d: %s %s\n' "$i" "$(basename "$bin")" "${args[*]}"
    # NO_COLOR: plain text in the log files, no terminal colour codes.
    NO_COLOR=1 "$bin" "${args[@]}" < /dev/null > "$log_dir/shoal-$i.log" 2>&1 &
    pids[i]=$!
    running[i]=1
done
set +m

# --- wait until every node answers /readyz with 200 --------------------------

printf '==> waiting (up to %ss) for /readyz on every node' "$ready_timeout"
deadline=$((SECONDS + ready_timeout))
codes=()
while :; do
    ready=0
    for ((i = 0; i < nodes; i++)); do
        if ! alive "$i"; then
            status=0
            wait "${pids[$i]}" || status=$?
            running[i]=0
            echo
            echo "local-cluster: shoal-$i exited (status $status) before it was ready" >&2
            show_log "$i"
            exit 1
        fi
        codes[i]=$(http_status "$(http_port "$i")" /readyz)
        [[ ${codes[$i]} == 200 ]] && ready=$((ready + 1))
    done
    ((ready == nodes)) && break
    if ((SECONDS >= deadline)); then
        echo
        echo "local-cluster: not every node was ready after ${ready_timeout}s:" >&2
        for ((i = 0; i < nodes; i++)); do
            if [[ ${codes[$i]} != 200 ]]; then
                echo "  shoal-$i: GET http://127.0.0.1:$(http_port "$i")/readyz -> ${codes[$i]/#000/no answer}" >&2
                show_log "$i"
            fi
        done
        exit 1
    fi
    printf '.'
    sleep 0.25
done
echo " ready"

# --- tell the user how to use it ---------------------------------------------

echo
echo "shoal: $nodes nodes ready on 127.0.0.1"
printf '  %-8s %-9s %-11s %-9s %s\n' node memcache gossip/udp peer http
for ((i = 0; i < nodes; i++)); do
    printf '  %-8s %-9s %-11s %-9s http://127.0.0.1:%s/metrics\n' "shoal-$i" \
        "$(mc_port "$i")" "$(gossip_port "$i")" "$(peer_port "$i")" "$(http_port "$i")"
done
echo "  logs: $log_dir"

location() {
    local i
    for ((i = 0; i < nodes; i++)); do
        printf '            "127.0.0.1:%s",\n' "$(mc_port "$i")"
    done
}

others() {
    local i list=()
    for ((i = 1; i < nodes; i++)); do
        list+=("127.0.0.1:$(mc_port "$i")")
    done
    if ((${#list[@]} == 0)); then
        echo "none (a cluster of one)"
    else
        echo "${list[*]}"
    fi
}

cat << EOF

Django settings, one per backend. Every node answers for every key, so a
client may spread keys over the nodes however it likes:

# pymemcache, text protocol
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
        "LOCATION": [
$(location)
        ],
    }
}

# pylibmc, binary protocol (add "username"/"password" to OPTIONS for SASL)
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.memcached.PyLibMCCache",
        "LOCATION": [
$(location)
        ],
        "OPTIONS": {
            "binary": True,
            "behaviors": {"tcp_nodelay": True},
        },
    }
}

# django-bmemcached (python-binary-memcached), binary protocol with SASL.
# One node: this client sends every write to *each* server it is given
# (replication), which a cluster does not need and which would apply an
# incr/decr once per node. Any node serves every key; the others are
# $(others).
CACHES = {
    "default": {
        "BACKEND": "django_bmemcached.memcached.BMemcached",
        "LOCATION": "127.0.0.1:$(mc_port 0)",
        "OPTIONS": {"username": "app", "password": "secret"},
    }
}

Press Ctrl-C to stop the cluster.
EOF

# --- stay in the foreground --------------------------------------------------

# Report nodes that exit on their own (stopping one by hand to watch the
# others carry on is fine); return when none is left.
while :; do
    left=0
    for ((i = 0; i < nodes; i++)); do
        ((running[i])) || continue
        if alive "$i"; then
            left=$((left + 1))
        else
            status=0
            wait "${pids[$i]}" || status=$?
            running[i]=0
            echo "local-cluster: shoal-$i exited (status $status); log: $log_dir/shoal-$i.log" >&2
        fi
    done
    if ((left == 0)); then
        echo "local-cluster: every node has exited; logs are in $log_dir" >&2
        trap - EXIT
        exit 1
    fi
    # `wait` returns as soon as a trapped signal arrives; a plain `sleep`
    # would hold Ctrl-C back until it ended.
    sleep 1 &
    wait $! || true
done

#!/usr/bin/env bash
# bench/callgrind.sh — instructions per request, counted by callgrind
# (repeatable on a noisy machine, unlike timings), for shoal with metrics on
# and off (and, with BASELINE_BIN, another shoal build beside them).
#
# For each binary and setting, the node runs under `valgrind --tool=callgrind`
# twice: once serving N1 requests, once N2 (one connection, no pipelining,
# 90/10 get/set over preloaded 100 B values, shoal-loadgen --requests). The
# marginal cost (Ir(N2) - Ir(N1)) / (N2 - N1) cancels shutdown; start-up and
# the preload are left out by zeroing the counters (`callgrind_control -z`)
# once the node is filled. That matters: the clock calibration at start-up
# (quanta's, with metrics on) runs for up to 200 ms of wall time, so under
# valgrind its instruction count varies from run to run by more than the
# whole cost of metrics per request.
#
# Usage: bench/callgrind.sh
# Environment: SHOAL_BIN (default target/release/shoal), BASELINE_BIN (an
# older shoal to compare, optional), N1 (default 20000), N2 (default 60000),
# PIPELINE (default 1), PROTOCOL (text|binary, default text), PORT (24300).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHOAL_BIN=${SHOAL_BIN:-$ROOT/target/release/shoal}
LOADGEN=${LOADGEN:-$ROOT/target/release/shoal-loadgen}
BASELINE_BIN=${BASELINE_BIN:-}
N1=${N1:-20000}
N2=${N2:-60000}
PIPELINE=${PIPELINE:-1}
PROTOCOL=${PROTOCOL:-text}
PORT=${PORT:-24300}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

command -v valgrind >/dev/null || { echo "callgrind.sh: needs valgrind" >&2; exit 1; }
[ -x "$LOADGEN" ] || (cd "$ROOT" && cargo build --release -q -p shoal-loadgen)

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ir BIN METRICS REQUESTS -> total instructions the server executed
ir() {
    local bin=$1 metrics=$2 n=$3 pid extra=()
    "$bin" --help | grep -q -- '--metrics' && extra=(--metrics "$metrics")
    valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.%p" -q \
        "$bin" -p "$PORT" -l 127.0.0.1 -t 1 -m 256 --gossip-port $((PORT + 1)) \
        --peer-port $((PORT + 2)) --http-port $((PORT + 3)) "${extra[@]}" \
        >"$OUT/server.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 600); do port_open "$PORT" && break; sleep 0.1; done
    "$LOADGEN" --server "127.0.0.1:$PORT" --protocol "$PROTOCOL" --fill 1000 --connections 1 --pipeline 32 >/dev/null
    callgrind_control -z "$pid" >/dev/null 2>&1 || { echo "callgrind.sh: callgrind_control -z failed" >&2; exit 1; }
    "$LOADGEN" --server "127.0.0.1:$PORT" --protocol "$PROTOCOL" --connections 1 --pipeline "$PIPELINE" \
        --keys 1000 --ratio 1:9 --requests "$n" --assume-preloaded >/dev/null
    kill -TERM "$pid"
    wait "$pid" || true
    awk '/^summary:/ { s += $2 } END { print s }' "$OUT"/cg."$pid"*
    rm -f "$OUT"/cg."$pid"*
}

per_request() {
    local a b
    a=$(ir "$1" "$2" "$N1")
    b=$(ir "$1" "$2" "$N2")
    awk -v a="$a" -v b="$b" -v n1="$N1" -v n2="$N2" 'BEGIN { printf "%.0f", (b - a) / (n2 - n1) }'
}

echo "instructions per request ($PROTOCOL, pipeline $PIPELINE, 90/10 get/set, marginal over $N1..$N2 requests):"
on=$(per_request "$SHOAL_BIN" on)
off=$(per_request "$SHOAL_BIN" off)
echo "  shoal, metrics on:  $on"
echo "  shoal, metrics off: $off"
awk -v on="$on" -v off="$off" 'BEGIN { printf "  metrics cost: %+.1f%%\n", 100 * (on - off) / off }'
if [ -n "$BASELINE_BIN" ]; then
    base=$(per_request "$BASELINE_BIN" on)
    echo "  baseline ($BASELINE_BIN): $base"
fi

#!/usr/bin/env bash
# bench/callgrind-cluster.sh — what forwarding costs in instructions: the
# instructions all nodes execute per client request, counted by callgrind
# (repeatable on this noisy machine), for a single node and for a 3-node
# cluster reached through node 0 (about 2/3 of keys owned elsewhere).
#
# Every node runs under `valgrind --tool=callgrind`. The client sends N1,
# then (in a fresh setup) N2 requests: CONNS connections, pipelined DEPTH
# deep, 90/10 get/set over 1000 preloaded 100 B values. The figure is the
# marginal (Ir(N2) - Ir(N1)) / (N2 - N1) summed over the nodes, counted
# from after the preload (`callgrind_control -z`), which leaves out start-up
# and cancels shutdown. Kernel time (syscalls, loopback TCP) is not
# counted: see bench/cluster.sh for wall-clock figures.
#
# Usage: bench/callgrind-cluster.sh
# Environment: SHOAL_BIN, N1 (20000), N2 (60000), CONNS (8), DEPTH (16),
# PROTOCOL (text|binary), PORT_BASE (24400), SETUPS ("single cluster").
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHOAL_BIN=${SHOAL_BIN:-$ROOT/target/release/shoal}
LOADGEN=${LOADGEN:-$ROOT/target/release/shoal-loadgen}
N1=${N1:-20000}
N2=${N2:-60000}
CONNS=${CONNS:-8}
DEPTH=${DEPTH:-16}
PROTOCOL=${PROTOCOL:-text}
B=${PORT_BASE:-24400}
SETUPS=${SETUPS:-single cluster}
OUT=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}
trap 'cleanup; rm -rf "$OUT"' EXIT

command -v valgrind >/dev/null || { echo "callgrind-cluster.sh: needs valgrind" >&2; exit 1; }
[ -x "$LOADGEN" ] || (cd "$ROOT" && cargo build --release -q -p shoal-loadgen)

ready() { curl -fsS "http://127.0.0.1:$1/readyz" >/dev/null 2>&1; }

# ir SETUP REQUESTS -> instructions executed by all nodes together
ir() {
    local n=1 i args
    [ "$1" = cluster ] && n=3
    rm -f "$OUT"/cg.*
    for i in $(seq 0 $((n - 1))); do
        args=(-p $((B + i)) -l 127.0.0.1 -m 256 -t 1 --node-name "shoal-$i" --gossip-port $((B + 10 + i))
            --peer-port $((B + 20 + i)) --http-port $((B + 30 + i)))
        [ "$i" -gt 0 ] && args+=(--seeds "127.0.0.1:$((B + 10))")
        valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.$i" -q "$SHOAL_BIN" "${args[@]}" \
            >"$OUT/node$i.log" 2>&1 &
        PIDS+=($!)
    done
    for _ in $(seq 1 600); do
        local ok=1
        for i in $(seq 0 $((n - 1))); do ready $((B + 30 + i)) || ok=0; done
        [ "$ok" = 1 ] && [ "$(curl -fsS "http://127.0.0.1:$((B + 30))/cluster" | grep -o '"state":"ready"' | wc -l)" -gt "$n" ] && break
        sleep 0.2
    done
    "$LOADGEN" --server "127.0.0.1:$B" --protocol "$PROTOCOL" --fill 1000 --connections 1 --pipeline 32 >/dev/null
    # Start-up and the preload are left out (as in callgrind.sh).
    for p in "${PIDS[@]}"; do
        callgrind_control -z "$p" >/dev/null 2>&1 || { echo "callgrind-cluster.sh: callgrind_control -z failed" >&2; exit 1; }
    done
    "$LOADGEN" --server "127.0.0.1:$B" --protocol "$PROTOCOL" --connections "$CONNS" --pipeline "$DEPTH" \
        --keys 1000 --ratio 1:9 --requests "$2" --assume-preloaded >/dev/null 2>&1
    for p in "${PIDS[@]}"; do kill -TERM "$p"; done
    cleanup
    cat "$OUT"/cg.* | awk '/^summary:/ { s += $2 } END { print s }'
}

echo "instructions per request, all nodes ($PROTOCOL, $CONNS connections, pipeline $DEPTH, 90/10 get/set, marginal over $N1..$N2):"
for s in $SETUPS; do
    a=$(ir "$s" "$N1")
    b=$(ir "$s" "$N2")
    awk -v s="$s" -v a="$a" -v b="$b" -v n1="$N1" -v n2="$N2" 'BEGIN { printf "  %-8s %.0f\n", s, (b - a) / (n2 - n1) }'
done

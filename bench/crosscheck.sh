#!/usr/bin/env bash
# bench/crosscheck.sh — check shoal-loadgen against an independent generator,
# Debian's memcaslap (libmemcached-tools), on workload (a): text, 100 B values,
# 1:9 set:get, 50 connections, one memcached (-t 1) pinned to SERVER_CPU and
# the generator pinned to CLIENT_CPU. The two generators take turns, REPS
# times each, against the same server.
#
# memcaslap cannot reproduce run.sh's key space exactly: its keys must be
# longer than 16 bytes and it has KEYS_PER_CONN (its --win_size, at least 1k)
# keys per connection. So both generators here use 20-byte keys and
# 50 x 1k = 50k keys; shoal-loadgen preloads them, memcaslap sets each key
# before it reads it.
#
# Usage: bench/crosscheck.sh   (environment: DURATION=10 REPS=3 SERVER_CPU=0
#   CLIENT_CPU=1 MEMCACHED_BIN MEMCASLAP_BIN PORT=22222 TARGET=host:port —
#   TARGET points both generators at an already running server instead;
#   WAIT_QUIET=seconds waits up to that long for an idle machine before each
#   run — on a shared machine, look at the "other load" column)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOADGEN=${LOADGEN:-$ROOT/target/release/shoal-loadgen}
MEMCACHED_BIN=${MEMCACHED_BIN:-memcached}
MEMCASLAP_BIN=${MEMCASLAP_BIN:-memcaslap}
DURATION=${DURATION:-10}
REPS=${REPS:-3}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
PORT=${PORT:-22222}
TARGET=${TARGET:-}
WAIT_QUIET=${WAIT_QUIET:-0}
CONNS=50
WIN=1k
KEYS=50000
KEY_LEN=20

die() { echo "crosscheck.sh: $*" >&2; exit 1; }
command -v "$MEMCASLAP_BIN" >/dev/null || die "no memcaslap (apt-get install libmemcached-tools)"
[ -x "$LOADGEN" ] || (cd "$ROOT" && cargo build --release -q -p shoal-loadgen) || die "cannot build shoal-loadgen"

SRV_PID=
TMP=$(mktemp -d)
cleanup() { [ -n "$SRV_PID" ] && kill "$SRV_PID" 2>/dev/null && wait "$SRV_PID" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -z "$TARGET" ]; then
    command -v "$MEMCACHED_BIN" >/dev/null || die "no memcached (apt-get install memcached)"
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && die "port $PORT is in use (set PORT)"
    args=()
    [ "$(id -u)" = 0 ] && args+=(-u root)
    taskset -c "$SERVER_CPU" "$MEMCACHED_BIN" -p "$PORT" -l 127.0.0.1 -m 1024 -t 1 "${args[@]}" &
    SRV_PID=$!
    for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.05; done
    TARGET=127.0.0.1:$PORT
fi

# memcaslap's configuration: fixed 20 B keys and 100 B values, 10% sets.
cat >"$TMP/memcaslap.cfg" <<EOF
key
$KEY_LEN $KEY_LEN 1
value
100 100 1
cmd
0 0.1
1 0.9
EOF

server_ticks() { [ -n "$SRV_PID" ] && awk '{ print $14 + $15 }' "/proc/$SRV_PID/stat" || echo 0; }
hz=$(getconf CLK_TCK)
# Busy ticks of the whole machine, to show CPU taken by other processes.
machine_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
wait_quiet() {
    local end=$((SECONDS + WAIT_QUIET)) b0 b1
    while [ "$SECONDS" -lt "$end" ]; do
        b0=$(machine_ticks); sleep 2; b1=$(machine_ticks)
        [ $(( (b1 - b0) * 100 / (2 * hz) )) -lt 5 ] && return 0
    done
}

"$LOADGEN" --server "$TARGET" --fill "$KEYS" --key-len "$KEY_LEN" --value-size 100 \
    --connections 4 --pipeline 32 >/dev/null

echo "| rep | generator | ops/s | generator CPU | server CPU | other load |"
echo "|---:|---|---:|---:|---:|---:|"
for rep in $(seq 1 "$REPS"); do
    wait_quiet
    s0=$(server_ticks); m0=$(machine_ticks)
    out=$(taskset -c "$CLIENT_CPU" "$LOADGEN" --server "$TARGET" --connections "$CONNS" --keys "$KEYS" \
        --key-len "$KEY_LEN" --value-size 100 --ratio 1:9 --duration "$DURATION" --assume-preloaded)
    s1=$(server_ticks); m1=$(machine_ticks)
    json=$(grep '^{' <<<"$out")
    awk -v j="$json" -v r="$rep" -v s="$((s1 - s0))" -v m="$((m1 - m0))" -v hz="$hz" -v d="$DURATION" 'BEGIN {
        match(j, /"ops_per_sec":[0-9.]+/); ops = substr(j, RSTART + 14, RLENGTH - 14)
        match(j, /"client_cpu_util":[0-9.]+/); cu = substr(j, RSTART + 18, RLENGTH - 18)
        su = s / hz / d; o = m / hz / d - su - cu; if (o < 0) o = 0
        printf "| %d | shoal-loadgen | %.0f | %.0f%% | %.0f%% | %.0f%% |\n", r, ops, 100 * cu, 100 * su, 100 * o }'

    wait_quiet
    s0=$(server_ticks); m0=$(machine_ticks)
    # bash's `time` gives memcaslap's own CPU (user + sys).
    { TIMEFORMAT='%U %S %R'; time taskset -c "$CLIENT_CPU" "$MEMCASLAP_BIN" -s "$TARGET" -T 1 -c "$CONNS" \
        -t "${DURATION}s" -F "$TMP/memcaslap.cfg" -w "$WIN" -X 100 >"$TMP/out" 2>&1; } 2>"$TMP/time"
    s1=$(server_ticks); m1=$(machine_ticks)
    tps=$(sed -n 's/.*TPS: \([0-9]*\).*/\1/p' "$TMP/out" | tail -1)
    [ -n "$tps" ] || { cat "$TMP/out" >&2; die "memcaslap printed no TPS"; }
    read -r u sy wall <"$TMP/time"
    # memcaslap idles about a second around its measured window; its own
    # "Run time" is the window its TPS is over, so CPU shares use that too.
    ran=$(sed -n 's/.*Run time: \([0-9.]*\)s.*/\1/p' "$TMP/out" | tail -1)
    awk -v r="$rep" -v t="$tps" -v u="$u" -v sy="$sy" -v w="${ran:-$wall}" -v s="$((s1 - s0))" -v m="$((m1 - m0))" -v hz="$hz" 'BEGIN {
        cu = (u + sy) / w; su = s / hz / w; o = m / hz / w - su - cu; if (o < 0) o = 0
        printf "| %d | memcaslap | %d | %.0f%% | %.0f%% | %.0f%% |\n", r, t, 100 * cu, 100 * su, 100 * o }'
done

#!/usr/bin/env bash
# bench/memory.sh — resident bytes per item, shoal against stock memcached.
#
# For each server: start it (-m 1024 -t 1), read VmRSS, set ITEMS items with
# KEY_LEN-byte keys and VALUE_SIZE-byte values (shoal-loadgen --fill), let it
# settle, read VmRSS again, and print (RSS_after - RSS_before) / ITEMS.
# memcached 1.6.18 costs about 196 B per 13 B key + 100 B value item.
#
# Usage: bench/memory.sh [--vs memcached] [-h]
# Environment: SHOAL_BIN (default target/release/shoal), MEMCACHED_BIN,
#   ITEMS (default 1000000), KEY_LEN (13), VALUE_SIZE (100),
#   VS=shoal|memcached (memcached: measure memcached only, twice),
#   SHOAL_ARGS / MEMCACHED_ARGS, PORT_BASE (default 22322),
#   SETTLE (seconds to wait after the fill, default 2)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHOAL_BIN=${SHOAL_BIN:-$ROOT/target/release/shoal}
MEMCACHED_BIN=${MEMCACHED_BIN:-memcached}
LOADGEN=${LOADGEN:-$ROOT/target/release/shoal-loadgen}
ITEMS=${ITEMS:-1000000}
KEY_LEN=${KEY_LEN:-13}
VALUE_SIZE=${VALUE_SIZE:-100}
VS=${VS:-shoal}
SHOAL_ARGS=${SHOAL_ARGS:-}
MEMCACHED_ARGS=${MEMCACHED_ARGS:-}
PORT_BASE=${PORT_BASE:-22322}
SETTLE=${SETTLE:-2}

while [ $# -gt 0 ]; do
    case $1 in
        --vs) VS=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "memory.sh: unknown argument $1 (try -h)" >&2; exit 2 ;;
    esac
done
die() { echo "memory.sh: $*" >&2; exit 1; }

command -v "$MEMCACHED_BIN" >/dev/null || die "no memcached (apt-get install memcached, or set MEMCACHED_BIN)"
MEMCACHED_BIN=$(command -v "$MEMCACHED_BIN")
case $VS in
    shoal)
        [ -x "$SHOAL_BIN" ] || die "no shoal binary at $SHOAL_BIN (build it, set SHOAL_BIN, or use --vs memcached)"
        CAND_NAME=shoal; CAND_BIN=$SHOAL_BIN; CAND_ARGS=$SHOAL_ARGS ;;
    memcached) CAND_NAME=memcached2; CAND_BIN=$MEMCACHED_BIN; CAND_ARGS=$MEMCACHED_ARGS ;;
    *) die "VS must be shoal or memcached" ;;
esac
if [ ! -x "$LOADGEN" ]; then
    (cd "$ROOT" && cargo build --release -q -p shoal-loadgen) || die "cannot build shoal-loadgen"
fi

SRV_PID=
cleanup() { [ -n "$SRV_PID" ] && kill "$SRV_PID" 2>/dev/null && wait "$SRV_PID" 2>/dev/null || true; }
trap cleanup EXIT
trap 'exit 130' INT TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# stat_value PORT NAME: one field of `stats`, or empty if the server has none.
stat_value() {
    local line
    exec 3<>"/dev/tcp/127.0.0.1/$1" || return 0
    printf 'stats\r\n' >&3
    while IFS= read -r -t 2 line <&3; do
        line=${line%$'\r'}
        [ "$line" = END ] && break
        case $line in "STAT $2 "*) echo "${line##* }" ;; esac
    done
    exec 3<&- 3>&-
}

next_port=$PORT_BASE
# measure NAME BIN EXTRA -> prints one result line, sets PER_ITEM
measure() {
    local name=$1 bin=$2 extra=$3 args=() port log before after items evictions
    while port_open "$next_port"; do next_port=$((next_port + 1)); done
    port=$next_port; next_port=$((next_port + 1))
    log=$(mktemp)
    case $(basename "$bin") in *memcached*) [ "$(id -u)" = 0 ] && args+=(-u root) ;; esac
    # shellcheck disable=SC2206
    args+=($extra)
    "$bin" -p "$port" -l 127.0.0.1 -m 1024 -t 1 "${args[@]}" >"$log" 2>&1 &
    SRV_PID=$!
    for _ in $(seq 1 200); do
        port_open "$port" && break
        kill -0 "$SRV_PID" 2>/dev/null || { cat "$log" >&2; die "$bin exited at start-up"; }
        sleep 0.05
    done
    sleep 0.5
    before=$(rss_kb "$SRV_PID")
    "$LOADGEN" --server "127.0.0.1:$port" --fill "$ITEMS" --key-len "$KEY_LEN" \
        --value-size "$VALUE_SIZE" --connections 4 --pipeline 64 >"$log.fill" 2>&1 \
        || { cat "$log.fill" >&2; die "fill failed against $name"; }
    sleep "$SETTLE"
    after=$(rss_kb "$SRV_PID")
    items=$(stat_value "$port" curr_items)
    evictions=$(stat_value "$port" evictions)
    kill "$SRV_PID" 2>/dev/null || true
    wait "$SRV_PID" 2>/dev/null || true
    SRV_PID=
    rm -f "$log" "$log.fill"
    PER_ITEM=$(awk -v a="$after" -v b="$before" -v n="$ITEMS" 'BEGIN { printf "%.1f", (a - b) * 1024 / n }')
    printf '| %s | %s | %s | %s | %s | %s |\n' "$name" "$before" "$after" "${items:-?}" "${evictions:-?}" "$PER_ITEM"
    if [ -n "$items" ] && [ "$items" != "$ITEMS" ]; then
        echo "memory.sh: WARNING $name holds $items items, not $ITEMS (evictions ${evictions:-?})" >&2
    fi
}

echo "### Resident bytes per item: $ITEMS items, ${KEY_LEN} B keys, ${VALUE_SIZE} B values, -m 1024"
echo
echo "| server | RSS before (KiB) | RSS after (KiB) | curr_items | evictions | bytes/item |"
echo "|---|---:|---:|---:|---:|---:|"
measure memcached "$MEMCACHED_BIN" "$MEMCACHED_ARGS"
BASE=$PER_ITEM
measure "$CAND_NAME" "$CAND_BIN" "$CAND_ARGS"
CAND=$PER_ITEM
echo
awk -v c="$CAND" -v b="$BASE" -v n="$CAND_NAME" -v p="$((KEY_LEN + VALUE_SIZE))" 'BEGIN {
    printf "%s/memcached bytes per item: %.2f (payload %d B; overhead memcached %.1f B, %s %.1f B)\n", n, c / b, p, b - p, n, c - p
}'

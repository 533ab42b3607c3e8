#!/usr/bin/env bash
# bench/run.sh — shoal against stock memcached, memtier-style, in one
# interleaved run (memcached, shoal, memcached, shoal, ...).
#
# Workloads (10k keys preloaded, 1:9 set:get, 50 connections):
#   a  text   100 B            b  text   100 B, pipelined 16 deep
#   c  text   4 KB             d  binary 100 B
#   e  binary 100 B, pipelined 16 deep
#
# Each run starts a fresh server (-m 1024 -t 1, pinned to SERVER_CPU),
# preloads it, then runs shoal-loadgen (pinned to CLIENT_CPU) for DURATION
# seconds while the server's CPU time is read from /proc/<pid>/stat.
#
# Usage: bench/run.sh [-w a,b,...] [--vs memcached] [-h]
# Environment (flags win):
#   SHOAL_BIN       shoal binary (default target/release/shoal)
#   MEMCACHED_BIN   stock memcached (default: memcached on PATH)
#   DURATION        seconds per run (default 10)
#   REPS            repetitions per workload and server (default 3)
#   WORKLOADS       e.g. "a c" (default "a b c d e")
#   VS              shoal (default) or memcached: compare memcached with a
#                   second memcached, to check the harness without shoal
#   SERVER_CPU / CLIENT_CPU   cores to pin to (default 0 / 1)
#   LOADGEN_THREADS generator threads (default 1: one core for the generator)
#   SHOAL_ARGS / MEMCACHED_ARGS  extra server flags
#   RESULTS_DIR     where raw JSON goes (default bench/results)
#   PORT_BASE       first TCP port to use (default 22122)
#   WAIT_QUIET      on a shared machine: wait up to this many seconds for it
#                   to be idle before each run, and run again (up to RETRIES
#                   times, default 2) a run that other processes disturbed
#                   (over 10% of a CPU); default 0: don't wait
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHOAL_BIN=${SHOAL_BIN:-$ROOT/target/release/shoal}
MEMCACHED_BIN=${MEMCACHED_BIN:-memcached}
LOADGEN=${LOADGEN:-$ROOT/target/release/shoal-loadgen}
DURATION=${DURATION:-10}
REPS=${REPS:-3}
WORKLOADS=${WORKLOADS:-a b c d e}
VS=${VS:-shoal}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
LOADGEN_THREADS=${LOADGEN_THREADS:-1}
SHOAL_ARGS=${SHOAL_ARGS:-}
MEMCACHED_ARGS=${MEMCACHED_ARGS:-}
RESULTS_DIR=${RESULTS_DIR:-$ROOT/bench/results}
PORT_BASE=${PORT_BASE:-22122}
WAIT_QUIET=${WAIT_QUIET:-0}
RETRIES=${RETRIES:-2}
KEYS=10000
CONNECTIONS=50
RATIO=1:9

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case $1 in
        -w|--workloads) WORKLOADS=${2//,/ }; shift 2 ;;
        --vs) VS=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run.sh: unknown argument $1 (try -h)" >&2; exit 2 ;;
    esac
done

die() { echo "run.sh: $*" >&2; exit 1; }

# workload -> "protocol value_size pipeline description"
workload_spec() {
    case $1 in
        a) echo "text 100 1 text 100 B" ;;
        b) echo "text 100 16 text 100 B, pipeline 16" ;;
        c) echo "text 4096 1 text 4 KB" ;;
        d) echo "binary 100 1 binary 100 B" ;;
        e) echo "binary 100 16 binary 100 B, pipeline 16" ;;
        *) return 1 ;;
    esac
}
for w in $WORKLOADS; do workload_spec "$w" >/dev/null || die "unknown workload '$w' (a-e)"; done

command -v "$MEMCACHED_BIN" >/dev/null || die "no memcached (apt-get install memcached, or set MEMCACHED_BIN)"
MEMCACHED_BIN=$(command -v "$MEMCACHED_BIN")
BASE_NAME=memcached
case $VS in
    shoal)
        [ -x "$SHOAL_BIN" ] || die "no shoal binary at $SHOAL_BIN (cargo build --release -p shoal-server, set SHOAL_BIN, or use --vs memcached)"
        CAND_NAME=shoal; CAND_BIN=$SHOAL_BIN; CAND_ARGS=$SHOAL_ARGS ;;
    memcached)
        CAND_NAME=memcached2; CAND_BIN=$MEMCACHED_BIN; CAND_ARGS=$MEMCACHED_ARGS ;;
    *) die "VS must be shoal or memcached" ;;
esac
if [ ! -x "$LOADGEN" ]; then
    echo "run.sh: building shoal-loadgen" >&2
    (cd "$ROOT" && cargo build --release -q -p shoal-loadgen) || die "cannot build shoal-loadgen"
fi
command -v taskset >/dev/null || die "no taskset (util-linux)"
CLK_TCK=$(getconf CLK_TCK)

mkdir -p "$RESULTS_DIR"
STAMP=$(date +%Y%m%d-%H%M%S)
RAW=$RESULTS_DIR/run-$STAMP.jsonl
TABLE=$RESULTS_DIR/run-$STAMP.md
LOGDIR=$RESULTS_DIR/run-$STAMP.logs
mkdir -p "$LOGDIR"
: >"$RAW"

SRV_PID=
cleanup() {
    if [ -n "$SRV_PID" ] && kill -0 "$SRV_PID" 2>/dev/null; then
        kill "$SRV_PID" 2>/dev/null || true
        wait "$SRV_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# cpu_ticks PID: utime + stime of the whole process (all threads).
cpu_ticks() {
    local stat
    stat=$(<"/proc/$1/stat")
    stat=${stat##*) }      # drop "pid (comm) ": field 3 (state) is now $1
    set -- $stat
    echo $(( ${12} + ${13} ))
}
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# Busy ticks of the whole machine (all CPUs): user nice system irq softirq steal.
machine_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }

# start_server BIN PORT EXTRA_ARGS LOG -> SRV_PID
start_server() {
    local bin=$1 port=$2 extra=$3 log=$4 args=()
    # memcached refuses to run as root without -u.
    case $(basename "$bin") in *memcached*) [ "$(id -u)" = 0 ] && args+=(-u root) ;; esac
    # shellcheck disable=SC2206
    args+=($extra)
    taskset -c "$SERVER_CPU" "$bin" -p "$port" -l 127.0.0.1 -m 1024 -t 1 "${args[@]}" >"$log" 2>&1 &
    SRV_PID=$!
    for _ in $(seq 1 200); do
        port_open "$port" && return 0
        kill -0 "$SRV_PID" 2>/dev/null || { cat "$log" >&2; die "$bin exited at start-up"; }
        sleep 0.05
    done
    die "$bin did not listen on $port within 10 s"
}

stop_server() {
    kill "$SRV_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$SRV_PID" 2>/dev/null || break; sleep 0.05; done
    kill -9 "$SRV_PID" 2>/dev/null || true
    wait "$SRV_PID" 2>/dev/null || true
    SRV_PID=
}

next_port=$PORT_BASE
free_port() {
    while port_open "$next_port"; do next_port=$((next_port + 1)); done
    echo "$next_port"
    next_port=$((next_port + 1))
}

# measure_run WORKLOAD REP NAME BIN EXTRA -> RUN_JSON
measure_run() {
    local w=$1 rep=$2 name=$3 bin=$4 extra=$5
    local proto size depth desc port log out json rc c0 c1 m0 m1 rss cpu machine
    read -r proto size depth desc <<<"$(workload_spec "$w")"
    port=$(free_port)
    log=$LOGDIR/$w-$rep-$name.log
    start_server "$bin" "$port" "$extra" "$log"
    # Preload every key (not measured).
    if ! taskset -c "$CLIENT_CPU" "$LOADGEN" --server "127.0.0.1:$port" --protocol "$proto" \
        --fill "$KEYS" --value-size "$size" --connections 4 --pipeline 32 >>"$log" 2>&1; then
        echo "run.sh: preload failed for $w/$name (see $log)" >&2
    fi
    m0=$(machine_ticks)
    c0=$(cpu_ticks "$SRV_PID")
    rc=0
    out=$(taskset -c "$CLIENT_CPU" "$LOADGEN" --server "127.0.0.1:$port" --protocol "$proto" \
        --connections "$CONNECTIONS" --pipeline "$depth" --keys "$KEYS" --value-size "$size" \
        --ratio "$RATIO" --duration "$DURATION" --threads "$LOADGEN_THREADS" --assume-preloaded --label "$w/$name/$rep" 2>>"$log") || rc=$?
    m1=$(machine_ticks)
    if kill -0 "$SRV_PID" 2>/dev/null; then
        c1=$(cpu_ticks "$SRV_PID")
        rss=$(rss_kb "$SRV_PID")
    else
        echo "run.sh: WARNING $name died during $w rep $rep (see $log); its CPU time is unknown" >&2
        c1=$c0 rss=0
    fi
    stop_server
    json=$(grep '^{' <<<"$out" || true)
    [ -n "$json" ] || die "no result from shoal-loadgen for $w/$name (exit $rc, see $log)"
    [ "$rc" = 0 ] || echo "run.sh: WARNING $w/$name rep $rep: loadgen exit $rc (errors or aborted)" >&2
    cpu=$(awk -v t="$((c1 - c0))" -v hz="$CLK_TCK" 'BEGIN { printf "%.3f", t / hz }')
    machine=$(awk -v t="$((m1 - m0))" -v hz="$CLK_TCK" 'BEGIN { printf "%.3f", t / hz }')
    json=$(awk -v j="$json" -v w="$w" -v d="$desc" -v n="$name" -v r="$rep" -v b="$bin" -v cpu="$cpu" -v rss="$rss" -v rc="$rc" -v mach="$machine" '
        BEGIN {
            match(j, /"ops":[0-9]+/); ops = substr(j, RSTART + 6, RLENGTH - 6)
            match(j, /"elapsed_s":[0-9.]+/); el = substr(j, RSTART + 12, RLENGTH - 12)
            per = ops > 0 ? cpu / (ops / 1e6) : 0
            util = el > 0 ? cpu / el : 0
            match(j, /"client_cpu_s":[0-9.]+/); ccpu = substr(j, RSTART + 15, RLENGTH - 15)
            # CPU that neither the server nor the generator used: other
            # processes (a build, a test run) competing for the two cores.
            other = el > 0 ? (mach - cpu - ccpu) / el : 0
            if (other < 0) other = 0
            sub(/}$/, "", j)
            printf "%s,\"workload\":\"%s\",\"workload_desc\":\"%s\",\"server_name\":\"%s\",\"rep\":%d,\"server_bin\":\"%s\",\"server_cpu_s\":%s,\"server_cpu_util\":%.3f,\"cpu_s_per_mop\":%.4f,\"server_rss_kb\":%d,\"loadgen_exit\":%d,\"other_cpu_util\":%.3f}\n", j, w, d, n, r, b, cpu, util, per, rss, rc, other
        }')
    RUN_JSON=$json
    awk -v j="$json" -v w="$w" -v n="$name" -v r="$rep" 'BEGIN {
        split("ops_per_sec p50_us p99_us errors server_cpu_util client_cpu_util cpu_s_per_mop other_cpu_util", k, " ")
        for (i = 1; i <= 8; i++) { match(j, "\"" k[i] "\":[0-9.]+"); v[i] = substr(j, RSTART + length(k[i]) + 3, RLENGTH - length(k[i]) - 3) }
        printf "  %s %-10s rep %d: %9.0f ops/s  p50 %7.1f us  p99 %7.1f us  errors %s  server cpu %3.0f%%  client cpu %3.0f%%  %.3f cpu-s/Mop  other load %3.0f%%\n", w, n, r, v[1], v[2], v[3], v[4], 100 * v[5], 100 * v[6], v[7], 100 * v[8]
    }' >&2
}

# wait_quiet: with WAIT_QUIET, wait for the machine to be under 5% busy.
wait_quiet() {
    [ "$WAIT_QUIET" -gt 0 ] || return 0
    local end=$((SECONDS + WAIT_QUIET)) b0 b1
    while [ "$SECONDS" -lt "$end" ]; do
        b0=$(machine_ticks); sleep 2; b1=$(machine_ticks)
        [ $(( (b1 - b0) * 100 / (2 * CLK_TCK) )) -lt 5 ] && return 0
    done
    echo "run.sh: the machine is still busy after ${WAIT_QUIET}s; running anyway" >&2
}

# one_run WORKLOAD REP NAME BIN EXTRA: one measured run, appended to $RAW.
one_run() {
    local attempt=0 disturbed
    while :; do
        wait_quiet
        measure_run "$@"
        attempt=$((attempt + 1))
        disturbed=$(awk -v j="$RUN_JSON" 'BEGIN { match(j, /"other_cpu_util":[0-9.]+/); print (substr(j, RSTART + 17, RLENGTH - 17) + 0 > 0.10) ? 1 : 0 }')
        if [ "$WAIT_QUIET" -gt 0 ] && [ "$disturbed" = 1 ] && [ "$attempt" -le "$RETRIES" ]; then
            echo "    (disturbed by other processes: running it again)" >&2
            continue
        fi
        echo "$RUN_JSON" >>"$RAW"
        return
    done
}

b0=$(machine_ticks); sleep 1; b1=$(machine_ticks)
if [ $(( (b1 - b0) * 100 / CLK_TCK )) -gt 20 ]; then
    echo "run.sh: WARNING the machine is already $(( (b1 - b0) * 100 / CLK_TCK ))% busy (of $(nproc) CPUs): figures will be noisy; see 'other load' below" >&2
fi
echo "run.sh: $BASE_NAME ($MEMCACHED_BIN) vs $CAND_NAME ($CAND_BIN); workloads: $WORKLOADS; $REPS x ${DURATION}s each; server on cpu $SERVER_CPU, loadgen on cpu $CLIENT_CPU" >&2
for w in $WORKLOADS; do
    read -r _ _ _ desc <<<"$(workload_spec "$w")"
    echo "($w) $desc" >&2
    for rep in $(seq 1 "$REPS"); do
        one_run "$w" "$rep" "$BASE_NAME" "$MEMCACHED_BIN" "$MEMCACHED_ARGS"
        one_run "$w" "$rep" "$CAND_NAME" "$CAND_BIN" "$CAND_ARGS"
    done
done

# Medians per workload and server, and candidate/baseline ratios.
awk -v base="$BASE_NAME" -v cand="$CAND_NAME" -v order="$WORKLOADS" -v reps="$REPS" -v dur="$DURATION" '
function field(line, key,   re) {
    re = "\"" key "\":[0-9.]+"
    if (!match(line, re)) return ""
    return substr(line, RSTART + length(key) + 3, RLENGTH - length(key) - 3)
}
function sfield(line, key,   re) {
    re = "\"" key "\":\"[^\"]*\""
    if (!match(line, re)) return ""
    return substr(line, RSTART + length(key) + 4, RLENGTH - length(key) - 5)
}
function median(key,   n, i, j, t, a) {
    n = split(vals[key], a, " ")
    if (n == 0) return ""
    for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function ratio(c, b) { return (b > 0 && c != "") ? sprintf("%.2f", c / b) : "-" }
function num(x, d) { return x == "" ? "-" : sprintf("%." d "f", x) }
{
    w = sfield($0, "workload"); s = sfield($0, "server_name"); desc[w] = sfield($0, "workload_desc")
    n = split("ops_per_sec p50_us p99_us cpu_s_per_mop server_cpu_util client_cpu_util other_cpu_util", ks, " ")
    for (i = 1; i <= n; i++) vals[w, s, ks[i]] = vals[w, s, ks[i]] " " field($0, ks[i])
    errs[w, s] += field($0, "errors")
    if (field($0, "loadgen_exit") != 0) bad[w, s]++
}
END {
    printf "### shoal-loadgen: %s vs %s (median of %d x %ss; 10k keys preloaded, 1:9 set:get, 50 connections)\n\n", cand, base, reps, dur
    printf "| workload | %s ops/s | %s ops/s | ratio | %s p50 us | %s p50 us | ratio | %s p99 us | %s p99 us | ratio | %s CPU s/Mop | %s CPU s/Mop | ratio |\n", base, cand, base, cand, base, cand, base, cand
    print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    nw = split(order, ws, " ")
    for (k = 1; k <= nw; k++) {
        w = ws[k]
        for (m = 1; m <= 2; m++) {
            s = m == 1 ? base : cand
            ops[m] = median(w SUBSEP s SUBSEP "ops_per_sec"); p50[m] = median(w SUBSEP s SUBSEP "p50_us")
            p99[m] = median(w SUBSEP s SUBSEP "p99_us"); cpu[m] = median(w SUBSEP s SUBSEP "cpu_s_per_mop")
        }
        printf "| (%s) %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", w, desc[w],
            num(ops[1], 0), num(ops[2], 0), ratio(ops[2], ops[1]),
            num(p50[1], 1), num(p50[2], 1), ratio(p50[2], p50[1]),
            num(p99[1], 1), num(p99[2], 1), ratio(p99[2], p99[1]),
            num(cpu[1], 3), num(cpu[2], 3), ratio(cpu[2], cpu[1])
    }
    printf "\nChecks (medians; a client near 100%% CPU means the generator, not the server, set the pace;\n"
    printf "other load is CPU used by other processes during the runs, and above ~10%% makes the figures unreliable):\n\n"
    printf "| workload | server | server CPU | client CPU | other load | errors | failed runs |\n|---|---|---:|---:|---:|---:|---:|\n"
    for (k = 1; k <= nw; k++) {
        w = ws[k]
        for (m = 1; m <= 2; m++) {
            s = m == 1 ? base : cand
            su = median(w SUBSEP s SUBSEP "server_cpu_util"); cu = median(w SUBSEP s SUBSEP "client_cpu_util")
            note = (cu != "" && cu > 0.9) ? " (generator-bound?)" : ""
            ol = median(w SUBSEP s SUBSEP "other_cpu_util")
            onote = (ol != "" && ol > 0.1) ? " (busy machine!)" : ""
            printf "| (%s) | %s | %s%% | %s%%%s | %s%%%s | %d | %d |\n", w, s, num(100 * su, 0), num(100 * cu, 0), note, num(100 * ol, 0), onote, errs[w, s], bad[w, s]
        }
    }
}' "$RAW" | tee "$TABLE"
echo >&2
echo "run.sh: raw results $RAW, table $TABLE, server logs $LOGDIR" >&2

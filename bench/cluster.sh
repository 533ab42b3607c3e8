#!/usr/bin/env bash
# bench/cluster.sh — what a hop costs: the single-node workloads (a), (b),
# (e) of bench/run.sh against one node of a 3-node cluster (so about 2/3 of
# the keys are owned elsewhere and forwarded), beside a single node, in one
# interleaved run; then a 100-key get through a non-owner beside the same
# get on a single node.
#
# Every shoal process (the single node, and all three cluster nodes) is
# pinned to SERVER_CPU with -t 1; the generator to CLIENT_CPU. CPU seconds
# per million operations add up all three cluster nodes.
#
# The workloads are closed loops (50 connections, each with its pipeline
# always full), so their mean latency is connections x pipeline /
# throughput, and the p50 sits near it unless answers come in two kinds: a
# latency-spread table shows where (unpipelined through node 0, the third
# of requests it serves itself are answered within a pass, the two thirds
# forwarded a round of the owners later, so the p50 lies in the slow kind,
# above the mean). Last, each workload runs again at a fixed offered rate,
# PACED x the cluster's median throughput (both setups then below
# capacity), on both setups: what a request waits there.
#
# Usage: bench/cluster.sh           Environment: as bench/run.sh (SHOAL_BIN,
# DURATION, REPS, WORKLOADS (default "a b e"), SERVER_CPU, CLIENT_CPU,
# PORT_BASE (default 23100), RESULTS_DIR), MGET_ROUNDS (default 2000),
# PACED (default 0.5; 0 skips the fixed-rate runs).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHOAL_BIN=${SHOAL_BIN:-$ROOT/target/release/shoal}
LOADGEN=${LOADGEN:-$ROOT/target/release/shoal-loadgen}
DURATION=${DURATION:-10}
REPS=${REPS:-3}
WORKLOADS=${WORKLOADS:-a b e}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
PORT_BASE=${PORT_BASE:-23100}
RESULTS_DIR=${RESULTS_DIR:-$ROOT/bench/results}
MGET_ROUNDS=${MGET_ROUNDS:-2000}
PACED=${PACED:-0.5}
KEYS=10000

die() { echo "cluster.sh: $*" >&2; exit 1; }
[ -x "$SHOAL_BIN" ] || die "no shoal binary at $SHOAL_BIN (cargo build --release -p shoal-server)"
[ -x "$LOADGEN" ] || (cd "$ROOT" && cargo build --release -q -p shoal-loadgen) || die "cannot build shoal-loadgen"
CLK_TCK=$(getconf CLK_TCK)
mkdir -p "$RESULTS_DIR"
STAMP=$(date +%Y%m%d-%H%M%S)
LOGDIR=$RESULTS_DIR/cluster-$STAMP.logs
RAW=$RESULTS_DIR/cluster-$STAMP.tsv
mkdir -p "$LOGDIR"
printf 'workload\tsetup\trep\tops_per_sec\tp50_us\tp99_us\tcpu_s_per_mop\terrors\tentry_user\tentry_sys\towners_user\towners_sys\tp10_us\tp25_us\tp75_us\tp90_us\tmean_us\n' >"$RAW"

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
cpu_ticks() {
    local stat total=0 p
    for p in "$@"; do
        stat=$(<"/proc/$p/stat"); stat=${stat##*) }
        # shellcheck disable=SC2086
        set -- $stat
        total=$((total + ${12} + ${13}))
    done
    echo "$total"
}
# cpu_split PID... -> "user sys" clock ticks, summed over the PIDs.
cpu_split() {
    local stat user=0 sys=0 p
    for p in "$@"; do
        stat=$(<"/proc/$p/stat"); stat=${stat##*) }
        # shellcheck disable=SC2086
        set -- $stat
        user=$((user + ${12})); sys=$((sys + ${13}))
    done
    echo "$user $sys"
}
ready() { curl -fsS "http://127.0.0.1:$1/readyz" >/dev/null 2>&1; }

# start_node NAME MC GOSSIP PEER HTTP [SEED]
start_node() {
    local args=(-p "$2" -l 127.0.0.1 -m 1024 -t 1 --node-name "$1" --gossip-port "$3"
        --peer-port "$4" --http-port "$5" --gossip-profile fast)
    [ $# -ge 6 ] && args+=(--seeds "127.0.0.1:$6")
    taskset -c "$SERVER_CPU" "$SHOAL_BIN" "${args[@]}" >"$LOGDIR/$1.log" 2>&1 &
    PIDS+=($!)
}

# setup single|cluster: starts the servers; sets TARGET and SERVER_PIDS.
setup() {
    local base=$PORT_BASE i
    PIDS=()
    if [ "$1" = single ]; then
        start_node single "$base" $((base + 10)) $((base + 20)) $((base + 30))
    else
        for i in 0 1 2; do
            if [ "$i" = 0 ]; then
                start_node "shoal-$i" $((base + i)) $((base + 10 + i)) $((base + 20 + i)) $((base + 30 + i))
            else
                start_node "shoal-$i" $((base + i)) $((base + 10 + i)) $((base + 20 + i)) $((base + 30 + i)) $((base + 10))
            fi
        done
    fi
    local n=${#PIDS[@]} tries=0
    while :; do
        local ok=1
        for i in $(seq 0 $((n - 1))); do ready $((base + 30 + i)) || ok=0; done
        [ "$ok" = 1 ] && [ "$(printf 'stats cluster\r\nquit\r\n' | timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$base; cat >&3; cat <&3" | grep -c '^STAT member:')" = "$n" ] && break
        tries=$((tries + 1)); [ $tries -lt 300 ] || die "$1 did not become ready"
        sleep 0.1
    done
    TARGET=127.0.0.1:$base
    SERVER_PIDS=("${PIDS[@]}")
}

# workload -> protocol size depth
spec() { case $1 in a) echo "text 100 1" ;; b) echo "text 100 16" ;; e) echo "binary 100 16" ;; c) echo "text 4096 1" ;; d) echo "binary 100 1" ;; esac; }

# measure WORKLOAD SETUP REP: one run, a row of $RAW (with RATE set: a
# fixed-rate run, a row of $PACED_RAW).
measure() {
    local w=$1 s=$2 rep=$3 proto size depth out c0 c1 json e0 e1 o0 o1 dest=$RAW
    [ -n "${RATE:-}" ] && dest=$PACED_RAW
    read -r proto size depth <<<"$(spec "$w")"
    setup "$s"
    taskset -c "$CLIENT_CPU" "$LOADGEN" --server "$TARGET" --protocol "$proto" --fill "$KEYS" \
        --value-size "$size" --connections 4 --pipeline 32 >>"$LOGDIR/load.log" 2>&1
    c0=$(cpu_ticks "${SERVER_PIDS[@]}")
    # The node the generator talks to, and the other two (cluster only).
    e0=$(cpu_split "${SERVER_PIDS[0]}"); o0=$(cpu_split "${SERVER_PIDS[@]:1}")
    out=$(taskset -c "$CLIENT_CPU" "$LOADGEN" --server "$TARGET" --protocol "$proto" --connections 50 \
        --pipeline "$depth" --keys "$KEYS" --value-size "$size" --ratio 1:9 --duration "$DURATION" \
        --assume-preloaded ${RATE:+--rate "$RATE"} --label "$w/$s/$rep" 2>>"$LOGDIR/load.log") || true
    c1=$(cpu_ticks "${SERVER_PIDS[@]}")
    e1=$(cpu_split "${SERVER_PIDS[0]}"); o1=$(cpu_split "${SERVER_PIDS[@]:1}")
    cleanup
    json=$(grep '^{' <<<"$out")
    awk -v j="$json" -v w="$w" -v s="$s" -v r="$rep" -v t=$((c1 - c0)) -v hz="$CLK_TCK" \
        -v e0="$e0" -v e1="$e1" -v o0="$o0" -v o1="$o1" 'BEGIN {
        split("ops ops_per_sec p50_us p99_us errors p10_us p25_us p75_us p90_us mean_us", k, " ")
        for (i = 1; i <= 10; i++) { match(j, "\"" k[i] "\":[0-9.]+"); v[i] = substr(j, RSTART + length(k[i]) + 3, RLENGTH - length(k[i]) - 3) }
        mops = v[1] / 1e6
        per = v[1] > 0 ? (t / hz) / mops : 0
        split(e0, a); split(e1, b); split(o0, c); split(o1, d)
        f = v[1] > 0 ? 1 / hz / mops : 0
        printf "%s\t%s\t%d\t%.0f\t%.1f\t%.1f\t%.3f\t%d\t%.3f\t%.3f\t%.3f\t%.3f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\n", w, s, r, v[2], v[3], v[4], per, v[5],
            (b[1] - a[1]) * f, (b[2] - a[2]) * f, (d[1] - c[1]) * f, (d[2] - c[2]) * f, v[6], v[7], v[8], v[9], v[10]
    }' | tee -a "$dest" >&2
}

echo "cluster.sh: single node vs node 0 of 3 (all on cpu $SERVER_CPU), loadgen on cpu $CLIENT_CPU; $REPS x ${DURATION}s" >&2
printf 'workload\tsetup\trep\tops/s\tp50us\tp99us\tcpu-s/Mop\terrors\tentry user/sys, owners user/sys (cpu-s/Mop)\n' >&2
for w in $WORKLOADS; do
    for rep in $(seq 1 "$REPS"); do
        measure "$w" single "$rep"
        measure "$w" cluster "$rep"
    done
done

echo
echo "## single node vs node 0 of a 3-node cluster (medians of $REPS, $(date -u +%F))"
# Then where the CPU goes: user and kernel time per million requests, of
# the node the generator talks to and (cluster) of the two owners.
awk -F'\t' -v reps="$REPS" 'NR > 1 { k = $1 SUBSEP $2; n[k]++; ops[k, n[k]] = $4; p50[k, n[k]] = $5; p99[k, n[k]] = $6; cpu[k, n[k]] = $7; ws[$1] = 1
        eu[k, n[k]] = $9; es[k, n[k]] = $10; ou[k, n[k]] = $11; os[k, n[k]] = $12
        p10[k, n[k]] = $13; p25[k, n[k]] = $14; p75[k, n[k]] = $15; p90[k, n[k]] = $16; mean[k, n[k]] = $17 }
    function med(a, k, m,   i, j, t, v) { for (i = 1; i <= m; i++) v[i] = a[k, i]; for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }; return v[int((m + 1) / 2)] }
    END {
        print "| workload | single ops/s | cluster ops/s | ratio | p50 single/cluster us | ratio | p99 single/cluster us | cpu-s/Mop single/cluster |"
        print "|---|---|---|---|---|---|---|---|"
        for (w in ws) {
            s = w SUBSEP "single"; c = w SUBSEP "cluster"
            so = med(ops, s, n[s]); co = med(ops, c, n[c]); sp = med(p50, s, n[s]); cp = med(p50, c, n[c])
            printf "| %s | %.0f | %.0f | %.2f | %.1f / %.1f | %.2f | %.1f / %.1f | %.3f / %.3f |\n", w, so, co, co / so, sp, cp, cp / sp, med(p99, s, n[s]), med(p99, c, n[c]), med(cpu, s, n[s]), med(cpu, c, n[c])
        }
        print ""
        print "## CPU per million requests, user / kernel (medians of " reps ")"
        print "| workload | single node | cluster: node 0 | cluster: both owners |"
        print "|---|---|---|---|"
        for (w in ws) {
            s = w SUBSEP "single"; c = w SUBSEP "cluster"
            printf "| %s | %.3f / %.3f | %.3f / %.3f | %.3f / %.3f |\n", w, med(eu, s, n[s]), med(es, s, n[s]), med(eu, c, n[c]), med(es, c, n[c]), med(ou, c, n[c]), med(os, c, n[c])
        }
        print ""
        print "## latency spread, us (medians of " reps "): where the p50 sits"
        print "| workload | setup | p10 | p25 | p50 | p75 | p90 | mean | p50 / mean |"
        print "|---|---|---|---|---|---|---|---|---|"
        for (w in ws) for (i = 1; i <= 2; i++) {
            x = i == 1 ? "single" : "cluster"; k = w SUBSEP x; mn = med(mean, k, n[k])
            printf "| %s | %s | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f | %.2f |\n", w, x, med(p10, k, n[k]), med(p25, k, n[k]), med(p50, k, n[k]), med(p75, k, n[k]), med(p90, k, n[k]), mn, (mn > 0 ? med(p50, k, n[k]) / mn : 0)
        }
    }' "$RAW"

# On a shared machine a neighbour only ever slows a run down, so the best
# run of each setup, and each repetition's own pair (single, then cluster
# right after it), say more about the code than medians do.
echo
echo "## the same runs: best of $REPS, and the median of each repetition's cluster/single pair"
awk -F'\t' 'NR > 1 { k = $1 SUBSEP $2; if (!(k in bo) || $4 > bo[k]) bo[k] = $4; if (!(k in bp) || $5 < bp[k]) bp[k] = $5
        r = $1 SUBSEP $3; if ($2 == "single") { so[r] = $4; sp[r] = $5 } else { co[r] = $4; cp[r] = $5 }; ws[$1] = 1; reps[$3] = 1 }
    function med(v, m,   i, j, t) { for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }; return v[int((m + 1) / 2)] }
    END {
        print "| workload | best ops/s single/cluster | ratio | best p50 single/cluster us | ratio | paired throughput ratio | paired p50 ratio |"
        print "|---|---|---|---|---|---|---|"
        for (w in ws) {
            s = w SUBSEP "single"; c = w SUBSEP "cluster"; m = 0
            for (r in reps) { k = w SUBSEP r; if ((k in so) && (k in co) && so[k] > 0 && sp[k] > 0) { m++; tr[m] = co[k] / so[k]; lr[m] = cp[k] / sp[k] } }
            printf "| %s | %.0f / %.0f | %.2f | %.1f / %.1f | %.2f | %.2f | %.2f |\n", w, bo[s], bo[c], bo[c] / bo[s], bp[s], bp[c], bp[c] / bp[s], med(tr, m), med(lr, m)
        }
    }' "$RAW"

# The same workloads at a fixed offered rate, below both setups' capacity.
if [ "$PACED" != 0 ]; then
    PACED_RAW=$RESULTS_DIR/cluster-$STAMP.paced.tsv
    head -n 1 "$RAW" >"$PACED_RAW"
    declare -A RATES
    while read -r w r; do RATES[$w]=$r; done < <(awk -F'\t' -v f="$PACED" 'NR > 1 && $2 == "cluster" { n[$1]++; v[$1, n[$1]] = $4 }
        END { for (w in n) { m = n[w]; for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (v[w, j] < v[w, i]) { t = v[w, i]; v[w, i] = v[w, j]; v[w, j] = t }
              printf "%s %.0f\n", w, f * v[w, int((m + 1) / 2)] } }' "$RAW")
    for w in $WORKLOADS; do
        [ -n "${RATES[$w]:-}" ] || continue
        RATE=${RATES[$w]} measure "$w" single 1
        RATE=${RATES[$w]} measure "$w" cluster 1
    done
    echo
    echo "## at a fixed offered rate ($PACED x the cluster's median throughput:$(for w in $WORKLOADS; do printf ' %s %s/s' "$w" "${RATES[$w]:-}"; done)), one ${DURATION}s run each"
    awk -F'\t' -v order="$WORKLOADS" 'NR > 1 { k = $1 SUBSEP $2; ops[k] = $4; p50[k] = $5; p99[k] = $6; err[k] = $8 }
        END {
            print "| workload | ops/s single/cluster | p50 single/cluster us | ratio | p99 single/cluster us | errors single/cluster |"
            print "|---|---|---|---|---|---|"
            n = split(order, ws, " ")
            for (i = 1; i <= n; i++) {
                w = ws[i]; s = w SUBSEP "single"; c = w SUBSEP "cluster"
                if (!(s in p50) || !(c in p50)) continue
                printf "| %s | %.0f / %.0f | %.1f / %.1f | %.2f | %.1f / %.1f | %d / %d |\n", w, ops[s], ops[c], p50[s], p50[c], (p50[s] > 0 ? p50[c] / p50[s] : 0), p99[s], p99[c], err[s], err[c]
            }
        }' "$PACED_RAW"
fi

# A 100-key get (keys spread over all owners) through a non-owner, beside
# the same get on a single node: one client, one request at a time.
mget() {
    python3 - "$1" "$MGET_ROUNDS" <<'EOF'
import socket, sys, time
host, port = sys.argv[1].split(":"); rounds = int(sys.argv[2])
s = socket.create_connection((host, int(port))); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
keys = [b"key:%06d" % i for i in range(1, 101)]
s.sendall(b"".join(b"set %s 0 0 100 noreply\r\n%s\r\n" % (k, b"v" * 100) for k in keys) + b"mn\r\n")
buf = b""
while not buf.endswith(b"MN\r\n"): buf += s.recv(65536)
req = b"get " + b" ".join(keys) + b"\r\n"
lat = []
for _ in range(rounds):
    t0 = time.perf_counter(); s.sendall(req); buf = b""
    while not buf.endswith(b"END\r\n"): buf += s.recv(262144)
    lat.append((time.perf_counter() - t0) * 1e6)
    assert buf.count(b"VALUE") == 100, buf[:200]
lat.sort()
print("%.0f %.0f" % (lat[len(lat) // 2], lat[int(len(lat) * 0.99)]))
EOF
}
setup single; read -r s50 s99 <<<"$(taskset -c "$CLIENT_CPU" bash -c "$(declare -f mget); MGET_ROUNDS=$MGET_ROUNDS mget $TARGET")"; cleanup
setup cluster; read -r c50 c99 <<<"$(taskset -c "$CLIENT_CPU" bash -c "$(declare -f mget); MGET_ROUNDS=$MGET_ROUNDS mget $TARGET")"; cleanup
echo
echo "## 100-key get, one client ($MGET_ROUNDS rounds): single node p50 ${s50} us p99 ${s99} us; through node 0 of 3 p50 ${c50} us p99 ${c99} us"

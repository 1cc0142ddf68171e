#!/usr/bin/env bash
# Measures a ferryd Raft cluster on 127.0.0.1 with `ferry bench` in the modes of
# the shared peer workload (../shared/peers/README.md, "Workload definition"):
# sync 2000 x window 1, async 20000 x window 256, consume 20000 x prefetch 256
# (100 B and 1 KiB), then failover (one-at-a-time publisher for FO_DURATION s,
# the leader killed with SIGKILL at FO_KILL_AFTER ms) FO_RUNS times, the killed
# node restarted and the cluster back to a caught-up leader plus every member
# between runs. Two topologies: 3 full nodes (peer=ferry-<v>-r3) and 2 full
# nodes + a witness (peer=ferry-<v>-r2w). The machine's floor (fsync and
# loopback round trip, ../shared/peers/run_floor.sh) is measured in the same
# run. Writes bench/results/cluster-r3-<UTC stamp>.txt and
# bench/results/cluster-r2w-<UTC stamp>.txt (same floor in both) and prints them.
# A topology with "-tls" (r3-tls, r2w-tls) is the same with TLS on every node link
# and client_tls required (certificates from scripts/make-certs); when a run has
# both X and X-tls, bench/results/tls-X-<stamp>.txt sets their figures side by
# side with the ratio TLS / plaintext.
#
# Every node gets a fresh directory under a temporary work directory and free
# ports on 127.0.0.1; every process started here is stopped by its PID on exit,
# and the failover kill command kills by the PID in the leader's LOCK file.
#
# Env: RUNS [3] SIZES ["100 1024"] FO_RUNS [RUNS] FO_DURATION [15]
#      FO_KILL_AFTER [4000] TOPOLOGIES ["r3 r2w"; also r3-tls r2w-tls] SUITE [1: 0 = failover only]
#      FLOOR [1] PEERS_DIR [../shared/peers] KEEP [0: 1 keeps the work directory]
#      RESULTS_DIR [bench/results]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
PEERS_DIR=${PEERS_DIR:-$root/../shared/peers}
RUNS=${RUNS:-3}
SIZES=${SIZES:-"100 1024"}
FO_RUNS=${FO_RUNS:-$RUNS}
FO_DURATION=${FO_DURATION:-15}
FO_KILL_AFTER=${FO_KILL_AFTER:-4000}
TOPOLOGIES=${TOPOLOGIES:-"r3 r2w"}
SUITE=${SUITE:-1}
FLOOR=${FLOOR:-1}
KEEP=${KEEP:-0}
RESULTS_DIR=${RESULTS_DIR:-$root/bench/results}
work=$(mktemp -d /tmp/ferry-cluster-XXXXXX)
t_begin=$(date +%s)

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

# ---- processes: every PID started here, stopped by PID on exit ----------
declare -A PID=() # node number -> pid of the ferryd started for it
ALL_PIDS=()

alive() { # a running process (a killed child not yet waited for is a zombie: not alive)
    local st
    st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [ -n "$st" ] && [ "${st:0:1}" != Z ]
}

stop_pid() { # stop_pid PID: TERM, up to 10 s, then KILL; reap it
    local pid=$1 i
    if alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            alive "$pid" || break
            sleep 0.1
        done
        if alive "$pid"; then
            log "pid $pid ignored TERM, sending KILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
}

stop_cluster() {
    local i
    for i in "${!PID[@]}"; do stop_pid "${PID[$i]}"; done
    PID=()
}

cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    for ((i = ${#ALL_PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${ALL_PIDS[$i]}"; done
    if [ "$KEEP" = 1 ] || [ $rc -ne 0 ]; then
        log "work directory kept: $work"
    else
        rm -rf "$work"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- build (others may be rebuilding build/release: retry) ---------------
for attempt in 1 2 3; do
    if "$root/scripts/build" release >"$work/build.log" 2>&1; then break; fi
    [ $attempt = 3 ] && { tail -20 "$work/build.log" >&2; exit 1; }
    log "build failed (attempt $attempt), retrying in 60 s"
    sleep 60
done
# run copies, so a rebuild during the run cannot change the binaries measured
mkdir -p "$work/bin"
cp "$root/build/release/src/server/ferryd" "$root/build/release/src/cli/ferry" "$work/bin/"
ferryd_bin=$work/bin/ferryd
ferry_bin=$work/bin/ferry
ver=$("$ferryd_bin" --version | awk '{print $2}')
stamp=$(date -u +%Y%m%dT%H%MZ)
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')
dirty=$(git -C "$root" status --porcelain 2>/dev/null | grep -c . || true)
mkdir -p "$RESULTS_DIR"

# ---- ports -----------------------------------------------------------------
port_used() { ss -Htan "sport = :$1" 2>/dev/null | grep -q .; }     # any socket
port_listened() { ss -Htln "sport = :$1" 2>/dev/null | grep -q .; } # a listener
# six free ports (3 client, 3 replication) starting at a random base, below
# the ephemeral range (so no outgoing connection holds one when a killed node
# is restarted)
pick_ports() {
    local base p ok
    for _ in $(seq 1 50); do
        base=$((20000 + (RANDOM % 1000) * 12))
        ok=1
        for p in $(seq "$base" $((base + 5))); do port_used "$p" && { ok=0; break; }; done
        if [ $ok = 1 ]; then
            CPORT=([1]=$base [2]=$((base + 1)) [3]=$((base + 2)))
            RPORT=([1]=$((base + 3)) [2]=$((base + 4)) [3]=$((base + 5)))
            return 0
        fi
    done
    log "no free ports found"
    return 1
}

# ---- cluster ---------------------------------------------------------------
# set by use_topology
D= MEMBERS= DATA_NODES= WITNESS= SERVERS= LABEL= TLS_ON=0
certs=$work/certs
CA_ARGS=()

use_topology() { # use_topology r3|r2w|r3-tls|r2w-tls
    local t=${1%-tls} i
    pick_ports
    D=$work/$1
    mkdir -p "$D"
    TLS_ON=0
    CA_ARGS=()
    if [ "$t" != "$1" ]; then
        TLS_ON=1
        CA_ARGS=(--ca "$certs/ca.pem")
        [ -s "$certs/ca.pem" ] || "$root/scripts/make-certs" "$certs" >/dev/null
    fi
    case $t in
    r3) MEMBERS="1:127.0.0.1:${RPORT[1]},2:127.0.0.1:${RPORT[2]},3:127.0.0.1:${RPORT[3]}"
        DATA_NODES="1 2 3" WITNESS= ;;
    r2w) MEMBERS="1:127.0.0.1:${RPORT[1]},2:127.0.0.1:${RPORT[2]},[0]3:127.0.0.1:${RPORT[3]}"
        DATA_NODES="1 2" WITNESS=3 ;;
    *) log "unknown topology $t"; exit 2 ;;
    esac
    SERVERS=
    for i in $DATA_NODES; do SERVERS="$SERVERS${SERVERS:+,}127.0.0.1:${CPORT[$i]}"; done
    LABEL="peer=ferry-$ver-$1 durability=quorum-fsync"
}

start_node() { # start_node I
    local i=$1 args
    args=(--data_directory "$D/n$i" --cluster_node_id "$i"
        --cluster_node_endpoint "127.0.0.1:${RPORT[$i]}" --cluster_membership "$MEMBERS"
        --log_level warn)
    # a witness never serves clients and has no client endpoint
    [ "$i" = "$WITNESS" ] || args+=(--client_endpoint "127.0.0.1:${CPORT[$i]}")
    if [ "$TLS_ON" = 1 ]; then
        args+=(--replication_tls yes --replication_tls_certificate "$certs/node-$i.pem"
            --replication_tls_key "$certs/node-$i.key" --replication_tls_ca "$certs/ca.pem"
            --client_tls required)
    fi
    # (a killed node's ports may still be in TIME_WAIT: ferryd can bind them again)
    port_listened "${RPORT[$i]}" && { log "port ${RPORT[$i]} in use"; return 1; }
    "$ferryd_bin" "${args[@]}" >>"$D/n$i.log" 2>&1 &
    PID[$i]=$!
    ALL_PIDS+=("$!")
    log "started node $i pid=$! ($D/n$i)"
}

node_status() { "$ferry_bin" status --servers "127.0.0.1:${CPORT[$1]}" "${CA_ARGS[@]}" 2>/dev/null; }
field() { sed -n "s/^$1: //p"; } # field KEY < status text

# 0 when a data node is the leader and serves, sees every member's link up,
# and every other data node has applied all the leader has committed (so a
# restarted node has caught up); prints the leader's id. (The leader's
# member.N match/lag fields are not used: they stay 0 / growing here.)
cluster_ready() {
    local i st leader= lst commit applied
    for i in $DATA_NODES; do
        st=$(node_status "$i") || continue
        if [ "$(field role <<<"$st")" = leader ] && [ "$(field serving <<<"$st")" = yes ]; then
            leader=$i lst=$st
        fi
    done
    [ -n "$leader" ] || return 1
    [ "$(grep -Ec '^member\.[0-9]+: .*reachable=yes' <<<"$lst")" = 3 ] || return 1
    commit=$(field commit_index <<<"$lst")
    for i in $DATA_NODES; do
        [ "$i" = "$leader" ] && continue
        st=$(node_status "$i") || return 1
        applied=$(field applied_index <<<"$st")
        [ -n "$applied" ] && [ "$applied" -ge "$commit" ] || return 1
    done
    echo "$leader"
}

wait_ready() { # wait_ready [timeout_s]
    local t=${1:-60} i leader
    for ((i = 0; i < t * 10; i++)); do
        if leader=$(cluster_ready); then
            log "cluster ready, leader node $leader"
            return 0
        fi
        sleep 0.1
    done
    log "cluster not ready after $t s"
    for i in $DATA_NODES; do node_status "$i" | grep -E '^(role|serving|leader_id|term|commit_index|applied_index|member)' >&2 || true; done
    return 1
}

# bring back every node that is not running (the one killed by a failover run)
restart_dead() {
    local i
    for i in 1 2 3; do
        if ! alive "${PID[$i]}"; then
            wait "${PID[$i]}" 2>/dev/null || true
            log "node $i (pid ${PID[$i]}) is down: restarting"
            start_node "$i" || return 1
        fi
    done
}

# ---- measuring -------------------------------------------------------------
out= raw=$work/raw.txt
bench() { "$ferry_bin" --servers "$SERVERS" "${CA_ARGS[@]}" bench "$@"; }

# CPU time (ms, user + system) the running ferryd processes have used so far
clk_tck=$(getconf CLK_TCK)
cluster_cpu_ms() {
    local i t=0 f
    for i in "${!PID[@]}"; do
        f=$(cut -d' ' -f14,15 "/proc/${PID[$i]}/stat" 2>/dev/null) || continue
        t=$((t + ${f% *} + ${f#* }))
    done
    echo $((t * 1000 / clk_tck))
}

# measure CMD...: RUNS runs of a command printing one result line; one
# aggregated line (medians, spread; worst run for loss counters) to $out.
# ferryd_cpu_ms: CPU time all nodes used during the run (not for failover runs,
# which restart a node).
measure() {
    local i line cpu0 cpu
    : >"$raw"
    for ((i = 1; i <= RUNS; i++)); do
        cpu0=$(cluster_cpu_ms)
        # in this shell, not a $(...) subshell: fo_once restarts nodes and records their PIDs
        if "$@" >"$work/bench.out" 2>>"$work/bench.stderr" && line=$(tail -1 "$work/bench.out") &&
            [ -n "$line" ]; then
            cpu=
            [ "$1" = bench ] && cpu=" ferryd_cpu_ms=$(($(cluster_cpu_ms) - cpu0))"
            echo "$LABEL $line$cpu run=$i load1=$(cut -d' ' -f1 /proc/loadavg)" >>"$raw"
        else
            log "run $i of '$*' failed: $(tail -3 "$work/bench.stderr" | tr '\n' ' ')"
            echo "# run $i of '$*' failed: $(tail -2 "$work/bench.stderr" | tr '\n' ' ')" >>"$out"
        fi
    done
    [ -s "$raw" ] || return 0
    awk -v date="$(date -u +%Y-%m-%dT%H:%MZ)" -f "$PEERS_DIR/lib/aggregate.awk" "$raw" >>"$out"
}

fo_once() {
    restart_dead || return 1
    wait_ready 120 || return 1
    bench -m failover -s 100 -d "$FO_DURATION" -a "$FO_KILL_AFTER" \
        -K "kill -9 \$(cat $D/n%s/LOCK)"
}

busiest() { ps -eo pcpu=,comm= --sort=-pcpu | head -3 | awk '{printf "%s%s %s%%", (NR > 1 ? ", " : ""), $2, $1}'; }
cpu_busy() { # the whole machine's CPU busy % over 1 s (other work here is noise)
    local a b idle tot=0 i
    read -ra a < <(head -1 /proc/stat)
    sleep 1
    read -ra b < <(head -1 /proc/stat)
    idle=$(((b[4] + b[5]) - (a[4] + a[5])))
    for ((i = 1; i < ${#a[@]}; i++)); do tot=$((tot + b[i] - a[i])); done
    echo $((tot > 0 ? 100 * (tot - idle) / tot : 0))
}

header() { # header TOPOLOGY DESCRIPTION
    echo "# ferry cluster bench $stamp, topology $1: $2"
    echo "# commit $commit ($dirty files with uncommitted changes in the tree), ferryd $ver, release build (RelWithDebInfo)"
    echo "# host: $(nproc) vCPU $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r), data on $(df --output=source,fstype "$work" | tail -1 | tr -s ' ')"
    echo "# before: loadavg $(cut -d' ' -f1-3 /proc/loadavg), CPU busy over 1 s $(cpu_busy)% (nothing of this script running); busiest processes (lifetime %CPU): $(busiest)"
    echo "# command: RUNS=$RUNS FO_RUNS=$FO_RUNS SIZES=\"$SIZES\" FO_DURATION=$FO_DURATION FO_KILL_AFTER=$FO_KILL_AFTER bench/run-cluster.sh"
    cat <<'EOF'
# What the figures mean:
# - All nodes and the bench client run on this one machine (2 vCPU, one disk) and talk over
#   127.0.0.1; the client talks to the leader only. durability=quorum-fsync: a publish is
#   acknowledged once its Raft entry is fdatasync'd on a majority of the voters (leader
#   included) and applied on the leader. Compare with the peers' rows (shared/peers) and with
#   the floor below, measured in the same run; this machine drifts by +-30% between runs.
# - Lines are medians of `runs` runs (msgs_per_s_min/max, spread_pct = (max-min)/median).
#   sync: 2000 msgs, window 1, latency = publish call .. ack. async: 20000 msgs, at most
#   256 unacked. consume: 20000 stored msgs, one consumer, prefetch 256, each acked.
# - failover: one publisher, window 1, 100 B, for duration_s; at kill_at_ms the bench asks
#   a node for the leader's id and runs `kill -9 $(cat <data dir>/LOCK)` on it; the killed
#   node stays down for the rest of the run (restarted and caught up before the next run).
#   The client fails over by itself: it reconnects to the new leader and sends the publish
#   in flight again with its producer sequence (lib_reconnects, resent and dup_acks, the
#   library's counts, are the median run's). outage_ms = kill command returned .. ack of the first publish attempt
#   started after it (includes noticing the dead connection, reconnecting and the new
#   leader's election); max_gap_ms = longest time between two acks. acked_missing = acked
#   sequence numbers absent when the whole channel is read back from the new leader (worst
#   run; must be 0). duplicates = sequence numbers stored twice (worst run; must be 0: the
#   re-sent publish carries its producer id and sequence, and the servers' dedup table
#   answers a copy that was committed without storing it again). *_runs= lists every run.
EOF
}

# ---- floor -------------------------------------------------------------------
floor_lines=$work/floor.txt
: >"$floor_lines"
if [ "$FLOOR" = 1 ] && [ -x "$PEERS_DIR/run_floor.sh" ]; then
    log "floor (run_floor.sh, RUNS=$RUNS)"
    if SCRATCH=$work/peers RESULTS=$work/floor-results.txt RUNS=$RUNS bash "$PEERS_DIR/run_floor.sh" \
        >/dev/null 2>"$work/floor.log"; then
        grep -v '^#' "$work/floor-results.txt" >"$floor_lines" || true
    else
        echo "# floor run failed: $(tail -2 "$work/floor.log" | tr '\n' ' ')" >"$floor_lines"
    fi
fi

# ---- the topologies ------------------------------------------------------------
files=()
for topo in $TOPOLOGIES; do
    case $topo in
    r3) desc="3 full nodes (voters, each serves when leader)" ;;
    r2w) desc="2 full nodes + 1 witness (priority 0: votes, stores and fsyncs the log, never serves clients)" ;;
    r3-tls) desc="3 full nodes, TLS on every node link and client connection (client_tls required; ECDSA P-256 certificates, TLS 1.3)" ;;
    r2w-tls) desc="2 full nodes + 1 witness, TLS on every node link and client connection (client_tls required)" ;;
    *) log "unknown topology $topo"; exit 2 ;;
    esac
    out=$RESULTS_DIR/cluster-$topo-$stamp.txt
    files+=("$out")
    t0=$(date +%s)
    header "$topo" "$desc" >"$out"
    {
        echo "# floor (shared/peers/run_floor.sh, measured once in this run for both topologies):"
        cat "$floor_lines"
    } >>"$out"
    use_topology "$topo"
    for i in 1 2 3; do start_node "$i"; done
    wait_ready 60
    echo "# membership $MEMBERS; client endpoints $SERVERS; data under /tmp (same ext4 as the floor's /tmp)" >>"$out"
    if [ "$SUITE" = 1 ]; then
        echo "# ferry, $topo, sync / async / consume:" >>"$out"
        for s in $SIZES; do
            log "$topo sync/async/consume, $s B"
            measure bench -m sync -s "$s" -n 2000 -w 1
            measure bench -m async -s "$s" -n 20000 -w 256
            measure bench -m consume -s "$s" -n 20000 -w 256
        done
    fi
    echo "# ferry, $topo, failover (SIGKILL of the leader), $FO_RUNS runs:" >>"$out"
    log "$topo failover x$FO_RUNS"
    RUNS=$FO_RUNS measure fo_once
    echo "# failover, each run:" >>"$out"
    sed 's/^/#   /' "$raw" >>"$out"
    stop_cluster
    echo "# after: loadavg $(cut -d' ' -f1-3 /proc/loadavg), CPU busy over 1 s $(cpu_busy)% (cluster stopped); busiest processes (lifetime %CPU): $(busiest); $topo took $(($(date +%s) - t0)) s, the whole script $(($(date +%s) - t_begin)) s so far" >>"$out"
done
# ---- TLS beside plaintext ----------------------------------------------------------
for topo in $TOPOLOGIES; do
    case $topo in *-tls) continue ;; esac
    plain=$RESULTS_DIR/cluster-$topo-$stamp.txt tls=$RESULTS_DIR/cluster-$topo-tls-$stamp.txt
    [ -f "$plain" ] && [ -f "$tls" ] || continue
    out=$RESULTS_DIR/tls-$topo-$stamp.txt
    files+=("$out")
    {
        echo "# ferry cluster bench $stamp, topology $topo: TLS on every link (cluster-$topo-tls-$stamp.txt) beside plaintext (cluster-$topo-$stamp.txt), measured in one run"
        echo "# ratio = TLS / plaintext (throughput below 1, latency and CPU above 1 are the cost of TLS); medians of the runs;"
        echo "# cpu_ms = CPU time (user + system) of the three ferryd processes during one run of the mode (same message count both sides)"
        awk -f - "$plain" "$tls" <<'AWK'
function get(line, key,   n, i, kv) {
    n = split(line, kv, " ")
    for (i = 1; i <= n; i++) if (index(kv[i], key "=") == 1) return substr(kv[i], length(key) + 2)
    return "-"
}
function ratio(a, b) { return (a == "-" || b == "-" || a + 0 == 0) ? "-" : sprintf("%.2f", b / a) }
/^#/ { next }
{ k = get($0, "mode") " " get($0, "size") }
FNR == NR { p[k] = $0; order[++n] = k; next }
{ t[k] = $0 }
END {
    printf "%-14s %12s %12s %6s %10s %10s %6s %10s %10s %6s %8s %8s %6s\n", "mode size", "msgs/s", "msgs/s_tls", "ratio", "p50_us", "p50_tls", "ratio", "p99_us", "p99_tls", "ratio", "cpu_ms", "cpu_tls", "ratio"
    for (i = 1; i <= n; i++) {
        k = order[i]
        if (!(k in t)) continue
        a = p[k]; b = t[k]
        printf "%-14s %12s %12s %6s %10s %10s %6s %10s %10s %6s %8s %8s %6s\n", k, get(a, "msgs_per_s"), get(b, "msgs_per_s"), ratio(get(a, "msgs_per_s"), get(b, "msgs_per_s")), get(a, "p50_us"), get(b, "p50_us"), ratio(get(a, "p50_us"), get(b, "p50_us")), get(a, "p99_us"), get(b, "p99_us"), ratio(get(a, "p99_us"), get(b, "p99_us")), get(a, "ferryd_cpu_ms"), get(b, "ferryd_cpu_ms"), ratio(get(a, "ferryd_cpu_ms"), get(b, "ferryd_cpu_ms"))
        if (get(a, "mode") == "failover")
            printf "%-14s outage_ms %s vs %s (runs %s vs %s), acked_missing %s vs %s, duplicates %s vs %s\n", k, get(a, "outage_ms"), get(b, "outage_ms"), get(a, "outage_ms_runs"), get(b, "outage_ms_runs"), get(a, "acked_missing"), get(b, "acked_missing"), get(a, "duplicates"), get(b, "duplicates")
    }
}
AWK
    } >"$out"
done
for f in "${files[@]}"; do
    echo "==> $f"
    cat "$f"
done

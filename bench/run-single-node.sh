#!/usr/bin/env bash
# Measures one ferryd node with `ferry bench` in the modes of the shared peer
# workload (sync 2000 x window 1, async 20000 x window 256, consume 20000 x
# prefetch 256; 100 B and 1 KiB), beside the machine's floor (fsync and
# loopback round trip, from ../shared/peers/run_floor.sh) measured in the same
# run. Writes bench/results/single-node-<UTC stamp>.txt and prints it.
#
# Env: RUNS [3] SIZES ["100 1024"] FLOOR [1] PEERS_DIR [../shared/peers]
#      PORT [17878] DATA [a fresh /tmp directory]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
PEERS_DIR=${PEERS_DIR:-$root/../shared/peers}
RUNS=${RUNS:-3}
SIZES=${SIZES:-"100 1024"}
FLOOR=${FLOOR:-1}
PORT=${PORT:-17878}
work=$(mktemp -d /tmp/ferry-bench-XXXXXX)
DATA=${DATA:-$work/data}

"$root/scripts/build" release >/dev/null
bin=$root/build/release
ver=$("$bin/src/server/ferryd" --version | awk '{print $2}')
stamp=$(date -u +%Y%m%dT%H%MZ)
mkdir -p "$root/bench/results"
out=$root/bench/results/single-node-$stamp.txt
raw=$work/raw.txt

pid=
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

{
    echo "# ferry single-node bench $stamp commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "# host: $(nproc) vCPU $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r), data on $(df --output=source,fstype "$(dirname "$DATA")" | tail -1 | tr -s ' ')"
    echo "# loadavg before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# command: RUNS=$RUNS SIZES=\"$SIZES\" bench/run-single-node.sh"
} >"$out"

if [ "$FLOOR" = 1 ] && [ -x "$PEERS_DIR/run_floor.sh" ]; then
    echo "# floor (shared/peers/run_floor.sh, same run):" >>"$out"
    SCRATCH=$work/peers RESULTS=$work/floor.txt RUNS=$RUNS bash "$PEERS_DIR/run_floor.sh" >/dev/null 2>"$work/floor.log" ||
        echo "# floor run failed, see $work/floor.log" >>"$out"
    [ -f "$work/floor.txt" ] && grep -v '^#' "$work/floor.txt" >>"$out" || true
fi

"$bin/src/server/ferryd" --client_endpoint "127.0.0.1:$PORT" --data_directory "$DATA" \
    --log_level warn 2>"$work/ferryd.log" &
pid=$!
ferry() { "$bin/src/cli/ferry" --servers "127.0.0.1:$PORT" "$@"; }
for _ in $(seq 1 200); do # until it serves (a node of one elects itself at start)
    ferry status 2>/dev/null | grep -q '^serving: yes' && break
    sleep 0.05
done
label="peer=ferry-$ver-r1 durability=local-fsync"
measure() { # measure ARGS... : RUNS runs, one aggregated line
    : >"$raw"
    for i in $(seq 1 "$RUNS"); do
        line=$(ferry bench "$@" 2>>"$work/bench.stderr")
        echo "$label $line run=$i load1=$(cut -d' ' -f1 /proc/loadavg) date=$(date -u +%Y-%m-%dT%H:%MZ)" >>"$raw"
    done
    if [ -f "$PEERS_DIR/lib/aggregate.awk" ]; then
        awk -f "$PEERS_DIR/lib/aggregate.awk" "$raw" >>"$out"
    else
        cat "$raw" >>"$out"
    fi
}
echo "# ferry, 1 node (a cluster of one), ack after the Raft log entry holding the message is fdatasync'd and applied:" >>"$out"
for s in $SIZES; do
    measure -m sync -s "$s" -n 2000 -w 1
    measure -m async -s "$s" -n 20000 -w 256
    measure -m consume -s "$s" -n 20000 -w 256
done
echo "# loadavg after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out"
cat "$out"

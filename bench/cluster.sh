#!/usr/bin/env bash
# Scale-out on Redis (issue 11): fan-out deliveries/s and latency p99 with one node on
# Redis and with two nodes on one Redis (subscribers split between them, publisher on the
# first), beside one node with the memory broker, and acknowledged publications/s through
# Redis. A release `ferry serve` and a Debian redis-server on ephemeral loopback ports,
# every phase bounded in time. A benchmark, not a test; prints a markdown table.
#
# Usage: bench/cluster.sh   Knobs: CLUSTER_SUBSCRIBERS (1000), CLUSTER_DURATION (5 s),
#        CLUSTER_RUNS (3, the median is reported), FERRY_BIN, BENCH_NO_BUILD=1.
set -euo pipefail
cd "$(dirname "$0")/.."
SUBS=${CLUSTER_SUBSCRIBERS:-1000}
DURATION=${CLUSTER_DURATION:-5}
RUNS=${CLUSTER_RUNS:-3}
[ -n "${BENCH_NO_BUILD:-}" ] || cargo build --release -q -p ferry-cli
FERRY=${FERRY_BIN:-${CARGO_TARGET_DIR:-target}/release/ferry}
WORK=$(mktemp -d /tmp/ferry-cluster.XXXXXX)
NODES=()
REDIS=
cleanup() {
    for pid in "${NODES[@]}"; do kill "$pid" 2>/dev/null || true; done
    [ -n "$REDIS" ] && kill "$REDIS" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" >/dev/null &
REDIS=$!
for _ in $(seq 100); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

# node BROKER → URL of a new node (its pid appended to NODES)
node() {
    local dir="$WORK/node${#NODES[@]}"
    mkdir -p "$dir"
    "$FERRY" serve --listen 127.0.0.1:0 --data-dir "$dir/data" --history memory --broker "$1" \
        -c bench/ferry-bench.toml --api-key bench --jwt-secret bench >"$dir/out" 2>"$dir/log" &
    NODES+=($!)
    for _ in $(seq 100); do grep -q "listening on" "$dir/out" 2>/dev/null && break; sleep 0.1; done
    echo "ws://$(sed -n 's|^ferry listening on http://||p' "$dir/out")/ws"
}

stop_nodes() {
    for pid in "${NODES[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    NODES=()
    redis-cli -p "$PORT" flushall >/dev/null
}

# report FILE → "rate p50 p99 errors"
report() {
    python3 - "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
lat = r.get("latency") or {}
print(f'{r["messages_per_s"]:.0f} {lat.get("p50_ms", 0):.2f} {lat.get("p99_ms", 0):.2f} {r.get("errors", 0)}')
PY
}

median_line() {
    local rate
    rate=$(cut -d' ' -f1 "$1" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    awk -v r="$rate" '$1 == r {print; exit}' "$1"
}

# shape NAME: start the nodes of a shape; sets PUB (publisher URL) and ALSO (flags)
shape() {
    ALSO=()
    case "$1" in
        memory) PUB=$(node memory) ;;
        redis1) PUB=$(node "redis://127.0.0.1:$PORT") ;;
        redis2) PUB=$(node "redis://127.0.0.1:$PORT"); ALSO=(--also-url "$(node "redis://127.0.0.1:$PORT")") ;;
    esac
}

label() {
    case "$1" in
        memory) echo "1 node, memory broker" ;;
        redis1) echo "1 node on Redis" ;;
        redis2) echo "2 nodes on one Redis" ;;
    esac
}

echo "# scale-out on Redis, $(date -u +%FT%TZ), $(nproc) CPUs, $(redis-server --version | cut -d' ' -f3)"
echo
echo "ferry bench fanout -n $SUBS -d $DURATION and ferry bench latency -n $SUBS --rate 20 (median of $RUNS runs)"
echo
echo "| setup | deliveries/s | fan-out p99 ms | latency p50 ms (20/s) | latency p99 ms (20/s) | errors |"
echo "|---|---|---|---|---|---|"
for s in memory redis1 redis2; do
    rm -f "$WORK/fan" "$WORK/lat"
    for _ in $(seq "$RUNS"); do
        shape "$s"
        "$FERRY" bench fanout --url "$PUB" "${ALSO[@]}" --jwt-secret bench --channel chat:cluster \
            -n "$SUBS" -d "$DURATION" --json >"$WORK/r.json"
        report "$WORK/r.json" >>"$WORK/fan"
        "$FERRY" bench latency --url "$PUB" "${ALSO[@]}" --jwt-secret bench --channel chat:cluster \
            -n "$SUBS" --rate 20 -d "$DURATION" --json >"$WORK/r.json"
        report "$WORK/r.json" >>"$WORK/lat"
        stop_nodes
    done
    read -r rate _ fp99 ferr <<<"$(median_line "$WORK/fan")"
    read -r _ lp50 lp99 lerr <<<"$(median_line "$WORK/lat")"
    echo "| $(label "$s") | $rate | $fp99 | $lp50 | $lp99 | $((ferr + lerr)) |"
done
echo
echo "ferry bench persist -n 64 --in-flight 16 -d $DURATION (acknowledged publications; median of $RUNS runs)"
echo
echo "| setup | channels | acknowledged publications/s | p50 ms | p99 ms | errors |"
echo "|---|---|---|---|---|---|"
for s in memory redis1; do
    for hot in no yes; do
        rm -f "$WORK/per"
        flags=()
        [ "$hot" = yes ] && flags=(--hot)
        for _ in $(seq "$RUNS"); do
            shape "$s"
            "$FERRY" bench persist --url "$PUB" --jwt-secret bench --channel chat:persist \
                -n 64 --in-flight 16 -d "$DURATION" "${flags[@]}" --json >"$WORK/r.json"
            report "$WORK/r.json" >>"$WORK/per"
            stop_nodes
        done
        read -r rate p50 p99 errs <<<"$(median_line "$WORK/per")"
        echo "| $(label "$s") | $([ "$hot" = yes ] && echo "one (hot)" || echo "64") | $rate | $p50 | $p99 | $errs |"
    done
done

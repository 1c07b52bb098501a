#!/usr/bin/env bash
# Upload throughput on loopback: ferry's /files/ vs npm @tus/server + @tus/file-store, with
# the same clients (ferry upload, tus-js-client), one file of SIZE_MB, RUNS runs each.
# Also samples each server's RSS every 100 ms during the upload (peak vs idle).
# Usage: bash bench/tus/run.sh [SIZE_MB=1024] [RUNS=3]   (CHUNK=8M: ferry upload's chunk size)
# Needs: a release build (cargo build --release -p ferry-cli), node, npm ci --prefix tests/tus.
# Not a test: figures depend on the machine. Results go to stdout as a Markdown table.
set -euo pipefail
SIZE_MB=${1:-1024}
RUNS=${2:-3}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
FERRY=${FERRY_BIN:-$ROOT/target/release/ferry}
CHUNK=${CHUNK:-8M}
[ -x "$FERRY" ] || { echo "build first: cargo build --release -p ferry-cli" >&2; exit 2; }
[ -d "$ROOT/tests/tus/node_modules/@tus/server" ] || { echo "run: npm ci --prefix tests/tus" >&2; exit 2; }

WORK=$(mktemp -d /tmp/ferry-tus-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

head -c "$((SIZE_MB << 20))" /dev/urandom > "$WORK/payload.bin"
KEY=bench-key

# ferry serve on an ephemeral port.
"$FERRY" serve --listen 127.0.0.1:0 --data-dir "$WORK/ferry-data" --api-key "$KEY" \
    --jwt-secret bench-secret > "$WORK/ferry.out" 2> "$WORK/ferry.log" &
FERRY_PID=$!; PIDS+=("$FERRY_PID")
for _ in $(seq 100); do grep -q "listening on" "$WORK/ferry.out" 2>/dev/null && break; sleep 0.1; done
FERRY_URL="$(sed -n 's/^ferry listening on //p' "$WORK/ferry.out")/files/"

mkdir -p "$WORK/tus-store"
node "$ROOT/tests/tus/tus-server.mjs" "$WORK/tus-store" > "$WORK/tus.out" 2> "$WORK/tus.log" &
TUS_PID=$!; PIDS+=("$TUS_PID")
for _ in $(seq 100); do grep -q port "$WORK/tus.out" 2>/dev/null && break; sleep 0.1; done
TUS_URL="http://127.0.0.1:$(sed -n 's/.*"port":\([0-9]*\).*/\1/p' "$WORK/tus.out")/files"

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
# cpu_ticks PID: user + system clock ticks the process has used.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICKS=$(getconf CLK_TCK)

# run_one SERVER_PID URL CLIENT → prints "seconds peak_rss_kib idle_rss_kib server_cpu_s"
run_one() {
    local pid=$1 url=$2 client=$3 idle peak=0 start end sampler cpu0 cpu1
    idle=$(rss_kib "$pid")
    cpu0=$(cpu_ticks "$pid")
    ( while true; do rss_kib "$pid"; sleep 0.1; done ) > "$WORK/rss" 2>/dev/null &
    sampler=$!
    start=$(date +%s.%N)
    case $client in
        ferry) "$FERRY" upload "$WORK/payload.bin" --tus "$url" --chunk-size "$CHUNK" \
                   --state "$WORK/state.json" --json -H "Authorization:apikey $KEY" > "$WORK/client.out" ;;
        tus-js) FERRY_AUTH="apikey $KEY" TUS_CHUNK_SIZE=$((8 << 20)) node "$ROOT/tests/tus/js-upload.mjs" "$url" "$WORK/payload.bin" \
                   "$WORK/js-state.json" > "$WORK/client.out" ;;
    esac
    end=$(date +%s.%N)
    cpu1=$(cpu_ticks "$pid")
    kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
    peak=$(sort -n "$WORK/rss" | tail -1)
    echo "$(echo "$end - $start" | bc -l) ${peak:-0} $idle $(echo "($cpu1 - $cpu0) / $TICKS" | bc -l)"
}

echo "| server | client | size | run | seconds | MiB/s | server CPU-s | server MiB per CPU-s | server RSS idle → peak (MiB) |"
echo "|---|---|---|---|---|---|---|---|---|"
for client in ferry tus-js; do
    for server in ferry tus-node; do
        for run in $(seq "$RUNS"); do
            if [ "$server" = ferry ]; then pid=$FERRY_PID; url=$FERRY_URL; else pid=$TUS_PID; url=$TUS_URL; fi
            read -r secs peak idle cpu < <(run_one "$pid" "$url" "$client")
            rate=$(echo "$SIZE_MB / $secs" | bc -l)
            per_cpu=$(echo "$SIZE_MB / ($cpu + 0.001)" | bc -l)
            printf "| %s | %s | %d MiB | %d | %.2f | %.0f | %.2f | %.0f | %.1f → %.1f |\n" "$server" "$client" \
                "$SIZE_MB" "$run" "$secs" "$rate" "$cpu" "$per_cpu" "$(echo "$idle/1024" | bc -l)" "$(echo "$peak/1024" | bc -l)"
            rm -f "$WORK"/ferry-data/uploads/* "$WORK"/tus-store/* "$WORK/state.json" "$WORK/js-state.json"
        done
    done
done

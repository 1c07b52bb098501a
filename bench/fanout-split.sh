#!/usr/bin/env bash
# Where a fan-out delivery's server CPU goes, ferry against the bare tokio-tungstenite
# reference (bench/reference), interleaved run by run with the same load generator:
# deliveries/s, server CPU-s per million deliveries split into user space and kernel (the
# load generator reads both from /proc/PID/stat around its measurement window), and, where
# `perf stat` can count syscall tracepoints, socket writes per second (over 4 s inside the
# window) and deliveries per write.
# Loopback only, every run bounded in time. A benchmark, not a test; see bench/FANOUT.md.
#
# Usage: bench/fanout-split.sh   Knobs: SPLIT_SUBSCRIBERS (1000), SPLIT_RUNS (3),
#        SPLIT_SIZE (128, bytes of JSON data), FERRY_BIN, REFERENCE_BIN, BENCH_NO_BUILD=1.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${SPLIT_SUBSCRIBERS:-1000}
RUNS=${SPLIT_RUNS:-3}
SIZE=${SPLIT_SIZE:-128}
[ -n "${BENCH_NO_BUILD:-}" ] || cargo build --release -q -p ferry-cli -p ferry-bench-reference
TARGET=${CARGO_TARGET_DIR:-target}
FERRY=${FERRY_BIN:-$TARGET/release/ferry}
REFERENCE=${REFERENCE_BIN:-$TARGET/release/ferry-bench-reference}
SECRET=bench-jwt-secret-0123456789
WORK=$(mktemp -d /tmp/ferry-split.XXXXXX)
SERVER=
cleanup() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"

EVENTS=syscalls:sys_enter_writev,syscalls:sys_enter_sendto,syscalls:sys_enter_sendmsg,syscalls:sys_enter_write
PERF=
if perf stat -e "$EVENTS" -- true >/dev/null 2>&1; then PERF=1; fi

# start WHO: a fresh server; sets SERVER and URL.
start() {
    rm -rf "$WORK/data" "$WORK/out"
    case $1 in
        ferry) "$FERRY" serve --listen 127.0.0.1:0 --config bench/ferry-bench.toml --api-key bench \
                   --jwt-secret "$SECRET" --data-dir "$WORK/data" >"$WORK/out" 2>"$WORK/log" & ;;
        reference) "$REFERENCE" --listen 127.0.0.1:0 >"$WORK/out" 2>"$WORK/log" & ;;
    esac
    SERVER=$!
    local addr=
    for _ in $(seq 100); do
        addr=$(sed -n 's#.*listening on http://\([0-9.:]*\).*#\1#p' "$WORK/out" | head -1)
        [ -n "$addr" ] && break
        sleep 0.1
    done
    [ -n "$addr" ] || { cat "$WORK/log" >&2; echo "error: $1 did not start" >&2; exit 1; }
    case $1 in
        ferry) URL=(--url "ws://$addr/ws") ;;
        reference) URL=(--url "ws://$addr/bench" --protocol plain) ;;
    esac
}

# count_writes PID: once connections are made and warmed up (4 s, plus 1 s per 2,500
# subscribers), the server's socket writes over 4 s (n/a without perf).
count_writes() {
    sleep $((4 + N / 2500))
    local writes=n/a
    if [ -n "$PERF" ]; then
        perf stat -x, -e "$EVENTS" -p "$1" -- sleep 4 2>"$WORK/perf" >/dev/null || true
        writes=$(awk -F, '$1 ~ /^[0-9]+$/ {s += $1} END {print int(s / 4)}' "$WORK/perf")
    fi
    echo "$writes" >"$WORK/writes"
}

# one WHO → "deliveries/s user_cpu_s_per_M kernel_cpu_s_per_M writes/s"
one() {
    start "$1"
    count_writes "$SERVER" &
    local sampler=$!
    "$FERRY" bench "${URL[@]}" --jwt-secret "$SECRET" --server-pid "$SERVER" --json \
        fanout -n "$N" --size "$SIZE" -d 9 >"$WORK/json" 2>"$WORK/bench.log"
    wait "$sampler"
    kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=
    python3 - "$WORK/json" "$(cat "$WORK/writes")" <<'EOF'
import json, sys
run = json.load(open(sys.argv[1]))
server = run.get("server") or {}
per_million, cpu = server.get("cpu_s_per_million"), server.get("cpu_s")
if not per_million or not cpu:
    user = kernel = "n/a"  # nothing delivered, or no CPU time read
else:
    k = per_million * server["kernel_cpu_s"] / cpu
    user, kernel = f"{per_million - k:.2f}", f"{k:.2f}"
print(round(run["messages_per_s"]), user, kernel, sys.argv[2])
EOF
}

echo "| server | run | deliveries/s | user CPU-s per million | kernel CPU-s per million | socket writes/s | deliveries per write |"
echo "|---|---|---|---|---|---|---|"
for run in $(seq "$RUNS"); do
    for who in ferry reference; do
        read -r rate user kernel writes < <(one "$who")
        per=n/a
        [ "$writes" != n/a ] && [ "$writes" -gt 0 ] && per=$(awk "BEGIN {printf \"%.2f\", $rate / $writes}")
        echo "| $who | $run | $rate | $user | $kernel | $writes | $per |"
    done
done
echo
echo "$N subscribers, ${SIZE}-byte data, load generator \`$FERRY bench\`; $(nproc) CPUs; $(date -u +%Y-%m-%dT%H:%M:%SZ)"

#!/usr/bin/env bash
# Persisted publications per second (issue 10, SPEC target ≥ 100,000/s): `ferry bench
# persist` against a release `ferry serve` with SQLite history (acknowledged after the
# commit) and, side by side in the same run, with memory history. Two shapes: a channel
# per connection (many channels) and every connection on one channel (--hot).
# Loopback only, every phase bounded in time. A benchmark, not a test.
#
# Usage: bench/persist.sh   Knobs: PERSIST_CONNECTIONS (64), PERSIST_IN_FLIGHT (16),
#        PERSIST_DURATION (5 s), PERSIST_RUNS (3, the median is reported), FERRY_BIN,
#        BENCH_NO_BUILD=1.
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=${PERSIST_CONNECTIONS:-64}
IN_FLIGHT=${PERSIST_IN_FLIGHT:-16}
DURATION=${PERSIST_DURATION:-5}
RUNS=${PERSIST_RUNS:-3}
[ -n "${BENCH_NO_BUILD:-}" ] || cargo build --release -q -p ferry-cli
FERRY=${FERRY_BIN:-${CARGO_TARGET_DIR:-target}/release/ferry}
WORK=$(mktemp -d /tmp/ferry-persist.XXXXXX)
SERVER=
cleanup() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

# serve KIND: start ferry serve with KIND history on a fresh data dir; sets SERVER, URL.
serve() {
    rm -rf "$WORK/data" "$WORK/out"
    "$FERRY" serve --listen 127.0.0.1:0 --data-dir "$WORK/data" --history "$1" -c bench/ferry-bench.toml \
        --api-key bench --jwt-secret bench >"$WORK/out" 2>"$WORK/log" &
    SERVER=$!
    for _ in $(seq 100); do grep -q "listening on" "$WORK/out" 2>/dev/null && break; sleep 0.1; done
    URL="ws://$(sed -n 's|^ferry listening on http://||p' "$WORK/out")/ws"
}

stop() { kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=; }

# one KIND HOT → "publications/s cpu_s_per_million p50_ms p99_ms"
one() {
    local flags=()
    [ "$2" = hot ] && flags=(--hot)
    serve "$1"
    "$FERRY" bench persist --url "$URL" --jwt-secret bench --channel chat:persist \
        -n "$CONNS" --in-flight "$IN_FLIGHT" -d "$DURATION" --server-pid "$SERVER" \
        "${flags[@]}" --json >"$WORK/report.json"
    stop
    python3 - "$WORK/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s = r.get("server") or {}
lat = r.get("latency") or {}
print(f'{r["messages_per_s"]:.0f} {s.get("cpu_s_per_million") or 0:.2f} {lat.get("p50_ms", 0):.2f} {lat.get("p99_ms", 0):.2f} {r.get("errors", 0)}')
PY
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "# persisted publications, $(date -u +%FT%TZ), $(nproc) CPUs"
echo
echo "ferry bench persist -n $CONNS --in-flight $IN_FLIGHT -d $DURATION (median of $RUNS runs; server CPU from /proc)"
echo
echo "| history | channels | acknowledged publications/s | server CPU-s per million | p50 ms | p99 ms | errors |"
echo "|---|---|---|---|---|---|---|"
for shape in spread hot; do
    for kind in sqlite memory; do
        rm -f "$WORK/runs"
        for _ in $(seq "$RUNS"); do one "$kind" "$shape" >>"$WORK/runs"; done
        rate=$(cut -d' ' -f1 "$WORK/runs" | median)
        line=$(awk -v r="$rate" '$1 == r {print; exit}' "$WORK/runs")
        read -r r cpu p50 p99 errs <<<"$line"
        label=$([ "$shape" = hot ] && echo "one (hot)" || echo "$CONNS (one per connection)")
        echo "| $kind | $label | $r | $cpu | $p50 | $p99 | $errs |"
    done
done

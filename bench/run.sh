#!/usr/bin/env bash
# Side-by-side benchmark harness: ferry against a bare tokio-tungstenite reference,
# Node `ws`, Socket.IO and Python `websockets`, all driven by the same `ferry bench`
# (release build) on loopback. Writes the median of 3 runs to bench/RESULTS.md.
# See bench/README.md. Usage: bench/run.sh  (environment knobs below).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${BENCH_OUT:-$ROOT/target/bench}
REPEATS=${BENCH_REPEATS:-3}
SERVERS=${BENCH_SERVERS:-"ferry reference node-ws socketio python-websockets"}
IDLE_N=${BENCH_IDLE_N:-10000}
FANOUT_SMALL=${BENCH_FANOUT_SMALL:-1000}
FANOUT_LARGE=${BENCH_FANOUT_LARGE:-10000}
LATENCY_N=${BENCH_LATENCY_N:-1000}
LATENCY_RATE=${BENCH_LATENCY_RATE:-20}
DURATION=${BENCH_DURATION:-5}
LATENCY_DURATION=${BENCH_LATENCY_DURATION:-10}
ECHO_N=${BENCH_ECHO_N:-50}
RESULTS=${BENCH_RESULTS:-$ROOT/bench/RESULTS.md}
JWT_SECRET=bench-jwt-secret
VENV=$ROOT/target/bench-venv

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- preconditions --------------------------------------------------------------------
# Client and server each hold one descriptor per connection (plus a few): each process
# has its own limit, so the hard limit must cover the largest scenario once.
ulimit -n "$(ulimit -Hn)"
need=$((IDLE_N > FANOUT_LARGE ? IDLE_N : FANOUT_LARGE))
[ "$(ulimit -n)" -ge $((need + 200)) ] || die "open-files limit $(ulimit -n) < $((need + 200)); raise the hard limit (ulimit -Hn)"
read -r port_lo port_hi < /proc/sys/net/ipv4/ip_local_port_range
[ $((port_hi - port_lo)) -ge $((need + 1000)) ] || die "ephemeral port range $port_lo-$port_hi is too small for $need connections"
# Runs close thousands of connections; their TIME_WAIT ports must be reusable on loopback.
tw_reuse=$(cat /proc/sys/net/ipv4/tcp_tw_reuse 2>/dev/null || echo "?")
[ "$tw_reuse" != 0 ] || log "warning: net.ipv4.tcp_tw_reuse=0: back-to-back runs may run out of ephemeral ports"

# --- install and build ----------------------------------------------------------------
log "installing the Node peers (npm ci) and the Python peer (venv)"
(cd bench/peers/node && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
if [ ! -x "$VENV/bin/python" ]; then python3 -m venv "$VENV"; fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r bench/peers/python/requirements.txt
log "building ferry and the reference server (release)"
cargo build --release --quiet -p ferry-cli -p ferry-bench-reference
FERRY=$ROOT/target/release/ferry
REFERENCE=$ROOT/target/release/ferry-bench-reference

# BENCH_WAIT_QUIET=1: wait (up to an hour, polling each minute) until the 1-minute load
# average is below BENCH_QUIET_LOAD (0.8) and no cargo or rustc is running.
if [ "${BENCH_WAIT_QUIET:-0}" != 0 ]; then
  for _ in $(seq 60); do
    load1=$(cut -d' ' -f1 /proc/loadavg)
    busy=$(pgrep -c -x 'cargo|rustc' || true)
    if awk "BEGIN { exit !($load1 < ${BENCH_QUIET_LOAD:-0.8}) }" && [ "$busy" = 0 ]; then break; fi
    log "waiting for a quiet machine: load $load1, $busy cargo/rustc processes"
    sleep 60
  done
fi

mkdir -p "$OUT/runs"
rm -f "$OUT"/runs/*.json
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
START_TS=$(date -u +%Y-%m-%dT%H:%M:%SZ)
START_SECONDS=$SECONDS

# --- servers --------------------------------------------------------------------------
SERVER_PID=
SERVER_ADDR=
start_server() { # NAME -> SERVER_PID, SERVER_ADDR
  local name=$1 logf="$OUT/$1.log"
  case $name in
    ferry)
      rm -rf "$OUT/ferry-data"
      "$FERRY" serve --listen 127.0.0.1:0 --config bench/ferry-bench.toml --testbed \
        --api-key bench-api-key --jwt-secret "$JWT_SECRET" --data-dir "$OUT/ferry-data" \
        >"$logf" 2>&1 &
      ;;
    reference) "$REFERENCE" --listen 127.0.0.1:0 >"$logf" 2>&1 & ;;
    node-ws) node bench/peers/node/ws-server.js 0 >"$logf" 2>&1 & ;;
    socketio) node bench/peers/node/socketio-server.js 0 >"$logf" 2>&1 & ;;
    python-websockets) "$VENV/bin/python" bench/peers/python/server.py 0 >"$logf" 2>&1 & ;;
    *) die "unknown server $name" ;;
  esac
  SERVER_PID=$!
  for _ in $(seq 100); do
    SERVER_ADDR=$(sed -n 's#.*listening on http://\([0-9.:]*\).*#\1#p' "$logf" | head -1)
    [ -n "$SERVER_ADDR" ] && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.2
  done
  cat "$logf" >&2
  die "$name did not start"
}

stop_server() {
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
}
trap 'stop_server' EXIT

# --- scenarios ------------------------------------------------------------------------
run_one() { # SERVER SCENARIO REPEAT
  local server=$1 scenario=$2 rep=$3 protocol path echo_path
  case $server in
    ferry) protocol=ferry path=/ws echo_path=/test/echo ;;
    socketio) protocol=socketio path=/ echo_path=/ ;;
    *) protocol=plain path=/ echo_path=/echo ;;
  esac
  start_server "$server"
  local base="ws://$SERVER_ADDR" args
  case $scenario in
    idle) args=(--url "$base$path" idle -n "$IDLE_N") ;;
    fanout-small) args=(--url "$base$path" fanout -n "$FANOUT_SMALL" -d "$DURATION") ;;
    fanout-large) args=(--url "$base$path" fanout -n "$FANOUT_LARGE" -d "$DURATION") ;;
    # ferry only: the same fan-outs with ferry.msgpack subscribers (JSON publisher).
    fanout-small-msgpack) args=(--url "$base$path" fanout -n "$FANOUT_SMALL" -d "$DURATION" --sub-proto msgpack) ;;
    fanout-large-msgpack) args=(--url "$base$path" fanout -n "$FANOUT_LARGE" -d "$DURATION" --sub-proto msgpack) ;;
    latency) args=(--url "$base$path" latency -n "$LATENCY_N" --rate "$LATENCY_RATE" -d "$LATENCY_DURATION") ;;
    echo) args=(--url "$base$echo_path" echo -n "$ECHO_N" -d "$DURATION") ;;
  esac
  local result="$OUT/runs/$server.$scenario.$rep.json"
  if ! "$FERRY" bench --protocol "$protocol" --jwt-secret "$JWT_SECRET" --server-pid "$SERVER_PID" \
      --json "${args[@]}" >"$result" 2>"$OUT/runs/$server.$scenario.$rep.err"; then
    log "  $server $scenario #$rep failed: $(tail -1 "$OUT/runs/$server.$scenario.$rep.err")"
    rm -f "$result"
  fi
  stop_server
}

# Repeats are interleaved (every server once, then again) so that a drift in the
# machine's state affects every server alike.
for rep in $(seq "$REPEATS"); do
  # Someone else's build in the middle of a run skews it: with BENCH_WAIT_QUIET, wait (up
  # to 20 minutes) for cargo and rustc to finish before each repeat.
  if [ "${BENCH_WAIT_QUIET:-0}" != 0 ]; then
    for _ in $(seq 240); do
      [ "$(pgrep -c -x 'cargo|rustc' || true)" = 0 ] && break
      log "repeat $rep: waiting for cargo/rustc to finish"
      sleep 5
    done
  fi
  for server in $SERVERS; do
    log "run $rep/$REPEATS: $server"
    scenarios="idle fanout-small fanout-large latency echo"
    [ "$server" = ferry ] && scenarios="$scenarios fanout-small-msgpack fanout-large-msgpack"
    for scenario in $scenarios; do
      run_one "$server" "$scenario" "$rep"
    done
  done
done
trap - EXIT

LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
ELAPSED=$((SECONDS - START_SECONDS))
python3 bench/summarize.py "$OUT/runs" "$RESULTS" \
  --started "$START_TS" --elapsed "$ELAPSED" --load-start "$LOAD_START" --load-end "$LOAD_END" \
  --command "$([ "${BENCH_WAIT_QUIET:-0}" != 0 ] && echo 'BENCH_WAIT_QUIET=1 ')bench/run.sh" \
  --version "rustc=$(rustc -V | cut -d' ' -f2)" --version "node=$(node --version)" \
  --version "ws=$(node -p "require('./bench/peers/node/node_modules/ws/package.json').version")" \
  --version "socket.io=$(node -p "require('./bench/peers/node/node_modules/socket.io/package.json').version")" \
  --version "python=$("$VENV/bin/python" -c 'import platform; print(platform.python_version())')" \
  --version "websockets=$("$VENV/bin/python" -c 'import websockets; print(websockets.__version__)')" \
  --version "ferry=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo '+changes')" \
  --param "idle=$IDLE_N" --param "fanout_small=$FANOUT_SMALL" --param "fanout_large=$FANOUT_LARGE" \
  --param "latency=$LATENCY_N@$LATENCY_RATE/s" --param "duration=$DURATION" --param "echo=$ECHO_N" \
  --param "repeats=$REPEATS"
log "wrote $RESULTS in ${ELAPSED}s"

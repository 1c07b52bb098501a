#!/usr/bin/env bash
# Soak benchmark of the hub (issue 8): 10,000 connections for 10 minutes with a mix of
# well-behaved subscribers, stalled readers, slow readers, reconnect storms and HTTP
# publishers, against a release `ferry serve` on loopback. Writes bench/SOAK.md.
# A benchmark, not a test: nothing runs it but you. See bench/README.md ("Soak").
#
# Usage: bench/soak.sh  (knobs below; extra `ferry bench soak` flags in SOAK_ARGS, e.g.
# SOAK_CONNECTIONS=2000 SOAK_DURATION=60 bench/soak.sh for a short validation run).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
CONNECTIONS=${SOAK_CONNECTIONS:-10000}
DURATION=${SOAK_DURATION:-600}
OUT=${SOAK_OUT:-$ROOT/target/soak}
RESULT=${SOAK_RESULT:-$ROOT/bench/SOAK.md}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
# release (the figures to quote) or debug (a smoke run where release cannot be built).
PROFILE=${SOAK_PROFILE:-release}
read -r -a EXTRA <<<"${SOAK_ARGS:-}"
API_KEY=soak-api-key
JWT_SECRET=soak-jwt-secret

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Client and server hold one descriptor per connection each, in separate processes.
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -ge $((CONNECTIONS + 200)) ] ||
  die "open-files limit $(ulimit -n) < $((CONNECTIONS + 200)); raise the hard limit (ulimit -Hn)"
read -r port_lo port_hi </proc/sys/net/ipv4/ip_local_port_range
[ $((port_hi - port_lo)) -ge $((CONNECTIONS * 2)) ] ||
  die "ephemeral port range $port_lo-$port_hi is too small for $CONNECTIONS connections and their reconnects"

case $PROFILE in
  release) build_flags=(--release) ;;
  debug) build_flags=() ;;
  *) die "SOAK_PROFILE must be release or debug" ;;
esac
if [ "${SOAK_SKIP_BUILD:-0}" = 0 ]; then
  log "building ferry ($PROFILE)"
  cargo build "${build_flags[@]}" --quiet -p ferry-cli --bin ferry
fi
FERRY=$TARGET_DIR/$PROFILE/ferry
[ -x "$FERRY" ] || die "$FERRY not found (build it, or set CARGO_TARGET_DIR)"

mkdir -p "$OUT"
DATA=$(mktemp -d "$OUT/data.XXXXXX")
SERVER_PID=
stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}
trap 'stop_server; rm -rf "$DATA"' EXIT

"$FERRY" serve --listen 127.0.0.1:0 --config bench/ferry-bench.toml --history sqlite \
  --api-key "$API_KEY" --jwt-secret "$JWT_SECRET" --data-dir "$DATA" \
  >"$OUT/server.log" 2>&1 &
SERVER_PID=$!
ADDR=
for _ in $(seq 100); do
  ADDR=$(sed -n 's#.*listening on http://\([0-9.:]*\).*#\1#p' "$OUT/server.log" | head -1)
  [ -n "$ADDR" ] && break
  kill -0 "$SERVER_PID" 2>/dev/null || break
  sleep 0.2
done
[ -n "$ADDR" ] || { cat "$OUT/server.log" >&2; die "ferry serve did not start"; }
log "ferry serve (pid $SERVER_PID) on $ADDR; soak: $CONNECTIONS connections for $DURATION s"

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
START=$(date -u +%Y-%m-%dT%H:%M:%SZ)
CMD=("$FERRY" bench --url "ws://$ADDR/ws" --jwt-secret "$JWT_SECRET" --server-pid "$SERVER_PID"
  --setup-timeout 600 soak --connections "$CONNECTIONS" --duration "$DURATION" --api-key "$API_KEY"
  "${EXTRA[@]}")
status=0
"${CMD[@]}" >"$OUT/soak.md" 2> >(tee "$OUT/soak.err" >&2) || status=$?
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
server_alive=yes
kill -0 "$SERVER_PID" 2>/dev/null || server_alive="no (it exited; see $OUT/server.log)"
stop_server
[ "$status" = 0 ] || die "ferry bench soak failed ($status); see $OUT/soak.err"

shown_cmd="ferry bench --url ws://127.0.0.1:PORT/ws --jwt-secret ... --server-pid PID --setup-timeout 600 soak --connections $CONNECTIONS --duration $DURATION --api-key ...${SOAK_ARGS:+ $SOAK_ARGS}"
{
  echo "# Soak benchmark"
  echo
  echo "Written by \`bench/soak.sh\` (issue 8). Server: \`ferry serve --config bench/ferry-bench.toml --history sqlite\`"
  echo "($PROFILE build, default limits: \`write_timeout_ms\` 10000, \`send_queue_size\` 1024 /"
  echo "\`send_queue_bytes\` 16 MiB, \`max_reply_size\` 4 MiB, history 100 per channel) on loopback;"
  echo "load generator: \`$shown_cmd\`."
  echo
  echo "- started $START, $(nproc) CPUs ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)), Linux $(uname -r)"
  echo "- load average at start $LOAD_START, at end $LOAD_END (other work shared the machine)"
  echo "- server still running at the end: $server_alive"
  echo
  cat "$OUT/soak.md"
} >"$RESULT"
log "wrote $RESULT"
cat "$RESULT"

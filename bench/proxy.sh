#!/usr/bin/env bash
# Reverse-proxy benchmark (not a test): HTTP requests per second, p50/p99 latency and the
# proxy's CPU per request, for one `ferry serve` node reached
#   direct            wrk → ferry serve
#   ferry proxy       wrk → ferry proxy → ferry serve
#   nginx             wrk → nginx (Debian, upstream keepalive) → ferry serve
# side by side in one run, on loopback only, every phase bounded in time.
#
# Usage: bench/proxy.sh            (needs Debian `wrk` and `nginx`; builds ferry --release)
# Knobs: BENCH_PROXY_DURATION (5 s per phase), BENCH_PROXY_CONNECTIONS (32),
#        BENCH_PROXY_PATH (/health), BENCH_PROXY_REPEATS (1), BENCH_NO_BUILD=1,
#        BENCH_OUT (target/bench), FERRY_BIN (the ferry binary; default the release build),
#        PROXY_THREADS (ferry proxy --threads; default one per CPU).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${BENCH_PROXY_DURATION:-5}
CONNS=${BENCH_PROXY_CONNECTIONS:-32}
REQ_PATH=${BENCH_PROXY_PATH:-/health}
REPEATS=${BENCH_PROXY_REPEATS:-1}
OUT=${BENCH_OUT:-target/bench}/proxy
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

for tool in wrk nginx; do
    command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y $tool" >&2; exit 2; }
done
if [ -z "${BENCH_NO_BUILD:-}" ]; then
    cargo build --release -q -p ferry-cli
fi
FERRY=${FERRY_BIN:-${CARGO_TARGET_DIR:-target}/release/ferry}

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    [ -f "$OUT/nginx.pid" ] && kill "$(cat "$OUT/nginx.pid")" 2>/dev/null || true
}
trap cleanup EXIT

# wait_line FILE PREFIX: the rest of the first line of FILE starting with PREFIX (≤ 10 s).
wait_line() {
    for _ in $(seq 100); do
        local line
        line=$(grep -m1 "^$2" "$1" 2>/dev/null || true)
        if [ -n "$line" ]; then echo "${line#"$2"}"; return 0; fi
        sleep 0.1
    done
    echo "timed out waiting for '$2' in $1" >&2; return 1
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# CPU ticks (user + system) of a process and its children threads.
cpu_ticks() {
    local total=0 pid
    for pid in "$@"; do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo "$total"
}

# to_us VALUE: wrk's "123.45us" / "1.23ms" / "1.01s" in microseconds.
to_us() {
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); print v }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); print v * 1000 }
        else if (v ~ /s$/) { sub(/s$/, "", v); print v * 1000000 }
        else print v }'
}

rm -rf "$OUT/data"
"$FERRY" serve --listen 127.0.0.1:0 --data-dir "$OUT/data" --api-key bench --jwt-secret bench \
    >"$OUT/serve.out" 2>"$OUT/serve.log" &
PIDS+=($!)
BACKEND=$(wait_line "$OUT/serve.out" "ferry listening on http://")

"$FERRY" proxy --listen 127.0.0.1:0 --backend "$BACKEND" -c /dev/null ${PROXY_THREADS:+--threads "$PROXY_THREADS"} \
    >"$OUT/proxy.out" 2>"$OUT/proxy.log" &
PROXY_PID=$!
PIDS+=("$PROXY_PID")
PROXY=$(wait_line "$OUT/proxy.out" "ferry proxy listening on http://")

NGINX_PORT=$(free_port)
cat >"$OUT/nginx.conf" <<EOF
worker_processes auto;
daemon on;
pid $OUT/nginx.pid;
error_log $OUT/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $OUT/nginx-body;
    proxy_temp_path $OUT/nginx-proxy;
    fastcgi_temp_path $OUT/nginx-fastcgi;
    uwsgi_temp_path $OUT/nginx-uwsgi;
    scgi_temp_path $OUT/nginx-scgi;
    upstream ferry { server $BACKEND; keepalive 64; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://ferry;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_buffering off;
        }
    }
}
EOF
nginx -c "$OUT/nginx.conf" -p "$OUT"
for _ in $(seq 100); do [ -s "$OUT/nginx.pid" ] && break; sleep 0.1; done
NGINX_MASTER=$(cat "$OUT/nginx.pid")

# run_wrk NAME URL THREADS CONNS: prints "rps p50_us p99_us requests".
run_wrk() {
    local out
    out=$(wrk -t"$3" -c"$4" -d"${DURATION}s" --latency "$2$REQ_PATH" 2>&1)
    echo "$out" >"$OUT/wrk-$1-c$4.txt"
    local rps p50 p99 n
    rps=$(echo "$out" | awk '/^Requests\/sec:/ {print $2}')
    p50=$(to_us "$(echo "$out" | awk '$1 == "50%" {print $2}')")
    p99=$(to_us "$(echo "$out" | awk '$1 == "99%" {print $2}')")
    n=$(echo "$out" | awk '/requests in/ {print $1}')
    echo "$rps $p50 $p99 $n"
}

TICK=$(getconf CLK_TCK)
declare -A TARGET=([direct]="http://$BACKEND" [ferry-proxy]="http://$PROXY" [nginx]="http://127.0.0.1:$NGINX_PORT")
RESULTS="$OUT/results.md"
{
    echo "# proxy benchmark $(date -u +%FT%TZ), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    echo "GET $REQ_PATH on one ferry serve node; throughput: wrk -t2 -c$CONNS -d${DURATION}s; latency: wrk -t1 -c1 -d${DURATION}s"
    echo
    echo "| run | path | req/s (c=$CONNS) | p50 / p99 µs (c=$CONNS) | proxy CPU µs/req | p50 µs (c=1) | p99 µs (c=1) | added p50 µs | added p99 µs |"
    echo "|---|---|---|---|---|---|---|---|---|"
} >"$RESULTS"
for run in $(seq "$REPEATS"); do
    DIRECT_P50=0
    DIRECT_P99=0
    for name in direct ferry-proxy nginx; do
        url=${TARGET[$name]}
        case $name in
            ferry-proxy) pids=("$PROXY_PID") ;;
            nginx) mapfile -t pids < <(echo "$NGINX_MASTER"; pgrep -P "$NGINX_MASTER") ;;
            *) pids=() ;;
        esac
        before=0
        [ ${#pids[@]} -gt 0 ] && before=$(cpu_ticks "${pids[@]}")
        read -r rps load50 load99 n < <(run_wrk "$name-$run" "$url" 2 "$CONNS")
        cpu="-"
        if [ ${#pids[@]} -gt 0 ]; then
            after=$(cpu_ticks "${pids[@]}")
            cpu=$(awk -v t=$((after - before)) -v hz="$TICK" -v n="$n" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
        fi
        read -r _ p50 p99 _ < <(run_wrk "$name-$run-lat" "$url" 1 1)
        if [ "$name" = direct ]; then DIRECT_P50=$p50; DIRECT_P99=$p99; fi
        added50=$(awk -v a="$p50" -v b="$DIRECT_P50" 'BEGIN { printf "%.0f", a - b }')
        added99=$(awk -v a="$p99" -v b="$DIRECT_P99" 'BEGIN { printf "%.0f", a - b }')
        [ "$name" = direct ] && added50="-" && added99="-"
        echo "| $run | $name | $rps | $load50 / $load99 | $cpu | $p50 | $p99 | $added50 | $added99 |" >>"$RESULTS"
    done
done
cat "$RESULTS"

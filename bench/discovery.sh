#!/usr/bin/env bash
# Discovery time from start to first answer (SPEC L2), on a private LAN of network
# namespaces made here (hub and client bridged; nothing touches the host's network).
# Needs root and iproute2. Runs `ferry discover --first --json` RUNS times per method and
# prints the median of the in-process time to the first answer (`elapsed_ms`) and of the
# whole command's wall time (process start included).
#
#   bash bench/discovery.sh                 # 20 runs, target/debug/ferry
#   FERRY=target/release/ferry RUNS=50 bash bench/discovery.sh
#
# Measured 2026-11-30, debug build, shared 2-core VM under load, 20 runs each (medians):
#   both (mDNS + broadcast)  first answer 28.6 ms   wall 161 ms
#   mDNS only                first answer 84.2 ms   wall 234 ms
#   broadcast only           first answer 23.3 ms   wall 178 ms
# (20/20 answered in every mode. mDNS is slower because responders wait 20-120 ms
# before answering a shared PTR query, RFC 6762 section 6.)
set -euo pipefail
cd "$(dirname "$0")/.."
FERRY=${FERRY:-target/debug/ferry}
RUNS=${RUNS:-20}
[ -x "$FERRY" ] || { echo "build it first: cargo build -p ferry-cli ($FERRY missing)" >&2; exit 2; }
FERRY=$(realpath "$FERRY")
base="ferry-bench-$$"
sw="$base-sw" hub="$base-hub" cli="$base-cli"
data=$(mktemp -d)
cleanup() {
    [ -n "${hub_pid:-}" ] && kill "$hub_pid" 2>/dev/null && wait "$hub_pid" 2>/dev/null
    for ns in "$hub" "$cli" "$sw"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$data"
}
trap cleanup EXIT
ip netns add "$sw"; ip netns add "$hub"; ip netns add "$cli"
ip -n "$sw" link add br0 type bridge
ip -n "$hub" link add eth0 type veth peer name port-hub netns "$sw"
ip -n "$cli" link add eth0 type veth peer name port-cli netns "$sw"
for p in port-hub port-cli; do ip -n "$sw" link set "$p" master br0; ip -n "$sw" link set "$p" up; done
ip -n "$sw" link set br0 up
ip -n "$hub" addr add 10.77.0.1/24 dev eth0
ip -n "$cli" addr add 10.77.0.2/24 dev eth0
for ns in "$hub" "$cli"; do ip -n "$ns" link set eth0 up; ip -n "$ns" link set lo up; done

ip netns exec "$hub" "$FERRY" serve --listen 10.77.0.1:18080 --name bench-hub \
    --data-dir "$data" --api-key k --jwt-secret s >/dev/null 2>"$data/serve.log" &
hub_pid=$!
# Wait until the hub answers both ways (mDNS probing takes ~1 s after start).
for _ in $(seq 1 50); do
    if ip netns exec "$cli" "$FERRY" discover --first --no-broadcast --timeout 1s >/dev/null 2>&1; then break; fi
done

median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

echo "ferry discover --first, $RUNS runs each, $(basename "$FERRY") from $(dirname "$FERRY")"
printf '%-22s %18s %18s %10s\n' method "first answer (ms)" "wall time (ms)" "answered"
for mode in "both:" "mdns:--no-broadcast" "broadcast:--no-mdns"; do
    name=${mode%%:*} flag=${mode#*:}
    : >"$data/elapsed" ; : >"$data/wall"; ok=0
    for _ in $(seq 1 "$RUNS"); do
        t0=$(date +%s%N)
        out=$(ip netns exec "$cli" "$FERRY" discover --first --json --timeout 5s $flag 2>/dev/null || true)
        t1=$(date +%s%N)
        ms=$(printf '%s' "$out" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d[0]["elapsed_ms"])' 2>/dev/null || true)
        if [ -n "$ms" ]; then ok=$((ok + 1)); echo "$ms" >>"$data/elapsed"; echo "$(( (t1 - t0) / 1000000 ))" >>"$data/wall"; fi
    done
    printf '%-22s %18s %18s %10s\n' "$name" "$(median <"$data/elapsed")" "$(median <"$data/wall")" "$ok/$RUNS"
done

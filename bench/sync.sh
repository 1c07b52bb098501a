#!/usr/bin/env bash
# File sync between two clients (issue 18): time to sync 10,000 small files and one
# 1 GiB file from client A to client B through a release `ferry serve --sync-root`, and
# the latency from a local save on A to the file appearing on B (p50/p99 over SAVES
# saves). The anchor for the bulk cases is rsync over loopback (an `rsync --daemon` on a
# 127.0.0.1 port, config in a temp dir), pushing the same trees once: a one-way copy
# without a hub, a watcher or a second hop, so ferry's figures are expected above it.
# Loopback only, every wait bounded. A benchmark, not a test. Writes bench/SYNC.md.
#
# Usage: bench/sync.sh   Knobs: SYNC_FILES (10000), SYNC_BIG_MIB (1024), SYNC_SAVES (200),
#        SYNC_TIMEOUT (600 s per phase), FERRY_BIN, BENCH_NO_BUILD=1.
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=${SYNC_FILES:-10000}
BIG_MIB=${SYNC_BIG_MIB:-1024}
SAVES=${SYNC_SAVES:-200}
TIMEOUT=${SYNC_TIMEOUT:-600}
[ -n "${BENCH_NO_BUILD:-}" ] || cargo build --release -q -p ferry-cli
FERRY=${FERRY_BIN:-${CARGO_TARGET_DIR:-target}/release/ferry}
command -v rsync >/dev/null || { echo "rsync is needed (apt-get install -y rsync)" >&2; exit 2; }
WORK=$(mktemp -d /tmp/ferry-sync-bench.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

mkdir -p "$WORK/root" "$WORK/data"
"$FERRY" serve --listen 127.0.0.1:0 --data-dir "$WORK/data" --api-key bench --jwt-secret bench \
    --sync-root "bench=$WORK/root" >"$WORK/serve.out" 2>"$WORK/serve.log" &
PIDS+=($!)
for _ in $(seq 100); do grep -q "listening on" "$WORK/serve.out" 2>/dev/null && break; sleep 0.1; done
BASE=$(sed -n 's|^ferry listening on ||p' "$WORK/serve.out")
[ -n "$BASE" ] || { echo "ferry serve did not start:"; cat "$WORK/serve.log"; exit 1; }
TOKEN=$("$FERRY" token --user bench --jwt-secret bench \
    --caps '[{"channels":["sync:*"],"allow":["subscribe","publish","history"]}]' 2>/dev/null)

# rsync daemon: one writable module on a loopback port.
RSYNC_PORT=$(free_port)
mkdir -p "$WORK/rsync-dst"
cat >"$WORK/rsyncd.conf" <<EOF
pid file = $WORK/rsyncd.pid
use chroot = no
uid = $(id -u)
gid = $(id -g)
[dst]
    path = $WORK/rsync-dst
    read only = no
EOF
rsync --daemon --no-detach --address=127.0.0.1 --port="$RSYNC_PORT" --config="$WORK/rsyncd.conf" \
    >"$WORK/rsyncd.log" 2>&1 &
PIDS+=($!)

export FERRY BASE TOKEN WORK FILES BIG_MIB SAVES TIMEOUT RSYNC_PORT
python3 - <<'PY' | tee bench/SYNC.md
import hashlib, json, os, subprocess, sys, time, threading

FERRY, BASE, TOKEN, WORK = (os.environ[k] for k in ("FERRY", "BASE", "TOKEN", "WORK"))
FILES, BIG_MIB, SAVES, TIMEOUT = (int(os.environ[k]) for k in ("FILES", "BIG_MIB", "SAVES", "TIMEOUT"))
RSYNC = f"rsync://127.0.0.1:{os.environ['RSYNC_PORT']}/dst/"

def wait(what, cond, timeout=TIMEOUT, step=0.002):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return time.monotonic()
        time.sleep(step)
    sys.exit(f"timed out waiting for {what}")

class Client:
    def __init__(self, name):
        self.dir = os.path.join(WORK, name)
        os.makedirs(self.dir, exist_ok=True)
        self.name, self.events, self.proc = name, [], None
    def start(self):
        self.proc = subprocess.Popen(
            [FERRY, "sync", f"{BASE}/bench", self.dir, "--json", "--token", TOKEN, "--host-name", self.name],
            stdout=subprocess.PIPE, stderr=open(os.path.join(WORK, self.name + ".log"), "w"), text=True)
        threading.Thread(target=self._read, daemon=True).start()
    def _read(self):
        for line in self.proc.stdout:
            try:
                self.events.append(json.loads(line))
            except ValueError:
                pass
    def idle_count(self):
        return sum(1 for e in list(self.events) if e.get("event") == "idle")
    def stop(self):
        self.proc.kill(); self.proc.wait()

def count_files(d):
    n = 0
    for _, dirs, files in os.walk(d):
        if ".ferry-sync" in dirs:
            dirs.remove(".ferry-sync")
        n += len(files)
    return n

def small_tree(d, n):
    for i in range(n):
        sub = os.path.join(d, "small", f"d{i // 100:03d}")
        os.makedirs(sub, exist_ok=True)
        with open(os.path.join(sub, f"f{i:05d}.txt"), "w") as f:
            f.write(f"file {i}\n" * 20)

def big_file(path, mib):
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for i in range(mib):
            f.write(i.to_bytes(8, "little") + block[8:])

def rsync_push(src):
    t = time.monotonic()
    subprocess.run(["rsync", "-a", "--whole-file", src, RSYNC], check=True)
    return time.monotonic() - t

a, b = Client("a"), Client("b")
import atexit
atexit.register(lambda: [c.proc and c.proc.poll() is None and c.proc.kill() for c in (a, b)])
a.start(); b.start()
wait("both clients idle", lambda: a.idle_count() and b.idle_count())

rows = []
# 1. Many small files: written into A at once, timed until B holds them all.
src = os.path.join(WORK, "src-small"); small_tree(src, FILES)
t0 = time.monotonic()
os.rename(os.path.join(src, "small"), os.path.join(a.dir, "small"))
t1 = wait(f"{FILES} files on B", lambda: count_files(os.path.join(b.dir, "small")) >= FILES, step=0.05)
small_ferry = t1 - t0
print(f"small files: ferry {small_ferry:.2f} s", file=sys.stderr)
small_tree(src, FILES)
small_rsync = rsync_push(os.path.join(src, "small"))
rows.append((f"{FILES:,} small files (~{20 * 8} B each)", small_ferry, small_rsync))

# 2. One big file, moved into A complete, timed until B holds all of it.
big = os.path.join(WORK, "big.bin"); big_file(big, BIG_MIB)
size = os.path.getsize(big)
big_rsync = rsync_push(big)
t0 = time.monotonic()
os.rename(big, os.path.join(a.dir, "big.bin"))
target = os.path.join(b.dir, "big.bin")
t1 = wait("the big file on B", lambda: os.path.exists(target) and os.path.getsize(target) == size, step=0.01)
big_ferry = t1 - t0
print(f"big file: ferry {big_ferry:.2f} s, rsync {big_rsync:.2f} s", file=sys.stderr)
rows.append((f"one {BIG_MIB} MiB file", big_ferry, big_rsync))

# 3. Save → appears latency, one save at a time.
os.makedirs(os.path.join(a.dir, "lat"), exist_ok=True)
wait("lat/ on B", lambda: os.path.isdir(os.path.join(b.dir, "lat")))
lat = []
for i in range(SAVES):
    name = f"lat/s{i:04d}.txt"
    tmp = os.path.join(WORK, "save.tmp")
    with open(tmp, "w") as f:
        f.write(f"save {i} {time.time()}\n")
    t0 = time.monotonic()
    os.rename(tmp, os.path.join(a.dir, name))
    t1 = wait(name, lambda: os.path.exists(os.path.join(b.dir, name)), timeout=60, step=0.001)
    lat.append((t1 - t0) * 1000)
lat.sort()
p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
a.stop(); b.stop()

cpus = os.cpu_count()
print(f"# ferry sync, {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, {cpus} CPUs\n")
print("Client A → hub → client B, release build, loopback; `ferry sync` live on both sides.")
print("rsync: one `rsync -a --whole-file` push to an `rsync --daemon` on 127.0.0.1 (one hop,")
print("no hub, no watcher, no hashing on the receiving side).\n")
print("| case | ferry sync A → B (s) | rsync push (s) | ratio |")
print("|---|---|---|---|")
for name, f, r in rows:
    print(f"| {name} | {f:.2f} | {r:.2f} | {f / r:.1f}× |")
print(f"\nSave on A → file on B, {SAVES} saves one after another: "
      f"p50 {p(0.5):.1f} ms, p99 {p(0.99):.1f} ms, max {lat[-1]:.1f} ms.\n")
print("Command: `bench/sync.sh` (SYNC_FILES, SYNC_BIG_MIB, SYNC_SAVES to change the sizes).")
PY

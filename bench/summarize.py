#!/usr/bin/env python3
"""Turn the JSON reports of `ferry bench` runs (bench/run.sh) into bench/RESULTS.md:
the median of the repeats per server and scenario, the SPEC targets, and every run."""

import argparse
import glob
import json
import os
import platform
import statistics
from collections import defaultdict

SERVERS = [
    ("ferry", "ferry"),
    ("reference", "bare tokio-tungstenite"),
    ("node-ws", "Node ws"),
    ("socketio", "Socket.IO"),
    ("python-websockets", "Python websockets"),
]


def get(report, *path):
    for key in path:
        if report is None:
            return None
        report = report.get(key)
    return report


METRICS = [
    # (label, scenario, extractor, format)
    ("KiB per idle connection ({idle} connections)", "idle", lambda r: get(r, "server", "kib_per_connection"), "{:.2f}"),
    ("idle connections held", "idle", lambda r: r["connections"], "{:.0f}"),
    ("fan-out {fanout_small} subscribers: deliveries/s", "fanout-small", lambda r: r["messages_per_s"], "{:,.0f}"),
    ("fan-out {fanout_small} subscribers: CPU-s per million deliveries", "fanout-small", lambda r: get(r, "server", "cpu_s_per_million"), "{:.2f}"),
    ("fan-out {fanout_large} subscribers: deliveries/s", "fanout-large", lambda r: r["messages_per_s"], "{:,.0f}"),
    ("fan-out {fanout_large} subscribers: CPU-s per million deliveries", "fanout-large", lambda r: get(r, "server", "cpu_s_per_million"), "{:.2f}"),
    ("fan-out {fanout_small} MessagePack subscribers: deliveries/s", "fanout-small-msgpack", lambda r: r["messages_per_s"], "{:,.0f}"),
    ("fan-out {fanout_small} MessagePack subscribers: CPU-s per million deliveries", "fanout-small-msgpack", lambda r: get(r, "server", "cpu_s_per_million"), "{:.2f}"),
    ("fan-out {fanout_large} MessagePack subscribers: deliveries/s", "fanout-large-msgpack", lambda r: r["messages_per_s"], "{:,.0f}"),
    ("fan-out {fanout_large} MessagePack subscribers: CPU-s per million deliveries", "fanout-large-msgpack", lambda r: get(r, "server", "cpu_s_per_million"), "{:.2f}"),
    ("latency p50, ms ({latency})", "latency", lambda r: get(r, "latency", "p50_ms"), "{:.2f}"),
    ("latency p99, ms ({latency})", "latency", lambda r: get(r, "latency", "p99_ms"), "{:.2f}"),
    ("echo messages/s ({echo} connections)", "echo", lambda r: r["messages_per_s"], "{:,.0f}"),
]


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, pattern):
    return "n/a" if value is None else pattern.format(value)


def machine():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
            mem = f", {kib / 1024 / 1024:.0f} GiB memory"
    except (OSError, ValueError, IndexError):
        pass
    return f"{os.cpu_count()} CPUs ({model}){mem}, Linux {platform.release()}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs")
    ap.add_argument("out")
    ap.add_argument("--started", default="")
    ap.add_argument("--elapsed", default="")
    ap.add_argument("--load-start", default="")
    ap.add_argument("--load-end", default="")
    ap.add_argument("--command", default="bench/run.sh")
    ap.add_argument("--param", action="append", default=[])
    ap.add_argument("--version", action="append", default=[])
    args = ap.parse_args()
    params = dict(p.split("=", 1) for p in args.param)

    runs = defaultdict(list)  # (server, scenario) -> [report]
    for path in sorted(glob.glob(os.path.join(args.runs, "*.json"))):
        server, scenario, _rep, _ = os.path.basename(path).rsplit(".", 3)
        with open(path) as f:
            try:
                runs[(server, scenario)].append(json.load(f))
            except json.JSONDecodeError:
                pass

    labels = {k: k for k in ("idle", "fanout_small", "fanout_large", "latency", "echo")}
    labels.update({k: params.get(k, k) for k in labels})
    labels = {k: (f"{int(v):,}" if v.isdigit() else v) for k, v in labels.items()}
    labels["latency"] = labels["latency"].replace("@", " subscribers, ") .replace("/s", " publications/s")

    med = {}
    lines = []
    lines.append("# Benchmark results\n")
    lines.append(
        "Side by side in one run of the harness, every server driven by the same load generator "
        "(`ferry bench`, release build) over loopback on the same machine; each value is the "
        f"median of {params.get('repeats', '3')} runs (a fresh server process per run). "
        "Server memory and CPU time are read from `/proc/PID` around each measurement window. "
        "How to reproduce and what each scenario does: [README.md](README.md).\n"
    )
    lines.append(f"- date: {args.started} (harness took {args.elapsed} s)")
    lines.append(f"- machine: {machine()}")
    lines.append(f"- load average (1, 5, 15 min) at start: {args.load_start}; at end: {args.load_end}")
    lines.append(f"- command: `{args.command}`")
    if args.version:
        lines.append("- versions: " + ", ".join(args.version))
    lines.append("")
    header = "| metric | " + " | ".join(name for _, name in SERVERS) + " |"
    lines.append(header)
    lines.append("|---" * (len(SERVERS) + 1) + "|")
    for label, scenario, extract, pattern in METRICS:
        row = [label.format(**labels)]
        for key, _ in SERVERS:
            value = median(extract(r) for r in runs.get((key, scenario), []))
            med[(key, label)] = value
            row.append(fmt(value, pattern))
        lines.append("| " + " | ".join(row) + " |")
    # Efficiency relative to the reference: deliveries per CPU-second.
    for size_key, scenario in (("fanout_small", "fanout-small"), ("fanout_large", "fanout-large")):
        label = f"fan-out {labels[size_key]} subscribers: deliveries per CPU-s, × reference"
        ref = median(get(r, "server", "cpu_s_per_million") for r in runs.get(("reference", scenario), []))
        row = [label]
        for key, _ in SERVERS:
            cpu = median(get(r, "server", "cpu_s_per_million") for r in runs.get((key, scenario), []))
            row.append(fmt(ref / cpu if ref and cpu else None, "{:.2f}×"))
        lines.append("| " + " | ".join(row) + " |")
    row = ["errors over all runs"]
    for key, _ in SERVERS:
        row.append(str(sum(r.get("errors", 0) for (s, _), rs in runs.items() if s == key for r in rs)))
    lines.append("| " + " | ".join(row) + " |")
    lines.append("")

    # SPEC targets for ferry.
    def m(server, scenario, extract):
        return median(extract(r) for r in runs.get((server, scenario), []))

    kib = m("ferry", "idle", lambda r: get(r, "server", "kib_per_connection"))
    cpu_small = m("ferry", "fanout-small", lambda r: get(r, "server", "cpu_s_per_million"))
    cpu_small_ref = m("reference", "fanout-small", lambda r: get(r, "server", "cpu_s_per_million"))
    cpu_small_node = m("node-ws", "fanout-small", lambda r: get(r, "server", "cpu_s_per_million"))
    cpu_large = m("ferry", "fanout-large", lambda r: get(r, "server", "cpu_s_per_million"))
    p99 = m("ferry", "latency", lambda r: get(r, "latency", "p99_ms"))
    echo = m("ferry", "echo", lambda r: r["messages_per_s"])
    echo_ref = m("reference", "echo", lambda r: r["messages_per_s"])

    def status(ok):
        return "n/a" if ok is None else ("met" if ok else "**missed**")

    def ratio(a, b):
        return a / b if a and b else None

    vs_ref = ratio(cpu_small_ref, cpu_small)
    vs_node = ratio(cpu_small_node, cpu_small)
    echo_ratio = ratio(echo, echo_ref)
    targets = [
        ("memory per idle connection ≤ 4 KiB", fmt(kib, "{:.2f} KiB"), status(None if kib is None else kib <= 4)),
        (f"fan-out {labels['fanout_small']}: deliveries per CPU-s ≥ 1.0× reference", fmt(vs_ref, "{:.2f}×"), status(None if vs_ref is None else vs_ref >= 1.0)),
        (f"fan-out {labels['fanout_small']}: deliveries per CPU-s ≥ 8× Node ws", fmt(vs_node, "{:.2f}×"), status(None if vs_node is None else vs_node >= 8.0)),
        (f"fan-out {labels['fanout_large']}: ≤ 2 CPU-s per million deliveries", fmt(cpu_large, "{:.2f}"), status(None if cpu_large is None else cpu_large <= 2.0)),
        ("latency p99 < 10 ms at 20 publications/s to 1,000 subscribers", fmt(p99, "{:.2f} ms"), status(None if p99 is None else p99 < 10.0)),
        ("WS echo ≥ reference", fmt(echo_ratio, "{:.2f}×"), status(None if echo_ratio is None else echo_ratio >= 1.0)),
    ]
    lines.append("## SPEC targets (ferry)\n")
    lines.append("| target | ferry | |")
    lines.append("|---|---|---|")
    for t in targets:
        lines.append(f"| {t[0]} | {t[1]} | {t[2]} |")
    lines.append("")

    lines.append("## Every run\n")
    lines.append("| server | scenario | connections | msgs/s | p50 ms | p99 ms | KiB/conn | CPU-s/M | errors |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for key, _ in SERVERS:
        for scenario in ("idle", "fanout-small", "fanout-large", "fanout-small-msgpack", "fanout-large-msgpack", "latency", "echo"):
            for r in runs.get((key, scenario), []):
                lines.append(
                    f"| {key} | {scenario} | {r['connections']} | {r['messages_per_s']:,.0f} | "
                    f"{fmt(get(r, 'latency', 'p50_ms'), '{:.2f}')} | {fmt(get(r, 'latency', 'p99_ms'), '{:.2f}')} | "
                    f"{fmt(get(r, 'server', 'kib_per_connection'), '{:.2f}')} | "
                    f"{fmt(get(r, 'server', 'cpu_s_per_million'), '{:.2f}')} | {r.get('errors', 0)} |"
                )
    missing = [f"{s} {sc}" for s, _ in SERVERS for sc in ("idle", "fanout-small", "fanout-large", "latency", "echo") if not runs.get((s, sc))]
    if missing:
        lines.append("")
        lines.append("Runs that produced no report (see target/bench/runs/*.err): " + ", ".join(missing))
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Turns `benches/compare.sh` JSON lines into the markdown tables of BENCHMARKS.md:
medians over the interleaved runs, per target and scenario."""
import json
import statistics
import sys
from collections import defaultdict

rows = defaultdict(list)
for line in open(sys.argv[1]):
    line = line.strip()
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    rows[(r.get("scenario"), r.get("params", ""), r["label"])].append(r)


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, unit=""):
    if v is None:
        return "–"
    if v >= 1000:
        return f"{v:,.0f}{unit}"
    return f"{v:.1f}{unit}"


print("| scenario | target | runs | delivered msg/s | loss | broker CPU s | msg per broker CPU-s | p50 / p99 / p99.9 / max µs |")
print("|---|---|---:|---:|---:|---:|---:|---|")
for (scenario, params, label), rs in sorted(rows.items()):
    ok = [r for r in rs if r.get("outcome") != "failed"]
    if not ok:
        print(f"| {scenario} | {label} | {len(rs)} | failed | | | | |")
        continue
    lat = ""
    if scenario == "latency":
        lat = " / ".join(fmt(med([r.get(k) for r in ok])) for k in ("p50_us", "p99_us", "p999_us", "max_us"))
    loss = med([r.get("loss_pct") for r in ok])
    print(
        f"| {scenario} {params} | {label} | {len(ok)} | {fmt(med([r.get('msg_per_s') for r in ok]))} | "
        f"{'–' if loss is None else f'{loss:.2f}%'} | {fmt(med([r.get('broker_cpu_s') for r in ok]))} | "
        f"{fmt(med([r.get('msg_per_broker_cpu_s') for r in ok]))} | {lat} |"
    )

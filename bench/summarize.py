#!/usr/bin/env python3
"""Turns bench/run.sh's results (workload, builder, wall s, peak RSS KiB, bytes pushed, exit) into
the Markdown table of BENCHMARKS.md: python3 bench/summarize.py RESULTS.tsv DATE MACHINE."""
import statistics, sys
from collections import defaultdict
rows = defaultdict(list)
for line in open(sys.argv[1]):
    w, peer, wall, rss, pushed, rc = line.rstrip("\n").split("\t")
    if rc == "0":
        rows[(w, peer)].append((float(wall), int(rss), int(pushed)))
print(f"Measured {sys.argv[2]} on {sys.argv[3]} (bash bench/run.sh).\n")
print("| workload | builder | median s | min-max s | kiln/builder | peak RSS MiB | bytes pushed |")
print("|---|---|---|---|---|---|---|")
for w in sorted({w for w, _ in rows}):
    kiln = rows.get((w, "kiln"))
    kmed = statistics.median(r[0] for r in kiln) if kiln else None
    for (ww, peer), rs in sorted(rows.items()):
        if ww != w:
            continue
        walls = [r[0] for r in rs]
        med = statistics.median(walls)
        ratio = f"{kmed / med:.2f}" if kmed and not peer.startswith("kiln") else ""
        rss = f"{max(r[1] for r in rs) / 1024:.0f}" if peer.startswith("kiln") else ""
        pushed = max(r[2] for r in rs)
        print(f"| {w} | {peer} | {med:.2f} | {min(walls):.2f}-{max(walls):.2f} | {ratio} | {rss} | {pushed} |")

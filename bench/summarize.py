#!/usr/bin/env python3
"""Turns bench/run.sh's results into the Markdown tables of BENCHMARKS.md:
python3 bench/summarize.py RESULTS.tsv DATE MACHINE [COMMAND] (bench/cache.sh uses it too).

Each result line: workload, builder, wall s, peak RSS KiB, bytes pushed, exit status, then the
last RUN step's figures from kiln's log (bench/steps.py: command s, index s, snapshot s, layer
write s, tar bytes, blob bytes, seconds to "built"), "-" where there are none."""
import statistics, sys
from collections import defaultdict

MIB = 1024 * 1024
rows = defaultdict(list)
for line in open(sys.argv[1]):
    f = line.rstrip("\n").split("\t")
    f += ["-"] * (13 - len(f))
    w, peer, wall, rss, pushed, rc = f[:6]
    if rc != "0":
        continue
    steps = [None if x == "-" else float(x) for x in f[6:13]]
    rows[(w, peer)].append((float(wall), int(rss), int(pushed), steps))


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=2):
    return "" if v is None else f"{v:.{digits}f}"


command = sys.argv[4] if len(sys.argv) > 4 else "bash bench/run.sh"
print(f"Measured {sys.argv[2]} on {sys.argv[3]} ({command}).\n")
print("| workload | builder | median s | min-max s | kiln/builder | peak RSS MiB | bytes pushed |")
print("|---|---|---|---|---|---|---|")
for w in sorted({w for w, _ in rows if w != "w5-gzip"}):
    kiln = rows.get((w, "kiln"))
    kmed = med(r[0] for r in kiln) if kiln else None
    for (ww, peer), rs in sorted(rows.items()):
        if ww != w:
            continue
        walls = [r[0] for r in rs]
        m = statistics.median(walls)
        ratio = f"{kmed / m:.2f}" if kmed and not peer.startswith("kiln") else ""
        rss = f"{max(r[1] for r in rs) / 1024:.0f}" if peer.startswith("kiln") else ""
        pushed = max(r[2] for r in rs)
        print(f"| {w} | {peer} | {m:.2f} | {min(walls):.2f}-{max(walls):.2f} | {ratio} | {rss} | {pushed} |")

print("\nkiln's last RUN step, medians (command = the step minus its snapshot; index = the chroot")
print("backend's stat indexes of the tree before RUN steps, summed over the build: the first RUN")
print("after the base's extraction takes one; snapshot = finding the changes; layer = tar +")
print("compression + digests + fsync):\n")
print("| workload | builder | command s | index s | snapshot s | layer s | tar MiB | blob MiB |")
print("|---|---|---|---|---|---|---|---|")
for (w, peer), rs in sorted(rows.items()):
    if not peer.startswith("kiln") or all(r[3][0] is None for r in rs):
        continue
    cols = [med(r[3][i] for r in rs) for i in range(6)]
    print(
        f"| {w} | {peer} | {fmt(cols[0])} | {fmt(cols[1])} | {fmt(cols[2], 3)} | {fmt(cols[3])} "
        f"| {fmt(cols[4] / MIB if cols[4] is not None else None, 1)} "
        f"| {fmt(cols[5] / MIB if cols[5] is not None else None, 1)} |"
    )

gzip = rows.get(("w5-gzip", "gzip-1core"))
w5 = {peer: rs for (w, peer), rs in rows.items() if w.startswith("w5-big-layer") and peer.startswith("kiln")}
if gzip and w5:
    size = gzip[0][3][4]
    one_core = med(size / MIB / r[0] for r in gzip)
    print("\nW5 compression and push against one gzip core (`gzip -6` over the same bytes):")
    print("kiln's throughput is the layer's tar bytes over the layer-writing time plus the push")
    print("(the wall time after \"built\").\n")
    print("| who | median MiB/s | x one gzip core |")
    print("|---|---|---|")
    print(f"| gzip -6, one core | {one_core:.1f} | 1.00 |")
    for peer, rs in sorted(w5.items()):
        rates = [
            r[3][4] / MIB / (r[3][3] + (r[0] - r[3][6]))
            for r in rs
            if r[3][3] is not None and r[3][6] is not None and r[3][4]
        ]
        if rates:
            rate = statistics.median(rates)
            print(f"| {peer}: compress + push | {rate:.1f} | {rate / one_core:.2f} |")

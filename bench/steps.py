#!/usr/bin/env python3
"""Reads a kiln build log written with --log-format json and prints, tab-separated, the last
RUN step's figures: command seconds (the step minus its snapshot), index seconds (chroot
backend: the stat indexes of the tree taken before RUN steps, summed over the build; the first
RUN after the base's extraction or a COPY takes one), snapshot seconds (finding
the changes), layer-writing seconds, tar bytes, blob bytes, and the seconds from start to
"built" (the push follows). Prints "-" for each figure it cannot find (a peer's log, a failed
build)."""
import json, re, sys

RUN = re.compile(r"STEP \d+/\d+: RUN ")
BUILT = re.compile(r"^built sha256:[0-9a-f]+ in (?P<built>[\d.]+)s$")

last, built, index = None, None, 0.0
for line in open(sys.argv[1], errors="replace"):
    try:
        event = json.loads(line)
    except ValueError:
        continue
    if not isinstance(event, dict):
        continue
    msg = str(event.get("msg", ""))
    if event.get("event") == "step-done" and event.get("snapshot") and RUN.search(msg):
        last = event
        index += event["snapshot"].get("index_seconds", 0.0)
    elif m := BUILT.match(msg):
        built = float(m["built"])
if last is None:
    print("\t".join(["-"] * 7))
    sys.exit(0)
s = last["snapshot"]
find, write = s["find_seconds"], s["write_seconds"]
command = max(last["seconds"] - s["index_seconds"] - find - write, 0.0)
print(
    f"{command:.3f}\t{index:.3f}\t{find:.3f}\t{write:.3f}\t{s['tar_bytes']}\t{s['blob_bytes']}\t"
    + (f"{built:.2f}" if built is not None else "-")
)

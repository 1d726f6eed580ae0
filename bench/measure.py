#!/usr/bin/env python3
"""Runs a command and prints `<wall seconds> <peak RSS KiB of its process tree's largest process>`
on the last line of stderr; the command's own output goes to the log file given first."""
import os, resource, subprocess, sys, time

log = open(sys.argv[1], "ab")
start = time.monotonic()
rc = subprocess.call(sys.argv[2:], stdout=log, stderr=log)
wall = time.monotonic() - start
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(f"{wall:.3f} {rss} {rc}")
sys.exit(0)

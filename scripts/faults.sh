#!/usr/bin/env bash
# Runs kiln's reliability matrix and prints its figures (RELIABILITY.md shows the last run):
#   - registry faults through the fault proxy during whole builds (tests/faults.rs);
#   - SIGTERM/SIGINT during a RUN under every backend and during a stalled pull
#     (tests/stop_signals.rs);
#   - SIGKILL at random moments, KILN_CRASH_ROUNDS times (default here 50), each followed by a
#     build on the same kiln dir that must be identical to a clean one (tests/crash_recovery.rs);
#   - a full kiln dir and a full registry (tests/disk_full.rs);
#   - 8 and 32 builds at once, on distinct kiln dirs and on one shared (tests/load.rs).
# The same tests run in the suite with fewer rounds. Needs what scripts/test.sh installs; run
# as root.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${KILN_CRASH_ROUNDS:-50}
run() {
    local log status=0
    log=$(mktemp)
    cargo test --locked -p kiln --test "$1" -- --nocapture --test-threads=1 >"$log" 2>&1 || status=$?
    # Each test's report lines (the rest is cargo's).
    # (libtest prints a test's own lines right after its "test NAME ... ").
    grep -oE "(fault matrix|crash recovery|load|decompression bomb|test result): .*|[A-Za-z ]+: exit [0-9]+: .*" "$log" || true
    if [ "$status" -ne 0 ]; then
        cat "$log" >&2
        echo "FAILED: tests/$1.rs" >&2
        exit 1
    fi
    rm -f "$log"
}
cargo build --locked -p kiln --tests -q
run faults
run stop_signals
run disk_full
KILN_CRASH_ROUNDS=$rounds run crash_recovery
KILN_LOAD_BUILDS=8 run load
KILN_LOAD_BUILDS=32 run load

#!/usr/bin/env bash
# What the cloud providers compiled into kiln cost a build that needs no cloud: the size of the
# binary (stripped, as kiln's images ship it) and the wall time of `kiln --version` and of a
# one-step build (`FROM scratch`, one COPY, into an OCI layout, a fresh kiln dir each time),
# for two binaries run interleaved, on a fresh journaled ext4 of the benchmark's own.
#
#   bash bench/startup.sh NEW_KILN OLD_KILN [RUNS]     (RUNS: default 30)
#
# Prints the median and the spread (min–max) of each, in milliseconds.
set -euo pipefail
cd "$(dirname "$0")/.."
new=$(realpath "${1:?usage: bench/startup.sh NEW_KILN OLD_KILN [RUNS]}")
old=$(realpath "${2:?usage: bench/startup.sh NEW_KILN OLD_KILN [RUNS]}")
runs=${3:-30}

work=$(mktemp -d /tmp/kiln-startup.XXXXXX)
truncate -s 4G "$work.img" && mkfs.ext4 -q -F "$work.img" && mount -o loop "$work.img" "$work"
cleanup() {
    set +e
    umount "$work" || umount -l "$work"
    rm -rf "$work" "$work.img"
}
trap cleanup EXIT

mkdir -p "$work/ctx"
printf 'FROM scratch\nCOPY a.txt /a.txt\n' >"$work/ctx/Dockerfile"
echo a >"$work/ctx/a.txt"
echo '{}' >"$work/config.json"
# A clean environment: no cloud variables reach the binaries (a build that needs no cloud).
run=(env -i PATH="$PATH" HOME="$work" DOCKER_CONFIG="$work")

for bin in "$new" "$old"; do
    strip -o "$work/stripped" "$bin"
    printf '%s: %s bytes stripped\n' "$bin" "$(stat -c %s "$work/stripped")"
done

now_ms() { echo $(($(date +%s%N) / 1000000)); }
declare -A times
for i in $(seq "$runs"); do
    for which in new old; do
        bin=${!which}
        t0=$(now_ms)
        "${run[@]}" "$bin" --version >/dev/null
        t1=$(now_ms)
        "${run[@]}" "$bin" build --context "$work/ctx" --no-push --oci-layout-path "$work/out-$which-$i" \
            --kiln-dir "$work/kiln-$which-$i" >/dev/null 2>"$work/err" \
            || { echo "$bin build failed:" >&2; cat "$work/err" >&2; exit 1; }
        t2=$(now_ms)
        times[$which-version]+="$((t1 - t0)) "
        times[$which-build]+="$((t2 - t1)) "
        rm -rf "$work/out-$which-$i" "$work/kiln-$which-$i"
    done
done

stats() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {printf "median %d ms (%d–%d)", a[int((NR+1)/2)], a[1], a[NR]}'; }
for what in version build; do
    printf '%-8s new: %s   old: %s\n' "$what" "$(echo "${times[new-$what]}" | stats)" "$(echo "${times[old-$what]}" | stats)"
done

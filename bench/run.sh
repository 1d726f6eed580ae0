#!/usr/bin/env bash
# kiln against buildah and BuildKit on the same builds (issue 5's workloads), side by side.
#
#   bash bench/run.sh [--runs N] [--workloads w1,w2,...] [--n-files 10000,100000,500000]
#                     [--peers kiln,buildah-vfs,buildah-overlay,buildkit] [--w5-mib 512]
#                     [--no-own-fs] [KILN]
#
# Makes its own ext4 (a loop file) for all the builders' state, starts a local registry, makes
# the base images (busybox from busybox-static; a Debian bookworm
# minbase rootfs with debootstrap, cached in ${XDG_CACHE_HOME:-~/.cache}/kiln-bench; for W6 a
# busybox tree with N more files), and runs every workload with every peer from a clean state (a
# fresh kiln dir, buildah root, kaniko root or dockerd build cache; the cleanup's disk work is
# synced before the clock starts), interleaved, RUNS times; then kiln again with a warm kiln dir
# (its store warm, every step run with --no-cache: the layer cache is bench/cache.sh's).
# W6 (one changed file in a big tree) runs kiln's two backends only (kiln = overlay,
# kiln-chroot). For W5 it also times `gzip -6` on one core over the same bytes.
# BuildKit runs in Debian's dockerd, started here on a private socket (--bridge=none, builds with
# --network host). With KANIKO_BIN=/path/to/executor, kaniko joins the peers, each run in a
# throwaway root made here (a chroot in its own mount and pid namespaces; kaniko takes its root
# for its own), never on this machine's /.
# With KILN_PREV=/path/to/another/kiln (an earlier commit's release build), that binary joins as
# kiln-prev and kiln-prev-chroot (and kiln-prev-warm), interleaved with the current one: a
# refactor's no-regression check, side by side in the same run.
# Prints Markdown tables (bench/summarize.py). Run as root on Debian; installs what it needs.
# KILN_BENCH_RESULTS=FILE keeps the raw results, KILN_BENCH_LOGS=DIR every build's log, and
# KILN_BENCH_PERF=DIR runs kiln under `perf record -g` (profiles, not figures: perf slows it).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=5
WORKLOADS=w1,w2,w3,w4,w5,w6
NFILES=10000,100000,500000
PEERS=kiln,kiln-chroot,buildah-vfs,buildah-overlay,buildkit
W5_MIB=512
OWN_FS=1
while [ $# -gt 0 ]; do
    case $1 in
        --no-own-fs) OWN_FS=0; shift ;;
        --runs) RUNS=$2; shift 2 ;;
        --workloads) WORKLOADS=$2; shift 2 ;;
        --n-files) NFILES=$2; shift 2 ;;
        --peers) PEERS=$2; shift 2 ;;
        --w5-mib) W5_MIB=$2; shift 2 ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
source bench/lib.sh
bench_tools "${1:-}"
if [ -n "${KILN_PREV:-}" ]; then
    KILN_PREV=$(realpath "$KILN_PREV")
    [ -x "$KILN_PREV" ] || { echo "KILN_PREV=$KILN_PREV is not an executable" >&2; exit 2; }
    PEERS=$PEERS,kiln-prev,kiln-prev-chroot
fi

bench_setup

# W6's bases: busybox plus N empty files under /data (1,000 per directory, like a real tree).
big_base() { # N
    local dir=$WORK/big-$1
    cp -a "$WORK/bb-pristine" "$dir"
    python3 - "$dir/data" "$1" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, f"d{i // 1000}")
    if i % 1000 == 0:
        os.makedirs(d)
    open(os.path.join(d, f"f{i % 1000}"), "w").close()
PY
    push_rootfs "$dir" "big-$1"
}

bench_dockerd

# Contexts.
ctx() { # WORKLOAD -> a context dir
    local w=$1 dir=$WORK/ctx-$1
    rm -rf "$dir"; mkdir -p "$dir"
    cp bench/workloads/$w/Dockerfile "$dir/"
    echo "setting=1" > "$dir/app.conf"
    [ "$w" = w1-copy ] && head -c 20971520 /dev/urandom > "$dir/big.bin"
    echo "$dir"
}

# One build, timed: PEER WORKLOAD CONTEXT TAG [build args...]
RESULTS=${KILN_BENCH_RESULTS:-$WORK/results.tsv}
: > "$RESULTS"
one() {
    local peer=$1 w=$2 dir=$3 tag=$4; shift 4
    local args=(--build-arg "BUSYBOX=$REG/busybox:latest" --build-arg "DEBIAN=$REG/debian:latest" "$@")
    local dest=$REG/bench/$w:$tag log=$WORK/log-$peer-$w-$tag
    local before; before=$(registry_bytes)
    local out
    case $peer in
        kiln|kiln-warm|kiln-chroot|kiln-prev|kiln-prev-warm|kiln-prev-chroot)
            local kd=$WORK/kiln-dir-$tag isolation=() bin=$KILN mode=${peer/-prev/}
            [[ $peer == kiln-prev* ]] && bin=$KILN_PREV
            [ "$mode" = kiln-warm ] && kd=$WORK/kiln-dir-$peer
            [ "$mode" = kiln-chroot ] && isolation=(--isolation chroot)
            # A warm kiln dir here means its store (base layers pulled and unpacked), with
            # every step run: the layer cache's figures are bench/cache.sh's. KILN_PREV gets
            # --no-cache too (it used not to, when earlier binaries had no cache: a prev with
            # a cache then took every step from it and looked 10x faster warm).
            [ "$mode" = kiln-warm ] && isolation+=(--no-cache)
            [ "$mode" = kiln-warm ] || { rm -rf "$kd"; sync; }
            local perf=()
            [ -n "${KILN_BENCH_PERF:-}" ] && mkdir -p "$KILN_BENCH_PERF" \
                && perf=(perf record -q -F 2000 -g -o "$KILN_BENCH_PERF/perf-$w-$tag.data" --)
            out=$(python3 bench/measure.py "$log" "${perf[@]}" "$bin" build -c "$dir" -d "$dest" \
                --insecure-registry "$REG" --kiln-dir "$kd" --log-format json \
                "${isolation[@]}" "${args[@]}")
            [ "$mode" = kiln-warm ] || rm -rf "$kd" ;;
        buildah-vfs|buildah-overlay)
            local driver=${peer#buildah-} root=$WORK/buildah-$tag
            rm -rf "$root"; sync
            out=$(python3 bench/measure.py "$log" bash -c "buildah --root $root/r --runroot $root/rr --storage-driver $driver bud -q --isolation chroot --tls-verify=false ${args[*]} -t $dest $dir && buildah --root $root/r --runroot $root/rr --storage-driver $driver push -q --tls-verify=false $dest")
            buildah --root "$root/r" --runroot "$root/rr" --storage-driver "$driver" rmi -a -f >/dev/null 2>&1 || true
            rm -rf "$root" ;;
        buildkit)
            "${DOCKER[@]}" builder prune -af >/dev/null 2>&1 || true
            "${DOCKER[@]}" image prune -af >/dev/null 2>&1 || true
            sync
            out=$(DOCKER_BUILDKIT=1 python3 bench/measure.py "$log" bash -c "${DOCKER[*]} build -q --network host ${args[*]} -t $dest $dir && ${DOCKER[*]} push -q $dest") ;;
        kaniko)
            local root; root=$(kaniko_root "$dir"); sync
            out=$(kaniko_run "$log" "$root" --destination "$dest" "${args[@]}")
            rm -rf "$root" ;;
    esac
    local after; after=$(registry_bytes)
    [ -n "${KILN_BENCH_LOGS:-}" ] && mkdir -p "$KILN_BENCH_LOGS" && cp "$log" "$KILN_BENCH_LOGS/"
    read -r wall rss rc <<<"$out"
    [ "$rc" = 0 ] || { echo "$peer $w failed (exit $rc); log:" >&2; tail -n 20 "$log" >&2; }
    local steps; steps=$(python3 bench/steps.py "$log")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$w" "$peer" "$wall" "$rss" "$((after - before))" "$rc" "$steps" >> "$RESULTS"
    echo "$w $peer ${wall}s rss=${rss}KiB pushed=$((after - before))B exit=$rc" >&2
}

# W5's yardstick: one gzip core (level 6, as kiln's default) over the same bytes as the RUN writes.
gzip_one_core() {
    local half=$((W5_MIB / 2)) data=$WORK/w5-data
    head -c $((half * 1048576)) /dev/urandom > "$data"
    head -c $((half * 1048576)) < <(yes "kiln compresses this line well") >> "$data"
    for run in $(seq 1 "$RUNS"); do
        local out; out=$(python3 bench/measure.py /dev/null bash -c "gzip -6 -c $data > /dev/null")
        read -r wall rss rc <<<"$out"
        printf 'w5-gzip\tgzip-1core\t%s\t%s\t0\t%s\t-\t-\t-\t-\t%s\t-\t-\n' "$wall" "$rss" "$rc" \
            "$((W5_MIB * 1048576))" >> "$RESULTS"
        echo "w5 gzip -6, one core: ${wall}s" >&2
    done
    rm -f "$data"
}

IFS=, read -r -a all_peers <<<"$PEERS"
IFS=, read -r -a nfiles <<<"$NFILES"
for wl in $(echo "$WORKLOADS" | tr , ' '); do
    w=$(ls bench/workloads | grep "^$wl-")
    variants=("")
    [ "$wl" = w3 ] || [ "$wl" = w6 ] && variants=("${nfiles[@]}")
    peers=("${all_peers[@]}")
    if [ "$wl" = w6 ]; then
        peers=(kiln kiln-chroot)
        [ -n "${KILN_PREV:-}" ] && peers+=(kiln-prev kiln-prev-chroot)
    fi
    [ "$wl" = w5 ] && gzip_one_core
    for v in "${variants[@]}"; do
        name=$w; extra=()
        [ -n "$v" ] && { name=$w-$v; extra=(--build-arg "N=$v"); }
        [ "$wl" = w5 ] && extra=(--build-arg "MIB=$W5_MIB")
        [ "$wl" = w6 ] && { big_base "$v"; extra=(--build-arg "BIG=$REG/big-$v:latest"); }
        dir=$(ctx "$w")
        for run in $(seq 1 "$RUNS"); do
            for peer in "${peers[@]}"; do
                one "$peer" "$name" "$dir" "$peer-$run" "${extra[@]}"
            done
        done
        if [[ ",$PEERS," == *,kiln,* ]] && [ "$wl" != w6 ]; then
            warm=(kiln-warm)
            [ -n "${KILN_PREV:-}" ] && warm+=(kiln-prev-warm)
            for peer in "${warm[@]}"; do
                # Prime the warm kiln dir; that run is not a figure.
                one "$peer" "$name" "$dir" "$peer-prime" "${extra[@]}" >/dev/null 2>&1 || true
                sed -i '$d' "$RESULTS"
            done
            for run in $(seq 1 "$RUNS"); do
                for peer in "${warm[@]}"; do one "$peer" "$name" "$dir" "$peer-$run" "${extra[@]}"; done
            done
            rm -rf "$WORK"/kiln-dir-kiln-warm "$WORK"/kiln-dir-kiln-prev-warm
        fi
    done
done

python3 bench/summarize.py "$RESULTS" "$(date -u +%Y-%m-%d)" "$(nproc) cores, $(uname -r)"

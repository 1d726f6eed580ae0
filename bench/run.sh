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
# synced before the clock starts), interleaved, RUNS times; then kiln again with a warm kiln dir.
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
KILN=$(realpath "${1:-target/release/kiln}")
[ -x "$KILN" ] || { echo "no kiln at $KILN: cargo build --release -p kiln" >&2; exit 2; }
if [ -n "${KANIKO_BIN:-}" ]; then
    KANIKO_BIN=$(realpath "$KANIKO_BIN")
    [ -x "$KANIKO_BIN" ] || { echo "KANIKO_BIN=$KANIKO_BIN is not an executable" >&2; exit 2; }
    PEERS=$PEERS,kaniko
fi
if [ -n "${KILN_PREV:-}" ]; then
    KILN_PREV=$(realpath "$KILN_PREV")
    [ -x "$KILN_PREV" ] || { echo "KILN_PREV=$KILN_PREV is not an executable" >&2; exit 2; }
    PEERS=$PEERS,kiln-prev,kiln-prev-chroot
fi

need=()
for p in docker-registry buildah skopeo umoci busybox-static debootstrap python3; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
case ",$PEERS," in *,buildkit,*) command -v dockerd >/dev/null || need+=(docker.io) ;; esac
if [ ${#need[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

WORK=$(mktemp -d /tmp/kiln-bench.XXXXXX)
# Everything the builders write goes to a fresh ext4 with a journal (a sparse loop file), as on
# a usual CI node, unless --no-own-fs: a long-lived file system can carry quirks that swamp the
# figures (this machine's root ext4 has no journal, and ext4 then skips inodes freed in the last
# minutes when it allocates: creating files after deleting many costs up to 10x more).
if [ "$OWN_FS" = 1 ]; then
    truncate -s 64G "$WORK.img" && mkfs.ext4 -q -F "$WORK.img" && mount -o loop "$WORK.img" "$WORK" \
        || { echo "cannot make the benchmark's own file system (loop device); try --no-own-fs" >&2; rm -f "$WORK.img"; exit 2; }
fi
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/kiln-bench
mkdir -p "$CACHE"
REG_PID="" DOCKERD_PID=""
source scripts/lib/registry.sh
cleanup() {
    set +e
    [ -n "$DOCKERD_PID" ] && kill "$DOCKERD_PID" 2>/dev/null && wait "$DOCKERD_PID" 2>/dev/null
    [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null && wait "$REG_PID" 2>/dev/null
    findmnt -rn -o TARGET | grep -F "$WORK/" | sort -r | while read -r m; do umount -l "$m"; done
    if [ "$OWN_FS" = 1 ] && mountpoint -q "$WORK"; then umount "$WORK" || umount -l "$WORK"; fi
    rm -rf "$WORK" "$WORK.img"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_registry
REG=127.0.0.1:$PORT
echo "registry at $REG" >&2

# Base images.
push_rootfs() { # DIR NAME
    local oci=$WORK/oci-$2
    umoci init --layout "$oci" && umoci new --image "$oci:latest"
    umoci unpack --image "$oci:latest" "$WORK/bundle-$2" >/dev/null
    rm -rf "$WORK/bundle-$2/rootfs" && mv "$1" "$WORK/bundle-$2/rootfs"
    umoci repack --image "$oci:latest" "$WORK/bundle-$2" >/dev/null
    umoci config --image "$oci:latest" --no-history --architecture amd64 --os linux \
        --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    skopeo copy -q --dest-tls-verify=false "oci:$oci:latest" "docker://$REG/$2:latest"
    rm -rf "$oci" "$WORK/bundle-$2"
}
mkdir -p "$WORK/bb/bin" "$WORK/bb/tmp" "$WORK/bb/etc"
cp /bin/busybox "$WORK/bb/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$WORK/bb/bin/$a"; done
echo "root:x:0:0:root:/root:/bin/sh" > "$WORK/bb/etc/passwd"
chmod 1777 "$WORK/bb/tmp"
cp -a "$WORK/bb" "$WORK/bb-pristine"
push_rootfs "$WORK/bb" busybox
case ",$WORKLOADS," in *,w1,*|*,w2,*|*,w4,*)
    if [ ! -f "$CACHE/debian-bookworm-minbase.tar" ]; then
        echo "debootstrap bookworm minbase (cached in $CACHE)" >&2
        debootstrap --variant=minbase bookworm "$WORK/deb" http://deb.debian.org/debian >/dev/null
        tar -C "$WORK/deb" -cf "$CACHE/debian-bookworm-minbase.tar" .
        rm -rf "$WORK/deb"
    fi
    mkdir -p "$WORK/deb" && tar -C "$WORK/deb" -xf "$CACHE/debian-bookworm-minbase.tar"
    push_rootfs "$WORK/deb" debian ;;
esac

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

# BuildKit: Debian's dockerd on a private socket.
if [[ ",$PEERS," == *,buildkit,* ]]; then
    mkdir -p "$WORK/docker"
    dockerd --data-root "$WORK/docker/data" --exec-root "$WORK/docker/exec" \
        --pidfile "$WORK/docker/pid" -H "unix://$WORK/docker/sock" --bridge=none \
        --iptables=false --ip6tables=false --storage-driver overlay2 \
        >"$WORK/docker/log" 2>&1 &
    DOCKERD_PID=$!
    for _ in $(seq 1 100); do
        /usr/bin/docker -H "unix://$WORK/docker/sock" info >/dev/null 2>&1 && break
        sleep 0.2
    done
fi
DOCKER=(/usr/bin/docker -H "unix://$WORK/docker/sock")

# Contexts.
ctx() { # WORKLOAD -> a context dir
    local w=$1 dir=$WORK/ctx-$1
    rm -rf "$dir"; mkdir -p "$dir"
    cp bench/workloads/$w/Dockerfile "$dir/"
    echo "setting=1" > "$dir/app.conf"
    [ "$w" = w1-copy ] && head -c 20971520 /dev/urandom > "$dir/big.bin"
    echo "$dir"
}
registry_bytes() { du -sb "$WORK/registry/storage" | cut -f1; }

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
            out=$(python3 bench/measure.py "$log" unshare --mount --pid --fork --propagation private \
                bash -c 'mount --bind "$0" "$0" && mount -t proc proc "$0/proc" && mount --rbind /dev "$0/dev" && exec chroot "$0" "$@"' \
                "$root" /kaniko/executor --context dir:///workspace --dockerfile /workspace/Dockerfile \
                --destination "$dest" --insecure --insecure-pull --skip-tls-verify --skip-tls-verify-pull \
                "${args[@]}")
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

# A throwaway root for one kaniko run: its executor (with the shared libraries a dynamic one
# needs), CA certificates, an empty docker config and the context at /workspace. kaniko's RUN
# steps extract the base into it and run there; the harness removes it afterwards.
kaniko_root() { # CONTEXT -> the root's path
    local root; root=$(mktemp -d "$WORK/kaniko-root.XXXXXX")
    mkdir -p "$root/kaniko/.docker" "$root/workspace" "$root/etc/ssl/certs" "$root/proc" \
        "$root/dev" "$root/tmp"
    cp "$KANIKO_BIN" "$root/kaniko/executor"
    ldd "$KANIKO_BIN" 2>/dev/null | grep -o '/[^ ]*' | while read -r lib; do
        mkdir -p "$root$(dirname "$lib")" && cp -L "$lib" "$root$lib"
    done
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
    echo '{}' > "$root/kaniko/.docker/config.json"
    cp -a "$1/." "$root/workspace/"
    echo "$root"
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

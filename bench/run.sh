#!/usr/bin/env bash
# kiln against buildah and BuildKit on the same builds (issue 5's workloads), side by side.
#
#   bash bench/run.sh [--runs N] [--workloads w1,w2,...] [--n-files 10000,100000,500000]
#                     [--peers kiln,buildah-vfs,buildah-overlay,buildkit] [--w5-mib 512] [KILN]
#
# Starts a local registry, makes the base images (busybox from busybox-static; a Debian bookworm
# minbase rootfs with debootstrap, cached in ${XDG_CACHE_HOME:-~/.cache}/kiln-bench), and runs
# every workload with every peer from a clean state (a fresh kiln dir, buildah root or dockerd
# build cache), interleaved, RUNS times; then kiln again with a warm kiln dir. Prints a
# Markdown table (median, min-max, kiln/peer ratio, kiln's peak RSS, bytes the registry gained).
# BuildKit runs in Debian's dockerd, started here on a private socket (--bridge=none, builds with
# --network host); when KANIKO_BIN is set, kaniko is not run yet (see BENCHMARKS.md).
# Run as root on Debian. Installs what it needs (apt-get).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=5
WORKLOADS=w1,w2,w3,w4,w5
NFILES=10000,100000,500000
PEERS=kiln,buildah-vfs,buildah-overlay,buildkit
W5_MIB=512
while [ $# -gt 0 ]; do
    case $1 in
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

need=()
for p in docker-registry buildah skopeo umoci busybox-static debootstrap python3; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
case ",$PEERS," in *,buildkit,*) command -v dockerd >/dev/null || need+=(docker.io) ;; esac
if [ ${#need[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

WORK=$(mktemp -d /tmp/kiln-bench.XXXXXX)
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/kiln-bench
mkdir -p "$CACHE"
REG_PID="" DOCKERD_PID=""
source scripts/lib/registry.sh
cleanup() {
    set +e
    [ -n "$DOCKERD_PID" ] && kill "$DOCKERD_PID" 2>/dev/null && wait "$DOCKERD_PID" 2>/dev/null
    [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null && wait "$REG_PID" 2>/dev/null
    findmnt -rn -o TARGET | grep -F "$WORK/" | sort -r | while read -r m; do umount -l "$m"; done
    rm -rf "$WORK"
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
        kiln|kiln-warm)
            local kd=$WORK/kiln-dir-$tag; [ "$peer" = kiln-warm ] && kd=$WORK/kiln-dir-warm
            [ "$peer" = kiln ] && rm -rf "$kd"
            out=$(python3 bench/measure.py "$log" "$KILN" build -c "$dir" -d "$dest" \
                --insecure-registry "$REG" --kiln-dir "$kd" "${args[@]}") ;;
        buildah-vfs|buildah-overlay)
            local driver=${peer#buildah-} root=$WORK/buildah-$tag
            rm -rf "$root"
            out=$(python3 bench/measure.py "$log" bash -c "buildah --root $root/r --runroot $root/rr --storage-driver $driver bud -q --isolation chroot --tls-verify=false ${args[*]} -t $dest $dir && buildah --root $root/r --runroot $root/rr --storage-driver $driver push -q --tls-verify=false $dest")
            buildah --root "$root/r" --runroot "$root/rr" --storage-driver "$driver" rmi -a -f >/dev/null 2>&1 || true
            rm -rf "$root" ;;
        buildkit)
            "${DOCKER[@]}" builder prune -af >/dev/null 2>&1 || true
            "${DOCKER[@]}" image prune -af >/dev/null 2>&1 || true
            out=$(DOCKER_BUILDKIT=1 python3 bench/measure.py "$log" bash -c "${DOCKER[*]} build -q --network host ${args[*]} -t $dest $dir && ${DOCKER[*]} push -q $dest") ;;
    esac
    local after; after=$(registry_bytes)
    [ -n "${KILN_BENCH_LOGS:-}" ] && mkdir -p "$KILN_BENCH_LOGS" && cp "$log" "$KILN_BENCH_LOGS/"
    read -r wall rss rc <<<"$out"
    [ "$rc" = 0 ] || { echo "$peer $w failed (exit $rc); log:" >&2; tail -n 20 "$log" >&2; }
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$w" "$peer" "$wall" "$rss" "$((after - before))" "$rc" >> "$RESULTS"
    echo "$w $peer ${wall}s rss=${rss}KiB pushed=$((after - before))B exit=$rc" >&2
}

IFS=, read -r -a peers <<<"$PEERS"
IFS=, read -r -a nfiles <<<"$NFILES"
for wl in $(echo "$WORKLOADS" | tr , ' '); do
    w=$(ls bench/workloads | grep "^$wl-")
    variants=("")
    [ "$wl" = w3 ] && variants=("${nfiles[@]}")
    for v in "${variants[@]}"; do
        name=$w; extra=()
        [ -n "$v" ] && { name=$w-$v; extra=(--build-arg "N=$v"); }
        [ "$wl" = w5 ] && extra=(--build-arg "MIB=$W5_MIB")
        dir=$(ctx "$w")
        for run in $(seq 1 "$RUNS"); do
            for peer in "${peers[@]}"; do
                one "$peer" "$name" "$dir" "$peer-$run" "${extra[@]}"
            done
        done
        if [[ ",$PEERS," == *,kiln,* ]]; then
            # Prime the warm kiln dir; that run is not a figure.
            one kiln-warm "$name" "$dir" warm-prime "${extra[@]}" >/dev/null 2>&1 || true
            sed -i '$d' "$RESULTS"
            for run in $(seq 1 "$RUNS"); do one kiln-warm "$name" "$dir" "warm-$run" "${extra[@]}"; done
        fi
    done
done

python3 bench/summarize.py "$RESULTS" "$(date -u +%Y-%m-%d)" "$(nproc) cores, $(uname -r)"

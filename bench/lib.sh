# Shared by bench/run.sh and bench/cache.sh: the benchmark's own journaled file system, a
# local registry, the base images (busybox from busybox-static; a Debian bookworm minbase rootfs
# with debootstrap, cached in ${XDG_CACHE_HOME:-~/.cache}/kiln-bench), BuildKit in Debian's
# dockerd on a private socket, and throwaway roots for kaniko. The caller sets WORKLOADS (which
# bases to make) and PEERS, and may set OWN_FS=0.
# shellcheck shell=bash

# The binaries and packages: KILN from the first argument (default target/release/kiln),
# KANIKO_BIN made absolute and kaniko added to PEERS, the Debian packages installed.
bench_tools() {
    KILN=$(realpath "${1:-target/release/kiln}")
    [ -x "$KILN" ] || { echo "no kiln at $KILN: cargo build --release -p kiln" >&2; exit 2; }
    if [ -n "${KANIKO_BIN:-}" ]; then
        KANIKO_BIN=$(realpath "$KANIKO_BIN")
        [ -x "$KANIKO_BIN" ] || { echo "KANIKO_BIN=$KANIKO_BIN is not an executable" >&2; exit 2; }
        PEERS=$PEERS,kaniko
    fi
    need=()
    for p in docker-registry buildah skopeo umoci busybox-static debootstrap python3; do
        dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
    done
    case ",$PEERS," in *,buildkit,*) command -v dockerd >/dev/null || need+=(docker.io) ;; esac
    if [ ${#need[@]} -gt 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
}

bench_setup() {
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
}

# Starts dockerd when PEERS has buildkit; sets DOCKER (the client command) and DOCKERD_PID.
bench_dockerd() {
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
}

registry_bytes() { du -sb "$WORK/registry/storage" | cut -f1; }

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


# Runs kaniko's executor in ROOT (made by kaniko_root): a chroot in its own mount and pid
# namespaces, never this machine's /. Prints measure.py's line. LOG ROOT [executor args...]
kaniko_run() {
    local log=$1 root=$2; shift 2
    python3 bench/measure.py "$log" unshare --mount --pid --fork --propagation private \
        bash -c 'mount --bind "$0" "$0" && mount -t proc proc "$0/proc" && mount --rbind /dev "$0/dev" && exec chroot "$0" "$@"' \
        "$root" /kaniko/executor --context dir:///workspace --dockerfile /workspace/Dockerfile \
        --insecure --insecure-pull --skip-tls-verify --skip-tls-verify-pull "$@"
}

# A private dockerd (Debian's docker.io, 20.10, whose builder is BuildKit) for one script's run:
# its own socket, data-root, exec-root, pidfile and (empty) daemon config under $WORK/docker, no
# bridge, no iptables rules, so it touches nothing of the machine's and can run beside a system
# dockerd. Builds must use `--network host` (there is no bridge). dockerd treats registries on
# 127.0.0.0/8 as insecure (plain HTTP allowed) by default, so it pulls from and pushes to
# scripts/lib/registry.sh's registry as it is.
#
#   start_dockerd          sets DOCKERD_PID, DOCKERD_DRIVER (overlay2, else vfs) and DOCKER (an
#                          array: the 20.10 client with -H); returns 1 if dockerd did not start
#   stop_dockerd           stops it (SIGTERM to DOCKERD_PID, waits) and unmounts what it left
#                          mounted under $WORK/docker
#
# /usr/bin/docker is used by its full path: another `docker` earlier in PATH may be a newer
# client that wants buildx for BuildKit builds.
# shellcheck shell=bash

DOCKERD_PID=""
DOCKERD_DRIVER=""
DOCKER=(/usr/bin/docker -H "unix://$WORK/docker/sock")

start_dockerd() {
    local dir=$WORK/docker driver
    # overlay2 unless DOCKERD_STORAGE_DRIVER says otherwise; vfs when overlay2 cannot start
    # (e.g. the work dir on an overlayfs).
    for driver in ${DOCKERD_STORAGE_DRIVER:-overlay2 vfs}; do
        if start_dockerd_with "$driver"; then
            DOCKERD_DRIVER=$driver
            return 0
        fi
        echo "dockerd did not start with storage driver $driver; its log:" >&2
        tail -n 20 "$dir/log" >&2
        stop_dockerd
        rm -rf "$dir"
    done
    echo "error: dockerd did not start" >&2
    return 1
}

start_dockerd_with() { # STORAGE_DRIVER
    local dir=$WORK/docker
    mkdir -p "$dir/data" "$dir/exec"
    echo '{}' >"$dir/daemon.json"
    DOCKER=(/usr/bin/docker -H "unix://$dir/sock")
    dockerd --config-file "$dir/daemon.json" --data-root "$dir/data" --exec-root "$dir/exec" \
        --pidfile "$dir/pid" -H "unix://$dir/sock" --bridge=none --iptables=false \
        --ip6tables=false --ip-forward=false --ip-masq=false --storage-driver "$1" \
        --log-level warn >"$dir/log" 2>&1 &
    DOCKERD_PID=$!
    local i
    for i in $(seq 1 150); do
        if ! kill -0 "$DOCKERD_PID" 2>/dev/null; then return 1; fi
        if "${DOCKER[@]}" version >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    return 1
}

stop_dockerd() {
    if [ -n "$DOCKERD_PID" ] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
        kill "$DOCKERD_PID" 2>/dev/null || true
        local i
        for i in $(seq 1 150); do
            kill -0 "$DOCKERD_PID" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$DOCKERD_PID" 2>/dev/null; then
            echo "warning: dockerd (pid $DOCKERD_PID) still running after 30s: killing it" >&2
            kill -9 "$DOCKERD_PID" 2>/dev/null || true
        fi
        wait "$DOCKERD_PID" 2>/dev/null || true
    fi
    DOCKERD_PID=""
    # overlay2 and the exec-root's mounts: unmount what is left before the caller deletes $WORK.
    if command -v findmnt >/dev/null 2>&1; then
        findmnt -rn -o TARGET | grep -F "$WORK/docker/" | sort -r | while read -r m; do
            umount -l "$m" 2>/dev/null || true
        done
    fi
}

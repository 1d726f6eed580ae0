#!/usr/bin/env bash
# Fills DIR with what a rootless kiln container adds to kiln's debug image (images/Dockerfile's
# `rootless` target; tests/least_privilege.rs runs the same files): Debian's newuidmap and
# newgidmap with their shared libraries, carrying file capabilities (cap_setuid / cap_setgid:
# a container's non-root user gets them from the files, where set-user-ID root would need
# CAP_SYS_ADMIN), and a user `kiln` (1000) owning 65536 subordinate ids (its home is made by
# the image).
#
#   bash scripts/lib/rootless-files.sh DIR
#
# Needs uidmap and libcap2-bin (setcap); installs them when missing. Run as root.
set -euo pipefail
dir=$1
need=()
command -v newuidmap >/dev/null || need+=(uidmap)
command -v setcap >/dev/null || need+=(libcap2-bin)
if [ ${#need[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
mkdir -p "$dir/usr/bin" "$dir/etc"
for helper in newuidmap newgidmap; do
    path=$(command -v "$helper")
    cp "$path" "$dir/usr/bin/$helper"
    chmod 0755 "$dir/usr/bin/$helper"
    for lib in $(ldd "$path" | grep -o '/[^ ]*'); do
        mkdir -p "$dir$(dirname "$lib")"
        cp -L "$lib" "$dir$lib"
    done
done
setcap cap_setuid+ep "$dir/usr/bin/newuidmap"
setcap cap_setgid+ep "$dir/usr/bin/newgidmap"
printf 'root:x:0:0:root:/root:/bin/sh\nkiln:x:1000:1000:kiln:/home/kiln:/bin/sh\n' >"$dir/etc/passwd"
printf 'root:x:0:\nkiln:x:1000:\n' >"$dir/etc/group"
echo 'kiln:100000:65536' >"$dir/etc/subuid"
echo 'kiln:100000:65536' >"$dir/etc/subgid"

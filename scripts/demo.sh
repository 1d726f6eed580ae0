#!/usr/bin/env bash
# kiln's main job, on a fresh Debian machine: build examples/hello into a docker-archive at
# out/hello.tar, offline (no registry, no network). Installs busybox-static (the example's
# context brings a static busybox) and builds kiln. RUN steps need the overlay or chroot
# backend's privileges: run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "demo.sh: run as root (kiln's RUN steps need the overlay or chroot backend's privileges)" >&2
    exit 1
fi
if [ ! -x /bin/busybox ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static
fi
cargo build --release --locked -p kiln
# The binary wherever cargo puts it (CARGO_TARGET_DIR may move target/).
target_dir=$(cargo metadata --format-version 1 --no-deps \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
kiln="$target_dir/release/kiln"

mkdir -p out
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp -a examples/hello/. "$context/"
cp /bin/busybox "$context/busybox"

"$kiln" build \
    --context "$context" \
    --no-push \
    --destination kiln.example/hello:latest \
    --tar-path out/hello.tar \
    --kiln-dir out/kiln-dir \
    --cleanup

echo
echo "out/hello.tar is a docker-archive of kiln.example/hello:latest. Next:"
echo "  docker load -i out/hello.tar   (or: podman load -i out/hello.tar)"
echo "  skopeo copy docker-archive:out/hello.tar docker://REGISTRY/team/hello:1"

#!/usr/bin/env bash
# Builds kiln's images with kiln itself and pushes them:
#   REGISTRY/REPO:TAG        the executor image (static kiln at /kiln/kiln and /kaniko/executor)
#   REGISTRY/REPO:TAG-debug  the same with busybox at /busybox and /bin/sh
#   REGISTRY/REPO:TAG-rootless  the debug image for non-root pods: user kiln (1000) with
#                               subordinate ids, newuidmap/newgidmap with file capabilities
#
#   bash scripts/images.sh REGISTRY/REPO [TAG] [-- extra kiln build flags, e.g. --insecure-registry HOST]
#
# Builds the static binary first (x86_64-unknown-linux-musl; installs musl-tools and the rustup
# target when missing). KILN_PROFILE=debug builds a debug binary (faster, larger). KILN_BIN=PATH
# puts that binary in the images instead (with its shared libraries when it is not static) and
# KILN_BUILDER=PATH builds with that kiln (default: the one in the image). Credentials for the
# registry come from $DOCKER_CONFIG/config.json as for any kiln build. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 1 ]; then
    echo "usage: bash scripts/images.sh REGISTRY/REPO [TAG] [-- kiln build flags]" >&2
    exit 2
fi
repo=$1; shift
tag=latest
if [ $# -gt 0 ] && [ "$1" != "--" ]; then tag=$1; shift; fi
[ "${1:-}" = "--" ] && shift

profile=${KILN_PROFILE:-release}
target=x86_64-unknown-linux-musl
need=()
[ -x /bin/busybox ] || need+=(busybox-static)
[ -f /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
if [ -z "${KILN_BIN:-}" ]; then
    command -v musl-gcc >/dev/null || need+=(musl-tools)
fi
if [ ${#need[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
if [ -n "${KILN_BIN:-}" ]; then
    bin=$KILN_BIN
else
    rustup target list --installed 2>/dev/null | grep -qx "$target" || rustup target add "$target"
    if [ "$profile" = release ]; then
        cargo build --release --locked --target "$target" -p kiln
    else
        cargo build --locked --target "$target" -p kiln
    fi
    bin="target/$target/$profile/kiln"
fi
builder=${KILN_BUILDER:-$bin}

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp images/Dockerfile "$context/Dockerfile"
mkdir -p "$context/bin/kiln" "$context/bin/kaniko"
cp "$bin" "$context/bin/kiln/kiln"
ln "$context/bin/kiln/kiln" "$context/bin/kaniko/executor"
cp /etc/ssl/certs/ca-certificates.crt "$context/ca-certificates.crt"
cp /bin/busybox "$context/busybox"
ln -s /busybox/sh "$context/sh"
mkdir -p "$context/rootfs-extra"
# A dynamic binary brings its shared libraries (ldd names them), at the same paths.
if ldd "$bin" >/dev/null 2>&1; then
    for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
        mkdir -p "$context/rootfs-extra$(dirname "$lib")"
        cp -L "$lib" "$context/rootfs-extra$lib"
    done
fi

bash scripts/lib/rootless-files.sh "$context/rootless"

# The freshly built kiln builds its own images.
for variant in kiln debug rootless; do
    suffix=""
    [ "$variant" != kiln ] && suffix="-$variant"
    "$builder" build --context "$context" --target "$variant" \
        --destination "$repo:$tag$suffix" \
        --label "org.opencontainers.image.title=kiln$suffix" \
        --label "org.opencontainers.image.source=https://example.invalid/kiln" \
        --cleanup "$@"
done

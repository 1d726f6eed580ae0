#!/usr/bin/env bash
# Runs kiln's whole test suite. Installs (apt-get) what the tests need first, so it works on a
# fresh Debian machine with a Rust toolchain (>= 1.95). Run as root or with sudo available.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found: install Rust >= 1.95 (e.g. with rustup) first" >&2
    exit 1
fi

# Registry tests run the real Distribution registry and check images with skopeo and umoci;
# htpasswd (apache2-utils) and openssl make their credentials and keys; podman loads archives;
# busybox-static makes the rootfs the sandbox tests run steps in; git and python3 serve the git
# repositories (git http-backend) and files over HTTP that context tests fetch; procps (pgrep)
# looks for processes a stopped build must not leave; libcap2-bin (setcap) gives newuidmap and
# newgidmap the file capabilities of the rootless image; time (/usr/bin/time) measures peak memory.
packages=(docker-registry skopeo umoci apache2-utils openssl podman runc uidmap busybox-static git python3 python3-venv procps libcap2-bin time)
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
missing=()
for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}"
fi

# moto's server emulates AWS (S3, STS, ECR) for the cloud tests; Debian has no package of it, so
# pip puts it in a venv outside the repository (kiln-test's MOTO_SERVER_BIN), once.
moto_venv=/opt/kiln-test/moto
if [ ! -x "$moto_venv/bin/moto_server" ]; then
    $sudo_cmd python3 -m venv "$moto_venv"
    $sudo_cmd "$moto_venv/bin/pip" install -q 'moto[server]==5.2.6'
fi

# Azurite, Microsoft's Azure Storage emulator, serves the Azure Blob contexts of the cloud tests
# (kiln-test's Azurite, run with Node.js); npm puts it in a prefix outside the repository, once
# (about 15 s). 3.35.0 is the last release that supports Node.js before 21 (Debian 12 has 18).
azurite_dir=/opt/kiln-test/azurite
if [ ! -f "$azurite_dir/node_modules/azurite/dist/src/blob/main.js" ]; then
    if ! command -v npm >/dev/null 2>&1; then
        $sudo_cmd apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq nodejs npm
    fi
    $sudo_cmd mkdir -p "$azurite_dir"
    $sudo_cmd npm install --prefix "$azurite_dir" --no-audit --no-fund --silent azurite@3.35.0
fi

# A static kiln for the images the Jenkins agent test builds (scripts/images.sh), when the musl
# target can be had; otherwise the test puts the test build of kiln and its libraries in them.
if command -v musl-gcc >/dev/null || DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq musl-tools; then
    if rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl \
        || rustup target add x86_64-unknown-linux-musl; then
        cargo build --locked --target x86_64-unknown-linux-musl -p kiln
        export KILN_IMAGE_BIN=$PWD/target/x86_64-unknown-linux-musl/debug/kiln
    fi
fi

cargo test --workspace --locked

# The Kubernetes manifests of examples/ against the Kubernetes schemas, offline.
bash scripts/validate-examples.sh

# Parity: 90 Dockerfiles built by kiln and by BuildKit (docker.io 20.10 in a private dockerd;
# buildah 1.28 for the few BuildKit 20.10 cannot build), files and config compared
# (tests/parity/README.md; about 3 minutes). Uses the kiln binary the tests just built.
bash scripts/parity/run.sh target/debug/kiln

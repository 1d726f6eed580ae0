#!/usr/bin/env bash
# Parity harness: builds every case under tests/parity/cases/ with buildah and with kiln, unpacks
# both images with umoci and compares the root filesystems and image configs
# (scripts/parity/compare.py). Everything is offline: a local Distribution registry on 127.0.0.1
# serves a busybox base image that this script makes from Debian's busybox-static.
# tests/parity/README.md describes the cases and what is compared.
#
#   bash scripts/parity/run.sh [options] [KILN_BINARY]
#
#   KILN_BINARY       default: target/release/kiln if it exists, else target/debug/kiln
#   --case NAME       only this case (repeatable; a prefix such as 07 is enough)
#   --buildah-only    build with buildah only (checks that every case is valid)
#   --self-check      build every case twice with buildah and compare the two (checks that the
#                     cases and the comparison are deterministic); implies --buildah-only
#   --keep            keep the work dir (its path is printed) instead of deleting it
#   --kiln-arg ARG    pass one more argument to `kiln build` (repeatable)
#
# A case is a directory with a Dockerfile and its context, and optionally: `args` (one
# `--build-arg K=V` per line), `target` (the stage name for --target), `Dockerfile.buildah` (what
# buildah builds instead, for syntax buildah 1.28 lacks, such as heredocs).
#
# Needs root (buildah's chroot isolation, owners kept by umoci unpack). Exit status: 0 when every
# case is the same or differs only as scripts/parity/known-differences.txt allows; 1 when a case
# differs, or a build or unpack failed; 2 for usage or setup errors.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
CASES_DIR="$REPO/tests/parity/cases"
COMPARE="$REPO/scripts/parity/compare.py"
KNOWN="$REPO/scripts/parity/known-differences.txt"

usage() { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

KILN=""
ONLY=()
BUILDAH_ONLY=0
SELF_CHECK=0
KEEP=0
KILN_EXTRA=()
while [ $# -gt 0 ]; do
    case "$1" in
        --case) [ $# -ge 2 ] || usage; ONLY+=("$2"); shift 2 ;;
        --buildah-only) BUILDAH_ONLY=1; shift ;;
        --self-check) SELF_CHECK=1; BUILDAH_ONLY=1; shift ;;
        --keep) KEEP=1; shift ;;
        --kiln-arg) [ $# -ge 2 ] || usage; KILN_EXTRA+=("$2"); shift 2 ;;
        -h|--help) usage ;;
        -*) echo "unknown option: $1" >&2; usage ;;
        *) [ -z "$KILN" ] || usage; KILN="$1"; shift ;;
    esac
done
if [ -z "$KILN" ]; then
    if [ -x "$REPO/target/release/kiln" ]; then KILN="$REPO/target/release/kiln"; else KILN="$REPO/target/debug/kiln"; fi
fi
case "$KILN" in /*) ;; *) KILN="$PWD/$KILN" ;; esac
if [ "$BUILDAH_ONLY" -eq 0 ] && [ ! -x "$KILN" ]; then
    echo "error: kiln binary $KILN not found (build it, pass its path, or use --buildah-only)" >&2
    exit 2
fi

# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
packages=(buildah skopeo umoci docker-registry busybox-static python3)
missing=()
for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Debian's busybox-static puts the static binary at /bin/busybox.
BUSYBOX=/bin/busybox
if [ ! -x "$BUSYBOX" ]; then
    echo "error: $BUSYBOX missing (package busybox-static)" >&2
    exit 2
fi
UMOCI_ROOTLESS=()
[ "$(id -u)" -eq 0 ] || UMOCI_ROOTLESS=(--rootless)

# ---------------------------------------------------------------------------------------------
# Work dir, registry, cleanup
# ---------------------------------------------------------------------------------------------
WORK=$(mktemp -d /tmp/kiln-parity.XXXXXX)
REG_PID=""
cleanup() {
    local rc=$?
    # errexit off: a failing step here (grep finding no mount) must not skip the rest.
    set +e
    if [ -n "$REG_PID" ] && kill -0 "$REG_PID" 2>/dev/null; then
        kill "$REG_PID" 2>/dev/null || true
        wait "$REG_PID" 2>/dev/null || true
    fi
    # buildah's chroot isolation mounts inside its own mount namespace; unmount anything that
    # still shows up under the work dir before deleting it.
    if command -v findmnt >/dev/null 2>&1; then
        findmnt -rn -o TARGET | grep -F "$WORK/" | sort -r | while read -r m; do
            umount -l "$m" 2>/dev/null || true
        done
    fi
    if [ "$KEEP" -eq 1 ]; then
        echo "work dir kept: $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

source "$REPO/scripts/lib/registry.sh"

# ---------------------------------------------------------------------------------------------
# The busybox base image, made offline
# ---------------------------------------------------------------------------------------------
# Besides busybox, /etc and the usual dirs, the base holds files that the whiteout cases change:
#   /base/file                  regular file (deleted by 08-whiteout-delete)
#   /base/dir/file1             dir with a file and a subdir (deleted by 08-whiteout-delete)
#   /base/dir/sub/file2
#   /base/replace-me/child      dir replaced by a file (09-dir-replaced)
#   /base/replace-link/child    dir replaced by a symlink (09-dir-replaced)
#   /base/opaque/{a,b}          dir deleted and made again (10-opaque-dir)
#   /base/keep/k                untouched; a symlink target
#   /base/modify                file appended to (10-opaque-dir)
#   /base/chmod-me              file whose mode changes only (10-opaque-dir)
#   /base/chown-me              file whose owner changes only (10-opaque-dir)
make_base() {
    local oci="$WORK/base/oci" bundle="$WORK/base/bundle"
    mkdir -p "$WORK/base"
    umoci init --layout "$oci"
    umoci new --image "$oci:latest"
    umoci unpack "${UMOCI_ROOTLESS[@]}" --image "$oci:latest" "$bundle" >/dev/null
    local r="$bundle/rootfs"
    mkdir -p "$r/bin" "$r/sbin" "$r/usr/bin" "$r/usr/sbin" "$r/usr/local/bin" "$r/etc" \
        "$r/root" "$r/home/app" "$r/tmp" "$r/var"
    cp "$BUSYBOX" "$r/bin/busybox"
    chmod 0755 "$r/bin/busybox"
    local applet
    for applet in $("$BUSYBOX" --list); do
        [ "$applet" = busybox ] && continue
        [ -e "$r/bin/$applet" ] || ln -s busybox "$r/bin/$applet"
    done
    cat >"$r/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
app:x:1000:1000:app:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
    cat >"$r/etc/group" <<'EOF'
root:x:0:
app:x:1000:
nogroup:x:65534:
EOF
    chmod 0644 "$r/etc/passwd" "$r/etc/group"
    chmod 1777 "$r/tmp"
    chmod 0700 "$r/root"
    chown 1000:1000 "$r/home/app"
    chmod 0755 "$r/home/app"
    # Files for the whiteout / replacement cases (see the list above).
    mkdir -p "$r/base/dir/sub" "$r/base/replace-me" "$r/base/replace-link" "$r/base/opaque" "$r/base/keep"
    echo "base file" >"$r/base/file"
    echo "file1" >"$r/base/dir/file1"
    echo "file2" >"$r/base/dir/sub/file2"
    echo "child" >"$r/base/replace-me/child"
    echo "child" >"$r/base/replace-link/child"
    echo "a" >"$r/base/opaque/a"
    echo "b" >"$r/base/opaque/b"
    echo "k" >"$r/base/keep/k"
    echo "line1" >"$r/base/modify"
    echo "chmod" >"$r/base/chmod-me"
    echo "chown" >"$r/base/chown-me"
    chmod 0644 "$r/base/chmod-me" "$r/base/chown-me"
    umoci repack --image "$oci:latest" "$bundle" >/dev/null
    umoci config --image "$oci:latest" --no-history \
        --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --config.cmd sh --architecture amd64 --os linux
    skopeo copy -q --dest-tls-verify=false "oci:$oci:latest" "docker://$REGISTRY/busybox:latest"
    rm -rf "$bundle"
}

# ---------------------------------------------------------------------------------------------
# Builds
# ---------------------------------------------------------------------------------------------
# Reads the case's `args` file (one `--build-arg K=V` per line; blank lines and # comments
# skipped) into CASE_ARGS, and its `target` file into CASE_TARGET.
read_case_options() {
    local dir=$1 line
    CASE_ARGS=()
    CASE_TARGET=""
    if [ -f "$dir/args" ]; then
        while IFS= read -r line || [ -n "$line" ]; do
            case "$line" in ''|'#'*) continue ;; esac
            CASE_ARGS+=("${line%% *}" "${line#* }")
        done <"$dir/args"
    fi
    if [ -f "$dir/target" ]; then
        CASE_TARGET=$(tr -d ' \n\t' <"$dir/target")
    fi
}

BUILDAH_STORE="$WORK/buildah"
buildah_s() {
    buildah --root "$BUILDAH_STORE/root" --runroot "$BUILDAH_STORE/runroot" --storage-driver vfs "$@"
}

# buildah_build CASE_DIR OUT LOG: writes two OCI layouts, OUT (OCI media types, for umoci) and
# OUT-docker (docker media types: the config exactly as buildah made it; the conversion to an
# OCI config drops Healthcheck, OnBuild and Shell). A case whose Dockerfile buildah cannot parse
# (heredocs) has a Dockerfile.buildah meaning the same, built instead.
buildah_build() {
    local dir=$1 out=$2 log=$3
    local target=() dockerfile="$dir/Dockerfile"
    [ -z "$CASE_TARGET" ] || target=(--target "$CASE_TARGET")
    [ ! -f "$dir/Dockerfile.buildah" ] || dockerfile="$dir/Dockerfile.buildah"
    # --layers: one layer per RUN/COPY/ADD as docker and kaniko make (without it buildah commits
    # one layer per stage). --format docker: keeps HEALTHCHECK, ONBUILD, SHELL, which buildah drops
    # from OCI-format images. --no-cache: every case and every --self-check run really builds.
    buildah_s bud --isolation chroot --tls-verify=false --layers --no-cache --format docker \
        --identity-label=false --build-arg "BASE=$REGISTRY/busybox:latest" \
        ${CASE_ARGS[@]+"${CASE_ARGS[@]}"} ${target[@]+"${target[@]}"} \
        -f "$dockerfile" -t parity-case "$dir/" >"$log" 2>&1 || return 1
    buildah_s push --tls-verify=false parity-case "oci:$out:latest" >>"$log" 2>&1 || return 1
    buildah_s push --tls-verify=false --format docker parity-case "oci:$out-docker:latest" >>"$log" 2>&1 || return 1
    buildah_s rmi -f parity-case >>"$log" 2>&1 || true
}

# kiln_build CASE_DIR OUT_LAYOUT LOG
kiln_build() {
    local dir=$1 out=$2 log=$3
    local target=()
    [ -z "$CASE_TARGET" ] || target=(--target "$CASE_TARGET")
    rm -rf "$WORK/kiln-dir"
    timeout 600 "$KILN" build --context "$dir/" --dockerfile "$dir/Dockerfile" \
        --build-arg "BASE=$REGISTRY/busybox:latest" --insecure-registry "$REGISTRY" \
        --no-push --oci-layout-path "$out" --kiln-dir "$WORK/kiln-dir" \
        ${CASE_ARGS[@]+"${CASE_ARGS[@]}"} ${target[@]+"${target[@]}"} \
        ${KILN_EXTRA[@]+"${KILN_EXTRA[@]}"} >"$log" 2>&1
}

# unpack LAYOUT BUNDLE LOG: umoci needs a tag; a layout whose only manifest has no ref name
# (kaniko's --oci-layout-path writes none) gets `latest` added first. umoci only reads OCI media
# types: a layout with docker media types is converted by skopeo into LAYOUT-for-umoci first
# (the config compared is still read from LAYOUT itself).
unpack() {
    local layout=$1 bundle=$2 log=$3
    python3 "$COMPARE" tag-layout "$layout" latest >>"$log" 2>&1 || return 1
    if umoci unpack "${UMOCI_ROOTLESS[@]}" --image "$layout:latest" "$bundle" >>"$log" 2>&1; then
        return 0
    fi
    grep -q "not implemented: application/vnd.docker" "$log" || return 1
    echo "converting $layout to OCI media types for umoci" >>"$log"
    rm -rf "$bundle" "$layout-for-umoci"
    skopeo copy -q --format oci "oci:$layout:latest" "oci:$layout-for-umoci:latest" >>"$log" 2>&1 || return 1
    umoci unpack "${UMOCI_ROOTLESS[@]}" --image "$layout-for-umoci:latest" "$bundle" >>"$log" 2>&1
}

# One line of the report table; `|` in the summary would break the Markdown table.
ROWS=()
add_row() {
    local name=$1 result=$2 summary=$3
    summary=$(printf '%s' "$summary" | tr '\n|' ';/' | cut -c1-400)
    ROWS+=("| $name | $result | $summary |")
}

tail_of() { tail -n 5 "$1" | tr -s ' \t' ' '; }

# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------
START=$(date +%s)
start_registry
REGISTRY="127.0.0.1:$PORT"
echo "registry: $REGISTRY (pid $REG_PID), work dir: $WORK" >&2
make_base
echo "base image: $REGISTRY/busybox:latest" >&2

cases=()
for dir in "$CASES_DIR"/*/; do
    name=$(basename "$dir")
    if [ "${#ONLY[@]}" -gt 0 ]; then
        match=0
        for o in "${ONLY[@]}"; do
            case "$name" in "$o"*) match=1 ;; esac
        done
        [ "$match" -eq 1 ] || continue
    fi
    cases+=("$name")
done
if [ "${#cases[@]}" -eq 0 ]; then
    echo "error: no case matches" >&2
    exit 2
fi

failed=0
counts_same=0; counts_known=0; counts_diff=0; counts_fail=0
for name in "${cases[@]}"; do
    dir="$CASES_DIR/$name"
    out="$WORK/out/$name"
    mkdir -p "$out"
    read_case_options "$dir"
    t0=$(date +%s)
    if ! buildah_build "$dir" "$out/buildah" "$out/buildah.log"; then
        echo "== $name: buildah failed" >&2
        tail -n 20 "$out/buildah.log" >&2
        add_row "$name" "buildah failed" "$(tail_of "$out/buildah.log")"
        failed=1; counts_fail=$((counts_fail + 1))
        continue
    fi
    other_label=kiln
    b_config_suffix=""
    if [ "$SELF_CHECK" -eq 1 ]; then
        other_label=buildah2
        b_config_suffix="-docker"
        if ! buildah_build "$dir" "$out/buildah2" "$out/buildah2.log"; then
            add_row "$name" "buildah failed" "second build: $(tail_of "$out/buildah2.log")"
            failed=1; counts_fail=$((counts_fail + 1))
            continue
        fi
    elif [ "$BUILDAH_ONLY" -eq 1 ]; then
        if unpack "$out/buildah" "$out/buildah-bundle" "$out/unpack.log"; then
            python3 "$COMPARE" summary --layout "$out/buildah-docker" --bundle "$out/buildah-bundle" \
                >"$out/summary.txt" 2>&1 || true
            add_row "$name" "buildah ok" "$(head -n 1 "$out/summary.txt") ($(( $(date +%s) - t0 ))s)"
            counts_same=$((counts_same + 1))
        else
            add_row "$name" "buildah failed" "unpack: $(tail_of "$out/unpack.log")"
            failed=1; counts_fail=$((counts_fail + 1))
        fi
        rm -rf "$out/buildah-bundle"
        continue
    else
        if ! kiln_build "$dir" "$out/kiln" "$out/kiln.log"; then
            echo "== $name: kiln failed" >&2
            tail -n 20 "$out/kiln.log" >&2
            add_row "$name" "kiln failed" "$(tail_of "$out/kiln.log")"
            failed=1; counts_fail=$((counts_fail + 1))
            continue
        fi
    fi
    if ! unpack "$out/buildah" "$out/buildah-bundle" "$out/unpack.log"; then
        add_row "$name" "buildah failed" "unpack: $(tail_of "$out/unpack.log")"
        failed=1; counts_fail=$((counts_fail + 1))
        continue
    fi
    if ! unpack "$out/$other_label" "$out/$other_label-bundle" "$out/unpack.log"; then
        add_row "$name" "$other_label failed" "unpack: $(tail_of "$out/unpack.log")"
        failed=1; counts_fail=$((counts_fail + 1))
        continue
    fi
    set +e
    python3 "$COMPARE" pair --case "$name" --known "$KNOWN" \
        --a-name buildah --a-layout "$out/buildah-docker" --a-bundle "$out/buildah-bundle" \
        --b-name "$other_label" --b-layout "$out/$other_label$b_config_suffix" --b-bundle "$out/$other_label-bundle" \
        --summary-file "$out/summary.txt" >"$out/compare.txt" 2>&1
    rc=$?
    set -e
    echo "== $name ($(( $(date +%s) - t0 ))s)" >&2
    sed 's/^/   /' "$out/compare.txt" >&2
    case $rc in
        0) add_row "$name" "same" "$(cat "$out/summary.txt")"; counts_same=$((counts_same + 1)) ;;
        3) add_row "$name" "same (known differences)" "$(cat "$out/summary.txt")"; counts_known=$((counts_known + 1)) ;;
        1) add_row "$name" "differs" "$(cat "$out/summary.txt")"; failed=1; counts_diff=$((counts_diff + 1)) ;;
        *) add_row "$name" "compare failed" "$(tail_of "$out/compare.txt")"; failed=1; counts_fail=$((counts_fail + 1)) ;;
    esac
    # Bundles hold a full rootfs each; keep the layouts and logs only.
    rm -rf "$out/buildah-bundle" "$out/$other_label-bundle"
done

echo
if [ "$SELF_CHECK" -eq 1 ]; then
    echo "## buildah self-check (buildah vs buildah)"
elif [ "$BUILDAH_ONLY" -eq 1 ]; then
    echo "## buildah builds"
else
    echo "## kiln vs buildah"
fi
echo
echo "| case | result | differences |"
echo "|---|---|---|"
printf '%s\n' "${ROWS[@]}"
echo
echo "${#cases[@]} cases: $counts_same same, $counts_known same with known differences, $counts_diff differ, $counts_fail failed; $(( $(date +%s) - START ))s"
exit "$failed"

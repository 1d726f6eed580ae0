#!/usr/bin/env bash
# Parity harness: builds every case under tests/parity/cases/ with kiln and with a reference
# builder, unpacks both images with umoci and compares the root filesystems and image configs
# (scripts/parity/compare.py). The reference is BuildKit (Debian's docker.io 20.10: dockerd's
# builtin BuildKit and Dockerfile frontend, in a private dockerd this script starts); a case that
# BuildKit 20.10 cannot build (its `buildkit-unsupported` file says why) is compared with buildah
# (Debian's 1.28) instead. Everything is offline: a local Distribution registry on 127.0.0.1
# serves the base images, which this script makes from Debian's busybox-static.
# tests/parity/README.md describes the cases and what is compared.
#
#   bash scripts/parity/run.sh [options] [KILN_BINARY]
#
#   KILN_BINARY       default: target/release/kiln if it exists, else target/debug/kiln
#   --case NAME       only this case (repeatable; a prefix such as 07, or a pattern such as
#                     3[6-9], is enough)
#   --with-buildah    also build the cases BuildKit builds with buildah, and compare kiln with
#                     that too (shown in the report, never fails the run: BuildKit decides)
#   --refs-only       build with the references only (checks that every case is valid)
#   --self-check      build every case twice with its reference (and buildah, with
#                     --with-buildah) and compare the two builds (checks that the cases and the
#                     comparison are deterministic); implies --refs-only
#   --keep            keep the work dir (its path is printed) instead of deleting it
#   --kiln-arg ARG    pass one more argument to `kiln build` (repeatable)
#
# A case is a directory with a Dockerfile and its context, and optionally: `args` (one
# `--build-arg K=V` per line), `target` (the stage name for --target), `secrets` (one `--secret`
# value per line, `src=` relative to the case; `env=VAR` takes VAR from the case's `secrets.env`,
# VAR=value lines; no value may appear in an image or a log), `prepare.sh` (run in a copy of the
# case, which is the context every builder gets: modes, owners, empty dirs that git does not
# keep), `buildkit-unsupported` (why BuildKit 20.10 cannot build it: buildah is its reference),
# `Dockerfile.buildah` (what buildah builds instead, for syntax buildah 1.28 lacks, such as
# heredocs), `Dockerfile.buildkit` and `buildkit-network` (what BuildKit 20.10 builds instead,
# and its `docker build --network` mode instead of host, for RUN --network=none).
#
# Needs root (dockerd, buildah's chroot isolation, owners kept by umoci unpack). Exit status: 0
# when every case is the same as its reference or differs only as
# scripts/parity/known-differences.txt allows; 1 when a case differs, or a build or unpack
# failed; 2 for usage or setup errors.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
CASES_DIR="$REPO/tests/parity/cases"
COMPARE="$REPO/scripts/parity/compare.py"
KNOWN="$REPO/scripts/parity/known-differences.txt"

usage() { sed -n '11,38p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

KILN=""
ONLY=()
WITH_BUILDAH=0
REFS_ONLY=0
SELF_CHECK=0
KEEP=0
KILN_EXTRA=()
while [ $# -gt 0 ]; do
    case "$1" in
        --case) [ $# -ge 2 ] || usage; ONLY+=("$2"); shift 2 ;;
        --with-buildah) WITH_BUILDAH=1; shift ;;
        --refs-only) REFS_ONLY=1; shift ;;
        --self-check) SELF_CHECK=1; REFS_ONLY=1; shift ;;
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
if [ "$REFS_ONLY" -eq 0 ] && [ ! -x "$KILN" ]; then
    echo "error: kiln binary $KILN not found (build it, pass its path, or use --refs-only)" >&2
    exit 2
fi

# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
packages=(docker.io buildah skopeo umoci docker-registry busybox-static python3)
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
if [ "$(id -u)" -ne 0 ]; then
    echo "error: run as root (dockerd, buildah's chroot isolation, umoci unpack keeping owners)" >&2
    exit 2
fi

# ---------------------------------------------------------------------------------------------
# Work dir, registry, dockerd, cleanup
# ---------------------------------------------------------------------------------------------
WORK=$(mktemp -d /tmp/kiln-parity.XXXXXX)
REG_PID=""
source "$REPO/scripts/lib/registry.sh"
source "$REPO/scripts/lib/dockerd.sh"
cleanup() {
    local rc=$?
    # errexit off: a failing step here (grep finding no mount) must not skip the rest.
    set +e
    stop_dockerd
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

# ---------------------------------------------------------------------------------------------
# The base images, made offline
# ---------------------------------------------------------------------------------------------
# busybox:latest. Besides busybox, /etc and the usual dirs, it holds files that the whiteout
# cases change:
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
# An empty image at DIR/oci:latest, unpacked at DIR/bundle for a make_* function to fill.
new_bundle() { # DIR
    mkdir -p "$1"
    umoci init --layout "$1/oci"
    umoci new --image "$1/oci:latest"
    umoci unpack --image "$1/oci:latest" "$1/bundle" >/dev/null
}

make_base() {
    local oci="$WORK/base/oci" bundle="$WORK/base/bundle"
    new_bundle "$WORK/base"
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
    BASE_CONFIG=$(skopeo inspect --raw --tls-verify=false "docker://$REGISTRY/busybox:latest" \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["config"]["digest"])')
    rm -rf "$bundle"
}

# single:latest: an image of one layer and no shell, for COPY --from an image (through an alias
# stage, `FROM $SINGLE AS single`: BuildKit 20.10 does not expand variables in --from). Its
# layer holds /single/ with files of several owners and modes (see the README); its config has
# Env FOO=from-single and WorkingDir /single.
make_single() {
    local oci="$WORK/single/oci" bundle="$WORK/single/bundle"
    new_bundle "$WORK/single"
    local s="$bundle/rootfs/single"
    mkdir -p "$s/dir/sub" "$s/private"
    echo "single file" >"$s/file"
    echo "#!/bin/sh" >"$s/exec"
    echo "nested" >"$s/dir/nested"
    echo "deeper" >"$s/dir/sub/deeper"
    echo "private" >"$s/private/secret"
    echo "suid" >"$s/suid"
    echo "hard" >"$s/hard1"
    ln "$s/hard1" "$s/hard2"
    ln -s file "$s/link"
    ln -s dir "$s/dir-link"
    chmod 0640 "$s/file"
    chmod 0755 "$s/exec"
    chmod 0600 "$s/dir/nested"
    chmod 0750 "$s/dir"
    chmod 0775 "$s/dir/sub"
    chmod 0700 "$s/private"
    chmod 4755 "$s/suid"
    chmod 0644 "$s/dir/sub/deeper" "$s/private/secret" "$s/hard1"
    chmod 0711 "$s"
    chown 1000:1000 "$s/file" "$s/dir"
    chown 65534:65534 "$s/dir/nested"
    chown 1234:5678 "$s/private" "$s/private/secret"
    umoci repack --image "$oci:latest" "$bundle" >/dev/null
    umoci config --image "$oci:latest" --no-history --config.env FOO=from-single \
        --config.workingdir /single --architecture amd64 --os linux
    skopeo copy -q --dest-tls-verify=false "oci:$oci:latest" "docker://$REGISTRY/single:latest"
    rm -rf "$bundle"
}

# ---------------------------------------------------------------------------------------------
# Builds
# ---------------------------------------------------------------------------------------------
# Reads the case's `args` file (one `--build-arg K=V` per line; blank lines and # comments
# skipped; @REGISTRY@ becomes 127.0.0.1:PORT and @BASE_CONFIG@ the digest of busybox:latest's
# config blob, for ADD of a URL the registry serves) into CASE_ARGS, its `target` file into
# CASE_TARGET, its `buildkit-unsupported` file (first line) into CASE_NO_BUILDKIT, its `secrets`
# and `secrets.env` files into CASE_SECRETS (`--secret` arguments), CASE_ENV (VAR=value for the
# builders' environment) and CASE_SECRET_VALUES (files holding each value, for find-values),
# its `Dockerfile.buildkit` and `buildkit-network` into BUILDKIT_DOCKERFILE and BUILDKIT_NETWORK.
# Returns 1 (message on stderr) when the secrets files are wrong.
read_case_options() {
    local dir=$1 line
    # BASE and SINGLE only to a case that names them (an unused build-arg makes kiln warn).
    CASE_ARGS=()
    ! grep -qw BASE "$dir"/Dockerfile* || CASE_ARGS+=(--build-arg "BASE=$REGISTRY/busybox:latest")
    ! grep -qw SINGLE "$dir"/Dockerfile* || CASE_ARGS+=(--build-arg "SINGLE=$REGISTRY/single:latest")
    CASE_TARGET=()
    CASE_NO_BUILDKIT=""
    if [ -f "$dir/args" ]; then
        while IFS= read -r line || [ -n "$line" ]; do
            case "$line" in ''|'#'*) continue ;; esac
            line=${line//@REGISTRY@/$REGISTRY}
            line=${line//@BASE_CONFIG@/$BASE_CONFIG}
            CASE_ARGS+=("${line%% *}" "${line#* }")
        done <"$dir/args"
    fi
    if [ -f "$dir/target" ]; then
        CASE_TARGET=(--target "$(tr -d ' \n\t' <"$dir/target")")
    fi
    if [ -f "$dir/buildkit-unsupported" ]; then
        CASE_NO_BUILDKIT=$(grep -v '^#' "$dir/buildkit-unsupported" | head -n 1)
        [ -n "$CASE_NO_BUILDKIT" ] || CASE_NO_BUILDKIT="see $dir/buildkit-unsupported"
    fi
    BUILDKIT_DOCKERFILE="$dir/Dockerfile"
    [ ! -f "$dir/Dockerfile.buildkit" ] || BUILDKIT_DOCKERFILE="$dir/Dockerfile.buildkit"
    BUILDKIT_NETWORK=host
    [ ! -f "$dir/buildkit-network" ] || BUILDKIT_NETWORK=$(tr -d ' \n\t' <"$dir/buildkit-network")
    read_case_secrets "$dir"
}

# read_case_secrets CASE_DIR: the `secrets` file, one `--secret` value per line (blank lines
# and # comments skipped): `src=`/`source=` relative to the case dir are made absolute; `env=VAR`
# needs VAR=value in `secrets.env`, passed to the builders' environment only. Each value is also
# written to (or is) a file listed in CASE_SECRET_VALUES, for `compare.py find-values`.
read_case_secrets() {
    local dir=$1 line field key val i
    local values_dir
    values_dir="$WORK/secret-values/$(basename "$dir")"
    CASE_SECRETS=()
    CASE_ENV=()
    CASE_SECRET_VALUES=()
    if [ -f "$dir/secrets.env" ]; then
        while IFS= read -r line || [ -n "$line" ]; do
            case "$line" in ''|'#'*) continue ;; esac
            case "$line" in
                [A-Za-z_]*=*) CASE_ENV+=("$line") ;;
                *) echo "$dir/secrets.env: not VAR=value: $line" >&2; return 1 ;;
            esac
        done <"$dir/secrets.env"
    fi
    [ -f "$dir/secrets" ] || return 0
    mkdir -p "$values_dir"
    while IFS= read -r line || [ -n "$line" ]; do
        case "$line" in ''|'#'*) continue ;; esac
        local fields=()
        IFS=, read -r -a fields <<<"$line"
        for i in "${!fields[@]}"; do
            field=${fields[$i]}
            key=${field%%=*}
            val=${field#*=}
            case "$key" in
                src|source)
                    case "$val" in /*) ;; *) val="$dir/$val" ;; esac
                    [ -f "$val" ] || { echo "$dir/secrets: no file $val" >&2; return 1; }
                    fields[$i]="$key=$val"
                    CASE_SECRET_VALUES+=("$val")
                    ;;
                env)
                    local found="" e
                    for e in ${CASE_ENV[@]+"${CASE_ENV[@]}"}; do
                        [ "${e%%=*}" != "$val" ] || found=${e#*=}
                    done
                    [ -n "$found" ] || { echo "$dir/secrets: $val is not set in secrets.env" >&2; return 1; }
                    printf '%s' "$found" >"$values_dir/$val"
                    CASE_SECRET_VALUES+=("$values_dir/$val")
                    ;;
            esac
        done
        CASE_SECRETS+=(--secret "$(IFS=,; echo "${fields[*]}")")
    done <"$dir/secrets"
}

# secret_check LOG PATH...: 0 when no secret value of the case (CASE_SECRET_VALUES) occurs in
# the layouts or logs PATH; else 1, the findings in LOG.
secret_check() {
    local log=$1
    shift
    [ "${#CASE_SECRET_VALUES[@]}" -gt 0 ] || return 0
    local vf args=()
    for vf in "${CASE_SECRET_VALUES[@]}"; do args+=(--value-file "$vf"); done
    python3 "$COMPARE" find-values "${args[@]}" "$@" >"$log" 2>&1
}

# buildkit_build CASE_DIR OUT LOG: `docker build` in the private dockerd (BuildKit), then
# `docker save` and two OCI layouts as for buildah: OUT (OCI media types, for umoci) and
# OUT-docker (docker media types: the config exactly as dockerd made it; the conversion to an
# OCI config drops Healthcheck, OnBuild and Shell).
buildkit_build() {
    local dir=$1 out=$2 log=$3
    local tag
    tag="kiln-parity/$(basename "$dir"):$(basename "$out")"
    # --network host: the private dockerd has no bridge (a case's buildkit-network may say
    # none). --no-cache: every case and every --self-check run really builds (cache mounts are
    # kept all the same).
    env ${CASE_ENV[@]+"${CASE_ENV[@]}"} DOCKER_BUILDKIT=1 timeout 600 "${DOCKER[@]}" build \
        --progress plain --network "$BUILDKIT_NETWORK" --no-cache \
        ${CASE_ARGS[@]+"${CASE_ARGS[@]}"} ${CASE_SECRETS[@]+"${CASE_SECRETS[@]}"} \
        ${CASE_TARGET[@]+"${CASE_TARGET[@]}"} \
        -f "$BUILDKIT_DOCKERFILE" -t "$tag" "$dir/" >"$log" 2>&1 || return 1
    "${DOCKER[@]}" save -o "$out.tar" "$tag" >>"$log" 2>&1 || return 1
    "${DOCKER[@]}" rmi -f "$tag" >>"$log" 2>&1 || true
    skopeo copy -q --format v2s2 "docker-archive:$out.tar" "oci:$out-docker:latest" >>"$log" 2>&1 || return 1
    skopeo copy -q --format oci "docker-archive:$out.tar" "oci:$out:latest" >>"$log" 2>&1 || return 1
    rm -f "$out.tar"
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
    local dir=$1 out=$2 log=$3 rc=0
    # buildah 1.28 writes a RUN --mount=type=bind,rw step's changes through to the context
    # (92-run-mount-bind-rw): it builds from a copy of its own, so that the builders after it
    # (kiln, with --with-buildah) get the case as it was.
    local ctx="$dir.buildah"
    rm -rf "$ctx"
    cp -a "$dir" "$ctx"
    buildah_build_in "$ctx" "$out" "$log" || rc=1
    rm -rf "$ctx"
    return "$rc"
}
buildah_build_in() {
    local dir=$1 out=$2 log=$3
    local dockerfile="$dir/Dockerfile"
    [ ! -f "$dir/Dockerfile.buildah" ] || dockerfile="$dir/Dockerfile.buildah"
    # --layers: one layer per RUN/COPY/ADD as docker and kaniko make (without it buildah commits
    # one layer per stage). --format docker: keeps HEALTHCHECK, ONBUILD, SHELL, which buildah drops
    # from OCI-format images. --no-cache: every case and every --self-check run really builds.
    # TMPDIR: buildah keeps RUN --mount=type=cache directories in $TMPDIR/buildah-cache
    # (/var/tmp by default, the machine's), here in the work dir.
    mkdir -p "$WORK/buildah-tmp"
    env ${CASE_ENV[@]+"${CASE_ENV[@]}"} TMPDIR="$WORK/buildah-tmp" \
        buildah --root "$BUILDAH_STORE/root" --runroot "$BUILDAH_STORE/runroot" --storage-driver vfs \
        bud --isolation chroot --tls-verify=false --layers --no-cache --format docker \
        --identity-label=false ${CASE_ARGS[@]+"${CASE_ARGS[@]}"} ${CASE_SECRETS[@]+"${CASE_SECRETS[@]}"} \
        ${CASE_TARGET[@]+"${CASE_TARGET[@]}"} \
        -f "$dockerfile" -t parity-case "$dir/" >"$log" 2>&1 || return 1
    buildah_s push --tls-verify=false parity-case "oci:$out:latest" >>"$log" 2>&1 || return 1
    buildah_s push --tls-verify=false --format docker parity-case "oci:$out-docker:latest" >>"$log" 2>&1 || return 1
    buildah_s rmi -f parity-case >>"$log" 2>&1 || true
}

# kiln_build CASE_DIR OUT_LAYOUT LOG
kiln_build() {
    local dir=$1 out=$2 log=$3
    rm -rf "$WORK/kiln-dir"
    env ${CASE_ENV[@]+"${CASE_ENV[@]}"} timeout 600 "$KILN" build --context "$dir/" \
        --dockerfile "$dir/Dockerfile" \
        --insecure-registry "$REGISTRY" --no-push --oci-layout-path "$out" --kiln-dir "$WORK/kiln-dir" \
        ${CASE_ARGS[@]+"${CASE_ARGS[@]}"} ${CASE_SECRETS[@]+"${CASE_SECRETS[@]}"} \
        ${CASE_TARGET[@]+"${CASE_TARGET[@]}"} \
        ${KILN_EXTRA[@]+"${KILN_EXTRA[@]}"} >"$log" 2>&1
}

# ref_build REF CASE_DIR OUT LOG
ref_build() {
    case $1 in
        buildkit) buildkit_build "$2" "$3" "$4" ;;
        buildah) buildah_build "$2" "$3" "$4" ;;
    esac
}

# unpack LAYOUT BUNDLE LOG: umoci needs a tag; a layout whose only manifest has no ref name
# (kaniko's --oci-layout-path writes none) gets `latest` added first. umoci only reads OCI media
# types: for a layout with docker media types, compare.py oci-view writes LAYOUT-for-umoci, the
# same blobs under an OCI manifest (the config compared is still read from LAYOUT itself).
unpack() {
    local layout=$1 bundle=$2 log=$3 rc=0
    unpack_one "$layout" "$bundle" "$bundle.log" || rc=1
    cat "$bundle.log" >>"$log"
    return "$rc"
}
unpack_one() {
    local layout=$1 bundle=$2 log=$3
    : >"$log"
    python3 "$COMPARE" tag-layout "$layout" latest >>"$log" 2>&1 || return 1
    if umoci unpack --image "$layout:latest" "$bundle" >>"$log" 2>&1; then
        return 0
    fi
    grep -q "not implemented: application/vnd.docker" "$log" || return 1
    rm -rf "$bundle" "$layout-for-umoci"
    python3 "$COMPARE" oci-view "$layout" "$layout-for-umoci" latest >>"$log" 2>&1 || return 1
    umoci unpack --image "$layout-for-umoci:latest" "$bundle" >>"$log" 2>&1
}

# compare_pair KNOWN_REF A B OUT: compares the images OUT/A and OUT/B (their bundles must be
# unpacked as OUT/A-bundle, OUT/B-bundle; a reference's config is read from OUT/A-docker) with
# the known differences listed for reference KNOWN_REF (none when empty). Writes
# OUT/compare-A-B.txt and OUT/summary-A-B.txt; returns compare.py's status (0 same, 3 known
# differences only, 1 differs, 2 error).
compare_pair() {
    local known_ref=$1 a=$2 b=$3 out=$4
    local a_layout="$out/$a" b_layout="$out/$b"
    [ ! -d "$out/$a-docker" ] || a_layout="$out/$a-docker"
    [ ! -d "$out/$b-docker" ] || b_layout="$out/$b-docker"
    local known=()
    [ -z "$known_ref" ] || known=(--known "$KNOWN" --known-ref "$known_ref")
    local rc=0
    python3 "$COMPARE" pair --case "$CASE" ${known[@]+"${known[@]}"} \
        --a-name "$a" --a-layout "$a_layout" --a-bundle "$out/$a-bundle" \
        --b-name "$b" --b-layout "$b_layout" --b-bundle "$out/$b-bundle" \
        --summary-file "$out/summary-$a-$b.txt" >"$out/compare-$a-$b.txt" 2>&1 || rc=$?
    return "$rc"
}

# The text of a comparison's result for the report.
result_text() { # RC
    case $1 in
        0) echo "same" ;;
        3) echo "same (known differences)" ;;
        1) echo "differs" ;;
        *) echo "compare failed" ;;
    esac
}

# One line of the report table; `|` in a cell would break the Markdown table.
ROWS=()
cell() { printf '%s' "$1" | tr '\n|' ';/' | cut -c1-"${2:-400}"; }
add_row() { # CASE REFERENCE RESULT DETAILS [SECONDARY]
    local row="| $1 | $2 | $3 | $(cell "$4")"
    [ "$REFS_ONLY" -eq 1 ] || row="$row | $(cell "${5:-}" 300)"
    ROWS+=("$row |")
}

tail_of() { tail -n 5 "$1" | tr -s ' \t' ' '; }

# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------
cases=()
for dir in "$CASES_DIR"/*/; do
    name=$(basename "$dir")
    if [ "${#ONLY[@]}" -gt 0 ]; then
        match=0
        for o in "${ONLY[@]}"; do
            # shellcheck disable=SC2254 # a pattern: --case 3[6-9] works
            case "$name" in $o*) match=1 ;; esac
        done
        [ "$match" -eq 1 ] || continue
    fi
    cases+=("$name")
done
if [ "${#cases[@]}" -eq 0 ]; then
    echo "error: no case matches" >&2
    exit 2
fi

START=$(date +%s)
start_registry
REGISTRY="127.0.0.1:$PORT"
echo "registry: $REGISTRY (pid $REG_PID), work dir: $WORK" >&2
make_base
make_single
echo "base images: $REGISTRY/busybox:latest, $REGISTRY/single:latest" >&2

need_dockerd=0
for name in "${cases[@]}"; do
    [ -f "$CASES_DIR/$name/buildkit-unsupported" ] || need_dockerd=1
done
if [ "$need_dockerd" -eq 1 ]; then
    start_dockerd || exit 2
    echo "dockerd: $("${DOCKER[@]}" version -f '{{.Server.Version}}') (pid $DOCKERD_PID, storage $DOCKERD_DRIVER)" >&2
fi

failed=0
counts_same=0; counts_known=0; counts_diff=0; counts_fail=0
fail_row() { # CASE REF RESULT DETAILS
    add_row "$1" "$2" "$3" "$4"
    failed=1; counts_fail=$((counts_fail + 1))
}
for CASE in "${cases[@]}"; do
    # Every builder gets a copy of the case as its context, made ready by the case's
    # prepare.sh (modes, owners, empty dirs, hardlinks: what git does not keep).
    dir="$WORK/ctx/$CASE"
    out="$WORK/out/$CASE"
    mkdir -p "$out" "$WORK/ctx"
    cp -a "$CASES_DIR/$CASE" "$dir"
    if [ -f "$dir/prepare.sh" ] && ! (cd "$dir" && bash ./prepare.sh) >"$out/prepare.log" 2>&1; then
        fail_row "$CASE" "-" "prepare.sh failed" "$(tail_of "$out/prepare.log")"
        continue
    fi
    if ! read_case_options "$dir" 2>"$out/options.log"; then
        fail_row "$CASE" "-" "case files wrong" "$(tail_of "$out/options.log")"
        continue
    fi
    t0=$(date +%s)
    ref=buildkit
    [ -z "$CASE_NO_BUILDKIT" ] || ref=buildah
    run_buildah=$WITH_BUILDAH
    [ "$ref" = buildkit ] || run_buildah=1

    # The reference's build (a failure fails the case).
    if ! ref_build "$ref" "$dir" "$out/$ref" "$out/$ref.log"; then
        echo "== $CASE: $ref failed" >&2
        tail -n 20 "$out/$ref.log" >&2
        fail_row "$CASE" "$ref" "$ref failed" "$(tail_of "$out/$ref.log")"
        continue
    fi
    # A secret's value in the reference's image or log: the case is wrong.
    if ! secret_check "$out/secrets-$ref.txt" "$out/$ref" "$out/$ref-docker" "$out/$ref.log"; then
        echo "== $CASE: a secret's value in $ref's image or log" >&2
        cat "$out/secrets-$ref.txt" >&2
        fail_row "$CASE" "$ref" "secret in $ref's image" "$(tail_of "$out/secrets-$ref.txt")"
        continue
    fi
    # buildah beside BuildKit (--with-buildah): for information only.
    buildah_note=""
    if [ "$ref" = buildkit ] && [ "$run_buildah" -eq 1 ]; then
        if ! buildah_build "$dir" "$out/buildah" "$out/buildah.log"; then
            buildah_note="buildah failed: $(tail -n 1 "$out/buildah.log")"
        fi
    elif [ "$ref" = buildkit ]; then
        buildah_note="not built (--with-buildah)"
    fi

    if [ "$SELF_CHECK" -eq 1 ]; then
        refs=("$ref")
        [ "$ref" = buildah ] || [ "$run_buildah" -eq 0 ] || [ -n "$buildah_note" ] || refs+=(buildah)
        details=""
        worst=0
        for r in "${refs[@]}"; do
            if ! ref_build "$r" "$dir" "$out/${r}2" "$out/${r}2.log"; then
                details="$details $r: second build failed: $(tail_of "$out/${r}2.log");"
                worst=2
                continue
            fi
            if ! unpack "$out/$r" "$out/$r-bundle" "$out/unpack.log" \
                || ! unpack "$out/${r}2" "$out/${r}2-bundle" "$out/unpack.log"; then
                details="$details $r: unpack failed: $(tail_of "$out/unpack.log");"
                worst=2
                continue
            fi
            rc=0
            compare_pair "" "$r" "${r}2" "$out" || rc=$?
            echo "== $CASE: $r twice ($(( $(date +%s) - t0 ))s)" >&2
            sed 's/^/   /' "$out/compare-$r-${r}2.txt" >&2
            details="$details $r: $(result_text "$rc"): $(cat "$out/summary-$r-${r}2.txt" 2>/dev/null);"
            [ "$rc" -eq 0 ] || { [ "$worst" -ne 0 ] || worst=1; }
            rm -rf "$out/$r-bundle" "$out/${r}2-bundle"
        done
        case $worst in
            0) add_row "$CASE" "$ref" "deterministic" "$details"; counts_same=$((counts_same + 1)) ;;
            1) add_row "$CASE" "$ref" "differs" "$details"; failed=1; counts_diff=$((counts_diff + 1)) ;;
            *) fail_row "$CASE" "$ref" "failed" "$details" ;;
        esac
        continue
    fi

    if [ "$REFS_ONLY" -eq 1 ]; then
        if unpack "$out/$ref" "$out/$ref-bundle" "$out/unpack.log"; then
            python3 "$COMPARE" summary --layout "$out/$ref-docker" --bundle "$out/$ref-bundle" \
                >"$out/summary.txt" 2>&1 || true
            note=""
            [ "$ref" = buildkit ] || note="; BuildKit: $CASE_NO_BUILDKIT"
            [ -z "$buildah_note" ] || [ "$run_buildah" -eq 0 ] || note="; $buildah_note"
            add_row "$CASE" "$ref" "$ref ok" "$(head -n 1 "$out/summary.txt") ($(( $(date +%s) - t0 ))s)$note"
            counts_same=$((counts_same + 1))
        else
            fail_row "$CASE" "$ref" "$ref failed" "unpack: $(tail_of "$out/unpack.log")"
        fi
        rm -rf "$out/$ref-bundle"
        continue
    fi

    # kiln_fail_row RESULT DETAILS: a failed case's row, DETAILS in the reference's column.
    no_buildkit="BuildKit 20.10 cannot build it: $CASE_NO_BUILDKIT"
    kiln_fail_row() {
        if [ "$ref" = buildkit ]; then
            add_row "$CASE" "$ref" "$1" "$2" "not compared"
        else
            add_row "$CASE" "$ref" "$1" "$no_buildkit" "$2"
        fi
        failed=1; counts_fail=$((counts_fail + 1))
    }
    if ! kiln_build "$dir" "$out/kiln" "$out/kiln.log"; then
        echo "== $CASE: kiln failed" >&2
        tail -n 20 "$out/kiln.log" >&2
        kiln_fail_row "kiln failed" "$(tail_of "$out/kiln.log")"
        continue
    fi
    if ! secret_check "$out/secrets-kiln.txt" "$out/kiln" "$out/kiln.log"; then
        echo "== $CASE: a secret's value in kiln's image or log" >&2
        cat "$out/secrets-kiln.txt" >&2
        kiln_fail_row "secret in kiln's image" "$(tail_of "$out/secrets-kiln.txt")"
        continue
    fi
    if ! unpack "$out/$ref" "$out/$ref-bundle" "$out/unpack.log"; then
        kiln_fail_row "$ref failed" "unpack: $(tail_of "$out/unpack.log")"
        continue
    fi
    if ! unpack "$out/kiln" "$out/kiln-bundle" "$out/unpack.log"; then
        kiln_fail_row "kiln failed" "unpack: $(tail_of "$out/unpack.log")"
        continue
    fi
    rc=0
    compare_pair "$ref" "$ref" kiln "$out" || rc=$?
    echo "== $CASE: kiln vs $ref ($(( $(date +%s) - t0 ))s)" >&2
    sed 's/^/   /' "$out/compare-$ref-kiln.txt" >&2
    main_summary=$(cat "$out/summary-$ref-kiln.txt" 2>/dev/null || tail_of "$out/compare-$ref-kiln.txt")

    # The other column: kiln vs buildah where BuildKit is the reference (information only), or
    # why BuildKit did not build the case.
    if [ "$ref" = buildah ]; then
        secondary=$no_buildkit
    elif [ -n "$buildah_note" ]; then
        secondary=$buildah_note
    elif unpack "$out/buildah" "$out/buildah-bundle" "$out/unpack.log"; then
        rc2=0
        compare_pair buildah buildah kiln "$out" || rc2=$?
        sed 's/^/   (buildah) /' "$out/compare-buildah-kiln.txt" >&2
        secondary="$(result_text "$rc2"): $(cat "$out/summary-buildah-kiln.txt" 2>/dev/null)"
    else
        secondary="buildah unpack failed: $(tail_of "$out/unpack.log")"
    fi
    if [ "$ref" = buildkit ]; then
        add_row "$CASE" "$ref" "$(result_text "$rc")" "$main_summary" "$secondary"
    else
        add_row "$CASE" "$ref" "$(result_text "$rc")" "$secondary" "$main_summary"
    fi
    case $rc in
        0) counts_same=$((counts_same + 1)) ;;
        3) counts_known=$((counts_known + 1)) ;;
        1) failed=1; counts_diff=$((counts_diff + 1)) ;;
        *) failed=1; counts_fail=$((counts_fail + 1)) ;;
    esac
    # Bundles hold a full rootfs each; keep the layouts and logs only.
    rm -rf "$out/$ref-bundle" "$out/kiln-bundle" "$out/buildah-bundle"
done

echo
if [ "$SELF_CHECK" -eq 1 ]; then
    echo "## self-check (each reference builds every case twice)"
    echo
    echo "| case | reference | result | details |"
    echo "|---|---|---|---|"
elif [ "$REFS_ONLY" -eq 1 ]; then
    echo "## reference builds"
    echo
    echo "| case | reference | result | details |"
    echo "|---|---|---|---|"
else
    echo "## kiln vs its reference (BuildKit 20.10; buildah 1.28 where BuildKit cannot build the case)"
    echo
    echo "| case | reference | result | kiln vs BuildKit | kiln vs buildah |"
    echo "|---|---|---|---|---|"
fi
printf '%s\n' "${ROWS[@]}"
echo
if [ "$REFS_ONLY" -eq 1 ]; then
    echo "${#cases[@]} cases: $counts_same ok, $counts_diff differ, $counts_fail failed; $(( $(date +%s) - START ))s"
else
    echo "${#cases[@]} cases: $counts_same same, $counts_known same with known differences, $counts_diff differ, $counts_fail failed; $(( $(date +%s) - START ))s"
fi
exit "$failed"

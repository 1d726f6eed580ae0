#!/usr/bin/env bash
# RUN --mount=type=cache side by side: a Go dependency build whose build cache lives in a cache
# mount, rebuilt after a one-line source change, against the same Dockerfile without the mount.
#
#   bash bench/mounts.sh [--runs N] [--peers kiln,kiln-nomount,buildkit,buildkit-nomount,kaniko,kaniko-mount]
#                        [--no-own-fs] [KILN]
#
# The workload (bench/workloads/m1-go-deps): a main package importing cobra, logrus, errgroup,
# go-containerregistry's remote, go-git and grpc, with those modules' packages (about 220, the
# ones the build needs) copied out of kaniko v1.9.0's vendor/ tree (from the mirror
# $KANIKO_REPO, default /work/.mirror/GoogleContainerTools+kaniko/repo) and built with
# `go build -mod=vendor` (GOPROXY=off: no network): about 20 s of CPU, 12 s on an idle 2-core
# machine. The base image GOBASE is busybox-static plus this machine's Go toolchain (Debian's
# golang-go: its GOROOT without test/, misc/, api/, src/cmd and pkg/linux_amd64/cmd, with the
# glibc loader and libc its dynamically linked `go` needs) at /usr/local/go, GOROOT and PATH set,
# CGO_ENABLED=0, GOCACHE=/root/.cache/go-build. Dockerfile A (`Dockerfile`) builds with
# `RUN --mount=type=cache,target=/root/.cache/go-build`, Dockerfile B (`Dockerfile.nomount`)
# without the mount; both COPY the context first and copy /out/app into a busybox stage.
#
# Each run, for every peer in turn: a cold build from an empty state (a fresh kiln dir, a pruned
# BuildKit), then main.go's version line changed and the image rebuilt with the same state (the
# same kiln dir, the same dockerd): the rebuild is the figure. Builds push to the local registry
# and are timed with the push. After each build the pushed image is checked to hold the new
# version string (a rebuild that reused the old binary would fail the check).
#   kiln              Dockerfile A, `kiln build ... --kiln-dir` on the benchmark's ext4
#   kiln-nomount      Dockerfile B, the same
#   buildkit          Dockerfile A, Debian's dockerd (`docker build`, DOCKER_BUILDKIT=1)
#   buildkit-nomount  Dockerfile B, the same
#   kaniko            Dockerfile B, kaniko v1.9.0 in a throwaway root (bench/lib.sh); kaniko keeps
#                     no state between builds, so its rebuild is a build of the changed context
#   kaniko-mount      Dockerfile A with kaniko, in the first run only: what it does with the
#                     mount (v1.9.0 parses the flag and runs the command without a mount, saying
#                     nothing), noted under the table; its failure does not stop the benchmark,
#                     every other peer's does
# kaniko's peers need KANIKO_BIN (default /tmp/kaniko/executor; built there from the mirror's
# v1.9.0 with Debian's golang-go when it is missing).
#
# Every builder's state is on the benchmark's own journaled ext4 (bench/lib.sh), peers
# interleaved run by run. Prints a Markdown table of medians; KILN_BENCH_RESULTS=FILE keeps the
# raw results, KILN_BENCH_LOGS=DIR every build's log. One run of all the peers takes about three
# minutes on 2 cores (the first 40 s more, for kaniko-mount), the set-up well under a minute: the
# default three runs about 11 minutes. The Go build dominates every figure but BuildKit's (and,
# once it has cache mounts, kiln's) rebuild: run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=3
PEERS=kiln,kiln-nomount,buildkit,buildkit-nomount,kaniko,kaniko-mount
OWN_FS=1
while [ $# -gt 0 ]; do
    case $1 in
        --no-own-fs) OWN_FS=0; shift ;;
        --runs) RUNS=$2; shift 2 ;;
        --peers) PEERS=$2; shift 2 ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
for p in ${PEERS//,/ }; do
    case $p in kiln|kiln-nomount|buildkit|buildkit-nomount|kaniko|kaniko-mount) ;;
        *) echo "unknown peer $p" >&2; exit 2 ;; esac
done
WL=bench/workloads/m1-go-deps
KANIKO_REPO=${KANIKO_REPO:-/work/.mirror/GoogleContainerTools+kaniko/repo}
git --git-dir="$KANIKO_REPO" rev-parse -q --verify v1.9.0 >/dev/null 2>&1 \
    || { echo "no kaniko v1.9.0 in KANIKO_REPO=$KANIKO_REPO (a git dir of GoogleContainerTools/kaniko): its vendor/ tree is the workload's dependencies" >&2; exit 2; }
dpkg -s golang-go >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go >/dev/null

# kaniko: bench_tools adds the peer `kaniko` when KANIKO_BIN is set; the list is put back after.
want_peers=$PEERS
if [[ ",$PEERS," == *,kaniko* ]]; then
    KANIKO_BIN=${KANIKO_BIN:-/tmp/kaniko/executor}
    if [ ! -x "$KANIKO_BIN" ]; then
        echo "building kaniko v1.9.0's executor into $KANIKO_BIN" >&2
        ksrc=$(mktemp -d /tmp/kaniko-src.XXXXXX)
        git --git-dir="$KANIKO_REPO" archive v1.9.0 | tar -x -C "$ksrc"
        mkdir -p "$(dirname "$KANIKO_BIN")"
        (cd "$ksrc" && CGO_ENABLED=0 GOFLAGS=-mod=vendor GOPROXY=off go build -o "$KANIKO_BIN" ./cmd/executor)
        rm -rf "$ksrc"
    fi
else
    KANIKO_BIN=
fi
source bench/lib.sh
bench_tools "${1:-}"
PEERS=$want_peers

WORKLOADS=m1 # bench_setup makes the busybox base only
bench_setup
case ",$PEERS," in *,buildkit*) PEERS=$PEERS,buildkit; bench_dockerd; PEERS=$want_peers ;; esac

# The Go base: busybox plus the toolchain.
GOROOT_HOST=$(go env GOROOT)
GO_VERSION=$(go env GOVERSION)
echo "base image gobase: busybox + $GO_VERSION from $GOROOT_HOST" >&2
gb=$WORK/gobase
cp -a "$WORK/bb-pristine" "$gb"
mkdir -p "$gb/usr/local/go/pkg" "$gb/root" "$gb/go"
cp -rL "$GOROOT_HOST/bin" "$GOROOT_HOST/VERSION" "$GOROOT_HOST/src" "$gb/usr/local/go/"
cp -rL "$GOROOT_HOST/pkg/tool" "$GOROOT_HOST/pkg/include" "$GOROOT_HOST/pkg/linux_amd64" "$gb/usr/local/go/pkg/"
rm -rf "$gb/usr/local/go/src/cmd" "$gb/usr/local/go/pkg/linux_amd64/cmd"
# Debian's `go` (and pprof, trace) link glibc dynamically: its loader and libraries come along.
for f in "$gb"/usr/local/go/bin/* "$gb"/usr/local/go/pkg/tool/linux_amd64/*; do
    ldd "$f" 2>/dev/null | grep -o '/[^ ]*' || true
done | sort -u | while read -r lib; do
    mkdir -p "$gb$(dirname "$lib")" && cp -L "$lib" "$gb$lib"
done
oci=$WORK/oci-gobase
umoci init --layout "$oci" && umoci new --image "$oci:latest"
umoci unpack --image "$oci:latest" "$WORK/bundle-gobase" >/dev/null
rm -rf "$WORK/bundle-gobase/rootfs" && mv "$gb" "$WORK/bundle-gobase/rootfs"
umoci repack --image "$oci:latest" "$WORK/bundle-gobase" >/dev/null
umoci config --image "$oci:latest" --no-history --architecture amd64 --os linux \
    --config.env PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.env GOROOT=/usr/local/go --config.env GOPATH=/go --config.env GOCACHE=/root/.cache/go-build \
    --config.env CGO_ENABLED=0 --config.env GOPROXY=off
skopeo copy -q --dest-tls-verify=false "oci:$oci:latest" "docker://$REG/gobase:latest"
rm -rf "$oci" "$WORK/bundle-gobase"

# The context's template: main.go, go.mod and vendor/ with the packages main.go needs (found with
# `go list -deps` in kaniko's tree) and their modules' lines of kaniko's vendor/modules.txt.
ksrc=$WORK/kaniko-src
mkdir -p "$ksrc"
git --git-dir="$KANIKO_REPO" archive v1.9.0 go.mod vendor | tar -x -C "$ksrc"
mkdir -p "$ksrc/cmd/benchapp" && cp "$WL/main.go" "$ksrc/cmd/benchapp/"
(cd "$ksrc" && CGO_ENABLED=0 GOFLAGS=-mod=vendor GOPROXY=off GOCACHE=$WORK/host-gocache go list -deps \
    -f '{{if not .Standard}}{{with .Module}}{{if not .Main}}{{$.ImportPath}} {{.Path}}{{end}}{{end}}{{end}}' \
    ./cmd/benchapp) > "$WORK/deps.txt"
TEMPLATE=$WORK/m1-template
mkdir -p "$TEMPLATE"
cp "$WL/main.go" "$TEMPLATE/"
python3 - "$ksrc" "$TEMPLATE" "$WORK/deps.txt" <<'PY'
import os, shutil, sys
src, ctx, deps = sys.argv[1:4]
pkgs, mods = set(), set()
for line in open(deps):
    p, m = line.split()
    pkgs.add(p); mods.add(m)
out, req, keep = [], [], False
for line in open(os.path.join(src, "vendor/modules.txt")):
    line = line.rstrip("\n")
    if line.startswith("# "):
        f = line[2:].split()
        keep = f[0] in mods and f[1] != "=>"
        if keep:
            if "=>" in f:
                sys.exit(f"{f[0]} is replaced in kaniko's go.mod: main.go should not need it")
            req.append(f"\t{f[0]} {f[1]}")
            out.append(line)
    elif keep and (line.startswith("## ") or line in pkgs):
        out.append(line)
missing = mods - {r.split()[0] for r in req}
if missing:
    sys.exit(f"not in kaniko's vendor/modules.txt: {sorted(missing)}")
for p in pkgs:  # the package's files, not its sub-packages
    d = os.path.join(src, "vendor", p)
    os.makedirs(os.path.join(ctx, "vendor", p), exist_ok=True)
    for n in os.listdir(d):
        if os.path.isfile(os.path.join(d, n)):
            shutil.copy2(os.path.join(d, n), os.path.join(ctx, "vendor", p, n))
with open(os.path.join(ctx, "vendor/modules.txt"), "w") as f:
    f.write("\n".join(out) + "\n")
with open(os.path.join(ctx, "go.mod"), "w") as f:
    f.write("module bench.local/app\n\ngo 1.17\n\nrequire (\n" + "\n".join(req) + "\n)\n")
PY
rm -rf "$ksrc" "$WORK/host-gocache"
echo "context: $(wc -l < "$WORK/deps.txt") vendored packages, $(du -sm "$TEMPLATE" | cut -f1) MiB, $(find "$TEMPLATE" -type f | wc -l) files" >&2

RESULTS=${KILN_BENCH_RESULTS:-$WORK/results.tsv}
: > "$RESULTS"

dockerfile_of() { # PEER -> A or B
    case $1 in kiln|buildkit|kaniko-mount) echo A ;; *) echo B ;; esac
}

# Is MARKER in one of IMAGE's layers? (the rebuilt binary carries its version string)
image_has() { # IMAGE MARKER
    local d; d=$(mktemp -d "$WORK/check.XXXXXX")
    if ! skopeo copy -q --src-tls-verify=false "docker://$1" "dir:$d" >"$d.log" 2>&1; then
        echo "cannot pull $1 to check it:" >&2; cat "$d.log" >&2; rm -rf "$d" "$d.log"; return 1
    fi
    rm -f "$d.log"
    local f found=1
    for f in "$d"/*; do
        case $(basename "$f") in manifest.json|version) continue ;; esac
        # (grep -c reads to the end: grep -q would end zcat with SIGPIPE, a failure under pipefail)
        if [ "$(zcat -f "$f" 2>/dev/null | grep -caF "$2" || true)" -gt 0 ] 2>/dev/null; then found=0; break; fi
    done
    rm -rf "$d"
    return $found
}

# One timed build: PEER PHASE(cold|rebuild) CONTEXT RUN MARKER. Appends to RESULTS; a failed
# build (or an image without MARKER) stops the benchmark unless the peer is kaniko-mount.
build() {
    local peer=$1 phase=$2 dir=$3 run=$4 marker=$5
    local args=(--build-arg "GOBASE=$REG/gobase:latest" --build-arg "BUSYBOX=$REG/busybox:latest")
    local dest=$REG/bench/m1:$peer-$run-$phase log=$WORK/log-$peer-$run-$phase
    local before; before=$(registry_bytes)
    local out
    case $peer in
        kiln|kiln-nomount)
            local kd=$WORK/kiln-dir-$peer-$run
            [ "$phase" = cold ] && rm -rf "$kd"
            sync
            out=$(python3 bench/measure.py "$log" "$KILN" build -c "$dir" -d "$dest" \
                --insecure-registry "$REG" --kiln-dir "$kd" --log-format json "${args[@]}") ;;
        buildkit|buildkit-nomount)
            if [ "$phase" = cold ]; then
                "${DOCKER[@]}" builder prune -af >/dev/null 2>&1 || true
                "${DOCKER[@]}" image prune -af >/dev/null 2>&1 || true
            fi
            sync
            out=$(DOCKER_BUILDKIT=1 python3 bench/measure.py "$log" bash -c "${DOCKER[*]} build -q --network host ${args[*]} -t $dest $dir && ${DOCKER[*]} push -q $dest") ;;
        kaniko|kaniko-mount)
            local root; root=$(kaniko_root "$dir"); sync
            out=$(kaniko_run "$log" "$root" --destination "$dest" "${args[@]}")
            rm -rf "$root" ;;
    esac
    local after; after=$(registry_bytes)
    [ -n "${KILN_BENCH_LOGS:-}" ] && mkdir -p "$KILN_BENCH_LOGS" && cp "$log" "$KILN_BENCH_LOGS/"
    local wall rss rc check=-
    read -r wall rss rc <<<"$out"
    if [ "$rc" = 0 ]; then
        if image_has "$dest" "$marker"; then check=ok; else check=stale; fi
    fi
    echo "$peer $phase run $run: ${wall}s pushed=$((after - before))B exit=$rc image=$check" >&2
    local steps=$'-\t-\t-\t-\t-\t-\t-'
    [[ $peer == kiln* ]] && steps=$(python3 bench/steps.py "$log")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$phase" "$peer" "$(dockerfile_of "$peer")" "$wall" "$rss" \
        "$((after - before))" "$rc" "$check" "$steps" >> "$RESULTS"
    if [ "$rc" != 0 ] || [ "$check" != ok ]; then
        if [ "$peer" = kaniko-mount ]; then
            echo "kaniko-mount $phase: exit $rc, image $check (recorded, not a stop); its log's end:" >&2
            tail -n 5 "$log" >&2
            return 0
        fi
        echo >&2
        if [ "$rc" != 0 ]; then
            echo "error: $peer's $phase build failed (exit $rc). The end of its log ($log):" >&2
            tail -n 20 "$log" >&2
        else
            echo "error: $peer's $phase build pushed $dest without '$marker' in its layers (a stale binary)" >&2
        fi
        if [ "$peer" = kiln ]; then
            echo "The kiln peer builds Dockerfile A (RUN --mount=type=cache) with $KILN: that binary must" >&2
            echo "support cache mounts. Leave the peer out with --peers kiln-nomount,buildkit,... if it does not." >&2
        fi
        exit 1
    fi
}

NOTES=$WORK/notes
: > "$NOTES"
IFS=, read -r -a peers <<<"$PEERS"
for run in $(seq 1 "$RUNS"); do
    for peer in "${peers[@]}"; do
        # kaniko-mount records a behaviour, not a figure: the first run only.
        [ "$peer" = kaniko-mount ] && [ "$run" -gt 1 ] && continue
        dir=$WORK/ctx-$peer-$run
        rm -rf "$dir"; cp -a "$TEMPLATE" "$dir"
        if [ "$(dockerfile_of "$peer")" = A ]; then cp "$WL/Dockerfile" "$dir/Dockerfile"
        else cp "$WL/Dockerfile.nomount" "$dir/Dockerfile"; fi
        sed -i "s|^var version = .*|var version = \"cold-$peer-$run\"|" "$dir/main.go"
        build "$peer" cold "$dir" "$run" "cold-$peer-$run"
        # The source change: one line of main.go.
        sed -i "s|^var version = .*|var version = \"rebuilt-$peer-$run\"|" "$dir/main.go"
        build "$peer" rebuild "$dir" "$run" "rebuilt-$peer-$run"
        if [ "$peer" = kaniko-mount ]; then
            log=$WORK/log-$peer-$run-rebuild
            ran=$(grep -o 'Running: \[[^]]*\]' "$log" | head -n 1 || true)
            said=$(sed "s|$REG/bench/m1:[^ ]*||g" "$log" | grep -i mount | grep -cv 'RUN --mount' || true)
            echo "kaniko-mount (Dockerfile A): exit $(tail -n 1 "$RESULTS" | cut -f7); kaniko logged \`${ran:-no RUN}\`;" \
                "$said other log lines mention the mount$([ "$said" = 0 ] && echo ': the flag is parsed and ignored without a word, the Go build cache starts empty in every build')." >> "$NOTES"
        fi
        rm -rf "$dir" "$WORK/kiln-dir-$peer-$run"
    done
done

python3 - "$RESULTS" "$(date -u +%Y-%m-%d)" "$(nproc) cores, $(uname -r)" "$GO_VERSION" "$RUNS" <<'PY'
import statistics, sys
from collections import defaultdict
path, date, machine, gover, runs = sys.argv[1:6]
rows = defaultdict(list)   # (phase, peer) -> [(wall, pushed, rc, check, steps)]
dockerfile = {}
for line in open(path):
    f = line.rstrip("\n").split("\t")
    phase, peer, df, wall, rss, pushed, rc, check = f[:8]
    steps = [None if x == "-" else float(x) for x in f[8:15]]
    dockerfile[peer] = df
    rows[(phase, peer)].append((float(wall), int(pushed), rc, check, steps))

def fig(phase, peer):
    rs = [r for r in rows.get((phase, peer), []) if r[2] == "0" and r[3] == "ok"]
    if not rs:
        return None, ""
    w = [r[0] for r in rs]
    return statistics.median(w), f"{statistics.median(w):.2f} ({min(w):.2f}-{max(w):.2f})"

def outcome(peer):
    rs = rows[("rebuild", peer)] + rows[("cold", peer)]
    bad = [r for r in rs if r[2] != "0" or r[3] != "ok"]
    return "" if not bad else f"{len(bad)} of {len(rs)} builds: " + ", ".join(sorted({f'exit {r[2]}, image {r[3]}' for r in bad}))

kiln_a, _ = fig("rebuild", "kiln")
kiln_b, _ = fig("rebuild", "kiln-nomount")
once = " (kaniko-mount: the first run only)" if "kaniko-mount" in dockerfile else ""
print(f"Measured {date} on {machine}, {gover}, medians of {runs} runs{once} (min-max), seconds, build + push\n"
      f"to the local registry (bash bench/mounts.sh). A: RUN --mount=type=cache for the Go build cache;\n"
      f"B: the same RUN without the mount.\n")
print("| builder | Dockerfile | cold build | rebuild after a one-line change | kiln A / builder | kiln B / builder | kiln's RUN s (rebuild) | RUN layer MiB (kiln) | bytes pushed (rebuild) | not ok |")
print("|---|---|---|---|---|---|---|---|---|---|")
order = ["kiln", "kiln-nomount", "buildkit", "buildkit-nomount", "kaniko", "kaniko-mount"]
for peer in [p for p in order if p in dockerfile]:
    cold, cold_s = fig("cold", peer)
    reb, reb_s = fig("rebuild", peer)
    ra = f"{kiln_a / reb:.2f}" if kiln_a and reb and not peer.startswith("kiln") else ""
    rb = f"{kiln_b / reb:.2f}" if kiln_b and reb and not peer.startswith("kiln") else ""
    ok = [r for r in rows[("rebuild", peer)] if r[2] == "0"]
    run_s = layer = ""
    if peer.startswith("kiln") and ok:
        c = [r[4][0] for r in ok if r[4][0] is not None]
        t = [r[4][4] for r in ok if r[4][4] is not None]
        run_s = f"{statistics.median(c):.2f}" if c else ""
        layer = f"{statistics.median(t) / 1048576:.1f}" if t else ""
    pushed = str(max(r[1] for r in ok)) if ok else ""
    print(f"| {peer} | {dockerfile[peer]} | {cold_s} | {reb_s} | {ra} | {rb} | {run_s} | {layer} | {pushed} | {outcome(peer)} |")
PY
cat "$NOTES"
echo "(bench/mounts.sh took $((SECONDS / 60)) min $((SECONDS % 60)) s)" >&2

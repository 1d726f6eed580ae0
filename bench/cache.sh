#!/usr/bin/env bash
# The layer cache side by side: each builder with its own registry cache, local state wiped
# between the build that fills the cache and the timed one.
#
#   bash bench/cache.sh [--runs N] [--workloads c1,c2,c3,c4] [--peers kiln,kaniko,buildkit,buildah]
#                       [--rounds 80] [--no-copy-layers] [--no-own-fs] [KILN]
#
# kiln and kaniko run with --cache-copy-layers (BuildKit and buildah cache every step), or with
# kaniko's default (COPY steps not in the cache repository: they run again) with
# --no-copy-layers; the workload names then end in -nocopy.
# c1-rebuild   W2 (useradd, COPY, USER on the Debian base): built with the cache, state wiped,
#              built again, nothing changed. kiln --cache-repo, kaniko --cache-repo, BuildKit
#              inline cache (BUILDKIT_INLINE_CACHE=1, then --cache-from the pushed image), buildah
#              --layers --cache-to/--cache-from.
# c2-warm      W2 again on one warm kiln dir, nothing changed (kiln only).
# c3-deps      a dependency step of over 10 s of CPU, then the sources: built with the cache,
#              state wiped, one source file changed, built again. The bytes pushed by the timed
#              build show whether only the changed layers went up.
# c4-fifty     50 RUN steps on busybox, fully cached in the registry: kiln and kaniko.
#
# Every builder's state is on the benchmark's own journaled ext4 (bench/lib.sh), peers
# interleaved run by run. KANIKO_BIN=/path/to/executor adds kaniko (run in a throwaway root).
# Prints Markdown tables (bench/summarize.py); KILN_BENCH_RESULTS=FILE keeps the raw results,
# KILN_BENCH_LOGS=DIR every build's log.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=3
CASES=c1,c2,c3,c4
PEERS=kiln,buildkit,buildah
ROUNDS=80
OWN_FS=1
COPY_LAYERS=(--cache-copy-layers)
SUFFIX=
while [ $# -gt 0 ]; do
    case $1 in
        --no-own-fs) OWN_FS=0; shift ;;
        --runs) RUNS=$2; shift 2 ;;
        --workloads) CASES=$2; shift 2 ;;
        --peers) PEERS=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --no-copy-layers) COPY_LAYERS=(); SUFFIX=-nocopy; shift ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
source bench/lib.sh
bench_tools "${1:-}"

WORKLOADS=w2 # bench_setup makes the Debian base for it
bench_setup
bench_dockerd

RESULTS=${KILN_BENCH_RESULTS:-$WORK/results.tsv}
: > "$RESULTS"

# One build: PEER CASE PHASE(prime|timed) CONTEXT RUN [build args...]. A prime build fills the
# peer's cache and is not a figure; every build starts from a wiped local state except
# kiln-warm's. Timed builds are appended to RESULTS.
build() {
    local peer=$1 c=$2 phase=$3 dir=$4 run=$5; shift 5
    local args=(--build-arg "BUSYBOX=$REG/busybox:latest" --build-arg "DEBIAN=$REG/debian:latest" "$@")
    local dest=$REG/bench/$c:$peer-$run cache=$REG/cache/$c-$peer-$run
    local log=$WORK/log-$peer-$c-$run-$phase
    local before; before=$(registry_bytes)
    local out
    case $peer in
        kiln|kiln-warm)
            local kd=$WORK/kiln-dir-$c-$run
            [ "$peer" = kiln-warm ] && kd=$WORK/kiln-dir-warm-$c
            [ "$peer" = kiln ] && { rm -rf "$kd"; sync; }
            local cache_flags=(--cache=true --cache-repo "$cache" "${COPY_LAYERS[@]}")
            [ "$peer" = kiln-warm ] && cache_flags=()
            out=$(python3 bench/measure.py "$log" "$KILN" build -c "$dir" -d "$dest" \
                --insecure-registry "$REG" --kiln-dir "$kd" --log-format json \
                "${cache_flags[@]}" "${args[@]}")
            [ "$peer" = kiln ] && rm -rf "$kd" ;;
        kaniko)
            local root; root=$(kaniko_root "$dir"); sync
            out=$(kaniko_run "$log" "$root" --destination "$dest" --cache=true --cache-repo "$cache" "${COPY_LAYERS[@]}" "${args[@]}")
            rm -rf "$root" ;;
        buildkit)
            "${DOCKER[@]}" builder prune -af >/dev/null 2>&1 || true
            "${DOCKER[@]}" image prune -af >/dev/null 2>&1 || true
            sync
            local from=()
            [ "$phase" = timed ] && from=(--cache-from "$REG/bench/$c:inline-$run")
            local tag=$dest
            [ "$phase" = prime ] && tag=$REG/bench/$c:inline-$run
            out=$(DOCKER_BUILDKIT=1 python3 bench/measure.py "$log" bash -c "${DOCKER[*]} build -q --network host --build-arg BUILDKIT_INLINE_CACHE=1 ${from[*]} ${args[*]} -t $tag $dir && ${DOCKER[*]} push -q $tag") ;;
        buildah)
            local root=$WORK/buildah-$c-$run
            rm -rf "$root"; sync
            out=$(python3 bench/measure.py "$log" bash -c "buildah --root $root/r --runroot $root/rr --storage-driver overlay bud -q --layers --isolation chroot --tls-verify=false --cache-to $cache --cache-from $cache ${args[*]} -t $dest $dir && buildah --root $root/r --runroot $root/rr --storage-driver overlay push -q --tls-verify=false $dest")
            buildah --root "$root/r" --runroot "$root/rr" --storage-driver overlay rmi -a -f >/dev/null 2>&1 || true
            rm -rf "$root" ;;
    esac
    local after; after=$(registry_bytes)
    [ -n "${KILN_BENCH_LOGS:-}" ] && mkdir -p "$KILN_BENCH_LOGS" && cp "$log" "$KILN_BENCH_LOGS/"
    read -r wall rss rc <<<"$out"
    [ "$rc" = 0 ] || { echo "$peer $c $phase failed (exit $rc); log:" >&2; tail -n 20 "$log" >&2; }
    echo "$c $peer $phase ${wall}s pushed=$((after - before))B exit=$rc" >&2
    if [ "$phase" = timed ]; then
        local steps; steps=$(python3 bench/steps.py "$log")
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$c$SUFFIX" "$peer" "$wall" "$rss" "$((after - before))" "$rc" "$steps" >> "$RESULTS"
    fi
}

context() { # CASE -> a fresh context dir
    local dir=$WORK/ctx-$1-$RANDOM
    mkdir -p "$dir/src"
    case $1 in
        c1-rebuild|c2-warm) cp bench/workloads/w2-run-small/Dockerfile "$dir/"; echo "setting=1" > "$dir/app.conf" ;;
        c3-deps)
            cp bench/workloads/c3-deps/Dockerfile "$dir/"
            echo "dep-a 1.0" > "$dir/deps.txt"
            for i in $(seq 1 20); do echo "source file $i" > "$dir/src/f$i.txt"; done ;;
        c4-fifty)
            { echo "ARG BUSYBOX"; echo "FROM \$BUSYBOX"; echo "RUN mkdir /steps"
              for i in $(seq 2 50); do echo "RUN echo $i > /steps/$i"; done; } > "$dir/Dockerfile" ;;
    esac
    echo "$dir"
}

IFS=, read -r -a peers <<<"$PEERS"
for c in $(echo "$CASES" | tr , ' '); do
    case $c in
        c1) name=c1-rebuild; case_peers=("${peers[@]}"); extra=() ;;
        c2) name=c2-warm; case_peers=(kiln-warm); extra=() ;;
        c3) name=c3-deps; case_peers=("${peers[@]}"); extra=(--build-arg "ROUNDS=$ROUNDS") ;;
        c4) name=c4-fifty; case_peers=(kiln); [[ ",$PEERS," == *,kaniko,* ]] && case_peers+=(kaniko); extra=() ;;
        *) echo "unknown workload $c" >&2; exit 2 ;;
    esac
    if [ "$c" = c2 ]; then
        dir=$(context "$name")
        build kiln-warm "$name" prime "$dir" 0
        for run in $(seq 1 "$RUNS"); do build kiln-warm "$name" timed "$dir" "$run"; done
        continue
    fi
    for run in $(seq 1 "$RUNS"); do
        for peer in "${case_peers[@]}"; do
            dir=$(context "$name")
            build "$peer" "$name" prime "$dir" "$run" "${extra[@]}"
            # c3: a source-only change between the two builds.
            [ "$c" = c3 ] && echo "changed in run $run" > "$dir/src/f7.txt"
            build "$peer" "$name" timed "$dir" "$run" "${extra[@]}"
            rm -rf "$dir"
        done
    done
done

python3 bench/summarize.py "$RESULTS" "$(date -u +%Y-%m-%d)" "$(nproc) cores, $(uname -r)" "bash bench/cache.sh"

#!/usr/bin/env bash
# The one minimum Rust version: `rust-version` in the workspace's Cargo.toml. Checks that every
# crate inherits it, that the README and CONTRIBUTING.md state the same version, and that the
# toolchain building kiln is not older (cargo also refuses that, but this says why plainly).
set -euo pipefail
cd "$(dirname "$0")/.."

stated=$(sed -n 's/^rust-version = "\(.*\)"$/\1/p' Cargo.toml)
if [ -z "$stated" ]; then
    echo "error: Cargo.toml's [workspace.package] has no rust-version" >&2
    exit 1
fi
status=0
for manifest in crates/*/Cargo.toml bench/Cargo.toml; do
    if ! grep -qx 'rust-version.workspace = true' "$manifest"; then
        echo "error: $manifest does not inherit rust-version from the workspace" >&2
        status=1
    fi
done
for doc in README.md CONTRIBUTING.md scripts/test.sh; do
    # Every "Rust ... >= X" or "rust-version = "X"" mention names the same version.
    while read -r found; do
        if [ "$found" != "$stated" ]; then
            echo "error: $doc states Rust $found, Cargo.toml's rust-version is $stated" >&2
            status=1
        fi
    done < <(grep -oE '(Rust[^.]*>= ?|rust-version = ")[0-9]+\.[0-9]+' "$doc" | grep -oE '[0-9]+\.[0-9]+$')
    if ! grep -qE "(>= ?|rust-version = \")$stated" "$doc"; then
        echo "error: $doc does not state the minimum Rust version $stated" >&2
        status=1
    fi
done
have=$(rustc --version | sed -n 's/^rustc \([0-9]*\.[0-9]*\).*/\1/p')
if [ "$(printf '%s\n%s\n' "$stated" "$have" | sort -V | head -1)" != "$stated" ]; then
    echo "error: rustc $have is older than the minimum Rust version $stated" >&2
    status=1
fi
[ "$status" -eq 0 ] && echo "minimum Rust version $stated: Cargo.toml, crates, docs and rustc $have agree"
exit "$status"

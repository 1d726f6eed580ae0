#!/usr/bin/env bash
# Seeds the fuzz corpus with the golden Dockerfiles, then: cd fuzz && cargo +nightly fuzz run dockerfile corpus/dockerfile
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p corpus/dockerfile
for f in ../crates/kiln-dockerfile/tests/testfiles*/*/Dockerfile; do
    cp "$f" "corpus/dockerfile/$(basename "$(dirname "$f")")"
done

#!/usr/bin/env bash
# Seeds the fuzz corpora: the golden Dockerfiles (cd fuzz && cargo +nightly fuzz run dockerfile corpus/dockerfile),
# then registry replies and config.json files, and .dockerignore files with context paths.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p corpus/dockerfile
for f in ../crates/kiln-dockerfile/tests/testfiles*/*/Dockerfile; do
    cp "$f" "corpus/dockerfile/$(basename "$(dirname "$f")")"
done

# registry: the first byte picks the parser (0 manifest with the Content-Type byte after it,
# 1 config, 2 WWW-Authenticate, 3 token reply, 4 config.json, 5 digest); see the target.
mkdir -p corpus/registry
seed() { printf "$1" > "corpus/registry/$2"; cat >> "corpus/registry/$2"; }
d=sha256:6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d
seed '\0\1' oci-manifest <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"$d","size":2},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"$d","size":2,"annotations":{"a":"b"}},{"mediaType":"application/vnd.oci.image.layer.v1.tar+zstd","digest":"$d","size":2,"urls":["https://x/y"]}],"annotations":{"org.opencontainers.image.created":"2024-01-01T00:00:00Z"}}
JSON
seed '\0\3' docker-manifest <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":1469,"digest":"$d"},"layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":2,"digest":"$d"},{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","size":2,"digest":"$d","urls":["https://mcr.microsoft.com/x"]}]}
JSON
seed '\0\4' docker-list <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":528,"digest":"$d","platform":{"architecture":"amd64","os":"linux"}},{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":528,"digest":"$d","platform":{"architecture":"arm","os":"linux","variant":"v7"}},{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":528,"digest":"$d","platform":{"architecture":"arm64","os":"linux","variant":"v8"}}]}
JSON
seed '\0\0' oci-index <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"$d","size":1,"platform":{"architecture":"amd64","os":"linux"}},{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"$d","size":1,"annotations":{"vnd.docker.reference.type":"attestation-manifest"},"platform":{"architecture":"unknown","os":"unknown"}},{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"$d","size":1,"platform":{"architecture":"amd64","os":"windows","os.version":"10.0.17763.1"}}]}
JSON
seed '\1' config <<JSON
{"architecture":"amd64","os":"linux","created":"2024-01-01T00:00:00Z","author":"x","config":{"User":"1000:1000","Env":["PATH=/usr/bin","A=b"],"Entrypoint":["/bin/sh","-c"],"Cmd":null,"WorkingDir":"/app","Labels":{"a":"b"},"ExposedPorts":{"80/tcp":{}},"Volumes":{"/data":{}},"StopSignal":"SIGTERM","Healthcheck":{"Test":["CMD","true"],"Interval":30000000000,"Retries":3},"OnBuild":["RUN x"],"Shell":["/bin/bash","-c"],"ArgsEscaped":true},"rootfs":{"type":"layers","diff_ids":["$d"]},"history":[{"created":"2024-01-01T00:00:00Z","created_by":"/bin/sh -c #(nop) ADD file:x in /","empty_layer":true,"comment":"c"}],"variant":"v8","os.version":"1","unknown":{"k":[1,2.5,null,true]}}
JSON
seed '\2' bearer <<'TXT'
Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull"
TXT
seed '\2' basic <<'TXT'
Basic realm="Registry Realm"
TXT
seed '\2' bearer-escaped <<'TXT'
bearer realm = "https://r/to\"ken", service=r, error="insufficient_scope"
TXT
seed '\3' token <<'JSON'
{"token":"eyJhbGciOiJFUzI1NiJ9.e30.sig","access_token":"eyJhbGciOiJFUzI1NiJ9.e30.sig","expires_in":300,"issued_at":"2024-01-01T00:00:00Z"}
JSON
seed '\3' access-token <<'JSON'
{"token":"","access_token":"abc","refresh_token":"r"}
JSON
seed '\4' docker-config <<'JSON'
{"auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpwQHNzJHdvcmQ="},"r.example:5000":{"username":"u","password":"p@ss$word"},"ghcr.io":{"identitytoken":"id~token^x"},"quay.io":{"registrytoken":"reg%token@"}},"credHelpers":{"gcr.io":"gcloud"},"credsStore":"desktop"}
JSON
seed '\4' docker-config-bad <<'JSON'
{"auths":{"r":{"auth":"not base64 p@ss$"}},"auths2":"dXNlcjpwQHNzJHdvcmQ="}
JSON
seed '\5' digest <<<"$d"
seed '\5' digest512 <<<"sha512:$(printf %0128d 0)"

# dockerignore: an ignore file, then NUL, then context paths one a line.
mkdir -p corpus/dockerignore
for f in ../examples/go-app/.dockerignore ../tests/parity/cases/27-dockerignore/.dockerignore; do
    { cat "$f"; printf '\0src/a.go\nsrc/vendor/x\nnode_modules/a\n.git/HEAD\n'; } \
        > "corpus/dockerignore/$(echo "$f" | tr / _)"
done
printf '**/*.log\n!keep/**\n/a/**/b\nx/[a-c]*\n# comment\n  #not\n! y \n\0keep/a.log\nz/w.log\na/p/q/b\nx/ab\n' \
    > corpus/dockerignore/mixed

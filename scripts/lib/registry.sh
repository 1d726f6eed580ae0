# Shared by scripts/parity/run.sh and bench/run.sh: a Distribution registry on a free port of
# 127.0.0.1, plain HTTP, storage under $WORK/registry. Sets PORT and REG_PID (the caller kills it).
# shellcheck shell=bash

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

start_registry() {
    mkdir -p "$WORK/registry/storage"
    local attempt
    for attempt in 1 2 3 4 5; do
        PORT=$(free_port)
        cat >"$WORK/registry/config.yml" <<EOF
version: 0.1
log:
  level: warn
  formatter: text
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: "$WORK/registry/storage"
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: "127.0.0.1:$PORT"
  secret: "kiln-local-not-a-secret"
health:
  storagedriver:
    enabled: false
EOF
        docker-registry serve "$WORK/registry/config.yml" >"$WORK/registry/log" 2>&1 &
        REG_PID=$!
        local i
        for i in $(seq 1 100); do
            if ! kill -0 "$REG_PID" 2>/dev/null; then break; fi
            if python3 - "$PORT" <<'EOF' 2>/dev/null; then return 0; fi
import sys, urllib.request
urllib.request.urlopen("http://127.0.0.1:%s/v2/" % sys.argv[1], timeout=1).read()
EOF
            sleep 0.1
        done
        kill "$REG_PID" 2>/dev/null || true
        wait "$REG_PID" 2>/dev/null || true
        REG_PID=""
        grep -q "address already in use" "$WORK/registry/log" || break
    done
    echo "error: docker-registry did not start; its log:" >&2
    cat "$WORK/registry/log" >&2
    exit 2
}


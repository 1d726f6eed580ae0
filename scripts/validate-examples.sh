#!/usr/bin/env bash
# Checks the Kubernetes manifests of examples/ offline against the Kubernetes schemas
# (PyPI's kubernetes-validate ships them), and that the CI files parse as YAML.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${KILN_VALIDATE_VENV:-target/validate-venv}
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q kubernetes-validate==1.37.0
fi
"$venv/bin/kubernetes-validate" --strict examples/kubernetes/*.yaml
"$venv/bin/python" - <<'PY'
import yaml
for path in ["examples/gitlab/.gitlab-ci.yml"]:
    with open(path) as f:
        doc = yaml.safe_load(f)
    assert "build-image" in doc, path
    print(f"{path}: parses")
PY

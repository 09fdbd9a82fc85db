#!/usr/bin/env bash
# Prints one of chart-test's renders (default, full, external, dev) as a JSON array of the
# rendered objects, using the pinned Helm. The contract tests (crates/system-tests) read it.
#   scripts/k8s/render-json.sh full
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
HERE=scripts/k8s
source "$HERE/render-cases.sh"

wanted=${1:?usage: $0 CASE (default, full, external or dev)}
# Installer chatter must not mix with the JSON on stdout.
"$HERE/install-tools.sh" >&2

for c in "${CASES[@]}"; do
    read -r name values apis <<<"$c"
    if [[ $name == "$wanted" ]]; then
        render "$name" "$values" "$apis" | .venv/bin/python -c '
import json, sys, yaml
json.dump([doc for doc in yaml.safe_load_all(sys.stdin) if doc], sys.stdout)'
        exit
    fi
done
echo "render-json: unknown case $wanted" >&2
exit 2

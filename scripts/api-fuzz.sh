#!/usr/bin/env bash
# Fuzzes both APIs from their own OpenAPI documents with schemathesis, against the `orderflow`
# binary (`make run`'s one-process system on embedded backends, on a fresh data directory): a
# fixed seed and a bounded number of examples per operation, every phase (the documents'
# examples, coverage of each schema's boundaries, random fuzzing, stateful sequences). Checks:
# no 5xx, and every response conforms to the document (status code, content type, headers, body
# schema). Twice: with the APIs open, as `make run` serves them, then with API keys on (every
# request carries a valid key, and operations must refuse a request without one).
#
# Usage: scripts/api-fuzz.sh [ORDERFLOW_BINARY]   (default target/debug/orderflow)
# Settings (environment): API_FUZZ_EXAMPLES (100 per operation), API_FUZZ_SEED (20261130).
set -euo pipefail
cd "$(dirname "$0")/.."
BINARY=${1:-target/debug/orderflow}
EXAMPLES=${API_FUZZ_EXAMPLES:-100}
SEED=${API_FUZZ_SEED:-20261130}
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance

scripts/k8s/install-tools.sh >/dev/null
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT

# A key with every scope, for the run with API keys on.
KEY=api-fuzz-key
KEY_ENTRY="$(printf %s "$KEY" | sha256sum | cut -d' ' -f1):orders:write orders:read analytics:read"

start() { # API keys (off|on) -> the system's log file, once it is ready
  local dir="$work/$1" keys=
  mkdir -p "$dir"
  [ "$1" = on ] && keys=$KEY_ENTRY
  API_KEYS="$keys" ORDERFLOW_DATA_DIR="$dir/data" ORDERFLOW_ORDER_PORT=0 ORDERFLOW_ANALYTICS_PORT=0 \
    ORDERFLOW_NOTIFICATION_PORT=0 LOG_LEVEL=warn,orderflow=info "$BINARY" >"$dir/log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do
    grep -q '"event":"ready"' "$dir/log" && return
    kill -0 "${pids[-1]}" 2>/dev/null || { cat "$dir/log" >&2; echo "orderflow exited" >&2; exit 1; }
    sleep 0.2
  done
}
url_of() { # log service -> the URL it listens on
  .venv/bin/python -c '
import json, sys
for line in open(sys.argv[1]):
    try:
        entry = json.loads(line)
    except ValueError:
        continue
    if entry.get("event") == "listening" and entry.get("service") == sys.argv[2]:
        print(entry["url"])
        break
' "$1" "$2"
}

status=0
# Open (as make run), then with API keys on: every request carries a valid key, and
# ignored_auth checks that each operation refuses requests without one.
for mode in off on; do
  start "$mode"
  checks=$CHECKS auth=()
  [ "$mode" = on ] && { checks=$CHECKS,ignored_auth; auth=(--header "Authorization: Bearer $KEY"); }
  for service in order-service analytics-service; do
    url=$(url_of "$work/$mode/log" "$service")
    [ -n "$url" ] || { cat "$work/$mode/log" >&2; echo "no URL for $service" >&2; exit 1; }
    report="$work/$mode/$service.ndjson"
    echo "== $service, API keys $mode ($url/openapi.json): $EXAMPLES examples per operation, seed $SEED"
    .venv/bin/schemathesis run "$url/openapi.json" --checks "$checks" "${auth[@]}" --max-examples "$EXAMPLES" \
      --seed "$SEED" --workers 1 --no-color --report ndjson --report-ndjson-path "$report" || status=1
    # Generated cases per operation and phase, from the run's event report.
    .venv/bin/python -c '
import collections, json, sys
counts = collections.defaultdict(collections.Counter)
for line in open(sys.argv[1]):
    event = json.loads(line).get("ScenarioFinished")
    if event:
        counts[event["recorder"]["label"]][event["phase"]] += len(event["recorder"].get("cases") or {})
for label, phases in sorted(counts.items()):
    detail = ", ".join(f"{phase} {n}" for phase, n in phases.items() if n)
    print(f"  {label}: {sum(phases.values())} cases ({detail})")
' "$report"
  done
done
exit "$status"

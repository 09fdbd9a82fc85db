#!/usr/bin/env bash
# The chart's dashboards and alerts against a real Prometheus scraping the release binaries and
# RabbitMQ 4 (scripts/k8s/check_live_metrics.py). Renders the chart with monitoring on and the
# queue names this run uses, so that the alert expressions select this run's queues.
#
# Usage: scripts/k8s/live-metrics.sh [BINARIES_DIR]   (default target/release; `make live-metrics`)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/k8s/render-cases.sh
source scripts/k8s/render-cases.sh
BINARIES=${1:-target/release}
NAME="oflive$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
"$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" --kube-version "$KUBE_MIN" \
    -f "$CHART/ci/full-values.yaml" "${WITH_APIS[@]}" \
    --set "queues.analytics=$NAME.analytics.orders" \
    --set "queues.notifications=$NAME.notifications.orders" \
    --set "queues.orderProcessed=$NAME.orders.processed" >"$OUT/full.yaml"
.venv/bin/python scripts/k8s/check_live_metrics.py "$OUT/full.yaml" "$BINARIES" "$NAME"

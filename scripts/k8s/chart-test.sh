#!/usr/bin/env bash
# Offline validation of the Kubernetes packaging: Dockerfile, Helm chart (+ subcharts),
# rendered manifests, CRD objects, skaffold/kind configs. No cluster or network needed
# beyond the package registries the tool installer uses; the rendered MySQL init script runs
# against the local MariaDB (make servers).
#
#   scripts/k8s/chart-test.sh                  run every check
#   scripts/k8s/chart-test.sh --update-golden  re-render charts/orderflow/ci/golden/*.yaml
#
# Rendered output is kept in .tools/chart-test/ for inspection.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
HERE=scripts/k8s
# CHART, HELM, RELEASE, NAMESPACE, KUBE_MIN/KUBE_MAX, WITH_APIS, CASES and render().
source "$HERE/render-cases.sh"
OUT=.tools/chart-test
GOLDEN=$CHART/ci/golden
VENV=.venv/bin

"$HERE/install-tools.sh" || { echo "chart-test: tool installation failed"; exit 1; }

if [[ ${1:-} == --update-golden ]]; then
    mkdir -p "$GOLDEN"
    for c in "${CASES[@]}"; do
        read -r name values apis <<<"$c"
        render "$name" "$values" "$apis" >"$GOLDEN/$name.yaml" || exit 1
        echo "updated $GOLDEN/$name.yaml"
    done
    exit 0
fi

passed=0
failed=0
failures=()
step() { # name command... ; runs a check, output shown only on failure
    local name=$1 start log rc secs
    shift
    start=${EPOCHREALTIME/[.,]/}
    log=$(mktemp)
    "$@" >"$log" 2>&1
    rc=$?
    secs=$(((${EPOCHREALTIME/[.,]/} - start) / 100000))
    secs="$((secs / 10)).$((secs % 10))"
    if [[ $rc -eq 0 ]]; then
        passed=$((passed + 1))
        printf 'ok    %-66s %5ss  %s\n' "$name" "$secs" "$(grep -v '^\s*$' "$log" | tail -n 1 | cut -c1-70)"
    else
        failed=$((failed + 1))
        failures+=("$name")
        printf 'FAIL  %-66s %5ss\n' "$name" "$secs"
        sed 's/^/      /' "$log" | tail -n 60
    fi
    rm -f "$log"
}

expect_failure() { # pattern command... : the command must fail and print pattern
    local pattern=$1 output
    shift
    if output=$("$@" 2>&1); then
        echo "expected a failure, but it succeeded"
        return 1
    fi
    grep -q -- "$pattern" <<<"$output" || { echo "$output"; echo "missing: $pattern"; return 1; }
    echo "refused as expected: $pattern"
}

render_to() { # case values apis -> $OUT/<case>.yaml
    render "$1" "$2" "$3" >"$OUT/$1.yaml" && echo "$(grep -c '^kind:' "$OUT/$1.yaml") objects"
}

validate_crds() {
    cp "$HERE/crd-validate/validate.mjs" .tools/crd-validate/ && node .tools/crd-validate/validate.mjs "$@"
}

# kubernetes-validate only warns about kinds it has no schema for: make sure every rendered
# kind is either a core kind it validates or a custom resource validate.mjs covers.
all_kinds_covered() {
    local known='ConfigMap|Deployment|HorizontalPodAutoscaler|NetworkPolicy|Pod|PodDisruptionBudget|Secret|Service'
    known+='|ServiceAccount|StatefulSet|PrometheusRule|ServiceMonitor|ScaledObject|TriggerAuthentication'
    local other
    other=$(grep -h '^kind:' "$@" | sort -u | grep -v -x -E "kind: ($known)")
    [[ -z $other ]] || { echo "not validated: $other"; return 1; }
    echo "$(grep -h '^kind:' "$@" | sort -u | wc -l) kinds covered"
}

kube_validate() { # version files... ; core kinds strictly, custom resources left to validate.mjs
    local version=$1 log
    shift
    log=$("$VENV/kubernetes-validate" --strict -k "$version" "$@" 2>&1) || { echo "$log" | grep -v '^INFO'; return 1; }
    echo "$(grep -c ' passed for resource ' <<<"$log") core objects valid, $(grep -c "Couldn't find schema" <<<"$log") custom resources skipped"
}

rm -rf "$OUT" && mkdir -p "$OUT"

# --- sources -------------------------------------------------------------------------------
step "yamllint (values, ci, skaffold, kind, k8s add-ons)" \
    "$VENV/yamllint" -c "$HERE/yamllint.yaml" skaffold.yaml kind-config.yaml k8s \
    "$CHART"/values*.yaml "$CHART"/ci/*.yaml "$CHART"/Chart.yaml "$CHART"/charts/*/Chart.yaml \
    "$CHART"/charts/*/values.yaml "$HERE/checkov.yaml"
step "hadolint Dockerfile (failure threshold: warning)" \
    "$VENV/hadolint" --failure-threshold warning Dockerfile
step "skaffold.yaml against the skaffold/v4beta14 schema" \
    "$VENV/check-jsonschema" --schemafile "$HERE/schemas/skaffold-v4beta14.json" skaffold.yaml
step "kind-config.yaml against the kind v1alpha4 schema" \
    "$VENV/check-jsonschema" --schemafile "$HERE/schemas/kind-v1alpha4.schema.json" kind-config.yaml
step "the APIs' OpenAPI documents (docs/openapi/) are valid OpenAPI 3.1" \
    "$VENV/openapi-spec-validator" docs/openapi/order-service.json docs/openapi/analytics-service.json
step "grafana dashboards: ids, grid, variables, datasource variable everywhere" \
    "$VENV/python" "$HERE/check_dashboards.py" "$CHART"/dashboards/*.json

# --- chart -----------------------------------------------------------------------------------
for c in "${CASES[@]}"; do
    read -r name values apis <<<"$c"
    step "helm lint --strict ($name)" "$HELM" lint --strict "$CHART" -f "$values"
done
bare_install() { # a bare `helm install`: no values at all; passwords generated
    "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" >"$OUT/bare-1.yaml" &&
        "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" >"$OUT/bare-2.yaml" &&
        "$VENV/python" "$HERE/check_generated_passwords.py" "$OUT/bare-1.yaml" "$OUT/bare-2.yaml"
}
step "no values at all (a bare helm install): passwords generated" bare_install
derived_database() { # what MySQL creates follows the service's values, with no second list to edit
    "$HELM" template "$RELEASE" "$CHART" --set analyticsService.database.name=reports_db \
        --set analyticsService.database.user=reporter >"$OUT/derived.yaml" &&
        grep -q "CREATE DATABASE IF NOT EXISTS reports_db " "$OUT/derived.yaml" &&
        grep -q "CREATE USER IF NOT EXISTS 'reporter'@'%'" "$OUT/derived.yaml" &&
        ! grep -q "analytics_db" "$OUT/derived.yaml"
}
step "a password shorter than 8 characters: refused by the schema" \
    expect_failure "/auth/password'" "$HELM" template "$RELEASE" "$CHART" --set rabbitmq.auth.password=short
step "a service database of its own name: the in-chart MySQL creates that one" \
    derived_database
step "two services sharing a user under two password keys: refused" \
    expect_failure "user \"orderuser\" is also used with passwordKey" \
    "$HELM" template "$RELEASE" "$CHART" --set analyticsService.database.user=orderuser
step "a service password shorter than 8 characters: refused by the schema" \
    expect_failure "/orderService/database/password'" "$HELM" template "$RELEASE" "$CHART" --set orderService.database.password=short
step "external MySQL without host: refused by the schema" \
    expect_failure "/externalMysql/host': minLength" "$HELM" template "$RELEASE" "$CHART" -f "$CHART/ci/default-values.yaml" \
    --set mysql.enabled=false
step "external dedupe Redis without host: refused by the schema" \
    expect_failure "/externalDedupeRedis/host': minLength" "$HELM" template "$RELEASE" "$CHART" -f "$CHART/ci/default-values.yaml" \
    --set dedupeRedis.enabled=false
step "evicting dedupe Redis: refused by the schema" \
    expect_failure "/dedupeRedis/maxmemoryPolicy'" "$HELM" template "$RELEASE" "$CHART" -f "$CHART/ci/default-values.yaml" \
    --set dedupeRedis.maxmemoryPolicy=allkeys-lru
step "webhook channel without URL: refused by the schema" \
    expect_failure "/notificationWorker/webhook/url': minLength" "$HELM" template "$RELEASE" "$CHART" -f "$CHART/ci/default-values.yaml" \
    --set 'notificationWorker.channels={log,webhook}'

checksums_follow_credentials() { # a changed password rolls every service's pods
    local before after
    before=$("$HELM" template "$RELEASE" "$CHART" -f "$CHART/ci/default-values.yaml" | grep 'checksum/settings:')
    after=$("$HELM" template "$RELEASE" "$CHART" -f "$CHART/ci/default-values.yaml" \
        --set rabbitmq.auth.password=another-password | grep 'checksum/settings:')
    [[ $(wc -l <<<"$before") -eq 3 ]] || { echo "expected 3 services with checksum/settings:"; echo "$before"; return 1; }
    if [[ -n $(comm -12 <(sort <<<"$before") <(sort <<<"$after")) ]]; then
        echo "a service's checksum/settings did not change with the RabbitMQ password"
        return 1
    fi
    echo "3 services roll on a credentials change"
}
step "pods roll when their credentials change (checksum annotations)" checksums_follow_credentials

rendered=()
for c in "${CASES[@]}"; do
    read -r name values apis <<<"$c"
    step "helm template $name ($(basename "$values"), $apis)" render_to "$name" "$values" "$apis"
    rendered+=("$OUT/$name.yaml")
done

# --- rendered output -------------------------------------------------------------------------
for v in "$KUBE_MIN" "$KUBE_MAX"; do
    step "kubernetes-validate --strict, Kubernetes $v" kube_validate "$v" "${rendered[@]}"
done
step "custom resources against their CRD schemas (KEDA, prometheus-operator)" validate_crds "${rendered[@]}"
step "every rendered kind is covered by one of the two validators" all_kinds_covered "${rendered[@]}"
step "policy: pods, service contract, autoscalers, MySQL init SQL" \
    "$VENV/python" "$HERE/check_rendered.py" default="$OUT/default.yaml" full="$OUT/full.yaml" \
    external="$OUT/external.yaml" dev="$OUT/dev.yaml" production="$OUT/production.yaml"
step "MySQL init script on MariaDB: hostile passwords, each user reaches only its database" \
    "$VENV/python" "$HERE/check_mysql_init.py" "$HELM" "$CHART"
step "checkov on rendered manifests (skips justified in checkov.yaml)" \
    "$VENV/checkov" --config-file "$HERE/checkov.yaml" $(printf -- '-f %s ' "${rendered[@]}")
step "the production example's RabbitmqCluster against the Cluster Operator's CRD schema, strictly" \
    "$VENV/python" "$HERE/check_custom_resource.py" "$HERE/schemas/rabbitmqcluster-v1beta1.json" \
    docs/examples/production/rabbitmqcluster.yaml
step "PromQL parses; metrics used == charts/orderflow/metrics-used.txt" \
    "$VENV/python" "$HERE/check_metrics.py" "$OUT/full.yaml"
step "alert rules: promtool check rules, and a firing and a quiet test per alert" \
    "$VENV/python" "$HERE/check_alerts.py" "$OUT/full.yaml"
step "contract: skaffold artifacts = Dockerfile targets = chart images" \
    "$VENV/python" "$HERE/check_contract.py" "$OUT/dev.yaml"
for c in "${CASES[@]}"; do
    read -r name values apis <<<"$c"
    step "golden file $GOLDEN/$name.yaml (make chart-golden-update)" \
        diff -u "$GOLDEN/$name.yaml" "$OUT/$name.yaml"
done

echo
if ((failed)); then
    printf 'failed: %s\n' "${failures[@]}"
fi
echo "chart-test: $passed passed, $failed failed"
((failed == 0))

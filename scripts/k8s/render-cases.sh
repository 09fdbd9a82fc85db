# Render settings shared by chart-test.sh and render-json.sh (sourced, not run). Expects ROOT (the
# repository root, also the working directory) to be set.

CHART=charts/orderflow
HELM="$ROOT/.tools/helm/helm"
# Keep Helm's cache/config inside .tools (nothing written to the user's home).
export HELM_CACHE_HOME="$ROOT/.tools/helm/cache" HELM_CONFIG_HOME="$ROOT/.tools/helm/config" \
    HELM_DATA_HOME="$ROOT/.tools/helm/data"

RELEASE=orderflow
NAMESPACE=orderflow
# Oldest and newest Kubernetes versions the manifests are validated against.
KUBE_MIN=1.30.0
KUBE_MAX=1.37.0
WITH_APIS=(--api-versions keda.sh/v1alpha1/ScaledObject --api-versions keda.sh/v1alpha1/TriggerAuthentication
    --api-versions monitoring.coreos.com/v1/ServiceMonitor --api-versions monitoring.coreos.com/v1/PrometheusRule)

# Render cases: name, values file, whether the KEDA and prometheus-operator APIs exist.
CASES=(
    "default  $CHART/ci/default-values.yaml   no-apis"
    "full     $CHART/ci/full-values.yaml      apis"
    "external $CHART/ci/external-values.yaml  no-apis"
    "dev      $CHART/values-dev.yaml          apis"
    "production docs/examples/production/values.yaml apis"
)

render() { # case values apis -> stdout
    local apis=()
    [[ $3 == apis ]] && apis=("${WITH_APIS[@]}")
    "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" --kube-version "$KUBE_MIN" -f "$2" "${apis[@]}"
}

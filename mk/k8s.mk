# Kubernetes packaging: local kind cluster, skaffold dev loop, cluster add-ons, offline chart
# validation. Included by the main Makefile. See docs/kubernetes.md.
#
# The cluster targets need docker, kind, kubectl, helm (3.x or 4.x) and skaffold (>= 2.17) on
# PATH. chart-test needs none of them: it installs its pinned tools into .tools/ and .venv/.

K8S_CLUSTER   ?= orderflow
K8S_CONTEXT   ?= kind-$(K8S_CLUSTER)
K8S_NAMESPACE ?= orderflow
K8S_RELEASE   ?= orderflow
HELM          ?= helm
KUBECTL       ?= kubectl
SKAFFOLD      ?= skaffold

# Add-on chart versions (make k8s-addons).
KUBE_PROMETHEUS_STACK_VERSION ?= 88.5.3
KEDA_VERSION                  ?= 2.17.2
METRICS_SERVER_VERSION        ?= 3.12.2

# The images the chart deploys, tagged as the chart expects them by default (its appVersion).
SERVICE_IMAGES := order-service analytics-service notification-worker
CHART_APP_VERSION := $(shell sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$$/\1/p' charts/orderflow/Chart.yaml)

.PHONY: kind-load kind-up kind-down k8s-addons dev deploy port-forward logs notification k8s-tools chart-test chart-golden-update release-check live-metrics k8s-binary-check

kind-up: ## Create the local kind cluster from kind-config.yaml (idempotent)
	@command -v kind >/dev/null || { echo "kind not found: install it from https://kind.sigs.k8s.io"; exit 1; }
	@if kind get clusters 2>/dev/null | grep -qx '$(K8S_CLUSTER)'; then \
		echo "kind cluster $(K8S_CLUSTER) already exists"; \
	else \
		kind create cluster --config kind-config.yaml --name $(K8S_CLUSTER) --wait 120s; \
	fi

kind-load: ## Build the three service images (tag: the chart's appVersion) and load them into the kind cluster
	@command -v kind >/dev/null || { echo "kind not found: install it from https://kind.sigs.k8s.io"; exit 1; }
	@for image in $(SERVICE_IMAGES); do \
		echo "building $$image:$(CHART_APP_VERSION)"; \
		docker build --target $$image -t $$image:$(CHART_APP_VERSION) . || exit 1; \
		kind load docker-image $$image:$(CHART_APP_VERSION) --name $(K8S_CLUSTER) || exit 1; \
	done

kind-down: ## Delete the local kind cluster
	kind delete cluster --name $(K8S_CLUSTER)

k8s-addons: ## Install monitoring (kube-prometheus-stack), KEDA and metrics-server into the cluster
	$(HELM) repo add prometheus-community https://prometheus-community.github.io/helm-charts --force-update
	$(HELM) repo add kedacore https://kedacore.github.io/charts --force-update
	$(HELM) repo add metrics-server https://kubernetes-sigs.github.io/metrics-server/ --force-update
	$(HELM) upgrade --install kube-prometheus-stack prometheus-community/kube-prometheus-stack \
		--kube-context $(K8S_CONTEXT) --namespace monitoring --create-namespace \
		--version $(KUBE_PROMETHEUS_STACK_VERSION) -f k8s/kube-prometheus-stack-values.yaml --wait --timeout 10m
	$(HELM) upgrade --install keda kedacore/keda \
		--kube-context $(K8S_CONTEXT) --namespace keda --create-namespace \
		--version $(KEDA_VERSION) -f k8s/keda-values.yaml --wait --timeout 5m
	$(HELM) upgrade --install metrics-server metrics-server/metrics-server \
		--kube-context $(K8S_CONTEXT) --namespace kube-system \
		--version $(METRICS_SERVER_VERSION) -f k8s/metrics-server-values.yaml --wait --timeout 5m

dev: ## skaffold dev: build images, load them into kind, deploy the chart, forward ports, watch
	$(SKAFFOLD) dev --kube-context $(K8S_CONTEXT) --port-forward

deploy: ## Build the images and deploy the chart once (skaffold run)
	$(SKAFFOLD) run --kube-context $(K8S_CONTEXT)

port-forward: ## Forward order-service :8080, analytics :8081, RabbitMQ UI :15672, Grafana :3000 (Ctrl-C stops)
	@trap 'kill 0' INT TERM EXIT; \
	$(KUBECTL) --context $(K8S_CONTEXT) -n $(K8S_NAMESPACE) port-forward svc/$(K8S_RELEASE)-order-service 8080:8080 & \
	$(KUBECTL) --context $(K8S_CONTEXT) -n $(K8S_NAMESPACE) port-forward svc/$(K8S_RELEASE)-analytics-service 8081:8081 & \
	$(KUBECTL) --context $(K8S_CONTEXT) -n $(K8S_NAMESPACE) port-forward svc/$(K8S_RELEASE)-rabbitmq 15672:15672 & \
	$(KUBECTL) --context $(K8S_CONTEXT) -n monitoring port-forward svc/kube-prometheus-stack-grafana 3000:80 & \
	wait

logs: ## Follow the logs of the three services in the cluster (make run prints them to its terminal)
	$(KUBECTL) --context $(K8S_CONTEXT) -n $(K8S_NAMESPACE) logs -f --prefix --max-log-requests 20 \
		-l 'app.kubernetes.io/instance=$(K8S_RELEASE),app.kubernetes.io/component in (order-service,analytics-service,notification-worker)'

notification: ## Follow the notification worker's logs in the cluster (one line per notification)
	$(KUBECTL) --context $(K8S_CONTEXT) -n $(K8S_NAMESPACE) logs -f --prefix --max-log-requests 20 \
		-l 'app.kubernetes.io/instance=$(K8S_RELEASE),app.kubernetes.io/component=notification-worker'

k8s-tools: ## Install the pinned validation tools (helm, kubernetes-validate, checkov, ...) into .tools/ and .venv/
	scripts/k8s/install-tools.sh

chart-test: servers ## Offline validation of Dockerfile, chart, rendered manifests, skaffold and kind configs (and the MySQL init script on the local MariaDB)
	scripts/k8s/chart-test.sh

chart-golden-update: ## Re-render the chart's golden files (charts/orderflow/ci/golden) after a deliberate change
	scripts/k8s/chart-test.sh --update-golden

release-check: ## Build every workspace binary in release mode and check it runs on distroless/cc-debian12
	CARGO="$(CARGO)" scripts/k8s/release-check.sh

live-metrics: servers ## A real Prometheus scrapes the release binaries and RabbitMQ 4 with the ServiceMonitors' labels; every dashboard query must return data, every alert expression evaluate (needs `make release-check` or a release build first)
	scripts/k8s/install-tools.sh
	scripts/k8s/live-metrics.sh target/release

k8s-binary-check: ## Check the release binaries already built run on distroless/cc-debian12
	CARGO="$(CARGO)" scripts/k8s/release-check.sh --no-build

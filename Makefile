# orderflow — common tasks. `make help` lists them.

SHELL := /bin/bash
CARGO ?= cargo
ORDER_URL ?= http://localhost:8080
ANALYTICS_URL ?= http://localhost:8081

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show the available targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

.PHONY: run
run: ## Run the whole system in one process on embedded backends (SQLite in ./data, no servers needed)
	$(CARGO) run --release -p orderflow

.PHONY: servers
servers: ## Start the local MariaDB, Redis and RabbitMQ if they are not running, and the RabbitMQ 4 node on :5673 (built once in /var/cache/orderflow)
	scripts/ensure-servers.sh

.PHONY: test
test: servers ## Run every test: the Rust suites against the real servers (RabbitMQ 4; the messaging suite also on RabbitMQ 3), the offline chart checks, the release-binary linkage check, the dashboards and alerts on a live Prometheus, replicas on a three-node broker
	$(CARGO) nextest run --workspace --all-targets --no-fail-fast
	$(MAKE) api-fuzz
	@echo "messaging suite against RabbitMQ 3 (:5672)"
	TEST_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f $(CARGO) nextest run -p messaging --test it --no-fail-fast
	$(MAKE) chart-test
	$(MAKE) release-check
	$(MAKE) live-metrics
	$(MAKE) scale-out-test

.PHONY: lint
lint: ## cargo fmt --check, clippy with warnings as errors, and the TLS dependency policy
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	scripts/check-dependencies.sh

.PHONY: fmt
fmt: ## Format the code
	$(CARGO) fmt --all

.PHONY: build
build: ## Build release binaries
	$(CARGO) build --release --workspace --bins

.PHONY: analytics
analytics: ## Show the analytics summary
	curl -sS $(ANALYTICS_URL)/analytics/summary; echo

.PHONY: bench
bench: servers ## Whole-system CPU per order and per cached read, rates and times, on the local servers and embedded (BENCH_SECONDS); prints figures
	$(CARGO) build --release --workspace --bins
	$${CARGO_TARGET_DIR:-target}/release/bench run

.PHONY: soak
soak: servers ## Release binaries at ~70% of measured capacity for 10 minutes (SOAK_MINUTES, SOAK_RATE, SOAK_LOAD, SOAK_RETENTION_MINUTES); a line a minute
	$(CARGO) build --release --workspace --bins
	$${CARGO_TARGET_DIR:-target}/release/bench soak

.PHONY: api-fuzz
api-fuzz: ## Fuzz both APIs from their OpenAPI documents (schemathesis, fixed seed, API_FUZZ_EXAMPLES per operation) on the embedded system: no 5xx, every response as documented
	$(CARGO) build -p orderflow
	scripts/api-fuzz.sh $${CARGO_TARGET_DIR:-target}/debug/orderflow

.PHONY: openapi
openapi: ## Regenerate docs/openapi/*.json, the APIs' committed OpenAPI documents, from the code (review the diff: it is the API contract)
	OPENAPI_WRITE=1 $(CARGO) nextest run -p order-service -p analytics-service --lib the_committed_openapi_document

.PHONY: scale-out-test
scale-out-test: servers ## Two release replicas of each service on a fresh three-node RabbitMQ 4 cluster (AMQP :5681-5683) through node stops and SIGKILLs; must end exact; prints the failover times
	$(CARGO) build --release --workspace --bins
	scripts/rabbitmq4.sh cluster-start
	status=0; TEST_AMQP_URL=amqp://guest:guest@127.0.0.1:5681/%2f $(CARGO) nextest run --release -p system-tests \
		--test it -E 'test(/^scale_out::/)' --run-ignored only --no-capture || status=$$?; scripts/rabbitmq4.sh cluster-stop; exit $$status

.PHONY: outage-drill
outage-drill: servers ## Release binaries under steady load while analytics' database and Redis are away for 5 minutes (DRILL_OUTAGE_SECONDS, DRILL_RATE); prints what it saw
	$(CARGO) build --release --workspace --bins
	$(CARGO) nextest run --release -p system-tests --test it -E 'test(/^drill::/)' --run-ignored only --no-capture

.PHONY: order
order: ## Create a test order
	curl -sS -X POST $(ORDER_URL)/orders -H 'Content-Type: application/json' \
	  -d '{"customer_id": "customer-123", "product_id": "product-456", "quantity": 2, "total_amount": 99.99}'; echo

-include mk/*.mk

//! The Helm chart's contract with the services, checked without a cluster:
//! (a) each rendered service Deployment, run as the real binary with the environment the chart
//!     gives it, listens on the declared port and answers its probes, its Service's target port
//!     and its ServiceMonitor's scrape, and stops cleanly on SIGTERM within the pod's grace period;
//!     `helm test`'s smoke script passes against them;
//! (b) every metric name the dashboards and alert rules use is emitted by the running services,
//!     or by RabbitMQ's Prometheus plugin for `rabbitmq_*`.
//!
//! The chart is rendered with the pinned Helm by `scripts/k8s/render-json.sh` (the same cases as
//! `make chart-test`); see `system_tests::chart::run_env` for what a run changes in the chart's
//! environment, and why.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use serde_json::{Value, json};
use system_tests::{
    SERVICES,
    chart::{
        ChartSystem, EnvValue, Rendered, ServiceDeployment, flat_env, settings_defaults, wait_for_200,
        workspace_root,
    },
    exposition::Exposition,
    order,
};
use test_support::{FaultProxy, TestPublisher, eventually, host_port};

const QUIET: Duration = Duration::from_secs(60);

/// What RabbitMQ's Prometheus plugin (rabbitmq_prometheus) answers on `/metrics/detailed` for
/// each `family` parameter, as its metrics-detailed.md lists them. The dashboards may use a
/// `rabbitmq_*` name only when the chart's RabbitMQ ServiceMonitor asks for its family.
const RABBITMQ_DETAILED_FAMILIES: &[(&str, &[&str])] = &[
    (
        "queue_coarse_metrics",
        &[
            "rabbitmq_detailed_queue_messages_ready",
            "rabbitmq_detailed_queue_messages_unacked",
            "rabbitmq_detailed_queue_messages",
            "rabbitmq_detailed_queue_process_reductions_total",
        ],
    ),
    ("queue_consumer_count", &["rabbitmq_detailed_queue_consumers"]),
];

#[test]
fn the_chart_gives_each_service_only_configuration_it_understands() {
    let mut problems = Vec::new();
    for case in ["default", "full", "external", "dev", "production"] {
        let rendered = Rendered::render(case);
        // Every Deployment of the chart itself (the datastore subcharts label theirs with their
        // own name) is a service the contract tests run.
        for deployment in rendered.of_kind("Deployment") {
            let labels = &deployment["spec"]["template"]["metadata"]["labels"];
            let component = labels["app.kubernetes.io/component"].as_str().unwrap_or_default();
            if labels["app.kubernetes.io/name"] == "orderflow" && !SERVICES.contains(&component) {
                problems.push(format!(
                    "{case}: Deployment {} runs no known service",
                    deployment["metadata"]["name"]
                ));
            }
        }
        for deployment in rendered.service_deployments() {
            let settings = settings_defaults(deployment.binary);
            let flat = flat_env(deployment.binary);
            for (name, _) in deployment.env() {
                if let Err(why) = understood(&name, &settings, &flat) {
                    problems.push(format!("{case}: {}: {name}: {why}", deployment.binary));
                }
            }
        }
    }
    assert!(problems.is_empty(), "configuration the services do not understand:\n{}", problems.join("\n"));
}

/// A variable is understood when it sets a setting this service has: through a flat name
/// (`platform::config::FLAT_ENV` or the service's own) or `ORDERFLOW_<SECTION>__<KEY>`. The chart
/// sets no Kubernetes-only variable; one would need its own documented exception here.
fn understood(name: &str, settings: &Value, flat: &[(&str, &str)]) -> Result<(), String> {
    if name == platform::config::CONFIG_FILE_ENV {
        return Ok(());
    }
    let key = match flat.iter().find(|(flat_name, _)| *flat_name == name) {
        Some((_, key)) => (*key).to_owned(),
        None => match name.strip_prefix(platform::config::ENV_PREFIX) {
            Some(rest) => rest.split("__").map(str::to_ascii_lowercase).collect::<Vec<_>>().join("."),
            None => return Err("neither one of the service's flat names nor ORDERFLOW_*".into()),
        },
    };
    let mut node = settings;
    for part in key.split('.') {
        node = node.get(part).ok_or_else(|| format!("sets {key}, a setting this service does not have"))?;
    }
    Ok(())
}

#[test]
fn secret_references_resolve_to_the_rendered_secrets() {
    // The in-chart datastores render their Secrets: every reference resolves, to the passwords
    // ci/default-values.yaml gives (base64 in the Secrets' data).
    let rendered = Rendered::render("default");
    for deployment in rendered.service_deployments() {
        let env: BTreeMap<String, EnvValue> = deployment.env().into_iter().collect();
        let known = |name: &str| match env.get(name) {
            Some(EnvValue::Known(value)) => value.clone(),
            other => panic!("{}: {name} = {other:?}", deployment.binary),
        };
        assert_eq!(known("RABBITMQ_PASSWORD"), "ci-rabbitmq-password", "{}", deployment.binary);
        assert_eq!(known("REDIS_PASSWORD"), "ci-redis-password", "{}", deployment.binary);
        match deployment.binary {
            "order-service" => assert_eq!(known("DB_PASSWORD"), "ci-order-password"),
            "analytics-service" => assert_eq!(known("DB_PASSWORD"), "ci-analytics-password"),
            _ => assert!(!env.contains_key("DB_PASSWORD"), "the worker has no database"),
        }
    }
}

#[tokio::test]
async fn full_values_deployments_serve_what_the_chart_declares() {
    deployments_serve_what_the_chart_declares("full").await;
}

/// values-dev.yaml: the file `make dev` installs.
#[tokio::test]
async fn dev_values_deployments_serve_what_the_chart_declares() {
    deployments_serve_what_the_chart_declares("dev").await;
}

#[tokio::test]
async fn external_datastore_deployments_serve_what_the_chart_declares() {
    deployments_serve_what_the_chart_declares("external").await;
}

/// docs/examples/production/values.yaml: external datastores and a clustered broker.
#[tokio::test]
async fn production_example_deployments_serve_what_the_chart_declares() {
    deployments_serve_what_the_chart_declares("production").await;
}

async fn deployments_serve_what_the_chart_declares(case: &str) {
    let rendered = Rendered::render(case);
    let mut system = ChartSystem::start(&rendered).await;
    let monitoring = rendered.of_kind("ServiceMonitor").next().is_some();
    for deployment in rendered.service_deployments() {
        // Started as the pod's securityContext runs it: its user and group, a read-only root.
        let sandbox = deployment.sandbox();
        assert!(sandbox.read_only_root && sandbox.writable == ["/tmp"], "{case}: {sandbox:?}");
        assert_eq!(
            system.process(deployment.binary).seen_running_as(),
            (sandbox.user, sandbox.group, true),
            "{case}: {} runs as its pod would",
            deployment.binary
        );
        let port = check_port(&system, &deployment);
        check_probes(&system, &deployment, port).await;
        check_api_documents(&system, &deployment, port).await;
        check_api_keys(&deployment, &system, port).await;
        check_service(&deployment, port);
        let monitors = deployment.service_monitors();
        assert_eq!(
            monitors.len(),
            usize::from(monitoring),
            "{case}: ServiceMonitors of {}",
            deployment.binary
        );
        for (monitor, service) in monitors {
            for endpoint in monitor["spec"]["endpoints"].as_array().expect("endpoints") {
                scrape(&system, &deployment, service, endpoint, port).await;
            }
        }
    }
    run_smoke_test(&rendered, &system).await;
    for deployment in rendered.service_deployments() {
        check_termination(&mut system, &deployment).await;
    }
    system.cleanup().await;
}

/// `helm test`'s smoke test, its script as the chart renders it, run here with `sh` and `curl`
/// against the running services (their Service URLs pointed at the local processes, a key from a
/// Secret the chart does not render replaced by the run's key).
async fn run_smoke_test(rendered: &Rendered, system: &ChartSystem) {
    let case = &rendered.case;
    let pod = rendered
        .of_kind("Pod")
        .find(|pod| pod["metadata"]["annotations"]["helm.sh/hook"] == "test")
        .unwrap_or_else(|| panic!("{case}: no helm test Pod"));
    let container = &pod["spec"]["containers"][0];
    assert_eq!(container["command"], json!(["sh", "-ec"]), "{case}: the smoke test is a shell script");
    let mut script = container["args"][0].as_str().expect("the smoke test's script").to_owned();
    for deployment in rendered.service_deployments() {
        for service in deployment.services() {
            let name = service["metadata"]["name"].as_str().expect("Service name");
            let port = &service["spec"]["ports"][0]["port"];
            let local = system.url(deployment.binary, system.process(deployment.binary).port, "");
            script = script.replace(&format!("http://{name}:{port}"), &local);
        }
    }
    let mut command = tokio::process::Command::new("sh");
    command.arg("-ec").arg(&script).kill_on_drop(true);
    for var in container["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().expect("env name");
        assert_eq!(name, "API_KEY", "{case}: the smoke test's environment");
        let reference = &var["valueFrom"]["secretKeyRef"];
        let from_chart = rendered
            .lookup("Secret", reference["name"].as_str().unwrap(), reference["key"].as_str().unwrap())
            .unwrap();
        command.env(name, from_chart.unwrap_or_else(|| system_tests::chart::TEST_API_KEY.to_owned()));
    }
    let output = tokio::time::timeout(QUIET, command.output()).await.expect("smoke test in time").unwrap();
    assert!(
        output.status.success(),
        "{case}: helm test's script failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The port the process listens on is the container's declared port and its `SERVICE_PORT`.
fn check_port(system: &ChartSystem, deployment: &ServiceDeployment<'_>) -> u16 {
    let binary = deployment.binary;
    let listening = system.process(binary).port;
    let declared: Vec<u64> = deployment.container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["containerPort"].as_u64())
        .collect();
    assert_eq!(
        declared,
        [u64::from(listening)],
        "{binary} listens on {listening}; its container declares {declared:?}"
    );
    assert_eq!(
        system.env(binary).get("SERVICE_PORT").map(String::as_str),
        Some(listening.to_string().as_str()),
        "{binary}: SERVICE_PORT"
    );
    listening
}

/// Startup, liveness and readiness probes, in the kubelet's order, on their declared paths and
/// ports; readiness answers 200 once the dependencies are up.
async fn check_probes(system: &ChartSystem, deployment: &ServiceDeployment<'_>, port: u16) {
    let binary = deployment.binary;
    for kind in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let get = &deployment.container[kind]["httpGet"];
        assert!(get.is_object(), "{binary}: {kind} is an httpGet probe");
        assert!(get["scheme"].is_null() || get["scheme"] == "HTTP", "{binary}: {kind} scheme");
        let probe_port = deployment.container_port(&get["port"]);
        assert_eq!(
            probe_port,
            Some(port),
            "{binary}: {kind} probes port {}, the service listens on {port}",
            get["port"]
        );
        let path = get["path"].as_str().expect("probe path");
        wait_for_200(&system.client, &system.url(binary, port, path), QUIET).await;
    }
}

/// The two APIs describe themselves on their port: `/openapi.json` and the `/docs/` page.
async fn check_api_documents(system: &ChartSystem, deployment: &ServiceDeployment<'_>, port: u16) {
    let binary = deployment.binary;
    if binary == "notification-worker" {
        return;
    }
    let document =
        system.client.get(system.url(binary, port, "/openapi.json")).send().await.expect("GET /openapi.json");
    assert_eq!(document.status(), 200, "{binary}: /openapi.json");
    let document: serde_json::Value = document.json().await.expect("an OpenAPI document");
    assert_eq!(document["openapi"], "3.1.0", "{binary}: /openapi.json");
    let page = system.client.get(system.url(binary, port, "/docs/")).send().await.expect("GET /docs/");
    assert_eq!(page.status(), 200, "{binary}: /docs/");
    assert!(
        page.text().await.unwrap().contains("swagger-ui-bundle.js"),
        "{binary}: /docs/ is the Swagger UI page"
    );
}

/// Where the chart requires API keys, a request without one is refused, the probes are not.
async fn check_api_keys(deployment: &ServiceDeployment<'_>, system: &ChartSystem, port: u16) {
    let binary = deployment.binary;
    let requires_keys = deployment.env().iter().any(|(name, _)| name == "API_KEYS");
    let path = match binary {
        "order-service" => "/orders",
        "analytics-service" => "/analytics/summary",
        _ => return,
    };
    let anonymous = reqwest::Client::new();
    let status = anonymous.get(system.url(binary, port, path)).send().await.expect("GET").status();
    assert_eq!(status, if requires_keys { 401 } else { 200 }, "{binary}: {path} without a key");
    let status = system.client.get(system.url(binary, port, path)).send().await.expect("GET").status();
    assert_eq!(status, 200, "{binary}: {path} with the run's key");
    let status = anonymous.get(system.url(binary, port, "/readyz")).send().await.expect("GET").status();
    assert_eq!(status, 200, "{binary}: /readyz needs no key");
}

/// Exactly one Service selects the pods, and each of its ports targets the listening port.
fn check_service(deployment: &ServiceDeployment<'_>, port: u16) {
    let binary = deployment.binary;
    let services = deployment.services();
    assert_eq!(services.len(), 1, "{binary}: Services selecting its pods");
    for service_port in services[0]["spec"]["ports"].as_array().expect("Service ports") {
        let target = service_port.get("targetPort").unwrap_or(&service_port["port"]);
        assert_eq!(
            deployment.container_port(target),
            Some(port),
            "{binary}: Service port {service_port} does not reach the listening port {port}"
        );
    }
}

/// What Prometheus scrapes through a ServiceMonitor endpoint: its port (a Service port name)
/// reaches the listening port, and its path answers parseable Prometheus text.
async fn scrape(
    system: &ChartSystem,
    deployment: &ServiceDeployment<'_>,
    service: &Value,
    endpoint: &Value,
    port: u16,
) -> Exposition {
    let binary = deployment.binary;
    let service_port = service["spec"]["ports"]
        .as_array()
        .and_then(|ports| ports.iter().find(|p| p["name"] == endpoint["port"]))
        .unwrap_or_else(|| {
            panic!("{binary}: ServiceMonitor port {} is no port of the Service", endpoint["port"])
        });
    let target = service_port.get("targetPort").unwrap_or(&service_port["port"]);
    assert_eq!(deployment.container_port(target), Some(port), "{binary}: the scraped port");
    assert!(endpoint["scheme"].is_null() || endpoint["scheme"] == "http", "{binary}: scrape scheme");
    let path = endpoint["path"].as_str().unwrap_or("/metrics");
    // Prometheus sends the endpoint's params as the query string.
    let query: Vec<(String, String)> = endpoint["params"]
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(key, values)| {
            values
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| (key.clone(), v.as_str().unwrap_or_default().to_owned()))
        })
        .collect();
    let response =
        system.client.get(system.url(binary, port, path)).query(&query).send().await.expect("scrape");
    assert_eq!(response.status(), 200, "{binary}: GET {path}");
    let content_type = response.headers()["content-type"].to_str().unwrap_or_default().to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text") || content_type.starts_with("text/plain"),
        "{binary}: {path} answers {content_type}, not Prometheus text"
    );
    let text = response.text().await.expect("metrics body");
    Exposition::parse(&text).unwrap_or_else(|e| panic!("{binary}: {path} does not parse: {e}"))
}

/// The pod's grace period outlasts the preStop pause plus the service's own shutdown grace, and
/// SIGTERM (sent after the pause) makes the process exit 0 before the kubelet would kill it.
async fn check_termination(system: &mut ChartSystem, deployment: &ServiceDeployment<'_>) {
    let binary = deployment.binary;
    let grace = deployment.termination_grace_period_seconds();
    let pre_stop = deployment.pre_stop_sleep_seconds();
    let shutdown = match deployment
        .env()
        .into_iter()
        .find(|(name, _)| name == "SHUTDOWN_GRACE_PERIOD_SECONDS")
    {
        Some((_, EnvValue::Known(seconds))) => seconds.parse::<u64>().expect("SHUTDOWN_GRACE_PERIOD_SECONDS"),
        _ => settings_defaults(binary)["shutdown"]["grace_period_seconds"].as_u64().expect("default grace"),
    };
    assert!(
        grace > shutdown + pre_stop,
        "{binary}: terminationGracePeriodSeconds {grace} must exceed preStop sleep {pre_stop} + SHUTDOWN_GRACE_PERIOD_SECONDS {shutdown}"
    );
    let status = system.take(binary).terminate_within(Duration::from_secs(grace - pre_stop)).await;
    match status {
        Some(status) => assert!(status.success(), "{binary} exited with {status} on SIGTERM"),
        None => {
            panic!("{binary} still ran {}s after SIGTERM: the kubelet would have killed it", grace - pre_stop)
        }
    }
}

#[tokio::test]
async fn every_metric_the_dashboards_and_alerts_use_is_emitted() {
    let list = workspace_root().join("charts/orderflow/metrics-used.txt");
    let used: BTreeSet<String> = std::fs::read_to_string(&list)
        .expect("metrics-used.txt")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect();
    assert!(!used.is_empty(), "{} lists no metric", list.display());
    let (rabbitmq, ours): (BTreeSet<String>, BTreeSet<String>) =
        used.into_iter().partition(|name| name.starts_with("rabbitmq_"));

    // The render with the dashboards, the alert rules and the RabbitMQ ServiceMonitor.
    let rendered = Rendered::render("full");
    check_rabbitmq_names(&rendered, &rabbitmq);

    // The broker behind a proxy, so that a publish can fail.
    let broker = FaultProxy::start(host_port(&test_support::amqp_url(), 5672)).await.expect("broker proxy");
    let system = ChartSystem::start_with_broker(&rendered, Some(broker.addr())).await;
    let deployments = rendered.service_deployments();
    for deployment in &deployments {
        let path =
            deployment.container["readinessProbe"]["httpGet"]["path"].as_str().expect("readiness path");
        wait_for_200(
            &system.client,
            &system.url(deployment.binary, system.process(deployment.binary).port, path),
            QUIET,
        )
        .await;
    }

    // Labelled families show no series until their first sample: drive the success paths, then
    // each failure the dashboards and alerts count.
    drive_one_order(&system).await;
    system.webhook.refuse_next(1);
    post_order(&system).await;
    eventually(QUIET, "a refused webhook retried", || async {
        (system.webhook.refused() == 1 && system.webhook.calls().len() >= 3).then_some(())
    })
    .await;
    let publisher = TestPublisher::connect(&system.env("order-service")["ORDERFLOW_RABBITMQ__EXCHANGE"])
        .await
        .expect("test publisher");
    publisher.publish("order.created", None, b"{not an event").await.expect("publish");
    let dead_lettered = BTreeSet::from(["messages_dead_lettered_total".to_owned()]);
    let missing = wait_until_emitted(&system, &deployments, &dead_lettered).await;
    assert!(missing.is_empty(), "an undecodable event was not dead-lettered: {missing:?}");
    // The queue depths the services sample from the broker, which they stop reporting while it is
    // away.
    let sampled: BTreeSet<String> =
        ours.iter().filter(|name| name.starts_with("queue_messages_")).cloned().collect();
    let missing = wait_until_emitted(&system, &deployments, &sampled).await;
    assert!(missing.is_empty(), "the services do not report their queues' depths: {missing:?}");
    broker.cut();
    post_order(&system).await;

    let ours: BTreeSet<String> = ours.difference(&sampled).cloned().collect();
    let missing = wait_until_emitted(&system, &deployments, &ours).await;
    system.cleanup().await;
    assert!(
        missing.is_empty(),
        "used by the dashboards/alerts ({}) but emitted by no service:\n  {}",
        list.display(),
        missing.join("\n  ")
    );
}

/// Scrapes every service as its ServiceMonitor says until all `names` are emitted; those still
/// missing after a while.
async fn wait_until_emitted(
    system: &ChartSystem,
    deployments: &[ServiceDeployment<'_>],
    names: &BTreeSet<String>,
) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + QUIET;
    loop {
        let mut emitted = BTreeSet::new();
        for deployment in deployments {
            let port = system.process(deployment.binary).port;
            let monitors = deployment.service_monitors();
            assert!(!monitors.is_empty(), "no ServiceMonitor scrapes {}", deployment.binary);
            for (monitor, service) in monitors {
                for endpoint in monitor["spec"]["endpoints"].as_array().expect("endpoints") {
                    emitted.extend(scrape(system, deployment, service, endpoint, port).await.names());
                }
            }
        }
        let missing: Vec<String> = names.difference(&emitted).cloned().collect();
        if missing.is_empty() || tokio::time::Instant::now() > deadline {
            return missing;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `rabbitmq_*` names come from RabbitMQ's `/metrics/detailed`, in the families the rendered
/// RabbitMQ ServiceMonitor asks for.
fn check_rabbitmq_names(rendered: &Rendered, names: &BTreeSet<String>) {
    let requested: BTreeSet<&str> = rendered
        .of_kind("ServiceMonitor")
        .flat_map(|monitor| monitor["spec"]["endpoints"].as_array().cloned().unwrap_or_default())
        .filter(|endpoint| endpoint["path"] == "/metrics/detailed")
        .flat_map(|endpoint| endpoint["params"]["family"].as_array().cloned().unwrap_or_default())
        .filter_map(|family| {
            RABBITMQ_DETAILED_FAMILIES.iter().find(|(name, _)| family == **name).map(|(name, _)| *name)
        })
        .collect();
    let provided: BTreeSet<&str> = RABBITMQ_DETAILED_FAMILIES
        .iter()
        .filter(|(family, _)| requested.contains(family))
        .flat_map(|(_, names)| names.iter().copied())
        .collect();
    let missing: Vec<&String> = names.iter().filter(|name| !provided.contains(name.as_str())).collect();
    assert!(
        missing.is_empty(),
        "RabbitMQ metrics used but not in the /metrics/detailed families the ServiceMonitor requests \
         ({requested:?}):\n  {}",
        missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n  ")
    );
}

/// One order through the whole system and read back from both APIs, so that the cache, the
/// consumers, the outbox and the notifications all have samples.
async fn drive_one_order(system: &ChartSystem) {
    let order_url = |path: &str| system.url("order-service", system.process("order-service").port, path);
    let analytics_url =
        |path: &str| system.url("analytics-service", system.process("analytics-service").port, path);
    let id = post_order(system).await;
    eventually(QUIET, &format!("order {id} processed"), || async {
        let order: Value =
            system.client.get(order_url(&format!("/orders/{id}"))).send().await.ok()?.json().await.ok()?;
        (order["status"] == "processed").then_some(())
    })
    .await;
    eventually(QUIET, "the order in the analytics summary", || async {
        let summary: Value =
            system.client.get(analytics_url("/analytics/summary")).send().await.ok()?.json().await.ok()?;
        (summary["total_orders"] == json!(1)).then_some(())
    })
    .await;
    // OrderCreated and OrderProcessed.
    eventually(QUIET, "two notifications", || async { (system.webhook.calls().len() >= 2).then_some(()) })
        .await;
    assert!(system.webhook.calls().iter().all(|call| call.signature_valid), "signed with the chart's key");
}

/// POSTs an order to order-service; its id.
async fn post_order(system: &ChartSystem) -> String {
    let url = system.url("order-service", system.process("order-service").port, "/orders");
    let response = system
        .client
        .post(url)
        .json(&order("chart-contract", "p-1", 2, "19.99"))
        .send()
        .await
        .expect("POST /orders");
    assert_eq!(response.status(), 201, "POST /orders");
    let created: Value = response.json().await.expect("created order");
    created["id"].as_str().expect("order id").to_owned()
}

//! The Helm chart as the pinned Helm renders it (`scripts/k8s/render-json.sh`), the environment
//! each service container gets from it, and the three services started with that environment
//! against the local servers.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use base64::Engine;
use messaging::rabbitmq::RabbitSettings;
use reqwest::Url;
use serde_json::{Map, Value};
use sqlx::{Connection, Executor};
use test_support::{Cleanup, TestDatabase, unique_name};

use crate::{SERVICES, ServiceProcess, WebhookReceiver};

/// Signs webhooks when the chart takes the key from a Secret it does not render.
const TEST_WEBHOOK_SECRET: &str = "chart-contract-webhook-secret";
/// The API key the run's client sends, with every scope, where the chart requires keys from a
/// Secret it does not render.
pub const TEST_API_KEY: &str = "chart-contract-api-key";
/// The consumer queues, each also named by an `ORDERFLOW_*` setting.
const QUEUES: [(&str, &str); 3] = [
    ("ORDERFLOW_QUEUES__ORDER_PROCESSED", "orders.processed"),
    ("ORDERFLOW_QUEUES__ANALYTICS", "analytics.orders"),
    ("ORDERFLOW_QUEUES__NOTIFICATIONS", "notifications.orders"),
];

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

/// A service's default settings as JSON: which sections and keys it has, i.e. which configuration
/// it understands.
pub fn settings_defaults(binary: &str) -> Value {
    let settings = match binary {
        "order-service" => serde_json::to_value(order_service::settings::Settings::default()),
        "analytics-service" => serde_json::to_value(analytics_service::settings::Settings::default()),
        "notification-worker" => serde_json::to_value(notification_worker::settings::Settings::default()),
        other => panic!("{other} is not an orderflow service"),
    };
    settings.expect("settings serialize")
}

/// The service's flat environment variables (shared and its own) and the setting each sets.
pub fn flat_env(binary: &str) -> Vec<(&'static str, &'static str)> {
    let own: &[(&str, &str)] = match binary {
        "notification-worker" => notification_worker::settings::FLAT_ENV,
        _ => &[],
    };
    platform::config::FLAT_ENV.iter().chain(own).copied().collect()
}

/// One render of the chart: every object it produced.
pub struct Rendered {
    pub case: String,
    pub objects: Vec<Value>,
}

impl Rendered {
    /// Renders one of chart-test's cases: `default`, `full`, `external` or `dev`.
    pub fn render(case: &str) -> Rendered {
        let script = workspace_root().join("scripts/k8s/render-json.sh");
        let output = std::process::Command::new(&script)
            .arg(case)
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
        assert!(
            output.status.success(),
            "rendering the chart ({case}) failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let objects = serde_json::from_slice(&output.stdout).expect("render-json.sh prints a JSON array");
        Rendered { case: case.to_owned(), objects }
    }

    pub fn of_kind<'a>(&'a self, kind: &str) -> impl Iterator<Item = &'a Value> + use<'a> {
        let kind = kind.to_owned();
        self.objects.iter().filter(move |object| object["kind"] == kind.as_str())
    }

    pub fn get(&self, kind: &str, name: &str) -> Option<&Value> {
        self.of_kind(kind).find(|object| object["metadata"]["name"] == name)
    }

    /// The value under `key` of a rendered Secret (`stringData` wins over base64 `data`, as in the
    /// API server), or of a ConfigMap. `Ok(None)`: the chart renders no such object, the operator
    /// provides it. `Err`: the object is rendered without that key, so the pod could not start.
    pub fn lookup(&self, kind: &str, name: &str, key: &str) -> Result<Option<String>, String> {
        let Some(object) = self.get(kind, name) else { return Ok(None) };
        if let Some(text) = object["stringData"][key].as_str() {
            return Ok(Some(text.to_owned()));
        }
        if let Some(text) = object["data"][key].as_str() {
            if kind == "ConfigMap" {
                return Ok(Some(text.to_owned()));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| format!("Secret {name} key {key} is not base64: {e}"))?;
            return String::from_utf8(bytes)
                .map(Some)
                .map_err(|_| format!("Secret {name} key {key} is not UTF-8 text"));
        }
        Err(format!("{kind} {name} has no key {key}"))
    }

    /// The Deployment of each service, in [`SERVICES`] order.
    pub fn service_deployments(&self) -> Vec<ServiceDeployment<'_>> {
        SERVICES.iter().map(|binary| self.service_deployment(binary)).collect()
    }

    /// The Deployment whose pods are `binary` (`app.kubernetes.io/component`), checked to run
    /// that binary's image in a container of that name.
    pub fn service_deployment(&self, binary: &'static str) -> ServiceDeployment<'_> {
        let found: Vec<&Value> = self
            .of_kind("Deployment")
            .filter(|d| d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == binary)
            .collect();
        assert_eq!(found.len(), 1, "{}: one Deployment of {binary}, found {}", self.case, found.len());
        let deployment = found[0];
        let containers = deployment["spec"]["template"]["spec"]["containers"].as_array().expect("containers");
        assert_eq!(containers.len(), 1, "{}: {binary} runs one container", self.case);
        let container = &containers[0];
        assert_eq!(container["name"], binary, "{}: {binary}'s container is named after it", self.case);
        let image = container["image"].as_str().expect("image");
        let repository = image.rsplit_once(':').map_or(image, |(repository, _)| repository);
        assert_eq!(
            repository.rsplit('/').next(),
            Some(binary),
            "{}: {binary} runs image {image}, the Dockerfile target of another binary",
            self.case
        );
        ServiceDeployment { binary, deployment, container, rendered: self }
    }
}

/// A variable of a container's environment as the chart gives it.
#[derive(Debug, Clone, PartialEq)]
pub enum EnvValue {
    /// A `value`, or a reference resolved against the rendered Secrets and ConfigMaps.
    Known(String),
    /// A reference to a Secret or ConfigMap the chart does not render (`existingSecret`).
    External(String),
}

/// A service's Deployment in one render.
pub use crate::Sandbox;

pub struct ServiceDeployment<'a> {
    pub binary: &'static str,
    pub deployment: &'a Value,
    pub container: &'a Value,
    rendered: &'a Rendered,
}

impl<'a> ServiceDeployment<'a> {
    fn pod_spec(&self) -> &'a Value {
        &self.deployment["spec"]["template"]["spec"]
    }

    pub fn pod_labels(&self) -> &'a Map<String, Value> {
        self.deployment["spec"]["template"]["metadata"]["labels"].as_object().expect("pod labels")
    }

    /// The container's environment, in order, references resolved.
    pub fn env(&self) -> Vec<(String, EnvValue)> {
        let mut env = Vec::new();
        for var in self.container["env"].as_array().into_iter().flatten() {
            let name = var["name"].as_str().expect("env name").to_owned();
            if let Some(value) = var.get("value") {
                env.push((name, EnvValue::Known(value.as_str().unwrap_or_default().to_owned())));
                continue;
            }
            let from = &var["valueFrom"];
            let (kind, reference) = if from["secretKeyRef"].is_object() {
                ("Secret", &from["secretKeyRef"])
            } else if from["configMapKeyRef"].is_object() {
                ("ConfigMap", &from["configMapKeyRef"])
            } else {
                panic!(
                    "{}: {}: env {name} is neither a value nor a Secret/ConfigMap key: {var}",
                    self.rendered.case, self.binary
                );
            };
            let (object, key) =
                (reference["name"].as_str().expect("name"), reference["key"].as_str().expect("key"));
            match self.rendered.lookup(kind, object, key) {
                Ok(Some(value)) => env.push((name, EnvValue::Known(value))),
                Ok(None) => env.push((name, EnvValue::External(format!("{kind} {object} key {key}")))),
                Err(_) if reference["optional"] == true => {}
                Err(problem) => panic!("{}: {}: env {name}: {problem}", self.rendered.case, self.binary),
            }
        }
        env
    }

    /// How the pod runs its container: user, group, whether the root filesystem is read-only, and
    /// the emptyDir volumes mounted into it (the only places it can write then).
    pub fn sandbox(&self) -> Sandbox {
        let pod = &self.pod_spec()["securityContext"];
        let container = &self.container["securityContext"];
        let id = |field: &str| {
            container[field]
                .as_u64()
                .or_else(|| pod[field].as_u64())
                .and_then(|id| u32::try_from(id).ok())
                .unwrap_or_else(|| panic!("{}: {} sets no {field}", self.rendered.case, self.binary))
        };
        let empty_dirs: Vec<&str> = self.pod_spec()["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|volume| volume.get("emptyDir").is_some())
            .filter_map(|volume| volume["name"].as_str())
            .collect();
        let writable = self.container["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|mount| mount["name"].as_str().is_some_and(|name| empty_dirs.contains(&name)))
            .filter_map(|mount| mount["mountPath"].as_str().map(str::to_owned))
            .collect();
        Sandbox {
            user: id("runAsUser"),
            group: id("runAsGroup"),
            read_only_root: container["readOnlyRootFilesystem"] == true,
            writable,
        }
    }

    /// The container port a probe or Service names (`http`) or gives as a number.
    pub fn container_port(&self, port: &Value) -> Option<u16> {
        if let Some(number) = port.as_u64() {
            return u16::try_from(number).ok();
        }
        let name = port.as_str()?;
        self.container["ports"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
            .and_then(|p| u16::try_from(p).ok())
    }

    /// The Services that select these pods.
    pub fn services(&self) -> Vec<&'a Value> {
        let namespace = &self.deployment["metadata"]["namespace"];
        let labels = self.pod_labels();
        self.rendered
            .of_kind("Service")
            .filter(|s| &s["metadata"]["namespace"] == namespace)
            .filter(|s| s["spec"]["selector"].as_object().is_some_and(|selector| subset(selector, labels)))
            .collect()
    }

    /// The ServiceMonitors that select one of [`Self::services`].
    pub fn service_monitors(&self) -> Vec<(&'a Value, &'a Value)> {
        let mut found = Vec::new();
        for monitor in self.rendered.of_kind("ServiceMonitor") {
            let Some(selector) = monitor["spec"]["selector"]["matchLabels"].as_object() else { continue };
            for service in self.services() {
                let namespaces = &monitor["spec"]["namespaceSelector"]["matchNames"];
                let in_namespace = namespaces
                    .as_array()
                    .is_none_or(|names| names.contains(&service["metadata"]["namespace"]));
                let labels = service["metadata"]["labels"].as_object();
                if in_namespace && labels.is_some_and(|labels| subset(selector, labels)) {
                    found.push((monitor, service));
                }
            }
        }
        found
    }

    pub fn termination_grace_period_seconds(&self) -> u64 {
        // 30 s is the API server's default.
        self.pod_spec()["terminationGracePeriodSeconds"].as_u64().unwrap_or(30)
    }

    /// The preStop pause before the kubelet sends SIGTERM (0 without one).
    pub fn pre_stop_sleep_seconds(&self) -> u64 {
        let pre_stop = &self.container["lifecycle"]["preStop"];
        if pre_stop.is_null() {
            return 0;
        }
        pre_stop["sleep"]["seconds"].as_u64().unwrap_or_else(|| {
            panic!("{}: only a preStop sleep is understood here, found {pre_stop}", self.binary)
        })
    }
}

/// Every label of `selector` is among `labels`.
fn subset(selector: &Map<String, Value>, labels: &Map<String, Value>) -> bool {
    !selector.is_empty() && selector.iter().all(|(key, value)| labels.get(key) == Some(value))
}

/// The three services started from one render's Deployments, on the local servers.
pub struct ChartSystem {
    /// Prefix of every name this run creates on the shared servers.
    pub name: String,
    pub webhook: WebhookReceiver,
    pub client: reqwest::Client,
    processes: BTreeMap<&'static str, ServiceProcess>,
    envs: BTreeMap<&'static str, BTreeMap<String, String>>,
    /// The private loopback address each service listens on, its pod IP (see [`run_env`]).
    addresses: BTreeMap<&'static str, Ipv4Addr>,
    databases: Vec<(TestDatabase, DatabaseAccount)>,
    /// Dropped last: the run's queues, exchanges and Redis keys.
    _cleanup: Cleanup,
}

/// What one run changes in the chart's environment.
struct Local<'a> {
    name: &'a str,
    address: Ipv4Addr,
    database: Option<&'a (TestDatabase, DatabaseAccount)>,
    webhook_url: &'a str,
    broker: Option<SocketAddr>,
}

/// A MySQL account of the run's own with a password, allowed into one database, like the chart's
/// per-service users (the local root account has no password to give).
pub struct DatabaseAccount {
    pub user: String,
    pub password: String,
}

impl DatabaseAccount {
    /// An account named like `database`, with all rights on it only.
    pub async fn create(database: &TestDatabase) -> DatabaseAccount {
        let mut admin = sqlx::MySqlConnection::connect(&test_support::mysql_admin_url())
            .await
            .expect("MySQL admin connection");
        drop_stale_accounts(&mut admin).await;
        let account = DatabaseAccount {
            user: database.name.clone(),
            password: uuid::Uuid::new_v4().simple().to_string(),
        };
        for statement in [
            format!("CREATE USER '{}'@'%' IDENTIFIED BY '{}'", account.user, account.password),
            format!("GRANT ALL PRIVILEGES ON `{}`.* TO '{}'@'%'", database.name, account.user),
        ] {
            admin.execute(sqlx::AssertSqlSafe(statement)).await.expect("create the test account");
        }
        account
    }
}

impl Drop for DatabaseAccount {
    fn drop(&mut self) {
        let user = std::mem::take(&mut self.user);
        test_support::run_cleanup(async move {
            let mut admin = sqlx::MySqlConnection::connect(&test_support::mysql_admin_url()).await?;
            admin.execute(sqlx::AssertSqlSafe(format!("DROP USER IF EXISTS '{user}'@'%'"))).await?;
            Ok(())
        });
    }
}

/// Accounts a killed run left behind, named like its databases (`oftest_<unix seconds>_…`).
async fn drop_stale_accounts(admin: &mut sqlx::MySqlConnection) {
    let prefix = format!("{}_", test_support::TEST_PREFIX);
    let Ok(users) = sqlx::query_scalar::<_, String>("SELECT DISTINCT CAST(User AS CHAR) FROM mysql.user")
        .fetch_all(&mut *admin)
        .await
    else {
        return;
    };
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
    for user in users {
        let Some(rest) = user.strip_prefix(&prefix) else { continue };
        let created: u64 = rest.split('_').next().and_then(|s| s.parse().ok()).unwrap_or(now);
        if now.saturating_sub(created) > 2 * 3600 {
            let _ = admin.execute(sqlx::AssertSqlSafe(format!("DROP USER IF EXISTS '{user}'@'%'"))).await;
        }
    }
}

impl ChartSystem {
    /// Starts order-service, analytics-service and notification-worker, in that order, each with
    /// its Deployment's environment as [`run_env`] adapts it; waits until each listens.
    pub async fn start(rendered: &Rendered) -> ChartSystem {
        Self::start_with_broker(rendered, None).await
    }

    /// Like [`ChartSystem::start`], with the services reaching RabbitMQ at `broker` (a
    /// [`test_support::FaultProxy`] in front of the local one) instead.
    pub async fn start_with_broker(rendered: &Rendered, broker: Option<SocketAddr>) -> ChartSystem {
        let name = unique_name();
        let deployments = rendered.service_deployments();
        // The receiver checks signatures with the key the chart gives the worker.
        let worker_env =
            deployments.iter().find(|d| d.binary == "notification-worker").expect("worker").env();
        let secret = match worker_env.iter().find(|(name, _)| name == "WEBHOOK_SECRET") {
            Some((_, EnvValue::Known(secret))) => secret.clone(),
            _ => TEST_WEBHOOK_SECRET.to_owned(),
        };
        let (webhook, webhook_url) = WebhookReceiver::start_with_secret(&secret).await;

        // Where the chart requires API keys, the run's client carries one (see [`run_env`]).
        let keys_required = deployments.iter().any(|d| d.env().iter().any(|(name, _)| name == "API_KEYS"));
        let mut headers = reqwest::header::HeaderMap::new();
        if keys_required {
            let bearer = format!("Bearer {TEST_API_KEY}");
            headers.insert(reqwest::header::AUTHORIZATION, bearer.parse().expect("header value"));
        }
        let mut system = ChartSystem {
            name: name.clone(),
            webhook,
            client: reqwest::Client::builder().default_headers(headers).build().expect("HTTP client"),
            processes: BTreeMap::new(),
            envs: BTreeMap::new(),
            addresses: BTreeMap::new(),
            databases: Vec::new(),
            _cleanup: crate::cleanup_of(&name, RabbitSettings::default().retry_delays_ms),
        };
        for deployment in &deployments {
            let uses_database = settings_defaults(deployment.binary).get("database").is_some();
            let database = if uses_database {
                let database = TestDatabase::create().await.expect("test database");
                let account = DatabaseAccount::create(&database).await;
                Some((database, account))
            } else {
                None
            };
            let address = private_loopback_address();
            let local = Local {
                name: &name,
                address,
                database: database.as_ref(),
                webhook_url: &webhook_url,
                broker,
            };
            let env = run_env(deployment.binary, &deployment.env(), &local);
            system.databases.extend(database);
            // As the pod runs it: its user and group, on a read-only root with only its emptyDirs.
            let process =
                ServiceProcess::start_in(deployment.binary, &env, Some(&deployment.sandbox())).await;
            system.envs.insert(deployment.binary, env);
            system.addresses.insert(deployment.binary, address);
            system.processes.insert(deployment.binary, process);
        }
        system
    }

    pub fn process(&self, binary: &str) -> &ServiceProcess {
        self.processes.get(binary).unwrap_or_else(|| panic!("{binary} is not running"))
    }

    /// Hands the process over, e.g. to stop it.
    pub fn take(&mut self, binary: &str) -> ServiceProcess {
        self.processes.remove(binary).unwrap_or_else(|| panic!("{binary} is not running"))
    }

    /// The environment `binary` was started with.
    pub fn env(&self, binary: &str) -> &BTreeMap<String, String> {
        &self.envs[binary]
    }

    /// `http://<address>:<port><path>` of `binary`, as the kubelet or Prometheus reach its pod.
    pub fn url(&self, binary: &str, port: u16, path: &str) -> String {
        format!("http://{}:{port}{path}", self.addresses[binary])
    }

    /// Stops what still runs; dropping the system then removes everything the run created (as
    /// it does when a test fails).
    pub async fn cleanup(mut self) {
        for (_, process) in std::mem::take(&mut self.processes) {
            process.kill_hard().await;
        }
    }
}

/// The environment a service process gets: exactly the chart's, except what must point at the
/// local servers or keep this run apart from everything else on this machine:
///
/// - `DB_HOST`, `DB_PORT`: the local MariaDB (`TEST_MYSQL_URL`). The chart names the in-cluster
///   `<release>-mysql` Service or a managed host.
/// - `DB_NAME`, `DB_USER`, `DB_PASSWORD`: a database and an account of this run's own
///   ([`DatabaseAccount`]); the chart's `order_db`/`orderuser` are shared and its password is
///   not the local server's.
/// - `REDIS_HOST`, `REDIS_PORT`, `REDIS_PASSWORD`: the local Redis (`TEST_REDIS_URL`); the
///   password is dropped when the local server has none.
/// - `RABBITMQ_HOST`, `RABBITMQ_PORT`, `RABBITMQ_USER`, `RABBITMQ_PASSWORD`, `RABBITMQ_VHOST`:
///   the local broker (`TEST_AMQP_URL`), or a fault proxy in front of it; the chart's vhost may
///   not exist there. `RABBITMQ_ADDRESSES` (an external cluster's nodes), when the chart sets
///   it: that same one address.
/// - added: `ORDERFLOW_RABBITMQ__EXCHANGE`, the three `ORDERFLOW_*__QUEUE` names and
///   `ORDERFLOW_REDIS__KEY_PREFIX`, this run's own; the chart's names are everyone's.
/// - added: `ORDERFLOW_HTTP__HOST`, a private loopback address per service, standing in for its
///   pod's IP: in a cluster each pod has the chart's fixed port to itself, here 127.0.0.1 is
///   everyone's.
/// - `WEBHOOK_URL`: a local receiver; the chart's endpoint is outside this machine.
/// - `WEBHOOK_SECRET`, only when the chart takes it from a Secret it does not render: a test key.
/// - `API_KEYS`, likewise: the digest of [`TEST_API_KEY`] with every scope.
///
/// Kept as the chart gives it: `OTEL_EXPORTER_OTLP_ENDPOINT` (full values) names a collector that
/// does not exist here; the services log the failed exports and carry on, as a pod does while
/// its collector is down.
///
/// Every connection variable replaced here must be set by the chart (else the service would fall
/// back to defaults that only happen to work locally), and every other variable must resolve.
fn run_env(binary: &str, chart_env: &[(String, EnvValue)], local: &Local<'_>) -> BTreeMap<String, String> {
    let mut env =
        EnvEdit { binary, known: BTreeMap::new(), external: BTreeMap::new(), chart: BTreeSet::new() };
    for (name, value) in chart_env {
        env.chart.insert(name.clone());
        match value {
            EnvValue::Known(value) => env.known.insert(name.clone(), value.clone()),
            EnvValue::External(source) => env.external.insert(name.clone(), source.clone()),
        };
    }

    if let Some((database, account)) = local.database {
        let mysql = ServerUrl::parse(&test_support::mysql_admin_url(), 3306);
        env.replace("DB_HOST", Some(mysql.host));
        env.replace("DB_PORT", Some(mysql.port.to_string()));
        env.replace("DB_USER", Some(account.user.clone()));
        env.replace("DB_PASSWORD", Some(account.password.clone()));
        env.replace("DB_NAME", Some(database.name.clone()));
    }
    let redis = ServerUrl::parse(&test_support::redis_url(), 6379);
    env.replace("REDIS_HOST", Some(redis.host));
    env.replace("REDIS_PORT", Some(redis.port.to_string()));
    if env.chart.contains("REDIS_PASSWORD") {
        env.replace("REDIS_PASSWORD", redis.password);
    }
    let amqp = ServerUrl::parse(&test_support::amqp_url(), 5672);
    let (host, port) =
        local.broker.map_or((amqp.host, amqp.port), |proxy| (proxy.ip().to_string(), proxy.port()));
    if env.chart.contains("RABBITMQ_ADDRESSES") {
        env.replace("RABBITMQ_ADDRESSES", Some(format!("{host}:{port}")));
    }
    env.replace("RABBITMQ_HOST", Some(host));
    env.replace("RABBITMQ_PORT", Some(port.to_string()));
    env.replace("RABBITMQ_USER", Some(amqp.user));
    env.replace("RABBITMQ_PASSWORD", Some(amqp.password.unwrap_or_default()));
    env.replace("RABBITMQ_VHOST", Some(amqp.path.unwrap_or_else(|| "/".into())));

    env.add("ORDERFLOW_RABBITMQ__EXCHANGE", format!("{}.orders", local.name));
    for (variable, queue) in QUEUES {
        env.add(variable, format!("{}.{queue}", local.name));
    }
    env.add("ORDERFLOW_REDIS__KEY_PREFIX", format!("{}:", local.name));
    env.add("ORDERFLOW_HTTP__HOST", local.address.to_string());

    if env.chart.contains("WEBHOOK_URL") {
        env.replace("WEBHOOK_URL", Some(local.webhook_url.to_owned()));
    }
    if env.external.contains_key("API_KEYS") {
        let key = platform::access::ApiKey::for_key(TEST_API_KEY, &platform::access::Scope::ALL);
        env.replace("API_KEYS", Some(key.to_string()));
    }
    if env.external.contains_key("WEBHOOK_SECRET") {
        env.replace("WEBHOOK_SECRET", Some(TEST_WEBHOOK_SECRET.to_owned()));
    }

    assert!(
        env.external.is_empty(),
        "{binary}: the chart takes {:?} from objects it does not render, and the test does not replace them",
        env.external
    );
    env.known
}

struct EnvEdit<'a> {
    binary: &'a str,
    known: BTreeMap<String, String>,
    external: BTreeMap<String, String>,
    /// Every name the chart sets.
    chart: BTreeSet<String>,
}

impl EnvEdit<'_> {
    /// Replaces (or, with `None`, removes) a variable the chart must set.
    fn replace(&mut self, name: &str, value: Option<String>) {
        assert!(self.chart.contains(name), "the chart gives {} no {name}", self.binary);
        self.external.remove(name);
        match value {
            Some(value) => self.known.insert(name.to_owned(), value),
            None => self.known.remove(name),
        };
    }

    fn add(&mut self, name: &str, value: String) {
        self.external.remove(name);
        self.known.insert(name.to_owned(), value);
    }
}

/// Host, port, credentials and path of a local server's URL.
struct ServerUrl {
    host: String,
    port: u16,
    user: String,
    password: Option<String>,
    /// The path without its leading `/`, percent-decoded; `None` when empty.
    path: Option<String>,
}

impl ServerUrl {
    fn parse(url: &str, default_port: u16) -> ServerUrl {
        let parsed = Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        let path = parsed.path().trim_start_matches('/');
        ServerUrl {
            host: parsed.host_str().expect("server host").to_owned(),
            port: parsed.port().unwrap_or(default_port),
            user: percent_decode(parsed.username()),
            password: parsed.password().map(percent_decode),
            path: (!path.is_empty()).then(|| percent_decode(path)),
        }
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| std::str::from_utf8(&bytes[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An address in 127.0.0.0/8 other than the usual 127.0.0.x, so that the chart's fixed ports are
/// free there whatever else runs on this machine.
fn private_loopback_address() -> Ipv4Addr {
    let random = uuid::Uuid::new_v4().into_bytes();
    Ipv4Addr::new(127, 1 + random[0] % 254, random[1], 1 + random[2] % 254)
}

/// Waits until `url` answers 200, as a probe that keeps being retried; a 4xx answer (no such
/// path) fails at once.
pub async fn wait_for_200(client: &reqwest::Client, url: &str, timeout: Duration) {
    let status = test_support::eventually(timeout, &format!("{url} to answer 200"), || async {
        let status = client.get(url).send().await.ok()?.status();
        (status == reqwest::StatusCode::OK || status.is_client_error()).then_some(status)
    })
    .await;
    assert_eq!(status, reqwest::StatusCode::OK, "GET {url}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_server_urls_give_the_connection_settings() {
        let amqp = ServerUrl::parse("amqp://guest:g%40st@127.0.0.1:5672/%2f", 5672);
        assert_eq!((amqp.host.as_str(), amqp.port, amqp.user.as_str()), ("127.0.0.1", 5672, "guest"));
        assert_eq!(amqp.password.as_deref(), Some("g@st"));
        assert_eq!(amqp.path.as_deref(), Some("/"));
        let mysql = ServerUrl::parse("mysql://root@127.0.0.1", 3306);
        assert_eq!((mysql.port, mysql.password, mysql.path), (3306, None, None));
        assert_eq!(percent_decode("100%"), "100%");
    }
}

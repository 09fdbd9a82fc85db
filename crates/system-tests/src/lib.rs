//! Runs orderflow as it runs in production: the three service binaries as separate processes,
//! against the real MariaDB, Redis and RabbitMQ, isolated per test (own databases, exchange, queue
//! names and Redis prefix), with a webhook receiver standing in for a notification endpoint.
//! [`chart`] runs them as the Helm chart deploys them; [`exposition`] reads their `/metrics`.

pub mod chart;
pub mod exposition;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use messaging::rabbitmq::RabbitSettings;
use serde_json::{Value, json};
use test_support::{Cleanup, FaultProxy, TestDatabase, eventually, host_port, unique_name};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

pub const WEBHOOK_SECRET: &str = "system-test-secret";
/// Short retries, so that a test's outage outlasts none of them by accident.
const RETRY_DELAYS_MS: [u64; 4] = [200, 500, 1000, 2000];
pub const SERVICES: [&str; 3] = ["order-service", "analytics-service", "notification-worker"];

/// A service binary built by `cargo build --workspace --bins` (next to the test executable).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("target directory");
    let path = dir.join(name);
    assert!(path.exists(), "{} not built: run `cargo build --workspace --bins` first", path.display());
    path
}

/// How a container runs: as `user`:`group`, on a read-only view of the root filesystem when
/// `read_only_root`, with an empty writable directory at each of `writable` (the pod's emptyDirs).
/// Needs root (as CI runs) and bwrap, from Debian's bubblewrap, which `make servers` installs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    pub user: u32,
    pub group: u32,
    pub read_only_root: bool,
    pub writable: Vec<String>,
}

impl Sandbox {
    /// bwrap (a mount namespace: the root read-only, each writable path a fresh tmpfs) running
    /// setpriv, which becomes `user`:`group` with no supplementary groups and no way to gain
    /// privileges before it runs the program that follows.
    fn command(&self, program: &std::path::Path) -> Command {
        let mut command = Command::new("bwrap");
        let root = if self.read_only_root { "--ro-bind" } else { "--bind" };
        command.args([root, "/", "/", "--dev", "/dev", "--proc", "/proc"]);
        // The build directory may sit where the pod's user cannot go (under /root, say): show it
        // at /mnt, as the image has its binary in a directory of its own, and start from /.
        let directory = program.parent().expect("the program's directory");
        command.arg("--ro-bind").arg(directory).arg("/mnt").args(["--chdir", "/"]);
        for path in &self.writable {
            // An emptyDir with fsGroup: writable by the pod's user.
            command.args(["--perms", "1777", "--tmpfs", path]);
        }
        command.args(["--die-with-parent", "--", "setpriv"]).args([
            format!("--reuid={}", self.user),
            format!("--regid={}", self.group),
            "--clear-groups".to_owned(),
            "--no-new-privs".to_owned(),
            "--".to_owned(),
        ]);
        command.arg(std::path::Path::new("/mnt").join(program.file_name().expect("the program's name")));
        command
    }
}

/// One running service process and everything it printed; killed when dropped.
pub struct ServiceProcess {
    pub name: &'static str,
    pub port: u16,
    child: Child,
    /// Started through bwrap: the service is bwrap's child.
    sandboxed: bool,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for ServiceProcess {
    /// bwrap itself goes with `kill_on_drop`; the service inside it must be killed on its own.
    fn drop(&mut self) {
        self.kill_sandboxed_service();
    }
}

impl ServiceProcess {
    /// Starts `name` with `env` (and nothing inherited that could change its configuration),
    /// waiting until it listens.
    pub async fn start(name: &'static str, env: &BTreeMap<String, String>) -> ServiceProcess {
        Self::start_in(name, env, None).await
    }

    /// [`ServiceProcess::start`], inside `sandbox` when given.
    pub async fn start_in(
        name: &'static str,
        env: &BTreeMap<String, String>,
        sandbox: Option<&Sandbox>,
    ) -> ServiceProcess {
        let mut command = match sandbox {
            Some(sandbox) => sandbox.command(&binary(name)),
            None => Command::new(binary(name)),
        };
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            child.stderr.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let sink = lines.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    if std::env::var_os("TEST_LOG").is_some() {
                        eprintln!("{line}");
                    }
                    sink.lock().unwrap().push(line);
                }
            });
        }
        let mut process = ServiceProcess { name, port: 0, child, sandboxed: sandbox.is_some(), lines };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let listening =
                process.logs().iter().find(|l| l["event"] == "listening").and_then(|l| l["port"].as_u64());
            if let Some(port) = listening {
                process.port = port as u16;
                return process;
            }
            // A service that cannot start (bad configuration, port taken) says why: show it at once.
            if let Ok(Some(status)) = process.child.try_wait() {
                // Lets the readers take the last lines.
                tokio::time::sleep(Duration::from_millis(200)).await;
                panic!("{name} exited ({status}) before listening:\n{}", process.output());
            }
            if tokio::time::Instant::now() > deadline {
                panic!("{name} did not listen within 60s:\n{}", process.output());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// The JSON log lines printed so far.
    pub fn logs(&self) -> Vec<Value> {
        self.lines.lock().unwrap().iter().filter_map(|line| serde_json::from_str(line).ok()).collect()
    }

    /// Everything printed so far, as printed.
    pub fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// The service's own process id (inside a sandbox, bwrap's child).
    pub fn service_pid(&self) -> u32 {
        let pid = self.child.id().expect("running process");
        if !self.sandboxed {
            return pid;
        }
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        children
            .split_whitespace()
            .next()
            .and_then(|child| child.parse().ok())
            .expect("the sandboxed service runs")
    }

    /// How the service runs, as the kernel sees it: effective user and group, and whether its
    /// root filesystem is mounted read-only.
    pub fn seen_running_as(&self) -> (u32, u32, bool) {
        let pid = self.service_pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
        let effective = |field: &str| -> u32 {
            let line = status.lines().find(|line| line.starts_with(field)).expect("id line");
            line.split_whitespace().nth(2).and_then(|id| id.parse().ok()).expect("effective id")
        };
        let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
        // Fields: id, parent, major:minor, root, mount point, options, …
        let root_read_only = mounts.lines().any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(4) == Some(&"/")
                && fields.get(5).is_some_and(|options| options.split(',').any(|o| o == "ro"))
        });
        (effective("Uid:"), effective("Gid:"), root_read_only)
    }

    /// SIGKILL: no shutdown hook runs, exactly like a crashed pod.
    pub async fn kill_hard(mut self) {
        self.kill_sandboxed_service();
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// SIGKILL to a sandboxed service itself. Killing bwrap is not enough: the service changed
    /// its credentials (setpriv), which clears the parent-death signal bwrap set for it, so it
    /// would outlive its sandbox (and keep consuming the run's queues).
    fn kill_sandboxed_service(&self) {
        let Some(pid) = self.child.id().filter(|_| self.sandboxed) else { return };
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        for child in children.split_whitespace() {
            let _ = std::process::Command::new("kill").args(["-KILL", child]).status();
        }
    }

    /// SIGTERM, then waits for the process to exit; its exit status.
    pub async fn terminate(self) -> std::process::ExitStatus {
        self.terminate_within(Duration::from_secs(30)).await.expect("process stops within its grace period")
    }

    /// SIGTERM, as the kubelet sends it; the exit status if the process exits within `grace`,
    /// else `None` (and it is killed, as the kubelet would).
    pub async fn terminate_within(mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let mut pid = self.child.id().expect("running process").to_string();
        if self.sandboxed {
            // bwrap passes the service's exit status on, but not signals: signal the service.
            let children =
                std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
            pid = children.split_whitespace().next().expect("the sandboxed service runs").to_owned();
        }
        let _ = Command::new("kill").args(["-TERM", &pid]).status().await;
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => Some(status.expect("exit status")),
            Err(_) => {
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                None
            }
        }
    }
}

/// A notification endpoint: records every webhook call, answers 200 (or 503 when told to).
#[derive(Clone)]
pub struct WebhookReceiver {
    calls: Arc<Mutex<Vec<WebhookCall>>>,
    /// The key signatures are checked with.
    secret: Arc<str>,
    /// Calls still to be refused with 503, and those refused so far.
    to_refuse: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
}

#[derive(Debug, Clone)]
pub struct WebhookCall {
    pub event_id: String,
    pub event_type: String,
    pub body: Value,
    pub signature_valid: bool,
}

impl WebhookReceiver {
    /// Starts listening, checking signatures with [`WEBHOOK_SECRET`]; returns the receiver and its URL.
    pub async fn start() -> (WebhookReceiver, String) {
        Self::start_with_secret(WEBHOOK_SECRET).await
    }

    /// Starts listening, checking signatures with `secret`; returns the receiver and its URL.
    pub async fn start_with_secret(secret: &str) -> (WebhookReceiver, String) {
        let receiver = WebhookReceiver {
            calls: Arc::default(),
            secret: secret.into(),
            to_refuse: Arc::default(),
            refused: Arc::default(),
        };
        let app = Router::new().route("/hook", post(record)).with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind webhook receiver");
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, url)
    }

    pub fn calls(&self) -> Vec<WebhookCall> {
        self.calls.lock().unwrap().clone()
    }

    /// Answers the next `count` calls 503 (a failure the worker retries), without recording them.
    pub fn refuse_next(&self, count: usize) {
        self.to_refuse.store(count, Ordering::SeqCst);
    }

    /// How many calls were refused.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}

async fn record(
    State(receiver): State<WebhookReceiver>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    if receiver.to_refuse.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
        receiver.refused.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::SERVICE_UNAVAILABLE, "refused");
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let signature_valid = notification_worker::channel::webhook::verify_signature(
        receiver.secret.as_bytes(),
        &header("x-orderflow-signature"),
        &body,
        i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
        notification_worker::channel::webhook::DEFAULT_TOLERANCE,
    )
    .is_ok();
    receiver.calls.lock().unwrap().push(WebhookCall {
        event_id: header("x-orderflow-event-id"),
        event_type: header("x-orderflow-event-type"),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        signature_valid,
    });
    (StatusCode::OK, "ok")
}

/// How a test wants the system started.
#[derive(Debug, Clone)]
pub struct Options {
    /// The broker to use (e.g. through a fault proxy); the test broker when `None`.
    pub amqp_url: Option<String>,
    /// Start analytics-service with the others (a test may start it later).
    pub analytics: bool,
    /// Route each database and Redis through a [`Faults`] proxy the test can cut.
    pub faults: bool,
    /// The broker's nodes (`RABBITMQ_ADDRESSES`), for a cluster.
    pub rabbitmq_addresses: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options { amqp_url: None, analytics: true, faults: false, rabbitmq_addresses: None }
    }
}

/// Proxies between the services and their servers, to cut one of them.
pub struct Faults {
    pub order_db: FaultProxy,
    pub analytics_db: FaultProxy,
    pub redis: FaultProxy,
}

impl Faults {
    async fn start() -> Faults {
        let mysql = host_port(&test_support::mysql_admin_url(), 3306);
        Faults {
            order_db: FaultProxy::start(mysql.clone()).await.expect("order database proxy"),
            analytics_db: FaultProxy::start(mysql).await.expect("analytics database proxy"),
            redis: FaultProxy::start(host_port(&test_support::redis_url(), 6379)).await.expect("redis proxy"),
        }
    }
}

/// The three services running against isolated namespaces on the shared servers.
pub struct System {
    pub name: String,
    pub env: BTreeMap<String, String>,
    pub order: ServiceProcess,
    /// `None` while a test has it stopped.
    analytics: Option<ServiceProcess>,
    pub notifications: ServiceProcess,
    pub webhook: WebhookReceiver,
    pub client: reqwest::Client,
    order_db: TestDatabase,
    analytics_db: TestDatabase,
    /// Present when started with [`Options::faults`].
    pub faults: Option<Faults>,
    /// Dropped last, after the processes are gone and the databases dropped.
    _cleanup: Cleanup,
}

impl System {
    /// Starts the three services; `amqp_url` lets a test route them through a fault proxy.
    pub async fn start(amqp_url: Option<String>) -> System {
        Self::start_with(Options { amqp_url, ..Options::default() }).await
    }

    /// Starts the services as `options` say.
    pub async fn start_with(options: Options) -> System {
        let Options { amqp_url, analytics: start_analytics, faults, rabbitmq_addresses } = options;
        let faults = if faults { Some(Faults::start().await) } else { None };
        let redis_url = match &faults {
            Some(faults) => format!("redis://127.0.0.1:{}", faults.redis.port()),
            None => test_support::redis_url(),
        };
        let name = unique_name();
        let cleanup = cleanup_of(&name, RETRY_DELAYS_MS.to_vec());
        let order_db = TestDatabase::create().await.expect("order database");
        let analytics_db = TestDatabase::create().await.expect("analytics database");
        let (webhook, webhook_url) = WebhookReceiver::start().await;
        let env: BTreeMap<String, String> = [
            ("SERVICE_PORT", "0".to_owned()),
            ("ORDERFLOW_HTTP__HOST", "127.0.0.1".to_owned()),
            ("LOG_LEVEL", "info,lapin=off,sqlx=warn".to_owned()),
            // The load of many clients comes from one address here.
            ("RATE_LIMIT_PER_SECOND", "1000000".to_owned()),
            ("RATE_LIMIT_BURST", "1000000".to_owned()),
            ("SHUTDOWN_GRACE_PERIOD_SECONDS", "10".to_owned()),
            ("REDIS_URL", redis_url),
            ("ORDERFLOW_REDIS__KEY_PREFIX", format!("{name}:")),
            ("RABBITMQ_URL", amqp_url.unwrap_or_else(test_support::amqp_url)),
            ("ORDERFLOW_RABBITMQ__EXCHANGE", format!("{name}.orders")),
            ("ORDERFLOW_RABBITMQ__RETRY_DELAYS_MS", RETRY_DELAYS_MS.map(|d| d.to_string()).join(",")),
            ("ORDERFLOW_RABBITMQ__RECONNECT_MAX_BACKOFF_MS", "1000".to_owned()),
            ("ORDERFLOW_OUTBOX__POLL_INTERVAL_MS", "200".to_owned()),
            ("ORDERFLOW_OUTBOX__RETRY_BASE_MS", "200".to_owned()),
            ("ORDERFLOW_OUTBOX__RETRY_MAX_MS", "1000".to_owned()),
            ("ORDERFLOW_QUEUES__ORDER_PROCESSED", format!("{name}.orders.processed")),
            ("ORDERFLOW_QUEUES__ANALYTICS", format!("{name}.analytics.orders")),
            ("ORDERFLOW_QUEUES__NOTIFICATIONS", format!("{name}.notifications.orders")),
            ("NOTIFY_CHANNELS", "log,webhook".to_owned()),
            ("WEBHOOK_URL", webhook_url),
            ("WEBHOOK_SECRET", WEBHOOK_SECRET.to_owned()),
        ]
        .into_iter()
        .chain(rabbitmq_addresses.map(|addresses| ("RABBITMQ_ADDRESSES", addresses)))
        .map(|(k, v)| (k.to_owned(), v))
        .collect();

        let order_env = with_database(&env, &order_db, faults.as_ref().map(|f| &f.order_db));
        let order = ServiceProcess::start("order-service", &order_env).await;
        let notifications = ServiceProcess::start("notification-worker", &env).await;
        let mut system = System {
            name,
            env,
            order,
            analytics: None,
            notifications,
            webhook,
            client: reqwest::Client::new(),
            order_db,
            analytics_db,
            faults,
            _cleanup: cleanup,
        };
        if start_analytics {
            system.start_analytics().await;
        }
        for queue in ["orders.processed", "analytics.orders", "notifications.orders"] {
            if queue != "analytics.orders" || start_analytics {
                test_support::wait_for_consumer(&system.queue(queue), Duration::from_secs(30)).await;
            }
        }
        system
    }

    pub fn analytics(&self) -> &ServiceProcess {
        self.analytics.as_ref().expect("analytics-service is running")
    }

    /// Kills analytics-service with SIGKILL, as a crash would.
    pub async fn crash_analytics(&mut self) {
        if let Some(process) = self.analytics.take() {
            process.kill_hard().await;
        }
    }

    /// Starts analytics-service again on the same database.
    pub async fn start_analytics(&mut self) {
        self.analytics = Some(ServiceProcess::start("analytics-service", &self.analytics_env()).await);
    }

    /// The isolated name of one of the system's queues.
    pub fn queue(&self, queue: &str) -> String {
        format!("{}.{queue}", self.name)
    }

    pub fn order_env(&self) -> BTreeMap<String, String> {
        with_database(&self.env, &self.order_db, self.faults.as_ref().map(|f| &f.order_db))
    }

    pub fn analytics_env(&self) -> BTreeMap<String, String> {
        with_database(&self.env, &self.analytics_db, self.faults.as_ref().map(|f| &f.analytics_db))
    }

    pub fn order_db_url(&self) -> String {
        self.order_db.url()
    }

    pub fn analytics_db_url(&self) -> String {
        self.analytics_db.url()
    }

    /// POSTs an order; its JSON answer and status.
    pub async fn post_order(&self, body: &Value, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut request = self.client.post(self.order.url("/orders")).json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("POST /orders");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Cancels an order; its JSON answer and status.
    pub async fn cancel_order(&self, id: &str, reason: &str) -> (u16, Value) {
        let url = self.order.url(&format!("/orders/{id}/cancel"));
        let response =
            self.client.post(url).json(&json!({"reason": reason})).send().await.expect("POST cancel");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, url: String) -> Value {
        self.client.get(url).send().await.expect("GET").json().await.expect("JSON")
    }

    pub async fn summary(&self) -> Value {
        self.get(self.analytics().url("/analytics/summary")).await
    }

    /// Waits until the summary counts `orders` orders.
    pub async fn wait_for_summary(&self, orders: u64, timeout: Duration) -> Value {
        eventually(timeout, &format!("{orders} orders in the summary"), || async {
            let summary = self.summary().await;
            (summary["total_orders"] == orders).then_some(summary)
        })
        .await
    }

    /// Waits until no order in the order database is still waiting to be `processed` (cancelled
    /// ones stay cancelled).
    pub async fn wait_until_every_order_processed(&self, timeout: Duration) {
        let order_db = sqlx::MySqlPool::connect(&self.order_db_url()).await.expect("order database");
        eventually(timeout, "every order processed", || async {
            let waiting: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE status = 'created'")
                .fetch_one(&order_db)
                .await
                .expect("count the waiting orders");
            (waiting == 0).then_some(())
        })
        .await;
        order_db.close().await;
    }

    /// Messages in the dead-letter queues of the system's three queues.
    pub async fn parked_messages(&self) -> u32 {
        let mut parked = 0;
        for queue in ["analytics.orders", "notifications.orders", "orders.processed"] {
            parked += test_support::ready_messages(&format!("{}.dlq", self.queue(queue))).await.unwrap_or(0);
        }
        parked
    }

    /// Stops every process; dropping the system then removes everything the test created (as it
    /// does when a test fails).
    pub async fn cleanup(self) {
        for process in [Some(self.order), self.analytics, Some(self.notifications)].into_iter().flatten() {
            process.kill_hard().await;
        }
    }
}

/// What a system named `name` leaves on the shared servers: its queues (with retry queues for
/// `retry_delays_ms`), exchanges and Redis keys.
fn cleanup_of(name: &str, retry_delays_ms: Vec<u64>) -> Cleanup {
    let rabbit =
        RabbitSettings { exchange: format!("{name}.orders"), retry_delays_ms, ..RabbitSettings::default() };
    test_support::cleanup_of(&test_support::isolated_queues(name), &rabbit, &format!("{name}:"))
}

/// `env` with the service's database, reached through `proxy` when given.
fn with_database(
    env: &BTreeMap<String, String>,
    database: &TestDatabase,
    proxy: Option<&FaultProxy>,
) -> BTreeMap<String, String> {
    let mut env = env.clone();
    let url = match proxy {
        Some(proxy) => format!("mysql://root@127.0.0.1:{}/{}", proxy.port(), database.name),
        None => database.url(),
    };
    env.insert("DATABASE_URL".into(), url);
    env
}

/// An order body with an exact amount.
pub fn order(customer: &str, product: &str, quantity: u32, amount: &str) -> Value {
    serde_json::from_str(&format!(
        r#"{{"customer_id": "{customer}", "product_id": "{product}", "quantity": {quantity}, "total_amount": {amount}}}"#
    ))
    .expect("order JSON")
}

/// Adds decimal amounts given as text, exactly (in cents).
pub fn sum_cents(amounts: &[String]) -> i64 {
    amounts
        .iter()
        .map(|a| {
            let (units, cents) = a.split_once('.').unwrap_or((a, "0"));
            let cents = format!("{cents:0<2}");
            units.parse::<i64>().unwrap() * 100 + cents[..2].parse::<i64>().unwrap()
        })
        .sum()
}

/// Cents as the shortest decimal, the way the API writes amounts.
pub fn cents_text(cents: i64) -> String {
    let (units, rest) = (cents / 100, cents % 100);
    match rest {
        0 => units.to_string(),
        r if r % 10 == 0 => format!("{units}.{}", r / 10),
        r => format!("{units}.{r:02}"),
    }
}

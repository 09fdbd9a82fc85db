//! Test helpers. Every test run isolates itself on the shared servers: its own MySQL database, its
//! own RabbitMQ exchange and queue names, its own Redis key prefix, all removed afterwards.
//!
//! Servers default to the local ones (RabbitMQ: the 4.x node on :5673) and can be moved with
//! `TEST_MYSQL_URL` (admin rights), `TEST_REDIS_URL` and `TEST_AMQP_URL`.

mod isolation;
mod listener;
mod proxy;
mod publisher;
mod redis_server;

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use sqlx::{Connection, Executor, MySqlConnection};

pub use isolation::{Isolation, cleanup_of};
pub use listener::{EventListener, Listener, ReceivedEvent};
pub use proxy::FaultProxy;
pub use publisher::TestPublisher;
pub use redis_server::PrivateRedis;

/// Real telemetry for a service under test (trace context flows as in production); its logs are
/// shown on stderr only when `TEST_LOG` is set.
pub fn init_quiet_telemetry(service: &str, log_level: &str) {
    platform::install_crypto_provider();
    let settings = platform::TelemetrySettings { log_level: log_level.into(), ..Default::default() };
    let _ = if std::env::var_os("TEST_LOG").is_some() {
        platform::telemetry::Telemetry::init_with_writer(service, &settings, std::io::stderr)
    } else {
        platform::telemetry::Telemetry::init_with_writer(service, &settings, std::io::sink)
    };
}

/// Prefix of every name a test creates on the shared servers.
pub const TEST_PREFIX: &str = "oftest";

/// Databases older than this, left behind by a killed run, are dropped by later runs.
const STALE_AFTER: Duration = Duration::from_secs(2 * 3600);

pub fn mysql_admin_url() -> String {
    std::env::var("TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The broker the suites run against: by default the RabbitMQ 4 node `make servers` starts on
/// :5673, the series the chart deploys.
pub fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5673/%2f".into())
}

/// `host:port` of a server URL, for pointing a [`FaultProxy`] at it.
pub fn host_port(url: &str, default_port: u16) -> String {
    let after_scheme = url.split("://").nth(1).unwrap_or(url);
    let authority = after_scheme.split('/').next().unwrap_or(after_scheme);
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    if host_port.contains(':') { host_port.to_owned() } else { format!("{host_port}:{default_port}") }
}

/// A name no other test run uses: `oftest_<unix seconds>_<random>` (MySQL-safe).
pub fn unique_name() -> String {
    let seconds = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{TEST_PREFIX}_{seconds}_{}", &random[..10])
}

/// A directory of the test's own in the system's temporary directory, named like its databases
/// and queues; removed when dropped, also when the test fails.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        TempDir(std::env::temp_dir().join(unique_name()))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Default for TempDir {
    fn default() -> Self {
        TempDir::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where a service test runs the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// MariaDB, Redis and RabbitMQ.
    Real,
    /// SQLite, memory and the in-process bus.
    Embedded,
}

/// For each `async fn name(backend: Backend)` listed, one test per backend:
/// `real::name` and `embedded::name`.
#[macro_export]
macro_rules! on_both_backends {
    ($($test:ident),+ $(,)?) => {
        mod real {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test($crate::Backend::Real).await
                }
            )+
        }
        mod embedded {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test($crate::Backend::Embedded).await
                }
            )+
        }
    };
}

/// The system's queues under names only this test run uses (`<name>.analytics.orders`, …).
pub fn isolated_queues(name: &str) -> contracts::Queues {
    let defaults = contracts::Queues::default();
    contracts::Queues {
        analytics: format!("{name}.{}", defaults.analytics),
        notifications: format!("{name}.{}", defaults.notifications),
        order_processed: format!("{name}.{}", defaults.order_processed),
    }
}

/// A MySQL database that exists for one test: dropped with this value, also when the test fails.
pub struct TestDatabase {
    pub name: String,
}

impl TestDatabase {
    pub async fn create() -> anyhow::Result<TestDatabase> {
        let mut admin = MySqlConnection::connect(&mysql_admin_url()).await?;
        drop_stale_databases(&mut admin).await;
        let name = unique_name();
        admin.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE `{name}`"))).await?;
        Ok(TestDatabase { name })
    }

    /// URL of this database for the service under test.
    pub fn url(&self) -> String {
        format!("{}/{}", mysql_admin_url().trim_end_matches('/'), self.name)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = std::mem::take(&mut self.name);
        run_cleanup(async move {
            let mut admin = MySqlConnection::connect(&mysql_admin_url()).await?;
            // A connection a failed test left inside a transaction must not hold the drop for
            // long: a database left behind is dropped as stale by a later run.
            admin.execute("SET SESSION lock_wait_timeout = 5").await?;
            admin.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS `{name}`"))).await?;
            Ok(())
        });
    }
}

/// The queues, exchanges and Redis keys a test created on the shared servers, deleted when this
/// is dropped, also when the test fails.
#[derive(Debug, Default)]
pub struct Cleanup {
    pub queues: Vec<String>,
    pub exchanges: Vec<String>,
    /// Every Redis key under this prefix.
    pub redis_prefix: Option<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let queues = std::mem::take(&mut self.queues);
        let exchanges = std::mem::take(&mut self.exchanges);
        let prefix = self.redis_prefix.take();
        run_cleanup(async move {
            delete_amqp(&queues, &exchanges).await?;
            match prefix {
                Some(prefix) => delete_redis_prefix(&prefix).await,
                None => Ok(()),
            }
        });
    }
}

/// Runs `cleanup` to its end from a `Drop`, which may run inside a runtime that cannot block: on
/// a thread and a runtime of its own. A failure is reported, not raised (the test may be failing
/// already).
pub fn run_cleanup(cleanup: impl Future<Output = anyhow::Result<()>> + Send + 'static) {
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(cleanup)
    });
    match thread.join() {
        Ok(Ok(())) => {}
        Ok(Err(error)) => eprintln!("test cleanup failed: {error:#}"),
        Err(_) => eprintln!("test cleanup panicked"),
    }
}

async fn drop_stale_databases(admin: &mut MySqlConnection) {
    let Ok(names) = sqlx::query_scalar::<_, String>("SHOW DATABASES").fetch_all(&mut *admin).await else {
        return;
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    for name in names {
        let Some(rest) = name.strip_prefix(&format!("{TEST_PREFIX}_")) else { continue };
        let created: u64 = rest.split('_').next().and_then(|s| s.parse().ok()).unwrap_or(now);
        if now.saturating_sub(created) > STALE_AFTER.as_secs() {
            let _ = admin.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS `{name}`"))).await;
        }
    }
}

/// Deletes every Redis key under `prefix`.
pub async fn delete_redis_prefix(prefix: &str) -> anyhow::Result<()> {
    use deadpool_redis::redis::AsyncCommands;
    let client = deadpool_redis::redis::Client::open(redis_url())?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let keys: Vec<String> = connection.keys(format!("{prefix}*")).await?;
    if !keys.is_empty() {
        let _: () = connection.del(keys).await?;
    }
    Ok(())
}

/// Deletes RabbitMQ queues and exchanges a test declared.
pub async fn delete_amqp(queues: &[String], exchanges: &[String]) -> anyhow::Result<()> {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    let connection = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await?;
    for queue in queues {
        let channel = connection.create_channel().await?;
        let _ = channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
    }
    for exchange in exchanges {
        let channel = connection.create_channel().await?;
        let _ = channel.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default()).await;
    }
    let _ = connection.close(200, "test cleanup".into()).await;
    Ok(())
}

/// Polls `check` until it returns `Some`, or fails after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `queue` exists and has a consumer: from then on, what is published to its bindings
/// reaches it (a queue is bound before its consumer starts).
pub async fn wait_for_consumer(queue: &str, timeout: Duration) {
    use lapin::options::QueueDeclareOptions;
    let connection = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ");
    eventually(timeout, &format!("a consumer on {queue}"), || async {
        // A failed passive declare closes the channel: use a fresh one each time.
        let channel = connection.create_channel().await.ok()?;
        let options = QueueDeclareOptions { passive: true, ..Default::default() };
        let declared = channel.queue_declare(queue.into(), options, Default::default()).await.ok()?;
        let _ = channel.close(200, "checked".into()).await;
        (declared.consumer_count() > 0).then_some(())
    })
    .await;
    let _ = connection.close(200, "done".into()).await;
}

/// Messages ready in `queue`, or `None` when it does not exist.
pub async fn ready_messages(queue: &str) -> Option<u32> {
    use lapin::options::QueueDeclareOptions;
    let connection =
        lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await.ok()?;
    let channel = connection.create_channel().await.ok()?;
    let options = QueueDeclareOptions { passive: true, ..Default::default() };
    let declared = channel.queue_declare(queue.into(), options, Default::default()).await.ok();
    let _ = connection.close(200, "done".into()).await;
    declared.map(|declared| declared.message_count())
}

/// The value of one series (`name{labels}`, exactly as exposed) in Prometheus text, 0 if absent.
pub fn metric_value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.split(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// The sum of every series of metric `name` whose labels contain `label` (e.g. `outcome="duplicate"`).
pub fn metric_sum(metrics: &str, name: &str, label: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(&format!("{name}{{")) && line.contains(label))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Checks that `document` (an API's OpenAPI document as generated from its code) is the one
/// committed as `docs/openapi/<name>.json`, the contract reviewers see change. With
/// `OPENAPI_WRITE=1` (`make openapi`) it writes the file instead.
pub fn assert_committed_openapi(name: &str, document: &str) {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../docs/openapi/{name}.json"));
    let document = format!("{}\n", document.trim_end());
    if std::env::var_os("OPENAPI_WRITE").is_some() {
        std::fs::create_dir_all(path.parent().expect("docs/openapi")).expect("create docs/openapi");
        std::fs::write(&path, &document).expect("write the OpenAPI document");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != document {
        let line = committed.lines().zip(document.lines()).position(|(a, b)| a != b);
        panic!(
            "{} differs from what the code generates (first difference at line {}): review the change and \
             run `make openapi`",
            path.display(),
            line.map_or_else(|| "the end".to_owned(), |line| (line + 1).to_string())
        );
    }
}

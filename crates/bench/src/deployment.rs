//! The three release binaries, run against the real servers under names of their own (databases
//! `ofbench_*`, exchange and queues `ofbench.*`, Redis prefix `ofbench:`), and removed afterwards.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, bail};
use contracts::Queues;
use messaging::rabbitmq::{ExchangeNames, QueueNames, RabbitSettings};
use sqlx::{Connection, Executor, MySqlConnection};
use tokio::process::{Child, Command};

/// A client's requests per second (and burst) no load here reaches. Not higher: the bucket's
/// tolerance (burst / rate, one second here) must outlast a thread's preemption between reading
/// the clock and taking its token, or a request is refused under any rate (seen at 10⁹/s).
const UNREACHABLE_RATE_LIMIT: &str = "1000000";
/// Prefix of everything a benchmark creates; a run removes what an interrupted one left.
pub const NAME: &str = "ofbench";
pub const SERVICES: [&str; 3] = ["order-service", "analytics-service", "notification-worker"];

/// Where the servers are; `BENCH_MYSQL_URL`, `BENCH_REDIS_URL` and `BENCH_AMQP_URL` move them.
pub struct Servers {
    pub mysql: String,
    pub redis: String,
    pub amqp: String,
}

impl Servers {
    pub fn from_env() -> Servers {
        let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
        Servers {
            mysql: var("BENCH_MYSQL_URL", "mysql://root@127.0.0.1:3306"),
            redis: var("BENCH_REDIS_URL", "redis://127.0.0.1:6379"),
            // The RabbitMQ 4 node `make servers` runs: the series the chart deploys.
            amqp: var("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5673/%2f"),
        }
    }
}

pub struct Service {
    pub name: &'static str,
    pub port: u16,
    child: Child,
}

impl Service {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

pub struct Deployment {
    pub servers: Servers,
    pub services: Vec<Service>,
    pub queues: Queues,
}

impl Deployment {
    /// Starts the three services from `binaries` with the benchmark's names plus `extra` settings,
    /// and waits until each is ready.
    pub async fn start(binaries: &Path, extra: &[(&str, String)]) -> anyhow::Result<Deployment> {
        let servers = Servers::from_env();
        let queues = queues();
        remove_leftovers(&servers, &queues).await;
        let mut admin = MySqlConnection::connect(&servers.mysql).await.context("connect to MySQL")?;
        for database in databases() {
            admin.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE `{database}`"))).await?;
        }
        let common: Vec<(String, String)> = [
            ("LOG_LEVEL", "warn".to_owned()),
            ("ORDERFLOW_HTTP__HOST", "127.0.0.1".to_owned()),
            // The load comes from one address: the rate limit stays on (its cost is measured)
            // but never refuses.
            ("RATE_LIMIT_PER_SECOND", UNREACHABLE_RATE_LIMIT.to_owned()),
            ("RATE_LIMIT_BURST", UNREACHABLE_RATE_LIMIT.to_owned()),
            ("REDIS_URL", servers.redis.clone()),
            ("ORDERFLOW_REDIS__KEY_PREFIX", format!("{NAME}:")),
            ("RABBITMQ_URL", servers.amqp.clone()),
            ("ORDERFLOW_RABBITMQ__EXCHANGE", format!("{NAME}.orders")),
            ("ORDERFLOW_QUEUES__ANALYTICS", queues.analytics.clone()),
            ("ORDERFLOW_QUEUES__NOTIFICATIONS", queues.notifications.clone()),
            ("ORDERFLOW_QUEUES__ORDER_PROCESSED", queues.order_processed.clone()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .chain(extra.iter().map(|(name, value)| ((*name).to_owned(), value.clone())))
        .collect();
        let mut services = Vec::new();
        for name in SERVICES {
            let port = free_port()?;
            let mut command = Command::new(binaries.join(name));
            command
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .envs(common.iter().map(|(name, value)| (name, value)))
                .env("SERVICE_PORT", port.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .kill_on_drop(true);
            match name {
                "order-service" => command.env("DATABASE_URL", format!("{}/{NAME}_orders", servers.mysql)),
                "analytics-service" => {
                    command.env("DATABASE_URL", format!("{}/{NAME}_analytics", servers.mysql))
                }
                _ => &mut command,
            };
            let child =
                command.spawn().with_context(|| format!("start {}", binaries.join(name).display()))?;
            services.push(Service { name, port, child });
        }
        let deployment = Deployment { servers, services, queues };
        for service in &deployment.services {
            deployment.wait_ready(service).await?;
        }
        Ok(deployment)
    }

    pub fn service(&self, name: &str) -> &Service {
        self.services.iter().find(|service| service.name == name).expect("a service of the system")
    }

    async fn wait_ready(&self, service: &Service) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        for _ in 0..300 {
            if let Ok(response) = client.get(service.url("/readyz")).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("{} did not become ready within 30 s", service.name)
    }

    /// Stops the services (SIGTERM, as Kubernetes does) and removes what the run created.
    pub async fn stop(mut self) {
        for service in &mut self.services {
            if let Some(pid) = service.pid() {
                let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
            }
            let _ = tokio::time::timeout(Duration::from_secs(30), service.child.wait()).await;
        }
        remove_leftovers(&self.servers, &self.queues).await;
    }
}

/// The binaries to run: `BENCH_BINARIES`, else the release build.
pub fn release_binaries() -> PathBuf {
    if let Ok(directory) = std::env::var("BENCH_BINARIES") {
        return PathBuf::from(directory);
    }
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    PathBuf::from(target).join("release")
}

fn queues() -> Queues {
    let defaults = Queues::default();
    Queues {
        analytics: format!("{NAME}.{}", defaults.analytics),
        notifications: format!("{NAME}.{}", defaults.notifications),
        order_processed: format!("{NAME}.{}", defaults.order_processed),
    }
}

pub fn databases() -> [String; 2] {
    [format!("{NAME}_orders"), format!("{NAME}_analytics")]
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Databases, queues, exchanges and Redis keys of a benchmark, wherever a run left them.
async fn remove_leftovers(servers: &Servers, queues: &Queues) {
    if let Ok(mut admin) = MySqlConnection::connect(&servers.mysql).await {
        for database in databases() {
            let _ = admin.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS `{database}`"))).await;
        }
    }
    let rabbit = RabbitSettings { exchange: format!("{NAME}.orders"), ..RabbitSettings::default() };
    if let Ok(connection) = lapin::Connection::connect(&servers.amqp, Default::default()).await {
        for binding in queues.bindings() {
            for queue in QueueNames::new(&binding.queue, &rabbit).all() {
                if let Ok(channel) = connection.create_channel().await {
                    let _ = channel.queue_delete(queue.as_str().into(), Default::default()).await;
                }
            }
        }
        for exchange in ExchangeNames::new(&rabbit).all() {
            if let Ok(channel) = connection.create_channel().await {
                let _ = channel.exchange_delete(exchange.as_str().into(), Default::default()).await;
            }
        }
        let _ = connection.close(200, "done".into()).await;
    }
    let port = servers.redis.rsplit(':').next().unwrap_or("6379").trim_end_matches('/').to_owned();
    let script =
        format!("redis-cli -p {port} --scan --pattern '{NAME}:*' | xargs -r redis-cli -p {port} del");
    let _ = Command::new("sh").args(["-c", &script]).stdout(Stdio::null()).status().await;
}

/// The one-process system (`orderflow`, embedded backends) in a data directory of its own.
pub struct Embedded {
    pub order_port: u16,
    pub analytics_port: u16,
    pub notification_port: u16,
    child: Child,
    directory: PathBuf,
}

impl Embedded {
    pub async fn start(binaries: &Path) -> anyhow::Result<Embedded> {
        let directory =
            std::env::temp_dir().join(format!("{NAME}-embedded-{}", uuid::Uuid::new_v4().simple()));
        let (order_port, analytics_port, notification_port) = (free_port()?, free_port()?, free_port()?);
        let child = Command::new(binaries.join("orderflow"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("LOG_LEVEL", "warn")
            .env("RATE_LIMIT_PER_SECOND", UNREACHABLE_RATE_LIMIT)
            .env("RATE_LIMIT_BURST", UNREACHABLE_RATE_LIMIT)
            .env("ORDERFLOW_DATA_DIR", &directory)
            .env("ORDERFLOW_ORDER_PORT", order_port.to_string())
            .env("ORDERFLOW_ANALYTICS_PORT", analytics_port.to_string())
            .env("ORDERFLOW_NOTIFICATION_PORT", notification_port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("start orderflow")?;
        let embedded = Embedded { order_port, analytics_port, notification_port, child, directory };
        let client = reqwest::Client::new();
        for port in [order_port, analytics_port, notification_port] {
            let mut ready = false;
            for _ in 0..300 {
                if let Ok(response) = client.get(format!("http://127.0.0.1:{port}/readyz")).send().await
                    && response.status().is_success()
                {
                    ready = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            anyhow::ensure!(ready, "orderflow did not become ready on :{port}");
        }
        Ok(embedded)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

//! What the system looks like from outside: orders counted, table sizes, queue depths, memory.

use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::MySqlPool;

use crate::deployment::{Deployment, NAME};

pub struct Probe {
    mysql: MySqlPool,
    amqp: lapin::Connection,
    http: reqwest::Client,
    summary_url: String,
}

/// Rows in the tables that must stay bounded.
#[derive(Debug, Clone, Copy, Default)]
pub struct TableSizes {
    pub order_outbox: i64,
    pub analytics_outbox: i64,
    pub inbox: i64,
    pub idempotency_keys: i64,
}

impl Probe {
    pub async fn connect(deployment: &Deployment) -> anyhow::Result<Probe> {
        Ok(Probe {
            mysql: MySqlPool::connect(&deployment.servers.mysql).await.context("connect to MySQL")?,
            amqp: lapin::Connection::connect(&deployment.servers.amqp, Default::default())
                .await
                .context("connect to RabbitMQ")?,
            http: reqwest::Client::new(),
            summary_url: deployment.service("analytics-service").url("/analytics/summary"),
        })
    }

    /// Orders the analytics summary counts.
    pub async fn counted(&self) -> anyhow::Result<u64> {
        let summary: serde_json::Value = self.http.get(&self.summary_url).send().await?.json().await?;
        summary["total_orders"].as_u64().context("a summary with total_orders")
    }

    /// Waits until the summary counts `orders`; how long that took.
    pub async fn wait_counted(&self, orders: u64, timeout: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        while self.counted().await? < orders {
            anyhow::ensure!(started.elapsed() < timeout, "{orders} orders not counted within {timeout:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(started.elapsed())
    }

    pub async fn table_sizes(&self) -> anyhow::Result<TableSizes> {
        let count = async |table: &str| -> anyhow::Result<i64> {
            let sql = format!("SELECT COUNT(*) FROM {table}");
            Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&self.mysql).await?)
        };
        Ok(TableSizes {
            order_outbox: count(&format!("{NAME}_orders.outbox")).await?,
            analytics_outbox: count(&format!("{NAME}_analytics.outbox")).await?,
            inbox: count(&format!("{NAME}_analytics.processed_events")).await?,
            idempotency_keys: count(&format!("{NAME}_orders.idempotency_keys")).await?,
        })
    }

    /// Messages ready in `queue` (0 when it cannot be asked).
    pub async fn queue_depth(&self, queue: &str) -> u32 {
        let Ok(channel) = self.amqp.create_channel().await else { return 0 };
        let options = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
        let depth = channel
            .queue_declare(queue.into(), options, Default::default())
            .await
            .map(|queue| queue.message_count())
            .unwrap_or(0);
        let _ = channel.close(200, "done".into()).await;
        depth
    }
}

/// The sum of the series of metric `name` whose labels contain every one of `labels`, read from
/// a service's `/metrics` at `url`.
pub async fn metric_sum(
    http: &reqwest::Client,
    url: &str,
    name: &str,
    labels: &[&str],
) -> anyhow::Result<f64> {
    let text = http.get(url).send().await?.text().await?;
    Ok(text
        .lines()
        .filter(|line| {
            line.starts_with(&format!("{name}{{")) && labels.iter().all(|label| line.contains(label))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// Resident memory of a process, in MiB.
pub fn rss_mib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib / 1024)
}

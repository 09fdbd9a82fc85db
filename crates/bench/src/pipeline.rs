//! `bench run` (`make bench`): what users pay on this machine. For `POST /orders`, the CPU time of
//! every process involved (the services, MariaDB, RabbitMQ, Redis) from the first request until
//! every order is counted, `processed` and notified, per order; for the cached reads, per
//! request. With the answer rates and times beside them, measured in the same run.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    cpu::{Processes, describe},
    load::{self, OrderClient, Reader},
    probe::metric_sum,
};

/// Where the pipeline's progress shows.
pub struct Endpoints {
    pub order_service: String,
    pub analytics_service: String,
    pub notification_worker: String,
    /// order-service's `OrderProcessed` queue (a label of its metrics).
    pub processed_queue: String,
    /// The MySQL server, whose statement counters tell what an order costs it.
    pub database: Option<sqlx::MySqlPool>,
}

/// The server's statement and commit counters (all its clients: this machine runs no others).
async fn statements(database: &sqlx::MySqlPool) -> anyhow::Result<(u64, u64)> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SHOW GLOBAL STATUS WHERE Variable_name IN ('Questions', 'Com_commit')")
            .fetch_all(database)
            .await?;
    let value =
        |name: &str| rows.iter().find(|(key, _)| key == name).and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    Ok((value("Questions"), value("Com_commit")))
}

/// Orders counted by analytics, moved to `processed` by order-service, and notifications sent.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    counted: u64,
    processed: u64,
    notified: u64,
}

impl Endpoints {
    async fn progress(&self, http: &reqwest::Client) -> anyhow::Result<Progress> {
        let summary: serde_json::Value =
            http.get(format!("{}/analytics/summary", self.analytics_service)).send().await?.json().await?;
        let queue = format!("queue=\"{}\"", self.processed_queue);
        let processed = metric_sum(
            http,
            &format!("{}/metrics", self.order_service),
            "messages_consumed_total",
            &[&queue, "outcome=\"ack\""],
        )
        .await?;
        let notified = metric_sum(
            http,
            &format!("{}/metrics", self.notification_worker),
            "notifications_sent_total",
            &["outcome=\"sent\""],
        )
        .await?;
        Ok(Progress {
            counted: summary["total_orders"].as_u64().unwrap_or(0),
            processed: processed as u64,
            notified: notified as u64,
        })
    }
}

/// `clients` clients POST orders for `seconds`; then waits until each is counted, processed and
/// notified (one notification per event, two per order, through each channel).
pub async fn orders(
    endpoints: &Endpoints,
    processes: &Processes,
    clients: usize,
    seconds: u64,
    channels: u64,
) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let client = Arc::new(OrderClient::new(&endpoints.order_service));
    let before = endpoints.progress(&http).await?;
    let statements_before = match &endpoints.database {
        Some(database) => Some(statements(database).await?),
        None => None,
    };
    let cpu_before = processes.cpu_seconds();
    let started = Instant::now();
    let poster = client.clone();
    let mut seen = load::flat_out(clients, started + Duration::from_secs(seconds), move || {
        let poster = poster.clone();
        async move { poster.post().await }
    })
    .await;
    let load_lasted = started.elapsed();
    let during = endpoints.progress(&http).await?;
    let created = seen.created;
    loop {
        let now = endpoints.progress(&http).await?;
        if now.counted >= before.counted + created
            && now.processed >= before.processed + created
            && now.notified >= before.notified + 2 * created * channels
        {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(seconds + 300),
            "the pipeline did not finish: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let done_after = started.elapsed() - load_lasted;
    let cpu_after = processes.cpu_seconds();
    let (total, parts) = processes.per_unit(&cpu_before, &cpu_after, created);
    println!(
        "POST /orders, {clients} clients, {seconds} s: {:.0} accepted/s (p50 {:.1} ms, p99 {:.1} ms{}); \
         {:.0} counted/s during the load; all counted, processed and notified {:.2} s after the last answer",
        created as f64 / load_lasted.as_secs_f64(),
        seen.quantile(0.5).as_secs_f64() * 1e3,
        seen.quantile(0.99).as_secs_f64() * 1e3,
        seen.failures(),
        during.counted.saturating_sub(before.counted) as f64 / load_lasted.as_secs_f64(),
        done_after.as_secs_f64(),
    );
    println!("  CPU per fully processed order: {}", describe(total, &parts));
    if let (Some(database), Some((questions, commits))) = (&endpoints.database, statements_before) {
        let (questions_after, commits_after) = statements(database).await?;
        // Noise-free figures beside the CPU: what one order asks of the database.
        println!(
            "  MariaDB per order: {:.2} statements, {:.3} commits",
            questions_after.saturating_sub(questions) as f64 / created.max(1) as f64,
            commits_after.saturating_sub(commits) as f64 / created.max(1) as f64,
        );
    }
    Ok(())
}

/// `clients` clients GET `url` for `seconds`.
pub async fn reads(
    label: &str,
    url: String,
    processes: &Processes,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<()> {
    let reader = Arc::new(Reader::new(url));
    let cpu_before = processes.cpu_seconds();
    let started = Instant::now();
    let getter = reader.clone();
    let mut seen = load::flat_out(clients, started + Duration::from_secs(seconds), move || {
        let getter = getter.clone();
        async move { getter.get().await }
    })
    .await;
    let lasted = started.elapsed();
    let cpu_after = processes.cpu_seconds();
    let (total, parts) = processes.per_unit(&cpu_before, &cpu_after, seen.created);
    println!(
        "{label}, {clients} clients, {seconds} s: {:.0} req/s (p50 {:.2} ms, p99 {:.2} ms{})",
        seen.created as f64 / lasted.as_secs_f64(),
        seen.quantile(0.5).as_secs_f64() * 1e3,
        seen.quantile(0.99).as_secs_f64() * 1e3,
        seen.failures(),
    );
    println!("  CPU per request: {}", describe(total, &parts));
    Ok(())
}

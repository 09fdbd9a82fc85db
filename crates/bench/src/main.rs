//! Benchmarks of the whole system on this machine. Figures are printed, never asserted.
//!
//! `bench run` (`make bench`): `POST /orders` at 16 and 64 clients, then the cached reads, each
//! for `BENCH_SECONDS` (15), with the whole system's CPU per order or request; then the same on
//! the embedded system (`bench run servers` or `bench run embedded`: one of the two). Every `POST` carries an `Idempotency-Key` unless `BENCH_IDEMPOTENCY_KEYS=0`.
//! `BENCH_MYSQL_URL`, `BENCH_REDIS_URL`, `BENCH_AMQP_URL` (RabbitMQ 4 on :5673) move the servers.
//!
//! `bench soak` (`make soak`): the release binaries against the real servers at a steady rate for
//! minutes, a line a minute (accepted and counted per second, answer times, table sizes, memory,
//! queue depths), and how the last minute compares with the first. Settings (environment):
//! `SOAK_MINUTES` (10), `SOAK_RATE` (orders per second; by default `SOAK_LOAD` (0.7) times the
//! capacity measured first), `SOAK_RETENTION_MINUTES` (2: the inbox's and the idempotency keys'
//! retention, short so that the run shows them level off).

mod cpu;
mod deployment;
mod load;
mod pipeline;
mod probe;

use std::{
    io::{IsTerminal, Write},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use deployment::Deployment;
use load::{OrderClient, SharedWindow};
use probe::{Probe, TableSizes, rss_mib};

const USAGE: &str = "usage: bench run [servers|embedded] | bench soak";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("soak") => {
            let retention = (setting("SOAK_RETENTION_MINUTES", 2.0).max(1.0) as u64).to_string();
            let deployment = Deployment::start(
                &deployment::release_binaries(),
                &[
                    ("ORDERFLOW_ORDERS__IDEMPOTENCY_KEY_RETENTION_MINUTES", retention.clone()),
                    ("ORDERFLOW_ANALYTICS__INBOX_RETENTION_MINUTES", retention),
                ],
            )
            .await?;
            let outcome = tokio::select! {
                outcome = soak(&deployment) => outcome,
                _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
            };
            deployment.stop().await;
            outcome
        }
        Some("run") => {
            let seconds = setting("BENCH_SECONDS", 15.0).max(1.0) as u64;
            let only = args.get(1).map(String::as_str);
            if only != Some("embedded") {
                on_real_servers(seconds).await?;
            }
            if only != Some("servers") { embedded(seconds).await } else { Ok(()) }
        }
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(64);
        }
    }
}

/// `make bench` on MariaDB, RabbitMQ and Redis.
async fn on_real_servers(seconds: u64) -> anyhow::Result<()> {
    let deployment = Deployment::start(&deployment::release_binaries(), &[]).await?;
    let outcome = async {
        let services: Vec<(&str, Option<u32>)> =
            deployment.services.iter().map(|service| (service.name, service.pid())).collect();
        let port_of = |url: &str, default: u16| -> u16 {
            url.rsplit(':').next().and_then(|tail| tail.split('/').next()?.parse().ok()).unwrap_or(default)
        };
        let servers = deployment::Servers::from_env();
        let processes = cpu::Processes::new(
            &services,
            &[
                ("mariadbd", port_of(&servers.mysql, 3306)),
                ("rabbitmq", port_of(&servers.amqp, 5672)),
                ("redis", port_of(&servers.redis, 6379)),
            ],
        );
        let endpoints = pipeline::Endpoints {
            order_service: deployment.service("order-service").url(""),
            analytics_service: deployment.service("analytics-service").url(""),
            notification_worker: deployment.service("notification-worker").url(""),
            processed_queue: deployment.queues.order_processed.clone(),
            database: Some(sqlx::MySqlPool::connect(&servers.mysql).await?),
        };
        println!("== the system on MariaDB, RabbitMQ and Redis (whole-system CPU: the three services and the three servers)");
        for clients in [16, 64] {
            pipeline::orders(&endpoints, &processes, clients, seconds, 1).await?;
        }
        let order_url = first_order(&endpoints.order_service).await?;
        pipeline::reads("GET /orders/{id} (cached)", order_url, &processes, 64, seconds).await?;
        let summary_url = format!("{}/analytics/summary", endpoints.analytics_service);
        pipeline::reads("GET /analytics/summary", summary_url, &processes, 64, seconds).await
    }
    .await;
    deployment.stop().await;
    outcome
}

/// `make bench` on the embedded backends (`orderflow`, one process).
async fn embedded(seconds: u64) -> anyhow::Result<()> {
    let system = deployment::Embedded::start(&deployment::release_binaries()).await?;
    let outcome = async {
        let processes = cpu::Processes::new(&[("orderflow", system.pid())], &[]);
        let endpoints = pipeline::Endpoints {
            order_service: format!("http://127.0.0.1:{}", system.order_port),
            analytics_service: format!("http://127.0.0.1:{}", system.analytics_port),
            notification_worker: format!("http://127.0.0.1:{}", system.notification_port),
            processed_queue: contracts::Queues::default().order_processed,
            database: None,
        };
        println!("== the embedded system (orderflow: SQLite, in-memory caches, in-process bus)");
        pipeline::orders(&endpoints, &processes, 64, seconds, 1).await?;
        let order_url = first_order(&endpoints.order_service).await?;
        pipeline::reads("GET /orders/{id} (cached)", order_url, &processes, 64, seconds).await
    }
    .await;
    system.stop().await;
    outcome
}

/// Creates one order and reads it once (so that it is cached); its URL.
async fn first_order(order_service: &str) -> anyhow::Result<String> {
    let http = reqwest::Client::new();
    let created: serde_json::Value = http
        .post(format!("{order_service}/orders"))
        .header("content-type", "application/json")
        .body(r#"{"customer_id":"bench","product_id":"p","quantity":1,"total_amount":1}"#)
        .send()
        .await?
        .json()
        .await?;
    let id = created["id"].as_str().ok_or_else(|| anyhow::anyhow!("no order id in {created}"))?;
    let url = format!("{order_service}/orders/{id}");
    http.get(&url).send().await?;
    Ok(url)
}

fn setting(name: &str, default: f64) -> f64 {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

/// One minute of the soak.
struct Minute {
    accepted_per_second: f64,
    counted_per_second: f64,
    p50: Duration,
    p99: Duration,
}

async fn soak(deployment: &Deployment) -> anyhow::Result<()> {
    let minutes = setting("SOAK_MINUTES", 10.0).max(1.0) as u32;
    let probe = Probe::connect(deployment).await?;
    let client = Arc::new(OrderClient::new(&deployment.service("order-service").url("")));

    let rate = match std::env::var("SOAK_RATE").ok().and_then(|rate| rate.parse::<f64>().ok()) {
        Some(rate) => rate,
        None => {
            // Capacity: what the whole pipeline counts per second, from the first order of a
            // 20-second flat-out run until the last is counted.
            eprintln!("measuring capacity: 64 clients as fast as answered for 20 s");
            let started = Instant::now();
            let poster = client.clone();
            let created = load::flat_out(64, started + Duration::from_secs(20), move || {
                let poster = poster.clone();
                async move { poster.post().await }
            })
            .await
            .created;
            probe.wait_counted(created, Duration::from_secs(300)).await?;
            let capacity = created as f64 / started.elapsed().as_secs_f64();
            let rate = capacity * setting("SOAK_LOAD", 0.7);
            println!(
                "capacity: {created} orders counted in {:.1} s = {capacity:.0} orders/s; soak at {rate:.0}/s",
                started.elapsed().as_secs_f64()
            );
            rate
        }
    };

    println!(
        "{:>3} {:>10} {:>9} {:>7} {:>7} {:>12} {:>9} {:>9} {:>18} {:>16}",
        "min",
        "accepted/s",
        "counted/s",
        "p50 ms",
        "p99 ms",
        "outbox o/a",
        "inbox",
        "idem keys",
        "RSS o/a/n MiB",
        "queues a/n/p"
    );
    let window: Arc<Mutex<SharedWindow>> = Arc::new(Mutex::new(Arc::default()));
    let started = Instant::now();
    let load = tokio::spawn(load::at_rate(
        client,
        rate,
        started + Duration::from_secs(u64::from(minutes) * 60),
        window.clone(),
    ));
    // The progress line is for people watching; a log of the run gets the table only.
    let watched = std::io::stderr().is_terminal();
    let mut counted_before = probe.counted().await?;
    let mut rows = Vec::new();
    let mut last_sizes = TableSizes::default();
    for minute in 1..=minutes {
        let end = started + Duration::from_secs(u64::from(minute) * 60);
        while Instant::now() < end {
            tokio::time::sleep(Duration::from_secs(2).min(end.saturating_duration_since(Instant::now())))
                .await;
            if !watched {
                continue;
            }
            let current = window.lock().unwrap().clone();
            let accepted = current.lock().unwrap().created;
            let elapsed = started.elapsed().as_secs();
            eprint!("\r  {:>2}:{:02}  minute {minute}: {accepted} accepted  ", elapsed / 60, elapsed % 60);
            let _ = std::io::stderr().flush();
        }
        let finished = std::mem::take(&mut *window.lock().unwrap());
        let counted = probe.counted().await?;
        let sizes = probe.table_sizes().await?;
        let mut seen = std::mem::take(&mut *finished.lock().unwrap());
        let row = Minute {
            accepted_per_second: seen.created as f64 / 60.0,
            counted_per_second: counted.saturating_sub(counted_before) as f64 / 60.0,
            p50: seen.quantile(0.5),
            p99: seen.quantile(0.99),
        };
        counted_before = counted;
        let rss: Vec<String> =
            deployment.services.iter().map(|service| service.pid().map_or(0, rss_mib).to_string()).collect();
        let queues = &deployment.queues;
        let depths = [
            probe.queue_depth(&queues.analytics).await,
            probe.queue_depth(&queues.notifications).await,
            probe.queue_depth(&queues.order_processed).await,
        ];
        if watched {
            eprint!("\r{:60}\r", "");
        }
        println!(
            "{minute:>3} {:>10.0} {:>9.0} {:>7.1} {:>7.1} {:>12} {:>9} {:>9} {:>18} {:>16}{}",
            row.accepted_per_second,
            row.counted_per_second,
            row.p50.as_secs_f64() * 1000.0,
            row.p99.as_secs_f64() * 1000.0,
            format!("{}/{}", sizes.order_outbox, sizes.analytics_outbox),
            sizes.inbox,
            sizes.idempotency_keys,
            rss.join("/"),
            format!("{}/{}/{}", depths[0], depths[1], depths[2]),
            seen.failures(),
        );
        last_sizes = sizes;
        rows.push(row);
    }
    load.await?;

    let (first, last) = (&rows[0], &rows[rows.len() - 1]);
    let change = |a: f64, b: f64| if a > 0.0 { (b - a) / a * 100.0 } else { 0.0 };
    println!(
        "first vs last minute: accepted {:.0} → {:.0}/s ({:+.1} %), counted {:.0} → {:.0}/s ({:+.1} %), p99 {:.1} → {:.1} ms ({:+.1} %)",
        first.accepted_per_second,
        last.accepted_per_second,
        change(first.accepted_per_second, last.accepted_per_second),
        first.counted_per_second,
        last.counted_per_second,
        change(first.counted_per_second, last.counted_per_second),
        first.p99.as_secs_f64() * 1000.0,
        last.p99.as_secs_f64() * 1000.0,
        change(first.p99.as_secs_f64(), last.p99.as_secs_f64()),
    );
    println!(
        "tables at the end: outbox {} (orders) / {} (analytics), inbox {}, idempotency keys {}",
        last_sizes.order_outbox, last_sizes.analytics_outbox, last_sizes.inbox, last_sizes.idempotency_keys
    );
    Ok(())
}

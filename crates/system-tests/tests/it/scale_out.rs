//! Two replicas of every service on a three-node RabbitMQ cluster, under a steady stream of
//! orders, while broker nodes stop (first one leading no queue, then the one leading them all) and
//! one replica of each service is killed with SIGKILL. Afterwards the system must be exact:
//! analytics equals the order database, every order is processed, every notification went out
//! once, nothing is parked. Prints how long each failover took.
//!
//! Needs the cluster of `scripts/rabbitmq4.sh cluster-start` and `TEST_AMQP_URL` pointing at its
//! first node: `make scale-out-test` does both (and stops the cluster afterwards).

use std::{
    collections::{BTreeMap, HashSet},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use serde_json::Value;
use system_tests::{ServiceProcess, System, cents_text, order, sum_cents};
use test_support::eventually;

/// Orders posted per second, spread over both order-service replicas.
const RATE: u64 = 25;
const QUIET: Duration = Duration::from_secs(180);

/// The cluster's AMQP ports (scripts/rabbitmq4.sh: node N on 5680 + N).
fn node_port(node: u8) -> u16 {
    let base: u16 = std::env::var("RABBITMQ4_CLUSTER_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(5680);
    base + u16::from(node)
}

fn node_name(node: u8) -> String {
    format!("orderflow4-c{node}@localhost")
}

/// Runs `scripts/rabbitmq4.sh` with `args`; its standard output.
fn cluster_script(args: &[&str]) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/rabbitmq4.sh");
    let output =
        std::process::Command::new("bash").arg(script).args(args).output().expect("run rabbitmq4.sh");
    assert!(output.status.success(), "rabbitmq4.sh {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The node leading each of the system's queues.
fn queue_leaders(system: &System, through: u8) -> BTreeMap<String, String> {
    let listing = cluster_script(&[
        "node-ctl",
        &through.to_string(),
        "-q",
        "list_queues",
        "name",
        "leader",
        "--formatter",
        "json",
    ]);
    let queues: Vec<Value> = serde_json::from_str(&listing).expect("list_queues JSON");
    queues
        .iter()
        .filter(|queue| queue["name"].as_str().is_some_and(|name| name.starts_with(&system.name)))
        .map(|queue| {
            (queue["name"].as_str().unwrap().to_owned(), queue["leader"].as_str().unwrap_or("").to_owned())
        })
        .collect()
}

/// What the order stream has had accepted so far.
#[derive(Default)]
struct Accepted {
    ids: Vec<String>,
    amounts: Vec<String>,
    refused: Vec<String>,
}

struct Replicas {
    order: ServiceProcess,
    analytics: ServiceProcess,
    notifications: ServiceProcess,
}

/// The second replica of each service. It lists the broker's nodes in another order than the
/// first replicas, so that the two replicas are connected to different nodes.
async fn start_replicas(system: &System) -> Replicas {
    let addresses = [2, 3, 1].map(|node| format!("127.0.0.1:{}", node_port(node))).join(",");
    let with_addresses = |mut env: BTreeMap<String, String>| {
        env.insert("RABBITMQ_ADDRESSES".into(), addresses.clone());
        env
    };
    Replicas {
        order: ServiceProcess::start("order-service", &with_addresses(system.order_env())).await,
        analytics: ServiceProcess::start("analytics-service", &with_addresses(system.analytics_env())).await,
        notifications: ServiceProcess::start("notification-worker", &with_addresses(system.env.clone()))
            .await,
    }
}

/// When each connection of `process` to the broker was made, and to which node (`host:port`).
fn connections(process: &ServiceProcess) -> Vec<(DateTime<Utc>, String)> {
    process
        .logs()
        .iter()
        .filter(|line| line["event"] == "rabbitmq_connected")
        .filter_map(|line| {
            let at = line["timestamp"].as_str()?.parse().ok()?;
            Some((at, line["node"].as_str()?.to_owned()))
        })
        .collect()
}

impl Replicas {
    fn all<'a>(&'a self, system: &'a System) -> [&'a ServiceProcess; 6] {
        [
            &system.order,
            system.analytics(),
            &system.notifications,
            &self.order,
            &self.analytics,
            &self.notifications,
        ]
    }
}

/// Stops cluster node `node` and measures the failover: how long after the stop began each
/// replica that was connected to it had connected to another node (the longest is returned),
/// and how long until analytics had counted every order accepted before the stop.
async fn stop_node_and_measure(
    system: &System,
    replicas: &Replicas,
    accepted: &Mutex<Accepted>,
    node: u8,
) -> (usize, Duration, Duration) {
    let address = format!("127.0.0.1:{}", node_port(node));
    let processes = replicas.all(system);
    let before: Vec<usize> = processes.iter().map(|process| connections(process).len()).collect();
    let affected: Vec<usize> = (0..processes.len())
        .filter(|&i| connections(processes[i]).last().is_some_and(|(_, node)| *node == address))
        .collect();
    let accepted_before = accepted.lock().unwrap().ids.len() as u64;
    let began = Utc::now();
    let since = Instant::now();
    cluster_script(&["node-stop", &node.to_string()]);
    let mut failover = Duration::ZERO;
    for &i in &affected {
        let reconnected =
            eventually(QUIET, &format!("{} to connect to another node", processes[i].name), || async {
                connections(processes[i]).get(before[i]).cloned()
            })
            .await;
        assert_ne!(reconnected.1, address, "{} moved to another node", processes[i].name);
        failover = failover.max((reconnected.0 - began).to_std().unwrap_or_default());
    }
    let caught_up = eventually(QUIET, "analytics to count what was accepted before the stop", || async {
        let total = system.summary().await["total_orders"].as_u64().unwrap_or(0);
        (total >= accepted_before).then(|| since.elapsed())
    })
    .await;
    let readiness: Vec<String> = processes.iter().map(|process| process.url("/readyz")).collect();
    eventually(QUIET, "every replica ready", || async {
        all_ready(&system.client, &readiness).await.then_some(())
    })
    .await;
    (affected.len(), failover, caught_up)
}

async fn all_ready(client: &reqwest::Client, urls: &[String]) -> bool {
    for url in urls {
        match client.get(url).send().await {
            Ok(response) if response.status().is_success() => {}
            _ => return false,
        }
    }
    true
}

#[tokio::test]
#[ignore = "needs the three-node RabbitMQ cluster: make scale-out-test"]
async fn replicas_on_a_three_node_cluster_stay_exact_through_node_losses_and_crashes() {
    let first_addresses = [1, 2, 3].map(|node| format!("127.0.0.1:{}", node_port(node))).join(",");
    let system = System::start_with(system_tests::Options {
        rabbitmq_addresses: Some(first_addresses),
        ..system_tests::Options::default()
    })
    .await;
    let mut replicas = start_replicas(&system).await;
    let accepted = Arc::new(Mutex::new(Accepted::default()));

    // The stream of orders, alternating between the order-service replicas in `targets`.
    let stop = Arc::new(AtomicBool::new(false));
    let targets = Arc::new(Mutex::new(vec![system.order.url("/orders"), replicas.order.url("/orders")]));
    let stream = tokio::spawn({
        let (accepted, stop, targets, client) =
            (accepted.clone(), stop.clone(), targets.clone(), system.client.clone());
        async move {
            let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) {
                ticker.tick().await;
                let amount = format!("{}.{:02}", i % 40 + 1, i % 100);
                let body = order(&format!("c{}", i % 11), &format!("p{}", i % 5), 1, &amount);
                let target = {
                    let targets = targets.lock().unwrap();
                    targets[i % targets.len()].clone()
                };
                match client.post(&target).json(&body).send().await {
                    Ok(response) if response.status().as_u16() == 201 => {
                        let created: Value = response.json().await.expect("order JSON");
                        let mut accepted = accepted.lock().unwrap();
                        accepted.ids.push(created["id"].as_str().unwrap().to_owned());
                        accepted.amounts.push(amount);
                    }
                    Ok(response) => accepted.lock().unwrap().refused.push(response.status().to_string()),
                    Err(error) => accepted.lock().unwrap().refused.push(error.to_string()),
                }
                i += 1;
            }
        }
    });
    let accepted_now = || accepted.lock().unwrap().ids.len();
    tokio::time::sleep(Duration::from_secs(8)).await;

    // First a node that does not lead the analytics queue (the one leading the fewest queues),
    // then the node that does.
    let leaders = queue_leaders(&system, 1);
    let leader_name =
        leaders.get(&system.queue("analytics.orders")).expect("the analytics queue is on the cluster");
    let leader = (1..=3).find(|&node| &node_name(node) == leader_name).expect("the leader is a cluster node");
    let led = |node: u8| leaders.values().filter(|name| **name == node_name(node)).count();
    let follower = (1..=3).filter(|&node| node != leader).min_by_key(|&node| led(node)).unwrap();
    eprintln!("scale-out: {} queues; node 1, 2, 3 lead {}, {}, {}", leaders.len(), led(1), led(2), led(3));
    let mut figures = Vec::new();

    for (what, node) in
        [("a node not leading the analytics queue", follower), ("the analytics queue's leader", leader)]
    {
        let at = accepted_now();
        let (moved, failover, caught_up) = stop_node_and_measure(&system, &replicas, &accepted, node).await;
        eprintln!(
            "scale-out: stopped {what} (node {node}) after {at} orders: the {moved} replicas connected to it \
             were on another node within {:.1} s of the stop, analytics had counted every earlier order \
             {:.1} s after it",
            failover.as_secs_f64(),
            caught_up.as_secs_f64()
        );
        figures.push((what, moved, failover, caught_up));
        tokio::time::sleep(Duration::from_secs(5)).await;
        cluster_script(&["node-start", &node.to_string()]);
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let leaders_after = queue_leaders(&system, follower);
    eprintln!("scale-out: queue leaders after both stops: {leaders_after:?}");

    // One replica of each service dies without a word, and comes back. Orders go to the other
    // order-service replica meanwhile, so that no order is committed unanswered by the kill.
    *targets.lock().unwrap() = vec![system.order.url("/orders")];
    tokio::time::sleep(Duration::from_secs(1)).await;
    let at = accepted_now();
    let since = Instant::now();
    for process in [replicas.order, replicas.analytics, replicas.notifications] {
        process.kill_hard().await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    replicas = start_replicas(&system).await;
    targets.lock().unwrap().push(replicas.order.url("/orders"));
    let readiness: Vec<String> = replicas.all(&system).iter().map(|process| process.url("/readyz")).collect();
    eventually(QUIET, "every replica ready", || async {
        all_ready(&system.client, &readiness).await.then_some(())
    })
    .await;
    let ready = since.elapsed();
    let counted = eventually(QUIET, "analytics to count what was accepted before the kill", || async {
        let total = system.summary().await["total_orders"].as_u64().unwrap_or(0);
        (total >= at as u64).then(|| since.elapsed())
    })
    .await;
    eprintln!(
        "scale-out: killed one replica of each service (SIGKILL) after {at} orders, restarted them 3 s later: \
         every replica ready {:.1} s after the kill, analytics had counted every earlier order {:.1} s after it",
        ready.as_secs_f64(),
        counted.as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(5)).await;

    stop.store(true, Ordering::SeqCst);
    stream.await.unwrap();
    let Accepted { ids, amounts, refused } = std::mem::take(&mut *accepted.lock().unwrap());
    let total = ids.len();
    eprintln!("scale-out: {total} orders accepted");
    assert!(refused.is_empty(), "every POST is answered 201 whatever the broker does: {refused:?}");

    // Exact afterwards: every accepted order counted once, processed, notified once per event.
    let summary = system.wait_for_summary(total as u64, QUIET).await;
    assert_eq!(summary["total_revenue"].to_string(), cents_text(sum_cents(&amounts)), "{summary}");
    let order_db = sqlx::MySqlPool::connect(&system.order_db_url()).await.unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders").fetch_one(&order_db).await.unwrap();
    assert_eq!(stored as usize, total, "the order database holds every accepted order and no other");
    order_db.close().await;
    system.wait_until_every_order_processed(QUIET).await;
    let analytics_db = sqlx::MySqlPool::connect(&system.analytics_db_url()).await.unwrap();
    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COUNT(DISTINCT event_id) FROM processed_events")
            .fetch_one(&analytics_db)
            .await
            .unwrap();
    analytics_db.close().await;
    assert_eq!((rows, distinct), (total as i64, total as i64), "one inbox row per order");
    eventually(QUIET, "every notification", || async {
        (system.webhook.calls().len() >= 2 * total).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Every event notified; more than once only what the killed worker had sent and not yet
    // marked as sent: the sends in flight and the chunk being recorded, each at most
    // `concurrency` (the README's "gaps by nature").
    let calls = system.webhook.calls();
    let once: HashSet<&str> = calls.iter().map(|call| call.event_id.as_str()).collect();
    assert_eq!(once.len(), 2 * total, "every event notified");
    let repeats = calls.len() - once.len();
    let in_hand = 2 * notification_worker::settings::NotificationSettings::default().concurrency;
    assert!(
        repeats <= in_hand,
        "{repeats} repeated notifications, more than the {in_hand} the killed worker had in hand"
    );
    let parked = system.parked_messages().await;
    assert_eq!(parked, 0, "nothing parked");
    eprintln!(
        "scale-out: exact: {total} orders counted and processed once, every event notified ({} webhook calls, \
         {repeats} repeated by the killed worker), \
         nothing parked; broker node stops (replicas moved, longest failover, analytics caught up): {}",
        calls.len(),
        figures
            .iter()
            .map(|(what, moved, failover, counted)| format!(
                "{what}: {moved}, {:.1} s, {:.1} s",
                failover.as_secs_f64(),
                counted.as_secs_f64()
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
    for process in [replicas.order, replicas.analytics, replicas.notifications] {
        process.kill_hard().await;
    }
    system.cleanup().await;
}

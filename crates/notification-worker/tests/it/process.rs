//! The real binary, configured through the environment as in production, against the real
//! Redis and RabbitMQ.

use std::process::Stdio;

use crate::support::{WAIT, cleanup_of, eventually, unique_name};
use notification_worker::settings::Settings;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test]
async fn the_binary_becomes_ready_and_stops_gracefully_on_sigterm() {
    let name = unique_name();
    let mut settings = Settings::default();
    settings.rabbitmq.exchange = format!("{name}.orders");
    settings.queues = test_support::isolated_queues(&name);
    settings.redis.key_prefix = format!("{name}:");
    let _cleanup = cleanup_of(&settings);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_notification-worker"))
        .env_clear()
        .env("REDIS_URL", test_support::redis_url())
        .env("RABBITMQ_URL", test_support::amqp_url())
        .env("SERVICE_PORT", "0")
        .env("ORDERFLOW_HTTP__HOST", "127.0.0.1")
        .env("ORDERFLOW_REDIS__KEY_PREFIX", &settings.redis.key_prefix)
        .env("ORDERFLOW_RABBITMQ__EXCHANGE", &settings.rabbitmq.exchange)
        .env("ORDERFLOW_QUEUES__ANALYTICS", &settings.queues.analytics)
        .env("ORDERFLOW_QUEUES__NOTIFICATIONS", &settings.queues.notifications)
        .env("ORDERFLOW_QUEUES__ORDER_PROCESSED", &settings.queues.order_processed)
        .env("SHUTDOWN_GRACE_PERIOD_SECONDS", "5")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start notification-worker");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

    let port = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let line: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if line["event"] == "listening" {
                return line["port"].as_u64().unwrap();
            }
        }
        panic!("the worker exited before listening");
    })
    .await
    .expect("the worker listens");
    let client = reqwest::Client::new();
    let readyz = format!("http://127.0.0.1:{port}/readyz");
    eventually(WAIT, "the worker to be ready", || async {
        let response = client.get(&readyz).send().await.ok()?;
        (response.status() == 200).then_some(())
    })
    .await;

    let pid = child.id().unwrap().to_string();
    let killed = tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
    assert!(killed.success());
    let status =
        tokio::time::timeout(WAIT, child.wait()).await.expect("exits within the grace period").unwrap();
    assert!(status.success(), "exit status {status}");
    let mut events = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        let line: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        events.push(line["event"].as_str().unwrap_or_default().to_owned());
    }
    assert!(events.contains(&"shutdown_requested".to_owned()), "{events:?}");
    assert!(events.contains(&"stopped".to_owned()), "{events:?}");
}

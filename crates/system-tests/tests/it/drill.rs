//! The outage drill: the release binaries under a steady stream of orders while analytics'
//! database and Redis (the worker's deduplication store, the caches) are away for minutes, far
//! longer than the whole retry schedule. Not part of `make test` (it takes minutes): run it with
//! `make outage-drill`. `DRILL_OUTAGE_SECONDS` (300) and `DRILL_RATE` (orders per second, 20) set
//! its size. It checks that nothing is lost, doubled or parked, and prints what it saw.

use std::time::{Duration, Instant};

use system_tests::{Options, System, cents_text, order, sum_cents};
use test_support::eventually;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

#[tokio::test]
#[ignore = "minutes long: make outage-drill"]
async fn an_outage_of_minutes_under_steady_load_loses_and_parks_nothing() {
    let outage = Duration::from_secs(setting("DRILL_OUTAGE_SECONDS", 300));
    let rate = setting("DRILL_RATE", 20).max(1);
    let before_and_after = Duration::from_secs(30);
    let system = System::start_with(Options { faults: true, ..Options::default() }).await;
    let faults = system.faults.as_ref().expect("fault proxies");

    let mut ids = Vec::new();
    let mut amounts = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    let started = Instant::now();
    let (mut cut_at, mut restored_at) = (None, None);
    // After the outage: when the summary counted every order accepted until it ended.
    let mut accepted_at_restore = 0;
    let mut caught_up: Option<Duration> = None;
    while started.elapsed() < before_and_after * 2 + outage {
        let elapsed = started.elapsed();
        if cut_at.is_none() && elapsed >= before_and_after {
            faults.analytics_db.cut();
            faults.redis.cut();
            cut_at = Some(Instant::now());
            eprintln!("drill: analytics database and Redis cut after {} orders", ids.len());
        }
        if restored_at.is_none() && elapsed >= before_and_after + outage {
            faults.analytics_db.restore();
            faults.redis.restore();
            restored_at = Some(Instant::now());
            accepted_at_restore = ids.len();
            eprintln!(
                "drill: restored after {:.0} s, {} orders accepted so far",
                outage.as_secs_f64(),
                ids.len()
            );
        }
        if let Some(restored) = restored_at
            && caught_up.is_none()
            && system.summary().await["total_orders"].as_u64().unwrap_or(0) >= accepted_at_restore as u64
        {
            caught_up = Some(restored.elapsed());
            eprintln!(
                "drill: the {accepted_at_restore} orders accepted until then were counted {:.1} s after",
                restored.elapsed().as_secs_f64()
            );
        }
        ticker.tick().await;
        let i = ids.len();
        let amount = format!("{}.{:02}", i % 50 + 1, i % 100);
        let (status, created) =
            system.post_order(&order(&format!("d{}", i % 13), "p", 1, &amount), &[]).await;
        assert_eq!(status, 201, "orders are accepted throughout: {created}");
        ids.push(created["id"].as_str().unwrap().to_owned());
        amounts.push(amount);
        if i % (rate as usize * 30) == 0 {
            eprintln!("drill: {:>4.0} s, {} orders accepted", elapsed.as_secs_f64(), ids.len());
        }
    }
    let accepted = ids.len();
    let restored_at = restored_at.expect("the outage ended");

    let quiet = Duration::from_secs(600);
    let summary = system.wait_for_summary(accepted as u64, quiet).await;
    let summary_exact = restored_at.elapsed();
    assert_eq!(summary["total_revenue"].to_string(), cents_text(sum_cents(&amounts)));
    system.wait_until_every_order_processed(quiet).await;
    let all_processed = restored_at.elapsed();
    eventually(quiet, "every notification", || async {
        (system.webhook.calls().len() >= 2 * accepted).then_some(())
    })
    .await;
    let all_notified = restored_at.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let calls = system.webhook.calls();
    let distinct: std::collections::HashSet<&str> = calls.iter().map(|call| call.event_id.as_str()).collect();
    assert_eq!((calls.len(), distinct.len()), (2 * accepted, 2 * accepted), "each event notified once");

    let parked = system.parked_messages().await;
    let mut retried = 0.0;
    for service in [&system.order, system.analytics(), &system.notifications] {
        let metrics = system.client.get(service.url("/metrics")).send().await.unwrap().text().await.unwrap();
        retried += test_support::metric_sum(&metrics, "messages_retried_total", "");
    }
    eprintln!(
        "drill: outage {} s at {rate} orders/s; accepted {accepted}, counted {}, processed {accepted}, \
         notified {}, parked {parked}, retried {retried}; the {accepted_at_restore} orders accepted until \
         the recovery were counted {} after it; the load went on {:.0} s after the recovery, and then: \
         summary exact {:.1} s after the recovery, every order processed {:.1} s after, every \
         notification sent {:.1} s after",
        outage.as_secs(),
        summary["total_orders"],
        calls.len(),
        caught_up
            .map_or("(not while the load ran)".to_owned(), |after| format!("{:.1} s", after.as_secs_f64())),
        before_and_after.as_secs_f64(),
        summary_exact.as_secs_f64(),
        all_processed.as_secs_f64(),
        all_notified.as_secs_f64(),
    );
    assert_eq!(parked, 0, "nothing parked");
    system.cleanup().await;
}

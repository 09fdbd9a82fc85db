//! The store on both databases: every interleaving of an order's creation and cancellation
//! counts once, and inbox entries are forgotten after their retention.

use std::{collections::HashMap, sync::Arc};

use analytics_service::{
    domain::{Effect, Interval, OrderChange, OrderFact, Ranking},
    service::processed_event,
    store::{AnalyticsStore, Incoming, sql::SqlAnalyticsStore, sqlite},
};
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use contracts::Money;
use test_support::{TempDir, TestDatabase};
use uuid::Uuid;

fn fact(customer: &str, product: &str, quantity: u32, minor: i64, created_at: DateTime<Utc>) -> OrderFact {
    OrderFact {
        order_id: Uuid::now_v7(),
        customer_id: customer.into(),
        product_id: product.into(),
        quantity,
        total: Money::from_minor(minor),
        created_at,
    }
}

fn created(fact: &OrderFact) -> Incoming {
    Incoming {
        event_id: Uuid::now_v7(),
        change: OrderChange::Created(fact.clone()),
        processed_event: Some(processed_event(fact)),
    }
}

fn cancelled(fact: &OrderFact) -> Incoming {
    Incoming {
        event_id: Uuid::now_v7(),
        change: OrderChange::Cancelled { order_id: fact.order_id },
        processed_event: None,
    }
}

async fn apply(store: &dyn AnalyticsStore, events: &[&Incoming]) -> Vec<Effect> {
    let batch: Vec<Incoming> = events.iter().map(|event| (*event).clone()).collect();
    store.apply(&batch).await.unwrap().effects
}

async fn every_interleaving_counts_once(store: Arc<dyn AnalyticsStore>) {
    use Effect::*;
    let store = store.as_ref();
    let hour = |h| Utc.with_ymd_and_hms(2026, 1, 9, h, 15, 0).unwrap();
    // The order that stands throughout, and one per interleaving, all cancelled in the end.
    let stands = fact("alice", "p1", 1, 1000, hour(10));
    let (a, b, c, d, e) = (
        fact("alice", "p1", 2, 250, hour(11)),
        fact("bob", "p2", 1, 300, hour(10)),
        fact("carol", "p2", 3, 400, hour(12)),
        fact("dave", "p3", 1, 500, hour(12)),
        fact("alice", "p3", 1, 600, hour(13)),
    );
    assert_eq!(apply(store, &[&created(&stands)]).await, [Counted]);

    // created → cancelled: alice's last order is `stands` again.
    assert_eq!(apply(store, &[&created(&a)]).await, [Counted]);
    let customer = store.customer("alice").await.unwrap().unwrap();
    assert_eq!((customer.total_orders, customer.last_order_at), (2, hour(11)));
    assert_eq!(apply(store, &[&cancelled(&a)]).await, [Cancelled]);
    let customer = store.customer("alice").await.unwrap().unwrap();
    assert_eq!((customer.total_orders, customer.last_order_at), (1, hour(10)));

    // cancelled → created: never counted, and bob never appears.
    assert_eq!(apply(store, &[&cancelled(&b)]).await, [Cancelled]);
    let created_b = created(&b);
    let applied = store.apply(std::slice::from_ref(&created_b)).await.unwrap();
    assert_eq!(
        (applied.effects, applied.emitted.len()),
        (vec![CreatedAfterCancellation], 0),
        "no OrderProcessed"
    );
    assert_eq!(store.customer("bob").await.unwrap(), None);

    // created → cancelled → created again (a redelivery, and the same order under a new event id).
    let created_c = created(&c);
    assert_eq!(apply(store, &[&created_c]).await, [Counted]);
    assert_eq!(apply(store, &[&cancelled(&c)]).await, [Cancelled]);
    assert_eq!(apply(store, &[&created_c, &created(&c)]).await, [NoChange, NoChange]);

    // cancelled → cancelled: the redelivery and another cancellation of the same order.
    assert_eq!(apply(store, &[&created(&d)]).await, [Counted]);
    let cancel_d = cancelled(&d);
    assert_eq!(apply(store, &[&cancel_d]).await, [Cancelled]);
    assert_eq!(apply(store, &[&cancel_d, &cancelled(&d)]).await, [NoChange, NoChange]);

    // Both in one batch, cancellation first.
    assert_eq!(apply(store, &[&cancelled(&e), &created(&e)]).await, [Cancelled, CreatedAfterCancellation]);

    let summary = store.summary().await.unwrap().summary;
    assert_eq!(
        (summary.total_orders, summary.total_quantity, summary.total_revenue, summary.cancelled_orders),
        (1, 1, Money::from_minor(1000), 5),
        "{summary:?}"
    );
    assert_eq!(summary.average_order_value, Money::from_minor(1000));
    // Rows left without a standing order are gone.
    let products = store.top_products(Ranking::Revenue, 10).await.unwrap();
    assert_eq!(products.iter().map(|p| (p.product_id.as_str(), p.orders)).collect::<Vec<_>>(), [("p1", 1)]);
    for customer in ["bob", "carol", "dave"] {
        assert_eq!(store.customer(customer).await.unwrap(), None, "{customer}");
    }
    let from = Utc.with_ymd_and_hms(2026, 1, 9, 0, 0, 0).unwrap();
    let hours = store.series(Interval::Hour, from, from + TimeDelta::days(1)).await.unwrap();
    let ten = Utc.with_ymd_and_hms(2026, 1, 9, 10, 0, 0).unwrap();
    assert_eq!(hours.iter().map(|b| (b.bucket_start, b.orders)).collect::<Vec<_>>(), [(ten, 1)]);
    let days = store.series(Interval::Day, from, from + TimeDelta::days(1)).await.unwrap();
    assert_eq!(
        days.iter().map(|b| (b.bucket_start, b.orders, b.revenue)).collect::<Vec<_>>(),
        [(from, 1, Money::from_minor(1000))]
    );
}

async fn forgets_old_events(store: Arc<dyn AnalyticsStore>) {
    let order = fact("c", "p", 1, 250, Utc::now());
    let event = created(&order);
    assert_eq!(store.apply(std::slice::from_ref(&event)).await.unwrap().effects, [Effect::Counted]);
    assert_eq!(store.apply(std::slice::from_ref(&event)).await.unwrap().effects, [Effect::NoChange]);

    assert_eq!(store.purge_inbox(Utc::now() - TimeDelta::hours(1), 10).await.unwrap(), 0);
    assert_eq!(store.purge_inbox(Utc::now() + TimeDelta::seconds(1), 10).await.unwrap(), 1);
    // Once the inbox has forgotten the event, the ledger still knows the order is counted.
    let recounted = store.apply(&[event]).await.unwrap();
    assert_eq!(recounted.effects, [Effect::NoChange]);
    assert_eq!(recounted.summary.summary.total_orders, 1);
}

/// The summary's revision grows with every change of the figures, cancellations included.
async fn the_revision_grows_with_every_change(store: Arc<dyn AnalyticsStore>) {
    let order = fact("r", "p", 1, 100, Utc::now());
    let mut revisions = HashMap::new();
    for (step, event) in [("created", created(&order)), ("cancelled", cancelled(&order))] {
        revisions.insert(step, store.apply(&[event]).await.unwrap().summary.revision);
    }
    assert!(revisions["cancelled"] > revisions["created"], "{revisions:?}");
}

async fn on_mysql(test: impl AsyncFnOnce(Arc<dyn AnalyticsStore>)) {
    let database = TestDatabase::create().await.unwrap();
    let pool = sqlx::MySqlPool::connect(&database.url()).await.unwrap();
    analytics_service::MIGRATOR.run(&pool).await.unwrap();
    test(Arc::new(SqlAnalyticsStore::new(pool.clone()))).await;
    pool.close().await;
    drop(database);
}

async fn on_sqlite(test: impl AsyncFnOnce(Arc<dyn AnalyticsStore>)) {
    let directory = TempDir::new();
    std::fs::create_dir_all(directory.path()).unwrap();
    let pool = sqlite::open(&directory.path().join("analytics.db")).await.unwrap();
    test(Arc::new(SqlAnalyticsStore::new(pool.clone()))).await;
    pool.close().await;
}

#[tokio::test]
async fn mysql_counts_every_interleaving_once() {
    on_mysql(every_interleaving_counts_once).await;
}

#[tokio::test]
async fn sqlite_counts_every_interleaving_once() {
    on_sqlite(every_interleaving_counts_once).await;
}

#[tokio::test]
async fn mysql_forgets_old_inbox_entries() {
    on_mysql(forgets_old_events).await;
}

#[tokio::test]
async fn sqlite_forgets_old_inbox_entries() {
    on_sqlite(forgets_old_events).await;
}

#[tokio::test]
async fn mysql_revision_grows() {
    on_mysql(the_revision_grows_with_every_change).await;
}

#[tokio::test]
async fn sqlite_revision_grows() {
    on_sqlite(the_revision_grows_with_every_change).await;
}

//! Inbox entries are forgotten after their retention, on both stores.

use std::sync::Arc;

use analytics_service::{
    domain::OrderFact,
    service::processed_event,
    store::{AnalyticsStore, Counted, mysql::MySqlAnalyticsStore, sqlite, sqlite::SqliteAnalyticsStore},
};
use chrono::{TimeDelta, Utc};
use contracts::Money;
use test_support::TestDatabase;

fn counted() -> Counted {
    let fact = OrderFact {
        event_id: uuid::Uuid::now_v7(),
        order_id: uuid::Uuid::now_v7(),
        customer_id: "c".into(),
        product_id: "p".into(),
        quantity: 1,
        total: Money::from_minor(250),
        created_at: Utc::now(),
    };
    Counted { processed_event: processed_event(&fact), fact }
}

async fn forgets_old_events(store: Arc<dyn AnalyticsStore>) {
    let event = counted();
    assert_eq!(store.apply(std::slice::from_ref(&event)).await.unwrap().new, [true]);
    assert_eq!(store.apply(std::slice::from_ref(&event)).await.unwrap().new, [false]);

    assert_eq!(store.purge_inbox(Utc::now() - TimeDelta::hours(1), 10).await.unwrap(), 0);
    assert_eq!(store.purge_inbox(Utc::now() + TimeDelta::seconds(1), 10).await.unwrap(), 1);
    // This is why the retention must outlast any redelivery: a forgotten event counts again.
    let redelivered = Counted { processed_event: processed_event(&event.fact), fact: event.fact.clone() };
    let recounted = store.apply(&[redelivered]).await.unwrap();
    assert_eq!(recounted.new, [true]);
    assert_eq!(recounted.summary.total_orders, 2);
}

#[tokio::test]
async fn mysql_forgets_old_inbox_entries() {
    let database = TestDatabase::create().await.unwrap();
    let pool = sqlx::MySqlPool::connect(&database.url()).await.unwrap();
    analytics_service::MIGRATOR.run(&pool).await.unwrap();
    forgets_old_events(Arc::new(MySqlAnalyticsStore::new(pool.clone()))).await;
    pool.close().await;
    database.drop().await.unwrap();
}

#[tokio::test]
async fn sqlite_forgets_old_inbox_entries() {
    let directory = std::env::temp_dir().join(format!("orderflow-inbox-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&directory).unwrap();
    let pool = sqlite::open(&directory.join("analytics.db")).await.unwrap();
    forgets_old_events(Arc::new(SqliteAnalyticsStore::new(pool.clone()))).await;
    pool.close().await;
    let _ = std::fs::remove_dir_all(&directory);
}

//! Idempotency keys are forgotten after their retention, on both stores.

use std::sync::Arc;

use chrono::{TimeDelta, Utc};
use contracts::Money;
use messaging::OutgoingMessage;
use order_service::{
    domain::{NewOrder, Order},
    store::{
        CreateCommand, Created, IdempotencyClaim, OrderStore, sql::SqlOrderStore, sqlite,
        writer::WriterLimits,
    },
};
use test_support::TestDatabase;

fn command(key: &str) -> CreateCommand {
    let new = NewOrder {
        customer_id: "c".into(),
        product_id: "p".into(),
        quantity: 1,
        total: Money::from_minor(100),
    };
    let fingerprint = new.fingerprint();
    let order = Order::accept(new);
    CreateCommand {
        event: OutgoingMessage {
            event_id: uuid::Uuid::now_v7(),
            event_type: "OrderCreated".into(),
            routing_key: "order.created".into(),
            payload: b"{}".to_vec(),
            headers: Default::default(),
            timestamp: order.created_at,
        },
        order,
        idempotency: Some(IdempotencyClaim { key: key.into(), fingerprint }),
        deadline: tokio::time::Instant::now() + std::time::Duration::from_secs(10),
        gate: Default::default(),
    }
}

const LIMITS: WriterLimits = WriterLimits { writers: 2, batch_size: 16, queue_capacity: 64 };

async fn forgets_old_keys(store: Arc<dyn OrderStore>) {
    assert!(matches!(store.create(command("old-key")).await.unwrap(), Created::New(_)));
    assert!(matches!(store.create(command("old-key")).await.unwrap(), Created::Existing(_)));

    // Nothing is younger than an hour ago: nothing goes.
    assert_eq!(store.purge_idempotency_keys(Utc::now() - TimeDelta::hours(1), 10).await.unwrap(), 0);
    assert_eq!(store.purge_idempotency_keys(Utc::now() + TimeDelta::seconds(1), 10).await.unwrap(), 1);

    // Forgotten, the key creates a new order again.
    assert!(matches!(store.create(command("old-key")).await.unwrap(), Created::New(_)));
}

#[tokio::test]
async fn mysql_forgets_old_idempotency_keys() {
    let database = TestDatabase::create().await.unwrap();
    let pool = sqlx::MySqlPool::connect(&database.url()).await.unwrap();
    order_service::MIGRATOR.run(&pool).await.unwrap();
    forgets_old_keys(Arc::new(SqlOrderStore::new(pool.clone(), LIMITS))).await;
    pool.close().await;
    drop(database);
}

#[tokio::test]
async fn sqlite_forgets_old_idempotency_keys() {
    let directory = std::env::temp_dir().join(format!("orderflow-housekeeping-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&directory).unwrap();
    let pool = sqlite::open(&directory.join("orders.db")).await.unwrap();
    forgets_old_keys(Arc::new(SqlOrderStore::new(pool.clone(), LIMITS))).await;
    pool.close().await;
    let _ = std::fs::remove_dir_all(&directory);
}

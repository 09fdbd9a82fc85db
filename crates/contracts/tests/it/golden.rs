//! The wire format is pinned by golden samples: what we emit and what we accept.

use chrono::{TimeZone, Utc};
use contracts::{ContractError, Envelope, Event, Money, OrderCancelled, OrderCreated, OrderProcessed};
use serde_json::Value;
use uuid::uuid;

const CREATED: &str = include_str!("golden/order_created.json");
const PROCESSED: &str = include_str!("golden/order_processed.json");
const CANCELLED: &str = include_str!("golden/order_cancelled.json");

fn created() -> Envelope<OrderCreated> {
    Envelope::order_created(
        uuid!("0192f5c4-8a2b-7c3d-9e4f-5a6b7c8d9e0f"),
        Utc.with_ymd_and_hms(2026, 1, 9, 12, 34, 56).unwrap(),
        OrderCreated {
            order_id: uuid!("0192f5c4-8a2b-7c3d-9e4f-000000000001"),
            customer_id: "customer-123".into(),
            product_id: "product-456".into(),
            quantity: 2,
            total_amount: Money::from_minor(9999),
        },
    )
}

fn processed() -> Envelope<OrderProcessed> {
    Envelope::order_processed(
        uuid!("0192f5c4-8a2b-7c3d-9e4f-5a6b7c8d9e10"),
        Utc.with_ymd_and_hms(2026, 1, 9, 12, 35, 0).unwrap(),
        OrderProcessed {
            order_id: uuid!("0192f5c4-8a2b-7c3d-9e4f-000000000001"),
            processed_by: "analytics-service".into(),
            metrics_updated: true,
        },
    )
}

fn cancelled() -> Envelope<OrderCancelled> {
    Envelope::order_cancelled(
        uuid!("0192f5c4-8a2b-7c3d-9e4f-5a6b7c8d9e11"),
        Utc.with_ymd_and_hms(2026, 1, 9, 13, 0, 0).unwrap(),
        OrderCancelled {
            order_id: uuid!("0192f5c4-8a2b-7c3d-9e4f-000000000001"),
            reason: Some("ordered twice".into()),
            cancelled_at: Utc.with_ymd_and_hms(2026, 1, 9, 13, 0, 0).unwrap(),
        },
    )
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

#[test]
fn emitted_events_match_the_golden_samples() {
    assert_eq!(json(&serde_json::to_string(&created()).unwrap()), json(CREATED));
    assert_eq!(json(&serde_json::to_string(&processed()).unwrap()), json(PROCESSED));
    assert_eq!(json(&serde_json::to_string(&cancelled()).unwrap()), json(CANCELLED));
}

#[test]
fn golden_samples_parse_into_events() {
    assert_eq!(Event::from_json(CREATED.as_bytes()).unwrap(), Event::OrderCreated(created()));
    assert_eq!(Event::from_json(PROCESSED.as_bytes()).unwrap(), Event::OrderProcessed(processed()));
    assert_eq!(Event::from_json(CANCELLED.as_bytes()).unwrap(), Event::OrderCancelled(cancelled()));
    let without_reason = CANCELLED.replace("\"ordered twice\"", "null");
    let Event::OrderCancelled(parsed) = Event::from_json(without_reason.as_bytes()).unwrap() else {
        panic!()
    };
    assert_eq!(parsed.data.reason, None);
}

#[test]
fn amounts_are_written_as_plain_json_numbers() {
    let text = serde_json::to_string(&created()).unwrap();
    assert!(text.contains(r#""total_amount":99.99"#), "{text}");
}

#[test]
fn unknown_fields_are_ignored() {
    let mut value = json(CREATED);
    value["schema_version"] = Value::from(2);
    value["data"]["currency"] = Value::from("EUR");
    let bytes = serde_json::to_vec(&value).unwrap();
    assert_eq!(Event::from_json(&bytes).unwrap(), Event::OrderCreated(created()));
}

#[test]
fn contract_violations_are_reported() {
    let not_json = Event::from_json(b"{not json");
    assert!(matches!(not_json, Err(ContractError::Malformed(_))));

    let unknown = CREATED.replace("\"OrderCreated\"", "\"OrderShipped\"");
    assert!(
        matches!(Event::from_json(unknown.as_bytes()), Err(ContractError::UnknownEventType(t)) if t == "OrderShipped")
    );

    let missing = CREATED.replace("\"quantity\": 2,", "");
    assert!(matches!(Event::from_json(missing.as_bytes()), Err(ContractError::InvalidPayload { .. })));

    let negative = CREATED.replace("99.99", "-1");
    assert!(matches!(Event::from_json(negative.as_bytes()), Err(ContractError::Violation { .. })));

    let zero_quantity = CREATED.replace("\"quantity\": 2", "\"quantity\": 0");
    assert!(matches!(Event::from_json(zero_quantity.as_bytes()), Err(ContractError::Violation { .. })));

    // Beyond the bounds order-service accepts: no column or sum downstream can take it.
    let huge_quantity = CREATED.replace("\"quantity\": 2", "\"quantity\": 1000001");
    assert!(matches!(Event::from_json(huge_quantity.as_bytes()), Err(ContractError::Violation { .. })));
    let huge_amount = CREATED.replace("99.99", "100000000.01");
    assert!(matches!(Event::from_json(huge_amount.as_bytes()), Err(ContractError::Violation { .. })));
    let long_id = CREATED.replace("product-456", &"p".repeat(129));
    assert!(matches!(Event::from_json(long_id.as_bytes()), Err(ContractError::Violation { .. })));

    let long_reason = CANCELLED.replace("ordered twice", &"r".repeat(501));
    assert!(matches!(Event::from_json(long_reason.as_bytes()), Err(ContractError::Violation { .. })));
    let no_time = CANCELLED.replace("\"cancelled_at\": \"2026-01-09T13:00:00Z\"", "\"cancelled_at\": null");
    assert!(matches!(Event::from_json(no_time.as_bytes()), Err(ContractError::InvalidPayload { .. })));

    let bad_id = CREATED.replace("0192f5c4-8a2b-7c3d-9e4f-5a6b7c8d9e0f", "event-uuid-xxxx");
    assert!(matches!(Event::from_json(bad_id.as_bytes()), Err(ContractError::Malformed(_))));
}

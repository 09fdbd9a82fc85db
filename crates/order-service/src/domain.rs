//! Orders: what a valid order is, and what one looks like once accepted.

use chrono::{DateTime, SubsecRound, Utc};
use contracts::{Money, OrderStatus, limits};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Longest accepted `customer_id` / `product_id` (the event contract's bound).
pub const MAX_ID_LENGTH: usize = limits::MAX_ID_LENGTH;
/// Largest accepted quantity.
pub const MAX_QUANTITY: i64 = limits::MAX_QUANTITY as i64;
/// Largest accepted `total_amount`: 100 million.
pub const MAX_TOTAL: Money = limits::MAX_TOTAL;
/// Longest accepted `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY_LENGTH: usize = 255;

/// `POST /orders` body, as sent.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"customer_id": "customer-123", "product_id": "product-456", "quantity": 2, "total_amount": 99.99}))]
pub struct CreateOrderRequest {
    /// Who orders: at least one character other than white space (which is trimmed), no control
    /// characters.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub customer_id: String,
    /// What is ordered, as `customer_id`.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub product_id: String,
    /// A whole number: `2` or `2.0` (JSON Schema's integer), not `2.5` or `"2"`.
    #[schema(minimum = 1, maximum = 1_000_000)]
    #[serde(deserialize_with = "whole_number")]
    pub quantity: i64,
    /// The order's total, more than 0 and at most 100000000.
    #[schema(schema_with = order_total_schema)]
    pub total_amount: Money,
}

fn order_total_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::Number))
        .multiple_of(Some(0.01))
        .exclusive_minimum(Some(0))
        .maximum(Some(MAX_TOTAL.minor() / 100))
        .description(Some(
            "An exact decimal amount with at most 2 decimal places, written as a JSON number (99.99) or a \
             string (\"99.99\").",
        ))
        .build()
}

/// A JSON number without a fractional part, as JSON Schema's `integer` has it (`2.0` is `2`).
/// Values beyond `i64` saturate, so that the range check names them.
fn whole_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    if let Some(whole) = number.as_i64() {
        return Ok(whole);
    }
    match number.as_f64() {
        Some(value) if value.fract() == 0.0 => Ok(value as i64),
        _ => Err(serde::de::Error::custom(format!("{number} is not a whole number"))),
    }
}

/// A request that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub customer_id: String,
    pub product_id: String,
    pub quantity: u32,
    pub total: Money,
}

/// Which field is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValidationError {
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> ValidationError {
    ValidationError { field, message: message.into() }
}

fn identifier(field: &'static str, value: &str) -> Result<String, ValidationError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(invalid(field, format!("{field} must not be empty")));
    }
    if value.chars().count() > MAX_ID_LENGTH {
        return Err(invalid(field, format!("{field} must be at most {MAX_ID_LENGTH} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(field, format!("{field} must not contain control characters")));
    }
    Ok(value.to_owned())
}

impl NewOrder {
    pub fn parse(request: CreateOrderRequest) -> Result<NewOrder, ValidationError> {
        let customer_id = identifier("customer_id", &request.customer_id)?;
        let product_id = identifier("product_id", &request.product_id)?;
        if request.quantity < 1 {
            return Err(invalid("quantity", "quantity must be at least 1"));
        }
        if request.quantity > MAX_QUANTITY {
            return Err(invalid("quantity", format!("quantity must be at most {MAX_QUANTITY}")));
        }
        if request.total_amount <= Money::ZERO {
            return Err(invalid("total_amount", "total_amount must be greater than 0"));
        }
        if request.total_amount > MAX_TOTAL {
            return Err(invalid("total_amount", format!("total_amount must be at most {MAX_TOTAL}")));
        }
        Ok(NewOrder {
            customer_id,
            product_id,
            quantity: request.quantity as u32,
            total: request.total_amount,
        })
    }

    /// Identifies the request's content for idempotency checks: same key, same fingerprint.
    pub fn fingerprint(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        for part in [self.customer_id.as_bytes(), self.product_id.as_bytes()] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part);
        }
        hash.update(self.quantity.to_be_bytes());
        hash.update(self.total.minor().to_be_bytes());
        hash.finalize().into()
    }
}

/// Longest accepted cancellation `reason` (the event contract's bound).
pub const MAX_REASON_LENGTH: usize = limits::MAX_REASON_LENGTH;

/// `POST /orders/{id}/cancel` body, as sent (the body may be left out).
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"reason": "ordered twice"}))]
pub struct CancelOrderRequest {
    /// Why, for the record and the notifications: at most 500 characters, no control characters
    /// other than line breaks and tabs; white space around it is trimmed, and a reason of only
    /// white space is no reason.
    #[schema(max_length = 500)]
    #[serde(default)]
    pub reason: Option<String>,
}

/// A cancellation that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cancellation {
    pub order_id: Uuid,
    pub reason: Option<String>,
}

impl Cancellation {
    pub fn parse(order_id: Uuid, request: CancelOrderRequest) -> Result<Cancellation, ValidationError> {
        let reason =
            request.reason.map(|reason| reason.trim().to_owned()).filter(|reason| !reason.is_empty());
        if let Some(reason) = &reason {
            if reason.chars().count() > MAX_REASON_LENGTH {
                return Err(invalid(
                    "reason",
                    format!("reason must be at most {MAX_REASON_LENGTH} characters"),
                ));
            }
            if reason.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
                return Err(invalid("reason", "reason must not contain control characters"));
            }
        }
        Ok(Cancellation { order_id, reason })
    }

    /// Identifies the request for idempotency checks, apart from any order's creation.
    pub fn fingerprint(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        hash.update(b"cancel");
        hash.update(self.order_id.as_bytes());
        match &self.reason {
            Some(reason) => {
                hash.update([1]);
                hash.update(reason.as_bytes());
            }
            None => hash.update([0]),
        }
        hash.finalize().into()
    }
}

/// Checks an `Idempotency-Key` header value: 1–255 visible ASCII characters.
pub fn parse_idempotency_key(value: &[u8]) -> Result<String, ValidationError> {
    let valid = !value.is_empty()
        && value.len() <= MAX_IDEMPOTENCY_KEY_LENGTH
        && value.iter().all(|b| b.is_ascii_graphic());
    if !valid {
        return Err(invalid(
            "Idempotency-Key",
            format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} visible ASCII characters"),
        ));
    }
    Ok(String::from_utf8_lossy(value).into_owned())
}

/// An accepted order, as stored and as answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "id": "0192f5c4-8a2b-7c3d-9e4f-5a6b7c8d9e0f", "customer_id": "customer-123", "product_id": "product-456",
    "quantity": 2, "total_amount": 99.99, "status": "created",
    "created_at": "2026-11-30T12:00:00.123456Z", "updated_at": "2026-11-30T12:00:00.123456Z"
}))]
pub struct Order {
    pub id: Uuid,
    pub customer_id: String,
    pub product_id: String,
    pub quantity: u32,
    pub total_amount: Money,
    pub status: OrderStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Order {
    /// A new order with a fresh UUIDv7 id, created now (at the database's microsecond precision).
    pub fn accept(new: NewOrder) -> Order {
        let now = Utc::now().trunc_subsecs(6);
        Order {
            id: Uuid::now_v7(),
            customer_id: new.customer_id,
            product_id: new.product_id,
            quantity: new.quantity,
            total_amount: new.total,
            status: OrderStatus::Created,
            created_at: now,
            updated_at: now,
        }
    }

    /// Cache version: an order only moves forward, and each move sets a later update time, so
    /// its last update time orders its versions.
    pub fn version(&self) -> i64 {
        self.updated_at.timestamp_micros()
    }

    /// The update time of a move made at `at`: later than the last one even if this replica's
    /// clock is behind the one that made it, so that versions keep their order.
    pub fn next_update_time(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        at.trunc_subsecs(6).max(self.updated_at + chrono::TimeDelta::microseconds(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(customer: &str, product: &str, quantity: i64, total: &str) -> CreateOrderRequest {
        CreateOrderRequest {
            customer_id: customer.into(),
            product_id: product.into(),
            quantity,
            total_amount: Money::parse(total).unwrap(),
        }
    }

    #[test]
    fn accepts_a_valid_order() {
        let order = NewOrder::parse(request(" customer-123 ", "product-456", 2, "99.99")).unwrap();
        assert_eq!(order.customer_id, "customer-123");
        assert_eq!(order.total, Money::from_minor(9999));
    }

    #[test]
    fn names_the_invalid_field() {
        let long = "x".repeat(MAX_ID_LENGTH + 1);
        for (req, field) in [
            (request("", "p", 1, "1"), "customer_id"),
            (request("   ", "p", 1, "1"), "customer_id"),
            (request(&long, "p", 1, "1"), "customer_id"),
            (request("c", "", 1, "1"), "product_id"),
            (request("c", "p\u{7}", 1, "1"), "product_id"),
            (request("c", "p", 0, "1"), "quantity"),
            (request("c", "p", -3, "1"), "quantity"),
            (request("c", "p", MAX_QUANTITY + 1, "1"), "quantity"),
            (request("c", "p", 1, "0"), "total_amount"),
            (request("c", "p", 1, "-5"), "total_amount"),
            (request("c", "p", 1, "100000000.01"), "total_amount"),
        ] {
            assert_eq!(NewOrder::parse(req).unwrap_err().field, field);
        }
    }

    #[test]
    fn fingerprint_tells_requests_apart() {
        let fingerprint = |customer, product, quantity, total| {
            NewOrder::parse(request(customer, product, quantity, total)).unwrap().fingerprint()
        };
        let a = fingerprint("ab", "c", 1, "1");
        assert_eq!(a, fingerprint("ab", "c", 1, "1.00"), "the same order, written another way");
        // Each field counts, and the ids' boundary too: "ab"+"c" is not "a"+"bc".
        for other in [
            fingerprint("a", "bc", 1, "1"),
            fingerprint("ab", "d", 1, "1"),
            fingerprint("ab", "c", 2, "1"),
            fingerprint("ab", "c", 1, "1.01"),
        ] {
            assert_ne!(a, other);
        }
    }

    #[test]
    fn idempotency_keys_are_checked() {
        assert_eq!(parse_idempotency_key(b"abc-123").unwrap(), "abc-123");
        assert!(parse_idempotency_key(b"").is_err());
        assert!(parse_idempotency_key(b"has space").is_err());
        assert!(parse_idempotency_key(&[b'a'; 256]).is_err());
    }

    #[test]
    fn a_cancellation_reason_is_bounded_and_trimmed() {
        let id = Uuid::now_v7();
        let parse = |reason: Option<&str>| {
            Cancellation::parse(id, CancelOrderRequest { reason: reason.map(Into::into) })
        };
        assert_eq!(parse(Some("  twice \n")).unwrap().reason.as_deref(), Some("twice"));
        assert_eq!(parse(Some("   ")).unwrap().reason, None, "white space only is no reason");
        assert_eq!(parse(None).unwrap().reason, None);
        assert_eq!(
            parse(Some("line one\nline two\ttab")).unwrap().reason.as_deref(),
            Some("line one\nline two\ttab")
        );
        assert_eq!(parse(Some(&"é".repeat(500))).unwrap().reason.map(|r| r.chars().count()), Some(500));
        assert_eq!(parse(Some(&"é".repeat(501))).unwrap_err().field, "reason");
        assert_eq!(parse(Some("a\u{7}b")).unwrap_err().field, "reason");
    }

    #[test]
    fn a_cancellation_fingerprint_tells_requests_apart() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let fingerprint = |id, reason: Option<&str>| {
            Cancellation { order_id: id, reason: reason.map(Into::into) }.fingerprint()
        };
        assert_eq!(fingerprint(a, Some("x")), fingerprint(a, Some("x")));
        assert_ne!(fingerprint(a, Some("x")), fingerprint(b, Some("x")), "another order");
        assert_ne!(fingerprint(a, Some("x")), fingerprint(a, Some("y")), "another reason");
        assert_ne!(fingerprint(a, None), fingerprint(a, Some("")), "no reason is not an empty one");
    }
}

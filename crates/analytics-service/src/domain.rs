//! What analytics counts, and how a batch of orders changes the counts.

use std::collections::BTreeMap;

use chrono::{DateTime, DurationRound, NaiveDate, TimeDelta, Utc};
use contracts::{Envelope, Money, OrderCreated};
use serde::Serialize;
use uuid::Uuid;

/// One order as analytics sees it: the facts of its `OrderCreated` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderFact {
    pub event_id: Uuid,
    pub order_id: Uuid,
    pub customer_id: String,
    pub product_id: String,
    pub quantity: u32,
    pub total: Money,
    /// When the order was created (the event's timestamp); places it in the time series.
    pub created_at: DateTime<Utc>,
}

impl From<&Envelope<OrderCreated>> for OrderFact {
    fn from(event: &Envelope<OrderCreated>) -> Self {
        OrderFact {
            event_id: event.event_id,
            order_id: event.data.order_id,
            customer_id: event.data.customer_id.clone(),
            product_id: event.data.product_id.clone(),
            quantity: event.data.quantity,
            total: event.data.total_amount,
            created_at: event.timestamp,
        }
    }
}

/// `GET /analytics/summary`: every order counted so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"total_orders": 2, "total_revenue": 199.98, "average_order_value": 99.99,
    "total_quantity": 4, "last_updated": "2026-11-30T12:00:01.5Z"}))]
pub struct Summary {
    pub total_orders: i64,
    pub total_revenue: Money,
    /// `total_revenue / total_orders` to the cent, halves rounded away from zero; 0 without orders.
    pub average_order_value: Money,
    pub total_quantity: i64,
    /// When the last counted order was counted; `null` before the first.
    pub last_updated: Option<DateTime<Utc>>,
}

impl Summary {
    pub fn new(
        total_orders: i64,
        total_quantity: i64,
        revenue_minor: i64,
        last_updated: Option<DateTime<Utc>>,
    ) -> Self {
        Summary {
            total_orders,
            total_revenue: Money::from_minor(revenue_minor),
            average_order_value: average(revenue_minor, total_orders),
            total_quantity,
            last_updated,
        }
    }
}

/// `revenue / orders` to the cent, halves rounded away from zero; 0 when there are no orders.
pub fn average(revenue_minor: i64, orders: i64) -> Money {
    if orders <= 0 {
        return Money::ZERO;
    }
    let (revenue, orders) = (i128::from(revenue_minor), i128::from(orders));
    let rounded = (2 * revenue + orders).div_euclid(2 * orders);
    Money::from_minor(rounded as i64)
}

/// One product's totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ProductTotal {
    pub product_id: String,
    pub orders: i64,
    pub quantity: i64,
    pub revenue: Money,
}

/// One customer's totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CustomerTotal {
    pub customer_id: String,
    pub total_orders: i64,
    pub total_quantity: i64,
    pub total_revenue: Money,
    pub average_order_value: Money,
    pub first_order_at: DateTime<Utc>,
    pub last_order_at: DateTime<Utc>,
}

/// The orders of one hour or day, by the time they were created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Bucket {
    pub bucket_start: DateTime<Utc>,
    pub orders: i64,
    pub revenue: Money,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ranking {
    Revenue,
    Quantity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    Hour,
    Day,
}

impl Interval {
    pub fn length(self) -> TimeDelta {
        match self {
            Interval::Hour => TimeDelta::hours(1),
            Interval::Day => TimeDelta::days(1),
        }
    }

    /// The start of the bucket holding `at`.
    pub fn bucket_of(self, at: DateTime<Utc>) -> DateTime<Utc> {
        at.duration_trunc(self.length()).unwrap_or(at)
    }
}

/// Running totals of some group of orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    pub orders: i64,
    pub quantity: i64,
    pub revenue_minor: i64,
}

impl Totals {
    fn add(&mut self, fact: &OrderFact) {
        self.orders += 1;
        self.quantity += i64::from(fact.quantity);
        self.revenue_minor += fact.total.minor();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CustomerDelta {
    pub totals: Totals,
    pub first_order_at: DateTime<Utc>,
    pub last_order_at: DateTime<Utc>,
}

/// How a batch of new orders changes every aggregate, grouped so that each aggregate row is
/// written once per batch. Keys are sorted: concurrent batches lock rows in the same order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BatchDelta {
    pub totals: Totals,
    pub products: BTreeMap<String, Totals>,
    pub customers: BTreeMap<String, CustomerDelta>,
    pub hours: BTreeMap<DateTime<Utc>, Totals>,
    pub days: BTreeMap<NaiveDate, Totals>,
}

impl BatchDelta {
    pub fn of(facts: &[&OrderFact]) -> BatchDelta {
        let mut delta = BatchDelta::default();
        for fact in facts {
            delta.totals.add(fact);
            delta.products.entry(fact.product_id.clone()).or_default().add(fact);
            delta
                .customers
                .entry(fact.customer_id.clone())
                .and_modify(|c| {
                    c.totals.add(fact);
                    c.first_order_at = c.first_order_at.min(fact.created_at);
                    c.last_order_at = c.last_order_at.max(fact.created_at);
                })
                .or_insert_with(|| {
                    let mut totals = Totals::default();
                    totals.add(fact);
                    CustomerDelta { totals, first_order_at: fact.created_at, last_order_at: fact.created_at }
                });
            delta.hours.entry(Interval::Hour.bucket_of(fact.created_at)).or_default().add(fact);
            delta.days.entry(fact.created_at.date_naive()).or_default().add(fact);
        }
        delta
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn fact(customer: &str, product: &str, quantity: u32, minor: i64, hour: u32) -> OrderFact {
        OrderFact {
            event_id: Uuid::now_v7(),
            order_id: Uuid::now_v7(),
            customer_id: customer.into(),
            product_id: product.into(),
            quantity,
            total: Money::from_minor(minor),
            created_at: Utc.with_ymd_and_hms(2026, 1, 9, hour, 30, 0).unwrap(),
        }
    }

    #[test]
    fn average_rounds_half_away_from_zero_exactly() {
        assert_eq!(average(0, 0), Money::ZERO);
        assert_eq!(average(1000, 3), Money::from_minor(333));
        assert_eq!(average(2000, 3), Money::from_minor(667));
        assert_eq!(average(5, 2), Money::from_minor(3));
        assert_eq!(average(1245050, 42), Money::from_minor(29644));
        assert_eq!(average(i64::MAX, 1), Money::from_minor(i64::MAX));
    }

    #[test]
    fn a_batch_is_grouped_per_aggregate() {
        let facts =
            [fact("alice", "p1", 2, 1000, 10), fact("bob", "p1", 1, 250, 11), fact("alice", "p2", 3, 99, 10)];
        let refs: Vec<&OrderFact> = facts.iter().collect();
        let delta = BatchDelta::of(&refs);
        assert_eq!(delta.totals, Totals { orders: 3, quantity: 6, revenue_minor: 1349 });
        assert_eq!(delta.products["p1"], Totals { orders: 2, quantity: 3, revenue_minor: 1250 });
        assert_eq!(delta.customers["alice"].totals, Totals { orders: 2, quantity: 5, revenue_minor: 1099 });
        assert_eq!(delta.hours.len(), 2);
        assert_eq!(delta.hours[&Utc.with_ymd_and_hms(2026, 1, 9, 10, 0, 0).unwrap()].orders, 2);
        assert_eq!(delta.days.len(), 1);
    }
}

//! What analytics counts, and how a batch of order events changes the counts.
//!
//! The figures count the orders that stand: created and not cancelled. Events of one order can
//! arrive in any order and more than once, so each order has an entry in a ledger (its facts
//! once its `OrderCreated` has arrived, whether it was cancelled), and [`plan`] decides from the
//! entries what a batch changes.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, DurationRound, NaiveDate, TimeDelta, Utc};
use contracts::{Envelope, Money, OrderCreated};
use serde::Serialize;
use uuid::Uuid;

/// One order as analytics sees it: the facts of its `OrderCreated` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderFact {
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
            order_id: event.data.order_id,
            customer_id: event.data.customer_id.clone(),
            product_id: event.data.product_id.clone(),
            quantity: event.data.quantity,
            total: event.data.total_amount,
            created_at: event.timestamp,
        }
    }
}

/// `GET /analytics/summary`: the orders that stand (created and not cancelled), and how many
/// were cancelled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"total_orders": 2, "total_revenue": 199.98, "average_order_value": 99.99,
    "total_quantity": 4, "cancelled_orders": 1, "last_updated": "2026-11-30T12:00:01.5Z"}))]
pub struct Summary {
    /// Orders created and not cancelled.
    pub total_orders: i64,
    /// Their total.
    pub total_revenue: Money,
    /// `total_revenue / total_orders` to the cent, halves rounded away from zero; 0 without orders.
    pub average_order_value: Money,
    /// Their items.
    pub total_quantity: i64,
    /// Orders cancelled (counted from their cancellation, whether or not their creation has
    /// arrived yet).
    pub cancelled_orders: i64,
    /// When the figures last changed; `null` before the first event.
    pub last_updated: Option<DateTime<Utc>>,
}

impl Summary {
    pub fn new(totals: Totals, cancelled_orders: i64, last_updated: Option<DateTime<Utc>>) -> Self {
        Summary {
            total_orders: totals.orders,
            total_revenue: Money::from_minor(totals.revenue_minor),
            average_order_value: average(totals.revenue_minor, totals.orders),
            total_quantity: totals.quantity,
            cancelled_orders,
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

/// Totals of some group of orders; in a [`BatchDelta`], what a batch adds (or, negative, takes
/// away).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    pub orders: i64,
    pub quantity: i64,
    pub revenue_minor: i64,
}

impl Totals {
    /// Adds `fact` (`sign` 1) or takes it away (`sign` -1).
    fn add(&mut self, fact: &OrderFact, sign: i64) {
        self.orders += sign;
        self.quantity += sign * i64::from(fact.quantity);
        self.revenue_minor += sign * fact.total.minor();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CustomerDelta {
    pub totals: Totals,
    pub first_order_at: DateTime<Utc>,
    pub last_order_at: DateTime<Utc>,
}

/// How a batch changes every aggregate, grouped so that each aggregate row is written once per
/// batch. Keys are sorted: concurrent batches lock rows in the same order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BatchDelta {
    pub totals: Totals,
    pub products: BTreeMap<String, Totals>,
    pub customers: BTreeMap<String, CustomerDelta>,
    pub hours: BTreeMap<DateTime<Utc>, Totals>,
    pub days: BTreeMap<NaiveDate, Totals>,
    /// Rows that lost an order: each may have dropped to no order at all (and then goes), and a
    /// customer's first and last order times are read again from the orders that stand.
    pub shrunk: Shrunk,
}

/// The aggregate rows a batch took orders from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Shrunk {
    pub products: BTreeSet<String>,
    pub customers: BTreeSet<String>,
    pub hours: BTreeSet<DateTime<Utc>>,
    pub days: BTreeSet<NaiveDate>,
}

impl BatchDelta {
    pub fn of(facts: &[&OrderFact]) -> BatchDelta {
        let mut delta = BatchDelta::default();
        for fact in facts {
            delta.add(fact);
        }
        delta
    }

    /// Counts `fact`.
    pub fn add(&mut self, fact: &OrderFact) {
        self.change(fact, 1);
        self.customers
            .entry(fact.customer_id.clone())
            .and_modify(|c| {
                c.first_order_at = c.first_order_at.min(fact.created_at);
                c.last_order_at = c.last_order_at.max(fact.created_at);
            })
            .or_insert_with(|| CustomerDelta {
                totals: Totals::default(),
                first_order_at: fact.created_at,
                last_order_at: fact.created_at,
            })
            .totals
            .add(fact, 1);
    }

    /// Takes `fact`, counted before, away.
    pub fn subtract(&mut self, fact: &OrderFact) {
        self.change(fact, -1);
        self.customers
            .entry(fact.customer_id.clone())
            .or_insert_with(|| CustomerDelta {
                totals: Totals::default(),
                first_order_at: fact.created_at,
                last_order_at: fact.created_at,
            })
            .totals
            .add(fact, -1);
        let hour = Interval::Hour.bucket_of(fact.created_at);
        self.shrunk.products.insert(fact.product_id.clone());
        self.shrunk.customers.insert(fact.customer_id.clone());
        self.shrunk.hours.insert(hour);
        self.shrunk.days.insert(fact.created_at.date_naive());
    }

    fn change(&mut self, fact: &OrderFact, sign: i64) {
        self.totals.add(fact, sign);
        self.products.entry(fact.product_id.clone()).or_default().add(fact, sign);
        self.hours.entry(Interval::Hour.bucket_of(fact.created_at)).or_default().add(fact, sign);
        self.days.entry(fact.created_at.date_naive()).or_default().add(fact, sign);
    }
}

/// One order in the ledger: its facts once its `OrderCreated` has arrived, and when it was
/// cancelled once its `OrderCancelled` has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub order_id: Uuid,
    pub fact: Option<OrderFact>,
    pub cancelled_at: Option<DateTime<Utc>>,
}

impl LedgerEntry {
    /// Counted in the figures: created and not cancelled.
    pub fn stands(&self) -> bool {
        self.fact.is_some() && self.cancelled_at.is_none()
    }
}

/// A change to an order, as a new event (not seen before) announces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderChange {
    Created(OrderFact),
    Cancelled { order_id: Uuid },
}

impl OrderChange {
    pub fn order_id(&self) -> Uuid {
        match self {
            OrderChange::Created(fact) => fact.order_id,
            OrderChange::Cancelled { order_id } => *order_id,
        }
    }
}

/// What an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// The order is counted now.
    Counted,
    /// The order had been cancelled before its creation arrived: recorded, never counted.
    CreatedAfterCancellation,
    /// The order is cancelled now: taken out of the figures if it was counted.
    Cancelled,
    /// The order was in that state already (its creation, or its cancellation, arrived before
    /// under another event id): nothing changes.
    NoChange,
}

/// What a batch of new events does: an effect per event, the ledger entries to write, the change
/// of every aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub effects: Vec<Effect>,
    /// Orders not in the ledger before.
    pub inserted: Vec<LedgerEntry>,
    /// Orders in the ledger before, as they are after the batch, with what they were.
    pub updated: Vec<(LedgerEntry, LedgerEntry)>,
    pub delta: BatchDelta,
    pub cancelled: i64,
}

/// Applies `changes`, in their order, to the ledger entries `before` (the orders they concern
/// that are in the ledger); a cancellation is recorded as taken in at `now`.
pub fn plan(before: &HashMap<Uuid, LedgerEntry>, changes: &[OrderChange], now: DateTime<Utc>) -> Plan {
    let mut plan = Plan::default();
    // Entries as the batch leaves them, in the order first met.
    let mut after: Vec<LedgerEntry> = Vec::new();
    let mut index: HashMap<Uuid, usize> = HashMap::new();
    for change in changes {
        let order_id = change.order_id();
        let position = *index.entry(order_id).or_insert_with(|| {
            after.push(before.get(&order_id).cloned().unwrap_or(LedgerEntry {
                order_id,
                fact: None,
                cancelled_at: None,
            }));
            after.len() - 1
        });
        let entry = &mut after[position];
        let effect = match change {
            OrderChange::Created(_) if entry.fact.is_some() => Effect::NoChange,
            OrderChange::Created(fact) => {
                entry.fact = Some(fact.clone());
                if entry.cancelled_at.is_some() {
                    Effect::CreatedAfterCancellation
                } else {
                    plan.delta.add(fact);
                    Effect::Counted
                }
            }
            OrderChange::Cancelled { .. } if entry.cancelled_at.is_some() => Effect::NoChange,
            OrderChange::Cancelled { .. } => {
                if let Some(fact) = &entry.fact {
                    plan.delta.subtract(fact);
                }
                entry.cancelled_at = Some(now);
                plan.cancelled += 1;
                Effect::Cancelled
            }
        };
        plan.effects.push(effect);
    }
    for entry in after {
        match before.get(&entry.order_id) {
            None => plan.inserted.push(entry),
            Some(was) if *was != entry => plan.updated.push((was.clone(), entry)),
            Some(_) => {}
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn fact(customer: &str, product: &str, quantity: u32, minor: i64, hour: u32) -> OrderFact {
        OrderFact {
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

    fn cancel(fact: &OrderFact) -> OrderChange {
        OrderChange::Cancelled { order_id: fact.order_id }
    }

    /// Plays `batches` one after the other through a ledger; returns the effects and what the
    /// figures moved by in all.
    fn play(batches: &[Vec<OrderChange>]) -> (Vec<Effect>, Totals, i64) {
        let mut ledger: HashMap<Uuid, LedgerEntry> = HashMap::new();
        let (mut effects, mut totals, mut cancelled) = (Vec::new(), Totals::default(), 0);
        for batch in batches {
            let plan = plan(&ledger, batch, Utc::now());
            effects.extend(plan.effects);
            totals.orders += plan.delta.totals.orders;
            totals.quantity += plan.delta.totals.quantity;
            totals.revenue_minor += plan.delta.totals.revenue_minor;
            cancelled += plan.cancelled;
            for entry in plan.inserted.into_iter().chain(plan.updated.into_iter().map(|(_, after)| after)) {
                ledger.insert(entry.order_id, entry);
            }
        }
        (effects, totals, cancelled)
    }

    #[test]
    fn every_interleaving_of_creation_and_cancellation_counts_once() {
        use Effect::*;
        let order = fact("alice", "p1", 2, 1000, 10);
        let created = OrderChange::Created(order.clone());
        let cancelled = cancel(&order);
        let standing = Totals { orders: 1, quantity: 2, revenue_minor: 1000 };
        let gone = Totals::default();
        /// A name, batches played in turn, then the effects, figures and cancellations expected.
        type Case<'a> = (&'a str, Vec<Vec<OrderChange>>, Vec<Effect>, Totals, i64);
        let cases: Vec<Case<'_>> = vec![
            ("created", vec![vec![created.clone()]], vec![Counted], standing, 0),
            (
                "created, cancelled",
                vec![vec![created.clone()], vec![cancelled.clone()]],
                vec![Counted, Cancelled],
                gone,
                1,
            ),
            (
                "cancelled, created",
                vec![vec![cancelled.clone()], vec![created.clone()]],
                vec![Cancelled, CreatedAfterCancellation],
                gone,
                1,
            ),
            (
                "created, cancelled, created again",
                vec![vec![created.clone()], vec![cancelled.clone()], vec![created.clone()]],
                vec![Counted, Cancelled, NoChange],
                gone,
                1,
            ),
            (
                "cancelled twice",
                vec![vec![cancelled.clone()], vec![cancelled.clone()]],
                vec![Cancelled, NoChange],
                gone,
                1,
            ),
            (
                "both in one batch",
                vec![vec![created.clone(), cancelled.clone(), created.clone()]],
                vec![Counted, Cancelled, NoChange],
                gone,
                1,
            ),
            (
                "cancellation first, in one batch",
                vec![vec![cancelled.clone(), created.clone()]],
                vec![Cancelled, CreatedAfterCancellation],
                gone,
                1,
            ),
        ];
        for (name, batches, effects, totals, cancelled_orders) in cases {
            assert_eq!(play(&batches), (effects, totals, cancelled_orders), "{name}");
        }
    }

    #[test]
    fn a_cancellation_shrinks_the_rows_of_the_order() {
        let order = fact("alice", "p1", 2, 1000, 10);
        let before = HashMap::from([(
            order.order_id,
            LedgerEntry { order_id: order.order_id, fact: Some(order.clone()), cancelled_at: None },
        )]);
        let plan = plan(&before, &[cancel(&order)], Utc::now());
        assert_eq!(plan.delta.products["p1"], Totals { orders: -1, quantity: -2, revenue_minor: -1000 });
        assert_eq!(plan.delta.customers["alice"].totals.orders, -1);
        assert!(plan.delta.shrunk.customers.contains("alice") && plan.delta.shrunk.products.contains("p1"));
        assert_eq!(plan.delta.shrunk.hours.len(), 1);
        assert!(plan.inserted.is_empty());
        let (was, now) = &plan.updated[0];
        assert!(was.stands() && !now.stands());
    }
}

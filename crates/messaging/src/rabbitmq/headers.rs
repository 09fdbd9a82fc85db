//! AMQP headers the adapter reads and writes.

use std::collections::BTreeMap;

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

/// Retries a delivery has been through (owned by this adapter, written on each retry copy).
pub const RETRY_COUNT: &str = "x-retry-count";
pub use crate::parked::headers::{DEATH_REASON, FAILED_AT, ORIGINAL_ROUTING_KEY};
/// A reason other tools put on parked messages.
pub const ERROR: &str = "x-error";
/// The broker's own reason for the first dead-lettering (`delivery_limit`, `rejected`, …).
pub const FIRST_DEATH_REASON: &str = "x-first-death-reason";

/// The text value of a string header.
pub(crate) fn text(headers: Option<&FieldTable>, name: &str) -> Option<String> {
    match headers?.inner().get(name)? {
        AMQPValue::LongString(value) => Some(String::from_utf8_lossy(value.as_bytes()).into_owned()),
        AMQPValue::ShortString(value) => Some(value.as_str().to_owned()),
        _ => None,
    }
}

/// The text-valued headers; numbers, tables and arrays are left out.
pub(crate) fn text_headers(headers: Option<&FieldTable>) -> BTreeMap<String, String> {
    let Some(headers) = headers else { return BTreeMap::new() };
    headers
        .inner()
        .keys()
        .filter_map(|name| text(Some(headers), name.as_str()).map(|value| (name.as_str().to_owned(), value)))
        .collect()
}

/// The routing key the message was first published with: our own header, else the one the
/// broker recorded when it dead-lettered the message, else `current`.
pub(crate) fn original_routing_key(headers: Option<&FieldTable>, current: &str) -> String {
    if let Some(key) = text(headers, ORIGINAL_ROUTING_KEY) {
        return key;
    }
    let first_death = match headers.and_then(|headers| headers.inner().get("x-death")) {
        Some(AMQPValue::FieldArray(deaths)) => deaths.as_slice().first(),
        _ => None,
    };
    let first_key = match first_death {
        Some(AMQPValue::FieldTable(death)) => match death.inner().get("routing-keys") {
            Some(AMQPValue::FieldArray(keys)) => keys.as_slice().first(),
            _ => None,
        },
        _ => None,
    };
    match first_key {
        Some(AMQPValue::LongString(key)) => String::from_utf8_lossy(key.as_bytes()).into_owned(),
        Some(AMQPValue::ShortString(key)) => key.as_str().to_owned(),
        _ => current.to_owned(),
    }
}

/// The text headers the application put on the message: without those this adapter and the
/// broker add while retrying and dead-lettering (a handler that forwards headers to the events it
/// publishes must not forward these).
pub(crate) fn application_headers(headers: Option<&FieldTable>) -> BTreeMap<String, String> {
    let mut application = text_headers(headers);
    application.retain(|name, _| !is_adapter_owned(name) && !is_broker_owned(name));
    application
}

fn is_adapter_owned(name: &str) -> bool {
    [RETRY_COUNT, DEATH_REASON, FAILED_AT, ORIGINAL_ROUTING_KEY].contains(&name)
}

fn is_broker_owned(name: &str) -> bool {
    name == "x-death" || name.starts_with("x-first-death-") || name.starts_with("x-last-death-")
}

/// `x-retry-count`, whether it was written as text or as a number.
pub(crate) fn retry_count(headers: Option<&FieldTable>) -> u32 {
    let Some(value) = headers.and_then(|headers| headers.inner().get(RETRY_COUNT)) else { return 0 };
    let count = match value {
        AMQPValue::LongString(_) | AMQPValue::ShortString(_) => {
            text(headers, RETRY_COUNT).and_then(|text| text.trim().parse::<i64>().ok())
        }
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongLongInt(n) => Some(*n),
        _ => None,
    };
    count.map_or(0, |count| u32::try_from(count.max(0)).unwrap_or(u32::MAX))
}

/// A copy of `headers` for re-publishing: without the broker's dead-letter bookkeeping (it
/// describes the old message, not the copy) and without `remove`.
pub(crate) fn copy_without(headers: Option<&FieldTable>, remove: &[&str]) -> FieldTable {
    let mut copy = FieldTable::default();
    for (name, value) in headers.map(FieldTable::inner).into_iter().flatten() {
        if !is_broker_owned(name.as_str()) && !remove.contains(&name.as_str()) {
            copy.insert(name.clone(), value.clone());
        }
    }
    copy
}

pub(crate) fn insert_text(headers: &mut FieldTable, name: &str, value: &str) {
    headers.insert(ShortString::from(name), AMQPValue::LongString(LongString::from(value)));
}

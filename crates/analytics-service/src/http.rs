//! The analytics API under `/analytics`.

use std::collections::HashMap;

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};
use chrono::{DateTime, TimeDelta, Utc};
use platform::ApiError;
use serde::Serialize;

use crate::{
    domain::{Bucket, CustomerTotal, Interval, ProductTotal, Ranking},
    service::AnalyticsService,
    store::StoreError,
};

pub const DEFAULT_TOP: u32 = 10;
pub const MAX_TOP: u32 = 100;
/// Longest time series answered at once, in buckets.
pub const MAX_BUCKETS: i64 = 1000;

pub fn router(service: AnalyticsService) -> Router {
    Router::new()
        .route("/analytics/summary", get(summary))
        .route("/analytics/products/top", get(top_products))
        .route("/analytics/customers/{customer_id}", get(customer))
        .route("/analytics/timeseries", get(timeseries))
        .with_state(service)
}

/// The single place where store failures become HTTP answers.
fn store_error(error: StoreError) -> ApiError {
    match error {
        StoreError::Unavailable(_) | StoreError::Conflict(_) => {
            tracing::warn!(event = "database_unavailable", error = %error, "analytics database unavailable");
            ApiError::unavailable("the analytics database is unavailable, try again shortly")
        }
        StoreError::Rejected(_) | StoreError::Database(_) => {
            tracing::error!(event = "database_error", error = %error, "analytics database error");
            ApiError::internal()
        }
    }
}

fn only(params: &HashMap<String, String>, allowed: &[&str]) -> Result<(), ApiError> {
    match params.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(name) => Err(ApiError::invalid_field(name, format!("unknown query parameter {name:?}"))),
        None => Ok(()),
    }
}

async fn summary(State(service): State<AnalyticsService>) -> Result<Response, ApiError> {
    let body = service.summary_json().await.map_err(store_error)?;
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response())
}

#[derive(Serialize)]
struct TopProducts {
    by: &'static str,
    products: Vec<ProductTotal>,
}

async fn top_products(
    State(service): State<AnalyticsService>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<TopProducts>, ApiError> {
    only(&params, &["by", "limit"])?;
    let (ranking, by) = match params.get("by").map(String::as_str) {
        None | Some("revenue") => (Ranking::Revenue, "revenue"),
        Some("quantity") => (Ranking::Quantity, "quantity"),
        Some(_) => return Err(ApiError::invalid_field("by", "by must be revenue or quantity")),
    };
    let limit = match params.get("limit") {
        None => DEFAULT_TOP,
        Some(text) => text.parse::<u32>().ok().filter(|n| (1..=MAX_TOP).contains(n)).ok_or_else(|| {
            ApiError::invalid_field("limit", format!("limit must be between 1 and {MAX_TOP}"))
        })?,
    };
    let products = service.store().top_products(ranking, limit).await.map_err(store_error)?;
    Ok(Json(TopProducts { by, products }))
}

async fn customer(
    State(service): State<AnalyticsService>,
    Path(customer_id): Path<String>,
) -> Result<Json<CustomerTotal>, ApiError> {
    let not_found = || ApiError::not_found("no orders for this customer");
    if customer_id.trim().is_empty() || customer_id.chars().count() > 128 {
        return Err(not_found());
    }
    service.store().customer(customer_id.trim()).await.map_err(store_error)?.map(Json).ok_or_else(not_found)
}

#[derive(Serialize)]
struct Series {
    interval: &'static str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    /// Only buckets with orders; a missing bucket had none.
    buckets: Vec<Bucket>,
}

async fn timeseries(
    State(service): State<AnalyticsService>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Series>, ApiError> {
    only(&params, &["interval", "from", "to"])?;
    let (interval, name, default_span) = match params.get("interval").map(String::as_str) {
        None | Some("hour") => (Interval::Hour, "hour", TimeDelta::hours(24)),
        Some("day") => (Interval::Day, "day", TimeDelta::days(30)),
        Some(_) => return Err(ApiError::invalid_field("interval", "interval must be hour or day")),
    };
    let instant = |field: &'static str| -> Result<Option<DateTime<Utc>>, ApiError> {
        params
            .get(field)
            .map(|text| {
                DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc)).map_err(|_| {
                    ApiError::invalid_field(
                        field,
                        format!("{field} must be an RFC 3339 time, e.g. 2026-01-09T00:00:00Z"),
                    )
                })
            })
            .transpose()
    };
    // Whole buckets: `from` rounds down, `to` rounds up.
    let to = instant("to")?.unwrap_or_else(Utc::now);
    let to = if interval.bucket_of(to) == to { to } else { interval.bucket_of(to) + interval.length() };
    let from = interval.bucket_of(instant("from")?.unwrap_or(to - default_span));
    if from >= to {
        return Err(ApiError::invalid_field("from", "from must be before to"));
    }
    if (to - from).num_seconds() / interval.length().num_seconds() > MAX_BUCKETS {
        return Err(ApiError::invalid_field("from", format!("at most {MAX_BUCKETS} buckets per request")));
    }
    let buckets = service.store().series(interval, from, to).await.map_err(store_error)?;
    Ok(Json(Series { interval: name, from, to, buckets }))
}

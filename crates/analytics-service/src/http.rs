//! The analytics API under `/analytics`.

use std::collections::HashMap;

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderValue, Method, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, TimeDelta, Utc};
use platform::{
    ApiError,
    access::{ApiGuard, Scope},
    http::ErrorBody,
};
use serde::Serialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    domain::{Bucket, CustomerTotal, Interval, ProductTotal, Ranking, Summary},
    service::AnalyticsService,
    store::StoreError,
};

pub const DEFAULT_TOP: u32 = 10;
pub const MAX_TOP: u32 = 100;
/// Longest time series answered at once, in buckets.
pub const MAX_BUCKETS: i64 = 1000;

/// The API's routes, guarded by `guard`, with `GET /openapi.json` describing them.
pub fn router(service: AnalyticsService, guard: &ApiGuard) -> Router {
    platform::http::documented_router(api(), service, guard)
}

/// The scope each request needs: the analytics API only reads.
pub fn required_scope(_: &Method) -> Scope {
    Scope::AnalyticsRead
}

/// The OpenAPI document of analytics-service: every route, generated from the handlers below.
pub fn openapi() -> utoipa::openapi::OpenApi {
    platform::http::openapi_document(api().split_for_parts().1, required_scope)
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "analytics-service",
        description = "Figures over every order counted from the order events, each exactly once. Every error \
            answer has the body `{\"error\", \"message\", \"details\"}` (schema `Error`).",
    ),
    tags(
        (name = "analytics", description = "Summary, top products, customers, time series"),
    ),
)]
struct ApiDoc;

fn api() -> OpenApiRouter<AnalyticsService> {
    OpenApiRouter::with_openapi(<ApiDoc as utoipa::OpenApi>::openapi())
        .routes(routes!(summary))
        .routes(routes!(top_products))
        .routes(routes!(customer))
        .routes(routes!(timeseries))
}

/// The single place where store failures become HTTP answers.
fn store_error(error: StoreError) -> ApiError {
    match error {
        StoreError::Unavailable(_) | StoreError::Conflict(_) | StoreError::Raced => {
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

/// Summary of the orders that stand (created, not cancelled)
#[utoipa::path(get, path = "/analytics/summary", tag = "analytics", responses(
    (status = 200, description = "The summary (cached for a few seconds; refreshed as orders are counted or cancelled)", body = Summary),
    (status = 503, description = "The analytics database is unavailable",
        body = ErrorBody, headers(("Retry-After" = String, description = "Seconds to wait: `1`"))),
))]
async fn summary(State(service): State<AnalyticsService>) -> Result<Response, ApiError> {
    let body = service.summary_json().await.map_err(store_error)?;
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response())
}

/// The top products.
#[derive(Serialize, utoipa::ToSchema)]
struct TopProducts {
    /// The ranking asked for: `revenue` or `quantity`.
    #[schema(value_type = String, example = "revenue")]
    by: &'static str,
    products: Vec<ProductTotal>,
}

/// Top products
#[utoipa::path(get, path = "/analytics/products/top", tag = "analytics",
    params(
        ("by" = Option<String>, Query, nullable = false, description = "Rank by `revenue` (default) or `quantity`",
            pattern = "^(revenue|quantity)$"),
        ("limit" = Option<u32>, Query, nullable = false, description = "How many (default 10)", minimum = 1, maximum = 100),
    ),
    responses(
        (status = 200, description = "The top products, best first", body = TopProducts),
        (status = 400, description = "An unknown or invalid query parameter (`details.field` names it)", body = ErrorBody),
        (status = 503, description = "The analytics database is unavailable",
            body = ErrorBody, headers(("Retry-After" = String, description = "Seconds to wait: `1`"))),
    ),
)]
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

/// One customer's totals
#[utoipa::path(get, path = "/analytics/customers/{customer_id}", tag = "analytics",
    params(("customer_id" = String, Path, description = "The customer's id, as in its orders", example = "customer-123")),
    responses(
        (status = 200, description = "The customer's totals", body = CustomerTotal),
        (status = 404, description = "No order of this customer was counted", body = ErrorBody),
        (status = 503, description = "The analytics database is unavailable",
            body = ErrorBody, headers(("Retry-After" = String, description = "Seconds to wait: `1`"))),
    ),
)]
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

/// Orders and revenue per hour or day.
#[derive(Serialize, utoipa::ToSchema)]
struct Series {
    /// `hour` or `day`.
    #[schema(value_type = String, example = "hour")]
    interval: &'static str,
    /// Start of the first bucket (inclusive).
    from: DateTime<Utc>,
    /// End of the last bucket (exclusive).
    to: DateTime<Utc>,
    /// Only buckets with orders; a missing bucket had none.
    buckets: Vec<Bucket>,
}

/// Time series
#[utoipa::path(get, path = "/analytics/timeseries", tag = "analytics",
    params(
        ("interval" = Option<String>, Query, nullable = false, description = "`hour` (default) or `day`",
            pattern = "^(hour|day)$"),
        ("from" = Option<DateTime<Utc>>, Query, nullable = false,
            description = "RFC 3339 time, rounded down to its bucket; default: 24 hours (or 30 days) before `to`"),
        ("to" = Option<DateTime<Utc>>, Query, nullable = false,
            description = "RFC 3339 time, rounded up to a bucket's end; default: now"),
    ),
    responses(
        (status = 200, description = "The buckets from `from` to `to` that have orders (at most 1000 buckets)", body = Series),
        (status = 400, description = "An unknown or invalid query parameter, `from` not before `to`, or more than 1000 buckets (`details.field` names the parameter)",
            body = ErrorBody),
        (status = 503, description = "The analytics database is unavailable",
            body = ErrorBody, headers(("Retry-After" = String, description = "Seconds to wait: `1`"))),
    ),
)]
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_committed_openapi_document_is_the_generated_one() {
        let document = super::openapi().to_pretty_json().unwrap();
        test_support::assert_committed_openapi("analytics-service", &document);
    }
}

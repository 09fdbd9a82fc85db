//! The order API: `POST /orders`, `GET /orders/{id}`, `GET /orders`.

use std::collections::HashMap;

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use platform::{ApiError, JsonBody};
use serde::Serialize;
use uuid::Uuid;

use crate::{
    domain::{CreateOrderRequest, NewOrder, Order, ValidationError, parse_idempotency_key},
    service::OrderService,
    store::{Created, ListQuery, StoreError},
};

pub const DEFAULT_PAGE_SIZE: u32 = 20;
pub const MAX_PAGE_SIZE: u32 = 100;

pub fn router(service: OrderService) -> Router {
    Router::new()
        .route("/orders", post(create_order).get(list_orders))
        .route("/orders/{id}", get(get_order))
        .with_state(service)
}

fn validation(error: ValidationError) -> ApiError {
    ApiError::invalid_field(error.field, error.message)
}

/// The single place where store failures become HTTP answers.
fn store_error(error: StoreError) -> ApiError {
    match error {
        StoreError::Unavailable(reason) | StoreError::Conflict(reason) => {
            tracing::warn!(event = "database_unavailable", error = %reason, "database unavailable");
            ApiError::unavailable("the order database is unavailable, try again shortly")
        }
        StoreError::Busy => ApiError::unavailable(
            "too many orders are waiting to be stored; nothing was stored, try again shortly",
        ),
        StoreError::Expired => ApiError::unavailable(
            "the order could not be stored in time; nothing was stored, try again shortly",
        ),
        StoreError::OutcomeUnknown => ApiError::outcome_unknown(
            "the order was still being stored when time ran out and may or may not exist; retry with the same \
             Idempotency-Key to get its outcome",
        ),
        StoreError::IdempotencyKeyReused => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was already used with a different request; use a new key for a new order",
        ),
        StoreError::IdempotencyKeyInProgress => ApiError::new(
            StatusCode::CONFLICT,
            "idempotency_key_in_progress",
            "a request with this Idempotency-Key is still being processed; retry once it has completed",
        ),
        other => {
            tracing::error!(event = "database_error", error = %other, "database error");
            ApiError::internal()
        }
    }
}

async fn create_order(
    State(service): State<OrderService>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<CreateOrderRequest>,
) -> Result<Response, ApiError> {
    let key = headers
        .get("idempotency-key")
        .map(|v| parse_idempotency_key(v.as_bytes()))
        .transpose()
        .map_err(validation)?;
    let new = NewOrder::parse(request).map_err(validation)?;
    let created = service.create(new, key).await.map_err(store_error)?;
    let (order, replayed) = match created {
        Created::New(order) => (order, false),
        Created::Existing(order) => (order, true),
    };
    let mut response = (StatusCode::CREATED, Json(&order)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/orders/{}", order.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    if replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

async fn get_order(
    State(service): State<OrderService>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::not_found("order not found");
    let id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let body = service.get_json(id).await.map_err(store_error)?.ok_or_else(not_found)?;
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response())
}

#[derive(Serialize)]
struct OrderPage {
    orders: Vec<Order>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    next_cursor: Option<Uuid>,
}

async fn list_orders(
    State(service): State<OrderService>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<OrderPage>, ApiError> {
    let query = list_query(&params)?;
    let orders = service.list(&query).await.map_err(store_error)?;
    let next_cursor = if orders.len() == query.limit as usize { orders.last().map(|o| o.id) } else { None };
    Ok(Json(OrderPage { orders, next_cursor }))
}

fn list_query(params: &HashMap<String, String>) -> Result<ListQuery, ApiError> {
    for name in params.keys() {
        if !matches!(name.as_str(), "customer_id" | "limit" | "cursor") {
            return Err(ApiError::invalid_field(name, format!("unknown query parameter {name:?}")));
        }
    }
    let limit = match params.get("limit") {
        None => DEFAULT_PAGE_SIZE,
        Some(text) => {
            text.parse::<u32>().ok().filter(|n| (1..=MAX_PAGE_SIZE).contains(n)).ok_or_else(|| {
                ApiError::invalid_field("limit", format!("limit must be between 1 and {MAX_PAGE_SIZE}"))
            })?
        }
    };
    let before = params
        .get("cursor")
        .map(|text| {
            Uuid::parse_str(text).map_err(|_| ApiError::invalid_field("cursor", "cursor is not valid"))
        })
        .transpose()?;
    let customer_id = match params.get("customer_id") {
        Some(id) if id.trim().is_empty() => {
            return Err(ApiError::invalid_field("customer_id", "customer_id must not be empty"));
        }
        Some(id) => Some(id.trim().to_owned()),
        None => None,
    };
    Ok(ListQuery { customer_id, before, limit })
}

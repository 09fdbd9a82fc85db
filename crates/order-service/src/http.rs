//! The order API: `POST /orders`, `GET /orders/{id}`, `GET /orders`, `POST /orders/{id}/cancel`.

use std::collections::HashMap;

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use contracts::OrderStatus;
use platform::{
    ApiError, ErrorChain, JsonBody, OptionalJsonBody,
    access::{ApiGuard, Scope},
    http::ErrorBody,
};
use serde::Serialize;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    domain::{
        CancelOrderRequest, Cancellation, CreateOrderRequest, NewOrder, Order, ValidationError,
        parse_idempotency_key,
    },
    service::OrderService,
    store::{Cancelled, Created, ListQuery, StoreError},
};

pub const DEFAULT_PAGE_SIZE: u32 = 20;
pub const MAX_PAGE_SIZE: u32 = 100;

/// The API's routes, guarded by `guard`, with `GET /openapi.json` describing them.
pub fn router(service: OrderService, guard: &ApiGuard) -> Router {
    platform::http::documented_router(api(), service, guard)
}

/// The scope each request needs: reads `orders:read`, anything else `orders:write`.
pub fn required_scope(method: &Method) -> Scope {
    if method.is_safe() { Scope::OrdersRead } else { Scope::OrdersWrite }
}

/// The OpenAPI document of order-service: every route, generated from the handlers below.
pub fn openapi() -> utoipa::openapi::OpenApi {
    platform::http::openapi_document(api().split_for_parts().1, required_scope)
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "order-service",
        description = "Accepts orders and answers for them. Every error answer has the body \
            `{\"error\", \"message\", \"details\"}` (schema `Error`).",
    ),
    tags(
        (name = "orders", description = "Orders: create, read, list, cancel"),
    ),
)]
struct ApiDoc;

fn api() -> OpenApiRouter<OrderService> {
    OpenApiRouter::with_openapi(<ApiDoc as utoipa::OpenApi>::openapi())
        .routes(routes!(create_order, list_orders))
        .routes(routes!(get_order))
        .routes(routes!(cancel_order))
}

/// The `Idempotency-Key` header, checked, if there is one.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    headers
        .get("idempotency-key")
        .map(|v| parse_idempotency_key(v.as_bytes()))
        .transpose()
        .map_err(validation)
}

fn validation(error: ValidationError) -> ApiError {
    ApiError::invalid_field(error.field, error.message)
}

/// The single place where store failures become HTTP answers.
fn store_error(error: StoreError) -> ApiError {
    match &error {
        StoreError::Unavailable(_) | StoreError::Conflict(_) | StoreError::WriterStopped => {
            tracing::warn!(event = "database_unavailable", error = %ErrorChain(&error), "database unavailable");
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
        StoreError::Database(_) => {
            tracing::error!(event = "database_error", error = %ErrorChain(&error), "database error");
            ApiError::internal()
        }
    }
}

/// Create an order
///
/// Stores the order and its `OrderCreated` event in one transaction: once answered `201`, the
/// order is durable and its event will be published. With an `Idempotency-Key`, a repeat of the
/// request returns the first answer instead of creating a second order.
#[utoipa::path(
    post,
    path = "/orders",
    tag = "orders",
    params(
        ("Idempotency-Key" = Option<String>, Header,
            description = "1 to 255 visible ASCII characters. The same key with the same body returns the order \
                first created (`Idempotent-Replayed: true`); with another body, `422`; while the first request \
                is still being stored by the same replica, `409`. Keys are remembered for 24 hours.",
            nullable = false, min_length = 1, max_length = 255, pattern = "^[\\x21-\\x7E]+$",
            example = "9f1c2e7a-order-1"),
    ),
    request_body(content = CreateOrderRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Created, or replayed: the order first created with this `Idempotency-Key`",
            body = Order,
            headers(
                ("Location" = String, description = "`/orders/{id}` of the order"),
                ("Idempotent-Replayed" = String, description = "`true` when the order was created by an earlier request with the same key"),
            )),
        (status = 400, description = "Malformed JSON or an invalid field (`details.field` names it); nothing was stored", body = ErrorBody),
        (status = 409, description = "A request with this `Idempotency-Key` is still being stored; retry once it has completed", body = ErrorBody),
        (status = 413, description = "The body is larger than the limit (64 KiB by default)", body = ErrorBody),
        (status = 415, description = "`Content-Type` is not JSON", body = ErrorBody),
        (status = 422, description = "The `Idempotency-Key` was used before with a different body", body = ErrorBody),
        (status = 503, description = "The database is unavailable or too many writes are waiting; nothing was stored, retrying is safe",
            body = ErrorBody, headers(("Retry-After" = String, description = "Seconds to wait: `1`"))),
        (status = 504, description = "The write was still under way when time ran out: the order may or may not exist; retry with the same `Idempotency-Key` to learn which",
            body = ErrorBody),
    ),
)]
async fn create_order(
    State(service): State<OrderService>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<CreateOrderRequest>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
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

/// Get an order
#[utoipa::path(
    get,
    path = "/orders/{id}",
    tag = "orders",
    params(("id" = String, Path, description = "The order's id (a UUID); anything else is not found",
        example = "0192f5c4-8a2b-7c3d-9e4f-5a6b7c8d9e0f")),
    responses(
        (status = 200, description = "The order", body = Order),
        (status = 404, description = "No order has this id", body = ErrorBody),
        (status = 503, description = "The database is unavailable (and the order is not cached)",
            body = ErrorBody, headers(("Retry-After" = String, description = "Seconds to wait: `1`"))),
    ),
)]
async fn get_order(
    State(service): State<OrderService>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::not_found("order not found");
    let id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let body = service.get_json(id).await.map_err(store_error)?.ok_or_else(not_found)?;
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response())
}

/// Cancel an order
///
/// Moves a `created` or `processed` order to `cancelled` and records its `OrderCancelled` event
/// in the same transaction: once answered `200`, both are durable and the event will be
/// published. Cancelling a cancelled order answers the order unchanged and emits nothing. With an
/// `Idempotency-Key`, a repeat of the request returns the order as it is now.
#[utoipa::path(
    post,
    path = "/orders/{id}/cancel",
    tag = "orders",
    params(
        ("id" = String, Path, description = "The order's id (a UUID); anything else is not found",
            example = "0192f5c4-8a2b-7c3d-9e4f-5a6b7c8d9e0f"),
        ("Idempotency-Key" = Option<String>, Header,
            description = "1 to 255 visible ASCII characters. The same key with the same order and reason returns                 the order as it is (`Idempotent-Replayed: true`); with another order or reason (or a key used to                 create an order), `422`; while the first request is still being stored by the same replica,                 `409`. Keys are remembered for 24 hours.",
            nullable = false, min_length = 1, max_length = 255, pattern = "^[\\x21-\\x7E]+$",
            example = "9f1c2e7a-cancel-1"),
    ),
    request_body(content = Option<CancelOrderRequest>, content_type = "application/json",
        description = "Optional: an empty body cancels without a reason"),
    responses(
        (status = 200, description = "The order, cancelled (now, or before)", body = Order,
            headers(("Idempotent-Replayed" = String, description = "`true` when an earlier request with the same key did it"))),
        (status = 400, description = "Malformed JSON or an invalid reason (`details.field` names it); nothing changed", body = ErrorBody),
        (status = 404, description = "No order has this id", body = ErrorBody),
        (status = 409, description = "A request with this `Idempotency-Key` is still being stored; retry once it has completed", body = ErrorBody),
        (status = 413, description = "The body is larger than the limit (64 KiB by default)", body = ErrorBody),
        (status = 415, description = "A body whose `Content-Type` is not JSON", body = ErrorBody),
        (status = 422, description = "The `Idempotency-Key` was used before for a different request", body = ErrorBody),
        (status = 503, description = "The database is unavailable; nothing changed, retrying is safe",
            body = ErrorBody, headers(("Retry-After" = String, description = "Seconds to wait: `1`"))),
        (status = 504, description = "The cancellation was still under way when time ran out: it may or may not have happened; retry (with the same `Idempotency-Key`) to learn which",
            body = ErrorBody),
    ),
)]
async fn cancel_order(
    State(service): State<OrderService>,
    Path(id): Path<String>,
    headers: HeaderMap,
    OptionalJsonBody(request): OptionalJsonBody<CancelOrderRequest>,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::not_found("order not found");
    let key = idempotency_key(&headers)?;
    let id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let cancellation = Cancellation::parse(id, request.unwrap_or_default()).map_err(validation)?;
    let (order, replayed) =
        match service.cancel(cancellation, key).await.map_err(store_error)?.ok_or_else(not_found)? {
            Cancelled::Now(order) | Cancelled::Before(order) => (order, false),
            Cancelled::Replayed(order) => (order, true),
        };
    let mut response = Json(&order).into_response();
    if replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// A page of orders, newest first.
#[derive(Serialize, utoipa::ToSchema)]
struct OrderPage {
    orders: Vec<Order>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    next_cursor: Option<Uuid>,
}

/// List orders
///
/// Newest first, a page at a time: pass the answer's `next_cursor` as `cursor` for the next page.
#[utoipa::path(
    get,
    path = "/orders",
    tag = "orders",
    params(
        ("customer_id" = Option<String>, Query, nullable = false, description = "Only this customer's orders",
            example = "customer-123"),
        ("status" = Option<OrderStatus>, Query, nullable = false, description = "Only orders in this status"),
        ("limit" = Option<u32>, Query, nullable = false, description = "Orders per page (default 20)",
            minimum = 1, maximum = 100),
        ("cursor" = Option<uuid::Uuid>, Query, nullable = false, description = "The `next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of orders", body = OrderPage),
        (status = 400, description = "An unknown or invalid query parameter (`details.field` names it)", body = ErrorBody),
        (status = 503, description = "The database is unavailable",
            body = ErrorBody, headers(("Retry-After" = String, description = "Seconds to wait: `1`"))),
    ),
)]
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
        if !matches!(name.as_str(), "customer_id" | "status" | "limit" | "cursor") {
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
    let status = params
        .get("status")
        .map(|text| {
            OrderStatus::parse(text).ok_or_else(|| {
                ApiError::invalid_field("status", "status must be one of created, processed, cancelled")
            })
        })
        .transpose()?;
    Ok(ListQuery { customer_id, status, before, limit })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_committed_openapi_document_is_the_generated_one() {
        let document = super::openapi().to_pretty_json().unwrap();
        test_support::assert_committed_openapi("order-service", &document);
    }
}

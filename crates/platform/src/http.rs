//! HTTP plumbing shared by every service: the error body, the JSON extractor, the operational
//! endpoints, the middleware stack and a server that shuts down gracefully.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{ConnectInfo, FromRequest, MatchedPath, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use prometheus_client::registry::Registry;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    time::Sleep,
};
use tower_http::{
    add_extension::AddExtension,
    catch_panic::CatchPanicLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};

use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    access::ApiGuard,
    health::{Health, Readiness},
    metrics::{self, HttpLabels, HttpMetrics},
    settings::{HttpSettings, ShutdownSettings},
    shutdown::Shutdown,
    telemetry,
};

const REQUEST_ID: &str = "x-request-id";

/// An error answered to an HTTP client as `{"error", "message", "details"}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: &'static str,
    pub message: String,
    pub details: Value,
}

/// The body of every error answer (named `Error` in the OpenAPI documents).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// A stable code for programs: `invalid_request`, `not_found`, `service_unavailable`, …
    #[schema(example = "invalid_request")]
    error: &'static str,
    /// What went wrong, for people.
    #[schema(example = "quantity must be at least 1")]
    message: String,
    /// More about it: `{"field": "<name>"}` for an invalid field, else `{}`.
    #[schema(value_type = Object, example = json!({"field": "quantity"}))]
    details: Value,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, error, message: message.into(), details: json!({}) }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// 400: the request is malformed or a field is invalid (`details.field` names it).
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        Self::invalid_request(message).with_details(json!({ "field": field }))
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", message)
    }

    /// 503: a dependency the request needs is down; the client may retry.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", message)
    }

    /// 504: the request may or may not have taken effect (it was still running when it had to be
    /// answered). Never answered with `Retry-After`: retrying blindly could do it twice.
    pub fn outcome_unknown(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "outcome_unknown", message)
    }

    /// 500: details stay in the logs, never in the answer.
    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "internal server error")
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.error, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        let body = ErrorBody { error: self.error, message: self.message, details: self.details };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// A JSON request body: 415 unless the content type is JSON, 413 when too large, 400 (naming the
/// field) when it does not parse into `T`.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(request.headers()) {
            return Err(ApiError::unsupported_media_type("Content-Type must be application/json"));
        }
        parse_json(&read_body(request, state).await?).map(JsonBody)
    }
}

/// The whole body, within the size limit.
async fn read_body<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(request, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::payload_too_large("request body is too large")
        } else {
            ApiError::invalid_request("could not read the request body")
        }
    })
}

/// Like [`JsonBody`], for a body that may be left out: an empty body, or `null`, is `None`.
pub struct OptionalJsonBody<T>(pub Option<T>);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = is_json(request.headers());
        let bytes = read_body(request, state).await?;
        if bytes.is_empty() {
            return Ok(OptionalJsonBody(None));
        }
        if !json {
            return Err(ApiError::unsupported_media_type("Content-Type must be application/json"));
        }
        parse_json::<Option<T>>(&bytes).map(OptionalJsonBody)
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parses a JSON document into `T`; a failure is a 400 that names the offending field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::invalid_request("request body is not valid JSON");
        }
        let message = strip_position(&inner.to_string());
        let field = if path == "." { missing_field(&message) } else { Some(path) };
        match field {
            Some(field) if message.contains(&format!("`{field}`")) => {
                ApiError::invalid_field(&field, message)
            }
            Some(field) => ApiError::invalid_field(&field, format!("{field}: {message}")),
            None => ApiError::invalid_request(message),
        }
    })?;
    deserializer.end().map_err(|_| ApiError::invalid_request("request body is not valid JSON"))?;
    Ok(value)
}

/// serde_json appends " at line 1 column 42"; clients need the field, not the column.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_owned())
}

/// `/livez`, `/readyz` and `/metrics`.
pub fn ops_router(health: Health, registry: Arc<Registry>) -> Router {
    ops(health, registry).split_for_parts().0
}

/// A service's API routes on `state`, guarded by `guard` (API keys, rate limit), with
/// `GET /openapi.json` describing them (and the operational paths) and `GET /docs/`, an
/// interactive page over that document whose every asset the service serves itself (Swagger UI,
/// bundled at build time). The document and the page stay open; where keys are configured, the
/// document says every operation needs one.
pub fn documented_router<S: Clone + Send + Sync + 'static>(
    api: OpenApiRouter<S>,
    state: S,
    guard: &ApiGuard,
) -> Router {
    let (router, document) = api.split_for_parts();
    let mut document = openapi_document(document, |method| guard.required_scope(method));
    if guard.requires_keys() {
        crate::access::require_keys(&mut document);
    }
    let docs = utoipa_swagger_ui::SwaggerUi::new("/docs").url("/openapi.json", document);
    guard.protect(router.with_state(state)).merge(docs)
}

/// A service's whole OpenAPI document: its API (`api`, each operation needing the scope
/// `required_scope` names) and the operational paths.
pub fn openapi_document(
    mut api: utoipa::openapi::OpenApi,
    required_scope: impl Fn(&axum::http::Method) -> crate::access::Scope,
) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::{LicenseBuilder, tag::TagBuilder};
    crate::access::document(&mut api, required_scope);
    api.merge(ops_openapi());
    api.info.license = Some(LicenseBuilder::new().name("MIT").identifier(Some("MIT")).build());
    api.tags.get_or_insert_with(Vec::new).push(
        TagBuilder::new()
            .name("operations")
            .description(Some("Liveness, readiness and metrics, for probes and Prometheus"))
            .build(),
    );
    api
}

/// The OpenAPI paths of [`ops_router`], for each service's document.
pub fn ops_openapi() -> utoipa::openapi::OpenApi {
    let mut registry = Registry::default();
    ops(Health::new(&mut registry), Arc::new(registry)).split_for_parts().1
}

fn ops(health: Health, registry: Arc<Registry>) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(livez))
        .merge(OpenApiRouter::new().routes(routes!(readyz)).with_state(health))
        .merge(OpenApiRouter::new().routes(routes!(metrics_text)).with_state(registry))
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/livez", tag = "operations",
    responses((status = 200, description = "The process is alive", body = Object, example = json!({"status": "alive"}))))]
async fn livez() -> Json<Value> {
    Json(json!({ "status": "alive" }))
}

/// Readiness: every critical dependency is reachable.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "Ready: every critical dependency answers", body = Readiness),
    (status = 503, description = "Not ready: a critical dependency is down (`checks` says which)", body = Readiness),
))]
async fn readyz(State(health): State<Health>) -> Response {
    let readiness = health.readiness().await;
    let status = if readiness.is_ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(readiness)).into_response()
}

/// Prometheus metrics, in the OpenMetrics text format.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses(
    (status = 200, description = "Every metric of the service", body = String, content_type = "application/openmetrics-text"),
))]
async fn metrics_text(State(registry): State<Arc<Registry>>) -> Response {
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], metrics::render(&registry)).into_response()
}

/// Wraps a service's router with the shared middleware: request id, tracing span (continuing a
/// caller's W3C trace), metrics, timeout, body limit, panic guard, JSON 404/405.
pub fn with_middleware(router: Router, settings: &HttpSettings, http_metrics: HttpMetrics) -> Router {
    let timeout = settings.request_timeout();
    router
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed")
        })
        .layer(axum::extract::DefaultBodyLimit::max(settings.body_limit_bytes))
        .layer(middleware::from_fn(move |request: Request, next: Next| async move {
            // A read that timed out can be retried; a write may have happened meanwhile.
            let safe = request.method().is_safe();
            match tokio::time::timeout(timeout, next.run(request)).await {
                Ok(response) => response,
                Err(_) if safe => ApiError::unavailable("the request took too long").into_response(),
                Err(_) => ApiError::outcome_unknown(
                    "the request took too long and may or may not have taken effect; retry it with the same \
                     Idempotency-Key to find out",
                )
                .into_response(),
            }
        }))
        .layer(middleware::from_fn_with_state(http_metrics, record_metrics))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(make_span)
                .on_request(())
                .on_response(())
                .on_failure(()),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!(event = "handler_panicked", "request handler panicked");
            ApiError::internal().into_response()
        }))
}

fn make_span(request: &Request) -> tracing::Span {
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str()).unwrap_or("unmatched");
    let request_id = request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
    // Span names group traces: like the metric label, any method outside the standard ones is `other`.
    let method = metrics::method_label(request.method());
    let span = tracing::info_span!(
        "http_request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        method,
        route,
        request_id,
    );
    let headers = request.headers();
    telemetry::set_parent_from_headers(&span, |name| headers.get(name)?.to_str().ok().map(str::to_owned));
    span
}

async fn record_metrics(State(metrics): State<HttpMetrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = metrics::method_label(request.method());
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let response = next.run(request).await;
    let labels = HttpLabels {
        method,
        route: route.unwrap_or_else(|| "unmatched".into()),
        status: response.status().as_u16(),
    };
    metrics.requests.get_or_create(&labels).inc();
    metrics.duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    response
}

/// Request id assigned to the current request, for handlers that want to log it.
pub fn request_id(headers: &HeaderMap) -> Option<&str> {
    headers.get(REQUEST_ID).and_then(|v| v.to_str().ok())
}

/// Serves `router` on `listener` until `shutdown` is triggered, then lets in-flight requests and
/// tracked background tasks finish within the grace period. `http` bounds how long a client may
/// take to send a request head and how many connections are served at once.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: Shutdown,
    http: &HttpSettings,
    settings: &ShutdownSettings,
) -> std::io::Result<()> {
    let stop = shutdown.clone();
    let mut server = tokio::spawn(accept_connections(
        listener,
        router,
        stop,
        http.header_read_timeout(),
        http.max_connections,
    ));
    tokio::select! {
        finished = &mut server => {
            // The accept loop failed before any shutdown was asked for.
            shutdown.trigger();
            return finished.map_err(std::io::Error::other);
        }
        () = shutdown.requested() => {}
    }
    let deadline = Instant::now() + settings.grace_period();
    let result = match tokio::time::timeout_at(deadline.into(), server).await {
        Ok(finished) => finished.map_err(std::io::Error::other),
        Err(_) => {
            tracing::warn!(event = "shutdown_grace_expired", "in-flight requests did not finish in time");
            Ok(())
        }
    };
    let remaining = deadline.saturating_duration_since(Instant::now());
    if !shutdown.wait_for_tasks(remaining).await {
        tracing::warn!(event = "shutdown_grace_expired", "background tasks did not finish in time");
    }
    result
}

/// Serves HTTP/1.1 and HTTP/2 (prior knowledge) connections until `stop` is triggered, then waits
/// for the open ones to finish their requests and close.
async fn accept_connections(
    listener: TcpListener,
    router: Router,
    stop: Shutdown,
    header_read_timeout: Duration,
    max_connections: usize,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(header_read_timeout);
    let open_connections = Arc::new(Semaphore::new(max_connections.min(Semaphore::MAX_PERMITS)));
    let graceful = GracefulShutdown::new();
    loop {
        // Waiting for a free slot before accepting leaves the excess clients in the listen
        // backlog, where they are served in turn, instead of accepting them only to hang up.
        let permit = tokio::select! {
            permit = open_connections.clone().acquire_owned() => {
                permit.expect("the connection semaphore is never closed")
            }
            () = stop.requested() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    pause_after_accept_error(&error, &stop).await;
                    continue;
                }
            },
            () = stop.requested() => break,
        };
        // Answers leave at once: under Nagle's algorithm the second part of an answer written in
        // two waits for the client's delayed ACK (up to 200 ms on Linux).
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(ProtocolDetectionDeadline::new(stream, header_read_timeout));
        // The client's address, for rate limits when there are no API keys.
        let service = TowerToHyperService::new(AddExtension::new(router.clone(), ConnectInfo(peer)));
        let connection = graceful.watch(builder.serve_connection_with_upgrades(io, service).into_owned());
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(event = "connection_failed", error = %error, "connection closed on an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// A client that hung up before being accepted concerns only itself. Anything else (out of file
/// descriptors, most often) may pass once connections close, so accepting resumes after a pause.
async fn pause_after_accept_error(error: &std::io::Error, stop: &Shutdown) {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
    ) {
        return;
    }
    tracing::error!(event = "accept_failed", error = %error, "cannot accept connections");
    tokio::select! {
        () = tokio::time::sleep(Duration::from_secs(1)) => {}
        () = stop.requested() => {}
    }
}

/// The first bytes of a connection tell HTTP/1 from the HTTP/2 preface. hyper-util waits for them
/// with no time limit, and hyper's header-read timeout only starts once they have come, so a
/// client that connects and stays silent would hold its connection for ever: this bounds the wait.
struct ProtocolDetectionDeadline {
    stream: TcpStream,
    /// `None` once the protocol is known.
    deadline: Option<Pin<Box<Sleep>>>,
    /// How many bytes read so far, all matching the HTTP/2 preface.
    preface_matched: usize,
}

const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl ProtocolDetectionDeadline {
    fn new(stream: TcpStream, timeout: Duration) -> Self {
        ProtocolDetectionDeadline {
            stream,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
            preface_matched: 0,
        }
    }

    fn note_read(&mut self, bytes: &[u8]) {
        let end = (self.preface_matched + bytes.len()).min(HTTP2_PREFACE.len());
        let expected = &HTTP2_PREFACE[self.preface_matched..end];
        let still_ambiguous = !bytes.is_empty() && bytes.starts_with(expected) && end < HTTP2_PREFACE.len();
        if still_ambiguous {
            self.preface_matched = end;
        } else {
            self.deadline = None;
        }
    }
}

impl AsyncRead for ProtocolDetectionDeadline {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let already_filled = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if this.deadline.is_some() {
                    this.note_read(&buf.filled()[already_filled..]);
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                let expired =
                    this.deadline.as_mut().is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                if expired {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no request head in time",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for ProtocolDetectionDeadline {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// A service's HTTP side: its API plus `/livez`, `/readyz` and `/metrics`, wrapped in the shared
/// middleware and bound to its port.
pub struct Server {
    listener: TcpListener,
    router: Router,
    health: Health,
    shutdown: Shutdown,
    http: HttpSettings,
    grace: ShutdownSettings,
}

impl Server {
    /// Completes `runtime`'s registry with the HTTP metrics and binds the listener.
    pub async fn bind(
        api: Router,
        runtime: crate::Runtime,
        http: &HttpSettings,
        shutdown: &ShutdownSettings,
    ) -> std::io::Result<Server> {
        let crate::Runtime { mut registry, health, shutdown: stop } = runtime;
        let http_metrics = HttpMetrics::register(&mut registry);
        let router = api.merge(ops_router(health.clone(), Arc::new(registry)));
        let router = with_middleware(router, http, http_metrics);
        let listener = TcpListener::bind((http.host.as_str(), http.port)).await.map_err(|error| {
            std::io::Error::new(
                error.kind(),
                format!("cannot listen on {}:{}: {error}", http.host, http.port),
            )
        })?;
        Ok(Server { listener, router, health, shutdown: stop, http: http.clone(), grace: shutdown.clone() })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or_default()
    }

    /// Triggering it stops the service gracefully.
    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// Serves until shutdown is triggered, then lets requests and background work finish within
    /// the grace period.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        serve(self.listener, self.router, self.shutdown, &self.http, &self.grace).await
    }
}

impl Server {
    /// The whole life of a service binary once it is configured: telemetry, `build`, serving
    /// until SIGTERM/SIGINT (readiness fails first, then a graceful stop), trace flush. Returns
    /// the process's exit code.
    pub async fn run_service<E: std::fmt::Display>(
        service: &str,
        telemetry: &crate::TelemetrySettings,
        shutdown: &ShutdownSettings,
        build: impl Future<Output = Result<Server, E>>,
    ) -> std::process::ExitCode {
        use std::process::ExitCode;
        let telemetry = match crate::telemetry::Telemetry::init(service, telemetry) {
            Ok(telemetry) => telemetry,
            Err(error) => {
                eprintln!("{service}: {error}");
                return ExitCode::from(crate::config::EXIT_CONFIG);
            }
        };
        let code = match build.await {
            Ok(server) => {
                crate::shutdown::trigger_on_signal(
                    server.health(),
                    server.shutdown(),
                    shutdown.drain_delay(),
                );
                tracing::info!(event = "listening", port = server.port(), "{service} listening");
                match server.run_until_stopped().await {
                    Ok(()) => {
                        tracing::info!(event = "stopped", "{service} stopped");
                        ExitCode::SUCCESS
                    }
                    Err(error) => {
                        tracing::error!(event = "server_failed", error = %error, "server failed");
                        ExitCode::FAILURE
                    }
                }
            }
            Err(error) => {
                tracing::error!(event = "startup_failed", error = format!("{error:#}"), "could not start");
                ExitCode::FAILURE
            }
        };
        telemetry.shutdown(std::time::Duration::from_secs(5));
        code
    }
}

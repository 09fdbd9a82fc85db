//! HTTP plumbing: error bodies, readiness, metrics, connection limits and graceful shutdown, over
//! a real socket.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{Router, routing::get, routing::post};
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use platform::{
    Health, HttpSettings, JsonBody, Shutdown, ShutdownSettings,
    http::{ops_router, serve, with_middleware},
    metrics::HttpMetrics,
};
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};

#[derive(Deserialize)]
struct Echo {
    #[allow(dead_code)]
    count: u32,
}

struct Server {
    base: String,
    address: SocketAddr,
    shutdown: Shutdown,
    health: Health,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(settings: HttpSettings) -> Server {
    let mut registry = Registry::default();
    let health = Health::new(&mut registry);
    let metrics = HttpMetrics::register(&mut registry);
    let app = Router::new()
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(800)).await;
                "done"
            })
            .post(|| async {
                tokio::time::sleep(Duration::from_millis(800)).await;
                "written"
            }),
        )
        .route("/echo", post(|JsonBody(echo): JsonBody<Echo>| async move { format!("{}", echo.count) }))
        .route("/panic", get(|| async { if true { panic!("boom") } else { "" } }))
        .merge(ops_router(health.clone(), Arc::new(registry)));
    let app = with_middleware(app, &settings, metrics);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let base = format!("http://{address}");
    let shutdown = Shutdown::new();
    let stop = shutdown.clone();
    let grace = ShutdownSettings::default();
    let task = tokio::spawn(async move { serve(listener, app, stop, &settings, &grace).await });
    Server { base, address, shutdown, health, task }
}

fn settings() -> HttpSettings {
    HttpSettings {
        host: "127.0.0.1".into(),
        port: 0,
        request_timeout_ms: 300,
        body_limit_bytes: 1024,
        ..HttpSettings::default()
    }
}

#[tokio::test]
async fn errors_have_the_documented_body() {
    let server = start(HttpSettings { request_timeout_ms: 5_000, ..settings() }).await;
    let client = reqwest::Client::new();

    let bad = client
        .post(format!("{}/echo", server.base))
        .json(&serde_json::json!({"count": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
    assert_eq!(body["details"]["field"], "count");
    assert!(body["message"].is_string());

    let missing =
        client.post(format!("{}/echo", server.base)).json(&serde_json::json!({})).send().await.unwrap();
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["details"]["field"], "count");

    let charset = client
        .post(format!("{}/echo", server.base))
        .header("content-type", "application/json; charset=utf-8")
        .body(r#"{"count": 3}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(charset.text().await.unwrap(), "3");

    let trailing = client
        .post(format!("{}/echo", server.base))
        .header("content-type", "application/json")
        .body(r#"{"count": 3} x"#)
        .send()
        .await
        .unwrap();
    assert_eq!(trailing.status(), 400);

    let large = client
        .post(format!("{}/echo", server.base))
        .header("content-type", "application/json")
        .body(vec![b' '; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(large.status(), 413);

    let panic = client.get(format!("{}/panic", server.base)).send().await.unwrap();
    assert_eq!(panic.status(), 500);
    let body: Value = panic.json().await.unwrap();
    assert_eq!(body["error"], "internal_error");

    let request_id =
        client.get(format!("{}/livez", server.base)).header("x-request-id", "abc-1").send().await.unwrap();
    assert_eq!(request_id.headers()["x-request-id"], "abc-1");
    let generated = client.get(format!("{}/livez", server.base)).send().await.unwrap();
    assert!(!generated.headers()["x-request-id"].is_empty());

    server.shutdown.trigger();
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn slow_reads_time_out_with_503_and_slow_writes_with_504() {
    let server = start(settings()).await;
    let response = reqwest::get(format!("{}/slow", server.base)).await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "service_unavailable");

    // A write may have happened: the client is not told to retry, but that the outcome is unknown.
    let response = reqwest::Client::new().post(format!("{}/slow", server.base)).send().await.unwrap();
    assert_eq!(response.status(), 504);
    assert!(response.headers().get("retry-after").is_none());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "outcome_unknown");
    server.shutdown.trigger();
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn readiness_reports_each_dependency() {
    let server = start(settings()).await;
    let database = server.health.add_status("mysql", true);
    let cache = server.health.add_status("redis", false);
    server.health.add_probe("broker", false, || async { Err("connection refused".to_owned()) });

    let readyz = || async { reqwest::get(format!("{}/readyz", server.base)).await.unwrap() };
    let response = readyz().await;
    assert_eq!(response.status(), 503, "a critical dependency is not up yet");

    database.set_up();
    let response = readyz().await;
    assert_eq!(response.status(), 200, "non-critical dependencies do not block readiness");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["mysql"]["status"], "up");
    assert_eq!(body["checks"]["redis"]["status"], "down");
    assert_eq!(body["checks"]["broker"]["error"], "connection refused");
    cache.set_up();

    let metrics = reqwest::get(format!("{}/metrics", server.base)).await.unwrap();
    assert!(metrics.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let text = metrics.text().await.unwrap();
    assert!(text.contains(r#"dependency_up{dependency="mysql"} 1"#), "{text}");
    assert!(text.contains(r#"http_requests_total{method="GET",route="/readyz",status="503"} 1"#), "{text}");

    server.health.set_shutting_down();
    let response = readyz().await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.json::<Value>().await.unwrap()["status"], "shutting_down");
    assert_eq!(reqwest::get(format!("{}/livez", server.base)).await.unwrap().status(), 200);

    server.shutdown.trigger();
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let server = start(HttpSettings { request_timeout_ms: 5_000, ..settings() }).await;
    let url = format!("{}/slow", server.base);
    let in_flight = tokio::spawn(async move { reqwest::get(url).await.map(|r| r.status()) });
    tokio::time::sleep(Duration::from_millis(200)).await;

    // A background task that finishes its work after shutdown is asked for.
    let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = finished.clone();
    let stop = server.shutdown.clone();
    server.shutdown.spawn(async move {
        stop.requested().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
    });

    server.shutdown.trigger();
    assert_eq!(in_flight.await.unwrap().unwrap(), 200, "the request in flight completes");
    server.task.await.unwrap().unwrap();
    assert!(finished.load(std::sync::atomic::Ordering::SeqCst), "tracked tasks finish before serve returns");
    assert!(
        reqwest::get(format!("{}/livez", server.base)).await.is_err(),
        "no new connections after shutdown"
    );
}

#[tokio::test]
async fn a_nonstandard_method_is_counted_as_other() {
    let server = start(settings()).await;
    let client = reqwest::Client::new();
    let custom = reqwest::Method::from_bytes(b"FOO").unwrap();
    let response = client.request(custom, format!("{}/livez", server.base)).send().await.unwrap();
    assert_eq!(response.status(), 405);

    let text = reqwest::get(format!("{}/metrics", server.base)).await.unwrap().text().await.unwrap();
    assert!(text.contains(r#"http_requests_total{method="other",route="/livez",status="405"} 1"#), "{text}");
    assert!(!text.contains("FOO"), "a client's method never becomes a label: {text}");

    server.shutdown.trigger();
    server.task.await.unwrap().unwrap();
}

const LIVEZ_REQUEST: &[u8] = b"GET /livez HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// Reads up to the end of a response head.
async fn read_response_head(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut chunk = [0; 1024];
    while !received.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = stream.read(&mut chunk).await.unwrap();
        assert!(read > 0, "connection closed after {:?}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&chunk[..read]);
    }
    String::from_utf8_lossy(&received).into_owned()
}

/// Asserts that the server hangs up on `stream` within 2 s without answering.
async fn assert_hung_up_on(stream: &mut TcpStream) {
    let mut received = Vec::new();
    let read = timeout(Duration::from_secs(2), stream.read_to_end(&mut received))
        .await
        .expect("the server hangs up within 2 s");
    if let Err(error) = read {
        assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
    }
    assert!(received.is_empty(), "no answer, only a hang-up: {:?}", String::from_utf8_lossy(&received));
}

#[tokio::test]
async fn a_client_that_never_finishes_its_request_line_is_disconnected() {
    let server = start(HttpSettings { header_read_timeout_ms: 300, ..settings() }).await;
    let mut client = TcpStream::connect(server.address).await.unwrap();
    client.write_all(b"GET /livez HT").await.unwrap();
    let sent = Instant::now();

    assert_hung_up_on(&mut client).await;
    assert!(sent.elapsed() >= Duration::from_millis(250), "held until the timeout: {:?}", sent.elapsed());

    server.shutdown.trigger();
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn silent_clients_and_those_stalled_in_the_http2_preface_are_disconnected() {
    let server = start(HttpSettings { header_read_timeout_ms: 300, ..settings() }).await;
    let mut silent = TcpStream::connect(server.address).await.unwrap();
    let mut stalled = TcpStream::connect(server.address).await.unwrap();
    stalled.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();

    assert_hung_up_on(&mut silent).await;
    assert_hung_up_on(&mut stalled).await;

    server.shutdown.trigger();
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_header_read_timeout_spares_requests_already_received() {
    let server =
        start(HttpSettings { header_read_timeout_ms: 300, request_timeout_ms: 5_000, ..settings() }).await;
    let response = reqwest::get(format!("{}/slow", server.base)).await.unwrap();
    assert_eq!(response.status(), 200, "a handler slower than the header-read timeout completes");
    assert_eq!(response.text().await.unwrap(), "done");

    server.shutdown.trigger();
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_for_one_to_close() {
    let server = start(HttpSettings { max_connections: 2, ..settings() }).await;
    let mut first = TcpStream::connect(server.address).await.unwrap();
    let mut second = TcpStream::connect(server.address).await.unwrap();
    for connection in [&mut first, &mut second] {
        connection.write_all(LIVEZ_REQUEST).await.unwrap();
        assert!(read_response_head(connection).await.starts_with("HTTP/1.1 200"));
    }

    // Both stay open, idle; the kernel completes the third handshake but the server does not
    // accept it yet.
    let mut third = TcpStream::connect(server.address).await.unwrap();
    third.write_all(LIVEZ_REQUEST).await.unwrap();
    let mut byte = [0; 1];
    assert!(
        timeout(Duration::from_millis(500), third.read(&mut byte)).await.is_err(),
        "no answer while the limit is reached"
    );

    drop(first);
    let head = timeout(Duration::from_secs(2), read_response_head(&mut third))
        .await
        .expect("answered once a connection closes");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    server.shutdown.trigger();
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn http2_with_prior_knowledge_is_served() {
    let server = start(settings()).await;
    let stream = TcpStream::connect(server.address).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);

    let request = hyper::Request::get(format!("{}/livez", server.base)).body(Empty::<Bytes>::new()).unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), hyper::Version::HTTP_2);

    drop(sender);
    server.shutdown.trigger();
    server.task.await.unwrap().unwrap();
}

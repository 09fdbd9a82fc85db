//! Logs come out as JSON lines in the documented shape, with the trace id; traces go to the
//! OTLP collector when one is configured. (One test: telemetry is installed once per process.)

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, body::Bytes, http::HeaderMap, routing::post};
use platform::{TelemetrySettings, telemetry::Telemetry};
use serde_json::Value;
use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// A stand-in OTLP/gRPC collector: records the bodies of trace export calls.
async fn fake_collector() -> (String, Arc<Mutex<Vec<Bytes>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = received.clone();
    let app = Router::new().route(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        post(move |_: HeaderMap, body: Bytes| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(body);
                // gRPC "trailers-only" success answer.
                ([("content-type", "application/grpc"), ("grpc-status", "0")], Bytes::new())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (endpoint, received)
}

#[tokio::test]
async fn logs_are_json_lines_and_traces_are_exported() {
    let (endpoint, received) = fake_collector().await;
    let logs = Captured::default();
    let settings = TelemetrySettings { otlp_endpoint: Some(endpoint), ..TelemetrySettings::default() };
    let telemetry = Telemetry::init_with_writer("order-service", &settings, logs.clone()).unwrap();

    let trace_id = {
        let span = tracing::info_span!("http_request", request_id = "req-1");
        let _entered = span.enter();
        tracing::info!(event = "order_created", order_id = "123", "order created");
        tracing::debug!(event = "hidden", "below the configured level");
        platform::telemetry::current_trace_id().expect("a span has a trace id")
    };
    tracing::warn!("no span here");
    // A thread that works for another service of the same process says so.
    std::thread::spawn(|| {
        platform::telemetry::set_thread_service("analytics-service");
        tracing::info!(event = "order_counted", "on another service's thread");
    })
    .join()
    .unwrap();

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<Value> =
        text.lines().map(|line| serde_json::from_str(line).expect("each line is JSON")).collect();
    assert_eq!(lines.len(), 3, "{text}");
    let line = &lines[0];
    assert_eq!(line["level"], "info");
    assert_eq!(line["service"], "order-service");
    assert_eq!(line["event"], "order_created");
    assert_eq!(line["order_id"], "123");
    assert_eq!(line["request_id"], "req-1", "fields of enclosing spans are included");
    assert_eq!(line["trace_id"], trace_id.as_str());
    assert_eq!(line["message"], "order created");
    chrono::DateTime::parse_from_rfc3339(line["timestamp"].as_str().unwrap()).expect("RFC 3339 timestamp");
    assert_eq!(lines[1]["level"], "warn");
    assert_eq!(lines[1]["event"], "no span here");
    assert!(lines[1].get("trace_id").is_none());
    assert_eq!(lines[1]["service"], "order-service");
    assert_eq!(lines[2]["service"], "analytics-service");

    let headers = {
        let span = tracing::info_span!("publish");
        let _entered = span.enter();
        platform::telemetry::current_trace_headers()
    };
    assert!(headers["traceparent"].starts_with("00-"), "{headers:?}");

    tokio::task::spawn_blocking(move || telemetry.shutdown(Duration::from_secs(5))).await.unwrap();
    let exported = received.lock().unwrap().clone();
    assert!(!exported.is_empty(), "spans were exported to the collector");
    let everything: Vec<u8> = exported.iter().flat_map(|b| b.to_vec()).collect();
    let contains = |needle: &str| everything.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(contains("order-service"), "the service name travels with the spans");
    assert!(contains("http_request"), "the span is in the export");
}

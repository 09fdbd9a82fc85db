//! The one-process system end to end: an order goes through all three services, and orders
//! accepted before a crash (`kill -9`) are each processed exactly once after the restart.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use orderflow::{Orderflow, Runtimes, Settings};
use serde_json::{Value, json};
use test_support::{TempDir, eventually};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

fn order(customer: &str, amount: &str) -> Value {
    let amount: Value = serde_json::from_str(amount).unwrap();
    json!({"customer_id": customer, "product_id": "product-456", "quantity": 2, "total_amount": amount})
}

async fn json_of(response: reqwest::Response) -> Value {
    response.json().await.expect("JSON body")
}

#[tokio::test]
async fn an_order_goes_through_all_three_services() {
    let data = TempDir::new();
    let settings = Settings {
        data_dir: data.0.clone(),
        order_port: 0,
        analytics_port: 0,
        notification_port: 0,
        ..Settings::default()
    };
    let runtimes = Runtimes::current();
    let running = Orderflow::assemble(&settings, &runtimes).await.expect("assemble").run(&runtimes);
    let url =
        |service: &str, path: &str| format!("http://127.0.0.1:{}{path}", running.port(service).unwrap());
    let client = reqwest::Client::new();

    let created =
        client.post(url("order-service", "/orders")).json(&order("customer-123", "99.99")).send().await;
    let created = created.unwrap();
    assert_eq!(created.status(), 201);
    let created = json_of(created).await;
    let path = format!("/orders/{}", created["id"].as_str().unwrap());

    let processed = eventually(Duration::from_secs(10), "the order processed", || async {
        let current = json_of(client.get(url("order-service", &path)).send().await.unwrap()).await;
        (current["status"] == "processed").then_some(current)
    })
    .await;
    assert_eq!(processed["id"], created["id"]);

    let summary =
        json_of(client.get(url("analytics-service", "/analytics/summary")).send().await.unwrap()).await;
    assert_eq!(summary["total_orders"], 1);
    assert_eq!(summary["total_revenue"].to_string(), "99.99");
    assert_eq!(summary["total_quantity"], 2);

    // Cancelled, it leaves the figures.
    let cancel = client.post(url("order-service", &format!("{path}/cancel"))).send().await.unwrap();
    assert_eq!(json_of(cancel).await["status"], "cancelled");
    let summary = eventually(Duration::from_secs(10), "the cancellation counted", || async {
        let summary =
            json_of(client.get(url("analytics-service", "/analytics/summary")).send().await.ok()?).await;
        (summary["cancelled_orders"] == 1).then_some(summary)
    })
    .await;
    assert_eq!((&summary["total_orders"], &summary["total_revenue"]), (&json!(0), &json!(0)), "{summary}");

    // The worker notified the three events, once each.
    eventually(Duration::from_secs(10), "three notifications sent", || async {
        let metrics =
            client.get(url("notification-worker", "/metrics")).send().await.ok()?.text().await.ok()?;
        metrics.contains(r#"notifications_sent_total{channel="log",outcome="sent"} 3"#).then_some(())
    })
    .await;

    for service in ["order-service", "analytics-service", "notification-worker"] {
        let ready = client.get(url(service, "/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 200, "{service}");
        assert_eq!(json_of(ready).await["checks"]["sqlite"]["status"], "up", "{service}");
    }

    running.stop(Duration::ZERO).await;
    running.wait().await.expect("every service stops cleanly");
}

/// The `orderflow` binary running on a data directory, and the URLs it printed.
struct Process {
    child: Child,
    urls: BTreeMap<String, String>,
}

impl Process {
    async fn start(data: &Path) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_orderflow"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("ORDERFLOW_DATA_DIR", data)
            .env("ORDERFLOW_ORDER_PORT", "0")
            .env("ORDERFLOW_ANALYTICS_PORT", "0")
            .env("ORDERFLOW_NOTIFICATION_PORT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start orderflow");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut urls = BTreeMap::new();
        let started = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.expect("read the log") {
                let Ok(entry) = serde_json::from_str::<Value>(&line) else { continue };
                match entry["event"].as_str() {
                    Some("listening") => {
                        let service = entry["service"].as_str().unwrap().to_owned();
                        urls.insert(service, entry["url"].as_str().unwrap().to_owned());
                    }
                    Some("ready") => return true,
                    _ => {}
                }
            }
            false
        })
        .await;
        assert_eq!(started, Ok(true), "orderflow did not start");
        // Keep reading, so that the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Process { child, urls }
    }

    fn url(&self, service: &str, path: &str) -> String {
        format!("{}{path}", self.urls[service])
    }
}

#[tokio::test]
async fn orders_accepted_before_a_crash_are_each_processed_once_after_the_restart() {
    let data = TempDir::new();
    let client = reqwest::Client::new();
    let mut first = Process::start(&data.0).await;

    let amounts: Vec<String> = (1..=200).map(|i| format!("{}.{:02}", i, i % 100)).collect();
    let posts = amounts.iter().map(|amount| {
        client.post(first.url("order-service", "/orders")).json(&order("crash", amount)).send()
    });
    let mut accepted = HashSet::new();
    for response in futures::future::join_all(posts).await {
        let response = response.unwrap();
        assert_eq!(response.status(), 201);
        accepted.insert(json_of(response).await["id"].as_str().unwrap().to_owned());
    }
    // No goodbye: whatever is in flight in the outboxes, the bus and the consumers stops here.
    first.child.kill().await.unwrap();

    let second = Process::start(&data.0).await;
    let expected_revenue: i64 =
        amounts.iter().map(|a| (a.parse::<f64>().unwrap() * 100.0).round() as i64).sum();
    let summary_url = second.url("analytics-service", "/analytics/summary");
    let summary = eventually(Duration::from_secs(60), "every accepted order counted", || async {
        let summary = json_of(client.get(&summary_url).send().await.ok()?).await;
        (summary["total_orders"] == 200).then_some(summary)
    })
    .await;
    let revenue = (summary["total_revenue"].as_f64().unwrap() * 100.0).round() as i64;
    assert_eq!(revenue, expected_revenue, "each order counted once: {summary}");

    let processed = eventually(Duration::from_secs(60), "every order processed", || async {
        let mut processed = HashSet::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(cursor) => format!("/orders?limit=100&cursor={cursor}"),
                None => "/orders?limit=100".to_owned(),
            };
            let page = json_of(client.get(second.url("order-service", &path)).send().await.ok()?).await;
            for order in page["orders"].as_array()? {
                if order["status"] == "processed" {
                    processed.insert(order["id"].as_str()?.to_owned());
                }
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        (processed.len() == accepted.len()).then_some(processed)
    })
    .await;
    assert_eq!(processed, accepted);

    // Quiet now, and still exact: nothing was counted twice late.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again = json_of(client.get(&summary_url).send().await.unwrap()).await;
    assert_eq!(again["total_orders"], 200);
    assert_eq!(again["total_revenue"], summary["total_revenue"]);

    // The operator command reads the same data directory while the system runs.
    let parked = Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .args(["parked", "list", "--json"])
        .env_clear()
        .env("ORDERFLOW_DATA_DIR", &data.0)
        .output()
        .await
        .unwrap();
    assert!(parked.status.success(), "{}", String::from_utf8_lossy(&parked.stderr));
    let listed: Value = serde_json::from_slice(&parked.stdout).unwrap();
    let queues = &listed["queues"];
    let names: Vec<&str> = queues.as_array().unwrap().iter().map(|q| q["queue"].as_str().unwrap()).collect();
    assert_eq!(names, ["analytics.orders", "notifications.orders", "orders.processed"]);
    assert!(queues.as_array().unwrap().iter().all(|q| q["parked"] == 0), "{queues}");
}

/// The interactive API pages work with no internet access: a real browser (Debian's headless
/// Chromium, an empty profile, background networking off) opens each API's `/docs/` as the
/// `orderflow` binary of `make run` serves it, and Swagger UI lists every path of the service's
/// OpenAPI document, which it could only do by loading its scripts and the document from the
/// service.
#[tokio::test]
async fn the_docs_pages_list_every_operation_in_a_headless_browser() {
    let Some(chromium) = on_path("chromium") else {
        eprintln!(
            "SKIPPED: no `chromium` on the PATH (Debian package chromium, installed by `make servers`)"
        );
        return;
    };
    let data = TempDir::new();
    let process = Process::start(&data.0).await;
    let client = reqwest::Client::new();
    for service in ["order-service", "analytics-service"] {
        let document = json_of(client.get(process.url(service, "/openapi.json")).send().await.unwrap()).await;
        let paths: BTreeSet<String> = document["paths"].as_object().unwrap().keys().cloned().collect();
        let profile = TempDir::new();
        let browser = Command::new(&chromium)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            .arg(format!("--user-data-dir={}", profile.0.display()))
            .args(["--virtual-time-budget=15000", "--dump-dom"])
            .arg(process.url(service, "/docs/"))
            .kill_on_drop(true)
            .output();
        let output =
            tokio::time::timeout(Duration::from_secs(60), browser).await.expect("chromium in time").unwrap();
        let dom = String::from_utf8_lossy(&output.stdout);
        let listed: BTreeSet<String> = dom
            .split("data-path=\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .map(str::to_owned)
            .collect();
        assert_eq!(listed, paths, "{service}: the paths Swagger UI lists at /docs/");
    }
}

/// Swagger UI's "Try it out" works against the service that serves it: in a real browser
/// (Debian's headless Chromium driven through ChromeDriver's WebDriver protocol, an empty
/// profile, background networking off), `POST /orders` sent from the `/docs/` page with the
/// document's example answers 201, and the order exists.
#[tokio::test]
async fn try_it_out_on_the_docs_page_creates_an_order() {
    let (Some(chromium), Some(chromedriver)) = (on_path("chromium"), on_path("chromedriver")) else {
        eprintln!(
            "SKIPPED: no `chromium` or `chromedriver` on the PATH (Debian packages chromium and \
             chromium-driver, installed by `make servers`)"
        );
        return;
    };
    let data = TempDir::new();
    let process = Process::start(&data.0).await;
    let profile = TempDir::new();
    let browser = WebDriver::start(&chromedriver, &chromium, &profile.0).await;

    browser.open(&process.url("order-service", "/docs/")).await;
    let operation = "#operations-orders-create_order";
    browser.click(&format!("{operation} .opblock-summary-control")).await;
    browser.click(&format!("{operation} .try-out__btn")).await;
    browser.click(&format!("{operation} .execute")).await;
    let status =
        browser.text(&format!("{operation} .live-responses-table tr.response .response-col_status")).await;
    assert_eq!(status.split_whitespace().next(), Some("201"), "the status Swagger UI shows: {status:?}");
    let body = browser
        .text(&format!("{operation} .live-responses-table tr.response .response-col_description pre"))
        .await;
    browser.close().await;

    let created: Value = serde_json::from_str(&body).expect("the answer Swagger UI shows is the order");
    let id = created["id"].as_str().expect("order id");
    let client = reqwest::Client::new();
    let stored =
        json_of(client.get(process.url("order-service", &format!("/orders/{id}"))).send().await.unwrap());
    assert_eq!(stored.await["customer_id"], "customer-123", "the document's example was sent");
}

/// The program `name` on the PATH, if it is there.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(name)).find(|path| path.is_file())
}

/// A browser session through ChromeDriver (W3C WebDriver over HTTP), closed with its driver.
struct WebDriver {
    http: reqwest::Client,
    session: String,
    _driver: Child,
}

const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
const BROWSER_WAIT: Duration = Duration::from_secs(30);

impl WebDriver {
    async fn start(chromedriver: &Path, chromium: &Path, profile: &Path) -> WebDriver {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    format!("--user-data-dir={}", profile.display())],
            },
        }}});
        let session = eventually(BROWSER_WAIT, "a ChromeDriver session", || async {
            let answer: Value = http
                .post(format!("{base}/session"))
                .json(&capabilities)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            answer["value"]["sessionId"].as_str().map(|id| format!("{base}/session/{id}"))
        })
        .await;
        WebDriver { http, session, _driver: driver }
    }

    async fn command(&self, path: &str, body: Value) -> Value {
        let answer =
            self.http.post(format!("{}{path}", self.session)).json(&body).send().await.expect("WebDriver");
        answer.json::<Value>().await.expect("WebDriver answer")["value"].take()
    }

    async fn open(&self, url: &str) {
        self.command("/url", json!({ "url": url })).await;
    }

    /// The element `css` selects, once the page shows it.
    async fn element(&self, css: &str) -> String {
        eventually(BROWSER_WAIT, css, || async {
            let found = self.command("/element", json!({"using": "css selector", "value": css})).await;
            found[ELEMENT_KEY].as_str().map(str::to_owned)
        })
        .await
    }

    async fn click(&self, css: &str) {
        let element = self.element(css).await;
        let clicked = self.command(&format!("/element/{element}/click"), json!({})).await;
        assert!(clicked.is_null(), "click {css}: {clicked}");
    }

    /// The text of the element `css` selects, once it has some.
    async fn text(&self, css: &str) -> String {
        eventually(BROWSER_WAIT, css, || async {
            let element = self.element(css).await;
            let text = self.http.get(format!("{}/element/{element}/text", self.session)).send().await.ok()?;
            let text = text.json::<Value>().await.ok()?["value"].as_str()?.trim().to_owned();
            (!text.is_empty()).then_some(text)
        })
        .await
    }

    async fn close(&self) {
        let _ = self.http.delete(&self.session).send().await;
    }
}

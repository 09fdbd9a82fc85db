//! Load on `POST /orders`: at a fixed rate (open loop: the schedule does not wait for answers), or
//! as fast as a number of clients are answered (closed loop). Every order is different and carries
//! an `Idempotency-Key` of its own, as careful clients send.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::Semaphore;

/// Requests in flight at most: past it the schedule waits, rather than pile up without bound.
const MAX_IN_FLIGHT: usize = 1024;

pub struct OrderClient {
    http: reqwest::Client,
    url: String,
    sent: AtomicU64,
    run: String,
    /// `BENCH_IDEMPOTENCY_KEYS=0` sends none, to see what they cost.
    keys: bool,
}

impl OrderClient {
    pub fn new(order_service: &str) -> OrderClient {
        OrderClient {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(MAX_IN_FLIGHT)
                .build()
                .expect("HTTP client"),
            url: format!("{order_service}/orders"),
            sent: AtomicU64::new(0),
            run: uuid::Uuid::new_v4().simple().to_string(),
            keys: std::env::var("BENCH_IDEMPOTENCY_KEYS").map_or(true, |value| value != "0"),
        }
    }

    /// One new order; whether it was created (201, else why not), and how long the answer took.
    pub async fn post(&self) -> (Outcome, Duration) {
        let n = self.sent.fetch_add(1, Ordering::Relaxed);
        let cents = (n * 7919) % 100_000 + 1;
        let body = format!(
            r#"{{"customer_id":"bench-{}","product_id":"product-{}","quantity":{},"total_amount":{}.{:02}}}"#,
            n % 1000,
            n % 50,
            n % 5 + 1,
            cents / 100,
            cents % 100
        );
        let started = Instant::now();
        let mut request = self.http.post(&self.url).header("content-type", "application/json").body(body);
        if self.keys {
            request = request.header("idempotency-key", format!("{}-{n}", self.run));
        }
        let outcome = match request.send().await {
            Ok(response) if response.status().as_u16() == 201 => match response.bytes().await {
                Ok(_) => Ok(()),
                Err(_) => Err("body not read".to_owned()),
            },
            Ok(response) => Err(response.status().as_u16().to_string()),
            Err(error) => Err(if error.is_timeout() { "timeout" } else { "connection" }.to_owned()),
        };
        (outcome, started.elapsed())
    }
}

/// `GET` of one path, as fast as answered.
pub struct Reader {
    http: reqwest::Client,
    url: String,
}

impl Reader {
    pub fn new(url: String) -> Reader {
        Reader { http: reqwest::Client::new(), url }
    }

    pub async fn get(&self) -> (Outcome, Duration) {
        let started = Instant::now();
        let outcome = match self.http.get(&self.url).send().await {
            Ok(response) if response.status().is_success() => match response.bytes().await {
                Ok(_) => Ok(()),
                Err(_) => Err("body not read".to_owned()),
            },
            Ok(response) => Err(response.status().as_u16().to_string()),
            Err(error) => Err(if error.is_timeout() { "timeout" } else { "connection" }.to_owned()),
        };
        (outcome, started.elapsed())
    }
}

/// A request's result: done, or why not (the answer's status code, `timeout`, `connection`).
pub type Outcome = Result<(), String>;

/// What a stretch of load saw.
#[derive(Default)]
pub struct Window {
    pub created: u64,
    pub failed: u64,
    /// The failures by what they were.
    failures: std::collections::BTreeMap<String, u64>,
    /// Answer times in microseconds.
    latencies: Vec<u32>,
}

impl Window {
    pub fn record(&mut self, outcome: Outcome, latency: Duration) {
        match outcome {
            Ok(()) => self.created += 1,
            Err(why) => {
                self.failed += 1;
                *self.failures.entry(why).or_default() += 1;
            }
        }
        self.latencies.push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
    }

    /// `", 3 failed (503: 2, timeout: 1)"`, or nothing when none failed.
    pub fn failures(&self) -> String {
        if self.failed == 0 {
            return String::new();
        }
        let kinds: Vec<String> = self.failures.iter().map(|(why, n)| format!("{why}: {n}")).collect();
        format!(", {} failed ({})", self.failed, kinds.join(", "))
    }

    fn absorb(&mut self, other: Window) {
        self.created += other.created;
        self.failed += other.failed;
        for (why, n) in other.failures {
            *self.failures.entry(why).or_default() += n;
        }
        self.latencies.extend(other.latencies);
    }

    /// The `q`-quantile of the answer times (0.5, 0.99, …).
    pub fn quantile(&mut self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        self.latencies.sort_unstable();
        let index = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        Duration::from_micros(u64::from(self.latencies[index]))
    }
}

pub type SharedWindow = Arc<Mutex<Window>>;

/// Sends `rate` orders per second until `until`, recording each answer into whichever window
/// `window` holds when the answer comes (the caller swaps it to cut the run into periods).
pub async fn at_rate(client: Arc<OrderClient>, rate: f64, until: Instant, window: Arc<Mutex<SharedWindow>>) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let started = Instant::now();
    let mut due: u64 = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tasks = tokio::task::JoinSet::new();
    while Instant::now() < until {
        tick.tick().await;
        // Send whatever the schedule says is due by now.
        let should_have_sent = (started.elapsed().as_secs_f64() * rate) as u64;
        while due < should_have_sent {
            due += 1;
            let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
            let client = client.clone();
            let window = window.clone();
            tasks.spawn(async move {
                let (created, latency) = client.post().await;
                let current = window.lock().unwrap().clone();
                current.lock().unwrap().record(created, latency);
                drop(permit);
            });
        }
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

/// `clients` clients, each sending the next request as soon as the last is answered, until
/// `until`; what they saw (`created` counts the successful answers).
pub async fn flat_out<F, Fut>(clients: usize, until: Instant, request: F) -> Window
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = (Outcome, Duration)> + Send,
{
    let request = Arc::new(request);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let request = request.clone();
        tasks.spawn(async move {
            let mut seen = Window::default();
            while Instant::now() < until {
                let (ok, latency) = request().await;
                seen.record(ok, latency);
            }
            seen
        });
    }
    let mut total = Window::default();
    while let Some(Ok(seen)) = tasks.join_next().await {
        total.absorb(seen);
    }
    total
}

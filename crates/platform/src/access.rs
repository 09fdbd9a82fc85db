//! Who may call an API, and how often.
//!
//! - **API keys** (optional): `Authorization: Bearer <key>`. Keys are configured as SHA-256
//!   digests, never in clear, each with the scopes it grants. A request without a known key is
//!   answered 401, one whose key lacks the operation's scope 403, both with `WWW-Authenticate`
//!   (RFC 6750). With no key configured, the API is open.
//! - **Rate limits**: a token bucket per API key (per client address when keys are off; IPv6
//!   clients by their /64), refilled at `requests_per_second` up to `burst`. A request finding
//!   the bucket empty is answered 429 with `Retry-After`; every admitted answer carries
//!   `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`.
//!
//! Only the API's own routes are guarded: probes, metrics and the documentation stay open.

use std::{
    collections::HashMap,
    fmt,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    num::NonZeroU32,
    str::FromStr,
    sync::Arc,
    time::Duration,
};

use axum::{
    Router,
    extract::{ConnectInfo, MatchedPath, Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use governor::{
    Quota, RateLimiter, clock::Clock, middleware::StateInformationMiddleware, state::keyed::DashMapStateStore,
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use utoipa::openapi::{OpenApi, path::Operation};

use crate::{ApiError, ConfigError};

/// What a key may do. Each operation of an API requires one scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Create orders (and anything else that changes them).
    OrdersWrite,
    /// Read and list orders.
    OrdersRead,
    /// Read the analytics.
    AnalyticsRead,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::OrdersWrite, Scope::OrdersRead, Scope::AnalyticsRead];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::OrdersWrite => "orders:write",
            Scope::OrdersRead => "orders:read",
            Scope::AnalyticsRead => "analytics:read",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == text).ok_or_else(|| {
            format!("unknown scope {text:?} (one of orders:write, orders:read, analytics:read)")
        })
    }
}

/// One configured key: the SHA-256 of the key, and the scopes it grants. Written
/// `<64 hex digits>:<scope>[ <scope>…]`, e.g. `9f86d08…f00a08:orders:write orders:read`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    digest: [u8; 32],
    scopes: Vec<Scope>,
}

impl ApiKey {
    /// The configuration entry for `key` with `scopes` (what an operator writes, computed).
    pub fn for_key(key: &str, scopes: &[Scope]) -> ApiKey {
        ApiKey { digest: Sha256::digest(key.as_bytes()).into(), scopes: scopes.to_vec() }
    }

    /// How the key is named in logs: the first 12 hex digits of its digest (not of the key).
    pub fn id(&self) -> String {
        hex(&self.digest[..6])
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey").field("id", &self.id()).field("scopes", &self.scopes).finish()
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scopes: Vec<&str> = self.scopes.iter().map(|s| s.as_str()).collect();
        write!(f, "{}:{}", hex(&self.digest), scopes.join(" "))
    }
}

impl FromStr for ApiKey {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (digest, scopes) = text
            .trim()
            .split_once(':')
            .ok_or("expected <sha256 of the key, 64 hex digits>:<scope>[ <scope>…]")?;
        let digest = parse_digest(digest)
            .ok_or("the part before ':' must be the key's SHA-256 digest, 64 hex digits (never the key)")?;
        let scopes = scopes.split_whitespace().map(Scope::from_str).collect::<Result<Vec<_>, _>>()?;
        if scopes.is_empty() {
            return Err("a key needs at least one scope".into());
        }
        Ok(ApiKey { digest, scopes })
    }
}

impl Serialize for ApiKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

fn parse_digest(text: &str) -> Option<[u8; 32]> {
    let text = text.trim().as_bytes();
    if text.len() != 64 {
        return None;
    }
    let mut digest = [0u8; 32];
    for (byte, pair) in digest.iter_mut().zip(text.chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(digest)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// API keys. Off (the API is open) while `api_keys` is empty.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthSettings {
    /// `<sha256 hex>:<scope>[ <scope>…]` entries, as a list or separated by commas or newlines
    /// (`API_KEYS`). The same digest twice adds up its scopes.
    #[serde(deserialize_with = "api_keys")]
    pub api_keys: Vec<ApiKey>,
    /// Refuse to start without a key, so that an empty Secret never leaves the API open.
    pub required: bool,
}

/// Like any list setting, except that an entry that does not parse is named by its position,
/// never quoted: it may be a key written in clear.
fn api_keys<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<ApiKey>, D::Error> {
    let entries: Vec<String> = crate::settings::list_or_comma_separated(deserializer)?;
    entries
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            entry.parse().map_err(|error| serde::de::Error::custom(format!("entry {}: {error}", index + 1)))
        })
        .collect()
}

impl AuthSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.required && self.api_keys.is_empty() {
            return Err(ConfigError::invalid(
                "auth.api_keys",
                "keys are required (auth.required) but none is set",
            ));
        }
        Ok(())
    }
}

/// The token bucket of each client. `requests_per_second = 0` turns the limit off.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RateLimitSettings {
    /// Requests a client may make per second, sustained (per replica); `0.5` is one every two
    /// seconds.
    pub requests_per_second: f64,
    /// Requests a client may make at once after a quiet spell.
    pub burst: u32,
    /// Proxies in front (an ingress controller's pods, a load balancer), as addresses or ranges
    /// (`10.0.0.0/8`). From one of them, the client's address is the last one in
    /// `X-Forwarded-For` that is not itself such a proxy. Empty: the connection's peer is the
    /// client, whatever it sends.
    #[serde(deserialize_with = "crate::settings::list_or_comma_separated")]
    pub trusted_proxies: Vec<AddressRange>,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings { requests_per_second: 1_000.0, burst: 2_000, trusted_proxies: Vec::new() }
    }
}

/// An address or a range of them (CIDR): `192.0.2.7`, `10.0.0.0/8`, `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressRange {
    network: IpAddr,
    prefix: u8,
}

impl AddressRange {
    pub fn contains(&self, address: IpAddr) -> bool {
        match (self.network, address.to_canonical()) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(network) & mask == u32::from(address) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(network) & mask == u128::from(address) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for AddressRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || format!("expected an address or a range such as 10.0.0.0/8, not {text:?}");
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address.trim().parse::<IpAddr>().map_err(|_| invalid())?.to_canonical();
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix.trim().parse::<u8>().ok().filter(|p| *p <= bits).ok_or_else(invalid)?,
            None => bits,
        };
        Ok(AddressRange { network, prefix })
    }
}

impl fmt::Display for AddressRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Serialize for AddressRange {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The address a request comes from: its connection's peer, or, when the peer is a trusted
/// proxy, the nearest address in `X-Forwarded-For` that is not one (proxies append the address
/// they received from, so what a client wrote itself stays to the left of it).
fn client_address(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[AddressRange]) -> Option<IpAddr> {
    let peer = peer?.to_canonical();
    let is_trusted = |address: IpAddr| trusted.iter().any(|range| range.contains(address));
    if !is_trusted(peer) {
        return Some(peer);
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    let mut nearest = peer;
    for hop in hops.iter().rev() {
        // An entry that is not an address ends the walk: nothing left of it can be trusted.
        let Ok(address) = hop.parse::<IpAddr>() else { break };
        nearest = address.to_canonical();
        if !is_trusted(nearest) {
            break;
        }
    }
    Some(nearest)
}

/// Above this, a token would take less than a nanosecond to refill.
const MAX_REQUESTS_PER_SECOND: f64 = 1e9;

impl RateLimitSettings {
    /// No limit.
    pub fn off() -> Self {
        RateLimitSettings { requests_per_second: 0.0, burst: 0, trusted_proxies: Vec::new() }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let rate = self.requests_per_second;
        if !(0.0..=MAX_REQUESTS_PER_SECOND).contains(&rate) {
            return Err(ConfigError::invalid(
                "rate_limit.requests_per_second",
                format!("must be between 0 (no limit) and {MAX_REQUESTS_PER_SECOND}"),
            ));
        }
        if rate > 0.0 && self.burst == 0 {
            return Err(ConfigError::invalid("rate_limit.burst", "must be greater than 0"));
        }
        Ok(())
    }

    fn quota(&self) -> Option<Quota> {
        if self.requests_per_second <= 0.0 {
            return None;
        }
        let period = Duration::from_secs_f64(1.0 / self.requests_per_second.min(MAX_REQUESTS_PER_SECOND));
        let burst = NonZeroU32::new(self.burst).unwrap_or(NonZeroU32::MIN);
        Some(Quota::with_period(period.max(Duration::from_nanos(1)))?.allow_burst(burst))
    }
}

/// Who a request comes from, for its rate limit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Client {
    Key([u8; 32]),
    Address(IpAddr),
}

impl Client {
    fn of_address(address: Option<IpAddr>) -> Client {
        let address = address.map(|a| a.to_canonical()).unwrap_or(IpAddr::from([0, 0, 0, 0]));
        match address {
            // One IPv6 subscriber usually holds a whole /64.
            IpAddr::V6(v6) => {
                let s = v6.segments();
                Client::Address(IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0)))
            }
            v4 => Client::Address(v4),
        }
    }
}

type Limiter =
    RateLimiter<Client, DashMapStateStore<Client>, governor::clock::DefaultClock, StateInformationMiddleware>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

/// The scope each request to an API needs, by its method.
pub type RequiredScope = fn(&Method) -> Scope;

/// Authentication and rate limiting of one API, applied to its routes by [`ApiGuard::protect`].
#[derive(Clone)]
pub struct ApiGuard {
    inner: Arc<Guard>,
}

struct Guard {
    keys: HashMap<[u8; 32], Vec<Scope>>,
    required_scope: RequiredScope,
    limiter: Option<Limiter>,
    settings: RateLimitSettings,
    rate_limited: Family<RouteLabel, Counter>,
}

/// How often buckets of clients that went quiet are forgotten.
const FORGET_QUIET_CLIENTS_EVERY: Duration = Duration::from_secs(60);

impl ApiGuard {
    /// Registers the guard's metric and, with a rate limit, a task that keeps the buckets of
    /// recent clients only (so that the map does not grow with every address ever seen).
    pub fn new(
        auth: &AuthSettings,
        rate_limit: &RateLimitSettings,
        required_scope: RequiredScope,
        runtime: &mut crate::Runtime,
    ) -> ApiGuard {
        let (registry, shutdown) = (&mut runtime.registry, &runtime.shutdown);
        let mut keys: HashMap<[u8; 32], Vec<Scope>> = HashMap::new();
        for key in &auth.api_keys {
            let scopes = keys.entry(key.digest).or_default();
            for scope in &key.scopes {
                if !scopes.contains(scope) {
                    scopes.push(*scope);
                }
            }
        }
        let rate_limited = Family::<RouteLabel, Counter>::default();
        registry.register(
            "http_requests_rate_limited",
            "API requests answered 429 because their client's rate limit was reached",
            rate_limited.clone(),
        );
        let limiter = rate_limit.quota().map(|quota| RateLimiter::dashmap(quota).with_middleware());
        let guard = ApiGuard {
            inner: Arc::new(Guard {
                keys,
                required_scope,
                limiter,
                settings: rate_limit.clone(),
                rate_limited,
            }),
        };
        if guard.inner.limiter.is_some() {
            let forgetful = guard.clone();
            shutdown.spawn_periodic(FORGET_QUIET_CLIENTS_EVERY, move || {
                let guard = forgetful.clone();
                async move {
                    if let Some(limiter) = &guard.inner.limiter {
                        limiter.retain_recent();
                        limiter.shrink_to_fit();
                    }
                }
            });
        }
        tracing::info!(
            event = "api_access",
            api_keys = guard.inner.keys.len(),
            requests_per_second = rate_limit.requests_per_second,
            burst = rate_limit.burst,
            "API keys {}; rate limit {}",
            if guard.inner.keys.is_empty() { "off (the API is open)" } else { "required" },
            if guard.inner.limiter.is_some() { "on" } else { "off" },
        );
        guard
    }

    /// Whether requests need a key (keys are configured).
    pub fn requires_keys(&self) -> bool {
        !self.inner.keys.is_empty()
    }

    /// The scope a request with `method` needs.
    pub fn required_scope(&self, method: &Method) -> Scope {
        (self.inner.required_scope)(method)
    }

    /// Guards every route of `router` (and only those: routes merged later stay open).
    pub fn protect<S: Clone + Send + Sync + 'static>(&self, router: Router<S>) -> Router<S> {
        router.route_layer(middleware::from_fn_with_state(self.clone(), check))
    }

    /// The client a request comes from, or why it is refused (401/403).
    fn authenticate(&self, request: &Request) -> Result<Client, Refusal> {
        if self.inner.keys.is_empty() {
            let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip());
            let trusted = &self.inner.settings.trusted_proxies;
            return Ok(Client::of_address(client_address(peer, request.headers(), trusted)));
        }
        let token = bearer_token(request.headers()).ok_or(Refusal::NoKey)?;
        // Looking the digest up, not the key, leaks nothing of a key through timing.
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let scopes = self.inner.keys.get(&digest).ok_or(Refusal::UnknownKey)?;
        let needed = self.required_scope(request.method());
        if !scopes.contains(&needed) {
            return Err(Refusal::MissingScope(needed));
        }
        Ok(Client::Key(digest))
    }

    /// Takes a token from `client`'s bucket: the rate-limit headers of the answer, or the 429.
    fn admit(&self, client: &Client, route: &str) -> Result<Option<RateLimitHeaders>, Refusal> {
        let Some(limiter) = &self.inner.limiter else {
            return Ok(None);
        };
        let limit = self.inner.settings.burst;
        let per_second = self.inner.settings.requests_per_second;
        match limiter.check_key(client) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity().min(limit);
                let reset = (f64::from(limit - remaining) / per_second).ceil() as u64;
                Ok(Some(RateLimitHeaders { limit, remaining, reset }))
            }
            Err(not_until) => {
                self.inner.rate_limited.get_or_create(&RouteLabel { route: route.to_owned() }).inc();
                let wait = not_until.wait_time_from(limiter.clock().now());
                let retry_after = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
                let reset = (f64::from(limit) / per_second).ceil() as u64;
                Err(Refusal::RateLimited {
                    per_second,
                    retry_after,
                    headers: RateLimitHeaders { limit, remaining: 0, reset },
                })
            }
        }
    }
}

/// Why the guard answers instead of the API.
enum Refusal {
    /// 401: no `Authorization: Bearer` key.
    NoKey,
    /// 401: a key that is not configured.
    UnknownKey,
    /// 403: a key without the operation's scope.
    MissingScope(Scope),
    /// 429: the client's bucket is empty.
    RateLimited { per_second: f64, retry_after: u64, headers: RateLimitHeaders },
}

const REALM: &str = "orderflow";

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (error, challenge) = match self {
            Refusal::NoKey => (
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "an API key is required: send it as Authorization: Bearer <key>",
                ),
                format!("Bearer realm=\"{REALM}\""),
            ),
            Refusal::UnknownKey => (
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "the API key is not valid"),
                format!("Bearer realm=\"{REALM}\", error=\"invalid_token\""),
            ),
            Refusal::MissingScope(needed) => (
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!("the API key does not grant the scope this operation needs ({needed})"),
                )
                .with_details(json!({ "scope": needed.as_str() })),
                format!("Bearer realm=\"{REALM}\", error=\"insufficient_scope\", scope=\"{needed}\""),
            ),
            Refusal::RateLimited { per_second, retry_after, headers } => {
                let mut response = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!(
                        "too many requests: this client may make {per_second} per second; retry in {retry_after} s"
                    ),
                )
                .into_response();
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
                headers.write(response.headers_mut());
                return response;
            }
        };
        let mut response = error.into_response();
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

struct RateLimitHeaders {
    limit: u32,
    remaining: u32,
    /// Seconds until the bucket is full again.
    reset: u64,
}

const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

impl RateLimitHeaders {
    fn write(&self, headers: &mut HeaderMap) {
        headers.insert(RATELIMIT_LIMIT, HeaderValue::from(self.limit));
        headers.insert(RATELIMIT_REMAINING, HeaderValue::from(self.remaining));
        headers.insert(RATELIMIT_RESET, HeaderValue::from(self.reset));
    }
}

async fn check(State(guard): State<ApiGuard>, request: Request, next: Next) -> Response {
    let client = match guard.authenticate(&request) {
        Ok(client) => client,
        Err(refusal) => return refusal.into_response(),
    };
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str()).unwrap_or("unmatched");
    match guard.admit(&client, route) {
        Ok(headers) => {
            let mut response = next.run(request).await;
            if let Some(headers) = headers {
                headers.write(response.headers_mut());
            }
            response
        }
        Err(refusal) => refusal.into_response(),
    }
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Declares the guard in an API's OpenAPI document: the `apiKey` bearer scheme, each operation's
/// scope (or no key at all, where the deployment configures none: a deployment with keys serves
/// its document through [`require_keys`]), and the 401, 403 and 429 answers with their headers.
pub fn document(api: &mut OpenApi, required_scope: impl Fn(&Method) -> Scope) {
    use utoipa::openapi::{
        ContentBuilder, Ref, ResponseBuilder,
        header::HeaderBuilder,
        schema::{ObjectBuilder, Type},
        security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme},
    };

    let integer = |description: &str| {
        HeaderBuilder::new()
            .schema(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)))
            .description(Some(description))
            .build()
    };
    let text = |description: &str| HeaderBuilder::new().description(Some(description)).build();
    let rate_limit_headers = [
        ("RateLimit-Limit", integer("Requests this client may make at once (the bucket's size)")),
        ("RateLimit-Remaining", integer("Requests left in this client's bucket")),
        ("RateLimit-Reset", integer("Seconds until the bucket is full again")),
    ];
    let error = |description: &str| {
        ResponseBuilder::new().description(description).content(
            "application/json",
            ContentBuilder::new().schema(Some(Ref::from_schema_name("Error"))).build(),
        )
    };
    let challenge = "`Bearer realm=\"orderflow\"`, with `error` (and `scope`) saying what is wrong";
    let unauthorized = error("No valid API key: `Authorization: Bearer <key>` is missing or the key is unknown (only where API keys are configured)")
        .header("WWW-Authenticate", text(challenge))
        .build();
    let forbidden = error("The API key does not grant this operation's scope (`details.scope` names it)")
        .header("WWW-Authenticate", text(challenge))
        .build();
    let mut too_many = error("This client's rate limit is reached; nothing was done")
        .header("Retry-After", integer("Seconds to wait before the next request is admitted"));
    for (name, header) in &rate_limit_headers {
        too_many = too_many.header(*name, header.clone());
    }
    let too_many = too_many.build();

    for (method, operation) in operations(api) {
        let scope = required_scope(&method);
        operation.security = Some(vec![
            SecurityRequirement::new(SECURITY_SCHEME, [scope.as_str()]),
            SecurityRequirement::default(),
        ]);
        let responses = &mut operation.responses.responses;
        for response in responses.values_mut() {
            if let utoipa::openapi::RefOr::T(response) = response {
                for (name, header) in &rate_limit_headers {
                    response.headers.entry(name.to_string()).or_insert_with(|| header.clone());
                }
            }
        }
        responses.insert("401".into(), unauthorized.clone().into());
        responses.insert("403".into(), forbidden.clone().into());
        responses.insert("429".into(), too_many.clone().into());
    }
    let scheme = HttpBuilder::new()
        .scheme(HttpAuthScheme::Bearer)
        .description(Some(
            "An API key, where the deployment configures keys (`API_KEYS`); each key grants scopes \
             (`orders:write`, `orders:read`, `analytics:read`) and each operation needs one.",
        ))
        .build();
    api.components
        .get_or_insert_with(Default::default)
        .security_schemes
        .insert(SECURITY_SCHEME.into(), SecurityScheme::Http(scheme));
}

/// Turns a [`document`]ed API's keys from optional to required, as a deployment with keys
/// serves it: each operation then needs its scope, with no keyless alternative.
pub fn require_keys(api: &mut OpenApi) {
    for (_, operation) in operations(api) {
        if let Some(requirements) = &mut operation.security {
            requirements.retain(|requirement| requirement != &Default::default());
        }
    }
}

/// Every operation of a document, with its method.
fn operations(api: &mut OpenApi) -> impl Iterator<Item = (Method, &mut Operation)> + '_ {
    api.paths.paths.values_mut().flat_map(|path| {
        [
            (Method::GET, &mut path.get),
            (Method::PUT, &mut path.put),
            (Method::POST, &mut path.post),
            (Method::DELETE, &mut path.delete),
            (Method::PATCH, &mut path.patch),
        ]
        .into_iter()
        .filter_map(|(method, operation)| Some((method, operation.as_mut()?)))
    })
}

/// The name of the API-key scheme in the OpenAPI documents.
pub const SECURITY_SCHEME: &str = "apiKey";

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST_OF_TEST: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(default)]
    struct Access {
        auth: AuthSettings,
        rate_limit: RateLimitSettings,
    }

    fn load(env: &[(&str, &str)]) -> Result<Access, ConfigError> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        crate::config::load_from(&Access::default(), &[], env)
    }

    #[test]
    fn a_key_is_configured_by_its_digest_with_its_scopes() {
        let key: ApiKey = format!("{DIGEST_OF_TEST}:orders:write orders:read").parse().unwrap();
        assert_eq!(key, ApiKey::for_key("test", &[Scope::OrdersWrite, Scope::OrdersRead]));
        assert_eq!(key.to_string(), format!("{DIGEST_OF_TEST}:orders:write orders:read"));
        assert_eq!(key.id(), "9f86d081884c");
        assert!(!format!("{key:?}").contains(DIGEST_OF_TEST), "the whole digest stays out of logs");
    }

    #[test]
    fn a_key_in_clear_a_bad_digest_or_an_unknown_scope_is_refused() {
        let refused = |text: &str| text.parse::<ApiKey>().unwrap_err();
        assert!(refused("my-secret-key:orders:read").contains("SHA-256"));
        assert!(refused(&format!("{}:orders:read", &DIGEST_OF_TEST[1..])).contains("64 hex"));
        assert!(refused(&format!("{DIGEST_OF_TEST}:orders:delete")).contains("unknown scope"));
        assert!(refused(&format!("{DIGEST_OF_TEST}:")).contains("at least one scope"));
        assert!(refused(DIGEST_OF_TEST).contains("expected"));
    }

    #[test]
    fn keys_come_from_the_environment_separated_by_commas_or_newlines() {
        let other = format!("{}:analytics:read", "ab".repeat(32));
        let value = format!("{DIGEST_OF_TEST}:orders:read,\n{other}\n");
        let access =
            load(&[("API_KEYS", &value), ("RATE_LIMIT_PER_SECOND", "2.5"), ("RATE_LIMIT_BURST", "5")])
                .unwrap();
        assert_eq!(access.auth.api_keys.len(), 2);
        assert_eq!(access.auth.api_keys[1].to_string(), other);
        assert_eq!(access.rate_limit.requests_per_second, 2.5);
        assert_eq!(access.rate_limit.burst, 5);
        let access = load(&[("RATE_LIMIT_TRUSTED_PROXIES", "10.0.0.0/8, fd00::/8")]).unwrap();
        assert_eq!(
            access.rate_limit.trusted_proxies,
            ["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()]
        );
        let error = load(&[("API_KEYS", &format!("{other},my-secret:orders:read"))]).unwrap_err().to_string();
        assert!(error.contains("API_KEYS") && error.contains("entry 2"), "{error}");
        assert!(!error.contains("my-secret"), "a key written in clear is never echoed: {error}");
    }

    #[test]
    fn settings_that_cannot_work_are_refused() {
        let required = AuthSettings { api_keys: Vec::new(), required: true };
        assert!(required.validate().is_err(), "keys required, none set");
        for (rate, burst) in [(-1.0, 10), (f64::NAN, 10), (2e9, 10), (10.0, 0)] {
            let settings = RateLimitSettings { requests_per_second: rate, burst, ..RateLimitSettings::off() };
            assert!(settings.validate().is_err(), "{rate}/{burst}");
        }
        assert!(RateLimitSettings::off().validate().is_ok());
        assert!(RateLimitSettings::off().quota().is_none());
    }

    #[test]
    fn ipv6_clients_share_the_bucket_of_their_64() {
        let client = |text: &str| Client::of_address(Some(text.parse().unwrap()));
        assert_eq!(client("2001:db8:1:2:aaaa::1"), client("2001:db8:1:2:bbbb::2"));
        assert_ne!(client("2001:db8:1:2::1"), client("2001:db8:1:3::1"));
        assert_eq!(client("::ffff:192.0.2.7"), client("192.0.2.7"));
        assert_ne!(client("192.0.2.7"), client("192.0.2.8"));
    }

    #[test]
    fn address_ranges_hold_their_addresses() {
        let range = |text: &str| text.parse::<AddressRange>().unwrap();
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        assert!(range("10.0.0.0/8").contains(ip("10.200.3.4")));
        assert!(!range("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(range("192.0.2.7").contains(ip("192.0.2.7")));
        assert!(!range("192.0.2.7").contains(ip("192.0.2.8")));
        assert!(range("192.0.2.0/24").contains(ip("::ffff:192.0.2.9")), "IPv4-mapped IPv6 is IPv4");
        assert!(range("fd00::/8").contains(ip("fd12::1")));
        assert!(!range("fd00::/8").contains(ip("fe80::1")));
        assert!(range("0.0.0.0/0").contains(ip("203.0.113.1")));
        assert!(!range("0.0.0.0/0").contains(ip("::1")), "a range is of one family");
        for bad in ["10.0.0.0/33", "fd00::/129", "example.com", "10.0.0.0/x", ""] {
            assert!(bad.parse::<AddressRange>().is_err(), "{bad}");
        }
        assert_eq!(range("10.1.0.0/16").to_string(), "10.1.0.0/16");
    }

    #[test]
    fn behind_trusted_proxies_the_client_is_the_nearest_untrusted_hop() {
        let trusted: Vec<AddressRange> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |text: &str| Some(text.parse::<IpAddr>().unwrap());
        let forwarded = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("x-forwarded-for", HeaderValue::from_str(value).unwrap());
            headers
        };
        // A client that is not a proxy is itself, whatever it claims.
        assert_eq!(
            client_address(ip("203.0.113.9"), &forwarded("198.51.100.1"), &trusted),
            ip("203.0.113.9")
        );
        // Through the ingress: the address it appended, not what the client wrote before it.
        let through = forwarded("198.51.100.1, 203.0.113.9, 10.0.0.7");
        assert_eq!(client_address(ip("10.0.0.5"), &through, &trusted), ip("203.0.113.9"));
        // An entry that is no address stops the walk at the last trusted hop.
        assert_eq!(
            client_address(ip("10.0.0.5"), &forwarded("203.0.113.9, bogus"), &trusted),
            ip("10.0.0.5")
        );
        // No header: the proxy itself.
        assert_eq!(client_address(ip("10.0.0.5"), &HeaderMap::new(), &trusted), ip("10.0.0.5"));
        // No trusted proxy configured: the header is never read.
        assert_eq!(client_address(ip("10.0.0.5"), &through, &[]), ip("10.0.0.5"));
    }

    #[test]
    fn only_a_bearer_token_is_a_key() {
        let token = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            bearer_token(&headers).map(str::to_owned)
        };
        assert_eq!(token("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(token("BEARER  abc ").as_deref(), Some("abc"));
        assert_eq!(token("Basic abc"), None);
        assert_eq!(token("Bearer "), None);
        assert_eq!(token("Bearer"), None);
    }
}

//! The `webhook` channel: an HTTP POST of the event envelope, exactly as received, signed so
//! that the receiver can tell it comes from us, was not altered, and is not an old request
//! replayed.
//!
//! Request headers:
//! - `Content-Type: application/json`
//! - `X-Orderflow-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body bytes>", keyed
//!   with the secret>`; `t` is when this request was sent, so each retry is signed anew
//! - `X-Orderflow-Event-Id`, `X-Orderflow-Event-Type`: also in the body, repeated for routing
//! - `traceparent` when the event carried a trace, so the receiver can join it
//!
//! A receiver checks the header with [`verify_signature`] (or the same steps in its language),
//! which refuses a `t` further than [`DEFAULT_TOLERANCE`] from its clock, and remembers the event
//! ids it accepted within that window so as not to act on a replay of a recent request.
//!
//! A 2xx answer means delivered. A receiver that cannot be reached at all (connection refused,
//! unreachable, unknown host) is down: the worker pauses until it is back. A timeout, a 5xx, 408
//! or 429 may pass later (transient); any other answer (4xx, or a redirect, which we do not
//! follow) will not.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use platform::ConfigError;
use reqwest::{StatusCode, Url, header};
use sha2::Sha256;

use super::{Channel, Notification, SendError};
use crate::settings::WebhookSettings;

pub const SIGNATURE_HEADER: &str = "x-orderflow-signature";
pub const EVENT_ID_HEADER: &str = "x-orderflow-event-id";
pub const EVENT_TYPE_HEADER: &str = "x-orderflow-event-type";

pub struct WebhookChannel {
    client: reqwest::Client,
    url: Url,
    secret: Vec<u8>,
    timeout: Duration,
}

impl WebhookChannel {
    /// A channel for `settings`, checked when they were loaded ([`crate::settings::Settings::load`]).
    pub fn new(settings: &WebhookSettings) -> Result<Self, ConfigError> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout())
            // A webhook that moved is a configuration to fix, not something to follow blindly.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("orderflow-notification-worker/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                ConfigError::invalid("notifications.webhook", format!("cannot build a client: {e}"))
            })?;
        Ok(WebhookChannel {
            client,
            url: settings.endpoint()?,
            secret: settings
                .secret
                .as_ref()
                .map(|secret| secret.expose().as_bytes().to_vec())
                .unwrap_or_default(),
            timeout: settings.timeout(),
        })
    }
}

/// How far a signature's `t` may be from the receiver's clock. Receivers should reject older
/// requests, and remember the event ids they accepted within this window to reject replays of
/// recent ones (with a 2xx that does nothing: the worker also resends when an answer is lost).
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// `t=<timestamp>,v1=<hex>`: the HMAC-SHA256 of `"<timestamp>.<body>"` keyed with `secret`.
pub fn signature_header(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let digest = signed_payload_mac(secret, &timestamp.to_string(), body).finalize().into_bytes();
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

fn signed_payload_mac(secret: &[u8], timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Why a signature header does not vouch for a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("malformed signature header: {0}")]
    Malformed(&'static str),
    #[error("the signature's timestamp is outside the tolerated window")]
    TimestampOutsideTolerance,
    #[error("no signature matches the body")]
    NoMatchingSignature,
}

/// Checks an `X-Orderflow-Signature` header against the raw `body` received, `now` being the
/// receiver's clock in unix seconds. Elements other than `t` and `v1` are ignored, and any of
/// several `v1` values may match: a sender rotating its secret signs with both keys for a while.
pub fn verify_signature(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for element in header.split(',') {
        match element.trim().split_once('=') {
            Some(("t", _)) if timestamp.is_some() => {
                return Err(SignatureError::Malformed("more than one timestamp"));
            }
            Some(("t", value)) => timestamp = Some(value),
            Some(("v1", value)) => signatures.push(value),
            _ => {}
        }
    }
    let timestamp_text = timestamp.ok_or(SignatureError::Malformed("no timestamp"))?;
    let timestamp: i64 =
        timestamp_text.parse().map_err(|_| SignatureError::Malformed("the timestamp is not a number"))?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed("no v1 signature"));
    }
    if now.abs_diff(timestamp) > tolerance.as_secs() {
        return Err(SignatureError::TimestampOutsideTolerance);
    }
    // The MAC covers the timestamp as written, so that a sender's formatting cannot break it.
    let mac = signed_payload_mac(secret, timestamp_text, body);
    let matched = signatures
        .into_iter()
        .filter_map(decode_hex)
        .any(|candidate| mac.clone().verify_slice(&candidate).is_ok());
    if matched { Ok(()) } else { Err(SignatureError::NoMatchingSignature) }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let digit = |byte: u8| char::from(byte).to_digit(16);
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes.chunks_exact(2).map(|pair| Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)).collect()
}

fn unix_now() -> i64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX)
}

#[async_trait]
impl Channel for WebhookChannel {
    fn name(&self) -> &'static str {
        "webhook"
    }

    async fn send(&self, notification: &Notification) -> Result<(), SendError> {
        let body = notification.envelope.clone();
        let mut request = self
            .client
            .post(self.url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature_header(&self.secret, unix_now(), &body))
            .header(EVENT_ID_HEADER, notification.event_id.to_string())
            .header(EVENT_TYPE_HEADER, notification.event_type.as_str());
        for (name, value) in platform::telemetry::current_trace_headers() {
            request = request.header(name, value);
        }
        let response = match request.body(body).send().await {
            Ok(response) => response,
            // Nobody listens (refused, unreachable, no such host): the receiver is down, which says
            // nothing about this notification. The worker waits for it.
            Err(error) if error.is_connect() => {
                return Err(SendError::Unavailable(format!("webhook: {}", with_causes(&error))));
            }
            Err(error) if error.is_timeout() => {
                return Err(SendError::Transient(format!("webhook: no answer within {:?}", self.timeout)));
            }
            Err(error) if error.is_builder() => {
                return Err(SendError::Permanent(format!(
                    "webhook: invalid request: {}",
                    with_causes(&error)
                )));
            }
            Err(error) => return Err(SendError::Transient(format!("webhook: {}", with_causes(&error)))),
        };
        classify(response.status())
    }
}

fn classify(status: StatusCode) -> Result<(), SendError> {
    if status.is_success() {
        Ok(())
    } else if status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        Err(SendError::Transient(format!("webhook answered {status}")))
    } else {
        Err(SendError::Permanent(format!("webhook answered {status}")))
    }
}

/// reqwest's own message hides the reason ("connection refused") in its sources.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"Jefe";
    const BODY: &[u8] = br#"{"event_type":"OrderCreated"}"#;
    const NOW: i64 = 1_700_000_000;

    fn verify(header: &str, body: &[u8]) -> Result<(), SignatureError> {
        verify_signature(SECRET, header, body, NOW, DEFAULT_TOLERANCE)
    }

    #[test]
    fn signs_the_timestamp_and_the_body_with_hmac_sha256() {
        // HMAC-SHA256("Jefe", "1700000000.what do ya want for nothing?"), as Python's hmac has it.
        assert_eq!(
            signature_header(SECRET, NOW, b"what do ya want for nothing?"),
            "t=1700000000,v1=1cdd0650c8be1cb0974b1788d458b1e781206cfef59b85faafc582d2e182c57e"
        );
    }

    #[test]
    fn a_fresh_signature_verifies() {
        assert_eq!(verify(&signature_header(SECRET, NOW, BODY), BODY), Ok(()));
        assert_eq!(verify(&signature_header(SECRET, NOW - 299, BODY), BODY), Ok(()), "within 5 min");
    }

    #[test]
    fn a_tampered_body_or_another_secret_fails() {
        let header = signature_header(SECRET, NOW, BODY);
        let tampered = br#"{"event_type":"OrderCreatee"}"#;
        assert_eq!(verify(&header, tampered), Err(SignatureError::NoMatchingSignature));
        let forged = signature_header(b"another secret", NOW, BODY);
        assert_eq!(verify(&forged, BODY), Err(SignatureError::NoMatchingSignature));
    }

    #[test]
    fn a_timestamp_outside_the_tolerance_fails() {
        let old = signature_header(SECRET, NOW - 301, BODY);
        assert_eq!(verify(&old, BODY), Err(SignatureError::TimestampOutsideTolerance));
        let future = signature_header(SECRET, NOW + 301, BODY);
        assert_eq!(verify(&future, BODY), Err(SignatureError::TimestampOutsideTolerance));
        // The timestamp is signed: moving it forward breaks the signature.
        let replayed = old.replace(&format!("t={}", NOW - 301), &format!("t={NOW}"));
        assert_eq!(verify(&replayed, BODY), Err(SignatureError::NoMatchingSignature));
    }

    #[test]
    fn any_of_several_v1_values_may_match() {
        let current = signature_header(SECRET, NOW, BODY);
        let previous = signature_header(b"previous secret", NOW, BODY);
        let v1 = |header: &str| header.split_once(",v1=").unwrap().1.to_owned();
        let rotating = format!("t={NOW},v1={},v0=legacy,v1={}", v1(&previous), v1(&current));
        assert_eq!(verify(&rotating, BODY), Ok(()));
    }

    #[test]
    fn malformed_headers_fail() {
        let v1 = signature_header(SECRET, NOW, BODY).split_once(",v1=").unwrap().1.to_owned();
        for header in [
            String::new(),
            format!("sha256={v1}"),
            format!("v1={v1}"),
            format!("t=soon,v1={v1}"),
            format!("t={NOW}"),
            format!("t={NOW},t={NOW},v1={v1}"),
        ] {
            assert!(matches!(verify(&header, BODY), Err(SignatureError::Malformed(_))), "{header:?}");
        }
        let not_hex = format!("t={NOW},v1=zz{}", &v1[2..]);
        assert_eq!(verify(&not_hex, BODY), Err(SignatureError::NoMatchingSignature));
    }

    #[test]
    fn answers_are_classified() {
        assert_eq!(classify(StatusCode::OK), Ok(()));
        assert_eq!(classify(StatusCode::NO_CONTENT), Ok(()));
        for status in [500, 502, 503, 408, 429] {
            let status = StatusCode::from_u16(status).unwrap();
            assert!(matches!(classify(status), Err(SendError::Transient(_))), "{status}");
        }
        for status in [400, 401, 403, 404, 410, 422, 301] {
            let status = StatusCode::from_u16(status).unwrap();
            assert!(matches!(classify(status), Err(SendError::Permanent(_))), "{status}");
        }
    }
}

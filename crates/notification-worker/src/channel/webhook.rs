//! The `webhook` channel: an HTTP POST of the event envelope, exactly as received, signed so
//! that the receiver can tell it comes from us and was not altered.
//!
//! Request headers:
//! - `Content-Type: application/json`
//! - `X-Orderflow-Signature: sha256=<hex HMAC-SHA256 of the body bytes, keyed with the secret>`
//! - `X-Orderflow-Event-Id`, `X-Orderflow-Event-Type`: also in the body, repeated for routing
//! - `traceparent` when the event carried a trace, so the receiver can join it
//!
//! A 2xx answer means delivered. A connection error, a timeout, a 5xx, 408 or 429 may pass later
//! (transient); any other answer (4xx, or a redirect, which we do not follow) will not.

use std::time::Duration;

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
    pub fn new(settings: &WebhookSettings) -> Result<Self, ConfigError> {
        settings.validate()?;
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
            secret: settings.secret.clone().unwrap_or_default().into_bytes(),
            timeout: settings.timeout(),
        })
    }
}

/// `sha256=<hex>`: the HMAC-SHA256 of `body` keyed with `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("sha256={hex}")
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
            .header(SIGNATURE_HEADER, signature(&self.secret, &body))
            .header(EVENT_ID_HEADER, notification.event_id.to_string())
            .header(EVENT_TYPE_HEADER, notification.event_type.as_str());
        for (name, value) in platform::telemetry::current_trace_headers() {
            request = request.header(name, value);
        }
        let response = match request.body(body).send().await {
            Ok(response) => response,
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

    #[test]
    fn signs_with_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
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

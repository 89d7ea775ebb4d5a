//! One Standard Webhooks request: signed, sent through the SSRF guard, and its response
//! captured for the delivery log.

use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::{DateTime, TimeDelta, Utc};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use wedsync_store::webhooks::{AttemptRecord, DeliveryWork};

use crate::ssrf::{ClientOptions, GuardedClient, SsrfPolicy, refusal_of};

/// How much of a response body is kept.
pub const BODY_CAPTURE: usize = 4 * 1024;
/// How much of a response body is read at most (the rest is dropped with the connection).
const BODY_READ_LIMIT: usize = 64 * 1024;
/// How many response headers are kept.
const HEADER_CAPTURE: usize = 50;

/// The signature header value for `body`: one `v1,<base64>` per key, space-separated, so a
/// receiver holding either the new or the previous secret verifies during a rotation.
pub fn signature(keys: &[Vec<u8>], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|key| {
            let secret = wedsync_inbound::Secret::from_str(&format!(
                "whsec_{}",
                base64::engine::general_purpose::STANDARD.encode(key)
            ));
            wedsync_inbound::sign_standard_webhooks(&secret, msg_id, timestamp, body)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What one attempt came to.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// What to record.
    pub record: AttemptRecord,
    /// How long the receiver asked us to wait (`Retry-After` on 429 and 503).
    pub retry_after: Option<TimeDelta>,
    /// The receiver answered 410 Gone: it wants no more deliveries.
    pub gone: bool,
    /// A failure that says the receiver is unhealthy (5xx, 429, timeout, connection), which
    /// counts towards its circuit breaker; a 4xx says the request was unwelcome, not that
    /// the receiver is down.
    pub unhealthy: bool,
}

/// Sends deliveries. One per process: it holds the connection pool.
#[derive(Debug, Clone)]
pub struct Sender {
    client: GuardedClient,
}

impl Sender {
    /// A sender refusing private address space except `policy`'s allow-list.
    pub fn new(policy: SsrfPolicy, options: ClientOptions) -> reqwest::Result<Self> {
        Ok(Self {
            client: GuardedClient::new(policy, options)?,
        })
    }

    /// Makes one attempt at `now` (the signature's timestamp).
    pub async fn send(&self, work: &DeliveryWork, now: DateTime<Utc>) -> Outcome {
        let started = Instant::now();
        let mut record = AttemptRecord {
            attempted_at: now,
            ..Default::default()
        };
        let fail = |mut record: AttemptRecord, class: &str, error: String, unhealthy: bool| {
            record.latency_ms = elapsed_ms(started);
            record.error_class = Some(class.to_owned());
            record.error = Some(error);
            Outcome {
                record,
                retry_after: None,
                gone: false,
                unhealthy,
            }
        };
        let url = match reqwest::Url::parse(&work.url) {
            Ok(u) => u,
            Err(e) => return fail(record, "other", format!("invalid url: {e}"), false),
        };
        let builder = match self.client.post(url) {
            Ok(b) => b,
            Err(refusal) => return fail(record, "refused", refusal.to_string(), false),
        };
        let timestamp = now.timestamp();
        let mut headers = HeaderMap::new();
        for (name, value) in &work.headers {
            // Validated when saved; a header that no longer parses is skipped, not sent raw.
            if let (Ok(n), Ok(v)) = (
                HeaderName::try_from(name.as_str()),
                HeaderValue::try_from(value.as_str()),
            ) {
                headers.insert(n, v);
            }
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let signature = signature(
            &work.keys,
            &work.message_id,
            timestamp,
            work.payload.as_bytes(),
        );
        for (name, value) in [
            ("webhook-id", work.message_id.clone()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", signature),
        ] {
            if let Ok(v) = HeaderValue::try_from(value) {
                headers.insert(HeaderName::from_static(name), v);
            }
        }
        let sent = builder
            .headers(headers)
            .timeout(Duration::from_millis(u64::from(work.timeout_ms)))
            .body(work.payload.clone())
            .send()
            .await;
        let mut response = match sent {
            Ok(r) => r,
            Err(e) => {
                if let Some(refusal) = refusal_of(&e) {
                    return fail(record, "refused", refusal.to_string(), false);
                }
                let (class, unhealthy) = if e.is_timeout() {
                    ("timeout", true)
                } else if e.is_redirect() {
                    ("redirect", false)
                } else if e.is_connect() {
                    ("connect", true)
                } else {
                    ("other", true)
                };
                return fail(record, class, describe(&e), unhealthy);
            }
        };
        let status = response.status().as_u16();
        record.status_code = Some(status);
        record.response_headers = response
            .headers()
            .iter()
            .take(HEADER_CAPTURE)
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| wedsync_core::retry::parse_retry_after(v, now));
        let mut body = Vec::new();
        let mut read = 0;
        let mut body_error = None;
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    read += chunk.len();
                    let room = BODY_CAPTURE.saturating_sub(body.len());
                    body.extend_from_slice(&chunk[..room.min(chunk.len())]);
                    if read >= BODY_READ_LIMIT {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    body_error = Some(e);
                    break;
                }
            }
        }
        record.response_body = String::from_utf8_lossy(&body).into_owned();
        record.latency_ms = elapsed_ms(started);
        record.success = (200..300).contains(&status);
        if record.success {
            return Outcome {
                record,
                retry_after: None,
                gone: false,
                unhealthy: false,
            };
        }
        if let Some(e) = body_error.filter(|e| e.is_timeout()) {
            return fail(record, "timeout", describe(&e), true);
        }
        let class = if status >= 500 {
            "http_5xx"
        } else {
            "http_4xx"
        };
        record.error_class = Some(class.to_owned());
        record.error = Some(format!("the endpoint answered {status}"));
        Outcome {
            record,
            retry_after,
            gone: status == 410,
            unhealthy: status >= 500 || status == 429 || status == 408,
        }
    }
}

fn elapsed_ms(started: Instant) -> u32 {
    u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX)
}

/// A reqwest error with its causes, which is where the useful part (refused, reset, DNS) is.
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

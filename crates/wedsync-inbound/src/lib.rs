//! Webhook signature verification for the integration hub's inbound endpoints.
//!
//! One entry point, [`verify`], checks a delivery against a provider's
//! [`Scheme`] and one or more [`Secret`]s, and either returns what was proven
//! ([`Verified`]) or why the delivery was refused ([`Rejection`], with a
//! stable [`Rejection::reason_code`] for logs and metrics). [`sign_stripe`]
//! and [`sign_standard_webhooks`] produce the matching headers for tests and
//! for the outbound side.
//!
//! # Module map
//!
//! | module | contents |
//! |---|---|
//! | `headers` | [`Headers`]: case-insensitive lookup, with impls for slices, arrays, `Vec`s and `HashMap` |
//! | `secret` | [`Secret`]: raw key bytes that never print |
//! | `rejection` | [`Rejection`] and its reason codes |
//! | `scheme` | [`Scheme`], [`GenericHmac`], [`Encoding`]: serde-ready provider configuration |
//! | `providers` (private) | one parser per scheme: headers present → headers well-formed, producing the signed pieces |
//! | `timestamp` (private) | digit-only timestamp parsing and the overflow-free tolerance window |
//! | `crypto` (private) | HMAC-SHA256, signature decoding, constant-time matching, key derivation |
//! | this file | [`InboundRequest`], [`Verified`], [`verify`], the signing helpers |
//!
//! # Guarantees
//!
//! * HMAC-SHA256 over the raw body bytes exactly as received; nothing is
//!   parsed or re-serialised before verification.
//! * Signatures are compared in constant time, across every secret and every
//!   signature entry, with no early exit.
//! * Checks run in a fixed order — required headers present, headers
//!   well-formed, timestamp within tolerance, signature — so the reason code
//!   for a given request never depends on the secret.
//! * No input makes [`verify`] panic: decoding failures, oversized numbers and
//!   non-UTF-8 bodies are all ordinary [`Rejection`]s.
//!
//! # Example
//!
//! ```
//! use chrono::{DateTime, TimeDelta};
//! use wedsync_inbound::{verify, sign_stripe, InboundRequest, Scheme, Secret, DEFAULT_TOLERANCE};
//!
//! let secret = Secret::from_str("whsec_test");
//! let body = br#"{"id":"evt_1"}"#;
//! let header = sign_stripe(&secret, 1_700_000_000, body);
//! let headers = [("Stripe-Signature", header.as_str())];
//! let request = InboundRequest { method: "POST", url: "https://hub.example/stripe", headers: &headers, body };
//! let now = DateTime::from_timestamp(1_700_000_010, 0).expect("valid time");
//!
//! let verified = verify(&Scheme::Stripe, &request, &[secret], now, DEFAULT_TOLERANCE).expect("valid");
//! assert_eq!(verified.timestamp, Some(1_700_000_000));
//! ```

mod crypto;
mod headers;
mod providers;
mod rejection;
mod scheme;
mod secret;
mod timestamp;

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};

pub use headers::Headers;
pub use providers::twilio::sign as sign_twilio;
pub use rejection::Rejection;
pub use scheme::{Encoding, GenericHmac, Scheme};
pub use secret::Secret;

use crypto::{TAG_LEN, any_tag_matches, base64_encode, hmac_sha256, standard_webhooks_key};

/// The tolerance every official library uses (Stripe, Standard Webhooks,
/// Slack, HubSpot) and the product default: five minutes either way.
pub const DEFAULT_TOLERANCE: TimeDelta = TimeDelta::seconds(300);

/// A delivery as it arrived, before anything has parsed it.
///
/// Everything is borrowed so the HTTP layer can verify straight from its own
/// buffers; `body` must be the raw bytes read from the wire, because any
/// re-serialisation (even of identical JSON) breaks the signature.
pub struct InboundRequest<'a, H: Headers + ?Sized> {
    /// HTTP method as received, e.g. `POST` (HubSpot signs it).
    pub method: &'a str,
    /// Full URL as received, scheme and query included (HubSpot signs it;
    /// behind a proxy, rebuild the public URL the provider called).
    pub url: &'a str,
    /// Request headers.
    pub headers: &'a H,
    /// Raw request body.
    pub body: &'a [u8],
}

// Manual impls: derives would demand `H: Clone`/`H: Debug` although only a
// reference to `H` is held.
impl<H: Headers + ?Sized> Clone for InboundRequest<'_, H> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<H: Headers + ?Sized> Copy for InboundRequest<'_, H> {}

impl<H: Headers + ?Sized> fmt::Debug for InboundRequest<'_, H> {
    /// Shows the body length only: bodies can be large and carry personal data.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboundRequest")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// What a successful verification proved about the delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The signed timestamp in unix seconds (HubSpot's milliseconds are
    /// floored), or `None` for schemes that sign none (PagerDuty, generic
    /// without `{timestamp}`).
    pub timestamp: Option<i64>,
    /// The signed delivery id (`webhook-id`/`svix-id`, or a generic
    /// `{id}` header), for de-duplicating retries; `None` when the scheme
    /// signs no id — use the provider's event id from the body instead.
    pub delivery_id: Option<String>,
}

/// Verifies one delivery.
///
/// `secrets` may hold several entries so a rotated-out secret stays valid
/// during its grace period: the delivery passes if any secret produces any of
/// the signatures it carries. `now` is passed in rather than read from the
/// clock so callers and tests control it. A timestamp more than `tolerance`
/// before `now` is [`Rejection::StaleTimestamp`]; more than `tolerance` after
/// it, [`Rejection::FutureTimestamp`] (boundaries inclusive; a negative
/// tolerance acts as zero). Use [`DEFAULT_TOLERANCE`] unless a provider needs
/// otherwise.
///
/// Checks run in this order, and the first failure is returned:
/// 1. for [`Scheme::Generic`], the configuration ([`Rejection::InvalidTemplate`]),
///    since it decides which headers are required;
/// 2. required headers present ([`Rejection::MissingHeader`]);
/// 3. headers well-formed ([`Rejection::MalformedHeader`]);
/// 4. timestamp within tolerance;
/// 5. secrets usable ([`Rejection::InvalidSecret`]: none given, an empty one,
///    or a Standard Webhooks secret that is not `whsec_<base64>` — any bad
///    entry fails the whole call, so a broken rotation is noticed at once);
/// 6. signature ([`Rejection::BadSignature`]).
pub fn verify<H: Headers + ?Sized>(
    scheme: &Scheme,
    request: &InboundRequest<'_, H>,
    secrets: &[Secret],
    now: DateTime<Utc>,
    tolerance: TimeDelta,
) -> Result<Verified, Rejection> {
    let prepared = match scheme {
        Scheme::Stripe => providers::stripe::prepare(request)?,
        Scheme::StandardWebhooks => providers::standard_webhooks::prepare(request)?,
        Scheme::HubSpotV3 => providers::hubspot::prepare(request)?,
        Scheme::SlackV0 => providers::slack::prepare(request)?,
        Scheme::PagerDutyV3 => providers::pagerduty::prepare(request)?,
        Scheme::Twilio => return providers::twilio::verify(request, secrets),
        Scheme::Generic(config) => providers::generic::prepare(config, request)?,
    };

    if let Some(stamp) = prepared.stamp {
        timestamp::check_window(stamp, now, tolerance)?;
    }

    let keys = keys_for(scheme, secrets)?;
    let pieces: Vec<&[u8]> = prepared.signed.iter().map(|piece| piece.as_ref()).collect();
    let tags = keys
        .iter()
        .map(|key| hmac_sha256(key, &pieces).ok_or(Rejection::InvalidSecret))
        .collect::<Result<Vec<[u8; TAG_LEN]>, Rejection>>()?;

    if any_tag_matches(&tags, &prepared.candidates) {
        Ok(Verified {
            timestamp: prepared.stamp.map(timestamp::Stamp::unix_seconds),
            delivery_id: prepared.delivery_id,
        })
    } else {
        Err(Rejection::BadSignature)
    }
}

/// Turns configured secrets into HMAC keys for `scheme`.
///
/// An empty key is refused even though HMAC accepts it: anyone can compute
/// signatures with an empty key, so it always means a missing configuration.
fn keys_for<'s>(scheme: &Scheme, secrets: &'s [Secret]) -> Result<Vec<Cow<'s, [u8]>>, Rejection> {
    if secrets.is_empty() {
        return Err(Rejection::InvalidSecret);
    }
    secrets
        .iter()
        .map(|secret| {
            let key = match scheme {
                Scheme::StandardWebhooks => {
                    Cow::Owned(standard_webhooks_key(secret).ok_or(Rejection::InvalidSecret)?)
                }
                _ => Cow::Borrowed(secret.expose()),
            };
            if key.is_empty() {
                Err(Rejection::InvalidSecret)
            } else {
                Ok(key)
            }
        })
        .collect()
}

/// HMAC for the signing helpers, which cannot report errors.
///
/// HMAC accepts keys of any length, so the fallback never runs in practice;
/// if it ever did, an all-zero tag would simply fail to verify.
fn signing_tag(key: &[u8], pieces: &[&[u8]]) -> [u8; TAG_LEN] {
    hmac_sha256(key, pieces).unwrap_or([0; TAG_LEN])
}

/// Signs a Standard Webhooks message and returns one `webhook-signature`
/// entry, `v1,<base64>`.
///
/// The key is derived as in [`verify`] (strip `whsec_`, base64-decode). A
/// secret that does not decode cannot be reported through this signature, so
/// its raw bytes are used as the key instead; [`verify`] refuses such a
/// secret with [`Rejection::InvalidSecret`], so the mistake still surfaces on
/// the receiving side.
pub fn sign_standard_webhooks(
    secret: &Secret,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    let key = standard_webhooks_key(secret).unwrap_or_else(|| secret.expose().to_vec());
    let timestamp = timestamp.to_string();
    let tag = signing_tag(
        &key,
        &[msg_id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
    );
    format!("v1,{}", base64_encode(&tag))
}

/// Signs a Stripe-style payload and returns a full `Stripe-Signature` value,
/// `t=<t>,v1=<hex>`, keyed with the secret bytes as is (`whsec_` included).
pub fn sign_stripe(secret: &Secret, t: i64, body: &[u8]) -> String {
    let timestamp = t.to_string();
    let tag = signing_tag(secret.expose(), &[timestamp.as_bytes(), b".", body]);
    format!("t={timestamp},v1={}", hex::encode(tag))
}

//! Turns inbound provider webhooks into WedSync canonical events.
//!
//! WedSync is an integration hub for wedding businesses. Providers (Stripe, HubSpot, Slack,
//! PagerDuty, CRM relays through Zapier, ...) post webhooks to us; once the signature has been
//! verified elsewhere, [`normalize`] turns the raw body into zero or more [`Canonical`] events
//! (the CloudEvents 1.0 `type`/`subject`/`time`/`data` fields) plus a [`Normalized::dedupe_key`]
//! that recognises a redelivery of the same webhook.
//!
//! This crate does no I/O and keeps no state, so it can be used from the HTTP handler, from
//! a replay tool and from tests alike. It never panics: every input is either normalised or
//! refused with [`NormalizeError::Malformed`].
//!
//! # Module map
//! - `lib.rs` (this file): the public types, the canonical type list and the dispatch.
//! - `form`: a small `application/x-www-form-urlencoded` decoder (Slack interactivity,
//!   form-posting relays), written here to avoid a dependency for thirty lines.
//! - `time`: lenient timestamp parsing (RFC 3339, unix seconds or milliseconds, ...).
//! - `common`: JSON parsing, dedupe keys and couple/booking reference lookup shared by
//!   every provider.
//! - `providers::stripe`, `providers::pagerduty`, `providers::slack`, `providers::hubspot`:
//!   one module per provider with a fixed, documented payload shape.
//! - `providers::standard`: Standard Webhooks and Svix senders (`{type, timestamp, data}`).
//! - `providers::relay`: Tave, Zapier and generic relays, whose shapes vary and whose event
//!   names are matched against a table of aliases.
//!
//! # Example
//! ```
//! use wedsync_normalize::{Input, Provider, normalize};
//!
//! let body = br#"{"id":"evt_1","type":"charge.refunded","created":1718445720,
//!     "data":{"object":{"id":"ch_1","amount_refunded":50000,"currency":"gbp",
//!     "metadata":{"couple_id":"cpl_1"}}}}"#;
//! let out = normalize(&Input {
//!     provider: Provider::Stripe,
//!     content_type: "application/json",
//!     body,
//!     delivery_id: None,
//!     event_id_pointer: None,
//!     received_at: chrono::Utc::now(),
//! })
//! .expect("a well-formed stripe event");
//! assert_eq!(out.dedupe_key, "stripe:evt_1");
//! assert_eq!(out.events[0].event_type, "payment.refunded");
//! assert_eq!(out.events[0].data["amount_minor"], 50000);
//! assert_eq!(out.events[0].couple_ref.as_deref(), Some("cpl_1"));
//! ```
//!
//! # Conventions
//! - An event the provider sends but that has no canonical meaning is kept, not dropped, as
//!   `{provider}.raw` with the whole payload as `data`, so nothing a customer might automate
//!   on is lost.
//! - `time` is the provider's own event time when the payload carries one, because journeys
//!   schedule from when something happened, not from when a retry reached us; otherwise it is
//!   [`Input::received_at`].

mod common;
mod form;
mod providers;
mod time;

use serde::{Deserialize, Serialize};

/// Every canonical event type a provider payload can be normalised into (see the product
/// rules). Anything else is emitted as `{provider}.raw`.
pub const CANONICAL_EVENT_TYPES: [&str; 18] = [
    "booking.created",
    "booking.updated",
    "booking.cancelled",
    "client.created",
    "client.updated",
    "client.deleted",
    "payment.completed",
    "payment.failed",
    "payment.refunded",
    "form.submitted",
    "contract.signed",
    "calendar.event.created",
    "calendar.event.updated",
    "calendar.event.deleted",
    "wedme.client.invited",
    "wedme.vendor.signup",
    "incident.acknowledged",
    "incident.resolved",
];

/// Whether `event_type` is one of [`CANONICAL_EVENT_TYPES`] (exact, case-sensitive match,
/// because canonical names are an API contract with journeys and subscribers).
pub fn is_canonical(event_type: &str) -> bool {
    CANONICAL_EVENT_TYPES.contains(&event_type)
}

/// The sender of a webhook; decides which payload shape [`normalize`] expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// Stripe event objects (`{id, type, created, data: {object}}`).
    Stripe,
    /// Any sender following the Standard Webhooks spec (`{type, timestamp, data}`).
    StandardWebhooks,
    /// Svix-delivered webhooks: the Standard Webhooks payload shape with `svix-*` headers.
    Svix,
    /// HubSpot webhook batches (a JSON array of subscription events).
    Hubspot,
    /// Slack interactivity callbacks (form-encoded `payload`) and Events API JSON.
    Slack,
    /// PagerDuty webhooks v3 (`{"event": {...}}`).
    Pagerduty,
    /// Tave / VSCO Workspace webhooks.
    Tave,
    /// Zapier (or Make) relays, e.g. for HoneyBook, Dubsado and Studio Ninja.
    Zapier,
    /// Any other sender configured by a customer, with a free-form JSON or form body.
    Generic,
    /// Twilio status callbacks (form posts with `MessageSid` and `MessageStatus`).
    Twilio,
}

impl Provider {
    /// Every provider, in declaration order; handy for configuration screens and for tests
    /// that must cover each provider.
    pub const ALL: [Provider; 10] = [
        Provider::Stripe,
        Provider::StandardWebhooks,
        Provider::Svix,
        Provider::Hubspot,
        Provider::Slack,
        Provider::Pagerduty,
        Provider::Tave,
        Provider::Zapier,
        Provider::Generic,
        Provider::Twilio,
    ];

    /// The stable lowercase name used in `{provider}.raw` event types and dedupe keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Stripe => "stripe",
            Provider::StandardWebhooks => "standard_webhooks",
            Provider::Svix => "svix",
            Provider::Hubspot => "hubspot",
            Provider::Slack => "slack",
            Provider::Pagerduty => "pagerduty",
            Provider::Tave => "tave",
            Provider::Zapier => "zapier",
            Provider::Generic => "generic",
            Provider::Twilio => "twilio",
        }
    }

    /// The event type used for payloads with no canonical meaning, e.g. `stripe.raw`.
    pub fn raw_event_type(self) -> String {
        format!("{}.raw", self.as_str())
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One verified inbound webhook, as the HTTP layer received it.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// Who sent it; chooses the payload shape.
    pub provider: Provider,
    /// The request's `Content-Type` header (parameters such as `charset` are ignored); empty
    /// when the request had none.
    pub content_type: &'a str,
    /// The raw request body, byte for byte as signed.
    pub body: &'a [u8],
    /// `webhook-id` / `svix-id` when the verifier saw one: Standard Webhooks payloads carry no
    /// id of their own, so this is their only stable delivery identity.
    pub delivery_id: Option<&'a str>,
    /// For generic senders: a JSON pointer (RFC 6901, e.g. `"/id"` or `"/meta/event_id"`) to
    /// the sender's own event id, configured per source.
    pub event_id_pointer: Option<&'a str>,
    /// When we received the request; the event time when the payload has none of its own.
    pub received_at: chrono::DateTime<chrono::Utc>,
}

/// One canonical event (the CloudEvents 1.0 fields WedSync routes on).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Canonical {
    /// A name from [`CANONICAL_EVENT_TYPES`], or `{provider}.raw`.
    pub event_type: String,
    /// The provider's id of the thing the event is about (payment intent, incident, HubSpot
    /// object, ...), when there is one.
    pub subject: Option<String>,
    /// When the event happened according to the provider, else when we received it.
    pub time: chrono::DateTime<chrono::Utc>,
    /// The event's payload: a normalised object for mapped events, the whole provider payload
    /// for `{provider}.raw`.
    pub data: serde_json::Value,
    /// The WedSync couple this event belongs to, when the sender echoed one back (e.g. Stripe
    /// `metadata.couple_id` / `metadata.wedsync_couple_id`), so it can be routed without a
    /// lookup.
    pub couple_ref: Option<String>,
    /// The WedSync booking this event belongs to, when the sender echoed one back
    /// (`booking_id` / `wedsync_booking_id`).
    pub booking_ref: Option<String>,
}

/// The result of normalising one webhook delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalized {
    /// Recognises redeliveries of the same webhook: `{provider}:{provider event id}` when the
    /// provider gives an id (e.g. `stripe:evt_123`), else `sha256:{hex of the body}`.
    pub dedupe_key: String,
    /// The canonical events; several for batched senders (HubSpot), possibly none for an
    /// empty batch.
    pub events: Vec<Canonical>,
}

/// Why a body could not be normalised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    /// The body is not what the provider sends (e.g. not JSON, or a Stripe event without a
    /// type). The message says what is wrong, in lowercase, and never echoes the body (which
    /// may carry personal data).
    #[error("malformed payload: {0}")]
    Malformed(String),
}

/// Normalises one verified webhook into canonical events and a dedupe key.
///
/// # Errors
/// [`NormalizeError::Malformed`] when the body does not have the shape the provider sends.
/// A well-formed payload of an unknown event type is not an error: it becomes
/// `{provider}.raw`.
pub fn normalize(input: &Input<'_>) -> Result<Normalized, NormalizeError> {
    match input.provider {
        Provider::Stripe => providers::stripe::normalize(input),
        Provider::Pagerduty => providers::pagerduty::normalize(input),
        Provider::Slack => providers::slack::normalize(input),
        Provider::Hubspot => providers::hubspot::normalize(input),
        Provider::StandardWebhooks | Provider::Svix => providers::standard::normalize(input),
        Provider::Tave | Provider::Zapier | Provider::Generic => providers::relay::normalize(input),
        Provider::Twilio => providers::twilio::normalize(input),
    }
}

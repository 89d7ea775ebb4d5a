//! Standard Webhooks and Svix senders: `{"type": "...", "timestamp": RFC 3339, "data": {...}}`.
//!
//! These are partners that already speak WedSync's vocabulary (the spec leaves event names
//! to the sender), so there is no alias table:
//!
//! | `type` | canonical |
//! |---|---|
//! | one of the canonical types (exact match) | the same type |
//! | anything else, or no `type` | `standard_webhooks.raw` / `svix.raw` (whole payload) |
//!
//! - Mapped `data` is the payload's `data` (the whole payload when it has none).
//! - `subject` is `data.id` when present; `time` is `timestamp`.
//! - `couple_ref` / `booking_ref` come from `data` (or its `metadata`), else the top level.
//! - The dedupe key is `{provider}:{webhook-id}` (the `delivery_id`): the spec keeps the
//!   message id in that header, stable across retries, and the body has none. Without it the
//!   body hash is used.
//!
//! The payload shape is only a recommendation of the spec, so any JSON value is accepted
//! (unknown shapes become raw); only a body that is not JSON is malformed.

use crate::common::{body_hash_key, id_text, parse_json, provider_key, refs, str_at};
use crate::time::{self, Unit};
use crate::{Canonical, Input, NormalizeError, Normalized, is_canonical};

pub(crate) fn normalize(input: &Input<'_>) -> Result<Normalized, NormalizeError> {
    let provider = input.provider;
    let payload = parse_json(provider, input.body)?;

    let dedupe_key = match input.delivery_id.filter(|id| !id.trim().is_empty()) {
        Some(id) => provider_key(provider, id),
        None => body_hash_key(input.body),
    };
    let inner = payload.get("data").filter(|d| !d.is_null());
    let time = payload
        .get("timestamp")
        .and_then(|v| time::from_json(v, Unit::Guess))
        .unwrap_or(input.received_at);
    let subject = inner.and_then(|d| d.get("id")).and_then(id_text);
    let (couple_ref, booking_ref) = match inner {
        Some(inner) => refs(&[inner, &payload]),
        None => refs(&[&payload]),
    };

    let (event_type, data) = match str_at(&payload, "type").filter(|t| is_canonical(t)) {
        Some(canonical) => (
            canonical.to_owned(),
            inner.cloned().unwrap_or_else(|| payload.clone()),
        ),
        None => (provider.raw_event_type(), payload.clone()),
    };

    Ok(Normalized {
        dedupe_key,
        events: vec![Canonical {
            event_type,
            subject,
            time,
            data,
            couple_ref,
            booking_ref,
        }],
    })
}

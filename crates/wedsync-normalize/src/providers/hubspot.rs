//! HubSpot webhooks: a JSON array of `{eventId, subscriptionId, portalId, occurredAt (unix
//! ms), subscriptionType, attemptNumber, objectId, changeSource, propertyName?,
//! propertyValue?}`, batched (up to 100 per request). One canonical event per item:
//!
//! | `subscriptionType` | canonical |
//! |---|---|
//! | `contact.creation` | `client.created` |
//! | `contact.propertyChange` | `client.updated` |
//! | `contact.deletion` | `client.deleted` |
//! | `deal.creation` | `booking.created` |
//! | `deal.propertyChange` | `booking.updated` |
//! | `deal.deletion` | `booking.cancelled` |
//! | anything else | `hubspot.raw` |
//!
//! In WedSync a HubSpot contact is a vendor's client (the couple) and a deal is a booking.
//!
//! - `subject` is `objectId` as text; `time` is `occurredAt`.
//! - `data` is the item itself (for mapped and raw events alike): HubSpot items are small and
//!   flat, and `propertyName` / `propertyValue` are exactly what an update journey needs.
//! - The dedupe key is `hubspot:` and every item's `eventId`, joined with `,` in batch order.
//!   If an item has no `eventId` the body hash is used instead, since a key naming only some
//!   of the events could match a different batch.

use serde_json::Value;

use crate::common::{body_hash_key, id_text, parse_json, str_at};
use crate::time::{self, Unit};
use crate::{Canonical, Input, NormalizeError, Normalized, Provider};

/// The mapping table above.
fn canonical_type(subscription_type: &str) -> Option<&'static str> {
    match subscription_type {
        "contact.creation" => Some("client.created"),
        "contact.propertyChange" => Some("client.updated"),
        "contact.deletion" => Some("client.deleted"),
        "deal.creation" => Some("booking.created"),
        "deal.propertyChange" => Some("booking.updated"),
        "deal.deletion" => Some("booking.cancelled"),
        _ => None,
    }
}

pub(crate) fn normalize(input: &Input<'_>) -> Result<Normalized, NormalizeError> {
    let payload = parse_json(Provider::Hubspot, input.body)?;
    let Value::Array(items) = &payload else {
        return Err(NormalizeError::Malformed(
            "hubspot body is not a json array".to_owned(),
        ));
    };
    if let Some(i) = items.iter().position(|item| !item.is_object()) {
        return Err(NormalizeError::Malformed(format!(
            "hubspot batch item {i} is not a json object"
        )));
    }

    let event_ids: Option<Vec<String>> = items
        .iter()
        .map(|item| item.get("eventId").and_then(id_text))
        .collect();
    let dedupe_key = match event_ids {
        Some(ids) if !ids.is_empty() => format!("hubspot:{}", ids.join(",")),
        _ => body_hash_key(input.body),
    };

    let events = items
        .iter()
        .map(|item| {
            let event_type = str_at(item, "subscriptionType")
                .and_then(canonical_type)
                .map_or_else(|| Provider::Hubspot.raw_event_type(), str::to_owned);
            Canonical {
                event_type,
                subject: item.get("objectId").and_then(id_text),
                time: item
                    .get("occurredAt")
                    .and_then(|v| time::from_json(v, Unit::Millis))
                    .unwrap_or(input.received_at),
                data: item.clone(),
                couple_ref: None,
                booking_ref: None,
            }
        })
        .collect();
    Ok(Normalized { dedupe_key, events })
}

//! Tave, Zapier and generic senders: CRM relays (HoneyBook, Dubsado and Studio Ninja have no
//! webhooks of their own and reach us through Zapier or Make) and customer-configured
//! sources. Shapes vary, so the event name is looked up in the first of `type`, `event`,
//! `event_type` and `trigger` that holds a string, trimmed and lowercased, and matched against
//! the canonical names and the aliases below:
//!
//! | sender's name | canonical |
//! |---|---|
//! | any canonical name | the same |
//! | `project.booked`, `booking.confirmed`, `job.booked` | `booking.created` |
//! | `project.updated`, `job.updated` | `booking.updated` |
//! | `project.cancelled`, `job.cancelled`, `booking.canceled` | `booking.cancelled` |
//! | `lead.created`, `contact.created`, `inquiry.created` | `client.created` |
//! | `contact.updated` | `client.updated` |
//! | `payment.received`, `invoice.paid`, `payment.succeeded` | `payment.completed` |
//! | `payment.failed` | `payment.failed` |
//! | `contract.signed`, `agreement.signed` | `contract.signed` |
//! | `form.submitted`, `questionnaire.completed`, `questionnaire.submitted` | `form.submitted` |
//! | anything else, or no name | `{provider}.raw` (whole payload) |
//!
//! (HoneyBook, Dubsado and Studio Ninja call a booked wedding a "project" or a "job", and an
//! enquiry a "lead" or "inquiry".)
//!
//! - Mapped `data` is the payload's `data` field, or the whole payload when it has none.
//! - `subject` is a top-level string `subject`, else `data.id` (only when there is a separate
//!   `data`: a top-level `id` names the event, not the thing it is about).
//! - `time` is the first readable of `occurred_at`, `timestamp`, `event_time`, `created_at`,
//!   `time`, `created` at the top level.
//! - `couple_ref` / `booking_ref` come from `data` (or its `metadata`), else the top level.
//! - The dedupe key is `{provider}:{id}` with the id at [`Input::event_id_pointer`] when it is
//!   configured and present, else the top-level `id` or `event_id`, else the body hash.
//!
//! A body posted as `application/x-www-form-urlencoded` (Zapier's "form" payload type) is read
//! as an object of its string fields. Any JSON value is accepted; only a body that is neither
//! JSON nor a form is malformed.
//!
//! [`Input::event_id_pointer`]: crate::Input::event_id_pointer

use crate::common::{
    body_hash_key, form_to_json, id_text, is_form, parse_json, provider_key, refs, str_at,
};
use crate::time::{self, Unit};
use crate::{Canonical, Input, NormalizeError, Normalized, is_canonical};

/// Where relays put the event name, in order of preference.
const NAME_KEYS: [&str; 4] = ["type", "event", "event_type", "trigger"];
/// Where relays put the event time, in order of preference.
const TIME_KEYS: [&str; 6] = [
    "occurred_at",
    "timestamp",
    "event_time",
    "created_at",
    "time",
    "created",
];

/// The alias table above (the canonical pass-through is checked first by the caller).
fn alias(name: &str) -> Option<&'static str> {
    Some(match name {
        "project.booked" | "booking.confirmed" | "job.booked" => "booking.created",
        "project.updated" | "job.updated" => "booking.updated",
        "project.cancelled" | "job.cancelled" | "booking.canceled" => "booking.cancelled",
        "lead.created" | "contact.created" | "inquiry.created" => "client.created",
        "contact.updated" => "client.updated",
        "payment.received" | "invoice.paid" | "payment.succeeded" => "payment.completed",
        "payment.failed" => "payment.failed",
        "contract.signed" | "agreement.signed" => "contract.signed",
        "form.submitted" | "questionnaire.completed" | "questionnaire.submitted" => {
            "form.submitted"
        }
        _ => return None,
    })
}

/// The canonical type for a sender's event name, if any.
fn canonical_type(name: &str) -> Option<String> {
    let name = name.trim().to_lowercase();
    if is_canonical(&name) {
        Some(name)
    } else {
        alias(&name).map(str::to_owned)
    }
}

pub(crate) fn normalize(input: &Input<'_>) -> Result<Normalized, NormalizeError> {
    let provider = input.provider;
    let payload = if is_form(input.content_type) {
        form_to_json(input.body)
    } else {
        parse_json(provider, input.body)?
    };

    let configured_id = input
        .event_id_pointer
        .and_then(|pointer| payload.pointer(pointer))
        .and_then(id_text);
    let dedupe_key = match configured_id
        .or_else(|| payload.get("id").and_then(id_text))
        .or_else(|| payload.get("event_id").and_then(id_text))
    {
        Some(id) => provider_key(provider, &id),
        None => body_hash_key(input.body),
    };

    let inner = payload.get("data").filter(|d| !d.is_null());
    let time = TIME_KEYS
        .iter()
        .find_map(|k| {
            payload
                .get(*k)
                .and_then(|v| time::from_json(v, Unit::Guess))
        })
        .unwrap_or(input.received_at);
    let subject = str_at(&payload, "subject")
        .filter(|s| !s.trim().is_empty())
        .map(str::to_owned)
        .or_else(|| inner.and_then(|d| d.get("id")).and_then(id_text));
    let (couple_ref, booking_ref) = match inner {
        Some(inner) => refs(&[inner, &payload]),
        None => refs(&[&payload]),
    };

    let name = NAME_KEYS.iter().find_map(|k| str_at(&payload, k));
    let (event_type, data) = match name.and_then(canonical_type) {
        Some(canonical) => (canonical, inner.cloned().unwrap_or_else(|| payload.clone())),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_alias_maps_to_a_canonical_type() {
        for name in [
            "project.booked",
            "booking.confirmed",
            "job.booked",
            "project.updated",
            "job.updated",
            "project.cancelled",
            "job.cancelled",
            "booking.canceled",
            "lead.created",
            "contact.created",
            "inquiry.created",
            "contact.updated",
            "payment.received",
            "invoice.paid",
            "payment.succeeded",
            "payment.failed",
            "contract.signed",
            "agreement.signed",
            "form.submitted",
            "questionnaire.completed",
            "questionnaire.submitted",
        ] {
            let mapped = canonical_type(name).expect("alias maps");
            assert!(is_canonical(&mapped), "{name} -> {mapped}");
        }
    }

    #[test]
    fn names_are_trimmed_and_case_folded() {
        assert_eq!(
            canonical_type(" Project.Booked ").as_deref(),
            Some("booking.created")
        );
        assert_eq!(
            canonical_type("WEDME.CLIENT.INVITED").as_deref(),
            Some("wedme.client.invited")
        );
        assert_eq!(canonical_type("project.archived"), None);
    }
}

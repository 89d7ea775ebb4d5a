//! PagerDuty webhooks v3: `{"event": {id, event_type, resource_type, occurred_at, agent,
//! data: {id, title, status, ...}}}`.
//!
//! | PagerDuty `event_type` | canonical |
//! |---|---|
//! | `incident.acknowledged` | `incident.acknowledged` |
//! | `incident.resolved` | `incident.resolved` |
//! | anything else | `pagerduty.raw` (whole payload as `data`) |
//!
//! WedSync raises PagerDuty incidents for its own alerts (wedding-day escalation); an
//! acknowledgement or resolution there must quiet the alert here too.
//!
//! - `subject` is `event.data.id` (the incident id); `time` is `event.occurred_at`.
//! - Mapped `data` is `event.data` (the incident) with `event.agent` (who acted) added as
//!   `agent` when PagerDuty names one.
//! - The dedupe key is `pagerduty:{event.id}`.

use serde_json::Value;

use crate::common::{body_hash_key, id_text, parse_json, provider_key, str_at};
use crate::time::{self, Unit};
use crate::{Canonical, Input, NormalizeError, Normalized, Provider};

/// The mapping table above.
fn canonical_type(event_type: &str) -> Option<&'static str> {
    match event_type {
        "incident.acknowledged" => Some("incident.acknowledged"),
        "incident.resolved" => Some("incident.resolved"),
        _ => None,
    }
}

pub(crate) fn normalize(input: &Input<'_>) -> Result<Normalized, NormalizeError> {
    let payload = parse_json(Provider::Pagerduty, input.body)?;
    let event = payload
        .get("event")
        .filter(|e| e.is_object())
        .ok_or_else(|| {
            NormalizeError::Malformed("pagerduty body has no \"event\" object".to_owned())
        })?;
    let pd_type = str_at(event, "event_type").ok_or_else(|| {
        NormalizeError::Malformed("pagerduty event has no string \"event_type\" field".to_owned())
    })?;
    let resource = event.get("data").filter(|d| d.is_object());

    let dedupe_key = match event.get("id").and_then(id_text) {
        Some(id) => provider_key(Provider::Pagerduty, &id),
        None => body_hash_key(input.body),
    };
    let time = event
        .get("occurred_at")
        .and_then(|v| time::from_json(v, Unit::Guess))
        .unwrap_or(input.received_at);
    let subject = resource.and_then(|d| d.get("id")).and_then(id_text);

    let (event_type, data) = match (canonical_type(pd_type), resource) {
        (Some(canonical), Some(resource)) => {
            let mut data = resource.clone();
            if let (Value::Object(map), Some(agent)) =
                (&mut data, event.get("agent").filter(|a| !a.is_null()))
            {
                map.entry("agent").or_insert_with(|| agent.clone());
            }
            (canonical.to_owned(), data)
        }
        // An incident event without its incident says nothing actionable: keep it raw.
        _ => (Provider::Pagerduty.raw_event_type(), payload.clone()),
    };

    Ok(Normalized {
        dedupe_key,
        events: vec![Canonical {
            event_type,
            subject,
            time,
            data,
            couple_ref: None,
            booking_ref: None,
        }],
    })
}

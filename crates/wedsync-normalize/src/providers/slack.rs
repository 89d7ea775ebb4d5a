//! Slack: interactivity callbacks (the Acknowledge / Resolve buttons on WedSync's alert
//! messages) and anything else Slack posts to us.
//!
//! Interactive callbacks are `application/x-www-form-urlencoded` with one `payload` field
//! holding JSON: `{"type":"block_actions","user":{"id","username"},"actions":[{"action_id",
//! "value":"<alert id>","action_ts"}],"trigger_id"}`. One event is produced per action:
//!
//! | `action_id` | canonical |
//! |---|---|
//! | `acknowledge` | `incident.acknowledged` |
//! | `resolve` | `incident.resolved` |
//! | anything else | `slack.raw` |
//!
//! - `subject` is the action's `value` (the alert id the button was rendered with); `time` is
//!   its `action_ts`.
//! - Mapped `data` is `{action_id, value, user_id, username, action_ts, team_id, channel_id,
//!   message_ts}`: who pressed which button, and where the message is so it can be updated.
//! - The dedupe key is `slack:{trigger_id}` (unique per interaction), else
//!   `slack:{action_ts}` of the first action.
//!
//! Everything else is `slack.raw` with the whole payload as `data`: interactive payloads
//! without actions (modals, shortcuts), form posts without `payload` (slash commands, as an
//! object of their fields) and JSON bodies (Events API; dedupe `slack:{event_id}`, time
//! `event_time`). The legacy verification `token` field is removed from raw data, because it
//! is a shared secret and `data` is passed on to journeys and outbound subscribers.

use serde_json::{Value, json};

use crate::common::{
    body_hash_key, form_to_json, id_text, is_form, media_type, parse_json, provider_key, str_at,
};
use crate::time::{self, Unit};
use crate::{Canonical, Input, NormalizeError, Normalized, Provider, form};

/// The mapping table above.
fn canonical_type(action_id: &str) -> Option<&'static str> {
    match action_id {
        "acknowledge" => Some("incident.acknowledged"),
        "resolve" => Some("incident.resolved"),
        _ => None,
    }
}

pub(crate) fn normalize(input: &Input<'_>) -> Result<Normalized, NormalizeError> {
    // Slack always labels its form posts, but a proxy may drop the header: a body starting
    // with `payload=` cannot be JSON, so it is safe to read it as a form.
    let form_post = is_form(input.content_type)
        || (media_type(input.content_type) != "application/json"
            && input.body.starts_with(b"payload="));
    if form_post {
        let pairs = form::decode(input.body);
        match form::field(&pairs, "payload") {
            Some(payload) => interactive(input, payload),
            None => Ok(form_without_payload(input, form_to_json(input.body))),
        }
    } else {
        let payload = parse_json(Provider::Slack, input.body)?;
        Ok(json_body(input, payload))
    }
}

/// A `payload=` interactivity callback.
fn interactive(input: &Input<'_>, payload_text: &str) -> Result<Normalized, NormalizeError> {
    let payload: Value = serde_json::from_str(payload_text).map_err(|e| {
        NormalizeError::Malformed(format!(
            "slack payload field is not valid json: {}",
            e.to_string().to_lowercase()
        ))
    })?;
    if !payload.is_object() {
        return Err(NormalizeError::Malformed(
            "slack payload field is not a json object".to_owned(),
        ));
    }
    let actions: Vec<&Value> = payload
        .get("actions")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter(|x| x.is_object()).collect())
        .unwrap_or_default();

    let first_action_ts = actions
        .first()
        .and_then(|a| a.get("action_ts"))
        .and_then(id_text);
    let dedupe_key = match payload
        .get("trigger_id")
        .and_then(id_text)
        .or(first_action_ts)
    {
        Some(id) => provider_key(Provider::Slack, &id),
        None => body_hash_key(input.body),
    };
    let raw_data = without_token(&payload);

    let events = if actions.is_empty() {
        let time = payload
            .get("action_ts")
            .and_then(|v| time::from_json(v, Unit::Seconds))
            .unwrap_or(input.received_at);
        vec![raw_event(time, raw_data)]
    } else {
        let user = payload.get("user");
        let user_id = user.and_then(|u| u.get("id")).and_then(id_text);
        // Block actions name the handle `username`; legacy attachment actions `name`.
        let username = user.and_then(|u| str_at(u, "username").or_else(|| str_at(u, "name")));
        let team_id = payload.pointer("/team/id").and_then(id_text);
        let channel_id = payload.pointer("/channel/id").and_then(id_text);
        let message_ts = payload.pointer("/container/message_ts").and_then(id_text);

        actions
            .into_iter()
            .map(|action| {
                let action_ts = action.get("action_ts");
                let time = action_ts
                    .and_then(|v| time::from_json(v, Unit::Seconds))
                    .unwrap_or(input.received_at);
                let action_id = str_at(action, "action_id");
                let value = action.get("value").and_then(id_text);
                match action_id.and_then(canonical_type) {
                    Some(canonical) => Canonical {
                        event_type: canonical.to_owned(),
                        subject: value.clone(),
                        time,
                        data: json!({
                            "action_id": action_id,
                            "value": value,
                            "user_id": user_id,
                            "username": username,
                            "action_ts": action_ts.and_then(id_text),
                            "team_id": team_id,
                            "channel_id": channel_id,
                            "message_ts": message_ts,
                        }),
                        couple_ref: None,
                        booking_ref: None,
                    },
                    None => Canonical {
                        subject: value,
                        ..raw_event(time, raw_data.clone())
                    },
                }
            })
            .collect()
    };
    Ok(Normalized { dedupe_key, events })
}

/// A form post without `payload`: slash commands and similar.
fn form_without_payload(input: &Input<'_>, fields: Value) -> Normalized {
    let dedupe_key = match fields.get("trigger_id").and_then(id_text) {
        Some(id) => provider_key(Provider::Slack, &id),
        None => body_hash_key(input.body),
    };
    Normalized {
        dedupe_key,
        events: vec![raw_event(input.received_at, without_token(&fields))],
    }
}

/// A JSON body: Events API callbacks and anything else.
fn json_body(input: &Input<'_>, payload: Value) -> Normalized {
    let dedupe_key = match payload.get("event_id").and_then(id_text) {
        Some(id) => provider_key(Provider::Slack, &id),
        None => body_hash_key(input.body),
    };
    let time = payload
        .get("event_time")
        .and_then(|v| time::from_json(v, Unit::Seconds))
        .unwrap_or(input.received_at);
    Normalized {
        dedupe_key,
        events: vec![raw_event(time, without_token(&payload))],
    }
}

fn raw_event(time: chrono::DateTime<chrono::Utc>, data: Value) -> Canonical {
    Canonical {
        event_type: Provider::Slack.raw_event_type(),
        subject: None,
        time,
        data,
        couple_ref: None,
        booking_ref: None,
    }
}

/// The payload minus the top-level legacy verification `token` (a shared secret).
fn without_token(payload: &Value) -> Value {
    let mut data = payload.clone();
    if let Value::Object(map) = &mut data {
        map.remove("token");
    }
    data
}

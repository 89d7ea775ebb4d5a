//! Helpers shared by the provider modules.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{NormalizeError, Provider, form};

/// Keys under which senders echo a WedSync couple id back to us, in order of preference.
const COUPLE_KEYS: [&str; 2] = ["couple_id", "wedsync_couple_id"];
/// Keys under which senders echo a WedSync booking id back to us. `wedsync_booking_id` is
/// accepted alongside `booking_id` for symmetry with the couple keys.
const BOOKING_KEYS: [&str; 2] = ["booking_id", "wedsync_booking_id"];

/// Parses a JSON body, refusing it with a lowercase message naming the provider.
///
/// A UTF-8 byte-order mark is skipped: some relays (Windows-based tools) prepend one, and it
/// says nothing about the payload.
pub(crate) fn parse_json(provider: Provider, body: &[u8]) -> Result<Value, NormalizeError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    serde_json::from_slice(body).map_err(|e| {
        // serde_json's messages describe positions and token kinds, never the body's text,
        // so they are safe to pass on; only the case is normalised ("EOF while parsing").
        NormalizeError::Malformed(format!(
            "{} body is not valid json: {}",
            provider.as_str(),
            e.to_string().to_lowercase()
        ))
    })
}

/// `sha256:{hex}` of the exact body: the dedupe key of last resort, stable across
/// redeliveries of byte-identical bodies.
pub(crate) fn body_hash_key(body: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(body)))
}

/// `{provider}:{id}`, the dedupe key when the provider names its event.
pub(crate) fn provider_key(provider: Provider, id: &str) -> String {
    format!("{}:{id}", provider.as_str())
}

/// An identifier as text: a non-blank string as is, or an integer or other number in its
/// JSON form (HubSpot and many CRMs use numeric ids). Anything else is not an id.
pub(crate) fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The string value of `key` in `value`, when `value` is an object holding a string there.
pub(crate) fn str_at<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

/// Finds the couple and booking references in the first of `places` that has each, looking
/// at each object's own keys and then at its `metadata` object (Stripe's, and the usual
/// place relays copy it to).
pub(crate) fn refs(places: &[&Value]) -> (Option<String>, Option<String>) {
    (
        find_ref(places, &COUPLE_KEYS),
        find_ref(places, &BOOKING_KEYS),
    )
}

fn find_ref(places: &[&Value], keys: &[&str]) -> Option<String> {
    places.iter().find_map(|place| {
        let scopes = [Some(*place), place.get("metadata")];
        scopes
            .into_iter()
            .flatten()
            .find_map(|scope| keys.iter().find_map(|k| scope.get(*k).and_then(id_text)))
    })
}

/// The media type without parameters, lowercased (`"Application/JSON; charset=utf-8"` →
/// `"application/json"`).
pub(crate) fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Whether the request says it is a form post.
pub(crate) fn is_form(content_type: &str) -> bool {
    media_type(content_type) == "application/x-www-form-urlencoded"
}

/// A form body as a JSON object of string fields, so form-posting relays go through the same
/// JSON logic. A repeated field keeps its last value, the usual server-side convention.
pub(crate) fn form_to_json(body: &[u8]) -> Value {
    let map = form::decode(body)
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect::<serde_json::Map<_, _>>();
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn refs_prefer_direct_keys_then_metadata_then_later_places() {
        let a = json!({"metadata": {"wedsync_couple_id": "c_meta"}});
        let b = json!({"couple_id": "c_b", "booking_id": 42});
        assert_eq!(
            refs(&[&a, &b]),
            (Some("c_meta".to_owned()), Some("42".to_owned()))
        );
        assert_eq!(refs(&[&json!([1, 2])]), (None, None));
        assert_eq!(refs(&[&json!({"couple_id": "  "})]), (None, None));
    }

    #[test]
    fn media_type_ignores_parameters_and_case() {
        assert_eq!(
            media_type(" Application/JSON ; charset=utf-8"),
            "application/json"
        );
        assert!(is_form("application/x-www-form-urlencoded; charset=UTF-8"));
        assert!(!is_form(""));
    }

    #[test]
    fn json_errors_are_lowercase() {
        let err = parse_json(Provider::Stripe, b"{").expect_err("truncated json");
        let msg = err.to_string();
        assert_eq!(msg, msg.to_lowercase());
        assert!(msg.contains("stripe body is not valid json"), "{msg}");
    }

    #[test]
    fn bom_is_skipped() {
        assert_eq!(
            parse_json(Provider::Generic, b"\xEF\xBB\xBF{\"a\":1}").expect("json after bom"),
            json!({"a": 1})
        );
    }
}

//! `normalize` must never panic: whatever a sender posts, the result is `Ok` or `Err`.
//! These properties feed arbitrary bytes, arbitrary JSON values and near-miss shapes to every
//! provider, with every kind of content type.

use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use serde_json::{Map, Value};
use wedsync_normalize::{Input, Provider, normalize};

fn provider() -> impl Strategy<Value = Provider> {
    proptest::sample::select(Provider::ALL.to_vec())
}

fn content_type() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(vec![
        "application/json",
        "application/x-www-form-urlencoded",
        "APPLICATION/X-WWW-FORM-URLENCODED; charset=utf-8",
        "text/plain",
        "",
    ])
}

/// Keys the normalisers look at, so generated objects hit real code paths often.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(vec![
            "id",
            "type",
            "event",
            "event_type",
            "trigger",
            "created",
            "data",
            "object",
            "metadata",
            "couple_id",
            "booking_id",
            "amount",
            "amount_received",
            "currency",
            "customer",
            "timestamp",
            "occurred_at",
            "agent",
            "actions",
            "action_id",
            "value",
            "action_ts",
            "user",
            "trigger_id",
            "eventId",
            "subscriptionType",
            "objectId",
            "occurredAt",
            "payment_intent",
            "customer_details",
            "last_payment_error",
            "token",
            "subject",
            "event_id",
            "meta",
        ])
        .prop_map(str::to_owned),
        ".{0,8}",
    ]
}

/// Values the normalisers interpret, mixed with arbitrary ones.
fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,16}".prop_map(Value::String),
        proptest::sample::select(vec![
            "payment_intent.succeeded",
            "charge.refunded",
            "invoice.payment_failed",
            "incident.acknowledged",
            "incident.resolved",
            "acknowledge",
            "resolve",
            "block_actions",
            "contact.creation",
            "deal.propertyChange",
            "booking.created",
            "project.booked",
            "1548426417.840180",
            "2024-06-15T13:42:07.169Z",
            "2024-06-15 13:42:07",
            "9999-12-31T23:59:59.999999999Z",
            "-0.5",
            "",
        ])
        .prop_map(|s| Value::String(s.to_owned())),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((key(), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn check(provider: Provider, content_type: &str, body: &[u8], pointer: Option<&str>) {
    let input = Input {
        provider,
        content_type,
        body,
        delivery_id: Some("msg_prop"),
        event_id_pointer: pointer,
        received_at: Utc
            .with_ymd_and_hms(2024, 6, 20, 12, 0, 0)
            .single()
            .expect("valid time"),
    };
    if let Ok(out) = normalize(&input) {
        // Whatever is produced must also be serialisable for the event bus.
        serde_json::to_string(&out).expect("normalized output serializes");
        assert!(!out.dedupe_key.is_empty());
    }
}

/// Percent-encodes every byte, so any JSON text survives as a form field.
fn form_encode(text: &str) -> String {
    text.bytes().map(|b| format!("%{b:02X}")).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(
        provider in provider(),
        content_type in content_type(),
        body in proptest::collection::vec(any::<u8>(), 0..512),
        pointer in proptest::option::of(".{0,12}"),
    ) {
        check(provider, content_type, &body, pointer.as_deref());
    }

    #[test]
    fn arbitrary_json_never_panics(
        provider in provider(),
        content_type in content_type(),
        value in json_value(),
        pointer in proptest::option::of(prop_oneof![Just("/id".to_owned()), "/.{0,8}"]),
    ) {
        let body = serde_json::to_vec(&value).expect("serializes");
        check(provider, content_type, &body, pointer.as_deref());
    }

    #[test]
    fn provider_shaped_json_never_panics(value in json_value(), inner in json_value()) {
        let shapes = [
            (Provider::Stripe, serde_json::json!({"id": "evt_1", "type": "charge.refunded", "created": value, "data": {"object": inner}})),
            (Provider::Stripe, serde_json::json!({"id": value, "type": "payment_intent.payment_failed", "data": {"object": {"id": "pi", "metadata": inner}}})),
            (Provider::Pagerduty, serde_json::json!({"event": {"id": value, "event_type": "incident.resolved", "occurred_at": inner.clone(), "agent": inner.clone(), "data": inner}})),
            (Provider::Hubspot, serde_json::json!([{"eventId": value, "subscriptionType": "deal.deletion", "objectId": inner.clone(), "occurredAt": inner}])),
            (Provider::Svix, serde_json::json!({"type": "booking.updated", "timestamp": value, "data": inner})),
            (Provider::Generic, serde_json::json!({"event": "project.booked", "id": value, "data": inner})),
        ];
        for (provider, shape) in shapes {
            let body = serde_json::to_vec(&shape).expect("serializes");
            check(provider, "application/json", &body, Some("/id"));
        }
    }

    #[test]
    fn slack_form_with_arbitrary_payload_never_panics(value in json_value(), action in json_value()) {
        let payload = serde_json::json!({
            "type": "block_actions",
            "user": value.clone(),
            "trigger_id": value,
            "actions": [action.clone(), {"action_id": "acknowledge", "value": action.clone(), "action_ts": action}],
        });
        let body = format!("payload={}", form_encode(&payload.to_string()));
        check(Provider::Slack, "application/x-www-form-urlencoded", body.as_bytes(), None);
    }

    #[test]
    fn form_like_text_never_panics(
        provider in provider(),
        body in "[a-z=&%+0-9A-F{}\\[\\]\":,.]{0,200}",
    ) {
        check(provider, "application/x-www-form-urlencoded", body.as_bytes(), Some("/id"));
        check(provider, "", format!("payload={body}").as_bytes(), None);
    }
}

//! Focused tests for the rules the snapshots do not make obvious: refusals, dedupe-key
//! fallbacks and time fallbacks.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;
use wedsync_normalize::{
    CANONICAL_EVENT_TYPES, Input, NormalizeError, Normalized, Provider, is_canonical, normalize,
};

fn received_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 6, 20, 12, 0, 0)
        .single()
        .expect("valid fixed receive time")
}

fn input<'a>(provider: Provider, content_type: &'a str, body: &'a [u8]) -> Input<'a> {
    Input {
        provider,
        content_type,
        body,
        delivery_id: None,
        event_id_pointer: None,
        received_at: received_at(),
    }
}

fn ok(input: &Input<'_>) -> Normalized {
    normalize(input).expect("normalizes")
}

fn malformed(input: &Input<'_>) -> String {
    match normalize(input) {
        Err(NormalizeError::Malformed(msg)) => msg,
        Ok(n) => panic!("expected malformed, got {n:?}"),
    }
}

/// sha256 of the empty string, a well-known vector.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

#[test]
fn provider_names_are_stable() {
    let names: Vec<&str> = Provider::ALL.iter().map(|p| p.as_str()).collect();
    assert_eq!(
        names,
        [
            "stripe",
            "standard_webhooks",
            "svix",
            "hubspot",
            "slack",
            "pagerduty",
            "tave",
            "zapier",
            "generic",
            "twilio"
        ]
    );
    assert_eq!(Provider::Svix.raw_event_type(), "svix.raw");
    assert_eq!(
        serde_json::to_value(Provider::StandardWebhooks).expect("serializes"),
        json!("standard_webhooks")
    );
}

#[test]
fn canonical_list_matches_product_rules() {
    assert_eq!(CANONICAL_EVENT_TYPES.len(), 18);
    assert!(is_canonical("calendar.event.deleted"));
    assert!(!is_canonical("stripe.raw"));
    assert!(!is_canonical("Booking.Created"));
}

#[test]
fn non_json_bodies_are_malformed_with_lowercase_messages() {
    for provider in Provider::ALL {
        let msg = malformed(&input(provider, "application/json", b"<html>oops</html>"));
        assert_eq!(msg, msg.to_lowercase(), "{provider}: {msg}");
        assert!(msg.contains("not valid json"), "{provider}: {msg}");
        assert!(!msg.contains("oops"), "message must not echo the body");
    }
    for provider in Provider::ALL {
        let err = normalize(&input(provider, "", b"")).expect_err("empty body");
        assert!(err.to_string().starts_with("malformed payload: "));
    }
}

#[test]
fn shape_errors_name_what_is_missing() {
    let cases: [(Provider, &[u8], &str); 7] = [
        (Provider::Stripe, b"[]", "stripe body is not a json object"),
        (
            Provider::Stripe,
            br#"{"id":"evt_1"}"#,
            "stripe event has no string \"type\" field",
        ),
        (
            Provider::Stripe,
            br#"{"id":"evt_1","type":"charge.succeeded","data":{}}"#,
            "stripe charge.succeeded event has no data.object",
        ),
        (
            Provider::Pagerduty,
            br#"{"messages":[]}"#,
            "pagerduty body has no \"event\" object",
        ),
        (
            Provider::Pagerduty,
            br#"{"event":{"id":"x"}}"#,
            "pagerduty event has no string \"event_type\" field",
        ),
        (
            Provider::Hubspot,
            br#"{"eventId":1}"#,
            "hubspot body is not a json array",
        ),
        (
            Provider::Hubspot,
            br#"[{"eventId":1},2]"#,
            "hubspot batch item 1 is not a json object",
        ),
    ];
    for (provider, body, want) in cases {
        assert_eq!(malformed(&input(provider, "application/json", body)), want);
    }
}

#[test]
fn slack_payload_must_be_a_json_object() {
    let form = "application/x-www-form-urlencoded";
    let msg = malformed(&input(Provider::Slack, form, b"payload=%7Bnot+json"));
    assert!(
        msg.starts_with("slack payload field is not valid json"),
        "{msg}"
    );
    assert_eq!(
        malformed(&input(Provider::Slack, form, b"payload=%5B1%5D")),
        "slack payload field is not a json object"
    );
}

#[test]
fn slack_form_is_detected_without_a_content_type() {
    let body = b"payload=%7B%22type%22%3A%22block_actions%22%2C%22actions%22%3A%5B%7B%22action_id%22%3A%22resolve%22%2C%22value%22%3A%22a1%22%2C%22action_ts%22%3A%221718460102.5%22%7D%5D%7D";
    let out = ok(&input(Provider::Slack, "", body));
    assert_eq!(out.dedupe_key, "slack:1718460102.5");
    assert_eq!(out.events[0].event_type, "incident.resolved");
    assert_eq!(out.events[0].subject.as_deref(), Some("a1"));
    assert_eq!(
        out.events[0].time.to_rfc3339(),
        "2024-06-15T14:01:42.500+00:00"
    );
}

#[test]
fn slack_unknown_action_is_raw_and_drops_the_token() {
    let payload = json!({
        "type": "block_actions",
        "token": "legacy-secret",
        "user": {"id": "U1", "name": "legacy"},
        "actions": [{"action_id": "snooze", "value": "a9"}],
    });
    let body = format!("payload={}", payload).replace('"', "%22");
    let out = ok(&input(
        Provider::Slack,
        "application/x-www-form-urlencoded",
        body.as_bytes(),
    ));
    let event = &out.events[0];
    assert_eq!(event.event_type, "slack.raw");
    assert_eq!(event.subject.as_deref(), Some("a9"));
    assert!(event.data.get("token").is_none());
    assert_eq!(event.time, received_at());
    assert!(out.dedupe_key.starts_with("sha256:"));
}

#[test]
fn dedupe_falls_back_to_the_body_hash() {
    // Standard Webhooks without a delivery id.
    let body = br#"{"type":"booking.created","data":{}}"#;
    let out = ok(&input(Provider::StandardWebhooks, "application/json", body));
    assert!(out.dedupe_key.starts_with("sha256:"));
    assert_eq!(out.dedupe_key.len(), "sha256:".len() + 64);

    // The key is the hash of the exact body.
    let out = ok(&input(
        Provider::Generic,
        "application/x-www-form-urlencoded",
        b"",
    ));
    assert_eq!(out.dedupe_key, format!("sha256:{EMPTY_SHA256}"));
    assert_eq!(out.events[0].event_type, "generic.raw");
    assert_eq!(out.events[0].data, json!({}));

    // HubSpot items without eventId: a partial key could collide, so hash instead.
    let out = ok(&input(
        Provider::Hubspot,
        "application/json",
        br#"[{"eventId":1,"subscriptionType":"contact.creation"},{"subscriptionType":"contact.deletion"}]"#,
    ));
    assert!(out.dedupe_key.starts_with("sha256:"));
    assert_eq!(out.events.len(), 2);

    // An empty HubSpot batch has no events and no ids.
    let out = ok(&input(Provider::Hubspot, "application/json", b"[]"));
    assert!(out.events.is_empty());
    assert!(out.dedupe_key.starts_with("sha256:"));
}

#[test]
fn delivery_id_names_standard_webhooks_and_svix_deliveries() {
    let body = br#"{"type":"client.created","data":{"id":"c1"}}"#;
    for (provider, want) in [
        (Provider::StandardWebhooks, "standard_webhooks:msg_1"),
        (Provider::Svix, "svix:msg_1"),
    ] {
        let mut i = input(provider, "application/json", body);
        i.delivery_id = Some("msg_1");
        let out = ok(&i);
        assert_eq!(out.dedupe_key, want);
        assert_eq!(out.events[0].event_type, "client.created");
        assert_eq!(out.events[0].subject.as_deref(), Some("c1"));
    }
}

#[test]
fn relay_event_id_precedence() {
    let body = br#"{"id":"top","event_id":"second","meta":{"eid":77},"event":"lead.created"}"#;
    let mut i = input(Provider::Generic, "application/json", body);
    i.event_id_pointer = Some("/meta/eid");
    assert_eq!(ok(&i).dedupe_key, "generic:77");
    // A configured pointer that is absent in this payload falls back to `id`.
    i.event_id_pointer = Some("/meta/missing");
    assert_eq!(ok(&i).dedupe_key, "generic:top");
    // A pointer that is not a valid JSON pointer also falls back.
    i.event_id_pointer = Some("meta.eid");
    assert_eq!(ok(&i).dedupe_key, "generic:top");

    let body = br#"{"event_id":"second","event":"lead.created"}"#;
    assert_eq!(
        ok(&input(Provider::Tave, "application/json", body)).dedupe_key,
        "tave:second"
    );
}

#[test]
fn relay_name_comes_from_the_first_string_key() {
    // `type` is an object here (not a name), so `event` is used.
    let body = br#"{"type":{"kind":"x"},"event":"Booking.Canceled","trigger":"payment.failed"}"#;
    let out = ok(&input(Provider::Zapier, "application/json", body));
    assert_eq!(out.events[0].event_type, "booking.cancelled");
    // No `data` field: the whole payload is the data.
    assert_eq!(
        out.events[0].data,
        serde_json::from_slice::<serde_json::Value>(body).expect("json")
    );
    // Unknown name or none: raw with the whole payload.
    let out = ok(&input(Provider::Zapier, "application/json", b"[1,2]"));
    assert_eq!(out.events[0].event_type, "zapier.raw");
    assert_eq!(out.events[0].data, json!([1, 2]));
}

#[test]
fn unreadable_times_fall_back_to_received_at() {
    let cases: [(Provider, &[u8]); 5] = [
        (
            Provider::Stripe,
            br#"{"id":"evt_1","type":"ping","created":"soon"}"#,
        ),
        (
            Provider::Pagerduty,
            br#"{"event":{"event_type":"pagey","occurred_at":null}}"#,
        ),
        (Provider::Hubspot, br#"[{"eventId":1,"occurredAt":-1}]"#),
        (Provider::Svix, br#"{"type":"x","timestamp":"yesterday"}"#),
        (
            Provider::Generic,
            br#"{"type":"x","timestamp":99999999999999999999}"#,
        ),
    ];
    for (provider, body) in cases {
        let out = ok(&input(provider, "application/json", body));
        assert_eq!(out.events[0].time, received_at(), "{provider}");
    }
}

#[test]
fn stripe_amounts_are_integers_only_and_failed_uses_attempted_amount() {
    let body = br#"{"id":"evt_f","type":"invoice.payment_failed","created":1718000000,
        "data":{"object":{"id":"in_1","amount_due":9900,"amount_paid":0,"currency":"usd"}}}"#;
    let out = ok(&input(Provider::Stripe, "application/json", body));
    let data = &out.events[0].data;
    assert_eq!(out.events[0].event_type, "payment.failed");
    assert_eq!(data["amount_minor"], json!(9900));
    assert_eq!(data["currency"], json!("USD"));
    assert_eq!(data["metadata"], json!({}));

    let body = br#"{"id":"evt_g","type":"charge.succeeded",
        "data":{"object":{"id":"ch_1","amount":12.5,"currency":"gbp"}}}"#;
    let out = ok(&input(Provider::Stripe, "application/json", body));
    assert_eq!(out.events[0].data["amount_minor"], json!(null));
    assert_eq!(out.events[0].time, received_at());
}

#[test]
fn stripe_events_of_one_payment_share_its_payment_id_and_an_unpaid_checkout_is_not_a_payment() {
    let normalized = |body: &str| {
        ok(&input(
            Provider::Stripe,
            "application/json",
            body.as_bytes(),
        ))
    };
    // One card payment, four events: each says which payment it is about.
    for body in [
        r#"{"id":"evt_1","type":"payment_intent.succeeded","data":{"object":{"id":"pi_9","amount_received":50000,"currency":"gbp"}}}"#,
        r#"{"id":"evt_2","type":"charge.succeeded","data":{"object":{"id":"ch_9","payment_intent":"pi_9","amount":50000,"currency":"gbp"}}}"#,
        r#"{"id":"evt_3","type":"checkout.session.completed","data":{"object":{"id":"cs_9","payment_intent":"pi_9","payment_status":"paid","amount_total":50000,"currency":"gbp"}}}"#,
        r#"{"id":"evt_4","type":"invoice.paid","data":{"object":{"id":"in_9","payment_intent":{"id":"pi_9"},"amount_paid":50000,"currency":"gbp"}}}"#,
    ] {
        let out = normalized(body);
        assert_eq!(out.events[0].event_type, "payment.completed", "{body}");
        assert_eq!(out.events[0].data["payment_id"], json!("pi_9"), "{body}");
    }
    // An invoice on a newer API version names its payment intent under `payments`.
    let newer = normalized(
        r#"{"id":"evt_n","type":"invoice.paid","data":{"object":{"id":"in_8","amount_paid":50000,"currency":"gbp",
            "payments":{"object":"list","data":[{"payment":{"type":"payment_intent","payment_intent":"pi_9"}}]}}}}"#,
    );
    assert_eq!(newer.events[0].data["payment_id"], json!("pi_9"));
    // A subscription's checkout session names only its invoice.
    let subscription = normalized(
        r#"{"id":"evt_s","type":"checkout.session.completed","data":{"object":{"id":"cs_7","mode":"subscription",
            "payment_intent":null,"invoice":"in_7","payment_status":"paid","amount_total":9000,"currency":"gbp"}}}"#,
    );
    assert_eq!(subscription.events[0].data["payment_id"], json!("in_7"));
    // A charge made without a payment intent is its own payment.
    let legacy = normalized(
        r#"{"id":"evt_5","type":"charge.succeeded","data":{"object":{"id":"ch_7","amount":100,"currency":"gbp"}}}"#,
    );
    assert_eq!(legacy.events[0].data["payment_id"], json!("ch_7"));
    // A bank-debit checkout completes unpaid: not a payment yet; its async result is.
    let unpaid = normalized(
        r#"{"id":"evt_6","type":"checkout.session.completed","data":{"object":{"id":"cs_8","payment_intent":"pi_8","payment_status":"unpaid","amount_total":9000,"currency":"eur"}}}"#,
    );
    assert_eq!(unpaid.events[0].event_type, "stripe.raw");
    let paid_later = normalized(
        r#"{"id":"evt_7","type":"checkout.session.async_payment_succeeded","data":{"object":{"id":"cs_8","payment_intent":"pi_8","payment_status":"paid","amount_total":9000,"currency":"eur"}}}"#,
    );
    assert_eq!(paid_later.events[0].event_type, "payment.completed");
    assert_eq!(paid_later.events[0].data["payment_id"], json!("pi_8"));
    assert_eq!(paid_later.events[0].data["amount_minor"], json!(9000));
    let failed_later = normalized(
        r#"{"id":"evt_8","type":"checkout.session.async_payment_failed","data":{"object":{"id":"cs_8","payment_intent":"pi_8","payment_status":"unpaid","amount_total":9000,"currency":"eur"}}}"#,
    );
    assert_eq!(failed_later.events[0].event_type, "payment.failed");
}

#[test]
fn both_stripe_events_of_one_failed_attempt_name_its_charge() {
    let normalized = |body: &str| {
        ok(&input(
            Provider::Stripe,
            "application/json",
            body.as_bytes(),
        ))
    };
    let intent = normalized(
        r#"{"id":"evt_f1","type":"payment_intent.payment_failed","data":{"object":{"id":"pi_5","amount":50000,"currency":"gbp",
            "latest_charge":"ch_5a","last_payment_error":{"code":"card_declined","decline_code":"insufficient_funds","message":"Your card has insufficient funds.","charge":"ch_5a"}}}}"#,
    );
    let charge = normalized(
        r#"{"id":"evt_f2","type":"charge.failed","data":{"object":{"id":"ch_5a","payment_intent":"pi_5","amount":50000,"currency":"gbp",
            "failure_code":"card_declined","failure_message":"Your card has insufficient funds."}}}"#,
    );
    for out in [&intent, &charge] {
        assert_eq!(out.events[0].event_type, "payment.failed");
        assert_eq!(out.events[0].data["failed_charge"], json!("ch_5a"));
        assert_eq!(out.events[0].data["payment_id"], json!("pi_5"));
    }
    // The next attempt with another card is another failure.
    let again = normalized(
        r#"{"id":"evt_f3","type":"payment_intent.payment_failed","data":{"object":{"id":"pi_5","amount":50000,"currency":"gbp",
            "latest_charge":{"id":"ch_5b"}}}}"#,
    );
    assert_eq!(again.events[0].data["failed_charge"], json!("ch_5b"));
    // A failed 3-D Secure check makes no charge: not the earlier attempt's charge, but none
    // (the event then counts on its own).
    let authentication = normalized(
        r#"{"id":"evt_f4","type":"payment_intent.payment_failed","data":{"object":{"id":"pi_5","amount":50000,"currency":"gbp",
            "latest_charge":"ch_5b","last_payment_error":{"code":"payment_intent_authentication_failure","message":"The provided PaymentMethod has failed authentication."}}}}"#,
    );
    assert_eq!(authentication.events[0].data.get("failed_charge"), None);
}

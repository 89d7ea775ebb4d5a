//! Public test vectors from /work/shared/reference/signatures.md, plus the
//! behaviour every scheme must share: tampering, wrong secrets, replay
//! windows, missing and malformed headers, rotation and check order.

mod common;

use std::collections::HashMap;

use chrono::TimeDelta;
use common::*;
use wedsync_inbound::{
    DEFAULT_TOLERANCE, Encoding, GenericHmac, InboundRequest, Rejection, Scheme, Secret, Verified,
    sign_standard_webhooks, sign_stripe, verify,
};

fn missing(name: &str) -> Rejection {
    Rejection::MissingHeader(name.to_owned())
}

fn assert_malformed<T: std::fmt::Debug>(result: Result<T, Rejection>) {
    assert!(
        matches!(result, Err(Rejection::MalformedHeader(_))),
        "expected MalformedHeader, got {result:?}"
    );
}

// ---------------------------------------------------------------------------
// Standard Webhooks
// ---------------------------------------------------------------------------

const SW_A_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const SW_A_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
const SW_A_TS: i64 = 1_649_367_553;
const SW_A_BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;
const SW_A_SIG: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";
const SW_A_MULTI: &str = "v1,tFtCZ5RDCPxzWQRWXWPgrCgE2frDBe9gjpbWQxnVfsQ= v1,Mm7xgUVICxZfQ3bgf0h0Dof65L/IFx+PnZvnDWPCX6Q= v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw= v1,9DfC1c3eeOrXB6w/5dIDydLNQaEyww5KalE5jLBZucE=";
const SW_A_MULTI_WITHOUT_RIGHT: &str = "v1,tFtCZ5RDCPxzWQRWXWPgrCgE2frDBe9gjpbWQxnVfsQ= v1,Mm7xgUVICxZfQ3bgf0h0Dof65L/IFx+PnZvnDWPCX6Q= v1,9DfC1c3eeOrXB6w/5dIDydLNQaEyww5KalE5jLBZucE=";

const SW_B_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SW_B_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const SW_B_TS: i64 = 1_614_265_330;
const SW_B_BODY: &[u8] = br#"{"test": 2432232314}"#;
const SW_B_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

fn sw_headers(id: &str, ts: &str, signature: &str) -> Vec<(String, String)> {
    vec![
        ("webhook-id".into(), id.into()),
        ("webhook-timestamp".into(), ts.into()),
        ("webhook-signature".into(), signature.into()),
    ]
}

fn sw_verify(
    headers: &Vec<(String, String)>,
    body: &[u8],
    secrets: &[Secret],
    now: i64,
) -> Result<Verified, Rejection> {
    verify(
        &Scheme::StandardWebhooks,
        &post(headers, body),
        secrets,
        at(now),
        DEFAULT_TOLERANCE,
    )
}

#[test]
fn standard_webhooks_vector_a_sign() {
    let secret = Secret::from_str(SW_A_SECRET);
    assert_eq!(
        sign_standard_webhooks(&secret, SW_A_ID, SW_A_TS, SW_A_BODY),
        SW_A_SIG
    );
}

#[test]
fn standard_webhooks_vector_a_verifies_with_id_and_timestamp() {
    let headers = sw_headers(SW_A_ID, &SW_A_TS.to_string(), SW_A_SIG);
    let verified = sw_verify(
        &headers,
        SW_A_BODY,
        &[Secret::from_str(SW_A_SECRET)],
        SW_A_TS,
    )
    .expect("vector A verifies");
    assert_eq!(
        verified,
        Verified {
            timestamp: Some(SW_A_TS),
            delivery_id: Some(SW_A_ID.to_owned()),
        }
    );
}

#[test]
fn standard_webhooks_vector_a_multi_signature_header() {
    let secrets = [Secret::from_str(SW_A_SECRET)];
    let headers = sw_headers(SW_A_ID, &SW_A_TS.to_string(), SW_A_MULTI);
    assert!(sw_verify(&headers, SW_A_BODY, &secrets, SW_A_TS).is_ok());

    let headers = sw_headers(SW_A_ID, &SW_A_TS.to_string(), SW_A_MULTI_WITHOUT_RIGHT);
    assert_eq!(
        sw_verify(&headers, SW_A_BODY, &secrets, SW_A_TS),
        Err(Rejection::BadSignature)
    );
}

#[test]
fn standard_webhooks_vector_b_sign_and_verify() {
    let secret = Secret::from_str(SW_B_SECRET);
    assert_eq!(
        sign_standard_webhooks(&secret, SW_B_ID, SW_B_TS, SW_B_BODY),
        SW_B_SIG
    );
    let headers = sw_headers(SW_B_ID, &SW_B_TS.to_string(), SW_B_SIG);
    assert!(sw_verify(&headers, SW_B_BODY, &[secret], SW_B_TS).is_ok());
}

#[test]
fn standard_webhooks_signature_matches_independent_formulation() {
    let key = unb64(SW_A_SECRET.trim_start_matches("whsec_"));
    let message = format!(
        "{SW_A_ID}.{SW_A_TS}.{}",
        std::str::from_utf8(SW_A_BODY).expect("utf-8")
    );
    assert_eq!(
        format!("v1,{}", hmac_b64(&key, message.as_bytes())),
        SW_A_SIG
    );
}

#[test]
fn standard_webhooks_svix_header_names() {
    let headers: &[(&str, &str)] = &[
        ("Svix-Id", SW_A_ID),
        ("Svix-Timestamp", "1649367553"),
        ("Svix-Signature", SW_A_SIG),
    ];
    let verified = verify(
        &Scheme::StandardWebhooks,
        &post(headers, SW_A_BODY),
        &[Secret::from_str(SW_A_SECRET)],
        at(SW_A_TS),
        DEFAULT_TOLERANCE,
    )
    .expect("svix names verify");
    assert_eq!(verified.delivery_id.as_deref(), Some(SW_A_ID));
}

#[test]
fn standard_webhooks_secret_without_prefix_is_accepted() {
    let headers = sw_headers(SW_A_ID, &SW_A_TS.to_string(), SW_A_SIG);
    let bare = Secret::from_str(SW_A_SECRET.trim_start_matches("whsec_"));
    assert!(sw_verify(&headers, SW_A_BODY, &[bare], SW_A_TS).is_ok());
}

#[test]
fn standard_webhooks_tampered_body_and_wrong_secret() {
    let headers = sw_headers(SW_A_ID, &SW_A_TS.to_string(), SW_A_SIG);
    let secrets = [Secret::from_str(SW_A_SECRET)];
    let tampered = br#"{"email":"test@example.com","username":"test_usex"}"#;
    assert_eq!(
        sw_verify(&headers, tampered, &secrets, SW_A_TS),
        Err(Rejection::BadSignature)
    );
    assert_eq!(
        sw_verify(
            &headers,
            SW_A_BODY,
            &[Secret::from_str(SW_B_SECRET)],
            SW_A_TS
        ),
        Err(Rejection::BadSignature)
    );
    // The id is signed too: replaying under another id must fail.
    let other_id = sw_headers("msg_other", &SW_A_TS.to_string(), SW_A_SIG);
    assert_eq!(
        sw_verify(&other_id, SW_A_BODY, &secrets, SW_A_TS),
        Err(Rejection::BadSignature)
    );
}

#[test]
fn standard_webhooks_stale_and_future_timestamps() {
    let headers = sw_headers(SW_A_ID, &SW_A_TS.to_string(), SW_A_SIG);
    let secrets = [Secret::from_str(SW_A_SECRET)];
    assert!(sw_verify(&headers, SW_A_BODY, &secrets, SW_A_TS + 300).is_ok());
    assert!(sw_verify(&headers, SW_A_BODY, &secrets, SW_A_TS - 300).is_ok());
    assert_eq!(
        sw_verify(&headers, SW_A_BODY, &secrets, SW_A_TS + 301),
        Err(Rejection::StaleTimestamp)
    );
    assert_eq!(
        sw_verify(&headers, SW_A_BODY, &secrets, SW_A_TS - 301),
        Err(Rejection::FutureTimestamp)
    );
}

#[test]
fn standard_webhooks_missing_headers() {
    let secrets = [Secret::from_str(SW_A_SECRET)];
    let ts = SW_A_TS.to_string();
    let full = sw_headers(SW_A_ID, &ts, SW_A_SIG);
    for (index, name) in ["webhook-id", "webhook-timestamp", "webhook-signature"]
        .into_iter()
        .enumerate()
    {
        let mut headers = full.clone();
        headers.remove(index);
        assert_eq!(
            sw_verify(&headers, SW_A_BODY, &secrets, SW_A_TS),
            Err(missing(name))
        );
    }
}

#[test]
fn standard_webhooks_malformed_headers() {
    let secrets = [Secret::from_str(SW_A_SECRET)];
    let ts = SW_A_TS.to_string();
    let cases = [
        sw_headers(SW_A_ID, "not-a-number", SW_A_SIG),
        sw_headers(SW_A_ID, "-1649367553", SW_A_SIG),
        sw_headers(SW_A_ID, "99999999999999999999999999", SW_A_SIG),
        sw_headers(SW_A_ID, &ts, ""),
        sw_headers(SW_A_ID, &ts, "   "),
        sw_headers("", &ts, SW_A_SIG),
        sw_headers(SW_A_ID, &ts, "v1,!!!notbase64"),
        sw_headers(SW_A_ID, &ts, "v1,AAAA"),
        sw_headers(SW_A_ID, &ts, "tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="),
        // Only versions we cannot check: nothing to verify against.
        sw_headers(SW_A_ID, &ts, "v1a,c2lnbmF0dXJl v2,AAAA"),
    ];
    for headers in cases {
        assert_malformed(sw_verify(&headers, SW_A_BODY, &secrets, SW_A_TS));
    }
}

#[test]
fn standard_webhooks_ignores_v1a_and_unknown_versions() {
    let signature = format!("v1a,c2lnbmF0dXJl v2,whatever {SW_A_SIG}");
    let headers = sw_headers(SW_A_ID, &SW_A_TS.to_string(), &signature);
    assert!(
        sw_verify(
            &headers,
            SW_A_BODY,
            &[Secret::from_str(SW_A_SECRET)],
            SW_A_TS
        )
        .is_ok()
    );
}

#[test]
fn standard_webhooks_rotation_accepts_old_and_new_secrets() {
    let old = Secret::from_str(SW_A_SECRET);
    let new = Secret::from_str("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    let secrets = [new.clone(), old.clone()];
    let ts = SW_A_TS.to_string();
    let by_old = sign_standard_webhooks(&old, SW_A_ID, SW_A_TS, SW_A_BODY);
    let by_new = sign_standard_webhooks(&new, SW_A_ID, SW_A_TS, SW_A_BODY);
    for signature in [by_old.clone(), by_new.clone(), format!("{by_new} {by_old}")] {
        let headers = sw_headers(SW_A_ID, &ts, &signature);
        assert!(sw_verify(&headers, SW_A_BODY, &secrets, SW_A_TS).is_ok());
    }
    // Once the old secret is retired, its signatures stop working.
    let headers = sw_headers(SW_A_ID, &ts, &by_old);
    assert_eq!(
        sw_verify(&headers, SW_A_BODY, &[new], SW_A_TS),
        Err(Rejection::BadSignature)
    );
}

#[test]
fn standard_webhooks_invalid_secrets() {
    let headers = sw_headers(SW_A_ID, &SW_A_TS.to_string(), SW_A_SIG);
    for bad in [
        vec![],
        vec![Secret::from_str("whsec_!!not base64!!")],
        vec![Secret::from_str("whsec_")],
        vec![Secret::from_str(SW_A_SECRET), Secret::new(vec![0xff, 0x00])],
    ] {
        assert_eq!(
            sw_verify(&headers, SW_A_BODY, &bad, SW_A_TS),
            Err(Rejection::InvalidSecret)
        );
    }
}

#[test]
fn check_order_headers_then_format_then_time_then_secret_then_signature() {
    let secrets = [Secret::from_str(SW_A_SECRET)];
    let stale_now = SW_A_TS + 10_000;
    // Missing beats malformed: the id is absent and the signature is junk.
    let headers = vec![
        ("webhook-timestamp".to_string(), "junk".to_string()),
        ("webhook-signature".to_string(), "junk".to_string()),
    ];
    assert_eq!(
        sw_verify(&headers, SW_A_BODY, &secrets, stale_now),
        Err(missing("webhook-id"))
    );
    // Malformed beats stale.
    let headers = sw_headers(SW_A_ID, &SW_A_TS.to_string(), "v1,!!!");
    assert_malformed(sw_verify(&headers, SW_A_BODY, &secrets, stale_now));
    // Stale beats a bad secret and a bad signature.
    let headers = sw_headers(SW_A_ID, &SW_A_TS.to_string(), SW_A_MULTI_WITHOUT_RIGHT);
    assert_eq!(
        sw_verify(
            &headers,
            SW_A_BODY,
            &[Secret::from_str("whsec_!!")],
            stale_now
        ),
        Err(Rejection::StaleTimestamp)
    );
    // An unusable secret beats a bad signature.
    assert_eq!(
        sw_verify(
            &headers,
            SW_A_BODY,
            &[Secret::from_str("whsec_!!")],
            SW_A_TS
        ),
        Err(Rejection::InvalidSecret)
    );
}

// ---------------------------------------------------------------------------
// Stripe
// ---------------------------------------------------------------------------

const STRIPE_EVENT: &[u8] = include_bytes!("fixtures/stripe_invoiceitem_created.json");
const STRIPE_EVENT_TS: i64 = 1_533_204_620;
const STRIPE_EVENT_V1: &str = "82216eca827bcb7b34b8055eb2d2d9e6bc13b9ac39ded14a61e69f70c565f53a";

fn stripe_verify(
    header: &str,
    body: &[u8],
    secrets: &[Secret],
    now: i64,
) -> Result<Verified, Rejection> {
    let headers = [("Stripe-Signature", header)];
    verify(
        &Scheme::Stripe,
        &post(&headers, body),
        secrets,
        at(now),
        DEFAULT_TOLERANCE,
    )
}

#[test]
fn stripe_full_event_fixture_is_byte_exact() {
    assert_eq!(STRIPE_EVENT.len(), 756);
    assert!(STRIPE_EVENT.ends_with(b"}\n"));
    let event: serde_json::Value = serde_json::from_slice(STRIPE_EVENT).expect("fixture is JSON");
    assert_eq!(event["type"], "invoiceitem.created");
    assert_eq!(event["created"], STRIPE_EVENT_TS);
}

#[test]
fn stripe_full_event_vector_verifies() {
    // Header exactly as in async-stripe's test_webhook_construct_event.
    let header = format!(
        "t={STRIPE_EVENT_TS},v1={STRIPE_EVENT_V1},v0=63f3a72374a733066c4be69ed7f8e5ac85c22c9f0a6a612ab9a025a9e4ee7eef"
    );
    let verified = stripe_verify(
        &header,
        STRIPE_EVENT,
        &[Secret::from_str("webhook_secret")],
        STRIPE_EVENT_TS,
    )
    .expect("async-stripe vector verifies");
    assert_eq!(verified.timestamp, Some(STRIPE_EVENT_TS));
    assert_eq!(verified.delivery_id, None);
}

#[test]
fn stripe_full_event_vector_sign() {
    assert_eq!(
        sign_stripe(
            &Secret::from_str("webhook_secret"),
            STRIPE_EVENT_TS,
            STRIPE_EVENT
        ),
        format!("t={STRIPE_EVENT_TS},v1={STRIPE_EVENT_V1}")
    );
    let mut message = format!("{STRIPE_EVENT_TS}.").into_bytes();
    message.extend_from_slice(STRIPE_EVENT);
    assert_eq!(hmac_hex(b"webhook_secret", &message), STRIPE_EVENT_V1);
}

#[test]
fn stripe_node_raw_hmac_vectors_through_body_only_schemes() {
    // stripe-node test/crypto/helpers.ts: raw HMAC of the payload, key test_secret.
    let vectors: [(&[u8], &str); 2] = [
        (
            b"",
            "f7f9bd47fb987337b5796fdc1fdb9ba221d0d5396814bfcaf9521f43fd8927fd",
        ),
        (
            br#"{"obj1":"hello","obj2":"world"}"#,
            "bebb1a643997f419b315ddba19e6f5411e1ce7f810ba6d3617ce72823092f363",
        ),
    ];
    let secrets = [Secret::from_str("test_secret")];
    let generic = Scheme::Generic(GenericHmac {
        signature_header: "X-Signature".into(),
        prefix: String::new(),
        encoding: Encoding::Hex,
        signed_content: "{body}".into(),
        timestamp_header: None,
        id_header: None,
    });
    for (body, expected) in vectors {
        assert_eq!(hmac_hex(b"test_secret", body), expected);
        let headers = [("X-Signature", expected)];
        assert!(
            verify(
                &generic,
                &post(&headers, body),
                &secrets,
                at(0),
                DEFAULT_TOLERANCE
            )
            .is_ok()
        );
        let pagerduty = format!("v1={expected}");
        let headers = [("X-PagerDuty-Signature", pagerduty.as_str())];
        assert!(
            verify(
                &Scheme::PagerDutyV3,
                &post(&headers, body),
                &secrets,
                at(0),
                DEFAULT_TOLERANCE
            )
            .is_ok()
        );
    }
}

#[test]
fn stripe_secret_is_used_raw_with_prefix() {
    let body = br#"{"id":"evt_1"}"#;
    let key = "whsec_raw_key_not_base64";
    let header = format!(
        "t=1700000000,v1={}",
        hmac_hex(key.as_bytes(), b"1700000000.{\"id\":\"evt_1\"}")
    );
    assert_eq!(
        sign_stripe(&Secret::from_str(key), 1_700_000_000, body),
        header
    );
    assert!(stripe_verify(&header, body, &[Secret::from_str(key)], 1_700_000_000).is_ok());
}

#[test]
fn stripe_rejections() {
    let secret = Secret::from_str("whsec_abc");
    let body = b"{\"id\":\"evt_1\"}";
    let good = sign_stripe(&secret, 1_000_000, body);
    let secrets = [secret];
    assert!(stripe_verify(&good, body, &secrets, 1_000_000).is_ok());
    assert_eq!(
        stripe_verify(&good, b"{\"id\":\"evt_2\"}", &secrets, 1_000_000),
        Err(Rejection::BadSignature)
    );
    assert_eq!(
        stripe_verify(&good, body, &[Secret::from_str("whsec_abd")], 1_000_000),
        Err(Rejection::BadSignature)
    );
    assert_eq!(
        stripe_verify(&good, body, &secrets, 1_000_301),
        Err(Rejection::StaleTimestamp)
    );
    assert_eq!(
        stripe_verify(&good, body, &secrets, 999_699),
        Err(Rejection::FutureTimestamp)
    );
    // The timestamp is signed: moving it forward breaks the signature.
    let moved = good.replace("t=1000000", "t=1000100");
    assert_eq!(
        stripe_verify(&moved, body, &secrets, 1_000_100),
        Err(Rejection::BadSignature)
    );
    let no_header: [(&str, &str); 0] = [];
    assert_eq!(
        verify(
            &Scheme::Stripe,
            &post(&no_header, body),
            &secrets,
            at(1_000_000),
            DEFAULT_TOLERANCE
        ),
        Err(missing("Stripe-Signature"))
    );
    let v1 = good.split_once(",v1=").expect("has v1").1;
    for bad in [
        String::new(),
        "t=1000000".to_owned(),
        format!("v1={v1}"),
        format!("t=1000000,t=1000000,v1={v1}"),
        format!("t=abc,v1={v1}"),
        format!("t=1000000,v1=zz{}", &v1[2..]),
        format!("t=1000000,v1={}", &v1[2..]),
        format!("t=1000000,v1={v1},garbage"),
        "t=1000000,v0=00".to_owned(),
    ] {
        assert_malformed(stripe_verify(&bad, body, &secrets, 1_000_000));
    }
}

#[test]
fn stripe_multiple_v1_entries_and_rotation() {
    let old = Secret::from_str("whsec_old");
    let new = Secret::from_str("whsec_new");
    let body = b"payload";
    let by_old = sign_stripe(&old, 1_000_000, body);
    let by_new = sign_stripe(&new, 1_000_000, body);
    let old_v1 = by_old.split_once(",v1=").expect("v1").1;
    // Stripe sends one v1 per active secret while an endpoint secret is rolled.
    let both = format!("{by_new},v1={old_v1},v0=ignored");
    assert!(stripe_verify(&both, body, std::slice::from_ref(&old), 1_000_000).is_ok());
    assert!(stripe_verify(&both, body, std::slice::from_ref(&new), 1_000_000).is_ok());
    let secrets = [new, old];
    assert!(stripe_verify(&by_old, body, &secrets, 1_000_000).is_ok());
    assert!(stripe_verify(&by_new, body, &secrets, 1_000_000).is_ok());
    assert_eq!(
        stripe_verify(&by_old, body, &[Secret::from_str("whsec_other")], 1_000_000),
        Err(Rejection::BadSignature)
    );
}

#[test]
fn default_tolerance_is_five_minutes() {
    assert_eq!(DEFAULT_TOLERANCE, TimeDelta::minutes(5));
}

// ---------------------------------------------------------------------------
// HubSpot v3
// ---------------------------------------------------------------------------

const HUBSPOT_SECRET: &str = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";

fn hubspot_request<'a>(
    headers: &'a [(&'a str, &'a str)],
    method: &'a str,
    url: &'a str,
    body: &'a [u8],
) -> InboundRequest<'a, [(&'a str, &'a str)]> {
    InboundRequest {
        method,
        url,
        headers,
        body,
    }
}

#[test]
fn hubspot_round_trip_with_millisecond_timestamp() {
    let body = br#"[{"eventId":1,"subscriptionType":"contact.creation","objectId":123}]"#;
    let url = "https://hub.wedsync.example/inbound/hubspot?portal=62515";
    let ts_ms = "1700000000123";
    let source = format!(
        "POST{url}{}{ts_ms}",
        std::str::from_utf8(body).expect("utf-8")
    );
    let signature = hmac_b64(HUBSPOT_SECRET.as_bytes(), source.as_bytes());
    let headers = [
        ("X-HubSpot-Signature-v3", signature.as_str()),
        ("X-HubSpot-Request-Timestamp", ts_ms),
    ];
    let secrets = [Secret::from_str(HUBSPOT_SECRET)];
    let request = hubspot_request(&headers, "POST", url, body);
    let verified = verify(
        &Scheme::HubSpotV3,
        &request,
        &secrets,
        at_millis(1_700_000_000_123),
        DEFAULT_TOLERANCE,
    )
    .expect("round trip verifies");
    assert_eq!(verified.timestamp, Some(1_700_000_000));

    // Millisecond resolution on both edges of the window.
    let check = |now_ms| {
        verify(
            &Scheme::HubSpotV3,
            &request,
            &secrets,
            at_millis(now_ms),
            DEFAULT_TOLERANCE,
        )
    };
    assert!(check(1_700_000_300_123).is_ok());
    assert_eq!(check(1_700_000_300_124), Err(Rejection::StaleTimestamp));
    assert!(check(1_699_999_700_123).is_ok());
    assert_eq!(check(1_699_999_700_122), Err(Rejection::FutureTimestamp));

    // Method, URL and body are all signed.
    for (method, url, body) in [
        ("PUT", url, &body[..]),
        (
            "POST",
            "https://hub.wedsync.example/inbound/hubspot?portal=62516",
            &body[..],
        ),
        ("POST", url, &body[1..]),
    ] {
        assert_eq!(
            verify(
                &Scheme::HubSpotV3,
                &hubspot_request(&headers, method, url, body),
                &secrets,
                at_millis(1_700_000_000_123),
                DEFAULT_TOLERANCE,
            ),
            Err(Rejection::BadSignature)
        );
    }
}

#[test]
fn hubspot_timestamp_in_seconds_reads_as_1970() {
    // Treating the header as seconds would accept this; it is milliseconds.
    let ts = "1700000000";
    let source = format!("POSThttps://h.example/x{ts}");
    let signature = hmac_b64(HUBSPOT_SECRET.as_bytes(), source.as_bytes());
    let headers = [
        ("X-HubSpot-Signature-v3", signature.as_str()),
        ("X-HubSpot-Request-Timestamp", ts),
    ];
    assert_eq!(
        verify(
            &Scheme::HubSpotV3,
            &hubspot_request(&headers, "POST", "https://h.example/x", b""),
            &[Secret::from_str(HUBSPOT_SECRET)],
            at(1_700_000_000),
            DEFAULT_TOLERANCE,
        ),
        Err(Rejection::StaleTimestamp)
    );
}

#[test]
fn hubspot_decodes_documented_uri_escapes_before_signing() {
    let received_url = "https://h.example/hook?next=https%3A%2F%2Fa.example%2Fb%3Fc%40d&name=a%20b";
    let signed_url = "https://h.example/hook?next=https://a.example/b?c@d&name=a%20b";
    let ts = "1700000000000";
    let source = format!("POST{signed_url}{{}}{ts}");
    let signature = hmac_b64(HUBSPOT_SECRET.as_bytes(), source.as_bytes());
    let headers = [
        ("x-hubspot-signature-v3", signature.as_str()),
        ("x-hubspot-request-timestamp", ts),
    ];
    assert!(
        verify(
            &Scheme::HubSpotV3,
            &hubspot_request(&headers, "POST", received_url, b"{}"),
            &[Secret::from_str(HUBSPOT_SECRET)],
            at(1_700_000_000),
            DEFAULT_TOLERANCE,
        )
        .is_ok()
    );
}

#[test]
fn hubspot_missing_and_malformed_headers() {
    let secrets = [Secret::from_str(HUBSPOT_SECRET)];
    let run = |headers: &[(&str, &str)]| {
        verify(
            &Scheme::HubSpotV3,
            &hubspot_request(headers, "POST", "https://h.example/", b"{}"),
            &secrets,
            at(1_700_000_000),
            DEFAULT_TOLERANCE,
        )
    };
    let good_sig = b64(&[0; 32]);
    assert_eq!(
        run(&[("X-HubSpot-Request-Timestamp", "1700000000000")]),
        Err(missing("X-HubSpot-Signature-v3"))
    );
    assert_eq!(
        run(&[("X-HubSpot-Signature-v3", &good_sig)]),
        Err(missing("X-HubSpot-Request-Timestamp"))
    );
    for (signature, ts) in [
        ("not base64!", "1700000000000"),
        ("AAAA", "1700000000000"),
        (good_sig.as_str(), "1.7e12"),
        (good_sig.as_str(), ""),
        (good_sig.as_str(), "99999999999999999999"),
    ] {
        assert_malformed(run(&[
            ("X-HubSpot-Signature-v3", signature),
            ("X-HubSpot-Request-Timestamp", ts),
        ]));
    }
    assert_eq!(
        run(&[
            ("X-HubSpot-Signature-v3", &good_sig),
            ("X-HubSpot-Request-Timestamp", "1700000000000"),
        ]),
        Err(Rejection::BadSignature)
    );
}

// ---------------------------------------------------------------------------
// Slack v0
// ---------------------------------------------------------------------------

fn slack_verify(
    signature: &str,
    ts: &str,
    body: &[u8],
    secret: &str,
    now: i64,
) -> Result<Verified, Rejection> {
    let headers = [
        ("X-Slack-Signature", signature),
        ("X-Slack-Request-Timestamp", ts),
    ];
    verify(
        &Scheme::SlackV0,
        &post(&headers, body),
        &[Secret::from_str(secret)],
        at(now),
        DEFAULT_TOLERANCE,
    )
}

#[test]
fn slack_documentation_example() {
    // Slack's "Verifying requests from Slack" walkthrough (not in
    // signatures.md; recomputed with Python's hmac before adding it here).
    let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    let verified = slack_verify(
        "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
        "1531420618",
        body,
        "8f742231b10e8888abcd99yyyzzz85a5",
        1_531_420_618,
    )
    .expect("Slack docs example verifies");
    assert_eq!(verified.timestamp, Some(1_531_420_618));
}

#[test]
fn slack_interactive_payload_round_trip() {
    let body = b"payload=%7B%22type%22%3A%22block_actions%22%2C%22actions%22%3A%5B%7B%22action_id%22%3A%22approve%22%7D%5D%7D";
    let secret = "slack-signing-secret";
    let ts = "1700000000";
    let mut base = b"v0:1700000000:".to_vec();
    base.extend_from_slice(body);
    let signature = format!("v0={}", hmac_hex(secret.as_bytes(), &base));
    assert!(slack_verify(&signature, ts, body, secret, 1_700_000_000).is_ok());
    assert!(
        slack_verify(
            &signature.to_uppercase().replace("V0=", "v0="),
            ts,
            body,
            secret,
            1_700_000_000
        )
        .is_ok()
    );
    assert_eq!(
        slack_verify(
            &signature,
            ts,
            &body[..body.len() - 1],
            secret,
            1_700_000_000
        ),
        Err(Rejection::BadSignature)
    );
    assert_eq!(
        slack_verify(&signature, ts, body, "other-secret", 1_700_000_000),
        Err(Rejection::BadSignature)
    );
    assert_eq!(
        slack_verify(&signature, ts, body, secret, 1_700_000_301),
        Err(Rejection::StaleTimestamp)
    );
    assert_eq!(
        slack_verify(&signature, ts, body, secret, 1_699_999_699),
        Err(Rejection::FutureTimestamp)
    );
    let v1_prefix = signature.replacen("v0=", "v1=", 1);
    assert_malformed(slack_verify(&v1_prefix, ts, body, secret, 1_700_000_000));
    assert_malformed(slack_verify("v0=xyz", ts, body, secret, 1_700_000_000));
    assert_malformed(slack_verify(
        &signature,
        "soon",
        body,
        secret,
        1_700_000_000,
    ));

    let only_ts = [("X-Slack-Request-Timestamp", ts)];
    assert_eq!(
        verify(
            &Scheme::SlackV0,
            &post(&only_ts, body),
            &[Secret::from_str(secret)],
            at(1_700_000_000),
            DEFAULT_TOLERANCE
        ),
        Err(missing("X-Slack-Signature"))
    );
}

// ---------------------------------------------------------------------------
// PagerDuty v3
// ---------------------------------------------------------------------------

fn pagerduty_verify(header: &str, body: &[u8], secrets: &[Secret]) -> Result<Verified, Rejection> {
    let headers = [("X-PagerDuty-Signature", header)];
    // No signed timestamp: `now` cannot matter, so use a far-away one.
    verify(
        &Scheme::PagerDutyV3,
        &post(&headers, body),
        secrets,
        at(4_000_000_000),
        DEFAULT_TOLERANCE,
    )
}

#[test]
fn pagerduty_multi_signature_and_rotation() {
    let body = br#"{"event":{"event_type":"incident.resolved"}}"#;
    let old = "pd-old-secret";
    let new = "pd-new-secret";
    let by_old = hmac_hex(old.as_bytes(), body);
    let by_new = hmac_hex(new.as_bytes(), body);
    let header = format!("v1={by_new},v1={by_old}");

    let verified = pagerduty_verify(&header, body, &[Secret::from_str(old)]).expect("old ok");
    assert_eq!(
        verified,
        Verified {
            timestamp: None,
            delivery_id: None
        }
    );
    assert!(pagerduty_verify(&header, body, &[Secret::from_str(new)]).is_ok());
    assert!(
        pagerduty_verify(
            &format!("v1={by_old}"),
            body,
            &[Secret::from_str(new), Secret::from_str(old)]
        )
        .is_ok()
    );
    assert!(
        pagerduty_verify(
            &format!("v2=zzz, v1={by_new} ,"),
            body,
            &[Secret::from_str(new)]
        )
        .is_ok()
    );
    assert_eq!(
        pagerduty_verify(&header, body, &[Secret::from_str("third")]),
        Err(Rejection::BadSignature)
    );
    assert_eq!(
        pagerduty_verify(&header, b"{}", &[Secret::from_str(old)]),
        Err(Rejection::BadSignature)
    );
    for bad in [
        "",
        "v2=abcd",
        "v1=nothex",
        "v1",
        &format!("v1={}", &by_old[..62]),
    ] {
        assert_malformed(pagerduty_verify(bad, body, &[Secret::from_str(old)]));
    }
    let none: [(&str, &str); 0] = [];
    assert_eq!(
        verify(
            &Scheme::PagerDutyV3,
            &post(&none, body),
            &[Secret::from_str(old)],
            at(0),
            DEFAULT_TOLERANCE
        ),
        Err(missing("X-PagerDuty-Signature"))
    );
}

// ---------------------------------------------------------------------------
// Generic HMAC
// ---------------------------------------------------------------------------

fn timestamped_base64() -> GenericHmac {
    GenericHmac {
        signature_header: "X-Relay-Signature".into(),
        prefix: String::new(),
        encoding: Encoding::Base64,
        signed_content: "{timestamp}.{body}".into(),
        timestamp_header: Some("X-Relay-Timestamp".into()),
        id_header: None,
    }
}

#[test]
fn generic_github_style() {
    let secret = "It's a Secret to Everybody";
    let body = b"Hello, World!";
    let signature = format!("sha256={}", hmac_hex(secret.as_bytes(), body));
    // GitHub's documented example signature for this secret and payload.
    assert_eq!(
        signature,
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    );
    let scheme = Scheme::Generic(GenericHmac::github_sha256());
    let secrets = [Secret::from_str(secret)];
    let mut headers = HashMap::new();
    headers.insert("x-hub-signature-256".to_string(), signature.clone());
    assert_eq!(
        verify(
            &scheme,
            &post(&headers, body),
            &secrets,
            at(0),
            DEFAULT_TOLERANCE
        ),
        Ok(Verified {
            timestamp: None,
            delivery_id: None
        })
    );
    assert_eq!(
        verify(
            &scheme,
            &post(&headers, b"Hello, World?"),
            &secrets,
            at(0),
            DEFAULT_TOLERANCE
        ),
        Err(Rejection::BadSignature)
    );
    headers.insert(
        "x-hub-signature-256".to_string(),
        signature.replace("sha256=", ""),
    );
    assert_malformed(verify(
        &scheme,
        &post(&headers, body),
        &secrets,
        at(0),
        DEFAULT_TOLERANCE,
    ));
    let empty: HashMap<String, String> = HashMap::new();
    assert_eq!(
        verify(
            &scheme,
            &post(&empty, body),
            &secrets,
            at(0),
            DEFAULT_TOLERANCE
        ),
        Err(missing("X-Hub-Signature-256"))
    );
}

#[test]
fn generic_timestamp_dot_body_base64() {
    let secret = "relay-secret";
    let body = br#"{"event":"booking.created"}"#;
    let ts = "1700000000";
    let signature = hmac_b64(secret.as_bytes(), &concat(&[ts.as_bytes(), b".", body]));
    let headers = [
        ("X-Relay-Signature", signature.as_str()),
        ("X-Relay-Timestamp", ts),
    ];
    let scheme = Scheme::Generic(timestamped_base64());
    let secrets = [Secret::from_str(secret)];
    let run = |headers: &[(&str, &str)], body: &[u8], now: i64| {
        verify(
            &scheme,
            &post(headers, body),
            &secrets,
            at(now),
            DEFAULT_TOLERANCE,
        )
    };
    assert_eq!(
        run(&headers, body, 1_700_000_000).expect("ok").timestamp,
        Some(1_700_000_000)
    );
    assert_eq!(
        run(&headers, body, 1_700_000_301),
        Err(Rejection::StaleTimestamp)
    );
    assert_eq!(
        run(&headers, body, 1_699_999_699),
        Err(Rejection::FutureTimestamp)
    );
    assert_eq!(
        run(&headers, &body[1..], 1_700_000_000),
        Err(Rejection::BadSignature)
    );
    let moved = [
        ("X-Relay-Signature", signature.as_str()),
        ("X-Relay-Timestamp", "1700000001"),
    ];
    assert_eq!(
        run(&moved, body, 1_700_000_000),
        Err(Rejection::BadSignature)
    );
    assert_eq!(
        run(
            &[("X-Relay-Signature", signature.as_str())],
            body,
            1_700_000_000
        ),
        Err(missing("X-Relay-Timestamp"))
    );
    assert_malformed(run(
        &[("X-Relay-Signature", "%%%"), ("X-Relay-Timestamp", ts)],
        body,
        1_700_000_000,
    ));
    assert_malformed(run(
        &[
            ("X-Relay-Signature", signature.as_str()),
            ("X-Relay-Timestamp", "x"),
        ],
        body,
        1_700_000_000,
    ));
}

#[test]
fn generic_id_timestamp_body_reports_the_signed_id() {
    let config = GenericHmac {
        signature_header: "X-Sig".into(),
        prefix: "v1=".into(),
        encoding: Encoding::Hex,
        signed_content: "{id}.{timestamp}.{body}".into(),
        timestamp_header: Some("X-Ts".into()),
        id_header: Some("X-Delivery".into()),
    };
    let body = b"\xff\xfe non-UTF-8 body";
    let signature = format!(
        "v1={}",
        hmac_hex(b"k", &concat(&[b"dlv_1.1700000000.", body]))
    );
    let headers = [
        ("X-Sig", signature.as_str()),
        ("X-Ts", "1700000000"),
        ("X-Delivery", "dlv_1"),
    ];
    let verified = verify(
        &Scheme::Generic(config),
        &post(&headers, body),
        &[Secret::from_str("k")],
        at(1_700_000_000),
        DEFAULT_TOLERANCE,
    )
    .expect("verifies");
    assert_eq!(verified.delivery_id.as_deref(), Some("dlv_1"));
    assert_eq!(verified.timestamp, Some(1_700_000_000));
}

#[test]
fn generic_invalid_configurations() {
    let body = b"{}";
    let headers = [("X-Relay-Signature", "AAAA")];
    let base = timestamped_base64();
    let configs = [
        GenericHmac {
            timestamp_header: None,
            ..base.clone()
        },
        GenericHmac {
            signed_content: "{body}".into(),
            ..base.clone()
        },
        GenericHmac {
            signed_content: "{timestamp}".into(),
            ..base.clone()
        },
        GenericHmac {
            signed_content: "{timestamp}.{payload}".into(),
            ..base.clone()
        },
        GenericHmac {
            signed_content: "{timestamp}.{body".into(),
            ..base.clone()
        },
        GenericHmac {
            signed_content: "{id}.{timestamp}.{body}".into(),
            ..base.clone()
        },
        GenericHmac {
            id_header: Some("X-Id".into()),
            ..base.clone()
        },
        GenericHmac {
            signature_header: " ".into(),
            ..base.clone()
        },
    ];
    for config in configs {
        // Reported before the missing timestamp header: config comes first.
        let result = verify(
            &Scheme::Generic(config.clone()),
            &post(&headers, body),
            &[Secret::from_str("k")],
            at(0),
            DEFAULT_TOLERANCE,
        );
        assert!(
            matches!(result, Err(Rejection::InvalidTemplate(_))),
            "{config:?} gave {result:?}"
        );
        assert_eq!(
            result.err().map(|r| r.reason_code()),
            Some("invalid_template")
        );
    }
}

// ---------------------------------------------------------------------------
// Cross-cutting
// ---------------------------------------------------------------------------

#[test]
fn empty_secrets_are_invalid_for_every_scheme() {
    let body = b"{}";
    let schemes = [
        (
            Scheme::Stripe,
            vec![(
                "Stripe-Signature".to_string(),
                sign_stripe(&Secret::from_str("x"), 0, body),
            )],
        ),
        (
            Scheme::PagerDutyV3,
            vec![(
                "X-PagerDuty-Signature".to_string(),
                format!("v1={}", hmac_hex(b"", body)),
            )],
        ),
    ];
    for (scheme, headers) in schemes {
        for secrets in [vec![], vec![Secret::from_str("")]] {
            assert_eq!(
                verify(
                    &scheme,
                    &post(&headers, body),
                    &secrets,
                    at(0),
                    DEFAULT_TOLERANCE
                ),
                Err(Rejection::InvalidSecret)
            );
        }
    }
}

#[test]
fn header_names_are_case_insensitive() {
    let headers: &[(&str, &str)] = &[
        ("WEBHOOK-ID", SW_A_ID),
        ("Webhook-Timestamp", "1649367553"),
        ("webhook-SIGNATURE", SW_A_SIG),
    ];
    assert!(
        verify(
            &Scheme::StandardWebhooks,
            &post(headers, SW_A_BODY),
            &[Secret::from_str(SW_A_SECRET)],
            at(SW_A_TS),
            DEFAULT_TOLERANCE,
        )
        .is_ok()
    );
}

#[test]
fn secrets_and_requests_do_not_leak_in_debug_output() {
    let secret = Secret::from_str("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD");
    assert_eq!(format!("{secret:?}"), "Secret(***)");
    let headers = [("a", "b")];
    let request = post(&headers, b"private body");
    let shown = format!("{request:?}");
    assert!(shown.contains("body_len: 12"), "{shown}");
    assert!(!shown.contains("private"), "{shown}");
    let rejection = Rejection::MalformedHeader("webhook-signature: no v1 signature".into());
    assert_eq!(rejection.reason_code(), "malformed_header");
}

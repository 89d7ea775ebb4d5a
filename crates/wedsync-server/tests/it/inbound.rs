//! Signed webhooks end to end over HTTP: verification, deduplication, storage, errors a
//! sender can act on, and the events API.

use reqwest::Method;
use serde_json::{Value, json};
use wedsync_core::clock::Clock;
use wedsync_core::org::Role;
use wedsync_inbound::{Secret, sign_standard_webhooks, sign_stripe};

use crate::support::{TestApp, spawn_app};

struct Sent {
    status: u16,
    body: Value,
    headers: reqwest::header::HeaderMap,
}

async fn send(
    app: &TestApp,
    path: &str,
    headers: &[(&str, String)],
    content_type: &str,
    body: &str,
) -> Sent {
    let mut req = app
        .client
        .post(format!("{}{}", app.base, path))
        .header("content-type", content_type)
        .body(body.to_owned());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    Sent {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    }
}

async fn source(app: &TestApp, key: &str, body: Value) -> (String, String) {
    let created = app.post(key, "/v1/sources", body).await;
    let b = created.ok(201);
    (
        b["source"]["id"].as_str().expect("id").to_owned(),
        b["secret"].as_str().expect("secret").to_owned(),
    )
}

const STRIPE_EVENT: &str = r#"{"id":"evt_1PKQ","object":"event","type":"payment_intent.succeeded","created":1777625000,"data":{"object":{"id":"pi_3PKQ","object":"payment_intent","amount_received":250000,"currency":"gbp","metadata":{}}}}"#;

fn stripe_headers(app: &TestApp, secret: &str, body: &str) -> Vec<(&'static str, String)> {
    let t = app.clock.now().timestamp();
    vec![(
        "stripe-signature",
        sign_stripe(&Secret::from_str(secret), t, body.as_bytes()),
    )]
}

#[tokio::test]
async fn a_signed_stripe_event_is_stored_once_normalised_and_routed() {
    let app = spawn_app().await;
    let (_, key) = app.org("Lens & Lace").await;
    let (src, secret) = source(
        &app,
        &key,
        json!({"name": "Stripe live", "provider": "stripe", "secret": "whsec_stripe_test"}),
    )
    .await;
    assert_eq!(secret, "whsec_stripe_test");
    let path = format!("/v1/inbound/{src}");

    let first = send(
        &app,
        &path,
        &stripe_headers(&app, &secret, STRIPE_EVENT),
        "application/json",
        STRIPE_EVENT,
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["status"], "accepted");
    let event_id = first.body["event_ids"][0]
        .as_str()
        .expect("event")
        .to_owned();

    // The same delivery again: recognised, nothing created.
    let again = send(
        &app,
        &path,
        &stripe_headers(&app, &secret, STRIPE_EVENT),
        "application/json",
        STRIPE_EVENT,
    )
    .await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["status"], "duplicate");
    assert_eq!(again.body["request_id"], first.body["request_id"]);

    let listed = app.get(&key, "/v1/events?type=payment.completed").await;
    let events = listed.ok(200)["data"].as_array().expect("data").clone();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e["specversion"], "1.0");
    assert_eq!(e["source"], format!("/sources/{src}"));
    assert_eq!(e["subject"], "pi_3PKQ");
    assert_eq!(e["data"]["amount_minor"], 250000);
    assert_eq!(e["data"]["currency"], "GBP");

    let detail = app.get(&key, &format!("/v1/events/{event_id}")).await;
    assert_eq!(
        detail.ok(200)["request"]["body"],
        STRIPE_EVENT,
        "the raw body is kept byte for byte"
    );
    let replay = app
        .call(
            Method::POST,
            &format!("/v1/events/{event_id}/replay"),
            Some(&key),
            None,
        )
        .await;
    assert!(
        replay.ok(202)["job_id"]
            .as_str()
            .expect("job")
            .starts_with("job_")
    );
    let jobs = app.get(&key, "/v1/jobs?kind=event.route").await;
    assert_eq!(
        jobs.ok(200)["data"].as_array().expect("jobs").len(),
        2,
        "one route job, one replay"
    );
}

#[tokio::test]
async fn bad_signatures_and_timestamps_are_401_and_store_nothing() {
    let app = spawn_app().await;
    let (org, key) = app.org("Lens & Lace").await;
    let (src, secret) = source(
        &app,
        &key,
        json!({"name": "Relay", "provider": "standard_webhooks"}),
    )
    .await;
    assert!(secret.starts_with("whsec_"));
    let path = format!("/v1/inbound/{src}");
    let body = r#"{"type":"booking.created","data":{"booking_id":"b1"}}"#;
    let now = app.clock.now().timestamp();
    let signed = |id: &str, t: i64, body: &str, secret: &str| {
        vec![
            ("webhook-id", id.to_owned()),
            ("webhook-timestamp", t.to_string()),
            (
                "webhook-signature",
                sign_standard_webhooks(&Secret::from_str(secret), id, t, body.as_bytes()),
            ),
        ]
    };
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "tampered body",
            signed("msg_1", now, body, &secret),
            r#"{"type":"booking.created","data":{"booking_id":"b2"}}"#,
        ),
        (
            "wrong secret",
            signed("msg_1", now, body, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            body,
        ),
        (
            "stale timestamp",
            signed("msg_1", now - 301, body, &secret),
            body,
        ),
        (
            "future timestamp",
            signed("msg_1", now + 301, body, &secret),
            body,
        ),
        ("missing headers", vec![], body),
    ];
    for (what, headers, sent_body) in cases {
        let reply = send(&app, &path, &headers, "application/json", sent_body).await;
        assert_eq!(reply.status, 401, "{what}: {}", reply.body);
        assert_eq!(
            reply.body["type"], "https://wedsync.dev/problems/unauthorized",
            "{what}"
        );
        assert_eq!(
            reply.body["detail"], "the request's signature could not be verified",
            "{what}: no hint for an attacker"
        );
        assert!(!reply.body.to_string().contains(&secret[6..]));
    }
    assert_eq!(
        app.get(&key, "/v1/events").await.ok(200)["data"],
        json!([]),
        "nothing stored"
    );
    let ok = send(
        &app,
        &path,
        &signed("msg_1", now, body, &secret),
        "application/json",
        body,
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let _ = org;
}

#[tokio::test]
async fn errors_a_sender_can_act_on() {
    let app = spawn_app().await;
    let (_, key) = app.org("Lens & Lace").await;
    let (src, secret) = source(
        &app,
        &key,
        json!({"name": "Stripe", "provider": "stripe", "secret": "whsec_s", "rate_per_minute": 2}),
    )
    .await;
    let path = format!("/v1/inbound/{src}");
    // Unknown or malformed source.
    let unknown = send(
        &app,
        "/v1/inbound/src_0193f0c0000070008000000000000000",
        &[],
        "application/json",
        "{}",
    )
    .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(
        send(&app, "/v1/inbound/nope", &[], "application/json", "{}")
            .await
            .status,
        404
    );
    // Not JSON or a form.
    let xml = send(&app, &path, &[], "application/xml", "<a/>").await;
    assert_eq!(xml.status, 415);
    // Too large (1 MiB default).
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(1024 * 1024));
    assert_eq!(
        send(&app, &path, &[], "application/json", &big)
            .await
            .status,
        413
    );
    // Signed but not a Stripe event: 400 saying what is wrong.
    let junk = "[1,2,3]";
    let bad = send(
        &app,
        &path,
        &stripe_headers(&app, &secret, junk),
        "application/json",
        junk,
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(
        bad.body["detail"]
            .as_str()
            .expect("detail")
            .contains("malformed")
    );
    // Rate limit: 2 a minute, tripled in peak season (May) = 6; the malformed request above
    // used one (rejections before the limiter use none).
    let mut last = None;
    for _ in 0..6 {
        last = Some(
            send(
                &app,
                &path,
                &stripe_headers(&app, &secret, STRIPE_EVENT),
                "application/json",
                STRIPE_EVENT,
            )
            .await,
        );
    }
    let limited = last.expect("sent");
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert_eq!(
        limited.body["type"],
        "https://wedsync.dev/problems/rate-limited"
    );
    let retry_after: i64 = limited.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after));
    app.clock.advance(chrono::TimeDelta::seconds(retry_after));
    let after = send(
        &app,
        &path,
        &stripe_headers(&app, &secret, STRIPE_EVENT),
        "application/json",
        STRIPE_EVENT,
    )
    .await;
    assert_eq!(after.status, 200, "{}", after.body);
}

#[tokio::test]
async fn an_ip_allow_list_and_a_disabled_source_keep_senders_out() {
    let app = spawn_app().await;
    let (_, key) = app.org("Lens & Lace").await;
    let (src, secret) = source(&app, &key, json!({"name": "Stripe", "provider": "stripe", "secret": "whsec_s", "ip_allowlist": ["203.0.113.0/24"]})).await;
    let path = format!("/v1/inbound/{src}");
    let outside = send(
        &app,
        &path,
        &stripe_headers(&app, &secret, STRIPE_EVENT),
        "application/json",
        STRIPE_EVENT,
    )
    .await;
    assert_eq!(outside.status, 403);
    app.patch(
        &key,
        &format!("/v1/sources/{src}"),
        json!({"ip_allowlist": ["127.0.0.0/8"]}),
    )
    .await
    .ok(200);
    let inside = send(
        &app,
        &path,
        &stripe_headers(&app, &secret, STRIPE_EVENT),
        "application/json",
        STRIPE_EVENT,
    )
    .await;
    assert_eq!(inside.status, 200, "{}", inside.body);
    app.patch(
        &key,
        &format!("/v1/sources/{src}"),
        json!({"enabled": false}),
    )
    .await
    .ok(200);
    let disabled = send(
        &app,
        &path,
        &stripe_headers(&app, &secret, STRIPE_EVENT),
        "application/json",
        STRIPE_EVENT,
    )
    .await;
    assert_eq!(disabled.status, 404);
}

#[tokio::test]
async fn rotation_keeps_the_old_secret_working_for_the_grace() {
    let app = spawn_app().await;
    let (_, key) = app.org("Lens & Lace").await;
    let (src, old) = source(&app, &key, json!({"name": "Zap", "provider": "zapier", "generic": {"signature_header": "X-Signature", "prefix": "sha256=", "encoding": "hex", "signed_content": "{body}"}})).await;
    let path = format!("/v1/inbound/{src}");
    let sign = |secret: &str, body: &str| {
        use hmac::{Mac, digest::KeyInit};
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
            .expect("any key length");
        mac.update(body.as_bytes());
        vec![(
            "x-signature",
            format!("sha256={}", hex::encode(mac.finalize().into_bytes())),
        )]
    };
    let rotated = app
        .call(
            Method::POST,
            &format!("/v1/sources/{src}/rotate"),
            Some(&key),
            Some(json!({})),
        )
        .await;
    let new = rotated.ok(200)["secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    assert_ne!(new, old);
    let b1 = r#"{"event":"project.booked","id":"hb_1"}"#;
    let b2 = r#"{"event":"project.booked","id":"hb_2"}"#;
    let b3 = r#"{"event":"project.booked","id":"hb_3"}"#;
    assert_eq!(
        send(&app, &path, &sign(&old, b1), "application/json", b1)
            .await
            .status,
        200,
        "old secret during the grace"
    );
    assert_eq!(
        send(&app, &path, &sign(&new, b2), "application/json", b2)
            .await
            .status,
        200,
        "new secret"
    );
    app.clock.advance(chrono::TimeDelta::hours(24));
    assert_eq!(
        send(&app, &path, &sign(&old, b3), "application/json", b3)
            .await
            .status,
        401,
        "old secret after the grace"
    );
    let events = app.get(&key, "/v1/events?type=booking.created").await;
    assert_eq!(events.ok(200)["data"].as_array().expect("data").len(), 2);
    // Listing sources never shows a secret.
    let listed = app.get(&key, "/v1/sources").await.body.to_string();
    assert!(!listed.contains(&new) && !listed.contains(&old));
}

#[tokio::test]
async fn sources_and_events_are_isolated_and_role_checked() {
    let app = spawn_app().await;
    let (org_a, a) = app.org("Lens & Lace").await;
    let (_, b) = app.org("Petal & Stem").await;
    let (src, secret) = source(
        &app,
        &a,
        json!({"name": "Stripe", "provider": "stripe", "secret": "whsec_s"}),
    )
    .await;
    let sent = send(
        &app,
        &format!("/v1/inbound/{src}"),
        &stripe_headers(&app, &secret, STRIPE_EVENT),
        "application/json",
        STRIPE_EVENT,
    )
    .await;
    let event = sent.body["event_ids"][0]
        .as_str()
        .expect("event")
        .to_owned();
    app.get(&b, &format!("/v1/sources/{src}"))
        .await
        .problem(404, "not-found");
    app.patch(&b, &format!("/v1/sources/{src}"), json!({"enabled": false}))
        .await
        .problem(404, "not-found");
    app.call(
        Method::POST,
        &format!("/v1/sources/{src}/rotate"),
        Some(&b),
        Some(json!({})),
    )
    .await
    .problem(404, "not-found");
    app.get(&b, &format!("/v1/events/{event}"))
        .await
        .problem(404, "not-found");
    app.call(
        Method::POST,
        &format!("/v1/events/{event}/replay"),
        Some(&b),
        None,
    )
    .await
    .problem(404, "not-found");
    assert_eq!(app.get(&b, "/v1/events").await.ok(200)["data"], json!([]));
    let viewer = app.key(&org_a, Role::Viewer).await;
    app.get(&viewer, "/v1/events").await.ok(200);
    app.get(&viewer, "/v1/sources")
        .await
        .problem(403, "forbidden");
    app.post(
        &viewer,
        "/v1/sources",
        json!({"name": "x", "provider": "slack", "secret": "s"}),
    )
    .await
    .problem(403, "forbidden");
    app.post(
        &a,
        "/v1/sources",
        json!({"name": "x", "provider": "stripe"}),
    )
    .await
    .problem(422, "validation");
}

#[tokio::test]
async fn new_events_arrive_on_the_live_stream() {
    let app = spawn_app().await;
    let (_, key) = app.org("Lens & Lace").await;
    let (src, secret) = source(
        &app,
        &key,
        json!({"name": "Stripe", "provider": "stripe", "secret": "whsec_s"}),
    )
    .await;
    let path = format!("/v1/inbound/{src}");
    // An event from before the stream opens is not replayed to it.
    let old = r#"{"id":"evt_old","type":"charge.refunded","created":1777625000,"data":{"object":{"id":"ch_1","amount_refunded":100,"currency":"gbp"}}}"#;
    assert_eq!(
        send(
            &app,
            &path,
            &stripe_headers(&app, &secret, old),
            "application/json",
            old
        )
        .await
        .status,
        200
    );
    let mut stream = app
        .client
        .get(format!("{}/v1/events/stream", app.base))
        .bearer_auth(&key)
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), 200);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/event-stream")
    );
    let sent = send(
        &app,
        &path,
        &stripe_headers(&app, &secret, STRIPE_EVENT),
        "application/json",
        STRIPE_EVENT,
    )
    .await;
    let event_id = sent.body["event_ids"][0]
        .as_str()
        .expect("event")
        .to_owned();
    let mut seen = String::new();
    let deadline = std::time::Duration::from_secs(20);
    while !seen.contains(&format!("id: {event_id}")) {
        let chunk = tokio::time::timeout(deadline, stream.chunk())
            .await
            .expect("in time")
            .expect("read")
            .expect("open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("event: payment.completed"), "{seen}");
    assert!(
        !seen.contains("evt_old") && !seen.contains("payment.refunded"),
        "{seen}"
    );
}

use serde_json::json;
use wedsync_core::org::Role;

use crate::support::spawn_app;

#[tokio::test]
async fn endpoints_are_managed_over_http_with_their_secret_shown_once() {
    let app = spawn_app().await;
    let (org, key) = app.org("Lens & Lace").await;
    let (_, other) = app.org("Petal & Stem").await;

    let created = app
        .post(
            &key,
            "/v1/endpoints",
            json!({
                "url": "https://hooks.example.com/wedsync",
                "description": "CRM",
                "event_types": ["booking.*", "payment.completed"],
                "filter": {"data.amount_minor": {"$gte": 1000}},
                "tags": ["crm"],
                "headers": {"Authorization": "Bearer very-secret"},
                "rate_limit_per_second": 10,
                "timeout_ms": 5000
            }),
        )
        .await;
    let body = created.ok(201).clone();
    let secret = body["secret"].as_str().expect("secret").to_owned();
    assert!(secret.starts_with("whsec_"));
    let id = body["endpoint"]["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("ep_"));
    assert_eq!(body["endpoint"]["header_names"], json!(["Authorization"]));

    for path in ["/v1/endpoints".to_owned(), format!("/v1/endpoints/{id}")] {
        let shown = app.get(&key, &path).await;
        let text = shown.ok(200).to_string();
        assert!(
            !text.contains(&secret[6..]) && !text.contains("very-secret"),
            "{path}"
        );
    }
    let patched = app
        .patch(
            &key,
            &format!("/v1/endpoints/{id}"),
            json!({"enabled": false, "filter": null}),
        )
        .await;
    assert_eq!(patched.ok(200)["enabled"], false);
    assert_eq!(patched.ok(200)["filter"], serde_json::Value::Null);
    assert_eq!(
        patched.ok(200)["disabled_reason"],
        "disabled by an operator"
    );

    let rotated = app
        .post(
            &key,
            &format!("/v1/endpoints/{id}/rotate-secret"),
            json!({}),
        )
        .await;
    let new = rotated.ok(200)["secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    assert_ne!(new, secret);
    assert!(rotated.ok(200)["endpoint"]["previous_secret_expires_at"].is_string());

    // Bad settings are a 422 naming every field.
    let bad = app
        .post(
            &key,
            "/v1/endpoints",
            json!({"url": "ftp://x", "event_types": ["BAD"], "timeout_ms": 5}),
        )
        .await;
    bad.problem(422, "validation");
    let fields: Vec<String> = bad.body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].as_str().unwrap_or_default().to_owned())
        .collect();
    for f in ["url", "event_types[0]", "timeout_ms"] {
        assert!(fields.iter().any(|x| x == f), "{f} in {fields:?}");
    }

    // Other organisations and lesser roles.
    for path in [
        format!("/v1/endpoints/{id}"),
        format!("/v1/endpoints/{id}/stats"),
        format!("/v1/endpoints/{id}/deliveries"),
        format!("/v1/endpoints/{id}/attempts"),
    ] {
        app.get(&other, &path).await.problem(404, "not-found");
    }
    let viewer = app.key(&org, Role::Viewer).await;
    app.get(&viewer, &format!("/v1/endpoints/{id}"))
        .await
        .ok(200);
    app.post(
        &viewer,
        "/v1/endpoints",
        json!({"url": "https://example.com"}),
    )
    .await
    .problem(403, "forbidden");

    app.delete(&key, &format!("/v1/endpoints/{id}"))
        .await
        .ok(204);
    app.get(&key, &format!("/v1/endpoints/{id}"))
        .await
        .problem(404, "not-found");
}

#[tokio::test]
async fn messages_honour_idempotency_keys_and_fan_out_to_subscribers() {
    let app = spawn_app().await;
    let (_, key) = app.org("Lens & Lace").await;
    let ep = app
        .post(
            &key,
            "/v1/endpoints",
            json!({"url": "https://hooks.example.com/a", "event_types": ["invoice.*"]}),
        )
        .await
        .ok(201)["endpoint"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let send = |body: serde_json::Value, idem: &'static str| {
        app.client
            .post(format!("{}/v1/messages", app.base))
            .bearer_auth(&key)
            .header("idempotency-key", idem)
            .json(&body)
            .send()
    };
    let first = send(
        json!({"event_type": "invoice.sent", "data": {"n": 1}}),
        "k1",
    )
    .await
    .expect("send");
    assert_eq!(first.status(), 202);
    let first: serde_json::Value = first.json().await.expect("json");
    let again = send(
        json!({"event_type": "invoice.sent", "data": {"n": 1}}),
        "k1",
    )
    .await
    .expect("send");
    assert_eq!(again.status(), 200);
    let again: serde_json::Value = again.json().await.expect("json");
    assert_eq!(again["id"], first["id"]);
    let clash = send(
        json!({"event_type": "invoice.sent", "data": {"n": 2}}),
        "k1",
    )
    .await
    .expect("send");
    assert_eq!(clash.status(), 409);
    assert_eq!(clash.headers()["content-type"], "application/problem+json");

    let id = first["id"].as_str().expect("id");
    let detail = app.get(&key, &format!("/v1/messages/{id}")).await;
    let deliveries = detail.ok(200)["deliveries"]
        .as_array()
        .expect("deliveries")
        .clone();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0]["endpoint_id"], ep);
    assert_eq!(deliveries[0]["status"], "pending");
    assert_eq!(detail.ok(200)["message"]["payload"]["data"]["n"], 1);

    let listed = app.get(&key, "/v1/messages?event_type=invoice.sent").await;
    assert_eq!(listed.ok(200)["data"].as_array().map(Vec::len), Some(1));
    let test = app
        .post(&key, &format!("/v1/endpoints/{ep}/test"), json!({}))
        .await;
    assert_eq!(test.ok(202)["event_type"], "webhook.test");
    let stats = app.get(&key, &format!("/v1/endpoints/{ep}/stats")).await;
    assert_eq!(stats.ok(200)["pending"], 2);
    let pending = app
        .get(
            &key,
            &format!("/v1/endpoints/{ep}/deliveries?status=pending"),
        )
        .await;
    assert_eq!(pending.ok(200)["data"].as_array().map(Vec::len), Some(2));
    app.get(&key, &format!("/v1/endpoints/{ep}/deliveries?status=lost"))
        .await
        .problem(400, "bad-request");
    let recovered = app
        .post(
            &key,
            &format!("/v1/endpoints/{ep}/recover"),
            json!({"since": "2020-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(recovered.ok(202)["resent"], 0, "nothing has failed yet");
    app.post(
        &key,
        "/v1/messages",
        json!({"event_type": "Not A Type", "data": {}}),
    )
    .await
    .problem(422, "validation");
    app.post(
        &key,
        &format!("/v1/messages/{id}/resend"),
        json!({"endpoint_id": "ep_nope"}),
    )
    .await
    .problem(404, "not-found");
}

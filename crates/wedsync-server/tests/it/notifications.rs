use serde_json::json;
use wedsync_notify::links::{KEY_LABEL, Links};

use crate::support::spawn_app_with;

fn settings() -> wedsync_server::HttpSettings {
    wedsync_server::HttpSettings {
        public_url: Some("https://hub.example".into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn providers_and_templates_are_checked_when_saved_and_secrets_never_shown() {
    let app = spawn_app_with(settings()).await;
    let (_, key) = app.org("Lens & Lace").await;
    let bad = app
        .post(
            &key,
            "/v1/notification-providers",
            json!({ "kind": "mailgun", "config": { "region": "eu" }, "secrets": {} }),
        )
        .await;
    let problem = bad.problem(422, "validation").body.clone();
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert!(
        fields.contains(&"config.domain")
            && fields.contains(&"secrets.api_key")
            && fields.contains(&"config.region"),
        "{problem}"
    );
    app.post(
        &key,
        "/v1/notification-providers",
        json!({ "kind": "carrier-pigeon" }),
    )
    .await
    .problem(422, "validation");
    let created = app
        .post(
            &key,
            "/v1/notification-providers",
            json!({ "kind": "resend", "config": { "from": "hello@lenslace.example" }, "secrets": { "api_key": "re_supersecret" } }),
        )
        .await;
    let body = created.ok(201).clone();
    assert_eq!(body["channel"], "email");
    assert_eq!(body["secrets"], json!(["api_key"]));
    let listed = app.get(&key, "/v1/notification-providers").await;
    assert!(!listed.ok(200).to_string().contains("re_supersecret"));

    let broken = app
        .call(reqwest::Method::PUT, "/v1/templates", Some(&key), Some(json!({ "name": "welcome", "channel": "email", "subject": "Hi", "text": "ok\n{% if %}" })))
        .await;
    let problem = broken.problem(422, "validation").body.clone();
    assert_eq!(problem["errors"][0]["field"], "text");
    assert!(
        problem["errors"][0]["message"]
            .as_str()
            .expect("message")
            .contains("line 2"),
        "{problem}"
    );
    let saved = app
        .call(
            reqwest::Method::PUT,
            "/v1/templates",
            Some(&key),
            Some(json!({ "name": "welcome", "channel": "email", "subject": "Welcome {{ couple.names }}", "text": "{{ couple.days_until }} days until {{ couple.wedding_date_long }}" })),
        )
        .await;
    assert_eq!(saved.ok(200)["name"], "welcome");
    let preview = app
        .post(&key, "/v1/templates/preview", json!({ "subject": "Welcome {{ couple.names }}", "text": "At {{ couple.venue.name }}, {{ vendor.name }}" }))
        .await;
    assert_eq!(preview.ok(200)["subject"], "Welcome Alex & Sam");
    assert_eq!(preview.ok(200)["text"], "At Kew Gardens, Lens & Lace");
}

#[tokio::test]
async fn notifications_are_queued_listed_with_history_and_unsubscribed_in_one_click() {
    let app = spawn_app_with(settings()).await;
    let (_, key) = app.org("Lens & Lace").await;
    let send = |k: &str| {
        app.call(
            reqwest::Method::POST,
            "/v1/notifications",
            Some(&key),
            Some(json!({ "channel": "email", "to": { "email": "Alex@Example.com" }, "subject": "Hi", "text": k })),
        )
    };
    let created = send("one").await;
    let n = created.ok(202).clone();
    assert_eq!(n["status"], "queued");
    let id = n["id"].as_str().expect("id").to_owned();
    let detail = app.get(&key, &format!("/v1/notifications/{id}")).await;
    assert_eq!(detail.ok(200)["history"][0]["status"], "queued");
    app.post(
        &key,
        "/v1/notifications",
        json!({ "channel": "sms", "to": { "email": "a@b.example" }, "text": "x" }),
    )
    .await
    .problem(422, "validation");
    app.post(
        &key,
        "/v1/notifications",
        json!({ "channel": "email", "to": { "email": "a@b.example" }, "text": "no subject" }),
    )
    .await
    .problem(422, "validation");

    // One-click unsubscribe (RFC 8058): a signed link; a forged one is a 404.
    let links = Links::new(
        "https://hub.example",
        app.store.derived_key(KEY_LABEL).expect("key"),
    );
    let url = links.unsubscribe(&id);
    let path = url.strip_prefix("https://hub.example").expect("path");
    let forged = format!("/u/{id}/AAAAAAAAAAAAAAAAAAAAAA");
    let r = app
        .client
        .post(format!("{}{forged}", app.base))
        .form(&[("List-Unsubscribe", "One-Click")])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 404);
    let page = app
        .client
        .get(format!("{}{path}", app.base))
        .send()
        .await
        .expect("get");
    assert_eq!(page.status(), 200, "a GET only shows a button");
    let prefs = app
        .get(&key, "/v1/recipients/email:alex@example.com/preferences")
        .await;
    assert_eq!(prefs.ok(200)["unsubscribed"], json!([]));
    let r = app
        .client
        .post(format!("{}{path}", app.base))
        .form(&[("List-Unsubscribe", "One-Click")])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    let prefs = app
        .get(&key, "/v1/recipients/email:alex@example.com/preferences")
        .await;
    assert_eq!(prefs.ok(200)["unsubscribed"], json!(["email"]));

    // Click redirects only go where the signature says.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let click = links.click(&id, "https://studio.example/gallery");
    let r = no_redirects
        .get(click.replace("https://hub.example", &app.base))
        .send()
        .await
        .expect("click");
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "https://studio.example/gallery");
    let tampered = click
        .replace("gallery", "evil")
        .replace("https://hub.example", &app.base);
    assert_eq!(
        no_redirects
            .get(tampered)
            .send()
            .await
            .expect("click")
            .status(),
        404
    );
    let detail = app.get(&key, &format!("/v1/notifications/{id}")).await;
    assert!(detail.ok(200)["notification"]["clicked_at"].is_string());
    let pixel = app
        .client
        .get(
            links
                .open_pixel(&id)
                .replace("https://hub.example", &app.base),
        )
        .send()
        .await
        .expect("pixel");
    assert_eq!(pixel.headers()["content-type"], "image/gif");

    let listed = app.get(&key, "/v1/notifications?status=queued").await;
    assert_eq!(listed.ok(200)["data"].as_array().expect("data").len(), 1);
    let stats = app.get(&key, "/v1/notifications/stats").await;
    assert_eq!(stats.ok(200)[0]["count"], 1);
}

#[tokio::test]
async fn alerts_are_raised_acknowledged_and_settings_are_validated() {
    let app = spawn_app_with(settings()).await;
    let (_, key) = app.org("Lens & Lace").await;
    let bad = app
        .call(
            reqwest::Method::PUT,
            "/v1/notification-settings",
            Some(&key),
            Some(json!({ "escalation": [{ "after_minutes": 30, "channel": "email", "to": {} }, { "after_minutes": 15, "channel": "sms", "to": { "phone": "+447700900123" } }] })),
        )
        .await;
    let problem = bad.problem(422, "validation").body.clone();
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert!(
        fields.contains(&"escalation[0].to") && fields.contains(&"escalation"),
        "{problem}"
    );
    let ok = app
        .call(
            reqwest::Method::PUT,
            "/v1/notification-settings",
            Some(&key),
            Some(json!({ "alert_routes": [{ "channel": "slack" }] })),
        )
        .await;
    assert_eq!(ok.ok(200)["alert_routes"][0]["channel"], "slack");
    let raised = app
        .post(
            &key,
            "/v1/alerts",
            json!({ "summary": "Stripe payouts failing", "severity": "error" }),
        )
        .await;
    let body = raised.ok(201).clone();
    assert_eq!(body["notifications"].as_array().expect("ids").len(), 1);
    let id = body["alert"]["id"].as_str().expect("id").to_owned();
    let acked = app
        .post(&key, &format!("/v1/alerts/{id}/acknowledge"), json!({}))
        .await;
    assert_eq!(acked.ok(200)["status"], "acknowledged");
    let resolved = app
        .post(&key, &format!("/v1/alerts/{id}/resolve"), json!({}))
        .await;
    assert_eq!(resolved.ok(200)["status"], "resolved");
    app.post(&key, "/v1/alerts/alr_nope/acknowledge", json!({}))
        .await
        .problem(404, "not-found");
}

/// Slack's v0 signature over `v0:{timestamp}:{body}`.
fn slack_signature(secret: &str, timestamp: i64, body: &str) -> String {
    use hmac::{Mac, digest::KeyInit};
    let mut mac =
        <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("v0:{timestamp}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn the_acknowledge_button_in_slack_acknowledges_the_alert_through_the_inbound_gateway() {
    use wedsync_core::clock::Clock as _;
    use wedsync_store::worker::JobHandler as _;
    let app = spawn_app_with(settings()).await;
    let (_, key) = app.org("Lens & Lace").await;
    let created = app
        .post(&key, "/v1/sources", json!({ "name": "Slack app", "provider": "slack", "secret": "8f742231b10e8888abcd99yyyzzz85a5" }))
        .await;
    let source = created.ok(201)["source"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let raised = app
        .post(
            &key,
            "/v1/alerts",
            json!({ "summary": "Florist van broke down", "severity": "critical" }),
        )
        .await;
    let alert = raised.ok(201)["alert"]["id"]
        .as_str()
        .expect("id")
        .to_owned();

    let payload = json!({
        "type": "block_actions",
        "user": { "id": "U123", "username": "jo" },
        "trigger_id": "13345224609.738474920.8088930838d88f008e0",
        "actions": [{ "action_id": "acknowledge", "value": alert, "action_ts": "1777625000.000100" }]
    });
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &payload.to_string())
        .finish();
    let ts = app.clock.now().timestamp();
    let r = app
        .client
        .post(format!("{}/v1/inbound/{source}", app.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", ts.to_string())
        .header(
            "x-slack-signature",
            slack_signature("8f742231b10e8888abcd99yyyzzz85a5", ts, &body),
        )
        .body(body)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let route = wedsync_store::inbound::route_handler(app.store.clone());
    let jobs = app
        .store
        .claim(
            "test",
            wedsync_store::inbound::ROUTE_KIND,
            10,
            chrono::TimeDelta::minutes(1),
        )
        .await
        .expect("claim");
    assert_eq!(jobs.len(), 1);
    for job in jobs {
        route.run(job).await.expect("route");
    }
    let got = app.get(&key, &format!("/v1/alerts/{alert}")).await;
    assert_eq!(got.ok(200)["status"], "acknowledged");
    assert_eq!(got.ok(200)["acknowledged_by"], "slack:jo");
}

#[tokio::test]
async fn the_inbox_stream_delivers_stored_messages_and_resumes_after_the_last_one_seen() {
    use wedsync_store::worker::JobHandler as _;
    let app = spawn_app_with(settings()).await;
    let (_, key) = app.org("Lens & Lace").await;
    let send = |text: &'static str| {
        app.post(
            &key,
            "/v1/notifications",
            json!({ "channel": "in_app", "to": { "id": "mem_owner" }, "subject": "Enquiry", "text": text }),
        )
    };
    let first = send("first").await.ok(202)["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let second = send("second").await.ok(202)["id"]
        .as_str()
        .expect("id")
        .to_owned();
    // The worker of some node stores them (delivered).
    let notifier = wedsync_notify::worker::Notifier::new(
        app.store.clone(),
        wedsync_delivery::ssrf::GuardedClient::new(Default::default(), Default::default())
            .expect("client"),
        wedsync_notify::email::SmtpPool::new(Default::default()),
        None,
        None,
        Default::default(),
        None,
    )
    .expect("notifier");
    let handler = wedsync_notify::worker::send_handler(notifier);
    for job in app
        .store
        .claim(
            "test",
            wedsync_store::notify::SEND_KIND,
            10,
            chrono::TimeDelta::minutes(1),
        )
        .await
        .expect("claim")
    {
        handler.run(job).await.expect("send");
    }
    let inbox = app
        .get(&key, "/v1/inbox?recipient=mem_owner&unread=true")
        .await;
    assert_eq!(inbox.ok(200)["data"].as_array().expect("data").len(), 2);

    // A client that saw nothing yet resumes from the beginning and gets both, in order.
    let read_events = |last: Option<String>| {
        let mut req = app
            .client
            .get(format!("{}/v1/inbox/stream?recipient=mem_owner", app.base))
            .bearer_auth(&key);
        if let Some(last) = last {
            req = req.header("last-event-id", last);
        }
        async move {
            let mut resp = req.send().await.expect("stream");
            assert_eq!(resp.headers()["content-type"], "text/event-stream");
            let mut text = String::new();
            while text.matches("data:").count() < 1 {
                let chunk = resp.chunk().await.expect("chunk").expect("more");
                text.push_str(&String::from_utf8_lossy(&chunk));
            }
            text
        }
    };
    let text = read_events(Some("0/".into())).await;
    assert!(text.contains(&first), "{text}");
    let last_id = text
        .lines()
        .find_map(|l| l.strip_prefix("id:"))
        .expect("an id")
        .trim()
        .to_owned();
    let text = read_events(Some(last_id)).await;
    assert!(
        text.contains(&second) && !text.contains(&first),
        "resumes after the last seen: {text}"
    );
}

#[tokio::test]
async fn a_bulk_send_with_an_idempotency_key_is_repeat_safe() {
    let app = spawn_app_with(settings()).await;
    let (_, key) = app.org("Lens & Lace").await;
    let send = |body: serde_json::Value| {
        app.client
            .post(format!("{}/v1/notifications/bulk", app.base))
            .bearer_auth(&key)
            .header("idempotency-key", "open-day-2027")
            .json(&body)
            .send()
    };
    let body = |second: &str| {
        json!({
            "message": { "channel": "email", "subject": "Open day", "text": "Hi" },
            "recipients": [ { "to": { "email": "a@example.com" } }, { "to": { "email": second } } ]
        })
    };
    let first = send(body("b@example.com")).await.expect("send");
    assert_eq!(first.status(), 202);
    let first: serde_json::Value = first.json().await.expect("json");
    let again = send(body("b@example.com")).await.expect("send");
    assert_eq!(again.status(), 200, "nothing new was created");
    let again: serde_json::Value = again.json().await.expect("json");
    assert_eq!(again["ids"], first["ids"]);
    let clash = send(body("c@example.com")).await.expect("send");
    assert_eq!(clash.status(), 409);
    assert_eq!(clash.headers()["content-type"], "application/problem+json");
}

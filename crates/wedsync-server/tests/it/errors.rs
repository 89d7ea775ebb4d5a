use reqwest::Method;
use serde_json::json;

use crate::support::{couple_body, spawn_app, spawn_app_with};

#[tokio::test]
async fn malformed_json_is_400() {
    let app = spawn_app().await;
    let (_, key) = app.org("Lens & Lace").await;
    let reply = app
        .post_raw(
            &key,
            "/v1/couples",
            "application/json",
            "{\"partners\": [".into(),
        )
        .await;
    reply.problem(400, "malformed-json");
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let app = spawn_app().await;
    let (_, key) = app.org("Lens & Lace").await;
    let reply = app
        .post_raw(
            &key,
            "/v1/couples",
            "text/plain",
            couple_body("2027-06-12").to_string(),
        )
        .await;
    reply.problem(415, "unsupported-media-type");
}

#[tokio::test]
async fn oversized_body_is_413_and_stores_nothing() {
    let app = spawn_app_with(wedsync_server::HttpSettings {
        body_limit: 4096,
        ..Default::default()
    })
    .await;
    let (org, key) = app.org("Lens & Lace").await;
    let mut body = couple_body("2027-06-12");
    body["notes"] = json!("x".repeat(8000));
    let reply = app.post(&key, "/v1/couples", body).await;
    reply.problem(413, "payload-too-large");
    let page = app
        .store
        .list_couples(&org, &Default::default(), &Default::default())
        .await
        .expect("list");
    assert!(page.data.is_empty());
}

#[tokio::test]
async fn unknown_route_and_wrong_method() {
    let app = spawn_app().await;
    app.call(Method::GET, "/v1/weddings", None, None)
        .await
        .problem(404, "no-route");
    app.call(Method::PUT, "/v1/couples", None, None)
        .await
        .problem(405, "method-not-allowed");
}

#[tokio::test]
async fn wrong_shape_is_422_naming_the_field() {
    let app = spawn_app().await;
    let (_, key) = app.org("Lens & Lace").await;
    let reply = app
        .post(
            &key,
            "/v1/couples",
            json!({"partners": [], "wedding_date": "12/06/2027"}),
        )
        .await;
    reply.problem(422, "invalid-body");
    assert!(
        reply.body["detail"]
            .as_str()
            .expect("detail")
            .contains("wedding_date"),
        "{}",
        reply.body
    );
    let reply = app
        .post(
            &key,
            "/v1/couples",
            json!({"partners": [], "wedding_date": "2027-06-12", "colour": "blue"}),
        )
        .await;
    reply.problem(422, "invalid-body");
    assert!(
        reply.body["detail"]
            .as_str()
            .expect("detail")
            .contains("colour")
    );
}

#[tokio::test]
async fn validation_lists_every_bad_field_and_stores_nothing() {
    let app = spawn_app().await;
    let (org, key) = app.org("Lens & Lace").await;
    let reply = app
        .post(
            &key,
            "/v1/couples",
            json!({
                "partners": [{"name": "Ana", "email": "nope"}, {"name": " "}],
                "wedding_date": "2027-06-12",
                "time_zone": "Mars/Olympus"
            }),
        )
        .await;
    reply.problem(422, "validation");
    let fields: Vec<&str> = reply.body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].as_str().expect("field"))
        .collect();
    assert_eq!(
        fields,
        [
            "partners[0].email",
            "partners[1].name",
            "partners[1].preferred_channel",
            "time_zone"
        ]
    );
    let audit = app
        .store
        .audit_entries(&org, None, 100)
        .await
        .expect("audit");
    assert_eq!(audit.len(), 2, "only the org and key creation are audited");
}

#[tokio::test]
async fn bad_query_parameters_are_400() {
    let app = spawn_app().await;
    let (_, key) = app.org("Lens & Lace").await;
    app.get(&key, "/v1/couples?wedding_from=June")
        .await
        .problem(400, "bad-request");
    app.get(&key, "/v1/couples?limit=0")
        .await
        .problem(400, "bad-request");
    app.get(&key, "/v1/bookings?status=maybe")
        .await
        .problem(400, "bad-request");
}

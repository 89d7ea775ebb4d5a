//! Organisation A's key must get 404 for B's objects, on every route that takes an id, for
//! reads, updates and deletes, and B's objects must come out untouched.

use reqwest::Method;
use serde_json::json;
use wedsync_core::org::Role;

use crate::support::{booking_body, spawn_app};

#[tokio::test]
async fn another_organisations_objects_are_404_on_every_route() {
    let app = spawn_app().await;
    let (_, a) = app.org("Lens & Lace").await;
    let (org_b, b) = app.org("Petal & Stem").await;
    let couple = app.couple(&b, "2027-06-12").await;
    let booking = app
        .booking(&b, &couple, "2027-06-12T10:00:00Z", "2027-06-12T18:00:00Z")
        .await;
    let member = app
        .post(
            &b,
            "/v1/members",
            json!({"email": "bea@example.com", "name": "Bea", "role": "editor"}),
        )
        .await;
    let member = member.ok(201)["id"].as_str().expect("id").to_owned();
    let b_viewer = app.key(&org_b, Role::Viewer).await;
    let keys = app.get(&b, "/v1/api-keys").await;
    let b_key = keys
        .body
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["role"] == "viewer")
        .expect("viewer")["id"]
        .as_str()
        .expect("id")
        .to_owned();

    let attempts = [
        (Method::GET, format!("/v1/couples/{couple}"), None),
        (
            Method::PATCH,
            format!("/v1/couples/{couple}"),
            Some(json!({"notes": "mine"})),
        ),
        (Method::DELETE, format!("/v1/couples/{couple}"), None),
        (Method::GET, format!("/v1/bookings/{booking}"), None),
        (
            Method::PATCH,
            format!("/v1/bookings/{booking}"),
            Some(json!({"status": "cancelled"})),
        ),
        (Method::DELETE, format!("/v1/bookings/{booking}"), None),
        (Method::GET, format!("/v1/members/{member}"), None),
        (
            Method::PATCH,
            format!("/v1/members/{member}"),
            Some(json!({"role": "viewer"})),
        ),
        (Method::DELETE, format!("/v1/members/{member}"), None),
        (Method::DELETE, format!("/v1/api-keys/{b_key}"), None),
    ];
    // The answer for another organisation's object is exactly the answer for an object that
    // does not exist at all.
    for (method, path, body) in attempts {
        let reply = app
            .call(method.clone(), &path, Some(&a), body.clone())
            .await;
        reply.problem(404, "not-found");
        let kind = path.split('/').nth(2).expect("kind");
        let ghost = path.replace(
            &path[path.rfind('_').expect("id") + 1..],
            "0193f0c0000070008000000000000000",
        );
        let ghost_reply = app.call(method.clone(), &ghost, Some(&a), body).await;
        assert_eq!(
            reply.body, ghost_reply.body,
            "{method} {kind}: the answers must not differ"
        );
    }

    // Lists never show B's objects, and a booking cannot point at B's couple.
    assert_eq!(app.get(&a, "/v1/couples").await.body["data"], json!([]));
    assert_eq!(app.get(&a, "/v1/bookings").await.body["data"], json!([]));
    assert_eq!(
        app.get(&a, &format!("/v1/bookings?couple_id={couple}"))
            .await
            .body["data"],
        json!([])
    );
    let reply = app
        .post(
            &a,
            "/v1/bookings",
            booking_body(&couple, "2027-06-12T10:00:00Z", "2027-06-12T11:00:00Z"),
        )
        .await;
    reply.problem(422, "validation");
    assert_eq!(reply.body["errors"][0]["field"], "couple_id");

    // B's objects are untouched.
    let c = app.get(&b, &format!("/v1/couples/{couple}")).await;
    assert_eq!(c.ok(200)["notes"], "ceremony at the Temperate House");
    assert_eq!(
        app.get(&b, &format!("/v1/bookings/{booking}"))
            .await
            .ok(200)["status"],
        "confirmed"
    );
    assert_eq!(
        app.get(&b, &format!("/v1/members/{member}")).await.ok(200)["role"],
        "editor"
    );
    app.get(&b_viewer, "/v1/couples").await.ok(200);
    let org = app.get(&a, "/v1/organization").await;
    assert_eq!(org.ok(200)["name"], "Lens & Lace");
}

#[tokio::test]
async fn malformed_ids_are_404_too() {
    let app = spawn_app().await;
    let (_, a) = app.org("Lens & Lace").await;
    for path in [
        "/v1/couples/123",
        "/v1/couples/bkg_0193f0c0000070008000000000000000",
        "/v1/bookings/%27%20OR%201=1",
        "/v1/members/x",
    ] {
        app.get(&a, path).await.problem(404, "not-found");
    }
}

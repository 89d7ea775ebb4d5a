use reqwest::Method;
use serde_json::json;
use wedsync_core::org::Role;

use crate::support::{booking_body, couple_body, spawn_app};

#[tokio::test]
async fn missing_malformed_unknown_and_revoked_keys_are_401() {
    let app = spawn_app().await;
    let (org, key) = app.org("Lens & Lace").await;
    let reply = app.call(Method::GET, "/v1/couples", None, None).await;
    reply.problem(401, "unauthorized");
    assert_eq!(
        reply
            .headers
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    app.call(Method::GET, "/v1/couples", Some("not-a-key"), None)
        .await
        .problem(401, "unauthorized");
    app.call(Method::GET, "/v1/couples", Some("wsk_short"), None)
        .await
        .problem(401, "unauthorized");
    let unknown = format!("wsk_{}", "A".repeat(40));
    app.call(Method::GET, "/v1/couples", Some(&unknown), None)
        .await
        .problem(401, "unauthorized");
    let resp = app
        .client
        .get(format!("{}/v1/couples", app.base))
        .header("authorization", format!("Basic {key}"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 401);

    // Revoked: works before, 401 after, with the same answer as an unknown key.
    let editor = app.key(&org, Role::Editor).await;
    app.get(&editor, "/v1/couples").await.ok(200);
    let keys = app.get(&key, "/v1/api-keys").await;
    let editor_id = keys
        .ok(200)
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["role"] == "editor")
        .expect("editor")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let revoked = app.delete(&key, &format!("/v1/api-keys/{editor_id}")).await;
    assert!(revoked.ok(200)["revoked_at"].is_string());
    let reply = app.get(&editor, "/v1/couples").await;
    reply.problem(401, "unauthorized");
    assert_eq!(reply.body["detail"], "the API key is not valid");
}

#[tokio::test]
async fn keys_are_stored_hashed_and_shown_once() {
    let app = spawn_app().await;
    let (_, key) = app.org("Lens & Lace").await;
    let created = app
        .post(
            &key,
            "/v1/api-keys",
            json!({"name": "Zapier", "role": "editor"}),
        )
        .await;
    let body = created.ok(201);
    let secret = body["secret"].as_str().expect("secret");
    assert!(secret.starts_with("wsk_") && secret.len() == 44);
    assert_eq!(body["key"]["prefix"], &secret[..12]);
    let listed = app.get(&key, "/v1/api-keys").await;
    let text = listed.body.to_string();
    assert!(
        !text.contains(secret),
        "a listing must never contain a secret"
    );
    assert!(!text.contains(&key[4..]), "nor the caller's own");
    // The audit log records the key's creation without its secret.
    let audit = app.get(&key, "/v1/audit-log").await;
    assert!(!audit.body.to_string().contains(&secret[4..]));
}

#[tokio::test]
async fn last_used_is_recorded_with_the_clock() {
    let app = spawn_app().await;
    let (_, key) = app.org("Lens & Lace").await;
    app.get(&key, "/v1/organization").await.ok(200);
    let keys = app.get(&key, "/v1/api-keys").await;
    assert_eq!(keys.body[0]["last_used_at"], "2026-05-01T09:00:00Z");
    app.clock.advance(chrono::Duration::minutes(5));
    app.get(&key, "/v1/organization").await.ok(200);
    let keys = app.get(&key, "/v1/api-keys").await;
    assert_eq!(keys.body[0]["last_used_at"], "2026-05-01T09:05:00Z");
}

#[tokio::test]
async fn a_viewer_reads_but_cannot_write() {
    let app = spawn_app().await;
    let (org, owner) = app.org("Lens & Lace").await;
    let couple = app.couple(&owner, "2027-06-12").await;
    let booking = app
        .booking(
            &owner,
            &couple,
            "2027-06-12T10:00:00Z",
            "2027-06-12T18:00:00Z",
        )
        .await;
    let viewer = app.key(&org, Role::Viewer).await;
    for path in [
        "/v1/organization",
        "/v1/couples",
        "/v1/bookings",
        "/v1/members",
    ] {
        app.get(&viewer, path).await.ok(200);
    }
    app.get(&viewer, &format!("/v1/couples/{couple}"))
        .await
        .ok(200);
    app.get(&viewer, &format!("/v1/bookings/{booking}"))
        .await
        .ok(200);
    let writes = [
        (
            Method::POST,
            "/v1/couples".to_owned(),
            Some(couple_body("2027-07-01")),
        ),
        (
            Method::PATCH,
            format!("/v1/couples/{couple}"),
            Some(json!({"notes": "x"})),
        ),
        (Method::DELETE, format!("/v1/couples/{couple}"), None),
        (
            Method::POST,
            "/v1/bookings".to_owned(),
            Some(booking_body(
                &couple,
                "2027-06-12T10:00:00Z",
                "2027-06-12T11:00:00Z",
            )),
        ),
        (
            Method::PATCH,
            format!("/v1/bookings/{booking}"),
            Some(json!({"status": "cancelled"})),
        ),
        (Method::DELETE, format!("/v1/bookings/{booking}"), None),
        (
            Method::PATCH,
            "/v1/organization".to_owned(),
            Some(json!({"name": "Mine now"})),
        ),
        (
            Method::POST,
            "/v1/members".to_owned(),
            Some(json!({"email": "v@example.com", "name": "V", "role": "viewer"})),
        ),
        (
            Method::POST,
            "/v1/api-keys".to_owned(),
            Some(json!({"name": "k", "role": "viewer"})),
        ),
        (Method::GET, "/v1/api-keys".to_owned(), None),
        (Method::GET, "/v1/audit-log".to_owned(), None),
    ];
    for (method, path, body) in writes {
        let reply = app.call(method.clone(), &path, Some(&viewer), body).await;
        assert_eq!(reply.status, 403, "{method} {path}: {}", reply.body);
        reply.problem(403, "forbidden");
    }
    // Nothing changed.
    assert_eq!(
        app.get(&owner, &format!("/v1/couples/{couple}")).await.body["notes"],
        "ceremony at the Temperate House"
    );
    assert_eq!(
        app.get(&owner, &format!("/v1/bookings/{booking}"))
            .await
            .body["status"],
        "confirmed"
    );
}

#[tokio::test]
async fn roles_cannot_escalate() {
    let app = spawn_app().await;
    let (org, _) = app.org("Lens & Lace").await;
    let admin = app.key(&org, Role::Admin).await;
    let editor = app.key(&org, Role::Editor).await;
    // An admin cannot mint an owner key, nor add an owner, nor change the tier.
    app.post(
        &admin,
        "/v1/api-keys",
        json!({"name": "k", "role": "owner"}),
    )
    .await
    .problem(403, "forbidden");
    app.post(
        &admin,
        "/v1/members",
        json!({"email": "o@example.com", "name": "O", "role": "owner"}),
    )
    .await
    .problem(403, "forbidden");
    app.patch(&admin, "/v1/organization", json!({"tier": "enterprise"}))
        .await
        .problem(403, "forbidden");
    app.patch(
        &admin,
        "/v1/organization",
        json!({"name": "Lens & Lace Studio"}),
    )
    .await
    .ok(200);
    // An editor manages couples but not the team.
    app.post(&editor, "/v1/couples", couple_body("2027-06-12"))
        .await
        .ok(201);
    app.post(
        &editor,
        "/v1/members",
        json!({"email": "e@example.com", "name": "E", "role": "viewer"}),
    )
    .await
    .problem(403, "forbidden");
}

#[tokio::test]
async fn members_keep_an_owner_and_unique_emails() {
    let app = spawn_app().await;
    let (_, owner) = app.org("Lens & Lace").await;
    let m = app
        .post(
            &owner,
            "/v1/members",
            json!({"email": "Jo@Example.com", "name": "Jo", "role": "owner"}),
        )
        .await;
    let jo = m.ok(201)["id"].as_str().expect("id").to_owned();
    assert_eq!(m.body["email"], "jo@example.com");
    app.post(
        &owner,
        "/v1/members",
        json!({"email": "jo@example.com", "name": "Jo 2", "role": "viewer"}),
    )
    .await
    .problem(409, "conflict");
    app.patch(
        &owner,
        &format!("/v1/members/{jo}"),
        json!({"role": "admin"}),
    )
    .await
    .problem(409, "conflict");
    app.delete(&owner, &format!("/v1/members/{jo}"))
        .await
        .problem(409, "conflict");
    app.post(
        &owner,
        "/v1/members",
        json!({"email": "sam@example.com", "name": "Sam", "role": "owner"}),
    )
    .await
    .ok(201);
    app.patch(
        &owner,
        &format!("/v1/members/{jo}"),
        json!({"role": "admin"}),
    )
    .await
    .ok(200);
    let audit = app.get(&owner, "/v1/audit-log?limit=1").await;
    assert_eq!(audit.ok(200)["data"][0]["action"], "member.update");
    assert_eq!(audit.body["data"][0]["before"]["role"], "owner");
    assert_eq!(audit.body["data"][0]["after"]["role"], "admin");
}

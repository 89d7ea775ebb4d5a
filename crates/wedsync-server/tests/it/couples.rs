use serde_json::json;

use crate::support::{couple_body, spawn_app};

#[tokio::test]
async fn create_read_update_delete() {
    let app = spawn_app().await;
    let (_, key) = app.org("Lens & Lace").await;
    let created = app
        .post(&key, "/v1/couples", couple_body("2027-06-12"))
        .await;
    let c = created.ok(201);
    let id = c["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("cpl_"));
    assert_eq!(
        c["time_zone"], "Europe/London",
        "defaults to the organisation's zone"
    );
    assert_eq!(c["partners"][1]["phone"], "+447700900123");
    assert_eq!(c["venue"]["latitude"], 51.4787);

    let got = app.get(&key, &format!("/v1/couples/{id}")).await;
    assert_eq!(got.ok(200), c);

    let patched = app
        .patch(
            &key,
            &format!("/v1/couples/{id}"),
            json!({"notes": null, "venue": {"name": "Syon Park"}, "time_zone": "Europe/Dublin"}),
        )
        .await;
    let p = patched.ok(200);
    assert_eq!(p["notes"], serde_json::Value::Null);
    assert_eq!(p["venue"]["name"], "Syon Park");
    assert_eq!(p["venue"]["latitude"], serde_json::Value::Null);
    assert_eq!(p["time_zone"], "Europe/Dublin");
    assert_eq!(
        p["partners"], c["partners"],
        "absent fields stay as they were"
    );

    app.delete(&key, &format!("/v1/couples/{id}")).await.ok(204);
    app.get(&key, &format!("/v1/couples/{id}"))
        .await
        .problem(404, "not-found");
}

#[tokio::test]
async fn paging_and_date_filters() {
    let app = spawn_app().await;
    let (_, key) = app.org("Lens & Lace").await;
    for day in 1..=7 {
        app.couple(&key, &format!("2027-06-{day:02}")).await;
    }
    let mut seen = Vec::new();
    let mut path = "/v1/couples?limit=3".to_owned();
    loop {
        let page = app.get(&key, &path).await;
        let body = page.ok(200);
        seen.extend(
            body["data"]
                .as_array()
                .expect("data")
                .iter()
                .map(|c| c["wedding_date"].as_str().expect("d").to_owned()),
        );
        match body["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/couples?limit=3&after={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7);
    assert_eq!(seen.first().map(String::as_str), Some("2027-06-01"));
    let filtered = app
        .get(
            &key,
            "/v1/couples?wedding_from=2027-06-03&wedding_to=2027-06-05",
        )
        .await;
    let dates: Vec<_> = filtered.ok(200)["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|c| c["wedding_date"].clone())
        .collect();
    assert_eq!(
        dates,
        [
            json!("2027-06-03"),
            json!("2027-06-04"),
            json!("2027-06-05")
        ]
    );
}

#[tokio::test]
async fn a_couple_with_bookings_cannot_be_deleted() {
    let app = spawn_app().await;
    let (_, key) = app.org("Lens & Lace").await;
    let couple = app.couple(&key, "2027-06-12").await;
    let booking = app
        .booking(
            &key,
            &couple,
            "2027-06-12T10:00:00Z",
            "2027-06-12T18:00:00Z",
        )
        .await;
    app.delete(&key, &format!("/v1/couples/{couple}"))
        .await
        .problem(409, "conflict");
    app.delete(&key, &format!("/v1/bookings/{booking}"))
        .await
        .ok(204);
    app.delete(&key, &format!("/v1/couples/{couple}"))
        .await
        .ok(204);
}

/// The clock starts on 1 May 2026. A wedding on 20 May is 19 days away.
#[tokio::test]
async fn moving_a_close_wedding_needs_confirmation_and_is_audited() {
    let app = spawn_app().await;
    let (org, key) = app.org("Lens & Lace").await;
    let id = app.couple(&key, "2026-05-20").await;
    let path = format!("/v1/couples/{id}");

    let refused = app
        .patch(
            &key,
            &path,
            json!({"wedding_date": "2026-05-27", "notes": "moved"}),
        )
        .await;
    refused.problem(409, "wedding-date-confirmation-required");
    assert!(
        refused.body["detail"]
            .as_str()
            .expect("detail")
            .contains("confirm_wedding_date_change")
    );
    let unchanged = app.get(&key, &path).await;
    assert_eq!(unchanged.body["wedding_date"], "2026-05-20");
    assert_eq!(
        unchanged.body["notes"], "ceremony at the Temperate House",
        "nothing half-written"
    );

    // Other changes need no confirmation.
    app.patch(&key, &path, json!({"notes": "first look at 13:00"}))
        .await
        .ok(200);

    let moved = app
        .patch(
            &key,
            &path,
            json!({"wedding_date": "2026-05-27", "confirm_wedding_date_change": true}),
        )
        .await;
    assert_eq!(moved.ok(200)["wedding_date"], "2026-05-27");

    let audit = app.get(&key, "/v1/audit-log?limit=1").await;
    let entry = &audit.ok(200)["data"][0];
    assert_eq!(entry["action"], "couple.update.wedding_date");
    assert_eq!(entry["before"]["wedding_date"], "2026-05-20");
    assert_eq!(entry["after"]["wedding_date"], "2026-05-27");
    assert!(
        entry["actor"]
            .as_str()
            .expect("actor")
            .starts_with("api_key:key_")
    );

    let events = app
        .store
        .outbox_events(&org, None, 100)
        .await
        .expect("outbox");
    let last = events.last().expect("event");
    assert_eq!(last.event_type, "client.updated");
    assert_eq!(
        last.data["wedding_date_changed"],
        json!({"from": "2026-05-20", "to": "2026-05-27"})
    );
}

#[tokio::test]
async fn the_thirty_day_window_follows_the_clock() {
    let app = spawn_app().await;
    let (_, key) = app.org("Lens & Lace").await;
    let id = app.couple(&key, "2026-07-15").await;
    let path = format!("/v1/couples/{id}");
    // 75 days away: a routine change.
    app.patch(&key, &path, json!({"wedding_date": "2026-07-18"}))
        .await
        .ok(200);
    // 50 days later the wedding is 28 days away.
    app.clock.advance(chrono::Duration::days(50));
    app.patch(&key, &path, json!({"wedding_date": "2026-07-25"}))
        .await
        .problem(409, "wedding-date-confirmation-required");
    // Pulling a far wedding into the window needs confirmation too.
    let far = app.couple(&key, "2027-01-09").await;
    app.patch(
        &key,
        &format!("/v1/couples/{far}"),
        json!({"wedding_date": "2026-06-27"}),
    )
    .await
    .problem(409, "wedding-date-confirmation-required");
}

#[tokio::test]
async fn the_window_is_configurable() {
    let app = crate::support::spawn_app_with(wedsync_server::HttpSettings {
        wedding_date_confirm_days: 7,
        ..Default::default()
    })
    .await;
    let (_, key) = app.org("Lens & Lace").await;
    let id = app.couple(&key, "2026-05-20").await;
    app.patch(
        &key,
        &format!("/v1/couples/{id}"),
        json!({"wedding_date": "2026-05-27"}),
    )
    .await
    .ok(200);
}

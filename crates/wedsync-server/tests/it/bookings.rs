use serde_json::json;

use crate::support::{booking_body, spawn_app};

#[tokio::test]
async fn create_read_update_cancel_delete() {
    let app = spawn_app().await;
    let (org, key) = app.org("Lens & Lace").await;
    let couple = app.couple(&key, "2027-06-12").await;
    let created = app
        .post(
            &key,
            "/v1/bookings",
            booking_body(&couple, "2027-06-12T09:00:00Z", "2027-06-12T23:00:00Z"),
        )
        .await;
    let b = created.ok(201).clone();
    let id = b["id"].as_str().expect("id").to_owned();
    assert_eq!(
        b["value"],
        json!({"amount_minor": 250000, "currency": "GBP"})
    );
    assert_eq!(
        app.get(&key, &format!("/v1/bookings/{id}")).await.ok(200),
        &b
    );

    let updated = app
        .patch(
            &key,
            &format!("/v1/bookings/{id}"),
            json!({"value": {"amount_minor": 275050, "currency": "gbp"}}),
        )
        .await;
    assert_eq!(
        updated.ok(200)["value"],
        json!({"amount_minor": 275050, "currency": "GBP"})
    );
    let cancelled = app
        .patch(
            &key,
            &format!("/v1/bookings/{id}"),
            json!({"status": "cancelled"}),
        )
        .await;
    assert_eq!(cancelled.ok(200)["status"], "cancelled");
    app.delete(&key, &format!("/v1/bookings/{id}"))
        .await
        .ok(204);

    let types: Vec<String> = app
        .store
        .outbox_events(&org, None, 100)
        .await
        .expect("outbox")
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(
        types,
        [
            "client.created",
            "booking.created",
            "booking.updated",
            "booking.cancelled",
            "booking.deleted"
        ]
    );
}

#[tokio::test]
async fn invalid_bookings_are_refused_with_every_reason() {
    let app = spawn_app().await;
    let (_, key) = app.org("Lens & Lace").await;
    let couple = app.couple(&key, "2027-06-12").await;
    let mut body = booking_body(&couple, "2027-06-12T18:00:00Z", "2027-06-12T09:00:00Z");
    body["value"] = json!({"amount_minor": -5, "currency": "DOLLARS"});
    body["couple_id"] = json!("not-a-couple");
    let reply = app.post(&key, "/v1/bookings", body).await;
    reply.problem(422, "validation");
    let fields: Vec<&str> = reply.body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].as_str().expect("f"))
        .collect();
    assert_eq!(
        fields,
        [
            "couple_id",
            "ends_at",
            "value.amount_minor",
            "value.currency"
        ]
    );
    // Money is exact: a float amount is not accepted.
    let mut body = booking_body(&couple, "2027-06-12T09:00:00Z", "2027-06-12T18:00:00Z");
    body["value"]["amount_minor"] = json!(2500.5);
    app.post(&key, "/v1/bookings", body)
        .await
        .problem(422, "invalid-body");
}

#[tokio::test]
async fn filters_by_status_couple_and_range() {
    let app = spawn_app().await;
    let (_, key) = app.org("Lens & Lace").await;
    let a = app.couple(&key, "2027-06-12").await;
    let b = app.couple(&key, "2027-07-03").await;
    let june = app
        .booking(&key, &a, "2027-06-12T09:00:00Z", "2027-06-12T23:00:00Z")
        .await;
    let july = app
        .booking(&key, &b, "2027-07-03T09:00:00Z", "2027-07-03T23:00:00Z")
        .await;
    let tasting = app
        .booking(&key, &a, "2027-03-01T14:00:00Z", "2027-03-01T16:00:00Z")
        .await;
    app.patch(
        &key,
        &format!("/v1/bookings/{tasting}"),
        json!({"status": "completed"}),
    )
    .await
    .ok(200);

    let ids = |reply: &crate::support::Reply| -> Vec<String> {
        reply.body["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|b| b["id"].as_str().expect("id").to_owned())
            .collect()
    };
    assert_eq!(
        ids(&app.get(&key, "/v1/bookings?status=confirmed").await),
        [june.clone(), july.clone()]
    );
    assert_eq!(
        ids(&app.get(&key, &format!("/v1/bookings?couple_id={a}")).await),
        [june.clone(), tasting.clone()]
    );
    // Overlap: a range that catches only the end of the June booking.
    let r = app
        .get(
            &key,
            "/v1/bookings?from=2027-06-12T22:00:00Z&to=2027-07-01T00:00:00Z",
        )
        .await;
    assert_eq!(ids(&r), [june]);
    let r = app
        .get(&key, "/v1/bookings?from=2027-06-13T00:00:00Z")
        .await;
    assert_eq!(ids(&r), [july]);
}

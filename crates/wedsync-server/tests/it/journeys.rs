use serde_json::json;

use crate::support::spawn_app;

#[tokio::test]
async fn journeys_are_drafted_with_optimistic_locking_published_as_versions_and_rolled_back() {
    let app = spawn_app().await;
    let (_, key) = app.org("Lens & Lace").await;
    let templates = app.get(&key, "/v1/journey-templates").await;
    let templates = templates.ok(200).as_array().expect("templates").clone();
    let keys: Vec<&str> = templates.iter().filter_map(|t| t["key"].as_str()).collect();
    assert_eq!(
        keys,
        [
            "enquiry_follow_up",
            "booking_onboarding",
            "final_details_countdown",
            "post_wedding_review"
        ]
    );

    // Import a ready-made journey, with the UI's transient fields on a node.
    let mut document = templates[0]["document"].clone();
    document["nodes"][0]["selected"] = json!(true);
    document["nodes"][0]["measured"] = json!({ "width": 200, "height": 40 });
    let created = app
        .post(
            &key,
            "/v1/journeys",
            json!({ "name": "Enquiry follow-up", "document": document }),
        )
        .await;
    let journey = created.ok(201).clone();
    let id = journey["id"].as_str().expect("id").to_owned();
    assert_eq!(journey["revision"], 1);
    assert!(
        journey["draft"]["nodes"][0].get("selected").is_none(),
        "transient fields are not stored"
    );
    assert!(journey["published_version"].is_null());

    // Two editors start from revision 1; the second save is stale and told the current one.
    let mut edited = journey["draft"].clone();
    edited["viewport"]["zoom"] = json!(1.5);
    let saved = app
        .call(
            reqwest::Method::PUT,
            &format!("/v1/journeys/{id}"),
            Some(&key),
            Some(json!({ "revision": 1, "document": edited })),
        )
        .await;
    assert_eq!(saved.ok(200)["revision"], 2);
    let stale = app
        .call(
            reqwest::Method::PUT,
            &format!("/v1/journeys/{id}"),
            Some(&key),
            Some(json!({ "revision": 1, "document": journey["draft"] })),
        )
        .await;
    let problem = stale.problem(409, "conflict").body.clone();
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("current revision is 2"),
        "{problem}"
    );

    // A save that breaks the document is refused, naming the node.
    let mut broken = edited.clone();
    let email = broken["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .position(|n| n["type"] == "email")
        .expect("an email node");
    let email_id = broken["nodes"][email]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    broken["nodes"][email]["data"]["cc"] = json!("nobody");
    let refused = app
        .call(
            reqwest::Method::PUT,
            &format!("/v1/journeys/{id}"),
            Some(&key),
            Some(json!({ "revision": 2, "document": broken })),
        )
        .await;
    let problem = refused.problem(422, "validation").body.clone();
    assert_eq!(
        problem["errors"][0]["field"],
        format!("document.nodes.{email_id}.data"),
        "{problem}"
    );

    // Publish revision 2 as version 1; a draft with an unreachable node cannot be published.
    let published = app
        .post(
            &key,
            &format!("/v1/journeys/{id}/publish"),
            json!({ "revision": 2 }),
        )
        .await;
    let body = published.ok(201).clone();
    assert_eq!(body["version"]["version"], 1);
    assert_eq!(body["journey"]["published_version"], 1);
    let revision = body["journey"]["revision"].as_i64().expect("revision");
    let mut loose = body["journey"]["draft"].clone();
    loose["nodes"]
        .as_array_mut()
        .expect("nodes")
        .push(json!({ "id": "orphan", "type": "end", "position": { "x": 0, "y": 0 }, "data": {} }));
    let saved = app
        .call(
            reqwest::Method::PUT,
            &format!("/v1/journeys/{id}"),
            Some(&key),
            Some(json!({ "revision": revision, "document": loose })),
        )
        .await;
    let revision = saved.ok(200)["revision"].as_i64().expect("revision");
    let refused = app
        .post(
            &key,
            &format!("/v1/journeys/{id}/publish"),
            json!({ "revision": revision }),
        )
        .await;
    let problem = refused.problem(422, "validation").body.clone();
    assert!(
        problem["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .any(|e| e["field"] == "document.nodes.orphan"),
        "{problem}"
    );

    // Fix and publish version 2, then roll back to 1: version 3 has version 1's document.
    let mut fixed = loose.clone();
    fixed["nodes"]
        .as_array_mut()
        .expect("nodes")
        .retain(|n| n["id"] != "orphan");
    fixed["viewport"]["zoom"] = json!(0.75);
    let saved = app
        .call(
            reqwest::Method::PUT,
            &format!("/v1/journeys/{id}"),
            Some(&key),
            Some(json!({ "revision": revision, "document": fixed })),
        )
        .await;
    let revision = saved.ok(200)["revision"].as_i64().expect("revision");
    let v2 = app
        .post(
            &key,
            &format!("/v1/journeys/{id}/publish"),
            json!({ "revision": revision }),
        )
        .await;
    assert_eq!(v2.ok(201)["version"]["version"], 2);
    let back = app
        .post(
            &key,
            &format!("/v1/journeys/{id}/rollback"),
            json!({ "version": 1 }),
        )
        .await;
    let body = back.ok(201).clone();
    assert_eq!(body["version"]["version"], 3);
    assert_eq!(body["version"]["note"], "rollback to version 1");
    let versions = app.get(&key, &format!("/v1/journeys/{id}/versions")).await;
    let versions = versions.ok(200).as_array().expect("versions").clone();
    assert_eq!(versions.len(), 3);
    assert_eq!(
        versions[0]["document"], versions[2]["document"],
        "version 3 restores version 1"
    );
    assert_eq!(
        versions[1]["document"]["viewport"]["zoom"], 0.75,
        "version 2 is unchanged"
    );
    app.post(
        &key,
        &format!("/v1/journeys/{id}/rollback"),
        json!({ "version": 9 }),
    )
    .await
    .problem(422, "validation");

    // Simulate the live version for a hypothetical couple: no side effects, a timeline.
    let simulated = app
        .post(
            &key,
            &format!("/v1/journeys/{id}/simulate"),
            json!({ "version": 3, "input": {
                "wedding_date": "2027-09-18", "time_zone": "Europe/London",
                "start_at": "2027-01-01T00:00:00Z",
                "events": [{ "type": "client.created", "at": "2027-01-05T10:00:00Z", "data": {} }]
            } }),
        )
        .await;
    let timeline = simulated.ok(200).clone();
    assert_eq!(
        timeline["entries"][0]["node"], versions[0]["document"]["nodes"][0]["id"],
        "{timeline}"
    );
    assert_eq!(timeline["entries"][0]["at"], "2027-01-05T10:00:00Z");
    assert!(timeline["outcome"].is_string());
    app.post(
        &key,
        &format!("/v1/journeys/{id}/simulate"),
        json!({ "input": { "wedding_date": "2027-09-18", "time_zone": "Mars/Base", "start_at": "2027-01-01T00:00:00Z" } }),
    )
    .await
    .problem(422, "validation");

    // The audit log has the publishes and the rollback.
    let audit = app.get(&key, "/v1/audit-log").await;
    let actions: Vec<String> = audit.ok(200)["data"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["action"].as_str().map(str::to_owned))
        .collect();
    assert!(
        actions.iter().filter(|a| *a == "journey.publish").count() == 2
            && actions.contains(&"journey.rollback".to_owned()),
        "{actions:?}"
    );
}

#[tokio::test]
async fn instances_are_started_by_hand_idempotently_inspected_and_cancelled() {
    let app = spawn_app().await;
    let (_, key) = app.org("Lens & Lace").await;
    let couple = app.couple(&key, "2027-09-18").await;
    let templates = app.get(&key, "/v1/journey-templates").await;
    let document = templates.ok(200)[3]["document"].clone();
    let created = app
        .post(
            &key,
            "/v1/journeys",
            json!({ "name": "Review request", "document": document }),
        )
        .await;
    let id = created.ok(201)["id"].as_str().expect("id").to_owned();
    app.post(
        &key,
        &format!("/v1/journeys/{id}/instances"),
        json!({ "couple_id": couple }),
    )
    .await
    .problem(409, "conflict");
    app.post(
        &key,
        &format!("/v1/journeys/{id}/publish"),
        json!({ "revision": 1 }),
    )
    .await
    .ok(201);
    let started = app
        .post(
            &key,
            &format!("/v1/journeys/{id}/instances"),
            json!({ "couple_id": couple }),
        )
        .await;
    let instance = started.ok(201).clone();
    assert_eq!(instance["status"], "running");
    assert_eq!(instance["version"], 1);
    let again = app
        .post(
            &key,
            &format!("/v1/journeys/{id}/instances"),
            json!({ "couple_id": couple }),
        )
        .await;
    assert_eq!(
        again.ok(200)["id"],
        instance["id"],
        "the same key starts nothing new"
    );
    let iid = instance["id"].as_str().expect("id").to_owned();
    let detail = app.get(&key, &format!("/v1/journey-instances/{iid}")).await;
    // No worker runs here: the trigger's step, which writes the first history row, has not.
    let detail = detail.ok(200);
    assert_eq!(detail["history"], json!([]));
    assert_eq!(detail["instance"]["status"], "running");
    let listed = app.get(&key, &format!("/v1/journeys/{id}/instances")).await;
    assert_eq!(listed.ok(200)["data"].as_array().expect("data").len(), 1);
    let paused = app
        .post(
            &key,
            &format!("/v1/journey-instances/{iid}/operations"),
            json!({ "operation": "pause" }),
        )
        .await;
    assert_eq!(paused.ok(200)["status"], "paused");
    let resumed = app
        .post(
            &key,
            &format!("/v1/journey-instances/{iid}/operations"),
            json!({ "operation": "resume" }),
        )
        .await;
    assert_eq!(resumed.ok(200)["status"], "running");
    app.post(
        &key,
        &format!("/v1/journey-instances/{iid}/operations"),
        json!({ "operation": "dance" }),
    )
    .await
    .problem(422, "validation");
    // Moving to a newer version is explicit: publish version 2, migrate, audited.
    let draft = app
        .get(&key, &format!("/v1/journeys/{id}"))
        .await
        .ok(200)
        .clone();
    let mut doc = draft["draft"].clone();
    doc["viewport"]["zoom"] = json!(2.0);
    let saved = app
        .call(
            reqwest::Method::PUT,
            &format!("/v1/journeys/{id}"),
            Some(&key),
            Some(json!({ "revision": draft["revision"], "document": doc })),
        )
        .await;
    let revision = saved.ok(200)["revision"].clone();
    app.post(
        &key,
        &format!("/v1/journeys/{id}/publish"),
        json!({ "revision": revision }),
    )
    .await
    .ok(201);
    let migrated = app
        .post(
            &key,
            &format!("/v1/journey-instances/{iid}/operations"),
            json!({ "operation": "migrate" }),
        )
        .await;
    assert_eq!(migrated.ok(200)["version"], 2);
    let cancelled = app
        .post(
            &key,
            &format!("/v1/journey-instances/{iid}/cancel"),
            json!({}),
        )
        .await;
    assert_eq!(cancelled.ok(200)["status"], "cancelled");
    let detail = app.get(&key, &format!("/v1/journey-instances/{iid}")).await;
    let history = detail.ok(200)["history"]
        .as_array()
        .expect("history")
        .clone();
    assert_eq!(history.last().expect("entry")["outcome"], "cancelled");
    app.get(&key, "/v1/journey-instances/jin_nope")
        .await
        .problem(404, "not-found");
}

#[tokio::test]
async fn a_journey_about_bookings_is_started_by_hand_for_a_named_booking() {
    let app = spawn_app().await;
    let (_, key) = app.org("Lens & Lace").await;
    let couple = app.couple(&key, "2027-09-18").await;
    let other = app.couple(&key, "2027-10-02").await;
    let booking = app
        .booking(
            &key,
            &couple,
            "2027-09-18T10:00:00Z",
            "2027-09-18T20:00:00Z",
        )
        .await;
    let document = json!({
        "nodes": [
            {"id": "start", "type": "trigger", "position": {"x": 0, "y": 0},
             "data": {"trigger": {"kind": "manual"}, "subject": "booking"}},
            {"id": "eve", "type": "wait", "position": {"x": 0, "y": 1},
             "data": {"mode": "until_date", "date": "booking_date", "offset_days": -1, "at": "18:00", "if_passed": "skip"}},
            {"id": "done", "type": "end", "position": {"x": 0, "y": 2}, "data": {}}
        ],
        "edges": [
            {"id": "a", "source": "start", "target": "eve"},
            {"id": "b", "source": "eve", "target": "done"}
        ],
        "viewport": {"x": 0, "y": 0, "zoom": 1}
    });
    let created = app
        .post(
            &key,
            "/v1/journeys",
            json!({ "name": "Evening before", "document": document }),
        )
        .await;
    let id = created.ok(201)["id"].as_str().expect("id").to_owned();
    // The subject survives the save.
    assert_eq!(
        created.ok(201)["draft"]["nodes"][0]["data"]["subject"],
        "booking",
        "{}",
        created.body
    );
    app.post(
        &key,
        &format!("/v1/journeys/{id}/publish"),
        json!({ "revision": 1 }),
    )
    .await
    .ok(201);
    let path = format!("/v1/journeys/{id}/instances");
    let field_of = |reply: &super::support::Reply| reply.body["errors"][0]["field"].clone();
    let no_booking = app.post(&key, &path, json!({ "couple_id": couple })).await;
    no_booking.problem(422, "validation");
    assert_eq!(field_of(&no_booking), "booking_id");
    let wrong_couple = app
        .post(
            &key,
            &path,
            json!({ "couple_id": other, "booking_id": booking }),
        )
        .await;
    wrong_couple.problem(422, "validation");
    assert_eq!(field_of(&wrong_couple), "couple_id");
    app.post(
        &key,
        &path,
        json!({ "booking_id": format!("bkg_{}", "0".repeat(32)) }),
    )
    .await
    .problem(404, "not-found");
    let started = app
        .post(&key, &path, json!({ "booking_id": booking }))
        .await;
    let instance = started.ok(201).clone();
    assert_eq!(instance["booking_id"], booking);
    assert_eq!(instance["couple_id"], couple);

    // Listing narrows to a couple, a booking or a status.
    let count = |query: String| {
        let (app, key, path) = (&app, key.clone(), path.clone());
        async move {
            app.get(&key, &format!("{path}?{query}")).await.ok(200)["data"]
                .as_array()
                .expect("data")
                .len()
        }
    };
    assert_eq!(count(format!("booking_id={booking}")).await, 1);
    assert_eq!(count(format!("couple_id={couple}&status=running")).await, 1);
    assert_eq!(count(format!("couple_id={other}")).await, 0);
    assert_eq!(count("status=completed".to_owned()).await, 0);
    app.get(&key, &format!("{path}?status=finished"))
        .await
        .problem(400, "bad-request");
    app.get(&key, &format!("{path}?booking_id=nope"))
        .await
        .problem(400, "bad-request");
}

#[tokio::test]
async fn crm_connections_are_admin_managed_one_per_crm_and_never_show_their_token() {
    let app = spawn_app().await;
    let (org, key) = app.org("Lens & Lace").await;
    let token = "pat-eu1-0123456789abcdef";
    let created = app
        .post(
            &key,
            "/v1/crm-connections",
            json!({ "system": "hubspot", "access_token": token }),
        )
        .await;
    let connection = created.ok(201).clone();
    assert_eq!(connection["system"], "hubspot");
    assert_eq!(connection["base_url"], "https://api.hubapi.com");
    assert!(!created.body.to_string().contains(token));
    app.post(
        &key,
        "/v1/crm-connections",
        json!({ "system": "hubspot", "access_token": "pat-other" }),
    )
    .await
    .problem(409, "conflict");
    let bad = app
        .post(
            &key,
            "/v1/crm-connections",
            json!({ "system": "pipedrive", "access_token": "", "base_url": "ftp://x" }),
        )
        .await;
    bad.problem(422, "validation");
    let fields = |reply: &crate::support::Reply| -> Vec<String> {
        reply.body["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .filter_map(|e| e["field"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(fields(&bad), ["system", "access_token", "base_url"]);
    // A base URL is shown to viewers and carries tokens: https, no credentials in it.
    for base_url in [
        "https://user:pass@proxy.example",
        "http://crm.example.com",
        "https://x.example/?k=v",
    ] {
        let refused = app
            .post(
                &key,
                "/v1/crm-connections",
                json!({ "system": "hubspot", "access_token": "x", "base_url": base_url }),
            )
            .await;
        refused.problem(422, "validation");
        assert_eq!(fields(&refused), ["base_url"], "{base_url}");
    }
    // Salesforce takes a connected app's client credentials and the org's own URL.
    let salesforce = app
        .post(
            &key,
            "/v1/crm-connections",
            json!({ "system": "salesforce", "access_token": "x" }),
        )
        .await;
    salesforce.problem(422, "validation");
    assert_eq!(
        fields(&salesforce),
        ["access_token", "client_id", "client_secret", "base_url"]
    );
    let listed = app.get(&key, "/v1/crm-connections").await;
    assert_eq!(listed.ok(200).as_array().map(Vec::len), Some(1));
    assert!(!listed.body.to_string().contains(token));
    // Editors cannot manage them; viewers can see them.
    let editor = app.key(&org, wedsync_core::org::Role::Editor).await;
    app.post(
        &editor,
        "/v1/crm-connections",
        json!({ "system": "hubspot", "access_token": "x" }),
    )
    .await
    .problem(403, "forbidden");
    let id = connection["id"].as_str().expect("id");
    app.delete(&editor, &format!("/v1/crm-connections/{id}"))
        .await
        .problem(403, "forbidden");
    let gone = app.delete(&key, &format!("/v1/crm-connections/{id}")).await;
    assert_eq!(gone.status.as_u16(), 204);
    app.delete(&key, &format!("/v1/crm-connections/{id}"))
        .await
        .problem(404, "not-found");
    // The audit log has both, without the token.
    let audit = app.get(&key, "/v1/audit-log").await;
    assert!(!audit.body.to_string().contains(token));
}

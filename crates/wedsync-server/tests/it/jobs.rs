use reqwest::Method;
use wedsync_core::breaker::BreakerPolicy;
use wedsync_core::org::Role;

use crate::support::spawn_app;

#[tokio::test]
async fn jobs_are_listed_managed_and_isolated_per_organisation() {
    let app = spawn_app().await;
    let (org_a, a) = app.org("Lens & Lace").await;
    let (_, b) = app.org("Petal & Stem").await;
    app.couple(&a, "2027-06-12").await;

    let listed = app
        .get(&a, "/v1/jobs?kind=outbox.publish&state=ready")
        .await;
    let jobs = listed.ok(200)["data"].as_array().expect("data").clone();
    assert_eq!(jobs.len(), 1, "the couple's event waits to be published");
    let id = jobs[0]["id"].as_str().expect("id").to_owned();
    assert_eq!(jobs[0]["org_id"], org_a.to_string());

    // Another organisation sees nothing and cannot touch it; a viewer cannot manage jobs.
    assert_eq!(
        app.get(&b, "/v1/jobs").await.ok(200)["data"],
        serde_json::json!([])
    );
    for (method, path) in [
        (Method::GET, format!("/v1/jobs/{id}")),
        (Method::POST, format!("/v1/jobs/{id}/retry")),
        (Method::POST, format!("/v1/jobs/{id}/discard")),
    ] {
        app.call(method, &path, Some(&b), None)
            .await
            .problem(404, "not-found");
    }
    let viewer = app.key(&org_a, Role::Viewer).await;
    app.get(&viewer, "/v1/jobs").await.problem(403, "forbidden");

    // A waiting job cannot be "retried"; it can be discarded, and a discarded one retried.
    app.call(
        Method::POST,
        &format!("/v1/jobs/{id}/retry"),
        Some(&a),
        None,
    )
    .await
    .problem(409, "conflict");
    let discarded = app
        .call(
            Method::POST,
            &format!("/v1/jobs/{id}/discard"),
            Some(&a),
            None,
        )
        .await;
    assert_eq!(discarded.ok(200)["state"], "discarded");
    let retried = app
        .call(
            Method::POST,
            &format!("/v1/jobs/{id}/retry"),
            Some(&a),
            None,
        )
        .await;
    assert_eq!(retried.ok(200)["state"], "ready");
    assert_eq!(retried.body["attempts"], 0);
    let audit = app.get(&a, "/v1/audit-log?limit=2").await;
    let actions: Vec<&str> = audit.ok(200)["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|e| e["action"].as_str().expect("a"))
        .collect();
    assert_eq!(actions, ["job.retry", "job.discard"]);
    app.get(&a, "/v1/jobs?state=sleeping")
        .await
        .problem(400, "bad-request");
}

#[tokio::test]
async fn breakers_are_visible_per_organisation() {
    let app = spawn_app().await;
    let (org_a, a) = app.org("Lens & Lace").await;
    let (_, b) = app.org("Petal & Stem").await;
    app.couple(&a, "2027-06-12").await;
    let policy = BreakerPolicy::default();
    for _ in 0..5 {
        app.store
            .breaker_record(&org_a, "provider:twilio", &policy, false)
            .await
            .expect("record");
    }
    let listed = app.get(&a, "/v1/breakers").await;
    let breaker = &listed.ok(200)[0];
    assert_eq!(breaker["target"], "provider:twilio");
    assert_eq!(breaker["state"], "open");
    assert_eq!(breaker["probe_at"], "2026-05-01T09:05:00Z");
    assert_eq!(
        app.get(&b, "/v1/breakers").await.ok(200),
        &serde_json::json!([])
    );

    let metrics = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("wedsync_breakers{state=\"open\"}"),
        "breaker states in /metrics"
    );
    assert!(
        metrics.contains("wedsync_jobs{kind="),
        "queue depth in /metrics"
    );
}

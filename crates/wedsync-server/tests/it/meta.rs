use reqwest::Method;

use crate::support::spawn_app;

#[tokio::test]
async fn healthz_and_readyz() {
    let app = spawn_app().await;
    let health = app.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(health.ok(200)["status"], "ok");
    let ready = app.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.ok(200)["schema"], "current");
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = spawn_app().await;
    let reply = app.call(Method::GET, "/healthz", None, None).await;
    let id = reply
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("request id");
    assert_eq!(id.len(), 36);
    // A caller's own id is kept, so it can follow a request through its logs and ours.
    let resp = app
        .client
        .get(format!("{}/healthz", app.base))
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .expect("request");
    assert_eq!(
        resp.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("trace-me-123")
    );
}

#[tokio::test]
async fn openapi_is_a_valid_3_1_document_covering_the_api() {
    let app = spawn_app().await;
    let reply = app.call(Method::GET, "/openapi.json", None, None).await;
    let doc = reply.ok(200);
    assert_eq!(doc["openapi"], "3.1.0");
    let text = serde_json::to_string(doc).expect("json");
    let spec = oas3::from_json(&text).expect("parses as OpenAPI 3.1");
    let paths = spec.paths.as_ref().expect("paths");
    for path in [
        "/v1/organization",
        "/v1/members",
        "/v1/members/{id}",
        "/v1/api-keys",
        "/v1/api-keys/{id}",
        "/v1/couples",
        "/v1/couples/{id}",
        "/v1/bookings",
        "/v1/bookings/{id}",
        "/v1/audit-log",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from the OpenAPI document"
        );
    }
    // Every $ref points at a schema that exists.
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    let mut stack = vec![doc.clone()];
    while let Some(v) = stack.pop() {
        match v {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::String(r)) = map.get("$ref") {
                    let name = r.trim_start_matches("#/components/schemas/");
                    assert!(schemas.contains_key(name), "dangling $ref {r}");
                }
                stack.extend(map.into_iter().map(|(_, v)| v));
            }
            serde_json::Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
}

#[tokio::test]
async fn docs_page_is_self_contained() {
    let app = spawn_app().await;
    let resp = app
        .client
        .get(format!("{}/docs", app.base))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    let html = resp.text().await.expect("body");
    assert!(html.contains("/openapi.json"));
    // Nothing is fetched from elsewhere: no external scripts, styles or fonts.
    for external in ["src=\"http", "href=\"http", "@import", "cdn."] {
        assert!(!html.contains(external), "docs page loads {external}");
    }
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text() {
    let app = spawn_app().await;
    let (_, key) = app.org("Lens & Lace").await;
    app.get(&key, "/v1/couples").await.ok(200);
    app.get(&key, "/v1/couples/cpl_nope").await;
    let resp = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .expect("request");
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/plain; version=0.0.4"),
        "content type"
    );
    let text = resp.text().await.expect("body");
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("prometheus text");
    let names: Vec<&str> = scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    for name in [
        "http_requests_total",
        "http_request_duration_seconds",
        "db_pool_connections",
    ] {
        assert!(names.contains(&name), "{name} missing from /metrics");
    }
    // Both pools are counted: the main one and the relaxed one claims and outcomes use.
    let pools: Vec<&str> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "db_pool_connections")
        .filter_map(|s| s.labels.get("pool"))
        .collect();
    assert!(
        pools.contains(&"main") && pools.contains(&"relaxed"),
        "{pools:?}"
    );
    let latency = scrape
        .samples
        .iter()
        .find(|s| s.metric == "http_request_duration_seconds")
        .expect("latency");
    assert!(
        matches!(latency.value, prometheus_parse::Value::Histogram(_)),
        "latency is a histogram"
    );
    // Routes are labelled by template, never by raw path. (Checked on the text: the parser
    // crate mishandles braces inside label values, which Prometheus itself accepts.)
    assert!(
        text.contains(r#"http_requests_total{method="GET",route="/v1/couples/{id}",status="404"}"#)
    );
    assert!(!text.contains("cpl_nope"));
}

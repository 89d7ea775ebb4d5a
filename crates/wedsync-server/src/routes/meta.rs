//! Operational endpoints: liveness, readiness, metrics, the OpenAPI document and its docs
//! page. None of them needs an API key.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use crate::AppState;
use crate::error::ApiError;

/// The routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi_json))
        .route("/docs", get(docs))
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
}

/// Liveness: the process is up and serving. Deliberately touches nothing else, so a slow
/// database does not get a healthy process restarted.
async fn healthz() -> impl IntoResponse {
    axum::Json(Health { status: "ok" })
}

#[derive(Serialize)]
struct Readiness {
    status: &'static str,
    database: &'static str,
    schema: &'static str,
}

/// Readiness: the database answers and its schema is the one this binary expects.
async fn readyz(State(state): State<AppState>) -> Response {
    if let Err(error) = state.store.ping().await {
        tracing::warn!(%error, "readiness: database unreachable");
        return ApiError::unavailable("the database is not reachable").into_response();
    }
    match state.store.ensure_schema_current().await {
        Ok(()) => axum::Json(Readiness {
            status: "ready",
            database: "ok",
            schema: "current",
        })
        .into_response(),
        Err(error) => ApiError::from(error).into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    for (pool, open, idle) in state.store.pool_stats() {
        metrics::gauge!("db_pool_connections", "pool" => pool).set(f64::from(open));
        metrics::gauge!("db_pool_idle_connections", "pool" => pool).set(idle as f64);
    }
    if let Err(error) = crate::telemetry::record_queue(&state.store).await {
        tracing::warn!(%error, "queue metrics unavailable");
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn openapi_json() -> Response {
    match crate::openapi().to_pretty_json() {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(error) => {
            tracing::error!(%error, "openapi document failed to render");
            ApiError::internal().into_response()
        }
    }
}

/// A self-contained API reference page: it renders `/openapi.json` in the browser with no
/// external script, font or stylesheet, so it works on an air-gapped install.
async fn docs() -> Html<&'static str> {
    Html(include_str!("docs.html"))
}

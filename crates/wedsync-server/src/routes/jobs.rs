//! `/v1/jobs` and `/v1/breakers`: the organisation's durable work and the circuit breakers
//! guarding its targets. Admins inspect, retry and discard jobs.

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wedsync_core::org::Role;
use wedsync_store::StoreError;
use wedsync_store::breakers::Breaker;
use wedsync_store::queue::{Job, JobFilter, JobState};

use super::{ListResponse, Paging};
use crate::AppState;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiQuery, Caller};

/// The routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_jobs))
        .routes(routes!(get_job))
        .routes(routes!(retry_job))
        .routes(routes!(discard_job))
        .routes(routes!(list_breakers))
}

/// Filters for listing jobs.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobQuery {
    /// Items per page, 1 to 100 (default 50).
    pub limit: Option<u64>,
    /// The `next_cursor` of the previous page.
    pub after: Option<String>,
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs of this kind, e.g. `outbox.publish`.
    pub kind: Option<String>,
}

fn not_found(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::not_found("job"),
        other => other.into(),
    }
}

/// Lists the organisation's jobs, oldest first.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", params(JobQuery),
    responses((status = 200, body = ListResponse<Job>), (status = 403, body = Problem)))]
async fn list_jobs(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<JobQuery>,
) -> ApiResult<Json<ListResponse<Job>>> {
    caller.require(Role::Admin)?;
    let page = Paging {
        limit: q.limit,
        after: q.after,
    }
    .request()?;
    let filter = JobFilter {
        state: q.state,
        kind: q.kind,
    };
    Ok(Json(
        state
            .store
            .list_jobs(Some(&caller.0.org_id), &filter, &page)
            .await?
            .into(),
    ))
}

/// One job, with its attempts and last error.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path, description = "job_…")),
    responses((status = 200, body = Job), (status = 404, body = Problem)))]
async fn get_job(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Job>> {
    caller.require(Role::Admin)?;
    Ok(Json(
        state
            .store
            .get_job(Some(&caller.0.org_id), &id)
            .await
            .map_err(not_found)?,
    ))
}

/// Runs a dead (or discarded) job again, with fresh attempts.
#[utoipa::path(post, path = "/v1/jobs/{id}/retry", tag = "jobs", params(("id" = String, Path, description = "job_…")),
    responses((status = 200, body = Job), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn retry_job(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Job>> {
    caller.require(Role::Admin)?;
    Ok(Json(
        state
            .store
            .retry_job(Some(&caller.0.org_id), &id, &caller.actor())
            .await
            .map_err(not_found)?,
    ))
}

/// Drops a waiting or dead job.
#[utoipa::path(post, path = "/v1/jobs/{id}/discard", tag = "jobs", params(("id" = String, Path, description = "job_…")),
    responses((status = 200, body = Job), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn discard_job(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Job>> {
    caller.require(Role::Admin)?;
    Ok(Json(
        state
            .store
            .discard_job(Some(&caller.0.org_id), &id, &caller.actor())
            .await
            .map_err(not_found)?,
    ))
}

/// The circuit breakers guarding the organisation's targets.
#[utoipa::path(get, path = "/v1/breakers", tag = "jobs",
    responses((status = 200, body = Vec<Breaker>), (status = 401, body = Problem)))]
async fn list_breakers(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<Breaker>>> {
    caller.require(Role::Viewer)?;
    Ok(Json(state.store.list_breakers(&caller.0.org_id).await?))
}

//! `/v1/crm-connections`: the organisation's CRM credentials, which journeys' `crm_update`
//! steps write with. Admins manage them; tokens are write-only.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wedsync_core::id::CrmConnectionId;
use wedsync_core::org::Role;
use wedsync_store::StoreError;
use wedsync_store::crm::{CrmConnection, CrmConnectionInput};

use super::path_id;
use crate::AppState;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, Caller};

/// The routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_crm_connections, create_crm_connection))
        .routes(routes!(delete_crm_connection))
}

/// Lists the organisation's CRM connections (never their tokens).
#[utoipa::path(get, path = "/v1/crm-connections", tag = "crm",
    responses((status = 200, body = Vec<CrmConnection>), (status = 403, body = Problem)))]
async fn list_crm_connections(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<CrmConnection>>> {
    caller.require(Role::Viewer)?;
    Ok(Json(
        state.store.list_crm_connections(&caller.0.org_id).await?,
    ))
}

/// Connects a CRM (one connection per CRM; the token is stored sealed and never shown).
#[utoipa::path(post, path = "/v1/crm-connections", tag = "crm", request_body = CrmConnectionInput,
    responses((status = 201, body = CrmConnection), (status = 403, body = Problem), (status = 409, body = Problem),
        (status = 422, body = Problem)))]
async fn create_crm_connection(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<CrmConnectionInput>,
) -> ApiResult<(StatusCode, Json<CrmConnection>)> {
    caller.require(Role::Admin)?;
    let created = state
        .store
        .create_crm_connection(&caller.0.org_id, input, &caller.actor())
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Removes a CRM connection; `crm_update` steps for that CRM stop as blocked until another
/// is added.
#[utoipa::path(delete, path = "/v1/crm-connections/{id}", tag = "crm", params(("id" = String, Path, description = "crm_…")),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn delete_crm_connection(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Admin)?;
    let id: CrmConnectionId = path_id(&id, "crm connection")?;
    match state
        .store
        .delete_crm_connection(&caller.0.org_id, &id.to_string(), &caller.actor())
        .await
    {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(StoreError::NotFound) => Err(ApiError::not_found("crm connection")),
        Err(other) => Err(other.into()),
    }
}

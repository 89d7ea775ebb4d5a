//! `/v1/api-keys`: keys for the caller's organisation. A key can create keys only up to its
//! own role, so an admin key cannot mint an owner key.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wedsync_core::id::ApiKeyId;
use wedsync_core::org::{ApiKeyInfo, Role};
use wedsync_store::StoreError;

use super::path_id;
use crate::AppState;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, Caller};

/// The routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_api_keys, create_api_key))
        .routes(routes!(revoke_api_key))
}

/// A key to create.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyInput {
    /// What the key is for.
    pub name: String,
    /// The role it acts with; at most the caller's own.
    pub role: Role,
}

/// A new key. `secret` is shown this once and cannot be retrieved again.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedApiKey {
    /// The key's metadata.
    pub key: ApiKeyInfo,
    /// The key itself: `wsk_…`. Store it now.
    pub secret: String,
}

/// Lists keys, revoked ones included.
#[utoipa::path(get, path = "/v1/api-keys", tag = "api-keys",
    responses((status = 200, body = Vec<ApiKeyInfo>), (status = 403, body = Problem)))]
async fn list_api_keys(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<ApiKeyInfo>>> {
    caller.require(Role::Admin)?;
    Ok(Json(state.store.list_api_keys(&caller.0.org_id).await?))
}

/// Creates a key.
#[utoipa::path(post, path = "/v1/api-keys", tag = "api-keys", request_body = ApiKeyInput,
    responses((status = 201, body = CreatedApiKey), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn create_api_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<ApiKeyInput>,
) -> ApiResult<(StatusCode, Json<CreatedApiKey>)> {
    caller.require(Role::Admin)?;
    caller.require(input.role)?;
    let (key, secret) = state
        .store
        .create_api_key(&caller.0.org_id, &input.name, input.role, &caller.actor())
        .await?;
    Ok((StatusCode::CREATED, Json(CreatedApiKey { key, secret })))
}

/// Revokes a key at once; requests with it fail from then on.
#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "api-keys", params(("id" = String, Path, description = "key_…")),
    responses((status = 200, body = ApiKeyInfo), (status = 404, body = Problem)))]
async fn revoke_api_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<ApiKeyInfo>> {
    caller.require(Role::Admin)?;
    let id: ApiKeyId = path_id(&id, "api key")?;
    match state
        .store
        .revoke_api_key(&caller.0.org_id, &id, &caller.actor())
        .await
    {
        Ok(info) => Ok(Json(info)),
        Err(StoreError::NotFound) => Err(ApiError::not_found("api key")),
        Err(other) => Err(other.into()),
    }
}

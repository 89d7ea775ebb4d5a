//! `/v1/members`: the team and its roles. Admins manage members; only owners grant, change
//! or remove the owner role.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wedsync_core::id::MemberId;
use wedsync_core::org::{Member, Role};
use wedsync_store::StoreError;
use wedsync_store::members::MemberFields;

use super::{ListResponse, Paging, path_id};
use crate::AppState;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, ApiQuery, Caller};

/// The routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_members, create_member))
        .routes(routes!(get_member, update_member, delete_member))
}

/// A new member.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberInput {
    /// Sign-in email, unique in the organisation.
    pub email: String,
    /// Display name.
    pub name: String,
    /// Role.
    pub role: Role,
}

/// Fields to change.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberPatch {
    /// Sign-in email.
    pub email: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Role.
    pub role: Option<Role>,
}

fn owner_rule(caller: &Caller, role: Role) -> Result<(), ApiError> {
    if role == Role::Owner {
        caller.require(Role::Owner)?;
    }
    Ok(())
}

/// Lists members.
#[utoipa::path(get, path = "/v1/members", tag = "members", params(Paging),
    responses((status = 200, body = ListResponse<Member>), (status = 401, body = Problem)))]
async fn list_members(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(paging): ApiQuery<Paging>,
) -> ApiResult<Json<ListResponse<Member>>> {
    caller.require(Role::Viewer)?;
    Ok(Json(
        state
            .store
            .list_members(&caller.0.org_id, &paging.request()?)
            .await?
            .into(),
    ))
}

/// Adds a member (admins; owners only may add owners).
#[utoipa::path(post, path = "/v1/members", tag = "members", request_body = MemberInput,
    responses((status = 201, body = Member), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn create_member(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<MemberInput>,
) -> ApiResult<(StatusCode, Json<Member>)> {
    caller.require(Role::Admin)?;
    owner_rule(&caller, input.role)?;
    let fields = MemberFields::parse(&input.email, &input.name, input.role)?;
    let member = state
        .store
        .create_member(&caller.0.org_id, fields, &caller.actor())
        .await?;
    Ok((StatusCode::CREATED, Json(member)))
}

/// One member.
#[utoipa::path(get, path = "/v1/members/{id}", tag = "members", params(("id" = String, Path, description = "mem_…")),
    responses((status = 200, body = Member), (status = 404, body = Problem)))]
async fn get_member(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Member>> {
    caller.require(Role::Viewer)?;
    let id: MemberId = path_id(&id, "member")?;
    Ok(Json(
        state
            .store
            .get_member(&caller.0.org_id, &id)
            .await
            .map_err(not_found)?,
    ))
}

/// Changes a member (admins; owners only may touch the owner role).
#[utoipa::path(patch, path = "/v1/members/{id}", tag = "members", params(("id" = String, Path, description = "mem_…")),
    request_body = MemberPatch,
    responses((status = 200, body = Member), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn update_member(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<MemberPatch>,
) -> ApiResult<Json<Member>> {
    caller.require(Role::Admin)?;
    let id: MemberId = path_id(&id, "member")?;
    let caller_role = caller.0.role;
    let member = state
        .store
        .update_member(&caller.0.org_id, &id, &caller.actor(), |current| {
            let role = patch.role.unwrap_or(current.role);
            if (current.role == Role::Owner || role == Role::Owner) && caller_role < Role::Owner {
                return Err(StoreError::Conflict(
                    "only an owner may grant, change or remove the owner role".into(),
                ));
            }
            Ok(MemberFields::parse(
                patch.email.as_deref().unwrap_or(&current.email),
                patch.name.as_deref().unwrap_or(&current.name),
                role,
            )?)
        })
        .await
        .map_err(not_found)?;
    Ok(Json(member))
}

/// Removes a member.
#[utoipa::path(delete, path = "/v1/members/{id}", tag = "members", params(("id" = String, Path, description = "mem_…")),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn delete_member(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Admin)?;
    let id: MemberId = path_id(&id, "member")?;
    let caller_role = caller.0.role;
    state
        .store
        .delete_member(&caller.0.org_id, &id, &caller.actor(), |current| {
            if current.role == Role::Owner && caller_role < Role::Owner {
                return Err(StoreError::Conflict(
                    "only an owner may remove an owner".into(),
                ));
            }
            Ok(())
        })
        .await
        .map_err(not_found)?;
    Ok(StatusCode::NO_CONTENT)
}

fn not_found(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::not_found("member"),
        other => other.into(),
    }
}

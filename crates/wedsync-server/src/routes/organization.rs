//! `/v1/organization`: the organisation the API key belongs to.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wedsync_core::org::{OrgSettings, Organization, Role};

use crate::AppState;
use crate::error::{ApiResult, Problem};
use crate::extract::{ApiJson, Caller};

/// The routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_organization, update_organization))
}

/// Fields to change; absent fields stay as they are.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrganizationPatch {
    /// Business name.
    pub name: Option<String>,
    /// IANA time zone.
    pub time_zone: Option<String>,
    /// Subscription tier (owners only).
    pub tier: Option<String>,
    /// ISO 3166-1 alpha-2 country.
    pub country: Option<String>,
    /// ISO 4217 currency.
    pub currency: Option<String>,
}

/// The caller's organisation.
#[utoipa::path(get, path = "/v1/organization", tag = "organization",
    responses((status = 200, body = Organization), (status = 401, body = Problem)))]
async fn get_organization(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Organization>> {
    caller.require(Role::Viewer)?;
    Ok(Json(state.store.get_org(&caller.0.org_id).await?))
}

/// Changes the organisation's settings (admins; the tier needs an owner).
#[utoipa::path(patch, path = "/v1/organization", tag = "organization", request_body = OrganizationPatch,
    responses((status = 200, body = Organization), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn update_organization(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(patch): ApiJson<OrganizationPatch>,
) -> ApiResult<Json<Organization>> {
    caller.require(Role::Admin)?;
    if patch.tier.is_some() {
        caller.require(Role::Owner)?;
    }
    let org = state
        .store
        .update_org(&caller.0.org_id, &caller.actor(), |current| {
            OrgSettings::parse(
                patch.name.as_deref().unwrap_or(&current.name),
                patch.time_zone.as_deref().unwrap_or(&current.time_zone),
                patch.tier.as_deref().unwrap_or(current.tier.as_str()),
                patch.country.as_deref().unwrap_or(&current.country),
                patch.currency.as_deref().unwrap_or(&current.currency),
            )
        })
        .await?;
    Ok(Json(org))
}

//! `/v1/sources`: where an organisation's signed webhooks come from. Admins manage them; a
//! signing secret is shown only when created or rotated.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wedsync_core::id::SourceId;
use wedsync_core::org::Role;
use wedsync_core::source::{GenericHmacConfig, Provider};
use wedsync_core::validate::ValidationErrors;
use wedsync_store::StoreError;
use wedsync_store::sources::{
    DEFAULT_RATE_PER_MINUTE, DEFAULT_TOLERANCE_SECONDS, NewSource, Source, SourceConfig,
    validate_config,
};

use super::{double_option, path_id};
use crate::AppState;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, Caller};

/// The routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_sources, create_source))
        .routes(routes!(get_source, update_source))
        .routes(routes!(rotate_secret))
}

/// A source to create.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceInput {
    /// What it is, e.g. "Stripe live".
    pub name: String,
    /// The sender.
    pub provider: Provider,
    /// The signing secret the provider issued (Stripe, HubSpot, Slack, PagerDuty); others
    /// get a generated one.
    #[serde(default)]
    pub secret: Option<String>,
    /// How a generic HMAC sender signs (Tave, Zapier, generic).
    #[serde(default)]
    pub generic: Option<GenericHmacConfig>,
    /// Addresses or CIDR ranges allowed to send; empty allows any.
    #[serde(default)]
    pub ip_allowlist: Vec<String>,
    /// Requests accepted per minute (default 100; raised in peak season).
    #[serde(default)]
    pub rate_per_minute: Option<u32>,
    /// Timestamp tolerance in seconds (default 300).
    #[serde(default)]
    pub tolerance_seconds: Option<u32>,
}

/// Fields to change.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourcePatch {
    /// Name.
    pub name: Option<String>,
    /// Whether requests are accepted.
    pub enabled: Option<bool>,
    /// Generic HMAC description; `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<GenericHmacConfig>)]
    pub generic: Option<Option<GenericHmacConfig>>,
    /// Allowed addresses.
    pub ip_allowlist: Option<Vec<String>>,
    /// Requests per minute.
    pub rate_per_minute: Option<u32>,
    /// Timestamp tolerance in seconds.
    pub tolerance_seconds: Option<u32>,
}

/// A rotation.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateInput {
    /// The new secret, when the provider issues it; generated otherwise.
    #[serde(default)]
    pub secret: Option<String>,
}

/// A source with its signing secret, shown this once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SourceWithSecret {
    /// The source.
    pub source: Source,
    /// The signing secret: configure it in the sender now.
    pub secret: String,
}

fn not_found(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::not_found("source"),
        other => other.into(),
    }
}

/// Lists sources.
#[utoipa::path(get, path = "/v1/sources", tag = "sources", responses((status = 200, body = Vec<Source>), (status = 403, body = Problem)))]
async fn list_sources(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<Source>>> {
    caller.require(Role::Admin)?;
    Ok(Json(state.store.list_sources(&caller.0.org_id).await?))
}

/// Creates a source; the response carries its signing secret, shown this once.
#[utoipa::path(post, path = "/v1/sources", tag = "sources", request_body = SourceInput,
    responses((status = 201, body = SourceWithSecret), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn create_source(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<SourceInput>,
) -> ApiResult<(StatusCode, Json<SourceWithSecret>)> {
    caller.require(Role::Admin)?;
    let config = SourceConfig {
        generic: input.generic,
        ip_allowlist: input.ip_allowlist,
        rate_per_minute: input.rate_per_minute.unwrap_or(DEFAULT_RATE_PER_MINUTE),
        tolerance_seconds: input.tolerance_seconds.unwrap_or(DEFAULT_TOLERANCE_SECONDS),
    };
    let new = NewSource::parse(&input.name, input.provider, config, input.secret)?;
    let (source, secret) = state
        .store
        .create_source(&caller.0.org_id, new, &caller.actor())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(SourceWithSecret { source, secret }),
    ))
}

/// One source.
#[utoipa::path(get, path = "/v1/sources/{id}", tag = "sources", params(("id" = String, Path, description = "src_…")),
    responses((status = 200, body = Source), (status = 404, body = Problem)))]
async fn get_source(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Source>> {
    caller.require(Role::Admin)?;
    let id: SourceId = path_id(&id, "source")?;
    Ok(Json(
        state
            .store
            .get_source(&caller.0.org_id, &id)
            .await
            .map_err(not_found)?,
    ))
}

/// Changes a source's settings, or disables it.
#[utoipa::path(patch, path = "/v1/sources/{id}", tag = "sources", params(("id" = String, Path, description = "src_…")),
    request_body = SourcePatch, responses((status = 200, body = Source), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn update_source(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<SourcePatch>,
) -> ApiResult<Json<Source>> {
    caller.require(Role::Admin)?;
    let id: SourceId = path_id(&id, "source")?;
    let source = state
        .store
        .update_source(&caller.0.org_id, &id, &caller.actor(), |current| {
            let mut errors = ValidationErrors::default();
            let name = wedsync_core::validate::text(
                &mut errors,
                "name",
                patch.name.as_deref().unwrap_or(&current.name),
                200,
            );
            let mut config = current.config.clone();
            if let Some(generic) = patch.generic {
                config.generic = generic;
            }
            if let Some(list) = patch.ip_allowlist {
                config.ip_allowlist = list;
            }
            if let Some(rate) = patch.rate_per_minute {
                config.rate_per_minute = rate;
            }
            if let Some(t) = patch.tolerance_seconds {
                config.tolerance_seconds = t;
            }
            validate_config(current.provider, &config, &mut errors);
            errors.into_result((
                name.unwrap_or_default(),
                config,
                patch.enabled.unwrap_or(current.enabled),
            ))
        })
        .await
        .map_err(not_found)?;
    state.sources.invalidate(&id);
    Ok(Json(source))
}

/// Replaces the signing secret; the previous one keeps verifying for 24 hours (configurable)
/// so the sender can switch over without losing deliveries.
#[utoipa::path(post, path = "/v1/sources/{id}/rotate", tag = "sources", params(("id" = String, Path, description = "src_…")),
    request_body = RotateInput, responses((status = 200, body = SourceWithSecret), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn rotate_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<RotateInput>,
) -> ApiResult<Json<SourceWithSecret>> {
    caller.require(Role::Admin)?;
    let id: SourceId = path_id(&id, "source")?;
    let (source, secret) = state
        .store
        .rotate_source_secret(
            &caller.0.org_id,
            &id,
            input.secret,
            state.settings.rotation_grace,
            &caller.actor(),
        )
        .await
        .map_err(not_found)?;
    state.sources.invalidate(&id);
    Ok(Json(SourceWithSecret { source, secret }))
}

//! `/v1/couples`: the vendor's clients. Editors write; viewers read.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::NaiveDate;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wedsync_core::couple::{Couple, CoupleInput, PartnerInput, Venue};
use wedsync_core::id::CoupleId;
use wedsync_core::org::Role;
use wedsync_store::StoreError;
use wedsync_store::couples::{CoupleFilter, DateChangeRule};

use super::{ListResponse, Paging, double_option, path_id};
use crate::AppState;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, ApiQuery, Caller};

/// The routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_couples, create_couple))
        .routes(routes!(get_couple, update_couple, delete_couple))
}

/// Filters for listing couples.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CoupleQuery {
    /// Items per page, 1 to 100 (default 50).
    pub limit: Option<u64>,
    /// The `next_cursor` of the previous page.
    pub after: Option<String>,
    /// Weddings on or after this day (`YYYY-MM-DD`).
    #[param(value_type = Option<String>, format = Date)]
    pub wedding_from: Option<NaiveDate>,
    /// Weddings on or before this day (`YYYY-MM-DD`).
    #[param(value_type = Option<String>, format = Date)]
    pub wedding_to: Option<NaiveDate>,
}

/// Fields to change; absent fields stay as they are, `null` clears `venue` or `notes`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CouplePatch {
    /// Both partners, replacing the current ones.
    pub partners: Option<Vec<PartnerInput>>,
    /// The new wedding day.
    #[schema(value_type = Option<String>, format = Date)]
    pub wedding_date: Option<NaiveDate>,
    /// The wedding's IANA time zone.
    pub time_zone: Option<String>,
    /// The venue, replacing the current one; `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Venue>)]
    pub venue: Option<Option<Venue>>,
    /// Notes; `null` clears them.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub notes: Option<Option<String>>,
    /// Required to move a wedding date that is (or would become) within 30 days.
    #[serde(default)]
    pub confirm_wedding_date_change: bool,
}

/// Lists couples, filtered by wedding date.
#[utoipa::path(get, path = "/v1/couples", tag = "couples", params(CoupleQuery),
    responses((status = 200, body = ListResponse<Couple>), (status = 400, body = Problem), (status = 401, body = Problem)))]
async fn list_couples(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<CoupleQuery>,
) -> ApiResult<Json<ListResponse<Couple>>> {
    caller.require(Role::Viewer)?;
    let page = Paging {
        limit: q.limit,
        after: q.after,
    }
    .request()?;
    let filter = CoupleFilter {
        wedding_from: q.wedding_from,
        wedding_to: q.wedding_to,
        time_zone: None,
    };
    Ok(Json(
        state
            .store
            .list_couples(&caller.0.org_id, &filter, &page)
            .await?
            .into(),
    ))
}

/// Creates a couple.
#[utoipa::path(post, path = "/v1/couples", tag = "couples", request_body = CoupleInput,
    responses((status = 201, body = Couple), (status = 400, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn create_couple(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<CoupleInput>,
) -> ApiResult<(StatusCode, Json<Couple>)> {
    caller.require(Role::Editor)?;
    let zone = state.store.org_time_zone(&caller.0.org_id).await?;
    let fields = input.validate(zone)?;
    let couple = state
        .store
        .create_couple(&caller.0.org_id, fields, &caller.actor())
        .await?;
    Ok((StatusCode::CREATED, Json(couple)))
}

/// One couple.
#[utoipa::path(get, path = "/v1/couples/{id}", tag = "couples", params(("id" = String, Path, description = "cpl_…")),
    responses((status = 200, body = Couple), (status = 404, body = Problem)))]
async fn get_couple(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Couple>> {
    caller.require(Role::Viewer)?;
    let id: CoupleId = path_id(&id, "couple")?;
    Ok(Json(
        state
            .store
            .get_couple(&caller.0.org_id, &id)
            .await
            .map_err(not_found)?,
    ))
}

/// Changes a couple. Moving a wedding date that is, or would become, within 30 days (the
/// organisation's configured window) needs `confirm_wedding_date_change: true`; the change is
/// audited and emits `client.updated` with `wedding_date_changed`.
#[utoipa::path(patch, path = "/v1/couples/{id}", tag = "couples", params(("id" = String, Path, description = "cpl_…")),
    request_body = CouplePatch,
    responses((status = 200, body = Couple), (status = 404, body = Problem), (status = 409, body = Problem, description = "the date change needs confirmation"), (status = 422, body = Problem)))]
async fn update_couple(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<CouplePatch>,
) -> ApiResult<Json<Couple>> {
    caller.require(Role::Editor)?;
    let id: CoupleId = path_id(&id, "couple")?;
    let zone = state.store.org_time_zone(&caller.0.org_id).await?;
    let rule = DateChangeRule {
        window_days: state.settings.wedding_date_confirm_days,
        confirmed: patch.confirm_wedding_date_change,
    };
    let couple = state
        .store
        .update_couple(&caller.0.org_id, &id, &caller.actor(), rule, |current| {
            let mut input = current.to_input();
            if let Some(partners) = patch.partners {
                input.partners = partners;
            }
            if let Some(date) = patch.wedding_date {
                input.wedding_date = date;
            }
            if let Some(zone) = patch.time_zone {
                input.time_zone = Some(zone);
            }
            if let Some(venue) = patch.venue {
                input.venue = venue;
            }
            if let Some(notes) = patch.notes {
                input.notes = notes;
            }
            input.validate(zone)
        })
        .await
        .map_err(not_found)?;
    Ok(Json(couple))
}

/// Deletes a couple that has no bookings.
#[utoipa::path(delete, path = "/v1/couples/{id}", tag = "couples", params(("id" = String, Path, description = "cpl_…")),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn delete_couple(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Editor)?;
    let id: CoupleId = path_id(&id, "couple")?;
    state
        .store
        .delete_couple(&caller.0.org_id, &id, &caller.actor())
        .await
        .map_err(not_found)?;
    Ok(StatusCode::NO_CONTENT)
}

fn not_found(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::not_found("couple"),
        other => other.into(),
    }
}

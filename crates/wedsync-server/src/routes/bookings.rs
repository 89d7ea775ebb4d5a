//! `/v1/bookings`: a couple's bookings of the organisation's services.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wedsync_core::booking::{Booking, BookingInput, BookingStatus, Money};
use wedsync_core::id::{BookingId, CoupleId};
use wedsync_core::org::Role;
use wedsync_core::validate::ValidationErrors;
use wedsync_store::StoreError;
use wedsync_store::bookings::BookingFilter;

use super::{ListResponse, Paging, double_option, path_id};
use crate::AppState;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, ApiQuery, Caller};

/// The routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_bookings, create_booking))
        .routes(routes!(get_booking, update_booking, delete_booking))
}

/// Filters for listing bookings.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BookingQuery {
    /// Items per page, 1 to 100 (default 50).
    pub limit: Option<u64>,
    /// The `next_cursor` of the previous page.
    pub after: Option<String>,
    /// Only this status.
    pub status: Option<BookingStatus>,
    /// Only this couple's bookings (`cpl_…`).
    pub couple_id: Option<String>,
    /// Only bookings that end after this instant (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Only bookings that start before this instant (RFC 3339).
    pub to: Option<DateTime<Utc>>,
}

/// Fields to change; absent fields stay as they are, `null` clears `notes`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BookingPatch {
    /// Move the booking to another couple of the organisation.
    pub couple_id: Option<String>,
    /// The service.
    pub service: Option<String>,
    /// Start instant.
    pub starts_at: Option<DateTime<Utc>>,
    /// End instant.
    pub ends_at: Option<DateTime<Utc>>,
    /// Status; `cancelled` emits `booking.cancelled`.
    pub status: Option<BookingStatus>,
    /// The agreed value.
    pub value: Option<Money>,
    /// Notes; `null` clears them.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub notes: Option<Option<String>>,
}

fn couple_ref(raw: &str) -> Result<CoupleId, ValidationErrors> {
    raw.parse().map_err(|e: wedsync_core::id::InvalidId| {
        ValidationErrors::single("couple_id", e.to_string())
    })
}

/// Lists bookings, filtered by status, couple and time range (overlap).
#[utoipa::path(get, path = "/v1/bookings", tag = "bookings", params(BookingQuery),
    responses((status = 200, body = ListResponse<Booking>), (status = 400, body = Problem), (status = 401, body = Problem)))]
async fn list_bookings(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<BookingQuery>,
) -> ApiResult<Json<ListResponse<Booking>>> {
    caller.require(Role::Viewer)?;
    let page = Paging {
        limit: q.limit,
        after: q.after,
    }
    .request()?;
    let couple_id = match q.couple_id.as_deref() {
        None => None,
        Some(raw) => Some(raw.parse().map_err(|e: wedsync_core::id::InvalidId| {
            ApiError::bad_request(format!("couple_id: {e}"))
        })?),
    };
    let filter = BookingFilter {
        status: q.status,
        couple_id,
        from: q.from,
        to: q.to,
    };
    Ok(Json(
        state
            .store
            .list_bookings(&caller.0.org_id, &filter, &page)
            .await?
            .into(),
    ))
}

/// Creates a booking.
#[utoipa::path(post, path = "/v1/bookings", tag = "bookings", request_body = BookingInput,
    responses((status = 201, body = Booking), (status = 400, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn create_booking(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<BookingInput>,
) -> ApiResult<(StatusCode, Json<Booking>)> {
    caller.require(Role::Editor)?;
    let fields = input.validate();
    let couple_id = couple_ref(&input.couple_id);
    let (fields, couple_id) = match (fields, couple_id) {
        (Ok(f), Ok(c)) => (f, c),
        (f, c) => {
            let mut errors = c.err().unwrap_or_default();
            errors.0.extend(f.err().map(|e| e.0).unwrap_or_default());
            return Err(errors.into());
        }
    };
    let booking = state
        .store
        .create_booking(&caller.0.org_id, &couple_id, fields, &caller.actor())
        .await?;
    Ok((StatusCode::CREATED, Json(booking)))
}

/// One booking.
#[utoipa::path(get, path = "/v1/bookings/{id}", tag = "bookings", params(("id" = String, Path, description = "bkg_…")),
    responses((status = 200, body = Booking), (status = 404, body = Problem)))]
async fn get_booking(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Booking>> {
    caller.require(Role::Viewer)?;
    let id: BookingId = path_id(&id, "booking")?;
    Ok(Json(
        state
            .store
            .get_booking(&caller.0.org_id, &id)
            .await
            .map_err(not_found)?,
    ))
}

/// Changes a booking.
#[utoipa::path(patch, path = "/v1/bookings/{id}", tag = "bookings", params(("id" = String, Path, description = "bkg_…")),
    request_body = BookingPatch,
    responses((status = 200, body = Booking), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn update_booking(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<BookingPatch>,
) -> ApiResult<Json<Booking>> {
    caller.require(Role::Editor)?;
    let id: BookingId = path_id(&id, "booking")?;
    let booking = state
        .store
        .update_booking(&caller.0.org_id, &id, &caller.actor(), |couple, current| {
            let input = BookingInput {
                couple_id: patch.couple_id.unwrap_or_else(|| couple.to_string()),
                service: patch.service.unwrap_or_else(|| current.service.clone()),
                starts_at: patch.starts_at.unwrap_or(current.starts_at),
                ends_at: patch.ends_at.unwrap_or(current.ends_at),
                status: Some(patch.status.unwrap_or(current.status)),
                value: patch.value.unwrap_or_else(|| Money {
                    amount_minor: current.amount_minor,
                    currency: current.currency.as_str().to_owned(),
                }),
                notes: patch.notes.unwrap_or_else(|| current.notes.clone()),
            };
            let couple_id = couple_ref(&input.couple_id)?;
            Ok((couple_id, input.validate()?))
        })
        .await
        .map_err(not_found)?;
    Ok(Json(booking))
}

/// Deletes a booking.
#[utoipa::path(delete, path = "/v1/bookings/{id}", tag = "bookings", params(("id" = String, Path, description = "bkg_…")),
    responses((status = 204), (status = 404, body = Problem)))]
async fn delete_booking(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Editor)?;
    let id: BookingId = path_id(&id, "booking")?;
    state
        .store
        .delete_booking(&caller.0.org_id, &id, &caller.actor())
        .await
        .map_err(not_found)?;
    Ok(StatusCode::NO_CONTENT)
}

fn not_found(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::not_found("booking"),
        other => other.into(),
    }
}

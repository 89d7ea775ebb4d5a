//! `/v1/endpoints` and `/v1/messages`: outbound webhooks. Admins manage endpoints (whose
//! secrets are shown only when created or rotated); editors send messages; viewers read the
//! delivery log.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wedsync_core::id::EndpointId;
use wedsync_core::org::Role;
use wedsync_store::StoreError;
use wedsync_store::webhooks::{
    Attempt, Delivery, Endpoint, EndpointInput, EndpointPatch, EndpointStats, Message, MessageInput,
};

use super::{ListResponse, Paging, path_id};
use crate::AppState;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, ApiQuery, Caller};

/// The routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_endpoints, create_endpoint))
        .routes(routes!(get_endpoint, update_endpoint, delete_endpoint))
        .routes(routes!(rotate_endpoint_secret))
        .routes(routes!(send_test))
        .routes(routes!(recover))
        .routes(routes!(endpoint_deliveries))
        .routes(routes!(endpoint_attempts))
        .routes(routes!(endpoint_stats))
        .routes(routes!(list_messages, create_message))
        .routes(routes!(get_message))
        .routes(routes!(message_attempts))
        .routes(routes!(resend))
}

/// An endpoint with its signing secret, shown this once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EndpointWithSecret {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// The `whsec_…` secret: give it to the receiver now.
    pub secret: String,
}

/// A rotation.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateInput {
    /// A `whsec_…` secret to use; generated when absent.
    #[serde(default)]
    pub secret: Option<String>,
}

/// A sample event for an endpoint.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestInput {
    /// The event type (default `webhook.test`).
    #[serde(default)]
    pub event_type: Option<String>,
    /// The data (default a small sample).
    #[serde(default)]
    pub data: Option<serde_json::Value>,
}

/// What to recover.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoverInput {
    /// Resend every failed delivery created since this instant.
    pub since: DateTime<Utc>,
}

/// How many deliveries were resent.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Recovered {
    /// Deliveries put back on the schedule.
    pub resent: u64,
}

/// Which endpoint to resend to.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResendInput {
    /// `ep_…`.
    pub endpoint_id: String,
}

/// A message with its deliveries.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MessageDetail {
    /// The message.
    pub message: Message,
    /// One per endpoint it went to.
    pub deliveries: Vec<Delivery>,
}

/// Filters for deliveries.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// `pending`, `succeeded` or `failed`.
    pub status: Option<String>,
    /// Items per page.
    pub limit: Option<u64>,
    /// The previous page's `next_cursor`.
    pub after: Option<String>,
}

/// Filters for messages.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessageQuery {
    /// Only this event type.
    pub event_type: Option<String>,
    /// Items per page.
    pub limit: Option<u64>,
    /// The previous page's `next_cursor`.
    pub after: Option<String>,
}

/// The statistics window.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// Attempt figures since this instant (default 24 hours ago).
    pub since: Option<DateTime<Utc>>,
}

fn endpoint_missing(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::not_found("endpoint"),
        other => other.into(),
    }
}

fn message_missing(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::not_found("message"),
        other => other.into(),
    }
}

/// Lists endpoints.
#[utoipa::path(get, path = "/v1/endpoints", tag = "endpoints", params(Paging),
    responses((status = 200, body = ListResponse<Endpoint>), (status = 403, body = Problem)))]
async fn list_endpoints(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(paging): ApiQuery<Paging>,
) -> ApiResult<Json<ListResponse<Endpoint>>> {
    caller.require(Role::Viewer)?;
    let page = paging.request()?;
    Ok(Json(
        state
            .store
            .list_endpoints(&caller.0.org_id, &page)
            .await?
            .into(),
    ))
}

/// Creates an endpoint; the response carries its signing secret, shown this once.
#[utoipa::path(post, path = "/v1/endpoints", tag = "endpoints", request_body = EndpointInput,
    responses((status = 201, body = EndpointWithSecret), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn create_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<EndpointInput>,
) -> ApiResult<(StatusCode, Json<EndpointWithSecret>)> {
    caller.require(Role::Admin)?;
    let (endpoint, secret) = state
        .store
        .create_endpoint(&caller.0.org_id, input, &caller.actor())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(EndpointWithSecret { endpoint, secret }),
    ))
}

/// One endpoint.
#[utoipa::path(get, path = "/v1/endpoints/{id}", tag = "endpoints", params(("id" = String, Path, description = "ep_…")),
    responses((status = 200, body = Endpoint), (status = 404, body = Problem)))]
async fn get_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Endpoint>> {
    caller.require(Role::Viewer)?;
    let id: EndpointId = path_id(&id, "endpoint")?;
    Ok(Json(
        state
            .store
            .get_endpoint(&caller.0.org_id, &id)
            .await
            .map_err(endpoint_missing)?,
    ))
}

/// Changes an endpoint, or enables (clearing its failure history) or disables it.
#[utoipa::path(patch, path = "/v1/endpoints/{id}", tag = "endpoints", params(("id" = String, Path, description = "ep_…")),
    request_body = EndpointPatch, responses((status = 200, body = Endpoint), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn update_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<EndpointPatch>,
) -> ApiResult<Json<Endpoint>> {
    caller.require(Role::Admin)?;
    let id: EndpointId = path_id(&id, "endpoint")?;
    Ok(Json(
        state
            .store
            .update_endpoint(&caller.0.org_id, &id, patch, &caller.actor())
            .await
            .map_err(endpoint_missing)?,
    ))
}

/// Deletes an endpoint with its delivery history.
#[utoipa::path(delete, path = "/v1/endpoints/{id}", tag = "endpoints", params(("id" = String, Path, description = "ep_…")),
    responses((status = 204), (status = 404, body = Problem)))]
async fn delete_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Admin)?;
    let id: EndpointId = path_id(&id, "endpoint")?;
    state
        .store
        .delete_endpoint(&caller.0.org_id, &id, &caller.actor())
        .await
        .map_err(endpoint_missing)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Rotates the signing secret; the previous one keeps signing beside it for the grace
/// period (24 hours by default), so receivers can switch without missing a delivery.
#[utoipa::path(post, path = "/v1/endpoints/{id}/rotate-secret", tag = "endpoints", params(("id" = String, Path, description = "ep_…")),
    request_body = RotateInput, responses((status = 200, body = EndpointWithSecret), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn rotate_endpoint_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<RotateInput>,
) -> ApiResult<Json<EndpointWithSecret>> {
    caller.require(Role::Admin)?;
    let id: EndpointId = path_id(&id, "endpoint")?;
    let (endpoint, secret) = state
        .store
        .rotate_endpoint_secret(
            &caller.0.org_id,
            &id,
            input.secret.as_deref(),
            state.settings.endpoint_rotation_grace,
            &caller.actor(),
        )
        .await
        .map_err(endpoint_missing)?;
    Ok(Json(EndpointWithSecret { endpoint, secret }))
}

/// Sends a sample event to this endpoint only.
#[utoipa::path(post, path = "/v1/endpoints/{id}/test", tag = "endpoints", params(("id" = String, Path, description = "ep_…")),
    request_body = TestInput, responses((status = 202, body = Message), (status = 404, body = Problem)))]
async fn send_test(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<TestInput>,
) -> ApiResult<(StatusCode, Json<Message>)> {
    caller.require(Role::Admin)?;
    let id: EndpointId = path_id(&id, "endpoint")?;
    let input = MessageInput {
        event_type: input.event_type.unwrap_or_else(|| "webhook.test".into()),
        data: input.data.unwrap_or_else(|| {
            serde_json::json!({ "message": "A test delivery from WedSync", "couple": "Ana & Ben", "wedding_date": "2027-06-05" })
        }),
    };
    let (message, _) = state
        .store
        .create_message(
            &caller.0.org_id,
            input,
            None,
            state.settings.idempotency_window,
            Some(&id),
        )
        .await
        .map_err(endpoint_missing)?;
    Ok((StatusCode::ACCEPTED, Json(message)))
}

/// Resends every failed delivery to this endpoint created since a time (after an outage).
#[utoipa::path(post, path = "/v1/endpoints/{id}/recover", tag = "endpoints", params(("id" = String, Path, description = "ep_…")),
    request_body = RecoverInput, responses((status = 202, body = Recovered), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn recover(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<RecoverInput>,
) -> ApiResult<(StatusCode, Json<Recovered>)> {
    caller.require(Role::Admin)?;
    let id: EndpointId = path_id(&id, "endpoint")?;
    let resent = state
        .store
        .recover(&caller.0.org_id, &id, input.since, &caller.actor())
        .await
        .map_err(endpoint_missing)?;
    Ok((StatusCode::ACCEPTED, Json(Recovered { resent })))
}

/// An endpoint's deliveries (one per message), optionally in one state.
#[utoipa::path(get, path = "/v1/endpoints/{id}/deliveries", tag = "endpoints", params(("id" = String, Path, description = "ep_…"), DeliveryQuery),
    responses((status = 200, body = ListResponse<Delivery>), (status = 404, body = Problem)))]
async fn endpoint_deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<DeliveryQuery>,
) -> ApiResult<Json<ListResponse<Delivery>>> {
    caller.require(Role::Viewer)?;
    let id: EndpointId = path_id(&id, "endpoint")?;
    if let Some(s) = &q.status
        && !["pending", "succeeded", "failed"].contains(&s.as_str())
    {
        return Err(ApiError::bad_request(
            "status must be pending, succeeded or failed",
        ));
    }
    let page = Paging {
        limit: q.limit,
        after: q.after,
    }
    .request()?;
    Ok(Json(
        state
            .store
            .list_deliveries(&caller.0.org_id, &id, q.status.as_deref(), &page)
            .await
            .map_err(endpoint_missing)?
            .into(),
    ))
}

/// Every attempt made to an endpoint, oldest first.
#[utoipa::path(get, path = "/v1/endpoints/{id}/attempts", tag = "endpoints", params(("id" = String, Path, description = "ep_…"), Paging),
    responses((status = 200, body = ListResponse<Attempt>), (status = 404, body = Problem)))]
async fn endpoint_attempts(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(paging): ApiQuery<Paging>,
) -> ApiResult<Json<ListResponse<Attempt>>> {
    caller.require(Role::Viewer)?;
    let id: EndpointId = path_id(&id, "endpoint")?;
    let page = paging.request()?;
    Ok(Json(
        state
            .store
            .list_attempts(&caller.0.org_id, Some(&id), None, &page)
            .await
            .map_err(endpoint_missing)?
            .into(),
    ))
}

/// Delivery statistics for an endpoint.
#[utoipa::path(get, path = "/v1/endpoints/{id}/stats", tag = "endpoints", params(("id" = String, Path, description = "ep_…"), StatsQuery),
    responses((status = 200, body = EndpointStats), (status = 404, body = Problem)))]
async fn endpoint_stats(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<StatsQuery>,
) -> ApiResult<Json<EndpointStats>> {
    caller.require(Role::Viewer)?;
    let id: EndpointId = path_id(&id, "endpoint")?;
    let since = q
        .since
        .unwrap_or_else(|| state.store.clock().now() - TimeDelta::hours(24));
    Ok(Json(
        state
            .store
            .endpoint_stats(&caller.0.org_id, &id, since)
            .await
            .map_err(endpoint_missing)?,
    ))
}

/// Lists messages.
#[utoipa::path(get, path = "/v1/messages", tag = "endpoints", params(MessageQuery),
    responses((status = 200, body = ListResponse<Message>)))]
async fn list_messages(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<MessageQuery>,
) -> ApiResult<Json<ListResponse<Message>>> {
    caller.require(Role::Viewer)?;
    let page = Paging {
        limit: q.limit,
        after: q.after,
    }
    .request()?;
    Ok(Json(
        state
            .store
            .list_messages(&caller.0.org_id, q.event_type.as_deref(), &page)
            .await?
            .into(),
    ))
}

/// Creates a message and delivers it to every subscribed endpoint. With an
/// `Idempotency-Key` header, repeating the request within 24 hours returns the first message
/// (200) instead of sending again; reusing the key for a different request is a 409.
#[utoipa::path(post, path = "/v1/messages", tag = "endpoints", request_body = MessageInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries of this request safe for 24 hours")),
    responses((status = 202, body = Message), (status = 200, body = Message, description = "An earlier request with this Idempotency-Key"),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn create_message(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(input): ApiJson<MessageInput>,
) -> ApiResult<(StatusCode, Json<Message>)> {
    caller.require(Role::Editor)?;
    let key = crate::extract::idempotency_key(&headers)?;
    let (message, created) = state
        .store
        .create_message(
            &caller.0.org_id,
            input,
            key,
            state.settings.idempotency_window,
            None,
        )
        .await?;
    let status = if created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(message)))
}

/// One message with its deliveries.
#[utoipa::path(get, path = "/v1/messages/{id}", tag = "endpoints", params(("id" = String, Path, description = "msg_…")),
    responses((status = 200, body = MessageDetail), (status = 404, body = Problem)))]
async fn get_message(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<MessageDetail>> {
    caller.require(Role::Viewer)?;
    let (message, deliveries) = state
        .store
        .get_message(&caller.0.org_id, &id)
        .await
        .map_err(message_missing)?;
    Ok(Json(MessageDetail {
        message,
        deliveries,
    }))
}

/// Every attempt made for a message, oldest first.
#[utoipa::path(get, path = "/v1/messages/{id}/attempts", tag = "endpoints", params(("id" = String, Path, description = "msg_…"), Paging),
    responses((status = 200, body = ListResponse<Attempt>), (status = 404, body = Problem)))]
async fn message_attempts(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(paging): ApiQuery<Paging>,
) -> ApiResult<Json<ListResponse<Attempt>>> {
    caller.require(Role::Viewer)?;
    state
        .store
        .get_message(&caller.0.org_id, &id)
        .await
        .map_err(message_missing)?;
    let page = paging.request()?;
    Ok(Json(
        state
            .store
            .list_attempts(&caller.0.org_id, None, Some(&id), &page)
            .await?
            .into(),
    ))
}

/// Sends a message to an endpoint again, with the same `webhook-id`.
#[utoipa::path(post, path = "/v1/messages/{id}/resend", tag = "endpoints", params(("id" = String, Path, description = "msg_…")),
    request_body = ResendInput, responses((status = 202, body = Delivery), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn resend(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<ResendInput>,
) -> ApiResult<(StatusCode, Json<Delivery>)> {
    caller.require(Role::Admin)?;
    let endpoint: EndpointId = path_id(&input.endpoint_id, "endpoint")?;
    let delivery = state
        .store
        .resend(&caller.0.org_id, &id, &endpoint, &caller.actor())
        .await
        .map_err(message_missing)?;
    Ok((StatusCode::ACCEPTED, Json(delivery)))
}

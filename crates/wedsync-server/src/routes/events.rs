//! `/v1/events`: canonical events received from sources, as CloudEvents 1.0.

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wedsync_core::org::Role;
use wedsync_store::StoreError;
use wedsync_store::inbound::{CloudEvent, EventFilter, RawRequest};

use super::{ListResponse, Paging};
use crate::AppState;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiQuery, Caller};

/// The routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_events))
        .routes(routes!(get_event))
        .routes(routes!(replay_event))
        .routes(routes!(stream_events))
}

/// Where a live stream starts.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Send events after this one (`Last-Event-ID` does the same on reconnect); without
    /// either, only events from now on.
    pub after: Option<String>,
    /// Only this type.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub event_type: Option<String>,
}

/// A live stream of new events (Server-Sent Events, one `data:` JSON CloudEvent per event,
/// `id:` set so a reconnecting client resumes with `Last-Event-ID`). Events from this node
/// arrive at once; from other nodes within a second.
#[utoipa::path(get, path = "/v1/events/stream", tag = "events", params(StreamQuery),
    responses((status = 200, description = "text/event-stream of CloudEvents"), (status = 401, body = Problem)))]
async fn stream_events(
    State(state): State<AppState>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    ApiQuery(q): ApiQuery<StreamQuery>,
) -> ApiResult<
    axum::response::sse::Sse<
        impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
    >,
> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    caller.require(Role::Viewer)?;
    let org = caller.0.org_id;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let after = match resume.or(q.after) {
        Some(after) => after,
        // From now on: the newest existing event id, or nothing.
        None => state.store.latest_event_id(&org).await?.unwrap_or_default(),
    };
    let filter = EventFilter {
        event_type: q.event_type,
        ..Default::default()
    };
    let initial = (
        state,
        after,
        std::collections::VecDeque::<CloudEvent>::new(),
    );
    let stream = futures_util::stream::unfold(initial, move |(state, mut after, mut pending)| {
        let filter = filter.clone();
        async move {
            loop {
                if let Some(event) = pending.pop_front() {
                    after = event.id.clone();
                    let sse = Event::default()
                        .id(event.id.clone())
                        .event(event.event_type.clone())
                        .json_data(&event)
                        .unwrap_or_else(|_| Event::default().comment("unserialisable event"));
                    return Some((Ok(sse), (state, after, pending)));
                }
                let woken = state.store.woken();
                let notified = woken.notified();
                let page = wedsync_store::page::PageRequest {
                    limit: Some(100),
                    after: (!after.is_empty()).then(|| after.clone()),
                };
                match state.store.list_events(&org, &filter, &page).await {
                    Ok(found) if !found.data.is_empty() => pending.extend(found.data),
                    Ok(_) => {
                        let _ =
                            tokio::time::timeout(std::time::Duration::from_secs(1), notified).await;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "event stream could not read events");
                        return None;
                    }
                }
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// Filters for listing events.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Items per page, 1 to 100 (default 50).
    pub limit: Option<u64>,
    /// The `next_cursor` of the previous page.
    pub after: Option<String>,
    /// Only this type, e.g. `payment.completed`.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub event_type: Option<String>,
    /// Only from this source (`src_…`).
    pub source_id: Option<String>,
    /// Only about this subject.
    pub subject: Option<String>,
    /// Only events at or after this time (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Only events before this time (RFC 3339).
    pub to: Option<DateTime<Utc>>,
}

/// An event with the raw request it arrived in.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventDetail {
    /// The event.
    pub event: CloudEvent,
    /// The request, headers without secrets.
    pub request: RawRequest,
}

/// A replay.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Replayed {
    /// The routing job enqueued.
    pub job_id: String,
}

fn not_found(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::not_found("event"),
        other => other.into(),
    }
}

/// Lists events, oldest first.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventQuery),
    responses((status = 200, body = ListResponse<CloudEvent>), (status = 400, body = Problem)))]
async fn list_events(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> ApiResult<Json<ListResponse<CloudEvent>>> {
    caller.require(Role::Viewer)?;
    let page = Paging {
        limit: q.limit,
        after: q.after,
    }
    .request()?;
    let filter = EventFilter {
        event_type: q.event_type,
        source_id: q.source_id,
        subject: q.subject,
        from: q.from,
        to: q.to,
    };
    Ok(Json(
        state
            .store
            .list_events(&caller.0.org_id, &filter, &page)
            .await?
            .into(),
    ))
}

/// One event with its raw request.
#[utoipa::path(get, path = "/v1/events/{id}", tag = "events", params(("id" = String, Path, description = "evt_…")),
    responses((status = 200, body = EventDetail), (status = 404, body = Problem)))]
async fn get_event(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<EventDetail>> {
    caller.require(Role::Viewer)?;
    let (event, request) = state
        .store
        .get_event(&caller.0.org_id, &id)
        .await
        .map_err(not_found)?;
    Ok(Json(EventDetail { event, request }))
}

/// Routes an event again to its consumers.
#[utoipa::path(post, path = "/v1/events/{id}/replay", tag = "events", params(("id" = String, Path, description = "evt_…")),
    responses((status = 202, body = Replayed), (status = 404, body = Problem)))]
async fn replay_event(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<(axum::http::StatusCode, Json<Replayed>)> {
    caller.require(Role::Editor)?;
    let job_id = state
        .store
        .replay_event(&caller.0.org_id, &id, &caller.actor())
        .await
        .map_err(not_found)?;
    Ok((axum::http::StatusCode::ACCEPTED, Json(Replayed { job_id })))
}

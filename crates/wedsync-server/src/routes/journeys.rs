//! `/v1/journeys`: journey documents (drafts with optimistic locking), publishing immutable
//! versions, rollback, validation, and the ready-made templates. The engine that runs
//! instances is not built yet.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wedsync_core::id::JourneyId;
use wedsync_core::org::Role;
use wedsync_core::validate::ValidationErrors;
use wedsync_journeys::{JourneyDocument, Mode, validate};
use wedsync_store::StoreError;
use wedsync_store::journeys::{Instance, InstanceFilter, Journey, JourneyVersion, StepRecord};

use super::{ListResponse, Paging, path_id};
use crate::AppState;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, ApiQuery, Caller};

/// The routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_journeys, create_journey))
        .routes(routes!(get_journey, save_draft))
        .routes(routes!(publish))
        .routes(routes!(rollback))
        .routes(routes!(list_versions))
        .routes(routes!(get_version))
        .routes(routes!(validate_document))
        .routes(routes!(simulate_document))
        .routes(routes!(simulate_journey))
        .routes(routes!(journey_templates))
        .routes(routes!(list_instances, start_instance))
        .routes(routes!(get_instance))
        .routes(routes!(cancel_instance))
        .routes(routes!(operate_instance))
}

fn missing(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::not_found("journey"),
        other => other.into(),
    }
}

/// Parses and checks a document: the durable form, or every problem, each naming its node.
fn checked(document: &serde_json::Value, mode: Mode) -> Result<serde_json::Value, ApiError> {
    let doc = JourneyDocument::parse(document).map_err(|e| prefixed(e, "document"))?;
    validate(&doc, mode).map_err(|e| prefixed(e, "document"))?;
    Ok(doc.to_json())
}

fn prefixed(mut errors: wedsync_core::validate::ValidationErrors, prefix: &str) -> ApiError {
    for e in &mut errors.0 {
        e.field = format!("{prefix}.{}", e.field);
    }
    ApiError::validation(errors)
}

/// A new journey: a name and its first draft (an exported document imports the same way).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JourneyInput {
    /// Its name.
    pub name: String,
    /// For people.
    #[serde(default)]
    pub description: String,
    /// `{nodes, edges, viewport}` as the React Flow builder saves it; transient UI fields
    /// (`selected`, `dragging`, `measured`…) are dropped.
    pub document: serde_json::Value,
}

/// A draft save.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DraftInput {
    /// The revision the editor started from; a stale one gets 409 with the current one.
    pub revision: i32,
    /// A new name.
    #[serde(default)]
    pub name: Option<String>,
    /// The document.
    pub document: serde_json::Value,
}

/// Which draft to publish.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishInput {
    /// The draft revision being published (so nobody publishes a draft they have not seen).
    pub revision: i32,
}

/// Which version to restore.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackInput {
    /// An earlier published version.
    pub version: i32,
}

/// A journey with the version just published.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Published {
    /// The journey.
    pub journey: Journey,
    /// The new version.
    pub version: JourneyVersion,
}

/// Lists journeys.
#[utoipa::path(get, path = "/v1/journeys", tag = "journeys", params(Paging),
    responses((status = 200, body = ListResponse<Journey>)))]
async fn list_journeys(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(paging): ApiQuery<Paging>,
) -> ApiResult<Json<ListResponse<Journey>>> {
    caller.require(Role::Viewer)?;
    let page = paging.request()?;
    Ok(Json(
        state
            .store
            .list_journeys(&caller.0.org_id, &page)
            .await?
            .into(),
    ))
}

/// Creates (or imports) a journey; the document is checked as a draft.
#[utoipa::path(post, path = "/v1/journeys", tag = "journeys", request_body = JourneyInput,
    responses((status = 201, body = Journey), (status = 422, body = Problem)))]
async fn create_journey(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<JourneyInput>,
) -> ApiResult<(StatusCode, Json<Journey>)> {
    caller.require(Role::Editor)?;
    let document = checked(&input.document, Mode::Draft)?;
    let journey = state
        .store
        .create_journey(
            &caller.0.org_id,
            &input.name,
            &input.description,
            &document,
            &caller.actor(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(journey)))
}

/// One journey with its draft (its `draft` is the export format).
#[utoipa::path(get, path = "/v1/journeys/{id}", tag = "journeys", params(("id" = String, Path, description = "jny_…")),
    responses((status = 200, body = Journey), (status = 404, body = Problem)))]
async fn get_journey(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Journey>> {
    caller.require(Role::Viewer)?;
    let id: JourneyId = path_id(&id, "journey")?;
    Ok(Json(
        state
            .store
            .get_journey(&caller.0.org_id, &id)
            .await
            .map_err(missing)?,
    ))
}

/// Saves the draft (checked as a draft) if `revision` is current; otherwise 409, saying the
/// current revision.
#[utoipa::path(put, path = "/v1/journeys/{id}", tag = "journeys", params(("id" = String, Path, description = "jny_…")),
    request_body = DraftInput,
    responses((status = 200, body = Journey), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn save_draft(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<DraftInput>,
) -> ApiResult<Json<Journey>> {
    caller.require(Role::Editor)?;
    let id: JourneyId = path_id(&id, "journey")?;
    let document = checked(&input.document, Mode::Draft)?;
    Ok(Json(
        state
            .store
            .save_journey_draft(
                &caller.0.org_id,
                &id,
                input.revision,
                input.name.as_deref(),
                &document,
            )
            .await
            .map_err(missing)?,
    ))
}

/// Publishes the draft as the next immutable version, after the publish checks (every node
/// reachable, every branch connected…).
#[utoipa::path(post, path = "/v1/journeys/{id}/publish", tag = "journeys", params(("id" = String, Path, description = "jny_…")),
    request_body = PublishInput,
    responses((status = 201, body = Published), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn publish(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<PublishInput>,
) -> ApiResult<(StatusCode, Json<Published>)> {
    caller.require(Role::Editor)?;
    let id: JourneyId = path_id(&id, "journey")?;
    let journey = state
        .store
        .get_journey(&caller.0.org_id, &id)
        .await
        .map_err(missing)?;
    if journey.revision != input.revision {
        return Err(wedsync_store::journeys::stale(journey.revision).into());
    }
    checked(&journey.draft, Mode::Publish)?;
    let (journey, version) = state
        .store
        .publish_journey(&caller.0.org_id, &id, input.revision, &caller.actor())
        .await
        .map_err(missing)?;
    Ok((StatusCode::CREATED, Json(Published { journey, version })))
}

/// Makes an earlier version live again, as a new version (the history keeps both).
#[utoipa::path(post, path = "/v1/journeys/{id}/rollback", tag = "journeys", params(("id" = String, Path, description = "jny_…")),
    request_body = RollbackInput,
    responses((status = 201, body = Published), (status = 422, body = Problem)))]
async fn rollback(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<RollbackInput>,
) -> ApiResult<(StatusCode, Json<Published>)> {
    caller.require(Role::Editor)?;
    let id: JourneyId = path_id(&id, "journey")?;
    let (journey, version) = state
        .store
        .rollback_journey(&caller.0.org_id, &id, input.version, &caller.actor())
        .await
        .map_err(missing)?;
    Ok((StatusCode::CREATED, Json(Published { journey, version })))
}

/// Published versions, newest first.
#[utoipa::path(get, path = "/v1/journeys/{id}/versions", tag = "journeys", params(("id" = String, Path, description = "jny_…")),
    responses((status = 200, body = Vec<JourneyVersion>), (status = 404, body = Problem)))]
async fn list_versions(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<JourneyVersion>>> {
    caller.require(Role::Viewer)?;
    let id: JourneyId = path_id(&id, "journey")?;
    Ok(Json(
        state
            .store
            .journey_versions(&caller.0.org_id, &id)
            .await
            .map_err(missing)?,
    ))
}

/// One published version.
#[utoipa::path(get, path = "/v1/journeys/{id}/versions/{version}", tag = "journeys",
    params(("id" = String, Path, description = "jny_…"), ("version" = i32, Path, description = "from 1")),
    responses((status = 200, body = JourneyVersion), (status = 404, body = Problem)))]
async fn get_version(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, version)): Path<(String, i32)>,
) -> ApiResult<Json<JourneyVersion>> {
    caller.require(Role::Viewer)?;
    let id: JourneyId = path_id(&id, "journey")?;
    Ok(Json(
        state
            .store
            .journey_version(&caller.0.org_id, &id, version)
            .await
            .map_err(missing)?,
    ))
}

/// A document to check.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateInput {
    /// The document.
    pub document: serde_json::Value,
    /// `draft` (default) or `publish`.
    #[serde(default)]
    pub mode: Option<String>,
}

/// The durable form of a valid document.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Validated {
    /// The document as it would be stored.
    pub document: serde_json::Value,
}

/// Checks a document without saving it: 200 with its durable form, or 422 with every
/// problem, each naming its node or edge.
#[utoipa::path(post, path = "/v1/journeys/validate", tag = "journeys", request_body = ValidateInput,
    responses((status = 200, body = Validated), (status = 422, body = Problem)))]
async fn validate_document(
    caller: Caller,
    ApiJson(input): ApiJson<ValidateInput>,
) -> ApiResult<Json<Validated>> {
    caller.require(Role::Viewer)?;
    let mode = match input.mode.as_deref() {
        None | Some("draft") => Mode::Draft,
        Some("publish") => Mode::Publish,
        Some(other) => {
            return Err(ApiError::validation(
                wedsync_core::validate::ValidationErrors::single(
                    "mode",
                    format!("`{other}` is not a mode; expected draft or publish"),
                ),
            ));
        }
    };
    Ok(Json(Validated {
        document: checked(&input.document, mode)?,
    }))
}

/// A ready-made journey.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JourneyTemplate {
    /// Its key.
    pub key: String,
    /// Its title.
    pub title: String,
    /// The document, ready to import with `POST /v1/journeys`.
    pub document: serde_json::Value,
}

/// The ready-made journeys: enquiry follow-up, booking onboarding, final-details countdown,
/// post-wedding review request.
#[utoipa::path(get, path = "/v1/journey-templates", tag = "journeys", responses((status = 200, body = Vec<JourneyTemplate>)))]
async fn journey_templates(caller: Caller) -> ApiResult<Json<Vec<JourneyTemplate>>> {
    caller.require(Role::Viewer)?;
    Ok(Json(
        wedsync_journeys::templates()
            .into_iter()
            .map(|(key, title, document)| JourneyTemplate {
                key: key.into(),
                title: title.into(),
                document,
            })
            .collect(),
    ))
}

/// A document to simulate.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulateDocument {
    /// The document.
    pub document: serde_json::Value,
    /// The hypothetical couple and events.
    pub input: wedsync_journeys::SimulationInput,
}

/// A saved journey to simulate.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulateJourney {
    /// A published version; the draft when absent.
    #[serde(default)]
    pub version: Option<i32>,
    /// The hypothetical couple and events.
    pub input: wedsync_journeys::SimulationInput,
}

fn run_simulation(
    document: &serde_json::Value,
    input: &wedsync_journeys::SimulationInput,
) -> Result<wedsync_journeys::Timeline, ApiError> {
    let doc = JourneyDocument::parse(document).map_err(|e| prefixed(e, "document"))?;
    validate(&doc, Mode::Publish).map_err(|e| prefixed(e, "document"))?;
    wedsync_journeys::simulate(&doc, input).map_err(|e| prefixed(e, "input"))
}

/// What a document would do for a hypothetical couple (wedding date, time zone, events at
/// given times), on a virtual clock, with no side effects.
#[utoipa::path(post, path = "/v1/journeys/simulate", tag = "journeys", request_body = SimulateDocument,
    responses((status = 200, body = wedsync_journeys::Timeline), (status = 422, body = Problem)))]
async fn simulate_document(
    caller: Caller,
    ApiJson(input): ApiJson<SimulateDocument>,
) -> ApiResult<Json<wedsync_journeys::Timeline>> {
    caller.require(Role::Viewer)?;
    Ok(Json(run_simulation(&input.document, &input.input)?))
}

/// What a saved journey (its draft, or a published version) would do, with no side effects.
#[utoipa::path(post, path = "/v1/journeys/{id}/simulate", tag = "journeys", params(("id" = String, Path, description = "jny_…")),
    request_body = SimulateJourney,
    responses((status = 200, body = wedsync_journeys::Timeline), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn simulate_journey(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<SimulateJourney>,
) -> ApiResult<Json<wedsync_journeys::Timeline>> {
    caller.require(Role::Viewer)?;
    let id: JourneyId = path_id(&id, "journey")?;
    let document = match input.version {
        Some(v) => {
            state
                .store
                .journey_version(&caller.0.org_id, &id, v)
                .await
                .map_err(missing)?
                .document
        }
        None => {
            state
                .store
                .get_journey(&caller.0.org_id, &id)
                .await
                .map_err(missing)?
                .draft
        }
    };
    Ok(Json(run_simulation(&document, &input.input)?))
}

/// Whom to start a journey for.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartInput {
    /// The couple (`cpl_…`): required for a journey about couples; for one about bookings
    /// it may be left out (the booking's couple) or must be the booking's.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub couple_id: Option<wedsync_core::id::CoupleId>,
    /// The booking (`bkg_…`): required for a journey about bookings, refused otherwise.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub booking_id: Option<wedsync_core::id::BookingId>,
    /// Starting again with the same key returns the same instance (default `manual`).
    #[serde(default)]
    pub trigger_key: Option<String>,
}

/// Starts the published version for a couple (or, for a journey about bookings, a booking),
/// by hand; idempotent per trigger key.
#[utoipa::path(post, path = "/v1/journeys/{id}/instances", tag = "journeys", params(("id" = String, Path, description = "jny_…")),
    request_body = StartInput,
    responses((status = 201, body = Instance), (status = 200, description = "already started with this key", body = Instance),
        (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn start_instance(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<StartInput>,
) -> ApiResult<(StatusCode, Json<Instance>)> {
    caller.require(Role::Editor)?;
    let id: JourneyId = path_id(&id, "journey")?;
    let journey = state
        .store
        .get_journey(&caller.0.org_id, &id)
        .await
        .map_err(missing)?;
    let Some(version) = journey.published_version else {
        return Err(ApiError::conflict(
            "the journey has no published version to run; publish it first",
        ));
    };
    let document = state
        .store
        .journey_version(&caller.0.org_id, &id, version)
        .await
        .map_err(missing)?
        .document;
    let doc = JourneyDocument::parse(&document).map_err(|e| prefixed(e, "document"))?;
    let Some(trigger) = doc
        .nodes
        .iter()
        .find(|n| matches!(n.kind, wedsync_journeys::NodeKind::Trigger(_)))
    else {
        return Err(ApiError::conflict("the published version has no trigger"));
    };
    let (couple, booking) = match (doc.subject(), input.booking_id) {
        (wedsync_journeys::Subject::Couple, None) => (
            input.couple_id.ok_or_else(|| {
                ApiError::from(ValidationErrors::single("couple_id", "is required"))
            })?,
            None,
        ),
        (wedsync_journeys::Subject::Couple, Some(_)) => {
            return Err(ValidationErrors::single(
                "booking_id",
                "this journey is about couples; start it with a couple_id alone",
            )
            .into());
        }
        (wedsync_journeys::Subject::Booking, None) => {
            return Err(ValidationErrors::single(
                "booking_id",
                "this journey is about bookings: name the booking to start it for",
            )
            .into());
        }
        (wedsync_journeys::Subject::Booking, Some(b)) => {
            let found = state
                .store
                .get_booking(&caller.0.org_id, &b)
                .await
                .map_err(|e| match e {
                    StoreError::NotFound => ApiError::not_found("booking"),
                    other => other.into(),
                })?;
            if input.couple_id.is_some_and(|c| c != found.couple_id) {
                return Err(
                    ValidationErrors::single("couple_id", "is not the booking's couple").into(),
                );
            }
            (found.couple_id, Some(b))
        }
    };
    let key = format!("manual:{}", input.trigger_key.as_deref().unwrap_or("start"));
    let (instance, created) = state
        .store
        .start_instance(
            &caller.0.org_id,
            &id,
            &couple,
            booking.as_ref(),
            &key,
            &trigger.id,
            &serde_json::json!({ "type": "manual" }),
        )
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found("couple"),
            other => other.into(),
        })?;
    Ok((
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(instance),
    ))
}

/// Filters for listing a journey's instances.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InstanceQuery {
    /// Items per page, 1 to 100 (default 50).
    pub limit: Option<u64>,
    /// The `next_cursor` of the previous page.
    pub after: Option<String>,
    /// Only this couple's instances, their bookings' included (`cpl_…`).
    pub couple_id: Option<String>,
    /// Only this booking's instances (`bkg_…`).
    pub booking_id: Option<String>,
    /// Only in this status: `running`, `waiting`, `paused`, `completed`, `skipped`,
    /// `blocked`, `cancelled`.
    pub status: Option<String>,
}

/// An id given in a query string, when there is one (400 when malformed).
fn query_id<T>(name: &str, raw: Option<&str>) -> Result<Option<T>, ApiError>
where
    T: std::str::FromStr<Err = wedsync_core::id::InvalidId>,
{
    raw.map(|r| {
        r.parse()
            .map_err(|e: wedsync_core::id::InvalidId| ApiError::bad_request(format!("{name}: {e}")))
    })
    .transpose()
}

/// A journey's instances, optionally a couple's, a booking's or one status's.
#[utoipa::path(get, path = "/v1/journeys/{id}/instances", tag = "journeys", params(("id" = String, Path, description = "jny_…"), InstanceQuery),
    responses((status = 200, body = ListResponse<Instance>), (status = 400, body = Problem)))]
async fn list_instances(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<InstanceQuery>,
) -> ApiResult<Json<ListResponse<Instance>>> {
    caller.require(Role::Viewer)?;
    let id: JourneyId = path_id(&id, "journey")?;
    let page = Paging {
        limit: q.limit,
        after: q.after,
    }
    .request()?;
    if let Some(s) = q.status.as_deref()
        && !wedsync_store::journeys::INSTANCE_STATUSES.contains(&s)
    {
        return Err(ApiError::bad_request(format!(
            "status: `{s}` is not one of {}",
            wedsync_store::journeys::INSTANCE_STATUSES.join(", ")
        )));
    }
    let filter = InstanceFilter {
        couple_id: query_id("couple_id", q.couple_id.as_deref())?,
        booking_id: query_id("booking_id", q.booking_id.as_deref())?,
        status: q.status,
    };
    Ok(Json(
        state
            .store
            .list_instances(&caller.0.org_id, &id, &filter, &page)
            .await?
            .into(),
    ))
}

/// An instance with its full history.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InstanceDetail {
    /// The instance.
    pub instance: Instance,
    /// What ran, when, with what outcome and output.
    pub history: Vec<StepRecord>,
}

/// One instance with its history.
#[utoipa::path(get, path = "/v1/journey-instances/{id}", tag = "journeys", params(("id" = String, Path, description = "jin_…")),
    responses((status = 200, body = InstanceDetail), (status = 404, body = Problem)))]
async fn get_instance(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<InstanceDetail>> {
    caller.require(Role::Viewer)?;
    let (instance, history) = state
        .store
        .get_instance(&caller.0.org_id, &id)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found("journey instance"),
            other => other.into(),
        })?;
    Ok(Json(InstanceDetail { instance, history }))
}

/// Cancels an instance; its pending step does nothing. Audited.
#[utoipa::path(post, path = "/v1/journey-instances/{id}/cancel", tag = "journeys", params(("id" = String, Path, description = "jin_…")),
    responses((status = 200, body = Instance), (status = 404, body = Problem)))]
async fn cancel_instance(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Instance>> {
    caller.require(Role::Editor)?;
    Ok(Json(
        state
            .store
            .cancel_instance(&caller.0.org_id, &id, &caller.actor())
            .await
            .map_err(|e| match e {
                StoreError::NotFound => ApiError::not_found("journey instance"),
                other => other.into(),
            })?,
    ))
}

/// A manual operation.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OperationInput {
    /// `pause`, `resume`, `retry` (a blocked step), `complete` (finish the current step without
    /// waiting: a person's step or a wait), `jump` (with `node`), `migrate` (with `version`).
    pub operation: String,
    /// For `jump`: the node to continue from.
    #[serde(default)]
    pub node: Option<String>,
    /// For `migrate`: the published version to move to (default the latest).
    #[serde(default)]
    pub version: Option<i32>,
}

/// Operates an instance by hand: pause, resume, retry a blocked step, complete the current
/// step, jump to a node, or move it to another published version. Audited.
#[utoipa::path(post, path = "/v1/journey-instances/{id}/operations", tag = "journeys", params(("id" = String, Path, description = "jin_…")),
    request_body = OperationInput,
    responses((status = 200, body = Instance), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn operate_instance(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<OperationInput>,
) -> ApiResult<Json<Instance>> {
    use wedsync_store::journeys::Operation;
    caller.require(Role::Editor)?;
    let invalid = |m: &str| {
        ApiError::validation(wedsync_core::validate::ValidationErrors::single(
            "operation",
            m,
        ))
    };
    let op = match input.operation.as_str() {
        "pause" => Operation::Pause,
        "resume" => Operation::Resume,
        "retry" => Operation::Retry,
        "complete" => Operation::Complete,
        "jump" => Operation::JumpTo(
            input
                .node
                .clone()
                .ok_or_else(|| invalid("jump needs a node"))?,
        ),
        "migrate" => {
            let version = match input.version {
                Some(v) => v,
                None => {
                    let (inst, _) = state
                        .store
                        .get_instance(&caller.0.org_id, &id)
                        .await
                        .map_err(|e| match e {
                            StoreError::NotFound => ApiError::not_found("journey instance"),
                            other => other.into(),
                        })?;
                    state
                        .store
                        .get_journey(&caller.0.org_id, &inst.journey_id)
                        .await?
                        .published_version
                        .unwrap_or(inst.version)
                }
            };
            Operation::Migrate(version)
        }
        _ => {
            return Err(invalid(
                "one of pause, resume, retry, complete, jump, migrate",
            ));
        }
    };
    Ok(Json(
        state
            .store
            .operate_instance(&caller.0.org_id, &id, op, &caller.actor())
            .await
            .map_err(|e| match e {
                StoreError::NotFound => ApiError::not_found("journey instance"),
                other => other.into(),
            })?,
    ))
}

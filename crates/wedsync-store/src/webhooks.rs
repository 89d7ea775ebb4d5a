//! Outbound webhooks as data: endpoints, messages, deliveries and attempts.
//!
//! A **message** is one event to send: a canonical event fanned out by the router, an outbox
//! event, or one created through the API. Its body is fixed when it is created, so every
//! attempt signs the same bytes and its id is the stable `webhook-id`. A **delivery** is the
//! message for one endpoint, with its own state (`pending`, `succeeded`, `failed`); an
//! **attempt** is one HTTP request, recorded with what came back.
//!
//! Each attempt runs as one `webhook.deliver` job naming the delivery, its generation and the
//! attempt number. Recording an attempt, the delivery's new state and the next attempt's job
//! is one transaction, so a crash either loses the attempt's record (and the job runs again,
//! at-least-once with the same `webhook-id`) or keeps all of it; a job that no longer matches
//! its delivery (already recorded, or resent since) does nothing. Resending starts a new
//! generation with a fresh retry schedule.
//!
//! The HTTP side (signing, the SSRF guard, the retry decisions) is `wedsync-delivery`'s.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::{ConnectionTrait, DatabaseTransaction, Value};
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};
use wedsync_core::clock::{from_micros, to_micros};
use wedsync_core::endpoint::{
    EndpointSecret, EventPattern, Filter, parse_event_patterns, subscribed, validate_endpoint_url,
    validate_headers, validate_rate_limit, validate_timeout_ms,
};
use wedsync_core::id::{AttemptId, DeliveryId, EndpointId, MessageId, OrgId};
use wedsync_core::validate::ValidationErrors;

use crate::audit::{self, Change};
use crate::page::{Page, PageRequest, paginate};
use crate::queue::{NewJob, enqueue_in_quietly, notify_in};
use crate::{Actor, Store, StoreError, StoreResult};

/// The job kind that makes one delivery attempt.
pub const DELIVER_KIND: &str = "webhook.deliver";
/// The operational event emitted when an endpoint is disabled automatically.
pub const ENDPOINT_DISABLED: &str = "endpoint.disabled";
/// An endpoint's timeout when none is given.
pub const DEFAULT_TIMEOUT_MS: u32 = 15_000;
/// The largest message payload accepted, serialised.
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Conflict(format!("stored endpoint data is unreadable: {e}"))
}

use crate::sql::stmt;

/// Deserialises a field that may be absent (leave alone), `null` (clear) or a value (set).
fn double<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// An endpoint as it is created through the API or the CLI.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointInput {
    /// Where deliveries are POSTed: `http` or `https`.
    pub url: String,
    /// For people.
    #[serde(default)]
    pub description: String,
    /// Event types, exact or ending in `.*` (`booking.*`); empty means every event.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// A filter on the message body (see the README).
    #[serde(default)]
    pub filter: Option<serde_json::Value>,
    /// Free labels.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Extra headers sent with every delivery (values are sealed and never shown again).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// At most this many deliveries a second, across every node.
    #[serde(default)]
    pub rate_limit_per_second: Option<u32>,
    /// How long one attempt may take, 1,000 to 30,000 ms (default 15,000).
    #[serde(default)]
    pub timeout_ms: Option<u32>,
    /// Whether it receives deliveries (default true).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// A `whsec_…` secret to use instead of a generated one.
    #[serde(default)]
    pub secret: Option<String>,
}

/// A change to an endpoint; absent fields stay as they are, `null` clears optional ones.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointPatch {
    /// New URL.
    pub url: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New subscriptions.
    pub event_types: Option<Vec<String>>,
    /// New filter, or `null` for none.
    #[serde(default, deserialize_with = "double")]
    #[schema(value_type = Option<Object>)]
    pub filter: Option<Option<serde_json::Value>>,
    /// New tags.
    pub tags: Option<Vec<String>>,
    /// New headers (replacing all of them).
    pub headers: Option<BTreeMap<String, String>>,
    /// New rate limit, or `null` for none.
    #[serde(default, deserialize_with = "double")]
    #[schema(value_type = Option<u32>)]
    pub rate_limit_per_second: Option<Option<u32>>,
    /// New timeout.
    pub timeout_ms: Option<u32>,
    /// Enable (clearing the failure history) or disable.
    pub enabled: Option<bool>,
}

/// An endpoint as the API shows it: never its secret nor its header values.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Endpoint {
    /// `ep_…`.
    #[schema(value_type = String)]
    pub id: EndpointId,
    /// Where deliveries go.
    pub url: String,
    /// For people.
    pub description: String,
    /// Subscriptions; empty means every event.
    pub event_types: Vec<String>,
    /// The body filter, if any.
    pub filter: Option<serde_json::Value>,
    /// Labels.
    pub tags: Vec<String>,
    /// The names of the extra headers sent.
    pub header_names: Vec<String>,
    /// Deliveries a second, if limited.
    pub rate_limit_per_second: Option<u32>,
    /// Per-attempt timeout.
    pub timeout_ms: u32,
    /// Whether it receives deliveries.
    pub enabled: bool,
    /// Why it was disabled.
    pub disabled_reason: Option<String>,
    /// When it was disabled.
    pub disabled_at: Option<DateTime<Utc>>,
    /// The first failure since its last success, while it is failing.
    pub failing_since: Option<DateTime<Utc>>,
    /// Its last successful delivery.
    pub last_success_at: Option<DateTime<Utc>>,
    /// While a rotated secret still signs beside the new one, until when.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// The checked form of an endpoint's settings.
struct Checked {
    url: String,
    description: String,
    patterns: Vec<EventPattern>,
    filter: Option<Filter>,
    tags: Vec<String>,
    headers: BTreeMap<String, String>,
    rate: Option<u32>,
    timeout_ms: u32,
}

fn check_tags(tags: &[String], errors: &mut ValidationErrors) {
    if tags.len() > 20 {
        errors.add("tags", "at most 20 tags");
    }
    for (i, tag) in tags.iter().enumerate() {
        if tag.is_empty() || tag.len() > 64 || tag.chars().any(char::is_control) {
            errors.add(
                format!("tags[{i}]"),
                "a tag is 1 to 64 printable characters",
            );
        }
    }
}

fn merge(errors: &mut ValidationErrors, result: Result<(), ValidationErrors>) {
    if let Err(e) = result {
        errors.0.extend(e.0);
    }
}

impl Checked {
    #[allow(clippy::too_many_arguments)]
    fn new(
        url: &str,
        description: String,
        event_types: &[String],
        filter: Option<serde_json::Value>,
        tags: Vec<String>,
        headers: BTreeMap<String, String>,
        rate: Option<u32>,
        timeout_ms: u32,
    ) -> StoreResult<Self> {
        let mut errors = ValidationErrors::default();
        let url = match validate_endpoint_url(url) {
            Ok(u) => u.to_string(),
            Err(e) => {
                errors.0.push(e);
                String::new()
            }
        };
        if description.chars().count() > 500 {
            errors.add("description", "at most 500 characters");
        }
        let patterns = parse_event_patterns(event_types).unwrap_or_else(|e| {
            errors.0.extend(e.0);
            Vec::new()
        });
        let filter = match filter {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => match Filter::parse(v) {
                Ok(f) => Some(f),
                Err(e) => {
                    errors.0.extend(e.0);
                    None
                }
            },
        };
        check_tags(&tags, &mut errors);
        merge(&mut errors, validate_headers(&headers));
        if let Some(r) = rate {
            merge(&mut errors, validate_rate_limit(r));
        }
        merge(&mut errors, validate_timeout_ms(timeout_ms));
        errors.into_result(())?;
        Ok(Self {
            url,
            description,
            patterns,
            filter,
            tags,
            headers,
            rate,
            timeout_ms,
        })
    }

    fn event_types_json(&self) -> String {
        serde_json::to_string(
            &self
                .patterns
                .iter()
                .map(EventPattern::as_str)
                .collect::<Vec<_>>(),
        )
        .unwrap_or_else(|_| "[]".into())
    }
}

fn parse_secret(text: Option<&str>) -> StoreResult<EndpointSecret> {
    match text {
        None => EndpointSecret::generate(EndpointSecret::DEFAULT_LEN)
            .map_err(|e| StoreError::Conflict(format!("cannot generate a secret: {e}"))),
        Some(t) => EndpointSecret::parse(t)
            .map_err(|e| StoreError::Invalid(ValidationErrors::single("secret", e.to_string()))),
    }
}

fn opt_time(r: &sea_orm::QueryResult, col: &str) -> StoreResult<Option<DateTime<Utc>>> {
    Ok(r.try_get::<Option<i64>>("", col)?.map(from_micros))
}

fn to_endpoint(r: &sea_orm::QueryResult) -> StoreResult<Endpoint> {
    let json = |col: &str| -> StoreResult<serde_json::Value> {
        serde_json::from_str(&r.try_get::<String>("", col)?).map_err(corrupt)
    };
    let strings = |col: &str| -> StoreResult<Vec<String>> {
        serde_json::from_value(json(col)?).map_err(corrupt)
    };
    let id: String = r.try_get("", "id")?;
    Ok(Endpoint {
        id: id.parse().map_err(corrupt)?,
        url: r.try_get("", "url")?,
        description: r.try_get("", "description")?,
        event_types: strings("event_types")?,
        filter: r
            .try_get::<Option<String>>("", "filter")?
            .map(|f| serde_json::from_str(&f).map_err(corrupt))
            .transpose()?,
        tags: strings("tags")?,
        header_names: strings("header_names")?,
        rate_limit_per_second: r
            .try_get::<Option<i32>>("", "rate_limit_per_second")?
            .and_then(|v| u32::try_from(v).ok()),
        timeout_ms: u32::try_from(r.try_get::<i32>("", "timeout_ms")?)
            .unwrap_or(DEFAULT_TIMEOUT_MS),
        enabled: r.try_get("", "enabled")?,
        disabled_reason: r.try_get("", "disabled_reason")?,
        disabled_at: opt_time(r, "disabled_at")?,
        failing_since: opt_time(r, "failing_since")?,
        last_success_at: opt_time(r, "last_success_at")?,
        previous_secret_expires_at: opt_time(r, "previous_secret_expires_at")?,
        created_at: from_micros(r.try_get("", "created_at")?),
        updated_at: from_micros(r.try_get("", "updated_at")?),
    })
}

/// A message as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Message {
    /// `msg_…`: also the `webhook-id` of every delivery.
    #[schema(value_type = String)]
    pub id: MessageId,
    /// The event type.
    pub event_type: String,
    /// The canonical event it came from, if any.
    pub event_id: Option<String>,
    /// The exact body delivered.
    pub payload: serde_json::Value,
    /// The caller's idempotency key, while it is held.
    pub idempotency_key: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
}

fn to_message(r: &sea_orm::QueryResult) -> StoreResult<Message> {
    let id: String = r.try_get("", "id")?;
    Ok(Message {
        id: id.parse().map_err(corrupt)?,
        event_type: r.try_get("", "event_type")?,
        event_id: r.try_get("", "event_id")?,
        payload: serde_json::from_str(&r.try_get::<String>("", "payload")?).map_err(corrupt)?,
        idempotency_key: r.try_get("", "idempotency_key")?,
        created_at: from_micros(r.try_get("", "created_at")?),
    })
}

/// The state of one message's delivery to one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    /// `dlv_…`.
    #[schema(value_type = String)]
    pub id: DeliveryId,
    /// The message.
    pub message_id: String,
    /// The endpoint.
    pub endpoint_id: String,
    /// The event type.
    pub event_type: String,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    /// Attempts made, in all.
    pub attempts: i32,
    /// When the next attempt is due, while pending.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The last attempt.
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// The last response status.
    pub last_status_code: Option<i32>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
}

fn to_delivery(r: &sea_orm::QueryResult) -> StoreResult<Delivery> {
    let id: String = r.try_get("", "id")?;
    Ok(Delivery {
        id: id.parse().map_err(corrupt)?,
        message_id: r.try_get("", "message_id")?,
        endpoint_id: r.try_get("", "endpoint_id")?,
        event_type: r.try_get("", "event_type")?,
        status: r.try_get("", "status")?,
        attempts: r.try_get("", "attempts")?,
        next_attempt_at: opt_time(r, "next_attempt_at")?,
        last_attempt_at: opt_time(r, "last_attempt_at")?,
        last_status_code: r.try_get("", "last_status_code")?,
        last_error: r.try_get("", "last_error")?,
        created_at: from_micros(r.try_get("", "created_at")?),
    })
}

const DELIVERY_COLUMNS: &str = "d.id, d.message_id, d.endpoint_id, m.event_type, d.status, d.attempts, \
     d.next_attempt_at, d.last_attempt_at, d.last_status_code, d.last_error, d.created_at";

/// One recorded HTTP attempt.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Attempt {
    /// `att_…`.
    #[schema(value_type = String)]
    pub id: AttemptId,
    /// The delivery.
    pub delivery_id: String,
    /// The message.
    pub message_id: String,
    /// The endpoint.
    pub endpoint_id: String,
    /// When it started.
    pub attempted_at: DateTime<Utc>,
    /// The response status, if a response came.
    pub status_code: Option<i32>,
    /// How long it took.
    pub latency_ms: i32,
    /// The response headers.
    pub response_headers: Vec<(String, String)>,
    /// The first 4 KiB of the response body.
    pub response_body: String,
    /// `timeout`, `connect`, `refused` (SSRF guard), `http_4xx`, `http_5xx`, `redirect`,
    /// `other`; none on success.
    pub error_class: Option<String>,
    /// What went wrong.
    pub error: Option<String>,
    /// Whether it succeeded (2xx).
    pub success: bool,
    /// `scheduled` or `manual` (a resend, recover or test).
    pub trigger: String,
}

fn to_attempt(r: &sea_orm::QueryResult) -> StoreResult<Attempt> {
    let id: String = r.try_get("", "id")?;
    Ok(Attempt {
        id: id.parse().map_err(corrupt)?,
        delivery_id: r.try_get("", "delivery_id")?,
        message_id: r.try_get("", "message_id")?,
        endpoint_id: r.try_get("", "endpoint_id")?,
        attempted_at: from_micros(r.try_get("", "attempted_at")?),
        status_code: r.try_get("", "status_code")?,
        latency_ms: r.try_get("", "latency_ms")?,
        response_headers: serde_json::from_str(&r.try_get::<String>("", "response_headers")?)
            .map_err(corrupt)?,
        response_body: r.try_get("", "response_body")?,
        error_class: r.try_get("", "error_class")?,
        error: r.try_get("", "error")?,
        success: r.try_get("", "success")?,
        trigger: r.try_get("", "trigger")?,
    })
}

/// A canonical or outbox event to fan out.
#[derive(Debug, Clone)]
pub struct FanOut<'a> {
    /// Its organisation.
    pub org: &'a OrgId,
    /// Its id (`evt_…`): one message per event, however often fan-out runs.
    pub event_id: &'a str,
    /// Its type.
    pub event_type: &'a str,
    /// When it happened.
    pub time: DateTime<Utc>,
    /// What it is about.
    pub subject: Option<&'a str>,
    /// Its data.
    pub data: &'a serde_json::Value,
    /// The queue priority of its deliveries (wedding-day work first).
    pub priority: i32,
    /// An operator's replay: when the event's message exists, send it again to every
    /// matching enabled endpoint (same `webhook-id`) instead of doing nothing.
    pub replay: bool,
}

/// A message created through the API.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageInput {
    /// The event type, e.g. `invoice.sent`.
    pub event_type: String,
    /// The data.
    pub data: serde_json::Value,
}

/// What the delivery worker needs for one attempt.
#[derive(Debug, Clone)]
pub struct DeliveryWork {
    /// The delivery.
    pub delivery_id: DeliveryId,
    /// Its organisation.
    pub org_id: OrgId,
    /// The message (`webhook-id`).
    pub message_id: String,
    /// The endpoint.
    pub endpoint_id: String,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    /// Its generation (bumped by every resend).
    pub generation: i32,
    /// Attempts recorded in all.
    pub attempts: i32,
    /// Attempts recorded in this generation.
    pub round_attempts: i32,
    /// When this generation started (the retry schedule's age limit counts from here).
    pub round_started_at: DateTime<Utc>,
    /// The body, exactly.
    pub payload: String,
    /// Its queue priority.
    pub priority: i32,
    /// The endpoint's URL.
    pub url: String,
    /// Whether the endpoint is enabled.
    pub enabled: bool,
    /// Per-attempt timeout.
    pub timeout_ms: u32,
    /// Deliveries a second, if limited.
    pub rate_limit_per_second: Option<u32>,
    /// Signing keys valid now: the current one, then the previous one inside its window.
    pub keys: Vec<Vec<u8>>,
    /// Extra headers.
    pub headers: BTreeMap<String, String>,
    /// The endpoint's first failure since its last success.
    pub failing_since: Option<DateTime<Utc>>,
    /// The endpoint's last success.
    pub last_success_at: Option<DateTime<Utc>>,
    /// Its circuit breaker (`endpoint:<id>`) as read with the rest; `None` when it has never
    /// failed. Saves the worker a query per attempt while the breaker is closed.
    pub breaker: Option<wedsync_core::breaker::BreakerState>,
}

/// One attempt's result, to record.
#[derive(Debug, Clone, Default)]
pub struct AttemptRecord {
    /// When it started.
    pub attempted_at: DateTime<Utc>,
    /// The response status.
    pub status_code: Option<u16>,
    /// How long it took.
    pub latency_ms: u32,
    /// The response headers.
    pub response_headers: Vec<(String, String)>,
    /// The first 4 KiB of the body.
    pub response_body: String,
    /// The error class, on failure.
    pub error_class: Option<String>,
    /// The error, on failure.
    pub error: Option<String>,
    /// 2xx.
    pub success: bool,
}

/// One attempt to record, with what follows it.
#[derive(Debug, Clone)]
pub struct Recording {
    /// The delivery as it was read before the attempt.
    pub work: DeliveryWork,
    /// The attempt.
    pub record: AttemptRecord,
    /// What follows.
    pub next: Next,
    /// A resend, recover or test rather than the schedule.
    pub manual: bool,
}

/// What happens after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Delivered.
    Succeeded,
    /// Try again at this instant.
    RetryAt(DateTime<Utc>),
    /// Give up on this delivery.
    GiveUp(String),
    /// Give up and disable the endpoint for this reason.
    DisableEndpoint(String),
}

/// Delivery counts for one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct EndpointStats {
    /// Deliveries by state, over the endpoint's retained history.
    pub pending: i64,
    /// Delivered.
    pub succeeded: i64,
    /// Given up (can be recovered).
    pub failed: i64,
    /// Attempts since `since`.
    pub attempts: i64,
    /// Successful attempts since `since`.
    pub successful_attempts: i64,
    /// Mean attempt latency since `since`.
    pub mean_latency_ms: Option<f64>,
    /// The window's start.
    pub since: DateTime<Utc>,
}

/// The body of a message: Standard Webhooks' recommended shape.
fn message_body(
    id: &MessageId,
    event_type: &str,
    time: DateTime<Utc>,
    event_id: Option<&str>,
    subject: Option<&str>,
    data: &serde_json::Value,
) -> serde_json::Value {
    let mut body = serde_json::json!({
        "id": id.to_string(),
        "type": event_type,
        "timestamp": time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    if let Some(e) = event_id {
        body["event_id"] = e.into();
    }
    if let Some(s) = subject {
        body["subject"] = s.into();
    }
    body["data"] = data.clone();
    body
}

fn deliver_job(
    org: &OrgId,
    delivery: &str,
    generation: i32,
    attempt: i32,
    run_at: DateTime<Utc>,
    priority: i32,
) -> NewJob {
    let mut job = NewJob::new(
        DELIVER_KIND,
        serde_json::json!({ "delivery_id": delivery, "generation": generation, "attempt": attempt }),
    );
    job.org_id = Some(*org);
    job.run_at = Some(run_at);
    job.priority = priority;
    job.max_attempts = 25;
    job.dedupe_key = Some(format!("{delivery}:{generation}:{attempt}"));
    job
}

/// Inserts deliveries of `message` to `endpoints` and their first jobs; endpoints that are
/// disabled get a failed delivery instead, which `recover` can send once re-enabled.
#[allow(clippy::too_many_arguments)]
async fn insert_deliveries(
    tx: &DatabaseTransaction,
    now: DateTime<Utc>,
    org: &OrgId,
    message: &MessageId,
    endpoints: &[(String, bool)],
    priority: i32,
) -> StoreResult<Vec<DeliveryId>> {
    let backend = tx.get_database_backend();
    let mut ids = Vec::with_capacity(endpoints.len());
    let mut jobs = 0;
    for (endpoint, enabled) in endpoints {
        let id = DeliveryId::new_at(now);
        let (status, error): (&str, Option<&str>) = if *enabled {
            ("pending", None)
        } else {
            ("failed", Some("endpoint disabled"))
        };
        tx.execute_raw(stmt(
            backend,
            "INSERT INTO deliveries (id, org_id, message_id, endpoint_id, status, generation, attempts, \
             round_attempts, round_started_at, next_attempt_at, last_attempt_at, last_status_code, last_error, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 1, 0, 0, $6, $7, NULL, NULL, $8, $6, $6)",
            vec![
                id.to_string().into(),
                org.to_string().into(),
                message.to_string().into(),
                endpoint.clone().into(),
                status.into(),
                to_micros(now).into(),
                enabled.then(|| to_micros(now)).into(),
                error.map(str::to_owned).into(),
            ],
        ))
        .await?;
        if *enabled {
            enqueue_in_quietly(
                tx,
                now,
                deliver_job(org, &id.to_string(), 1, 1, now, priority),
            )
            .await?;
            jobs += 1;
        }
        ids.push(id);
    }
    if jobs > 0 {
        notify_in(tx, DELIVER_KIND).await?;
    }
    Ok(ids)
}

/// Columns of a `delivery_attempts` row.
const ATTEMPT_COLUMNS: usize = 14;

/// What the delivery worker reads for a delivery: the delivery, its message's payload, its
/// endpoint and the endpoint's breaker. Followed by a `WHERE` on `d.id`.
const WORK_SELECT: &str = "SELECT d.id, d.org_id, d.message_id, d.endpoint_id, d.status, \
    d.generation, d.attempts, d.round_attempts, d.round_started_at, m.payload, m.priority, e.url, \
    e.enabled, e.timeout_ms, e.rate_limit_per_second, e.secret_sealed, e.previous_secret_sealed, \
    e.previous_secret_expires_at, e.headers_sealed, e.failing_since, e.last_success_at, b.state, \
    b.consecutive_failures, b.opened_at, b.probe_at, b.probe_started_at \
    FROM deliveries d JOIN messages m ON m.id = d.message_id \
    JOIN endpoints e ON e.id = d.endpoint_id \
    LEFT JOIN breakers b ON b.org_id = d.org_id AND b.target = ('endpoint:' || d.endpoint_id)";

/// A delivery's state after an attempt, if it is still the one the attempt was made for:
/// `$1` status, `$2` next attempt, `$3` attempted at, `$4` status code, `$5` error, `$6` now,
/// `$7` id, `$8` generation, `$9` attempts before.
const DELIVERY_UPDATE: &str = "UPDATE deliveries SET status = $1, attempts = attempts + 1, \
    round_attempts = round_attempts + 1, next_attempt_at = $2, last_attempt_at = $3, \
    last_status_code = $4, last_error = $5, updated_at = $6 \
    WHERE id = $7 AND generation = $8 AND attempts = $9 AND status = 'pending'";

const ATTEMPT_INSERT: &str = "INSERT INTO delivery_attempts (id, org_id, delivery_id, message_id, \
    endpoint_id, attempted_at, status_code, latency_ms, response_headers, response_body, error_class, \
    error, success, trigger)";

/// A batch of recordings on PostgreSQL, in one statement that is the same text for every
/// batch size, so it is prepared once per connection: `$1` the batch as a JSON array (the
/// values of [`DELIVERY_UPDATE`] and the attempt row, with the recording's index `i`), `$2`
/// now. Updates the deliveries still in the state their attempt was made for, inserts an
/// attempt for each of those, and returns their indexes. A delivery appears at most once in
/// the array: [`pg_record_statement`] keeps its first recording only.
const PG_RECORD: &str = "WITH \
    x AS (SELECT * FROM json_to_recordset($1::json) AS x(i int, id text, generation int, \
          attempts int, status text, next_at bigint, attempted_at bigint, code int, error text, \
          attempt_id text, org_id text, message_id text, endpoint_id text, latency_ms int, \
          headers text, body text, error_class text, attempt_error text, success boolean, \
          trigger text)), \
    u AS (UPDATE deliveries d SET status = x.status, attempts = d.attempts + 1, \
          round_attempts = d.round_attempts + 1, next_attempt_at = x.next_at, \
          last_attempt_at = x.attempted_at, last_status_code = x.code, last_error = x.error, \
          updated_at = $2 \
          FROM x WHERE d.id = x.id AND d.generation = x.generation AND d.attempts = x.attempts \
          AND d.status = 'pending' RETURNING x.i), \
    a AS (INSERT INTO delivery_attempts (id, org_id, delivery_id, message_id, endpoint_id, \
          attempted_at, status_code, latency_ms, response_headers, response_body, error_class, \
          error, success, trigger) \
          SELECT x.attempt_id, x.org_id, x.id, x.message_id, x.endpoint_id, x.attempted_at, x.code, \
          x.latency_ms, x.headers, x.body, x.error_class, x.attempt_error, x.success, x.trigger \
          FROM x JOIN u ON u.i = x.i) \
    SELECT i FROM u";

/// What an attempt does to its endpoint's health columns.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Health {
    /// Nothing to write (the usual case: healthy, and `last_success_at` fresh).
    Unchanged,
    /// A success after failures, or the minutely `last_success_at`.
    Succeeded,
    /// The first failure since the last success.
    Failing,
}

/// A recording turned into the rows it writes.
struct Planned {
    work: DeliveryWork,
    next: Next,
    /// [`DELIVERY_UPDATE`]'s values.
    update: [Value; 9],
    attempt: [Value; ATTEMPT_COLUMNS],
    health: Health,
    /// Whether anything beyond the delivery and attempt rows is written.
    follows_up: bool,
}

/// Text PostgreSQL can store: it refuses NUL in `text`, and an endpoint may answer with any
/// bytes. U+FFFD, as for the invalid UTF-8 already replaced.
fn storable(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text
    }
}

fn plan(
    now: DateTime<Utc>,
    Recording {
        work,
        record,
        next,
        manual,
    }: Recording,
) -> Planned {
    let at = to_micros(now);
    let (status, next_at, error): (&str, Option<i64>, Option<String>) = match &next {
        Next::Succeeded => ("succeeded", None, None),
        Next::RetryAt(t) => ("pending", Some(to_micros(*t)), record.error.clone()),
        Next::GiveUp(reason) | Next::DisableEndpoint(reason) => {
            ("failed", None, Some(reason.clone()))
        }
    };
    let attempted_at = to_micros(record.attempted_at);
    let code = record.status_code.map(i32::from);
    let update = [
        status.into(),
        next_at.into(),
        attempted_at.into(),
        code.into(),
        error.map(storable).into(),
        at.into(),
        work.delivery_id.to_string().into(),
        work.generation.into(),
        work.attempts.into(),
    ];
    // The endpoint's health is written only when it changes (or once a minute for
    // `last_success_at`), so a healthy endpoint costs no statement per delivery.
    let fresh = work
        .last_success_at
        .is_some_and(|t| now - t < TimeDelta::minutes(1));
    let health = if record.success && (work.failing_since.is_some() || !fresh) {
        Health::Succeeded
    } else if !record.success && work.failing_since.is_none() {
        Health::Failing
    } else {
        Health::Unchanged
    };
    let headers = serde_json::to_string(&record.response_headers).unwrap_or_else(|_| "[]".into());
    let attempt = [
        AttemptId::new_at(now).to_string().into(),
        work.org_id.to_string().into(),
        work.delivery_id.to_string().into(),
        work.message_id.clone().into(),
        work.endpoint_id.clone().into(),
        attempted_at.into(),
        code.into(),
        i32::try_from(record.latency_ms).unwrap_or(i32::MAX).into(),
        storable(headers).into(),
        storable(record.response_body).into(),
        record.error_class.into(),
        record.error.map(storable).into(),
        record.success.into(),
        if manual { "manual" } else { "scheduled" }.into(),
    ];
    let follows_up =
        health != Health::Unchanged || matches!(next, Next::RetryAt(_) | Next::DisableEndpoint(_));
    Planned {
        work,
        next,
        update,
        attempt,
        health,
        follows_up,
    }
}

/// [`PG_RECORD`]'s statement for a batch.
fn pg_record_statement(now: DateTime<Utc>, planned: &[Planned]) -> sea_orm::Statement {
    const NAMES: [&str; 20] = [
        "i",
        "status",
        "next_at",
        "attempted_at",
        "code",
        "error",
        "id",
        "generation",
        "attempts",
        "attempt_id",
        "org_id",
        "message_id",
        "endpoint_id",
        "latency_ms",
        "headers",
        "body",
        "error_class",
        "attempt_error",
        "success",
        "trigger",
    ];
    // A delivery named twice in a batch is sent once, its first recording: `UPDATE … FROM`
    // would pick either, and the first is what SQLite's point updates record.
    let mut seen = std::collections::HashSet::new();
    let rows: Vec<serde_json::Value> = planned
        .iter()
        .enumerate()
        .filter(|(_, p)| seen.insert(p.work.delivery_id))
        .map(|(i, p)| {
            let u = &p.update;
            let a = &p.attempt;
            // The update's values without `$6` (now, the statement's `$2`), then the
            // attempt's without the columns the update already names.
            let values = std::iter::once(serde_json::Value::from(i))
                .chain(
                    [&u[0], &u[1], &u[2], &u[3], &u[4], &u[6], &u[7], &u[8]]
                        .map(crate::sql::json_value),
                )
                .chain(
                    [
                        &a[0], &a[1], &a[3], &a[4], &a[7], &a[8], &a[9], &a[10], &a[11], &a[12],
                        &a[13],
                    ]
                    .map(crate::sql::json_value),
                );
            NAMES
                .iter()
                .map(|n| (*n).to_owned())
                .zip(values)
                .collect::<serde_json::Map<_, _>>()
                .into()
        })
        .collect();
    stmt(
        sea_orm::DbBackend::Postgres,
        PG_RECORD,
        vec![
            serde_json::Value::Array(rows).to_string().into(),
            to_micros(now).into(),
        ],
    )
}

/// Fans `event` out inside the caller's transaction: one message, and a delivery to every
/// endpoint of its organisation whose subscriptions and filter match. Idempotent per event.
/// Returns the message, if any endpoint matched and it is new.
pub(crate) async fn fan_out_in(
    tx: &DatabaseTransaction,
    now: DateTime<Utc>,
    event: FanOut<'_>,
) -> StoreResult<Option<MessageId>> {
    let rows = endpoints_in(tx, event.org).await?;
    fan_out_to(tx, now, event, &rows).await
}

/// An organisation's endpoints as [`fan_out_to`] reads them.
pub(crate) async fn endpoints_in<C: ConnectionTrait>(
    tx: &C,
    org: &OrgId,
) -> StoreResult<Vec<sea_orm::QueryResult>> {
    Ok(tx
        .query_all_raw(stmt(
            tx.get_database_backend(),
            "SELECT id, event_types, filter, enabled FROM endpoints WHERE org_id = $1 ORDER BY id",
            vec![org.to_string().into()],
        ))
        .await?)
}

/// Whether any of the endpoints `rows` ([`endpoints_in`]) subscribes to `event_type`, so
/// that [`fan_out_to`] may write something for it (its payload filters are not looked at:
/// `true` can still end in no message).
pub(crate) fn any_subscribed(rows: &[sea_orm::QueryResult], event_type: &str) -> StoreResult<bool> {
    for r in rows {
        let patterns: Vec<EventPattern> =
            serde_json::from_str(&r.try_get::<String>("", "event_types")?).map_err(corrupt)?;
        if subscribed(&patterns, event_type) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// [`fan_out_in`] with the organisation's endpoints already read ([`endpoints_in`]), for
/// routing many events of one organisation in one transaction.
pub(crate) async fn fan_out_to(
    tx: &DatabaseTransaction,
    now: DateTime<Utc>,
    event: FanOut<'_>,
    rows: &[sea_orm::QueryResult],
) -> StoreResult<Option<MessageId>> {
    let backend = tx.get_database_backend();
    if rows.is_empty() {
        return Ok(None);
    }
    let id = MessageId::new_at(now);
    let body = message_body(
        &id,
        event.event_type,
        event.time,
        Some(event.event_id),
        event.subject,
        event.data,
    );
    let mut matched = Vec::new();
    for r in rows {
        let patterns: Vec<EventPattern> =
            serde_json::from_str(&r.try_get::<String>("", "event_types")?).map_err(corrupt)?;
        if !subscribed(&patterns, event.event_type) {
            continue;
        }
        if let Some(f) = r.try_get::<Option<String>>("", "filter")? {
            let filter: Filter = serde_json::from_str(&f).map_err(corrupt)?;
            if !filter.matches(&body) {
                continue;
            }
        }
        matched.push((r.try_get::<String>("", "id")?, r.try_get("", "enabled")?));
    }
    if matched.is_empty() {
        return Ok(None);
    }
    let inserted = tx
        .execute_raw(stmt(
            backend,
            "INSERT INTO messages (id, org_id, event_type, event_id, payload, idempotency_key, idempotency_hash, \
             priority, created_at) VALUES ($1, $2, $3, $4, $5, NULL, NULL, $6, $7) \
             ON CONFLICT (org_id, event_id) DO NOTHING",
            vec![
                id.to_string().into(),
                event.org.to_string().into(),
                event.event_type.into(),
                event.event_id.into(),
                body.to_string().into(),
                event.priority.into(),
                to_micros(now).into(),
            ],
        ))
        .await?
        .rows_affected();
    if inserted == 0 {
        if event.replay {
            replay_in(tx, now, event.org, event.event_id, &matched).await?;
        }
        return Ok(None);
    }
    insert_deliveries(tx, now, event.org, &id, &matched, event.priority).await?;
    Ok(Some(id))
}

/// Sends an event's existing message again: a new generation for each delivery to a
/// matching enabled endpoint, and a first delivery to matching endpoints added since.
async fn replay_in(
    tx: &DatabaseTransaction,
    now: DateTime<Utc>,
    org: &OrgId,
    event_id: &str,
    matched: &[(String, bool)],
) -> StoreResult<()> {
    let backend = tx.get_database_backend();
    let Some(message) = tx
        .query_one_raw(stmt(
            backend,
            "SELECT id, priority FROM messages WHERE org_id = $1 AND event_id = $2",
            vec![org.to_string().into(), event_id.into()],
        ))
        .await?
    else {
        return Ok(());
    };
    let message_id: String = message.try_get("", "id")?;
    let priority: i32 = message.try_get("", "priority")?;
    let existing = tx
        .query_all_raw(stmt(
            backend,
            "SELECT d.id, d.endpoint_id, d.generation, d.attempts, m.priority FROM deliveries d \
             JOIN messages m ON m.id = d.message_id WHERE d.message_id = $1",
            vec![message_id.clone().into()],
        ))
        .await?;
    let mut resend = Vec::new();
    let mut have = std::collections::BTreeSet::new();
    for row in existing {
        let endpoint: String = row.try_get("", "endpoint_id")?;
        if matched
            .iter()
            .any(|(e, enabled)| *enabled && *e == endpoint)
        {
            resend.push(row);
        }
        have.insert(endpoint);
    }
    Store::resend_in(tx, now, org, &resend).await?;
    let added: Vec<(String, bool)> = matched
        .iter()
        .filter(|(e, enabled)| *enabled && !have.contains(e))
        .cloned()
        .collect();
    if !added.is_empty() {
        insert_deliveries(
            tx,
            now,
            org,
            &message_id.parse().map_err(corrupt)?,
            &added,
            priority,
        )
        .await?;
    }
    Ok(())
}

impl Store {
    async fn endpoint_row<C: ConnectionTrait>(
        db: &C,
        org: &OrgId,
        id: &EndpointId,
    ) -> StoreResult<sea_orm::QueryResult> {
        db.query_one_raw(stmt(
            db.get_database_backend(),
            "SELECT * FROM endpoints WHERE id = $1 AND org_id = $2",
            vec![id.to_string().into(), org.to_string().into()],
        ))
        .await?
        .ok_or(StoreError::NotFound)
    }

    fn seal_headers(
        &self,
        id: &EndpointId,
        headers: &BTreeMap<String, String>,
    ) -> StoreResult<(String, Option<String>)> {
        let names = serde_json::to_string(&headers.keys().collect::<Vec<_>>()).map_err(corrupt)?;
        if headers.is_empty() {
            return Ok((names, None));
        }
        let plain = serde_json::to_vec(headers).map_err(corrupt)?;
        let sealed = self.master_key()?.seal(&format!("{id}:headers"), &plain)?;
        Ok((names, Some(sealed)))
    }

    /// Creates an endpoint; returns it with its signing secret, shown this once.
    pub async fn create_endpoint(
        &self,
        org: &OrgId,
        input: EndpointInput,
        actor: &Actor,
    ) -> StoreResult<(Endpoint, String)> {
        let checked = Checked::new(
            &input.url,
            input.description,
            &input.event_types,
            input.filter,
            input.tags,
            input.headers,
            input.rate_limit_per_second,
            input.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS),
        )?;
        let secret = parse_secret(input.secret.as_deref())?;
        let now = self.clock().now();
        let id = EndpointId::new_at(now);
        let sealed = self.master_key()?.seal(&id.to_string(), secret.key())?;
        let (names, headers_sealed) = self.seal_headers(&id, &checked.headers)?;
        let enabled = input.enabled.unwrap_or(true);
        let tx = self.write_tx().await?;
        tx.execute_raw(stmt(
            self.backend(),
            "INSERT INTO endpoints (id, org_id, url, description, event_types, filter, tags, header_names, \
             headers_sealed, rate_limit_per_second, timeout_ms, enabled, disabled_reason, disabled_at, \
             secret_sealed, previous_secret_sealed, previous_secret_expires_at, failing_since, last_success_at, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, NULL, NULL, \
             $13, NULL, NULL, NULL, NULL, $14, $14)",
            vec![
                id.to_string().into(),
                org.to_string().into(),
                checked.url.clone().into(),
                checked.description.clone().into(),
                checked.event_types_json().into(),
                checked.filter.as_ref().map(|f| f.to_json().to_string()).into(),
                serde_json::to_string(&checked.tags).map_err(corrupt)?.into(),
                names.into(),
                headers_sealed.into(),
                checked.rate.map(|r| i32::try_from(r).unwrap_or(i32::MAX)).into(),
                i32::try_from(checked.timeout_ms).unwrap_or(i32::MAX).into(),
                enabled.into(),
                sealed.into(),
                to_micros(now).into(),
            ],
        ))
        .await?;
        let view = to_endpoint(&Self::endpoint_row(&tx, org, &id).await?)?;
        audit::append(
            &tx,
            org,
            now,
            Change {
                actor,
                action: "endpoint.create",
                target_type: "endpoint",
                target_id: id.to_string(),
                before: None,
                after: serde_json::to_value(&view).ok(),
            },
        )
        .await?;
        tx.commit().await?;
        Ok((view, secret.expose()))
    }

    /// `org`'s endpoints, oldest first.
    pub async fn list_endpoints(
        &self,
        org: &OrgId,
        page: &PageRequest,
    ) -> StoreResult<Page<Endpoint>> {
        let limit = page.limit();
        let rows = self
            .connection()
            .query_all_raw(stmt(
                self.backend(),
                "SELECT * FROM endpoints WHERE org_id = $1 AND id > $2 ORDER BY id LIMIT $3",
                vec![
                    org.to_string().into(),
                    page.after.clone().unwrap_or_default().into(),
                    i64::try_from(limit + 1).unwrap_or(i64::MAX).into(),
                ],
            ))
            .await?;
        let items = rows
            .iter()
            .map(to_endpoint)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(items, limit, |e| e.id.to_string()))
    }

    /// One endpoint.
    pub async fn get_endpoint(&self, org: &OrgId, id: &EndpointId) -> StoreResult<Endpoint> {
        to_endpoint(&Self::endpoint_row(self.connection(), org, id).await?)
    }

    /// Changes an endpoint. Enabling it clears its failure history, so a fresh failing period
    /// is needed before it can be disabled again automatically.
    pub async fn update_endpoint(
        &self,
        org: &OrgId,
        id: &EndpointId,
        patch: EndpointPatch,
        actor: &Actor,
    ) -> StoreResult<Endpoint> {
        let now = self.clock().now();
        let tx = self.write_tx().await?;
        let before = to_endpoint(&Self::endpoint_row(&tx, org, id).await?)?;
        let headers_given = patch.headers.is_some();
        let checked = Checked::new(
            patch.url.as_deref().unwrap_or(&before.url),
            patch
                .description
                .unwrap_or_else(|| before.description.clone()),
            patch.event_types.as_deref().unwrap_or(&before.event_types),
            match patch.filter {
                Some(f) => f,
                None => before.filter.clone(),
            },
            patch.tags.unwrap_or_else(|| before.tags.clone()),
            patch.headers.unwrap_or_default(),
            match patch.rate_limit_per_second {
                Some(r) => r,
                None => before.rate_limit_per_second,
            },
            patch.timeout_ms.unwrap_or(before.timeout_ms),
        )?;
        let enabled = patch.enabled.unwrap_or(before.enabled);
        let reenabled = enabled && !before.enabled;
        let mut sql = "UPDATE endpoints SET url = $1, description = $2, event_types = $3, filter = $4, tags = $5, \
                       rate_limit_per_second = $6, timeout_ms = $7, enabled = $8, updated_at = $9"
            .to_owned();
        let mut values: Vec<Value> = vec![
            checked.url.clone().into(),
            checked.description.clone().into(),
            checked.event_types_json().into(),
            checked
                .filter
                .as_ref()
                .map(|f| f.to_json().to_string())
                .into(),
            serde_json::to_string(&checked.tags)
                .map_err(corrupt)?
                .into(),
            checked
                .rate
                .map(|r| i32::try_from(r).unwrap_or(i32::MAX))
                .into(),
            i32::try_from(checked.timeout_ms).unwrap_or(i32::MAX).into(),
            enabled.into(),
            to_micros(now).into(),
        ];
        if headers_given {
            let (names, sealed) = self.seal_headers(id, &checked.headers)?;
            values.push(names.into());
            values.push(sealed.into());
            sql.push_str(&format!(
                ", header_names = ${}, headers_sealed = ${}",
                values.len() - 1,
                values.len()
            ));
        }
        if reenabled {
            sql.push_str(", disabled_reason = NULL, disabled_at = NULL, failing_since = NULL");
        } else if !enabled && before.enabled {
            values.push("disabled by an operator".into());
            values.push(to_micros(now).into());
            sql.push_str(&format!(
                ", disabled_reason = ${}, disabled_at = ${}",
                values.len() - 1,
                values.len()
            ));
        }
        values.push(id.to_string().into());
        sql.push_str(&format!(" WHERE id = ${}", values.len()));
        tx.execute_raw(stmt(self.backend(), &sql, values)).await?;
        let after = to_endpoint(&Self::endpoint_row(&tx, org, id).await?)?;
        audit::append(
            &tx,
            org,
            now,
            Change {
                actor,
                action: "endpoint.update",
                target_type: "endpoint",
                target_id: id.to_string(),
                before: serde_json::to_value(&before).ok(),
                after: serde_json::to_value(&after).ok(),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(after)
    }

    /// Deletes an endpoint with its deliveries and attempts (its messages stay for the other
    /// endpoints they went to).
    pub async fn delete_endpoint(
        &self,
        org: &OrgId,
        id: &EndpointId,
        actor: &Actor,
    ) -> StoreResult<()> {
        let now = self.clock().now();
        let tx = self.write_tx().await?;
        let before = to_endpoint(&Self::endpoint_row(&tx, org, id).await?)?;
        for sql in [
            "DELETE FROM delivery_attempts WHERE endpoint_id = $1",
            "DELETE FROM deliveries WHERE endpoint_id = $1",
            "DELETE FROM endpoints WHERE id = $1",
        ] {
            tx.execute_raw(stmt(self.backend(), sql, vec![id.to_string().into()]))
                .await?;
        }
        audit::append(
            &tx,
            org,
            now,
            Change {
                actor,
                action: "endpoint.delete",
                target_type: "endpoint",
                target_id: id.to_string(),
                before: serde_json::to_value(&before).ok(),
                after: None,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replaces an endpoint's secret (with `secret`, or a generated one); the old one keeps
    /// signing beside it for `grace`. Returns the new secret, shown this once.
    pub async fn rotate_endpoint_secret(
        &self,
        org: &OrgId,
        id: &EndpointId,
        secret: Option<&str>,
        grace: TimeDelta,
        actor: &Actor,
    ) -> StoreResult<(Endpoint, String)> {
        let new = parse_secret(secret)?;
        let now = self.clock().now();
        let sealed = self.master_key()?.seal(&id.to_string(), new.key())?;
        let tx = self.write_tx().await?;
        Self::endpoint_row(&tx, org, id).await?;
        tx.execute_raw(stmt(
            self.backend(),
            "UPDATE endpoints SET previous_secret_sealed = secret_sealed, previous_secret_expires_at = $1, \
             secret_sealed = $2, updated_at = $3 WHERE id = $4",
            vec![
                to_micros(now + grace).into(),
                sealed.into(),
                to_micros(now).into(),
                id.to_string().into(),
            ],
        ))
        .await?;
        let view = to_endpoint(&Self::endpoint_row(&tx, org, id).await?)?;
        audit::append(
            &tx,
            org,
            now,
            Change {
                actor,
                action: "endpoint.rotate_secret",
                target_type: "endpoint",
                target_id: id.to_string(),
                before: None,
                after: serde_json::json!({ "previous_secret_expires_at": view.previous_secret_expires_at })
                    .into(),
            },
        )
        .await?;
        tx.commit().await?;
        Ok((view, new.expose()))
    }

    /// Creates a message through the API and delivers it to every matching endpoint (or only
    /// to `only`). With an idempotency key, a second call within `idempotency_window` returns
    /// the first message (`false`: not created) instead of sending again; the same key with a
    /// different body is a conflict.
    pub async fn create_message(
        &self,
        org: &OrgId,
        input: MessageInput,
        idempotency_key: Option<&str>,
        idempotency_window: TimeDelta,
        only: Option<&EndpointId>,
    ) -> StoreResult<(Message, bool)> {
        let mut errors = ValidationErrors::default();
        if !wedsync_core::endpoint::is_event_type(&input.event_type) {
            errors.add(
                "event_type",
                "an event type is dot-separated lowercase segments, e.g. invoice.sent",
            );
        }
        if let Some(k) = idempotency_key
            && (k.is_empty() || k.len() > 255)
        {
            errors.add(
                "Idempotency-Key",
                "an idempotency key is 1 to 255 characters",
            );
        }
        errors.into_result(())?;
        let now = self.clock().now();
        let id = MessageId::new_at(now);
        let body = message_body(&id, &input.event_type, now, None, None, &input.data);
        let text = body.to_string();
        if text.len() > MAX_PAYLOAD_BYTES {
            return Err(StoreError::Invalid(ValidationErrors::single(
                "data",
                format!("a message is at most {MAX_PAYLOAD_BYTES} bytes"),
            )));
        }
        let hash = idempotency_key.map(|_| {
            hex::encode(Sha256::digest(
                format!(
                    "{}\n{}\n{}",
                    input.event_type,
                    only.map(ToString::to_string).unwrap_or_default(),
                    input.data
                )
                .as_bytes(),
            ))
        });
        let backend = self.backend();
        let tx = self.write_tx().await?;
        if let Some(key) = idempotency_key {
            let existing = tx
                .query_one_raw(stmt(
                    backend,
                    "SELECT * FROM messages WHERE org_id = $1 AND idempotency_key = $2",
                    vec![org.to_string().into(), key.into()],
                ))
                .await?;
            if let Some(row) = existing {
                let created = from_micros(row.try_get("", "created_at")?);
                if created + idempotency_window > now {
                    if row.try_get::<Option<String>>("", "idempotency_hash")? != hash {
                        return Err(StoreError::Conflict(
                            "this Idempotency-Key was used for a different request".into(),
                        ));
                    }
                    let message = to_message(&row)?;
                    return Ok((message, false));
                }
                // The key's window is over: release it.
                tx.execute_raw(stmt(
                    backend,
                    "UPDATE messages SET idempotency_key = NULL WHERE id = $1",
                    vec![row.try_get::<String>("", "id")?.into()],
                ))
                .await?;
            }
        }
        let rows = tx
            .query_all_raw(stmt(
                backend,
                "SELECT id, event_types, filter, enabled FROM endpoints WHERE org_id = $1 ORDER BY id",
                vec![org.to_string().into()],
            ))
            .await?;
        let mut matched = Vec::new();
        for r in &rows {
            let endpoint: String = r.try_get("", "id")?;
            if let Some(only) = only {
                if endpoint == only.to_string() {
                    matched.push((endpoint, r.try_get("", "enabled")?));
                }
                continue;
            }
            let patterns: Vec<EventPattern> =
                serde_json::from_str(&r.try_get::<String>("", "event_types")?).map_err(corrupt)?;
            let filter: Option<Filter> = r
                .try_get::<Option<String>>("", "filter")?
                .map(|f| serde_json::from_str(&f).map_err(corrupt))
                .transpose()?;
            if subscribed(&patterns, &input.event_type) && filter.is_none_or(|f| f.matches(&body)) {
                matched.push((endpoint, r.try_get("", "enabled")?));
            }
        }
        if only.is_some() && matched.is_empty() {
            return Err(StoreError::NotFound);
        }
        tx.execute_raw(stmt(
            backend,
            "INSERT INTO messages (id, org_id, event_type, event_id, payload, idempotency_key, idempotency_hash, \
             priority, created_at) VALUES ($1, $2, $3, NULL, $4, $5, $6, $7, $8)",
            vec![
                id.to_string().into(),
                org.to_string().into(),
                input.event_type.clone().into(),
                text.into(),
                idempotency_key.map(str::to_owned).into(),
                hash.into(),
                wedsync_core::calendar::PRIORITY_NORMAL.into(),
                to_micros(now).into(),
            ],
        ))
        .await?;
        insert_deliveries(
            &tx,
            now,
            org,
            &id,
            &matched,
            wedsync_core::calendar::PRIORITY_NORMAL,
        )
        .await?;
        let row = tx
            .query_one_raw(stmt(
                backend,
                "SELECT * FROM messages WHERE id = $1",
                vec![id.to_string().into()],
            ))
            .await?
            .ok_or(StoreError::NotFound)?;
        let message = to_message(&row)?;
        tx.commit().await?;
        self.wake_workers();
        Ok((message, true))
    }

    /// One message with its deliveries.
    pub async fn get_message(
        &self,
        org: &OrgId,
        id: &str,
    ) -> StoreResult<(Message, Vec<Delivery>)> {
        let row = self
            .connection()
            .query_one_raw(stmt(
                self.backend(),
                "SELECT * FROM messages WHERE id = $1 AND org_id = $2",
                vec![id.into(), org.to_string().into()],
            ))
            .await?
            .ok_or(StoreError::NotFound)?;
        let deliveries = self
            .connection()
            .query_all_raw(stmt(
                self.backend(),
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN messages m ON m.id = d.message_id \
                     WHERE d.message_id = $1 ORDER BY d.id"
                ),
                vec![id.into()],
            ))
            .await?
            .iter()
            .map(to_delivery)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok((to_message(&row)?, deliveries))
    }

    /// `org`'s messages, oldest first, optionally of one event type.
    pub async fn list_messages(
        &self,
        org: &OrgId,
        event_type: Option<&str>,
        page: &PageRequest,
    ) -> StoreResult<Page<Message>> {
        let limit = page.limit();
        let mut sql = "SELECT * FROM messages WHERE org_id = $1 AND id > $2".to_owned();
        let mut values: Vec<Value> = vec![
            org.to_string().into(),
            page.after.clone().unwrap_or_default().into(),
        ];
        if let Some(t) = event_type {
            values.push(t.into());
            sql.push_str(&format!(" AND event_type = ${}", values.len()));
        }
        values.push(i64::try_from(limit + 1).unwrap_or(i64::MAX).into());
        sql.push_str(&format!(" ORDER BY id LIMIT ${}", values.len()));
        let rows = self
            .connection()
            .query_all_raw(stmt(self.backend(), &sql, values))
            .await?;
        let items = rows
            .iter()
            .map(to_message)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(items, limit, |m| m.id.to_string()))
    }

    /// An endpoint's deliveries, oldest first, optionally in one state.
    pub async fn list_deliveries(
        &self,
        org: &OrgId,
        endpoint: &EndpointId,
        status: Option<&str>,
        page: &PageRequest,
    ) -> StoreResult<Page<Delivery>> {
        Self::endpoint_row(self.connection(), org, endpoint).await?;
        let limit = page.limit();
        let mut sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN messages m ON m.id = d.message_id \
             WHERE d.endpoint_id = $1 AND d.id > $2"
        );
        let mut values: Vec<Value> = vec![
            endpoint.to_string().into(),
            page.after.clone().unwrap_or_default().into(),
        ];
        if let Some(s) = status {
            values.push(s.into());
            sql.push_str(&format!(" AND d.status = ${}", values.len()));
        }
        values.push(i64::try_from(limit + 1).unwrap_or(i64::MAX).into());
        sql.push_str(&format!(" ORDER BY d.id LIMIT ${}", values.len()));
        let rows = self
            .connection()
            .query_all_raw(stmt(self.backend(), &sql, values))
            .await?;
        let items = rows
            .iter()
            .map(to_delivery)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(items, limit, |d| d.id.to_string()))
    }

    /// Attempts, newest last, for an endpoint or a message (at least one must be given).
    pub async fn list_attempts(
        &self,
        org: &OrgId,
        endpoint: Option<&EndpointId>,
        message: Option<&str>,
        page: &PageRequest,
    ) -> StoreResult<Page<Attempt>> {
        let limit = page.limit();
        let mut sql = "SELECT * FROM delivery_attempts WHERE org_id = $1 AND id > $2".to_owned();
        let mut values: Vec<Value> = vec![
            org.to_string().into(),
            page.after.clone().unwrap_or_default().into(),
        ];
        if let Some(e) = endpoint {
            Self::endpoint_row(self.connection(), org, e).await?;
            values.push(e.to_string().into());
            sql.push_str(&format!(" AND endpoint_id = ${}", values.len()));
        }
        if let Some(m) = message {
            values.push(m.into());
            sql.push_str(&format!(" AND message_id = ${}", values.len()));
        }
        values.push(i64::try_from(limit + 1).unwrap_or(i64::MAX).into());
        sql.push_str(&format!(" ORDER BY id LIMIT ${}", values.len()));
        let rows = self
            .connection()
            .query_all_raw(stmt(self.backend(), &sql, values))
            .await?;
        let items = rows
            .iter()
            .map(to_attempt)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(items, limit, |a| a.id.to_string()))
    }

    /// Starts a new generation for the given deliveries (pending ones keep their schedule):
    /// fresh retry schedule, first attempt now. Returns how many were resent.
    async fn resend_in(
        tx: &DatabaseTransaction,
        now: DateTime<Utc>,
        org: &OrgId,
        deliveries: &[sea_orm::QueryResult],
    ) -> StoreResult<u64> {
        let backend = tx.get_database_backend();
        let mut n = 0;
        for r in deliveries {
            let id: String = r.try_get("", "id")?;
            let generation: i32 = r.try_get::<i32>("", "generation")? + 1;
            let attempts: i32 = r.try_get("", "attempts")?;
            let priority: i32 = r.try_get("", "priority")?;
            tx.execute_raw(stmt(
                backend,
                "UPDATE deliveries SET status = 'pending', generation = $1, round_attempts = 0, \
                 round_started_at = $2, next_attempt_at = $2, last_error = NULL, updated_at = $2 WHERE id = $3",
                vec![generation.into(), to_micros(now).into(), id.clone().into()],
            ))
            .await?;
            let mut job = deliver_job(org, &id, generation, attempts + 1, now, priority);
            job.payload["trigger"] = "manual".into();
            enqueue_in_quietly(tx, now, job).await?;
            n += 1;
        }
        if n > 0 {
            notify_in(tx, DELIVER_KIND).await?;
        }
        Ok(n)
    }

    /// Sends a message to an endpoint again (creating the delivery if the endpoint was added
    /// after the message), whatever its state.
    pub async fn resend(
        &self,
        org: &OrgId,
        message: &str,
        endpoint: &EndpointId,
        actor: &Actor,
    ) -> StoreResult<Delivery> {
        let now = self.clock().now();
        let backend = self.backend();
        let tx = self.write_tx().await?;
        let ep = to_endpoint(&Self::endpoint_row(&tx, org, endpoint).await?)?;
        if !ep.enabled {
            return Err(StoreError::Conflict(
                "the endpoint is disabled; enable it first".into(),
            ));
        }
        let msg = tx
            .query_one_raw(stmt(
                backend,
                "SELECT id, priority FROM messages WHERE id = $1 AND org_id = $2",
                vec![message.into(), org.to_string().into()],
            ))
            .await?
            .ok_or(StoreError::NotFound)?;
        let select = "SELECT d.id, d.generation, d.attempts, m.priority FROM deliveries d \
                      JOIN messages m ON m.id = d.message_id WHERE d.message_id = $1 AND d.endpoint_id = $2";
        let pair: Vec<Value> = vec![message.into(), endpoint.to_string().into()];
        let mut rows = tx
            .query_all_raw(stmt(backend, select, pair.clone()))
            .await?;
        if rows.is_empty() {
            let id: String = msg.try_get("", "id")?;
            insert_deliveries(
                &tx,
                now,
                org,
                &id.parse().map_err(corrupt)?,
                &[(endpoint.to_string(), true)],
                msg.try_get("", "priority")?,
            )
            .await?;
        } else {
            Self::resend_in(&tx, now, org, &rows).await?;
        }
        rows = tx
            .query_all_raw(stmt(
                backend,
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN messages m ON m.id = d.message_id \
                     WHERE d.message_id = $1 AND d.endpoint_id = $2"
                ),
                pair,
            ))
            .await?;
        let delivery = to_delivery(rows.first().ok_or(StoreError::NotFound)?)?;
        audit::append(
            &tx,
            org,
            now,
            Change {
                actor,
                action: "message.resend",
                target_type: "delivery",
                target_id: delivery.id.to_string(),
                before: None,
                after: None,
            },
        )
        .await?;
        tx.commit().await?;
        self.wake_workers();
        Ok(delivery)
    }

    /// Resends every failed delivery to `endpoint` created since `since`. Returns how many.
    pub async fn recover(
        &self,
        org: &OrgId,
        endpoint: &EndpointId,
        since: DateTime<Utc>,
        actor: &Actor,
    ) -> StoreResult<u64> {
        const CHUNK: i64 = 500;
        let now = self.clock().now();
        let backend = self.backend();
        let ep = to_endpoint(&Self::endpoint_row(self.connection(), org, endpoint).await?)?;
        if !ep.enabled {
            return Err(StoreError::Conflict(
                "the endpoint is disabled; enable it first".into(),
            ));
        }
        let mut total = 0;
        loop {
            let tx = self.write_tx().await?;
            let rows = tx
                .query_all_raw(stmt(
                    backend,
                    "SELECT d.id, d.generation, d.attempts, m.priority FROM deliveries d \
                     JOIN messages m ON m.id = d.message_id \
                     WHERE d.endpoint_id = $1 AND d.status = 'failed' AND d.created_at >= $2 \
                     ORDER BY d.id LIMIT $3",
                    vec![
                        endpoint.to_string().into(),
                        to_micros(since).into(),
                        CHUNK.into(),
                    ],
                ))
                .await?;
            let n = Self::resend_in(&tx, now, org, &rows).await?;
            total += n;
            if n == 0 || rows.len() < CHUNK as usize {
                audit::append(
                    &tx,
                    org,
                    now,
                    Change {
                        actor,
                        action: "endpoint.recover",
                        target_type: "endpoint",
                        target_id: endpoint.to_string(),
                        before: None,
                        after: Some(serde_json::json!({ "since": since, "resent": total })),
                    },
                )
                .await?;
                tx.commit().await?;
                self.wake_workers();
                return Ok(total);
            }
            tx.commit().await?;
        }
    }

    /// Delivery counts and recent attempt figures for an endpoint.
    pub async fn endpoint_stats(
        &self,
        org: &OrgId,
        endpoint: &EndpointId,
        since: DateTime<Utc>,
    ) -> StoreResult<EndpointStats> {
        Self::endpoint_row(self.connection(), org, endpoint).await?;
        let backend = self.backend();
        let rows = self
            .connection()
            .query_all_raw(stmt(
                backend,
                "SELECT status, COUNT(*) AS n FROM deliveries WHERE endpoint_id = $1 GROUP BY status",
                vec![endpoint.to_string().into()],
            ))
            .await?;
        let mut stats = EndpointStats {
            pending: 0,
            succeeded: 0,
            failed: 0,
            attempts: 0,
            successful_attempts: 0,
            mean_latency_ms: None,
            since,
        };
        for r in rows {
            let n: i64 = r.try_get("", "n")?;
            match r.try_get::<String>("", "status")?.as_str() {
                "pending" => stats.pending = n,
                "succeeded" => stats.succeeded = n,
                _ => stats.failed += n,
            }
        }
        let attempts = self
            .connection()
            .query_one_raw(stmt(
                backend,
                "SELECT COUNT(*) AS n, COALESCE(SUM(CASE WHEN success THEN 1 ELSE 0 END), 0) AS ok, \
                 AVG(CAST(latency_ms AS DOUBLE PRECISION)) AS mean FROM delivery_attempts \
                 WHERE endpoint_id = $1 AND attempted_at >= $2",
                vec![endpoint.to_string().into(), to_micros(since).into()],
            ))
            .await?;
        if let Some(r) = attempts {
            stats.attempts = r.try_get("", "n")?;
            stats.successful_attempts = r.try_get("", "ok")?;
            stats.mean_latency_ms = r.try_get("", "mean")?;
        }
        Ok(stats)
    }

    /// Everything the delivery worker needs for `delivery`, or `None` when it is gone.
    pub async fn delivery_work(&self, delivery: &str) -> StoreResult<Option<DeliveryWork>> {
        let row = self
            .connection()
            .query_one_raw(stmt(
                self.backend(),
                &format!("{WORK_SELECT} WHERE d.id = $1"),
                vec![delivery.into()],
            ))
            .await?;
        row.map(|r| self.work_of(&r)).transpose()
    }

    /// [`Store::delivery_work`] for many deliveries in one query (a worker pool's claimed
    /// batch), by id; those gone are missing. One statement text for any number of ids.
    pub async fn delivery_works(
        &self,
        deliveries: &[&str],
    ) -> StoreResult<std::collections::HashMap<String, DeliveryWork>> {
        let ids = serde_json::to_string(deliveries).map_err(corrupt)?;
        let sql = if self.backend() == crate::Backend::Postgres {
            format!("{WORK_SELECT} WHERE d.id IN (SELECT json_array_elements_text($1::json))")
        } else {
            format!("{WORK_SELECT} WHERE d.id IN (SELECT value FROM json_each($1))")
        };
        let rows = self
            .connection()
            .query_all_raw(stmt(self.backend(), &sql, vec![ids.into()]))
            .await?;
        rows.iter()
            .map(|r| {
                let work = self.work_of(r)?;
                Ok((work.delivery_id.to_string(), work))
            })
            .collect()
    }

    /// A row of [`WORK_SELECT`], its secrets opened.
    fn work_of(&self, r: &sea_orm::QueryResult) -> StoreResult<DeliveryWork> {
        let key = self.master_key()?;
        let endpoint: String = r.try_get("", "endpoint_id")?;
        let now = self.clock().now();
        let mut keys = vec![key.open(&endpoint, &r.try_get::<String>("", "secret_sealed")?)?];
        if let (Some(prev), Some(until)) = (
            r.try_get::<Option<String>>("", "previous_secret_sealed")?,
            opt_time(r, "previous_secret_expires_at")?,
        ) && now < until
        {
            keys.push(key.open(&endpoint, &prev)?);
        }
        let headers = match r.try_get::<Option<String>>("", "headers_sealed")? {
            Some(sealed) => {
                serde_json::from_slice(&key.open(&format!("{endpoint}:headers"), &sealed)?)
                    .map_err(corrupt)?
            }
            None => BTreeMap::new(),
        };
        let id: String = r.try_get("", "id")?;
        let org: String = r.try_get("", "org_id")?;
        Ok(DeliveryWork {
            delivery_id: id.parse().map_err(corrupt)?,
            org_id: org.parse().map_err(corrupt)?,
            message_id: r.try_get("", "message_id")?,
            endpoint_id: endpoint,
            status: r.try_get("", "status")?,
            generation: r.try_get("", "generation")?,
            attempts: r.try_get("", "attempts")?,
            round_attempts: r.try_get("", "round_attempts")?,
            round_started_at: from_micros(r.try_get("", "round_started_at")?),
            payload: r.try_get("", "payload")?,
            priority: r.try_get("", "priority")?,
            url: r.try_get("", "url")?,
            enabled: r.try_get("", "enabled")?,
            timeout_ms: u32::try_from(r.try_get::<i32>("", "timeout_ms")?)
                .unwrap_or(DEFAULT_TIMEOUT_MS),
            rate_limit_per_second: r
                .try_get::<Option<i32>>("", "rate_limit_per_second")?
                .and_then(|v| u32::try_from(v).ok()),
            keys,
            headers,
            failing_since: opt_time(r, "failing_since")?,
            last_success_at: opt_time(r, "last_success_at")?,
            breaker: match r.try_get::<Option<String>>("", "state")? {
                Some(_) => Some(crate::breakers::row_state(r)?),
                None => None,
            },
        })
    }

    /// Marks a pending delivery failed without an attempt (its endpoint is disabled).
    pub async fn fail_undeliverable(&self, work: &DeliveryWork, reason: &str) -> StoreResult<bool> {
        let now = to_micros(self.clock().now());
        let n = self
            .connection()
            .execute_raw(stmt(
                self.backend(),
                "UPDATE deliveries SET status = 'failed', last_error = $1, next_attempt_at = NULL, updated_at = $2 \
                 WHERE id = $3 AND generation = $4 AND attempts = $5 AND status = 'pending'",
                vec![
                    reason.into(),
                    now.into(),
                    work.delivery_id.to_string().into(),
                    work.generation.into(),
                    work.attempts.into(),
                ],
            ))
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    /// Records one attempt, the delivery's new state, the endpoint's health and the next
    /// attempt's job, in one transaction. `false` (and nothing written) when the delivery has
    /// moved on since `work` was read: another run of the same job already recorded it.
    pub async fn record_attempt(
        &self,
        work: &DeliveryWork,
        record: AttemptRecord,
        next: Next,
        manual: bool,
    ) -> StoreResult<bool> {
        let done = self
            .record_attempts(vec![Recording {
                work: work.clone(),
                record,
                next,
                manual,
            }])
            .await?;
        Ok(done.first().copied().unwrap_or(false))
    }

    /// [`Store::record_attempt`] for many attempts in one transaction (group commit): one
    /// result per recording, in order.
    ///
    /// On PostgreSQL the deliveries' updates and the attempts' inserts are one statement of
    /// one text for every batch size ([`PG_RECORD`]); when nothing else follows (no retry to
    /// queue, no endpoint health to change: a healthy endpoint's usual case) it commits by
    /// itself, one round trip for the whole batch. SQLite runs point updates (it plans
    /// `UPDATE … FROM` as a scan) and one multi-row insert in its write transaction.
    pub async fn record_attempts(&self, batch: Vec<Recording>) -> StoreResult<Vec<bool>> {
        let now = self.clock().now();
        let planned: Vec<Planned> = batch.into_iter().map(|r| plan(now, r)).collect();
        if self.backend() == crate::Backend::Postgres {
            return self.record_pg(now, planned).await;
        }
        let tx = self.write_tx().await?;
        let mut out = Vec::with_capacity(planned.len());
        let mut attempts = Vec::with_capacity(planned.len());
        let mut enqueued = false;
        for p in planned {
            let updated = tx
                .execute_raw(stmt(self.backend(), DELIVERY_UPDATE, p.update.to_vec()))
                .await?
                .rows_affected();
            if updated != 1 {
                out.push(false);
                continue;
            }
            enqueued |= self.follow_up_in(&tx, now, &p).await?;
            attempts.push(p.attempt);
            out.push(true);
        }
        // The attempts in one multi-row insert.
        const ROWS: usize = 500;
        for chunk in attempts.chunks(ROWS) {
            let mut tuples = Vec::with_capacity(chunk.len());
            let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * ATTEMPT_COLUMNS);
            for row in chunk {
                tuples.push(format!(
                    "({})",
                    crate::queue::placeholders(values.len() + 1, row.len())
                ));
                values.extend(row.iter().cloned());
            }
            tx.execute_raw(stmt(
                self.backend(),
                &format!("{ATTEMPT_INSERT} VALUES {}", tuples.join(", ")),
                values,
            ))
            .await?;
        }
        self.commit_recording(tx, enqueued).await?;
        Ok(out)
    }

    /// Commits a recording transaction, waking the workers if it queued retries.
    async fn commit_recording(&self, tx: crate::WriteTx, enqueued: bool) -> StoreResult<()> {
        if enqueued {
            notify_in(&tx, DELIVER_KIND).await?;
        }
        tx.commit().await?;
        if enqueued {
            self.wake_workers();
        }
        Ok(())
    }

    /// [`Store::record_attempts`] on PostgreSQL.
    async fn record_pg(&self, now: DateTime<Utc>, planned: Vec<Planned>) -> StoreResult<Vec<bool>> {
        let statement = pg_record_statement(now, &planned);
        let recorded = |rows: Vec<sea_orm::QueryResult>| -> StoreResult<Vec<bool>> {
            let mut out = vec![false; planned.len()];
            for r in rows {
                let i: i32 = r.try_get("", "i")?;
                if let Some(slot) = usize::try_from(i).ok().and_then(|i| out.get_mut(i)) {
                    *slot = true;
                }
            }
            Ok(out)
        };
        if !planned.iter().any(|p| p.follows_up) {
            // Nothing but the statement: it commits by itself.
            return recorded(self.connection().query_all_raw(statement).await?);
        }
        let tx = self.write_tx().await?;
        let out = recorded(tx.query_all_raw(statement).await?)?;
        let mut enqueued = false;
        for (p, _) in planned
            .iter()
            .zip(&out)
            .filter(|(p, done)| **done && p.follows_up)
        {
            enqueued |= self.follow_up_in(&tx, now, p).await?;
        }
        self.commit_recording(tx, enqueued).await?;
        Ok(out)
    }

    /// What a recorded attempt changes besides its delivery and attempt rows: the endpoint's
    /// health, the next attempt's job, or the endpoint's disabling. Returns whether it
    /// queued a retry.
    async fn follow_up_in(
        &self,
        tx: &DatabaseTransaction,
        now: DateTime<Utc>,
        p: &Planned,
    ) -> StoreResult<bool> {
        if !p.follows_up {
            return Ok(false);
        }
        let at = to_micros(now);
        let backend = self.backend();
        let work = &p.work;
        match p.health {
            Health::Unchanged => {}
            Health::Succeeded => {
                tx.execute_raw(stmt(
                    backend,
                    "UPDATE endpoints SET failing_since = NULL, last_success_at = $1 WHERE id = $2 AND \
                     (failing_since IS NOT NULL OR last_success_at IS NULL OR last_success_at < $3)",
                    vec![
                        at.into(),
                        work.endpoint_id.clone().into(),
                        (at - 60_000_000).into(),
                    ],
                ))
                .await?;
            }
            Health::Failing => {
                tx.execute_raw(stmt(
                    backend,
                    "UPDATE endpoints SET failing_since = $1 WHERE id = $2 AND failing_since IS NULL",
                    vec![at.into(), work.endpoint_id.clone().into()],
                ))
                .await?;
            }
        }
        match &p.next {
            Next::RetryAt(t) => {
                enqueue_in_quietly(
                    tx,
                    now,
                    deliver_job(
                        &work.org_id,
                        &work.delivery_id.to_string(),
                        work.generation,
                        work.attempts + 2,
                        *t,
                        work.priority,
                    ),
                )
                .await?;
                Ok(true)
            }
            Next::DisableEndpoint(reason) => {
                self.disable_in(tx, now, &work.org_id, &work.endpoint_id, reason)
                    .await?;
                Ok(false)
            }
            Next::Succeeded | Next::GiveUp(_) => Ok(false),
        }
    }

    /// Disables an endpoint automatically: the reason is kept, an `endpoint.disabled`
    /// operational event goes out (to other endpoints subscribed to it) and the audit log
    /// records it.
    async fn disable_in(
        &self,
        tx: &DatabaseTransaction,
        now: DateTime<Utc>,
        org: &OrgId,
        endpoint: &str,
        reason: &str,
    ) -> StoreResult<()> {
        let changed = tx
            .execute_raw(stmt(
                tx.get_database_backend(),
                "UPDATE endpoints SET enabled = $1, disabled_reason = $2, disabled_at = $3, updated_at = $3 \
                 WHERE id = $4 AND enabled = $5",
                vec![
                    false.into(),
                    reason.into(),
                    to_micros(now).into(),
                    endpoint.into(),
                    true.into(),
                ],
            ))
            .await?
            .rows_affected();
        if changed == 0 {
            return Ok(());
        }
        let data = serde_json::json!({ "endpoint_id": endpoint, "reason": reason });
        crate::outbox::emit(tx, org, now, ENDPOINT_DISABLED, endpoint, data.clone()).await?;
        audit::append(
            tx,
            org,
            now,
            Change {
                actor: &Actor::System,
                action: "endpoint.disable",
                target_type: "endpoint",
                target_id: endpoint.to_owned(),
                before: None,
                after: Some(data),
            },
        )
        .await?;
        Ok(())
    }

    /// Deletes messages created before `before` whose deliveries are all finished, with their
    /// deliveries and attempts. Returns how many messages went.
    pub async fn prune_outbound(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        self.prune_in_chunks(
            "SELECT m.id FROM messages m WHERE m.created_at < $1 AND NOT EXISTS \
             (SELECT 1 FROM deliveries d WHERE d.message_id = m.id AND d.status = 'pending') \
             ORDER BY m.id LIMIT $2",
            to_micros(before),
            &[
                ("delivery_attempts", "message_id"),
                ("deliveries", "message_id"),
            ],
            "messages",
        )
        .await
    }
}

//! Journeys as data: each journey has one editable draft, guarded by a `revision` counter
//! (optimistic locking: a save names the revision it started from, and a stale one is
//! refused with the current revision), and numbered published versions that never change.
//! Rolling back publishes an earlier version's document again as a new version, so the
//! history only grows. Documents are validated by the caller (`wedsync-journeys`) before
//! they reach the store; the store keeps them as JSON.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, QueryResult, Value};
use serde::Serialize;
use wedsync_core::clock::{from_micros, to_micros};
use wedsync_core::id::{JourneyId, OrgId};
use wedsync_core::validate::ValidationErrors;

use crate::audit::{self, Change};
use crate::page::{Page, PageRequest, paginate};
use crate::{Actor, Store, StoreError, StoreResult};

use crate::sql::stmt;

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Conflict(format!("stored journey data is unreadable: {e}"))
}

/// A journey as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Journey {
    /// `jny_…`.
    #[schema(value_type = String)]
    pub id: JourneyId,
    /// Its name.
    pub name: String,
    /// For people.
    pub description: String,
    /// The draft document (`{nodes, edges, viewport}`).
    pub draft: serde_json::Value,
    /// The draft's revision: send it back with a save; a stale one gets 409.
    pub revision: i32,
    /// The version new instances start on; none until the first publish.
    pub published_version: Option<i32>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// One published version.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct JourneyVersion {
    /// The version number, from 1.
    pub version: i32,
    /// The document as published.
    pub document: serde_json::Value,
    /// Why it was published (a rollback says which version it restores).
    pub note: Option<String>,
    /// Who published it.
    pub published_by: String,
    /// When.
    pub published_at: DateTime<Utc>,
}

fn to_journey(row: &QueryResult) -> StoreResult<Journey> {
    Ok(Journey {
        id: row
            .try_get::<String>("", "id")?
            .parse()
            .map_err(|e| corrupt(format!("{e:?}")))?,
        name: row.try_get("", "name")?,
        description: row.try_get("", "description")?,
        draft: serde_json::from_str(&row.try_get::<String>("", "draft")?).map_err(corrupt)?,
        revision: row.try_get("", "revision")?,
        published_version: row.try_get("", "published_version")?,
        created_at: from_micros(row.try_get("", "created_at")?),
        updated_at: from_micros(row.try_get("", "updated_at")?),
    })
}

fn to_version(row: &QueryResult) -> StoreResult<JourneyVersion> {
    Ok(JourneyVersion {
        version: row.try_get("", "version")?,
        document: serde_json::from_str(&row.try_get::<String>("", "document")?).map_err(corrupt)?,
        note: row.try_get("", "note")?,
        published_by: row.try_get("", "published_by")?,
        published_at: from_micros(row.try_get("", "published_at")?),
    })
}

fn check_name(errors: &mut ValidationErrors, name: &str) -> String {
    wedsync_core::validate::text(errors, "name", name, 200).unwrap_or_default()
}

/// What a stale save ran into.
pub fn stale(current: i32) -> StoreError {
    StoreError::Conflict(format!(
        "the journey changed since the revision you edited; the current revision is {current}: reload it and apply your change again"
    ))
}

impl Store {
    async fn journey_row<C: ConnectionTrait>(
        db: &C,
        org: &OrgId,
        id: &JourneyId,
    ) -> StoreResult<QueryResult> {
        db.query_one_raw(stmt(
            db.get_database_backend(),
            "SELECT * FROM journeys WHERE org_id = $1 AND id = $2",
            vec![org.to_string().into(), id.to_string().into()],
        ))
        .await?
        .ok_or(StoreError::NotFound)
    }

    /// Creates a journey with `draft` as its first draft (revision 1).
    pub async fn create_journey(
        &self,
        org: &OrgId,
        name: &str,
        description: &str,
        draft: &serde_json::Value,
        actor: &Actor,
    ) -> StoreResult<Journey> {
        let mut errors = ValidationErrors::default();
        let name = check_name(&mut errors, name);
        let description = wedsync_core::validate::optional_text(
            &mut errors,
            "description",
            Some(description),
            2000,
        )
        .unwrap_or_default();
        errors.into_result(())?;
        let now = self.clock().now();
        let id = JourneyId::new_at(now);
        let tx = self.write_tx().await?;
        tx.execute_raw(stmt(
            self.backend(),
            "INSERT INTO journeys (id, org_id, name, description, draft, revision, published_version, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 1, NULL, $6, $6)",
            vec![
                id.to_string().into(),
                org.to_string().into(),
                name.into(),
                description.into(),
                draft.to_string().into(),
                to_micros(now).into(),
            ],
        ))
        .await?;
        let journey = to_journey(&Self::journey_row(&tx, org, &id).await?)?;
        audit::append(
            &tx,
            org,
            now,
            Change {
                actor,
                action: "journey.create",
                target_type: "journey",
                target_id: id.to_string(),
                before: None,
                after: Some(serde_json::json!({ "name": journey.name, "revision": 1 })),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(journey)
    }

    /// One journey.
    pub async fn get_journey(&self, org: &OrgId, id: &JourneyId) -> StoreResult<Journey> {
        to_journey(&Self::journey_row(self.connection(), org, id).await?)
    }

    /// `org`'s journeys, oldest first.
    pub async fn list_journeys(
        &self,
        org: &OrgId,
        page: &PageRequest,
    ) -> StoreResult<Page<Journey>> {
        let limit = page.limit();
        let rows = self
            .connection()
            .query_all_raw(stmt(
                self.backend(),
                "SELECT * FROM journeys WHERE org_id = $1 AND id > $2 ORDER BY id LIMIT $3",
                vec![
                    org.to_string().into(),
                    page.after.clone().unwrap_or_default().into(),
                    i64::try_from(limit + 1).unwrap_or(i64::MAX).into(),
                ],
            ))
            .await?;
        let items = rows
            .iter()
            .map(to_journey)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(items, limit, |j| j.id.to_string()))
    }

    /// Saves the draft if it is still at `revision`; otherwise nothing changes and the
    /// error carries the current revision.
    pub async fn save_journey_draft(
        &self,
        org: &OrgId,
        id: &JourneyId,
        revision: i32,
        name: Option<&str>,
        draft: &serde_json::Value,
    ) -> StoreResult<Journey> {
        let mut errors = ValidationErrors::default();
        let name = name.map(|n| check_name(&mut errors, n));
        errors.into_result(())?;
        let now = self.clock().now();
        let tx = self.write_tx().await?;
        let done = tx
            .execute_raw(stmt(
                self.backend(),
                "UPDATE journeys SET draft = $1, name = COALESCE($2, name), revision = revision + 1, \
                 updated_at = $3 WHERE org_id = $4 AND id = $5 AND revision = $6",
                vec![
                    draft.to_string().into(),
                    name.into(),
                    to_micros(now).into(),
                    org.to_string().into(),
                    id.to_string().into(),
                    revision.into(),
                ],
            ))
            .await?;
        let row = Self::journey_row(&tx, org, id).await?;
        let journey = to_journey(&row)?;
        if done.rows_affected() == 0 {
            return Err(stale(journey.revision));
        }
        tx.commit().await?;
        Ok(journey)
    }

    /// Publishes the draft at `revision` (validated by the caller) as the next version,
    /// immutable, which new instances start on. Audited.
    pub async fn publish_journey(
        &self,
        org: &OrgId,
        id: &JourneyId,
        revision: i32,
        actor: &Actor,
    ) -> StoreResult<(Journey, JourneyVersion)> {
        let tx = self.write_tx().await?;
        let journey = to_journey(&Self::journey_row(&tx, org, id).await?)?;
        if journey.revision != revision {
            return Err(stale(journey.revision));
        }
        let document = journey.draft.clone();
        let note = format!("published from draft revision {revision}");
        self.add_version(tx, org, journey, &document, &note, actor, "journey.publish")
            .await
    }

    /// Makes `version`'s document live again, as a new version (and the draft), so the
    /// history keeps both. Audited.
    pub async fn rollback_journey(
        &self,
        org: &OrgId,
        id: &JourneyId,
        version: i32,
        actor: &Actor,
    ) -> StoreResult<(Journey, JourneyVersion)> {
        let tx = self.write_tx().await?;
        let journey = to_journey(&Self::journey_row(&tx, org, id).await?)?;
        let old = tx
            .query_one_raw(stmt(
                self.backend(),
                "SELECT * FROM journey_versions WHERE journey_id = $1 AND version = $2",
                vec![id.to_string().into(), version.into()],
            ))
            .await?
            .ok_or_else(|| {
                StoreError::Invalid(ValidationErrors::single(
                    "version",
                    format!("version {version} does not exist"),
                ))
            })?;
        let document = to_version(&old)?.document;
        let note = format!("rollback to version {version}");
        self.add_version(
            tx,
            org,
            journey,
            &document,
            &note,
            actor,
            "journey.rollback",
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn add_version(
        &self,
        tx: crate::WriteTx,
        org: &OrgId,
        journey: Journey,
        document: &serde_json::Value,
        note: &str,
        actor: &Actor,
        action: &str,
    ) -> StoreResult<(Journey, JourneyVersion)> {
        let now = self.clock().now();
        let id = journey.id;
        let row = tx
            .query_one_raw(stmt(
                self.backend(),
                "SELECT COALESCE(MAX(version), 0) AS v FROM journey_versions WHERE journey_id = $1",
                vec![id.to_string().into()],
            ))
            .await?;
        let next: i32 = row
            .map(|r| r.try_get::<i32>("", "v"))
            .transpose()?
            .unwrap_or(0)
            + 1;
        tx.execute_raw(stmt(
            self.backend(),
            "INSERT INTO journey_versions (journey_id, version, org_id, document, note, published_by, published_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            vec![
                id.to_string().into(),
                next.into(),
                org.to_string().into(),
                document.to_string().into(),
                note.into(),
                actor.to_string().into(),
                to_micros(now).into(),
            ],
        ))
        .await?;
        // The draft follows what is live, and its revision moves so that an editor still
        // holding the old draft cannot overwrite it unawares.
        tx.execute_raw(stmt(
            self.backend(),
            "UPDATE journeys SET published_version = $1, draft = $2, revision = revision + 1, updated_at = $3 \
             WHERE id = $4",
            vec![
                next.into(),
                document.to_string().into(),
                to_micros(now).into(),
                id.to_string().into(),
            ],
        ))
        .await?;
        audit::append(
            &tx,
            org,
            now,
            Change {
                actor,
                action,
                target_type: "journey",
                target_id: id.to_string(),
                before: Some(serde_json::json!({ "published_version": journey.published_version })),
                after: Some(serde_json::json!({ "published_version": next, "note": note })),
            },
        )
        .await?;
        // Scheduled triggers (a date, a cron schedule) act on the new version through the
        // queue, so the publish commits at once and the work survives a restart.
        let mut job = crate::queue::NewJob::new(
            PUBLISHED_KIND,
            serde_json::json!({ "journey_id": id, "version": next }),
        );
        job.org_id = Some(*org);
        job.dedupe_key = Some(format!("published:{id}:{next}"));
        crate::queue::enqueue_in(&tx, now, job).await?;
        let journey = to_journey(&Self::journey_row(&tx, org, &id).await?)?;
        let version = tx
            .query_one_raw(stmt(
                self.backend(),
                "SELECT * FROM journey_versions WHERE journey_id = $1 AND version = $2",
                vec![id.to_string().into(), next.into()],
            ))
            .await?
            .ok_or(StoreError::NotFound)?;
        let version = to_version(&version)?;
        tx.commit().await?;
        Ok((journey, version))
    }

    /// A journey's published versions, newest first.
    pub async fn journey_versions(
        &self,
        org: &OrgId,
        id: &JourneyId,
    ) -> StoreResult<Vec<JourneyVersion>> {
        Self::journey_row(self.connection(), org, id).await?;
        let rows = self
            .connection()
            .query_all_raw(stmt(
                self.backend(),
                "SELECT * FROM journey_versions WHERE journey_id = $1 ORDER BY version DESC",
                vec![id.to_string().into()],
            ))
            .await?;
        rows.iter().map(to_version).collect()
    }

    /// One published version.
    pub async fn journey_version(
        &self,
        org: &OrgId,
        id: &JourneyId,
        version: i32,
    ) -> StoreResult<JourneyVersion> {
        Self::journey_row(self.connection(), org, id).await?;
        let row = self
            .connection()
            .query_one_raw(stmt(
                self.backend(),
                "SELECT * FROM journey_versions WHERE journey_id = $1 AND version = $2",
                vec![id.to_string().into(), version.into()],
            ))
            .await?
            .ok_or(StoreError::NotFound)?;
        to_version(&row)
    }
}

// --- instances ---------------------------------------------------------------------------

/// The job kind that runs one step of one instance.
pub const STEP_KIND: &str = "journey.step";

/// The job kind that acts on a newly published version: attaches a date trigger to every
/// couple, starts a cron trigger's schedule.
pub const PUBLISHED_KIND: &str = "journey.published";

/// The job kind that attaches scheduled journeys to one couple that was added or changed.
pub const COUPLE_KIND: &str = "journey.couple";

/// The job kind of one cron tick of one journey version in one time zone.
pub const CRON_KIND: &str = "journey.cron";

/// How long a journey step's idempotency key holds a notification: longer than any journey.
pub const STEP_KEY_WINDOW_DAYS: i64 = 3650;

/// A running (or finished) journey for one couple.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Instance {
    /// `jin_…`.
    #[schema(value_type = String)]
    pub id: wedsync_core::id::JourneyInstanceId,
    /// The journey.
    #[schema(value_type = String)]
    pub journey_id: JourneyId,
    /// The version it runs (it stays on it).
    pub version: i32,
    /// The couple.
    #[schema(value_type = String)]
    pub couple_id: wedsync_core::id::CoupleId,
    /// The booking, when the journey is about one of the couple's bookings.
    #[schema(value_type = Option<String>)]
    pub booking_id: Option<wedsync_core::id::BookingId>,
    /// What started it (`manual:…`, an event id…); one instance per journey, subject
    /// (couple, or booking) and key.
    pub trigger_key: String,
    /// `running`, `waiting`, `completed`, `skipped`, `blocked`, `cancelled`.
    pub status: String,
    /// The node it is at.
    pub current_node: String,
    /// Steps taken.
    pub step_seq: i32,
    /// What it waits for (a date-relative wait keeps its rule, so a moved date moves it).
    pub wait: Option<serde_json::Value>,
    /// When it continues.
    pub due_at: Option<DateTime<Utc>>,
    /// Why it stopped, when it did.
    pub reason: Option<String>,
    /// When it started.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// Every status an instance can be in.
pub const INSTANCE_STATUSES: [&str; 7] = [
    "running",
    "waiting",
    "paused",
    "completed",
    "skipped",
    "blocked",
    "cancelled",
];

/// Which of a journey's instances to list.
#[derive(Debug, Clone, Default)]
pub struct InstanceFilter {
    /// Only this couple's (their bookings' included).
    pub couple_id: Option<wedsync_core::id::CoupleId>,
    /// Only this booking's.
    pub booking_id: Option<wedsync_core::id::BookingId>,
    /// Only in this status.
    pub status: Option<String>,
}

/// One entry in an instance's history.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct StepRecord {
    /// The step number.
    pub seq: i32,
    /// The node.
    pub node_id: String,
    /// Its type.
    pub node_type: String,
    /// When.
    pub at: DateTime<Utc>,
    /// `started`, `done`, `waiting`, `resumed`, `rescheduled`, `skipped`, `blocked`, `cancelled`, `completed`.
    pub outcome: String,
    /// For people.
    pub detail: String,
    /// What the step produced (a notification id, a decision's label…).
    pub output: Option<serde_json::Value>,
}

/// What a step leads to, as the engine reports it.
#[derive(Debug, Clone)]
pub struct Advance {
    /// The step the engine ran (the instance must still be at it).
    pub seq: i32,
    /// The history entry for it.
    pub record: StepRecord,
    /// The node to go to.
    pub next_node: String,
    /// The new status (`running`, `waiting`, `completed`, `skipped`, `blocked`).
    pub status: String,
    /// What it waits for now.
    pub wait: Option<serde_json::Value>,
    /// When the next step runs (`None`: no further step).
    pub run_at: Option<DateTime<Utc>>,
    /// Why it stopped.
    pub reason: Option<String>,
    /// The queue priority of the next step ([`step_priority`]).
    pub priority: i32,
}

/// Everything a step needs.
#[derive(Debug, Clone)]
pub struct StepWork {
    /// The organisation.
    pub org_id: OrgId,
    /// The instance (its `journey_id` and `version` name the document to run, immutable
    /// once published, so callers may cache it).
    pub instance: Instance,
    /// The couple.
    pub couple: wedsync_core::couple::Couple,
    /// The booking, for an instance about one (`None` also when it has been deleted since:
    /// deleting a booking cancels its instances, so only a stale job sees that).
    pub booking: Option<wedsync_core::booking::Booking>,
    /// What started it (the trigger event, when there was one).
    pub context: serde_json::Value,
}

/// One instance to start in bulk ([`Store::start_instances`]).
#[derive(Debug, Clone)]
pub struct NewStart {
    /// The couple.
    pub couple: wedsync_core::id::CoupleId,
    /// The booking, for a journey about bookings.
    pub booking: Option<wedsync_core::id::BookingId>,
    /// One instance per journey, subject and key.
    pub trigger_key: String,
    /// `running` (the first step runs at `due_at`, or now) or `waiting` (the trigger waits
    /// until `due_at`, following `wait` when the date it refers to moves).
    pub status: String,
    /// When the first step runs.
    pub due_at: Option<DateTime<Utc>>,
    /// The trigger's wait rule, for a waiting start.
    pub wait: Option<serde_json::Value>,
    /// What started it.
    pub context: serde_json::Value,
    /// For the history.
    pub detail: String,
    /// The queue priority of the first step ([`step_priority`]).
    pub priority: i32,
}

fn to_instance(row: &QueryResult) -> StoreResult<Instance> {
    let parse = |col: &str| -> StoreResult<String> { Ok(row.try_get::<String>("", col)?) };
    Ok(Instance {
        id: parse("id")?
            .parse()
            .map_err(|e| corrupt(format!("{e:?}")))?,
        journey_id: parse("journey_id")?
            .parse()
            .map_err(|e| corrupt(format!("{e:?}")))?,
        version: row.try_get("", "version")?,
        couple_id: parse("couple_id")?
            .parse()
            .map_err(|e| corrupt(format!("{e:?}")))?,
        booking_id: Some(parse("booking_id")?)
            .filter(|b| !b.is_empty())
            .map(|b| b.parse().map_err(|e| corrupt(format!("{e:?}"))))
            .transpose()?,
        trigger_key: row.try_get("", "trigger_key")?,
        status: row.try_get("", "status")?,
        current_node: row.try_get("", "current_node")?,
        step_seq: row.try_get("", "step_seq")?,
        wait: row
            .try_get::<Option<String>>("", "wait")?
            .map(|w| serde_json::from_str(&w).map_err(corrupt))
            .transpose()?,
        due_at: row.try_get::<Option<i64>>("", "due_at")?.map(from_micros),
        reason: row.try_get("", "reason")?,
        created_at: from_micros(row.try_get("", "created_at")?),
        updated_at: from_micros(row.try_get("", "updated_at")?),
    })
}

fn to_step(row: &QueryResult) -> StoreResult<StepRecord> {
    Ok(StepRecord {
        seq: row.try_get("", "seq")?,
        node_id: row.try_get("", "node_id")?,
        node_type: row.try_get("", "node_type")?,
        at: from_micros(row.try_get("", "at")?),
        outcome: row.try_get("", "outcome")?,
        detail: row.try_get("", "detail")?,
        output: row
            .try_get::<Option<String>>("", "output")?
            .map(|o| serde_json::from_str(&o).map_err(corrupt))
            .transpose()?,
    })
}

/// What an event reports, for journeys to act on once: `payment:<payment_id>` for a
/// `payment.completed` that names its payment (Stripe reports one payment under several
/// events, each normalised with the same `payment_id`), `payment-failed:<charge>` for a
/// `payment.failed` that names its failed attempt's charge, else `event:<event id>`. It is the
/// trigger key of the instances the event starts (one per journey and subject) and what a
/// step it moves records, so neither a second event of the same payment nor the same event
/// routed again starts or moves anything twice.
pub fn occurrence(event_type: &str, event_key: &str, data: &serde_json::Value) -> String {
    let named = |field: &str| {
        data.get(field)
            .and_then(serde_json::Value::as_str)
            .filter(|v| !v.is_empty())
    };
    match (event_type, named("payment_id"), named("failed_charge")) {
        ("payment.completed", Some(payment), _) => format!("payment:{payment}"),
        ("payment.failed", _, Some(charge)) => format!("payment-failed:{charge}"),
        _ => format!("event:{event_key}"),
    }
}

/// The history output of a step an event moved: `{"occurrence": …}` ([`occurrence`]).
fn consumed_output(occurrence: &str) -> serde_json::Value {
    serde_json::json!({ "occurrence": occurrence })
}

/// Whether `occurrence` already moved `instance` (a rerouted event, a retried job, another
/// event of the same payment): it moves an instance once, so it cannot satisfy the wait
/// after the one it resumed. (The occurrence that started the instance is its trigger key,
/// checked by the caller.)
async fn consumed<C: ConnectionTrait>(
    db: &C,
    instance: &str,
    occurrence: &str,
) -> StoreResult<bool> {
    Ok(db
        .query_one_raw(stmt(
            db.get_database_backend(),
            "SELECT 1 AS hit FROM journey_steps WHERE instance_id = $1 \
             AND outcome IN ('resumed', 'progress', 'blocked') AND output = $2",
            vec![
                instance.into(),
                consumed_output(occurrence).to_string().into(),
            ],
        ))
        .await?
        .is_some())
}

/// Whose instances [`cancel_instances_in`] cancels.
pub(crate) enum Whose<'a> {
    /// All of a couple's, its bookings' included.
    Couple(&'a str),
    /// A booking's (the couple is given for the index).
    Booking { couple: &'a str, booking: &'a str },
}

/// Cancels a couple's or a booking's running, waiting and paused instances inside the
/// caller's transaction (it is being deleted, called off or moved), each with a `cancelled`
/// step saying why. Their pending step jobs find them moved on and do nothing. Returns how
/// many were cancelled.
pub(crate) async fn cancel_instances_in<C: ConnectionTrait>(
    db: &C,
    org: &OrgId,
    whose: Whose<'_>,
    now: DateTime<Utc>,
    reason: &str,
) -> StoreResult<usize> {
    let (couple, booking) = match whose {
        Whose::Couple(c) => (c, None),
        Whose::Booking { couple, booking } => (couple, Some(booking)),
    };
    let rows = db
        .query_all_raw(stmt(
            db.get_database_backend(),
            "UPDATE journey_instances SET status = 'cancelled', step_seq = step_seq + 1, reason = $1, \
             updated_at = $2 WHERE org_id = $3 AND couple_id = $4 AND ($5 = '' OR booking_id = $5) \
             AND status IN ('running', 'waiting', 'paused') RETURNING id, step_seq, current_node",
            vec![
                reason.into(),
                to_micros(now).into(),
                org.to_string().into(),
                couple.into(),
                booking.unwrap_or_default().into(),
            ],
        ))
        .await?;
    let mut steps = Vec::with_capacity(rows.len());
    for r in &rows {
        let id: String = r.try_get("", "id")?;
        let record = StepRecord {
            // The step it was at: the update moved the counter past it.
            seq: r.try_get::<i32>("", "step_seq")? - 1,
            node_id: r.try_get("", "current_node")?,
            node_type: "-".into(),
            at: now,
            outcome: "cancelled".into(),
            detail: reason.to_owned(),
            output: None,
        };
        steps.push((id, record));
    }
    let refs: Vec<(&str, &StepRecord)> = steps.iter().map(|(i, r)| (i.as_str(), r)).collect();
    record_steps(db, &refs).await?;
    Ok(rows.len())
}

async fn record_step<C: ConnectionTrait>(
    db: &C,
    instance: &str,
    record: &StepRecord,
) -> StoreResult<()> {
    record_steps(db, &[(instance, record)]).await
}

/// [`record_step`] for many rows, with multi-row inserts.
async fn record_steps<C: ConnectionTrait>(
    db: &C,
    steps: &[(&str, &StepRecord)],
) -> StoreResult<()> {
    const CHUNK: usize = 500;
    for chunk in steps.chunks(CHUNK) {
        let mut rows = Vec::with_capacity(chunk.len());
        let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 9);
        for (instance, record) in chunk {
            let p = values.len() + 1;
            rows.push(format!("({})", crate::queue::placeholders(p, 9)));
            values.extend([
                Value::from(wedsync_core::id::JourneyStepId::new_at(record.at).to_string()),
                (*instance).into(),
                record.seq.into(),
                record.node_id.clone().into(),
                record.node_type.clone().into(),
                to_micros(record.at).into(),
                record.outcome.clone().into(),
                record.detail.clone().into(),
                record.output.as_ref().map(|o| o.to_string()).into(),
            ]);
        }
        if rows.is_empty() {
            continue;
        }
        db.execute_raw(stmt(
            db.get_database_backend(),
            &format!(
                "INSERT INTO journey_steps (id, instance_id, seq, node_id, node_type, at, outcome, detail, output) \
                 VALUES {}",
                rows.join(", ")
            ),
            values,
        ))
        .await?;
    }
    Ok(())
}

fn step_job(
    org: &OrgId,
    instance: &str,
    seq: i32,
    at: DateTime<Utc>,
    priority: i32,
) -> crate::queue::NewJob {
    let mut job = crate::queue::NewJob::new(
        STEP_KIND,
        serde_json::json!({ "instance_id": instance, "seq": seq }),
    );
    job.org_id = Some(*org);
    job.run_at = Some(at);
    job.priority = priority;
    job.dedupe_key = Some(format!("{instance}:{seq}"));
    job
}

/// The queue priority of a step for a couple marrying on `wedding` in `zone`.
pub fn step_priority(wedding: chrono::NaiveDate, zone: &str, now: DateTime<Utc>) -> i32 {
    let today = wedsync_core::org::TimeZone::parse(zone)
        .map(|z| now.with_timezone(&z.tz()).date_naive())
        .ok();
    if today == Some(wedding) {
        wedsync_core::calendar::PRIORITY_WEDDING_TODAY
    } else {
        wedsync_core::calendar::PRIORITY_NORMAL
    }
}

impl Store {
    /// Starts `journey`'s published version for `couple` (and `booking`, for a journey about
    /// bookings: it must be the couple's), once per `trigger_key`: a repeat returns the
    /// existing instance (`false`). The first step runs through the queue.
    #[allow(clippy::too_many_arguments)]
    pub async fn start_instance(
        &self,
        org: &OrgId,
        journey: &JourneyId,
        couple: &wedsync_core::id::CoupleId,
        booking: Option<&wedsync_core::id::BookingId>,
        trigger_key: &str,
        trigger_node: &str,
        context: &serde_json::Value,
    ) -> StoreResult<(Instance, bool)> {
        if trigger_key.is_empty() || trigger_key.len() > 200 {
            return Err(StoreError::Invalid(ValidationErrors::single(
                "trigger_key",
                "1 to 200 characters",
            )));
        }
        let now = self.clock().now();
        let couple_view = self.get_couple(org, couple).await?;
        let booking_key = booking.map(ToString::to_string).unwrap_or_default();
        let tx = self.write_tx().await?;
        // Inside the transaction: a booking deleted or moved to another couple meanwhile
        // (which cancels its instances) gets no new one.
        if let Some(booking) = booking {
            let owner = tx
                .query_one_raw(stmt(
                    self.backend(),
                    "SELECT couple_id FROM bookings WHERE org_id = $1 AND id = $2",
                    vec![org.to_string().into(), booking.to_string().into()],
                ))
                .await?
                .map(|r| r.try_get::<String>("", "couple_id"))
                .transpose()?;
            if owner != Some(couple.to_string()) {
                return Err(StoreError::Invalid(ValidationErrors::single(
                    "booking_id",
                    "no such booking for this couple",
                )));
            }
        }
        let j = to_journey(&Self::journey_row(&tx, org, journey).await?)?;
        let Some(version) = j.published_version else {
            return Err(StoreError::Conflict(
                "the journey has no published version to run; publish it first".into(),
            ));
        };
        let existing = tx
            .query_one_raw(stmt(
                self.backend(),
                "SELECT * FROM journey_instances WHERE journey_id = $1 AND couple_id = $2 AND booking_id = $3 \
                 AND trigger_key = $4",
                vec![
                    journey.to_string().into(),
                    couple.to_string().into(),
                    booking_key.clone().into(),
                    trigger_key.into(),
                ],
            ))
            .await?;
        if let Some(row) = existing {
            return Ok((to_instance(&row)?, false));
        }
        let id = wedsync_core::id::JourneyInstanceId::new_at(now);
        tx.execute_raw(stmt(
            self.backend(),
            "INSERT INTO journey_instances (id, org_id, journey_id, version, couple_id, trigger_key, status, \
             current_node, step_seq, wait, due_at, context, reason, created_at, updated_at, booking_id) \
             VALUES ($1, $2, $3, $4, $5, $6, 'running', $7, 0, NULL, NULL, $8, NULL, $9, $9, $10)",
            vec![
                id.to_string().into(),
                org.to_string().into(),
                journey.to_string().into(),
                version.into(),
                couple.to_string().into(),
                trigger_key.into(),
                trigger_node.into(),
                context.to_string().into(),
                to_micros(now).into(),
                booking_key.into(),
            ],
        ))
        .await?;
        // No history row yet: the trigger's step writes the first one ("started"), so a
        // started instance costs one row less.
        let priority = step_priority(couple_view.wedding_date, &couple_view.time_zone, now);
        crate::queue::enqueue_in(&tx, now, step_job(org, &id.to_string(), 0, now, priority))
            .await?;
        let row = tx
            .query_one_raw(stmt(
                self.backend(),
                "SELECT * FROM journey_instances WHERE id = $1",
                vec![id.to_string().into()],
            ))
            .await?
            .ok_or(StoreError::NotFound)?;
        tx.commit().await?;
        self.wake_workers();
        Ok((to_instance(&row)?, true))
    }

    /// Starts many instances of `journey` at `version` in one transaction (one disk sync
    /// for all), with multi-row inserts: the bulk path of scheduled triggers, which attach a
    /// published journey to every couple. A couple that already has an instance under the
    /// same trigger key is left alone, so running a batch again starts nothing twice. Nothing
    /// starts when `version` is no longer the published one (a newer publish attaches its
    /// own). Returns how many started.
    pub async fn start_instances(
        &self,
        org: &OrgId,
        journey: &JourneyId,
        version: i32,
        trigger_node: &str,
        starts: &[NewStart],
    ) -> StoreResult<usize> {
        const CHUNK: usize = 200;
        if starts.is_empty() {
            return Ok(0);
        }
        let now = self.clock().now();
        let backend = self.backend();
        let tx = self.write_tx().await?;
        let live = tx
            .query_one_raw(stmt(
                backend,
                "SELECT published_version FROM journeys WHERE org_id = $1 AND id = $2",
                vec![org.to_string().into(), journey.to_string().into()],
            ))
            .await?
            .map(|r| r.try_get::<Option<i32>>("", "published_version"))
            .transpose()?
            .flatten();
        if live != Some(version) {
            return Ok(0);
        }
        let mut started = 0;
        for chunk in starts.chunks(CHUNK) {
            let ids: Vec<String> = chunk
                .iter()
                .map(|_| wedsync_core::id::JourneyInstanceId::new_at(now).to_string())
                .collect();
            let mut rows = Vec::with_capacity(chunk.len());
            let mut values: Vec<Value> = vec![
                org.to_string().into(),
                journey.to_string().into(),
                version.into(),
                trigger_node.into(),
                to_micros(now).into(),
            ];
            for (start, id) in chunk.iter().zip(&ids) {
                let p = values.len() + 1;
                rows.push(format!(
                    "(${p}, $1, $2, $3, ${}, ${}, ${}, $4, 0, ${}, ${}, ${}, NULL, $5, $5, ${})",
                    p + 1,
                    p + 2,
                    p + 3,
                    p + 4,
                    p + 5,
                    p + 6,
                    p + 7
                ));
                values.extend([
                    Value::from(id.clone()),
                    start.couple.to_string().into(),
                    start.trigger_key.clone().into(),
                    start.status.clone().into(),
                    start.wait.as_ref().map(|w| w.to_string()).into(),
                    start
                        .due_at
                        .filter(|_| start.status == "waiting")
                        .map(to_micros)
                        .into(),
                    start.context.to_string().into(),
                    start
                        .booking
                        .map(|b| b.to_string())
                        .unwrap_or_default()
                        .into(),
                ]);
            }
            let sql = format!(
                "INSERT INTO journey_instances (id, org_id, journey_id, version, couple_id, trigger_key, status, \
                 current_node, step_seq, wait, due_at, context, reason, created_at, updated_at, booking_id) VALUES {} \
                 ON CONFLICT (journey_id, couple_id, booking_id, trigger_key) DO NOTHING RETURNING id",
                rows.join(", ")
            );
            let inserted: std::collections::HashSet<String> = tx
                .query_all_raw(stmt(backend, &sql, values))
                .await?
                .iter()
                .map(|r| r.try_get::<String>("", "id"))
                .collect::<Result<_, _>>()?;
            let fresh: Vec<(&NewStart, &String)> = chunk
                .iter()
                .zip(&ids)
                .filter(|(_, id)| inserted.contains(*id))
                .collect();
            if fresh.is_empty() {
                continue;
            }
            // A waiting start is written in the history (it may wait for months); a running
            // one is not, its trigger step writes the first row.
            let waiting: Vec<&(&NewStart, &String)> = fresh
                .iter()
                .filter(|(start, _)| start.status == "waiting")
                .collect();
            let records: Vec<StepRecord> = waiting
                .iter()
                .map(|(start, _)| StepRecord {
                    seq: 0,
                    node_id: trigger_node.to_owned(),
                    node_type: "trigger".into(),
                    at: now,
                    outcome: "waiting".into(),
                    detail: format!(
                        "started on version {version} ({}): {}",
                        start.trigger_key, start.detail
                    ),
                    output: None,
                })
                .collect();
            let rows: Vec<(&str, &StepRecord)> = waiting
                .iter()
                .map(|(_, id)| id.as_str())
                .zip(&records)
                .collect();
            record_steps(&tx, &rows).await?;
            let jobs: Vec<crate::queue::NewJob> = fresh
                .iter()
                .map(|(start, id)| {
                    step_job(org, id, 0, start.due_at.unwrap_or(now), start.priority)
                })
                .collect();
            crate::queue::enqueue_many_in(&tx, now, &jobs).await?;
            started += fresh.len();
        }
        tx.commit().await?;
        if started > 0 {
            self.wake_workers();
        }
        Ok(started)
    }

    /// Every published journey of `org`: `(journey, version, document)`.
    pub async fn published_journeys(
        &self,
        org: &OrgId,
    ) -> StoreResult<Vec<(JourneyId, i32, serde_json::Value)>> {
        let rows = self
            .connection()
            .query_all_raw(stmt(
                self.backend(),
                "SELECT j.id, v.version, v.document FROM journeys j JOIN journey_versions v \
                 ON v.journey_id = j.id AND v.version = j.published_version WHERE j.org_id = $1 ORDER BY j.id",
                vec![org.to_string().into()],
            ))
            .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get::<String>("", "id")?
                        .parse()
                        .map_err(|e| corrupt(format!("{e:?}")))?,
                    row.try_get("", "version")?,
                    serde_json::from_str(&row.try_get::<String>("", "document")?)
                        .map_err(corrupt)?,
                ))
            })
            .collect()
    }

    /// What step `seq` of `instance` needs; `None` when the instance is gone or has moved on
    /// (the job is stale).
    pub async fn step_work(&self, instance: &str, seq: i32) -> StoreResult<Option<StepWork>> {
        // One statement for the instance and its couple: a step's reads are on the hot path.
        let row = self
            .connection()
            .query_one_raw(stmt(
                self.backend(),
                &format!(
                    "SELECT i.*, {} FROM journey_instances i JOIN couples c ON c.id = i.couple_id \
                     WHERE i.id = $1",
                    crate::couples::couple_columns("c", "c_")
                ),
                vec![instance.into()],
            ))
            .await?;
        let Some(row) = row else { return Ok(None) };
        let inst = to_instance(&row)?;
        if inst.step_seq != seq || !matches!(inst.status.as_str(), "running" | "waiting") {
            return Ok(None);
        }
        let org: OrgId = row
            .try_get::<String>("", "org_id")?
            .parse()
            .map_err(|e| corrupt(format!("{e:?}")))?;
        let couple = crate::couples::couple_from_row(&row, "c_")?;
        let context =
            serde_json::from_str(&row.try_get::<String>("", "context")?).map_err(corrupt)?;
        let booking = match &inst.booking_id {
            Some(b) => match self.get_booking(&org, b).await {
                Ok(b) => Some(b),
                Err(StoreError::NotFound) => None,
                Err(e) => return Err(e),
            },
            None => None,
        };
        Ok(Some(StepWork {
            org_id: org,
            instance: inst,
            couple,
            booking,
            context,
        }))
    }

    /// Records a step and moves the instance on, in one transaction, only if it is still at
    /// `advance.seq` (otherwise nothing changes: another run got there first). Returns
    /// whether it moved.
    pub async fn advance_instance(
        &self,
        org: &OrgId,
        instance: &str,
        advance: Advance,
    ) -> StoreResult<bool> {
        let moved = self
            .advance_instances(vec![(*org, instance.to_owned(), advance)])
            .await?;
        Ok(moved.first().copied().unwrap_or(false))
    }

    /// [`Store::advance_instance`] for many instances in one transaction (one disk sync for
    /// all, for the engine's group commit): each moves only if it is still at its step, and
    /// the history rows and next jobs of those that moved are written with multi-row
    /// inserts. Returns, in order, whether each moved; if the transaction fails, none did.
    pub async fn advance_instances(
        &self,
        batch: Vec<(OrgId, String, Advance)>,
    ) -> StoreResult<Vec<bool>> {
        let now = self.clock().now();
        let tx = self.write_tx().await?;
        let mut moved = Vec::with_capacity(batch.len());
        let mut steps = Vec::with_capacity(batch.len());
        let mut jobs = Vec::with_capacity(batch.len());
        let distinct: std::collections::HashSet<&str> =
            batch.iter().map(|(_, i, _)| i.as_str()).collect();
        let together = batch.len() > 1 && distinct.len() == batch.len();
        if together {
            // One conditional UPDATE for the whole batch (`UPDATE … FROM` a VALUES list,
            // `RETURNING` the instances that moved): one statement instead of one per step.
            let backend = self.backend();
            let mut values: Vec<Value> = vec![to_micros(now).into()];
            let mut rows = Vec::with_capacity(batch.len());
            for (_, instance, advance) in &batch {
                let p = values.len() + 1;
                rows.push(format!(
                    "(${p}, CAST(${} AS INTEGER), ${}, ${}, CAST(${} AS TEXT), CAST(${} AS BIGINT), CAST(${} AS TEXT))",
                    p + 1,
                    p + 2,
                    p + 3,
                    p + 4,
                    p + 5,
                    p + 6
                ));
                values.extend([
                    Value::from(instance.clone()),
                    advance.seq.into(),
                    advance.next_node.clone().into(),
                    advance.status.clone().into(),
                    advance.wait.as_ref().map(|w| w.to_string()).into(),
                    advance
                        .run_at
                        .filter(|_| advance.status == "waiting")
                        .map(to_micros)
                        .into(),
                    advance.reason.clone().into(),
                ]);
            }
            let sql = format!(
                "WITH v(id, seq, node, status, wait, due_at, reason) AS (VALUES {}) \
                 UPDATE journey_instances SET step_seq = journey_instances.step_seq + 1, current_node = v.node, \
                 status = v.status, wait = v.wait, due_at = v.due_at, reason = v.reason, updated_at = $1 \
                 FROM v WHERE journey_instances.id = v.id AND journey_instances.step_seq = v.seq \
                 AND journey_instances.status IN ('running', 'waiting') RETURNING journey_instances.id",
                rows.join(", ")
            );
            let done: std::collections::HashSet<String> = tx
                .query_all_raw(stmt(backend, &sql, values))
                .await?
                .iter()
                .map(|r| r.try_get::<String>("", "id"))
                .collect::<Result<_, _>>()?;
            moved.extend(batch.iter().map(|(_, instance, _)| done.contains(instance)));
        }
        for (_, instance, advance) in batch.iter().filter(|_| !together) {
            let done = tx
                .execute_raw(stmt(
                    self.backend(),
                    "UPDATE journey_instances SET step_seq = step_seq + 1, current_node = $1, status = $2, wait = $3, \
                     due_at = $4, reason = $5, updated_at = $6 WHERE id = $7 AND step_seq = $8 \
                     AND status IN ('running', 'waiting')",
                    vec![
                        advance.next_node.clone().into(),
                        advance.status.clone().into(),
                        advance.wait.as_ref().map(|w| w.to_string()).into(),
                        advance.run_at.filter(|_| advance.status == "waiting").map(to_micros).into(),
                        advance.reason.clone().into(),
                        to_micros(now).into(),
                        instance.clone().into(),
                        advance.seq.into(),
                    ],
                ))
                .await?;
            moved.push(done.rows_affected() > 0);
        }
        // Those that moved get their history row and, when they go on, their next job.
        for ((org, instance, advance), _) in batch.iter().zip(&moved).filter(|(_, ok)| **ok) {
            steps.push((instance.as_str(), &advance.record));
            if let Some(at) = advance.run_at {
                jobs.push(step_job(
                    org,
                    instance,
                    advance.seq + 1,
                    at,
                    advance.priority,
                ));
            }
        }
        record_steps(&tx, &steps).await?;
        crate::queue::enqueue_many_in(&tx, now, &jobs).await?;
        tx.commit().await?;
        if !jobs.is_empty() {
            self.wake_workers();
        }
        Ok(moved)
    }

    /// Cancels an instance (audited); its pending step does nothing when it runs.
    pub async fn cancel_instance(
        &self,
        org: &OrgId,
        instance: &str,
        actor: &Actor,
    ) -> StoreResult<Instance> {
        let now = self.clock().now();
        let tx = self.write_tx().await?;
        let row = tx
            .query_one_raw(stmt(
                self.backend(),
                "SELECT * FROM journey_instances WHERE org_id = $1 AND id = $2",
                vec![org.to_string().into(), instance.into()],
            ))
            .await?
            .ok_or(StoreError::NotFound)?;
        let inst = to_instance(&row)?;
        if matches!(inst.status.as_str(), "running" | "waiting" | "paused") {
            tx.execute_raw(stmt(
                self.backend(),
                "UPDATE journey_instances SET status = 'cancelled', step_seq = step_seq + 1, reason = $1, \
                 updated_at = $2 WHERE id = $3",
                vec![format!("cancelled by {actor}").into(), to_micros(now).into(), instance.into()],
            ))
            .await?;
            record_step(
                &tx,
                instance,
                &StepRecord {
                    seq: inst.step_seq,
                    node_id: inst.current_node.clone(),
                    node_type: "-".into(),
                    at: now,
                    outcome: "cancelled".into(),
                    detail: format!("cancelled by {actor}"),
                    output: None,
                },
            )
            .await?;
            audit::append(
                &tx,
                org,
                now,
                Change {
                    actor,
                    action: "journey_instance.cancel",
                    target_type: "journey_instance",
                    target_id: instance.to_owned(),
                    before: Some(serde_json::json!({ "status": inst.status })),
                    after: Some(serde_json::json!({ "status": "cancelled" })),
                },
            )
            .await?;
        }
        let row = tx
            .query_one_raw(stmt(
                self.backend(),
                "SELECT * FROM journey_instances WHERE id = $1",
                vec![instance.into()],
            ))
            .await?
            .ok_or(StoreError::NotFound)?;
        tx.commit().await?;
        to_instance(&row)
    }

    /// One instance with its history.
    pub async fn get_instance(
        &self,
        org: &OrgId,
        instance: &str,
    ) -> StoreResult<(Instance, Vec<StepRecord>)> {
        let row = self
            .connection()
            .query_one_raw(stmt(
                self.backend(),
                "SELECT * FROM journey_instances WHERE org_id = $1 AND id = $2",
                vec![org.to_string().into(), instance.into()],
            ))
            .await?
            .ok_or(StoreError::NotFound)?;
        let steps = self
            .connection()
            .query_all_raw(stmt(
                self.backend(),
                "SELECT * FROM journey_steps WHERE instance_id = $1 ORDER BY id",
                vec![instance.into()],
            ))
            .await?;
        Ok((
            to_instance(&row)?,
            steps.iter().map(to_step).collect::<StoreResult<_>>()?,
        ))
    }

    /// A journey's instances, oldest first, optionally only a couple's, a booking's, or
    /// those in one status.
    pub async fn list_instances(
        &self,
        org: &OrgId,
        journey: &JourneyId,
        filter: &InstanceFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Instance>> {
        let limit = page.limit();
        let mut sql = String::from(
            "SELECT * FROM journey_instances WHERE org_id = $1 AND journey_id = $2 AND id > $3",
        );
        let mut values: Vec<Value> = vec![
            org.to_string().into(),
            journey.to_string().into(),
            page.after.clone().unwrap_or_default().into(),
        ];
        for (column, value) in [
            ("couple_id", filter.couple_id.map(|c| c.to_string())),
            ("booking_id", filter.booking_id.map(|b| b.to_string())),
            ("status", filter.status.clone()),
        ] {
            if let Some(v) = value {
                values.push(v.into());
                sql.push_str(&format!(" AND {column} = ${}", values.len()));
            }
        }
        values.push(i64::try_from(limit + 1).unwrap_or(i64::MAX).into());
        sql.push_str(&format!(" ORDER BY id LIMIT ${}", values.len()));
        let rows = self
            .connection()
            .query_all_raw(stmt(self.backend(), &sql, values))
            .await?;
        let items = rows
            .iter()
            .map(to_instance)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(items, limit, |i| i.id.to_string()))
    }
}

/// Recomputes, inside the transaction that moves a couple's date (or a booking's, when
/// `booking` is given: then only that booking's instances), every waiting instance's
/// date-relative wait on that date: the wait's job moves (the old one becomes stale); a new
/// instant already past follows the node's `if_passed` (`run_now`: continue at once;
/// `skip`: the instance ends as skipped). Each decision is recorded in the history.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn reschedule_waits<C: ConnectionTrait>(
    db: &C,
    org: &OrgId,
    couple: &wedsync_core::id::CoupleId,
    booking: Option<&wedsync_core::id::BookingId>,
    field: &str,
    new_date: chrono::NaiveDate,
    zone: &str,
    wedding: chrono::NaiveDate,
    now: DateTime<Utc>,
) -> StoreResult<u64> {
    let backend = db.get_database_backend();
    let Ok(zone_tz) = wedsync_core::org::TimeZone::parse(zone) else {
        return Ok(0);
    };
    let rows = db
        .query_all_raw(stmt(
            backend,
            "SELECT * FROM journey_instances WHERE couple_id = $1 AND status IN ('waiting', 'paused')",
            vec![couple.to_string().into()],
        ))
        .await?;
    let mut moved = 0;
    for row in &rows {
        let inst = to_instance(row)?;
        if booking.is_some() && inst.booking_id.as_ref() != booking {
            continue;
        }
        // A paused instance keeps the wait it was paused in; its instant moves too (and
        // takes effect when it is resumed).
        let paused = inst.status == "paused";
        let wait = if paused {
            inst.wait
                .as_ref()
                .filter(|w| {
                    w.get("paused_from").and_then(serde_json::Value::as_str) == Some("waiting")
                })
                .and_then(|w| w.get("wait"))
        } else {
            inst.wait.as_ref()
        };
        let Some(wait) = wait else { continue };
        if wait.get("mode").and_then(serde_json::Value::as_str) != Some("until_date")
            || wait.get("date").and_then(serde_json::Value::as_str) != Some(field)
        {
            continue;
        }
        let offset = wait
            .get("offset_days")
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(0);
        let Some(at) = wait
            .get("at")
            .and_then(serde_json::Value::as_str)
            .and_then(|t| chrono::NaiveTime::parse_from_str(t, "%H:%M").ok())
        else {
            continue;
        };
        let instant = wedsync_core::localtime::date_relative_instant(
            new_date,
            i32::try_from(offset).unwrap_or(0),
            at,
            zone_tz.tz(),
        );
        let id = inst.id.to_string();
        let passed = instant <= now;
        let skip =
            passed && wait.get("if_passed").and_then(serde_json::Value::as_str) == Some("skip");
        let still = if paused { "paused" } else { "waiting" };
        let (status, due, detail) = if skip {
            (
                "skipped",
                None,
                format!(
                    "{field} moved to {new_date}: the wait's instant has passed and its policy is skip"
                ),
            )
        } else if passed {
            (
                still,
                Some(now),
                format!(
                    "{field} moved to {new_date}: the wait's instant has passed, so it runs now{}",
                    if paused { " when resumed" } else { "" }
                ),
            )
        } else {
            (
                still,
                Some(instant),
                format!(
                    "{field} moved to {new_date}: now waiting until {}{}",
                    instant.to_rfc3339(),
                    if paused { " (paused)" } else { "" }
                ),
            )
        };
        db.execute_raw(stmt(
            backend,
            "UPDATE journey_instances SET step_seq = step_seq + 1, status = $1, due_at = $2, reason = $3, \
             updated_at = $4 WHERE id = $5",
            vec![
                status.into(),
                due.map(to_micros).into(),
                skip.then(|| detail.clone()).into(),
                to_micros(now).into(),
                id.clone().into(),
            ],
        ))
        .await?;
        record_step(
            db,
            &id,
            &StepRecord {
                seq: inst.step_seq,
                node_id: inst.current_node.clone(),
                node_type: "wait".into(),
                at: now,
                outcome: if skip {
                    "skipped".into()
                } else {
                    "rescheduled".into()
                },
                detail,
                output: None,
            },
        )
        .await?;
        if let Some(due) = due.filter(|_| !paused) {
            let priority = step_priority(wedding, zone, due);
            crate::queue::enqueue_in(
                db,
                now,
                step_job(org, &id, inst.step_seq + 1, due, priority),
            )
            .await?;
        }
        moved += 1;
    }
    Ok(moved)
}

/// Whether every `path: value` of a trigger filter holds in `data` (dot-separated paths).
fn filter_matches(data: &serde_json::Value, filter: Option<&serde_json::Value>) -> bool {
    let Some(filter) = filter.and_then(serde_json::Value::as_object) else {
        return true;
    };
    filter.iter().all(|(path, expected)| {
        let mut at = data;
        for part in path.split('.') {
            match at.get(part) {
                Some(v) => at = v,
                None => return false,
            }
        }
        at == expected
    })
}

/// The trigger node of a published document that `event_type` with `data` starts, if any,
/// and whether its instances are about a booking (the trigger's `subject`).
fn trigger_for(
    document: &serde_json::Value,
    event_type: &str,
    data: &serde_json::Value,
) -> Option<(String, bool)> {
    let nodes = document.get("nodes")?.as_array()?;
    let node = nodes
        .iter()
        .find(|n| n.get("type").and_then(serde_json::Value::as_str) == Some("trigger"))?;
    let trigger = node.pointer("/data/trigger")?;
    let kind = trigger.get("kind").and_then(serde_json::Value::as_str)?;
    let fires = match kind {
        "event" => {
            trigger
                .get("event_type")
                .and_then(serde_json::Value::as_str)
                == Some(event_type)
                && filter_matches(data, trigger.get("filter"))
        }
        "form_submission" => {
            event_type == "form.submitted"
                && trigger
                    .get("form_id")
                    .and_then(serde_json::Value::as_str)
                    .is_none_or(|f| {
                        data.get("form_id").and_then(serde_json::Value::as_str) == Some(f)
                    })
        }
        "payment_received" => event_type == "payment.completed",
        _ => false,
    };
    let about_booking = node
        .pointer("/data/subject")
        .and_then(serde_json::Value::as_str)
        == Some("booking");
    fires.then(|| {
        node.get("id")
            .and_then(serde_json::Value::as_str)
            .map(|id| (id.to_owned(), about_booking))
    })?
}

impl Store {
    /// Starts every published journey of `org` whose trigger `event_type` (with `data`)
    /// fires, for `couple` — or, for a journey about bookings, for the event's `booking`
    /// (an event that names none starts no such journey) —, keyed by `event_key` so a
    /// redelivered or rerouted event starts nothing twice. Returns the instances started now.
    pub async fn start_journeys_for_event(
        &self,
        org: &OrgId,
        event_type: &str,
        event_key: &str,
        couple: &wedsync_core::id::CoupleId,
        booking: Option<&wedsync_core::id::BookingId>,
        data: &serde_json::Value,
    ) -> StoreResult<Vec<wedsync_core::id::JourneyInstanceId>> {
        let published = self.published_journeys(org).await?;
        // Instances already waiting for this event go on first.
        self.resume_for_event(org, couple, booking, event_type, event_key, data)
            .await?;
        let mut started = Vec::new();
        for (journey, _, document) in &published {
            let Some((trigger_node, about_booking)) = trigger_for(document, event_type, data)
            else {
                continue;
            };
            let subject_booking = if about_booking {
                match booking {
                    Some(b) => Some(b),
                    None => continue,
                }
            } else {
                None
            };
            let context = serde_json::json!({ "type": event_type, "id": event_key, "data": data });
            let key = occurrence(event_type, event_key, data);
            let start = self
                .start_instance(
                    org,
                    journey,
                    couple,
                    subject_booking,
                    &key,
                    &trigger_node,
                    &context,
                )
                .await;
            let (instance, created) = match start {
                // The booking was deleted or moved to another couple since the event.
                Err(StoreError::Invalid(_)) if subject_booking.is_some() => continue,
                other => other?,
            };
            if created {
                started.push(instance.id);
            }
        }
        Ok(started)
    }

    /// Starts the journeys a routed inbound event triggers (it must name a couple).
    pub async fn start_journeys_for_inbound(&self, event_id: &str) -> StoreResult<usize> {
        let row = self
            .connection()
            .query_one_raw(stmt(
                self.backend(),
                "SELECT org_id, event_type, couple_id, booking_id, data FROM events WHERE id = $1",
                vec![event_id.into()],
            ))
            .await?;
        let Some(row) = row else { return Ok(0) };
        let Some(couple) = row.try_get::<Option<String>>("", "couple_id")? else {
            return Ok(0);
        };
        let org: OrgId = row
            .try_get::<String>("", "org_id")?
            .parse()
            .map_err(|e| corrupt(format!("{e:?}")))?;
        let couple = couple.parse().map_err(|e| corrupt(format!("{e:?}")))?;
        let booking: Option<wedsync_core::id::BookingId> = row
            .try_get::<Option<String>>("", "booking_id")?
            .map(|b| b.parse().map_err(|e| corrupt(format!("{e:?}"))))
            .transpose()?;
        let data: serde_json::Value =
            serde_json::from_str(&row.try_get::<String>("", "data")?).unwrap_or_default();
        let event_type: String = row.try_get("", "event_type")?;
        Ok(self
            .start_journeys_for_event(
                &org,
                &event_type,
                event_id,
                &couple,
                booking.as_ref(),
                &data,
            )
            .await?
            .len())
    }
}

/// A manual operation on an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// Hold it: its pending step does nothing until it is resumed.
    Pause,
    /// Go on from where it was paused.
    Resume,
    /// Run the current step again (after it was blocked).
    Retry,
    /// Finish the current step without waiting any longer (a person's step, a wait).
    Complete,
    /// Continue from another node of the same version.
    JumpTo(String),
    /// Move to another published version (the current node must exist there).
    Migrate(i32),
}

impl Store {
    async fn instance_for_update(
        &self,
        tx: &sea_orm::DatabaseTransaction,
        org: &OrgId,
        instance: &str,
    ) -> StoreResult<(Instance, serde_json::Value)> {
        let row = tx
            .query_one_raw(stmt(
                self.backend(),
                "SELECT * FROM journey_instances WHERE org_id = $1 AND id = $2",
                vec![org.to_string().into(), instance.into()],
            ))
            .await?
            .ok_or(StoreError::NotFound)?;
        let inst = to_instance(&row)?;
        let doc = tx
            .query_one_raw(stmt(
                self.backend(),
                "SELECT document FROM journey_versions WHERE journey_id = $1 AND version = $2",
                vec![inst.journey_id.to_string().into(), inst.version.into()],
            ))
            .await?
            .ok_or(StoreError::NotFound)?;
        let doc = serde_json::from_str(&doc.try_get::<String>("", "document")?).map_err(corrupt)?;
        Ok((inst, doc))
    }

    #[allow(clippy::too_many_arguments)]
    async fn move_instance(
        &self,
        tx: &sea_orm::DatabaseTransaction,
        org: &OrgId,
        inst: &Instance,
        node: &str,
        status: &str,
        wait: Option<&serde_json::Value>,
        due: Option<DateTime<Utc>>,
        run_at: Option<DateTime<Utc>>,
        outcome: &str,
        detail: String,
        context: Option<&serde_json::Value>,
    ) -> StoreResult<()> {
        let now = self.clock().now();
        let id = inst.id.to_string();
        tx.execute_raw(stmt(
            self.backend(),
            "UPDATE journey_instances SET step_seq = step_seq + 1, current_node = $1, status = $2, wait = $3, \
             due_at = $4, context = COALESCE($5, context), reason = NULL, updated_at = $6 WHERE id = $7",
            vec![
                node.into(),
                status.into(),
                wait.map(|w| w.to_string()).into(),
                due.map(to_micros).into(),
                context.map(|c| c.to_string()).into(),
                to_micros(now).into(),
                id.clone().into(),
            ],
        ))
        .await?;
        record_step(
            tx,
            &id,
            &StepRecord {
                seq: inst.step_seq,
                node_id: node.into(),
                node_type: "-".into(),
                at: now,
                outcome: outcome.into(),
                detail,
                // What moved it, so the same occurrence never moves it again.
                output: context
                    .and_then(|c| c.get("occurrence"))
                    .and_then(serde_json::Value::as_str)
                    .map(consumed_output),
            },
        )
        .await?;
        if let Some(at) = run_at {
            crate::queue::enqueue_in(tx, now, step_job(org, &id, inst.step_seq + 1, at, 0)).await?;
        }
        Ok(())
    }

    /// Resumes the couple's instances waiting for this event (a `wait` until an event, a
    /// payment, a form both partners must submit), in one transaction each; repeats of the
    /// same event count once. An instance about a booking is resumed only by events that
    /// name no booking or its own (a payment for another booking does not count). Returns
    /// how many moved on.
    pub async fn resume_for_event(
        &self,
        org: &OrgId,
        couple: &wedsync_core::id::CoupleId,
        booking: Option<&wedsync_core::id::BookingId>,
        event_type: &str,
        event_key: &str,
        data: &serde_json::Value,
    ) -> StoreResult<usize> {
        let rows = self
            .connection()
            .query_all_raw(stmt(
                self.backend(),
                "SELECT id, booking_id, trigger_key FROM journey_instances WHERE org_id = $1 \
                 AND couple_id = $2 AND status = 'waiting'",
                vec![org.to_string().into(), couple.to_string().into()],
            ))
            .await?;
        let occurrence = occurrence(event_type, event_key, data);
        let mut resumed = 0;
        for row in &rows {
            let id: String = row.try_get("", "id")?;
            let own: String = row.try_get("", "booking_id")?;
            // What started an instance does not also satisfy its waits.
            if row.try_get::<String>("", "trigger_key")? == occurrence {
                continue;
            }
            if let Some(b) = booking
                && !own.is_empty()
                && own != b.to_string()
            {
                continue;
            }
            let tx = self.write_tx().await?;
            let (inst, _) = self.instance_for_update(&tx, org, &id).await?;
            let Some(mut wait) = inst.wait.clone().filter(|_| inst.status == "waiting") else {
                continue;
            };
            if wait.get("mode").and_then(serde_json::Value::as_str) != Some("until_event")
                || wait.get("event_type").and_then(serde_json::Value::as_str) != Some(event_type)
                || !filter_matches(data, wait.get("filter"))
            {
                continue;
            }
            let needed = wait
                .get("needed")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(1);
            let mut seen: Vec<String> = wait
                .get("seen")
                .and_then(|s| serde_json::from_value(s.clone()).ok())
                .unwrap_or_default();
            // Two partners are two different submitters when the form says who it was.
            let who = data
                .get("partner")
                .or_else(|| data.get("email"))
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| occurrence.clone());
            if seen.contains(&who) || consumed(&tx, &id, &occurrence).await? {
                continue;
            }
            seen.push(who);
            let context = serde_json::json!({
                "type": event_type, "id": event_key, "data": data, "occurrence": occurrence,
            });
            if (seen.len() as u64) < needed {
                wait["seen"] = serde_json::json!(seen);
                self.move_instance(
                    &tx,
                    org,
                    &inst,
                    &inst.current_node,
                    "waiting",
                    Some(&wait),
                    inst.due_at,
                    None,
                    "progress",
                    format!("{event_type} {} of {needed}", seen.len()),
                    Some(&context),
                )
                .await?;
            } else {
                match wait.get("on_event").and_then(serde_json::Value::as_str) {
                    Some(next) => {
                        self.move_instance(
                            &tx,
                            org,
                            &inst,
                            next,
                            "running",
                            None,
                            None,
                            Some(self.clock().now()),
                            "resumed",
                            format!("{event_type} arrived"),
                            Some(&context),
                        )
                        .await?
                    }
                    None => {
                        self.move_instance(
                            &tx,
                            org,
                            &inst,
                            &inst.current_node,
                            "blocked",
                            None,
                            None,
                            None,
                            "blocked",
                            format!("{event_type} arrived, but the step has no next node"),
                            Some(&context),
                        )
                        .await?
                    }
                }
            }
            tx.commit().await?;
            resumed += 1;
        }
        if resumed > 0 {
            self.wake_workers();
        }
        Ok(resumed)
    }

    /// Applies a manual operation (audited). Pausing and completing invalidate the pending
    /// step's job; resuming, retrying, completing and jumping schedule the next one.
    pub async fn operate_instance(
        &self,
        org: &OrgId,
        instance: &str,
        op: Operation,
        actor: &Actor,
    ) -> StoreResult<Instance> {
        let now = self.clock().now();
        let tx = self.write_tx().await?;
        let (inst, doc) = self.instance_for_update(&tx, org, instance).await?;
        let refuse = |what: &str| {
            Err(StoreError::Conflict(format!(
                "cannot {what} an instance that is {}",
                inst.status
            )))
        };
        let action = match &op {
            Operation::Pause => {
                if !matches!(inst.status.as_str(), "running" | "waiting") {
                    return refuse("pause");
                }
                let paused = serde_json::json!({ "paused_from": inst.status, "wait": inst.wait });
                self.move_instance(
                    &tx,
                    org,
                    &inst,
                    &inst.current_node,
                    "paused",
                    Some(&paused),
                    inst.due_at,
                    None,
                    "paused",
                    format!("paused by {actor}"),
                    None,
                )
                .await?;
                "journey_instance.pause"
            }
            Operation::Resume => {
                if inst.status != "paused" {
                    return refuse("resume");
                }
                let saved = inst.wait.clone().unwrap_or_default();
                let from = saved
                    .get("paused_from")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("running")
                    .to_owned();
                let wait = saved.get("wait").filter(|w| !w.is_null()).cloned();
                let run_at = if from == "running" {
                    Some(now)
                } else {
                    inst.due_at.map(|d| d.max(now))
                };
                self.move_instance(
                    &tx,
                    org,
                    &inst,
                    &inst.current_node,
                    &from,
                    wait.as_ref(),
                    inst.due_at,
                    run_at,
                    "resumed",
                    format!("resumed by {actor}"),
                    None,
                )
                .await?;
                "journey_instance.resume"
            }
            Operation::Retry => {
                if inst.status != "blocked" {
                    return refuse("retry");
                }
                self.move_instance(
                    &tx,
                    org,
                    &inst,
                    &inst.current_node,
                    "running",
                    None,
                    None,
                    Some(now),
                    "retried",
                    format!("step retried by {actor}"),
                    None,
                )
                .await?;
                "journey_instance.retry"
            }
            Operation::Complete => {
                if inst.status != "waiting" {
                    return refuse("complete the step of");
                }
                match inst.wait.as_ref().and_then(|w| w.get("on_event")) {
                    Some(serde_json::Value::String(next)) => {
                        self.move_instance(
                            &tx,
                            org,
                            &inst,
                            next,
                            "running",
                            None,
                            None,
                            Some(now),
                            "completed_by_hand",
                            format!("step completed by {actor}"),
                            None,
                        )
                        .await?;
                    }
                    _ => {
                        // A timed wait: its time is now.
                        self.move_instance(
                            &tx,
                            org,
                            &inst,
                            &inst.current_node,
                            "waiting",
                            inst.wait.as_ref(),
                            Some(now),
                            Some(now),
                            "completed_by_hand",
                            format!("wait ended early by {actor}"),
                            None,
                        )
                        .await?;
                    }
                }
                "journey_instance.complete_step"
            }
            Operation::JumpTo(node) => {
                if matches!(inst.status.as_str(), "completed" | "cancelled") {
                    return refuse("move");
                }
                let exists = doc
                    .get("nodes")
                    .and_then(serde_json::Value::as_array)
                    .is_some_and(|n| {
                        n.iter()
                            .any(|n| n.get("id").and_then(serde_json::Value::as_str) == Some(node))
                    });
                if !exists {
                    return Err(StoreError::Invalid(ValidationErrors::single(
                        "node",
                        format!("version {} has no node `{node}`", inst.version),
                    )));
                }
                self.move_instance(
                    &tx,
                    org,
                    &inst,
                    node,
                    "running",
                    None,
                    None,
                    Some(now),
                    "jumped",
                    format!("moved to {node} by {actor}"),
                    None,
                )
                .await?;
                "journey_instance.jump"
            }
            Operation::Migrate(version) => {
                if matches!(inst.status.as_str(), "completed" | "cancelled" | "skipped") {
                    return refuse("migrate");
                }
                let target = tx
                    .query_one_raw(stmt(
                        self.backend(),
                        "SELECT document FROM journey_versions WHERE journey_id = $1 AND version = $2",
                        vec![inst.journey_id.to_string().into(), (*version).into()],
                    ))
                    .await?
                    .ok_or_else(|| {
                        StoreError::Invalid(ValidationErrors::single("version", format!("version {version} does not exist")))
                    })?;
                let target: serde_json::Value =
                    serde_json::from_str(&target.try_get::<String>("", "document")?)
                        .map_err(corrupt)?;
                let has_node = target
                    .get("nodes")
                    .and_then(serde_json::Value::as_array)
                    .is_some_and(|n| {
                        n.iter().any(|n| {
                            n.get("id").and_then(serde_json::Value::as_str)
                                == Some(inst.current_node.as_str())
                        })
                    });
                if !has_node {
                    return Err(StoreError::Invalid(ValidationErrors::single(
                        "version",
                        format!(
                            "version {version} has no node `{}`, where the instance is; jump it elsewhere first",
                            inst.current_node
                        ),
                    )));
                }
                tx.execute_raw(stmt(
                    self.backend(),
                    "UPDATE journey_instances SET version = $1, updated_at = $2 WHERE id = $3",
                    vec![(*version).into(), to_micros(now).into(), instance.into()],
                ))
                .await?;
                // The pending step keeps its place: same node, same wait, same job.
                record_step(
                    &tx,
                    instance,
                    &StepRecord {
                        seq: inst.step_seq,
                        node_id: inst.current_node.clone(),
                        node_type: "-".into(),
                        at: now,
                        outcome: "migrated".into(),
                        detail: format!(
                            "moved from version {} to {version} by {actor}",
                            inst.version
                        ),
                        output: None,
                    },
                )
                .await?;
                "journey_instance.migrate"
            }
        };
        audit::append(
            &tx,
            org,
            now,
            Change {
                actor,
                action,
                target_type: "journey_instance",
                target_id: instance.to_owned(),
                before: Some(
                    serde_json::json!({ "status": inst.status, "node": inst.current_node }),
                ),
                after: Some(serde_json::json!({ "operation": format!("{op:?}") })),
            },
        )
        .await?;
        let row = tx
            .query_one_raw(stmt(
                self.backend(),
                "SELECT * FROM journey_instances WHERE id = $1",
                vec![instance.into()],
            ))
            .await?
            .ok_or(StoreError::NotFound)?;
        tx.commit().await?;
        self.wake_workers();
        to_instance(&row)
    }
}

//! The durable job queue: a table in the same database, so a job can be enqueued in the
//! same transaction as the change that causes it (the outbox pattern).
//!
//! Life of a job: `ready` (waiting for `run_at`) → `running` (claimed by a worker, which holds
//! a lease it renews by heartbeat) → `succeeded`, or back to `ready` for a retry, or `dead`
//! when retries are exhausted or the failure is permanent. An operator may `retry` a dead job
//! or `discard` a waiting one. A worker that stops heartbeating loses its lease; the reaper
//! puts its jobs back to `ready` (or `dead` if that was the last attempt), so they run again.
//!
//! Every state change after a claim is fenced by `lease_owner`: a worker that lost its lease
//! cannot complete or fail a job another worker now holds.
//!
//! On PostgreSQL claims use `FOR UPDATE SKIP LOCKED`, so many nodes claim disjoint batches
//! without waiting on each other, and an enqueue sends `NOTIFY wedsync_jobs`, which
//! PostgreSQL delivers only if the transaction commits. On SQLite the write lock serialises
//! claims and wake-ups are in-process.

use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::{ConnectionTrait, DbBackend, EntityTrait, FromQueryResult, Value};
use serde::Serialize;
use wedsync_core::clock::{from_micros, to_micros};
use wedsync_core::id::{JobId, OrgId};

use crate::entity::job;
use crate::page::{Page, PageRequest, paginate};
use crate::{Actor, Store, StoreError, StoreResult};

/// The PostgreSQL channel idle workers listen on.
pub const NOTIFY_CHANNEL: &str = "wedsync_jobs";

/// Finished jobs deleted per statement by [`Store::prune_jobs`].
pub const PRUNE_CHUNK: i64 = 5_000;

/// Where a job stands.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for `run_at` and a free worker.
    Ready,
    /// Claimed by a worker holding a lease.
    Running,
    /// Done.
    Succeeded,
    /// Out of retries, or failed permanently; kept with its last error until retried or pruned.
    Dead,
    /// Dropped by an operator.
    Discarded,
}

impl JobState {
    /// The stored name.
    pub fn as_str(&self) -> &'static str {
        match self {
            JobState::Ready => "ready",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Dead => "dead",
            JobState::Discarded => "discarded",
        }
    }

    fn parse(s: &str) -> StoreResult<Self> {
        Ok(match s {
            "ready" => JobState::Ready,
            "running" => JobState::Running,
            "succeeded" => JobState::Succeeded,
            "dead" => JobState::Dead,
            "discarded" => JobState::Discarded,
            other => return Err(StoreError::Conflict(format!("corrupt job state {other}"))),
        })
    }
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// What handler runs it, e.g. `outbox.publish`.
    pub kind: String,
    /// The organisation it works for; `None` for the hub's own work.
    pub org_id: Option<OrgId>,
    /// The handler's input.
    pub payload: serde_json::Value,
    /// Higher runs first (wedding-day work is raised; see `wedsync_core::calendar`).
    pub priority: i32,
    /// Not before this instant; now when `None`.
    pub run_at: Option<DateTime<Utc>>,
    /// A second enqueue with the same key (while the first is kept) creates nothing.
    pub dedupe_key: Option<String>,
    /// Attempts before the job is dead.
    pub max_attempts: u32,
}

impl NewJob {
    /// A job of `kind` with defaults: now, priority 0, 10 attempts, no dedupe key.
    pub fn new(kind: impl Into<String>, payload: serde_json::Value) -> Self {
        Self {
            kind: kind.into(),
            org_id: None,
            payload,
            priority: 0,
            run_at: None,
            dedupe_key: None,
            max_attempts: 10,
        }
    }
}

/// A job as workers, the API and the CLI see it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Job {
    /// `job_…`.
    pub id: String,
    /// The organisation, if any.
    pub org_id: Option<String>,
    /// The handler.
    pub kind: String,
    /// The handler's input.
    pub payload: serde_json::Value,
    /// Higher runs first.
    pub priority: i32,
    /// Where it stands.
    pub state: JobState,
    /// Not before this instant.
    pub run_at: DateTime<Utc>,
    /// Attempts started so far.
    pub attempts: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Its dedupe key.
    pub dedupe_key: Option<String>,
    /// The worker holding it, while running.
    pub lease_owner: Option<String>,
    /// When that worker's lease runs out.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When it succeeded, died or was discarded.
    pub finished_at: Option<DateTime<Utc>>,
}

fn to_job(m: job::Model) -> StoreResult<Job> {
    Ok(Job {
        payload: serde_json::from_str(&m.payload).unwrap_or(serde_json::Value::Null),
        state: JobState::parse(&m.state)?,
        run_at: from_micros(m.run_at),
        lease_expires_at: m.lease_expires_at.map(from_micros),
        created_at: from_micros(m.created_at),
        updated_at: from_micros(m.updated_at),
        finished_at: m.finished_at.map(from_micros),
        id: m.id,
        org_id: m.org_id,
        kind: m.kind,
        priority: m.priority,
        attempts: m.attempts,
        max_attempts: m.max_attempts,
        dedupe_key: m.dedupe_key,
        lease_owner: m.lease_owner,
        last_error: m.last_error,
    })
}

/// The result of an enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    /// The job's id (the existing job's, for a duplicate).
    pub id: String,
    /// False when the dedupe key matched an existing job and nothing was created.
    pub created: bool,
}

/// What to do with a job whose attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterFailure {
    /// Try again at this instant.
    RetryAt(DateTime<Utc>),
    /// Give up: the job is dead.
    Dead,
}

/// `$first, $first+1, …` for `n` values.
pub(crate) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

use crate::sql::stmt;

/// Claims, heartbeats and outcomes commit without waiting for the log to reach the disk,
/// through the store's relaxed pool (`synchronous_commit = off` on PostgreSQL,
/// `synchronous = NORMAL` on SQLite). Losing one of them in a power cut or server crash
/// only means the job runs again, which at-least-once delivery already allows; and since
/// the log is written in order, any later durable commit makes them durable too. The
/// enqueue, which must never be lost, stays fully synchronous. One statement commits by
/// itself: no BEGIN and COMMIT round trips.
async fn relaxed_query(
    store: &Store,
    sql: &str,
    values: Vec<Value>,
) -> StoreResult<Vec<sea_orm::QueryResult>> {
    let _turn = store.write_turn().await?;
    Ok(store
        .relaxed_connection()
        .query_all_raw(stmt(store.backend(), sql, values))
        .await?)
}

/// [`relaxed_query`] for statements without results; returns the rows affected.
pub(crate) async fn relaxed_exec(store: &Store, sql: &str, values: Vec<Value>) -> StoreResult<u64> {
    let _turn = store.write_turn().await?;
    Ok(store
        .relaxed_connection()
        .execute_raw(stmt(store.backend(), sql, values))
        .await?
        .rows_affected())
}

/// Enqueues `job` on `db`, which may be the caller's open transaction: if it rolls back, the
/// job never existed. Call [`Store::wake_workers`] after committing to wake this node's
/// workers at once (PostgreSQL nodes are woken by `NOTIFY` on commit in any case).
pub async fn enqueue_in<C: ConnectionTrait>(
    db: &C,
    now: DateTime<Utc>,
    job: NewJob,
) -> StoreResult<Enqueued> {
    let kind = job.kind.clone();
    let enqueued = enqueue_in_quietly(db, now, job).await?;
    if enqueued.created {
        notify_in(db, &kind).await?;
    }
    Ok(enqueued)
}

/// Sends the wake-up `NOTIFY` inside `db`'s transaction (PostgreSQL; delivered on commit).
pub(crate) async fn notify_in<C: ConnectionTrait>(db: &C, kind: &str) -> StoreResult<()> {
    let backend = db.get_database_backend();
    if backend == DbBackend::Postgres {
        db.execute_raw(stmt(
            backend,
            "SELECT pg_notify($1, $2)",
            vec![NOTIFY_CHANNEL.into(), kind.into()],
        ))
        .await?;
    }
    Ok(())
}

/// [`enqueue_in`] without the wake-up, for callers enqueueing many jobs in one transaction
/// who send one [`notify_in`] for all of them.
pub(crate) async fn enqueue_in_quietly<C: ConnectionTrait>(
    db: &C,
    now: DateTime<Utc>,
    job: NewJob,
) -> StoreResult<Enqueued> {
    let backend = db.get_database_backend();
    let id = JobId::new_at(now).to_string();
    let at = to_micros(now);
    let run_at = to_micros(job.run_at.unwrap_or(now));
    let sql = "INSERT INTO jobs (id, org_id, kind, payload, priority, state, run_at, attempts, max_attempts, \
               dedupe_key, lease_owner, lease_expires_at, last_error, created_at, updated_at, finished_at) \
               VALUES ($1, $2, $3, $4, $5, 'ready', $6, 0, $7, $8, NULL, NULL, NULL, $9, $9, NULL) \
               ON CONFLICT (dedupe_key) DO NOTHING";
    let values: Vec<Value> = vec![
        id.clone().into(),
        job.org_id.map(|o| o.to_string()).into(),
        job.kind.clone().into(),
        job.payload.to_string().into(),
        job.priority.into(),
        run_at.into(),
        i32::try_from(job.max_attempts)
            .unwrap_or(i32::MAX)
            .max(1)
            .into(),
        job.dedupe_key.clone().into(),
        at.into(),
    ];
    let inserted = db
        .execute_raw(stmt(backend, sql, values))
        .await?
        .rows_affected();
    if inserted == 0 {
        let existing = db
            .query_one_raw(stmt(
                backend,
                "SELECT id FROM jobs WHERE dedupe_key = $1",
                vec![job.dedupe_key.into()],
            ))
            .await?
            .ok_or_else(|| StoreError::Conflict("duplicate job vanished".into()))?;
        return Ok(Enqueued {
            id: existing.try_get("", "id")?,
            created: false,
        });
    }
    Ok(Enqueued { id, created: true })
}

/// [`Store::enqueue_many`] inside the caller's transaction `db`: one multi-row insert per 500
/// jobs and one wake-up `NOTIFY` (PostgreSQL; delivered on commit). Results are in input
/// order. Call [`Store::wake_workers`] after committing.
pub async fn enqueue_many_in<C: ConnectionTrait>(
    db: &C,
    now: DateTime<Utc>,
    jobs: &[NewJob],
) -> StoreResult<Vec<Enqueued>> {
    const CHUNK: usize = 500;
    let backend = db.get_database_backend();
    let mut out = Vec::with_capacity(jobs.len());
    for chunk in jobs.chunks(CHUNK) {
        let ids: Vec<String> = chunk
            .iter()
            .map(|_| JobId::new_at(now).to_string())
            .collect();
        let mut rows = Vec::with_capacity(chunk.len());
        let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 8 + 1);
        values.push(to_micros(now).into());
        for (job, id) in chunk.iter().zip(&ids) {
            let p = values.len() + 1;
            rows.push(format!(
                    "(${p}, ${}, ${}, ${}, ${}, 'ready', ${}, 0, ${}, ${}, NULL, NULL, NULL, $1, $1, NULL)",
                    p + 1, p + 2, p + 3, p + 4, p + 5, p + 6, p + 7
                ));
            values.extend([
                Value::from(id.clone()),
                job.org_id.map(|o| o.to_string()).into(),
                job.kind.clone().into(),
                job.payload.to_string().into(),
                job.priority.into(),
                to_micros(job.run_at.unwrap_or(now)).into(),
                i32::try_from(job.max_attempts)
                    .unwrap_or(i32::MAX)
                    .max(1)
                    .into(),
                job.dedupe_key.clone().into(),
            ]);
        }
        let sql = format!(
            "INSERT INTO jobs (id, org_id, kind, payload, priority, state, run_at, attempts, max_attempts, \
                 dedupe_key, lease_owner, lease_expires_at, last_error, created_at, updated_at, finished_at) \
                 VALUES {} ON CONFLICT (dedupe_key) DO NOTHING RETURNING id",
            rows.join(", ")
        );
        let inserted: std::collections::HashSet<String> = db
            .query_all_raw(stmt(backend, &sql, values))
            .await?
            .iter()
            .map(|r| r.try_get::<String>("", "id"))
            .collect::<Result<_, _>>()?;
        // Jobs whose dedupe key already existed: report the existing job.
        let dupes: Vec<String> = chunk
            .iter()
            .zip(&ids)
            .filter(|(_, id)| !inserted.contains(*id))
            .filter_map(|(job, _)| job.dedupe_key.clone())
            .collect();
        let mut existing = std::collections::HashMap::new();
        if !dupes.is_empty() {
            let sql = format!(
                "SELECT id, dedupe_key FROM jobs WHERE dedupe_key IN ({})",
                placeholders(1, dupes.len())
            );
            let keys: Vec<Value> = dupes.iter().map(|k| Value::from(k.clone())).collect();
            for r in db.query_all_raw(stmt(backend, &sql, keys)).await? {
                existing.insert(
                    r.try_get::<String>("", "dedupe_key")?,
                    r.try_get::<String>("", "id")?,
                );
            }
        }
        for (job, id) in chunk.iter().zip(ids) {
            if inserted.contains(&id) {
                out.push(Enqueued { id, created: true });
            } else {
                let found = job
                    .dedupe_key
                    .as_ref()
                    .and_then(|k| existing.get(k))
                    .cloned();
                let id =
                    found.ok_or_else(|| StoreError::Conflict("duplicate job vanished".into()))?;
                out.push(Enqueued { id, created: false });
            }
        }
    }
    if backend == DbBackend::Postgres && out.iter().any(|e| e.created) {
        db.execute_raw(stmt(
            backend,
            "SELECT pg_notify($1, 'batch')",
            vec![NOTIFY_CHANNEL.into()],
        ))
        .await?;
    }
    Ok(out)
}

/// Filters for listing jobs.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only this state.
    pub state: Option<JobState>,
    /// Only this kind.
    pub kind: Option<String>,
}

/// Jobs counted by kind and state, for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDepth {
    /// The kind.
    pub kind: String,
    /// The state.
    pub state: JobState,
    /// How many.
    pub count: i64,
}

impl Store {
    /// Enqueues in a transaction of its own and wakes this node's workers.
    pub async fn enqueue(&self, job: NewJob) -> StoreResult<Enqueued> {
        let tx = self.write_tx().await?;
        let result = enqueue_in(&tx, self.clock().now(), job).await?;
        tx.commit().await?;
        self.wake_workers();
        Ok(result)
    }

    /// Enqueues many jobs in one transaction (one disk sync for all of them), with one
    /// multi-row insert per 500 jobs and one wake-up, so bulk work costs a few round trips
    /// instead of one per job. Results are in input order.
    pub async fn enqueue_many(&self, jobs: Vec<NewJob>) -> StoreResult<Vec<Enqueued>> {
        let tx = self.write_tx().await?;
        let out = enqueue_many_in(&tx, self.clock().now(), &jobs).await?;
        tx.commit().await?;
        self.wake_workers();
        Ok(out)
    }

    /// Claims up to `limit` due jobs of `kind` for `worker`, holding them for `lease`.
    pub async fn claim(
        &self,
        worker: &str,
        kind: &str,
        limit: u32,
        lease: TimeDelta,
    ) -> StoreResult<Vec<Job>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now = self.clock().now();
        let lock = if self.backend() == DbBackend::Postgres {
            "FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let sql = format!(
            "UPDATE jobs SET state = 'running', lease_owner = $1, lease_expires_at = $2, attempts = attempts + 1, updated_at = $3 \
             WHERE id IN (SELECT id FROM jobs WHERE state = 'ready' AND kind = $4 AND run_at <= $3 \
             ORDER BY priority DESC, run_at, id LIMIT $5 {lock}) \
             RETURNING *"
        );
        let values: Vec<Value> = vec![
            worker.into(),
            to_micros(now + lease).into(),
            to_micros(now).into(),
            kind.into(),
            i64::from(limit).into(),
        ];
        let rows = relaxed_query(self, &sql, values).await?;
        let mut jobs = rows
            .iter()
            .map(|r| {
                job::Model::from_query_result(r, "")
                    .map_err(StoreError::from)
                    .and_then(to_job)
            })
            .collect::<StoreResult<Vec<_>>>()?;
        jobs.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then(a.run_at.cmp(&b.run_at))
                .then(a.id.cmp(&b.id))
        });
        Ok(jobs)
    }

    /// Renews `worker`'s leases on `ids`; returns the ids it still holds (a job missing from
    /// the answer was reaped and may be running elsewhere: its worker must stop).
    pub async fn heartbeat(
        &self,
        worker: &str,
        ids: &[String],
        lease: TimeDelta,
    ) -> StoreResult<Vec<String>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.clock().now();
        let sql = format!(
            "UPDATE jobs SET lease_expires_at = $1, updated_at = $2 \
             WHERE state = 'running' AND lease_owner = $3 AND id IN ({}) RETURNING id",
            placeholders(4, ids.len())
        );
        let mut values: Vec<Value> = vec![
            to_micros(now + lease).into(),
            to_micros(now).into(),
            worker.into(),
        ];
        values.extend(ids.iter().map(|id| Value::from(id.clone())));
        let rows = relaxed_query(self, &sql, values).await?;
        rows.iter()
            .map(|r| r.try_get::<String>("", "id").map_err(StoreError::from))
            .collect()
    }

    /// Marks `worker`'s jobs `ids` succeeded, in one statement; returns how many it held.
    pub async fn complete(&self, worker: &str, ids: &[String]) -> StoreResult<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let (sql, values) = self.completion(worker, ids);
        relaxed_exec(self, &sql, values).await
    }

    /// [`Store::complete`] with the statements the jobs' handlers write with their success
    /// ([`crate::worker::JobHandler::on_success`]), relaxed, in one hand-off to SQLite's
    /// connection and one write turn (on PostgreSQL one after the other). Each statement
    /// commits by itself, the handlers' first and the completion last: a crash between
    /// them leaves a job that runs again, never a completed job whose statement was lost
    /// (the crash test caught that order the other way round on PostgreSQL).
    pub(crate) async fn complete_with(
        &self,
        worker: &str,
        ids: &[String],
        follow_ups: Vec<(String, Vec<Value>)>,
    ) -> StoreResult<()> {
        if follow_ups.is_empty() {
            return self.complete(worker, ids).await.map(drop);
        }
        let mut statements = follow_ups;
        statements.push(self.completion(worker, ids));
        let _turn = self.write_turn().await?;
        crate::sql::run_all(self.relaxed_connection(), statements).await?;
        Ok(())
    }

    /// The statement that marks `worker`'s jobs `ids` succeeded.
    fn completion(&self, worker: &str, ids: &[String]) -> (String, Vec<Value>) {
        let now = to_micros(self.clock().now());
        let sql = format!(
            "UPDATE jobs SET state = 'succeeded', finished_at = $1, updated_at = $1, lease_owner = NULL, \
             lease_expires_at = NULL, last_error = NULL \
             WHERE state = 'running' AND lease_owner = $2 AND id IN ({})",
            placeholders(3, ids.len())
        );
        let mut values: Vec<Value> = vec![now.into(), worker.into()];
        values.extend(ids.iter().map(|id| Value::from(id.clone())));
        (sql, values)
    }

    /// Records a failed attempt: back to `ready` at the retry time, or `dead`.
    pub async fn fail(
        &self,
        worker: &str,
        id: &str,
        error: &str,
        after: AfterFailure,
    ) -> StoreResult<bool> {
        let now = to_micros(self.clock().now());
        let (state, run_at, finished) = match after {
            AfterFailure::RetryAt(at) => ("ready", Some(to_micros(at)), None),
            AfterFailure::Dead => ("dead", None, Some(now)),
        };
        let sql = "UPDATE jobs SET state = $1, run_at = COALESCE($2, run_at), last_error = $3, finished_at = $4, \
                   updated_at = $5, lease_owner = NULL, lease_expires_at = NULL \
                   WHERE id = $6 AND state = 'running' AND lease_owner = $7";
        let values: Vec<Value> = vec![
            state.into(),
            run_at.into(),
            truncate(error, 4096).into(),
            finished.into(),
            now.into(),
            id.into(),
            worker.into(),
        ];
        Ok(relaxed_exec(self, sql, values).await? == 1)
    }

    /// Puts a running job back to wait until `until` without counting the attempt (its target
    /// is behind an open circuit breaker, or the worker is shutting down).
    pub async fn defer(&self, worker: &str, id: &str, until: DateTime<Utc>) -> StoreResult<bool> {
        let now = to_micros(self.clock().now());
        let sql = "UPDATE jobs SET state = 'ready', run_at = $1, attempts = attempts - 1, updated_at = $2, \
                   lease_owner = NULL, lease_expires_at = NULL \
                   WHERE id = $3 AND state = 'running' AND lease_owner = $4";
        let values: Vec<Value> = vec![
            to_micros(until).into(),
            now.into(),
            id.into(),
            worker.into(),
        ];
        Ok(relaxed_exec(self, sql, values).await? == 1)
    }

    /// Returns running jobs whose lease ran out to `ready` (or `dead` if that was their last
    /// attempt), so a crashed worker's jobs run again. Safe to run on every node.
    pub async fn reap_expired(&self) -> StoreResult<u64> {
        let now = to_micros(self.clock().now());
        let sql = "UPDATE jobs SET \
                   state = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'ready' END, \
                   finished_at = CASE WHEN attempts >= max_attempts THEN $1 ELSE NULL END, \
                   last_error = 'the worker running it stopped (lease expired)', \
                   run_at = $1, updated_at = $1, lease_owner = NULL, lease_expires_at = NULL \
                   WHERE state = 'running' AND lease_expires_at < $1";
        let _turn = self.write_turn().await?;
        let reaped = self
            .connection()
            .execute_raw(stmt(self.backend(), sql, vec![now.into()]))
            .await?
            .rows_affected();
        if reaped > 0 {
            tracing::warn!(
                reaped,
                "jobs whose workers stopped heartbeating were put back"
            );
            self.wake_workers();
        }
        Ok(reaped)
    }

    /// The earliest `run_at` of a ready job of these kinds, to know how long to sleep.
    pub async fn next_due(&self, kinds: &[String]) -> StoreResult<Option<DateTime<Utc>>> {
        if kinds.is_empty() {
            return Ok(None);
        }
        // Walk `ix_jobs_due` (run_at, ready jobs only) from its start to the first job of
        // these kinds: one entry read in the usual case, however many timers wait. SQLite's
        // `+kind` keeps its planner from choosing the claim index (which would read every
        // ready entry of the kinds) instead.
        let kind = if self.backend() == DbBackend::Sqlite {
            "+kind"
        } else {
            "kind"
        };
        let sql = format!(
            "SELECT run_at AS next FROM jobs WHERE state = 'ready' AND {kind} IN ({}) \
             ORDER BY run_at LIMIT 1",
            placeholders(1, kinds.len())
        );
        let values: Vec<Value> = kinds.iter().map(|k| Value::from(k.clone())).collect();
        let row = self
            .connection()
            .query_one_raw(stmt(self.backend(), &sql, values))
            .await?;
        Ok(row
            .and_then(|r| r.try_get::<Option<i64>>("", "next").ok().flatten())
            .map(from_micros))
    }

    /// One job; scoped to `org` when given (the API), any job when not (the CLI).
    pub async fn get_job(&self, org: Option<&OrgId>, id: &str) -> StoreResult<Job> {
        let found = job::Entity::find_by_id(id.to_owned())
            .one(self.connection())
            .await?;
        match found {
            Some(m) if org.is_none_or(|o| m.org_id.as_deref() == Some(o.to_string().as_str())) => {
                to_job(m)
            }
            _ => Err(StoreError::NotFound),
        }
    }

    /// A page of jobs, oldest first; scoped to `org` when given.
    pub async fn list_jobs(
        &self,
        org: Option<&OrgId>,
        filter: &JobFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Job>> {
        use sea_orm::{ColumnTrait, QueryFilter, QueryOrder, QuerySelect};
        let limit = page.limit();
        let mut q = job::Entity::find()
            .order_by_asc(job::Column::Id)
            .limit(limit + 1);
        if let Some(org) = org {
            q = q.filter(job::Column::OrgId.eq(org.to_string()));
        }
        if let Some(after) = &page.after {
            q = q.filter(job::Column::Id.gt(after.clone()));
        }
        if let Some(state) = filter.state {
            q = q.filter(job::Column::State.eq(state.as_str()));
        }
        if let Some(kind) = &filter.kind {
            q = q.filter(job::Column::Kind.eq(kind.clone()));
        }
        let rows = q
            .all(self.connection())
            .await?
            .into_iter()
            .map(to_job)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(rows, limit, |j| j.id.clone()))
    }

    /// Sends a dead (or discarded) job round again with fresh attempts.
    pub async fn retry_job(
        &self,
        org: Option<&OrgId>,
        id: &str,
        actor: &Actor,
    ) -> StoreResult<Job> {
        self.operator_change(
            org,
            id,
            actor,
            "job.retry",
            &[JobState::Dead, JobState::Discarded],
            "ready",
        )
        .await
    }

    /// Drops a job that is waiting or dead; a running job must finish or be reaped first.
    pub async fn discard_job(
        &self,
        org: Option<&OrgId>,
        id: &str,
        actor: &Actor,
    ) -> StoreResult<Job> {
        self.operator_change(
            org,
            id,
            actor,
            "job.discard",
            &[JobState::Ready, JobState::Dead],
            "discarded",
        )
        .await
    }

    async fn operator_change(
        &self,
        org: Option<&OrgId>,
        id: &str,
        actor: &Actor,
        action: &str,
        from: &[JobState],
        to: &str,
    ) -> StoreResult<Job> {
        let before = self.get_job(org, id).await?;
        if !from.contains(&before.state) {
            return Err(StoreError::Conflict(format!(
                "the job is {}; {action} applies to {} jobs",
                before.state.as_str(),
                from.iter()
                    .map(JobState::as_str)
                    .collect::<Vec<_>>()
                    .join(" or ")
            )));
        }
        let now = self.clock().now();
        let tx = self.write_tx().await?;
        let (attempts_sql, finished_sql) = if to == "ready" {
            ("0", "NULL")
        } else {
            ("attempts", "$1")
        };
        let sql = format!(
            "UPDATE jobs SET state = $2, attempts = {attempts_sql}, run_at = $1, updated_at = $1, finished_at = {finished_sql} \
             WHERE id = $3 AND state = $4"
        );
        let values: Vec<Value> = vec![
            to_micros(now).into(),
            to.into(),
            id.into(),
            before.state.as_str().into(),
        ];
        let changed = tx
            .execute_raw(stmt(self.backend(), &sql, values))
            .await?
            .rows_affected();
        if changed == 0 {
            return Err(StoreError::Conflict(
                "the job changed meanwhile; look again".into(),
            ));
        }
        if let Some(org_id) = before
            .org_id
            .as_deref()
            .and_then(|o| o.parse::<OrgId>().ok())
        {
            crate::audit::append(&tx, &org_id, now, crate::audit::Change {
                actor,
                action,
                target_type: "job",
                target_id: id.to_owned(),
                before: Some(serde_json::json!({ "state": before.state, "attempts": before.attempts, "last_error": before.last_error })),
                after: Some(serde_json::json!({ "state": to })),
            })
            .await?;
        }
        // Read back inside the transaction: once committed, a worker may claim the job
        // at once, and the operator is owed the state they made, not the next one.
        let after = job::Entity::find_by_id(id.to_owned())
            .one(&tx)
            .await?
            .ok_or(StoreError::NotFound)
            .and_then(to_job)?;
        tx.commit().await?;
        self.wake_workers();
        Ok(after)
    }

    /// Deletes finished jobs: succeeded and discarded ones finished before `done_before`, dead
    /// ones before `dead_before`, [`PRUNE_CHUNK`] per statement so that a backlog (after an
    /// outage, a busy Saturday) never holds the write lock for long: other writers go
    /// between the chunks. Returns how many went.
    pub async fn prune_jobs(
        &self,
        done_before: DateTime<Utc>,
        dead_before: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let sql = "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE \
                   (state IN ('succeeded', 'discarded') AND finished_at < $1) \
                   OR (state = 'dead' AND finished_at < $2) LIMIT $3)";
        let mut total = 0;
        loop {
            let values: Vec<Value> = vec![
                to_micros(done_before).into(),
                to_micros(dead_before).into(),
                PRUNE_CHUNK.into(),
            ];
            let _turn = self.write_turn().await?;
            let gone = self
                .connection()
                .execute_raw(stmt(self.backend(), sql, values))
                .await?
                .rows_affected();
            total += gone;
            if gone < PRUNE_CHUNK.unsigned_abs() {
                return Ok(total);
            }
        }
    }

    /// PostgreSQL: vacuums (and analyzes) this schema's tables with many dead row versions,
    /// and analyzes those much changed since their last statistics. A queue table turns
    /// over constantly: without this, on a server whose autovacuum is off (or tuned for
    /// slower tables) its indexes fill with dead entries every claim must step over, and the
    /// planner works from no statistics. Returns the tables it worked on; nothing on SQLite.
    pub async fn vacuum_where_needed(&self) -> StoreResult<Vec<String>> {
        if self.backend() != DbBackend::Postgres {
            return Ok(Vec::new());
        }
        let rows = self
            .connection()
            .query_all_raw(stmt(
                self.backend(),
                "SELECT relname, n_dead_tup > GREATEST(1000, n_live_tup / 10) AS dead \
                 FROM pg_stat_user_tables WHERE schemaname = current_schema() \
                 AND (n_dead_tup > GREATEST(1000, n_live_tup / 10) \
                      OR n_mod_since_analyze > GREATEST(1000, n_live_tup / 10))",
                vec![],
            ))
            .await?;
        let mut done = Vec::with_capacity(rows.len());
        for row in rows {
            let table: String = row.try_get("", "relname")?;
            let dead: bool = row.try_get("", "dead")?;
            let quoted = format!("\"{}\"", table.replace('"', "\"\""));
            let sql = if dead {
                format!("VACUUM (ANALYZE) {quoted}")
            } else {
                format!("ANALYZE {quoted}")
            };
            self.connection().execute_unprepared(&sql).await?;
            tracing::debug!(%table, vacuumed = dead, "table maintenance");
            done.push(table);
        }
        Ok(done)
    }

    /// Jobs by kind and state.
    pub async fn queue_depth(&self) -> StoreResult<Vec<QueueDepth>> {
        let rows = self
            .connection()
            .query_all_raw(stmt(
                self.backend(),
                "SELECT kind, state, COUNT(*) AS n FROM jobs GROUP BY kind, state",
                vec![],
            ))
            .await?;
        rows.iter()
            .map(|r| {
                Ok(QueueDepth {
                    kind: r.try_get("", "kind")?,
                    state: JobState::parse(&r.try_get::<String>("", "state")?)?,
                    count: r.try_get("", "n")?,
                })
            })
            .collect()
    }

    /// Per kind, how long the oldest due job has been waiting.
    pub async fn oldest_ready_age(&self) -> StoreResult<Vec<(String, TimeDelta)>> {
        let now = self.clock().now();
        let rows = self
            .connection()
            .query_all_raw(stmt(
                self.backend(),
                "SELECT kind, MIN(run_at) AS oldest FROM jobs WHERE state = 'ready' AND run_at <= $1 GROUP BY kind",
                vec![to_micros(now).into()],
            ))
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("", "kind")?,
                    now - from_micros(r.try_get("", "oldest")?),
                ))
            })
            .collect()
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handler's statement goes before the completion: when it fails, the job is not
    /// completed (it stays leased, and runs again once reaped), so a completed job never
    /// lacks what its handler wrote with it. Either backend, per the test database setting.
    #[tokio::test]
    async fn a_failed_follow_up_leaves_the_job_uncompleted() {
        let clock: wedsync_core::clock::SharedClock =
            std::sync::Arc::new(wedsync_core::clock::SystemClock);
        let (store, _db) = crate::testing::migrated_store(clock).await.expect("store");
        let id = store
            .enqueue(NewJob::new("test.follow_up", serde_json::json!({})))
            .await
            .expect("enqueue")
            .id;
        let claimed = store
            .claim("w", "test.follow_up", 1, TimeDelta::seconds(30))
            .await
            .expect("claim");
        assert_eq!(claimed.len(), 1);
        let failing = (
            "SELECT no_such_function($1)".to_owned(),
            vec![Value::from(1i64)],
        );
        assert!(
            store
                .complete_with("w", std::slice::from_ref(&id), vec![failing])
                .await
                .is_err()
        );
        let job = store.get_job(None, &id).await.expect("job");
        assert_eq!(job.state, JobState::Running, "not completed without it");
        let fine = (
            "UPDATE jobs SET last_error = $1 WHERE id = $2".to_owned(),
            vec![Value::from("noted"), Value::from(id.clone())],
        );
        store
            .complete_with("w", std::slice::from_ref(&id), vec![fine])
            .await
            .expect("complete");
        let job = store.get_job(None, &id).await.expect("job");
        assert_eq!(job.state, JobState::Succeeded);
    }
}

//! Verified inbound requests and the canonical events made from them.
//!
//! [`Store::ingest`] writes, in one transaction, the raw request (headers without secrets,
//! the exact body), its canonical events, and the `event.route` job that routes them (one per
//! organisation and priority of a group-committed batch, listing its events); the sender is
//! answered only after it commits. The unique `(source_id, dedupe_key)` index makes a second
//! delivery of the same sender event a recognised duplicate that creates nothing.

use base64::Engine;
use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, Statement, Value};
use serde::Serialize;
use wedsync_core::clock::{from_micros, to_micros};
use wedsync_core::id::{EventId, OrgId, RequestId, SourceId};

use crate::page::{Page, PageRequest, paginate};
use crate::queue::{NewJob, enqueue_in};
use crate::worker::Reservation;
use crate::{Actor, Store, StoreError, StoreResult};

/// The job kind that routes an inbound event to its consumers.
pub const ROUTE_KIND: &str = "event.route";

/// How often a routing job is tried before it is dead (routing fails only while the
/// database does, so it keeps trying well past an outage).
const ROUTE_MAX_ATTEMPTS: i32 = 25;

/// A verified request to store.
#[derive(Debug, Clone)]
pub struct IncomingRequest {
    /// The source it came to.
    pub source_id: SourceId,
    /// The source's organisation.
    pub org_id: OrgId,
    /// Its headers, with anything secret already removed.
    pub headers: Vec<(String, String)>,
    /// Its content type.
    pub content_type: String,
    /// The exact body bytes.
    pub body: Vec<u8>,
    /// The sender's event id (prefixed by provider), or a hash of the body.
    pub dedupe_key: String,
}

/// A canonical event to store with its request.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The canonical type, e.g. `payment.completed`, or `{provider}.raw`.
    pub event_type: String,
    /// What it is about (the provider's object id).
    pub subject: Option<String>,
    /// When it happened, per the sender.
    pub time: DateTime<Utc>,
    /// The event's data.
    pub data: serde_json::Value,
    /// A couple reference the payload carried (checked against the organisation).
    pub couple_ref: Option<String>,
    /// A booking reference the payload carried (checked against the organisation).
    pub booking_ref: Option<String>,
}

/// The outcome of an ingest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    /// Stored, with the ids of its events.
    Accepted {
        /// The stored request.
        request_id: String,
        /// Its canonical events.
        event_ids: Vec<String>,
    },
    /// Seen before: nothing was created.
    Duplicate {
        /// The request stored the first time.
        request_id: String,
    },
}

/// An event to route: what a [`ROUTE_KIND`] job asks for.
#[derive(Debug, Clone)]
pub struct RouteRequest {
    /// The event (`evt_…`).
    pub event_id: String,
    /// The queue priority of its deliveries.
    pub priority: i32,
    /// Whether this is a replay (sends the event's message again).
    pub replay: bool,
}

/// What routing learnt of an event, for the work that follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// Its canonical type.
    pub event_type: String,
    /// The couple it concerns, when known.
    pub couple_id: Option<String>,
}

/// A stored event as a CloudEvents 1.0 document (JSON format).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CloudEvent {
    /// Always `1.0`.
    pub specversion: &'static str,
    /// `evt_…`.
    pub id: String,
    /// `/sources/src_…`.
    pub source: String,
    /// The canonical type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// What it is about.
    pub subject: Option<String>,
    /// When it happened.
    pub time: DateTime<Utc>,
    /// Always `application/json`.
    pub datacontenttype: &'static str,
    /// The event's data.
    pub data: serde_json::Value,
    /// Extension: the couple it concerns, when known.
    pub coupleid: Option<String>,
    /// Extension: the booking it concerns, when known.
    pub bookingid: Option<String>,
    /// Extension: the stored request it came in.
    pub requestid: String,
    /// Extension: when it was routed to its consumers.
    pub routedat: Option<DateTime<Utc>>,
}

/// A stored raw request.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RawRequest {
    /// `req_…`.
    pub id: String,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
    /// Its headers, secrets removed.
    pub headers: Vec<(String, String)>,
    /// Its content type.
    pub content_type: String,
    /// The body: text when it was UTF-8, else base64 (see `body_encoding`).
    pub body: String,
    /// `utf8` or `base64`.
    pub body_encoding: String,
    /// The dedupe key it was recognised by.
    pub dedupe_key: String,
}

/// Filters for listing events.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only this type.
    pub event_type: Option<String>,
    /// Only from this source.
    pub source_id: Option<String>,
    /// Only about this subject.
    pub subject: Option<String>,
    /// Only events at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Only events before this time.
    pub to: Option<DateTime<Utc>>,
}

fn to_cloud_event(r: &sea_orm::QueryResult) -> StoreResult<CloudEvent> {
    Ok(CloudEvent {
        specversion: "1.0",
        id: r.try_get("", "id")?,
        source: format!("/sources/{}", r.try_get::<String>("", "source_id")?),
        event_type: r.try_get("", "event_type")?,
        subject: r.try_get("", "subject")?,
        time: from_micros(r.try_get("", "time")?),
        datacontenttype: "application/json",
        data: serde_json::from_str(&r.try_get::<String>("", "data")?)
            .unwrap_or(serde_json::Value::Null),
        coupleid: r.try_get("", "couple_id")?,
        bookingid: r.try_get("", "booking_id")?,
        requestid: r.try_get("", "request_id")?,
        routedat: r.try_get::<Option<i64>>("", "routed_at")?.map(from_micros),
    })
}

impl Store {
    /// Stores a verified request with its events and routing job, or recognises a duplicate.
    /// Events about a couple whose wedding is today route with the highest priority.
    pub async fn ingest(
        &self,
        request: IncomingRequest,
        events: Vec<NewEvent>,
    ) -> StoreResult<Ingested> {
        self.ingest_many(vec![(request, events)])
            .await?
            .pop()
            .ok_or_else(|| StoreError::Conflict("an ingest produced no outcome".into()))
    }

    /// Stores many verified requests in one transaction (a group commit: one disk sync for
    /// all of them), in order; duplicates, also within the batch, are recognised. If the
    /// transaction fails, none is stored and the caller must answer every sender with an
    /// error, so each retries.
    ///
    /// The batch is written set-wise, a handful of statements whatever its size. The
    /// bookings and couples its events name are read first, once each and outside the write
    /// turn. Then, atomically: the requests (`ON CONFLICT DO NOTHING RETURNING id` tells
    /// which were new), their events and the events' routing jobs: a job per organisation
    /// and priority of the batch, listing its events, so that routing claims, completes and
    /// prunes a job row per batch instead of one per event (wedding-day events keep a job of
    /// their own at the highest priority).
    ///
    /// On SQLite the transaction (`BEGIN IMMEDIATE`, the three multi-row inserts, `COMMIT`)
    /// goes to the database in one hand-off ([`Store::sqlite_write_once`]), the events and
    /// jobs inserted only where their request was ([`event_statements`]). On PostgreSQL the
    /// whole batch is one statement that commits by itself ([`PG_INGEST`]): one round trip,
    /// with the same text for every batch. On both, the requests duplicates repeat are read
    /// after the commit (see the comment there).
    ///
    /// A routing job that a worker pool of this process has room for is inserted already
    /// claimed in that pool's name and handed to it once the batch commits
    /// ([`crate::worker::LocalTakers`]): no claim and no wake-up. Others are inserted ready
    /// and wake the workers (on PostgreSQL every node's, by `NOTIFY`).
    pub async fn ingest_many(
        &self,
        batch: Vec<(IncomingRequest, Vec<NewEvent>)>,
    ) -> StoreResult<Vec<Ingested>> {
        let now = self.clock().now();
        let pending = pending_batch(now, batch);
        let links = self.read_links(now, &pending).await?;
        let events = event_rows(now, &pending, &links);
        // Routing jobs a pool of this process will run are inserted already claimed for it
        // and handed over after the commit: no claim, no wake-up.
        let mut claims: Vec<Option<crate::worker::Reservation>> = events
            .groups
            .iter()
            .map(|_| self.local_takers().reserve(ROUTE_KIND, now))
            .collect();
        let written = if self.backend() == crate::Backend::Sqlite {
            let all = request_statements(now, &pending)
                .into_iter()
                .chain(event_statements(now, &events, &claims))
                .collect();
            // One transaction in one hand-off ([`Store::sqlite_write_once`]).
            match self.sqlite_write_once(all).await {
                Ok(rows) => split_returned(&rows),
                Err(error) => Err(error),
            }
        } else {
            // One statement that commits by itself ([`PG_INGEST`]).
            let statement = pg_ingest_statement(now, &pending, &events, &claims);
            match self.connection().query_all_raw(statement).await {
                Ok(rows) => split_returned(&rows),
                Err(error) => Err(error.into()),
            }
        };
        let (inserted, jobs) = match written {
            Ok(written) => written,
            Err(error) => {
                claims.drain(..).flatten().for_each(Reservation::release);
                return Err(error);
            }
        };
        self.hand_over_routes(now, &events.groups, claims, jobs)
            .await;
        // The requests duplicates repeat are read after the commit. Should this read fail,
        // the batch's senders are told to retry, and their retries are answered as
        // duplicates: nothing is lost or stored twice.
        let existing = repeated_requests(self.connection(), &pending, &inserted).await?;
        let event_ids = events.event_ids;
        let stored = |p: &Pending| -> StoreResult<Ingested> {
            if inserted.contains(&p.request_id) {
                return Ok(Ingested::Accepted {
                    request_id: p.request_id.clone(),
                    event_ids: event_ids.get(&p.request_id).cloned().unwrap_or_default(),
                });
            }
            let key = (
                p.request.source_id.to_string(),
                p.request.dedupe_key.clone(),
            );
            let request_id = existing
                .get(&key)
                .cloned()
                .ok_or_else(|| StoreError::Conflict("duplicate request vanished".into()))?;
            Ok(Ingested::Duplicate { request_id })
        };
        pending
            .iter()
            .map(|p| match p.same_as {
                None => stored(p),
                // A repeat within the batch: the duplicate of whatever its first became.
                Some(first) => Ok(Ingested::Duplicate {
                    request_id: match stored(&pending[first])? {
                        Ingested::Accepted { request_id, .. }
                        | Ingested::Duplicate { request_id } => request_id,
                    },
                }),
            })
            .collect()
    }

    /// A page of `org`'s events, oldest first.
    pub async fn list_events(
        &self,
        org: &OrgId,
        filter: &EventFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<CloudEvent>> {
        let limit = page.limit();
        let mut sql = "SELECT * FROM events WHERE org_id = $1".to_owned();
        let mut values: Vec<Value> = vec![org.to_string().into()];
        let mut add = |clause: &str, value: Value, sql: &mut String| {
            values.push(value);
            sql.push_str(&clause.replace('?', &format!("${}", values.len())));
        };
        if let Some(after) = &page.after {
            add(" AND id > ?", after.clone().into(), &mut sql);
        }
        if let Some(t) = &filter.event_type {
            add(" AND event_type = ?", t.clone().into(), &mut sql);
        }
        if let Some(s) = &filter.source_id {
            add(" AND source_id = ?", s.clone().into(), &mut sql);
        }
        if let Some(s) = &filter.subject {
            add(" AND subject = ?", s.clone().into(), &mut sql);
        }
        if let Some(from) = filter.from {
            add(" AND time >= ?", to_micros(from).into(), &mut sql);
        }
        if let Some(to) = filter.to {
            add(" AND time < ?", to_micros(to).into(), &mut sql);
        }
        add(
            " ORDER BY id LIMIT ?",
            i64::try_from(limit + 1).unwrap_or(i64::MAX).into(),
            &mut sql,
        );
        let rows = self
            .connection()
            .query_all_raw(Statement::from_sql_and_values(self.backend(), sql, values))
            .await?;
        let events = rows
            .iter()
            .map(to_cloud_event)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(events, limit, |e| e.id.clone()))
    }

    /// The id of `org`'s newest event, where a live stream starts.
    pub async fn latest_event_id(&self, org: &OrgId) -> StoreResult<Option<String>> {
        let row = self
            .connection()
            .query_one_raw(Statement::from_sql_and_values(
                self.backend(),
                "SELECT id FROM events WHERE org_id = $1 ORDER BY id DESC LIMIT 1",
                vec![Value::from(org.to_string())],
            ))
            .await?;
        Ok(row.map(|r| r.try_get::<String>("", "id")).transpose()?)
    }

    /// One of `org`'s events with the raw request it came in.
    pub async fn get_event(&self, org: &OrgId, id: &str) -> StoreResult<(CloudEvent, RawRequest)> {
        let row = self
            .connection()
            .query_one_raw(Statement::from_sql_and_values(
                self.backend(),
                "SELECT * FROM events WHERE id = $1 AND org_id = $2",
                vec![Value::from(id), Value::from(org.to_string())],
            ))
            .await?
            .ok_or(StoreError::NotFound)?;
        let event = to_cloud_event(&row)?;
        let r = self
            .connection()
            .query_one_raw(Statement::from_sql_and_values(
                self.backend(),
                "SELECT * FROM inbound_requests WHERE id = $1",
                vec![Value::from(event.requestid.clone())],
            ))
            .await?
            .ok_or(StoreError::NotFound)?;
        let raw = RawRequest {
            id: r.try_get("", "id")?,
            received_at: from_micros(r.try_get("", "received_at")?),
            headers: serde_json::from_str(&r.try_get::<String>("", "headers")?).unwrap_or_default(),
            content_type: r.try_get("", "content_type")?,
            body: r.try_get("", "body")?,
            body_encoding: r.try_get("", "body_encoding")?,
            dedupe_key: r.try_get("", "dedupe_key")?,
        };
        Ok((event, raw))
    }

    /// Routes one of `org`'s events again (e.g. after fixing a consumer); audited.
    pub async fn replay_event(&self, org: &OrgId, id: &str, actor: &Actor) -> StoreResult<String> {
        let (event, _) = self.get_event(org, id).await?;
        let now = self.clock().now();
        let tx = self.write_tx().await?;
        let mut job = NewJob::new(
            ROUTE_KIND,
            serde_json::json!({ "event_id": event.id, "replay": true }),
        );
        job.org_id = Some(*org);
        job.max_attempts = ROUTE_MAX_ATTEMPTS as u32;
        let enqueued = enqueue_in(&tx, now, job).await?;
        crate::audit::append(
            &tx,
            org,
            now,
            crate::audit::Change {
                actor,
                action: "event.replay",
                target_type: "event",
                target_id: event.id,
                before: None,
                after: Some(serde_json::json!({ "job_id": enqueued.id })),
            },
        )
        .await?;
        tx.commit().await?;
        self.wake_workers();
        Ok(enqueued.id)
    }

    /// Deletes stored requests received before `before`, with their events, and returns how
    /// many requests went. This is also where the dedupe window ends: a provider redelivering
    /// an event after its request was pruned is taken as new. A request with an event not yet
    /// routed is kept whatever its age, so pruning can never lose work.
    pub async fn prune_inbound(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        self.prune_in_chunks(
            "SELECT r.id FROM inbound_requests r WHERE r.received_at < $1 \
             AND NOT EXISTS (SELECT 1 FROM events e WHERE e.request_id = r.id AND e.routed_at IS NULL) \
             ORDER BY r.received_at LIMIT $2",
            to_micros(before),
            &[("events", "request_id")],
            "inbound_requests",
        )
        .await
    }

    /// Routes one event ([`Store::route_events`] for a batch of one).
    pub async fn route_event(
        &self,
        event_id: &str,
        priority: i32,
        replay: bool,
    ) -> StoreResult<Option<Routed>> {
        Ok(self
            .route_events(&[RouteRequest {
                event_id: event_id.to_owned(),
                priority,
                replay,
            }])
            .await?
            .pop()
            .flatten())
    }

    /// Routes events as one group commit: fans each out to its organisation's outbound
    /// endpoints and marks it routed (the first time only). One answer per request, in
    /// order: `None` for an event that no longer exists.
    ///
    /// The events and each organisation's endpoints are read once for the batch, before
    /// the write turn. When some event has an endpoint subscribed to it, the fan-out and
    /// the marks commit durably in one transaction: once routed, a message may be sent at
    /// once, and a routing redone after a power cut would send the event again under a new
    /// message id. When none has, there is nothing to send, and the marks commit relaxed
    /// in one statement (`queue::relaxed_exec`): a mark lost in a power cut only means the
    /// job, whose completion is relaxed too, routes the event again, to no one.
    pub async fn route_events(&self, batch: &[RouteRequest]) -> StoreResult<Vec<Option<Routed>>> {
        self.route_events_marking(batch, true).await
    }

    /// [`Store::route_events`]; with `mark_unsent` false, events nothing was sent for are
    /// not marked here: the routing job marks them with its completion
    /// ([`RouteHandler::on_success`]), one write instead of two.
    async fn route_events_marking(
        &self,
        batch: &[RouteRequest],
        mark_unsent: bool,
    ) -> StoreResult<Vec<Option<Routed>>> {
        use std::collections::HashMap;
        let now = self.clock().now();
        let backend = self.backend();
        let db = self.connection();
        let ids: Vec<String> = batch
            .iter()
            .map(|r| r.event_id.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut events: HashMap<String, sea_orm::QueryResult> = HashMap::new();
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT id, org_id, event_type, subject, time, data, couple_id FROM events WHERE id IN ({})",
                crate::queue::placeholders(1, chunk.len())
            );
            let values: Vec<Value> = chunk.iter().map(|id| Value::from(id.clone())).collect();
            for r in db
                .query_all_raw(crate::sql::stmt(backend, &sql, values))
                .await?
            {
                events.insert(r.try_get("", "id")?, r);
            }
        }
        let mut endpoints: HashMap<String, Vec<sea_orm::QueryResult>> = HashMap::new();
        let mut fan_outs = false;
        for request in batch {
            let Some(r) = events.get(&request.event_id) else {
                continue;
            };
            let org_text: String = r.try_get("", "org_id")?;
            if !endpoints.contains_key(&org_text) {
                let org: OrgId = org_text.parse().map_err(|e| {
                    StoreError::Conflict(format!("stored event is unreadable: {e}"))
                })?;
                let found = crate::webhooks::endpoints_in(db, &org).await?;
                endpoints.insert(org_text.clone(), found);
            }
            let event_type: String = r.try_get("", "event_type")?;
            fan_outs = fan_outs
                || crate::webhooks::any_subscribed(
                    endpoints.get(&org_text).map_or(&[][..], Vec::as_slice),
                    &event_type,
                )?;
        }
        let mut out = Vec::with_capacity(batch.len());
        for request in batch {
            out.push(match events.get(&request.event_id) {
                Some(r) => Some(Routed {
                    event_type: r.try_get("", "event_type")?,
                    couple_id: r.try_get("", "couple_id")?,
                }),
                None => None,
            });
        }
        let found: Vec<&String> = ids.iter().filter(|id| events.contains_key(*id)).collect();
        let marks = |chunk: &[&String]| {
            let sql = format!(
                "UPDATE events SET routed_at = $1 WHERE routed_at IS NULL AND id IN ({})",
                crate::queue::placeholders(2, chunk.len())
            );
            let mut values: Vec<Value> = vec![to_micros(now).into()];
            values.extend(chunk.iter().map(|id| Value::from((*id).clone())));
            (sql, values)
        };
        if !fan_outs {
            if !mark_unsent {
                return Ok(out);
            }
            for chunk in found.chunks(ROWS_PER_STATEMENT) {
                let (sql, values) = marks(chunk);
                crate::queue::relaxed_exec(self, &sql, values).await?;
            }
            return Ok(out);
        }

        let tx = self.write_tx().await?;
        for request in batch {
            let Some(r) = events.get(&request.event_id) else {
                continue;
            };
            let org_text: String = r.try_get("", "org_id")?;
            let org: OrgId = org_text
                .parse()
                .map_err(|e| StoreError::Conflict(format!("stored event is unreadable: {e}")))?;
            let data: serde_json::Value = serde_json::from_str(&r.try_get::<String>("", "data")?)
                .unwrap_or(serde_json::Value::Null);
            let subject: Option<String> = r.try_get("", "subject")?;
            let event_type: String = r.try_get("", "event_type")?;
            crate::webhooks::fan_out_to(
                &tx,
                now,
                crate::webhooks::FanOut {
                    org: &org,
                    event_id: &request.event_id,
                    event_type: &event_type,
                    time: from_micros(r.try_get("", "time")?),
                    subject: subject.as_deref(),
                    data: &data,
                    priority: request.priority,
                    replay: request.replay,
                },
                endpoints.get(&org_text).map_or(&[][..], Vec::as_slice),
            )
            .await?;
        }
        let statements: Vec<(String, Vec<Value>)> =
            found.chunks(ROWS_PER_STATEMENT).map(marks).collect();
        crate::sql::run_all(&*tx, statements).await?;
        tx.commit().await?;
        self.wake_workers();
        Ok(out)
    }

    /// Records that an event was routed (the first time only).
    pub async fn mark_routed(&self, event_id: &str) -> StoreResult<()> {
        let _turn = self.write_turn().await?;
        self.connection()
            .execute_raw(Statement::from_sql_and_values(
                self.backend(),
                "UPDATE events SET routed_at = $1 WHERE id = $2 AND routed_at IS NULL",
                vec![to_micros(self.clock().now()).into(), Value::from(event_id)],
            ))
            .await?;
        Ok(())
    }
}

/// The handler for [`ROUTE_KIND`]: fans the job's events out to outbound webhooks and records
/// them as routed ([`Store::route_events`]), then applies what each event means here: an
/// alert action, a provider's delivery report, the journeys it starts or resumes.
///
/// A job lists the events of one ingest batch (or names one event, for a replay).
/// Concurrent jobs share routing transactions (group commit). Should a shared transaction
/// fail, each of its events is routed again alone, so one unroutable event fails only its
/// own job; the job's other events stay routed, and its retry finds them so.
pub fn route_handler(store: Store) -> impl crate::worker::JobHandler {
    let committers = if store.backend() == crate::Backend::Postgres {
        4
    } else {
        1
    };
    let routing = store.clone();
    let router = crate::group_commit::GroupCommit::spawn(
        committers,
        256,
        "event_routes",
        move |batch: Vec<RouteRequest>| {
            let store = routing.clone();
            async move {
                match store.route_events_marking(&batch, false).await {
                    Ok(routed) => Ok(routed.into_iter().map(Ok).collect()),
                    Err(error) if batch.len() == 1 => Ok(vec![Err(error.to_string())]),
                    Err(_) => {
                        let mut each = Vec::with_capacity(batch.len());
                        for request in batch {
                            each.push(
                                store
                                    .route_events_marking(std::slice::from_ref(&request), false)
                                    .await
                                    .map(|mut r| r.pop().flatten())
                                    .map_err(|e| e.to_string()),
                            );
                        }
                        Ok(each)
                    }
                }
            }
        },
    );
    RouteHandler { store, router }
}

/// See [`route_handler`].
struct RouteHandler {
    store: Store,
    router: crate::group_commit::GroupCommit<RouteRequest, Result<Option<Routed>, String>>,
}

impl crate::worker::JobHandler for RouteHandler {
    fn run(&self, job: crate::queue::Job) -> crate::worker::JobFuture {
        let store = self.store.clone();
        let router = self.router.clone();
        Box::pin(async move {
            let event_ids = route_job_events(&job.payload).ok_or_else(|| {
                crate::worker::JobError::Permanent("payload has no event_ids".into())
            })?;
            let replay = job
                .payload
                .get("replay")
                .and_then(serde_json::Value::as_bool)
                == Some(true);
            let requests = event_ids
                .iter()
                .map(|id| RouteRequest {
                    event_id: id.clone(),
                    priority: job.priority,
                    replay,
                })
                .collect();
            // All of the job's events go to the router together, so they share its
            // transactions; each is then applied in order. A failure leaves the others done
            // (routing and what follows are idempotent per event) and retries the job.
            let mut failed = Vec::new();
            for (event_id, routed) in event_ids.iter().zip(router.submit_all(requests).await) {
                let outcome = match routed.and_then(|r| r) {
                    Ok(Some(routed)) => after_routing(&store, event_id, &routed).await,
                    Ok(None) => Ok(()), // the event is gone (or its request was a duplicate)
                    Err(error) => Err(error),
                };
                if let Err(error) = outcome {
                    failed.push(format!("{event_id}: {error}"));
                }
            }
            if failed.is_empty() {
                Ok(())
            } else {
                Err(crate::worker::JobError::transient(format!(
                    "{} of {} events not routed: {}",
                    failed.len(),
                    event_ids.len(),
                    failed.join("; ")
                )))
            }
        })
    }

    /// Marks the jobs' events routed where routing did not (nothing was sent for them),
    /// with the jobs' completion: one statement per 500 events. Events routed with a
    /// fan-out were marked in its transaction, and stay as they are.
    fn on_success(&self, jobs: &[&crate::queue::Job]) -> Vec<(String, Vec<Value>)> {
        let ids: Vec<String> = jobs
            .iter()
            .filter_map(|job| route_job_events(&job.payload))
            .flatten()
            .collect();
        let now = to_micros(self.store.clock().now());
        ids.chunks(ROWS_PER_STATEMENT)
            .map(|chunk| {
                let mut values: Vec<Value> = vec![now.into()];
                values.extend(chunk.iter().map(|id| Value::from(id.clone())));
                (
                    format!(
                        "UPDATE events SET routed_at = $1 WHERE routed_at IS NULL AND id IN ({})",
                        crate::queue::placeholders(2, chunk.len())
                    ),
                    values,
                )
            })
            .collect()
    }
}

/// The events a [`ROUTE_KIND`] job routes: its `event_ids`, or the one `event_id` of a replay
/// (and of jobs queued before routing jobs listed their events). `None` for a payload with
/// neither, or with an id that is not text.
fn route_job_events(payload: &serde_json::Value) -> Option<Vec<String>> {
    if let Some(ids) = payload.get("event_ids") {
        return ids
            .as_array()?
            .iter()
            .map(|id| id.as_str().map(str::to_owned))
            .collect();
    }
    Some(vec![payload.get("event_id")?.as_str()?.to_owned()])
}

/// What a routed event means here beyond its outbound webhooks: an alert action, a
/// provider's delivery report, the journeys it starts or resumes for its couple.
async fn after_routing(store: &Store, event_id: &str, routed: &Routed) -> Result<(), String> {
    // An Acknowledge or Resolve button pressed on one of our alert messages (Slack
    // interactivity) acts on the alert; repeating it changes nothing.
    if crate::notify::ALERT_ACTION_TYPES.contains(&routed.event_type.as_str()) {
        store
            .apply_alert_action(event_id)
            .await
            .map_err(|e| e.to_string())?;
    }
    // A provider's delivery report (Twilio, or Resend through Svix) updates its notification.
    if crate::notify::PROVIDER_STATUS_TYPES.contains(&routed.event_type.as_str()) {
        store
            .apply_provider_status(event_id)
            .await
            .map_err(|e| e.to_string())?;
    }
    // Journeys this event triggers or resumes for its couple (once per event).
    if routed.couple_id.is_some() {
        store
            .start_journeys_for_inbound(event_id)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Rows per multi-row statement: well under SQLite's 32 766 bound variables and
/// PostgreSQL's 65 535 at a dozen columns a row.
const ROWS_PER_STATEMENT: usize = 500;

/// The stored request that each request of the batch not inserted (and not a repeat within
/// the batch) repeats: no query at all when every request was new, the usual case.
async fn repeated_requests<C: ConnectionTrait>(
    db: &C,
    pending: &[Pending],
    inserted: &std::collections::HashSet<String>,
) -> StoreResult<std::collections::HashMap<(String, String), String>> {
    let seen: Vec<&Pending> = pending
        .iter()
        .filter(|p| p.same_as.is_none() && !inserted.contains(&p.request_id))
        .collect();
    if seen.is_empty() {
        return Ok(Default::default());
    }
    stored_requests(db, &seen).await
}

/// The stored request each duplicate of the batch repeats.
async fn stored_requests<C: ConnectionTrait>(
    db: &C,
    seen: &[&Pending],
) -> StoreResult<std::collections::HashMap<(String, String), String>> {
    let backend = db.get_database_backend();
    let mut existing = std::collections::HashMap::new();
    for chunk in seen.chunks(ROWS_PER_STATEMENT) {
        let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 2);
        let mut alternatives = Vec::with_capacity(chunk.len());
        for p in chunk {
            let n = values.len() + 1;
            alternatives.push(format!("(source_id = ${n} AND dedupe_key = ${})", n + 1));
            values.push(p.request.source_id.to_string().into());
            values.push(p.request.dedupe_key.clone().into());
        }
        let sql = format!(
            "SELECT id, source_id, dedupe_key FROM inbound_requests WHERE {}",
            alternatives.join(" OR ")
        );
        for r in db
            .query_all_raw(crate::sql::stmt(backend, &sql, values))
            .await?
        {
            existing.insert(
                (r.try_get("", "source_id")?, r.try_get("", "dedupe_key")?),
                r.try_get("", "id")?,
            );
        }
    }
    Ok(existing)
}

/// What an ingest's writes returned: the ids of the requests that were new, and the routing
/// jobs inserted (id, payload).
type Returned = (std::collections::HashSet<String>, Vec<(String, String)>);

/// Splits an ingest's returned rows: a job's row has a `job_id`, a request's only its `id`.
fn split_returned(rows: &[sea_orm::QueryResult]) -> StoreResult<Returned> {
    let mut requests = std::collections::HashSet::new();
    let mut jobs = Vec::new();
    for r in rows {
        match r.try_get::<Option<String>>("", "job_id").ok().flatten() {
            Some(job) => jobs.push((job, r.try_get("", "payload")?)),
            None => {
                requests.insert(r.try_get("", "id")?);
            }
        }
    }
    Ok((requests, jobs))
}

impl Store {
    /// After an ingest commits: hands each routing job inserted already claimed to its local
    /// pool, frees the slots of groups whose job was not inserted (all its requests were
    /// duplicates), and wakes the workers if a job was inserted ready.
    async fn hand_over_routes(
        &self,
        now: DateTime<Utc>,
        groups: &[RouteGroup],
        claims: Vec<Option<Reservation>>,
        inserted: Vec<(String, String)>,
    ) {
        let mut payloads: std::collections::HashMap<String, String> =
            inserted.into_iter().collect();
        let mut wake = false;
        let mut refused = Vec::new();
        for (group, claim) in groups.iter().zip(claims) {
            let payload = payloads.remove(&group.job_id);
            match (claim, payload) {
                (Some(claim), Some(payload)) => {
                    let job = crate::queue::Job {
                        id: group.job_id.clone(),
                        org_id: Some(group.org.clone()),
                        kind: ROUTE_KIND.to_owned(),
                        payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null),
                        priority: group.priority,
                        state: crate::queue::JobState::Running,
                        run_at: now,
                        attempts: 1,
                        max_attempts: ROUTE_MAX_ATTEMPTS,
                        dedupe_key: Some(format!("route:{}", group.events[0])),
                        lease_owner: Some(claim.worker.clone()),
                        lease_expires_at: Some(claim.lease_until),
                        last_error: None,
                        created_at: now,
                        updated_at: now,
                        finished_at: None,
                    };
                    let worker = claim.worker.clone();
                    if let Err(id) = claim.hand_over(job) {
                        refused.push((worker, id));
                    }
                }
                (Some(claim), None) => claim.release(),
                (None, Some(_)) => wake = true,
                (None, None) => {}
            }
        }
        // A pool that stopped between the reservation and now: its jobs go back to the
        // queue for whichever pool runs next (or to the reaper, should that fail).
        for (worker, id) in refused {
            if let Err(error) = self.defer(&worker, &id, now).await {
                tracing::warn!(%error, job = %id, "could not hand a routing job back; it will be reaped");
            }
            wake = true;
        }
        if wake {
            self.wake_workers();
        }
    }
}

/// A statement with `$N` placeholders and its values.
type SqlWithValues = (String, Vec<Value>);

/// A request of a batch, about to be written.
struct Pending {
    request: IncomingRequest,
    events: Vec<NewEvent>,
    request_id: String,
    /// Index of the earlier request in the batch with the same source and key, if any.
    same_as: Option<usize>,
}

/// What the couples and bookings an ingest batch names are: booking id → (organisation,
/// couple id), couple id → (organisation, wedding today?).
#[derive(Default)]
struct Links {
    bookings: std::collections::HashMap<String, (String, String)>,
    couples: std::collections::HashMap<String, (String, bool)>,
}

/// The batch in order, each request with a fresh id, repeats within it marked.
fn pending_batch(now: DateTime<Utc>, batch: Vec<(IncomingRequest, Vec<NewEvent>)>) -> Vec<Pending> {
    let mut first_with_key: std::collections::HashMap<(String, String), usize> =
        std::collections::HashMap::new();
    batch
        .into_iter()
        .enumerate()
        .map(|(i, (request, events))| {
            let key = (request.source_id.to_string(), request.dedupe_key.clone());
            let same_as = match first_with_key.get(&key) {
                Some(&first) => Some(first),
                None => {
                    first_with_key.insert(key, i);
                    None
                }
            };
            Pending {
                request,
                events,
                request_id: RequestId::new_at(now).to_string(),
                same_as,
            }
        })
        .collect()
}

impl Store {
    /// Reads the couples and bookings the batch's events name, once for the batch and
    /// before the write turn (a read never waits for the writer, and nothing here needs
    /// the write transaction's snapshot: events keep no foreign key to either, and a
    /// couple or booking changed a moment later is the same race as one changed just
    /// after the event arrived).
    async fn read_links(&self, now: DateTime<Utc>, pending: &[Pending]) -> StoreResult<Links> {
        use std::collections::HashSet;
        let backend = self.backend();
        let db = self.connection();
        let mut links = Links::default();
        let named = || {
            pending
                .iter()
                .filter(|p| p.same_as.is_none())
                .flat_map(|p| p.events.iter())
        };
        let booking_ids: Vec<String> = named()
            .filter_map(|e| e.booking_ref.clone())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        for chunk in booking_ids.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT id, org_id, couple_id FROM bookings WHERE id IN ({})",
                crate::queue::placeholders(1, chunk.len())
            );
            let values: Vec<Value> = chunk.iter().map(|c| Value::from(c.clone())).collect();
            for r in db
                .query_all_raw(crate::sql::stmt(backend, &sql, values))
                .await?
            {
                links.bookings.insert(
                    r.try_get("", "id")?,
                    (r.try_get("", "org_id")?, r.try_get("", "couple_id")?),
                );
            }
        }
        // An event that names only a booking is about the booking's couple too.
        let couple_ids: Vec<String> = named()
            .filter_map(|e| e.couple_ref.clone())
            .chain(links.bookings.values().map(|(_, c)| c.clone()))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        for chunk in couple_ids.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT id, org_id, wedding_date, time_zone FROM couples WHERE id IN ({})",
                crate::queue::placeholders(1, chunk.len())
            );
            let values: Vec<Value> = chunk.iter().map(|c| Value::from(c.clone())).collect();
            for r in db
                .query_all_raw(crate::sql::stmt(backend, &sql, values))
                .await?
            {
                let today =
                    wedsync_core::org::TimeZone::parse(&r.try_get::<String>("", "time_zone")?)
                        .ok()
                        .is_some_and(|zone| {
                            let date = now.with_timezone(&zone.tz()).date_naive();
                            r.try_get::<chrono::NaiveDate>("", "wedding_date")
                                .is_ok_and(|d| d == date)
                        });
                links
                    .couples
                    .insert(r.try_get("", "id")?, (r.try_get("", "org_id")?, today));
            }
        }
        Ok(links)
    }
}

/// A request's row: id, organisation, source, dedupe key, headers (JSON), content type,
/// body (text, or base64 when it is not UTF-8) and the body's encoding.
fn request_row(p: &Pending) -> [Value; 8] {
    let (body, encoding) = match std::str::from_utf8(&p.request.body) {
        Ok(text) => (text.to_owned(), "utf8"),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(&p.request.body),
            "base64",
        ),
    };
    [
        Value::from(p.request_id.clone()),
        p.request.org_id.to_string().into(),
        p.request.source_id.to_string().into(),
        p.request.dedupe_key.clone().into(),
        serde_json::to_string(&p.request.headers)
            .unwrap_or_default()
            .into(),
        p.request.content_type.clone().into(),
        body.into(),
        encoding.into(),
    ]
}

/// The statements that insert a batch's new requests; `ON CONFLICT DO NOTHING RETURNING id`
/// tells which were new.
fn request_statements(now: DateTime<Utc>, pending: &[Pending]) -> Vec<SqlWithValues> {
    let firsts: Vec<&Pending> = pending.iter().filter(|p| p.same_as.is_none()).collect();
    let mut statements = Vec::new();
    for chunk in firsts.chunks(ROWS_PER_STATEMENT) {
        let mut rows = Vec::with_capacity(chunk.len());
        let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 8 + 1);
        values.push(to_micros(now).into());
        for p in chunk {
            let n = values.len() + 1;
            rows.push(format!(
                "(${n}, ${}, ${}, ${}, $1, ${}, ${}, ${}, ${})",
                n + 1,
                n + 2,
                n + 3,
                n + 4,
                n + 5,
                n + 6,
                n + 7
            ));
            values.extend(request_row(p));
        }
        statements.push((
            format!(
                "INSERT INTO inbound_requests (id, org_id, source_id, dedupe_key, received_at, headers, content_type, body, body_encoding) \
                 VALUES {} ON CONFLICT (source_id, dedupe_key) DO NOTHING RETURNING id",
                rows.join(", ")
            ),
            values,
        ));
    }

    statements
}

/// The most events one routing job lists: a batch larger than this gets more jobs, so one
/// job's routing stays a bounded transaction.
const ROUTE_BATCH: usize = 256;

/// SQLite: the statement that inserts a batch's routing jobs, one per `(organisation,
/// priority, events)` group, in the hand-off that inserted its events. Each job's dedupe key
/// names its first event, so the same group is never queued twice. A job is inserted only
/// if one of its events was, and its payload is built by the statement from the events that
/// were (those of requests that turned out to be duplicates are not listed).
fn route_jobs_statement(
    now: DateTime<Utc>,
    groups: &[RouteGroup],
    claims: &[Option<crate::worker::Reservation>],
) -> SqlWithValues {
    let mut values: Vec<Value> = vec![to_micros(now).into()];
    let mut selects = Vec::with_capacity(groups.len());
    for (group, claim) in groups.iter().zip(claims) {
        let n = values.len() + 1;
        let (attempts, state, owner, expires) = claimed_columns(claim.as_ref());
        values.extend([
            Value::from(group.job_id.clone()),
            group.org.clone().into(),
            group.priority.into(),
            format!("route:{}", group.events[0]).into(),
            attempts.into(),
            state.into(),
            owner.into(),
            expires.into(),
        ]);
        let listed = crate::queue::placeholders(values.len() + 1, group.events.len());
        values.extend(group.events.iter().map(|id| Value::from(id.clone())));
        selects.push(format!(
            "SELECT ${n}, ${}, '{ROUTE_KIND}', \
             (SELECT json_object('event_ids', json_group_array(id)) FROM \
              (SELECT id FROM events WHERE id IN ({listed}) ORDER BY id)), \
             ${}, ${}, $1, ${}, {ROUTE_MAX_ATTEMPTS}, ${}, ${}, ${}, NULL, $1, $1, NULL \
             WHERE EXISTS (SELECT 1 FROM events e WHERE e.id IN ({listed}))",
            n + 1,
            n + 2,
            n + 3,
            n + 4,
            n + 5,
            n + 6,
            n + 7
        ));
    }
    (
        format!(
            "INSERT INTO jobs (id, org_id, kind, payload, priority, dedupe_key, run_at, attempts, \
             max_attempts, state, lease_owner, lease_expires_at, last_error, created_at, updated_at, finished_at) \
             {} ON CONFLICT (dedupe_key) DO NOTHING RETURNING id AS job_id, payload",
            selects.join(" UNION ALL ")
        ),
        values,
    )
}

/// A routing job's `attempts`, `state`, `lease_owner` and `lease_expires_at`: ready, or
/// already claimed for a local pool (its first attempt started).
fn claimed_columns(
    claim: Option<&crate::worker::Reservation>,
) -> (i32, &'static str, Option<String>, Option<i64>) {
    match claim {
        Some(c) => (
            1,
            "running",
            Some(c.worker.clone()),
            Some(to_micros(c.lease_until)),
        ),
        None => (0, "ready", None, None),
    }
}

/// A routing job of an ingest batch: one per organisation and priority, listing its events
/// in arrival order (at most [`ROUTE_BATCH`]).
struct RouteGroup {
    job_id: String,
    org: String,
    priority: i32,
    events: Vec<String>,
}

/// The events of a batch's requests (their own, not a repeat's within the batch), linked to
/// the organisation's couples and bookings, and grouped into routing jobs.
struct EventRows {
    /// Each event's row (id, organisation, source, request, type, subject, time, data,
    /// couple, booking) and the index of its routing job in `groups`.
    rows: Vec<([Value; 10], usize)>,
    /// The routing jobs: one per organisation and priority, listing its events in arrival
    /// order (at most [`ROUTE_BATCH`]), so a batch of any size adds one or two job rows, not
    /// one per event.
    groups: Vec<RouteGroup>,
    /// Each request's event ids, in order.
    event_ids: std::collections::HashMap<String, Vec<String>>,
}

fn event_rows(now: DateTime<Utc>, pending: &[Pending], links: &Links) -> EventRows {
    let mut out = EventRows {
        rows: Vec::new(),
        groups: Vec::new(),
        event_ids: std::collections::HashMap::new(),
    };
    for p in pending.iter().filter(|p| p.same_as.is_none()) {
        for event in &p.events {
            let org = p.request.org_id.to_string();
            // The booking, when it is the organisation's and, if the payload also named a
            // couple, that couple's (references that contradict each other keep the couple).
            let booking = event.booking_ref.as_ref().and_then(|b| {
                links
                    .bookings
                    .get(b)
                    .filter(|(o, c)| *o == org && event.couple_ref.as_ref().is_none_or(|r| r == c))
                    .map(|(_, c)| (b, c))
            });
            let couple = event
                .couple_ref
                .as_ref()
                .or(booking.map(|(_, c)| c))
                .and_then(|c| {
                    links
                        .couples
                        .get(c)
                        .filter(|(o, _)| *o == org)
                        .map(|(_, today)| (c, *today))
                });
            let booking = booking.map(|(b, _)| b);
            let id = EventId::new_at(now).to_string();
            let priority = if couple.is_some_and(|(_, today)| today) {
                wedsync_core::calendar::PRIORITY_WEDDING_TODAY
            } else {
                wedsync_core::calendar::PRIORITY_NORMAL
            };
            let group = match out.groups.iter().position(|g| {
                g.org == org && g.priority == priority && g.events.len() < ROUTE_BATCH
            }) {
                Some(g) => g,
                None => {
                    out.groups.push(RouteGroup {
                        job_id: wedsync_core::id::JobId::new_at(now).to_string(),
                        org: org.clone(),
                        priority,
                        events: Vec::new(),
                    });
                    out.groups.len() - 1
                }
            };
            out.groups[group].events.push(id.clone());
            out.rows.push((
                [
                    Value::from(id.clone()),
                    org.into(),
                    p.request.source_id.to_string().into(),
                    p.request_id.clone().into(),
                    event.event_type.clone().into(),
                    event.subject.clone().into(),
                    to_micros(event.time).into(),
                    event.data.to_string().into(),
                    couple.map(|(c, _)| c.clone()).into(),
                    booking.cloned().into(),
                ],
                group,
            ));
            out.event_ids
                .entry(p.request_id.clone())
                .or_default()
                .push(id);
        }
    }
    out
}

/// SQLite: the statements that insert the events of a batch's requests and their routing
/// jobs, run in the same hand-off as the requests' insert ([`crate::sql::run_all`]), so
/// which requests are new is not known yet: every request's events are written `WHERE
/// EXISTS` the request row with the id this batch gave it, which holds exactly for the
/// requests the insert before kept, and each routing job `WHERE EXISTS` one of its events
/// ([`route_jobs_statement`]).
fn event_statements(
    now: DateTime<Utc>,
    events: &EventRows,
    claims: &[Option<crate::worker::Reservation>],
) -> Vec<SqlWithValues> {
    let mut statements = Vec::new();
    for chunk in events.rows.chunks(ROWS_PER_STATEMENT) {
        let mut values: Vec<Value> = vec![to_micros(now).into()];
        let mut tuples = Vec::with_capacity(chunk.len());
        for (row, _) in chunk {
            tuples.push(format!(
                "({})",
                crate::queue::placeholders(values.len() + 1, row.len())
            ));
            values.extend(row.iter().cloned());
        }
        // Rows of a VALUES list, whose columns SQLite names `columnN`: `column4` is the
        // request id.
        let select = (1..=10)
            .map(|i| format!("v.column{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        statements.push((
            format!(
                "INSERT INTO events (id, org_id, source_id, request_id, event_type, subject, time, data, couple_id, booking_id, created_at, routed_at) \
                 SELECT {select}, $1, NULL FROM (VALUES {}) AS v \
                 WHERE EXISTS (SELECT 1 FROM inbound_requests r WHERE r.id = v.column4)",
                tuples.join(", ")
            ),
            values,
        ));
    }
    if !events.groups.is_empty() {
        statements.push(route_jobs_statement(now, &events.groups, claims));
    }
    statements
}

/// PostgreSQL: a whole batch in one statement, whose text is the same for every batch (so
/// each connection prepares it once) and which commits by itself, durably: one round trip
/// where a transaction took six (BEGIN, three inserts, NOTIFY, COMMIT). The requests,
/// events and routing jobs arrive as three JSON arrays (`json_to_recordset`); the events
/// are inserted for the new requests only (those the requests' `ON CONFLICT DO NOTHING`
/// returned), each job lists the events of its group that were inserted and exists only if
/// one was. A job is inserted ready, or already claimed for a pool of this process
/// ([`crate::worker::LocalTakers`]); the workers' wake-up (`woken`, a plain `SELECT`, runs
/// only because the result refers to it; the inserting CTEs always run) is sent when a ready
/// one was inserted. The rows returned are the new requests' ids (`id`) and the inserted
/// jobs (`job_id`, `payload`). A foreign key from an event to its request is checked at the
/// end of the statement, when the request row is there.
const PG_INGEST: &str = "WITH \
    rq AS (SELECT * FROM json_to_recordset($2::json) AS x(id text, org_id text, source_id text, \
           dedupe_key text, headers text, content_type text, body text, body_encoding text)), \
    r AS (INSERT INTO inbound_requests (id, org_id, source_id, dedupe_key, received_at, headers, \
          content_type, body, body_encoding) \
          SELECT id, org_id, source_id, dedupe_key, $1, headers, content_type, body, body_encoding FROM rq \
          ON CONFLICT (source_id, dedupe_key) DO NOTHING RETURNING id), \
    ev AS (SELECT * FROM json_to_recordset($3::json) AS x(id text, org_id text, source_id text, \
           request_id text, event_type text, subject text, time bigint, data text, couple_id text, \
           booking_id text, grp int)), \
    e AS (INSERT INTO events (id, org_id, source_id, request_id, event_type, subject, time, data, \
          couple_id, booking_id, created_at, routed_at) \
          SELECT id, org_id, source_id, request_id, event_type, subject, time, data, couple_id, \
          booking_id, $1, NULL FROM ev WHERE request_id IN (SELECT id FROM r) RETURNING id), \
    g AS (SELECT * FROM json_to_recordset($4::json) AS x(grp int, id text, org_id text, \
          priority int, dedupe_key text, attempts int, state text, lease_owner text, \
          lease_expires_at bigint)), \
    listed AS (SELECT ev.grp, json_agg(ev.id ORDER BY ev.id) AS ids FROM ev JOIN e ON e.id = ev.id \
               GROUP BY ev.grp), \
    j AS (INSERT INTO jobs (id, org_id, kind, payload, priority, dedupe_key, run_at, attempts, \
          max_attempts, state, lease_owner, lease_expires_at, last_error, created_at, updated_at, \
          finished_at) \
          SELECT g.id, g.org_id, $5, json_build_object('event_ids', listed.ids)::text, g.priority, \
          g.dedupe_key, $1, g.attempts, $6, g.state, g.lease_owner, g.lease_expires_at, NULL, \
          $1, $1, NULL \
          FROM g JOIN listed ON listed.grp = g.grp \
          ON CONFLICT (dedupe_key) DO NOTHING RETURNING id, payload, state), \
    woken AS (SELECT pg_notify($7, $5) FROM (SELECT 1 FROM j WHERE state = 'ready' LIMIT 1) AS any_ready) \
    SELECT id, NULL::text AS job_id, NULL::text AS payload FROM r \
    WHERE (SELECT count(*) FROM woken) >= 0 \
    UNION ALL SELECT NULL, id, payload FROM j";

/// The statement and values of [`PG_INGEST`] for a batch.
fn pg_ingest_statement(
    now: DateTime<Utc>,
    pending: &[Pending],
    events: &EventRows,
    claims: &[Option<crate::worker::Reservation>],
) -> Statement {
    let object = |names: &[&str], row: &[Value]| -> serde_json::Value {
        names
            .iter()
            .zip(row)
            .map(|(name, v)| ((*name).to_owned(), crate::sql::json_value(v)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let requests: Vec<serde_json::Value> = pending
        .iter()
        .filter(|p| p.same_as.is_none())
        .map(|p| {
            object(
                &[
                    "id",
                    "org_id",
                    "source_id",
                    "dedupe_key",
                    "headers",
                    "content_type",
                    "body",
                    "body_encoding",
                ],
                &request_row(p),
            )
        })
        .collect();
    let rows: Vec<serde_json::Value> = events
        .rows
        .iter()
        .map(|(row, group)| {
            let mut o = object(
                &[
                    "id",
                    "org_id",
                    "source_id",
                    "request_id",
                    "event_type",
                    "subject",
                    "time",
                    "data",
                    "couple_id",
                    "booking_id",
                ],
                row,
            );
            o["grp"] = (*group).into();
            o
        })
        .collect();
    let groups: Vec<serde_json::Value> = events
        .groups
        .iter()
        .zip(claims)
        .enumerate()
        .map(|(i, (group, claim))| {
            let (attempts, state, owner, expires) = claimed_columns(claim.as_ref());
            serde_json::json!({
                "grp": i,
                "id": group.job_id,
                "org_id": group.org,
                "priority": group.priority,
                "dedupe_key": format!("route:{}", group.events[0]),
                "attempts": attempts,
                "state": state,
                "lease_owner": owner,
                "lease_expires_at": expires,
            })
        })
        .collect();
    Statement::from_sql_and_values(
        sea_orm::DbBackend::Postgres,
        PG_INGEST,
        vec![
            to_micros(now).into(),
            serde_json::Value::from(requests).to_string().into(),
            serde_json::Value::from(rows).to_string().into(),
            serde_json::Value::from(groups).to_string().into(),
            ROUTE_KIND.into(),
            ROUTE_MAX_ATTEMPTS.into(),
            crate::queue::NOTIFY_CHANNEL.into(),
        ],
    )
}

//! Verified inbound requests and the canonical events made from them.
//!
//! [`Store::ingest`] writes, in one transaction, the raw request (headers without secrets,
//! the exact body), its canonical events, and one `event.route` job per event; the sender is
//! answered only after it commits. The unique `(source_id, dedupe_key)` index makes a second
//! delivery of the same sender event a recognised duplicate that creates nothing.

use base64::Engine;
use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, Statement, Value};
use serde::Serialize;
use wedsync_core::clock::{from_micros, to_micros};
use wedsync_core::id::{EventId, OrgId, RequestId, SourceId};

use crate::page::{Page, PageRequest, paginate};
use crate::queue::{NewJob, enqueue_in, enqueue_in_quietly, notify_in};
use crate::{Actor, Store, StoreError, StoreResult};

/// The job kind that routes an inbound event to its consumers.
pub const ROUTE_KIND: &str = "event.route";

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
    async fn owned_ref<C: ConnectionTrait>(
        db: &C,
        table: &str,
        org: &OrgId,
        id: Option<&String>,
    ) -> StoreResult<Option<String>> {
        let Some(id) = id else { return Ok(None) };
        let found = db
            .query_one_raw(Statement::from_sql_and_values(
                db.get_database_backend(),
                format!("SELECT id FROM {table} WHERE id = $1 AND org_id = $2"),
                vec![Value::from(id.clone()), Value::from(org.to_string())],
            ))
            .await?;
        Ok(found.map(|_| id.clone()))
    }

    /// Stores a verified request with its events and routing jobs, or recognises a duplicate.
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
    pub async fn ingest_many(
        &self,
        batch: Vec<(IncomingRequest, Vec<NewEvent>)>,
    ) -> StoreResult<Vec<Ingested>> {
        let now = self.clock().now();
        let tx = self.write_tx().await?;
        let mut out = Vec::with_capacity(batch.len());
        for (request, events) in batch {
            out.push(self.ingest_one(&tx, now, request, events).await?);
        }
        // One wake-up for the whole batch rather than one per routing job.
        if out
            .iter()
            .any(|o| matches!(o, Ingested::Accepted { event_ids, .. } if !event_ids.is_empty()))
        {
            notify_in(&tx, ROUTE_KIND).await?;
        }
        tx.commit().await?;
        self.wake_workers();
        Ok(out)
    }

    async fn ingest_one(
        &self,
        tx: &sea_orm::DatabaseTransaction,
        now: DateTime<Utc>,
        request: IncomingRequest,
        events: Vec<NewEvent>,
    ) -> StoreResult<Ingested> {
        let backend = self.backend();
        let request_id = RequestId::new_at(now).to_string();
        let (body, encoding) = match String::from_utf8(request.body) {
            Ok(text) => (text, "utf8"),
            Err(e) => (
                base64::engine::general_purpose::STANDARD.encode(e.into_bytes()),
                "base64",
            ),
        };
        let inserted = tx
            .execute_raw(Statement::from_sql_and_values(
                backend,
                "INSERT INTO inbound_requests (id, org_id, source_id, dedupe_key, received_at, headers, content_type, body, body_encoding) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (source_id, dedupe_key) DO NOTHING",
                vec![
                    request_id.clone().into(),
                    request.org_id.to_string().into(),
                    request.source_id.to_string().into(),
                    request.dedupe_key.clone().into(),
                    to_micros(now).into(),
                    serde_json::to_string(&request.headers).unwrap_or_default().into(),
                    request.content_type.into(),
                    body.into(),
                    encoding.into(),
                ],
            ))
            .await?
            .rows_affected();
        if inserted == 0 {
            let existing = tx
                .query_one_raw(Statement::from_sql_and_values(
                    backend,
                    "SELECT id FROM inbound_requests WHERE source_id = $1 AND dedupe_key = $2",
                    vec![
                        request.source_id.to_string().into(),
                        request.dedupe_key.into(),
                    ],
                ))
                .await?
                .ok_or_else(|| StoreError::Conflict("duplicate request vanished".into()))?;
            return Ok(Ingested::Duplicate {
                request_id: existing.try_get("", "id")?,
            });
        }
        let mut event_ids = Vec::with_capacity(events.len());
        for event in events {
            let id = EventId::new_at(now).to_string();
            let couple_id =
                Self::owned_ref(tx, "couples", &request.org_id, event.couple_ref.as_ref()).await?;
            let booking_id =
                Self::owned_ref(tx, "bookings", &request.org_id, event.booking_ref.as_ref())
                    .await?;
            let priority = match &couple_id {
                Some(c) => self.wedding_today_priority(tx, c, now).await?,
                None => wedsync_core::calendar::PRIORITY_NORMAL,
            };
            tx.execute_raw(Statement::from_sql_and_values(
                backend,
                "INSERT INTO events (id, org_id, source_id, request_id, event_type, subject, time, data, couple_id, booking_id, created_at, routed_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL)",
                vec![
                    id.clone().into(),
                    request.org_id.to_string().into(),
                    request.source_id.to_string().into(),
                    request_id.clone().into(),
                    event.event_type.into(),
                    event.subject.into(),
                    to_micros(event.time).into(),
                    event.data.to_string().into(),
                    couple_id.into(),
                    booking_id.into(),
                    to_micros(now).into(),
                ],
            ))
            .await?;
            let mut job = NewJob::new(ROUTE_KIND, serde_json::json!({ "event_id": id }));
            job.org_id = Some(request.org_id);
            job.dedupe_key = Some(format!("route:{id}"));
            job.priority = priority;
            job.max_attempts = 25;
            enqueue_in_quietly(tx, now, job).await?;
            event_ids.push(id);
        }
        Ok(Ingested::Accepted {
            request_id,
            event_ids,
        })
    }

    async fn wedding_today_priority<C: ConnectionTrait>(
        &self,
        db: &C,
        couple_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<i32> {
        use sea_orm::EntityTrait;
        let couple = crate::entity::couple::Entity::find_by_id(couple_id.to_owned())
            .one(db)
            .await?;
        let today = couple.and_then(|c| {
            let zone = wedsync_core::org::TimeZone::parse(&c.time_zone).ok()?;
            Some(c.wedding_date == now.with_timezone(&zone.tz()).date_naive())
        });
        Ok(if today == Some(true) {
            wedsync_core::calendar::PRIORITY_WEDDING_TODAY
        } else {
            wedsync_core::calendar::PRIORITY_NORMAL
        })
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
        job.max_attempts = 25;
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

    /// Routes an event: fans it out to the organisation's webhook endpoints and records it as
    /// routed, in one transaction. Running it again changes nothing (one message per event)
    /// unless `replay`, which sends the event's message again to every matching endpoint; an
    /// event pruned meanwhile is nothing to do.
    pub async fn route_event(
        &self,
        event_id: &str,
        priority: i32,
        replay: bool,
    ) -> StoreResult<()> {
        let now = self.clock().now();
        let tx = self.write_tx().await?;
        let Some(r) = tx
            .query_one_raw(Statement::from_sql_and_values(
                self.backend(),
                "SELECT org_id, event_type, subject, time, data FROM events WHERE id = $1",
                vec![Value::from(event_id)],
            ))
            .await?
        else {
            return Ok(());
        };
        let org: OrgId = r
            .try_get::<String>("", "org_id")?
            .parse()
            .map_err(|e| StoreError::Conflict(format!("stored event is unreadable: {e}")))?;
        let data: serde_json::Value = serde_json::from_str(&r.try_get::<String>("", "data")?)
            .unwrap_or(serde_json::Value::Null);
        let subject: Option<String> = r.try_get("", "subject")?;
        let event_type: String = r.try_get("", "event_type")?;
        crate::webhooks::fan_out_in(
            &tx,
            now,
            crate::webhooks::FanOut {
                org: &org,
                event_id,
                event_type: &event_type,
                time: from_micros(r.try_get("", "time")?),
                subject: subject.as_deref(),
                data: &data,
                priority,
                replay,
            },
        )
        .await?;
        tx.execute_raw(Statement::from_sql_and_values(
            self.backend(),
            "UPDATE events SET routed_at = $1 WHERE id = $2 AND routed_at IS NULL",
            vec![to_micros(now).into(), Value::from(event_id)],
        ))
        .await?;
        tx.commit().await?;
        self.wake_workers();
        Ok(())
    }

    /// Records that an event was routed (the first time only).
    pub async fn mark_routed(&self, event_id: &str) -> StoreResult<()> {
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

/// The handler for [`ROUTE_KIND`]: fans the event out to outbound webhooks and records it as
/// routed ([`Store::route_event`]). Journeys attach here as they are built.
pub fn route_handler(store: Store) -> impl crate::worker::JobHandler {
    move |job: crate::queue::Job| {
        let store = store.clone();
        async move {
            let Some(event_id) = job
                .payload
                .get("event_id")
                .and_then(|v| v.as_str())
                .map(str::to_owned)
            else {
                return Err(crate::worker::JobError::Permanent(
                    "payload has no event_id".into(),
                ));
            };
            let replay = job
                .payload
                .get("replay")
                .and_then(serde_json::Value::as_bool)
                == Some(true);
            store
                .route_event(&event_id, job.priority, replay)
                .await
                .map_err(|e| crate::worker::JobError::transient(e.to_string()))?;
            // An Acknowledge or Resolve button pressed on one of our alert messages (Slack
            // interactivity) acts on the alert; repeating it changes nothing.
            store
                .apply_alert_action(&event_id)
                .await
                .map_err(|e| crate::worker::JobError::transient(e.to_string()))?;
            // A provider's delivery report (Resend through Svix) updates its notification.
            store
                .apply_provider_status(&event_id)
                .await
                .map_err(|e| crate::worker::JobError::transient(e.to_string()))?;
            // Journeys this event triggers for its couple start (once per event).
            store
                .start_journeys_for_inbound(&event_id)
                .await
                .map(|_| ())
                .map_err(|e| crate::worker::JobError::transient(e.to_string()))
        }
    }
}

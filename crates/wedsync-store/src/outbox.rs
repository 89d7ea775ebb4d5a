//! The outbox: domain events written in the same transaction as the change that causes them,
//! so a consumer (outbound webhooks, journeys) sees every committed change and nothing that
//! was rolled back. Each event also enqueues, in that same transaction, an `outbox.publish`
//! job deduplicated by the event id; the job marks the event published (and is where later
//! stages fan events out to webhooks and journeys).

use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use serde::Serialize;
use wedsync_core::clock::{from_micros, to_micros};
use wedsync_core::id::{EventId, OrgId};

use wedsync_core::calendar::{PRIORITY_NORMAL, PRIORITY_WEDDING_TODAY};

use crate::entity::outbox_event;
use crate::{Store, StoreResult};

/// A domain event waiting in (or published from) the outbox.
#[derive(Debug, Clone, Serialize)]
pub struct OutboxEvent {
    /// `evt_…`.
    pub id: String,
    /// The canonical event type, e.g. `booking.created`.
    pub event_type: String,
    /// The object the event is about.
    pub subject: String,
    /// The event's data.
    pub data: serde_json::Value,
    /// When the change happened.
    pub occurred_at: chrono::DateTime<chrono::Utc>,
    /// When a consumer took it, if one has.
    pub published_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Writes one event inside the caller's transaction.
pub(crate) async fn emit(
    tx: &DatabaseTransaction,
    org: &OrgId,
    at: chrono::DateTime<chrono::Utc>,
    event_type: &str,
    subject: &str,
    data: serde_json::Value,
) -> StoreResult<EventId> {
    emit_with_priority(tx, org, at, event_type, subject, data, PRIORITY_NORMAL).await
}

/// Like [`emit`], with the publish job's queue priority (wedding-day work goes first).
pub(crate) async fn emit_with_priority(
    tx: &DatabaseTransaction,
    org: &OrgId,
    at: chrono::DateTime<chrono::Utc>,
    event_type: &str,
    subject: &str,
    data: serde_json::Value,
    priority: i32,
) -> StoreResult<EventId> {
    let id = EventId::new_at(at);
    outbox_event::Entity::insert(outbox_event::ActiveModel {
        id: Set(id.to_string()),
        org_id: Set(org.to_string()),
        event_type: Set(event_type.to_owned()),
        subject: Set(subject.to_owned()),
        data: Set(data.to_string()),
        occurred_at: Set(to_micros(at)),
        published_at: Set(None),
    })
    .exec(tx)
    .await?;
    let mut job = crate::queue::NewJob::new(
        PUBLISH_KIND,
        serde_json::json!({ "event_id": id.to_string() }),
    );
    job.org_id = Some(*org);
    job.dedupe_key = Some(id.to_string());
    job.max_attempts = 25;
    job.priority = priority;
    crate::queue::enqueue_in(tx, at, job).await?;
    Ok(id)
}

/// The queue priority of work about a couple: raised when their wedding is today in its own
/// zone, so it overtakes routine work (`wedsync_core::calendar`).
pub(crate) fn couple_priority(
    fields: &wedsync_core::couple::CoupleFields,
    now: chrono::DateTime<chrono::Utc>,
) -> i32 {
    let today = now.with_timezone(&fields.time_zone.tz()).date_naive();
    if fields.wedding_date == today {
        PRIORITY_WEDDING_TODAY
    } else {
        PRIORITY_NORMAL
    }
}

/// The queue priority of work about a booking: raised while it runs or when it starts within
/// a day.
pub(crate) fn booking_priority(
    fields: &wedsync_core::booking::BookingFields,
    now: chrono::DateTime<chrono::Utc>,
) -> i32 {
    let soon = now + chrono::TimeDelta::days(1);
    if fields.starts_at < soon && fields.ends_at > now {
        PRIORITY_WEDDING_TODAY
    } else {
        PRIORITY_NORMAL
    }
}

/// The job kind that publishes an outbox event.
pub const PUBLISH_KIND: &str = "outbox.publish";

/// The handler for [`PUBLISH_KIND`]: fans the event out to outbound webhooks and records it
/// as published, once ([`Store::publish_event`]).
pub fn publish_handler(store: Store) -> impl crate::worker::JobHandler {
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
            store
                .publish_event(&event_id, job.priority)
                .await
                .map_err(|e| crate::worker::JobError::transient(e.to_string()))?;
            // The hub's own events (booking.created, client.created…) start journeys too.
            store
                .start_journeys_for_outbox(&event_id)
                .await
                .map(|_| ())
                .map_err(|e| crate::worker::JobError::transient(e.to_string()))
        }
    }
}

impl Store {
    /// Starts the journeys an outbox event triggers: the couple is the subject of `client.*`
    /// events and `data.booking.couple_id` of `booking.*` ones, whose subject is the booking.
    pub async fn start_journeys_for_outbox(&self, event_id: &str) -> StoreResult<usize> {
        let Some(m) = outbox_event::Entity::find_by_id(event_id.to_owned())
            .one(self.connection())
            .await?
        else {
            return Ok(0);
        };
        let data: serde_json::Value = serde_json::from_str(&m.data).unwrap_or_default();
        let couple = if m.subject.starts_with(wedsync_core::id::CoupleId::PREFIX) {
            Some(m.subject.clone())
        } else {
            data.pointer("/booking/couple_id")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        };
        let Some(couple) = couple.and_then(|c| c.parse::<wedsync_core::id::CoupleId>().ok()) else {
            return Ok(0);
        };
        let org = m
            .org_id
            .parse()
            .map_err(|_| crate::StoreError::Conflict("stored outbox event is unreadable".into()))?;
        let booking: Option<wedsync_core::id::BookingId> = m
            .subject
            .starts_with(wedsync_core::id::BookingId::PREFIX)
            .then(|| m.subject.parse().ok())
            .flatten();
        if matches!(
            m.event_type.as_str(),
            "client.created" | "client.updated" | "booking.created" | "booking.updated"
        ) {
            // A new couple or booking, or a moved date, may need the organisation's scheduled
            // journeys.
            let mut job = crate::queue::NewJob::new(
                crate::journeys::COUPLE_KIND,
                serde_json::json!({
                    "couple_id": couple,
                    "booking_id": booking,
                    "created": m.event_type == "client.created",
                }),
            );
            job.org_id = Some(org);
            job.dedupe_key = Some(format!("couple:{event_id}"));
            self.enqueue(job).await?;
        }
        Ok(self
            .start_journeys_for_event(
                &org,
                &m.event_type,
                event_id,
                &couple,
                booking.as_ref(),
                &data,
            )
            .await?
            .len())
    }

    /// Publishes an outbox event: fans it out to the organisation's webhook endpoints and
    /// marks it published, in one transaction; running it again changes nothing.
    pub async fn publish_event(&self, event_id: &str, priority: i32) -> StoreResult<()> {
        let now = self.clock().now();
        let tx = self.write_tx().await?;
        let Some(m) = outbox_event::Entity::find_by_id(event_id.to_owned())
            .one(&tx)
            .await?
        else {
            return Ok(());
        };
        let org: OrgId = m
            .org_id
            .parse()
            .map_err(|e| crate::StoreError::Conflict(format!("stored event is unreadable: {e}")))?;
        let data: serde_json::Value =
            serde_json::from_str(&m.data).unwrap_or(serde_json::Value::Null);
        crate::webhooks::fan_out_in(
            &tx,
            now,
            crate::webhooks::FanOut {
                org: &org,
                event_id,
                event_type: &m.event_type,
                time: from_micros(m.occurred_at),
                subject: Some(&m.subject),
                data: &data,
                priority,
                replay: false,
            },
        )
        .await?;
        outbox_event::Entity::update_many()
            .col_expr(
                outbox_event::Column::PublishedAt,
                sea_orm::sea_query::Expr::value(to_micros(now)),
            )
            .filter(outbox_event::Column::Id.eq(event_id))
            .filter(outbox_event::Column::PublishedAt.is_null())
            .exec(&tx)
            .await?;
        tx.commit().await?;
        self.wake_workers();
        Ok(())
    }

    /// Marks an event published if it was not already; returns whether this call did it.
    pub async fn mark_published(&self, event_id: &str) -> StoreResult<bool> {
        let now = to_micros(self.clock().now());
        let _turn = self.write_turn().await?;
        let result = outbox_event::Entity::update_many()
            .col_expr(
                outbox_event::Column::PublishedAt,
                sea_orm::sea_query::Expr::value(now),
            )
            .filter(outbox_event::Column::Id.eq(event_id))
            .filter(outbox_event::Column::PublishedAt.is_null())
            .exec(self.connection())
            .await?;
        Ok(result.rows_affected == 1)
    }

    /// How many events are not yet published, across organisations.
    pub async fn unpublished_count(&self) -> StoreResult<u64> {
        use sea_orm::PaginatorTrait;
        Ok(outbox_event::Entity::find()
            .filter(outbox_event::Column::PublishedAt.is_null())
            .count(self.connection())
            .await?)
    }

    /// An organisation's outbox events in order, after an optional event id.
    pub async fn outbox_events(
        &self,
        org: &OrgId,
        after: Option<&str>,
        limit: u64,
    ) -> StoreResult<Vec<OutboxEvent>> {
        let mut q = outbox_event::Entity::find()
            .filter(outbox_event::Column::OrgId.eq(org.to_string()))
            .order_by_asc(outbox_event::Column::Id)
            .limit(limit);
        if let Some(after) = after {
            q = q.filter(outbox_event::Column::Id.gt(after));
        }
        Ok(q.all(self.connection())
            .await?
            .into_iter()
            .map(|m| OutboxEvent {
                id: m.id,
                event_type: m.event_type,
                subject: m.subject,
                data: serde_json::from_str(&m.data).unwrap_or(serde_json::Value::Null),
                occurred_at: from_micros(m.occurred_at),
                published_at: m.published_at.map(from_micros),
            })
            .collect())
    }
}

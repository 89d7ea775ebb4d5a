//! The outbox: domain events written in the same transaction as the change that causes them,
//! so a consumer (outbound webhooks, journeys) sees every committed change and nothing that
//! was rolled back. Publishing is the job of later stages; here events are kept until then.

use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use serde::Serialize;
use wedsync_core::clock::{from_micros, to_micros};
use wedsync_core::id::{EventId, OrgId};

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
    Ok(id)
}

impl Store {
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

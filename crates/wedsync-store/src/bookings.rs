//! Bookings. Every change is audited and emits `booking.created`, `booking.updated`,
//! `booking.cancelled` (when the status becomes cancelled) or `booking.deleted`. The journeys
//! about a booking follow it in the same transaction: cancelled when it is cancelled,
//! deleted or moved to another couple; their waits on `booking_date` recomputed when its
//! start moves to another day.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use wedsync_core::booking::{Booking, BookingFields, BookingStatus, Money};
use wedsync_core::clock::{from_micros, to_micros};
use wedsync_core::id::{BookingId, CoupleId, OrgId};
use wedsync_core::org::Currency;
use wedsync_core::validate::ValidationErrors;

use crate::audit::{self, Change};
use crate::entity::{booking, couple};
use crate::outbox;
use crate::page::{Page, PageRequest, paginate};
use crate::{Actor, Store, StoreError, StoreResult};

/// Filters for listing bookings.
#[derive(Debug, Clone, Default)]
pub struct BookingFilter {
    /// Only this status.
    pub status: Option<BookingStatus>,
    /// Only this couple's.
    pub couple_id: Option<CoupleId>,
    /// Only bookings that end after this instant.
    pub from: Option<DateTime<Utc>>,
    /// Only bookings that start before this instant.
    pub to: Option<DateTime<Utc>>,
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Conflict(format!("corrupt row: {e}"))
}

fn to_fields(m: &booking::Model) -> StoreResult<(CoupleId, BookingFields)> {
    Ok((
        m.couple_id.parse().map_err(corrupt)?,
        BookingFields {
            service: m.service.clone(),
            starts_at: from_micros(m.starts_at),
            ends_at: from_micros(m.ends_at),
            status: m.status.parse().map_err(corrupt)?,
            amount_minor: m.amount_minor,
            currency: Currency::parse(&m.currency).map_err(corrupt)?,
            notes: m.notes.clone(),
        },
    ))
}

fn to_view(m: booking::Model) -> StoreResult<Booking> {
    let (couple_id, f) = to_fields(&m)?;
    Ok(Booking {
        id: m.id.parse().map_err(corrupt)?,
        couple_id,
        service: f.service,
        starts_at: f.starts_at,
        ends_at: f.ends_at,
        status: f.status,
        value: Money {
            amount_minor: f.amount_minor,
            currency: f.currency.as_str().to_owned(),
        },
        notes: f.notes,
        created_at: from_micros(m.created_at),
        updated_at: from_micros(m.updated_at),
    })
}

fn apply(m: booking::Model, couple_id: &CoupleId, f: BookingFields) -> booking::Model {
    booking::Model {
        couple_id: couple_id.to_string(),
        service: f.service,
        starts_at: to_micros(f.starts_at),
        ends_at: to_micros(f.ends_at),
        status: f.status.as_str().to_owned(),
        amount_minor: f.amount_minor,
        currency: f.currency.as_str().to_owned(),
        notes: f.notes,
        ..m
    }
}

/// Checks the couple belongs to `org`; an unknown couple is an input error, named by field.
async fn ensure_couple(
    tx: &DatabaseTransaction,
    org: &OrgId,
    couple_id: &CoupleId,
) -> StoreResult<()> {
    let found = couple::Entity::find_by_id(couple_id.to_string())
        .filter(couple::Column::OrgId.eq(org.to_string()))
        .one(tx)
        .await?;
    if found.is_none() {
        return Err(
            ValidationErrors::single("couple_id", "no such couple in this organisation").into(),
        );
    }
    Ok(())
}

impl Store {
    /// Creates a booking for a couple of the same organisation.
    pub async fn create_booking(
        &self,
        org: &OrgId,
        couple_id: &CoupleId,
        fields: BookingFields,
        actor: &Actor,
    ) -> StoreResult<Booking> {
        let now = self.clock().now();
        let blank = booking::Model {
            id: BookingId::new_at(now).to_string(),
            org_id: org.to_string(),
            couple_id: String::new(),
            service: String::new(),
            starts_at: 0,
            ends_at: 0,
            status: String::new(),
            amount_minor: 0,
            currency: String::new(),
            notes: None,
            created_at: to_micros(now),
            updated_at: to_micros(now),
        };
        let priority = outbox::booking_priority(&fields, now);
        let model = apply(blank, couple_id, fields);
        let tx = self.write_tx().await?;
        ensure_couple(&tx, org, couple_id).await?;
        booking::Entity::insert(booking::ActiveModel::from(model.clone()))
            .exec(&tx)
            .await?;
        let view = to_view(model)?;
        let json = serde_json::to_value(&view).ok();
        audit::append(
            &tx,
            org,
            now,
            Change {
                actor,
                action: "booking.create",
                target_type: "booking",
                target_id: view.id.to_string(),
                before: None,
                after: json.clone(),
            },
        )
        .await?;
        outbox::emit_with_priority(
            &tx,
            org,
            now,
            "booking.created",
            &view.id.to_string(),
            serde_json::json!({ "booking": json }),
            priority,
        )
        .await?;
        tx.commit().await?;
        self.wake_workers();
        Ok(view)
    }

    /// One booking of `org`.
    pub async fn get_booking(&self, org: &OrgId, id: &BookingId) -> StoreResult<Booking> {
        booking::Entity::find_by_id(id.to_string())
            .filter(booking::Column::OrgId.eq(org.to_string()))
            .one(self.connection())
            .await?
            .map(to_view)
            .transpose()?
            .ok_or(StoreError::NotFound)
    }

    /// A page of `org`'s bookings, in creation order.
    pub async fn list_bookings(
        &self,
        org: &OrgId,
        filter: &BookingFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Booking>> {
        let limit = page.limit();
        let mut q = booking::Entity::find()
            .filter(booking::Column::OrgId.eq(org.to_string()))
            .order_by_asc(booking::Column::Id)
            .limit(limit + 1);
        if let Some(after) = &page.after {
            q = q.filter(booking::Column::Id.gt(after.clone()));
        }
        if let Some(status) = filter.status {
            q = q.filter(booking::Column::Status.eq(status.as_str()));
        }
        if let Some(couple_id) = &filter.couple_id {
            q = q.filter(booking::Column::CoupleId.eq(couple_id.to_string()));
        }
        // A booking is in a range when it overlaps it at all.
        if let Some(from) = filter.from {
            q = q.filter(booking::Column::EndsAt.gt(to_micros(from)));
        }
        if let Some(to) = filter.to {
            q = q.filter(booking::Column::StartsAt.lt(to_micros(to)));
        }
        let rows = q
            .all(self.connection())
            .await?
            .into_iter()
            .map(to_view)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(rows, limit, |b| b.id.to_string()))
    }

    /// Up to `limit` of the organisation's bookings that are not cancelled, after the id
    /// `after`, in id order, each with its couple: for work that walks every booking in
    /// batches (attaching scheduled journeys about bookings).
    pub async fn bookings_batch(
        &self,
        org: &OrgId,
        after: Option<&str>,
        limit: u64,
    ) -> StoreResult<Vec<(Booking, wedsync_core::couple::Couple)>> {
        let mut q = booking::Entity::find()
            .filter(booking::Column::OrgId.eq(org.to_string()))
            .filter(booking::Column::Status.ne(BookingStatus::Cancelled.as_str()))
            .order_by_asc(booking::Column::Id)
            .limit(limit);
        if let Some(after) = after {
            q = q.filter(booking::Column::Id.gt(after.to_owned()));
        }
        let bookings = q
            .all(self.connection())
            .await?
            .into_iter()
            .map(to_view)
            .collect::<StoreResult<Vec<_>>>()?;
        let mut ids: Vec<String> = bookings.iter().map(|b| b.couple_id.to_string()).collect();
        ids.sort_unstable();
        ids.dedup();
        let couples: std::collections::HashMap<String, wedsync_core::couple::Couple> =
            couple::Entity::find()
                .filter(couple::Column::Id.is_in(ids))
                .all(self.connection())
                .await?
                .into_iter()
                .map(|m| Ok((m.id.clone(), crate::couples::to_view(m)?)))
                .collect::<StoreResult<_>>()?;
        Ok(bookings
            .into_iter()
            .filter_map(|b| {
                let c = couples.get(&b.couple_id.to_string())?.clone();
                Some((b, c))
            })
            .collect())
    }

    /// Changes a booking; `edit` gets the current couple and fields inside the transaction.
    pub async fn update_booking<F>(
        &self,
        org: &OrgId,
        id: &BookingId,
        actor: &Actor,
        edit: F,
    ) -> StoreResult<Booking>
    where
        F: FnOnce(&CoupleId, &BookingFields) -> Result<(CoupleId, BookingFields), ValidationErrors>
            + Send,
    {
        let now = self.clock().now();
        let tx = self.write_tx().await?;
        let current = booking::Entity::find_by_id(id.to_string())
            .filter(booking::Column::OrgId.eq(org.to_string()))
            .one(&tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let (old_couple, old_fields) = to_fields(&current)?;
        let (new_couple, new_fields) = edit(&old_couple, &old_fields)?;
        let priority = outbox::booking_priority(&new_fields, now);
        if new_couple != old_couple {
            ensure_couple(&tx, org, &new_couple).await?;
        }
        let cancelled = old_fields.status != BookingStatus::Cancelled
            && new_fields.status == BookingStatus::Cancelled;
        let moved_start = old_fields.starts_at != new_fields.starts_at;
        let before = to_view(current.clone())?;
        let model = booking::Model {
            updated_at: to_micros(now),
            ..apply(current, &new_couple, new_fields)
        };
        booking::Entity::update(booking::ActiveModel::from(model.clone()).reset_all())
            .exec(&tx)
            .await?;
        let after = to_view(model)?;
        let after_json = serde_json::to_value(&after).ok();
        // The booking's journeys: they end when it is called off or handed to another
        // couple, and their waits on its date follow a moved start, in this transaction.
        let ended = if cancelled {
            Some(format!("cancelled: the booking was cancelled by {actor}"))
        } else if new_couple != old_couple {
            Some(format!(
                "cancelled: the booking was moved to another couple by {actor}"
            ))
        } else {
            None
        };
        if let Some(reason) = ended {
            crate::journeys::cancel_instances_in(
                &tx,
                org,
                crate::journeys::Whose::Booking {
                    couple: &old_couple.to_string(),
                    booking: &id.to_string(),
                },
                now,
                &reason,
            )
            .await?;
        } else if moved_start
            && let Some(c) = couple::Entity::find_by_id(new_couple.to_string())
                .one(&tx)
                .await?
            && let Ok(zone) = wedsync_core::org::TimeZone::parse(&c.time_zone)
        {
            let (old_day, new_day) = (
                wedsync_core::booking::local_date(before.starts_at, zone.tz()),
                wedsync_core::booking::local_date(after.starts_at, zone.tz()),
            );
            if old_day != new_day {
                crate::journeys::reschedule_waits(
                    &tx,
                    org,
                    &new_couple,
                    Some(id),
                    "booking_date",
                    new_day,
                    &c.time_zone,
                    c.wedding_date,
                    now,
                )
                .await?;
            }
        }
        audit::append(
            &tx,
            org,
            now,
            Change {
                actor,
                action: "booking.update",
                target_type: "booking",
                target_id: id.to_string(),
                before: serde_json::to_value(&before).ok(),
                after: after_json.clone(),
            },
        )
        .await?;
        let event = if cancelled {
            "booking.cancelled"
        } else {
            "booking.updated"
        };
        outbox::emit_with_priority(
            &tx,
            org,
            now,
            event,
            &id.to_string(),
            serde_json::json!({ "booking": after_json }),
            priority,
        )
        .await?;
        tx.commit().await?;
        self.wake_workers();
        Ok(after)
    }

    /// Deletes a booking.
    pub async fn delete_booking(
        &self,
        org: &OrgId,
        id: &BookingId,
        actor: &Actor,
    ) -> StoreResult<()> {
        let now = self.clock().now();
        let tx = self.write_tx().await?;
        let current = booking::Entity::find_by_id(id.to_string())
            .filter(booking::Column::OrgId.eq(org.to_string()))
            .one(&tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let before = to_view(current)?;
        // Its journeys end with it.
        crate::journeys::cancel_instances_in(
            &tx,
            org,
            crate::journeys::Whose::Booking {
                couple: &before.couple_id.to_string(),
                booking: &id.to_string(),
            },
            now,
            &format!("cancelled: the booking was deleted by {actor}"),
        )
        .await?;
        booking::Entity::delete_by_id(id.to_string())
            .exec(&tx)
            .await?;
        audit::append(
            &tx,
            org,
            now,
            Change {
                actor,
                action: "booking.delete",
                target_type: "booking",
                target_id: id.to_string(),
                before: serde_json::to_value(&before).ok(),
                after: None,
            },
        )
        .await?;
        outbox::emit(
            &tx,
            org,
            now,
            "booking.deleted",
            &id.to_string(),
            serde_json::json!({ "booking_id": id }),
        )
        .await?;
        tx.commit().await?;
        self.wake_workers();
        Ok(())
    }
}

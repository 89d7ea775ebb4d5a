//! Couples. Every change is audited and emits a canonical `client.*` event (couples are the
//! vendor's clients); a wedding-date change carries the old and new date so that journeys
//! can move their timers.

use chrono::NaiveDate;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use wedsync_core::clock::{from_micros, to_micros};
use wedsync_core::couple::{
    Channel, Couple, CoupleFields, Partner, Venue, wedding_date_change_needs_confirmation,
};
use wedsync_core::id::{CoupleId, OrgId};
use wedsync_core::org::TimeZone;
use wedsync_core::validate::ValidationErrors;

use crate::audit::{self, Change};
use crate::entity::{booking, couple};
use crate::outbox;
use crate::page::{Page, PageRequest, paginate};
use crate::{Actor, Store, StoreError, StoreResult};

/// Filters for listing couples.
#[derive(Debug, Clone, Default)]
pub struct CoupleFilter {
    /// Weddings on or after this day.
    pub wedding_from: Option<NaiveDate>,
    /// Weddings on or before this day.
    pub wedding_to: Option<NaiveDate>,
    /// Only couples in this IANA time zone.
    pub time_zone: Option<String>,
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Conflict(format!("corrupt row: {e}"))
}

fn to_fields(m: &couple::Model) -> StoreResult<CoupleFields> {
    let partner = |name: &str, email: &Option<String>, phone: &Option<String>, channel: &str| {
        Ok::<_, StoreError>(Partner {
            name: name.to_owned(),
            email: email.clone(),
            phone: phone.clone(),
            preferred_channel: channel.parse::<Channel>().map_err(corrupt)?,
        })
    };
    Ok(CoupleFields {
        partners: [
            partner(
                &m.partner_a_name,
                &m.partner_a_email,
                &m.partner_a_phone,
                &m.partner_a_channel,
            )?,
            partner(
                &m.partner_b_name,
                &m.partner_b_email,
                &m.partner_b_phone,
                &m.partner_b_channel,
            )?,
        ],
        wedding_date: m.wedding_date,
        time_zone: TimeZone::parse(&m.time_zone).map_err(corrupt)?,
        venue: Venue {
            name: m.venue_name.clone(),
            address: m.venue_address.clone(),
            latitude: m.venue_latitude,
            longitude: m.venue_longitude,
        },
        notes: m.notes.clone(),
    })
}

/// The couple's columns as `{table}.{column} AS {prefix}{column}`, to select a couple in
/// a join and read it back with [`couple_from_row`].
pub(crate) fn couple_columns(table: &str, prefix: &str) -> String {
    use sea_orm::{IdenStatic, Iterable};
    couple::Column::iter()
        .map(|c| format!("{table}.{0} AS {prefix}{0}", c.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A couple from a joined row selected with [`couple_columns`].
pub(crate) fn couple_from_row(row: &sea_orm::QueryResult, prefix: &str) -> StoreResult<Couple> {
    use sea_orm::FromQueryResult;
    to_view(couple::Model::from_query_result(row, prefix)?)
}

pub(crate) fn to_view(m: couple::Model) -> StoreResult<Couple> {
    let fields = to_fields(&m)?;
    Ok(Couple {
        id: m.id.parse().map_err(corrupt)?,
        partners: fields.partners.to_vec(),
        wedding_date: fields.wedding_date,
        time_zone: fields.time_zone.name().to_owned(),
        venue: fields.venue,
        notes: fields.notes,
        created_at: from_micros(m.created_at),
        updated_at: from_micros(m.updated_at),
    })
}

fn apply(m: couple::Model, f: CoupleFields) -> couple::Model {
    let [a, b] = f.partners;
    couple::Model {
        partner_a_name: a.name,
        partner_a_email: a.email,
        partner_a_phone: a.phone,
        partner_a_channel: a.preferred_channel.as_str().to_owned(),
        partner_b_name: b.name,
        partner_b_email: b.email,
        partner_b_phone: b.phone,
        partner_b_channel: b.preferred_channel.as_str().to_owned(),
        wedding_date: f.wedding_date,
        time_zone: f.time_zone.name().to_owned(),
        venue_name: f.venue.name,
        venue_address: f.venue.address,
        venue_latitude: f.venue.latitude,
        venue_longitude: f.venue.longitude,
        notes: f.notes,
        ..m
    }
}

/// What a couple update may do beyond changing fields.
#[derive(Debug, Clone, Copy)]
pub struct DateChangeRule {
    /// Days before the wedding within which a date change needs confirmation.
    pub window_days: i64,
    /// Whether the caller confirmed a date change.
    pub confirmed: bool,
}

impl Store {
    /// Creates a couple.
    pub async fn create_couple(
        &self,
        org: &OrgId,
        fields: CoupleFields,
        actor: &Actor,
    ) -> StoreResult<Couple> {
        let now = self.clock().now();
        let blank = couple::Model {
            id: CoupleId::new_at(now).to_string(),
            org_id: org.to_string(),
            partner_a_name: String::new(),
            partner_a_email: None,
            partner_a_phone: None,
            partner_a_channel: String::new(),
            partner_b_name: String::new(),
            partner_b_email: None,
            partner_b_phone: None,
            partner_b_channel: String::new(),
            wedding_date: fields.wedding_date,
            time_zone: String::new(),
            venue_name: None,
            venue_address: None,
            venue_latitude: None,
            venue_longitude: None,
            notes: None,
            created_at: to_micros(now),
            updated_at: to_micros(now),
        };
        let priority = outbox::couple_priority(&fields, now);
        let model = apply(blank, fields);
        let tx = self.write_tx().await?;
        couple::Entity::insert(couple::ActiveModel::from(model.clone()))
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
                action: "couple.create",
                target_type: "couple",
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
            "client.created",
            &view.id.to_string(),
            serde_json::json!({ "couple": json }),
            priority,
        )
        .await?;
        tx.commit().await?;
        self.wake_workers();
        Ok(view)
    }

    /// One couple of `org`.
    pub async fn get_couple(&self, org: &OrgId, id: &CoupleId) -> StoreResult<Couple> {
        couple::Entity::find_by_id(id.to_string())
            .filter(couple::Column::OrgId.eq(org.to_string()))
            .one(self.connection())
            .await?
            .map(to_view)
            .transpose()?
            .ok_or(StoreError::NotFound)
    }

    /// A page of `org`'s couples, in creation order.
    pub async fn list_couples(
        &self,
        org: &OrgId,
        filter: &CoupleFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Couple>> {
        let limit = page.limit();
        let rows = self
            .couples_batch(org, filter, page.after.as_deref(), limit + 1)
            .await?;
        Ok(paginate(rows, limit, |c| c.id.to_string()))
    }

    /// The distinct time zones of the organisation's couples.
    pub async fn couple_zones(&self, org: &OrgId) -> StoreResult<Vec<String>> {
        use sea_orm::ConnectionTrait as _;
        let rows = self
            .connection()
            .query_all_raw(sea_orm::Statement::from_sql_and_values(
                self.backend(),
                "SELECT DISTINCT time_zone FROM couples WHERE org_id = $1 ORDER BY time_zone",
                vec![org.to_string().into()],
            ))
            .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<String>("", "time_zone")?))
            .collect()
    }

    /// Up to `limit` of the organisation's couples after the id `after`, in id order, for
    /// work that walks every couple in batches larger than an API page (attaching scheduled
    /// journeys).
    pub async fn couples_batch(
        &self,
        org: &OrgId,
        filter: &CoupleFilter,
        after: Option<&str>,
        limit: u64,
    ) -> StoreResult<Vec<Couple>> {
        let mut q = couple::Entity::find()
            .filter(couple::Column::OrgId.eq(org.to_string()))
            .order_by_asc(couple::Column::Id)
            .limit(limit);
        if let Some(after) = after {
            q = q.filter(couple::Column::Id.gt(after.to_owned()));
        }
        if let Some(from) = filter.wedding_from {
            q = q.filter(couple::Column::WeddingDate.gte(from));
        }
        if let Some(to) = filter.wedding_to {
            q = q.filter(couple::Column::WeddingDate.lte(to));
        }
        if let Some(zone) = &filter.time_zone {
            q = q.filter(couple::Column::TimeZone.eq(zone.clone()));
        }
        q.all(self.connection())
            .await?
            .into_iter()
            .map(to_view)
            .collect()
    }

    /// Changes a couple. `edit` receives the current fields and returns the new ones; it runs
    /// inside the write transaction, so concurrent edits cannot overwrite each other unseen.
    /// A wedding-date change close to the wedding needs `rule.confirmed`.
    pub async fn update_couple<F>(
        &self,
        org: &OrgId,
        id: &CoupleId,
        actor: &Actor,
        rule: DateChangeRule,
        edit: F,
    ) -> StoreResult<Couple>
    where
        F: FnOnce(&CoupleFields) -> Result<CoupleFields, ValidationErrors> + Send,
    {
        let now = self.clock().now();
        let tx = self.write_tx().await?;
        let current = couple::Entity::find_by_id(id.to_string())
            .filter(couple::Column::OrgId.eq(org.to_string()))
            .one(&tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let old_fields = to_fields(&current)?;
        let new_fields = edit(&old_fields)?;
        let priority = outbox::couple_priority(&new_fields, now);
        let (old_date, new_date) = (old_fields.wedding_date, new_fields.wedding_date);
        if wedding_date_change_needs_confirmation(
            old_date,
            new_date,
            old_fields.time_zone,
            now,
            rule.window_days,
        ) && !rule.confirmed
        {
            return Err(StoreError::NeedsConfirmation(format!(
                "moving a wedding from {old_date} to {new_date} is within {} days of the wedding; \
                 repeat the request with \"confirm_wedding_date_change\": true",
                rule.window_days
            )));
        }
        let before = to_view(current.clone())?;
        let model = couple::Model {
            updated_at: to_micros(now),
            ..apply(current, new_fields)
        };
        couple::Entity::update(couple::ActiveModel::from(model.clone()).reset_all())
            .exec(&tx)
            .await?;
        let after = to_view(model)?;
        let (before_json, after_json) = (
            serde_json::to_value(&before).ok(),
            serde_json::to_value(&after).ok(),
        );
        let date_changed = old_date != new_date;
        audit::append(
            &tx,
            org,
            now,
            Change {
                actor,
                action: if date_changed {
                    "couple.update.wedding_date"
                } else {
                    "couple.update"
                },
                target_type: "couple",
                target_id: id.to_string(),
                before: before_json,
                after: after_json.clone(),
            },
        )
        .await?;
        let zone_changed = before.time_zone != after.time_zone;
        if date_changed || zone_changed {
            // Journeys waiting on the wedding date follow it, in this same transaction; a
            // new time zone moves every couple-local instant, bookings' dates included.
            crate::journeys::reschedule_waits(
                &tx,
                org,
                id,
                None,
                "wedding_date",
                new_date,
                after.time_zone.as_str(),
                new_date,
                now,
            )
            .await?;
        }
        if zone_changed {
            let bookings = booking::Entity::find()
                .filter(booking::Column::OrgId.eq(org.to_string()))
                .filter(booking::Column::CoupleId.eq(id.to_string()))
                .all(&tx)
                .await?;
            for b in bookings {
                let (Ok(booking_id), Ok(zone)) = (
                    b.id.parse::<wedsync_core::id::BookingId>(),
                    wedsync_core::org::TimeZone::parse(after.time_zone.as_str()),
                ) else {
                    continue;
                };
                crate::journeys::reschedule_waits(
                    &tx,
                    org,
                    id,
                    Some(&booking_id),
                    "booking_date",
                    wedsync_core::booking::local_date(from_micros(b.starts_at), zone.tz()),
                    after.time_zone.as_str(),
                    new_date,
                    now,
                )
                .await?;
            }
        }
        let mut data = serde_json::json!({ "couple": after_json });
        if date_changed {
            data["wedding_date_changed"] = serde_json::json!({ "from": old_date, "to": new_date });
        }
        outbox::emit_with_priority(
            &tx,
            org,
            now,
            "client.updated",
            &id.to_string(),
            data,
            priority,
        )
        .await?;
        tx.commit().await?;
        self.wake_workers();
        Ok(after)
    }

    /// Deletes a couple that has no bookings (bookings must be deleted or moved first, so no
    /// booking history disappears as a side effect).
    pub async fn delete_couple(
        &self,
        org: &OrgId,
        id: &CoupleId,
        actor: &Actor,
    ) -> StoreResult<()> {
        let now = self.clock().now();
        let tx = self.write_tx().await?;
        let current = couple::Entity::find_by_id(id.to_string())
            .filter(couple::Column::OrgId.eq(org.to_string()))
            .one(&tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let bookings = booking::Entity::find()
            .filter(booking::Column::OrgId.eq(org.to_string()))
            .filter(booking::Column::CoupleId.eq(id.to_string()))
            .count(&tx)
            .await?;
        if bookings > 0 {
            return Err(StoreError::Conflict(format!(
                "the couple has {bookings} booking(s); delete them first"
            )));
        }
        let before = to_view(current)?;
        // Their journeys end with them: nothing more may be sent to a deleted couple.
        crate::journeys::cancel_instances_in(
            &tx,
            org,
            crate::journeys::Whose::Couple(&id.to_string()),
            now,
            &format!("cancelled: the couple was deleted by {actor}"),
        )
        .await?;
        couple::Entity::delete_by_id(id.to_string())
            .exec(&tx)
            .await?;
        audit::append(
            &tx,
            org,
            now,
            Change {
                actor,
                action: "couple.delete",
                target_type: "couple",
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
            "client.deleted",
            &id.to_string(),
            serde_json::json!({ "couple_id": id }),
        )
        .await?;
        tx.commit().await?;
        self.wake_workers();
        Ok(())
    }
}

//! Organisations: creation (with their audit chain), listing, and settings changes.

use sea_orm::{ActiveModelTrait, EntityTrait, QueryOrder};
use wedsync_core::clock::{from_micros, to_micros};
use wedsync_core::id::OrgId;
use wedsync_core::org::{OrgSettings, Organization, TimeZone};

use crate::audit::{self, Change};
use crate::entity::organization;
use crate::{Actor, Store, StoreError, StoreResult};

pub(crate) fn to_view(m: organization::Model) -> StoreResult<Organization> {
    Ok(Organization {
        id: m
            .id
            .parse()
            .map_err(|e| StoreError::Conflict(format!("corrupt id: {e}")))?,
        name: m.name,
        time_zone: m.time_zone,
        tier: m.tier.parse().map_err(StoreError::Conflict)?,
        country: m.country,
        currency: m.currency,
        created_at: from_micros(m.created_at),
        updated_at: from_micros(m.updated_at),
    })
}

fn audit_json(org: &Organization) -> serde_json::Value {
    serde_json::to_value(org).unwrap_or(serde_json::Value::Null)
}

impl Store {
    /// Creates an organisation and starts its audit chain.
    pub async fn create_org(
        &self,
        settings: OrgSettings,
        actor: &Actor,
    ) -> StoreResult<Organization> {
        let now = self.clock().now();
        let id = OrgId::new_at(now);
        let model = organization::Model {
            id: id.to_string(),
            name: settings.name,
            time_zone: settings.time_zone.name().to_owned(),
            tier: settings.tier.as_str().to_owned(),
            country: settings.country.as_str().to_owned(),
            currency: settings.currency.as_str().to_owned(),
            created_at: to_micros(now),
            updated_at: to_micros(now),
        };
        let tx = self.write_tx().await?;
        organization::Entity::insert(organization::ActiveModel::from(model.clone()))
            .exec(&tx)
            .await?;
        audit::start_chain(&tx, &id).await?;
        let view = to_view(model)?;
        audit::append(
            &tx,
            &id,
            now,
            Change {
                actor,
                action: "organization.create",
                target_type: "organization",
                target_id: id.to_string(),
                before: None,
                after: Some(audit_json(&view)),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(view)
    }

    /// Every organisation, oldest first (operators only: the CLI).
    pub async fn list_orgs(&self) -> StoreResult<Vec<Organization>> {
        organization::Entity::find()
            .order_by_asc(organization::Column::Id)
            .all(self.connection())
            .await?
            .into_iter()
            .map(to_view)
            .collect()
    }

    /// One organisation.
    pub async fn get_org(&self, id: &OrgId) -> StoreResult<Organization> {
        organization::Entity::find_by_id(id.to_string())
            .one(self.connection())
            .await?
            .map(to_view)
            .transpose()?
            .ok_or(StoreError::NotFound)
    }

    /// The organisation's time zone, which defaults couples' zones and drives the calendar.
    pub async fn org_time_zone(&self, id: &OrgId) -> StoreResult<TimeZone> {
        let org = self.get_org(id).await?;
        TimeZone::parse(&org.time_zone).map_err(StoreError::Conflict)
    }

    /// Changes an organisation's settings; `edit` receives the current settings.
    pub async fn update_org<F>(
        &self,
        id: &OrgId,
        actor: &Actor,
        edit: F,
    ) -> StoreResult<Organization>
    where
        F: FnOnce(&Organization) -> Result<OrgSettings, wedsync_core::validate::ValidationErrors>
            + Send,
    {
        let now = self.clock().now();
        let tx = self.write_tx().await?;
        let current = organization::Entity::find_by_id(id.to_string())
            .one(&tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let before = to_view(current.clone())?;
        let settings = edit(&before)?;
        let model = organization::Model {
            name: settings.name,
            time_zone: settings.time_zone.name().to_owned(),
            tier: settings.tier.as_str().to_owned(),
            country: settings.country.as_str().to_owned(),
            currency: settings.currency.as_str().to_owned(),
            updated_at: to_micros(now),
            ..current
        };
        organization::Entity::update(organization::ActiveModel::from(model.clone()).reset_all())
            .exec(&tx)
            .await?;
        let after = to_view(model)?;
        audit::append(
            &tx,
            id,
            now,
            Change {
                actor,
                action: "organization.update",
                target_type: "organization",
                target_id: id.to_string(),
                before: Some(audit_json(&before)),
                after: Some(audit_json(&after)),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(after)
    }
}

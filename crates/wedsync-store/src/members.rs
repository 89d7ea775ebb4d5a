//! Team members and their roles. An organisation always keeps at least one owner.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use wedsync_core::clock::{from_micros, to_micros};
use wedsync_core::id::{MemberId, OrgId};
use wedsync_core::org::{Member, Role};

use crate::audit::{self, Change};
use crate::entity::member;
use crate::page::{Page, PageRequest, paginate};
use crate::{Actor, Store, StoreError, StoreResult};

fn to_view(m: member::Model) -> StoreResult<Member> {
    Ok(Member {
        id: m
            .id
            .parse()
            .map_err(|e| StoreError::Conflict(format!("corrupt id: {e}")))?,
        email: m.email,
        name: m.name,
        role: m.role.parse().map_err(StoreError::Conflict)?,
        created_at: from_micros(m.created_at),
        updated_at: from_micros(m.updated_at),
    })
}

/// Validated member fields.
#[derive(Debug, Clone)]
pub struct MemberFields {
    /// Sign-in email, lowercased.
    pub email: String,
    /// Display name.
    pub name: String,
    /// Role.
    pub role: Role,
}

impl MemberFields {
    /// Validates raw input.
    pub fn parse(
        email: &str,
        name: &str,
        role: Role,
    ) -> Result<Self, wedsync_core::validate::ValidationErrors> {
        let mut errors = wedsync_core::validate::ValidationErrors::default();
        let email = wedsync_core::org::parse_email(&mut errors, "email", email);
        let name = wedsync_core::validate::text(&mut errors, "name", name, 200);
        match (email, name) {
            (Some(email), Some(name)) if errors.is_empty() => Ok(Self {
                email: email.to_lowercase(),
                name,
                role,
            }),
            _ => Err(errors),
        }
    }
}

impl Store {
    /// Adds a member; the email must be new to the organisation.
    pub async fn create_member(
        &self,
        org: &OrgId,
        fields: MemberFields,
        actor: &Actor,
    ) -> StoreResult<Member> {
        let now = self.clock().now();
        let model = member::Model {
            id: MemberId::new_at(now).to_string(),
            org_id: org.to_string(),
            email: fields.email,
            name: fields.name,
            role: fields.role.as_str().to_owned(),
            created_at: to_micros(now),
            updated_at: to_micros(now),
        };
        let tx = self.write_tx().await?;
        member::Entity::insert(member::ActiveModel::from(model.clone()))
            .exec(&tx)
            .await
            .map_err(|e| {
                if crate::is_unique_violation(&e) {
                    StoreError::Conflict("a member with this email already exists".into())
                } else {
                    e.into()
                }
            })?;
        let view = to_view(model)?;
        audit::append(
            &tx,
            org,
            now,
            Change {
                actor,
                action: "member.create",
                target_type: "member",
                target_id: view.id.to_string(),
                before: None,
                after: serde_json::to_value(&view).ok(),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(view)
    }

    /// One member of `org`.
    pub async fn get_member(&self, org: &OrgId, id: &MemberId) -> StoreResult<Member> {
        member::Entity::find_by_id(id.to_string())
            .filter(member::Column::OrgId.eq(org.to_string()))
            .one(self.connection())
            .await?
            .map(to_view)
            .transpose()?
            .ok_or(StoreError::NotFound)
    }

    /// A page of `org`'s members.
    pub async fn list_members(&self, org: &OrgId, page: &PageRequest) -> StoreResult<Page<Member>> {
        let limit = page.limit();
        let mut q = member::Entity::find()
            .filter(member::Column::OrgId.eq(org.to_string()))
            .order_by_asc(member::Column::Id)
            .limit(limit + 1);
        if let Some(after) = &page.after {
            q = q.filter(member::Column::Id.gt(after.clone()));
        }
        let rows = q
            .all(self.connection())
            .await?
            .into_iter()
            .map(to_view)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(rows, limit, |m| m.id.to_string()))
    }

    /// Changes a member; `edit` gets the current member and returns the new fields.
    pub async fn update_member<F>(
        &self,
        org: &OrgId,
        id: &MemberId,
        actor: &Actor,
        edit: F,
    ) -> StoreResult<Member>
    where
        F: FnOnce(&Member) -> StoreResult<MemberFields> + Send,
    {
        let now = self.clock().now();
        let tx = self.write_tx().await?;
        let current = member::Entity::find_by_id(id.to_string())
            .filter(member::Column::OrgId.eq(org.to_string()))
            .one(&tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let before = to_view(current.clone())?;
        let fields = edit(&before)?;
        if before.role == Role::Owner && fields.role != Role::Owner {
            ensure_another_owner(&tx, org).await?;
        }
        let model = member::Model {
            email: fields.email,
            name: fields.name,
            role: fields.role.as_str().to_owned(),
            updated_at: to_micros(now),
            ..current
        };
        member::Entity::update(member::ActiveModel::from(model.clone()).reset_all())
            .exec(&tx)
            .await
            .map_err(|e| {
                if crate::is_unique_violation(&e) {
                    StoreError::Conflict("a member with this email already exists".into())
                } else {
                    e.into()
                }
            })?;
        let after = to_view(model)?;
        audit::append(
            &tx,
            org,
            now,
            Change {
                actor,
                action: "member.update",
                target_type: "member",
                target_id: id.to_string(),
                before: serde_json::to_value(&before).ok(),
                after: serde_json::to_value(&after).ok(),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(after)
    }

    /// Removes a member; `check` may refuse after seeing it (e.g. an admin removing an owner).
    pub async fn delete_member<F>(
        &self,
        org: &OrgId,
        id: &MemberId,
        actor: &Actor,
        check: F,
    ) -> StoreResult<()>
    where
        F: FnOnce(&Member) -> StoreResult<()> + Send,
    {
        let now = self.clock().now();
        let tx = self.write_tx().await?;
        let current = member::Entity::find_by_id(id.to_string())
            .filter(member::Column::OrgId.eq(org.to_string()))
            .one(&tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let before = to_view(current)?;
        check(&before)?;
        if before.role == Role::Owner {
            ensure_another_owner(&tx, org).await?;
        }
        member::Entity::delete_by_id(id.to_string())
            .exec(&tx)
            .await?;
        audit::append(
            &tx,
            org,
            now,
            Change {
                actor,
                action: "member.delete",
                target_type: "member",
                target_id: id.to_string(),
                before: serde_json::to_value(&before).ok(),
                after: None,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn ensure_another_owner(tx: &sea_orm::DatabaseTransaction, org: &OrgId) -> StoreResult<()> {
    let owners = member::Entity::find()
        .filter(member::Column::OrgId.eq(org.to_string()))
        .filter(member::Column::Role.eq(Role::Owner.as_str()))
        .count(tx)
        .await?;
    if owners <= 1 {
        return Err(StoreError::Conflict(
            "an organisation must keep at least one owner".into(),
        ));
    }
    Ok(())
}

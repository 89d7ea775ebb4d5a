//! API keys: `wsk_` followed by 40 random alphanumerics (about 238 bits). Only the SHA-256
//! of a key is stored; because keys are long and random, a fast hash is enough (a slow
//! password hash protects guessable secrets, which these are not), and lookup by hash keeps
//! authentication to one indexed query.

use rand::Rng;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use sha2::{Digest, Sha256};
use wedsync_core::clock::{from_micros, to_micros};
use wedsync_core::id::{ApiKeyId, OrgId};
use wedsync_core::org::{ApiKeyInfo, Role};

use crate::audit::{self, Change};
use crate::entity::api_key;
use crate::{Actor, Store, StoreError, StoreResult};

/// The prefix every key starts with, so leaked keys are easy to scan for.
pub const KEY_PREFIX: &str = "wsk_";
const KEY_RANDOM_LEN: usize = 40;
/// How stale `last_used_at` may get before a request refreshes it: at most one write per key
/// per minute, instead of one per request.
const LAST_USED_RESOLUTION_MICROS: i64 = 60_000_000;

/// Who a valid key speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The organisation every query is scoped to.
    pub org_id: OrgId,
    /// The key used.
    pub key_id: ApiKeyId,
    /// What the key may do.
    pub role: Role,
}

fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Whether `key` has the shape of one of our keys; used to answer malformed keys without a
/// database round trip.
pub fn looks_like_key(key: &str) -> bool {
    key.strip_prefix(KEY_PREFIX).is_some_and(|rest| {
        rest.len() == KEY_RANDOM_LEN && rest.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

fn to_view(m: api_key::Model) -> StoreResult<ApiKeyInfo> {
    Ok(ApiKeyInfo {
        id: m
            .id
            .parse()
            .map_err(|e| StoreError::Conflict(format!("corrupt id: {e}")))?,
        name: m.name,
        role: m.role.parse().map_err(StoreError::Conflict)?,
        prefix: m.display_prefix,
        created_by: m.created_by,
        created_at: from_micros(m.created_at),
        last_used_at: m.last_used_at.map(from_micros),
        revoked_at: m.revoked_at.map(from_micros),
    })
}

impl Store {
    /// Creates a key and returns it with the secret, which is never retrievable again.
    pub async fn create_api_key(
        &self,
        org: &OrgId,
        name: &str,
        role: Role,
        actor: &Actor,
    ) -> StoreResult<(ApiKeyInfo, String)> {
        let mut errors = wedsync_core::validate::ValidationErrors::default();
        let name = wedsync_core::validate::text(&mut errors, "name", name, 200);
        let name = errors.into_result(name.unwrap_or_default())?;
        let now = self.clock().now();
        let random: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(KEY_RANDOM_LEN)
            .map(char::from)
            .collect();
        let secret = format!("{KEY_PREFIX}{random}");
        let model = api_key::Model {
            id: ApiKeyId::new_at(now).to_string(),
            org_id: org.to_string(),
            name,
            role: role.as_str().to_owned(),
            display_prefix: secret[..12].to_owned(),
            key_hash: hash_key(&secret),
            created_by: actor.to_string(),
            created_at: to_micros(now),
            last_used_at: None,
            revoked_at: None,
        };
        let tx = self.write_tx().await?;
        api_key::Entity::insert(api_key::ActiveModel::from(model.clone()))
            .exec(&tx)
            .await
            .map_err(|e| {
                if crate::is_fk_violation(&e) {
                    StoreError::NotFound
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
                action: "api_key.create",
                target_type: "api_key",
                target_id: view.id.to_string(),
                before: None,
                after: serde_json::to_value(&view).ok(),
            },
        )
        .await?;
        tx.commit().await?;
        Ok((view, secret))
    }

    /// An organisation's keys, revoked ones included, oldest first.
    pub async fn list_api_keys(&self, org: &OrgId) -> StoreResult<Vec<ApiKeyInfo>> {
        api_key::Entity::find()
            .filter(api_key::Column::OrgId.eq(org.to_string()))
            .order_by_asc(api_key::Column::Id)
            .all(self.connection())
            .await?
            .into_iter()
            .map(to_view)
            .collect()
    }

    /// Revokes a key of `org`. Revoking an already revoked key changes nothing.
    pub async fn revoke_api_key(
        &self,
        org: &OrgId,
        id: &ApiKeyId,
        actor: &Actor,
    ) -> StoreResult<ApiKeyInfo> {
        let now = self.clock().now();
        let tx = self.write_tx().await?;
        let current = api_key::Entity::find_by_id(id.to_string())
            .filter(api_key::Column::OrgId.eq(org.to_string()))
            .one(&tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        if current.revoked_at.is_some() {
            return to_view(current);
        }
        let before = to_view(current.clone())?;
        let updated = api_key::Model {
            revoked_at: Some(to_micros(now)),
            ..current
        };
        api_key::Entity::update(api_key::ActiveModel {
            id: sea_orm::ActiveValue::Unchanged(updated.id.clone()),
            revoked_at: Set(updated.revoked_at),
            ..Default::default()
        })
        .exec(&tx)
        .await?;
        let after = to_view(updated)?;
        audit::append(
            &tx,
            org,
            now,
            Change {
                actor,
                action: "api_key.revoke",
                target_type: "api_key",
                target_id: id.to_string(),
                before: serde_json::to_value(&before).ok(),
                after: serde_json::to_value(&after).ok(),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(after)
    }

    /// The principal for a presented key, or `None` if it is unknown or revoked.
    pub async fn authenticate(&self, key: &str) -> StoreResult<Option<Principal>> {
        if !looks_like_key(key) {
            return Ok(None);
        }
        let Some(found) = api_key::Entity::find()
            .filter(api_key::Column::KeyHash.eq(hash_key(key)))
            .filter(api_key::Column::RevokedAt.is_null())
            .one(self.connection())
            .await?
        else {
            return Ok(None);
        };
        let now = to_micros(self.clock().now());
        if found
            .last_used_at
            .is_none_or(|t| now - t >= LAST_USED_RESOLUTION_MICROS)
        {
            // A failed refresh must not fail the request: last-used is informational.
            let _turn = self.write_turn().await.ok();
            let refresh = api_key::Entity::update_many()
                .col_expr(
                    api_key::Column::LastUsedAt,
                    sea_orm::sea_query::Expr::value(now),
                )
                .filter(api_key::Column::Id.eq(found.id.clone()))
                .exec(self.connection())
                .await;
            if let Err(error) = refresh {
                tracing::warn!(key_id = %found.id, %error, "could not record api key use");
            }
        }
        Ok(Some(Principal {
            org_id: found
                .org_id
                .parse()
                .map_err(|e| StoreError::Conflict(format!("corrupt id: {e}")))?,
            key_id: found
                .id
                .parse()
                .map_err(|e| StoreError::Conflict(format!("corrupt id: {e}")))?,
            role: found.role.parse().map_err(StoreError::Conflict)?,
        }))
    }
}

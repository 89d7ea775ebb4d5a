//! Journeys as data: each journey has one editable draft, guarded by a `revision` counter
//! (optimistic locking: a save names the revision it started from, and a stale one is
//! refused with the current revision), and numbered published versions that never change.
//! Rolling back publishes an earlier version's document again as a new version, so the
//! history only grows. Documents are validated by the caller (`wedsync-journeys`) before
//! they reach the store; the store keeps them as JSON.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, QueryResult, Statement, Value};
use serde::Serialize;
use wedsync_core::clock::{from_micros, to_micros};
use wedsync_core::id::{JourneyId, OrgId};
use wedsync_core::validate::ValidationErrors;

use crate::audit::{self, Change};
use crate::page::{Page, PageRequest, paginate};
use crate::{Actor, Store, StoreError, StoreResult};

fn stmt(backend: DbBackend, sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(backend, sql, values)
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Conflict(format!("stored journey data is unreadable: {e}"))
}

/// A journey as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Journey {
    /// `jny_…`.
    #[schema(value_type = String)]
    pub id: JourneyId,
    /// Its name.
    pub name: String,
    /// For people.
    pub description: String,
    /// The draft document (`{nodes, edges, viewport}`).
    pub draft: serde_json::Value,
    /// The draft's revision: send it back with a save; a stale one gets 409.
    pub revision: i32,
    /// The version new instances start on; none until the first publish.
    pub published_version: Option<i32>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// One published version.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct JourneyVersion {
    /// The version number, from 1.
    pub version: i32,
    /// The document as published.
    pub document: serde_json::Value,
    /// Why it was published (a rollback says which version it restores).
    pub note: Option<String>,
    /// Who published it.
    pub published_by: String,
    /// When.
    pub published_at: DateTime<Utc>,
}

fn to_journey(row: &QueryResult) -> StoreResult<Journey> {
    Ok(Journey {
        id: row
            .try_get::<String>("", "id")?
            .parse()
            .map_err(|e| corrupt(format!("{e:?}")))?,
        name: row.try_get("", "name")?,
        description: row.try_get("", "description")?,
        draft: serde_json::from_str(&row.try_get::<String>("", "draft")?).map_err(corrupt)?,
        revision: row.try_get("", "revision")?,
        published_version: row.try_get("", "published_version")?,
        created_at: from_micros(row.try_get("", "created_at")?),
        updated_at: from_micros(row.try_get("", "updated_at")?),
    })
}

fn to_version(row: &QueryResult) -> StoreResult<JourneyVersion> {
    Ok(JourneyVersion {
        version: row.try_get("", "version")?,
        document: serde_json::from_str(&row.try_get::<String>("", "document")?).map_err(corrupt)?,
        note: row.try_get("", "note")?,
        published_by: row.try_get("", "published_by")?,
        published_at: from_micros(row.try_get("", "published_at")?),
    })
}

fn check_name(errors: &mut ValidationErrors, name: &str) -> String {
    wedsync_core::validate::text(errors, "name", name, 200).unwrap_or_default()
}

/// What a stale save ran into.
pub fn stale(current: i32) -> StoreError {
    StoreError::Conflict(format!(
        "the journey changed since the revision you edited; the current revision is {current}: reload it and apply your change again"
    ))
}

impl Store {
    async fn journey_row<C: ConnectionTrait>(
        db: &C,
        org: &OrgId,
        id: &JourneyId,
    ) -> StoreResult<QueryResult> {
        db.query_one_raw(stmt(
            db.get_database_backend(),
            "SELECT * FROM journeys WHERE org_id = $1 AND id = $2",
            vec![org.to_string().into(), id.to_string().into()],
        ))
        .await?
        .ok_or(StoreError::NotFound)
    }

    /// Creates a journey with `draft` as its first draft (revision 1).
    pub async fn create_journey(
        &self,
        org: &OrgId,
        name: &str,
        description: &str,
        draft: &serde_json::Value,
        actor: &Actor,
    ) -> StoreResult<Journey> {
        let mut errors = ValidationErrors::default();
        let name = check_name(&mut errors, name);
        let description = wedsync_core::validate::optional_text(
            &mut errors,
            "description",
            Some(description),
            2000,
        )
        .unwrap_or_default();
        errors.into_result(())?;
        let now = self.clock().now();
        let id = JourneyId::new_at(now);
        let tx = self.write_tx().await?;
        tx.execute_raw(stmt(
            self.backend(),
            "INSERT INTO journeys (id, org_id, name, description, draft, revision, published_version, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 1, NULL, $6, $6)",
            vec![
                id.to_string().into(),
                org.to_string().into(),
                name.into(),
                description.into(),
                draft.to_string().into(),
                to_micros(now).into(),
            ],
        ))
        .await?;
        let journey = to_journey(&Self::journey_row(&tx, org, &id).await?)?;
        audit::append(
            &tx,
            org,
            now,
            Change {
                actor,
                action: "journey.create",
                target_type: "journey",
                target_id: id.to_string(),
                before: None,
                after: Some(serde_json::json!({ "name": journey.name, "revision": 1 })),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(journey)
    }

    /// One journey.
    pub async fn get_journey(&self, org: &OrgId, id: &JourneyId) -> StoreResult<Journey> {
        to_journey(&Self::journey_row(self.connection(), org, id).await?)
    }

    /// `org`'s journeys, oldest first.
    pub async fn list_journeys(
        &self,
        org: &OrgId,
        page: &PageRequest,
    ) -> StoreResult<Page<Journey>> {
        let limit = page.limit();
        let rows = self
            .connection()
            .query_all_raw(stmt(
                self.backend(),
                "SELECT * FROM journeys WHERE org_id = $1 AND id > $2 ORDER BY id LIMIT $3",
                vec![
                    org.to_string().into(),
                    page.after.clone().unwrap_or_default().into(),
                    i64::try_from(limit + 1).unwrap_or(i64::MAX).into(),
                ],
            ))
            .await?;
        let items = rows
            .iter()
            .map(to_journey)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(items, limit, |j| j.id.to_string()))
    }

    /// Saves the draft if it is still at `revision`; otherwise nothing changes and the
    /// error carries the current revision.
    pub async fn save_journey_draft(
        &self,
        org: &OrgId,
        id: &JourneyId,
        revision: i32,
        name: Option<&str>,
        draft: &serde_json::Value,
    ) -> StoreResult<Journey> {
        let mut errors = ValidationErrors::default();
        let name = name.map(|n| check_name(&mut errors, n));
        errors.into_result(())?;
        let now = self.clock().now();
        let tx = self.write_tx().await?;
        let done = tx
            .execute_raw(stmt(
                self.backend(),
                "UPDATE journeys SET draft = $1, name = COALESCE($2, name), revision = revision + 1, \
                 updated_at = $3 WHERE org_id = $4 AND id = $5 AND revision = $6",
                vec![
                    draft.to_string().into(),
                    name.into(),
                    to_micros(now).into(),
                    org.to_string().into(),
                    id.to_string().into(),
                    revision.into(),
                ],
            ))
            .await?;
        let row = Self::journey_row(&tx, org, id).await?;
        let journey = to_journey(&row)?;
        if done.rows_affected() == 0 {
            return Err(stale(journey.revision));
        }
        tx.commit().await?;
        Ok(journey)
    }

    /// Publishes the draft at `revision` (validated by the caller) as the next version,
    /// immutable, which new instances start on. Audited.
    pub async fn publish_journey(
        &self,
        org: &OrgId,
        id: &JourneyId,
        revision: i32,
        actor: &Actor,
    ) -> StoreResult<(Journey, JourneyVersion)> {
        let tx = self.write_tx().await?;
        let journey = to_journey(&Self::journey_row(&tx, org, id).await?)?;
        if journey.revision != revision {
            return Err(stale(journey.revision));
        }
        let document = journey.draft.clone();
        let note = format!("published from draft revision {revision}");
        self.add_version(tx, org, journey, &document, &note, actor, "journey.publish")
            .await
    }

    /// Makes `version`'s document live again, as a new version (and the draft), so the
    /// history keeps both. Audited.
    pub async fn rollback_journey(
        &self,
        org: &OrgId,
        id: &JourneyId,
        version: i32,
        actor: &Actor,
    ) -> StoreResult<(Journey, JourneyVersion)> {
        let tx = self.write_tx().await?;
        let journey = to_journey(&Self::journey_row(&tx, org, id).await?)?;
        let old = tx
            .query_one_raw(stmt(
                self.backend(),
                "SELECT * FROM journey_versions WHERE journey_id = $1 AND version = $2",
                vec![id.to_string().into(), version.into()],
            ))
            .await?
            .ok_or_else(|| {
                StoreError::Invalid(ValidationErrors::single(
                    "version",
                    format!("version {version} does not exist"),
                ))
            })?;
        let document = to_version(&old)?.document;
        let note = format!("rollback to version {version}");
        self.add_version(
            tx,
            org,
            journey,
            &document,
            &note,
            actor,
            "journey.rollback",
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn add_version(
        &self,
        tx: sea_orm::DatabaseTransaction,
        org: &OrgId,
        journey: Journey,
        document: &serde_json::Value,
        note: &str,
        actor: &Actor,
        action: &str,
    ) -> StoreResult<(Journey, JourneyVersion)> {
        let now = self.clock().now();
        let id = journey.id;
        let row = tx
            .query_one_raw(stmt(
                self.backend(),
                "SELECT COALESCE(MAX(version), 0) AS v FROM journey_versions WHERE journey_id = $1",
                vec![id.to_string().into()],
            ))
            .await?;
        let next: i32 = row
            .map(|r| r.try_get::<i32>("", "v"))
            .transpose()?
            .unwrap_or(0)
            + 1;
        tx.execute_raw(stmt(
            self.backend(),
            "INSERT INTO journey_versions (journey_id, version, org_id, document, note, published_by, published_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            vec![
                id.to_string().into(),
                next.into(),
                org.to_string().into(),
                document.to_string().into(),
                note.into(),
                actor.to_string().into(),
                to_micros(now).into(),
            ],
        ))
        .await?;
        // The draft follows what is live, and its revision moves so that an editor still
        // holding the old draft cannot overwrite it unawares.
        tx.execute_raw(stmt(
            self.backend(),
            "UPDATE journeys SET published_version = $1, draft = $2, revision = revision + 1, updated_at = $3 \
             WHERE id = $4",
            vec![
                next.into(),
                document.to_string().into(),
                to_micros(now).into(),
                id.to_string().into(),
            ],
        ))
        .await?;
        audit::append(
            &tx,
            org,
            now,
            Change {
                actor,
                action,
                target_type: "journey",
                target_id: id.to_string(),
                before: Some(serde_json::json!({ "published_version": journey.published_version })),
                after: Some(serde_json::json!({ "published_version": next, "note": note })),
            },
        )
        .await?;
        let journey = to_journey(&Self::journey_row(&tx, org, &id).await?)?;
        let version = tx
            .query_one_raw(stmt(
                self.backend(),
                "SELECT * FROM journey_versions WHERE journey_id = $1 AND version = $2",
                vec![id.to_string().into(), next.into()],
            ))
            .await?
            .ok_or(StoreError::NotFound)?;
        let version = to_version(&version)?;
        tx.commit().await?;
        Ok((journey, version))
    }

    /// A journey's published versions, newest first.
    pub async fn journey_versions(
        &self,
        org: &OrgId,
        id: &JourneyId,
    ) -> StoreResult<Vec<JourneyVersion>> {
        Self::journey_row(self.connection(), org, id).await?;
        let rows = self
            .connection()
            .query_all_raw(stmt(
                self.backend(),
                "SELECT * FROM journey_versions WHERE journey_id = $1 ORDER BY version DESC",
                vec![id.to_string().into()],
            ))
            .await?;
        rows.iter().map(to_version).collect()
    }

    /// One published version.
    pub async fn journey_version(
        &self,
        org: &OrgId,
        id: &JourneyId,
        version: i32,
    ) -> StoreResult<JourneyVersion> {
        Self::journey_row(self.connection(), org, id).await?;
        let row = self
            .connection()
            .query_one_raw(stmt(
                self.backend(),
                "SELECT * FROM journey_versions WHERE journey_id = $1 AND version = $2",
                vec![id.to_string().into(), version.into()],
            ))
            .await?
            .ok_or(StoreError::NotFound)?;
        to_version(&row)
    }
}

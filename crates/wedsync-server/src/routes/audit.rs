//! `/v1/audit-log`: the organisation's audit entries, newest first.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wedsync_core::org::Role;

use crate::AppState;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiQuery, Caller};

/// The routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit_log))
}

/// Paging backwards through the chain.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Entries per page, 1 to 100 (default 50).
    pub limit: Option<u64>,
    /// Return entries before this sequence number (the `next_before_seq` of the last page).
    pub before_seq: Option<i64>,
}

/// One audit entry.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditEntryView {
    /// `aud_…`.
    pub id: String,
    /// Position in the chain, from 1.
    pub seq: i64,
    /// When.
    pub at: chrono::DateTime<chrono::Utc>,
    /// Who: `api_key:key_…`, `cli:user` or `system`.
    pub actor: String,
    /// What, e.g. `couple.update.wedding_date`.
    pub action: String,
    /// Kind of object.
    pub target_type: String,
    /// Which object.
    pub target_id: String,
    /// The object before the change.
    pub before: Option<serde_json::Value>,
    /// The object after the change.
    pub after: Option<serde_json::Value>,
    /// This entry's chain hash.
    pub hash: String,
}

/// A page of audit entries.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    /// Entries, newest first.
    pub data: Vec<AuditEntryView>,
    /// Pass as `before_seq` for older entries; null at the start of the chain.
    pub next_before_seq: Option<i64>,
}

/// Lists audit entries (admins).
#[utoipa::path(get, path = "/v1/audit-log", tag = "audit", params(AuditQuery),
    responses((status = 200, body = AuditPage), (status = 403, body = Problem)))]
async fn list_audit_log(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    caller.require(Role::Admin)?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 100"));
    }
    let entries = state
        .store
        .audit_entries(&caller.0.org_id, q.before_seq, limit)
        .await?;
    let next_before_seq = entries
        .last()
        .filter(|e| e.seq > 1 && entries.len() as u64 == limit)
        .map(|e| e.seq);
    Ok(Json(AuditPage {
        data: entries
            .into_iter()
            .map(|e| AuditEntryView {
                id: e.id,
                seq: e.seq,
                at: e.at,
                actor: e.actor,
                action: e.action,
                target_type: e.target_type,
                target_id: e.target_id,
                before: e.before,
                after: e.after,
                hash: e.hash,
            })
            .collect(),
        next_before_seq,
    }))
}

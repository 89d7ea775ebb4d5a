//! The audit log: append-only and hash-chained per organisation.
//!
//! Entry `n` stores `hash_n = SHA-256(prev_hash ‖ fields of entry n)` with every field
//! length-prefixed, and `prev_hash = hash_{n-1}` (64 zeros for the first). `audit_heads`
//! keeps each chain's last sequence number and hash. [`verify`] recomputes every chain and
//! names the first entry that was edited, inserted or deleted, including a deleted tail
//! (the head then points past the last entry).
//!
//! Appends serialise per organisation: on PostgreSQL by locking the chain's head row
//! (`FOR UPDATE`), on SQLite by the write transaction itself (`BEGIN IMMEDIATE`).

use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use wedsync_core::clock::{from_micros, to_micros};
use wedsync_core::id::{AuditId, OrgId};

use crate::entity::{audit_entry, audit_head};
use crate::{Actor, Store, StoreError, StoreResult};

/// The `prev_hash` of the first entry in a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One change to record.
#[derive(Debug, Clone)]
pub struct Change<'a> {
    /// Who made it.
    pub actor: &'a Actor,
    /// What was done, `noun.verb`, e.g. `couple.update`.
    pub action: &'a str,
    /// The kind of object changed, e.g. `couple`.
    pub target_type: &'a str,
    /// Its id.
    pub target_id: String,
    /// The object before the change (`None` for a creation).
    pub before: Option<serde_json::Value>,
    /// The object after the change (`None` for a deletion).
    pub after: Option<serde_json::Value>,
}

/// An audit entry as the API and the CLI show it.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    /// `aud_…`.
    pub id: String,
    /// Position in the organisation's chain, from 1.
    pub seq: i64,
    /// When.
    pub at: chrono::DateTime<chrono::Utc>,
    /// Who: `api_key:key_…`, `cli:user` or `system`.
    pub actor: String,
    /// What.
    pub action: String,
    /// Kind of object.
    pub target_type: String,
    /// Which object.
    pub target_id: String,
    /// The object before.
    pub before: Option<serde_json::Value>,
    /// The object after.
    pub after: Option<serde_json::Value>,
    /// This entry's hash.
    pub hash: String,
}

impl From<audit_entry::Model> for AuditEntry {
    fn from(m: audit_entry::Model) -> Self {
        let parse = |t: Option<String>| t.and_then(|t| serde_json::from_str(&t).ok());
        Self {
            id: m.id,
            seq: m.seq,
            at: from_micros(m.at),
            actor: m.actor,
            action: m.action,
            target_type: m.target_type,
            target_id: m.target_id,
            before: parse(m.before),
            after: parse(m.after),
            hash: m.hash,
        }
    }
}

fn entry_hash(m: &audit_entry::Model) -> String {
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    field(b"wedsync-audit-v1");
    field(m.prev_hash.as_bytes());
    field(m.org_id.as_bytes());
    field(m.seq.to_string().as_bytes());
    field(m.id.as_bytes());
    field(m.at.to_string().as_bytes());
    field(m.actor.as_bytes());
    field(m.action.as_bytes());
    field(m.target_type.as_bytes());
    field(m.target_id.as_bytes());
    // A missing value and an empty one must hash differently.
    for value in [&m.before, &m.after] {
        match value {
            None => field(b"\x00none"),
            Some(text) => field(text.as_bytes()),
        }
    }
    hex::encode(h.finalize())
}

/// Creates an organisation's empty chain; called in the transaction that creates the org.
pub(crate) async fn start_chain(tx: &DatabaseTransaction, org: &OrgId) -> StoreResult<()> {
    audit_head::Entity::insert(audit_head::ActiveModel {
        org_id: Set(org.to_string()),
        seq: Set(0),
        hash: Set(GENESIS.to_owned()),
    })
    .exec(tx)
    .await?;
    Ok(())
}

/// Appends one entry to `org`'s chain inside the caller's transaction.
pub(crate) async fn append(
    tx: &DatabaseTransaction,
    org: &OrgId,
    at: chrono::DateTime<chrono::Utc>,
    change: Change<'_>,
) -> StoreResult<()> {
    let mut head_query = audit_head::Entity::find_by_id(org.to_string());
    if tx.get_database_backend() == DbBackend::Postgres {
        head_query = head_query.lock_exclusive();
    }
    let head = head_query
        .one(tx)
        .await?
        .ok_or_else(|| StoreError::Conflict(format!("organisation {org} has no audit chain")))?;
    let to_text = |v: Option<serde_json::Value>| v.map(|v| v.to_string());
    let mut entry = audit_entry::Model {
        org_id: org.to_string(),
        seq: head.seq + 1,
        id: AuditId::new_at(at).to_string(),
        at: to_micros(at),
        actor: change.actor.to_string(),
        action: change.action.to_owned(),
        target_type: change.target_type.to_owned(),
        target_id: change.target_id,
        before: to_text(change.before),
        after: to_text(change.after),
        prev_hash: head.hash,
        hash: String::new(),
    };
    entry.hash = entry_hash(&entry);
    let head_update = audit_head::ActiveModel {
        org_id: Set(entry.org_id.clone()),
        seq: Set(entry.seq),
        hash: Set(entry.hash.clone()),
    };
    audit_entry::Entity::insert(audit_entry::ActiveModel::from(entry))
        .exec(tx)
        .await?;
    audit_head::Entity::update(head_update).exec(tx).await?;
    Ok(())
}

/// The first problem found in a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainFault {
    /// The organisation whose chain is broken.
    pub org_id: String,
    /// The sequence number of the first bad position.
    pub seq: i64,
    /// The id of the entry found there, if there is one.
    pub entry_id: Option<String>,
    /// What is wrong, in words.
    pub problem: String,
}

/// The outcome of verifying every chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Chains checked.
    pub organizations: usize,
    /// Entries checked.
    pub entries: u64,
    /// The first fault in each broken chain; empty when all is well.
    pub faults: Vec<ChainFault>,
}

impl VerifyReport {
    /// Whether every chain verified.
    pub fn ok(&self) -> bool {
        self.faults.is_empty()
    }
}

const VERIFY_PAGE: u64 = 1000;

impl Store {
    /// Lists an organisation's audit entries, newest first, after an optional `before_seq`.
    pub async fn audit_entries(
        &self,
        org: &OrgId,
        before_seq: Option<i64>,
        limit: u64,
    ) -> StoreResult<Vec<AuditEntry>> {
        let mut q = audit_entry::Entity::find()
            .filter(audit_entry::Column::OrgId.eq(org.to_string()))
            .order_by_desc(audit_entry::Column::Seq)
            .limit(limit);
        if let Some(seq) = before_seq {
            q = q.filter(audit_entry::Column::Seq.lt(seq));
        }
        Ok(q.all(self.connection())
            .await?
            .into_iter()
            .map(AuditEntry::from)
            .collect())
    }

    /// Recomputes every organisation's chain and reports the first fault in each.
    pub async fn verify_audit(&self) -> StoreResult<VerifyReport> {
        let db = self.connection();
        let heads = audit_head::Entity::find()
            .order_by_asc(audit_head::Column::OrgId)
            .all(db)
            .await?;
        // Entries whose organisation has no head at all were inserted behind our back.
        let mut report = VerifyReport {
            organizations: heads.len(),
            entries: 0,
            faults: Vec::new(),
        };
        for head in heads {
            let mut expected_seq = 1i64;
            let mut prev_hash = GENESIS.to_owned();
            let mut fault = None;
            'pages: loop {
                let page = audit_entry::Entity::find()
                    .filter(audit_entry::Column::OrgId.eq(head.org_id.clone()))
                    .filter(audit_entry::Column::Seq.gte(expected_seq))
                    .order_by_asc(audit_entry::Column::Seq)
                    .limit(VERIFY_PAGE)
                    .all(db)
                    .await?;
                let done = (page.len() as u64) < VERIFY_PAGE;
                for entry in page {
                    report.entries += 1;
                    let problem = if entry.seq != expected_seq {
                        Some(format!(
                            "entry {expected_seq} is missing (deleted); the chain jumps to {}",
                            entry.seq
                        ))
                    } else if entry.prev_hash != prev_hash {
                        Some("does not link to the entry before it (an entry was inserted or replaced)".to_owned())
                    } else if entry_hash(&entry) != entry.hash {
                        Some("its contents do not match its hash (the entry was edited)".to_owned())
                    } else if entry.seq > head.seq {
                        Some(format!(
                            "it lies beyond the chain's recorded head ({}) (an entry was appended outside wedsync)",
                            head.seq
                        ))
                    } else {
                        None
                    };
                    if let Some(problem) = problem {
                        fault = Some(ChainFault {
                            org_id: head.org_id.clone(),
                            seq: expected_seq,
                            entry_id: Some(entry.id),
                            problem,
                        });
                        break 'pages;
                    }
                    prev_hash = entry.hash;
                    expected_seq += 1;
                }
                if done {
                    break;
                }
            }
            if fault.is_none() && (expected_seq - 1 != head.seq || prev_hash != head.hash) {
                fault = Some(ChainFault {
                    org_id: head.org_id.clone(),
                    seq: expected_seq,
                    entry_id: None,
                    problem: format!(
                        "the chain ends at entry {} but its head records entry {} (entries were deleted from the end)",
                        expected_seq - 1,
                        head.seq
                    ),
                });
            }
            report.faults.extend(fault);
        }
        // Entries for an organisation that has no chain head.
        let orphan = audit_entry::Entity::find()
            .filter(
                audit_entry::Column::OrgId.not_in_subquery(
                    sea_orm::sea_query::Query::select()
                        .column(audit_head::Column::OrgId)
                        .from(audit_head::Entity)
                        .to_owned(),
                ),
            )
            .order_by_asc(audit_entry::Column::OrgId)
            .order_by_asc(audit_entry::Column::Seq)
            .one(db)
            .await?;
        if let Some(entry) = orphan {
            report.faults.push(ChainFault {
                org_id: entry.org_id,
                seq: entry.seq,
                entry_id: Some(entry.id),
                problem: "the entry belongs to no audit chain (it was inserted outside wedsync)"
                    .into(),
            });
        }
        Ok(report)
    }
}

//! Circuit breakers per (organisation, target), in the database so every node sees the
//! same state. The decisions are `wedsync_core::breaker`'s; this module stores them.
//!
//! The common case, a closed breaker, costs one indexed read and no write.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};
use serde::Serialize;
use wedsync_core::breaker::{Admission, BreakerPolicy, BreakerState};
use wedsync_core::clock::{from_micros, to_micros};
use wedsync_core::id::OrgId;

use crate::{Store, StoreError, StoreResult};

/// A breaker as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Breaker {
    /// What it protects: an endpoint or provider id.
    pub target: String,
    /// Its state.
    #[serde(flatten)]
    pub state: BreakerState,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

pub(crate) fn row_state(r: &sea_orm::QueryResult) -> StoreResult<BreakerState> {
    let state: String = r.try_get("", "state")?;
    let at = |col: &str| -> StoreResult<DateTime<Utc>> {
        r.try_get::<Option<i64>>("", col)?
            .map(from_micros)
            .ok_or_else(|| StoreError::Conflict(format!("breaker row lacks {col}")))
    };
    Ok(match state.as_str() {
        "open" => BreakerState::Open {
            opened_at: at("opened_at")?,
            probe_at: at("probe_at")?,
        },
        "half_open" => BreakerState::HalfOpen {
            probe_started_at: at("probe_started_at")?,
        },
        _ => BreakerState::Closed {
            consecutive_failures: u32::try_from(r.try_get::<i32>("", "consecutive_failures")?)
                .unwrap_or(0),
        },
    })
}

fn state_values(state: &BreakerState) -> (String, i32, Option<i64>, Option<i64>, Option<i64>) {
    match *state {
        BreakerState::Closed {
            consecutive_failures,
        } => (
            "closed".into(),
            i32::try_from(consecutive_failures).unwrap_or(i32::MAX),
            None,
            None,
            None,
        ),
        BreakerState::Open {
            opened_at,
            probe_at,
        } => (
            "open".into(),
            0,
            Some(to_micros(opened_at)),
            Some(to_micros(probe_at)),
            None,
        ),
        BreakerState::HalfOpen { probe_started_at } => (
            "half_open".into(),
            0,
            None,
            None,
            Some(to_micros(probe_started_at)),
        ),
    }
}

impl Store {
    async fn breaker_read<C: ConnectionTrait>(
        db: &C,
        org: &OrgId,
        target: &str,
        lock: bool,
    ) -> StoreResult<Option<BreakerState>> {
        let lock = if lock && db.get_database_backend() == DbBackend::Postgres {
            " FOR UPDATE"
        } else {
            ""
        };
        let sql = format!("SELECT * FROM breakers WHERE org_id = $1 AND target = $2{lock}");
        let row = db
            .query_one_raw(Statement::from_sql_and_values(
                db.get_database_backend(),
                sql,
                vec![Value::from(org.to_string()), Value::from(target)],
            ))
            .await?;
        row.as_ref().map(row_state).transpose()
    }

    async fn breaker_write<C: ConnectionTrait>(
        db: &C,
        org: &OrgId,
        target: &str,
        state: &BreakerState,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let (name, failures, opened, probe, started) = state_values(state);
        let sql = "INSERT INTO breakers (org_id, target, state, consecutive_failures, opened_at, probe_at, probe_started_at, updated_at) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                   ON CONFLICT (org_id, target) DO UPDATE SET state = excluded.state, \
                   consecutive_failures = excluded.consecutive_failures, opened_at = excluded.opened_at, \
                   probe_at = excluded.probe_at, probe_started_at = excluded.probe_started_at, updated_at = excluded.updated_at";
        let values: Vec<Value> = vec![
            org.to_string().into(),
            target.into(),
            name.into(),
            failures.into(),
            opened.into(),
            probe.into(),
            started.into(),
            to_micros(now).into(),
        ];
        db.execute_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            sql,
            values,
        ))
        .await?;
        Ok(())
    }

    /// Asks `org`'s breaker for `target` whether a call may go ahead now.
    pub async fn breaker_admit(
        &self,
        org: &OrgId,
        target: &str,
        policy: &BreakerPolicy,
    ) -> StoreResult<Admission> {
        let now = self.clock().now();
        match Self::breaker_read(self.connection(), org, target, false).await? {
            None | Some(BreakerState::Closed { .. }) => return Ok(Admission::Allow),
            Some(_) => {}
        }
        // Open or half-open: decide under a lock, so exactly one node takes the probe.
        let tx = self.write_tx().await?;
        let state = Self::breaker_read(&tx, org, target, true)
            .await?
            .unwrap_or(BreakerState::CLOSED);
        let (admission, next) = policy.admit(&state, now);
        if let Some(next) = next {
            Self::breaker_write(&tx, org, target, &next, now).await?;
            tracing::info!(%org, target, from = state.name(), to = next.name(), "circuit breaker changed");
        }
        tx.commit().await?;
        Ok(admission)
    }

    /// Records the outcome of a call to `target`; returns the breaker's state afterwards.
    pub async fn breaker_record(
        &self,
        org: &OrgId,
        target: &str,
        policy: &BreakerPolicy,
        success: bool,
    ) -> StoreResult<BreakerState> {
        let now = self.clock().now();
        let current = Self::breaker_read(self.connection(), org, target, false).await?;
        if success
            && matches!(
                current,
                None | Some(BreakerState::Closed {
                    consecutive_failures: 0
                })
            )
        {
            return Ok(BreakerState::CLOSED);
        }
        let tx = self.write_tx().await?;
        let state = Self::breaker_read(&tx, org, target, true)
            .await?
            .unwrap_or(BreakerState::CLOSED);
        let next = if success {
            policy.on_success(&state)
        } else {
            policy.on_failure(&state, now)
        };
        if next != state {
            Self::breaker_write(&tx, org, target, &next, now).await?;
            if next.name() != state.name() {
                tracing::warn!(%org, target, from = state.name(), to = next.name(), "circuit breaker changed");
            }
        }
        tx.commit().await?;
        Ok(next)
    }

    /// `org`'s breakers.
    pub async fn list_breakers(&self, org: &OrgId) -> StoreResult<Vec<Breaker>> {
        let rows = self
            .connection()
            .query_all_raw(Statement::from_sql_and_values(
                self.backend(),
                "SELECT * FROM breakers WHERE org_id = $1 ORDER BY target",
                vec![Value::from(org.to_string())],
            ))
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Breaker {
                    target: r.try_get("", "target")?,
                    state: row_state(r)?,
                    updated_at: from_micros(r.try_get("", "updated_at")?),
                })
            })
            .collect()
    }

    /// How many breakers are in each state, across organisations (for metrics).
    pub async fn breaker_counts(&self) -> StoreResult<Vec<(String, i64)>> {
        let rows = self
            .connection()
            .query_all_raw(Statement::from_string(
                self.backend(),
                "SELECT state, COUNT(*) AS n FROM breakers GROUP BY state",
            ))
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("", "state")?, r.try_get("", "n")?)))
            .collect()
    }
}

//! Database-backed token buckets, for limits that must hold across every node (e.g. an
//! organisation's sends per channel). Each take is one short write transaction; hot paths
//! that can live with a per-node limit use `wedsync_core::ratelimit::KeyedLimiter` instead.

use chrono::TimeDelta;
use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};
use wedsync_core::clock::{from_micros, to_micros};
use wedsync_core::ratelimit::{Rate, TokenBucket};

use crate::{Store, StoreResult};

impl Store {
    /// Takes `n` tokens from the shared bucket `key`, or says how long to wait.
    pub async fn rate_take(
        &self,
        key: &str,
        rate: &Rate,
        n: u32,
    ) -> StoreResult<Result<(), TimeDelta>> {
        let now = self.clock().now();
        let backend = self.backend();
        let tx = self.write_tx().await?;
        let full = TokenBucket::full(rate, now);
        tx.execute_raw(Statement::from_sql_and_values(
            backend,
            "INSERT INTO rate_buckets (key, empty_at) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            vec![Value::from(key), to_micros(full.empty_at).into()],
        ))
        .await?;
        let lock = if backend == DbBackend::Postgres {
            " FOR UPDATE"
        } else {
            ""
        };
        let row = tx
            .query_one_raw(Statement::from_sql_and_values(
                backend,
                format!("SELECT empty_at FROM rate_buckets WHERE key = $1{lock}"),
                vec![Value::from(key)],
            ))
            .await?;
        let mut bucket = match row {
            Some(r) => TokenBucket {
                empty_at: from_micros(r.try_get("", "empty_at")?),
            },
            None => full,
        };
        let outcome = bucket.take(rate, now, n);
        if outcome.is_ok() {
            tx.execute_raw(Statement::from_sql_and_values(
                backend,
                "UPDATE rate_buckets SET empty_at = $1 WHERE key = $2",
                vec![to_micros(bucket.empty_at).into(), Value::from(key)],
            ))
            .await?;
        }
        tx.commit().await?;
        Ok(outcome)
    }
}

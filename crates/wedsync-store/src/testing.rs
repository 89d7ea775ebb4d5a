//! Test support: a fresh, migrated database per test, on whichever backend the run targets.
//!
//! Without `WEDSYNC_TEST_DATABASE_URL` each test gets its own SQLite file in a temporary
//! folder. With it (a fresh database made for this run, as `.ci/run` does), each test gets
//! its own PostgreSQL schema inside that database, so tests run in parallel without seeing
//! each other's rows and the whole run is dropped at once afterwards.

use sea_orm::{ConnectionTrait, Database};
use wedsync_core::clock::SharedClock;

use crate::{Store, StoreOptions, StoreResult};

/// Keeps a test database alive; the SQLite folder is deleted when it drops.
#[derive(Debug)]
pub struct TestDb {
    /// The options that reach this test's database.
    pub options: StoreOptions,
    /// The URL of this test's database, for handing to a child process; on PostgreSQL the
    /// schema is selected with the `options` parameter.
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

/// The PostgreSQL URL for this run, if the run targets PostgreSQL.
pub fn postgres_url() -> Option<String> {
    std::env::var("WEDSYNC_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// The backend under test, for messages: `sqlite` or `postgres`.
pub fn backend_name() -> &'static str {
    if postgres_url().is_some() {
        "postgres"
    } else {
        "sqlite"
    }
}

/// A fresh, empty database (not migrated).
pub async fn fresh_db() -> StoreResult<TestDb> {
    match postgres_url() {
        Some(url) => {
            let schema = format!("t_{}", uuid::Uuid::now_v7().simple());
            let admin = Database::connect(url.as_str()).await?;
            admin
                .execute_unprepared(&format!("CREATE SCHEMA \"{schema}\""))
                .await?;
            admin.close().await?;
            let mut options = StoreOptions::new(url.clone());
            options.max_connections = 5;
            options.pg_schema = Some(schema.clone());
            let sep = if url.contains('?') { '&' } else { '?' };
            let child_url = format!("{url}{sep}options=-c%20search_path%3D{schema}");
            Ok(TestDb {
                options,
                url: child_url,
                _dir: None,
            })
        }
        None => {
            let dir = tempfile::tempdir().map_err(|e| crate::StoreError::Config(e.to_string()))?;
            let url = StoreOptions::sqlite_in(dir.path());
            let mut options = StoreOptions::new(url.clone());
            options.max_connections = 5;
            Ok(TestDb {
                options,
                url,
                _dir: Some(dir),
            })
        }
    }
}

/// A fresh, migrated store using `clock`, sealing secrets with a fresh master key.
pub async fn migrated_store(clock: SharedClock) -> StoreResult<(Store, TestDb)> {
    let db = fresh_db().await?;
    let store = Store::connect(&db.options, clock)
        .await?
        .with_master_key(crate::secrets::MasterKey::generate());
    store.migrate().await?;
    Ok((store, db))
}

/// Runs a raw statement, for tests that play an attacker with a SQL shell.
pub async fn execute_raw(store: &Store, sql: &str) -> StoreResult<u64> {
    Ok(store
        .connection()
        .execute_unprepared(sql)
        .await?
        .rows_affected())
}

/// Runs a raw query whose first row has an integer column `n` (a `COUNT(*) AS n`), for tests
/// that check what is stored.
pub async fn query_i64(store: &Store, sql: &str) -> StoreResult<i64> {
    let row = store
        .connection()
        .query_one_raw(sea_orm::Statement::from_string(store.backend(), sql))
        .await?
        .ok_or(crate::StoreError::NotFound)?;
    Ok(row.try_get::<i64>("", "n")?)
}

/// Disables the audit log's append-only triggers, as someone with DDL rights could.
pub async fn drop_audit_guards(store: &Store) -> StoreResult<()> {
    match store.backend() {
        sea_orm::DbBackend::Sqlite => {
            execute_raw(store, "DROP TRIGGER audit_log_no_update").await?;
            execute_raw(store, "DROP TRIGGER audit_log_no_delete").await?;
        }
        _ => {
            execute_raw(store, "DROP TRIGGER audit_log_no_change ON audit_log").await?;
        }
    }
    Ok(())
}

/// SQLite: `PRAGMA synchronous` on the main pool, on the relaxed pool that job claims and
/// outcomes use, and on the writer connection that stores inbound batches (2 is FULL, 1 is
/// NORMAL). `None` on PostgreSQL ([`pg_synchronous_commit`]).
pub async fn sqlite_synchronous(store: &Store) -> StoreResult<Option<(i64, i64, i64)>> {
    if store.backend() != sea_orm::DbBackend::Sqlite {
        return Ok(None);
    }
    let relaxed = store.relaxed_connection();
    let read = |db: &sea_orm::DatabaseConnection| {
        let db = db.clone();
        async move {
            let row = db
                .query_one_raw(sea_orm::Statement::from_string(
                    sea_orm::DbBackend::Sqlite,
                    "PRAGMA synchronous",
                ))
                .await?
                .ok_or(crate::StoreError::NotFound)?;
            Ok::<i64, crate::StoreError>(row.try_get_by_index::<i64>(0)?)
        }
    };
    Ok(Some((
        read(store.connection()).await?,
        read(relaxed).await?,
        read(store.writer_connection()).await?,
    )))
}

/// SQLite: the rows the writer connection ([`Store::sqlite_write_once`]'s) has inserted,
/// updated or deleted since it was opened (`total_changes()`). `None` on PostgreSQL.
pub async fn sqlite_writer_changes(store: &Store) -> StoreResult<Option<i64>> {
    if store.backend() != sea_orm::DbBackend::Sqlite {
        return Ok(None);
    }
    let row = store
        .writer_connection()
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Sqlite,
            "SELECT total_changes()",
        ))
        .await?
        .ok_or(crate::StoreError::NotFound)?;
    Ok(Some(row.try_get_by_index::<i64>(0)?))
}

/// A source of `provider` for `org`, signing with `secret`, with default settings (100
/// requests a minute, 300 s tolerance, no allow-list).
pub async fn source(
    store: &Store,
    org: &wedsync_core::id::OrgId,
    provider: wedsync_core::source::Provider,
    secret: &str,
) -> StoreResult<crate::sources::Source> {
    let new = crate::sources::NewSource::parse(
        "Test source",
        provider,
        crate::sources::SourceConfig {
            generic: None,
            ip_allowlist: vec![],
            rate_per_minute: 100,
            tolerance_seconds: 300,
        },
        Some(secret.to_owned()),
    )?;
    Ok(store
        .create_source(org, new, &crate::Actor::System)
        .await?
        .0)
}

/// PostgreSQL: `synchronous_commit` on the main pool and on the relaxed pool. `None` on
/// SQLite.
pub async fn pg_synchronous_commit(store: &Store) -> StoreResult<Option<(String, String)>> {
    pg_on_both_pools(store, "SELECT current_setting('synchronous_commit') AS v").await
}

/// PostgreSQL: whether this session of the main pool and one of the relaxed pool run over
/// TLS (`pg_stat_ssl`). `None` on SQLite.
pub async fn pg_session_tls(store: &Store) -> StoreResult<Option<(bool, bool)>> {
    pg_on_both_pools(
        store,
        "SELECT ssl AS v FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .await
}

/// PostgreSQL: column `v` of `sql`'s one row, read in a session of each pool.
async fn pg_on_both_pools<T: sea_orm::TryGetable>(
    store: &Store,
    sql: &str,
) -> StoreResult<Option<(T, T)>> {
    if store.backend() != sea_orm::DbBackend::Postgres {
        return Ok(None);
    }
    let mut values = Vec::with_capacity(2);
    for db in [store.connection(), store.relaxed_connection()] {
        let row = db
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                sql,
            ))
            .await?
            .ok_or(crate::StoreError::NotFound)?;
        values.push(row.try_get::<T>("", "v")?);
    }
    let relaxed = values.pop().ok_or(crate::StoreError::NotFound)?;
    let main = values.pop().ok_or(crate::StoreError::NotFound)?;
    Ok(Some((main, relaxed)))
}

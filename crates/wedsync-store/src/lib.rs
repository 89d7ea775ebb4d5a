//! WedSync persistence: one code path for embedded SQLite and PostgreSQL.
//!
//! Module map:
//! - [`Store`] (here): connecting, migrating, schema checks, transactions.
//! - [`migration`]: the one migration set both backends run.
//! - [`entity`]: SeaORM entities, one per table.
//! - [`orgs`], [`api_keys`], [`members`]: organisations and access.
//! - [`couples`], [`bookings`]: the records the product revolves around.
//! - [`audit`]: the hash-chained, append-only audit log and its verifier.
//! - [`outbox`]: domain events written in the same transaction as the change causing them.
//! - [`page`]: cursor paging shared by every list.
//! - [`queue`]: the durable job queue (enqueue in the caller's transaction, claims, leases).
//! - [`worker`]: worker pools that run queued jobs with heartbeats, retries and breakers.
//! - [`breakers`]: circuit breakers per (organisation, target), shared by all nodes.
//! - [`rate_limits`]: database-backed token buckets, for limits that hold across nodes.
//! - [`secrets`]: the master key that seals stored secrets (AES-256-GCM).
//! - [`sources`]: inbound sources and their sealed signing secrets.
//! - [`inbound`]: storing verified requests and their canonical events, deduplicated.
//! - [`webhooks`]: outbound endpoints, messages, deliveries and attempts.
//! - [`journeys`]: journey drafts (optimistic locking) and immutable published versions.
//! - [`notify`]: notification providers, templates, settings, preferences, alerts, and
//!   notifications with their history and quota claims.
//!
//! Invariants: only this crate writes SQL; every query on organisation data filters by
//! `org_id`; every change is written together with its audit entry and its outbox event in
//! one transaction, so either all three exist or none does.

pub mod api_keys;
pub mod audit;
pub mod bookings;
pub mod breakers;
pub mod couples;
pub mod crm;
pub mod entity;
mod error;
pub mod group_commit;
pub mod inbound;
pub mod journeys;
pub mod members;
pub mod migration;
pub mod notify;
pub mod orgs;
pub mod outbox;
pub mod page;
pub mod queue;
pub mod rate_limits;
pub mod secrets;
pub mod sources;
mod sql;
pub mod webhooks;
pub mod worker;

use std::path::Path;
use std::time::Duration;

use sea_orm::sqlx::postgres::PgSslMode;
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;
use wedsync_core::clock::SharedClock;

pub use error::{StoreError, StoreResult};
pub use migration::Migrator;
/// The database backend in use (SQLite or PostgreSQL).
pub use sea_orm::DbBackend as Backend;

/// Who made a change, as recorded in the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A request authenticated with this API key.
    ApiKey(wedsync_core::id::ApiKeyId),
    /// An operator at the command line; the string is the OS user when known.
    Cli(String),
    /// The hub itself (background work).
    System,
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Actor::ApiKey(id) => write!(f, "api_key:{id}"),
            Actor::Cli(user) => write!(f, "cli:{user}"),
            Actor::System => f.write_str("system"),
        }
    }
}

/// Prepared statements kept per connection. Group commits write a batch with one multi-row
/// statement whose text depends on the batch's size, so a busy node cycles through a few
/// hundred texts; sqlx's default of 100 would evict and re-prepare them all the time.
const STATEMENT_CACHE: usize = 1024;

/// Rows a SQLite connection's thread may hand back before it waits for the caller to take
/// them. A group commit's `RETURNING` gives a row per request (up to 256); with sqlx's
/// default of 50 the thread would stop several times a batch, inside the write gate, until
/// the committer task was scheduled to drain the channel.
const ROW_BUFFER: usize = 1024;

/// Connection settings.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// `sqlite://…` or `postgres://…`.
    pub url: String,
    /// Upper bound on pooled connections.
    pub max_connections: u32,
    /// How long a statement waits for a locked SQLite database before failing.
    pub busy_timeout: Duration,
    /// How long to wait for a pooled connection.
    pub acquire_timeout: Duration,
    /// PostgreSQL only: the schema to use instead of `public` (tests isolate themselves this
    /// way inside one fresh database).
    pub pg_schema: Option<String>,
}

impl StoreOptions {
    /// Options for `url` with the defaults.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 10,
            busy_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_secs(10),
            pg_schema: None,
        }
    }

    /// The URL of the embedded database in `data_dir`.
    pub fn sqlite_in(data_dir: &Path) -> String {
        format!("sqlite://{}", data_dir.join("wedsync.db").display())
    }
}

/// Where the schema stands relative to this binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaStatus {
    /// Every known migration is applied and there are no unknown ones.
    Current,
    /// Some migrations are pending.
    Behind(Vec<String>),
    /// The database has migrations this binary does not know.
    TooNew(Vec<String>),
}

/// The database, with the clock every write stamps its rows with.
#[derive(Debug, Clone)]
pub struct Store {
    db: DatabaseConnection,
    /// SQLite only: one write transaction at a time in this process ([`Store::write_tx`]).
    write_gate: Option<std::sync::Arc<tokio::sync::Semaphore>>,
    /// Connections whose commits do not wait for the disk ([`Store::relaxed_connection`]);
    /// `None` for an in-memory SQLite database.
    relaxed: Option<DatabaseConnection>,
    /// SQLite file only: the one connection [`Store::sqlite_write_once`] writes on (`None`:
    /// the main pool).
    writer: Option<DatabaseConnection>,
    clock: SharedClock,
    /// Wakes this process's idle workers after an enqueue commits (PostgreSQL nodes are also
    /// woken by `NOTIFY`; SQLite has only this).
    wake: std::sync::Arc<tokio::sync::Notify>,
    /// Counts [`Store::wake_workers`] calls, so a busy pool can tell whether anything was
    /// enqueued since it last looked ([`Store::wake_epoch`]).
    wake_epoch: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// This process's worker pools that take jobs handed over directly
    /// ([`worker::LocalTakers`]).
    local_takers: worker::LocalTakers,
    /// Seals and opens stored secrets; set by the binary from configuration.
    master_key: Option<std::sync::Arc<secrets::MasterKey>>,
}

impl Store {
    /// Connects (creating the SQLite file and its folder if needed) without migrating.
    pub async fn connect(options: &StoreOptions, clock: SharedClock) -> StoreResult<Self> {
        let url = options.url.as_str();
        // TLS to a server on this machine protects nothing and cost a fifth to a third of
        // a busy node's database throughput (BENCHMARKS.md), so a loopback or socket URL
        // that sets nothing about TLS connects without it (the LISTEN connection too, which
        // is taken from the main pool). `map_sqlx_postgres_opts` holds one function: each
        // pool sets it once, below, with everything it needs.
        let plaintext_loopback =
            plaintext_on_loopback(url, TLS_ENV.iter().any(|v| std::env::var_os(v).is_some()));
        let mut opts = ConnectOptions::new(url);
        opts.max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .sqlx_logging(false);
        if url.starts_with("sqlite:") {
            let busy = options.busy_timeout;
            // Parse the URL ourselves so the file and its folder can be created on first run.
            let parsed: SqliteConnectOptions = url
                .parse()
                .map_err(|e| StoreError::Config(format!("database_url: {e}")))?;
            let path = parsed.get_filename().to_owned();
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Config(format!("cannot create data dir {}: {e}", dir.display()))
                })?;
            }
            // WAL lets readers proceed while one writer commits. FULL synchronous syncs the
            // WAL on every commit, so an acknowledged write survives power loss, not only a
            // process crash (NORMAL would risk the last commits). Foreign keys are off by
            // default in SQLite and must be switched on per connection.
            opts.map_sqlx_sqlite_opts(move |o| {
                o.create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .foreign_keys(true)
                    .busy_timeout(busy)
                    .statement_cache_capacity(STATEMENT_CACHE)
                    .row_buffer_size(ROW_BUFFER)
            });
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            if let Some(schema) = &options.pg_schema {
                opts.set_schema_search_path(schema.clone());
            }
            if plaintext_loopback {
                opts.map_sqlx_postgres_opts(|o| o.ssl_mode(PgSslMode::Disable));
            }
        } else {
            return Err(StoreError::Config(
                "database_url: must start with sqlite:// or postgres://".into(),
            ));
        }
        let db = Database::connect(opts).await?;
        // SQLite: a second, small pool whose commits append to the WAL without syncing it
        // (`synchronous = NORMAL`), for writes whose loss at a power cut only means work
        // runs again (job claims and outcomes, see `queue::relaxed_query`). A later commit on the
        // main pool syncs the WAL, and with it every relaxed commit before it, so nothing
        // durable ever depends on a relaxed write that was lost. A process crash loses
        // neither kind.
        // An in-memory database is private to its connection: a second pool would be a
        // second, empty database, so there the main pool does everything.
        // PostgreSQL: likewise a small pool whose sessions run with
        // `synchronous_commit = off`, so such a write is one autocommitted statement rather
        // than BEGIN, SET LOCAL, the statement and COMMIT (four round trips, each costing
        // the server CPU the writes compete for). A later synchronous commit flushes the
        // WAL, and these commits with it.
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let sqlite = db.get_database_backend() == DbBackend::Sqlite;
        // An extra SQLite pool on the same file: `connections` of them, committing with
        // `synchronous`. Their statement journals (a multi-row insert that may abort midway
        // needs one) stay in memory: past 64 KiB SQLite spills them to a temporary file,
        // and a group commit's batch paid an open, writes, a close and an unlink for it.
        let sqlite_pool = |connections: u32, synchronous: SqliteSynchronous| {
            let busy = options.busy_timeout;
            let mut pool = ConnectOptions::new(url);
            pool.max_connections(connections)
                .acquire_timeout(options.acquire_timeout)
                // A local file's connection cannot drop: no ping before each use, which
                // would be one more round trip to its thread inside the write turn.
                .test_before_acquire(false)
                .sqlx_logging(false)
                .map_sqlx_sqlite_opts(move |o| {
                    o.journal_mode(SqliteJournalMode::Wal)
                        .synchronous(synchronous)
                        .foreign_keys(true)
                        .busy_timeout(busy)
                        .statement_cache_capacity(STATEMENT_CACHE)
                        .row_buffer_size(ROW_BUFFER)
                        .pragma("temp_store", "memory")
                });
            Database::connect(pool)
        };
        // SQLite: the group-committed batches always go to the same connection. A
        // connection that finds the database changed by another since its last
        // transaction starts the next with an empty page cache, and the statement cache
        // is per connection: rotating through the pool paid both on every batch.
        let writer = if sqlite && !in_memory {
            Some(sqlite_pool(1, SqliteSynchronous::Full).await?)
        } else {
            None
        };
        let relaxed = if !sqlite {
            let mut relaxed = ConnectOptions::new(url);
            relaxed
                .max_connections((options.max_connections / 2).max(2))
                .acquire_timeout(options.acquire_timeout)
                .sqlx_logging(false)
                .map_sqlx_postgres_opts(move |o| {
                    let o = o.options([("synchronous_commit", "off")]);
                    if plaintext_loopback {
                        o.ssl_mode(PgSslMode::Disable)
                    } else {
                        o
                    }
                });
            if let Some(schema) = &options.pg_schema {
                relaxed.set_schema_search_path(schema.clone());
            }
            Some(Database::connect(relaxed).await?)
        } else if !in_memory {
            Some(sqlite_pool(2, SqliteSynchronous::Normal).await?)
        } else {
            None
        };
        Ok(Self {
            write_gate: sqlite.then(|| std::sync::Arc::new(tokio::sync::Semaphore::new(1))),
            db,
            relaxed,
            writer,
            clock,
            wake: Default::default(),
            wake_epoch: Default::default(),
            local_takers: Default::default(),
            master_key: None,
        })
    }

    /// The pool whose commits do not wait for the disk (`synchronous = NORMAL` on SQLite,
    /// `synchronous_commit = off` on PostgreSQL; the main pool for an in-memory SQLite
    /// database), for single statements that commit by themselves and whose loss at a power
    /// cut only means work runs again.
    pub(crate) fn relaxed_connection(&self) -> &DatabaseConnection {
        self.relaxed.as_ref().unwrap_or(&self.db)
    }

    /// SQLite: the pool of one connection that [`Store::sqlite_write_once`] writes on (the
    /// main pool for an in-memory database).
    pub(crate) fn writer_connection(&self) -> &DatabaseConnection {
        self.writer.as_ref().unwrap_or(&self.db)
    }

    /// The underlying connection, for crates that add their own tables later.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The clock this store stamps rows with.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// Which backend this is.
    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// Where the schema stands. Never creates or changes anything.
    pub async fn schema_status(&self) -> StoreResult<SchemaStatus> {
        let known: Vec<String> = Migrator::migrations()
            .iter()
            .map(|m| m.name().to_owned())
            .collect();
        let applied = self.applied_migrations().await?;
        let unknown: Vec<String> = applied
            .iter()
            .filter(|a| !known.contains(a))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            return Ok(SchemaStatus::TooNew(unknown));
        }
        let pending: Vec<String> = known.into_iter().filter(|k| !applied.contains(k)).collect();
        if pending.is_empty() {
            Ok(SchemaStatus::Current)
        } else {
            Ok(SchemaStatus::Behind(pending))
        }
    }

    async fn applied_migrations(&self) -> StoreResult<Vec<String>> {
        let exists_sql = match self.backend() {
            DbBackend::Sqlite => {
                "SELECT 1 AS one FROM sqlite_master WHERE type = 'table' AND name = 'seaql_migrations'"
            }
            _ => {
                "SELECT 1 AS one FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = 'seaql_migrations'"
            }
        };
        let exists = self
            .db
            .query_one_raw(sea_orm::Statement::from_string(self.backend(), exists_sql))
            .await?
            .is_some();
        if !exists {
            return Ok(Vec::new());
        }
        let rows = self
            .db
            .query_all_raw(sea_orm::Statement::from_string(
                self.backend(),
                "SELECT version FROM seaql_migrations ORDER BY version",
            ))
            .await?;
        rows.iter()
            .map(|r| r.try_get::<String>("", "version").map_err(StoreError::from))
            .collect()
    }

    /// Applies pending migrations, refusing a schema newer than this binary.
    pub async fn migrate(&self) -> StoreResult<Vec<String>> {
        match self.schema_status().await? {
            SchemaStatus::TooNew(unknown) => Err(StoreError::SchemaTooNew { unknown }),
            SchemaStatus::Current => Ok(Vec::new()),
            SchemaStatus::Behind(pending) => {
                Migrator::up(&self.db, None).await?;
                tracing::info!(applied = ?pending, "database migrated");
                Ok(pending)
            }
        }
    }

    /// Fails unless the schema is exactly what this binary expects.
    pub async fn ensure_schema_current(&self) -> StoreResult<()> {
        match self.schema_status().await? {
            SchemaStatus::Current => Ok(()),
            SchemaStatus::Behind(pending) => Err(StoreError::SchemaBehind { pending }),
            SchemaStatus::TooNew(unknown) => Err(StoreError::SchemaTooNew { unknown }),
        }
    }

    /// A cheap round trip, for readiness checks.
    pub async fn ping(&self) -> StoreResult<()> {
        self.db.ping().await.map_err(StoreError::from)
    }

    /// Pool figures for metrics, one entry per pool: `main`, then `relaxed` and `writer`
    /// where there are ([`Store::relaxed_connection`], [`Store::writer_connection`]), each
    /// with its open and idle connections.
    pub fn pool_stats(&self) -> Vec<(&'static str, u32, usize)> {
        let stats = |db: &DatabaseConnection| match db.get_database_backend() {
            DbBackend::Sqlite => {
                let pool = db.get_sqlite_connection_pool();
                (pool.size(), pool.num_idle())
            }
            _ => {
                let pool = db.get_postgres_connection_pool();
                (pool.size(), pool.num_idle())
            }
        };
        let mut all = Vec::with_capacity(3);
        for (name, db) in [
            ("main", Some(&self.db)),
            ("relaxed", self.relaxed.as_ref()),
            ("writer", self.writer.as_ref()),
        ] {
            if let Some(db) = db {
                let (open, idle) = stats(db);
                all.push((name, open, idle));
            }
        }
        all
    }

    /// Begins a write transaction. On SQLite it is `BEGIN IMMEDIATE`, taking the write lock
    /// up front: a deferred transaction that reads and then writes can fail with
    /// `SQLITE_BUSY` when another writer got there first, and the busy timeout cannot help.
    pub(crate) async fn write_tx(&self) -> StoreResult<WriteTx> {
        // SQLite has one writer: wait for this process's gate (in turn, without a connection
        // held) rather than in SQLite's busy handler, which sleeps up to 100 ms at a time.
        let gate = self.write_turn().await?;
        let options = TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..Default::default()
        };
        Ok(WriteTx {
            tx: self.db.begin_with_options(options).await?,
            _gate: gate,
        })
    }

    /// SQLite: runs `statements` (SQL with `$N` placeholders, and values) as one durable
    /// transaction in a single hand-off to a connection's thread: `BEGIN IMMEDIATE`, the
    /// statements and `COMMIT` go as one text, joined and bound before the write turn is
    /// taken, so the turn holds SQLite's own work and the disk sync, not three round trips
    /// to the thread and the binding. Returns the rows the statements produce, in order.
    ///
    /// It runs on the store's writer connection ([`Store::writer_connection`]). Should
    /// anything fail, the transaction is rolled back before the write turn is released, and
    /// the connection is closed instead of going back to the pool; should the caller be
    /// cancelled midway, it is closed too, which rolls back whatever ran. So nothing of the
    /// batch is kept and no pooled connection is left inside a transaction.
    pub(crate) async fn sqlite_write_once(
        &self,
        statements: Vec<(String, Vec<sea_orm::Value>)>,
    ) -> StoreResult<Vec<sea_orm::QueryResult>> {
        use sea_orm::sqlx::IntoArguments;
        let (text, values) = sql::joined(statements)?;
        if text.is_empty() {
            return Ok(Vec::new());
        }
        let text = format!("BEGIN IMMEDIATE;\n{text};\nCOMMIT");
        let arguments =
            <sea_query_sqlx::SqlxValues as IntoArguments<sea_orm::sqlx::Sqlite>>::into_arguments(
                sea_query_sqlx::SqlxValues(sea_orm::sea_query::Values(values)),
            );
        let sqlx_err = |e: sea_orm::sqlx::Error| {
            StoreError::from(sea_orm::DbErr::Query(sea_orm::RuntimeErr::SqlxError(
                std::sync::Arc::new(e),
            )))
        };
        let _turn = self.write_turn().await?;
        let mut connection = Abandoned(Some(
            self.writer_connection()
                .get_sqlite_connection_pool()
                .acquire()
                .await
                .map_err(sqlx_err)?,
        ));
        let Some(c) = connection.0.as_mut() else {
            return Ok(Vec::new());
        };
        let outcome = sea_orm::sqlx::query_with(sea_orm::sqlx::AssertSqlSafe(text), arguments)
            .fetch_all(&mut **c)
            .await;
        match outcome {
            Ok(rows) => {
                // Committed: the connection goes back to the pool.
                connection.0.take();
                Ok(rows.into_iter().map(sea_orm::QueryResult::from).collect())
            }
            Err(error) => {
                // Rolled back here, before the write turn is released: closing the
                // connection (below, in the background) would release SQLite's write lock
                // only later, and the next writer would wait for it in the busy handler.
                // An in-memory database lives only as long as its connection, which is
                // kept; a file's is closed all the same, in case the rollback did not run.
                // (The rollback's error, when no transaction was open, says nothing that
                // matters.)
                let _ = sea_orm::sqlx::query("ROLLBACK").execute(&mut **c).await;
                if self.writer.is_none() {
                    connection.0.take();
                }
                Err(sqlx_err(error))
            }
        }
    }

    /// SQLite: waits for this process's write gate, for a write outside [`Store::write_tx`]
    /// (a single statement that commits by itself). `None` on PostgreSQL.
    pub(crate) async fn write_turn(
        &self,
    ) -> StoreResult<Option<tokio::sync::OwnedSemaphorePermit>> {
        match &self.write_gate {
            Some(gate) => {
                Ok(Some(gate.clone().acquire_owned().await.map_err(|_| {
                    StoreError::Config("the store is closed".into())
                })?))
            }
            None => Ok(None),
        }
    }

    /// This store, sealing stored secrets with `key`.
    pub fn with_master_key(mut self, key: secrets::MasterKey) -> Self {
        self.master_key = Some(std::sync::Arc::new(key));
        self
    }

    /// Wakes this process's idle workers (call after committing a transaction that enqueued).
    pub fn wake_workers(&self) {
        self.wake_epoch
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.wake.notify_waiters();
    }

    /// How many wake-ups there have been: a pool that has seen this number look for jobs
    /// again only once it changes (or a timer says a delayed job is due).
    pub(crate) fn wake_epoch(&self) -> u64 {
        self.wake_epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    /// This process's pools that take jobs handed over directly.
    pub(crate) fn local_takers(&self) -> &worker::LocalTakers {
        &self.local_takers
    }

    /// Resolves at the next [`Store::wake_workers`].
    pub fn woken(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.wake.clone()
    }

    /// Closes the pools, waiting for connections to be returned.
    pub async fn close(self) -> StoreResult<()> {
        if let Some(relaxed) = self.relaxed {
            relaxed.close().await?;
        }
        if let Some(writer) = self.writer {
            writer.close().await?;
        }
        self.db.close().await.map_err(StoreError::from)
    }
}

/// A pooled SQLite connection that is closed, not returned, unless taken out of here: see
/// [`Store::sqlite_write_once`].
struct Abandoned(Option<sea_orm::sqlx::pool::PoolConnection<sea_orm::sqlx::Sqlite>>);

impl Drop for Abandoned {
    fn drop(&mut self) {
        if let Some(mut connection) = self.0.take() {
            connection.close_on_drop();
        }
    }
}

/// The environment variables through which libpq-style clients (and sqlx) take TLS
/// settings; any of them set is a choice [`plaintext_on_loopback`] keeps.
const TLS_ENV: [&str; 4] = ["PGSSLMODE", "PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY"];

/// Whether a PostgreSQL URL reaches a server on this machine (a loopback address,
/// `localhost` or a Unix socket, as sqlx resolves host overrides such as `host=` and
/// `hostaddr=`) and says nothing about TLS, so the driver's default (`prefer`, which
/// negotiates TLS whenever the server offers it) would apply. Any TLS setting in the URL
/// (`sslmode`, `sslrootcert`, `sslcert`, `sslkey` and their dashed spellings: every key
/// starting with `ssl`) or in the environment (`tls_in_env`, see [`TLS_ENV`]) is a choice,
/// and is always kept.
fn plaintext_on_loopback(url: &str, tls_in_env: bool) -> bool {
    use std::str::FromStr as _;
    if tls_in_env {
        return false;
    }
    let Ok(parsed) = url::Url::parse(url) else {
        return false;
    };
    if parsed.query_pairs().any(|(k, _)| k.starts_with("ssl")) {
        return false;
    }
    let Ok(options) = sea_orm::sqlx::postgres::PgConnectOptions::from_str(url) else {
        return false;
    };
    if options.get_socket().is_some() {
        return true;
    }
    let host = options.get_host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether a database error is a uniqueness violation, so callers can answer 409.
pub(crate) fn is_unique_violation(err: &sea_orm::DbErr) -> bool {
    matches!(
        err.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    )
}

/// Whether a database error is a foreign-key violation.
pub(crate) fn is_fk_violation(err: &sea_orm::DbErr) -> bool {
    matches!(
        err.sql_err(),
        Some(sea_orm::SqlErr::ForeignKeyConstraintViolation(_))
    )
}

#[cfg(feature = "testing")]
pub mod testing;

impl Store {
    /// Deletes rows in chunks of 1,000, each chunk its own short transaction so a large
    /// backlog never holds the write lock for long. `select` takes the cutoff as `$1` and the
    /// chunk size as `$2` and returns the `id`s of the parent rows to delete; for each chunk,
    /// `children` (table, column) are deleted first where the column is one of those ids,
    /// then the parents from `parent`. Returns how many parents went.
    pub(crate) async fn prune_in_chunks(
        &self,
        select: &str,
        cutoff: i64,
        children: &[(&str, &str)],
        parent: &str,
    ) -> StoreResult<u64> {
        const CHUNK: i64 = 1_000;
        let backend = self.backend();
        let mut total = 0;
        loop {
            let tx = self.write_tx().await?;
            let ids: Vec<String> = tx
                .query_all_raw(sea_orm::Statement::from_sql_and_values(
                    backend,
                    select,
                    vec![cutoff.into(), CHUNK.into()],
                ))
                .await?
                .iter()
                .map(|r| r.try_get::<String>("", "id"))
                .collect::<Result<_, _>>()?;
            if ids.is_empty() {
                return Ok(total);
            }
            let marks = crate::queue::placeholders(1, ids.len());
            let values: Vec<sea_orm::Value> = ids
                .iter()
                .map(|id| sea_orm::Value::from(id.as_str()))
                .collect();
            for (table, column) in children {
                tx.execute_raw(crate::sql::stmt(
                    backend,
                    &format!("DELETE FROM {table} WHERE {column} IN ({marks})"),
                    values.clone(),
                ))
                .await?;
            }
            total += tx
                .execute_raw(crate::sql::stmt(
                    backend,
                    &format!("DELETE FROM {parent} WHERE id IN ({marks})"),
                    values,
                ))
                .await?
                .rows_affected();
            tx.commit().await?;
            if ids.len() < CHUNK as usize {
                return Ok(total);
            }
        }
    }
}

/// A write transaction from [`Store::write_tx`]. On SQLite it holds this process's write
/// gate until it commits or is dropped (the transaction first, then the gate).
pub(crate) struct WriteTx {
    tx: DatabaseTransaction,
    _gate: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl WriteTx {
    /// Commits, then lets the next writer in.
    pub(crate) async fn commit(self) -> Result<(), sea_orm::DbErr> {
        self.tx.commit().await
    }
}

impl std::ops::Deref for WriteTx {
    type Target = DatabaseTransaction;

    fn deref(&self) -> &DatabaseTransaction {
        &self.tx
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl ConnectionTrait for WriteTx {
    fn get_database_backend(&self) -> DbBackend {
        self.tx.get_database_backend()
    }

    async fn execute_raw(
        &self,
        stmt: sea_orm::Statement,
    ) -> Result<sea_orm::ExecResult, sea_orm::DbErr> {
        self.tx.execute_raw(stmt).await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<sea_orm::ExecResult, sea_orm::DbErr> {
        self.tx.execute_unprepared(sql).await
    }

    async fn query_one_raw(
        &self,
        stmt: sea_orm::Statement,
    ) -> Result<Option<sea_orm::QueryResult>, sea_orm::DbErr> {
        self.tx.query_one_raw(stmt).await
    }

    async fn query_all_raw(
        &self,
        stmt: sea_orm::Statement,
    ) -> Result<Vec<sea_orm::QueryResult>, sea_orm::DbErr> {
        self.tx.query_all_raw(stmt).await
    }
}

#[cfg(test)]
mod tests {
    use super::plaintext_on_loopback;

    #[test]
    fn only_a_loopback_url_without_a_tls_choice_connects_in_plain_text() {
        for url in [
            "postgres://postgres@127.0.0.1:5432/wedsync",
            "postgres://postgres@127.0.0.2/wedsync",
            "postgresql://u:p@localhost/wedsync?application_name=hub",
            "postgres://u@[::1]:5432/wedsync",
            "postgres://u@%2Fvar%2Frun%2Fpostgresql/wedsync",
            "postgres:///wedsync?host=/var/run/postgresql",
            // Another machine's name overridden to this one.
            "postgres://u@10.0.0.5/wedsync?host=127.0.0.1",
            "postgres://u@db.internal/wedsync?hostaddr=::1",
        ] {
            assert!(plaintext_on_loopback(url, false), "{url}");
        }
        for url in [
            // Another machine: TLS as the driver negotiates it.
            "postgres://u@db.internal:5432/wedsync",
            "postgres://u@10.0.0.5/wedsync",
            "postgres://u@[::ffff:10.0.0.5]/wedsync",
            // The URL's host overridden to another machine.
            "postgres://u@localhost/wedsync?host=10.0.0.5",
            "postgres://u@localhost/wedsync?hostaddr=10.0.0.5",
            // A TLS setting the operator chose, in either spelling, even on loopback.
            "postgres://u@127.0.0.1/wedsync?sslmode=prefer",
            "postgres://u@localhost/wedsync?ssl-mode=require",
            "postgres://u@localhost/wedsync?sslrootcert=/etc/ssl/db.pem",
            "postgres://u@127.0.0.1/wedsync?ssl-cert=/c.pem&ssl-key=/k.pem",
            "not a url",
        ] {
            assert!(!plaintext_on_loopback(url, false), "{url}");
        }
        assert!(
            !plaintext_on_loopback("postgres://u@127.0.0.1/wedsync", true),
            "a TLS setting in the environment is a choice too"
        );
    }
}

//! The store's error type.

use wedsync_core::validate::ValidationErrors;

/// What can go wrong in the store, in terms the HTTP layer and the CLI can act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object does not exist in the caller's organisation (it may exist in another one;
    /// callers must not be able to tell the difference).
    #[error("not found")]
    NotFound,
    /// The change conflicts with the current state, e.g. a duplicate or a dependent record.
    #[error("{0}")]
    Conflict(String),
    /// The input broke a domain rule.
    #[error(transparent)]
    Invalid(#[from] ValidationErrors),
    /// The change needs an explicit confirmation the caller did not give.
    #[error("{0}")]
    NeedsConfirmation(String),
    /// The database has migrations this binary does not know: it was migrated by a newer
    /// release, and running an older one against it could corrupt data.
    #[error(
        "the database schema is newer than this binary knows (unknown migrations: {}); upgrade wedsync",
        unknown.join(", ")
    )]
    SchemaTooNew {
        /// The migration names found in the database but not in this binary.
        unknown: Vec<String>,
    },
    /// The schema is older than this binary and must be migrated first.
    #[error(
        "the database schema is behind this binary ({} pending migrations); run `wedsync migrate` or start with `--migrate`",
        pending.len()
    )]
    SchemaBehind {
        /// The migrations that have not been applied.
        pending: Vec<String>,
    },
    /// A configuration problem detected when connecting.
    #[error("{0}")]
    Config(String),
    /// Anything else from the database.
    #[error("database error: {0}")]
    Db(#[from] sea_orm::DbErr),
}

/// Shorthand for store results.
pub type StoreResult<T> = Result<T, StoreError>;

//! Store integration tests; the whole suite runs on SQLite, and on PostgreSQL when
//! `WEDSYNC_TEST_DATABASE_URL` is set (see `wedsync_store::testing`).

mod atomicity;
mod audit;
mod inbound;
mod queue;
mod schema;
mod support;

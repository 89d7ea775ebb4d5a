//! HTTP integration tests: a real server on 127.0.0.1:0 per test, over a fresh database on
//! the backend under test (SQLite, or PostgreSQL with `WEDSYNC_TEST_DATABASE_URL`).
//! `TEST_LOG=1` shows the server's logs.

mod access;
mod bookings;
mod couples;
mod endpoints;
mod errors;
mod inbound;
mod isolation;
mod jobs;
mod journeys;
mod meta;
mod notifications;
mod support;

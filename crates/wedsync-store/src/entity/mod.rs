//! SeaORM entities, one per table. Instants are `i64` microseconds since the Unix epoch (UTC)
//! on both backends, so ordering and range queries behave identically on SQLite and
//! PostgreSQL; ids are their prefixed text form.

#![allow(missing_docs)]

pub mod api_key;
pub mod audit_entry;
pub mod audit_head;
pub mod booking;
pub mod couple;
pub mod job;
pub mod member;
pub mod organization;
pub mod outbox_event;

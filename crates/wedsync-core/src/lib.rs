//! WedSync's domain: the types and rules every other crate speaks, with no IO.
//!
//! Module map:
//! - [`id`]: typed, prefixed, UUIDv7-based identifiers (`org_…`, `cpl_…`).
//! - [`clock`]: the injectable clock; production uses [`clock::SystemClock`], tests move a
//!   [`clock::ManualClock`].
//! - [`org`]: organisations, tiers, roles, countries and currencies.
//! - [`couple`]: couples, partners, venues and the wedding-date change rule.
//! - [`booking`]: bookings, their statuses and exact money.
//! - [`validate`]: the field-level error type every parse constructor returns.
//!
//! Invariant: nothing here touches the network, the disk or the system clock directly.

pub mod booking;
pub mod clock;
pub mod couple;
pub mod id;
pub mod org;
pub mod validate;

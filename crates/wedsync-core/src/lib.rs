//! WedSync's domain: the types and rules every other crate speaks, with no IO.
//!
//! Module map:
//! - [`id`]: typed, prefixed, UUIDv7-based identifiers (`org_…`, `cpl_…`).
//! - [`clock`]: the injectable clock; production uses [`clock::SystemClock`], tests move a
//!   [`clock::ManualClock`].
//! - [`org`]: organisations, tiers, roles, countries and currencies.
//! - [`couple`]: couples, partners, venues and the wedding-date change rule.
//! - [`booking`]: bookings, their statuses and exact money.
//! - [`breaker`]: the circuit breaker's state machine (the store persists it).
//! - [`ratelimit`]: token buckets and the in-memory keyed limiter.
//! - [`source`]: inbound sources: providers and generic HMAC descriptions.
//! - [`validate`]: the field-level error type every parse constructor returns.
//! - [`calendar`]: the wedding calendar: seasons, the wedding-day window (Friday evening to
//!   Sunday night, booked days, Saturday highest), escalation and queue priority.
//! - [`localtime`]: couple-local, date-relative instants (DST-exact), for journey waits.
//! - [`notify`]: notification channels, severities, tier quotas, quiet hours (DST-exact),
//!   the send gate (block, defer, send) and the wedding-day alert plan.
//! - [`retry`]: retry policy: exponential or scheduled backoff with jitter, `Retry-After`,
//!   maximum attempts and age, and permanent versus transient failures.
//!
//! Invariant: nothing here touches the network, the disk or the system clock directly.

pub mod booking;
pub mod breaker;
pub mod calendar;
pub mod clock;
pub mod couple;
pub mod endpoint;
pub mod id;
pub mod localtime;
pub mod notify;
pub mod org;
pub mod ratelimit;
pub mod retry;
pub mod source;
pub mod validate;

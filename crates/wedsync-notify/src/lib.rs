//! Notifications: how a message reaches a person or a team's tool.
//!
//! Module map:
//! - [`alerts`]: raising an alert under the wedding-day rules (Saturday: SMS and PagerDuty
//!   too; in the window: a raised severity and the escalation chain).
//! - [`catalog`]: HTTP providers described as data (one TOML file each in `catalog/`):
//!   Resend, Mailgun, Twilio, Slack, Teams, Discord, PagerDuty, a generic webhook.
//! - [`templates`]: MiniJinja templates with fuel and size limits, the wedding context.
//! - [`email`]: MIME building and SMTP (pooled, STARTTLS or TLS) through lettre.
//! - [`push`]: Web Push (RFC 8291 encryption, VAPID) with the hub's derived key pair.
//! - [`links`]: signed one-click unsubscribe, open-pixel and click-redirect links.
//! - [`worker`]: the `notify.send` and `notify.escalate` jobs: the gate, quota claims,
//!   provider failover with circuit breakers, retries and the email-to-SMS fallback.
//!
//! Invariant: no SQL here (the store's `notify` module has it) and no HTTP routing (the
//! server's). Secrets are only in provider work and requests, never in logs or errors.

pub mod alerts;
pub mod catalog;
pub mod email;
pub mod links;
pub mod push;
pub mod templates;
pub mod worker;

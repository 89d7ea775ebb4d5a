//! Outbound delivery: Standard Webhooks requests through the SSRF guard, and the worker that
//! turns each `webhook.deliver` job into one recorded attempt.

pub mod sender;
pub mod ssrf;
pub mod worker;

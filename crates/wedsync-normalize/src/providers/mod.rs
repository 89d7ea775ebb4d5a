//! One module per payload shape. Each exposes
//! `normalize(&Input) -> Result<Normalized, NormalizeError>`, called by [`crate::normalize`].

pub(crate) mod hubspot;
pub(crate) mod pagerduty;
pub(crate) mod relay;
pub(crate) mod slack;
pub(crate) mod standard;
pub(crate) mod stripe;
pub(crate) mod twilio;

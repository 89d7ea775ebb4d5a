//! Per-provider header parsing.
//!
//! Each provider module turns an [`InboundRequest`] into a [`Prepared`]
//! delivery in two ordered steps: first every required header must be present
//! (else `MissingHeader`), then each is parsed (else `MalformedHeader`). The
//! shared pipeline in `verify` then checks the timestamp and the signature, so
//! every scheme reports problems in the same order.

use std::borrow::Cow;

use crate::timestamp::Stamp;
use crate::{Headers, InboundRequest, Rejection};

pub(crate) mod generic;
pub(crate) mod hubspot;
pub(crate) mod pagerduty;
pub(crate) mod slack;
pub(crate) mod standard_webhooks;
pub(crate) mod stripe;
pub(crate) mod twilio;

/// A parsed delivery, ready for the timestamp and signature checks.
#[derive(Debug)]
pub(crate) struct Prepared<'a> {
    /// The signed timestamp, when the scheme has one.
    pub(crate) stamp: Option<Stamp>,
    /// A signed delivery id, when the scheme has one.
    pub(crate) delivery_id: Option<String>,
    /// Decoded signatures from the request; any one may match.
    pub(crate) candidates: Vec<Vec<u8>>,
    /// The signed content, as pieces to be fed to the HMAC in order. Pieces
    /// borrow the raw body and header text so nothing is re-serialised.
    pub(crate) signed: Vec<Cow<'a, [u8]>>,
}

/// Looks up a required header; absence is `MissingHeader(name)`.
pub(crate) fn require<'h, H: Headers + ?Sized>(
    headers: &'h H,
    name: &str,
) -> Result<&'h str, Rejection> {
    Headers::get(headers, name).ok_or_else(|| Rejection::MissingHeader(name.to_owned()))
}

/// Trims surrounding whitespace (proxies and frameworks differ on whether they
/// strip it) and treats an empty value as malformed, not missing: the header
/// was sent, just uselessly.
pub(crate) fn non_empty<'v>(value: &'v str, name: &str) -> Result<&'v str, Rejection> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        Err(malformed(name, "empty value"))
    } else {
        Ok(trimmed)
    }
}

/// `MalformedHeader` naming the header and the defect, never the value.
pub(crate) fn malformed(name: &str, what: &str) -> Rejection {
    Rejection::MalformedHeader(format!("{name}: {what}"))
}

/// Borrows the request body as one signed piece.
pub(crate) fn body_piece<'a, H: Headers + ?Sized>(
    request: &InboundRequest<'a, H>,
) -> Cow<'a, [u8]> {
    Cow::Borrowed(request.body)
}

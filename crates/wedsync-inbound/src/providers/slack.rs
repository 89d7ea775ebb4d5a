//! Slack request signing v0.

use std::borrow::Cow;

use super::{Prepared, body_piece, malformed, non_empty, require};
use crate::crypto::decode_signature;
use crate::timestamp::{Stamp, Unit, parse_digits};
use crate::{Encoding, Headers, InboundRequest, Rejection};

const SIGNATURE: &str = "X-Slack-Signature";
const TIMESTAMP: &str = "X-Slack-Request-Timestamp";

pub(crate) fn prepare<'a, H: Headers + ?Sized>(
    request: &InboundRequest<'a, H>,
) -> Result<Prepared<'a>, Rejection> {
    let signature = require(request.headers, SIGNATURE)?;
    let timestamp = require(request.headers, TIMESTAMP)?;

    let signature = non_empty(signature, SIGNATURE)?;
    let hex_text = signature
        .strip_prefix("v0=")
        .ok_or_else(|| malformed(SIGNATURE, "does not start with v0="))?;
    let candidate = decode_signature(hex_text, Encoding::Hex)
        .ok_or_else(|| malformed(SIGNATURE, "not a 64-digit hex HMAC"))?;
    let timestamp = non_empty(timestamp, TIMESTAMP)?;
    let value =
        parse_digits(timestamp).ok_or_else(|| malformed(TIMESTAMP, "not a unix timestamp"))?;

    Ok(Prepared {
        stamp: Some(Stamp {
            value,
            unit: Unit::Seconds,
        }),
        delivery_id: None,
        candidates: vec![candidate],
        signed: vec![
            Cow::Borrowed(b"v0:"),
            Cow::Borrowed(timestamp.as_bytes()),
            Cow::Borrowed(b":"),
            body_piece(request),
        ],
    })
}

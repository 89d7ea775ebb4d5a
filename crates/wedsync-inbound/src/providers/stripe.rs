//! Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…][,v0=<hex>]`.

use std::borrow::Cow;

use super::{Prepared, body_piece, malformed, non_empty, require};
use crate::crypto::decode_signature;
use crate::timestamp::{Stamp, Unit, parse_digits};
use crate::{Encoding, Headers, InboundRequest, Rejection};

pub(crate) const HEADER: &str = "Stripe-Signature";

pub(crate) fn prepare<'a, H: Headers + ?Sized>(
    request: &InboundRequest<'a, H>,
) -> Result<Prepared<'a>, Rejection> {
    let raw = require(request.headers, HEADER)?;
    let value = non_empty(raw, HEADER)?;

    let mut timestamp: Option<&'a str> = None;
    let mut candidates = Vec::new();
    for entry in value.split(',').map(str::trim) {
        // Tolerate a trailing or doubled comma, as Stripe's own libraries do.
        if entry.is_empty() {
            continue;
        }
        let Some((key, text)) = entry.split_once('=') else {
            return Err(malformed(HEADER, "entry without '='"));
        };
        match key.trim() {
            // Two timestamps would make "which one was signed" ambiguous.
            "t" if timestamp.is_some() => {
                return Err(malformed(HEADER, "more than one t entry"));
            }
            "t" => timestamp = Some(text.trim()),
            "v1" => {
                let signature = decode_signature(text.trim(), Encoding::Hex)
                    .ok_or_else(|| malformed(HEADER, "v1 is not a 64-digit hex HMAC"))?;
                candidates.push(signature);
            }
            // v0 is Stripe's legacy test-mode scheme; unknown keys may be
            // future versions. Neither can authenticate anything here.
            _ => {}
        }
    }

    let timestamp = timestamp.ok_or_else(|| malformed(HEADER, "no t entry"))?;
    let value =
        parse_digits(timestamp).ok_or_else(|| malformed(HEADER, "t is not a unix timestamp"))?;
    if candidates.is_empty() {
        return Err(malformed(HEADER, "no v1 signature"));
    }

    Ok(Prepared {
        stamp: Some(Stamp {
            value,
            unit: Unit::Seconds,
        }),
        delivery_id: None,
        candidates,
        signed: vec![
            Cow::Borrowed(timestamp.as_bytes()),
            Cow::Borrowed(b"."),
            body_piece(request),
        ],
    })
}

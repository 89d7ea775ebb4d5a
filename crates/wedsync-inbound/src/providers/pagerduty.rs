//! PagerDuty webhooks v3: `X-PagerDuty-Signature: v1=<hex>[,v1=<hex>…]`.

use super::{Prepared, body_piece, malformed, non_empty, require};
use crate::crypto::decode_signature;
use crate::{Encoding, Headers, InboundRequest, Rejection};

const HEADER: &str = "X-PagerDuty-Signature";

pub(crate) fn prepare<'a, H: Headers + ?Sized>(
    request: &InboundRequest<'a, H>,
) -> Result<Prepared<'a>, Rejection> {
    let raw = require(request.headers, HEADER)?;
    let value = non_empty(raw, HEADER)?;

    let mut candidates = Vec::new();
    for entry in value.split(',').map(str::trim) {
        if entry.is_empty() {
            continue;
        }
        let Some((version, text)) = entry.split_once('=') else {
            return Err(malformed(HEADER, "entry without '='"));
        };
        // Several v1 entries appear while PagerDuty rotates the secret;
        // other versions are not defined and are skipped.
        if version.trim() == "v1" {
            let decoded = decode_signature(text.trim(), Encoding::Hex)
                .ok_or_else(|| malformed(HEADER, "v1 is not a 64-digit hex HMAC"))?;
            candidates.push(decoded);
        }
    }
    if candidates.is_empty() {
        return Err(malformed(HEADER, "no v1 signature"));
    }

    Ok(Prepared {
        // PagerDuty signs no timestamp, so replay protection has to come from
        // de-duplicating on the event id in the body.
        stamp: None,
        delivery_id: None,
        candidates,
        signed: vec![body_piece(request)],
    })
}

//! Standard Webhooks and Svix: `webhook-*` headers, or their `svix-*` twins.

use std::borrow::Cow;

use super::{Prepared, body_piece, malformed, non_empty};
use crate::crypto::decode_signature;
use crate::timestamp::{Stamp, Unit, parse_digits};
use crate::{Encoding, Headers, InboundRequest, Rejection};

const ID: (&str, &str) = ("webhook-id", "svix-id");
const TIMESTAMP: (&str, &str) = ("webhook-timestamp", "svix-timestamp");
const SIGNATURE: (&str, &str) = ("webhook-signature", "svix-signature");

/// Each header is looked up under its standard name first, then its Svix
/// name, independently, as the official libraries do.
fn lookup<'h, H: Headers + ?Sized>(
    headers: &'h H,
    (standard, svix): (&str, &str),
) -> Result<&'h str, Rejection> {
    Headers::get(headers, standard)
        .or_else(|| Headers::get(headers, svix))
        .ok_or_else(|| Rejection::MissingHeader(standard.to_owned()))
}

pub(crate) fn prepare<'a, H: Headers + ?Sized>(
    request: &InboundRequest<'a, H>,
) -> Result<Prepared<'a>, Rejection> {
    let id = lookup(request.headers, ID)?;
    let timestamp = lookup(request.headers, TIMESTAMP)?;
    let signature = lookup(request.headers, SIGNATURE)?;

    let id = non_empty(id, ID.0)?;
    let timestamp = non_empty(timestamp, TIMESTAMP.0)?;
    let value =
        parse_digits(timestamp).ok_or_else(|| malformed(TIMESTAMP.0, "not a unix timestamp"))?;
    let signature = non_empty(signature, SIGNATURE.0)?;

    let mut candidates = Vec::new();
    for entry in signature.split_ascii_whitespace() {
        let Some((version, text)) = entry.split_once(',') else {
            return Err(malformed(SIGNATURE.0, "entry without a version"));
        };
        // `v1a` is ed25519 (asymmetric) and other versions are not defined
        // yet; skipping them lets a sender add them without breaking us.
        if version == "v1" {
            let decoded = decode_signature(text, Encoding::Base64)
                .ok_or_else(|| malformed(SIGNATURE.0, "v1 is not a base64 HMAC-SHA256"))?;
            candidates.push(decoded);
        }
    }
    if candidates.is_empty() {
        return Err(malformed(SIGNATURE.0, "no v1 signature"));
    }

    Ok(Prepared {
        stamp: Some(Stamp {
            value,
            unit: Unit::Seconds,
        }),
        delivery_id: Some(id.to_owned()),
        candidates,
        signed: vec![
            Cow::Borrowed(id.as_bytes()),
            Cow::Borrowed(b"."),
            Cow::Borrowed(timestamp.as_bytes()),
            Cow::Borrowed(b"."),
            body_piece(request),
        ],
    })
}

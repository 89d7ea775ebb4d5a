//! HubSpot signature v3.

use std::borrow::Cow;

use super::{Prepared, body_piece, malformed, non_empty, require};
use crate::crypto::decode_signature;
use crate::timestamp::{Stamp, Unit, parse_digits};
use crate::{Encoding, Headers, InboundRequest, Rejection};

const SIGNATURE: &str = "X-HubSpot-Signature-v3";
const TIMESTAMP: &str = "X-HubSpot-Request-Timestamp";

/// The only percent-escapes HubSpot decodes before signing the URI (its
/// "Validate the v3 request signature" guide); every other escape, such as
/// `%20`, stays encoded in the signed string.
const DECODED_ESCAPES: [(u8, u8, u8); 12] = [
    (b'3', b'A', b':'),
    (b'2', b'F', b'/'),
    (b'3', b'F', b'?'),
    (b'4', b'0', b'@'),
    (b'2', b'1', b'!'),
    (b'2', b'4', b'$'),
    (b'2', b'7', b'\''),
    (b'2', b'8', b'('),
    (b'2', b'9', b')'),
    (b'2', b'A', b'*'),
    (b'2', b'C', b','),
    (b'3', b'B', b';'),
];

/// Applies HubSpot's partial percent-decoding to `uri`.
///
/// Borrows when there is nothing to decode, which is the usual case.
pub(crate) fn decode_uri(uri: &str) -> Cow<'_, [u8]> {
    let bytes = uri.as_bytes();
    if !bytes.contains(&b'%') {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        if byte == b'%'
            && let (Some(&high), Some(&low)) = (bytes.get(index + 1), bytes.get(index + 2))
            && let Some(&(_, _, decoded)) = DECODED_ESCAPES
                .iter()
                .find(|(h, l, _)| *h == high && l.eq_ignore_ascii_case(&low))
        {
            out.push(decoded);
            index += 3;
            continue;
        }
        out.push(byte);
        index += 1;
    }
    Cow::Owned(out)
}

pub(crate) fn prepare<'a, H: Headers + ?Sized>(
    request: &InboundRequest<'a, H>,
) -> Result<Prepared<'a>, Rejection> {
    let signature = require(request.headers, SIGNATURE)?;
    let timestamp = require(request.headers, TIMESTAMP)?;

    let signature = non_empty(signature, SIGNATURE)?;
    let candidate = decode_signature(signature, Encoding::Base64)
        .ok_or_else(|| malformed(SIGNATURE, "not a base64 HMAC-SHA256"))?;
    let timestamp = non_empty(timestamp, TIMESTAMP)?;
    let value = parse_digits(timestamp)
        .ok_or_else(|| malformed(TIMESTAMP, "not a unix timestamp in milliseconds"))?;

    Ok(Prepared {
        stamp: Some(Stamp {
            value,
            unit: Unit::Millis,
        }),
        delivery_id: None,
        candidates: vec![candidate],
        signed: vec![
            Cow::Borrowed(request.method.as_bytes()),
            decode_uri(request.url),
            body_piece(request),
            Cow::Borrowed(timestamp.as_bytes()),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::decode_uri;

    #[test]
    fn decodes_only_the_documented_escapes() {
        let uri = "https://example.com/hook?redirect=https%3A%2F%2Fa.b%2Fc%3Fd%40e%21%24%27%28%29%2A%2C%3B&q=a%20b";
        assert_eq!(
            decode_uri(uri).as_ref(),
            b"https://example.com/hook?redirect=https://a.b/c?d@e!$'()*,;&q=a%20b"
        );
    }

    #[test]
    fn lowercase_hex_and_truncated_escapes() {
        assert_eq!(decode_uri("a%3ab%2f").as_ref(), b"a:b/");
        assert_eq!(decode_uri("end%3").as_ref(), b"end%3");
        assert_eq!(decode_uri("end%").as_ref(), b"end%");
        assert_eq!(decode_uri("%%3A").as_ref(), b"%:");
        assert_eq!(decode_uri("%é").as_ref(), "%é".as_bytes());
    }

    #[test]
    fn borrows_when_nothing_to_decode() {
        assert!(matches!(
            decode_uri("https://example.com/x"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}

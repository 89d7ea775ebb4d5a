//! Configurable single-signature HMAC-SHA256 (GitHub style and relatives).

use std::borrow::Cow;

use super::{Prepared, malformed, non_empty, require};
use crate::crypto::decode_signature;
use crate::timestamp::{Stamp, Unit, parse_digits};
use crate::{GenericHmac, Headers, InboundRequest, Rejection};

/// One piece of a parsed `signed_content` template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Segment<'t> {
    Literal(&'t str),
    Body,
    Timestamp,
    Id,
    Method,
    Url,
}

fn invalid(what: impl Into<String>) -> Rejection {
    Rejection::InvalidTemplate(what.into())
}

/// Splits a template into literals and placeholders.
pub(crate) fn parse_template(template: &str) -> Result<Vec<Segment<'_>>, Rejection> {
    let mut segments = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find(['{', '}']) {
        let (literal, tail) = rest.split_at(open);
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        let Some(after_open) = tail.strip_prefix('{') else {
            return Err(invalid("unmatched '}' in signed_content"));
        };
        let Some(close) = after_open.find('}') else {
            return Err(invalid("unclosed '{' in signed_content"));
        };
        let (name, after_name) = after_open.split_at(close);
        segments.push(match name {
            "body" => Segment::Body,
            "timestamp" => Segment::Timestamp,
            "id" => Segment::Id,
            "method" => Segment::Method,
            "url" => Segment::Url,
            _ => return Err(invalid(format!("unknown placeholder {{{name}}}"))),
        });
        rest = after_name.get(1..).unwrap_or_default();
    }
    if !rest.is_empty() {
        segments.push(Segment::Literal(rest));
    }
    Ok(segments)
}

/// Rejects configurations that could never verify safely, before looking at
/// the request, so a broken config is reported as such on every delivery.
fn validate<'t>(config: &'t GenericHmac) -> Result<Vec<Segment<'t>>, Rejection> {
    if config.signature_header.trim().is_empty() {
        return Err(invalid("signature_header is empty"));
    }
    let segments = parse_template(&config.signed_content)?;
    // Without the body the signature would authenticate nothing a forger
    // cannot copy from an earlier delivery.
    if !segments.contains(&Segment::Body) {
        return Err(invalid("signed_content must include {body}"));
    }
    match (
        segments.contains(&Segment::Timestamp),
        &config.timestamp_header,
    ) {
        (true, None) => return Err(invalid("{timestamp} used but timestamp_header is not set")),
        (false, Some(_)) => {
            return Err(invalid(
                "timestamp_header set but {timestamp} is not signed",
            ));
        }
        _ => {}
    }
    match (segments.contains(&Segment::Id), &config.id_header) {
        (true, None) => return Err(invalid("{id} used but id_header is not set")),
        (false, Some(_)) => return Err(invalid("id_header set but {id} is not signed")),
        _ => {}
    }
    Ok(segments)
}

pub(crate) fn prepare<'a, H: Headers + ?Sized>(
    config: &'a GenericHmac,
    request: &InboundRequest<'a, H>,
) -> Result<Prepared<'a>, Rejection> {
    let segments = validate(config)?;

    let signature_name = config.signature_header.as_str();
    let signature = require(request.headers, signature_name)?;
    let timestamp = match &config.timestamp_header {
        Some(name) => Some((name.as_str(), require(request.headers, name)?)),
        None => None,
    };
    let id = match &config.id_header {
        Some(name) => Some((name.as_str(), require(request.headers, name)?)),
        None => None,
    };

    let signature = non_empty(signature, signature_name)?;
    let encoded = signature
        .strip_prefix(config.prefix.as_str())
        .ok_or_else(|| malformed(signature_name, "missing the configured prefix"))?;
    let candidate = decode_signature(encoded, config.encoding)
        .ok_or_else(|| malformed(signature_name, "not an encoded HMAC-SHA256"))?;
    let (timestamp_text, stamp) = match timestamp {
        Some((name, raw)) => {
            let text = non_empty(raw, name)?;
            let value =
                parse_digits(text).ok_or_else(|| malformed(name, "not a unix timestamp"))?;
            (
                text,
                Some(Stamp {
                    value,
                    unit: Unit::Seconds,
                }),
            )
        }
        None => ("", None),
    };
    let id_text = match id {
        Some((name, raw)) => Some(non_empty(raw, name)?),
        None => None,
    };

    let signed = segments
        .iter()
        .map(|segment| match segment {
            Segment::Literal(text) => Cow::Borrowed(text.as_bytes()),
            Segment::Body => Cow::Borrowed(request.body),
            Segment::Timestamp => Cow::Borrowed(timestamp_text.as_bytes()),
            Segment::Id => Cow::Borrowed(id_text.unwrap_or_default().as_bytes()),
            Segment::Method => Cow::Borrowed(request.method.as_bytes()),
            Segment::Url => Cow::Borrowed(request.url.as_bytes()),
        })
        .collect();

    Ok(Prepared {
        stamp,
        delivery_id: id_text.map(str::to_owned),
        candidates: vec![candidate],
        signed,
    })
}

#[cfg(test)]
mod tests {
    use super::{Segment, parse_template};
    use crate::Rejection;

    #[test]
    fn parses_literals_and_placeholders() {
        assert_eq!(
            parse_template("{id}.{timestamp}.{body}").expect("valid"),
            vec![
                Segment::Id,
                Segment::Literal("."),
                Segment::Timestamp,
                Segment::Literal("."),
                Segment::Body
            ]
        );
        assert_eq!(
            parse_template("v0:{timestamp}:{body}!").expect("valid"),
            vec![
                Segment::Literal("v0:"),
                Segment::Timestamp,
                Segment::Literal(":"),
                Segment::Body,
                Segment::Literal("!")
            ]
        );
        assert_eq!(
            parse_template("{method}{url}{body}").expect("valid"),
            vec![Segment::Method, Segment::Url, Segment::Body]
        );
    }

    #[test]
    fn rejects_bad_braces_and_unknown_names() {
        for bad in ["{body", "body}", "{nope}", "{}", "{{body}}", "{bo{dy}"] {
            assert!(
                matches!(parse_template(bad), Err(Rejection::InvalidTemplate(_))),
                "{bad} should be invalid"
            );
        }
    }
}

//! Twilio request validation: `X-Twilio-Signature: <base64 HMAC-SHA1>` keyed with the
//! auth token, over the full URL Twilio requested followed, for
//! `application/x-www-form-urlencoded` posts, by each parameter's name and value
//! (decoded), sorted by name. Twilio signs no timestamp: replays are caught by
//! de-duplicating on the message id and status in the body.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq as _;

use super::{malformed, non_empty, require};
use crate::{Headers, InboundRequest, Rejection, Secret, Verified};

const HEADER: &str = "X-Twilio-Signature";

/// The bytes Twilio signs for `request`.
pub(crate) fn signed_content<H: Headers + ?Sized>(request: &InboundRequest<'_, H>) -> Vec<u8> {
    let mut content = request.url.as_bytes().to_vec();
    let form = Headers::get(request.headers, "content-type").is_some_and(|ct| {
        ct.split(';').next().is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
    });
    if form {
        let mut pairs: Vec<(String, String)> = url::form_urlencoded::parse(request.body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        // Sorted by name; Twilio keeps repeated names in their order.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        for (k, v) in pairs {
            content.extend_from_slice(k.as_bytes());
            content.extend_from_slice(v.as_bytes());
        }
    }
    content
}

/// The signature Twilio would send, for tests and stand-ins.
pub fn sign<H: Headers + ?Sized>(secret: &Secret, request: &InboundRequest<'_, H>) -> String {
    use base64::Engine as _;
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret.expose())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(&signed_content(request));
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

pub(crate) fn verify<H: Headers + ?Sized>(
    request: &InboundRequest<'_, H>,
    secrets: &[Secret],
) -> Result<Verified, Rejection> {
    let raw = require(request.headers, HEADER)?;
    let value = non_empty(raw, HEADER)?;
    let candidate = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(value)
            .ok()
            .filter(|b| b.len() == 20)
            .ok_or_else(|| malformed(HEADER, "not a base64 HMAC-SHA1"))?
    };
    if secrets.is_empty() || secrets.iter().any(|s| s.expose().is_empty()) {
        return Err(Rejection::InvalidSecret);
    }
    let content = signed_content(request);
    let mut matched = subtle::Choice::from(0);
    for secret in secrets {
        let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret.expose())
            .map_err(|_| Rejection::InvalidSecret)?;
        mac.update(&content);
        matched |= mac.finalize().into_bytes()[..].ct_eq(&candidate);
    }
    if bool::from(matched) {
        Ok(Verified {
            timestamp: None,
            delivery_id: None,
        })
    } else {
        Err(Rejection::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Twilio's published example (twilio-php's request validation guide): auth token
    /// `12345`, URL `https://mycompany.com/myapp.php?foo=1&bar=2`, and the parameters
    /// below give `RSOYDt4T1cUTdK1PDd93/VVr8B8=`.
    #[test]
    fn twilios_published_example_verifies() {
        // Deliberately not in name order: the signer sorts.
        let body = "To=%2B18005551212&CallSid=CA1234567890ABCDE&Caller=%2B14158675309&Digits=1234&From=%2B14158675309";
        let headers = vec![
            (
                "content-type".to_owned(),
                "application/x-www-form-urlencoded".to_owned(),
            ),
            (
                "x-twilio-signature".to_owned(),
                "RSOYDt4T1cUTdK1PDd93/VVr8B8=".to_owned(),
            ),
        ];
        let request = InboundRequest {
            method: "POST",
            url: "https://mycompany.com/myapp.php?foo=1&bar=2",
            headers: &headers,
            body: body.as_bytes(),
        };
        let secret = Secret::from_str("12345");
        assert_eq!(sign(&secret, &request), "RSOYDt4T1cUTdK1PDd93/VVr8B8=");
        assert!(verify(&request, &[secret]).is_ok());
        assert_eq!(
            verify(&request, &[Secret::from_str("54321")]),
            Err(Rejection::BadSignature)
        );
        let tampered_body = body.replace("Digits=1234", "Digits=9999");
        let tampered = InboundRequest {
            body: tampered_body.as_bytes(),
            ..request
        };
        assert_eq!(
            verify(&tampered, &[Secret::from_str("12345")]),
            Err(Rejection::BadSignature)
        );
    }
}

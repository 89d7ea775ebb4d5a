//! HMAC, signature decoding and constant-time matching shared by all schemes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};

use crate::{Encoding, Secret};

type HmacSha256 = Hmac<Sha256>;

/// Length of an HMAC-SHA256 tag; a decoded signature of any other length
/// cannot match, so parsers reject it as malformed up front.
pub(crate) const TAG_LEN: usize = 32;

/// HMAC-SHA256 over the concatenation of `parts`, fed piecewise so the body is
/// never copied into a joined buffer.
///
/// `None` only if the hmac crate refused the key, which HMAC never does (keys
/// of any length are hashed or padded, RFC 2104); callers map it to an error
/// rather than trusting that forever.
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Option<[u8; TAG_LEN]> {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).ok()?;
    for part in parts {
        mac.update(part);
    }
    Some(mac.finalize().into_bytes().into())
}

/// True when any `tag` equals any `candidate`.
///
/// Every pair is compared with `subtle` and the results are OR-ed without
/// early exit, so timing reveals neither which secret nor which entry
/// matched, nor how many leading bytes of a forged signature were right.
pub(crate) fn any_tag_matches(tags: &[[u8; TAG_LEN]], candidates: &[Vec<u8>]) -> bool {
    let mut matched = Choice::from(0);
    for tag in tags {
        for candidate in candidates {
            matched |= tag.as_slice().ct_eq(candidate.as_slice());
        }
    }
    bool::from(matched)
}

/// Decodes a signature and insists on a full-length tag.
pub(crate) fn decode_signature(text: &str, encoding: Encoding) -> Option<Vec<u8>> {
    let bytes = match encoding {
        Encoding::Hex => hex::decode(text).ok()?,
        Encoding::Base64 => STANDARD.decode(text).ok()?,
    };
    (bytes.len() == TAG_LEN).then_some(bytes)
}

/// Standard Webhooks key: strip `whsec_`, base64-decode. `None` when the
/// secret is not UTF-8, not base64, or decodes to nothing.
pub(crate) fn standard_webhooks_key(secret: &Secret) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(secret.expose()).ok()?.trim();
    // The prefix is optional, as in the official libraries, because some
    // dashboards show the bare base64 part.
    let encoded = text.strip_prefix("whsec_").unwrap_or(text);
    let key = STANDARD.decode(encoded).ok()?;
    (!key.is_empty()).then_some(key)
}

/// Base64 encoding used when producing Standard Webhooks signatures.
pub(crate) fn base64_encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripe_node_raw_hmac_vectors() {
        // stripe-node test/crypto/helpers.ts, key `test_secret` (signatures.md).
        let empty = hmac_sha256(b"test_secret", &[b""]).expect("hmac");
        assert_eq!(
            hex::encode(empty),
            "f7f9bd47fb987337b5796fdc1fdb9ba221d0d5396814bfcaf9521f43fd8927fd"
        );
        let json =
            hmac_sha256(b"test_secret", &[br#"{"obj1":"hello","obj2":"world"}"#]).expect("hmac");
        assert_eq!(
            hex::encode(json),
            "bebb1a643997f419b315ddba19e6f5411e1ce7f810ba6d3617ce72823092f363"
        );
    }

    #[test]
    fn piecewise_input_equals_joined_input() {
        let joined = hmac_sha256(b"k", &[b"abc.def"]).expect("hmac");
        let pieces = hmac_sha256(b"k", &[b"abc", b".", b"def"]).expect("hmac");
        assert_eq!(joined, pieces);
    }

    #[test]
    fn matching_needs_an_exact_tag() {
        let tag = [7u8; TAG_LEN];
        assert!(any_tag_matches(&[tag], &[vec![1; TAG_LEN], tag.to_vec()]));
        assert!(!any_tag_matches(&[tag], &[tag[..31].to_vec()]));
        assert!(!any_tag_matches(&[], &[tag.to_vec()]));
        assert!(!any_tag_matches(&[tag], &[]));
    }

    #[test]
    fn signature_decoding_rejects_bad_text_and_short_tags() {
        assert!(decode_signature(&"ab".repeat(32), Encoding::Hex).is_some());
        assert!(decode_signature(&"AB".repeat(32), Encoding::Hex).is_some());
        assert!(decode_signature(&"ab".repeat(31), Encoding::Hex).is_none());
        assert!(decode_signature("zz", Encoding::Hex).is_none());
        assert!(decode_signature("abc", Encoding::Hex).is_none());
        assert!(decode_signature("!!!", Encoding::Base64).is_none());
        assert!(decode_signature(&base64_encode(&[0; 32]), Encoding::Base64).is_some());
    }

    #[test]
    fn standard_webhooks_key_handles_prefix_and_garbage() {
        let with = standard_webhooks_key(&Secret::from_str("whsec_AAEC")).expect("key");
        let without = standard_webhooks_key(&Secret::from_str("AAEC")).expect("key");
        assert_eq!(with, vec![0, 1, 2]);
        assert_eq!(with, without);
        assert!(standard_webhooks_key(&Secret::from_str("whsec_!!")).is_none());
        assert!(standard_webhooks_key(&Secret::from_str("whsec_")).is_none());
        assert!(standard_webhooks_key(&Secret::new(vec![0xff, 0xfe])).is_none());
    }
}

//! `application/x-www-form-urlencoded` decoding.
//!
//! Slack posts interactivity callbacks as a form with one `payload` field, and some relays
//! post forms instead of JSON. The rules follow the WHATWG URL standard's
//! "application/x-www-form-urlencoded parser", because that is what senders implement:
//! - pairs are separated by `&`; empty pairs are skipped;
//! - the name ends at the first `=` (a pair without `=` is a name with an empty value);
//! - `+` means a space, and is replaced *before* percent-decoding so that `%2B` stays `+`;
//! - `%` followed by two hex digits is that byte; any other `%` is kept literally rather than
//!   rejecting the body, since a stray `%` must not lose the whole webhook;
//! - the decoded bytes are UTF-8, with invalid sequences replaced by U+FFFD.

/// Decodes a form body into its `(name, value)` pairs, in order, duplicates kept.
pub(crate) fn decode(body: &[u8]) -> Vec<(String, String)> {
    body.split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.iter().position(|&b| b == b'=') {
            Some(eq) => {
                let (name, rest) = pair.split_at(eq);
                // `rest` starts with the `=` itself.
                (
                    decode_component(name),
                    decode_component(rest.get(1..).unwrap_or(&[])),
                )
            }
            None => (decode_component(pair), String::new()),
        })
        .collect()
}

/// Returns the value of the first field called `name`.
pub(crate) fn field<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Decodes one name or value: `+` to space, then `%XX` escapes.
pub(crate) fn decode_component(input: &[u8]) -> String {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while let Some(&b) = input.get(i) {
        match b {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hi = input.get(i + 1).and_then(|&c| hex_value(c));
                let lo = input.get(i + 2).and_then(|&c| hex_value(c));
                if let (Some(hi), Some(lo)) = (hi, lo) {
                    out.push((hi << 4) | lo);
                    i += 3;
                } else {
                    // Not an escape: keep the `%` and look at the next byte normally, so
                    // `%%41` decodes to `%A`.
                    out.push(b'%');
                    i += 1;
                }
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn plus_is_space() {
        assert_eq!(decode_component(b"a+b++c"), "a b  c");
    }

    #[test]
    fn percent_20_is_space() {
        assert_eq!(decode_component(b"a%20b"), "a b");
    }

    #[test]
    fn percent_2b_is_a_literal_plus() {
        assert_eq!(decode_component(b"1%2B1+%3D+2"), "1+1 = 2");
        assert_eq!(decode_component(b"%2b"), "+");
    }

    #[test]
    fn escaped_percent_sign() {
        assert_eq!(decode_component(b"100%25"), "100%");
    }

    #[test]
    fn malformed_percent_sequences_are_kept_literally() {
        assert_eq!(decode_component(b"%"), "%");
        assert_eq!(decode_component(b"abc%"), "abc%");
        assert_eq!(decode_component(b"%4"), "%4");
        assert_eq!(decode_component(b"%zz"), "%zz");
        assert_eq!(decode_component(b"%4g"), "%4g");
        assert_eq!(decode_component(b"%%41"), "%A");
        assert_eq!(decode_component(b"%+"), "% ");
    }

    #[test]
    fn multibyte_utf8_escapes() {
        assert_eq!(decode_component(b"caf%C3%A9+%F0%9F%92%8D"), "café 💍");
    }

    #[test]
    fn invalid_utf8_is_replaced_not_rejected() {
        assert_eq!(decode_component(b"a%FFb"), "a\u{FFFD}b");
        assert_eq!(decode_component(&[b'a', 0xC3]), "a\u{FFFD}");
    }

    #[test]
    fn splits_pairs_and_keeps_order_and_duplicates() {
        assert_eq!(
            decode(b"a=1&b=two+words&a=3"),
            pairs(&[("a", "1"), ("b", "two words"), ("a", "3")])
        );
    }

    #[test]
    fn empty_pairs_missing_values_and_extra_equals() {
        assert_eq!(
            decode(b"&&flag&x=&y=a=b&=v&"),
            pairs(&[("flag", ""), ("x", ""), ("y", "a=b"), ("", "v")])
        );
        assert!(decode(b"").is_empty());
    }

    #[test]
    fn names_are_decoded_too() {
        assert_eq!(decode(b"first%20name=Ann"), pairs(&[("first name", "Ann")]));
    }

    #[test]
    fn encoded_ampersand_and_equals_do_not_split() {
        let decoded = decode(b"payload=%7B%22a%22%3A%22x%26y%3Dz%22%7D");
        assert_eq!(decoded, pairs(&[("payload", r#"{"a":"x&y=z"}"#)]));
        assert_eq!(field(&decoded, "payload"), Some(r#"{"a":"x&y=z"}"#));
        assert_eq!(field(&decoded, "missing"), None);
    }
}

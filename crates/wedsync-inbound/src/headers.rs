//! Case-insensitive header lookup over whatever map the HTTP layer hands us.
//!
//! The verifiers never depend on an HTTP crate: callers adapt their framework's
//! header map through [`Headers`], and the common owned/borrowed shapes are
//! implemented here so tests and small services need no glue.

use std::collections::HashMap;
use std::hash::BuildHasher;

/// Header lookup with case-insensitive names.
///
/// HTTP header names are case-insensitive (RFC 9110 §5.1), and providers
/// document them in mixed case (`X-HubSpot-Signature-v3`) while proxies often
/// lowercase them, so every implementation must match names ignoring ASCII case.
///
/// When a name occurs more than once, implementations return the first
/// occurrence. Verification does not rely on which duplicate wins: a forged
/// duplicate still has to carry a valid signature.
pub trait Headers {
    /// Returns the value of the first header called `name` (ASCII
    /// case-insensitive), or `None` when the request does not carry it.
    fn get(&self, name: &str) -> Option<&str>;
}

impl<H: Headers + ?Sized> Headers for &H {
    fn get(&self, name: &str) -> Option<&str> {
        (**self).get(name)
    }
}

impl Headers for [(&str, &str)] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| *value)
    }
}

impl<const N: usize> Headers for [(&str, &str); N] {
    fn get(&self, name: &str) -> Option<&str> {
        // Fully qualified: slices have an inherent `get(index)` that would win.
        <[(&str, &str)] as Headers>::get(self.as_slice(), name)
    }
}

impl Headers for Vec<(&str, &str)> {
    fn get(&self, name: &str) -> Option<&str> {
        <[(&str, &str)] as Headers>::get(self.as_slice(), name)
    }
}

impl Headers for [(String, String)] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

impl Headers for Vec<(String, String)> {
    fn get(&self, name: &str) -> Option<&str> {
        <[(String, String)] as Headers>::get(self.as_slice(), name)
    }
}

/// Expects lowercase keys (what `http::HeaderMap` and most proxies produce),
/// so the common case is one hash lookup; a key stored in another case is
/// still found by a linear scan rather than silently reported missing.
impl<S: BuildHasher> Headers for HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<&str> {
        let lowered = name.to_ascii_lowercase();
        HashMap::get(self, &lowered)
            .map(String::as_str)
            .or_else(|| {
                self.iter()
                    .find(|(key, _)| key.eq_ignore_ascii_case(name))
                    .map(|(_, value)| value.as_str())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::Headers;
    use std::collections::HashMap;

    #[test]
    fn slice_lookup_ignores_case_and_returns_first_duplicate() {
        let headers: &[(&str, &str)] = &[("Webhook-Id", "one"), ("webhook-id", "two")];
        assert_eq!(Headers::get(headers, "WEBHOOK-ID"), Some("one"));
        assert_eq!(Headers::get(headers, "webhook-timestamp"), None);
    }

    #[test]
    fn array_and_vec_lookups_work() {
        let array = [("X-Slack-Signature", "v0=ab")];
        assert_eq!(Headers::get(&array, "x-slack-signature"), Some("v0=ab"));
        let owned = vec![("Stripe-Signature".to_string(), "t=1".to_string())];
        assert_eq!(Headers::get(&owned, "stripe-signature"), Some("t=1"));
        let borrowed = vec![("A", "b")];
        assert_eq!(Headers::get(&borrowed, "a"), Some("b"));
    }

    #[test]
    fn hashmap_lookup_lowercases_the_query_and_falls_back_to_a_scan() {
        let mut map = HashMap::new();
        map.insert("x-hubspot-signature-v3".to_string(), "sig".to_string());
        map.insert("X-Odd-Case".to_string(), "odd".to_string());
        assert_eq!(Headers::get(&map, "X-HubSpot-Signature-v3"), Some("sig"));
        assert_eq!(Headers::get(&map, "x-odd-case"), Some("odd"));
        assert_eq!(Headers::get(&map, "missing"), None);
    }
}

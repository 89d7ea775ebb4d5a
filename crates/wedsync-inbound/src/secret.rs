//! Signing-secret holder that cannot leak through logs.

use std::fmt;

/// Raw bytes of a webhook signing secret.
///
/// The bytes are kept exactly as configured; each [`Scheme`](crate::Scheme)
/// decides how to turn them into an HMAC key (Stripe uses the string as is,
/// `whsec_` prefix included; Standard Webhooks strips `whsec_` and
/// base64-decodes). `Debug` prints `Secret(***)` and there is deliberately no
/// `Display`, no `PartialEq` (a non-constant-time comparison) and no public
/// accessor, so a secret cannot end up in a log line, an error message or an
/// API response by accident (product rule: secrets never appear in logs).
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps raw secret bytes (for example a key loaded from a vault).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    /// Wraps a secret given as text, such as `whsec_…` or a Slack signing
    /// secret; the UTF-8 bytes of `secret` are stored unchanged.
    // An inherent constructor rather than `FromStr`: parsing cannot fail, and
    // `str::parse::<Secret>()` would suggest validation that does not happen.
    #[allow(clippy::should_implement_trait)]
    pub fn from_str(secret: &str) -> Self {
        Self(secret.as_bytes().to_vec())
    }

    /// The raw bytes, for this crate's HMAC code only.
    pub(crate) fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Drop for Secret {
    /// Best-effort wipe so the key does not linger in freed memory. Without
    /// `unsafe` volatile writes the compiler may still elide it; `black_box`
    /// makes that unlikely. Copies made by the caller are not covered.
    fn drop(&mut self) {
        self.0.iter_mut().for_each(|byte| *byte = 0);
        std::hint::black_box(&mut self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn debug_never_shows_the_bytes() {
        let secret = Secret::from_str("whsec_super-secret-value");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert_eq!(
            format!("{:#?}", vec![secret.clone()]),
            "[\n    Secret(***),\n]"
        );
    }

    #[test]
    fn constructors_keep_bytes_unchanged() {
        assert_eq!(Secret::new(vec![0, 255, 7]).expose(), &[0, 255, 7]);
        assert_eq!(Secret::from_str("whsec_abc").expose(), b"whsec_abc");
    }
}

//! Why a delivery was refused.

/// Why [`verify`](crate::verify) refused a request.
///
/// Messages name headers and describe the defect but never echo header
/// values, signatures or secrets: rejections are logged, and attacker-chosen
/// text in logs invites log injection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// A header the scheme requires is absent; carries the header name.
    #[error("missing required header {0}")]
    MissingHeader(String),
    /// A required header is present but cannot be parsed (empty, bad
    /// encoding, wrong length, no supported signature entry, …); carries the
    /// header name and what was wrong.
    #[error("malformed header {0}")]
    MalformedHeader(String),
    /// The signed timestamp is older than the tolerance allows (possible replay).
    #[error("timestamp is older than the allowed tolerance")]
    StaleTimestamp,
    /// The signed timestamp is further in the future than the tolerance allows.
    #[error("timestamp is further in the future than the allowed tolerance")]
    FutureTimestamp,
    /// No configured secret produced any of the signatures carried by the request.
    #[error("signature does not match")]
    BadSignature,
    /// The configured secrets are unusable: none given, one empty, or (for
    /// Standard Webhooks) not valid `whsec_<base64>`. A configuration error,
    /// not the sender's fault.
    #[error("webhook secret is missing or invalid")]
    InvalidSecret,
    /// A [`GenericHmac`](crate::GenericHmac) configuration is unusable;
    /// carries what is wrong with it. A configuration error.
    #[error("invalid generic HMAC configuration: {0}")]
    InvalidTemplate(String),
}

impl Rejection {
    /// Stable snake_case code for logs and metrics labels; unlike the
    /// `Display` text it will not change wording between releases.
    pub fn reason_code(&self) -> &'static str {
        match self {
            Self::MissingHeader(_) => "missing_header",
            Self::MalformedHeader(_) => "malformed_header",
            Self::StaleTimestamp => "stale_timestamp",
            Self::FutureTimestamp => "future_timestamp",
            Self::BadSignature => "bad_signature",
            Self::InvalidSecret => "invalid_secret",
            Self::InvalidTemplate(_) => "invalid_template",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Rejection;

    #[test]
    fn reason_codes_are_stable_snake_case() {
        let cases = [
            (Rejection::MissingHeader("a".into()), "missing_header"),
            (Rejection::MalformedHeader("a".into()), "malformed_header"),
            (Rejection::StaleTimestamp, "stale_timestamp"),
            (Rejection::FutureTimestamp, "future_timestamp"),
            (Rejection::BadSignature, "bad_signature"),
            (Rejection::InvalidSecret, "invalid_secret"),
            (Rejection::InvalidTemplate("a".into()), "invalid_template"),
        ];
        for (rejection, code) in cases {
            assert_eq!(rejection.reason_code(), code);
        }
    }

    #[test]
    fn display_names_the_header() {
        let text = Rejection::MissingHeader("stripe-signature".into()).to_string();
        assert_eq!(text, "missing required header stripe-signature");
    }
}

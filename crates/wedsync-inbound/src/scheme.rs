//! Which signature convention a source uses, as stored in integration config.

use serde::{Deserialize, Serialize};

/// A provider's webhook signature convention.
///
/// Serialises with stable snake_case tags (`"stripe"`, `"standard_webhooks"`,
/// `{"generic": {…}}`, …) so it can live in integration configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scheme {
    /// `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]`; hex HMAC of
    /// `"{t}.{body}"`, keyed with the secret string as is (`whsec_` prefix
    /// included). Only `v1` entries count; `v0` and unknown keys are ignored.
    #[serde(rename = "stripe")]
    Stripe,
    /// Standard Webhooks / Svix: `webhook-id`, `webhook-timestamp`,
    /// `webhook-signature` (or the `svix-*` names); base64 HMAC of
    /// `"{id}.{timestamp}.{body}"` keyed with the base64-decoded
    /// `whsec_<base64>` secret. Space-separated `v1,<b64>` entries, any one
    /// may match; `v1a` (ed25519) and unknown versions are ignored.
    #[serde(rename = "standard_webhooks")]
    StandardWebhooks,
    /// HubSpot signature v3: `X-HubSpot-Signature-v3` is base64 HMAC of
    /// `method + uri + body + timestamp`, with `X-HubSpot-Request-Timestamp`
    /// in milliseconds. The URI gets HubSpot's documented partial
    /// percent-decoding (`%3A` → `:` and eleven others) before signing.
    #[serde(rename = "hubspot_v3")]
    HubSpotV3,
    /// Slack request signing: `X-Slack-Signature: v0=<hex>` over
    /// `"v0:{X-Slack-Request-Timestamp}:{body}"`, timestamp in seconds.
    #[serde(rename = "slack_v0")]
    SlackV0,
    /// PagerDuty v3: `X-PagerDuty-Signature` holds comma-separated
    /// `v1=<hex>` entries (several during rotation), hex HMAC of the raw body.
    /// PagerDuty signs no timestamp, so no freshness check is possible.
    #[serde(rename = "pagerduty_v3")]
    PagerDutyV3,
    /// Twilio: `X-Twilio-Signature` is base64 HMAC-SHA1, keyed with the account's
    /// auth token, of the full URL Twilio called followed, for form posts, by every
    /// parameter's name and value sorted by name. Twilio signs no timestamp.
    #[serde(rename = "twilio")]
    Twilio,
    /// Any other single-signature HMAC-SHA256 convention, described by
    /// [`GenericHmac`].
    #[serde(rename = "generic")]
    Generic(GenericHmac),
}

/// How a generic source signs its deliveries.
///
/// `signed_content` is a template over the placeholders `{body}` (raw body
/// bytes, required), `{timestamp}` (the timestamp header exactly as sent, in
/// unix seconds), `{id}` (the id header exactly as sent), `{method}` and
/// `{url}` (the request's method and URL as given to
/// [`InboundRequest`](crate::InboundRequest)); everything else is literal text.
/// Braces cannot be escaped: any other `{`/`}` makes the template invalid.
///
/// `timestamp_header` must be set exactly when the template uses
/// `{timestamp}`, and `id_header` exactly when it uses `{id}`: an unsigned
/// timestamp or id gives no replay protection and no trustworthy delivery id,
/// so configuring one without signing it is rejected as a mistake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenericHmac {
    /// Header carrying the signature, e.g. `X-Hub-Signature-256`.
    pub signature_header: String,
    /// Literal text before the encoded signature, e.g. `sha256=`; may be empty.
    #[serde(default)]
    pub prefix: String,
    /// How the 32-byte HMAC is written after the prefix.
    pub encoding: Encoding,
    /// Template of the signed bytes, e.g. `{body}` or `{timestamp}.{body}`.
    pub signed_content: String,
    /// Header with the unix-seconds timestamp; required iff the template uses `{timestamp}`.
    #[serde(default)]
    pub timestamp_header: Option<String>,
    /// Header with the delivery id; required iff the template uses `{id}`.
    #[serde(default)]
    pub id_header: Option<String>,
}

impl GenericHmac {
    /// GitHub's convention: `X-Hub-Signature-256: sha256=<hex>` over the raw
    /// body (also used by many CRMs and relays).
    pub fn github_sha256() -> Self {
        Self {
            signature_header: "X-Hub-Signature-256".to_owned(),
            prefix: "sha256=".to_owned(),
            encoding: Encoding::Hex,
            signed_content: "{body}".to_owned(),
            timestamp_header: None,
            id_header: None,
        }
    }
}

/// Text encoding of a signature inside a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// Hexadecimal, either case accepted.
    Hex,
    /// Standard base64 alphabet with padding (RFC 4648 §4).
    Base64,
}

#[cfg(test)]
mod tests {
    use super::{Encoding, GenericHmac, Scheme};

    #[test]
    fn schemes_round_trip_through_json_with_stable_tags() {
        let json = serde_json::to_string(&Scheme::HubSpotV3).expect("serialise");
        assert_eq!(json, "\"hubspot_v3\"");
        let generic = Scheme::Generic(GenericHmac::github_sha256());
        let json = serde_json::to_string(&generic).expect("serialise");
        let back: Scheme = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, generic);
    }

    #[test]
    fn generic_config_defaults_optional_fields() {
        let json = r#"{"generic":{"signature_header":"X-Sig","encoding":"base64","signed_content":"{body}"}}"#;
        let scheme: Scheme = serde_json::from_str(json).expect("deserialise");
        let Scheme::Generic(config) = scheme else {
            panic!("expected a generic scheme");
        };
        assert_eq!(config.prefix, "");
        assert_eq!(config.encoding, Encoding::Base64);
        assert_eq!(config.timestamp_header, None);
    }

    #[test]
    fn unknown_generic_fields_are_refused() {
        let json = r#"{"generic":{"signature_header":"X","encoding":"hex","signed_content":"{body}","algo":"md5"}}"#;
        assert!(serde_json::from_str::<Scheme>(json).is_err());
    }
}

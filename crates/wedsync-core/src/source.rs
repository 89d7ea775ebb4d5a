//! Inbound sources: where signed webhooks come from, and how each is verified.

use serde::{Deserialize, Serialize};

use crate::org::string_enum;
use crate::validate::{ValidationErrors, text};

/// The sender of a source's webhooks, which decides its signature scheme and normaliser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// Stripe (`Stripe-Signature`).
    Stripe,
    /// Any Standard Webhooks sender (`webhook-*` headers).
    StandardWebhooks,
    /// Svix-powered senders (`svix-*` headers, same scheme).
    Svix,
    /// HubSpot (signature v3).
    Hubspot,
    /// Slack (request signing v0, including interactive buttons).
    Slack,
    /// PagerDuty webhooks v3.
    Pagerduty,
    /// Tave / VSCO Workspace (generic HMAC).
    Tave,
    /// Zapier or Make relays for HoneyBook, Dubsado, Studio Ninja (generic HMAC).
    Zapier,
    /// Anything else signing with HMAC-SHA256 (configurable).
    Generic,
    /// Twilio (`X-Twilio-Signature`), for SMS status callbacks.
    Twilio,
}
string_enum!(Provider, "provider", [
    Stripe => "stripe", StandardWebhooks => "standard_webhooks", Svix => "svix", Hubspot => "hubspot",
    Slack => "slack", Pagerduty => "pagerduty", Tave => "tave", Zapier => "zapier", Generic => "generic",
    Twilio => "twilio"
]);

impl Provider {
    /// Whether the provider issues the signing secret (it must be given) rather than us.
    pub fn issues_its_own_secret(&self) -> bool {
        matches!(
            self,
            Provider::Stripe
                | Provider::Hubspot
                | Provider::Slack
                | Provider::Pagerduty
                | Provider::Twilio
        )
    }

    /// Whether the source needs a generic HMAC description.
    pub fn uses_generic_hmac(&self) -> bool {
        matches!(self, Provider::Tave | Provider::Zapier | Provider::Generic)
    }
}

/// How a generic HMAC sender signs: which header, prefix, encoding and signed content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GenericHmacConfig {
    /// The header carrying the signature, e.g. `X-Hub-Signature-256`.
    pub signature_header: String,
    /// Text before the signature in the header, e.g. `sha256=`.
    #[serde(default)]
    pub prefix: String,
    /// `hex` or `base64`.
    #[serde(default = "default_encoding")]
    pub encoding: String,
    /// What is signed: `{body}`, `{timestamp}.{body}`, `{id}.{timestamp}.{body}`…
    #[serde(default = "default_template")]
    pub signed_content: String,
    /// The header with the timestamp, when the template uses `{timestamp}`.
    #[serde(default)]
    pub timestamp_header: Option<String>,
    /// The header with the delivery id, when the template uses `{id}`.
    #[serde(default)]
    pub id_header: Option<String>,
    /// A JSON pointer to the sender's event id in the body (for deduplication), e.g. `/id`.
    #[serde(default)]
    pub event_id_pointer: Option<String>,
}

fn default_encoding() -> String {
    "hex".into()
}

fn default_template() -> String {
    "{body}".into()
}

impl GenericHmacConfig {
    /// Checks the description is usable, naming bad fields under `prefix`.
    pub fn validate(&self, errors: &mut ValidationErrors, prefix: &str) {
        text(
            errors,
            &format!("{prefix}.signature_header"),
            &self.signature_header,
            100,
        );
        if !matches!(self.encoding.as_str(), "hex" | "base64") {
            errors.add(format!("{prefix}.encoding"), "must be hex or base64");
        }
        if !self.signed_content.contains("{body}") {
            errors.add(format!("{prefix}.signed_content"), "must include {body}");
        }
        if self.signed_content.contains("{timestamp}") && self.timestamp_header.is_none() {
            errors.add(
                format!("{prefix}.timestamp_header"),
                "is needed when signed_content uses {timestamp}",
            );
        }
        if self.signed_content.contains("{id}") && self.id_header.is_none() {
            errors.add(
                format!("{prefix}.id_header"),
                "is needed when signed_content uses {id}",
            );
        }
        if let Some(p) = &self.event_id_pointer
            && !p.starts_with('/')
        {
            errors.add(
                format!("{prefix}.event_id_pointer"),
                "must be a JSON pointer such as /id",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_config_names_its_problems() {
        let cfg = GenericHmacConfig {
            signature_header: String::new(),
            prefix: String::new(),
            encoding: "rot13".into(),
            signed_content: "{timestamp}".into(),
            timestamp_header: None,
            id_header: None,
            event_id_pointer: Some("id".into()),
        };
        let mut errors = ValidationErrors::default();
        cfg.validate(&mut errors, "generic");
        let fields: Vec<_> = errors.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "generic.signature_header",
                "generic.encoding",
                "generic.signed_content",
                "generic.timestamp_header",
                "generic.event_id_pointer"
            ]
        );
    }

    #[test]
    fn providers_round_trip() {
        for p in Provider::ALL {
            assert_eq!(p.as_str().parse::<Provider>(), Ok(*p));
        }
    }
}

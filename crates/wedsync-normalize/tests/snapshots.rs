//! Table-driven snapshot tests: each realistic fixture in `tests/fixtures/` is normalised and
//! the whole `Normalized` result is compared with its reviewed snapshot in
//! `tests/snapshots/`.

use chrono::{DateTime, TimeZone, Utc};
use wedsync_normalize::{Input, Normalized, Provider, normalize};

const JSON: &str = "application/json";
const FORM: &str = "application/x-www-form-urlencoded";

/// One fixture and how it arrives.
struct Case {
    /// Snapshot name.
    name: &'static str,
    provider: Provider,
    content_type: &'static str,
    fixture: &'static str,
    delivery_id: Option<&'static str>,
    event_id_pointer: Option<&'static str>,
}

const fn case(
    name: &'static str,
    provider: Provider,
    content_type: &'static str,
    fixture: &'static str,
) -> Case {
    Case {
        name,
        provider,
        content_type,
        fixture,
        delivery_id: None,
        event_id_pointer: None,
    }
}

const CASES: &[Case] = &[
    case(
        "twilio_message_delivered",
        Provider::Twilio,
        FORM,
        "twilio_message_delivered.form",
    ),
    case(
        "stripe_payment_intent_succeeded",
        Provider::Stripe,
        JSON,
        "stripe_payment_intent_succeeded.json",
    ),
    case(
        "stripe_charge_refunded",
        Provider::Stripe,
        JSON,
        "stripe_charge_refunded.json",
    ),
    case(
        "stripe_payment_intent_payment_failed",
        Provider::Stripe,
        "application/json; charset=utf-8",
        "stripe_payment_intent_payment_failed.json",
    ),
    case(
        "stripe_checkout_session_completed",
        Provider::Stripe,
        JSON,
        "stripe_checkout_session_completed.json",
    ),
    case(
        "stripe_unknown_customer_updated",
        Provider::Stripe,
        JSON,
        "stripe_customer_updated_unknown.json",
    ),
    case(
        "pagerduty_incident_acknowledged",
        Provider::Pagerduty,
        JSON,
        "pagerduty_incident_acknowledged.json",
    ),
    case(
        "pagerduty_incident_resolved",
        Provider::Pagerduty,
        JSON,
        "pagerduty_incident_resolved.json",
    ),
    case(
        "pagerduty_unknown_incident_annotated",
        Provider::Pagerduty,
        JSON,
        "pagerduty_incident_annotated_unknown.json",
    ),
    case(
        "slack_block_actions_acknowledge",
        Provider::Slack,
        FORM,
        "slack_block_actions_acknowledge.form",
    ),
    case(
        "slack_block_actions_resolve",
        Provider::Slack,
        FORM,
        "slack_block_actions_resolve.form",
    ),
    case(
        "slack_slash_command",
        Provider::Slack,
        FORM,
        "slack_slash_command.form",
    ),
    case(
        "slack_events_api_json",
        Provider::Slack,
        JSON,
        "slack_events_api.json",
    ),
    case(
        "hubspot_batch",
        Provider::Hubspot,
        JSON,
        "hubspot_batch.json",
    ),
    Case {
        delivery_id: Some("msg_2hYQ8mZr6W1c3KpD9xT0aB4fV7e"),
        ..case(
            "standard_webhooks_booking_created",
            Provider::StandardWebhooks,
            JSON,
            "standard_webhooks_booking_created.json",
        )
    },
    Case {
        delivery_id: Some("msg_2hYR0nPq7X2d4LqE0yU1bC5gW8f"),
        ..case(
            "svix_unknown_type",
            Provider::Svix,
            JSON,
            "svix_unknown_type.json",
        )
    },
    case(
        "zapier_honeybook_project_booked",
        Provider::Zapier,
        JSON,
        "zapier_honeybook_project_booked.json",
    ),
    case(
        "zapier_dubsado_unknown_event",
        Provider::Zapier,
        JSON,
        "zapier_dubsado_unknown_event.json",
    ),
    case(
        "zapier_form_payment_received",
        Provider::Zapier,
        FORM,
        "zapier_form_payment_received.form",
    ),
    case(
        "tave_job_booked",
        Provider::Tave,
        JSON,
        "tave_job_booked.json",
    ),
    Case {
        event_id_pointer: Some("/meta/delivery"),
        ..case(
            "generic_studio_ninja_pointer",
            Provider::Generic,
            JSON,
            "generic_studio_ninja_pointer.json",
        )
    },
];

fn received_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 6, 20, 12, 0, 0)
        .single()
        .expect("valid fixed receive time")
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn run(case: &Case) -> Normalized {
    let body = fixture(case.fixture);
    let input = Input {
        provider: case.provider,
        content_type: case.content_type,
        body: &body,
        delivery_id: case.delivery_id,
        event_id_pointer: case.event_id_pointer,
        received_at: received_at(),
    };
    normalize(&input).unwrap_or_else(|e| panic!("{}: {e}", case.name))
}

#[test]
fn fixtures_match_snapshots() {
    for case in CASES {
        let normalized = run(case);
        insta::with_settings!({
            description => format!("{} fixture {}", case.provider, case.fixture),
            omit_expression => true,
            // Key order depends on serde_json's `preserve_order` feature, which other crates
            // in a workspace may switch on; snapshots compare contents, not order.
            sort_maps => true,
        }, {
            insta::assert_json_snapshot!(case.name, normalized);
        });
    }
}

#[test]
fn every_provider_has_a_fixture() {
    for provider in Provider::ALL {
        assert!(
            CASES.iter().any(|c| c.provider == provider),
            "no fixture for {provider}"
        );
    }
}

#[test]
fn normalizing_is_deterministic() {
    for case in CASES {
        assert_eq!(run(case), run(case), "{}", case.name);
    }
}

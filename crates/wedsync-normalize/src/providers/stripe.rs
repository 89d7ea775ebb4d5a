//! Stripe event objects: `{id, type, created, data: {object}}`.
//!
//! | Stripe `type` | canonical |
//! |---|---|
//! | `payment_intent.succeeded`, `charge.succeeded`, `checkout.session.completed` (when its `payment_status` is `paid`), `checkout.session.async_payment_succeeded`, `invoice.paid` | `payment.completed` |
//! | `payment_intent.payment_failed`, `charge.failed`, `checkout.session.async_payment_failed`, `invoice.payment_failed` | `payment.failed` |
//! | `charge.refunded` | `payment.refunded` |
//! | anything else | `stripe.raw` (whole event as `data`) |
//!
//! - `subject` is `data.object.id`; `time` is `created` (unix seconds).
//! - `couple_ref` is `data.object.metadata.couple_id` (or `wedsync_couple_id`), `booking_ref`
//!   is `metadata.booking_id` (or `wedsync_booking_id`): WedSync puts them there when it
//!   creates the payment, so the event routes to the right couple without a lookup. They are
//!   read for `stripe.raw` events too (e.g. `customer.updated`).
//! - The dedupe key is `stripe:{id}`: Stripe redelivers an event with the same `evt_` id.
//!
//! A checkout completed with a delayed payment method (bank debits) has `payment_status`
//! `unpaid`: nothing is paid yet, so it stays `stripe.raw`; its `async_payment_succeeded` or
//! `async_payment_failed` follows.
//!
//! Stripe sends one payment under several events (`payment_intent.succeeded`,
//! `charge.succeeded`, `checkout.session.completed`, `invoice.paid` for the same payment), so
//! mapped `data` carries `payment_id` — the payment intent, the same in every event of one
//! payment (an invoice's is under `payments` on newer API versions; a subscription's
//! checkout session names only its invoice, and an object with neither gives its own id) —
//! with `payment_intent` and `provider_event_type`, for subscribers that must count a payment
//! once. Journeys do: each starts or moves once per `payment_id`. A failed attempt, reported
//! as `payment_intent.payment_failed` and `charge.failed`, carries `failed_charge` (the
//! attempt's charge) the same way: journeys act once per failed attempt, and again for the
//! next attempt that fails.

use serde_json::{Map, Value, json};

use crate::common::{body_hash_key, id_text, parse_json, provider_key, refs, str_at};
use crate::time::{self, Unit};
use crate::{Canonical, Input, NormalizeError, Normalized, Provider};

/// Which amount field carries the event's amount, per canonical type.
#[derive(Debug, Clone, Copy)]
enum AmountRule {
    /// What was actually received: `amount_received` (payment intent), `amount` (charge),
    /// `amount_paid` (invoice), `amount_total` (checkout session).
    Received,
    /// What was attempted. `amount_received` would be 0 on a failed payment intent, which is
    /// useless to a "your payment of £X failed" message: `amount` (payment intent, charge),
    /// `amount_due` (invoice), `amount_total` (checkout session).
    Attempted,
    /// `amount_refunded`: on a charge this is the running total refunded so far.
    Refunded,
}

impl AmountRule {
    fn keys(self) -> &'static [&'static str] {
        match self {
            AmountRule::Received => &["amount_received", "amount", "amount_paid", "amount_total"],
            AmountRule::Attempted => &["amount", "amount_due", "amount_total"],
            AmountRule::Refunded => &["amount_refunded"],
        }
    }
}

/// The mapping table above.
fn canonical_type(stripe_type: &str, object: Option<&Value>) -> Option<(&'static str, AmountRule)> {
    Some(match stripe_type {
        "checkout.session.completed"
            if object.and_then(|o| str_at(o, "payment_status")) != Some("paid") =>
        {
            return None;
        }
        "payment_intent.succeeded"
        | "charge.succeeded"
        | "checkout.session.completed"
        | "checkout.session.async_payment_succeeded"
        | "invoice.paid" => ("payment.completed", AmountRule::Received),
        "payment_intent.payment_failed"
        | "charge.failed"
        | "checkout.session.async_payment_failed"
        | "invoice.payment_failed" => ("payment.failed", AmountRule::Attempted),
        "charge.refunded" => ("payment.refunded", AmountRule::Refunded),
        _ => return None,
    })
}

pub(crate) fn normalize(input: &Input<'_>) -> Result<Normalized, NormalizeError> {
    let event = parse_json(Provider::Stripe, input.body)?;
    if !event.is_object() {
        return Err(NormalizeError::Malformed(
            "stripe body is not a json object".to_owned(),
        ));
    }
    let stripe_type = str_at(&event, "type").ok_or_else(|| {
        NormalizeError::Malformed("stripe event has no string \"type\" field".to_owned())
    })?;
    let object = event.pointer("/data/object").filter(|o| o.is_object());

    let dedupe_key = match event.get("id").and_then(id_text) {
        Some(id) => provider_key(Provider::Stripe, &id),
        None => body_hash_key(input.body),
    };
    let time = event
        .get("created")
        .and_then(|v| time::from_json(v, Unit::Seconds))
        .unwrap_or(input.received_at);
    let subject = object.and_then(|o| o.get("id")).and_then(id_text);
    let metadata = object.and_then(|o| o.get("metadata"));
    let (couple_ref, booking_ref) = match metadata {
        Some(m) => refs(&[m]),
        None => (None, None),
    };

    let (event_type, data) = match canonical_type(stripe_type, object) {
        Some((canonical, rule)) => {
            let object = object.ok_or_else(|| {
                NormalizeError::Malformed(format!("stripe {stripe_type} event has no data.object"))
            })?;
            (
                canonical.to_owned(),
                payment_data(stripe_type, canonical, rule, object),
            )
        }
        None => (Provider::Stripe.raw_event_type(), event.clone()),
    };

    Ok(Normalized {
        dedupe_key,
        events: vec![Canonical {
            event_type,
            subject,
            time,
            data,
            couple_ref,
            booking_ref,
        }],
    })
}

/// The normalised payment `data`:
/// `{amount_minor, currency, customer, [receipt_email], [customer_email], provider_object_id,
/// [payment_intent], provider_event_type, [failure_code, failure_message], metadata}`.
fn payment_data(stripe_type: &str, canonical: &str, rule: AmountRule, object: &Value) -> Value {
    // Money is exact: only integer minor units are taken, never floats.
    let amount_minor = rule
        .keys()
        .iter()
        .find_map(|k| object.get(*k).and_then(Value::as_i64));
    // Stripe writes ISO 4217 codes in lowercase; the rest of WedSync uses uppercase.
    let currency = str_at(object, "currency").map(str::to_ascii_uppercase);
    // `customer` is an id, or the whole customer when the webhook endpoint expands it.
    let customer = object.get("customer").and_then(|c| match c {
        Value::Object(_) => c.get("id").and_then(id_text),
        other => id_text(other),
    });

    let mut data = Map::new();
    data.insert("amount_minor".into(), json!(amount_minor));
    data.insert("currency".into(), json!(currency));
    data.insert("customer".into(), json!(customer));
    if let Some(email) = str_at(object, "receipt_email") {
        data.insert("receipt_email".into(), json!(email));
    }
    // Checkout sessions usually leave `customer_email` null and put what the buyer typed in
    // `customer_details.email`; both mean the payer's address.
    let customer_email = str_at(object, "customer_email").or_else(|| {
        object
            .pointer("/customer_details/email")
            .and_then(Value::as_str)
    });
    if let Some(email) = customer_email {
        data.insert("customer_email".into(), json!(email));
    }
    data.insert(
        "provider_object_id".into(),
        json!(object.get("id").and_then(id_text)),
    );
    // Lets subscribers tie a charge or invoice back to its payment intent and count one
    // payment once.
    // Invoices on API versions from 2025-03-31 name it under `payments` instead.
    let payment_intent = object
        .get("payment_intent")
        .or_else(|| object.pointer("/payments/data/0/payment/payment_intent"))
        .and_then(|p| match p {
            Value::Object(_) => p.get("id").and_then(id_text),
            other => id_text(other),
        });
    // A subscription's checkout session names no payment intent, only its first invoice.
    let payment_id = if stripe_type.starts_with("payment_intent.") {
        object.get("id").and_then(id_text)
    } else {
        payment_intent
            .clone()
            .or_else(|| {
                object
                    .get("invoice")
                    .filter(|_| stripe_type.starts_with("checkout.session."))
                    .and_then(|i| match i {
                        Value::Object(_) => i.get("id").and_then(id_text),
                        other => id_text(other),
                    })
            })
            .or_else(|| object.get("id").and_then(id_text))
    };
    if let Some(pi) = payment_intent {
        data.insert("payment_intent".into(), json!(pi));
    }
    data.insert("payment_id".into(), json!(payment_id));
    data.insert("provider_event_type".into(), json!(stripe_type));
    if canonical == "payment.failed" {
        // The decline reason is what a "please retry your payment" journey needs to say.
        let (code, message) = failure(object);
        data.insert("failure_code".into(), json!(code));
        data.insert("failure_message".into(), json!(message));
        // One failed attempt is reported as `payment_intent.payment_failed` and
        // `charge.failed`: both name its charge, which a retry with another card does not
        // share. `failed_charge` lets subscribers count the attempt once.
        let id_of = |v: &Value| match v {
            Value::Object(_) => v.get("id").and_then(id_text),
            other => id_text(other),
        };
        // The attempt's own charge: a payment intent's `last_payment_error` names it when
        // there was one (a failed 3-D Secure check has none, and `latest_charge` would then
        // be an earlier attempt's); without an error, `latest_charge`.
        let charge = if stripe_type.starts_with("charge.") {
            object.get("id").and_then(id_text)
        } else if let Some(error) = object.get("last_payment_error").filter(|e| e.is_object()) {
            error.get("charge").and_then(id_of)
        } else {
            object
                .get("latest_charge")
                .and_then(id_of)
                .or_else(|| object.get("charge").and_then(id_of))
        };
        if let Some(charge) = charge {
            data.insert("failed_charge".into(), json!(charge));
        }
    }
    let metadata = object
        .get("metadata")
        .filter(|m| m.is_object())
        .cloned()
        .unwrap_or_else(|| json!({}));
    data.insert("metadata".into(), metadata);
    Value::Object(data)
}

/// The decline code and message: payment intents keep them in `last_payment_error`, charges
/// in `failure_code` / `failure_message`; invoices carry neither.
fn failure(object: &Value) -> (Option<&str>, Option<&str>) {
    let last_error = object.get("last_payment_error");
    let code = last_error
        .and_then(|e| str_at(e, "decline_code").or_else(|| str_at(e, "code")))
        .or_else(|| str_at(object, "failure_code"));
    let message = last_error
        .and_then(|e| str_at(e, "message"))
        .or_else(|| str_at(object, "failure_message"));
    (code, message)
}

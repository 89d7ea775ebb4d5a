//! One payment, reported by its provider under several events, starts and moves each journey
//! once (after its own filters: a trigger on one of the events still fires): Stripe
//! sends a card payment as `payment_intent.succeeded`, `charge.succeeded`,
//! `checkout.session.completed` and `invoice.paid`, all `payment.completed` once normalised.
//! The payloads go through the real normaliser and the real ingest.

use serde_json::{Value, json};
use wedsync_core::clock::Clock;
use wedsync_core::notify::NotifyChannel::Email;

use super::{Ctx, ctx};

impl Ctx {
    /// Normalises a Stripe event body and stores it as a verified inbound request would be;
    /// returns its event id.
    pub(super) async fn stripe_event(&self, body: Value) -> String {
        let source = match self.stripe_source.get() {
            Some(s) => *s,
            None => {
                let s = wedsync_store::testing::source(
                    &self.store,
                    &self.org,
                    wedsync_core::source::Provider::Stripe,
                    "whsec_test",
                )
                .await
                .expect("source")
                .id;
                *self.stripe_source.get_or_init(|| s)
            }
        };
        let bytes = body.to_string().into_bytes();
        let normalized = wedsync_normalize::normalize(&wedsync_normalize::Input {
            provider: wedsync_normalize::Provider::Stripe,
            content_type: "application/json",
            body: &bytes,
            delivery_id: None,
            event_id_pointer: None,
            received_at: self.clock.now(),
        })
        .expect("normalizes");
        let ingested = self
            .store
            .ingest(
                wedsync_store::inbound::IncomingRequest {
                    source_id: source,
                    org_id: self.org,
                    headers: vec![],
                    content_type: "application/json".into(),
                    body: bytes,
                    dedupe_key: normalized.dedupe_key,
                },
                normalized
                    .events
                    .into_iter()
                    .map(|c| wedsync_store::inbound::NewEvent {
                        event_type: c.event_type,
                        subject: c.subject,
                        time: c.time,
                        data: c.data,
                        couple_ref: c.couple_ref,
                        booking_ref: c.booking_ref,
                    })
                    .collect(),
            )
            .await
            .expect("ingest");
        let wedsync_store::inbound::Ingested::Accepted { event_ids, .. } = ingested else {
            panic!("accepted")
        };
        event_ids[0].clone()
    }
}

/// A Stripe event of `kind` for the payment intent `pi` of `amount`, naming the couple (and
/// the booking, when given) in its metadata as WedSync's checkout links do.
pub(super) fn stripe(
    id: &str,
    kind: &str,
    pi: &str,
    amount: i64,
    couple: &str,
    booking: Option<&str>,
) -> Value {
    let mut metadata = json!({ "wedsync_couple_id": couple });
    if let Some(b) = booking {
        metadata["wedsync_booking_id"] = json!(b);
    }
    let object = match kind {
        "payment_intent.succeeded" => {
            json!({"id": pi, "object": "payment_intent", "amount_received": amount, "currency": "gbp"})
        }
        "charge.succeeded" => {
            json!({"id": format!("ch_{id}"), "object": "charge", "payment_intent": pi, "amount": amount, "currency": "gbp"})
        }
        "checkout.session.completed" => json!({
            "id": format!("cs_{id}"), "object": "checkout.session", "payment_intent": pi,
            "payment_status": "paid", "amount_total": amount, "currency": "gbp",
        }),
        "invoice.paid" => {
            json!({"id": format!("in_{id}"), "object": "invoice", "payment_intent": pi, "amount_paid": amount, "currency": "gbp"})
        }
        other => panic!("no fixture for {other}"),
    };
    let mut object = object;
    object["metadata"] = metadata;
    json!({ "id": id, "object": "event", "type": kind, "created": 1_800_000_000, "data": { "object": object } })
}

#[tokio::test]
async fn one_payment_reported_four_times_starts_and_resumes_journeys_once() {
    let c = ctx("2027-01-10T12:00:00Z", "2027-09-18").await;
    // A thank-you for every payment received.
    let thanks = c
        .publish(json!({
            "nodes": [
                {"id": "start", "type": "trigger", "position": {"x": 0, "y": 0}, "data": {"trigger": {"kind": "payment_received"}}},
                {"id": "thanks", "type": "email", "position": {"x": 0, "y": 1},
                 "data": {"to": "partner_a", "subject": "Payment received", "text": "Thank you"}},
                {"id": "done", "type": "end", "position": {"x": 0, "y": 2}, "data": {}}
            ],
            "edges": [
                {"id": "a", "source": "start", "target": "thanks"},
                {"id": "b", "source": "thanks", "target": "done"}
            ],
            "viewport": {"x": 0, "y": 0, "zoom": 1}
        }))
        .await;
    // Deposit, then balance: two payments to wait for, one after the other.
    let wait = |id: &str| {
        json!({"id": id, "type": "wait", "position": {"x": 0, "y": 1},
               "data": {"mode": "until_event", "event_type": "payment.completed", "timeout_seconds": 31536000}})
    };
    let email = |id: &str, subject: &str| {
        json!({"id": id, "type": "email", "position": {"x": 0, "y": 2},
               "data": {"to": "partner_a", "subject": subject, "text": "Noted"}})
    };
    let instalments = c
        .publish(json!({
            "nodes": [
                {"id": "start", "type": "trigger", "position": {"x": 0, "y": 0}, "data": {"trigger": {"kind": "manual"}}},
                wait("deposit"), email("got-deposit", "Deposit received"),
                wait("balance"), email("got-balance", "Balance received"),
                {"id": "done", "type": "end", "position": {"x": 0, "y": 5}, "data": {}}
            ],
            "edges": [
                {"id": "a", "source": "start", "target": "deposit"},
                {"id": "b", "source": "deposit", "target": "got-deposit", "sourceHandle": "event"},
                {"id": "b2", "source": "deposit", "target": "done", "sourceHandle": "timeout"},
                {"id": "c", "source": "got-deposit", "target": "balance"},
                {"id": "d", "source": "balance", "target": "got-balance", "sourceHandle": "event"},
                {"id": "d2", "source": "balance", "target": "done", "sourceHandle": "timeout"},
                {"id": "e", "source": "got-balance", "target": "done"}
            ],
            "viewport": {"x": 0, "y": 0, "zoom": 1}
        }))
        .await;
    // Started by a payment, then waiting for the next one: the payment that started it must
    // not also count as the next.
    let next_payment = c
        .publish(json!({
            "nodes": [
                {"id": "start", "type": "trigger", "position": {"x": 0, "y": 0}, "data": {"trigger": {"kind": "payment_received"}}},
                wait("next"), email("got-next", "Next payment received"),
                {"id": "done", "type": "end", "position": {"x": 0, "y": 5}, "data": {}}
            ],
            "edges": [
                {"id": "a", "source": "start", "target": "next"},
                {"id": "b", "source": "next", "target": "got-next", "sourceHandle": "event"},
                {"id": "b2", "source": "next", "target": "done", "sourceHandle": "timeout"},
                {"id": "c", "source": "got-next", "target": "done"}
            ],
            "viewport": {"x": 0, "y": 0, "zoom": 1}
        }))
        .await;
    // Filtered on the checkout's own event: it must start when that event comes, even after
    // another event of the same payment.
    let checkout_only = c
        .publish(json!({
            "nodes": [
                {"id": "start", "type": "trigger", "position": {"x": 0, "y": 0},
                 "data": {"trigger": {"kind": "event", "event_type": "payment.completed",
                                      "filter": {"provider_event_type": "checkout.session.completed"}}}},
                email("via-checkout", "Paid through checkout"),
                {"id": "done", "type": "end", "position": {"x": 0, "y": 5}, "data": {}}
            ],
            "edges": [
                {"id": "a", "source": "start", "target": "via-checkout"},
                {"id": "b", "source": "via-checkout", "target": "done"}
            ],
            "viewport": {"x": 0, "y": 0, "zoom": 1}
        }))
        .await;
    let (run, _) = c.start(&instalments, "manual:1").await;
    c.drain().await;

    // The deposit: one card payment, four events, each routed (one of them twice, as a
    // retried route job would be).
    let couple = c.couple.to_string();
    let mut events = Vec::new();
    for (n, kind) in [
        "payment_intent.succeeded",
        "charge.succeeded",
        "checkout.session.completed",
        "invoice.paid",
    ]
    .into_iter()
    .enumerate()
    {
        events.push(
            c.stripe_event(stripe(
                &format!("evt_d{n}"),
                kind,
                "pi_deposit",
                50000,
                &couple,
                None,
            ))
            .await,
        );
    }
    events.push(events[0].clone());
    for event in &events {
        c.store
            .start_journeys_for_inbound(event)
            .await
            .expect("journeys");
        c.drain().await;
    }
    assert_eq!(c.instances(&thanks).await.len(), 1, "one thank-you run");
    assert_eq!(
        c.instances(&checkout_only).await.len(),
        1,
        "the filtered trigger fired"
    );
    let next_runs = c.instances(&next_payment).await;
    assert_eq!(next_runs.len(), 1);
    assert_eq!(
        (
            next_runs[0].status.as_str(),
            next_runs[0].current_node.as_str()
        ),
        ("waiting", "next"),
        "the payment that started it is not the next one"
    );
    let (now, _) = c.instance(&run).await;
    assert_eq!(
        (now.status.as_str(), now.current_node.as_str()),
        ("waiting", "balance"),
        "the deposit's echoes must not pay the balance"
    );
    let subjects: Vec<String> = c.subjects(&c.sent(Email).await).await;
    assert_eq!(
        subjects,
        [
            "Deposit received",
            "Paid through checkout",
            "Payment received"
        ]
    );

    // The balance is another payment: it counts.
    let balance = c
        .stripe_event(stripe(
            "evt_b",
            "charge.succeeded",
            "pi_balance",
            150000,
            &couple,
            None,
        ))
        .await;
    c.store
        .start_journeys_for_inbound(&balance)
        .await
        .expect("journeys");
    c.drain().await;
    assert_eq!(c.instance(&run).await.0.status, "completed");
    assert_eq!(c.instances(&thanks).await.len(), 2);
    let next_runs = c.instances(&next_payment).await;
    assert_eq!(next_runs.len(), 2, "the balance starts its own run");
    assert!(
        next_runs.iter().any(|r| r.status == "completed"),
        "and moves the deposit's run on"
    );
}

#[tokio::test]
async fn a_failed_attempt_reported_twice_starts_one_retry_journey_and_the_next_failure_another() {
    let c = ctx("2027-01-10T12:00:00Z", "2027-09-18").await;
    let retry = c
        .publish(json!({
            "nodes": [
                {"id": "start", "type": "trigger", "position": {"x": 0, "y": 0},
                 "data": {"trigger": {"kind": "event", "event_type": "payment.failed"}}},
                {"id": "ask", "type": "email", "position": {"x": 0, "y": 1},
                 "data": {"to": "partner_a", "subject": "Your payment did not go through", "text": "Please try again"}},
                {"id": "done", "type": "end", "position": {"x": 0, "y": 2}, "data": {}}
            ],
            "edges": [
                {"id": "a", "source": "start", "target": "ask"},
                {"id": "b", "source": "ask", "target": "done"}
            ],
            "viewport": {"x": 0, "y": 0, "zoom": 1}
        }))
        .await;
    let couple = c.couple.to_string();
    let failed = |id: &str, kind: &str, object: Value| {
        let mut object = object;
        object["metadata"] = json!({ "wedsync_couple_id": couple });
        json!({ "id": id, "object": "event", "type": kind, "created": 1_800_000_000, "data": { "object": object } })
    };
    let events = [
        failed(
            "evt_f1",
            "payment_intent.payment_failed",
            json!({"id": "pi_5", "amount": 50000, "currency": "gbp", "latest_charge": "ch_5a"}),
        ),
        failed(
            "evt_f2",
            "charge.failed",
            json!({"id": "ch_5a", "payment_intent": "pi_5", "amount": 50000, "currency": "gbp"}),
        ),
        // The couple tries another card, and it fails too.
        failed(
            "evt_f3",
            "payment_intent.payment_failed",
            json!({"id": "pi_5", "amount": 50000, "currency": "gbp", "latest_charge": "ch_5b"}),
        ),
    ];
    for body in events {
        let event = c.stripe_event(body).await;
        c.store
            .start_journeys_for_inbound(&event)
            .await
            .expect("journeys");
        c.drain().await;
    }
    assert_eq!(c.instances(&retry).await.len(), 2, "one per failed attempt");
    assert_eq!(c.sent(Email).await.len(), 2);
}

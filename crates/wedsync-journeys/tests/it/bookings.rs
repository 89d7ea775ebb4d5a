//! Journeys about a booking rather than a couple: one instance per booking, started by the
//! booking's own events or date, with the booking's data in templates and conditions, waits on
//! its `booking_date` that follow the booking when it moves, and an end when it is cancelled,
//! deleted or handed to another couple. The hub's own outbox events drive them, through the
//! real handlers, on a moved clock.

use serde_json::{Value, json};
use wedsync_core::booking::{Booking, BookingInput, BookingStatus};
use wedsync_core::id::CoupleId;
use wedsync_core::notify::NotifyChannel::Email;

use super::{Ctx, ctx, operator, utc};

/// trigger (given, about bookings) → email partner A naming the service → wait until the
/// booking's day −7 at 10:00 → email again → end.
fn week_before(trigger: Value) -> Value {
    json!({
        "nodes": [
            {"id": "start", "type": "trigger", "position": {"x": 0, "y": 0},
             "data": {"trigger": trigger, "subject": "booking"}},
            {"id": "hello", "type": "email", "position": {"x": 0, "y": 1},
             "data": {"to": "partner_a", "subject": "{{ booking.service }} is booked",
                      "text": "On {{ booking.booking_date }}"}},
            {"id": "t-7", "type": "wait", "position": {"x": 0, "y": 2},
             "data": {"mode": "until_date", "date": "booking_date", "offset_days": -7, "at": "10:00", "if_passed": "run_now"}},
            {"id": "soon", "type": "email", "position": {"x": 0, "y": 3},
             "data": {"to": "partner_a", "subject": "A week to {{ booking.service }}", "text": "Nearly there"}},
            {"id": "done", "type": "end", "position": {"x": 0, "y": 4}, "data": {}}
        ],
        "edges": [
            {"id": "a", "source": "start", "target": "hello"},
            {"id": "b", "source": "hello", "target": "t-7"},
            {"id": "c", "source": "t-7", "target": "soon"},
            {"id": "d", "source": "soon", "target": "done"}
        ],
        "viewport": {"x": 0, "y": 0, "zoom": 1}
    })
}

impl Ctx {
    async fn book(&self, couple: &CoupleId, service: &str, starts: &str) -> Booking {
        let start = utc(starts);
        let input: BookingInput = serde_json::from_value(json!({
            "couple_id": couple, "service": service,
            "starts_at": start, "ends_at": start + chrono::TimeDelta::hours(4),
            "status": "confirmed", "value": {"amount_minor": 120000, "currency": "GBP"},
        }))
        .expect("input");
        self.store
            .create_booking(
                &self.org,
                couple,
                input.validate().expect("valid"),
                &operator(),
            )
            .await
            .expect("booking")
    }

    async fn edit_booking(
        &self,
        booking: &Booking,
        edit: impl FnOnce(&mut wedsync_core::booking::BookingFields) + Send,
    ) {
        self.store
            .update_booking(&self.org, &booking.id, &operator(), |couple, fields| {
                let mut fields = fields.clone();
                edit(&mut fields);
                Ok((*couple, fields))
            })
            .await
            .expect("updated");
    }

    /// The emails' subjects as they will be rendered from the data the steps stored, sorted.
    pub(super) async fn subjects(
        &self,
        emails: &[wedsync_store::notify::Notification],
    ) -> Vec<String> {
        let mut subjects = Vec::new();
        for n in emails {
            let work = self
                .store
                .notify_work(&n.id.to_string())
                .await
                .expect("work")
                .expect("stored");
            let source = work.content["subject"].as_str().expect("a subject");
            let env = minijinja::Environment::new();
            subjects.push(
                env.render_str(
                    source,
                    minijinja::Value::from(minijinja::value::Serde(&work.data)),
                )
                .expect("renders"),
            );
        }
        subjects.sort();
        subjects
    }
}

#[tokio::test]
async fn a_booking_journey_runs_once_per_booking_with_its_data_and_follows_its_date() {
    let c = ctx("2027-01-10T12:00:00Z", "2027-09-18").await;
    let journey = c
        .publish(week_before(
            json!({"kind": "event", "event_type": "booking.created"}),
        ))
        .await;
    let shoot = c
        .book(&c.couple, "Engagement shoot", "2027-04-10T13:00:00Z")
        .await;
    let day = c.book(&c.couple, "Full day", "2027-09-18T10:00:00Z").await;
    c.drain_all().await;

    // One instance per booking, each naming its booking, each greeting with its own service.
    let instances = c.instances(&journey).await;
    assert_eq!(instances.len(), 2);
    let of = |b: &Booking| {
        instances
            .iter()
            .find(|i| i.booking_id == Some(b.id))
            .cloned()
            .expect("an instance for the booking")
    };
    let (shoot_run, day_run) = (of(&shoot), of(&day));
    assert!(instances.iter().all(|i| i.couple_id == c.couple));
    assert_eq!(
        c.subjects(&c.sent(Email).await).await,
        ["Engagement shoot is booked", "Full day is booked"]
    );
    // Each waits until a week before its own booking's day, 10:00 London (BST).
    assert_eq!(shoot_run.status, "waiting");
    assert_eq!(shoot_run.due_at, Some(utc("2027-04-03T09:00:00Z")));
    assert_eq!(day_run.due_at, Some(utc("2027-09-11T09:00:00Z")));

    // The same event again starts nothing twice.
    let again = c
        .store
        .start_journeys_for_event(
            &c.org,
            "booking.created",
            &shoot_run.trigger_key["event:".len()..],
            &c.couple,
            Some(&shoot.id),
            &json!({}),
        )
        .await
        .expect("again");
    assert!(again.is_empty());

    // The shoot moves three weeks later: its wait follows; the wedding day's does not move.
    c.edit_booking(&shoot, |f| {
        f.starts_at = utc("2027-05-01T13:00:00Z");
        f.ends_at = utc("2027-05-01T17:00:00Z");
    })
    .await;
    let (moved, history) = c.instance(&shoot_run).await;
    assert_eq!(moved.due_at, Some(utc("2027-04-24T09:00:00Z")));
    assert_eq!(history.last().expect("history").outcome, "rescheduled");
    assert_eq!(c.instance(&day_run).await.0.due_at, day_run.due_at);
    // A new hour on the same day changes no wait.
    let steps = c.instance(&shoot_run).await.1.len();
    c.edit_booking(&shoot, |f| {
        f.starts_at = utc("2027-05-01T15:00:00Z");
        f.ends_at = utc("2027-05-01T19:00:00Z");
    })
    .await;
    c.drain_all().await;
    assert_eq!(c.instance(&shoot_run).await.1.len(), steps);

    // Not at the old instant; at the new one, once.
    c.clock.set(utc("2027-04-03T09:00:00Z"));
    c.drain_all().await;
    assert_eq!(c.sent(Email).await.len(), 2);
    c.clock.set(utc("2027-04-24T09:00:00Z"));
    c.drain_all().await;
    let sent = c.sent(Email).await;
    assert_eq!(sent.len(), 3);
    assert!(
        c.subjects(&sent)
            .await
            .contains(&"A week to Engagement shoot".to_owned())
    );
    assert_eq!(c.instance(&shoot_run).await.0.status, "completed");

    // The wedding-day booking is called off: its journey ends, nothing more is sent.
    c.edit_booking(&day, |f| f.status = BookingStatus::Cancelled)
        .await;
    let (ended, history) = c.instance(&day_run).await;
    assert_eq!(ended.status, "cancelled");
    assert!(
        history
            .last()
            .expect("history")
            .detail
            .contains("booking was cancelled")
    );
    c.clock.set(utc("2027-09-12T09:00:00Z"));
    c.drain_all().await;
    assert_eq!(c.sent(Email).await.len(), 3);
}

#[tokio::test]
async fn a_booking_journey_starts_only_for_a_booking_of_the_couple_and_is_resumed_by_its_own_events()
 {
    let c = ctx("2027-01-10T12:00:00Z", "2027-09-18").await;
    // trigger by hand → wait (up to a year) for the booking's payment → email → end.
    let journey = c
        .publish(json!({
            "nodes": [
                {"id": "start", "type": "trigger", "position": {"x": 0, "y": 0},
                 "data": {"trigger": {"kind": "manual"}, "subject": "booking"}},
                {"id": "pay", "type": "wait", "position": {"x": 0, "y": 1},
                 "data": {"mode": "until_event", "event_type": "payment.completed", "timeout_seconds": 31536000}},
                {"id": "thanks", "type": "email", "position": {"x": 0, "y": 2},
                 "data": {"to": "partner_a", "subject": "Thanks for paying for {{ booking.service }}", "text": "Received"}},
                {"id": "done", "type": "end", "position": {"x": 0, "y": 3}, "data": {}}
            ],
            "edges": [
                {"id": "a", "source": "start", "target": "pay"},
                {"id": "b", "source": "pay", "target": "thanks", "sourceHandle": "event"},
                {"id": "t", "source": "pay", "target": "done", "sourceHandle": "timeout"},
                {"id": "c", "source": "thanks", "target": "done"}
            ],
            "viewport": {"x": 0, "y": 0, "zoom": 1}
        }))
        .await;
    let shoot = c
        .book(&c.couple, "Engagement shoot", "2027-04-10T13:00:00Z")
        .await;
    let day = c.book(&c.couple, "Full day", "2027-09-18T10:00:00Z").await;
    let other = c.add_couple("Robin", "2027-10-02", "Europe/London").await;
    let theirs = c.book(&other, "Full day", "2027-10-02T10:00:00Z").await;
    c.drain_all().await;

    let start = |booking: &Booking, couple: CoupleId| {
        let (store, org, booking) = (c.store.clone(), c.org, booking.id);
        async move {
            store
                .start_instance(
                    &org,
                    &journey,
                    &couple,
                    Some(&booking),
                    "manual:1",
                    "start",
                    &json!({}),
                )
                .await
        }
    };
    // Another couple's booking is refused, naming the field.
    match start(&theirs, c.couple).await {
        Err(wedsync_store::StoreError::Invalid(errors)) => {
            assert_eq!(errors.0[0].field, "booking_id");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let (shoot_run, created) = start(&shoot, c.couple).await.expect("shoot");
    assert!(created);
    let (day_run, _) = start(&day, c.couple).await.expect("day");
    let (repeat, created) = start(&shoot, c.couple).await.expect("repeat");
    assert!(!created, "idempotent per booking and key");
    assert_eq!(repeat.id, shoot_run.id);
    c.drain().await;
    assert_eq!(c.instance(&shoot_run).await.0.status, "waiting");

    // The wedding day's payment resumes the wedding day's journey only.
    c.store
        .start_journeys_for_event(
            &c.org,
            "payment.completed",
            "evt_pay_day",
            &c.couple,
            Some(&day.id),
            &json!({"amount_minor": 50000}),
        )
        .await
        .expect("event");
    c.drain().await;
    assert_eq!(c.instance(&day_run).await.0.status, "completed");
    assert_eq!(c.instance(&shoot_run).await.0.status, "waiting");
    assert_eq!(
        c.subjects(&c.sent(Email).await).await,
        ["Thanks for paying for Full day"]
    );
    // A payment that names no booking counts for any of the couple's.
    c.store
        .start_journeys_for_event(
            &c.org,
            "payment.completed",
            "evt_pay_any",
            &c.couple,
            None,
            &json!({"amount_minor": 20000}),
        )
        .await
        .expect("event");
    c.drain().await;
    assert_eq!(c.instance(&shoot_run).await.0.status, "completed");

    // Deleting a booking ends its waiting journey.
    let (theirs_run, _) = start(&theirs, other).await.expect("theirs");
    c.drain().await;
    c.store
        .delete_booking(&c.org, &theirs.id, &operator())
        .await
        .expect("deleted");
    let (gone, history) = c.instance(&theirs_run).await;
    assert_eq!(gone.status, "cancelled");
    assert!(
        history
            .last()
            .expect("history")
            .detail
            .contains("booking was deleted")
    );
}

#[tokio::test]
async fn a_date_reached_trigger_on_booking_dates_attaches_every_live_booking() {
    let c = ctx("2027-01-10T12:00:00Z", "2027-09-18").await;
    let shoot = c
        .book(&c.couple, "Engagement shoot", "2027-04-10T13:00:00Z")
        .await;
    let called_off = c
        .book(&c.couple, "Videography", "2027-09-18T10:00:00Z")
        .await;
    c.edit_booking(&called_off, |f| f.status = BookingStatus::Cancelled)
        .await;
    c.drain_all().await;
    // The evening before each booking, 18:00 couple-local.
    let journey = c
        .publish(json!({
            "nodes": [
                {"id": "start", "type": "trigger", "position": {"x": 0, "y": 0},
                 "data": {"trigger": {"kind": "date_reached", "date": "booking_date", "offset_days": -1, "at": "18:00"},
                          "subject": "booking"}},
                {"id": "eve", "type": "email", "position": {"x": 0, "y": 1},
                 "data": {"to": "partner_a", "subject": "Tomorrow: {{ booking.service }}", "text": "See you"}},
                {"id": "done", "type": "end", "position": {"x": 0, "y": 2}, "data": {}}
            ],
            "edges": [
                {"id": "a", "source": "start", "target": "eve"},
                {"id": "b", "source": "eve", "target": "done"}
            ],
            "viewport": {"x": 0, "y": 0, "zoom": 1}
        }))
        .await;
    c.drain_all().await;
    // Publishing attached the live booking, not the cancelled one.
    let attached = c.instances(&journey).await;
    assert_eq!(attached.len(), 1);
    assert_eq!(attached[0].booking_id, Some(shoot.id));
    assert_eq!(attached[0].due_at, Some(utc("2027-04-09T17:00:00Z")));

    // A booking added later is attached by its own booking.created.
    let day = c.book(&c.couple, "Full day", "2027-09-18T10:00:00Z").await;
    c.drain_all().await;
    let attached = c.instances(&journey).await;
    assert_eq!(attached.len(), 2);
    let day_run = attached
        .iter()
        .find(|i| i.booking_id == Some(day.id))
        .expect("the new booking");
    assert_eq!(day_run.due_at, Some(utc("2027-09-17T17:00:00Z")));

    // The couple moves to New York: every couple-local instant moves with them.
    c.store
        .update_couple(
            &c.org,
            &c.couple,
            &operator(),
            wedsync_store::couples::DateChangeRule {
                window_days: 30,
                confirmed: true,
            },
            |f| {
                let mut f = f.clone();
                f.time_zone = wedsync_core::org::TimeZone::parse("America/New_York").expect("zone");
                Ok(f)
            },
        )
        .await
        .expect("moved");
    let (shoot_run, history) = c.instance(&attached[0]).await;
    // 10 April 13:00 UTC is 09:00 in New York, the same day: the evening before, 18:00 EDT.
    assert_eq!(shoot_run.due_at, Some(utc("2027-04-09T22:00:00Z")));
    assert_eq!(history.last().expect("history").outcome, "rescheduled");

    c.clock.set(utc("2027-04-09T22:00:00Z"));
    c.drain_all().await;
    assert_eq!(
        c.subjects(&c.sent(Email).await).await,
        ["Tomorrow: Engagement shoot"]
    );
}

#[test]
fn booking_dates_and_per_couple_schedules_are_checked_against_the_subject() {
    let check = |trigger: Value, subject: Option<&str>, date: &str| {
        let mut data = json!({ "trigger": trigger });
        if let Some(s) = subject {
            data["subject"] = json!(s);
        }
        let doc = json!({
            "nodes": [
                {"id": "start", "type": "trigger", "position": {"x": 0, "y": 0}, "data": data},
                {"id": "wait", "type": "wait", "position": {"x": 0, "y": 1},
                 "data": {"mode": "until_date", "date": date, "offset_days": -1, "at": "09:00", "if_passed": "skip"}},
                {"id": "done", "type": "end", "position": {"x": 0, "y": 2}, "data": {}}
            ],
            "edges": [
                {"id": "a", "source": "start", "target": "wait"},
                {"id": "b", "source": "wait", "target": "done"}
            ],
            "viewport": {"x": 0, "y": 0, "zoom": 1}
        });
        let parsed = wedsync_journeys::JourneyDocument::parse(&doc).expect("parses");
        wedsync_journeys::validate(&parsed, wedsync_journeys::Mode::Publish)
            .err()
            .map(|e| {
                e.0.iter()
                    .map(|f| format!("{}: {}", f.field, f.message))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let manual = json!({"kind": "manual"});
    assert!(check(manual.clone(), Some("booking"), "booking_date").is_empty());
    assert!(check(manual.clone(), Some("booking"), "wedding_date").is_empty());
    assert!(check(manual.clone(), None, "wedding_date").is_empty());
    let couple_on_booking_date = check(manual.clone(), None, "booking_date");
    assert_eq!(couple_on_booking_date.len(), 1);
    assert!(
        couple_on_booking_date[0]
            .starts_with("nodes.wait.data.date: `booking_date` is a booking's date")
    );
    let unknown = check(manual, Some("booking"), "engagement_date");
    assert!(unknown[0].contains("use one of: wedding_date, booking_date"));
    for trigger in [
        json!({"kind": "time_delay", "after_seconds": 60}),
        json!({"kind": "cron", "expression": "0 9 * * 1"}),
    ] {
        let errors = check(trigger, Some("booking"), "booking_date");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("nodes.start.data.subject: "));
    }
}

#[tokio::test]
async fn a_provider_payment_naming_a_booking_starts_that_bookings_journey_and_the_couples() {
    let c = ctx("2027-01-10T12:00:00Z", "2027-09-18").await;
    let receipt = |subject: Option<&str>, text: &str| {
        let mut data = json!({ "trigger": {"kind": "payment_received"} });
        if let Some(s) = subject {
            data["subject"] = json!(s);
        }
        json!({
            "nodes": [
                {"id": "start", "type": "trigger", "position": {"x": 0, "y": 0}, "data": data},
                {"id": "thanks", "type": "email", "position": {"x": 0, "y": 1},
                 "data": {"to": "partner_a", "subject": text, "text": "Received"}},
                {"id": "done", "type": "end", "position": {"x": 0, "y": 2}, "data": {}}
            ],
            "edges": [
                {"id": "a", "source": "start", "target": "thanks"},
                {"id": "b", "source": "thanks", "target": "done"}
            ],
            "viewport": {"x": 0, "y": 0, "zoom": 1}
        })
    };
    let per_booking = c
        .publish(receipt(Some("booking"), "Paid for {{ booking.service }}"))
        .await;
    let per_couple = c.publish(receipt(None, "Payment received")).await;
    let _shoot = c
        .book(&c.couple, "Engagement shoot", "2027-04-10T13:00:00Z")
        .await;
    let day = c.book(&c.couple, "Full day", "2027-09-18T10:00:00Z").await;
    c.drain_all().await;

    // A verified Stripe payment whose metadata named the wedding-day booking alone.
    let mut body = super::payments::stripe(
        "evt_pay",
        "payment_intent.succeeded",
        "pi_day",
        60000,
        &c.couple.to_string(),
        Some(&day.id.to_string()),
    );
    body["data"]["object"]["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("wedsync_couple_id");
    let event = c.stripe_event(body).await;
    for _ in 0..2 {
        c.store
            .start_journeys_for_inbound(&event)
            .await
            .expect("journeys");
    }
    c.drain_all().await;
    let booking_runs = c.instances(&per_booking).await;
    assert_eq!(booking_runs.len(), 1, "for the booking it named, once");
    assert_eq!(booking_runs[0].booking_id, Some(day.id));
    let couple_runs = c.instances(&per_couple).await;
    assert_eq!(couple_runs.len(), 1);
    assert_eq!(couple_runs[0].booking_id, None);
    assert_eq!(
        c.subjects(&c.sent(Email).await).await,
        ["Paid for Full day", "Payment received"]
    );
}

//! The journey engine end to end: a real database, the real step handler through the
//! durable queue, and a moved clock. `drain` runs the journey steps due at the clock's
//! instant; the notifications they create are checked in the store (their sending is the
//! notification worker's, tested in `wedsync-notify`).

use std::sync::Arc;

mod bookings;
mod crm;
mod payments;
mod schedule;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use wedsync_core::clock::ManualClock;
use wedsync_core::id::{CoupleId, JourneyId, OrgId};
use wedsync_store::journeys::{Instance, STEP_KIND};
use wedsync_store::notify::{Notification, NotificationFilter};
use wedsync_store::page::PageRequest;
use wedsync_store::queue::AfterFailure;
use wedsync_store::testing::{TestDb, migrated_store};
use wedsync_store::worker::{JobError, JobHandler};
use wedsync_store::{Actor, Store};

struct Ctx {
    store: Store,
    clock: ManualClock,
    org: OrgId,
    couple: CoupleId,
    step: Box<dyn JobHandler>,
    /// The Stripe source of `stripe_event`, made on first use.
    stripe_source: std::sync::OnceLock<wedsync_core::id::SourceId>,
    _db: TestDb,
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("time")
        .with_timezone(&Utc)
}

fn operator() -> Actor {
    Actor::Cli("test".into())
}

/// trigger → email partner A → wait until the wedding −30 days at 09:00 → SMS to both → end.
fn countdown(if_passed: &str) -> Value {
    json!({
        "nodes": [
            {"id": "start", "type": "trigger", "position": {"x": 0, "y": 0}, "data": {"trigger": {"kind": "manual"}}},
            {"id": "hello", "type": "email", "position": {"x": 0, "y": 1},
             "data": {"to": "partner_a", "subject": "Welcome {{ couple.names }}", "text": "See you on {{ couple.wedding_date_long }}"}},
            {"id": "t-30", "type": "wait", "position": {"x": 0, "y": 2},
             "data": {"mode": "until_date", "date": "wedding_date", "offset_days": -30, "at": "09:00", "if_passed": if_passed}},
            {"id": "nudge", "type": "sms", "position": {"x": 0, "y": 3}, "data": {"to": "both_partners", "text": "30 days to go!"}},
            {"id": "done", "type": "end", "position": {"x": 0, "y": 4}, "data": {}}
        ],
        "edges": [
            {"id": "a", "source": "start", "target": "hello"},
            {"id": "b", "source": "hello", "target": "t-30"},
            {"id": "c", "source": "t-30", "target": "nudge"},
            {"id": "d", "source": "nudge", "target": "done"}
        ],
        "viewport": {"x": 0, "y": 0, "zoom": 1}
    })
}

async fn ctx(start: &str, wedding: &str) -> Ctx {
    let clock = ManualClock::new(utc(start));
    let (store, db) = migrated_store(Arc::new(clock.clone()))
        .await
        .expect("database");
    let settings = wedsync_core::org::OrgSettings::parse(
        "Lens & Lace",
        "Europe/London",
        "professional",
        "GB",
        "GBP",
    )
    .expect("valid");
    let org = store
        .create_org(settings, &operator())
        .await
        .expect("org")
        .id;
    let couple = store
        .create_couple(
            &org,
            serde_json::from_value::<wedsync_core::couple::CoupleInput>(json!({
                "partners": [
                    {"name": "Alex Morgan", "email": "alex@example.com", "phone": "+447700900123"},
                    {"name": "Sam Taylor", "email": "sam@example.com", "phone": "+447700900456"}
                ],
                "wedding_date": wedding, "time_zone": "Europe/London"
            }))
            .expect("input")
            .validate(wedsync_core::org::TimeZone::parse("Europe/London").expect("zone"))
            .expect("valid"),
            &operator(),
        )
        .await
        .expect("couple")
        .id;
    Ctx {
        step: Box::new(wedsync_journeys::engine::step_handler(store.clone())),
        store,
        clock,
        org,
        couple,
        stripe_source: std::sync::OnceLock::new(),
        _db: db,
    }
}

impl Ctx {
    async fn publish(&self, doc: Value) -> JourneyId {
        let parsed = wedsync_journeys::JourneyDocument::parse(&doc).expect("parses");
        wedsync_journeys::validate(&parsed, wedsync_journeys::Mode::Publish).expect("valid");
        let j = self
            .store
            .create_journey(&self.org, "Countdown", "", &parsed.to_json(), &operator())
            .await
            .expect("journey");
        self.store
            .publish_journey(&self.org, &j.id, j.revision, &operator())
            .await
            .expect("publish");
        j.id
    }

    async fn start(&self, journey: &JourneyId, key: &str) -> (Instance, bool) {
        self.store
            .start_instance(
                &self.org,
                journey,
                &self.couple,
                None,
                key,
                "start",
                &json!({}),
            )
            .await
            .expect("start")
    }

    /// Runs every journey step due now, until none is.
    async fn drain(&self) -> usize {
        let mut ran = 0;
        for _ in 0..100 {
            let jobs = self
                .store
                .claim("test", STEP_KIND, 100, TimeDelta::minutes(1))
                .await
                .expect("claim");
            if jobs.is_empty() {
                return ran;
            }
            let mut progressed = false;
            for job in jobs {
                match self.step.run(job.clone()).await {
                    Ok(()) => {
                        ran += 1;
                        progressed = true;
                        self.store
                            .complete("test", std::slice::from_ref(&job.id))
                            .await
                            .expect("complete");
                    }
                    Err(JobError::Deferred { until, .. }) => {
                        self.store
                            .defer("test", &job.id, until)
                            .await
                            .expect("defer");
                    }
                    Err(e) => {
                        self.store
                            .fail("test", &job.id, &format!("{e:?}"), AfterFailure::Dead)
                            .await
                            .expect("fail");
                        panic!("step failed: {e:?}");
                    }
                }
            }
            if !progressed {
                return ran;
            }
        }
        panic!("steps kept coming")
    }

    async fn instance(
        &self,
        id: &Instance,
    ) -> (Instance, Vec<wedsync_store::journeys::StepRecord>) {
        self.store
            .get_instance(&self.org, &id.id.to_string())
            .await
            .expect("instance")
    }

    async fn sent(&self, channel: wedsync_core::notify::NotifyChannel) -> Vec<Notification> {
        self.store
            .list_notifications(
                &self.org,
                &NotificationFilter {
                    channel: Some(channel),
                    ..Default::default()
                },
                &PageRequest {
                    limit: Some(100),
                    after: None,
                },
            )
            .await
            .expect("list")
            .data
    }

    async fn move_wedding(&self, to: &str) {
        self.move_couple(&self.couple, to).await;
    }

    async fn move_couple(&self, couple: &CoupleId, to: &str) {
        let to: chrono::NaiveDate = to.parse().expect("date");
        self.store
            .update_couple(
                &self.org,
                couple,
                &operator(),
                wedsync_store::couples::DateChangeRule {
                    window_days: 30,
                    confirmed: true,
                },
                |f| {
                    let mut f = f.clone();
                    f.wedding_date = to;
                    Ok(f)
                },
            )
            .await
            .expect("moved");
    }
}

use wedsync_core::notify::NotifyChannel::{Email, Sms};

#[tokio::test]
async fn each_step_runs_once_in_order_at_the_couples_local_time() {
    // Wedding Sunday 25 April 2027: 30 days before is Friday 26 March, 09:00 GMT.
    let c = ctx("2027-03-01T10:00:00Z", "2027-04-25").await;
    let journey = c.publish(countdown("run_now")).await;
    let (inst, created) = c.start(&journey, "manual:1").await;
    assert!(created);
    c.drain().await;
    let (now, _) = c.instance(&inst).await;
    assert_eq!(now.status, "waiting");
    assert_eq!(now.current_node, "t-30");
    assert_eq!(now.due_at, Some(utc("2027-03-26T09:00:00Z")));
    let emails = c.sent(Email).await;
    assert_eq!(emails.len(), 1);
    assert_eq!(emails[0].to.email.as_deref(), Some("alex@example.com"));
    assert!(c.sent(Sms).await.is_empty());

    // Not a minute early; then exactly once.
    c.clock.set(utc("2027-03-26T08:59:00Z"));
    c.drain().await;
    assert!(c.sent(Sms).await.is_empty());
    c.clock.set(utc("2027-03-26T09:00:00Z"));
    c.drain().await;
    let sms = c.sent(Sms).await;
    assert_eq!(sms.len(), 2, "one SMS to each partner");
    let (done, history) = c.instance(&inst).await;
    assert_eq!(done.status, "completed");
    let path: Vec<(&str, &str)> = history
        .iter()
        .map(|s| (s.node_id.as_str(), s.outcome.as_str()))
        .collect();
    assert_eq!(
        path,
        [
            ("start", "started"),
            ("hello", "done"),
            ("t-30", "waiting"),
            ("t-30", "done"),
            ("nudge", "done"),
            ("done", "completed")
        ]
    );
    // Nothing repeats: draining again, or a stale job, changes nothing.
    c.clock.set(utc("2027-06-01T00:00:00Z"));
    assert_eq!(c.drain().await, 0);
    assert_eq!(c.sent(Email).await.len(), 1);
    assert_eq!(c.sent(Sms).await.len(), 2);
}

#[tokio::test]
async fn the_wait_follows_the_wedding_date_when_it_moves_later_earlier_and_into_the_past() {
    let c = ctx("2027-03-01T10:00:00Z", "2027-09-18").await;
    let journey = c.publish(countdown("run_now")).await;
    let (inst, _) = c.start(&journey, "manual:1").await;
    c.drain().await;
    // 18 September − 30 days = 19 August, 09:00 BST.
    assert_eq!(
        c.instance(&inst).await.0.due_at,
        Some(utc("2027-08-19T08:00:00Z"))
    );

    // Later: 20 November − 30 days = 21 October, still BST (08:00 UTC).
    c.move_wedding("2027-11-20").await;
    let (moved, history) = c.instance(&inst).await;
    assert_eq!(moved.due_at, Some(utc("2027-10-21T08:00:00Z")));
    assert!(
        history.last().is_some_and(|h| h.outcome == "rescheduled"),
        "{history:?}"
    );
    // The old timer does nothing when its time comes.
    c.clock.set(utc("2027-08-19T08:00:00Z"));
    c.drain().await;
    assert!(c.sent(Sms).await.is_empty());

    // Earlier: 1 October − 30 days = 1 September, 09:00 BST — already past at 19 August? No:
    // still ahead; it fires then.
    c.move_wedding("2027-10-01").await;
    assert_eq!(
        c.instance(&inst).await.0.due_at,
        Some(utc("2027-09-01T08:00:00Z"))
    );

    // Into the past: a wedding on 1 September 2027 puts the wait on 2 August, already gone;
    // the node's policy (run_now) sends the SMS at once.
    c.move_wedding("2027-09-01").await;
    let (now, history) = c.instance(&inst).await;
    assert!(
        history
            .last()
            .is_some_and(|h| h.detail.contains("runs now")),
        "{history:?}"
    );
    assert_eq!(now.due_at, Some(utc("2027-08-19T08:00:00Z")));
    c.drain().await;
    assert_eq!(c.sent(Sms).await.len(), 2);
    assert_eq!(c.instance(&inst).await.0.status, "completed");
}

#[tokio::test]
async fn a_passed_date_with_the_skip_policy_ends_the_instance_as_skipped() {
    let c = ctx("2027-03-01T10:00:00Z", "2027-09-18").await;
    let journey = c.publish(countdown("skip")).await;
    let (inst, _) = c.start(&journey, "manual:1").await;
    c.drain().await;
    c.clock.set(utc("2027-07-01T00:00:00Z"));
    c.move_wedding("2027-07-15").await;
    let (now, history) = c.instance(&inst).await;
    assert_eq!(now.status, "skipped");
    assert!(
        now.reason.as_deref().is_some_and(|r| r.contains("skip")),
        "{now:?}"
    );
    assert!(history.last().is_some_and(|h| h.outcome == "skipped"));
    c.clock.set(utc("2027-09-01T00:00:00Z"));
    c.drain().await;
    assert!(c.sent(Sms).await.is_empty(), "skipped means not sent");
}

#[tokio::test]
async fn starting_is_idempotent_and_a_step_rerun_after_a_crash_reuses_its_effect() {
    let c = ctx("2027-03-01T10:00:00Z", "2027-09-18").await;
    let journey = c.publish(countdown("run_now")).await;
    let (first, created) = c.start(&journey, "booking:bkg_1").await;
    let (again, created_again) = c.start(&journey, "booking:bkg_1").await;
    assert!(created && !created_again);
    assert_eq!(first.id, again.id);
    // Run the trigger step; then pretend the email step's effect happened and the process
    // died before the instance moved on: its notification exists under the step's key.
    let jobs = c
        .store
        .claim("test", STEP_KIND, 10, TimeDelta::minutes(1))
        .await
        .expect("claim");
    assert_eq!(jobs.len(), 1, "one job for the idempotent start");
    c.step.run(jobs[0].clone()).await.expect("trigger step");
    c.store
        .complete("test", &[jobs[0].id.clone()])
        .await
        .expect("complete");
    let (at_email, _) = c.instance(&first).await;
    let key = format!("journey:{}:{}:0", first.id, at_email.step_seq);
    let (pre, _) = c
        .store
        .create_notification(
            &c.org,
            wedsync_store::notify::NotificationInput {
                channel: Some(Email),
                to: wedsync_store::notify::Recipient {
                    id: Some(format!("{}:partner0", c.couple)),
                    name: Some("Alex Morgan".into()),
                    email: Some("alex@example.com".into()),
                    phone: Some("+447700900123".into()),
                    time_zone: Some("Europe/London".into()),
                    push: None,
                },
                subject: Some("Welcome {{ couple.names }}".into()),
                text: Some("See you on {{ couple.wedding_date_long }}".into()),
                data: Some(json!({
                    "journey": { "id": journey, "instance": first.id, "version": 1 },
                    "event": {},
                })),
                couple_id: Some(c.couple),
                ..Default::default()
            },
            Some(&key),
            TimeDelta::days(3650),
        )
        .await
        .expect("the effect before the crash");
    c.drain().await;
    let emails = c.sent(Email).await;
    assert_eq!(
        emails.len(),
        1,
        "the rerun found its effect instead of repeating it"
    );
    assert_eq!(emails[0].id, pre.id);
    let (_, history) = c.instance(&first).await;
    let email_step = history
        .iter()
        .find(|h| h.node_id == "hello")
        .expect("email step");
    assert_eq!(
        email_step.output,
        Some(json!({ "notifications": [pre.id.to_string()] }))
    );
}

#[tokio::test]
async fn a_booking_created_through_the_api_starts_its_journey_once_for_the_couple() {
    let c = ctx("2027-03-01T10:00:00Z", "2027-09-18").await;
    let mut doc = countdown("run_now");
    doc["nodes"][0]["data"] =
        json!({ "trigger": { "kind": "event", "event_type": "booking.created" } });
    let journey = c.publish(doc).await;
    let input: wedsync_core::booking::BookingInput = serde_json::from_value(json!({
        "couple_id": c.couple.to_string(),
        "service": "Photography",
        "starts_at": "2027-09-18T11:00:00Z",
        "ends_at": "2027-09-18T22:00:00Z",
        "value": { "amount_minor": 250000, "currency": "GBP" }
    }))
    .expect("booking input");
    c.store
        .create_booking(
            &c.org,
            &c.couple,
            input.validate().expect("valid"),
            &operator(),
        )
        .await
        .expect("booking");
    let publish = wedsync_store::outbox::publish_handler(c.store.clone());
    for _ in 0..2 {
        // Publishing twice (a rerun) starts nothing twice.
        let jobs = c
            .store
            .claim(
                "test",
                wedsync_store::outbox::PUBLISH_KIND,
                10,
                TimeDelta::minutes(1),
            )
            .await
            .expect("claim");
        for job in jobs {
            publish.run(job.clone()).await.expect("publish");
            publish.run(job).await.expect("publish again");
        }
    }
    let instances = c
        .store
        .list_instances(
            &c.org,
            &journey,
            &Default::default(),
            &PageRequest::default(),
        )
        .await
        .expect("list")
        .data;
    assert_eq!(instances.len(), 1);
    assert!(instances[0].trigger_key.starts_with("event:"));
    c.drain().await;
    assert_eq!(c.sent(Email).await.len(), 1, "the welcome email");
    assert_eq!(c.instance(&instances[0]).await.0.status, "waiting");
}

/// trigger → wait for the timeline form (7 days) → thank-you email | reminder SMS → end.
fn form_or_reminder() -> Value {
    json!({
        "nodes": [
            {"id": "start", "type": "trigger", "position": {"x": 0, "y": 0}, "data": {"trigger": {"kind": "manual"}}},
            {"id": "form", "type": "wait", "position": {"x": 0, "y": 1},
             "data": {"mode": "until_event", "event_type": "form.submitted", "filter": {"form_id": "timeline"}, "timeout_seconds": 604800}},
            {"id": "thanks", "type": "email", "position": {"x": 0, "y": 2}, "data": {"to": "both_partners", "subject": "Thank you", "text": "Got it"}},
            {"id": "remind", "type": "sms", "position": {"x": 1, "y": 2}, "data": {"to": "partner_a", "text": "Please send the timeline form"}},
            {"id": "approve", "type": "vendor_action", "position": {"x": 0, "y": 3}, "data": {"title": "Check the timeline"}},
            {"id": "done", "type": "end", "position": {"x": 0, "y": 4}, "data": {}}
        ],
        "edges": [
            {"id": "a", "source": "start", "target": "form"},
            {"id": "b", "source": "form", "target": "thanks", "sourceHandle": "event"},
            {"id": "c", "source": "form", "target": "remind", "sourceHandle": "timeout"},
            {"id": "d", "source": "thanks", "target": "approve"},
            {"id": "e", "source": "remind", "target": "done"},
            {"id": "f", "source": "approve", "target": "done"}
        ],
        "viewport": {"x": 0, "y": 0, "zoom": 1}
    })
}

#[tokio::test]
async fn a_wait_for_an_event_resumes_on_the_event_and_a_persons_step_waits_to_be_completed() {
    let c = ctx("2027-03-01T10:00:00Z", "2027-09-18").await;
    let journey = c.publish(form_or_reminder()).await;
    let (inst, _) = c.start(&journey, "manual:1").await;
    c.drain().await;
    let (waiting, _) = c.instance(&inst).await;
    assert_eq!(
        (waiting.status.as_str(), waiting.current_node.as_str()),
        ("waiting", "form")
    );
    assert_eq!(
        waiting.due_at,
        Some(utc("2027-03-08T10:00:00Z")),
        "the timeout"
    );
    // Another form does not count; the timeline form three days later does.
    c.clock.set(utc("2027-03-04T12:00:00Z"));
    c.store
        .start_journeys_for_event(
            &c.org,
            "form.submitted",
            "evt_1",
            &c.couple,
            None,
            &json!({"form_id": "menu"}),
        )
        .await
        .expect("event");
    assert_eq!(c.instance(&inst).await.0.status, "waiting");
    c.store
        .start_journeys_for_event(
            &c.org,
            "form.submitted",
            "evt_2",
            &c.couple,
            None,
            &json!({"form_id": "timeline"}),
        )
        .await
        .expect("event");
    c.drain().await;
    assert_eq!(c.sent(Email).await.len(), 2, "thanks to both partners");
    let (at_person, _) = c.instance(&inst).await;
    assert_eq!(
        (at_person.status.as_str(), at_person.current_node.as_str()),
        ("waiting", "approve")
    );
    // The old timeout comes and goes: nothing (its step is stale).
    c.clock.set(utc("2027-03-09T00:00:00Z"));
    c.drain().await;
    assert!(c.sent(Sms).await.is_empty());
    // The vendor's step waits for a person; completing it (audited) finishes the journey.
    let done = c
        .store
        .operate_instance(
            &c.org,
            &inst.id.to_string(),
            wedsync_store::journeys::Operation::Complete,
            &operator(),
        )
        .await
        .expect("complete");
    assert_eq!(done.current_node, "done");
    c.drain().await;
    assert_eq!(c.instance(&inst).await.0.status, "completed");
}

#[tokio::test]
async fn a_wait_for_an_event_times_out_into_its_timeout_branch() {
    let c = ctx("2027-03-01T10:00:00Z", "2027-09-18").await;
    let journey = c.publish(form_or_reminder()).await;
    let (inst, _) = c.start(&journey, "manual:1").await;
    c.drain().await;
    c.clock.set(utc("2027-03-08T09:59:00Z"));
    c.drain().await;
    assert!(c.sent(Sms).await.is_empty(), "not a minute early");
    c.clock.set(utc("2027-03-08T10:00:00Z"));
    c.drain().await;
    assert_eq!(c.sent(Sms).await.len(), 1);
    assert!(c.sent(Email).await.is_empty());
    assert_eq!(c.instance(&inst).await.0.status, "completed");
    // A late form changes nothing.
    c.store
        .start_journeys_for_event(
            &c.org,
            "form.submitted",
            "evt_9",
            &c.couple,
            None,
            &json!({"form_id": "timeline"}),
        )
        .await
        .expect("event");
    c.drain().await;
    assert!(c.sent(Email).await.is_empty());
}

#[tokio::test]
async fn pause_resume_and_jump_are_manual_audited_operations() {
    use wedsync_store::journeys::Operation;
    let c = ctx("2027-03-01T10:00:00Z", "2027-09-18").await;
    let journey = c.publish(countdown("run_now")).await;
    let (inst, _) = c.start(&journey, "manual:1").await;
    c.drain().await; // waiting until 19 August
    let id = inst.id.to_string();
    let paused = c
        .store
        .operate_instance(&c.org, &id, Operation::Pause, &operator())
        .await
        .expect("pause");
    assert_eq!(paused.status, "paused");
    c.clock.set(utc("2027-08-19T08:00:00Z"));
    c.drain().await;
    assert!(
        c.sent(Sms).await.is_empty(),
        "a paused instance does nothing"
    );
    c.clock.set(utc("2027-08-20T08:00:00Z"));
    let resumed = c
        .store
        .operate_instance(&c.org, &id, Operation::Resume, &operator())
        .await
        .expect("resume");
    assert_eq!(resumed.status, "waiting");
    c.drain().await;
    assert_eq!(
        c.sent(Sms).await.len(),
        2,
        "resumed after its time: it runs at once"
    );
    assert!(matches!(
        c.store
            .operate_instance(&c.org, &id, Operation::Resume, &operator())
            .await,
        Err(wedsync_store::StoreError::Conflict(_))
    ));
    // A second instance, waiting: jump back to the email (an explicit operation) and it
    // sends again, once.
    c.clock.set(utc("2027-04-01T08:00:00Z"));
    let (second, _) = c.start(&journey, "manual:2").await;
    c.drain().await;
    assert_eq!(c.sent(Email).await.len(), 2);
    c.store
        .operate_instance(
            &c.org,
            &second.id.to_string(),
            Operation::JumpTo("hello".into()),
            &operator(),
        )
        .await
        .expect("jump");
    c.drain().await;
    assert_eq!(c.sent(Email).await.len(), 3);
    assert!(matches!(
        c.store
            .operate_instance(
                &c.org,
                &second.id.to_string(),
                Operation::JumpTo("nowhere".into()),
                &operator()
            )
            .await,
        Err(wedsync_store::StoreError::Invalid(_))
    ));
    let audit = c
        .store
        .audit_entries(&c.org, None, 100)
        .await
        .expect("audit");
    let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
    assert!(
        actions.contains(&"journey_instance.pause") && actions.contains(&"journey_instance.jump"),
        "{actions:?}"
    );
}

#[tokio::test]
async fn a_batch_of_advances_moves_only_the_instances_still_at_their_step() {
    use wedsync_core::clock::Clock as _;
    use wedsync_store::journeys::{Advance, StepRecord};
    let c = ctx("2027-03-01T10:00:00Z", "2027-09-18").await;
    let journey = c.publish(countdown("run_now")).await;
    let mut ids = Vec::new();
    for key in ["manual:1", "manual:2", "manual:3"] {
        ids.push(c.start(&journey, key).await.0.id.to_string());
    }
    let now = c.clock.now();
    let advance = |seq: i32| Advance {
        seq,
        record: StepRecord {
            seq,
            node_id: "start".into(),
            node_type: "trigger".into(),
            at: now,
            outcome: "started".into(),
            detail: "by hand".into(),
            output: None,
        },
        next_node: "hello".into(),
        status: "running".into(),
        wait: None,
        run_at: Some(now),
        reason: None,
        priority: 0,
    };
    // The second names a step its instance is not at (a stale job): it alone does nothing.
    let moved = c
        .store
        .advance_instances(vec![
            (c.org, ids[0].clone(), advance(0)),
            (c.org, ids[1].clone(), advance(7)),
            (c.org, ids[2].clone(), advance(0)),
        ])
        .await
        .expect("advance");
    assert_eq!(moved, [true, false, true]);
    for (id, expect) in ids
        .iter()
        .zip([("hello", 1, 1), ("start", 0, 0), ("hello", 1, 1)])
    {
        let (inst, history) = c.store.get_instance(&c.org, id).await.expect("instance");
        assert_eq!(
            (inst.current_node.as_str(), inst.step_seq, history.len()),
            expect,
            "{id}"
        );
    }
    // Run again, the same batch moves nothing: every instance has moved on or never was there.
    let again = c
        .store
        .advance_instances(vec![
            (c.org, ids[0].clone(), advance(0)),
            (c.org, ids[2].clone(), advance(0)),
        ])
        .await
        .expect("advance");
    assert_eq!(again, [false, false]);
    // The moved ones go on from `hello` through their queued jobs.
    c.drain().await;
    assert_eq!(c.sent(Email).await.len(), 3, "one email per instance");
}

#[tokio::test]
async fn deleting_a_couple_cancels_its_journeys_waiting_or_paused_and_nothing_more_is_sent() {
    use wedsync_store::journeys::Operation;
    let c = ctx("2027-03-01T10:00:00Z", "2027-09-18").await;
    let journey = c.publish(countdown("run_now")).await;
    let (waiting, _) = c.start(&journey, "manual:1").await;
    let (paused, _) = c.start(&journey, "manual:2").await;
    c.drain().await; // both sent their email and wait until 19 August
    c.store
        .operate_instance(
            &c.org,
            &paused.id.to_string(),
            Operation::Pause,
            &operator(),
        )
        .await
        .expect("pause");
    c.store
        .delete_couple(&c.org, &c.couple, &operator())
        .await
        .expect("delete");
    for inst in [&waiting, &paused] {
        let (now, history) = c.instance(inst).await;
        assert_eq!(now.status, "cancelled", "{now:?}");
        assert!(
            now.reason
                .as_deref()
                .is_some_and(|r| r.contains("the couple was deleted")),
            "{now:?}"
        );
        let last = history.last().expect("history");
        assert_eq!(last.outcome, "cancelled");
        assert_eq!(last.node_id, "t-30");
    }
    // Their timers come due and do nothing.
    c.clock.set(utc("2027-08-19T08:00:00Z"));
    c.drain().await;
    assert!(c.sent(Sms).await.is_empty());
    assert_eq!(c.sent(Email).await.len(), 2, "only what was sent before");
    // A cancelled instance cannot be resumed.
    assert!(matches!(
        c.store
            .operate_instance(
                &c.org,
                &paused.id.to_string(),
                Operation::Resume,
                &operator()
            )
            .await,
        Err(wedsync_store::StoreError::Conflict(_))
    ));
}

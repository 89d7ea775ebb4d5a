//! Journeys that start by themselves: a date of the couple's, a delay after a couple is added,
//! a cron schedule. The real handlers run through the queue (publishing, the hub's outbox
//! events, tick chains) on a moved clock.

use serde_json::{Value, json};
use wedsync_core::id::CoupleId;
use wedsync_core::notify::NotifyChannel::Email;
use wedsync_store::journeys::{COUPLE_KIND, CRON_KIND, Instance, PUBLISHED_KIND};
use wedsync_store::outbox::PUBLISH_KIND;
use wedsync_store::page::PageRequest;
use wedsync_store::worker::JobHandler;

use super::{Ctx, ctx, operator, utc};

/// trigger (given) → email partner A → end.
fn scheduled(trigger: Value) -> Value {
    json!({
        "nodes": [
            {"id": "start", "type": "trigger", "position": {"x": 0, "y": 0}, "data": {"trigger": trigger}},
            {"id": "hello", "type": "email", "position": {"x": 0, "y": 1},
             "data": {"to": "partner_a", "subject": "Hello {{ couple.names }}", "text": "See you soon"}},
            {"id": "done", "type": "end", "position": {"x": 0, "y": 2}, "data": {}}
        ],
        "edges": [
            {"id": "a", "source": "start", "target": "hello"},
            {"id": "b", "source": "hello", "target": "done"}
        ],
        "viewport": {"x": 0, "y": 0, "zoom": 1}
    })
}

impl Ctx {
    pub(super) async fn add_couple(&self, name: &str, wedding: &str, zone: &str) -> CoupleId {
        self.store
            .create_couple(
                &self.org,
                serde_json::from_value::<wedsync_core::couple::CoupleInput>(json!({
                    "partners": [
                        {"name": name, "email": format!("{}@example.com", name.to_lowercase())},
                        {"name": "Partner", "email": format!("partner.{}@example.com", name.to_lowercase())}
                    ],
                    "wedding_date": wedding, "time_zone": zone
                }))
                .expect("input")
                .validate(wedsync_core::org::TimeZone::parse(zone).expect("zone"))
                .expect("valid"),
                &operator(),
            )
            .await
            .expect("couple")
            .id
    }

    /// Runs every due job of the hub's own kinds that journeys depend on (outbox events,
    /// publishing, couples, cron ticks, steps) until none is due. Returns the steps run.
    pub(super) async fn drain_all(&self) -> usize {
        let handlers: Vec<(&str, Box<dyn JobHandler>)> = vec![
            (
                PUBLISH_KIND,
                Box::new(wedsync_store::outbox::publish_handler(self.store.clone())),
            ),
            (
                PUBLISHED_KIND,
                Box::new(wedsync_journeys::schedule::published_handler(
                    self.store.clone(),
                )),
            ),
            (
                COUPLE_KIND,
                Box::new(wedsync_journeys::schedule::couple_handler(
                    self.store.clone(),
                )),
            ),
            (
                CRON_KIND,
                Box::new(wedsync_journeys::schedule::cron_handler(self.store.clone())),
            ),
        ];
        let mut steps = 0;
        for _ in 0..200 {
            let mut progressed = false;
            for (kind, handler) in &handlers {
                let jobs = self
                    .store
                    .claim("test", kind, 100, chrono::TimeDelta::minutes(1))
                    .await
                    .expect("claim");
                for job in jobs {
                    match handler.run(job.clone()).await {
                        Ok(()) => {
                            progressed = true;
                            self.store
                                .complete("test", std::slice::from_ref(&job.id))
                                .await
                                .expect("complete");
                        }
                        Err(e) => panic!("{kind} failed: {e:?}"),
                    }
                }
            }
            let ran = self.drain().await;
            steps += ran;
            if !progressed && ran == 0 {
                return steps;
            }
        }
        panic!("jobs kept coming")
    }

    pub(super) async fn instances(&self, journey: &wedsync_core::id::JourneyId) -> Vec<Instance> {
        self.store
            .list_instances(
                &self.org,
                journey,
                &Default::default(),
                &PageRequest {
                    limit: Some(100),
                    after: None,
                },
            )
            .await
            .expect("instances")
            .data
    }

    async fn instance_of(
        &self,
        journey: &wedsync_core::id::JourneyId,
        couple: &CoupleId,
    ) -> Option<Instance> {
        self.instances(journey)
            .await
            .into_iter()
            .find(|i| i.couple_id == *couple)
    }

    /// Moves the clock to `at`, runs what is due, and counts the emails sent to `address`.
    async fn emails_by(&self, at: &str, address: &str) -> usize {
        self.clock.set(utc(at));
        self.drain_all().await;
        self.emails_to(address).await
    }

    async fn emails_to(&self, address: &str) -> usize {
        self.sent(Email)
            .await
            .iter()
            .filter(|n| n.to.email.as_deref() == Some(address))
            .count()
    }
}

#[tokio::test]
async fn a_date_trigger_attaches_every_couple_whose_instant_is_ahead_and_follows_moved_dates() {
    // Alex marries 12 June 2027: 30 days before is 13 May, 09:00 BST = 08:00 UTC.
    let c = ctx("2027-01-04T10:00:00Z", "2027-06-12").await;
    // Blake marries on 20 January: 30 days before has gone by, so nothing is attached.
    let blake = c.add_couple("Blake", "2027-01-20", "Europe/London").await;
    c.drain_all().await;
    let journey = c
        .publish(scheduled(json!({
            "kind": "date_reached", "date": "wedding_date", "offset_days": -30, "at": "09:00"
        })))
        .await;
    c.drain_all().await;
    let alex = c
        .instance_of(&journey, &c.couple)
        .await
        .expect("Alex is attached");
    assert_eq!(alex.status, "waiting");
    assert_eq!(alex.current_node, "start");
    assert_eq!(alex.trigger_key, "date_reached");
    assert_eq!(alex.due_at, Some(utc("2027-05-13T08:00:00Z")));
    assert!(c.instance_of(&journey, &blake).await.is_none());

    // A couple added later is attached when its client.created event is published; a couple
    // in New York waits until 09:00 New York time.
    let casey = c
        .add_couple("Casey", "2027-09-01", "America/New_York")
        .await;
    c.drain_all().await;
    let casey_inst = c.instance_of(&journey, &casey).await.expect("attached");
    assert_eq!(casey_inst.due_at, Some(utc("2027-08-02T13:00:00Z")));

    // Blake's wedding moves to 1 August: the instant is ahead again, so Blake is attached.
    c.move_couple(&blake, "2027-08-01").await;
    c.drain_all().await;
    let blake_inst = c.instance_of(&journey, &blake).await.expect("attached");
    assert_eq!(blake_inst.due_at, Some(utc("2027-07-02T08:00:00Z")));

    // Alex's wedding moves later: the waiting trigger follows, once.
    c.move_couple(&c.couple, "2027-07-10").await;
    c.drain_all().await;
    let moved = c.instance_of(&journey, &c.couple).await.expect("still");
    assert_eq!(moved.id, alex.id, "the same instance, rescheduled");
    assert_eq!(moved.due_at, Some(utc("2027-06-10T08:00:00Z")));

    // The old instant passes: nothing. The new one: one email, once.
    assert_eq!(
        c.emails_by("2027-05-13T08:00:00Z", "alex@example.com")
            .await,
        0
    );
    assert_eq!(
        c.emails_by("2027-06-10T07:59:00Z", "alex@example.com")
            .await,
        0
    );
    assert_eq!(
        c.emails_by("2027-06-10T08:00:00Z", "alex@example.com")
            .await,
        1
    );
    let (done, history) = c.instance(&moved).await;
    assert_eq!(done.status, "completed");
    assert!(
        history
            .iter()
            .any(|h| h.detail.contains("the trigger's time has come")),
        "{history:?}"
    );

    // Publishing again (a new version) attaches nobody twice: every couple already has its
    // date_reached instance, which stays on the version it started on.
    let j = c
        .store
        .get_journey(&c.org, &journey)
        .await
        .expect("journey");
    c.store
        .publish_journey(&c.org, &journey, j.revision, &operator())
        .await
        .expect("republish");
    c.drain_all().await;
    assert_eq!(c.instances(&journey).await.len(), 3);
    assert_eq!(
        c.emails_by("2027-09-01T00:00:00Z", "alex@example.com")
            .await,
        1
    );
    assert_eq!(c.emails_to("blake@example.com").await, 1);
    assert_eq!(c.emails_to("casey@example.com").await, 1);
}

#[tokio::test]
async fn a_date_trigger_moved_into_the_past_is_skipped_and_logged() {
    let c = ctx("2027-01-04T10:00:00Z", "2027-06-12").await;
    let journey = c
        .publish(scheduled(json!({
            "kind": "date_reached", "date": "wedding_date", "offset_days": -30, "at": "09:00"
        })))
        .await;
    c.drain_all().await;
    // The wedding comes forward to 20 January: 30 days before has gone by.
    c.move_couple(&c.couple, "2027-01-20").await;
    c.drain_all().await;
    let inst = c.instance_of(&journey, &c.couple).await.expect("instance");
    assert_eq!(inst.status, "skipped");
    let (_, history) = c.instance(&inst).await;
    assert!(
        history
            .last()
            .is_some_and(|h| h.outcome == "skipped" && h.detail.contains("policy is skip")),
        "{history:?}"
    );
    assert_eq!(c.emails_to("alex@example.com").await, 0);
}

#[tokio::test]
async fn a_time_delay_trigger_starts_that_long_after_a_couple_is_added() {
    let c = ctx("2027-01-04T10:00:00Z", "2027-06-12").await;
    c.drain_all().await; // Alex's client.created is published before the journey is
    let journey = c
        .publish(scheduled(
            json!({"kind": "time_delay", "after_seconds": 3600}),
        ))
        .await;
    c.drain_all().await;
    // Couples already there are not started by publishing.
    assert!(c.instances(&journey).await.is_empty());
    c.clock.set(utc("2027-01-04T10:10:00Z"));
    let dana = c.add_couple("Dana", "2027-08-01", "Europe/London").await;
    c.drain_all().await;
    let inst = c.instance_of(&journey, &dana).await.expect("attached");
    assert_eq!(inst.due_at, Some(utc("2027-01-04T11:10:00Z")));
    assert_eq!(
        c.emails_by("2027-01-04T11:09:59Z", "dana@example.com")
            .await,
        0
    );
    assert_eq!(
        c.emails_by("2027-01-04T11:10:00Z", "dana@example.com")
            .await,
        1
    );
    // An update to Dana does not start it again.
    c.move_couple(&dana, "2027-08-08").await;
    assert_eq!(
        c.emails_by("2027-01-05T12:00:00Z", "dana@example.com")
            .await,
        1
    );
    assert_eq!(c.instances(&journey).await.len(), 1);
}

#[tokio::test]
async fn a_cron_trigger_starts_one_instance_per_couple_per_tick_in_each_zone_across_dst() {
    // London springs forward at 01:00 UTC on Sunday 28 March 2027: 01:30 does not exist
    // that night, so the daily 01:30 tick fires at 02:00 BST (01:00 UTC), once.
    let c = ctx("2027-03-27T12:00:00Z", "2027-06-12").await;
    let eli = c.add_couple("Eli", "2027-07-01", "America/New_York").await;
    let past = c.add_couple("Past", "2027-03-01", "Europe/London").await;
    c.drain_all().await;
    let journey = c
        .publish(scheduled(
            json!({"kind": "cron", "expression": "30 1 * * *"}),
        ))
        .await;
    c.drain_all().await;
    assert!(c.instances(&journey).await.is_empty());

    c.clock.set(utc("2027-03-28T00:59:00Z"));
    c.drain_all().await;
    assert!(c.instances(&journey).await.is_empty());
    c.clock.set(utc("2027-03-28T01:00:00Z"));
    c.drain_all().await;
    let first = c.instances(&journey).await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].couple_id, c.couple);
    assert_eq!(first[0].trigger_key, "cron:2027-03-28T01:00:00+00:00");
    assert_eq!(first[0].status, "completed");
    assert_eq!(c.emails_to("alex@example.com").await, 1);

    // New York changed to EDT (UTC−4) on 14 March: its own chain fires at 01:30 EDT, 05:30 UTC.
    c.clock.set(utc("2027-03-28T05:30:00Z"));
    c.drain_all().await;
    assert!(c.instance_of(&journey, &eli).await.is_some());
    assert_eq!(c.emails_to("eli@example.com").await, 1);

    // The next London tick is 01:30 BST on the 29th (00:30 UTC); nothing in between.
    assert_eq!(
        c.emails_by("2027-03-29T00:29:00Z", "alex@example.com")
            .await,
        1
    );
    assert_eq!(
        c.emails_by("2027-03-29T00:30:00Z", "alex@example.com")
            .await,
        2
    );
    // A couple whose wedding has passed is never started.
    assert!(c.instance_of(&journey, &past).await.is_none());

    // The hub is down for three days: one late tick fires, not three.
    assert_eq!(
        c.emails_by("2027-04-01T12:00:00Z", "alex@example.com")
            .await,
        3
    );
    // ...and the schedule goes on from now.
    assert_eq!(
        c.emails_by("2027-04-02T00:30:00Z", "alex@example.com")
            .await,
        4
    );
}

#[tokio::test]
async fn a_new_version_ends_the_old_cron_schedule_and_starts_its_own() {
    let c = ctx("2027-05-01T12:00:00Z", "2027-06-12").await;
    let journey = c
        .publish(scheduled(json!({
            "kind": "cron", "expression": "0 9 * * *", "time_zone": "Europe/London"
        })))
        .await;
    c.drain_all().await;
    let j = c
        .store
        .get_journey(&c.org, &journey)
        .await
        .expect("journey");
    c.store
        .publish_journey(&c.org, &journey, j.revision, &operator())
        .await
        .expect("republish");
    c.drain_all().await;
    c.clock.set(utc("2027-05-02T08:00:00Z"));
    c.drain_all().await;
    let started = c.instances(&journey).await;
    assert_eq!(started.len(), 1, "one tick, from the live version only");
    assert_eq!(started[0].version, 2);
    assert_eq!(c.emails_to("alex@example.com").await, 1);
}

#[tokio::test]
async fn a_paused_wait_follows_a_moved_date_and_runs_at_the_new_instant_when_resumed() {
    let c = ctx("2027-03-01T10:00:00Z", "2027-09-18").await;
    let journey = c.publish(super::countdown("run_now")).await;
    let (inst, _) = c.start(&journey, "manual:1").await;
    c.drain().await;
    c.store
        .operate_instance(
            &c.org,
            &inst.id.to_string(),
            wedsync_store::journeys::Operation::Pause,
            &operator(),
        )
        .await
        .expect("pause");
    c.move_couple(&c.couple, "2027-11-20").await;
    let (paused, history) = c.instance(&inst).await;
    assert_eq!(paused.status, "paused");
    assert_eq!(paused.due_at, Some(utc("2027-10-21T08:00:00Z")));
    assert!(
        history
            .last()
            .is_some_and(|h| h.outcome == "rescheduled" && h.detail.contains("(paused)")),
        "{history:?}"
    );
    // Nothing runs while paused, even after the old instant.
    c.clock.set(utc("2027-08-19T08:00:00Z"));
    c.drain().await;
    assert!(
        c.sent(wedsync_core::notify::NotifyChannel::Sms)
            .await
            .is_empty()
    );
    c.store
        .operate_instance(
            &c.org,
            &inst.id.to_string(),
            wedsync_store::journeys::Operation::Resume,
            &operator(),
        )
        .await
        .expect("resume");
    c.drain().await;
    assert!(
        c.sent(wedsync_core::notify::NotifyChannel::Sms)
            .await
            .is_empty()
    );
    c.clock.set(utc("2027-10-21T08:00:00Z"));
    c.drain().await;
    assert_eq!(
        c.sent(wedsync_core::notify::NotifyChannel::Sms).await.len(),
        2
    );
    assert_eq!(c.instance(&inst).await.0.status, "completed");
}

//! Outbound webhooks end to end: a real database, a real HTTP receiver on loopback, the
//! real sender and worker, and a moved clock. Jobs are run by `drain`, which claims what is
//! due at the clock's current instant (telling the delivery handler of each claimed batch,
//! as the worker pool does), so nothing here waits for time to pass.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use wedsync_core::breaker::BreakerPolicy;
use wedsync_core::clock::{Clock, ManualClock};
use wedsync_core::id::{EndpointId, OrgId};
use wedsync_delivery::sender::Sender;
use wedsync_delivery::ssrf::{ClientOptions, SsrfPolicy};
use wedsync_delivery::worker::{DeliveryPolicy, deliver_handler};
use wedsync_store::queue::AfterFailure;
use wedsync_store::testing::{TestDb, migrated_store};
use wedsync_store::webhooks::{DELIVER_KIND, EndpointInput, EndpointPatch, MessageInput};
use wedsync_store::worker::{JobError, JobHandler};
use wedsync_store::{Actor, Store, StoreError};

// ---------------------------------------------------------------------------------------
// A receiver that records every request and answers from a script.

#[derive(Clone, Debug)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Clone, Debug)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    /// Hold the answer until the test releases the receiver (a receiver that hangs).
    hang: bool,
}

impl Reply {
    fn status(status: u16) -> Self {
        Self {
            status,
            headers: vec![],
            hang: false,
        }
    }
}

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
    default: Arc<Mutex<Option<Reply>>>,
    release: Arc<tokio::sync::Notify>,
}

impl Receiver {
    async fn start() -> (Self, SocketAddr) {
        let receiver = Receiver::default();
        let r = receiver.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let r = r.clone();
            async move {
                r.got.lock().expect("lock").push(Received { headers, body });
                let reply = r
                    .script
                    .lock()
                    .expect("lock")
                    .pop_front()
                    .or_else(|| r.default.lock().expect("lock").clone())
                    .unwrap_or(Reply::status(200));
                if reply.hang {
                    r.release.notified().await;
                }
                let mut resp = axum::response::Response::builder()
                    .status(StatusCode::from_u16(reply.status).expect("status"));
                for (k, v) in reply.headers {
                    resp = resp.header(k, v);
                }
                resp.body(axum::body::Body::from("receiver says hello"))
                    .expect("response")
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, addr)
    }

    fn answer(&self, reply: Reply) {
        *self.default.lock().expect("lock") = Some(reply);
    }

    fn then(&self, reply: Reply) {
        self.script.lock().expect("lock").push_back(reply);
    }

    fn count(&self) -> usize {
        self.got.lock().expect("lock").len()
    }

    fn last(&self) -> Received {
        self.got
            .lock()
            .expect("lock")
            .last()
            .cloned()
            .expect("a request")
    }

    fn all(&self) -> Vec<Received> {
        self.got.lock().expect("lock").clone()
    }
}

// ---------------------------------------------------------------------------------------
// The hub's side.

struct Ctx {
    store: Store,
    clock: ManualClock,
    org: OrgId,
    handler: Box<dyn JobHandler>,
    publish: Box<dyn JobHandler>,
    route: Box<dyn JobHandler>,
    _db: TestDb,
}

fn loopback_allowed() -> SsrfPolicy {
    SsrfPolicy {
        allow: vec!["127.0.0.1/32".parse().expect("net")],
    }
}

async fn ctx_with(start: DateTime<Utc>, policy: DeliveryPolicy, ssrf: SsrfPolicy) -> Ctx {
    let clock = ManualClock::new(start);
    let (store, db) = migrated_store(Arc::new(clock.clone()))
        .await
        .expect("test database");
    let settings = wedsync_core::org::OrgSettings::parse(
        "Lens & Lace",
        "Europe/London",
        "professional",
        "GB",
        "GBP",
    )
    .expect("valid");
    let org = store
        .create_org(settings, &Actor::Cli("test".into()))
        .await
        .expect("org");
    let sender = Sender::new(ssrf, ClientOptions::default()).expect("client");
    Ctx {
        handler: Box::new(deliver_handler(store.clone(), sender, policy)),
        publish: Box::new(wedsync_store::outbox::publish_handler(store.clone())),
        route: Box::new(wedsync_store::inbound::route_handler(store.clone())),
        store,
        clock,
        org: org.id,
        _db: db,
    }
}

/// A clock at the real present, so the reference library's own timestamp check passes.
async fn ctx() -> Ctx {
    ctx_with(Utc::now(), DeliveryPolicy::default(), loopback_allowed()).await
}

fn operator() -> Actor {
    Actor::Cli("test".into())
}

impl Ctx {
    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    async fn endpoint(&self, addr: SocketAddr, event_types: &[&str]) -> (EndpointId, String) {
        self.endpoint_with(EndpointInput {
            url: format!("http://{addr}/hooks"),
            event_types: event_types.iter().map(|s| (*s).to_owned()).collect(),
            ..Default::default()
        })
        .await
    }

    async fn endpoint_with(&self, input: EndpointInput) -> (EndpointId, String) {
        let (e, secret) = self
            .store
            .create_endpoint(&self.org, input, &operator())
            .await
            .expect("endpoint");
        (e.id, secret)
    }

    /// A `payment.completed` event stored for `org` through a new Stripe source; its id.
    async fn inbound_payment(&self, org: OrgId, subject: Option<&str>, data: Value) -> String {
        let source = wedsync_store::testing::source(
            &self.store,
            &org,
            wedsync_core::source::Provider::Stripe,
            "whsec_test",
        )
        .await
        .expect("source");
        let ingested = self
            .store
            .ingest(
                wedsync_store::inbound::IncomingRequest {
                    source_id: source.id,
                    org_id: org,
                    headers: vec![],
                    content_type: "application/json".into(),
                    body: br#"{"id":"evt_1"}"#.to_vec(),
                    dedupe_key: "stripe:evt_1".into(),
                },
                vec![wedsync_store::inbound::NewEvent {
                    event_type: "payment.completed".into(),
                    subject: subject.map(str::to_owned),
                    time: self.now(),
                    data,
                    couple_ref: None,
                    booking_ref: None,
                }],
            )
            .await
            .expect("ingest");
        let wedsync_store::inbound::Ingested::Accepted { event_ids, .. } = ingested else {
            panic!("accepted")
        };
        event_ids[0].clone()
    }

    async fn message(&self, event_type: &str, data: Value) -> String {
        self.store
            .create_message(
                &self.org,
                MessageInput {
                    event_type: event_type.into(),
                    data,
                },
                None,
                TimeDelta::hours(24),
                None,
            )
            .await
            .expect("message")
            .0
            .id
            .to_string()
    }

    /// Runs every job due now (publishing outbox events and delivery attempts), again and
    /// again until none is due. Returns how many delivery jobs ran (deferred ones included).
    async fn drain(&self) -> usize {
        let mut ran = 0;
        for _ in 0..1000 {
            let mut jobs = self
                .store
                .claim(
                    "test",
                    wedsync_store::outbox::PUBLISH_KIND,
                    100,
                    TimeDelta::minutes(1),
                )
                .await
                .expect("claim");
            jobs.extend(
                self.store
                    .claim(
                        "test",
                        wedsync_store::inbound::ROUTE_KIND,
                        100,
                        TimeDelta::minutes(1),
                    )
                    .await
                    .expect("claim"),
            );
            let deliveries = self
                .store
                .claim("test", DELIVER_KIND, 100, TimeDelta::minutes(1))
                .await
                .expect("claim");
            ran += deliveries.len();
            // As the worker pool does: the batch's deliveries are read in one query.
            self.handler.claimed(&deliveries);
            jobs.extend(deliveries);
            if jobs.is_empty() {
                return ran;
            }
            let mut deferred_only = true;
            for job in jobs {
                let handler = if job.kind == DELIVER_KIND {
                    &self.handler
                } else if job.kind == wedsync_store::inbound::ROUTE_KIND {
                    &self.route
                } else {
                    &self.publish
                };
                match handler.run(job.clone()).await {
                    Ok(()) => {
                        deferred_only = false;
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
                        deferred_only = false;
                        self.store
                            .fail("test", &job.id, &format!("{e:?}"), AfterFailure::Dead)
                            .await
                            .expect("fail");
                    }
                }
            }
            if deferred_only {
                return ran;
            }
        }
        panic!("jobs kept coming")
    }

    async fn delivery(&self, message: &str) -> wedsync_store::webhooks::Delivery {
        let (_, mut deliveries) = self
            .store
            .get_message(&self.org, message)
            .await
            .expect("message");
        assert_eq!(deliveries.len(), 1, "one endpoint");
        deliveries.remove(0)
    }

    async fn endpoint_state(&self, id: &EndpointId) -> wedsync_store::webhooks::Endpoint {
        self.store
            .get_endpoint(&self.org, id)
            .await
            .expect("endpoint")
    }
}

fn header<'a>(r: &'a Received, name: &str) -> &'a str {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn every_delivery_verifies_with_the_reference_standard_webhooks_library() {
    let c = ctx().await;
    let (rx, addr) = Receiver::start().await;
    let (_, secret) = c
        .endpoint_with(EndpointInput {
            url: format!("http://{addr}/hooks"),
            event_types: vec!["booking.*".into(), "payment.completed".into()],
            headers: [("X-Vendor-Token".to_owned(), "tok_123".to_owned())].into(),
            ..Default::default()
        })
        .await;
    let msg = c
        .message(
            "payment.completed",
            json!({"amount_minor": 50000, "currency": "GBP"}),
        )
        .await;
    c.message("couple.created", json!({})).await; // not subscribed
    c.drain().await;
    assert_eq!(rx.count(), 1, "only the subscribed event is delivered");
    let got = rx.last();
    let verifier = standardwebhooks::Webhook::new(&secret).expect("secret");
    verifier
        .verify(&got.body, &got.headers)
        .expect("the reference implementation verifies our signature");
    assert_eq!(header(&got, "webhook-id"), msg);
    assert_eq!(header(&got, "content-type"), "application/json");
    assert!(header(&got, "user-agent").starts_with("wedsync"));
    assert_eq!(header(&got, "x-vendor-token"), "tok_123");
    let body: Value = serde_json::from_slice(&got.body).expect("json");
    assert_eq!(body["type"], "payment.completed");
    assert_eq!(body["id"], msg);
    assert_eq!(body["data"]["amount_minor"], 50000);
    // A tampered body does not verify.
    let mut tampered = got.body.to_vec();
    tampered[10] ^= 1;
    assert!(verifier.verify(&tampered, &got.headers).is_err());

    let d = c.delivery(&msg).await;
    assert_eq!(d.status, "succeeded");
    assert_eq!(d.attempts, 1);
    let attempts = c
        .store
        .list_attempts(&c.org, None, Some(&msg), &Default::default())
        .await
        .expect("attempts");
    let a = &attempts.data[0];
    assert!(a.success);
    assert_eq!(a.status_code, Some(200));
    assert_eq!(a.response_body, "receiver says hello");
    assert!(
        a.response_headers
            .iter()
            .any(|(k, _)| k == "content-length")
    );
    assert_eq!(a.trigger, "scheduled");
}

#[tokio::test]
async fn domain_events_fan_out_through_the_outbox_with_filters() {
    let c = ctx().await;
    let (all, all_addr) = Receiver::start().await;
    let (venue, venue_addr) = Receiver::start().await;
    c.endpoint(all_addr, &["client.*"]).await;
    c.endpoint_with(EndpointInput {
        url: format!("http://{venue_addr}/hooks"),
        event_types: vec!["client.created".into()],
        filter: Some(json!({"data.couple.wedding_date": {"$gte": "2027-01-01"}})),
        ..Default::default()
    })
    .await;
    for date in ["2026-12-12", "2027-06-05"] {
        let input: wedsync_core::couple::CoupleInput = serde_json::from_value(json!({
            "partners": [{"name": "Ana", "email": "ana@example.com"}, {"name": "Ben", "email": "ben@example.com"}],
            "wedding_date": date,
        }))
        .expect("shape");
        let fields = input
            .validate(wedsync_core::org::TimeZone::parse("Europe/London").expect("zone"))
            .expect("valid");
        c.store
            .create_couple(&c.org, fields, &operator())
            .await
            .expect("couple");
    }
    c.drain().await;
    assert_eq!(all.count(), 2, "client.* receives both couples");
    assert_eq!(
        venue.count(),
        1,
        "the filter lets only the 2027 wedding through"
    );
    let body: Value = serde_json::from_slice(&venue.last().body).expect("json");
    assert_eq!(body["data"]["couple"]["wedding_date"], "2027-06-05");
    assert!(
        body["event_id"]
            .as_str()
            .expect("event")
            .starts_with("evt_")
    );
    // Publishing again (at-least-once) creates no second message.
    for e in c
        .store
        .outbox_events(&c.org, None, 10)
        .await
        .expect("events")
    {
        c.store.publish_event(&e.id, 0).await.expect("republish");
    }
    c.drain().await;
    assert_eq!(all.count(), 2);
    assert_eq!(
        c.store
            .list_messages(&c.org, Some("client.created"), &Default::default())
            .await
            .expect("messages")
            .data
            .len(),
        2
    );
}

#[tokio::test]
async fn retries_follow_the_schedule_with_jitter_then_give_up() {
    let policy = DeliveryPolicy {
        breaker: BreakerPolicy {
            failure_threshold: 1000,
            ..Default::default()
        },
        ..Default::default()
    };
    let c = ctx_with(Utc::now(), policy, loopback_allowed()).await;
    let (rx, addr) = Receiver::start().await;
    rx.answer(Reply::status(500));
    let (ep, secret) = c.endpoint(addr, &[]).await;
    let msg = c.message("invoice.sent", json!({"n": 1})).await;
    // The first try, and the immediate retry.
    c.drain().await;
    assert_eq!(rx.count(), 2);
    let schedule = [5, 300, 1_800, 7_200, 18_000, 36_000, 36_000];
    for (i, nominal) in schedule.into_iter().enumerate() {
        let d = c.delivery(&msg).await;
        assert_eq!(d.status, "pending");
        let wait = d.next_attempt_at.expect("scheduled") - c.now();
        let (low, high) = (nominal * 800, nominal * 1200);
        assert!(
            wait.num_milliseconds() >= low && wait.num_milliseconds() <= high,
            "retry {} after {wait} is outside {nominal} s ± 20%",
            i + 2
        );
        // Nothing happens before it is due.
        c.clock.advance(wait - TimeDelta::milliseconds(1));
        c.drain().await;
        assert_eq!(rx.count(), i + 2);
        c.clock.advance(TimeDelta::milliseconds(1));
        c.drain().await;
        assert_eq!(rx.count(), i + 3);
    }
    let d = c.delivery(&msg).await;
    assert_eq!(d.status, "failed", "9 attempts, then it gives up");
    assert_eq!(d.attempts, 9);
    assert!(
        d.last_error
            .expect("reason")
            .contains("gave up after 9 attempts")
    );
    // Every attempt carried the same webhook-id, each freshly signed.
    let all = rx.all();
    assert!(all.iter().all(|r| header(r, "webhook-id") == msg));
    let stamps: std::collections::BTreeSet<_> =
        all.iter().map(|r| header(r, "webhook-timestamp")).collect();
    assert!(stamps.len() > 5, "each attempt is signed at its own time");
    let verifier = standardwebhooks::Webhook::new(&secret).expect("secret");
    for r in &all {
        let ts: i64 = header(r, "webhook-timestamp").parse().expect("ts");
        let expected = verifier.sign(&msg, ts, &r.body).expect("sign");
        assert_eq!(header(r, "webhook-signature"), expected);
    }
    // Stats see it all.
    let stats = c
        .store
        .endpoint_stats(&c.org, &ep, c.now() - TimeDelta::days(7))
        .await
        .expect("stats");
    assert_eq!(
        (stats.failed, stats.attempts, stats.successful_attempts),
        (1, 9, 0)
    );
}

#[tokio::test]
async fn retry_after_is_honoured_within_bounds() {
    let c = ctx().await;
    let (rx, addr) = Receiver::start().await;
    c.endpoint(addr, &[]).await;
    let asked = |secs: &str| Reply {
        status: 429,
        headers: vec![("retry-after", secs.to_owned())],
        hang: false,
    };
    rx.then(asked("120"));
    let msg = c.message("invoice.sent", json!({})).await;
    c.drain().await;
    let wait = c.delivery(&msg).await.next_attempt_at.expect("due") - c.now();
    assert!(
        wait >= TimeDelta::seconds(120) && wait <= TimeDelta::seconds(121),
        "the schedule says now, the receiver said 120 s: {wait}"
    );
    c.clock.advance(wait);
    rx.then(asked("86400"));
    c.drain().await;
    let wait = c.delivery(&msg).await.next_attempt_at.expect("due") - c.now();
    assert_eq!(
        wait,
        TimeDelta::hours(1),
        "a day is clamped to the 1 h bound"
    );
    c.clock.advance(wait);
    c.drain().await;
    assert_eq!(c.delivery(&msg).await.status, "succeeded");
    assert_eq!(rx.count(), 3);
}

#[tokio::test]
async fn gone_disables_the_endpoint_and_says_so_to_other_endpoints() {
    let c = ctx().await;
    let (rx, addr) = Receiver::start().await;
    let (ops, ops_addr) = Receiver::start().await;
    rx.answer(Reply::status(410));
    let (ep, _) = c.endpoint(addr, &["invoice.*"]).await;
    c.endpoint(ops_addr, &["endpoint.disabled"]).await;
    let first = c.message("invoice.sent", json!({})).await;
    c.drain().await;
    let state = c.endpoint_state(&ep).await;
    assert!(!state.enabled);
    assert_eq!(
        state.disabled_reason.as_deref(),
        Some("the endpoint answered 410 Gone")
    );
    assert_eq!(c.delivery(&first).await.status, "failed");
    assert_eq!(
        ops.count(),
        1,
        "endpoint.disabled went to the subscribed endpoint"
    );
    let body: Value = serde_json::from_slice(&ops.last().body).expect("json");
    assert_eq!(body["type"], "endpoint.disabled");
    assert_eq!(body["data"]["endpoint_id"], ep.to_string());

    // While disabled, new messages are kept as failed, not sent; enabling and recovering
    // sends them.
    let second = c.message("invoice.sent", json!({"n": 2})).await;
    c.drain().await;
    assert_eq!(rx.count(), 1);
    assert_eq!(
        c.delivery(&second).await.last_error.as_deref(),
        Some("endpoint disabled")
    );
    rx.answer(Reply::status(204));
    c.store
        .update_endpoint(
            &c.org,
            &ep,
            EndpointPatch {
                enabled: Some(true),
                ..Default::default()
            },
            &operator(),
        )
        .await
        .expect("enable");
    let resent = c
        .store
        .recover(&c.org, &ep, c.now() - TimeDelta::hours(1), &operator())
        .await
        .expect("recover");
    assert_eq!(resent, 2);
    c.drain().await;
    assert_eq!(c.delivery(&first).await.status, "succeeded");
    assert_eq!(c.delivery(&second).await.status, "succeeded");
    let attempts = c
        .store
        .list_attempts(&c.org, Some(&ep), Some(&second), &Default::default())
        .await
        .expect("attempts");
    assert_eq!(attempts.data.last().expect("one").trigger, "manual");
}

#[tokio::test]
async fn the_breaker_opens_then_a_half_open_probe_recovers_it() {
    let policy = DeliveryPolicy {
        breaker: BreakerPolicy {
            failure_threshold: 3,
            cool_down: TimeDelta::seconds(60),
            probe_timeout: TimeDelta::seconds(30),
        },
        ..Default::default()
    };
    let c = ctx_with(Utc::now(), policy, loopback_allowed()).await;
    let (rx, addr) = Receiver::start().await;
    rx.answer(Reply::status(503));
    let (ep, _) = c.endpoint(addr, &[]).await;
    // One message fails its first try and its immediate retry; a second trips the breaker.
    let a = c.message("invoice.sent", json!({"n": 1})).await;
    c.drain().await;
    let b = c.message("invoice.sent", json!({"n": 2})).await;
    c.drain().await;
    let sent = rx.count();
    assert_eq!(sent, 3, "the third consecutive failure opens the breaker");
    let breakers = c.store.list_breakers(&c.org).await.expect("breakers");
    let breaker = breakers
        .iter()
        .find(|x| x.target == format!("endpoint:{ep}"))
        .expect("breaker");
    assert_eq!(breaker.state.name(), "open");
    // While open, due attempts wait without being made or counted.
    let c3 = c.message("invoice.sent", json!({"n": 3})).await;
    c.clock.advance(TimeDelta::seconds(30));
    c.drain().await;
    assert_eq!(rx.count(), sent);
    assert_eq!(c.delivery(&c3).await.attempts, 0);
    // After the cool-down one probe goes through; it succeeds and the rest follow.
    rx.answer(Reply::status(200));
    c.clock.advance(TimeDelta::seconds(31));
    c.drain().await;
    c.clock.advance(TimeDelta::minutes(10));
    c.drain().await;
    for m in [&a, &b, &c3] {
        assert_eq!(c.delivery(m).await.status, "succeeded", "{m}");
    }
    let breakers = c.store.list_breakers(&c.org).await.expect("breakers");
    assert!(
        breakers.iter().all(|x| x.state.name() == "closed"),
        "{breakers:?}"
    );
}

#[tokio::test]
async fn an_endpoint_failing_for_five_days_is_disabled() {
    let policy = DeliveryPolicy {
        breaker: BreakerPolicy {
            failure_threshold: 1000,
            ..Default::default()
        },
        ..Default::default()
    };
    let c = ctx_with(Utc::now(), policy, loopback_allowed()).await;
    let (rx, addr) = Receiver::start().await;
    rx.answer(Reply::status(500));
    let (ep, _) = c.endpoint(addr, &[]).await;
    c.message("invoice.sent", json!({})).await;
    c.drain().await;
    let since = c.endpoint_state(&ep).await.failing_since.expect("failing");
    // Days of failures, each day a new message.
    for _ in 0..4 {
        c.clock.advance(TimeDelta::days(1));
        c.message("invoice.sent", json!({})).await;
        c.drain().await;
        assert!(c.endpoint_state(&ep).await.enabled);
    }
    c.clock.advance(TimeDelta::days(1));
    c.message("invoice.sent", json!({})).await;
    c.drain().await;
    let state = c.endpoint_state(&ep).await;
    assert!(!state.enabled, "five days without a success");
    assert!(
        state
            .disabled_reason
            .expect("reason")
            .contains(&since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    );
    let events = c
        .store
        .outbox_events(&c.org, None, 100)
        .await
        .expect("events");
    assert!(events.iter().any(|e| e.event_type == "endpoint.disabled"));
    // A success in between resets the streak: shown by enabling, which clears it.
    c.store
        .update_endpoint(
            &c.org,
            &ep,
            EndpointPatch {
                enabled: Some(true),
                ..Default::default()
            },
            &operator(),
        )
        .await
        .expect("enable");
    assert_eq!(c.endpoint_state(&ep).await.failing_since, None);
}

#[tokio::test]
async fn a_rotated_secret_signs_beside_the_new_one_for_24_hours() {
    let c = ctx().await;
    let (rx, addr) = Receiver::start().await;
    let (ep, old) = c.endpoint(addr, &[]).await;
    let (view, new) = c
        .store
        .rotate_endpoint_secret(&c.org, &ep, None, TimeDelta::hours(24), &operator())
        .await
        .expect("rotate");
    assert_ne!(old, new);
    assert_eq!(
        view.previous_secret_expires_at,
        Some(c.now() + TimeDelta::hours(24))
    );
    c.message("invoice.sent", json!({})).await;
    c.drain().await;
    let got = rx.last();
    let signatures: Vec<&str> = header(&got, "webhook-signature").split(' ').collect();
    assert_eq!(signatures.len(), 2, "both secrets sign during the window");
    for secret in [&old, &new] {
        standardwebhooks::Webhook::new(secret)
            .expect("secret")
            .verify(&got.body, &got.headers)
            .expect("verifies with either secret");
    }
    c.clock.advance(TimeDelta::hours(24));
    let msg = c.message("invoice.sent", json!({})).await;
    c.drain().await;
    let got = rx.last();
    assert_eq!(header(&got, "webhook-id"), msg);
    assert_eq!(header(&got, "webhook-signature").split(' ').count(), 1);
    let ts: i64 = header(&got, "webhook-timestamp").parse().expect("ts");
    let with = |s: &str| {
        standardwebhooks::Webhook::new(s)
            .expect("secret")
            .sign(&msg, ts, &got.body)
            .expect("sign")
    };
    assert_eq!(header(&got, "webhook-signature"), with(&new));
    assert_ne!(header(&got, "webhook-signature"), with(&old));
}

#[tokio::test]
async fn messages_are_idempotent_for_24_hours() {
    let c = ctx().await;
    let (rx, addr) = Receiver::start().await;
    c.endpoint(addr, &[]).await;
    let create = |data: Value| {
        c.store.create_message(
            &c.org,
            MessageInput {
                event_type: "invoice.sent".into(),
                data,
            },
            Some("order-42"),
            TimeDelta::hours(24),
            None,
        )
    };
    let (first, created) = create(json!({"n": 1})).await.expect("first");
    assert!(created);
    let (again, created) = create(json!({"n": 1})).await.expect("again");
    assert!(!created);
    assert_eq!(again.id, first.id);
    assert!(matches!(
        create(json!({"n": 2})).await,
        Err(StoreError::Conflict(_))
    ));
    c.drain().await;
    assert_eq!(rx.count(), 1, "sent once");
    c.clock.advance(TimeDelta::hours(24));
    let (later, created) = create(json!({"n": 1})).await.expect("later");
    assert!(created, "after 24 hours the key is free again");
    assert_ne!(later.id, first.id);
    // A payload over the limit is refused.
    let huge = "x".repeat(wedsync_store::webhooks::MAX_PAYLOAD_BYTES);
    assert!(matches!(
        c.store
            .create_message(
                &c.org,
                MessageInput {
                    event_type: "invoice.sent".into(),
                    data: json!({ "blob": huge }),
                },
                None,
                TimeDelta::hours(24),
                None,
            )
            .await,
        Err(StoreError::Invalid(_))
    ));
}

#[tokio::test]
async fn the_ssrf_guard_refuses_private_space_unless_allow_listed() {
    let c = ctx_with(Utc::now(), DeliveryPolicy::default(), SsrfPolicy::default()).await;
    let (rx, addr) = Receiver::start().await;
    let port = addr.port();
    let urls = [
        format!("http://127.0.0.1:{port}/x"),
        "http://10.1.2.3/x".to_owned(),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        format!("http://[::1]:{port}/x"),
        format!("http://[::ffff:127.0.0.1]:{port}/x"),
        format!("http://localhost:{port}/x"),
    ];
    let mut messages = Vec::new();
    for url in &urls {
        let (ep, _) = c
            .endpoint_with(EndpointInput {
                url: url.clone(),
                event_types: vec!["invoice.sent".into()],
                ..Default::default()
            })
            .await;
        let (m, _) = c
            .store
            .create_message(
                &c.org,
                MessageInput {
                    event_type: "invoice.sent".into(),
                    data: json!({}),
                },
                None,
                TimeDelta::hours(24),
                Some(&ep),
            )
            .await
            .expect("message");
        messages.push((url, m.id.to_string()));
    }
    c.drain().await;
    assert_eq!(rx.count(), 0, "nothing reached the loopback receiver");
    for (url, m) in &messages {
        let attempts = c
            .store
            .list_attempts(&c.org, None, Some(m), &Default::default())
            .await
            .expect("attempts");
        let a = attempts.data.first().expect("an attempt is recorded");
        assert_eq!(a.error_class.as_deref(), Some("refused"), "{url}: {a:?}");
        assert!(
            a.error
                .as_deref()
                .unwrap_or_default()
                .starts_with("refused"),
            "{url}"
        );
    }

    // A redirect from an allowed receiver into private space is not followed.
    let c = ctx().await;
    let (rx, addr) = Receiver::start().await;
    rx.answer(Reply {
        status: 307,
        headers: vec![("location", "http://169.254.169.254/latest".into())],
        hang: false,
    });
    c.endpoint(addr, &[]).await;
    let m = c.message("invoice.sent", json!({})).await;
    c.drain().await;
    let attempts = c
        .store
        .list_attempts(&c.org, None, Some(&m), &Default::default())
        .await
        .expect("attempts");
    assert_eq!(attempts.data[0].error_class.as_deref(), Some("refused"));

    // Redirects stay on the endpoint's host: one on the same host is followed, one to
    // another host (allowed space, but not the endpoint) is not, so custom headers never
    // leave the endpoint.
    let (other, other_addr) = Receiver::start().await;
    let (same, same_addr) = Receiver::start().await;
    same.then(Reply {
        status: 308,
        headers: vec![("location", "/moved".into())],
        hang: false,
    });
    let (away, away_addr) = Receiver::start().await;
    away.answer(Reply {
        status: 307,
        headers: vec![(
            "location",
            format!("http://localhost:{}/steal", other_addr.port()),
        )],
        hang: false,
    });
    let (same_ep, _) = c.endpoint(same_addr, &["moved.same"]).await;
    let (away_ep, _) = c
        .endpoint_with(EndpointInput {
            url: format!("http://{away_addr}/hooks"),
            event_types: vec!["moved.away".into()],
            headers: [("Authorization".to_owned(), "Bearer keep-me-home".to_owned())].into(),
            ..Default::default()
        })
        .await;
    c.message("moved.same", json!({})).await;
    c.message("moved.away", json!({})).await;
    c.drain().await;
    assert_eq!(same.count(), 2, "the same-host redirect was followed");
    let ok = c
        .store
        .list_attempts(&c.org, Some(&same_ep), None, &Default::default())
        .await
        .expect("attempts");
    assert!(ok.data[0].success);
    assert_eq!(
        other.count(),
        0,
        "nothing followed the redirect to another host"
    );
    let refused = c
        .store
        .list_attempts(&c.org, Some(&away_ep), None, &Default::default())
        .await
        .expect("attempts");
    assert_eq!(refused.data[0].error_class.as_deref(), Some("refused"));
    assert!(
        refused.data[0]
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("another host"),
        "{:?}",
        refused.data[0].error
    );
}

#[tokio::test]
async fn the_rate_limit_and_timeouts_are_enforced() {
    let c = ctx().await;
    let (rx, addr) = Receiver::start().await;
    let (_, _) = c
        .endpoint_with(EndpointInput {
            url: format!("http://{addr}/hooks"),
            rate_limit_per_second: Some(2),
            ..Default::default()
        })
        .await;
    for n in 0..5 {
        c.message("invoice.sent", json!({ "n": n })).await;
    }
    c.drain().await;
    assert_eq!(rx.count(), 2, "two a second");
    c.clock.advance(TimeDelta::seconds(1));
    c.drain().await;
    assert_eq!(rx.count(), 4);
    c.clock.advance(TimeDelta::seconds(1));
    c.drain().await;
    assert_eq!(rx.count(), 5);

    // A receiver slower than the endpoint's timeout is a failed attempt, classed as such.
    let (slow, slow_addr) = Receiver::start().await;
    slow.then(Reply {
        status: 200,
        headers: vec![],
        hang: true,
    });
    let (ep, _) = c
        .endpoint_with(EndpointInput {
            url: format!("http://{slow_addr}/hooks"),
            event_types: vec!["slow.test".into()],
            timeout_ms: Some(1_000),
            ..Default::default()
        })
        .await;
    let m = c.message("slow.test", json!({})).await;
    c.drain().await;
    let attempts = c
        .store
        .list_attempts(&c.org, Some(&ep), Some(&m), &Default::default())
        .await
        .expect("attempts");
    assert_eq!(attempts.data[0].error_class.as_deref(), Some("timeout"));
    assert_eq!(
        attempts.data.len(),
        2,
        "the immediate retry ran and succeeded"
    );
    assert!(attempts.data[1].success);
    slow.release.notify_waiters();
}

#[tokio::test]
async fn resending_delivers_the_same_message_id_again() {
    let c = ctx().await;
    let (rx, addr) = Receiver::start().await;
    let (ep, _) = c.endpoint(addr, &[]).await;
    let m = c.message("invoice.sent", json!({})).await;
    c.drain().await;
    c.store
        .resend(&c.org, &m, &ep, &operator())
        .await
        .expect("resend");
    c.drain().await;
    let all = rx.all();
    assert_eq!(all.len(), 2);
    assert_eq!(header(&all[0], "webhook-id"), header(&all[1], "webhook-id"));
    assert_eq!(all[0].body, all[1].body);
    assert_eq!(c.delivery(&m).await.attempts, 2);
    // Another organisation cannot see or resend it.
    let other = c
        .store
        .create_org(
            wedsync_core::org::OrgSettings::parse("Other", "Europe/London", "starter", "GB", "GBP")
                .expect("valid"),
            &operator(),
        )
        .await
        .expect("org");
    assert!(matches!(
        c.store.get_message(&other.id, &m).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        c.store.resend(&other.id, &m, &ep, &operator()).await,
        Err(StoreError::NotFound)
    ));
}

#[tokio::test]
async fn endpoint_settings_are_checked_and_secrets_never_shown() {
    let c = ctx().await;
    let bad = c
        .store
        .create_endpoint(
            &c.org,
            EndpointInput {
                url: "ftp://example.com/x".into(),
                event_types: vec!["Booking.*".into()],
                filter: Some(json!({"data.x": {"$regex": "a"}})),
                headers: [("Host".to_owned(), "evil".to_owned())].into(),
                timeout_ms: Some(60_000),
                ..Default::default()
            },
            &operator(),
        )
        .await;
    let Err(StoreError::Invalid(errors)) = bad else {
        panic!("expected validation errors, got {bad:?}")
    };
    let fields: Vec<&str> = errors.0.iter().map(|e| e.field.as_str()).collect();
    for f in ["url", "event_types[0]", "timeout_ms"] {
        assert!(fields.contains(&f), "{f} in {fields:?}");
    }
    assert!(fields.iter().any(|f| f.starts_with("filter")), "{fields:?}");
    assert!(
        fields.iter().any(|f| f.starts_with("headers")),
        "{fields:?}"
    );

    let (ep, secret) = c
        .endpoint_with(EndpointInput {
            url: "https://hooks.example.com/wedsync".into(),
            headers: [("Authorization".to_owned(), "Bearer s3cr3t-token".to_owned())].into(),
            ..Default::default()
        })
        .await;
    assert!(secret.starts_with("whsec_"));
    let key = wedsync_core::endpoint::EndpointSecret::parse(&secret).expect("whsec");
    assert!((24..=64).contains(&key.key().len()));
    let shown = serde_json::to_string(&c.endpoint_state(&ep).await).expect("json");
    assert!(!shown.contains(&secret[6..]));
    assert!(!shown.contains("s3cr3t-token"));
    assert!(shown.contains("Authorization"), "header names are shown");
    let audit = serde_json::to_string(
        &c.store
            .audit_entries(&c.org, None, 10)
            .await
            .expect("audit"),
    )
    .expect("json");
    assert!(!audit.contains(&secret[6..]) && !audit.contains("s3cr3t-token"));
}

#[tokio::test]
async fn finished_messages_are_pruned_after_retention_but_pending_ones_never() {
    let policy = DeliveryPolicy {
        breaker: BreakerPolicy {
            failure_threshold: 1000,
            ..Default::default()
        },
        ..Default::default()
    };
    let c = ctx_with(Utc::now(), policy, loopback_allowed()).await;
    let (ok, ok_addr) = Receiver::start().await;
    let (down, down_addr) = Receiver::start().await;
    down.answer(Reply::status(503));
    c.endpoint(ok_addr, &["invoice.sent"]).await;
    c.endpoint(down_addr, &["invoice.failing"]).await;
    let done = c.message("invoice.sent", json!({})).await;
    let pending = c.message("invoice.failing", json!({})).await;
    c.drain().await;
    assert_eq!(ok.count(), 1);
    assert_eq!(c.delivery(&pending).await.status, "pending");
    c.clock.advance(TimeDelta::days(31));
    let pruned = c
        .store
        .prune_outbound(c.now() - TimeDelta::days(30))
        .await
        .expect("prune");
    assert_eq!(pruned, 1);
    assert!(matches!(
        c.store.get_message(&c.org, &done).await,
        Err(StoreError::NotFound)
    ));
    c.store
        .get_message(&c.org, &pending)
        .await
        .expect("a pending delivery keeps its message");
}

#[tokio::test]
async fn inbound_events_fan_out_and_a_replay_sends_them_again() {
    let c = ctx().await;
    let (rx, addr) = Receiver::start().await;
    c.endpoint(addr, &["payment.*"]).await;
    let event = c
        .inbound_payment(
            c.org,
            Some("pi_1"),
            json!({"amount_minor": 250000, "currency": "GBP"}),
        )
        .await;
    c.drain().await;
    assert_eq!(rx.count(), 1);
    let body: Value = serde_json::from_slice(&rx.last().body).expect("json");
    assert_eq!(body["type"], "payment.completed");
    assert_eq!(body["event_id"], event);
    assert_eq!(body["subject"], "pi_1");
    // Routing again by itself sends nothing; an operator's replay sends the same message.
    c.store.route_event(&event, 0, false).await.expect("route");
    c.drain().await;
    assert_eq!(rx.count(), 1);
    c.store
        .replay_event(&c.org, &event, &operator())
        .await
        .expect("replay");
    c.drain().await;
    let all = rx.all();
    assert_eq!(all.len(), 2);
    assert_eq!(header(&all[0], "webhook-id"), header(&all[1], "webhook-id"));
}

#[tokio::test]
async fn an_unroutable_event_fails_only_its_own_route_job() {
    let c = ctx().await;
    let (rx, addr) = Receiver::start().await;
    c.endpoint(addr, &["payment.*"]).await;
    // Another organisation whose endpoint row is corrupt: routing its event fails.
    let settings = wedsync_core::org::OrgSettings::parse(
        "Petal & Stem",
        "Europe/London",
        "professional",
        "GB",
        "GBP",
    )
    .expect("valid");
    let other = c
        .store
        .create_org(settings, &operator())
        .await
        .expect("org")
        .id;
    c.store
        .create_endpoint(
            &other,
            EndpointInput {
                url: format!("http://{addr}/other"),
                event_types: vec!["payment.*".into()],
                ..Default::default()
            },
            &operator(),
        )
        .await
        .expect("endpoint");
    wedsync_store::testing::execute_raw(
        &c.store,
        &format!("UPDATE endpoints SET event_types = 'not json' WHERE org_id = '{other}'"),
    )
    .await
    .expect("corrupt");
    let mut events = Vec::new();
    for org in [c.org, other] {
        events.push((org, c.inbound_payment(org, None, json!({})).await));
    }
    // Both route jobs run at once, as a pool would run them (so they may share a routing
    // transaction).
    let jobs = c
        .store
        .claim(
            "test",
            wedsync_store::inbound::ROUTE_KIND,
            10,
            TimeDelta::minutes(1),
        )
        .await
        .expect("claim");
    assert_eq!(jobs.len(), 2);
    let route = wedsync_store::inbound::route_handler(c.store.clone());
    let (a, b) = tokio::join!(route.run(jobs[0].clone()), route.run(jobs[1].clone()));
    let failed = [a, b].into_iter().filter(Result::is_err).count();
    assert_eq!(failed, 1, "only the corrupt organisation's job fails");
    let routed = |org: OrgId, id: String| {
        let store = c.store.clone();
        async move { store.get_event(&org, &id).await.expect("event").0.routedat }
    };
    assert!(routed(events[0].0, events[0].1.clone()).await.is_some());
    assert!(routed(events[1].0, events[1].1.clone()).await.is_none());
    c.drain().await;
    assert_eq!(rx.count(), 1, "the good event was delivered");
}

/// A group commit's recordings: each delivery recorded once however often it appears, any
/// bytes an endpoint answers with stored, and the batch's retries and health changes kept.
/// On PostgreSQL these take both paths of the set-wise statement: alone (it commits by
/// itself) and inside a transaction with what follows.
#[tokio::test]
async fn a_batch_of_recordings_records_each_delivery_once_and_keeps_what_follows() {
    use wedsync_store::webhooks::{AttemptRecord, Next, Recording};
    let c = ctx().await;
    let (rx, addr) = Receiver::start().await;
    let (ep, _) = c.endpoint(addr, &[]).await;
    let m1 = c.message("invoice.sent", json!({"n": 1})).await;
    let m2 = c.message("invoice.sent", json!({"n": 2})).await;
    let m3 = c.message("invoice.sent", json!({"n": 3})).await;
    let id = |m: &wedsync_store::webhooks::Delivery| m.id.to_string();
    let (d1, d2, d3) = (
        id(&c.delivery(&m1).await),
        id(&c.delivery(&m2).await),
        id(&c.delivery(&m3).await),
    );
    let work = |d: String| {
        let store = c.store.clone();
        async move {
            store
                .delivery_work(&d)
                .await
                .expect("read")
                .expect("delivery")
        }
    };
    let ok = |body: &str| AttemptRecord {
        attempted_at: c.now(),
        status_code: Some(200),
        latency_ms: 3,
        response_headers: vec![("content-type".into(), "application/octet-stream".into())],
        response_body: body.into(),
        success: true,
        ..Default::default()
    };
    let recording = |work, record, next| Recording {
        work,
        record,
        next,
        manual: false,
    };

    // The first success of the endpoint (its health changes), twice in one batch, with a
    // body PostgreSQL's text cannot hold as it is.
    let w1 = work(d1.clone()).await;
    let done = c
        .store
        .record_attempts(vec![
            recording(w1.clone(), ok("ok\0binary"), Next::Succeeded),
            recording(w1, ok("again"), Next::Succeeded),
        ])
        .await
        .expect("record");
    assert_eq!(done, vec![true, false], "recorded once");
    let attempts = |m: String| {
        let (store, org) = (c.store.clone(), c.org);
        async move {
            store
                .list_attempts(&org, None, Some(&m), &Default::default())
                .await
                .expect("attempts")
                .data
        }
    };
    let a1 = attempts(m1.clone()).await;
    assert_eq!(a1.len(), 1);
    assert_eq!(a1[0].response_body, "ok\u{FFFD}binary");
    assert_eq!(
        a1[0].response_headers,
        vec![(
            "content-type".to_owned(),
            "application/octet-stream".to_owned()
        )]
    );
    assert_eq!(c.delivery(&m1).await.status, "succeeded");
    assert_eq!(c.delivery(&m1).await.attempts, 1);
    assert!(c.endpoint_state(&ep).await.last_success_at.is_some());

    // A success with nothing else to write (the endpoint is healthy and its last success
    // fresh), and a stale recording of an already-recorded delivery beside it.
    let w3 = work(d3).await;
    let stale = work(d1).await;
    let done = c
        .store
        .record_attempts(vec![
            recording(w3, ok("fine"), Next::Succeeded),
            recording(stale, ok("late"), Next::Succeeded),
        ])
        .await
        .expect("record");
    assert_eq!(done, vec![true, false]);
    assert_eq!(attempts(m3.clone()).await.len(), 1);
    assert_eq!(
        attempts(m1).await.len(),
        1,
        "a finished delivery takes no attempt"
    );
    assert_eq!(c.delivery(&m3).await.status, "succeeded");

    // A failure: the endpoint starts failing and the retry is queued with the record.
    let retry_at = c.now() + TimeDelta::minutes(2);
    let failed = AttemptRecord {
        attempted_at: c.now(),
        status_code: Some(503),
        latency_ms: 9,
        error_class: Some("http_5xx".into()),
        error: Some("the endpoint answered 503".into()),
        ..Default::default()
    };
    let done = c
        .store
        .record_attempts(vec![recording(
            work(d2).await,
            failed,
            Next::RetryAt(retry_at),
        )])
        .await
        .expect("record");
    assert_eq!(done, vec![true]);
    let d = c.delivery(&m2).await;
    assert_eq!((d.status.as_str(), d.attempts), ("pending", 1));
    assert_eq!(d.next_attempt_at, Some(retry_at));
    assert_eq!(d.last_status_code, Some(503));
    assert!(c.endpoint_state(&ep).await.failing_since.is_some());

    // The messages' first jobs were overtaken by these records: draining now sends nothing.
    c.drain().await;
    assert_eq!(rx.count(), 0);
    // The queued retry runs when due, and its success clears the endpoint's failure.
    c.clock.advance(TimeDelta::minutes(3));
    c.drain().await;
    assert_eq!(rx.count(), 1);
    let d = c.delivery(&m2).await;
    assert_eq!((d.status.as_str(), d.attempts), ("succeeded", 2));
    assert!(c.endpoint_state(&ep).await.failing_since.is_none());
}

/// An endpoint's slots on this node: an attempt waits a moment for one (it usually frees in
/// milliseconds), and when none frees within `slot_wait` the job goes back to the queue; no
/// more attempts wait for an endpoint than it has slots, so a slow endpoint's backlog
/// cannot hold the pool's job slots that other endpoints need.
#[tokio::test]
async fn attempts_wait_briefly_for_a_slot_then_go_back_to_the_queue() {
    let policy = DeliveryPolicy {
        per_endpoint_concurrency: 1,
        slot_wait: std::time::Duration::from_secs(2),
        ..Default::default()
    };
    let c = ctx_with(Utc::now(), policy, loopback_allowed()).await;
    let (rx, addr) = Receiver::start().await;
    rx.then(Reply {
        status: 200,
        headers: vec![],
        hang: true,
    });
    c.endpoint(addr, &[]).await;
    for n in 0..3 {
        c.message("invoice.sent", json!({ "n": n })).await;
    }
    let jobs = c
        .store
        .claim("test", DELIVER_KIND, 10, TimeDelta::minutes(1))
        .await
        .expect("claim");
    assert_eq!(jobs.len(), 3);
    let deferred = |outcome: Result<(), JobError>| match outcome {
        Err(JobError::Deferred { reason, .. }) => assert!(reason.contains("in flight"), "{reason}"),
        other => panic!("expected a deferral, got {other:?}"),
    };
    let first = tokio::spawn(c.handler.run(jobs[0].clone()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while rx.count() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the first attempt never arrived"
        );
        tokio::task::yield_now().await;
    }
    // The slot stays taken: the second attempt waits 2 s, then is deferred, unattempted.
    deferred(c.handler.run(jobs[1].clone()).await);
    assert_eq!(rx.count(), 1);

    // Run again together, one of the second and third waits for the slot and the other
    // finds the one waiting place taken: it is deferred at once, while the first still holds
    // the slot.
    let spawned = std::time::Instant::now();
    let mut others = vec![
        tokio::spawn(c.handler.run(jobs[1].clone())),
        tokio::spawn(c.handler.run(jobs[2].clone())),
    ];
    while !others.iter().any(tokio::task::JoinHandle::is_finished) {
        assert!(
            std::time::Instant::now() < deadline,
            "neither was turned away"
        );
        tokio::task::yield_now().await;
    }
    assert!(
        spawned.elapsed() < std::time::Duration::from_secs(1),
        "turned away at once, not after the 2 s wait"
    );
    assert!(
        !first.is_finished(),
        "the first attempt still holds the slot"
    );
    let turned_away = others
        .iter()
        .position(tokio::task::JoinHandle::is_finished)
        .expect("one finished");
    deferred(others.remove(turned_away).await.expect("task"));
    let waiter = others.remove(0);
    // The waiter takes the slot as soon as the first frees it (the receiver answers at once
    // when released, well within the wait).
    while !first.is_finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "the first attempt never finished"
        );
        rx.release.notify_waiters();
        tokio::task::yield_now().await;
    }
    first.await.expect("task").expect("first attempt");
    waiter.await.expect("task").expect("the waiting attempt");
    assert_eq!(rx.count(), 2);
}

/// A batch's deliveries are read (with their endpoint's breaker) when its first attempt
/// starts; an attempt that sends later, after another attempt's failure opened the breaker,
/// must not go out on the strength of that earlier read.
#[tokio::test]
async fn an_attempt_after_the_breaker_opened_since_its_batch_was_read_is_held_back() {
    let policy = DeliveryPolicy {
        per_endpoint_concurrency: 1,
        breaker: BreakerPolicy {
            failure_threshold: 1,
            ..Default::default()
        },
        ..Default::default()
    };
    let c = ctx_with(Utc::now(), policy, loopback_allowed()).await;
    let (rx, addr) = Receiver::start().await;
    rx.then(Reply::status(503));
    c.endpoint(addr, &[]).await;
    c.message("invoice.sent", json!({"n": 1})).await;
    c.message("invoice.sent", json!({"n": 2})).await;
    let jobs = c
        .store
        .claim("test", DELIVER_KIND, 10, TimeDelta::minutes(1))
        .await
        .expect("claim");
    assert_eq!(jobs.len(), 2);
    c.handler.claimed(&jobs);
    // The first attempt reads the batch (breaker closed), fails with a 503 and opens it.
    c.handler.run(jobs[0].clone()).await.expect("first attempt");
    assert_eq!(rx.count(), 1);
    // The second uses the batch's read, taken before the failure: it asks again and waits.
    match c.handler.run(jobs[1].clone()).await {
        Err(JobError::Deferred { reason, .. }) => {
            assert!(reason.contains("circuit breaker"), "{reason}");
        }
        other => panic!("expected the open breaker to hold it back, got {other:?}"),
    }
    assert_eq!(
        rx.count(),
        1,
        "nothing more was sent to the failing endpoint"
    );
}

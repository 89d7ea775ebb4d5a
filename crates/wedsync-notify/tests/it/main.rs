//! Notifications end to end: a real database, a real SMTP server on loopback, local
//! stand-ins for the HTTP providers that record every request, the real worker, and a moved
//! clock. `drain` runs every job due at the clock's instant, so nothing here waits.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use chrono::{DateTime, TimeDelta, Utc};
use mail_parser::MimeHeaders as _;
use serde_json::{Value, json};
use wedsync_core::breaker::BreakerPolicy;
use wedsync_core::clock::{Clock, ManualClock};
use wedsync_core::id::OrgId;
use wedsync_core::notify::{NotifyChannel, QuietHours, QuietSpan, Severity};
use wedsync_delivery::ssrf::{ClientOptions, GuardedClient, SsrfPolicy};
use wedsync_notify::email::SmtpPool;
use wedsync_notify::links::Links;
use wedsync_notify::worker::{Notifier, NotifyPolicy, escalate_handler, send_handler};
use wedsync_store::notify::{
    AlertInput, AlertRoute, ESCALATE_KIND, EscalationStep, Notification, NotificationFilter,
    NotificationInput, Preferences, ProviderInput, Recipient, SEND_KIND, Settings, TemplateInput,
};
use wedsync_store::page::PageRequest;
use wedsync_store::queue::AfterFailure;
use wedsync_store::testing::{TestDb, migrated_store};
use wedsync_store::worker::{JobError, JobHandler};
use wedsync_store::{Actor, Store};

// ---------------------------------------------------------------------------------------
// A real SMTP server on loopback (mailin-embedded), keeping every message it accepts.

/// Recipients and raw bytes of one message.
type Mail = (Vec<String>, Vec<u8>);

#[derive(Clone, Default)]
struct Mailbox {
    messages: Arc<Mutex<Vec<Mail>>>,
    current: Arc<Mutex<Mail>>,
}

impl mailin_embedded::Handler for Mailbox {
    fn data_start(
        &mut self,
        _: &str,
        _: &str,
        _: bool,
        to: &[String],
    ) -> mailin_embedded::Response {
        *self.current.lock().expect("lock") = (to.to_vec(), Vec::new());
        mailin_embedded::response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.current.lock().expect("lock").1.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> mailin_embedded::Response {
        let done = std::mem::take(&mut *self.current.lock().expect("lock"));
        self.messages.lock().expect("lock").push(done);
        mailin_embedded::response::OK
    }
}

fn smtp_server() -> (Mailbox, SocketAddr) {
    smtp_server_with(mailin_embedded::SslConfig::None)
}

/// The test certificate authority and the `localhost` certificate it signed
/// (`tests/fixtures`, valid until 2126; test use only).
fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn smtp_server_with(ssl: mailin_embedded::SslConfig) -> (Mailbox, SocketAddr) {
    // mailin-embedded's rustls brings aws-lc-rs into the test build beside the ring the hub
    // uses, so rustls cannot pick a provider by itself; the production binary has only ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mailbox = Mailbox::default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut server = mailin_embedded::Server::new(mailbox.clone());
    server
        .with_name("localhost")
        .with_ssl(ssl)
        .expect("tls setup")
        .with_tcp_listener(listener);
    // The server runs on its own thread for the rest of the test process.
    std::thread::spawn(move || {
        let _ = server.serve();
    });
    (mailbox, addr)
}

// ---------------------------------------------------------------------------------------
// HTTP stand-ins: record every request, answer per path from a script.

#[derive(Clone, Debug)]
struct Req {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Req {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("json body")
    }

    fn form(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(&self.body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }
}

#[derive(Clone, Default)]
struct StandIn {
    got: Arc<Mutex<Vec<Req>>>,
    answers: Arc<Mutex<Vec<(String, u16, String)>>>,
}

impl StandIn {
    async fn start() -> (Self, String) {
        let s = StandIn::default();
        let r = s.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let r = r.clone();
                async move {
                    let path = uri.path().to_owned();
                    r.got.lock().expect("lock").push(Req {
                        method,
                        path: uri.to_string(),
                        headers,
                        body,
                    });
                    let (status, body) = r
                        .answers
                        .lock()
                        .expect("lock")
                        .iter()
                        .rev()
                        .find(|(prefix, _, _)| path.starts_with(prefix.as_str()))
                        .map(|(_, s, b)| (*s, b.clone()))
                        .unwrap_or((200, "{}".into()));
                    (StatusCode::from_u16(status).expect("status"), body)
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (s, format!("http://{addr}"))
    }

    fn answer(&self, path_prefix: &str, status: u16, body: &str) {
        self.answers
            .lock()
            .expect("lock")
            .push((path_prefix.into(), status, body.into()));
    }

    fn to(&self, path_prefix: &str) -> Vec<Req> {
        self.got
            .lock()
            .expect("lock")
            .iter()
            .filter(|r| r.path.starts_with(path_prefix))
            .cloned()
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// The hub's side.

struct Ctx {
    store: Store,
    clock: ManualClock,
    org: OrgId,
    notifier: Arc<Notifier>,
    send: Box<dyn JobHandler>,
    escalate: Box<dyn JobHandler>,
    links: Links,
    _db: TestDb,
}

const LINK_BASE: &str = "https://hub.example";

async fn ctx(start: &str, tier: &str) -> Ctx {
    let policy = NotifyPolicy {
        breaker: BreakerPolicy {
            failure_threshold: 2,
            ..BreakerPolicy::default()
        },
        ..NotifyPolicy::default()
    };
    ctx_with(start, tier, policy).await
}

async fn ctx_with(start: &str, tier: &str, policy: NotifyPolicy) -> Ctx {
    let clock = ManualClock::new(utc(start));
    let (store, db) = migrated_store(Arc::new(clock.clone()))
        .await
        .expect("database");
    let settings =
        wedsync_core::org::OrgSettings::parse("Lens & Lace", "Europe/London", tier, "GB", "GBP")
            .expect("valid");
    let org = store.create_org(settings, &operator()).await.expect("org");
    let ssrf = SsrfPolicy {
        allow: vec![
            "127.0.0.1/32".parse().expect("net"),
            "::1/128".parse().expect("net"),
        ],
    };
    let links = Links::new(
        LINK_BASE,
        store
            .derived_key(wedsync_notify::links::KEY_LABEL)
            .expect("key"),
    );
    let notifier = Notifier::new(
        store.clone(),
        GuardedClient::new(ssrf.clone(), ClientOptions::default()).expect("client"),
        SmtpPool::new(ssrf),
        Some(links.clone()),
        Some(
            wedsync_notify::push::Vapid::from_seed(
                &store
                    .derived_key(wedsync_notify::push::KEY_LABEL)
                    .expect("key"),
                "mailto:ops@lenslace.example",
            )
            .expect("vapid"),
        ),
        policy,
        None,
    )
    .expect("catalog");
    Ctx {
        send: Box::new(send_handler(notifier.clone())),
        escalate: Box::new(escalate_handler(notifier.clone())),
        notifier,
        store,
        clock,
        org: org.id,
        links,
        _db: db,
    }
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("time")
        .with_timezone(&Utc)
}

fn operator() -> Actor {
    Actor::Cli("test".into())
}

fn email_to(addr: &str) -> Recipient {
    Recipient {
        name: Some("Alex Morgan".into()),
        email: Some(addr.into()),
        ..Default::default()
    }
}

impl Ctx {
    async fn provider(&self, channel: NotifyChannel, kind: &str, config: Value, secrets: Value) {
        let input = ProviderInput {
            kind: kind.into(),
            name: Some(format!("{kind} test")),
            position: None,
            config: config.as_object().cloned().unwrap_or_default(),
            secrets: secrets.as_object().cloned().unwrap_or_default(),
            enabled: None,
        };
        // The same check the API makes when a provider is saved.
        if kind == "smtp" {
            wedsync_notify::email::validate(&input.config, &input.secrets).expect("valid smtp");
        } else {
            self.notifier
                .catalog()
                .get(kind)
                .expect("kind")
                .validate_settings(&input.config, &input.secrets)
                .expect("valid settings");
        }
        self.store
            .create_provider(&self.org, channel, input, &operator())
            .await
            .expect("provider");
    }

    async fn send(&self, input: NotificationInput) -> String {
        self.store
            .create_notification(&self.org, input, None, TimeDelta::hours(24))
            .await
            .expect("notification")
            .0
            .id
            .to_string()
    }

    async fn email(&self, to: &str, emergency: bool) -> String {
        self.send(NotificationInput {
            channel: Some(NotifyChannel::Email),
            to: email_to(to),
            subject: Some("Your timeline".into()),
            text: Some("Hello {{ recipient.first_name }}".into()),
            emergency,
            ..Default::default()
        })
        .await
    }

    async fn get(&self, id: &str) -> (Notification, Vec<wedsync_store::notify::HistoryEntry>) {
        self.store
            .get_notification(&self.org, id)
            .await
            .expect("notification")
    }

    fn advance(&self, by: TimeDelta) {
        self.clock.advance(by);
    }

    /// Runs every notification job due now until none is.
    async fn drain(&self) {
        for _ in 0..200 {
            let mut jobs = self
                .store
                .claim("test", SEND_KIND, 100, TimeDelta::minutes(1))
                .await
                .expect("claim");
            jobs.extend(
                self.store
                    .claim("test", ESCALATE_KIND, 100, TimeDelta::minutes(1))
                    .await
                    .expect("claim"),
            );
            if jobs.is_empty() {
                return;
            }
            for job in jobs {
                let handler = if job.kind == SEND_KIND {
                    &self.send
                } else {
                    &self.escalate
                };
                match handler.run(job.clone()).await {
                    Ok(()) => {
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
                        panic!("job failed: {e:?}");
                    }
                }
            }
        }
        panic!("jobs kept coming")
    }

    async fn listed(&self, status: &str) -> Vec<Notification> {
        self.store
            .list_notifications(
                &self.org,
                &NotificationFilter {
                    status: Some(status.into()),
                    ..Default::default()
                },
                &PageRequest::default(),
            )
            .await
            .expect("list")
            .data
    }
}

// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn email_goes_through_a_real_smtp_server_as_multipart_with_one_click_unsubscribe() {
    let c = ctx("2027-06-15T10:00:00Z", "professional").await;
    let (mailbox, addr) = smtp_server();
    c.provider(
        NotifyChannel::Email,
        "smtp",
        json!({ "host": "127.0.0.1", "port": addr.port(), "tls": "none", "from": "Lens & Lace <hello@lenslace.example>" }),
        json!({}),
    )
    .await;
    let couple = c
        .store
        .create_couple(
            &c.org,
            serde_json::from_value::<wedsync_core::couple::CoupleInput>(json!({
                "partners": [{ "name": "Alex Morgan", "email": "alex@example.com" }, { "name": "Sam Taylor", "email": "sam@example.com" }],
                "wedding_date": "2027-09-18",
                "time_zone": "Europe/London",
                "venue": { "name": "Kew Gardens" }
            }))
            .expect("couple input")
            .validate(wedsync_core::org::TimeZone::parse("Europe/London").expect("zone"))
            .expect("valid couple"),
            &operator(),
        )
        .await
        .expect("couple");
    wedsync_notify::templates::check(Some("s"), "t", Some("h")).expect("compiles");
    c.store
        .put_template(
            &c.org,
            TemplateInput {
                name: "timeline.request".into(),
                channel: NotifyChannel::Email,
                subject: Some("{{ couple.names }}: your timeline for {{ couple.wedding_date_long }}".into()),
                text: "Hi {{ recipient.first_name }}, {{ couple.days_until }} days to go at {{ couple.venue.name }}.".into(),
                html: Some("<html><body><p>Hi {{ recipient.first_name }} &amp; {{ note }}</p><a href=\"https://studio.example/form?a=1&b=2\">Open the form</a></body></html>".into()),
            },
        )
        .await
        .expect("template");
    let id = c
        .send(NotificationInput {
            channel: Some(NotifyChannel::Email),
            to: email_to("alex@example.com"),
            template: Some("timeline.request".into()),
            data: Some(json!({ "note": "<b>bring shoes</b>" })),
            couple_id: Some(couple.id),
            ..Default::default()
        })
        .await;
    c.drain().await;
    let (n, history) = c.get(&id).await;
    assert_eq!(n.status, "sent", "{history:?}");
    let messages = mailbox.messages.lock().expect("lock").clone();
    assert_eq!(messages.len(), 1);
    let (rcpt, raw) = &messages[0];
    assert_eq!(rcpt, &vec!["alex@example.com".to_owned()]);
    let parsed = mail_parser::MessageParser::default()
        .parse(raw)
        .expect("MIME");
    assert_eq!(
        parsed.subject(),
        Some("Alex & Sam: your timeline for Saturday 18 September 2027")
    );
    let from = parsed.from().and_then(|f| f.first()).expect("from");
    assert_eq!(from.address(), Some("hello@lenslace.example"));
    assert_eq!(from.name(), Some("Lens & Lace"));
    assert_eq!(
        parsed
            .to()
            .and_then(|t| t.first())
            .and_then(|a| a.address()),
        Some("alex@example.com")
    );
    assert_eq!(parsed.message_id(), Some(format!("{id}@wedsync").as_str()));
    // multipart/alternative with the text part first, then HTML.
    let ct = parsed.content_type().expect("content type");
    assert_eq!(
        (ct.ctype(), ct.subtype()),
        ("multipart", Some("alternative"))
    );
    let text = parsed.body_text(0).expect("text part");
    assert!(
        text.contains("Hi Alex, 95 days to go at Kew Gardens."),
        "{text}"
    );
    let html = parsed.body_html(0).expect("html part");
    assert!(
        html.contains("&lt;b&gt;bring shoes") && !html.contains("<b>"),
        "template values are escaped: {html}"
    );
    let unsubscribe = c.links.unsubscribe(&id);
    assert_eq!(
        parsed.header_raw("List-Unsubscribe").map(str::trim),
        Some(format!("<{unsubscribe}>").as_str())
    );
    assert_eq!(
        parsed.header_raw("List-Unsubscribe-Post").map(str::trim),
        Some("List-Unsubscribe=One-Click")
    );
    assert!(
        text.contains(&unsubscribe),
        "the text part carries the link too"
    );
    let click = c
        .links
        .click(&id, "https://studio.example/form?a=1&b=2")
        .replace('&', "&amp;");
    assert!(
        html.contains(&click),
        "links are signed click redirects: {html}"
    );
    assert!(
        html.contains(&c.links.open_pixel(&id)),
        "an open pixel: {html}"
    );

    // One-click unsubscribe: the next email to the address is blocked, with the reason.
    c.store
        .unsubscribe_by_notification(&id)
        .await
        .expect("unsubscribe");
    let next = c.email("alex@example.com", false).await;
    c.drain().await;
    let (n, _) = c.get(&next).await;
    assert_eq!(
        (n.status.as_str(), n.reason.as_deref()),
        ("blocked", Some("unsubscribed"))
    );
    assert_eq!(
        mailbox.messages.lock().expect("lock").len(),
        1,
        "nothing more was sent"
    );
}

#[tokio::test]
async fn email_fails_over_from_resend_to_mailgun_then_skips_resend_while_its_breaker_is_open() {
    let c = ctx("2027-06-15T10:00:00Z", "professional").await;
    let (standin, base) = StandIn::start().await;
    standin.answer("/emails", 503, r#"{"message":"down for maintenance"}"#);
    standin.answer(
        "/v3/",
        200,
        r#"{"id":"<20270615.1@mg.lenslace.example>","message":"Queued. Thank you."}"#,
    );
    c.provider(
        NotifyChannel::Email,
        "resend",
        json!({ "base_url": base, "from": "Lens & Lace <hello@lenslace.example>" }),
        json!({ "api_key": "re_test_123" }),
    )
    .await;
    c.provider(
        NotifyChannel::Email,
        "mailgun",
        json!({ "base_url": base, "domain": "mg.lenslace.example", "from": "Lens & Lace <hello@lenslace.example>" }),
        json!({ "api_key": "key-abc" }),
    )
    .await;

    let first = c.email("alex@example.com", false).await;
    c.drain().await;
    let resend = standin.to("/emails");
    assert_eq!(resend.len(), 1);
    let r = &resend[0];
    assert_eq!(r.method, Method::POST);
    assert_eq!(r.header("authorization"), "Bearer re_test_123");
    assert_eq!(r.header("idempotency-key"), first);
    assert!(r.header("user-agent").starts_with("wedsync/"));
    let body = r.json();
    assert_eq!(body["from"], "Lens & Lace <hello@lenslace.example>");
    assert_eq!(body["to"], json!(["alex@example.com"]));
    assert_eq!(body["subject"], "Your timeline");
    assert!(
        body["text"]
            .as_str()
            .expect("text")
            .starts_with("Hello Alex")
    );
    assert!(
        body["headers"]["List-Unsubscribe"]
            .as_str()
            .expect("header")
            .contains("/u/")
    );
    assert_eq!(
        body["tags"],
        json!([{ "name": "notification_id", "value": first }, { "name": "org_id", "value": c.org.to_string() }])
    );

    let mailgun = standin.to("/v3/mg.lenslace.example/messages");
    assert_eq!(mailgun.len(), 1, "failed over to Mailgun");
    let m = &mailgun[0];
    assert_eq!(
        m.header("authorization"),
        format!("Basic {}", base64_of("api:key-abc"))
    );
    assert!(
        m.header("content-type")
            .starts_with("multipart/form-data; boundary=")
    );
    let raw = String::from_utf8_lossy(&m.body);
    for field in [
        "from",
        "to",
        "subject",
        "text",
        "o:tag",
        "h:List-Unsubscribe",
        "h:List-Unsubscribe-Post",
        "v:notification_id",
    ] {
        assert!(
            raw.contains(&format!("name=\"{field}\"")),
            "multipart has {field}: {raw}"
        );
    }
    let (n, history) = c.get(&first).await;
    assert_eq!(n.status, "sent");
    assert_eq!(
        n.provider_message_id.as_deref(),
        Some("<20270615.1@mg.lenslace.example>")
    );
    assert!(
        history.iter().any(|h| h.status == "attempt_failed"
            && h.detail
                .as_deref()
                .is_some_and(|d| d.contains("resend") && d.contains("503"))),
        "{history:?}"
    );

    // A second failure opens Resend's breaker (threshold 2 here); the third message goes
    // straight to Mailgun without touching Resend.
    c.email("sam@example.com", false).await;
    c.drain().await;
    assert_eq!(standin.to("/emails").len(), 2);
    let third = c.email("jo@example.com", false).await;
    c.drain().await;
    assert_eq!(
        standin.to("/emails").len(),
        2,
        "Resend was skipped while its breaker is open"
    );
    assert_eq!(standin.to("/v3/").len(), 3);
    let (n, history) = c.get(&third).await;
    assert_eq!(n.status, "sent");
    assert!(
        history.iter().any(|h| h.status == "provider_skipped"),
        "{history:?}"
    );

    // After the cool-down a probe goes to Resend again, which has recovered.
    standin.answer("/emails", 200, r#"{"id":"re_1"}"#);
    c.advance(TimeDelta::minutes(6));
    let fourth = c.email("kim@example.com", false).await;
    c.drain().await;
    assert_eq!(standin.to("/emails").len(), 3);
    assert_eq!(
        c.get(&fourth).await.0.provider_message_id.as_deref(),
        Some("re_1")
    );
}

fn base64_of(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn every_provider_down_retries_later_and_a_rejected_email_falls_back_to_sms() {
    let c = ctx("2027-06-15T10:00:00Z", "starter").await;
    let (standin, base) = StandIn::start().await;
    standin.answer("/emails", 500, "{}");
    standin.answer("/2010-04-01/", 201, r#"{"sid":"SM123"}"#);
    c.provider(
        NotifyChannel::Email,
        "resend",
        json!({ "base_url": base, "from": "hello@lenslace.example" }),
        json!({ "api_key": "re_x" }),
    )
    .await;
    c.provider(
        NotifyChannel::Sms,
        "twilio",
        json!({ "base_url": base, "account_sid": "AC123", "from": "+447700900001" }),
        json!({ "auth_token": "tok" }),
    )
    .await;
    let mut to = email_to("alex@example.com");
    to.phone = Some("+447700900123".into());
    let id = c
        .send(NotificationInput {
            channel: Some(NotifyChannel::Email),
            to: to.clone(),
            subject: Some("Deposit received".into()),
            text: Some("Thank you".into()),
            ..Default::default()
        })
        .await;
    c.drain().await;
    let (n, _) = c.get(&id).await;
    assert_eq!(
        (n.status.as_str(), n.reason.as_deref()),
        ("queued", Some("providers_unavailable"))
    );
    assert!(n.due_at > c.clock.now(), "a retry is scheduled");
    assert_eq!(n.attempts, 1);
    // Recovered, but now the provider refuses the address for good: SMS instead.
    standin.answer("/emails", 422, r#"{"message":"invalid `to` field"}"#);
    c.advance(TimeDelta::minutes(2));
    c.drain().await;
    let (n, history) = c.get(&id).await;
    assert_eq!(
        (n.status.as_str(), n.reason.as_deref()),
        ("failed", Some("rejected"))
    );
    assert!(
        n.detail
            .as_deref()
            .is_some_and(|d| d.contains("invalid `to` field")),
        "{n:?}"
    );
    assert!(
        history.iter().any(|h| h.status == "fallback"),
        "{history:?}"
    );
    let sms = standin.to("/2010-04-01/Accounts/AC123/Messages.json");
    assert_eq!(sms.len(), 1);
    assert_eq!(
        sms[0].header("authorization"),
        format!("Basic {}", base64_of("AC123:tok"))
    );
    let form = sms[0].form();
    assert!(
        form.contains(&("To".into(), "+447700900123".into())),
        "{form:?}"
    );
    assert!(form.contains(&("From".into(), "+447700900001".into())));
    assert!(
        form.contains(&("Body".into(), "Deposit received\nThank you".into())),
        "{form:?}"
    );
    let children = c
        .store
        .list_notifications(
            &c.org,
            &NotificationFilter {
                channel: Some(NotifyChannel::Sms),
                ..Default::default()
            },
            &PageRequest::default(),
        )
        .await
        .expect("list")
        .data;
    assert_eq!(children.len(), 1);
    assert_eq!(children[0].parent_id.map(|p| p.to_string()), Some(id));
    assert_eq!(children[0].status, "sent");
    assert_eq!(children[0].provider_message_id.as_deref(), Some("SM123"));
}

#[tokio::test]
async fn quotas_block_per_tier_in_a_rolling_window_and_emergencies_bypass_them_flagged() {
    let c = ctx("2027-06-15T10:00:00Z", "free").await;
    let (standin, base) = StandIn::start().await;
    standin.answer("/emails", 200, r#"{"id":"re"}"#);
    c.provider(
        NotifyChannel::Email,
        "resend",
        json!({ "base_url": base, "from": "hello@lenslace.example" }),
        json!({ "api_key": "re_x" }),
    )
    .await;
    for i in 0..10 {
        c.email(&format!("guest{i}@example.com"), false).await;
    }
    c.drain().await;
    assert_eq!(
        c.listed("sent").await.len(),
        10,
        "free tier: 10 emails a day"
    );
    let over = c.email("guest10@example.com", false).await;
    c.drain().await;
    let (n, _) = c.get(&over).await;
    assert_eq!(
        (n.status.as_str(), n.reason.as_deref()),
        ("blocked", Some("quota_exceeded"))
    );
    assert!(
        n.detail
            .as_deref()
            .is_some_and(|d| d.contains("10 of 10 email")),
        "{n:?}"
    );

    // SMS is not in the free tier at all, and the reason says so.
    let sms = c
        .send(NotificationInput {
            channel: Some(NotifyChannel::Sms),
            to: Recipient {
                phone: Some("+447700900123".into()),
                ..Default::default()
            },
            text: Some("hi".into()),
            ..Default::default()
        })
        .await;
    c.drain().await;
    let (n, _) = c.get(&sms).await;
    assert_eq!(
        (n.status.as_str(), n.reason.as_deref()),
        ("blocked", Some("channel_not_in_tier"))
    );
    assert!(n.detail.as_deref().is_some_and(|d| d.contains("free tier")));

    // A wedding-day emergency goes anyway, flagged and counted.
    let urgent = c.email("planner@example.com", true).await;
    c.drain().await;
    let (n, history) = c.get(&urgent).await;
    assert_eq!(n.status, "sent");
    assert!(n.quota_bypassed);
    assert!(
        history
            .iter()
            .any(|h| h.reason.as_deref() == Some("quota_bypassed")),
        "{history:?}"
    );
    assert_eq!(
        c.store
            .quota_used(
                &c.org,
                NotifyChannel::Email,
                c.clock.now() - TimeDelta::hours(24)
            )
            .await
            .expect("used"),
        11
    );

    // Nothing is dropped silently: the blocked ones are listed with their reasons.
    let blocked = c.listed("blocked").await;
    let reasons: Vec<_> = blocked.iter().filter_map(|n| n.reason.clone()).collect();
    assert_eq!(reasons, ["quota_exceeded", "channel_not_in_tier"]);

    // The window rolls: a day later there is room again.
    c.advance(TimeDelta::hours(24) + TimeDelta::seconds(1));
    let later = c.email("guest11@example.com", false).await;
    c.drain().await;
    assert_eq!(c.get(&later).await.0.status, "sent");
    assert_eq!(standin.to("/emails").len(), 12);
}

#[tokio::test]
async fn starter_tier_sms_quota_is_twenty() {
    let c = ctx("2027-06-15T10:00:00Z", "starter").await;
    let (standin, base) = StandIn::start().await;
    standin.answer("/2010-04-01/", 201, r#"{"sid":"SM"}"#);
    c.provider(
        NotifyChannel::Sms,
        "twilio",
        json!({ "base_url": base, "account_sid": "AC1", "messaging_service_sid": "MG1" }),
        json!({ "auth_token": "t" }),
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..21 {
        ids.push(
            c.send(NotificationInput {
                channel: Some(NotifyChannel::Sms),
                to: Recipient {
                    phone: Some(format!("+4477009001{i:02}")),
                    ..Default::default()
                },
                text: Some("Reminder".into()),
                ..Default::default()
            })
            .await,
        );
    }
    c.drain().await;
    assert_eq!(c.listed("sent").await.len(), 20);
    let (last, _) = c.get(&ids[20]).await;
    assert_eq!(last.reason.as_deref(), Some("quota_exceeded"));
    assert_eq!(standin.to("/2010-04-01/").len(), 20);
    assert!(
        standin.to("/2010-04-01/")[0]
            .form()
            .contains(&("MessagingServiceSid".into(), "MG1".into()))
    );
}

#[tokio::test]
async fn quiet_hours_defer_to_the_local_morning_across_the_spring_clock_change() {
    // 22:30 GMT on Saturday 27 March 2027; the clocks go forward at 01:00 that night.
    let c = ctx("2027-03-27T22:30:00Z", "professional").await;
    let (standin, base) = StandIn::start().await;
    standin.answer("/emails", 200, r#"{"id":"re"}"#);
    c.provider(
        NotifyChannel::Email,
        "resend",
        json!({ "base_url": base, "from": "hello@lenslace.example" }),
        json!({ "api_key": "re_x" }),
    )
    .await;
    let nightly = QuietHours {
        spans: vec![QuietSpan {
            days: vec![],
            start: chrono::NaiveTime::from_hms_opt(21, 0, 0).expect("t"),
            end: chrono::NaiveTime::from_hms_opt(8, 0, 0).expect("t"),
        }],
    };
    c.store
        .put_preferences(
            &c.org,
            "email:alex@example.com",
            &Preferences {
                time_zone: Some("Europe/London".into()),
                quiet_hours: Some(nightly),
                unsubscribed: vec![],
            },
            "api",
        )
        .await
        .expect("prefs");
    let id = c.email("alex@example.com", false).await;
    c.drain().await;
    let (n, history) = c.get(&id).await;
    assert_eq!(
        (n.status.as_str(), n.reason.as_deref()),
        ("deferred", Some("quiet_hours"))
    );
    // 08:00 BST on the 28th is 07:00 UTC: seven hours of wall clock, not eight.
    assert_eq!(n.due_at, utc("2027-03-28T07:00:00Z"));
    assert!(
        history.iter().any(|h| h.status == "deferred"
            && h.detail
                .as_deref()
                .is_some_and(|d| d.contains("2027-03-28T08:00:00+01:00"))),
        "{history:?}"
    );
    assert_eq!(
        c.listed("deferred").await.len(),
        1,
        "deferred messages are listed with their reason"
    );

    // A critical message is not held.
    let critical = c
        .send(NotificationInput {
            channel: Some(NotifyChannel::Email),
            to: email_to("alex@example.com"),
            subject: Some("Venue flooded".into()),
            text: Some("Call us".into()),
            severity: Some(Severity::Critical),
            ..Default::default()
        })
        .await;
    c.drain().await;
    assert_eq!(c.get(&critical).await.0.status, "sent");

    c.clock.set(utc("2027-03-28T06:59:00Z"));
    c.drain().await;
    assert_eq!(c.get(&id).await.0.status, "deferred", "not a minute early");
    c.clock.set(utc("2027-03-28T07:00:00Z"));
    c.drain().await;
    assert_eq!(c.get(&id).await.0.status, "sent");
    assert_eq!(standin.to("/emails").len(), 2, "sent exactly once");
}

async fn alert_setup(c: &Ctx, base: &str) {
    c.provider(
        NotifyChannel::Slack,
        "slack",
        json!({}),
        json!({ "webhook_url": format!("{base}/slack/T000/B000/xyz") }),
    )
    .await;
    c.provider(
        NotifyChannel::Pagerduty,
        "pagerduty",
        json!({ "base_url": base }),
        json!({ "routing_key": "R0UT1NGKEY" }),
    )
    .await;
    c.provider(
        NotifyChannel::Sms,
        "twilio",
        json!({ "base_url": base, "account_sid": "AC9", "from": "+447700900001" }),
        json!({ "auth_token": "t" }),
    )
    .await;
    c.provider(
        NotifyChannel::Email,
        "resend",
        json!({ "base_url": base, "from": "alerts@lenslace.example" }),
        json!({ "api_key": "re_x" }),
    )
    .await;
    let settings = Settings {
        alert_routes: vec![AlertRoute {
            channel: NotifyChannel::Slack,
            to: Recipient::default(),
        }],
        on_call: vec![Recipient {
            name: Some("Jo".into()),
            phone: Some("+447700900555".into()),
            ..Default::default()
        }],
        escalation: vec![
            EscalationStep {
                after_minutes: 15,
                channel: NotifyChannel::Email,
                to: email_to("owner@lenslace.example"),
            },
            EscalationStep {
                after_minutes: 30,
                channel: NotifyChannel::Sms,
                to: Recipient {
                    phone: Some("+447700900777".into()),
                    ..Default::default()
                },
            },
        ],
        ..Default::default()
    };
    c.store
        .put_notify_settings(&c.org, &settings, &operator())
        .await
        .expect("settings");
}

fn alert(summary: &str) -> AlertInput {
    AlertInput {
        summary: summary.into(),
        body: Some("Stripe reported a failed charge".into()),
        severity: Some(Severity::Warning),
        couple_id: None,
        emergency: false,
    }
}

#[tokio::test]
async fn on_saturday_every_alert_also_goes_to_sms_and_pagerduty_and_escalates_until_acknowledged() {
    // Saturday 19 June 2027, 11:00 in London.
    let c = ctx("2027-06-19T10:00:00Z", "professional").await;
    let (standin, base) = StandIn::start().await;
    standin.answer(
        "/v2/enqueue",
        202,
        r#"{"status":"success","message":"Event processed","dedup_key":"k"}"#,
    );
    standin.answer("/2010-04-01/", 201, r#"{"sid":"SM1"}"#);
    standin.answer("/slack/", 200, "ok");
    standin.answer("/emails", 200, r#"{"id":"re"}"#);
    alert_setup(&c, &base).await;
    let (raised, ids) = wedsync_notify::alerts::raise(
        &c.store,
        &c.org,
        alert("Payment failed for Alex & Sam"),
        &Default::default(),
    )
    .await
    .expect("alert");
    assert_eq!(raised.escalation, "maximum");
    assert_eq!(
        raised.raised_severity,
        Severity::Error,
        "raised a step in the window"
    );
    assert_eq!(ids.len(), 3, "Slack, the on-call SMS and PagerDuty");
    c.drain().await;
    let slack = standin.to("/slack/");
    assert_eq!(slack.len(), 1);
    let blocks = slack[0].json()["blocks"].clone();
    let actions = blocks
        .as_array()
        .expect("blocks")
        .iter()
        .find(|b| b["type"] == "actions")
        .expect("buttons");
    assert_eq!(actions["elements"][0]["action_id"], "acknowledge");
    assert_eq!(actions["elements"][0]["value"], raised.id.to_string());
    assert_eq!(actions["elements"][1]["action_id"], "resolve");
    let sms = standin.to("/2010-04-01/");
    assert_eq!(sms.len(), 1);
    assert!(
        sms[0]
            .form()
            .contains(&("To".into(), "+447700900555".into()))
    );
    let pd = standin.to("/v2/enqueue");
    assert_eq!(pd.len(), 1);
    let event = pd[0].json();
    assert_eq!(event["routing_key"], "R0UT1NGKEY");
    assert_eq!(event["event_action"], "trigger");
    assert_eq!(event["dedup_key"], raised.dedup_key);
    assert_eq!(event["payload"]["severity"], "error");
    assert_eq!(event["payload"]["source"], "wedsync");

    // 14 minutes: nothing yet. 15: the first escalation step (email to the owner).
    c.advance(TimeDelta::minutes(14));
    c.drain().await;
    assert!(standin.to("/emails").is_empty());
    c.advance(TimeDelta::minutes(1));
    c.drain().await;
    let emails = standin.to("/emails");
    assert_eq!(emails.len(), 1);
    assert_eq!(emails[0].json()["to"], json!(["owner@lenslace.example"]));
    assert!(
        emails[0].json()["subject"]
            .as_str()
            .expect("subject")
            .contains("Payment failed")
    );

    // Acknowledged at minute 20: PagerDuty hears it under the same dedup key, and the
    // 30-minute step never happens.
    c.advance(TimeDelta::minutes(5));
    let (acked, changed) = c
        .store
        .ack_alert(Some(&c.org), &raised.id.to_string(), "jo", false)
        .await
        .expect("ack");
    assert!(changed);
    assert_eq!(acked.status, "acknowledged");
    c.drain().await;
    let pd = standin.to("/v2/enqueue");
    assert_eq!(pd.len(), 2);
    assert_eq!(
        pd[1].json(),
        json!({ "routing_key": "R0UT1NGKEY", "event_action": "acknowledge", "dedup_key": raised.dedup_key })
    );
    c.advance(TimeDelta::minutes(15));
    c.drain().await;
    assert_eq!(
        standin.to("/2010-04-01/").len(),
        1,
        "no SMS escalation after the acknowledgement"
    );
    assert!(
        !c.store
            .ack_alert(Some(&c.org), &raised.id.to_string(), "jo", false)
            .await
            .expect("again")
            .1
    );
}

#[tokio::test]
async fn on_an_ordinary_tuesday_an_alert_goes_only_to_its_routes_and_does_not_escalate() {
    let c = ctx("2027-06-15T10:00:00Z", "professional").await;
    let (standin, base) = StandIn::start().await;
    standin.answer("/slack/", 200, "ok");
    alert_setup(&c, &base).await;
    let (raised, ids) = wedsync_notify::alerts::raise(
        &c.store,
        &c.org,
        alert("Calendar sync lagging"),
        &Default::default(),
    )
    .await
    .expect("alert");
    assert_eq!(
        (raised.escalation.as_str(), raised.raised_severity),
        ("normal", Severity::Warning)
    );
    assert_eq!(ids.len(), 1);
    c.drain().await;
    c.advance(TimeDelta::hours(2));
    c.drain().await;
    assert_eq!(standin.to("/slack/").len(), 1);
    assert!(
        standin.to("/v2/enqueue").is_empty()
            && standin.to("/2010-04-01/").is_empty()
            && standin.to("/emails").is_empty()
    );
}

#[tokio::test]
async fn in_app_messages_are_stored_delivered_published_and_marked_read() {
    let c = ctx("2027-06-15T10:00:00Z", "free").await;
    let mut live = c.notifier.inbox();
    let id = c
        .send(NotificationInput {
            channel: Some(NotifyChannel::InApp),
            to: Recipient {
                id: Some("mem_owner".into()),
                ..Default::default()
            },
            subject: Some("New enquiry".into()),
            text: Some("Alex & Sam asked about {{ date }}".into()),
            data: Some(json!({ "date": "18 September" })),
            ..Default::default()
        })
        .await;
    c.drain().await;
    let (n, _) = c.get(&id).await;
    assert_eq!(n.status, "delivered");
    let event = live.try_recv().expect("published live");
    assert_eq!(event.recipient_key, "id:mem_owner");
    assert_eq!(event.notification["id"], id);
    let unread = c
        .store
        .list_notifications(
            &c.org,
            &NotificationFilter {
                recipient_key: Some("id:mem_owner".into()),
                channel: Some(NotifyChannel::InApp),
                unread: true,
                ..Default::default()
            },
            &PageRequest::default(),
        )
        .await
        .expect("inbox");
    assert_eq!(unread.data.len(), 1);
    assert!(
        c.store
            .notify_track(Some(&id), None, "read", None)
            .await
            .expect("read")
    );
    let unread = c
        .store
        .list_notifications(
            &c.org,
            &NotificationFilter {
                recipient_key: Some("id:mem_owner".into()),
                unread: true,
                ..Default::default()
            },
            &PageRequest::default(),
        )
        .await
        .expect("inbox");
    assert!(unread.data.is_empty());
}

#[tokio::test]
async fn an_idempotency_key_returns_the_first_notification_and_refuses_a_different_request() {
    let c = ctx("2027-06-15T10:00:00Z", "professional").await;
    let input = || NotificationInput {
        channel: Some(NotifyChannel::Email),
        to: email_to("alex@example.com"),
        subject: Some("Hi".into()),
        text: Some("x".into()),
        ..Default::default()
    };
    let (a, created) = c
        .store
        .create_notification(&c.org, input(), Some("k1"), TimeDelta::hours(24))
        .await
        .expect("first");
    assert!(created);
    let (b, created) = c
        .store
        .create_notification(&c.org, input(), Some("k1"), TimeDelta::hours(24))
        .await
        .expect("again");
    assert!(!created);
    assert_eq!(a.id, b.id);
    let mut other = input();
    other.text = Some("y".into());
    assert!(matches!(
        c.store
            .create_notification(&c.org, other, Some("k1"), TimeDelta::hours(24))
            .await,
        Err(wedsync_store::StoreError::Conflict(_))
    ));
}

#[tokio::test]
async fn resend_delivery_reports_through_the_inbound_gateway_update_the_notification() {
    let c = ctx("2027-06-15T10:00:00Z", "professional").await;
    let (standin, base) = StandIn::start().await;
    standin.answer(
        "/emails",
        200,
        r#"{"id":"4ef9a417-02e9-4d39-ad75-9611e0fcc33c"}"#,
    );
    c.provider(
        NotifyChannel::Email,
        "resend",
        json!({ "base_url": base, "from": "hello@lenslace.example" }),
        json!({ "api_key": "re_x" }),
    )
    .await;
    let id = c.email("alex@example.com", false).await;
    c.drain().await;
    assert_eq!(c.get(&id).await.0.status, "sent");

    // Resend signs its webhooks with Svix; a `svix` source verifies them and the normaliser
    // keeps them as `svix.raw` with the whole payload.
    let source = wedsync_store::testing::source(
        &c.store,
        &c.org,
        wedsync_core::source::Provider::Svix,
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    )
    .await
    .expect("source");
    let route = wedsync_store::inbound::route_handler(c.store.clone());
    for (n, kind) in ["email.delivered", "email.opened"].into_iter().enumerate() {
        let payload = json!({ "type": kind, "created_at": "2027-06-15T10:00:05.000Z", "data": { "email_id": "4ef9a417-02e9-4d39-ad75-9611e0fcc33c", "to": ["alex@example.com"] } });
        c.store
            .ingest(
                wedsync_store::inbound::IncomingRequest {
                    source_id: source.id,
                    org_id: c.org,
                    headers: vec![],
                    content_type: "application/json".into(),
                    body: payload.to_string().into_bytes(),
                    dedupe_key: format!("svix:msg_{n}"),
                },
                vec![wedsync_store::inbound::NewEvent {
                    event_type: "svix.raw".into(),
                    subject: None,
                    time: c.clock.now(),
                    data: payload,
                    couple_ref: None,
                    booking_ref: None,
                }],
            )
            .await
            .expect("ingest");
        for job in c
            .store
            .claim(
                "test",
                wedsync_store::inbound::ROUTE_KIND,
                10,
                TimeDelta::minutes(1),
            )
            .await
            .expect("claim")
        {
            route.run(job).await.expect("route");
        }
    }
    let (n, history) = c.get(&id).await;
    assert_eq!(n.status, "delivered");
    assert!(n.delivered_at.is_some() && n.opened_at.is_some());
    assert!(
        history.iter().any(|h| h.status == "delivered"
            && h.detail.as_deref() == Some("reported by the provider (email.delivered)")),
        "{history:?}"
    );
}

#[tokio::test]
async fn a_bulk_send_retried_with_its_key_after_a_partial_commit_creates_only_the_rest() {
    let c = ctx("2027-06-15T10:00:00Z", "professional").await;
    let message = NotificationInput {
        channel: Some(NotifyChannel::Email),
        subject: Some("Open day".into()),
        text: Some("Hi {{ recipient.first_name }}".into()),
        ..Default::default()
    };
    let guests = |n: usize| -> Vec<(Recipient, Option<Value>)> {
        (0..n)
            .map(|i| (email_to(&format!("guest{i}@example.com")), None))
            .collect()
    };
    let window = TimeDelta::hours(24);
    // The first attempt got its first transaction (50 recipients) committed, then failed:
    // as far as the store is concerned, the first 50 of the 60 exist under the key.
    let (first, created) = c
        .store
        .create_bulk(
            &c.org,
            message.clone(),
            guests(50),
            Some("open-day"),
            window,
        )
        .await
        .expect("first chunk");
    assert_eq!(created, 50);
    // The retry of the whole request creates the 10 that are missing, and no one twice.
    let (all, created) = c
        .store
        .create_bulk(
            &c.org,
            message.clone(),
            guests(60),
            Some("open-day"),
            window,
        )
        .await
        .expect("retry");
    assert_eq!((all.len(), created), (60, 10));
    assert_eq!(all[..50], first[..]);
    let (again, created) = c
        .store
        .create_bulk(
            &c.org,
            message.clone(),
            guests(60),
            Some("open-day"),
            window,
        )
        .await
        .expect("again");
    assert_eq!((again, created), (all.clone(), 0));
    let stored = c
        .store
        .list_notifications(
            &c.org,
            &NotificationFilter::default(),
            &PageRequest {
                limit: Some(100),
                after: None,
            },
        )
        .await
        .expect("list")
        .data;
    assert_eq!(stored.len(), 60, "one per recipient");
    // A recipient whose request changed under the same key is a conflict, and nothing of
    // that chunk is written.
    let mut changed = guests(60);
    changed[55].0.email = Some("someone.else@example.com".into());
    let refused = c
        .store
        .create_bulk(&c.org, message.clone(), changed, Some("open-day"), window)
        .await;
    assert!(
        matches!(&refused, Err(wedsync_store::StoreError::Conflict(m)) if m.contains("recipient 55")),
        "{refused:?}"
    );
    // A single send cannot take a bulk send's key.
    let Err(wedsync_store::StoreError::Invalid(e)) = c
        .store
        .create_notification(
            &c.org,
            NotificationInput {
                to: email_to("guest0@example.com"),
                ..message.clone()
            },
            Some("bulk:open-day#0"),
            window,
        )
        .await
    else {
        panic!("refused")
    };
    assert_eq!(e.0[0].field, "Idempotency-Key");
    // After the window the key is free again: a new send.
    c.advance(TimeDelta::hours(25));
    let (_, created) = c
        .store
        .create_bulk(&c.org, message, guests(2), Some("open-day"), window)
        .await
        .expect("a new send");
    assert_eq!(created, 2);
}

#[tokio::test]
async fn a_bulk_send_makes_one_notification_per_recipient_and_each_respects_the_quota() {
    let c = ctx("2027-06-15T10:00:00Z", "free").await;
    let (standin, base) = StandIn::start().await;
    standin.answer("/emails", 200, r#"{"id":"re"}"#);
    c.provider(
        NotifyChannel::Email,
        "resend",
        json!({ "base_url": base, "from": "hello@lenslace.example" }),
        json!({ "api_key": "re_x" }),
    )
    .await;
    let message = NotificationInput {
        channel: Some(NotifyChannel::Email),
        subject: Some("Open day on {{ day }}".into()),
        text: Some("Hi {{ recipient.first_name }}, table {{ table }}".into()),
        data: Some(json!({ "day": "Sunday", "table": 0 })),
        ..Default::default()
    };
    // 60 recipients: two transactions (50 + 10); the free tier lets 10 through.
    let recipients: Vec<_> = (0..60)
        .map(|i| {
            (
                Recipient {
                    name: Some(format!("Guest{i} Smith")),
                    email: Some(format!("guest{i}@example.com")),
                    ..Default::default()
                },
                Some(json!({ "table": i })),
            )
        })
        .collect();
    let (ids, created) = c
        .store
        .create_bulk(
            &c.org,
            message.clone(),
            recipients,
            None,
            TimeDelta::hours(24),
        )
        .await
        .expect("bulk");
    assert_eq!((ids.len(), created), (60, 60));
    c.drain().await;
    assert_eq!(c.listed("sent").await.len(), 10);
    let blocked = c
        .store
        .list_notifications(
            &c.org,
            &NotificationFilter {
                status: Some("blocked".into()),
                ..Default::default()
            },
            &PageRequest {
                limit: Some(100),
                after: None,
            },
        )
        .await
        .expect("list")
        .data;
    assert_eq!(blocked.len(), 50);
    assert!(
        blocked
            .iter()
            .all(|n| n.reason.as_deref() == Some("quota_exceeded"))
    );
    let sent = standin.to("/emails");
    assert_eq!(
        sent[3].json()["text"]
            .as_str()
            .map(|t| t.starts_with("Hi Guest3, table 3")),
        Some(true),
        "per-recipient data"
    );
    // One bad recipient refuses the whole request, naming it, and creates nothing.
    let bad = vec![
        (email_to("ok@example.com"), None),
        (
            Recipient {
                email: Some("not-an-address".into()),
                ..Default::default()
            },
            None,
        ),
    ];
    let Err(wedsync_store::StoreError::Invalid(e)) = c
        .store
        .create_bulk(&c.org, message, bad, None, TimeDelta::hours(24))
        .await
    else {
        panic!("refused")
    };
    assert!(e.0[0].field.starts_with("recipients[1].to.email"), "{e:?}");
    assert_eq!(
        c.store
            .list_notifications(
                &c.org,
                &NotificationFilter::default(),
                &PageRequest {
                    limit: Some(100),
                    after: Some(ids[59].to_string())
                }
            )
            .await
            .expect("list")
            .data
            .len(),
        0
    );
}

#[tokio::test]
async fn smtp_with_starttls_verifies_the_servers_certificate() {
    let c = ctx("2027-06-15T10:00:00Z", "professional").await;
    let (mailbox, addr) = smtp_server_with(mailin_embedded::SslConfig::SelfSigned {
        cert_path: fixture("server.pem"),
        key_path: fixture("server.key"),
    });
    let ca = std::fs::read_to_string(fixture("ca.pem")).expect("ca");
    // Without our CA the certificate is not trusted: nothing is sent in the clear, the
    // provider fails and the message waits for a retry.
    c.provider(
        NotifyChannel::Email,
        "smtp",
        json!({ "host": "localhost", "port": addr.port(), "tls": "starttls", "from": "hello@lenslace.example" }),
        json!({}),
    )
    .await;
    let first = c.email("alex@example.com", false).await;
    c.drain().await;
    let (n, history) = c.get(&first).await;
    assert_eq!(
        (n.status.as_str(), n.reason.as_deref()),
        ("queued", Some("providers_unavailable")),
        "{history:?}"
    );
    assert!(mailbox.messages.lock().expect("lock").is_empty());

    // Trusting the private CA, STARTTLS goes through.
    c.provider(
        NotifyChannel::Email,
        "smtp",
        json!({ "host": "localhost", "port": addr.port(), "tls": "starttls", "from": "hello@lenslace.example", "ca_pem": ca }),
        json!({}),
    )
    .await;
    let second = c.email("sam@example.com", false).await;
    c.drain().await;
    assert_eq!(c.get(&second).await.0.status, "sent");
    let messages = mailbox.messages.lock().expect("lock").clone();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].0, vec!["sam@example.com".to_owned()]);
}

#[tokio::test]
async fn web_push_is_encrypted_for_the_browser_and_signed_with_vapid() {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use web_push_native::jwt_simple::prelude::*;
    use web_push_native::p256::elliptic_curve::sec1::ToEncodedPoint as _;

    let c = ctx("2027-06-15T10:00:00Z", "starter").await;
    let (standin, base) = StandIn::start().await;
    standin.answer("/push/", 201, "");
    // The browser's side of a subscription: a P-256 key pair and a 16-byte auth secret.
    let ua_secret =
        web_push_native::p256::SecretKey::from_slice(&rand::random::<[u8; 32]>()).expect("scalar");
    let auth: [u8; 16] = rand::random();
    let subscription = json!({
        "endpoint": format!("{base}/push/sub-1"),
        "keys": {
            "p256dh": URL_SAFE_NO_PAD.encode(ua_secret.public_key().to_encoded_point(false).as_bytes()),
            "auth": URL_SAFE_NO_PAD.encode(auth),
        }
    });
    let id = c
        .send(NotificationInput {
            channel: Some(NotifyChannel::Push),
            to: serde_json::from_value(json!({ "id": "mem_owner", "push": subscription }))
                .expect("recipient"),
            subject: Some("New enquiry".into()),
            text: Some("Alex & Sam asked about {{ day }}".into()),
            data: Some(json!({ "day": "18 September", "url": "https://app.example/enquiries/1" })),
            ..Default::default()
        })
        .await;
    c.drain().await;
    let (n, history) = c.get(&id).await;
    assert_eq!(n.status, "sent", "{history:?}");
    let got = standin.to("/push/sub-1");
    assert_eq!(got.len(), 1);
    let req = &got[0];
    assert_eq!(req.header("content-encoding"), "aes128gcm");
    assert_eq!(req.header("ttl"), "86400");
    assert_eq!(req.header("urgency"), "normal");
    // Authorization: vapid t=<JWT>, k=<public key> (RFC 8292), signed by the hub's key.
    let vapid = wedsync_notify::push::Vapid::from_seed(
        &c.store
            .derived_key(wedsync_notify::push::KEY_LABEL)
            .expect("key"),
        "mailto:ops@lenslace.example",
    )
    .expect("vapid");
    let auth_header = req.header("authorization");
    assert_eq!(req.headers.get_all("authorization").iter().count(), 1);
    let rest = auth_header.strip_prefix("vapid t=").expect("vapid scheme");
    let (token, k) = rest.split_once(", k=").expect("t and k");
    assert_eq!(k, vapid.public_key());
    let public = ES256PublicKey::from_bytes(&URL_SAFE_NO_PAD.decode(k).expect("b64")).expect("key");
    let claims = public
        .verify_token::<NoCustomClaims>(
            token,
            Some(VerificationOptions {
                time_tolerance: Some(Duration::from_days(3650)),
                ..Default::default()
            }),
        )
        .expect("a valid VAPID signature");
    assert_eq!(
        claims
            .audiences
            .expect("aud")
            .into_string()
            .expect("one audience"),
        base,
        "aud is the push service's origin"
    );
    assert_eq!(
        claims.subject.as_deref(),
        Some("mailto:ops@lenslace.example")
    );
    // Only the browser can read the payload.
    let auth_array = web_push_native::Auth::from(auth);
    let plain =
        web_push_native::decrypt(req.body.to_vec(), &ua_secret, &auth_array).expect("decrypts");
    let payload: Value = serde_json::from_slice(&plain).expect("json");
    assert_eq!(payload["title"], "New enquiry");
    assert_eq!(payload["body"], "Alex & Sam asked about 18 September");
    assert_eq!(payload["url"], "https://app.example/enquiries/1");
    assert_eq!(payload["id"], id);

    // A subscription the push service no longer knows fails for good, saying so.
    standin.answer("/push/", 410, "");
    let gone = c
        .send(NotificationInput {
            channel: Some(NotifyChannel::Push),
            to: serde_json::from_value(json!({ "id": "mem_owner", "push": subscription }))
                .expect("recipient"),
            text: Some("again".into()),
            ..Default::default()
        })
        .await;
    c.drain().await;
    let (n, _) = c.get(&gone).await;
    assert_eq!(
        (n.status.as_str(), n.reason.as_deref()),
        ("failed", Some("rejected"))
    );
    assert!(
        n.detail.as_deref().is_some_and(|d| d.contains("expired")),
        "{n:?}"
    );
}

#[tokio::test]
async fn push_on_the_free_tier_stops_at_five_a_day() {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use web_push_native::p256::elliptic_curve::sec1::ToEncodedPoint as _;
    let c = ctx("2027-06-15T10:00:00Z", "free").await;
    let (standin, base) = StandIn::start().await;
    standin.answer("/push/", 201, "");
    let ua =
        web_push_native::p256::SecretKey::from_slice(&rand::random::<[u8; 32]>()).expect("scalar");
    let to: Recipient = serde_json::from_value(json!({ "push": {
        "endpoint": format!("{base}/push/sub-2"),
        "keys": { "p256dh": URL_SAFE_NO_PAD.encode(ua.public_key().to_encoded_point(false).as_bytes()), "auth": URL_SAFE_NO_PAD.encode([7u8; 16]) }
    } }))
    .expect("recipient");
    for _ in 0..6 {
        c.send(NotificationInput {
            channel: Some(NotifyChannel::Push),
            to: to.clone(),
            text: Some("x".into()),
            ..Default::default()
        })
        .await;
    }
    c.drain().await;
    assert_eq!(standin.to("/push/").len(), 5);
    assert_eq!(
        c.listed("blocked").await[0].reason.as_deref(),
        Some("quota_exceeded")
    );
}

#[tokio::test]
async fn per_recipient_and_per_channel_rate_limits_defer_rather_than_drop() {
    let c = ctx("2027-06-15T10:00:00Z", "enterprise").await;
    let (standin, base) = StandIn::start().await;
    standin.answer("/2010-04-01/", 201, r#"{"sid":"SM"}"#);
    c.provider(
        NotifyChannel::Sms,
        "twilio",
        json!({ "base_url": base, "account_sid": "AC1", "from": "+447700900001" }),
        json!({ "auth_token": "t" }),
    )
    .await;
    let settings = Settings {
        per_recipient_per_hour: Some(2),
        per_channel_per_minute: [(NotifyChannel::Sms, 3)].into(),
        ..Default::default()
    };
    c.store
        .put_notify_settings(&c.org, &settings, &operator())
        .await
        .expect("settings");
    let sms = |phone: &str| NotificationInput {
        channel: Some(NotifyChannel::Sms),
        to: Recipient {
            phone: Some(phone.into()),
            ..Default::default()
        },
        text: Some("Reminder".into()),
        ..Default::default()
    };
    // Three messages to one person: two go, the third waits for the hour's bucket.
    let mut same = Vec::new();
    for _ in 0..3 {
        same.push(c.send(sms("+447700900123")).await);
    }
    c.drain().await;
    let (third, _) = c.get(&same[2]).await;
    assert_eq!(
        (third.status.as_str(), third.reason.as_deref()),
        ("deferred", Some("rate_limited"))
    );
    assert!(
        third
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("2 sms messages an hour")),
        "{third:?}"
    );
    // Two more people: one goes (the organisation's third this minute), one waits a minute.
    let a = c.send(sms("+447700900124")).await;
    let b = c.send(sms("+447700900125")).await;
    c.drain().await;
    assert_eq!(c.get(&a).await.0.status, "sent");
    let (waiting, _) = c.get(&b).await;
    assert_eq!(
        (waiting.status.as_str(), waiting.reason.as_deref()),
        ("deferred", Some("rate_limited"))
    );
    assert!(waiting.due_at <= c.clock.now() + TimeDelta::minutes(1));
    c.advance(TimeDelta::minutes(1));
    c.drain().await;
    assert_eq!(c.get(&b).await.0.status, "sent");
    assert_eq!(
        c.get(&same[2]).await.0.status,
        "deferred",
        "the person's hour is not over"
    );
    c.advance(TimeDelta::hours(1));
    c.drain().await;
    assert_eq!(
        c.get(&same[2]).await.0.status,
        "sent",
        "sent once the hour allows, never dropped"
    );
    assert_eq!(standin.to("/2010-04-01/").len(), 5);
}

#[tokio::test]
async fn twilio_status_callbacks_are_verified_normalised_and_mark_the_sms() {
    let c = ctx("2027-06-15T10:00:00Z", "professional").await;
    let (standin, base) = StandIn::start().await;
    standin.answer(
        "/2010-04-01/",
        201,
        r#"{"sid":"SM5ef8732a3c49700934481addd5ce1659"}"#,
    );
    // The source Twilio reports to; its secret is the account's auth token.
    let new = wedsync_store::sources::NewSource::parse(
        "Twilio",
        wedsync_core::source::Provider::Twilio,
        wedsync_store::sources::SourceConfig {
            generic: None,
            ip_allowlist: vec![],
            rate_per_minute: 100,
            tolerance_seconds: 300,
        },
        Some("twilio-auth-token".into()),
    )
    .expect("valid");
    let (source, _) = c
        .store
        .create_source(&c.org, new, &operator())
        .await
        .expect("source");
    let callback = format!("https://hub.example/v1/inbound/{}", source.id);
    c.provider(
        NotifyChannel::Sms,
        "twilio",
        json!({ "base_url": base, "account_sid": "AC1", "from": "+447700900001", "status_callback": callback }),
        json!({ "auth_token": "twilio-auth-token" }),
    )
    .await;
    let id = c
        .send(NotificationInput {
            channel: Some(NotifyChannel::Sms),
            to: Recipient {
                phone: Some("+447700900123".into()),
                ..Default::default()
            },
            text: Some("Your florist is on the way".into()),
            ..Default::default()
        })
        .await;
    c.drain().await;
    let sent = standin.to("/2010-04-01/");
    assert!(
        sent[0]
            .form()
            .contains(&("StatusCallback".into(), callback.clone()))
    );

    // Twilio's callback, signed as Twilio signs it, through the real verifier and normaliser.
    let body = "MessageStatus=delivered&To=%2B447700900123&MessageSid=SM5ef8732a3c49700934481addd5ce1659&AccountSid=AC1&From=%2B447700900001";
    let mut headers = vec![(
        "content-type".to_owned(),
        "application/x-www-form-urlencoded".to_owned(),
    )];
    let unsigned = wedsync_inbound::InboundRequest {
        method: "POST",
        url: &callback,
        headers: &headers,
        body: body.as_bytes(),
    };
    let signature = wedsync_inbound::sign_twilio(
        &wedsync_inbound::Secret::from_str("twilio-auth-token"),
        &unsigned,
    );
    headers.push(("x-twilio-signature".to_owned(), signature));
    let request = wedsync_inbound::InboundRequest {
        method: "POST",
        url: &callback,
        headers: &headers,
        body: body.as_bytes(),
    };
    wedsync_inbound::verify(
        &wedsync_inbound::Scheme::Twilio,
        &request,
        &[wedsync_inbound::Secret::from_str("twilio-auth-token")],
        c.clock.now(),
        wedsync_inbound::DEFAULT_TOLERANCE,
    )
    .expect("verified");
    let normalized = wedsync_normalize::normalize(&wedsync_normalize::Input {
        provider: wedsync_normalize::Provider::Twilio,
        content_type: "application/x-www-form-urlencoded",
        body: body.as_bytes(),
        delivery_id: None,
        received_at: c.clock.now(),
        event_id_pointer: None,
    })
    .expect("normalised");
    assert_eq!(
        normalized.dedupe_key,
        "twilio:SM5ef8732a3c49700934481addd5ce1659:delivered"
    );
    let events = normalized
        .events
        .into_iter()
        .map(|e| wedsync_store::inbound::NewEvent {
            event_type: e.event_type,
            subject: e.subject,
            time: e.time,
            data: e.data,
            couple_ref: e.couple_ref,
            booking_ref: e.booking_ref,
        })
        .collect();
    c.store
        .ingest(
            wedsync_store::inbound::IncomingRequest {
                source_id: source.id,
                org_id: c.org,
                headers: vec![],
                content_type: "application/x-www-form-urlencoded".into(),
                body: body.as_bytes().to_vec(),
                dedupe_key: normalized.dedupe_key,
            },
            events,
        )
        .await
        .expect("ingest");
    let route = wedsync_store::inbound::route_handler(c.store.clone());
    for job in c
        .store
        .claim(
            "test",
            wedsync_store::inbound::ROUTE_KIND,
            10,
            TimeDelta::minutes(1),
        )
        .await
        .expect("claim")
    {
        route.run(job).await.expect("route");
    }
    let (n, history) = c.get(&id).await;
    assert_eq!(n.status, "delivered");
    assert!(
        history
            .iter()
            .any(|h| h.detail.as_deref() == Some("reported by Twilio (delivered)")),
        "{history:?}"
    );
}

#[tokio::test]
async fn alerts_reach_teams_discord_and_a_generic_webhook_in_their_documented_shapes() {
    let c = ctx("2027-06-15T10:00:00Z", "professional").await;
    let (standin, base) = StandIn::start().await;
    standin.answer("/teams/", 202, "");
    standin.answer("/discord/", 200, r#"{"id":"1180000000000000000"}"#);
    standin.answer("/hook/", 204, "");
    c.provider(
        NotifyChannel::Teams,
        "teams",
        json!({}),
        json!({ "webhook_url": format!("{base}/teams/workflows/abc") }),
    )
    .await;
    c.provider(
        NotifyChannel::Discord,
        "discord",
        json!({}),
        json!({ "webhook_url": format!("{base}/discord/api/webhooks/1/tok") }),
    )
    .await;
    c.provider(
        NotifyChannel::Webhook,
        "webhook",
        json!({}),
        json!({ "url": format!("{base}/hook/ops?token=t0k") }),
    )
    .await;
    let settings = Settings {
        alert_routes: [
            NotifyChannel::Teams,
            NotifyChannel::Discord,
            NotifyChannel::Webhook,
        ]
        .into_iter()
        .map(|channel| AlertRoute {
            channel,
            to: Recipient::default(),
        })
        .collect(),
        ..Default::default()
    };
    c.store
        .put_notify_settings(&c.org, &settings, &operator())
        .await
        .expect("settings");
    let (raised, ids) = wedsync_notify::alerts::raise(
        &c.store,
        &c.org,
        alert("Calendar sync failing"),
        &Default::default(),
    )
    .await
    .expect("alert");
    assert_eq!(ids.len(), 3);
    c.drain().await;

    let teams = standin.to("/teams/workflows/abc");
    assert_eq!(teams.len(), 1);
    let card = teams[0].json();
    assert_eq!(card["type"], "message");
    assert_eq!(
        card["attachments"][0]["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(card["attachments"][0]["content"]["type"], "AdaptiveCard");
    assert!(card.to_string().contains("Calendar sync failing"), "{card}");

    let discord = standin.to("/discord/api/webhooks/1/tok");
    assert_eq!(discord.len(), 1);
    assert!(
        discord[0].path.ends_with("?wait=true"),
        "{}",
        discord[0].path
    );
    let message = discord[0].json();
    assert_eq!(message["username"], "WedSync");
    assert_eq!(message["embeds"][0]["title"], "Calendar sync failing");
    assert_eq!(message["embeds"][0]["color"], 0xECB22E, "warning colour");
    assert_eq!(message["allowed_mentions"], json!({ "parse": [] }));

    let hook = standin.to("/hook/ops");
    assert_eq!(hook.len(), 1);
    assert_eq!(hook[0].header("content-type"), "application/json");
    let body = hook[0].json();
    assert_eq!(body["alert"]["id"], raised.id.to_string());
    assert_eq!(body["severity"], "warning");
    for id in ids {
        let (n, _) = c.get(&id.to_string()).await;
        assert_eq!(n.status, "sent", "{n:?}");
    }
    assert_eq!(
        c.get(&ids_of_channel(&c, NotifyChannel::Discord).await)
            .await
            .0
            .provider_message_id
            .as_deref(),
        Some("1180000000000000000")
    );
}

async fn ids_of_channel(c: &Ctx, channel: NotifyChannel) -> String {
    c.store
        .list_notifications(
            &c.org,
            &NotificationFilter {
                channel: Some(channel),
                ..Default::default()
            },
            &PageRequest::default(),
        )
        .await
        .expect("list")
        .data[0]
        .id
        .to_string()
}

//! Kill `wedsync serve` with SIGKILL while it is working through the queue, start it again,
//! and show that every job completed and none was lost. Each job (outbox.publish) records its
//! completion on its event, which is also its dedupe key.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use wedsync_core::clock::SystemClock;
use wedsync_store::queue::{JobFilter, JobState, NewJob};
use wedsync_store::testing::{execute_raw, fresh_db};
use wedsync_store::{Actor, Store};

const BIN: &str = env!("CARGO_BIN_EXE_wedsync");
const EVENTS: usize = 5000;

fn serve(url: &str, dir: &std::path::Path) -> Child {
    let mut child = Command::new(BIN)
        .current_dir(dir)
        .env_remove("WEDSYNC_TEST_DATABASE_URL")
        .env("WEDSYNC_DATABASE_URL", url)
        .env("WEDSYNC_LOG__LEVEL", "warn")
        // Short leases so the killed node's claims come back within the test.
        .env("WEDSYNC_QUEUE__LEASE_SECONDS", "2")
        .env("WEDSYNC_QUEUE__HEARTBEAT_SECONDS", "1")
        .env("WEDSYNC_QUEUE__REAP_SECONDS", "1")
        .env("WEDSYNC_QUEUE__IDLE_POLL_MS", "100")
        .args(["serve", "--listen", "127.0.0.1:0", "--migrate"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    assert!(line.starts_with("wedsync listening on"), "{line}");
    child
}

async fn published(store: &Store) -> usize {
    EVENTS - store.unpublished_count().await.expect("count") as usize
}

async fn wait_for(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tick.tick().await;
    }
}

#[tokio::test]
async fn a_killed_node_loses_no_work() {
    let db = fresh_db().await.expect("db");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::connect(&db.options, Arc::new(SystemClock))
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    let settings =
        wedsync_core::org::OrgSettings::parse("Lens & Lace", "Europe/London", "scale", "GB", "GBP")
            .expect("org");
    let org = store
        .create_org(settings, &Actor::Cli("test".into()))
        .await
        .expect("org");

    // A backlog of events, each with its publish job, as the outbox writes them.
    let now = wedsync_core::clock::to_micros(chrono::Utc::now());
    let ids: Vec<String> = (0..EVENTS)
        .map(|_| wedsync_core::id::EventId::new_at(chrono::Utc::now()).to_string())
        .collect();
    for chunk in ids.chunks(1000) {
        let values: Vec<String> = chunk
            .iter()
            .map(|id| {
                format!(
                    "('{id}', '{}', 'client.updated', 'cpl_x', '{{}}', {now}, NULL)",
                    org.id
                )
            })
            .collect();
        execute_raw(&store, &format!("INSERT INTO outbox (id, org_id, event_type, subject, data, occurred_at, published_at) VALUES {}", values.join(", ")))
            .await
            .expect("events");
        let jobs = chunk
            .iter()
            .map(|id| {
                let mut job = NewJob::new(
                    wedsync_store::outbox::PUBLISH_KIND,
                    serde_json::json!({ "event_id": id }),
                );
                job.org_id = Some(org.id);
                job.dedupe_key = Some(id.clone());
                job
            })
            .collect();
        store.enqueue_many(jobs).await.expect("jobs");
    }

    // Start a node and kill it mid-stream.
    let first = serve(&db.url, dir.path());
    wait_for(
        "the node to start publishing",
        Duration::from_secs(60),
        async || published(&store).await >= 100,
    )
    .await;
    Command::new("kill")
        .args(["-KILL", &first.id().to_string()])
        .status()
        .expect("kill");
    let mut first = first;
    first.wait().expect("reap the killed process");
    let done_at_kill = published(&store).await;
    let running_at_kill = store
        .list_jobs(
            None,
            &JobFilter {
                state: Some(JobState::Running),
                kind: None,
            },
            &wedsync_store::page::PageRequest {
                limit: Some(100),
                after: None,
            },
        )
        .await
        .expect("running")
        .data
        .len();
    eprintln!("killed with {done_at_kill}/{EVENTS} published and {running_at_kill} jobs in flight");
    assert!(
        done_at_kill < EVENTS,
        "the node finished before it was killed; nothing was in flight"
    );

    // A new node finishes everything, including the killed node's claims once their leases
    // run out.
    let mut second = serve(&db.url, dir.path());
    wait_for(
        "every event to be published",
        Duration::from_secs(120),
        async || published(&store).await == EVENTS,
    )
    .await;
    wait_for(
        "every job to be recorded",
        Duration::from_secs(60),
        async || {
            store
                .queue_depth()
                .await
                .expect("depth")
                .iter()
                .all(|d| d.state == JobState::Succeeded)
        },
    )
    .await;
    let depth = store.queue_depth().await.expect("depth");
    assert_eq!(
        depth.iter().map(|d| d.count).sum::<i64>(),
        EVENTS as i64,
        "one job per event: none lost, none doubled"
    );
    Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status()
        .expect("term");
    assert!(second.wait().expect("wait").success());
}

/// Signed webhooks stream in from several senders; the node is killed mid-run. Every event
/// that was answered 2xx must be stored, and is routed once a node runs again.
#[tokio::test]
async fn a_killed_node_loses_no_acknowledged_webhook() {
    const SENDERS: usize = 8;
    let db = fresh_db().await.expect("db");
    let dir = tempfile::tempdir().expect("tempdir");
    let key = wedsync_store::secrets::MasterKey::generate();
    let store = Store::connect(&db.options, Arc::new(SystemClock))
        .await
        .expect("connect")
        .with_master_key(
            wedsync_store::secrets::MasterKey::from_base64(&key.to_base64()).expect("key"),
        );
    store.migrate().await.expect("migrate");
    let settings =
        wedsync_core::org::OrgSettings::parse("Lens & Lace", "Europe/London", "scale", "GB", "GBP")
            .expect("org");
    let org = store
        .create_org(settings, &Actor::Cli("test".into()))
        .await
        .expect("org");
    let config = wedsync_store::sources::SourceConfig {
        generic: None,
        ip_allowlist: vec![],
        rate_per_minute: 1_000_000,
        tolerance_seconds: 300,
    };
    let new = wedsync_store::sources::NewSource::parse(
        "Relay",
        wedsync_core::source::Provider::StandardWebhooks,
        config,
        None,
    )
    .expect("source");
    let (source, secret) = store
        .create_source(&org.id, new, &Actor::Cli("test".into()))
        .await
        .expect("source");

    let start = |url: &str| {
        let mut child = Command::new(BIN)
            .current_dir(dir.path())
            .env_remove("WEDSYNC_TEST_DATABASE_URL")
            .env("WEDSYNC_DATABASE_URL", url)
            .env("WEDSYNC_SECRETS__MASTER_KEY", key.to_base64())
            .env("WEDSYNC_LOG__LEVEL", "warn")
            .args(["serve", "--listen", "127.0.0.1:0", "--migrate"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read");
        let base = line
            .trim()
            .strip_prefix("wedsync listening on ")
            .expect("address")
            .to_owned();
        (child, base)
    };
    let (mut first, base) = start(&db.url);
    let url = format!("{base}{}", source.inbound_path);
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let (url, secret, acknowledged) = (url.clone(), secret.clone(), acknowledged.clone());
        senders.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            // Bounded: at most 2000 requests per sender, stopping at the first failure.
            for n in 0..2000 {
                let id = format!("msg_{s}_{n}");
                let body = format!(r#"{{"type":"booking.created","data":{{"n":{n}}}}}"#);
                let t = chrono::Utc::now().timestamp();
                let sig = wedsync_inbound::sign_standard_webhooks(
                    &wedsync_inbound::Secret::from_str(&secret),
                    &id,
                    t,
                    body.as_bytes(),
                );
                let sent = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("webhook-id", &id)
                    .header("webhook-timestamp", t.to_string())
                    .header("webhook-signature", sig)
                    .body(body)
                    .send()
                    .await;
                match sent {
                    Ok(resp) if resp.status().is_success() => {
                        let reply: serde_json::Value = match resp.json().await {
                            Ok(v) => v,
                            Err(_) => break,
                        };
                        if let Some(ids) = reply["event_ids"].as_array() {
                            let mut a = acknowledged.lock().expect("lock");
                            a.extend(ids.iter().filter_map(|v| v.as_str().map(str::to_owned)));
                        }
                    }
                    _ => break,
                }
            }
        }));
    }
    wait_for(
        "a few hundred acknowledged webhooks",
        Duration::from_secs(60),
        async || acknowledged.lock().expect("lock").len() >= 300,
    )
    .await;
    Command::new("kill")
        .args(["-KILL", &first.id().to_string()])
        .status()
        .expect("kill");
    first.wait().expect("reap");
    for sender in senders {
        sender.await.expect("sender");
    }
    let acknowledged = acknowledged.lock().expect("lock").clone();
    eprintln!("killed after {} acknowledged webhooks", acknowledged.len());
    for id in &acknowledged {
        assert!(
            store.get_event(&org.id, id).await.is_ok(),
            "acknowledged event {id} was lost"
        );
    }

    // A new node routes everything that was stored.
    let (mut second, _) = start(&db.url);
    wait_for(
        "every acknowledged event to be routed",
        Duration::from_secs(120),
        async || {
            let mut all = true;
            for id in &acknowledged {
                if store
                    .get_event(&org.id, id)
                    .await
                    .map(|(e, _)| e.routedat.is_none())
                    .unwrap_or(true)
                {
                    all = false;
                    break;
                }
            }
            all
        },
    )
    .await;
    Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status()
        .expect("term");
    assert!(second.wait().expect("wait").success());
}

/// What the receiver saw of one request: webhook-id, timestamp, signature, body.
type Request = (String, String, String, Vec<u8>);

/// Kill -9 of the node while it delivers webhooks: after a restart every message reaches
/// the receiver at least once, every request verifies with the reference Standard Webhooks
/// library, and a repeat carries the same `webhook-id`.
#[tokio::test]
async fn a_killed_node_delivers_every_webhook_after_restart() {
    const MESSAGES: usize = 1500;
    let db = fresh_db().await.expect("db");
    let dir = tempfile::tempdir().expect("tempdir");
    let key = wedsync_store::secrets::MasterKey::generate();
    let store = Store::connect(&db.options, Arc::new(SystemClock))
        .await
        .expect("connect")
        .with_master_key(
            wedsync_store::secrets::MasterKey::from_base64(&key.to_base64()).expect("key"),
        );
    store.migrate().await.expect("migrate");
    let settings =
        wedsync_core::org::OrgSettings::parse("Lens & Lace", "Europe/London", "scale", "GB", "GBP")
            .expect("org");
    let org = store
        .create_org(settings, &Actor::Cli("test".into()))
        .await
        .expect("org");

    // The receiver records each request as it arrives. From the 200th on, it holds its
    // answer until the gate opens (after the kill), so the node dies with attempts in flight
    // that the receiver has seen but the node never heard answered.
    const HOLD_FROM: usize = 200;
    let got: Arc<std::sync::Mutex<Vec<Request>>> = Arc::default();
    let gate = Arc::new((
        std::sync::atomic::AtomicBool::new(false),
        tokio::sync::Notify::new(),
    ));
    let (g, gt) = (got.clone(), gate.clone());
    let app = axum::Router::new().fallback(
        move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let (g, gate) = (g.clone(), gt.clone());
            async move {
                let h = |n: &str| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                let seen = {
                    let mut g = g.lock().expect("lock");
                    g.push((
                        h("webhook-id"),
                        h("webhook-timestamp"),
                        h("webhook-signature"),
                        body.to_vec(),
                    ));
                    g.len()
                };
                while seen > HOLD_FROM && !gate.0.load(std::sync::atomic::Ordering::SeqCst) {
                    let opened = gate.1.notified();
                    if gate.0.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    opened.await;
                }
                axum::http::StatusCode::NO_CONTENT
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let (endpoint, secret) = store
        .create_endpoint(
            &org.id,
            wedsync_store::webhooks::EndpointInput {
                url: format!("http://{addr}/hooks"),
                ..Default::default()
            },
            &Actor::Cli("test".into()),
        )
        .await
        .expect("endpoint");
    let mut ids = std::collections::BTreeSet::new();
    for n in 0..MESSAGES {
        let (m, _) = store
            .create_message(
                &org.id,
                wedsync_store::webhooks::MessageInput {
                    event_type: "invoice.sent".into(),
                    data: serde_json::json!({ "n": n }),
                },
                None,
                chrono::TimeDelta::hours(24),
                None,
            )
            .await
            .expect("message");
        ids.insert(m.id.to_string());
    }

    let start = |url: &str| {
        let mut child = Command::new(BIN)
            .current_dir(dir.path())
            .env_remove("WEDSYNC_TEST_DATABASE_URL")
            .env("WEDSYNC_DATABASE_URL", url)
            .env("WEDSYNC_SECRETS__MASTER_KEY", key.to_base64())
            .env("WEDSYNC_OUTBOUND__ALLOW_SUBNETS", "127.0.0.1/32")
            .env("WEDSYNC_LOG__LEVEL", "warn")
            .env("WEDSYNC_QUEUE__LEASE_SECONDS", "2")
            .env("WEDSYNC_QUEUE__HEARTBEAT_SECONDS", "1")
            .env("WEDSYNC_QUEUE__REAP_SECONDS", "1")
            .env("WEDSYNC_QUEUE__IDLE_POLL_MS", "100")
            .args(["serve", "--listen", "127.0.0.1:0", "--migrate"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read");
        assert!(line.starts_with("wedsync listening on"), "{line}");
        child
    };
    let mut first = start(&db.url);
    wait_for(
        "attempts held at the receiver",
        Duration::from_secs(60),
        async || got.lock().expect("lock").len() > HOLD_FROM,
    )
    .await;
    Command::new("kill")
        .args(["-KILL", &first.id().to_string()])
        .status()
        .expect("kill");
    first.wait().expect("reap");
    gate.0.store(true, std::sync::atomic::Ordering::SeqCst);
    gate.1.notify_waiters();
    let before_restart = got.lock().expect("lock").len();
    eprintln!("killed after {before_restart} deliveries");
    assert!(before_restart < MESSAGES, "the kill came mid-run");

    let mut second = start(&db.url);
    wait_for(
        "every message to be delivered",
        Duration::from_secs(180),
        async || {
            let stats = store
                .endpoint_stats(&org.id, &endpoint.id, chrono::Utc::now())
                .await
                .expect("stats");
            stats.succeeded as usize == MESSAGES
        },
    )
    .await;
    Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status()
        .expect("term");
    assert!(second.wait().expect("wait").success());

    let got = got.lock().expect("lock").clone();
    let received: std::collections::BTreeSet<String> =
        got.iter().map(|(id, ..)| id.clone()).collect();
    assert_eq!(received, ids, "every message arrived, and nothing else");
    let verifier = standardwebhooks::Webhook::new(&secret).expect("secret");
    let mut bodies = std::collections::HashMap::new();
    for (id, ts, sig, body) in &got {
        let ts: i64 = ts.parse().expect("timestamp");
        assert_eq!(
            &verifier.sign(id, ts, body).expect("sign"),
            sig,
            "every request verifies"
        );
        // A repeat is the same message: same id, same body.
        assert_eq!(
            bodies.entry(id.clone()).or_insert_with(|| body.clone()),
            body
        );
    }
    assert!(
        got.len() > MESSAGES,
        "the requests held at the kill were repeated after the restart"
    );
    eprintln!(
        "{} requests for {} messages ({} repeats after the kill)",
        got.len(),
        MESSAGES,
        got.len() - MESSAGES
    );
}

/// Journeys run through the queue; the node is killed while instances are mid-journey. After
/// a restart every instance has finished, every step ran once (one history row per step),
/// and every effect exists exactly once (one in-app task and one webhook message per
/// instance, found by their step-scoped keys).
#[tokio::test]
async fn a_killed_node_finishes_every_journey_without_repeating_a_step() {
    const COUPLES: usize = 300;
    let db = fresh_db().await.expect("db");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::connect(&db.options, Arc::new(SystemClock))
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    let operator = Actor::Cli("test".into());
    let settings =
        wedsync_core::org::OrgSettings::parse("Lens & Lace", "Europe/London", "scale", "GB", "GBP")
            .expect("org");
    let org = store.create_org(settings, &operator).await.expect("org").id;
    let zone = wedsync_core::org::TimeZone::parse("Europe/London").expect("zone");
    let mut couples = Vec::with_capacity(COUPLES);
    for i in 0..COUPLES {
        let input: wedsync_core::couple::CoupleInput = serde_json::from_value(serde_json::json!({
            "partners": [
                {"name": format!("Partner {i}"), "email": format!("p{i}@example.com")},
                {"name": "Other", "email": format!("o{i}@example.com")}
            ],
            "wedding_date": "2030-06-01", "time_zone": "Europe/London"
        }))
        .expect("input");
        let fields = input.validate(zone).expect("valid");
        couples.push(
            store
                .create_couple(&org, fields, &operator)
                .await
                .expect("couple")
                .id,
        );
    }
    // trigger → task (team inbox) → decision → webhook → end: five steps, two effects.
    let document = serde_json::json!({
        "nodes": [
            {"id": "start", "type": "trigger", "position": {"x": 0, "y": 0}, "data": {"trigger": {"kind": "manual"}}},
            {"id": "task", "type": "task", "position": {"x": 0, "y": 1}, "data": {"title": "Call the couple"}},
            {"id": "soon", "type": "decision", "position": {"x": 0, "y": 2},
             "data": {"conditions": [{"label": "far", "when": "couple.wedding_date > '2029-01-01'"}], "default_label": "near"}},
            {"id": "hook", "type": "webhook", "position": {"x": 0, "y": 3}, "data": {"event_type": "journey.checked"}},
            {"id": "done", "type": "end", "position": {"x": 0, "y": 4}, "data": {}}
        ],
        "edges": [
            {"id": "a", "source": "start", "target": "task"},
            {"id": "b", "source": "task", "target": "soon"},
            {"id": "c", "source": "soon", "sourceHandle": "far", "target": "hook"},
            {"id": "d", "source": "soon", "sourceHandle": "near", "target": "hook"},
            {"id": "e", "source": "hook", "target": "done"}
        ],
        "viewport": {"x": 0, "y": 0, "zoom": 1}
    });
    let parsed = wedsync_journeys::JourneyDocument::parse(&document).expect("parses");
    wedsync_journeys::validate(&parsed, wedsync_journeys::Mode::Publish).expect("valid");
    let journey = store
        .create_journey(&org, "Check-in", "", &parsed.to_json(), &operator)
        .await
        .expect("journey");
    let (_, version) = store
        .publish_journey(&org, &journey.id, journey.revision, &operator)
        .await
        .expect("publish");
    let starts: Vec<wedsync_store::journeys::NewStart> = couples
        .iter()
        .map(|c| wedsync_store::journeys::NewStart {
            couple: *c,
            booking: None,
            trigger_key: "manual:crash".into(),
            status: "running".into(),
            due_at: None,
            wait: None,
            context: serde_json::json!({}),
            detail: "started by the test".into(),
            priority: 0,
        })
        .collect();
    let started = store
        .start_instances(&org, &journey.id, version.version, "start", &starts)
        .await
        .expect("start");
    assert_eq!(started, COUPLES);

    let finished = async || {
        let rows = wedsync_store::testing::query_i64(
            &store,
            "SELECT COUNT(*) AS n FROM journey_instances WHERE status = 'completed'",
        )
        .await
        .expect("count");
        rows as usize
    };
    let first = serve(&db.url, dir.path());
    wait_for(
        "some journeys to finish",
        Duration::from_secs(60),
        async || finished().await >= 20,
    )
    .await;
    Command::new("kill")
        .args(["-KILL", &first.id().to_string()])
        .status()
        .expect("kill");
    let mut first = first;
    first.wait().expect("reap the killed process");
    let at_kill = finished().await;
    eprintln!("killed with {at_kill}/{COUPLES} journeys finished");
    assert!(at_kill < COUPLES, "every journey finished before the kill");

    let mut second = serve(&db.url, dir.path());
    wait_for(
        "every journey to finish",
        Duration::from_secs(120),
        async || finished().await == COUPLES,
    )
    .await;
    Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status()
        .expect("term");
    assert!(second.wait().expect("wait").success());

    let count = async |sql: &str| {
        wedsync_store::testing::query_i64(&store, sql)
            .await
            .expect("count")
    };
    // Every step once: trigger ("started"), task, decision, webhook and end, each with its
    // own step number: 5 history rows.
    assert_eq!(
        count("SELECT COUNT(*) AS n FROM journey_steps").await,
        (COUPLES * 5) as i64
    );
    assert_eq!(
        count(
            "SELECT COUNT(*) AS n FROM (SELECT instance_id, seq FROM journey_steps \
             GROUP BY instance_id, seq HAVING COUNT(*) > 1) d"
        )
        .await,
        0,
        "no step was recorded twice"
    );
    // Every effect once.
    assert_eq!(
        count("SELECT COUNT(*) AS n FROM notifications WHERE idempotency_key LIKE 'journey:%'")
            .await,
        COUPLES as i64
    );
    assert_eq!(
        count("SELECT COUNT(*) AS n FROM messages WHERE event_type = 'journey.checked'").await,
        COUPLES as i64
    );
}

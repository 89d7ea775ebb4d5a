//! The inbound gateway over loopback, against a plain 200 baseline, on SQLite and
//! PostgreSQL, in one run.
//!
//! The real server (`wedsync_server::app`) runs in this process on 127.0.0.1 with two bench
//! routes beside it: `/bench/plain` answers 200 at once (the HTTP baseline) and
//! `/bench/verify` verifies the request's Standard Webhooks signature and answers 200
//! (verification only). `/v1/inbound/{source}` is the full durable pipeline: rate limit,
//! verify, normalise, deduplicate and store with its event and routing job (group commit),
//! then answer. Every request is signed beforehand with its own `webhook-id`, so the client
//! spends no CPU on signing while measuring.
//!
//! Closed loop: `C` concurrent clients send N requests as fast as they are answered
//! (throughput, p50, p99). Open loop: requests are offered at 2,000 a second for 5 seconds
//! to the full pipeline (latency at a fixed load). Bounded in count and time; loopback only.
//!
//! After each closed-loop run of the full pipeline the benchmark waits for the worker pool
//! to finish routing what was stored (no routing job ready or running) and prints how long
//! that took after the last answer (`routed +ms`): a rate that routing cannot keep up with
//! would show there as a growing backlog.
//!
//! Usage: `cargo run --release -p wedsync-bench --bin inbound -- [N]` (default 20000).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::routing::post;
use sea_orm::{ConnectionTrait, Database};
use wedsync_core::clock::SystemClock;
use wedsync_store::{Actor, Store, StoreOptions};

mod common;

/// The product binary's allocator, so figures are the hub's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CLIENTS: usize = 64;
/// Senders in the capacity run: enough that the committer, not the clients' round trips,
/// bounds the rate (64 clients cap it at 64 ÷ latency).
const MANY_CLIENTS: usize = 256;
const OPEN_RATE: u64 = 2_000;
const OPEN_SECONDS: u64 = 5;

#[derive(Clone)]
struct Signed {
    id: String,
    timestamp: String,
    signature: String,
    body: bytes::Bytes,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

struct Run {
    rate: f64,
    p50: f64,
    p99: f64,
    errors: usize,
    /// How busy the whole machine was meanwhile, in percent.
    busy: f64,
    /// For the full pipeline: how long after the last answer the workers had routed every
    /// stored event (the queue of routing jobs empty), so that a rate the routing cannot
    /// sustain shows.
    routed_after: Option<Duration>,
}

fn send(client: &reqwest::Client, url: &str, r: &Signed) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &r.id)
        .header("webhook-timestamp", &r.timestamp)
        .header("webhook-signature", &r.signature)
        .body(r.body.clone())
}

/// One closed-loop sender: a keep-alive HTTP/1.1 connection of its own (as a provider's
/// webhook sender holds), driven through hyper's connection API. The load generator shares
/// the two cores with the server, so it skips a pooled client's per-request work (URL
/// parsing, pool checkout, header map building): reqwest spent about a quarter of the
/// machine's CPU in the capacity run, time taken from the server it measures.
struct Sender {
    connection: hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    host: axum::http::HeaderValue,
    path: axum::http::Uri,
}

impl Sender {
    async fn connect(addr: SocketAddr, path: &str) -> anyhow::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (connection, driver) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(driver);
        Ok(Self {
            connection,
            host: axum::http::HeaderValue::from_str(&addr.to_string())?,
            path: path.parse()?,
        })
    }

    /// Sends `r` and reads the whole answer; whether it was a success.
    async fn send(&mut self, r: &Signed) -> anyhow::Result<bool> {
        use axum::http::header::{CONTENT_TYPE, HOST};
        use http_body_util::BodyExt as _;
        let request = axum::http::Request::post(self.path.clone())
            .header(HOST, self.host.clone())
            .header(CONTENT_TYPE, "application/json")
            .header("webhook-id", r.id.as_str())
            .header("webhook-timestamp", r.timestamp.as_str())
            .header("webhook-signature", r.signature.as_str())
            .body(http_body_util::Full::new(r.body.clone()))?;
        self.connection.ready().await?;
        let response = self.connection.send_request(request).await?;
        let ok = response.status().is_success();
        response.into_body().collect().await?;
        Ok(ok)
    }
}

/// `clients` senders send the `requests` between them, each as soon as its previous one
/// was answered. A sender whose connection fails counts one error and stops (its
/// connection is gone); one that cannot connect fails the run.
async fn closed_loop(
    addr: SocketAddr,
    path: &str,
    requests: Arc<Vec<Signed>>,
    clients: usize,
) -> anyhow::Result<Run> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::with_capacity(clients);
    for _ in 0..clients {
        senders.push(Sender::connect(addr, path).await?);
    }
    let load = common::MachineLoad::start();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for mut sender in senders {
        let (requests, next) = (requests.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests.len() || start.elapsed() > Duration::from_secs(120) {
                    break;
                }
                let t = Instant::now();
                match sender.send(&requests[i]).await {
                    Ok(true) => latencies.push(t.elapsed()),
                    Ok(false) => errors += 1,
                    Err(error) => {
                        eprintln!("a sender's connection failed: {error}");
                        errors += 1;
                        break;
                    }
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((l, e)) = t.await {
            all.extend(l);
            errors += e;
        }
    }
    let took = start.elapsed();
    all.sort();
    Ok(Run {
        rate: all.len() as f64 / took.as_secs_f64(),
        p50: percentile(&all, 0.5),
        p99: percentile(&all, 0.99),
        errors,
        busy: load.busy_percent(),
        routed_after: None,
    })
}

/// Waits (at most 120 s) until no routing job is ready or running; how long that took.
async fn routing_drained(store: &Store) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let kinds = [wedsync_store::inbound::ROUTE_KIND.to_owned()];
    loop {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(120),
            "routing did not catch up in 120 s"
        );
        // The ready ones from the due index (cheap), then the running ones.
        let due = store
            .next_due(&kinds)
            .await?
            .is_some_and(|at| at <= chrono::Utc::now());
        if !due {
            let running: i64 = store
                .queue_depth()
                .await?
                .iter()
                .filter(|d| {
                    d.kind == kinds[0]
                        && matches!(
                            d.state,
                            wedsync_store::queue::JobState::Ready
                                | wedsync_store::queue::JobState::Running
                        )
                })
                .map(|d| d.count)
                .sum();
            if running == 0 {
                return Ok(start.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn open_loop(client: &reqwest::Client, url: &str, requests: Arc<Vec<Signed>>) -> Run {
    let n = (OPEN_RATE * OPEN_SECONDS) as usize;
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / OPEN_RATE));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let load = common::MachineLoad::start();
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n.min(requests.len()) {
        tick.tick().await;
        let (client, url, r) = (client.clone(), url.to_owned(), requests[i].clone());
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            match send(&client, &url, &r).send().await {
                Ok(resp) if resp.status().is_success() => {
                    let _ = resp.bytes().await;
                    Some(t.elapsed())
                }
                _ => None,
            }
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        match t.await {
            Ok(Some(l)) => all.push(l),
            _ => errors += 1,
        }
    }
    let took = start.elapsed();
    all.sort();
    Run {
        rate: all.len() as f64 / took.as_secs_f64(),
        p50: percentile(&all, 0.5),
        p99: percentile(&all, 0.99),
        errors,
        busy: load.busy_percent(),
        routed_after: None,
    }
}

async fn measure(
    backend: &'static str,
    options: StoreOptions,
    n: usize,
) -> anyhow::Result<Vec<(String, Run)>> {
    let store = Store::connect(&options, Arc::new(SystemClock))
        .await?
        .with_master_key(wedsync_store::secrets::MasterKey::generate());
    store.migrate().await?;
    let settings =
        wedsync_core::org::OrgSettings::parse("Bench", "Europe/London", "enterprise", "GB", "GBP")
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    let org = store.create_org(settings, &Actor::System).await?;
    let config = wedsync_store::sources::SourceConfig {
        generic: None,
        ip_allowlist: vec![],
        rate_per_minute: 1_000_000,
        tolerance_seconds: 300,
    };
    let new = wedsync_store::sources::NewSource::parse(
        "Bench",
        wedsync_core::source::Provider::StandardWebhooks,
        config,
        None,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (source, secret) = store.create_source(&org.id, new, &Actor::System).await?;

    let verify_secret = secret.clone();
    let bench = axum::Router::new()
        .route("/bench/plain", post(|| async { "ok" }))
        .route(
            "/bench/verify",
            post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let secret = verify_secret.clone();
                    async move {
                        let pairs: Vec<(String, String)> = headers
                            .iter()
                            .filter_map(|(k, v)| {
                                v.to_str()
                                    .ok()
                                    .map(|v| (k.as_str().to_owned(), v.to_owned()))
                            })
                            .collect();
                        let request = wedsync_inbound::InboundRequest {
                            method: "POST",
                            url: "/bench/verify",
                            headers: &pairs,
                            body: &body,
                        };
                        let secrets = [wedsync_inbound::Secret::from_str(&secret)];
                        match wedsync_inbound::verify(
                            &wedsync_inbound::Scheme::StandardWebhooks,
                            &request,
                            &secrets,
                            chrono::Utc::now(),
                            chrono::TimeDelta::minutes(5),
                        ) {
                            Ok(_) => axum::http::StatusCode::OK,
                            Err(_) => axum::http::StatusCode::UNAUTHORIZED,
                        }
                    }
                },
            ),
        );
    let state =
        wedsync_server::AppState::new(store.clone(), wedsync_server::HttpSettings::default());
    let app = wedsync_server::app(state).merge(bench);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    // Workers route what was stored, as on a real node.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let pool = wedsync_store::worker::WorkerPool::new(
        store.clone(),
        wedsync_store::worker::PoolConfig::default(),
    )
    .register(
        wedsync_store::inbound::ROUTE_KIND,
        wedsync_store::inbound::route_handler(store.clone()),
        64,
        Default::default(),
    )
    .spawn(stopped);

    let sign = |prefix: &str, count: usize| -> Arc<Vec<Signed>> {
        let t = chrono::Utc::now().timestamp();
        let key = wedsync_inbound::Secret::from_str(&secret);
        Arc::new(
            (0..count)
                .map(|i| {
                    let id = format!("msg_{prefix}_{i}");
                    let body = format!(
                        r#"{{"type":"booking.created","data":{{"booking_id":"b{i}","n":{i}}}}}"#
                    );
                    let signature =
                        wedsync_inbound::sign_standard_webhooks(&key, &id, t, body.as_bytes());
                    Signed {
                        id,
                        timestamp: t.to_string(),
                        signature,
                        body: body.into(),
                    }
                })
                .collect(),
        )
    };
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(MANY_CLIENTS)
        .build()?;
    let inbound = format!("http://{addr}{}", source.inbound_path);
    let mut out = Vec::new();
    out.push((
        "plain 200 (baseline)".to_owned(),
        closed_loop(addr, "/bench/plain", sign("p", n), CLIENTS).await?,
    ));
    out.push((
        "verify only".to_owned(),
        closed_loop(addr, "/bench/verify", sign("v", n), CLIENTS).await?,
    ));
    let mut full = closed_loop(addr, &source.inbound_path, sign("f", n), CLIENTS).await?;
    full.routed_after = Some(routing_drained(&store).await?);
    out.push(("full pipeline".to_owned(), full));
    let mut many = closed_loop(addr, &source.inbound_path, sign("m", n), MANY_CLIENTS).await?;
    many.routed_after = Some(routing_drained(&store).await?);
    out.push((format!("full pipeline, {MANY_CLIENTS} clients"), many));
    out.push((
        format!("full pipeline, {OPEN_RATE}/s offered"),
        open_loop(
            &client,
            &inbound,
            sign("o", (OPEN_RATE * OPEN_SECONDS) as usize),
        )
        .await,
    ));
    stop.send(true).ok();
    pool.await.ok();
    eprintln!("{backend}: done");
    Ok(out)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(20_000)
        .min(200_000);
    let mut results = Vec::new();
    let dir = tempfile::tempdir()?;
    if common::measures("sqlite") {
        let mut sqlite = StoreOptions::new(StoreOptions::sqlite_in(dir.path()));
        sqlite.max_connections = 8;
        results.push(("sqlite", measure("sqlite", sqlite, n).await?));
    }

    let base = std::env::var("WEDSYNC_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let name = format!("wedsync_bench_inbound_{}", std::process::id());
    match Database::connect(format!("{}/postgres", base.trim_end_matches('/')).as_str()).await {
        _ if !common::measures("postgres") => {}
        Ok(admin) => {
            admin
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await?;
            let mut pg = StoreOptions::new(format!("{}/{name}", base.trim_end_matches('/')));
            pg.max_connections = 16;
            let outcome = measure("postgres", pg, n).await;
            admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await?;
            results.push(("postgres", outcome?));
        }
        Err(error) => eprintln!("postgres skipped: {error}"),
    }

    println!("inbound benchmark over loopback, N = {n} per closed-loop run, {CLIENTS} clients");
    println!(
        "{:<9} {:<34} {:>10} {:>9} {:>9} {:>7} {:>10} {:>7} {:>12}",
        "backend", "mode", "req/s", "p50 ms", "p99 ms", "errors", "÷ plain", "CPU %", "routed +ms"
    );
    for (backend, runs) in &results {
        let plain = runs.first().map(|(_, r)| r.rate).unwrap_or(1.0);
        for (mode, r) in runs {
            println!(
                "{:<9} {:<34} {:>10.0} {:>9.2} {:>9.2} {:>7} {:>10.2} {:>7.0} {:>12}",
                backend,
                mode,
                r.rate,
                r.p50,
                r.p99,
                r.errors,
                r.rate / plain,
                r.busy,
                r.routed_after
                    .map_or_else(|| "—".to_owned(), |d| d.as_millis().to_string())
            );
        }
    }
    Ok(())
}

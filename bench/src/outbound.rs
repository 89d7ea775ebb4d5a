//! Outbound webhook delivery to a local receiver, against a raw baseline, on SQLite and
//! PostgreSQL, in one run.
//!
//! The receiver is an axum server on 127.0.0.1 answering 204 at once and noting when each
//! `webhook-id` arrived. **Baseline**: the same sender (`wedsync_delivery::sender::Sender`:
//! the reqwest client behind the SSRF guard, signing each request) posts N messages from
//! `C` concurrent tasks, with no queue and no log. **Hub**: N messages are created (queued,
//! not timed), then a worker pool delivers them: claim, load, rate/breaker checks, sign, send,
//! and record each attempt durably with the delivery's new state; the rate is N over the time
//! from starting the pool to the last delivery recorded. **Latency**: with the pool running,
//! messages are created at 500 a second for 5 seconds and the time from each message's
//! commit to its arrival at the receiver is measured (p50, p99).
//!
//! Bounded in count and time; loopback only.
//! Usage: `cargo run --release -p wedsync-bench --bin outbound -- [N]` (default 5000).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Database};
use wedsync_core::clock::SystemClock;
use wedsync_delivery::sender::Sender;
use wedsync_delivery::ssrf::{ClientOptions, SsrfPolicy};
use wedsync_store::webhooks::{DELIVER_KIND, DeliveryWork, EndpointInput, MessageInput};
use wedsync_store::{Actor, Store, StoreOptions};

// Only `measures` is used here.
#[allow(dead_code)]
mod common;

/// The product binary's allocator, so figures are the hub's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CLIENTS: usize = 64;
/// Delivery jobs in flight in the hub: most wait for their attempt's group commit, while at
/// most `CLIENTS` requests are in flight to the endpoint (its concurrency limit).
const WORKERS: u32 = 256;
const OFFERED_PER_SECOND: u64 = 500;
const OFFERED_SECONDS: u64 = 5;

type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

async fn receiver() -> anyhow::Result<(std::net::SocketAddr, Arrivals)> {
    let arrivals: Arrivals = Arc::default();
    let a = arrivals.clone();
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let a = a.clone();
        async move {
            if let Some(id) = headers.get("webhook-id").and_then(|v| v.to_str().ok()) {
                a.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .entry(id.to_owned())
                    .or_insert_with(Instant::now);
            }
            axum::http::StatusCode::NO_CONTENT
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((addr, arrivals))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

fn sender() -> anyhow::Result<Sender> {
    Ok(Sender::new(
        SsrfPolicy {
            allow: vec!["127.0.0.1/32".parse()?],
        },
        ClientOptions {
            pool_idle_per_host: CLIENTS,
            ..Default::default()
        },
    )?)
}

/// The raw baseline: the sender alone, `CLIENTS` at a time.
async fn baseline(url: &str, n: usize) -> anyhow::Result<f64> {
    let sender = Arc::new(sender()?);
    let url = url.to_owned();
    let work = move |i: usize| DeliveryWork {
        delivery_id: wedsync_core::id::DeliveryId::new_at(chrono::Utc::now()),
        org_id: wedsync_core::id::OrgId::new_at(chrono::Utc::now()),
        message_id: format!("msg_baseline_{i}"),
        endpoint_id: "ep_bench".into(),
        status: "pending".into(),
        generation: 1,
        attempts: 0,
        round_attempts: 0,
        round_started_at: chrono::Utc::now(),
        payload: format!(
            r#"{{"id":"msg_baseline_{i}","type":"invoice.sent","timestamp":"2026-11-21T12:00:00.000Z","data":{{"n":{i}}}}}"#
        ),
        priority: 0,
        url: url.clone(),
        enabled: true,
        timeout_ms: 15_000,
        rate_limit_per_second: None,
        keys: vec![vec![7u8; 32]],
        headers: Default::default(),
        failing_since: None,
        last_success_at: None,
        breaker: None,
    };
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (sender, next) = (sender.clone(), next.clone());
        let work = work.clone();
        tasks.push(tokio::spawn(async move {
            let mut failed = 0;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return failed;
                }
                if !sender
                    .send(&work(i), chrono::Utc::now())
                    .await
                    .record
                    .success
                {
                    failed += 1;
                }
            }
        }));
    }
    let mut failed = 0;
    for t in tasks {
        failed += t.await?;
    }
    anyhow::ensure!(failed == 0, "{failed} baseline requests failed");
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

struct HubRun {
    rate: f64,
    p50: f64,
    p99: f64,
    offered: usize,
}

async fn delivered(
    store: &Store,
    org: &wedsync_core::id::OrgId,
    ep: &wedsync_core::id::EndpointId,
) -> anyhow::Result<i64> {
    Ok(store
        .endpoint_stats(org, ep, chrono::Utc::now())
        .await?
        .succeeded)
}

/// Waits until `target` deliveries of `ep` are recorded as succeeded. Watches the
/// receiver's arrivals (in memory) until `arrived` have come, and only then asks the store
/// (every attempt is recorded after its request arrived), so that waiting costs the
/// database under measurement next to nothing: a stats query every 20 ms cost it a few
/// percent of a core.
async fn wait_delivered(
    store: &Store,
    org: &wedsync_core::id::OrgId,
    ep: &wedsync_core::id::EndpointId,
    arrivals: &Arrivals,
    (arrived, target): (usize, i64),
    deadline: Instant,
) -> anyhow::Result<()> {
    let count = || {
        arrivals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    };
    while count() < arrived {
        anyhow::ensure!(
            Instant::now() < deadline,
            "deliveries did not arrive in time"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    while delivered(store, org, ep).await? < target {
        anyhow::ensure!(
            Instant::now() < deadline,
            "deliveries were not recorded in time"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

async fn hub(
    options: StoreOptions,
    url: &str,
    arrivals: Arrivals,
    n: usize,
) -> anyhow::Result<HubRun> {
    let store = Store::connect(&options, Arc::new(SystemClock))
        .await?
        .with_master_key(wedsync_store::secrets::MasterKey::generate());
    store.migrate().await?;
    let settings =
        wedsync_core::org::OrgSettings::parse("Bench", "Europe/London", "enterprise", "GB", "GBP")
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    let org = store.create_org(settings, &Actor::System).await?;
    let (ep, _) = store
        .create_endpoint(
            &org.id,
            EndpointInput {
                url: url.to_owned(),
                ..Default::default()
            },
            &Actor::System,
        )
        .await?;
    let message = |i: usize| MessageInput {
        event_type: "invoice.sent".into(),
        data: serde_json::json!({ "n": i, "couple": "Ana & Ben" }),
    };
    for i in 0..n {
        store
            .create_message(
                &org.id,
                message(i),
                None,
                chrono::TimeDelta::hours(24),
                None,
            )
            .await?;
    }
    let policy = wedsync_delivery::worker::DeliveryPolicy {
        per_endpoint_concurrency: CLIENTS,
        ..Default::default()
    };
    let pool = wedsync_store::worker::WorkerPool::new(store.clone(), Default::default()).register(
        DELIVER_KIND,
        wedsync_delivery::worker::deliver_handler(store.clone(), sender()?, policy),
        WORKERS,
        Default::default(),
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Arrivals are kept across backends (message ids are unique): count from here.
    let arrived_before = arrivals
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .len();
    let started = Instant::now();
    let handle = pool.spawn(stop_rx);
    let deadline = started + Duration::from_secs(600);
    wait_delivered(
        &store,
        &org.id,
        &ep.id,
        &arrivals,
        (arrived_before + n, n as i64),
        deadline,
    )
    .await?;
    let rate = n as f64 / started.elapsed().as_secs_f64();

    // Latency at a fixed offered load, with the pool running.
    let offered = (OFFERED_PER_SECOND * OFFERED_SECONDS) as usize;
    let mut created: Vec<(String, Instant)> = Vec::with_capacity(offered);
    let period = Duration::from_secs_f64(1.0 / OFFERED_PER_SECOND as f64);
    let t0 = Instant::now();
    for i in 0..offered {
        let due = t0 + period * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let (m, _) = store
            .create_message(
                &org.id,
                message(i),
                None,
                chrono::TimeDelta::hours(24),
                None,
            )
            .await?;
        created.push((m.id.to_string(), Instant::now()));
    }
    wait_delivered(
        &store,
        &org.id,
        &ep.id,
        &arrivals,
        (arrived_before + n + offered, (n + offered) as i64),
        deadline,
    )
    .await?;
    let _ = stop_tx.send(true);
    handle.await?;
    let arrivals = arrivals
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let mut latencies: Vec<Duration> = created
        .iter()
        .filter_map(|(id, at)| {
            arrivals
                .get(id)
                .map(|got| got.saturating_duration_since(*at))
        })
        .collect();
    anyhow::ensure!(
        latencies.len() == offered,
        "some offered messages never arrived"
    );
    latencies.sort();
    store.close().await?;
    Ok(HubRun {
        rate,
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        offered,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(5_000)
        .min(100_000);
    let (addr, arrivals) = receiver().await?;
    let url = format!("http://{addr}/hooks");
    let mut rows = Vec::new();

    let base = baseline(&url, n).await?;
    let dir = tempfile::tempdir()?;
    if common::measures("sqlite") {
        let mut sqlite = StoreOptions::new(StoreOptions::sqlite_in(dir.path()));
        sqlite.max_connections = 8;
        rows.push(("sqlite", hub(sqlite, &url, arrivals.clone(), n).await?));
    }

    let pg_base = std::env::var("WEDSYNC_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let name = format!("wedsync_bench_outbound_{}", std::process::id());
    match Database::connect(format!("{}/postgres", pg_base.trim_end_matches('/')).as_str()).await {
        _ if !common::measures("postgres") => {}
        Ok(admin) => {
            admin
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await?;
            let mut pg = StoreOptions::new(format!("{}/{name}", pg_base.trim_end_matches('/')));
            pg.max_connections = 16;
            let outcome = hub(pg, &url, arrivals.clone(), n).await;
            admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await?;
            rows.push(("postgres", outcome?));
        }
        Err(error) => eprintln!("postgres skipped: {error}"),
    }

    println!(
        "outbound benchmark over loopback, N = {n} messages, {CLIENTS} requests in flight, {WORKERS} hub workers"
    );
    println!("raw baseline (sender alone, no queue, no log): {base:.0} deliveries/s");
    println!(
        "{:<9} {:>14} {:>10} {:>22} {:>22}",
        "backend", "delivered/s", "÷ raw", "p50 ms @500/s offered", "p99 ms @500/s offered"
    );
    for (backend, r) in &rows {
        println!(
            "{:<9} {:>14.0} {:>10.2} {:>22.2} {:>22.2}",
            backend,
            r.rate,
            r.rate / base,
            r.p50,
            r.p99
        );
        let _ = r.offered;
    }
    Ok(())
}

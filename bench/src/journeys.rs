//! Journey engine figures, on SQLite and PostgreSQL, in one run:
//! - baseline: the same number of no-op jobs through the same worker pool (the queue's own
//!   rate, with the same durability);
//! - steps/s: instances of `trigger → decision → end` (three steps each: the real step
//!   handler, reading the instance and its version, recording each step and enqueuing the
//!   next in one transaction), from the pool's start to the last instance completed;
//! - storage: bytes per waiting instance (its row, its history rows and its timer job),
//!   from the database's size before and after W waiting instances: in the steady state of
//!   an instance waiting for months (finished jobs pruned by the queue's retention, the
//!   database compacted), and as first written;
//! - instances are started in bulk (500 per transaction, as scheduled triggers start them),
//!   and the step phase's clock includes starting them;
//! - timer lag: with those W instances waiting, M more instances wait 5 seconds; the lag is
//!   when each wait's step actually ran minus when it was due (p50, p99, max).
//!
//! Usage: `cargo run --release -p wedsync-bench --bin journeys -- [N] [W]` (defaults 2000
//! instances and 100000 waiting). PostgreSQL: `WEDSYNC_BENCH_DATABASE_URL`, else the local
//! server, in a fresh database dropped afterwards. Bounded: N ≤ 20000, W ≤ 200000, every
//! phase has a time limit; all traffic is local.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use sea_orm::{ConnectionTrait, Database};
use serde_json::json;
use tokio::sync::watch;
use wedsync_core::clock::SystemClock;
use wedsync_core::retry::RetryPolicy;
use wedsync_store::queue::NewJob;
use wedsync_store::worker::{PoolConfig, WorkerPool};
use wedsync_store::{Actor, Backend, Store, StoreOptions};

/// The product binary's allocator, so figures are the hub's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PHASE_LIMIT: Duration = Duration::from_secs(600);
const PROBES: usize = 500;
const PROBE_WAIT_SECONDS: u64 = 5;

struct Figures {
    backend: &'static str,
    baseline: f64,
    steps: f64,
    bytes_written: f64,
    bytes_per_waiting: f64,
    lag_p50_ms: f64,
    lag_p99_ms: f64,
    lag_max_ms: f64,
}

fn rate(n: usize, took: Duration) -> f64 {
    n as f64 / took.as_secs_f64().max(1e-9)
}

fn node(id: &str, kind: &str, data: serde_json::Value) -> serde_json::Value {
    json!({ "id": id, "type": kind, "position": { "x": 0, "y": 0 }, "data": data })
}

fn edge(id: &str, from: &str, to: &str, handle: Option<&str>) -> serde_json::Value {
    json!({ "id": id, "source": from, "target": to, "sourceHandle": handle })
}

fn instant_journey() -> serde_json::Value {
    json!({
        "nodes": [
            node("t", "trigger", json!({ "trigger": { "kind": "manual" } })),
            node("d", "decision", json!({ "conditions": [{ "label": "near", "when": "couple.wedding_date < '2030-01-01'" }], "default_label": "far" })),
            node("e", "end", json!({})),
        ],
        "edges": [edge("a", "t", "d", None), edge("b", "d", "e", Some("near")), edge("c", "d", "e", Some("far"))],
        "viewport": { "x": 0, "y": 0, "zoom": 1 }
    })
}

fn waiting_journey(seconds: u64) -> serde_json::Value {
    json!({
        "nodes": [
            node("t", "trigger", json!({ "trigger": { "kind": "manual" } })),
            node("w", "wait", json!({ "mode": "duration", "seconds": seconds })),
            node("e", "end", json!({})),
        ],
        "edges": [edge("a", "t", "w", None), edge("b", "w", "e", None)],
        "viewport": { "x": 0, "y": 0, "zoom": 1 }
    })
}

async fn publish(
    store: &Store,
    org: &wedsync_core::id::OrgId,
    doc: serde_json::Value,
) -> anyhow::Result<wedsync_core::id::JourneyId> {
    let parsed =
        wedsync_journeys::JourneyDocument::parse(&doc).map_err(|e| anyhow::anyhow!("{e}"))?;
    wedsync_journeys::validate(&parsed, wedsync_journeys::Mode::Publish)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let actor = Actor::Cli("bench".into());
    let j = store
        .create_journey(org, "bench", "", &parsed.to_json(), &actor)
        .await?;
    store
        .publish_journey(org, &j.id, j.revision, &actor)
        .await?;
    Ok(j.id)
}

/// Starts `n` instances of `journey` (version 1) for `couple`, keyed `{prefix}:{i}`, 500 per
/// transaction through the store's bulk start.
async fn start_many(
    store: &Store,
    org: &wedsync_core::id::OrgId,
    journey: &wedsync_core::id::JourneyId,
    couple: &wedsync_core::id::CoupleId,
    prefix: &str,
    n: usize,
) -> anyhow::Result<()> {
    let starts: Vec<wedsync_store::journeys::NewStart> = (0..n)
        .map(|i| wedsync_store::journeys::NewStart {
            couple: *couple,
            booking: None,
            trigger_key: format!("{prefix}:{i}"),
            status: "running".into(),
            due_at: None,
            wait: None,
            context: json!({}),
            detail: String::new(),
            priority: 0,
        })
        .collect();
    for chunk in starts.chunks(500) {
        store.start_instances(org, journey, 1, "t", chunk).await?;
    }
    Ok(())
}

async fn count(store: &Store, sql: &str) -> anyhow::Result<i64> {
    let row = store
        .connection()
        .query_one_raw(sea_orm::Statement::from_string(
            store.backend(),
            sql.to_owned(),
        ))
        .await?
        .context("a count")?;
    Ok(row.try_get_by_index::<i64>(0)?)
}

async fn database_bytes(store: &Store) -> anyhow::Result<i64> {
    Ok(match store.backend() {
        Backend::Sqlite => {
            count(
                store,
                "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
            )
            .await?
        }
        _ => count(store, "SELECT pg_database_size(current_database())::bigint").await?,
    })
}

/// The database's size once the queue's retention has pruned finished jobs and the
/// database is compacted (`VACUUM`; PostgreSQL `VACUUM FULL`).
async fn steady_bytes(store: &Store) -> anyhow::Result<i64> {
    let later = chrono::Utc::now() + chrono::TimeDelta::seconds(1);
    store.prune_jobs(later, later).await?;
    let compact = match store.backend() {
        Backend::Postgres => "VACUUM FULL",
        _ => "VACUUM",
    };
    store.connection().execute_unprepared(compact).await?;
    database_bytes(store).await
}

async fn wait_until(store: &Store, sql: &str, want: i64, what: &str) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        if count(store, sql).await? >= want {
            return Ok(());
        }
        anyhow::ensure!(
            start.elapsed() < PHASE_LIMIT,
            "{what} did not finish in {PHASE_LIMIT:?}"
        );
        // Polled gently: a count over the instances is work the engine competes with.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn measure(
    backend: &'static str,
    options: StoreOptions,
    n: usize,
    w: usize,
) -> anyhow::Result<Figures> {
    let store = Store::connect(&options, Arc::new(SystemClock))
        .await?
        .with_master_key(wedsync_store::secrets::MasterKey::generate());
    store.migrate().await?;
    let actor = Actor::Cli("bench".into());
    let org = store
        .create_org(
            wedsync_core::org::OrgSettings::parse(
                "Bench",
                "Europe/London",
                "enterprise",
                "GB",
                "GBP",
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?,
            &actor,
        )
        .await?
        .id;
    let couple = store
        .create_couple(
            &org,
            serde_json::from_value::<wedsync_core::couple::CoupleInput>(json!({
                "partners": [{ "name": "Alex Morgan", "email": "alex@example.com" }, { "name": "Sam Taylor", "email": "sam@example.com" }],
                "wedding_date": "2029-06-16", "time_zone": "Europe/London"
            }))?
            .validate(wedsync_core::org::TimeZone::parse("Europe/London").map_err(|e| anyhow::anyhow!("{e}"))?)
            .map_err(|e| anyhow::anyhow!("{e}"))?,
            &actor,
        )
        .await?
        .id;
    let instant = publish(&store, &org, instant_journey()).await?;
    let waiting = publish(&store, &org, waiting_journey(365 * 86_400)).await?;
    let probe = publish(&store, &org, waiting_journey(PROBE_WAIT_SECONDS)).await?;

    let config = PoolConfig {
        worker_id: format!("bench-{backend}"),
        batch_size: 256,
        ..PoolConfig::default()
    };
    let noop_done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = noop_done.clone();
    let pool = WorkerPool::new(store.clone(), config)
        .register(
            "bench.noop",
            move |_job: wedsync_store::queue::Job| {
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                async { Ok(()) }
            },
            256,
            RetryPolicy::default(),
        )
        .register(
            wedsync_store::journeys::STEP_KIND,
            wedsync_journeys::engine::step_handler(store.clone()),
            64,
            RetryPolicy::default(),
        );
    let (stop, stopped) = watch::channel(false);
    let handle = pool.spawn(stopped);

    // Baseline: 3N no-op jobs through the same pool.
    let start = Instant::now();
    for chunk in (0..3 * n).collect::<Vec<_>>().chunks(500) {
        store
            .enqueue_many(
                chunk
                    .iter()
                    .map(|i| NewJob::new("bench.noop", json!({ "n": i })))
                    .collect(),
            )
            .await?;
    }
    while noop_done.load(std::sync::atomic::Ordering::Relaxed) < 3 * n {
        anyhow::ensure!(start.elapsed() < PHASE_LIMIT, "baseline did not finish");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let baseline = rate(3 * n, start.elapsed());

    // Steps: N instances, three steps each, started together (in bulk, as a scheduled
    // trigger starts them; the clock includes starting them).
    let start = Instant::now();
    start_many(&store, &org, &instant, &couple, "bench", n).await?;
    wait_until(
        &store,
        &format!("SELECT COUNT(*) FROM journey_instances WHERE journey_id = '{instant}' AND status = 'completed'"),
        n as i64,
        "the step phase",
    )
    .await?;
    let steps = rate(3 * n, start.elapsed());

    // W waiting instances (a year's wait each), started through the engine, then measured
    // twice: as written, and in the steady state of an instance waiting for months (the
    // queue has pruned the finished jobs of its earlier steps, and the database has reused
    // the space of superseded row versions: measured after compaction).
    let before = steady_bytes(&store).await?;
    start_many(&store, &org, &waiting, &couple, "wait", w).await?;
    wait_until(
        &store,
        &format!("SELECT COUNT(*) FROM journey_instances WHERE journey_id = '{waiting}' AND status = 'waiting'"),
        w as i64,
        "starting the waiting instances",
    )
    .await?;
    let written = database_bytes(&store).await?;
    let bytes_written = (written - before) as f64 / w.max(1) as f64;
    let after = steady_bytes(&store).await?;
    let bytes_per_waiting = (after - before) as f64 / w.max(1) as f64;

    // Timer lag: PROBES instances wait 5 seconds among the W waiting ones.
    start_many(&store, &org, &probe, &couple, "probe", PROBES).await?;
    wait_until(
        &store,
        &format!("SELECT COUNT(*) FROM journey_instances WHERE journey_id = '{probe}' AND status = 'completed'"),
        PROBES as i64,
        "the timer probes",
    )
    .await?;
    let rows = store
        .connection()
        .query_all_raw(sea_orm::Statement::from_string(
            store.backend(),
            format!(
                "SELECT w.at AS waited, d.at AS ran FROM journey_steps w JOIN journey_steps d \
                 ON d.instance_id = w.instance_id AND d.node_id = 'w' AND d.outcome = 'done' \
                 JOIN journey_instances i ON i.id = w.instance_id \
                 WHERE i.journey_id = '{probe}' AND w.node_id = 'w' AND w.outcome = 'waiting'"
            ),
        ))
        .await?;
    let mut lags: Vec<f64> = rows
        .iter()
        .filter_map(|r| {
            let waited: i64 = r.try_get("", "waited").ok()?;
            let ran: i64 = r.try_get("", "ran").ok()?;
            let due = waited + (PROBE_WAIT_SECONDS as i64) * 1_000_000;
            Some(((ran - due) as f64 / 1000.0).max(0.0))
        })
        .collect();
    lags.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        lags.get(((lags.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };

    stop.send(true).ok();
    handle.await.ok();
    store.close().await?;
    Ok(Figures {
        backend,
        baseline,
        steps,
        bytes_written,
        bytes_per_waiting,
        lag_p50_ms: pick(0.5),
        lag_p99_ms: pick(0.99),
        lag_max_ms: lags.last().copied().unwrap_or(f64::NAN),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()
        .context("N must be a number")?
        .unwrap_or(2000)
        .min(20_000);
    let w: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()
        .context("W must be a number")?
        .unwrap_or(100_000)
        .min(200_000);
    let mut results = Vec::new();
    let dir = tempfile::tempdir()?;
    let mut sqlite = StoreOptions::new(StoreOptions::sqlite_in(dir.path()));
    sqlite.max_connections = 8;
    results.push(measure("sqlite", sqlite, n, w).await?);
    // Printed as soon as known, so a long PostgreSQL half cannot lose it.
    eprintln!("sqlite done: {:.0} steps/s", results[0].steps);

    let base = std::env::var("WEDSYNC_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let admin_url = format!("{}/postgres", base.trim_end_matches('/'));
    let name = format!("wedsync_bench_{}", std::process::id());
    match Database::connect(admin_url.as_str()).await {
        Ok(admin) => {
            admin
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await?;
            let mut pg = StoreOptions::new(format!("{}/{name}", base.trim_end_matches('/')));
            pg.max_connections = 8;
            let outcome = measure("postgres", pg, n, w).await;
            admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await?;
            results.push(outcome?);
        }
        Err(error) => eprintln!("postgres skipped: cannot reach {admin_url}: {error}"),
    }

    println!(
        "journey benchmark: {n} instances x 3 steps; {w} waiting instances; {PROBES} timer probes of {PROBE_WAIT_SECONDS} s"
    );
    println!(
        "{:<9} {:>12} {:>10} {:>7} {:>14} {:>13} {:>9} {:>9} {:>9}",
        "backend",
        "noop jobs/s",
        "steps/s",
        "ratio",
        "B/wait steady",
        "B/wait write",
        "lag p50",
        "lag p99",
        "lag max"
    );
    for f in &results {
        println!(
            "{:<9} {:>12.0} {:>10.0} {:>6.2}x {:>14.0} {:>13.0} {:>7.0}ms {:>7.0}ms {:>7.0}ms",
            f.backend,
            f.baseline,
            f.steps,
            f.steps / f.baseline,
            f.bytes_per_waiting,
            f.bytes_written,
            f.lag_p50_ms,
            f.lag_p99_ms,
            f.lag_max_ms
        );
    }
    Ok(())
}

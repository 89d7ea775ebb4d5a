//! Queue throughput against a raw baseline, on SQLite and PostgreSQL, in one run.
//!
//! For each backend it measures, on the same database with the same durability settings:
//! - baseline: plain inserts of N rows into a bare table, in transactions of B rows;
//! - enqueue: N jobs through `enqueue_many`, in transactions of B jobs;
//! - drain: a worker pool (batched claims, batched completions) running the N jobs with a
//!   no-op handler, from the first claim to the last completion;
//! - end to end (sequential): enqueue + drain;
//! - pipeline: a producer enqueues N more jobs in batches of B while the pool runs, timed
//!   from the first enqueue to the last completion recorded (how a live hub works);
//! - idle: CPU used by a node with an idle worker pool over a few seconds.
//!
//! Usage: `cargo run --release -p wedsync-bench --bin queue -- [N]` (default 20000). The
//! PostgreSQL half uses `WEDSYNC_BENCH_DATABASE_URL`, else the local server at
//! postgres://postgres@127.0.0.1:5432, where it makes (and drops) a fresh database. Traffic
//! goes only to 127.0.0.1. Bounded: N is capped at 200000 and every phase has a time limit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use sea_orm::{ConnectionTrait, Database, TransactionTrait};
use tokio::sync::watch;
use wedsync_core::clock::SystemClock;
use wedsync_core::retry::RetryPolicy;
use wedsync_store::queue::{JobState, NewJob};
use wedsync_store::worker::{PoolConfig, WorkerPool};
use wedsync_store::{Store, StoreOptions};

/// The product binary's allocator, so figures are the hub's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: usize = 500;
const PHASE_LIMIT: Duration = Duration::from_secs(300);

struct Figures {
    backend: &'static str,
    baseline: f64,
    enqueue: f64,
    drain: f64,
    end_to_end: f64,
    pipeline: f64,
    idle_cpu_percent: f64,
}

fn rate(n: usize, took: Duration) -> f64 {
    n as f64 / took.as_secs_f64().max(1e-9)
}

/// CPU seconds this process has used (user + system), from /proc.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the ')'.
    (ticks(11) + ticks(12)) / 100.0
}

async fn measure(
    backend: &'static str,
    options: StoreOptions,
    n: usize,
) -> anyhow::Result<Figures> {
    let store = Store::connect(&options, Arc::new(SystemClock)).await?;
    store.migrate().await?;
    let db = store.connection();

    // Baseline: the same number of rows, same batch size, same connection settings.
    db.execute_unprepared(
        "CREATE TABLE bench_plain (id TEXT PRIMARY KEY, payload TEXT NOT NULL, n BIGINT NOT NULL)",
    )
    .await?;
    let start = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(BATCH) {
        let tx = db.begin().await?;
        for i in chunk {
            tx.execute_raw(sea_orm::Statement::from_sql_and_values(
                store.backend(),
                "INSERT INTO bench_plain (id, payload, n) VALUES ($1, $2, $3)",
                vec![
                    format!("row_{i:08}").into(),
                    format!("{{\"n\":{i}}}").into(),
                    (*i as i64).into(),
                ],
            ))
            .await?;
        }
        tx.commit().await?;
    }
    let baseline = rate(n, start.elapsed());

    // Enqueue.
    let start = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(BATCH) {
        store
            .enqueue_many(
                chunk
                    .iter()
                    .map(|i| NewJob::new("bench.noop", serde_json::json!({ "n": i })))
                    .collect(),
            )
            .await?;
    }
    let enqueue_took = start.elapsed();

    // Drain with batched claims.
    let config = PoolConfig {
        worker_id: format!("bench-{backend}"),
        batch_size: BATCH as u32,
        ..PoolConfig::default()
    };
    // The handler counts what it ran, so the measuring loop need not scan the jobs table
    // (which would compete with the workers for the same two cores).
    let handled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = handled.clone();
    let pool = WorkerPool::new(store.clone(), config).register(
        "bench.noop",
        move |_job: wedsync_store::queue::Job| {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async { Ok(()) }
        },
        BATCH as u32 * 2,
        RetryPolicy::default(),
    );
    let (stop, stopped) = watch::channel(false);
    let start = Instant::now();
    let handle = pool.spawn(stopped);
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    while handled.load(std::sync::atomic::Ordering::Relaxed) < n {
        anyhow::ensure!(
            start.elapsed() < PHASE_LIMIT,
            "drain did not finish in {PHASE_LIMIT:?}"
        );
        tick.tick().await;
    }
    // Then until every completion is recorded in the database.
    loop {
        let depth = store.queue_depth().await?;
        let done: i64 = depth
            .iter()
            .filter(|d| d.state == JobState::Succeeded)
            .map(|d| d.count)
            .sum();
        if done as usize >= n {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < PHASE_LIMIT,
            "drain did not finish in {PHASE_LIMIT:?}"
        );
        tick.tick().await;
    }
    let drain_took = start.elapsed();

    // Pipeline: enqueue while the (running) pool drains.
    let start = Instant::now();
    let producer = {
        let store = store.clone();
        tokio::spawn(async move {
            for chunk in (n..2 * n).collect::<Vec<_>>().chunks(BATCH) {
                store
                    .enqueue_many(
                        chunk
                            .iter()
                            .map(|i| NewJob::new("bench.noop", serde_json::json!({ "n": i })))
                            .collect(),
                    )
                    .await?;
            }
            anyhow::Ok(())
        })
    };
    while handled.load(std::sync::atomic::Ordering::Relaxed) < 2 * n {
        anyhow::ensure!(
            start.elapsed() < PHASE_LIMIT,
            "pipeline did not finish in {PHASE_LIMIT:?}"
        );
        tick.tick().await;
    }
    producer.await??;
    loop {
        let depth = store.queue_depth().await?;
        let done: i64 = depth
            .iter()
            .filter(|d| d.state == JobState::Succeeded)
            .map(|d| d.count)
            .sum();
        if done as usize >= 2 * n {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < PHASE_LIMIT,
            "pipeline did not finish in {PHASE_LIMIT:?}"
        );
        tick.tick().await;
    }
    let pipeline_took = start.elapsed();

    // Idle: the pool keeps running with nothing to do.
    let idle_for = Duration::from_secs(6);
    let cpu_before = cpu_seconds();
    let wall = Instant::now();
    tokio::time::sleep(idle_for).await;
    let idle_cpu_percent = 100.0 * (cpu_seconds() - cpu_before) / wall.elapsed().as_secs_f64();

    stop.send(true).ok();
    handle.await.ok();
    store.close().await?;
    Ok(Figures {
        backend,
        baseline,
        enqueue: rate(n, enqueue_took),
        drain: rate(n, drain_took),
        end_to_end: rate(n, enqueue_took + drain_took),
        pipeline: rate(n, pipeline_took),
        idle_cpu_percent,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()
        .context("N must be a number")?
        .unwrap_or(20_000)
        .min(200_000);
    let mut results = Vec::new();

    let dir = tempfile::tempdir()?;
    let mut sqlite = StoreOptions::new(StoreOptions::sqlite_in(dir.path()));
    sqlite.max_connections = 8;
    results.push(measure("sqlite", sqlite, n).await?);

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
            let outcome = measure("postgres", pg, n).await;
            admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await?;
            results.push(outcome?);
        }
        Err(error) => eprintln!("postgres skipped: cannot reach {admin_url}: {error}"),
    }

    println!("queue benchmark, N = {n} jobs, batches of {BATCH}");
    println!(
        "{:<9} {:>15} {:>10} {:>10} {:>12} {:>11} {:>14} {:>9}",
        "backend",
        "baseline rows/s",
        "enqueue/s",
        "drain/s",
        "sequential/s",
        "pipeline/s",
        "pipeline/base",
        "idle CPU"
    );
    for f in &results {
        println!(
            "{:<9} {:>15.0} {:>10.0} {:>10.0} {:>12.0} {:>11.0} {:>14.2} {:>8.2}%",
            f.backend,
            f.baseline,
            f.enqueue,
            f.drain,
            f.end_to_end,
            f.pipeline,
            f.pipeline / f.baseline,
            f.idle_cpu_percent
        );
    }
    Ok(())
}

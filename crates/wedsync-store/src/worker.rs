//! Worker pools: run queued jobs with leases, heartbeats, retries and circuit breakers.
//!
//! A pool claims due jobs of the kinds it has handlers for, in batches, never holding more of
//! a kind than that kind's concurrency limit on this node. Each job runs as its own task; a
//! heartbeat renews the pool's leases, and a job whose lease was lost (the reaper gave it to
//! another worker) is aborted here so it does not run twice at once. Successes are written
//! back in one statement per batch; a failure is retried per the kind's retry policy or
//! dead-lettered; a deferral (open breaker) puts the job back without counting the attempt.
//!
//! Idle pools wait for a wake-up (an enqueue on this node; `NOTIFY` from any node on
//! PostgreSQL), the next due `run_at`, or the idle poll interval, whichever comes first. A
//! kind whose last claim came back short is not claimed again until one of those happens,
//! so a busy pool does not spend a write on an empty claim after every finished job.
//!
//! A writer of this process can also hand a job straight to the pool that runs its kind,
//! inserted already claimed in the pool's name ([`LocalTakers`]); the inbound gateway does
//! so with its routing jobs. Handlers can add a statement to their job's completion
//! ([`JobHandler::on_success`]), written in the same hand-off.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::DbBackend;
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use wedsync_core::breaker::{Admission, BreakerPolicy};
use wedsync_core::id::OrgId;
use wedsync_core::retry::{Decision, Failure, RetryPolicy};

use crate::queue::{AfterFailure, Job};
use crate::{Store, StoreResult};

/// Why an attempt did not succeed.
#[derive(Debug, Clone, PartialEq)]
pub enum JobError {
    /// Worth retrying (timeouts, 5xx, 429…), optionally not before `retry_after`.
    Transient {
        /// What happened.
        error: String,
        /// How long the other side asked us to wait.
        retry_after: Option<TimeDelta>,
    },
    /// Retrying cannot help (4xx other than 408/425/429, bad payload…): dead at once.
    Permanent(String),
    /// Not attempted (its target's breaker is open): wait until `until`, attempt not counted.
    Deferred {
        /// When to try again.
        until: DateTime<Utc>,
        /// Why.
        reason: String,
    },
}

impl JobError {
    /// A transient failure without a server-given delay.
    pub fn transient(error: impl Into<String>) -> Self {
        JobError::Transient {
            error: error.into(),
            retry_after: None,
        }
    }
}

/// The future a handler returns.
pub type JobFuture = Pin<Box<dyn Future<Output = Result<(), JobError>> + Send + 'static>>;

/// Runs jobs of one kind. Must be idempotent: a job can run more than once (at-least-once),
/// e.g. when a worker dies after the work but before recording it.
pub trait JobHandler: Send + Sync + 'static {
    /// Runs one attempt.
    fn run(&self, job: Job) -> JobFuture;

    /// Called by the pool with each batch of jobs it claims, just before their attempts start,
    /// so that a handler can fetch what they all need in one query instead of one each. It
    /// must not block; the default does nothing. Attempts must still work without it (a job
    /// run directly, or whose batch read failed).
    fn claimed(&self, _jobs: &[Job]) {}

    /// Statements (SQL with `$N` placeholders, and values) that the pool writes together
    /// with the success of `jobs` (this kind's successes in one batch of recordings), in the
    /// same hand-off to the database, for a handler whose last write may as well wait for
    /// it: a handful for the batch, not one per job. They are written just before the
    /// completion and, like it, relaxed: a crash or power cut between or after them leaves
    /// the jobs to run again, never completed without them. The default is none.
    fn on_success(&self, _jobs: &[&Job]) -> Vec<(String, Vec<sea_orm::Value>)> {
        Vec::new()
    }
}

impl<F, Fut> JobHandler for F
where
    F: Fn(Job) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), JobError>> + Send + 'static,
{
    fn run(&self, job: Job) -> JobFuture {
        Box::pin(self(job))
    }
}

/// Calls `target` for `org` through its circuit breaker: deferred while the breaker is open,
/// and the outcome recorded so consecutive failures open it.
pub async fn guarded<T, Fut>(
    store: &Store,
    org: &OrgId,
    target: &str,
    policy: &BreakerPolicy,
    call: impl FnOnce() -> Fut,
) -> Result<T, JobError>
where
    Fut: Future<Output = Result<T, JobError>>,
{
    let store_err =
        |e: crate::StoreError| JobError::transient(format!("breaker state unavailable: {e}"));
    if let Admission::Defer { until } = store
        .breaker_admit(org, target, policy)
        .await
        .map_err(store_err)?
    {
        return Err(JobError::Deferred {
            until,
            reason: format!("circuit breaker for {target} is open"),
        });
    }
    let outcome = call().await;
    let success = match &outcome {
        Ok(_) => true,
        // A permanent failure is the request's fault, not the target's health.
        Err(JobError::Permanent(_)) | Err(JobError::Deferred { .. }) => return outcome,
        Err(JobError::Transient { .. }) => false,
    };
    store
        .breaker_record(org, target, policy, success)
        .await
        .map_err(store_err)?;
    outcome
}

/// This process's pools that take jobs handed over directly: a writer that inserts a job a
/// local pool will run can insert it already claimed in that pool's name
/// ([`LocalTakers::reserve`]) and, once its transaction commits, hand it over
/// ([`Reservation::hand_over`]). That saves the claim (a write, and under SQLite's single
/// writer a turn nobody else can write in) and the wake-up. A job handed over is in every way
/// a claimed one: leased, heartbeated while it runs, reaped if the process dies before it
/// finishes.
#[derive(Debug, Clone, Default)]
pub(crate) struct LocalTakers(Arc<std::sync::Mutex<HashMap<String, LocalTaker>>>);

#[derive(Debug, Clone)]
struct LocalTaker {
    /// The pool's identity in leases.
    worker: String,
    lease: TimeDelta,
    /// Free slots of the kind, as the pool last counted them; a reservation takes one. The
    /// count can be behind by the jobs being handed over, so a pool may run a few more than
    /// its concurrency for a moment (at most one batch's jobs per writer).
    room: Arc<std::sync::atomic::AtomicU32>,
    jobs: mpsc::UnboundedSender<Job>,
}

/// A job to be inserted already claimed by a local pool, and handed over after the insert
/// commits.
#[derive(Debug)]
pub(crate) struct Reservation {
    /// The pool's identity, the job's `lease_owner`.
    pub(crate) worker: String,
    /// The job's `lease_expires_at`.
    pub(crate) lease_until: DateTime<Utc>,
    taker: LocalTaker,
}

impl LocalTakers {
    /// A slot in the local pool that runs `kind`, if there is one with room.
    pub(crate) fn reserve(&self, kind: &str, now: DateTime<Utc>) -> Option<Reservation> {
        let taker = self.lock().get(kind)?.clone();
        taker
            .room
            .fetch_update(
                std::sync::atomic::Ordering::AcqRel,
                std::sync::atomic::Ordering::Acquire,
                |room| room.checked_sub(1),
            )
            .ok()?;
        Some(Reservation {
            worker: taker.worker.clone(),
            lease_until: now + taker.lease,
            taker,
        })
    }

    fn register(&self, kind: &str, taker: LocalTaker) {
        self.lock().insert(kind.to_owned(), taker);
    }

    /// Stops handing `worker`'s kinds over (the pool is stopping).
    fn unregister(&self, worker: &str) {
        self.lock().retain(|_, taker| taker.worker != worker);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, LocalTaker>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Reservation {
    /// Hands the committed job to its pool; the job's id back if the pool has stopped since.
    pub(crate) fn hand_over(self, job: Job) -> Result<(), String> {
        self.taker.jobs.send(job).map_err(|refused| refused.0.id)
    }

    /// The job was not inserted after all: frees the slot.
    pub(crate) fn release(self) {
        self.taker
            .room
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// How a pool behaves.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// This pool's identity in leases; unique per process (e.g. `host:pid:n`).
    pub worker_id: String,
    /// Jobs claimed per query.
    pub batch_size: u32,
    /// How long a claim is held without a heartbeat.
    pub lease: TimeDelta,
    /// How often leases are renewed (well under `lease`).
    pub heartbeat_every: Duration,
    /// The longest an idle pool waits before looking again. Only a safety net: enqueues wake
    /// pools at once (in-process, and by `NOTIFY` on PostgreSQL) and delayed jobs wake them
    /// at their `run_at`. Each wake-up of an idle process costs far more than its queries
    /// (thread and CPU wake-ups), so this is long by default to keep an idle node near 0% CPU.
    pub idle_poll: Duration,
    /// How often expired leases are reaped.
    pub reap_every: Duration,
    /// How long shutdown waits for running jobs before handing them back.
    pub drain_timeout: Duration,
    /// Pruning of finished jobs, if this pool should do it.
    pub prune: Option<PruneConfig>,
    /// How often to look for tables that need `VACUUM`/`ANALYZE` (PostgreSQL; nothing on
    /// SQLite), for servers whose autovacuum is off or too lax for a queue table.
    pub vacuum_every: Option<Duration>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            worker_id: format!("{}:{}", hostname(), std::process::id()),
            batch_size: 100,
            lease: TimeDelta::seconds(30),
            heartbeat_every: Duration::from_secs(10),
            idle_poll: Duration::from_secs(30),
            reap_every: Duration::from_secs(15),
            drain_timeout: Duration::from_secs(20),
            prune: None,
            vacuum_every: Some(Duration::from_secs(15)),
        }
    }
}

/// How long finished jobs are kept.
#[derive(Debug, Clone)]
pub struct PruneConfig {
    /// How often to prune.
    pub every: Duration,
    /// Keep succeeded and discarded jobs this long (also the dedupe window).
    pub keep_done: TimeDelta,
    /// Keep dead jobs this long, for inspection and retry.
    pub keep_dead: TimeDelta,
    /// Keep inbound requests and their events this long (also the inbound dedupe window);
    /// `None` keeps them for ever.
    pub keep_inbound: Option<TimeDelta>,
    /// Keep finished outbound messages with their deliveries and attempts this long.
    pub keep_outbound: Option<TimeDelta>,
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "wedsync".into())
}

struct Kind {
    handler: Arc<dyn JobHandler>,
    concurrency: u32,
    retry: RetryPolicy,
}

/// A set of handlers and the loop that feeds them.
pub struct WorkerPool {
    store: Store,
    config: PoolConfig,
    kinds: BTreeMap<String, Kind>,
}

struct Running {
    kind: String,
    abort: AbortHandle,
}

impl WorkerPool {
    /// A pool with no handlers yet.
    pub fn new(store: Store, config: PoolConfig) -> Self {
        Self {
            store,
            config,
            kinds: BTreeMap::new(),
        }
    }

    /// Runs jobs of `kind` with `handler`, at most `concurrency` at once on this node.
    pub fn register(
        mut self,
        kind: &str,
        handler: impl JobHandler,
        concurrency: u32,
        retry: RetryPolicy,
    ) -> Self {
        self.kinds.insert(
            kind.to_owned(),
            Kind {
                handler: Arc::new(handler),
                concurrency: concurrency.max(1),
                retry,
            },
        );
        self
    }

    /// Starts the pool; it stops claiming when `shutdown` turns true, lets running jobs finish
    /// (for at most the drain timeout, then hands them back), and the task ends.
    pub fn spawn(self, shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        // Registered before the task starts, so a writer can hand jobs over from the moment
        // this returns (they wait in the channel until the loop takes them).
        let (offer, offered) = mpsc::unbounded_channel::<Job>();
        let rooms: HashMap<String, Arc<std::sync::atomic::AtomicU32>> = self
            .kinds
            .iter()
            .map(|(name, kind)| {
                let room = Arc::new(std::sync::atomic::AtomicU32::new(kind.concurrency));
                self.store.local_takers().register(
                    name,
                    LocalTaker {
                        worker: self.config.worker_id.clone(),
                        lease: self.config.lease,
                        room: room.clone(),
                        jobs: offer.clone(),
                    },
                );
                (name.clone(), room)
            })
            .collect();
        tokio::spawn(self.run(shutdown, offered, rooms))
    }

    async fn run(
        self,
        mut shutdown: watch::Receiver<bool>,
        mut offered: mpsc::UnboundedReceiver<Job>,
        rooms: HashMap<String, Arc<std::sync::atomic::AtomicU32>>,
    ) {
        let store = self.store.clone();
        let cfg = self.config.clone();
        let kinds: Vec<String> = self.kinds.keys().cloned().collect();
        let listener =
            (store.backend() == DbBackend::Postgres).then(|| spawn_pg_listener(store.clone()));
        let wake = store.woken();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(Job, Result<(), JobError>)>();
        // Finished jobs are written back by a task of their own, so the loop goes on claiming
        // while a batch's completions are in flight (on a busy PostgreSQL node both take
        // milliseconds, and the loop doing them in turn was what bounded throughput).
        // Until a finished job is written back, its lease is still renewed by the heartbeat:
        // should the recorder fall behind, the reaper must not hand the job to another run.
        let (finished, mut to_record) =
            mpsc::unbounded_channel::<Vec<(Job, Result<(), JobError>)>>();
        let unrecorded: Arc<std::sync::Mutex<std::collections::HashSet<String>>> = Arc::default();
        let recorder = {
            let (store, worker) = (store.clone(), cfg.worker_id.clone());
            let unrecorded = unrecorded.clone();
            let retries: HashMap<String, RetryPolicy> = self
                .kinds
                .iter()
                .map(|(kind, k)| (kind.clone(), k.retry.clone()))
                .collect();
            let handlers: HashMap<String, Arc<dyn JobHandler>> = self
                .kinds
                .iter()
                .map(|(kind, k)| (kind.clone(), k.handler.clone()))
                .collect();
            tokio::spawn(async move {
                while let Some(mut batch) = to_record.recv().await {
                    while let Ok(more) = to_record.try_recv() {
                        batch.extend(more);
                    }
                    let ids: Vec<String> = batch.iter().map(|(job, _)| job.id.clone()).collect();
                    record(&store, &worker, &retries, &handlers, batch).await;
                    let mut unrecorded = unrecorded
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    for id in &ids {
                        unrecorded.remove(id);
                    }
                }
            })
        };
        let mut running: HashMap<String, Running> = HashMap::new();
        // Whether a kind may have ready jobs this pool has not claimed: after a wake-up (an
        // enqueue), a timer (a delayed job due, a reaped lease) or a claim that got all it
        // asked for. A claim that came back short leaves it false until one of those, so a
        // busy pool does not spend a write on an empty claim after every finished batch.
        let mut look: HashMap<String, bool> = kinds.iter().map(|k| (k.clone(), true)).collect();
        let mut seen_epoch = store.wake_epoch();
        let mut heartbeat = tokio::time::interval(cfg.heartbeat_every);
        let mut reap = tokio::time::interval(cfg.reap_every);
        let mut prune = tokio::time::interval(
            cfg.prune
                .as_ref()
                .map_or(Duration::from_secs(3600), |p| p.every),
        );
        let mut vacuum = tokio::time::interval(
            cfg.vacuum_every
                .unwrap_or(Duration::from_secs(3600))
                .max(Duration::from_secs(1)),
        );
        vacuum.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let vacuuming = Arc::new(std::sync::atomic::AtomicBool::new(
            store.backend() != DbBackend::Postgres,
        ));
        let mut stopping = *shutdown.borrow();
        let mut drain_deadline: Option<tokio::time::Instant> = None;
        tracing::info!(worker = %cfg.worker_id, kinds = ?kinds, "worker pool started");

        loop {
            // Register for a wake-up before looking, so an enqueue between the look and the
            // wait is not missed.
            let notified = wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let epoch = store.wake_epoch();
            if epoch != seen_epoch {
                seen_epoch = epoch;
                look.values_mut().for_each(|l| *l = true);
            }
            let mut full_batch = false;
            // Whether every kind is either at its concurrency or got all it asked for: then
            // there is nothing to learn from `next_due`, and finishing jobs wake the loop.
            let mut saturated = true;
            if !stopping {
                for (name, kind) in &self.kinds {
                    let busy = running.values().filter(|r| &r.kind == name).count() as u32;
                    if let Some(free) = rooms.get(name) {
                        free.store(
                            kind.concurrency.saturating_sub(busy),
                            std::sync::atomic::Ordering::Release,
                        );
                    }
                    if !look.get(name).copied().unwrap_or(true) {
                        // Nothing new since a claim came back short; `next_due` below still
                        // finds delayed jobs.
                        saturated = false;
                        continue;
                    }
                    let room = kind.concurrency.saturating_sub(busy).min(cfg.batch_size);
                    // Claim in chunks: while a kind is busy, wait until a quarter of its
                    // slots are free rather than claiming one job per finished job, so a
                    // busy pool spends one claim query per chunk of work, not per job.
                    let chunk = (kind.concurrency.min(cfg.batch_size) / 4).max(1);
                    if room == 0 || (busy > 0 && room < chunk) {
                        continue;
                    }
                    match store.claim(&cfg.worker_id, name, room, cfg.lease).await {
                        Ok(jobs) => {
                            look.insert(name.clone(), jobs.len() as u32 == room);
                            if jobs.len() as u32 == room && room == cfg.batch_size {
                                full_batch = true;
                            }
                            if (jobs.len() as u32) < room {
                                saturated = false;
                            }
                            if !jobs.is_empty() {
                                metrics::counter!("wedsync_job_claims_total", "kind" => name.clone()).increment(jobs.len() as u64);
                            }
                            start(name, kind, jobs, &done_tx, &mut running);
                        }
                        Err(error) => {
                            tracing::error!(%error, kind = %name, "claiming jobs failed");
                        }
                    }
                }
            }

            if stopping && running.is_empty() {
                break;
            }

            let wait = if full_batch {
                Duration::ZERO
            } else if saturated && !running.is_empty() {
                cfg.idle_poll
            } else {
                match store.next_due(&kinds).await {
                    Ok(Some(due)) => {
                        let until = (due - store.clock().now())
                            .to_std()
                            .unwrap_or(Duration::ZERO);
                        until.min(cfg.idle_poll)
                    }
                    _ => cfg.idle_poll,
                }
            };
            let drain = async {
                match drain_deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };

            tokio::select! {
                _ = &mut notified => {
                    look.values_mut().for_each(|l| *l = true);
                }
                Some(first) = offered.recv() => {
                    let mut jobs = vec![first];
                    while let Ok(more) = offered.try_recv() {
                        jobs.push(more);
                    }
                    if stopping {
                        hand_back(&store, &cfg.worker_id, jobs).await;
                    } else {
                        for (name, kind) in &self.kinds {
                            let (mine, rest): (Vec<Job>, Vec<Job>) =
                                jobs.into_iter().partition(|job| &job.kind == name);
                            jobs = rest;
                            if !mine.is_empty() {
                                metrics::counter!("wedsync_job_claims_total", "kind" => name.clone()).increment(mine.len() as u64);
                                start(name, kind, mine, &done_tx, &mut running);
                            }
                        }
                        // A kind this pool does not run (never registered for it).
                        hand_back(&store, &cfg.worker_id, jobs).await;
                    }
                }
                Some(first) = done_rx.recv() => {
                    let mut batch = vec![first];
                    while let Ok(more) = done_rx.try_recv() {
                        batch.push(more);
                    }
                    {
                        let mut unrecorded = unrecorded
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        for (job, _) in &batch {
                            running.remove(&job.id);
                            unrecorded.insert(job.id.clone());
                        }
                    }
                    let _ = finished.send(batch);
                }
                _ = heartbeat.tick(), if !running.is_empty()
                    || !unrecorded.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_empty() => {
                    let mut ids: Vec<String> = running.keys().cloned().collect();
                    ids.extend(
                        unrecorded
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .iter()
                            .cloned(),
                    );
                    match store.heartbeat(&cfg.worker_id, &ids, cfg.lease).await {
                        Ok(held) => {
                            for id in ids.iter().filter(|id| !held.contains(id)) {
                                if let Some(lost) = running.remove(id) {
                                    lost.abort.abort();
                                    metrics::counter!("wedsync_job_attempts_total", "kind" => lost.kind.clone(), "outcome" => "lease_lost").increment(1);
                                    tracing::warn!(job = %id, "lease lost; stopped the job here");
                                }
                            }
                        }
                        Err(error) => tracing::error!(%error, "heartbeat failed"),
                    }
                }
                _ = reap.tick() => {
                    match store.reap_expired().await {
                        Ok(0) => {}
                        Ok(_) => look.values_mut().for_each(|l| *l = true),
                        Err(error) => tracing::error!(%error, "reaping expired leases failed"),
                    }
                }
                _ = vacuum.tick(), if cfg.vacuum_every.is_some() => {
                    // In a task of its own: a VACUUM of a large table must not hold up claims.
                    if !vacuuming.swap(true, std::sync::atomic::Ordering::AcqRel) {
                        let (store, flag) = (store.clone(), vacuuming.clone());
                        tokio::spawn(async move {
                            if let Err(error) = store.vacuum_where_needed().await {
                                tracing::warn!(%error, "vacuuming tables failed");
                            }
                            flag.store(false, std::sync::atomic::Ordering::Release);
                        });
                    }
                }
                _ = prune.tick(), if cfg.prune.is_some() => {
                    if let Some(p) = &cfg.prune {
                        let now = store.clock().now();
                        match store.prune_jobs(now - p.keep_done, now - p.keep_dead).await {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(pruned = n, "pruned finished jobs"),
                            Err(error) => tracing::error!(%error, "pruning jobs failed"),
                        }
                        if let Some(keep) = p.keep_inbound {
                            match store.prune_inbound(now - keep).await {
                                Ok(0) => {}
                                Ok(n) => tracing::info!(pruned = n, "pruned inbound requests"),
                                Err(error) => tracing::error!(%error, "pruning inbound requests failed"),
                            }
                        }
                        if let Some(keep) = p.keep_outbound {
                            match store.prune_outbound(now - keep).await {
                                Ok(0) => {}
                                Ok(n) => tracing::info!(pruned = n, "pruned outbound messages"),
                                Err(error) => tracing::error!(%error, "pruning outbound messages failed"),
                            }
                        }
                    }
                }
                _ = tokio::time::sleep(wait) => {
                    look.values_mut().for_each(|l| *l = true);
                }
                changed = shutdown.changed(), if !stopping => {
                    if changed.is_err() || *shutdown.borrow() {
                        stopping = true;
                        store.local_takers().unregister(&cfg.worker_id);
                        drain_deadline = Some(tokio::time::Instant::now() + cfg.drain_timeout);
                        tracing::info!(running = running.len(), "worker pool stopping: draining running jobs");
                    }
                }
                _ = drain => {
                    // Hand back what did not finish so another node runs it now rather than
                    // after the lease expires.
                    let now = store.clock().now();
                    for (id, r) in running.drain() {
                        r.abort.abort();
                        if let Err(error) = store.defer(&cfg.worker_id, &id, now).await {
                            tracing::error!(%error, job = %id, "could not hand back a job; it will be reaped");
                        }
                    }
                }
            }
        }
        // Jobs handed over while the last ones finished go back to the queue.
        store.local_takers().unregister(&cfg.worker_id);
        offered.close();
        let mut late = Vec::new();
        while let Ok(job) = offered.try_recv() {
            late.push(job);
        }
        hand_back(&store, &cfg.worker_id, late).await;
        // Every finished job written back before the pool reports itself stopped.
        drop(finished);
        if let Err(error) = recorder.await {
            tracing::error!(%error, "writing back finished jobs failed");
        }
        if let Some(listener) = listener {
            listener.abort();
        }
        tracing::info!(worker = %cfg.worker_id, "worker pool stopped");
    }
}

/// Starts claimed jobs of one kind, each as a task of its own.
fn start(
    name: &str,
    kind: &Kind,
    jobs: Vec<Job>,
    done: &mpsc::UnboundedSender<(Job, Result<(), JobError>)>,
    running: &mut HashMap<String, Running>,
) {
    kind.handler.claimed(&jobs);
    for job in jobs {
        let tx = done.clone();
        let handler = kind.handler.clone();
        let id = job.id.clone();
        let task = tokio::spawn(async move {
            let outcome = handler.run(job.clone()).await;
            let _ = tx.send((job, outcome));
        });
        running.insert(
            id,
            Running {
                kind: name.to_owned(),
                abort: task.abort_handle(),
            },
        );
    }
}

/// Puts jobs handed over to a pool that will not run them back in the queue, ready now
/// (should that fail, their leases expire and the reaper does it).
async fn hand_back(store: &Store, worker: &str, jobs: Vec<Job>) {
    if jobs.is_empty() {
        return;
    }
    let now = store.clock().now();
    for job in &jobs {
        log_err(store.defer(worker, &job.id, now).await);
    }
    store.wake_workers();
}

/// Writes back a batch of finished jobs: successes in one statement, failures retried per
/// their kind's policy or dead-lettered, deferrals put back.
async fn record(
    store: &Store,
    worker: &str,
    retries: &HashMap<String, RetryPolicy>,
    handlers: &HashMap<String, Arc<dyn JobHandler>>,
    batch: Vec<(Job, Result<(), JobError>)>,
) {
    let mut done = Vec::new();
    let mut succeeded: Vec<Job> = Vec::new();
    // Whether a job was put back to run later: the claim loop may have looked for due jobs
    // before it was, and must look again.
    let mut put_back = false;
    for (job, outcome) in batch {
        let kind = job.kind.clone();
        let outcome_label = match outcome {
            Ok(()) => {
                done.push(job.id.clone());
                succeeded.push(job);
                "succeeded"
            }
            Err(JobError::Deferred { until, reason }) => {
                tracing::info!(job = %job.id, %until, %reason, "job deferred");
                log_err(store.defer(worker, &job.id, until).await);
                put_back = true;
                "deferred"
            }
            Err(err) => {
                let (failure, message) = match err {
                    JobError::Permanent(e) => (Failure::Permanent { reason: e.clone() }, e),
                    JobError::Transient { error, retry_after } => (
                        Failure::Transient {
                            reason: error.clone(),
                            retry_after,
                        },
                        error,
                    ),
                    JobError::Deferred { .. } => continue,
                };
                let policy = retries.get(&kind).cloned().unwrap_or_default();
                let now = store.clock().now();
                let attempts = u32::try_from(job.attempts).unwrap_or(0);
                let max = policy
                    .max_attempts
                    .min(u32::try_from(job.max_attempts).unwrap_or(u32::MAX));
                let decision = if attempts >= max {
                    Decision::GiveUp {
                        reason: format!("gave up after {attempts} attempts"),
                    }
                } else {
                    policy.decide(
                        attempts,
                        job.created_at,
                        now,
                        &failure,
                        rand::random::<f64>(),
                    )
                };
                match decision {
                    Decision::RetryAt(at) => {
                        put_back = true;
                        tracing::info!(job = %job.id, %kind, attempts, retry_at = %at, error = %message, "job failed; will retry");
                        log_err(
                            store
                                .fail(worker, &job.id, &message, AfterFailure::RetryAt(at))
                                .await,
                        );
                        "retried"
                    }
                    Decision::GiveUp { reason } => {
                        tracing::warn!(job = %job.id, %kind, attempts, error = %message, %reason, "job dead");
                        log_err(
                            store
                                .fail(
                                    worker,
                                    &job.id,
                                    &format!("{message} ({reason})"),
                                    AfterFailure::Dead,
                                )
                                .await,
                        );
                        "dead"
                    }
                }
            }
        };
        metrics::counter!("wedsync_job_attempts_total", "kind" => kind, "outcome" => outcome_label)
            .increment(1);
    }
    if !done.is_empty() {
        let mut follow_ups = Vec::new();
        for (kind, handler) in handlers {
            let jobs: Vec<&Job> = succeeded.iter().filter(|j| &j.kind == kind).collect();
            if !jobs.is_empty() {
                follow_ups.extend(handler.on_success(&jobs));
            }
        }
        log_err(store.complete_with(worker, &done, follow_ups).await);
    }
    if put_back {
        store.wake_workers();
    }
}

fn log_err<T>(result: StoreResult<T>) {
    if let Err(error) = result {
        // The job keeps its lease and is reaped after it expires, so it runs again: the
        // at-least-once guarantee survives a failed write here.
        tracing::error!(%error, "recording a job outcome failed");
    }
}

/// Forwards PostgreSQL notifications on the jobs channel to this process's wake-up.
fn spawn_pg_listener(store: Store) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let pool = store.connection().get_postgres_connection_pool().clone();
            match sea_orm::sqlx::postgres::PgListener::connect_with(&pool).await {
                Ok(mut listener) => {
                    if let Err(error) = listener.listen(crate::queue::NOTIFY_CHANNEL).await {
                        tracing::error!(%error, "LISTEN failed");
                    } else {
                        while listener.recv().await.is_ok() {
                            store.wake_workers();
                        }
                    }
                }
                Err(error) => tracing::error!(%error, "cannot open the LISTEN connection"),
            }
            // Polling covers the gap until the listener is back.
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    })
}

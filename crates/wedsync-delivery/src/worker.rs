//! The `webhook.deliver` job: one attempt at one delivery, and what follows it (success, a
//! retry on the schedule, giving up, or disabling the endpoint).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::Semaphore;
use wedsync_core::breaker::{Admission, BreakerPolicy, BreakerState};
use wedsync_core::ratelimit::Rate;
use wedsync_core::retry::{Decision, Failure, RetryPolicy};
use wedsync_store::Store;
use wedsync_store::group_commit::GroupCommit;
use wedsync_store::queue::Job;
use wedsync_store::webhooks::{DeliveryWork, Next, Recording};
use wedsync_store::worker::{JobError, JobHandler};

use crate::sender::{Outcome, Sender};

/// How deliveries are retried and when endpoints are given up on.
#[derive(Debug, Clone)]
pub struct DeliveryPolicy {
    /// The retry schedule (default: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h).
    pub retry: RetryPolicy,
    /// An endpoint failing without a success for this long is disabled (default 5 days).
    pub disable_after: TimeDelta,
    /// The circuit breaker per endpoint.
    pub breaker: BreakerPolicy,
    /// Attempts in flight to one endpoint at once, per node.
    pub per_endpoint_concurrency: usize,
    /// How long an attempt waits on this node for one of its endpoint's slots before it is
    /// put back in the queue for later (default 1 s). Waiting in memory is cheaper than a
    /// round trip through the queue when the slots free up in milliseconds, as they do while
    /// a healthy endpoint is busy; a slow endpoint still hands its backlog back. At most
    /// `per_endpoint_concurrency` attempts wait per endpoint; more are put back at once.
    pub slot_wait: std::time::Duration,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::webhook_default(),
            disable_after: TimeDelta::days(5),
            breaker: BreakerPolicy::default(),
            per_endpoint_concurrency: 8,
            slot_wait: std::time::Duration::from_secs(1),
        }
    }
}

/// Decides what follows a failed attempt, given the endpoint's failing streak.
pub fn after_failure(
    policy: &DeliveryPolicy,
    work: &DeliveryWork,
    outcome: &Outcome,
    now: DateTime<Utc>,
    unit_random: f64,
) -> Next {
    if outcome.gone {
        return Next::DisableEndpoint("the endpoint answered 410 Gone".into());
    }
    let failing_since = work.failing_since.unwrap_or(now);
    if now - failing_since >= policy.disable_after {
        return Next::DisableEndpoint(format!(
            "no successful delivery since {}",
            failing_since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
    }
    let reason = outcome
        .record
        .error
        .clone()
        .unwrap_or_else(|| "failed".into());
    let attempts = u32::try_from(work.round_attempts).unwrap_or(0) + 1;
    match policy.retry.decide(
        attempts,
        work.round_started_at,
        now,
        &Failure::Transient {
            reason,
            retry_after: outcome.retry_after,
        },
        unit_random,
    ) {
        Decision::RetryAt(at) => Next::RetryAt(at),
        Decision::GiveUp { reason } => Next::GiveUp(reason),
    }
}

/// Per-endpoint in-flight limits on this node.
#[derive(Debug, Default)]
struct Slots {
    per_endpoint: Mutex<HashMap<String, Arc<EndpointSlots>>>,
    /// Attempts from this node that failed in a way that counts for a breaker. An attempt
    /// that sees it move between reading its delivery (with the breaker's state) and
    /// sending asks the store for the breaker instead: it may have opened meanwhile.
    failures: std::sync::atomic::AtomicU64,
}

/// One endpoint's slots, and how many attempts are waiting for one.
#[derive(Debug)]
struct EndpointSlots {
    slots: Arc<Semaphore>,
    waiting: std::sync::atomic::AtomicUsize,
}

/// Counts an attempt as waiting for as long as it lives (a cancelled wait included).
struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl Slots {
    /// One of `endpoint`'s `limit` slots, waiting at most `wait` for one to free up. At most
    /// `limit` attempts wait for an endpoint at once: the rest are turned away at once, so a
    /// slow endpoint's backlog cannot hold more than that many of the pool's job slots
    /// (which other endpoints' deliveries need) while it waits.
    async fn take(
        &self,
        endpoint: &str,
        limit: usize,
        wait: std::time::Duration,
    ) -> Option<tokio::sync::OwnedSemaphorePermit> {
        use std::sync::atomic::Ordering;
        let limit = limit.max(1);
        let endpoint = {
            let mut map = self
                .per_endpoint
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            map.entry(endpoint.to_owned())
                .or_insert_with(|| {
                    Arc::new(EndpointSlots {
                        slots: Arc::new(Semaphore::new(limit)),
                        waiting: Default::default(),
                    })
                })
                .clone()
        };
        if let Ok(permit) = endpoint.slots.clone().try_acquire_owned() {
            return Some(permit);
        }
        if endpoint.waiting.fetch_add(1, Ordering::AcqRel) >= limit {
            endpoint.waiting.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let _waiting = Waiting(&endpoint.waiting);
        tokio::time::timeout(wait, endpoint.slots.clone().acquire_owned())
            .await
            .ok()?
            .ok()
    }

    /// The failure count, to compare before and after.
    fn failures(&self) -> u64 {
        self.failures.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Notes an attempt that failed in a way that counts for its endpoint's breaker.
    fn failed(&self) {
        self.failures
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

fn transient(e: impl std::fmt::Display) -> JobError {
    JobError::transient(e.to_string())
}

struct Shared {
    store: Store,
    sender: Sender,
    policy: DeliveryPolicy,
    slots: Slots,
    /// Attempts are recorded by group commit: concurrent workers share transactions.
    recorder: GroupCommit<Recording, bool>,
    read_ahead: ReadAhead,
}

/// The deliveries of a claimed batch, read in one query by the first of its attempts to
/// start (the others wait for it): `None` inside when that read failed, and each attempt
/// then reads its own.
struct BatchRead {
    ids: Vec<String>,
    /// The node's breaker-failure count just before the read, and what it read.
    works: tokio::sync::OnceCell<Option<(u64, HashMap<String, DeliveryWork>)>>,
}

/// Claimed jobs whose attempts have not started yet, by job id (not delivery: a later job
/// of the same delivery must read it afresh), with their batch's read.
#[derive(Default)]
struct ReadAhead {
    pending: Mutex<HashMap<String, (std::time::Instant, Arc<BatchRead>)>>,
}

impl ReadAhead {
    /// How long an entry may wait for its attempt (one aborted before it started leaves its
    /// entry behind; the next batch clears it).
    const KEEP: std::time::Duration = std::time::Duration::from_secs(60);

    fn add(&self, jobs: &[Job]) {
        let (jobs, ids): (Vec<&str>, Vec<String>) = jobs
            .iter()
            .filter_map(|j| {
                let delivery = j.payload.get("delivery_id").and_then(|v| v.as_str())?;
                Some((j.id.as_str(), delivery.to_owned()))
            })
            .unzip();
        if ids.len() < 2 {
            return; // nothing to share
        }
        let batch = Arc::new(BatchRead {
            ids,
            works: tokio::sync::OnceCell::new(),
        });
        let now = std::time::Instant::now();
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        pending.retain(|_, (at, _)| now.duration_since(*at) < Self::KEEP);
        for job in jobs {
            pending.insert(job.to_owned(), (now, batch.clone()));
        }
    }

    /// The work of `job`'s `delivery` from its batch's read, with the breaker-failure count
    /// of `slots` just before that read: `None` when the job has no batch or the read
    /// failed; `Some((_, None))` when the delivery is gone.
    async fn take(
        &self,
        store: &Store,
        slots: &Slots,
        job: &str,
        delivery: &str,
    ) -> Option<(u64, Option<DeliveryWork>)> {
        let (_, batch) = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(job)?;
        let works = batch
            .works
            .get_or_init(|| async {
                let ids: Vec<&str> = batch.ids.iter().map(String::as_str).collect();
                let failures = slots.failures();
                match store.delivery_works(&ids).await {
                    Ok(works) => Some((failures, works)),
                    Err(error) => {
                        tracing::warn!(%error, "reading a batch of deliveries failed; reading them one by one");
                        None
                    }
                }
            })
            .await
            .as_ref()?;
        Some((works.0, works.1.get(delivery).cloned()))
    }
}

/// The `webhook.deliver` handler: see [`deliver_handler`].
struct Deliver(Arc<Shared>);

impl JobHandler for Deliver {
    fn run(&self, job: Job) -> wedsync_store::worker::JobFuture {
        let shared = self.0.clone();
        Box::pin(async move { attempt(&shared, job).await })
    }

    fn claimed(&self, jobs: &[Job]) {
        self.0.read_ahead.add(jobs);
    }
}

/// The handler for `webhook.deliver` jobs. Call it inside the Tokio runtime: it starts the
/// tasks that record attempts. The deliveries of each batch the pool claims are read in one
/// query.
pub fn deliver_handler(store: Store, sender: Sender, policy: DeliveryPolicy) -> impl JobHandler {
    let committers = if store.backend() == wedsync_store::Backend::Postgres {
        4
    } else {
        1
    };
    let recording = store.clone();
    let recorder = GroupCommit::spawn(committers, 256, "webhook_attempts", move |batch| {
        let store = recording.clone();
        async move {
            store
                .record_attempts(batch)
                .await
                .map_err(|e| e.to_string())
        }
    });
    Deliver(Arc::new(Shared {
        store,
        sender,
        policy,
        slots: Slots::default(),
        recorder,
        read_ahead: ReadAhead::default(),
    }))
}

async fn attempt(shared: &Shared, job: Job) -> Result<(), JobError> {
    let Shared {
        store,
        sender,
        policy,
        slots,
        recorder,
        read_ahead,
    } = shared;
    let p = &job.payload;
    let (Some(delivery), Some(generation), Some(number)) = (
        p.get("delivery_id").and_then(|v| v.as_str()),
        p.get("generation").and_then(serde_json::Value::as_i64),
        p.get("attempt").and_then(serde_json::Value::as_i64),
    ) else {
        return Err(JobError::Permanent("malformed delivery job".into()));
    };
    let manual = p.get("trigger").and_then(|v| v.as_str()) == Some("manual");
    let (failures_at_read, work) = match read_ahead.take(store, slots, &job.id, delivery).await {
        Some(read) => read,
        None => {
            let failures = slots.failures();
            (
                failures,
                store.delivery_work(delivery).await.map_err(transient)?,
            )
        }
    };
    let Some(work) = work else {
        return Ok(()); // deleted with its endpoint, or pruned
    };
    // A job that no longer matches its delivery has been overtaken (a rerun after its
    // attempt was recorded, or a resend since): nothing to do.
    if work.status != "pending"
        || i64::from(work.generation) != generation
        || i64::from(work.attempts) + 1 != number
    {
        return Ok(());
    }
    if !work.enabled {
        store
            .fail_undeliverable(&work, "endpoint disabled")
            .await
            .map_err(transient)?;
        return Ok(());
    }
    let Some(slot) = slots
        .take(
            &work.endpoint_id,
            policy.per_endpoint_concurrency,
            policy.slot_wait,
        )
        .await
    else {
        return Err(JobError::Deferred {
            until: store.clock().now() + TimeDelta::milliseconds(200),
            reason: format!(
                "endpoint {} has {} attempts in flight",
                work.endpoint_id, policy.per_endpoint_concurrency
            ),
        });
    };
    // Read after the wait for a slot, which can take up to `slot_wait`.
    let now = store.clock().now();
    if let Some(rps) = work.rate_limit_per_second {
        let rate = Rate {
            capacity: rps,
            per: TimeDelta::seconds(1),
        };
        if let Err(wait) = store
            .rate_take(&format!("endpoint:{}", work.endpoint_id), &rate, 1)
            .await
            .map_err(transient)?
        {
            return Err(JobError::Deferred {
                until: now + wait,
                reason: format!("endpoint {} is at its rate limit", work.endpoint_id),
            });
        }
    }
    let target = format!("endpoint:{}", work.endpoint_id);
    // A closed breaker (read with the delivery) admits at once; any other state goes through
    // the store, which claims the half-open probe in a transaction. So does a closed one
    // when an attempt from this node has failed since the delivery was read (a batch's read
    // can be a moment old, and the wait for a slot up to a second): it may have opened.
    let stale = slots.failures() != failures_at_read;
    let clean = !stale
        && matches!(
            work.breaker,
            None | Some(BreakerState::Closed {
                consecutive_failures: 0
            })
        );
    if (stale || !matches!(work.breaker, None | Some(BreakerState::Closed { .. })))
        && let Admission::Defer { until } = store
            .breaker_admit(&work.org_id, &target, &policy.breaker)
            .await
            .map_err(transient)?
    {
        return Err(JobError::Deferred {
            until,
            reason: format!("circuit breaker for {target} is open"),
        });
    }
    let outcome = sender.send(&work, now).await;
    // The endpoint's slot limits requests in flight to it, not our own bookkeeping: free it
    // before waiting for the attempt's record to commit.
    drop(slot);
    let after = store.clock().now();
    let next = if outcome.record.success {
        Next::Succeeded
    } else {
        after_failure(policy, &work, &outcome, after, rand::random::<f64>())
    };
    // A success on a breaker with nothing to forget changes nothing, so it is not written.
    if (outcome.record.success && !clean) || (!outcome.record.success && outcome.unhealthy) {
        store
            .breaker_record(
                &work.org_id,
                &target,
                &policy.breaker,
                outcome.record.success,
            )
            .await
            .map_err(transient)?;
    }
    // Counted once the breaker has it, so that an attempt seeing the count move reads it.
    if !outcome.record.success && outcome.unhealthy {
        slots.failed();
    }
    let class = outcome
        .record
        .error_class
        .clone()
        .unwrap_or_else(|| "success".into());
    metrics::counter!("wedsync_webhook_attempts_total", "outcome" => class.clone()).increment(1);
    metrics::histogram!("wedsync_webhook_attempt_seconds")
        .record(f64::from(outcome.record.latency_ms) / 1000.0);
    if !outcome.record.success {
        tracing::info!(delivery = %work.delivery_id, endpoint = %work.endpoint_id, class, next = ?next, "webhook attempt failed");
    }
    if let Next::DisableEndpoint(reason) = &next {
        tracing::warn!(endpoint = %work.endpoint_id, reason, "disabling endpoint");
    }
    recorder
        .submit(Recording {
            work,
            record: outcome.record,
            next,
            manual,
        })
        .await
        .map_err(JobError::transient)?;
    Ok(())
}

//! The durable queue's guarantees, on the backend under test. Time that decides anything
//! (run_at, leases, backoff, breakers) is the manual clock, moved by the tests; the real-time
//! waits below only wait for worker tasks to get round to work that is already due.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::TimeDelta;
use sea_orm::TransactionTrait;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use wedsync_core::breaker::{Admission, BreakerPolicy, BreakerState};
use wedsync_core::ratelimit::Rate;
use wedsync_core::retry::{Backoff, RetryPolicy};
use wedsync_store::Store;
use wedsync_store::queue::{JobFilter, JobState, NewJob, enqueue_in};
use wedsync_store::worker::{JobError, PoolConfig, WorkerPool, guarded};

use crate::support::{ctx, operator, org};

const KIND: &str = "test.work";
const LIMIT: Duration = Duration::from_secs(60);

fn config(id: &str) -> PoolConfig {
    PoolConfig {
        worker_id: id.into(),
        batch_size: 20,
        lease: TimeDelta::seconds(30),
        heartbeat_every: Duration::from_millis(200),
        idle_poll: Duration::from_millis(50),
        reap_every: Duration::from_millis(100),
        drain_timeout: Duration::from_secs(5),
        prune: None,
        vacuum_every: None,
    }
}

fn quick_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        backoff: Backoff::Exponential {
            base: TimeDelta::seconds(10),
            factor: 2,
            max: TimeDelta::hours(1),
        },
        jitter: 0.2,
        max_attempts,
        max_age: TimeDelta::days(3),
        retry_after_min: TimeDelta::seconds(1),
        retry_after_max: TimeDelta::hours(1),
    }
}

/// A pool running `KIND` that reports each job's payload `n` on a channel.
fn reporting_pool(store: &Store, id: &str) -> (WorkerPool, mpsc::UnboundedReceiver<i64>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let pool = WorkerPool::new(store.clone(), config(id)).register(
        KIND,
        move |job: wedsync_store::queue::Job| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(job.payload["n"].as_i64().unwrap_or(-1));
                Ok(())
            }
        },
        8,
        RetryPolicy::default(),
    );
    (pool, rx)
}

async fn recv<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(LIMIT, rx.recv())
        .await
        .expect("in time")
        .expect("open")
}

/// Waits (bounded) until `check` holds: for effects a worker task records after a handler.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + LIMIT;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tick.tick().await;
    }
}

async fn job_state(store: &Store, id: &str) -> (JobState, i32) {
    let job = store.get_job(None, id).await.expect("job");
    (job.state, job.attempts)
}

fn job(n: i64) -> NewJob {
    NewJob::new(KIND, json!({ "n": n }))
}

#[tokio::test]
async fn a_rolled_back_enqueue_never_runs_and_a_committed_one_does() {
    let c = ctx().await;
    let now = c.clock_now();
    let tx = c.store.connection().begin().await.expect("begin");
    enqueue_in(&tx, now, job(1)).await.expect("enqueue");
    tx.rollback().await.expect("rollback");
    let tx = c.store.connection().begin().await.expect("begin");
    let kept = enqueue_in(&tx, now, job(2)).await.expect("enqueue");
    tx.commit().await.expect("commit");
    c.store.wake_workers();

    let (pool, mut ran) = reporting_pool(&c.store, "w1");
    let (stop, stopped) = watch::channel(false);
    let handle = pool.spawn(stopped);
    assert_eq!(recv(&mut ran).await, 2);
    eventually("the job to succeed", || async {
        job_state(&c.store, &kept.id).await.0 == JobState::Succeeded
    })
    .await;
    let all = c
        .store
        .list_jobs(None, &JobFilter::default(), &Default::default())
        .await
        .expect("list");
    assert_eq!(all.data.len(), 1, "the rolled-back job never existed");
    stop.send(true).expect("stop");
    handle.await.expect("pool");
}

#[tokio::test]
async fn a_job_whose_worker_stops_heartbeating_runs_again_after_the_lease() {
    let c = ctx().await;
    let id = c.store.enqueue(job(7)).await.expect("enqueue").id;
    // A worker claims it and dies: no heartbeat, no completion.
    let claimed = c
        .store
        .claim("ghost", KIND, 10, TimeDelta::seconds(30))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    let (pool, mut ran) = reporting_pool(&c.store, "survivor");
    let (stop, stopped) = watch::channel(false);
    let handle = pool.spawn(stopped);
    // Within the lease nobody else may take it.
    assert_eq!(c.store.reap_expired().await.expect("reap"), 0);
    assert_eq!(job_state(&c.store, &id).await, (JobState::Running, 1));
    c.clock.advance(TimeDelta::seconds(31));
    assert_eq!(recv(&mut ran).await, 7);
    eventually("the rerun to succeed", || async {
        job_state(&c.store, &id).await == (JobState::Succeeded, 2)
    })
    .await;
    // The dead worker's lease is fenced off: it cannot complete what it no longer holds.
    assert_eq!(
        c.store
            .complete("ghost", std::slice::from_ref(&id))
            .await
            .expect("complete"),
        0
    );
    stop.send(true).expect("stop");
    handle.await.expect("pool");
}

#[derive(Default)]
struct Ledger {
    running: HashSet<i64>,
    runs: HashMap<i64, u32>,
    by_pool: HashMap<String, u32>,
    overlaps: u32,
}

#[tokio::test]
async fn two_pools_never_run_the_same_job_at_the_same_time() {
    const JOBS: i64 = 2000;
    let c = ctx().await;
    // A second node: its own connection pool to the same database.
    let other = Store::connect(&c.options(), Arc::new(c.clock.clone()))
        .await
        .expect("second store");
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let (done_tx, mut done) = mpsc::unbounded_channel::<()>();
    let pool = |store: &Store, name: &str| {
        let ledger = ledger.clone();
        let done_tx = done_tx.clone();
        let name = name.to_owned();
        WorkerPool::new(store.clone(), config(&name)).register(
            KIND,
            move |job: wedsync_store::queue::Job| {
                let ledger = ledger.clone();
                let done_tx = done_tx.clone();
                let name = name.clone();
                async move {
                    let n = job.payload["n"].as_i64().unwrap_or(-1);
                    {
                        let mut l = ledger.lock().expect("ledger");
                        if !l.running.insert(n) {
                            l.overlaps += 1;
                        }
                    }
                    tokio::task::yield_now().await;
                    {
                        let mut l = ledger.lock().expect("ledger");
                        l.running.remove(&n);
                        *l.runs.entry(n).or_default() += 1;
                        *l.by_pool.entry(name).or_default() += 1;
                    }
                    let _ = done_tx.send(());
                    Ok(())
                }
            },
            16,
            RetryPolicy::default(),
        )
    };
    for chunk in (0..JOBS).collect::<Vec<_>>().chunks(500) {
        c.store
            .enqueue_many(chunk.iter().map(|n| job(*n)).collect())
            .await
            .expect("enqueue");
    }
    let (stop, stopped) = watch::channel(false);
    let a = pool(&c.store, "node-a").spawn(stopped.clone());
    let b = pool(&other, "node-b").spawn(stopped);
    for _ in 0..JOBS {
        recv(&mut done).await;
    }
    stop.send(true).expect("stop");
    a.await.expect("a");
    b.await.expect("b");
    {
        let l = ledger.lock().expect("ledger");
        assert_eq!(l.overlaps, 0, "a job ran on two workers at once");
        assert_eq!(l.runs.len() as i64, JOBS);
        assert!(
            l.runs.values().all(|&r| r == 1),
            "every job ran exactly once"
        );
        assert!(
            l.by_pool.values().all(|&n| n > 0) && l.by_pool.len() == 2,
            "both pools worked: {:?}",
            l.by_pool
        );
    }
    eventually("all completions recorded", || async {
        c.store
            .queue_depth()
            .await
            .expect("depth")
            .iter()
            .all(|d| d.state == JobState::Succeeded)
    })
    .await;
}

#[tokio::test]
async fn delayed_jobs_never_run_before_run_at_and_priority_goes_first() {
    let c = ctx().await;
    let now = c.clock_now();
    let mut later = job(1);
    later.run_at = Some(now + TimeDelta::hours(1));
    c.store.enqueue(later).await.expect("enqueue");
    assert!(
        c.store
            .claim("w", KIND, 10, TimeDelta::seconds(30))
            .await
            .expect("claim")
            .is_empty()
    );
    c.clock
        .advance(TimeDelta::minutes(59) + TimeDelta::seconds(59));
    assert!(
        c.store
            .claim("w", KIND, 10, TimeDelta::seconds(30))
            .await
            .expect("claim")
            .is_empty()
    );
    assert_eq!(
        c.store.next_due(&[KIND.into()]).await.expect("due"),
        Some(now + TimeDelta::hours(1))
    );
    c.clock.advance(TimeDelta::seconds(1));
    assert_eq!(
        c.store
            .claim("w", KIND, 10, TimeDelta::seconds(30))
            .await
            .expect("claim")
            .len(),
        1
    );

    // Wedding-day work (higher priority) is claimed before older, ordinary work.
    c.store.enqueue(job(10)).await.expect("enqueue");
    let mut urgent = job(20);
    urgent.priority = wedsync_core::calendar::PRIORITY_WEDDING_TODAY;
    c.store.enqueue(urgent).await.expect("enqueue");
    let first = c
        .store
        .claim("w", KIND, 1, TimeDelta::seconds(30))
        .await
        .expect("claim");
    assert_eq!(first[0].payload["n"], 20);
}

#[tokio::test]
async fn dead_lettered_jobs_keep_their_error_and_can_be_retried() {
    let c = ctx().await;
    let org = org(&c.store, "Lens & Lace").await;
    let mut new = job(3);
    new.org_id = Some(org.id);
    let id = c.store.enqueue(new).await.expect("enqueue").id;
    let calls = Arc::new(Mutex::new(0u32));
    let calls_in = calls.clone();
    let pool = WorkerPool::new(c.store.clone(), config("w")).register(
        KIND,
        move |_job: wedsync_store::queue::Job| {
            let calls = calls_in.clone();
            async move {
                let mut n = calls.lock().expect("calls");
                *n += 1;
                if *n == 1 {
                    Err(JobError::Permanent("the template is missing".into()))
                } else {
                    Ok(())
                }
            }
        },
        4,
        quick_retry(5),
    );
    let (stop, stopped) = watch::channel(false);
    let handle = pool.spawn(stopped);
    eventually("the job to die", || async {
        job_state(&c.store, &id).await.0 == JobState::Dead
    })
    .await;
    let dead = c.store.get_job(Some(&org.id), &id).await.expect("job");
    assert!(
        dead.last_error
            .as_deref()
            .is_some_and(|e| e.contains("the template is missing")),
        "{dead:?}"
    );
    assert_eq!(dead.attempts, 1, "a permanent failure is not retried");
    let listed = c
        .store
        .list_jobs(
            Some(&org.id),
            &JobFilter {
                state: Some(JobState::Dead),
                kind: None,
            },
            &Default::default(),
        )
        .await;
    assert_eq!(listed.expect("list").data.len(), 1);

    let retried = c
        .store
        .retry_job(Some(&org.id), &id, &operator())
        .await
        .expect("retry");
    assert_eq!((retried.state, retried.attempts), (JobState::Ready, 0));
    eventually("the retry to succeed", || async {
        job_state(&c.store, &id).await.0 == JobState::Succeeded
    })
    .await;
    let audit = c
        .store
        .audit_entries(&org.id, None, 1)
        .await
        .expect("audit");
    assert_eq!(audit[0].action, "job.retry");
    // Retrying a finished job is refused.
    assert!(
        c.store
            .retry_job(Some(&org.id), &id, &operator())
            .await
            .is_err()
    );
    stop.send(true).expect("stop");
    handle.await.expect("pool");
}

#[tokio::test]
async fn transient_failures_back_off_with_jitter_honour_retry_after_then_die() {
    let c = ctx().await;
    let id = c.store.enqueue(job(4)).await.expect("enqueue").id;
    let pool = WorkerPool::new(c.store.clone(), config("w")).register(
        KIND,
        |job: wedsync_store::queue::Job| async move {
            if job.attempts == 2 {
                Err(JobError::Transient {
                    error: "429 too many requests".into(),
                    retry_after: Some(TimeDelta::seconds(90)),
                })
            } else {
                Err(JobError::transient("503 service unavailable"))
            }
        },
        4,
        quick_retry(3),
    );
    let (stop, stopped) = watch::channel(false);
    let handle = pool.spawn(stopped);
    // Attempt 1 fails: the next is 10 s ± 20% away.
    let t1 = c.clock_now();
    eventually("attempt 1 to be recorded", || async {
        job_state(&c.store, &id).await == (JobState::Ready, 1)
    })
    .await;
    let after1 = c.store.get_job(None, &id).await.expect("job");
    let delay = after1.run_at - t1;
    assert!(
        delay >= TimeDelta::seconds(8) && delay <= TimeDelta::seconds(12),
        "{delay}"
    );
    assert_eq!(
        after1.last_error.as_deref(),
        Some("503 service unavailable")
    );
    // Attempt 2 is asked to wait 90 s, longer than the 20 s backoff: the server wins.
    c.clock.advance(TimeDelta::seconds(12));
    c.store.wake_workers();
    let t2 = c.clock_now();
    eventually("attempt 2 to be recorded", || async {
        job_state(&c.store, &id).await == (JobState::Ready, 2)
    })
    .await;
    let after2 = c.store.get_job(None, &id).await.expect("job");
    assert_eq!(after2.run_at - t2, TimeDelta::seconds(90));
    // Attempt 3 is the last.
    c.clock.advance(TimeDelta::seconds(90));
    c.store.wake_workers();
    eventually("the job to die", || async {
        job_state(&c.store, &id).await == (JobState::Dead, 3)
    })
    .await;
    stop.send(true).expect("stop");
    handle.await.expect("pool");
}

#[tokio::test]
async fn breaker_transitions_follow_the_policy_with_a_moved_clock() {
    let c = ctx().await;
    let org = org(&c.store, "Lens & Lace").await;
    let policy = BreakerPolicy::default();
    let target = "endpoint:ep_123";
    for i in 1..=4 {
        let state = c
            .store
            .breaker_record(&org.id, target, &policy, false)
            .await
            .expect("record");
        assert_eq!(
            state,
            BreakerState::Closed {
                consecutive_failures: i
            }
        );
    }
    let opened = c
        .store
        .breaker_record(&org.id, target, &policy, false)
        .await
        .expect("record");
    let probe_at = c.clock_now() + TimeDelta::minutes(5);
    assert!(matches!(opened, BreakerState::Open { probe_at: p, .. } if p == probe_at));
    assert_eq!(
        c.store
            .breaker_admit(&org.id, target, &policy)
            .await
            .expect("admit"),
        Admission::Defer { until: probe_at }
    );
    c.clock.advance(TimeDelta::minutes(5));
    assert_eq!(
        c.store
            .breaker_admit(&org.id, target, &policy)
            .await
            .expect("admit"),
        Admission::Probe
    );
    // Only one probe: the next caller waits for its outcome.
    assert!(matches!(
        c.store
            .breaker_admit(&org.id, target, &policy)
            .await
            .expect("admit"),
        Admission::Defer { .. }
    ));
    let listed = c.store.list_breakers(&org.id).await.expect("list");
    assert_eq!(listed[0].state.name(), "half_open");
    assert_eq!(
        c.store
            .breaker_record(&org.id, target, &policy, true)
            .await
            .expect("record"),
        BreakerState::CLOSED
    );
    assert_eq!(
        c.store
            .breaker_admit(&org.id, target, &policy)
            .await
            .expect("admit"),
        Admission::Allow
    );
    // Another organisation's breaker for the same target is its own.
    let other = crate::support::org(&c.store, "Petal & Stem").await;
    assert!(
        c.store
            .list_breakers(&other.id)
            .await
            .expect("list")
            .is_empty()
    );
}

#[tokio::test]
async fn an_open_breaker_defers_work_without_counting_the_attempt() {
    let c = ctx().await;
    let org = org(&c.store, "Lens & Lace").await;
    let policy = BreakerPolicy::default();
    for _ in 0..5 {
        c.store
            .breaker_record(&org.id, "provider:resend", &policy, false)
            .await
            .expect("record");
    }
    let id = c.store.enqueue(job(5)).await.expect("enqueue").id;
    let store = c.store.clone();
    let org_id = org.id;
    let called = Arc::new(Mutex::new(0u32));
    let called_in = called.clone();
    let pool = WorkerPool::new(c.store.clone(), config("w")).register(
        KIND,
        move |_job: wedsync_store::queue::Job| {
            let store = store.clone();
            let policy = policy.clone();
            let called = called_in.clone();
            async move {
                guarded(&store, &org_id, "provider:resend", &policy, || async {
                    *called.lock().expect("called") += 1;
                    Ok::<(), JobError>(())
                })
                .await
            }
        },
        4,
        quick_retry(3),
    );
    let (stop, stopped) = watch::channel(false);
    let handle = pool.spawn(stopped);
    let probe_at = c.clock_now() + TimeDelta::minutes(5);
    eventually("the job to be deferred", || async {
        let j = c.store.get_job(None, &id).await.expect("job");
        j.state == JobState::Ready && j.run_at == probe_at
    })
    .await;
    assert_eq!(
        job_state(&c.store, &id).await,
        (JobState::Ready, 0),
        "a deferral is not an attempt"
    );
    assert_eq!(
        *called.lock().expect("called"),
        0,
        "the provider was not called"
    );
    // After the cool-down the job is the probe; it succeeds and closes the breaker.
    c.clock.advance(TimeDelta::minutes(5));
    c.store.wake_workers();
    eventually("the probe to succeed", || async {
        job_state(&c.store, &id).await.0 == JobState::Succeeded
    })
    .await;
    assert_eq!(
        c.store.list_breakers(&org.id).await.expect("list")[0].state,
        BreakerState::CLOSED
    );
    stop.send(true).expect("stop");
    handle.await.expect("pool");
}

#[tokio::test]
async fn a_dedupe_key_enqueues_once() {
    let c = ctx().await;
    let mut a = job(1);
    a.dedupe_key = Some("evt_same".into());
    let mut b = job(2);
    b.dedupe_key = Some("evt_same".into());
    let first = c.store.enqueue(a).await.expect("enqueue");
    let second = c.store.enqueue(b).await.expect("enqueue");
    assert!(first.created && !second.created);
    assert_eq!(first.id, second.id);
    let all = c
        .store
        .list_jobs(None, &JobFilter::default(), &Default::default())
        .await
        .expect("list");
    assert_eq!(all.data.len(), 1);
    assert_eq!(all.data[0].payload["n"], 1);

    // In bulk: a key seen before, a new key, and the new key again in the same batch.
    let keyed = |n: i64, key: &str| {
        let mut j = job(n);
        j.dedupe_key = Some(key.into());
        j
    };
    let out = c
        .store
        .enqueue_many(vec![
            keyed(3, "evt_same"),
            keyed(4, "evt_new"),
            job(5),
            keyed(6, "evt_new"),
        ])
        .await
        .expect("enqueue many");
    assert_eq!(
        out.iter().map(|e| e.created).collect::<Vec<_>>(),
        [false, true, true, false]
    );
    assert_eq!(out[0].id, first.id);
    assert_eq!(out[3].id, out[1].id);
    let all = c
        .store
        .list_jobs(None, &JobFilter::default(), &Default::default())
        .await
        .expect("list");
    assert_eq!(all.data.len(), 3);
}

#[tokio::test]
async fn concurrency_is_limited_per_kind() {
    let c = ctx().await;
    for n in 0..6 {
        c.store.enqueue(job(n)).await.expect("enqueue");
    }
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (started_tx, mut started) = mpsc::unbounded_channel::<()>();
    let gate_in = gate.clone();
    let pool = WorkerPool::new(c.store.clone(), config("w")).register(
        KIND,
        move |_job: wedsync_store::queue::Job| {
            let gate = gate_in.clone();
            let started_tx = started_tx.clone();
            async move {
                let _ = started_tx.send(());
                gate.acquire()
                    .await
                    .map_err(|e| JobError::transient(e.to_string()))?
                    .forget();
                Ok(())
            }
        },
        2,
        RetryPolicy::default(),
    );
    let (stop, stopped) = watch::channel(false);
    let handle = pool.spawn(stopped);
    recv(&mut started).await;
    recv(&mut started).await;
    let running = || async {
        c.store
            .queue_depth()
            .await
            .expect("depth")
            .iter()
            .filter(|d| d.state == JobState::Running)
            .map(|d| d.count)
            .sum::<i64>()
    };
    assert_eq!(running().await, 2, "only two may run at once");
    gate.add_permits(6);
    for _ in 0..4 {
        recv(&mut started).await;
    }
    eventually("all to finish", || async {
        c.store
            .queue_depth()
            .await
            .expect("depth")
            .iter()
            .all(|d| d.state == JobState::Succeeded)
    })
    .await;
    stop.send(true).expect("stop");
    handle.await.expect("pool");
}

#[tokio::test]
async fn pruning_keeps_each_kind_of_finished_job_for_its_window() {
    let c = ctx().await;
    let done = c.store.enqueue(job(1)).await.expect("enqueue").id;
    let dead = c.store.enqueue(job(2)).await.expect("enqueue").id;
    let waiting = c.store.enqueue(job(3)).await.expect("enqueue").id;
    let claimed = c
        .store
        .claim("w", KIND, 2, TimeDelta::seconds(30))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 2);
    c.store
        .complete("w", std::slice::from_ref(&done))
        .await
        .expect("complete");
    c.store
        .fail("w", &dead, "boom", wedsync_store::queue::AfterFailure::Dead)
        .await
        .expect("fail");
    c.clock.advance(TimeDelta::days(8));
    let now = c.clock_now();
    let pruned = c
        .store
        .prune_jobs(now - TimeDelta::days(7), now - TimeDelta::days(30))
        .await
        .expect("prune");
    assert_eq!(pruned, 1);
    assert!(c.store.get_job(None, &done).await.is_err());
    assert_eq!(job_state(&c.store, &dead).await.0, JobState::Dead);
    assert_eq!(job_state(&c.store, &waiting).await.0, JobState::Ready);
}

#[tokio::test]
async fn a_backlog_of_finished_jobs_is_pruned_in_chunks_to_the_last_one() {
    let c = ctx().await;
    let chunk = usize::try_from(wedsync_store::queue::PRUNE_CHUNK).expect("chunk");
    let n = 2 * chunk + 7;
    c.store
        .enqueue_many((0..n as i64).map(job).collect())
        .await
        .expect("enqueue");
    let mut finished = 0;
    loop {
        let claimed = c
            .store
            .claim("w", KIND, 1000, TimeDelta::seconds(30))
            .await
            .expect("claim");
        if claimed.is_empty() {
            break;
        }
        let ids: Vec<String> = claimed.iter().map(|j| j.id.clone()).collect();
        c.store.complete("w", &ids).await.expect("complete");
        finished += ids.len();
    }
    assert_eq!(finished, n);
    let kept = c.store.enqueue(job(-1)).await.expect("enqueue").id;
    c.clock.advance(TimeDelta::days(8));
    let now = c.clock_now();
    let pruned = c
        .store
        .prune_jobs(now - TimeDelta::days(7), now - TimeDelta::days(30))
        .await
        .expect("prune");
    assert_eq!(pruned, n as u64, "every chunk, the short last one included");
    assert_eq!(job_state(&c.store, &kept).await.0, JobState::Ready);
}

#[tokio::test]
async fn a_shared_rate_limit_holds_across_nodes() {
    let c = ctx().await;
    let other = Store::connect(&c.options(), Arc::new(c.clock.clone()))
        .await
        .expect("second store");
    let rate = Rate::per_minute(5);
    let mut granted = 0;
    for i in 0..6 {
        let store = if i % 2 == 0 { &c.store } else { &other };
        if store
            .rate_take("org_x:sms", &rate, 1)
            .await
            .expect("take")
            .is_ok()
        {
            granted += 1;
        }
    }
    assert_eq!(granted, 5);
    assert_eq!(
        c.store
            .rate_take("org_x:sms", &rate, 1)
            .await
            .expect("take"),
        Err(TimeDelta::seconds(12))
    );
    c.clock.advance(TimeDelta::seconds(12));
    assert_eq!(
        other.rate_take("org_x:sms", &rate, 1).await.expect("take"),
        Ok(())
    );
}

#[tokio::test]
async fn outbox_events_are_published_through_the_queue() {
    let c = ctx().await;
    let org = org(&c.store, "Lens & Lace").await;
    c.store
        .create_couple(
            &org.id,
            crate::support::couple_fields("2027-06-12"),
            &operator(),
        )
        .await
        .expect("couple");
    assert_eq!(c.store.unpublished_count().await.expect("count"), 1);
    let jobs = c
        .store
        .list_jobs(Some(&org.id), &JobFilter::default(), &Default::default())
        .await
        .expect("jobs");
    assert_eq!(jobs.data[0].kind, wedsync_store::outbox::PUBLISH_KIND);
    let pool = WorkerPool::new(c.store.clone(), config("w")).register(
        wedsync_store::outbox::PUBLISH_KIND,
        wedsync_store::outbox::publish_handler(c.store.clone()),
        4,
        RetryPolicy::default(),
    );
    let (stop, stopped) = watch::channel(false);
    let handle = pool.spawn(stopped);
    eventually("the event to be published", || async {
        c.store.unpublished_count().await.expect("count") == 0
    })
    .await;
    stop.send(true).expect("stop");
    handle.await.expect("pool");
}

#[tokio::test]
async fn work_about_todays_weddings_goes_first() {
    let c = ctx().await;
    let org = org(&c.store, "Lens & Lace").await;
    // The clock reads 1 May 2026, 10:00 in London.
    let later = c
        .store
        .create_couple(
            &org.id,
            crate::support::couple_fields("2027-06-12"),
            &operator(),
        )
        .await
        .expect("couple");
    let today = c
        .store
        .create_couple(
            &org.id,
            crate::support::couple_fields("2026-05-01"),
            &operator(),
        )
        .await
        .expect("couple");
    let claimed = c
        .store
        .claim(
            "w",
            wedsync_store::outbox::PUBLISH_KIND,
            1,
            TimeDelta::seconds(30),
        )
        .await
        .expect("claim");
    assert_eq!(
        claimed[0].priority,
        wedsync_core::calendar::PRIORITY_WEDDING_TODAY
    );
    let published = c
        .store
        .outbox_events(&org.id, None, 10)
        .await
        .expect("events");
    let first = published
        .iter()
        .find(|e| claimed[0].payload["event_id"] == e.id.as_str())
        .expect("event");
    assert_eq!(
        first.subject,
        today.id.to_string(),
        "today's wedding overtakes the earlier, routine event"
    );
    assert_ne!(first.subject, later.id.to_string());
}

/// A queue table full of dead row versions is vacuumed by the hub itself on PostgreSQL (this
/// machine's server, like some managed ones, runs with autovacuum off); SQLite has nothing
/// to do.
#[tokio::test]
async fn tables_full_of_dead_rows_are_vacuumed_on_postgres() {
    use sea_orm::ConnectionTrait as _;
    let c = ctx().await;
    let jobs: Vec<NewJob> = (0..3000).map(job).collect();
    c.store.enqueue_many(jobs).await.expect("enqueue");
    let postgres = c.store.backend() == wedsync_store::Backend::Postgres;
    // Delete them all, and have this backend report its counts at commit rather than up to
    // a second later (PostgreSQL 15's statistics are flushed lazily).
    let tx = c.store.connection().begin().await.expect("tx");
    tx.execute_unprepared("DELETE FROM jobs")
        .await
        .expect("delete");
    if postgres {
        tx.execute_unprepared("SELECT pg_stat_force_next_flush()")
            .await
            .expect("flush");
    }
    tx.commit().await.expect("commit");
    let done = c.store.vacuum_where_needed().await.expect("vacuum");
    if postgres {
        // (Whether it then has nothing left to do cannot be asserted: other connections'
        // statistics from the enqueue may still arrive up to a second later.)
        assert!(done.contains(&"jobs".to_owned()), "{done:?}");
    } else {
        assert!(done.is_empty());
    }
}

#[tokio::test]
async fn only_claims_and_outcomes_skip_the_disk_sync() {
    let c = ctx().await;
    // Everything else (enqueues, webhooks stored, journeys) syncs on every commit.
    match wedsync_store::testing::sqlite_synchronous(&c.store)
        .await
        .expect("pragma")
    {
        Some((main, relaxed, writer)) => assert_eq!(
            (main, relaxed, writer),
            (2, 1, 2),
            "FULL, NORMAL, and FULL for the inbound batches that are acknowledged"
        ),
        None => assert_eq!(c.store.backend(), wedsync_store::Backend::Postgres),
    }
    match wedsync_store::testing::pg_synchronous_commit(&c.store)
        .await
        .expect("setting")
    {
        Some((main, relaxed)) => assert_eq!(
            (main.as_str(), relaxed.as_str()),
            ("on", "off"),
            "the relaxed pool's sessions do not wait for the WAL flush"
        ),
        None => assert_eq!(c.store.backend(), wedsync_store::Backend::Sqlite),
    }
    // Claims and outcomes through the relaxed connections see and change the same queue.
    let id = c.store.enqueue(job(1)).await.expect("enqueue").id;
    let claimed = c
        .store
        .claim("w", KIND, 10, TimeDelta::seconds(30))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!(job_state(&c.store, &id).await.0, JobState::Running);
}

#[tokio::test]
async fn an_in_memory_sqlite_store_claims_from_its_own_queue() {
    // Not the embedded default, but a valid URL: claims must not go to a second, empty
    // in-memory database.
    let store = Store::connect(
        &wedsync_store::StoreOptions::new("sqlite::memory:"),
        Arc::new(wedsync_core::clock::SystemClock),
    )
    .await
    .expect("connect");
    store.migrate().await.expect("migrate");
    let id = store.enqueue(job(1)).await.expect("enqueue").id;
    let claimed = store
        .claim("w", KIND, 10, TimeDelta::seconds(30))
        .await
        .expect("claim");
    assert_eq!(
        claimed.iter().map(|j| j.id.clone()).collect::<Vec<_>>(),
        vec![id]
    );
}

/// A handler told of each claimed batch before its jobs run (to read what they need at
/// once), and a deferral that the pool notices without waiting for its idle poll.
struct BatchAware {
    claimed: Arc<Mutex<Vec<Vec<String>>>>,
    ran: mpsc::UnboundedSender<(String, bool)>,
    deferred_once: Arc<Mutex<HashSet<String>>>,
    store: Store,
}

impl wedsync_store::worker::JobHandler for BatchAware {
    fn run(&self, job: wedsync_store::queue::Job) -> wedsync_store::worker::JobFuture {
        let seen = self
            .claimed
            .lock()
            .expect("claimed")
            .iter()
            .any(|batch| batch.contains(&job.id));
        let first = self
            .deferred_once
            .lock()
            .expect("set")
            .insert(job.id.clone());
        let (ran, now) = (self.ran.clone(), self.store.clock().now());
        Box::pin(async move {
            let _ = ran.send((job.id.clone(), seen));
            if first && job.payload["n"] == 0 {
                // Due at once: only a wake-up can bring it back before the idle poll.
                return Err(JobError::Deferred {
                    until: now,
                    reason: "try again".into(),
                });
            }
            Ok(())
        })
    }

    fn claimed(&self, jobs: &[wedsync_store::queue::Job]) {
        self.claimed
            .lock()
            .expect("claimed")
            .push(jobs.iter().map(|j| j.id.clone()).collect());
    }
}

#[tokio::test]
async fn handlers_see_each_claimed_batch_first_and_deferrals_come_back_at_once() {
    let c = ctx().await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(c.store.enqueue(job(n)).await.expect("enqueue").id);
    }
    let claimed = Arc::new(Mutex::new(Vec::new()));
    let (ran, mut runs) = mpsc::unbounded_channel();
    let mut cfg = config("w");
    // An hour, and no reaping or heartbeat meanwhile (each wakes the loop): should the pool
    // miss the deferred job, the test times out.
    cfg.idle_poll = Duration::from_secs(3600);
    cfg.reap_every = Duration::from_secs(3600);
    cfg.heartbeat_every = Duration::from_secs(3600);
    let pool = WorkerPool::new(c.store.clone(), cfg).register(
        KIND,
        BatchAware {
            claimed: claimed.clone(),
            ran,
            deferred_once: Arc::default(),
            store: c.store.clone(),
        },
        8,
        RetryPolicy::default(),
    );
    let (stop, stopped) = watch::channel(false);
    let handle = pool.spawn(stopped);
    let mut runs_seen = Vec::new();
    for _ in 0..6 {
        runs_seen.push(recv(&mut runs).await);
    }
    assert!(
        runs_seen.iter().all(|(_, seen)| *seen),
        "every job's batch was announced before it ran: {runs_seen:?}"
    );
    assert_eq!(
        claimed.lock().expect("claimed")[0].len(),
        5,
        "the five jobs were one claimed batch"
    );
    for id in &ids {
        let id = id.clone();
        eventually("every job to succeed", || {
            let (store, id) = (c.store.clone(), id.clone());
            async move { job_state(&store, &id).await.0 == JobState::Succeeded }
        })
        .await;
    }
    assert_eq!(job_state(&c.store, &ids[0]).await, (JobState::Succeeded, 1));
    stop.send(true).expect("stop");
    handle.await.expect("pool");
}

/// A busy pool does not claim again after every finished job when its last claim came back
/// short; it looks again when woken or when a delayed job comes due. Here the pool is never
/// woken after the delayed job is queued, and its idle poll is an hour: only its timer for
/// the next due job can start it, while another job holds a slot.
#[tokio::test]
async fn a_busy_pool_still_runs_a_delayed_job_when_it_comes_due() {
    let c = ctx().await;
    let mut cfg = config("w");
    cfg.idle_poll = Duration::from_secs(3600);
    cfg.reap_every = Duration::from_secs(3600);
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let hold = Arc::new(tokio::sync::Semaphore::new(0));
    let held = hold.clone();
    let pool = WorkerPool::new(c.store.clone(), cfg).register(
        KIND,
        move |job: wedsync_store::queue::Job| {
            let (seen, held) = (seen_tx.clone(), held.clone());
            async move {
                let n = job.payload["n"].as_i64().unwrap_or(-1);
                let _ = seen.send(n);
                if n == 1 {
                    held.acquire().await.expect("open").forget();
                }
                Ok(())
            }
        },
        4,
        RetryPolicy::default(),
    );
    let (stop, stopped) = watch::channel(false);
    let handle = pool.spawn(stopped);
    c.store.enqueue(job(1)).await.expect("enqueue");
    assert_eq!(recv(&mut seen).await, 1);
    // Queued for 300 ms from now, in a transaction that wakes no one.
    let mut later = job(2);
    later.run_at = Some(c.clock_now() + TimeDelta::milliseconds(300));
    let tx = c.store.connection().begin().await.expect("begin");
    enqueue_in(&tx, c.clock_now(), later)
        .await
        .expect("enqueue");
    tx.commit().await.expect("commit");
    // A third job, queued and woken for, finishes while the delayed one waits: the pool's
    // claim then comes back short of room, and nothing wakes it again.
    c.store.enqueue(job(3)).await.expect("enqueue");
    assert_eq!(recv(&mut seen).await, 3);
    c.clock.advance(TimeDelta::milliseconds(300));
    assert_eq!(
        recv(&mut seen).await,
        2,
        "the delayed job ran on the pool's timer"
    );
    hold.add_permits(1);
    stop.send(true).expect("stop");
    handle.await.expect("pool");
}

//! Prometheus metrics: requests by route and status, latency histograms, and the database
//! pool. The recorder is process-global (the `metrics` facade allows one), so it is
//! installed once and shared by every app in the process, tests included.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Renders the process's metrics in the Prometheus text format.
#[derive(Clone)]
pub struct Metrics(PrometheusHandle);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

static HANDLE: OnceLock<Metrics> = OnceLock::new();

/// Latency buckets in seconds, from a cache hit to a slow provider.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Metrics {
    /// The process's metrics, installing the recorder on first use.
    pub fn global() -> Metrics {
        HANDLE
            .get_or_init(|| {
                let builder = PrometheusBuilder::new()
                    .set_buckets_for_metric(
                        Matcher::Full("http_request_duration_seconds".into()),
                        LATENCY_BUCKETS,
                    )
                    .unwrap_or_else(|_| PrometheusBuilder::new());
                let recorder = builder.build_recorder();
                let handle = recorder.handle();
                if metrics::set_global_recorder(recorder).is_err() {
                    tracing::warn!(
                        "a metrics recorder was already installed; /metrics may be empty"
                    );
                }
                describe();
                Metrics(handle)
            })
            .clone()
    }

    /// The current metrics as Prometheus text.
    pub fn render(&self) -> String {
        self.0.render()
    }
}

fn describe() {
    metrics::describe_counter!(
        "http_requests_total",
        "HTTP requests answered, by method, route and status"
    );
    metrics::describe_histogram!(
        "http_request_duration_seconds",
        metrics::Unit::Seconds,
        "Time to answer an HTTP request, by method, route and status"
    );
    metrics::describe_gauge!(
        "db_pool_connections",
        "Open database connections, by pool (main, or relaxed: job claims and outcomes)"
    );
    metrics::describe_gauge!(
        "db_pool_idle_connections",
        "Idle database connections, by pool (main, or relaxed)"
    );
    describe_queue();
}

/// Records every request. The route label is the matched route template, never the raw
/// path, so ids in paths cannot explode the label set; unmatched paths share one label.
pub async fn track_requests(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(start.elapsed().as_secs_f64());
    response
}

/// Kinds seen at an earlier scrape, so a kind whose jobs are all gone reads zero rather than
/// its last value.
static SEEN_KINDS: std::sync::Mutex<std::collections::BTreeSet<String>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

fn describe_queue() {
    metrics::describe_gauge!(
        "wedsync_jobs",
        "Jobs in the durable queue, by kind and state"
    );
    metrics::describe_gauge!(
        "wedsync_jobs_oldest_ready_age_seconds",
        metrics::Unit::Seconds,
        "How long the oldest due job of each kind has waited"
    );
    metrics::describe_counter!(
        "wedsync_job_claims_total",
        "Jobs claimed by this node's workers, by kind"
    );
    metrics::describe_counter!(
        "wedsync_job_attempts_total",
        "Job attempts finished on this node, by kind and outcome (succeeded, retried, dead, deferred, lease_lost)"
    );
    metrics::describe_gauge!(
        "wedsync_breakers",
        "Circuit breakers by state, across organisations"
    );
}

/// Sets the queue and breaker gauges from the database (at scrape time, so every node
/// reports the shared queue consistently).
pub async fn record_queue(store: &wedsync_store::Store) -> Result<(), wedsync_store::StoreError> {
    use wedsync_store::queue::JobState;
    let depth = store.queue_depth().await?;
    let ages = store.oldest_ready_age().await?;
    let breakers = store.breaker_counts().await?;
    let mut seen = SEEN_KINDS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    seen.extend(depth.iter().map(|d| d.kind.clone()));
    for kind in seen.iter() {
        for state in [
            JobState::Ready,
            JobState::Running,
            JobState::Succeeded,
            JobState::Dead,
            JobState::Discarded,
        ] {
            let count = depth
                .iter()
                .find(|d| &d.kind == kind && d.state == state)
                .map_or(0, |d| d.count);
            metrics::gauge!("wedsync_jobs", "kind" => kind.clone(), "state" => state.as_str())
                .set(count as f64);
        }
        let age = ages
            .iter()
            .find(|(k, _)| k == kind)
            .map_or(0.0, |(_, a)| a.num_milliseconds() as f64 / 1000.0);
        metrics::gauge!("wedsync_jobs_oldest_ready_age_seconds", "kind" => kind.clone())
            .set(age.max(0.0));
    }
    for state in ["closed", "open", "half_open"] {
        let count = breakers
            .iter()
            .find(|(s, _)| s == state)
            .map_or(0, |(_, n)| *n);
        metrics::gauge!("wedsync_breakers", "state" => state).set(count as f64);
    }
    Ok(())
}

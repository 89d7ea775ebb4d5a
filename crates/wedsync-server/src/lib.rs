//! WedSync's HTTP surface.
//!
//! Module map:
//! - [`app`] / [`run`] (here): the router with its layers, and serving it until shutdown.
//! - [`error`]: RFC 9457 problem+json, the one error shape.
//! - [`group_commit`]: stores concurrent inbound webhooks in shared transactions.
//! - [`extract`]: JSON, query and authentication extractors that reject with problems.
//! - [`source_cache`]: a short-lived cache of sources for the inbound hot path.
//! - [`routes`]: the `/v1` API, one module per resource, plus health and docs.
//! - [`telemetry`]: Prometheus metrics for requests and the database pool.
//!
//! Invariants: only this crate knows HTTP routing; every `/v1` handler takes a [`extract::Caller`]
//! and scopes every store call by its organisation; no handler sleeps.

pub mod error;
pub mod extract;
pub mod group_commit;
pub mod routes;
pub mod source_cache;
pub mod telemetry;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, Method, Uri};
use axum::response::IntoResponse;
use tower_http::LatencyUnit;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use wedsync_core::clock::SharedClock;
use wedsync_store::Store;

use crate::error::ApiError;

/// Settings the HTTP layer needs.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
    /// Days before a wedding within which moving its date needs confirmation.
    pub wedding_date_confirm_days: i64,
    /// Largest inbound webhook body, in bytes.
    pub inbound_body_limit: usize,
    /// How much a source's rate limit is raised in peak season (May to September).
    pub inbound_peak_multiplier: f64,
    /// How long a rotated source secret keeps verifying.
    pub rotation_grace: chrono::TimeDelta,
    /// How long a rotated endpoint secret keeps signing beside the new one.
    pub endpoint_rotation_grace: chrono::TimeDelta,
    /// How long an `Idempotency-Key` on `POST /v1/messages` is honoured.
    pub idempotency_window: chrono::TimeDelta,
    /// The hub's public URL, for unsubscribe and tracking links in emails (none: no links).
    pub public_url: Option<String>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            body_limit: 1024 * 1024,
            wedding_date_confirm_days: 30,
            inbound_body_limit: 1024 * 1024,
            inbound_peak_multiplier: 3.0,
            rotation_grace: chrono::TimeDelta::hours(24),
            endpoint_rotation_grace: chrono::TimeDelta::hours(24),
            idempotency_window: chrono::TimeDelta::hours(24),
            public_url: None,
        }
    }
}

/// Everything a handler can reach, behind one reference count: axum clones the state for
/// every request, and cloning the parts one by one cost a dozen contended atomic updates
/// (and two string copies) per request on the inbound hot path.
#[derive(Clone, Debug)]
pub struct AppState(Arc<AppParts>);

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

/// The parts of [`AppState`].
#[derive(Debug)]
pub struct AppParts {
    /// The database.
    pub store: Store,
    /// The injected clock.
    pub clock: SharedClock,
    /// HTTP settings.
    pub settings: Arc<HttpSettings>,
    /// Renders `/metrics`.
    pub metrics: telemetry::Metrics,
    /// Per-source inbound rate limits (per node: the hot path cannot afford a database
    /// round trip per request).
    pub inbound_limiter: Arc<wedsync_core::ratelimit::KeyedLimiter>,
    /// Stores verified inbound requests in shared transactions.
    pub committer: group_commit::GroupCommitter,
    /// Sources with their secrets, for the inbound hot path.
    pub sources: Arc<source_cache::SourceCache>,
    /// What the notification routes need.
    pub notify: NotifyState,
}

/// The notification routes' shared parts.
#[derive(Clone, Debug)]
pub struct NotifyState {
    /// The provider catalog, to check provider settings when saved.
    pub catalog: Arc<wedsync_notify::catalog::Catalog>,
    /// Signs and checks unsubscribe and tracking links (none without a public URL or key).
    pub links: Option<wedsync_notify::links::Links>,
    /// Live in-app messages; the notification worker publishes, inbox streams listen.
    pub inbox: tokio::sync::broadcast::Sender<wedsync_notify::worker::InboxEvent>,
    /// The wedding calendar alerts are raised under.
    pub calendar: wedsync_core::calendar::CalendarRules,
    /// The hub's VAPID public key, for browsers subscribing to Web Push.
    pub vapid_public_key: Option<String>,
}

impl AppState {
    /// State over `store` with `settings`, on the store's clock.
    pub fn new(store: Store, settings: HttpSettings) -> Self {
        let clock = store.clock().clone();
        let committers = if store.backend() == wedsync_store::Backend::Postgres {
            4
        } else {
            1
        };
        let links = settings.public_url.as_deref().and_then(|base| {
            store
                .derived_key(wedsync_notify::links::KEY_LABEL)
                .ok()
                .map(|key| wedsync_notify::links::Links::new(base, key))
        });
        let notify = NotifyState {
            catalog: Arc::new(
                wedsync_notify::catalog::Catalog::builtin()
                    .expect("the built-in provider catalog parses (a unit test checks it)"),
            ),
            links,
            inbox: tokio::sync::broadcast::channel(1024).0,
            vapid_public_key: store
                .derived_key(wedsync_notify::push::KEY_LABEL)
                .ok()
                .and_then(|seed| {
                    wedsync_notify::push::Vapid::from_seed(&seed, "mailto:postmaster@localhost")
                        .ok()
                })
                .map(|v| v.public_key().to_owned()),
            calendar: wedsync_core::calendar::CalendarRules::default(),
        };
        Self(Arc::new(AppParts {
            notify,
            sources: Arc::default(),
            committer: group_commit::GroupCommitter::spawn(store.clone(), committers, 256),
            inbound_limiter: Arc::new(wedsync_core::ratelimit::KeyedLimiter::new(
                clock.clone(),
                100_000,
            )),
            store,
            clock,
            settings: Arc::new(settings),
            metrics: telemetry::Metrics::global(),
        }))
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole application as a router, ready to serve or to test with `oneshot`.
pub fn app(state: AppState) -> Router {
    let body_limit = state.settings.body_limit;
    let (api, _openapi) = routes::router().split_for_parts();
    api.merge(routes::meta::router())
        .merge(routes::inbound::router(state.settings.inbound_body_limit))
        .merge(routes::notifications::public_router())
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(telemetry::track_requests))
        .layer(CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                tracing::error!("handler panicked");
                ApiError::internal().into_response()
            },
        ))
        .layer(
            TraceLayer::new_for_http()
                .on_response(
                    DefaultOnResponse::new()
                        .level(tracing::Level::INFO)
                        .latency_unit(LatencyUnit::Millis),
                )
                .make_span_with(|req: &Request| {
                    let request_id = req
                        .headers()
                        .get(&REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    let route = req
                        .extensions()
                        .get::<MatchedPath>()
                        .map(MatchedPath::as_str)
                        .unwrap_or_default();
                    tracing::info_span!(
                        "request",
                        method = %req.method(),
                        path = %req.uri().path(),
                        route,
                        request_id,
                        org_id = tracing::field::Empty,
                    )
                }),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// The OpenAPI document, generated from the route annotations.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes::router().split_for_parts().1
}

async fn no_route(uri: Uri) -> ApiError {
    ApiError::no_route(uri.path())
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::method_not_allowed(method.as_str(), uri.path())
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets in-flight requests finish
/// (for at most `grace`) before returning.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let (stopping_tx, stopping_rx) = tokio::sync::watch::channel(false);
    let service = app(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let serve = axum::serve(listener, service).with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = stopping_tx.send(true);
    });
    let mut stopping = stopping_rx;
    tokio::select! {
        result = serve => result,
        _ = async {
            let _ = stopping.wait_for(|s| *s).await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(?grace, "in-flight requests did not finish within the grace period");
            Ok(())
        }
    }
}

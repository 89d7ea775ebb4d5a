//! `POST /v1/inbound/{source_id}`: signed webhooks from providers. No API key: the signature
//! is the authentication.
//!
//! Pipeline: size limit → content type → source (unknown or disabled: 404) → IP allow-list →
//! per-source rate limit (429 with `Retry-After`) → signature and timestamp (401, with the
//! reason only in logs and metrics) → normalise (400 saying what is wrong) → store the raw
//! request and its canonical events in one transaction, or recognise a duplicate → answer →
//! the queue routes each event. A rejected request stores nothing but a counter and a log line.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Serialize;
use wedsync_core::id::SourceId;
use wedsync_core::source::Provider;
use wedsync_inbound::{Encoding, GenericHmac, InboundRequest, Scheme, Secret};
use wedsync_store::inbound::{IncomingRequest, Ingested, NewEvent};

use crate::AppState;
use crate::error::ApiError;

/// Headers never stored with a request.
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
];

/// Signature headers: stored with their name but not their value. A signature is no secret,
/// but whoever reads a stored request has no use for it, and within the timestamp tolerance it
/// would let them replay the delivery.
const SIGNATURE_HEADERS: &[&str] = &[
    "stripe-signature",
    "webhook-signature",
    "svix-signature",
    "x-hubspot-signature",
    "x-hubspot-signature-v3",
    "x-slack-signature",
    "x-pagerduty-signature",
];

/// The headers kept with a stored request: credentials dropped, signatures redacted
/// (including a generic source's own signature header).
fn stored_headers(pairs: Vec<(String, String)>, generic: Option<&str>) -> Vec<(String, String)> {
    pairs
        .into_iter()
        .filter(|(k, _)| !SECRET_HEADERS.contains(&k.as_str()))
        .map(|(k, v)| {
            let signature = SIGNATURE_HEADERS.contains(&k.as_str())
                || generic.is_some_and(|g| g.eq_ignore_ascii_case(&k));
            if signature {
                (k, "[redacted]".to_owned())
            } else {
                (k, v)
            }
        })
        .collect()
}

/// The route, with its own body limit.
pub fn router(body_limit: usize) -> Router<AppState> {
    Router::new().route(
        "/v1/inbound/{source_id}",
        post(receive).layer(DefaultBodyLimit::max(body_limit)),
    )
}

#[derive(Serialize)]
struct Accepted {
    status: &'static str,
    request_id: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    event_ids: Vec<String>,
}

fn scheme_for(
    provider: Provider,
    generic: Option<&wedsync_core::source::GenericHmacConfig>,
) -> Result<Scheme, ApiError> {
    Ok(match provider {
        Provider::Stripe => Scheme::Stripe,
        Provider::StandardWebhooks | Provider::Svix => Scheme::StandardWebhooks,
        Provider::Hubspot => Scheme::HubSpotV3,
        Provider::Slack => Scheme::SlackV0,
        Provider::Pagerduty => Scheme::PagerDutyV3,
        Provider::Twilio => Scheme::Twilio,
        Provider::Tave | Provider::Zapier | Provider::Generic => {
            let g = generic
                .ok_or_else(|| ApiError::unavailable("the source has no signature description"))?;
            Scheme::Generic(GenericHmac {
                signature_header: g.signature_header.clone(),
                prefix: g.prefix.clone(),
                encoding: if g.encoding == "base64" {
                    Encoding::Base64
                } else {
                    Encoding::Hex
                },
                signed_content: g.signed_content.clone(),
                timestamp_header: g.timestamp_header.clone(),
                id_header: g.id_header.clone(),
            })
        }
    })
}

fn normalize_provider(provider: Provider) -> wedsync_normalize::Provider {
    use wedsync_normalize::Provider as N;
    match provider {
        Provider::Stripe => N::Stripe,
        Provider::StandardWebhooks => N::StandardWebhooks,
        Provider::Svix => N::Svix,
        Provider::Hubspot => N::Hubspot,
        Provider::Slack => N::Slack,
        Provider::Pagerduty => N::Pagerduty,
        Provider::Tave => N::Tave,
        Provider::Zapier => N::Zapier,
        Provider::Generic => N::Generic,
        Provider::Twilio => N::Twilio,
    }
}

fn rejected(provider: &str, reason: &'static str) {
    metrics::counter!("wedsync_inbound_requests_total", "provider" => provider.to_owned(), "outcome" => reason).increment(1);
}

/// The public URL the sender called (HubSpot signs it); behind a proxy, from its headers.
fn public_url(headers: &HeaderMap, uri: &Uri) -> String {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let scheme = get("x-forwarded-proto").unwrap_or("http");
    let host = get("x-forwarded-host")
        .or_else(|| get("host"))
        .unwrap_or("localhost");
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    format!("{scheme}://{host}{path}")
}

async fn receive(
    State(state): State<AppState>,
    Path(raw_id): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match handle(state, raw_id, peer, method, uri, headers, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn handle(
    state: AppState,
    raw_id: String,
    peer: SocketAddr,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|rejection| {
        rejected("unknown", "too_large");
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::payload_too_large(format!(
                "webhook bodies are limited to {} bytes",
                state.settings.inbound_body_limit
            ))
        } else {
            ApiError::bad_request(rejection.body_text())
        }
    })?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if !matches!(
        essence.as_str(),
        "application/json" | "application/x-www-form-urlencoded"
    ) {
        rejected("unknown", "unsupported_media_type");
        return Err(ApiError::unsupported_media_type(
            "webhooks must be application/json or application/x-www-form-urlencoded",
        ));
    }
    let source_id: SourceId = raw_id.parse().map_err(|_| ApiError::not_found("source"))?;
    let verifying = match state.sources.get(&state.store, &source_id).await? {
        Some(v) if v.source.enabled => v,
        _ => {
            rejected("unknown", "unknown_source");
            return Err(ApiError::not_found("source"));
        }
    };
    let source = &verifying.source;
    let provider = source.provider.as_str();
    if !wedsync_store::sources::ip_allowed(&source.config.ip_allowlist, peer.ip()) {
        rejected(provider, "ip_not_allowed");
        tracing::warn!(source = %source.id, peer = %peer.ip(), "inbound request from an address outside the source's allow-list");
        return Err(ApiError::forbidden(
            "this address may not send to this source",
        ));
    }
    let now = state.clock.now();
    let mut rate = wedsync_core::ratelimit::Rate::per_minute(source.config.rate_per_minute);
    if wedsync_core::calendar::season(now.date_naive()) == wedsync_core::calendar::Season::Peak {
        rate = rate.scaled(state.settings.inbound_peak_multiplier);
    }
    if let Err(wait) = state
        .inbound_limiter
        .check(&source.id.to_string(), &rate, 1)
    {
        rejected(provider, "rate_limited");
        let seconds = (wait.num_milliseconds() + 999) / 1000;
        let mut response = ApiError::too_many_requests(format!(
            "this source may send {} requests a minute",
            rate.capacity
        ))
        .into_response();
        if let Ok(value) = HeaderValue::from_str(&seconds.max(1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return Ok(response);
    }

    // Verify over the exact bytes received.
    let pairs: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| {
            v.to_str()
                .ok()
                .map(|v| (k.as_str().to_owned(), v.to_owned()))
        })
        .collect();
    let url = public_url(&headers, &uri);
    let scheme = scheme_for(source.provider, source.config.generic.as_ref())?;
    let secrets: Vec<Secret> = verifying
        .valid_secrets(now)
        .into_iter()
        .map(|s| Secret::new(s.to_vec()))
        .collect();
    let request = InboundRequest {
        method: method.as_str(),
        url: &url,
        headers: &pairs,
        body: &body,
    };
    let tolerance = chrono::TimeDelta::seconds(i64::from(source.config.tolerance_seconds));
    let verified = match wedsync_inbound::verify(&scheme, &request, &secrets, now, tolerance) {
        Ok(v) => v,
        Err(rejection) => {
            rejected(provider, rejection.reason_code());
            tracing::warn!(source = %source.id, reason = rejection.reason_code(), "inbound signature rejected");
            return Err(ApiError::unauthorized(
                "the request's signature could not be verified",
            ));
        }
    };

    let input = wedsync_normalize::Input {
        provider: normalize_provider(source.provider),
        content_type: &content_type,
        body: &body,
        delivery_id: verified.delivery_id.as_deref(),
        event_id_pointer: source
            .config
            .generic
            .as_ref()
            .and_then(|g| g.event_id_pointer.as_deref()),
        received_at: now,
    };
    let normalized = wedsync_normalize::normalize(&input).map_err(|e| {
        rejected(provider, "malformed");
        ApiError::bad_request(e.to_string())
    })?;
    let events = normalized
        .events
        .into_iter()
        .map(|c| NewEvent {
            event_type: c.event_type,
            subject: c.subject,
            time: c.time,
            data: c.data,
            couple_ref: c.couple_ref,
            booking_ref: c.booking_ref,
        })
        .collect();
    let incoming = IncomingRequest {
        source_id: source.id,
        org_id: verifying.org_id,
        headers: stored_headers(
            pairs,
            source
                .config
                .generic
                .as_ref()
                .map(|g| g.signature_header.as_str()),
        ),
        content_type,
        body: body.to_vec(),
        dedupe_key: normalized.dedupe_key,
    };
    let outcome = state
        .committer
        .submit(incoming, events)
        .await
        .map_err(|e| {
            rejected(provider, "store_failed");
            ApiError::unavailable(format!("{e}; retry later"))
        })?;
    let (status, reply) = match outcome {
        Ingested::Accepted {
            request_id,
            event_ids,
        } => (
            "accepted",
            Accepted {
                status: "accepted",
                request_id,
                event_ids,
            },
        ),
        Ingested::Duplicate { request_id } => (
            "duplicate",
            Accepted {
                status: "duplicate",
                request_id,
                event_ids: Vec::new(),
            },
        ),
    };
    metrics::counter!("wedsync_inbound_requests_total", "provider" => provider.to_owned(), "outcome" => status).increment(1);
    Ok((StatusCode::OK, axum::Json(reply)).into_response())
}

//! Extractors whose rejections speak problem+json: JSON bodies, query strings, and the
//! authenticated caller.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;
use wedsync_core::org::Role;
use wedsync_store::api_keys::Principal;

use crate::AppState;
use crate::error::ApiError;

/// A JSON body; malformed JSON is 400, a wrong shape 422, a missing or wrong content type
/// 415, and an oversized body 413, each as problem+json.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonSyntaxError(e) => ApiError::malformed_json(e.body_text()),
        JsonRejection::JsonDataError(e) => ApiError::invalid_body(e.body_text()),
        JsonRejection::MissingJsonContentType(_) => ApiError::unsupported_media_type(
            "the body must be JSON, sent with Content-Type: application/json",
        ),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::payload_too_large("the request body is larger than this server accepts")
        }
        other => ApiError::bad_request(other.body_text()),
    }
}

/// A query string; a malformed one is 400 problem+json naming the parameter.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                Err(ApiError::bad_request(e.body_text()))
            }
            Err(other) => Err(ApiError::bad_request(other.body_text())),
        }
    }
}

/// The authenticated caller: `Authorization: Bearer wsk_…`, not revoked.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl Caller {
    /// Fails with 403 unless the caller's role is at least `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.0.role >= role {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this needs the {role} role or higher; the key in use has the {} role",
                self.0.role
            )))
        }
    }

    /// The actor recorded in the audit log.
    pub fn actor(&self) -> wedsync_store::Actor {
        wedsync_store::Actor::ApiKey(self.0.key_id)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::unauthorized(
                "send an API key as Authorization: Bearer wsk_…",
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be Bearer wsk_…")
            })?;
        if !wedsync_store::api_keys::looks_like_key(token) {
            return Err(ApiError::unauthorized("the API key is malformed"));
        }
        match state.store.authenticate(token).await? {
            Some(principal) => {
                tracing::Span::current()
                    .record("org_id", tracing::field::display(&principal.org_id));
                Ok(Caller(principal))
            }
            // Unknown and revoked keys get the same answer, so probing learns nothing.
            None => Err(ApiError::unauthorized("the API key is not valid")),
        }
    }
}

/// The `Idempotency-Key` request header, when there is one (it must be visible ASCII: 400
/// otherwise).
pub fn idempotency_key(headers: &axum::http::HeaderMap) -> Result<Option<&str>, ApiError> {
    headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::bad_request("Idempotency-Key must be visible ASCII"))
        })
        .transpose()
}

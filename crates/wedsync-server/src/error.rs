//! RFC 9457 problem details: the one error shape every route answers with.
//!
//! `type` URIs are stable identifiers clients may switch on; `title` is fixed per type;
//! `detail` explains this occurrence. Internal errors are logged with their cause and
//! answered with an opaque 500, never with database or stack details.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use wedsync_core::validate::{FieldError, ValidationErrors};
use wedsync_store::StoreError;

/// Where problem type URIs live.
pub const PROBLEM_BASE: &str = "https://wedsync.dev/problems/";

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A stable URI identifying the kind of problem.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// A short, fixed summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong this time, for a person.
    pub detail: String,
    /// The fields that failed validation, when that is the problem.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// An error a handler returns; it renders as problem+json.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    slug: &'static str,
    title: &'static str,
    detail: String,
    errors: Vec<FieldError>,
    www_authenticate: bool,
}

impl ApiError {
    fn new(
        status: StatusCode,
        slug: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            slug,
            title,
            detail: detail.into(),
            errors: Vec::new(),
            www_authenticate: false,
        }
    }

    /// 404: the object does not exist for this caller (whether or not it exists elsewhere).
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            format!("no such {what}"),
        )
    }

    /// 401: no usable credentials.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            detail,
        );
        e.www_authenticate = true;
        e
    }

    /// 403: authenticated, but the role does not allow this.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
    }

    /// 400: the request could not be understood.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad request",
            detail,
        )
    }

    /// 400: the body is not valid JSON.
    pub fn malformed_json(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "malformed-json",
            "Malformed JSON",
            detail,
        )
    }

    /// 422: well-formed JSON that does not fit the expected shape.
    pub fn invalid_body(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            "Invalid request body",
            detail,
        )
    }

    /// 422: one or more fields broke a rule.
    pub fn validation(errors: ValidationErrors) -> Self {
        let mut e = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            "Validation failed",
            errors.to_string(),
        );
        e.errors = errors.0;
        e
    }

    /// 415: the body is not JSON.
    pub fn unsupported_media_type(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            detail,
        )
    }

    /// 413: the body is over the limit.
    pub fn payload_too_large(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "Payload too large",
            detail,
        )
    }

    /// 404 for a path no route serves.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "no-route",
            "No such route",
            format!("no route for {path}"),
        )
    }

    /// 405 for a method a route does not serve.
    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            format!("{method} is not allowed on {path}"),
        )
    }

    /// 409: conflicts with the current state.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", "Conflict", detail)
    }

    /// 429: over a rate limit.
    pub fn too_many_requests(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many requests",
            detail,
        )
    }

    /// 503: a dependency is not ready.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
            detail,
        )
    }

    /// 500, with nothing of the cause in the response.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal server error",
            "something went wrong on our side; it has been logged",
        )
    }

    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The problem document.
    pub fn problem(&self) -> Problem {
        Problem {
            type_uri: format!("{PROBLEM_BASE}{}", self.slug),
            title: self.title.to_owned(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            errors: self.errors.clone(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => ApiError::not_found("object"),
            StoreError::Conflict(detail) => ApiError::conflict(detail),
            StoreError::Invalid(errors) => ApiError::validation(errors),
            StoreError::NeedsConfirmation(detail) => Self::new(
                StatusCode::CONFLICT,
                "wedding-date-confirmation-required",
                "Confirmation required",
                detail,
            ),
            err @ (StoreError::SchemaTooNew { .. } | StoreError::SchemaBehind { .. }) => {
                ApiError::unavailable(err.to_string())
            }
            StoreError::Config(_) | StoreError::Db(_) => {
                tracing::error!(error = %err, "store error");
                ApiError::internal()
            }
        }
    }
}

impl From<ValidationErrors> for ApiError {
    fn from(errors: ValidationErrors) -> Self {
        ApiError::validation(errors)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.www_authenticate {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Shorthand for handler results.
pub type ApiResult<T> = Result<T, ApiError>;

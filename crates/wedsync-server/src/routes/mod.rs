//! The `/v1` API, one module per resource, and the operational endpoints in [`meta`].

pub mod api_keys;
pub mod audit;
pub mod bookings;
pub mod couples;
pub mod crm;
pub mod endpoints;
pub mod events;
pub mod inbound;
pub mod jobs;
pub mod journeys;
pub mod members;
pub mod meta;
pub mod notifications;
pub mod organization;
pub mod sources;

use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::AppState;
use crate::error::ApiError;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "WedSync API",
        description = "The integration hub for wedding businesses. Every /v1 route takes an API key as `Authorization: Bearer wsk_…`; errors are RFC 9457 problem+json.",
        license(name = "AGPL-3.0-only", identifier = "AGPL-3.0-only")
    ),
    modifiers(&BearerAuth),
    security(("api_key" = [])),
    components(schemas(crate::error::Problem)),
    tags(
        (name = "organization", description = "The organisation the API key belongs to"),
        (name = "members", description = "Team members and roles"),
        (name = "api-keys", description = "API keys"),
        (name = "couples", description = "Couples (the vendor's clients)"),
        (name = "bookings", description = "Bookings of a couple"),
        (name = "audit", description = "The hash-chained audit log"),
        (name = "sources", description = "Inbound webhook sources and their signing secrets"),
        (name = "events", description = "Canonical events received from sources (CloudEvents 1.0)"),
        (name = "jobs", description = "Durable work: jobs, retries, dead letters and circuit breakers"),
        (name = "endpoints", description = "Outbound webhooks (Standard Webhooks): endpoints, messages, deliveries and attempts"),
        (name = "journeys", description = "Journeys: documents (drafts with optimistic locking), published versions, rollback, validation, templates"),
        (name = "notifications", description = "Notifications and alerts: send, templates, providers with failover, quotas, quiet hours, escalation, the in-app inbox"),
        (name = "crm", description = "CRM connections that journeys' crm_update steps write with"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("wsk_…")
                    .description(Some("An organisation API key, created with `wedsync api-key create` or POST /v1/api-keys"))
                    .build(),
            ),
        );
    }
}

/// Every documented route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(organization::router())
        .merge(members::router())
        .merge(api_keys::router())
        .merge(couples::router())
        .merge(bookings::router())
        .merge(audit::router())
        .merge(jobs::router())
        .merge(sources::router())
        .merge(events::router())
        .merge(endpoints::router())
        .merge(notifications::router())
        .merge(journeys::router())
        .merge(crm::router())
}

/// Paging parameters every list takes.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Paging {
    /// Items per page, 1 to 100 (default 50).
    pub limit: Option<u64>,
    /// The `next_cursor` of the previous page.
    pub after: Option<String>,
}

impl Paging {
    pub(crate) fn request(&self) -> Result<wedsync_store::page::PageRequest, ApiError> {
        if let Some(limit) = self.limit
            && !(1..=wedsync_store::page::MAX_LIMIT).contains(&limit)
        {
            return Err(ApiError::bad_request(format!(
                "limit must be between 1 and {}",
                wedsync_store::page::MAX_LIMIT
            )));
        }
        Ok(wedsync_store::page::PageRequest {
            limit: self.limit,
            after: self.after.clone(),
        })
    }
}

/// A page of results.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ListResponse<T> {
    /// The items, oldest first.
    pub data: Vec<T>,
    /// Pass as `after` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

impl<T> From<wedsync_store::page::Page<T>> for ListResponse<T> {
    fn from(page: wedsync_store::page::Page<T>) -> Self {
        Self {
            data: page.data,
            next_cursor: page.next_cursor,
        }
    }
}

/// Deserialises a field that may be absent (leave alone), `null` (clear) or a value (set).
pub(crate) fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Parses a typed id from a path; an id of the wrong shape cannot exist, so it is a 404.
pub(crate) fn path_id<T: std::str::FromStr>(raw: &str, what: &str) -> Result<T, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found(what))
}

//! Notifications: `/v1/notifications` (send, bulk, list, history, statistics),
//! `/v1/templates` (with preview), `/v1/notification-providers`, `/v1/notification-settings`,
//! recipients' preferences, `/v1/alerts` (raise, acknowledge, resolve) and the in-app
//! `/v1/inbox` with its live stream. The public one-click unsubscribe, open pixel and click
//! redirect live in [`public_router`].

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wedsync_core::id::{AlertId, CoupleId};
use wedsync_core::notify::NotifyChannel;
use wedsync_core::org::Role;
use wedsync_core::validate::ValidationErrors;
use wedsync_notify::links::Purpose;
use wedsync_store::StoreError;
use wedsync_store::notify::{
    Alert, AlertInput, HistoryEntry, Notification, NotificationFilter, NotificationInput,
    Preferences, Provider, ProviderInput, Recipient, Settings, StatRow, Template, TemplateInput,
};

use super::{ListResponse, Paging};
use crate::AppState;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, ApiQuery, Caller};

/// The routes under `/v1`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_notifications, send_notification))
        .routes(routes!(send_bulk))
        .routes(routes!(notification_stats))
        .routes(routes!(get_notification))
        .routes(routes!(list_templates, put_template))
        .routes(routes!(delete_template))
        .routes(routes!(preview_template))
        .routes(routes!(list_providers, create_provider))
        .routes(routes!(delete_provider))
        .routes(routes!(get_settings, put_settings))
        .routes(routes!(vapid_key))
        .routes(routes!(get_preferences, put_preferences))
        .routes(routes!(list_alerts, raise_alert))
        .routes(routes!(get_alert))
        .routes(routes!(acknowledge_alert))
        .routes(routes!(resolve_alert))
        .routes(routes!(list_inbox))
        .routes(routes!(read_inbox))
        .routes(routes!(stream_inbox))
}

fn missing(what: &'static str) -> impl Fn(StoreError) -> ApiError {
    move |e| match e {
        StoreError::NotFound => ApiError::not_found(what),
        other => other.into(),
    }
}

/// A notification with its history.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NotificationDetail {
    /// The notification.
    pub notification: Notification,
    /// Every change, oldest first, with its reason.
    pub history: Vec<HistoryEntry>,
}

/// Filters for notifications.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NotificationQuery {
    /// `queued`, `deferred`, `sent`, `delivered`, `failed`, `bounced`, `blocked`.
    pub status: Option<String>,
    /// Only this channel.
    pub channel: Option<String>,
    /// Only about this couple.
    pub couple_id: Option<String>,
    /// Only this alert's.
    pub alert_id: Option<String>,
    /// Items per page.
    pub limit: Option<u64>,
    /// The previous page's `next_cursor`.
    pub after: Option<String>,
}

fn channel_of(s: &str, field: &str) -> Result<NotifyChannel, ApiError> {
    s.parse()
        .map_err(|e: String| ApiError::validation(ValidationErrors::single(field, e)))
}

/// Lists notifications; blocked and deferred ones carry their reason.
#[utoipa::path(get, path = "/v1/notifications", tag = "notifications", params(NotificationQuery),
    responses((status = 200, body = ListResponse<Notification>), (status = 403, body = Problem)))]
async fn list_notifications(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<NotificationQuery>,
) -> ApiResult<Json<ListResponse<Notification>>> {
    caller.require(Role::Viewer)?;
    let page = Paging {
        limit: q.limit,
        after: q.after,
    }
    .request()?;
    let filter = NotificationFilter {
        status: q.status,
        channel: q
            .channel
            .as_deref()
            .map(|c| channel_of(c, "channel"))
            .transpose()?,
        couple_id: q
            .couple_id
            .as_deref()
            .map(|c| {
                c.parse::<CoupleId>()
                    .map_err(|e| ApiError::bad_request(e.to_string()))
            })
            .transpose()?,
        alert_id: q
            .alert_id
            .as_deref()
            .map(|c| {
                c.parse::<AlertId>()
                    .map_err(|e| ApiError::bad_request(e.to_string()))
            })
            .transpose()?,
        ..Default::default()
    };
    Ok(Json(
        state
            .store
            .list_notifications(&caller.0.org_id, &filter, &page)
            .await?
            .into(),
    ))
}

/// Sends one notification: it is queued at once (202) and the worker decides when it goes;
/// `Idempotency-Key` is honoured for 24 hours.
#[utoipa::path(post, path = "/v1/notifications", tag = "notifications", request_body = NotificationInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeat-safe key, 24 hours")),
    responses((status = 202, body = Notification), (status = 200, description = "an earlier request with the same key", body = Notification),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn send_notification(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(input): ApiJson<NotificationInput>,
) -> ApiResult<(StatusCode, Json<Notification>)> {
    caller.require(Role::Editor)?;
    let key = crate::extract::idempotency_key(&headers)?;
    let (n, created) = state
        .store
        .create_notification(
            &caller.0.org_id,
            input,
            key,
            state.settings.idempotency_window,
        )
        .await?;
    let status = if created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(n)))
}

/// One recipient of a bulk send.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRecipient {
    /// Who.
    pub to: Recipient,
    /// Values for this recipient, merged over the shared `data`.
    #[serde(default)]
    pub data: Option<serde_json::Value>,
}

/// A bulk send: one message to many recipients.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkInput {
    /// The shared message (its `to` is ignored).
    pub message: NotificationInput,
    /// Up to 1,000 recipients, stored 50 per transaction; every limit applies to each.
    pub recipients: Vec<BulkRecipient>,
}

/// The notifications a bulk send created.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BulkCreated {
    /// Their ids, in recipient order.
    pub ids: Vec<String>,
}

/// Sends one message to many recipients; with an `Idempotency-Key` (honoured for 24 hours)
/// a retry creates only what the first attempt did not (each recipient at most once).
#[utoipa::path(post, path = "/v1/notifications/bulk", tag = "notifications", request_body = BulkInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeat-safe key, 24 hours")),
    responses((status = 202, body = BulkCreated), (status = 200, description = "an earlier request with the same key created them all", body = BulkCreated),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn send_bulk(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(input): ApiJson<BulkInput>,
) -> ApiResult<(StatusCode, Json<BulkCreated>)> {
    caller.require(Role::Editor)?;
    let key = crate::extract::idempotency_key(&headers)?;
    let recipients = input
        .recipients
        .into_iter()
        .map(|r| (r.to, r.data))
        .collect();
    let (ids, created) = state
        .store
        .create_bulk(
            &caller.0.org_id,
            input.message,
            recipients,
            key,
            state.settings.idempotency_window,
        )
        .await?;
    Ok((
        if created == 0 {
            StatusCode::OK
        } else {
            StatusCode::ACCEPTED
        },
        Json(BulkCreated {
            ids: ids.iter().map(ToString::to_string).collect(),
        }),
    ))
}

/// The statistics window.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// Since this instant (default 24 hours ago).
    pub since: Option<DateTime<Utc>>,
}

/// Counts by channel, status and reason.
#[utoipa::path(get, path = "/v1/notifications/stats", tag = "notifications", params(StatsQuery),
    responses((status = 200, body = Vec<StatRow>)))]
async fn notification_stats(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<StatsQuery>,
) -> ApiResult<Json<Vec<StatRow>>> {
    caller.require(Role::Viewer)?;
    let since = q
        .since
        .unwrap_or_else(|| state.clock.now() - TimeDelta::hours(24));
    Ok(Json(
        state.store.notify_stats(&caller.0.org_id, since).await?,
    ))
}

/// One notification with its full history.
#[utoipa::path(get, path = "/v1/notifications/{id}", tag = "notifications", params(("id" = String, Path, description = "ntf_…")),
    responses((status = 200, body = NotificationDetail), (status = 404, body = Problem)))]
async fn get_notification(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<NotificationDetail>> {
    caller.require(Role::Viewer)?;
    let (notification, history) = state
        .store
        .get_notification(&caller.0.org_id, &id)
        .await
        .map_err(missing("notification"))?;
    Ok(Json(NotificationDetail {
        notification,
        history,
    }))
}

// --- templates ---------------------------------------------------------------------

/// Lists templates.
#[utoipa::path(get, path = "/v1/templates", tag = "notifications", responses((status = 200, body = Vec<Template>)))]
async fn list_templates(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<Template>>> {
    caller.require(Role::Viewer)?;
    Ok(Json(state.store.list_templates(&caller.0.org_id).await?))
}

/// Saves a template (by name and channel); a template that does not compile is refused
/// with the field and line.
#[utoipa::path(put, path = "/v1/templates", tag = "notifications", request_body = TemplateInput,
    responses((status = 200, body = Template), (status = 422, body = Problem)))]
async fn put_template(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<TemplateInput>,
) -> ApiResult<Json<Template>> {
    caller.require(Role::Editor)?;
    let mut errors = ValidationErrors::default();
    let name = wedsync_core::validate::text(&mut errors, "name", &input.name, 100);
    if input.channel == NotifyChannel::Email && input.subject.is_none() {
        errors.add("subject", "an email template needs a subject");
    }
    errors.into_result(name)?;
    wedsync_notify::templates::check(input.subject.as_deref(), &input.text, input.html.as_deref())?;
    Ok(Json(
        state.store.put_template(&caller.0.org_id, input).await?,
    ))
}

/// Deletes a template.
#[utoipa::path(delete, path = "/v1/templates/{id}", tag = "notifications", params(("id" = String, Path, description = "tpl_…")),
    responses((status = 204), (status = 404, body = Problem)))]
async fn delete_template(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Editor)?;
    state
        .store
        .delete_template(&caller.0.org_id, &id)
        .await
        .map_err(missing("template"))?;
    Ok(StatusCode::NO_CONTENT)
}

/// A template to preview.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewInput {
    /// Subject template.
    #[serde(default)]
    pub subject: Option<String>,
    /// Text template.
    pub text: String,
    /// HTML template.
    #[serde(default)]
    pub html: Option<String>,
    /// Extra values (the sample couple, recipient and vendor are provided).
    #[serde(default)]
    pub data: Option<serde_json::Value>,
}

/// A rendered preview.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Preview {
    /// The subject.
    pub subject: Option<String>,
    /// The text.
    pub text: String,
    /// The HTML.
    pub html: Option<String>,
    /// The context it rendered with.
    pub context: serde_json::Value,
}

/// Renders a template with sample wedding data (a couple marrying in 120 days).
#[utoipa::path(post, path = "/v1/templates/preview", tag = "notifications", request_body = PreviewInput,
    responses((status = 200, body = Preview), (status = 422, body = Problem)))]
async fn preview_template(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<PreviewInput>,
) -> ApiResult<Json<Preview>> {
    caller.require(Role::Viewer)?;
    let org = state.store.get_org(&caller.0.org_id).await?;
    let settings = state.store.notify_settings(&caller.0.org_id).await?;
    let data = input.data.unwrap_or_else(|| serde_json::json!({}));
    let context =
        wedsync_notify::templates::sample_context(&org, &settings, &data, state.clock.now());
    let r = wedsync_notify::templates::render(
        input.subject.as_deref(),
        &input.text,
        input.html.as_deref(),
        &context,
    )
    .map_err(|e| ApiError::validation(ValidationErrors::single(e.field, e.message)))?;
    Ok(Json(Preview {
        subject: r.subject,
        text: r.text,
        html: r.html,
        context,
    }))
}

// --- providers and settings --------------------------------------------------------

/// Lists providers (secrets by name only).
#[utoipa::path(get, path = "/v1/notification-providers", tag = "notifications", responses((status = 200, body = Vec<Provider>)))]
async fn list_providers(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<Provider>>> {
    caller.require(Role::Viewer)?;
    Ok(Json(state.store.list_providers(&caller.0.org_id).await?))
}

/// Adds a provider; its settings are checked against the provider catalog, its secrets
/// sealed. Providers of one channel are tried in `position` order.
#[utoipa::path(post, path = "/v1/notification-providers", tag = "notifications", request_body = ProviderInput,
    responses((status = 201, body = Provider), (status = 422, body = Problem)))]
async fn create_provider(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<ProviderInput>,
) -> ApiResult<(StatusCode, Json<Provider>)> {
    caller.require(Role::Admin)?;
    let (channel, checked) = if input.kind == "smtp" {
        (
            NotifyChannel::Email,
            wedsync_notify::email::validate(&input.config, &input.secrets),
        )
    } else {
        let Some(spec) = state.notify.catalog.get(&input.kind) else {
            let kinds: Vec<&str> = std::iter::once("smtp")
                .chain(state.notify.catalog.kinds())
                .collect();
            return Err(ApiError::validation(ValidationErrors::single(
                "kind",
                format!("unknown provider; expected one of {}", kinds.join(", ")),
            )));
        };
        (
            channel_of(spec.channel.as_str(), "kind")?,
            spec.validate_settings(&input.config, &input.secrets),
        )
    };
    if let Err(fields) = checked {
        let mut errors = ValidationErrors::default();
        for (f, m) in fields {
            errors.add(f, m);
        }
        return Err(errors.into());
    }
    let p = state
        .store
        .create_provider(&caller.0.org_id, channel, input, &caller.actor())
        .await?;
    Ok((StatusCode::CREATED, Json(p)))
}

/// Removes a provider.
#[utoipa::path(delete, path = "/v1/notification-providers/{id}", tag = "notifications", params(("id" = String, Path, description = "npr_…")),
    responses((status = 204), (status = 404, body = Problem)))]
async fn delete_provider(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Admin)?;
    state
        .store
        .delete_provider(&caller.0.org_id, &id, &caller.actor())
        .await
        .map_err(missing("provider"))?;
    Ok(StatusCode::NO_CONTENT)
}

/// The organisation's notification settings.
#[utoipa::path(get, path = "/v1/notification-settings", tag = "notifications", responses((status = 200, body = Settings)))]
async fn get_settings(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Settings>> {
    caller.require(Role::Viewer)?;
    Ok(Json(state.store.notify_settings(&caller.0.org_id).await?))
}

/// Replaces the notification settings: branding, alert routes, on-call people, the
/// escalation chain, the SMS fallback, per-recipient limits, default quiet hours.
#[utoipa::path(put, path = "/v1/notification-settings", tag = "notifications", request_body = Settings,
    responses((status = 200, body = Settings), (status = 422, body = Problem)))]
async fn put_settings(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(mut settings): ApiJson<Settings>,
) -> ApiResult<Json<Settings>> {
    caller.require(Role::Admin)?;
    let mut errors = ValidationErrors::default();
    for (i, r) in settings.alert_routes.iter_mut().enumerate() {
        r.to.key_for(r.channel, &mut errors, &format!("alert_routes[{i}].to"));
    }
    for (i, s) in settings.escalation.iter_mut().enumerate() {
        s.to.key_for(s.channel, &mut errors, &format!("escalation[{i}].to"));
    }
    for (i, p) in settings.on_call.iter_mut().enumerate() {
        if p.phone.is_none() && p.email.is_none() {
            errors.add(
                format!("on_call[{i}]"),
                "needs a phone (for SMS) or an email",
            );
        }
        p.key_for(NotifyChannel::Sms, &mut ValidationErrors::default(), "");
    }
    if settings
        .escalation
        .windows(2)
        .any(|w| w[1].after_minutes <= w[0].after_minutes)
    {
        errors.add(
            "escalation",
            "steps must come later and later (after_minutes increasing)",
        );
    }
    if let Some(q) = &settings.default_quiet_hours
        && let Err(e) = q.validate("default_quiet_hours")
    {
        errors.0.extend(e.0);
    }
    errors.into_result(())?;
    state
        .store
        .put_notify_settings(&caller.0.org_id, &settings, &caller.actor())
        .await?;
    Ok(Json(settings))
}

/// The key browsers subscribe with.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VapidKey {
    /// Pass as `applicationServerKey` to `pushManager.subscribe()` (base64url, P-256).
    pub public_key: String,
}

/// The hub's VAPID public key, for Web Push subscriptions; send the resulting
/// `PushSubscription.toJSON()` as `to.push` with `"channel": "push"`.
#[utoipa::path(get, path = "/v1/notification-settings/vapid", tag = "notifications",
    responses((status = 200, body = VapidKey), (status = 503, body = Problem)))]
async fn vapid_key(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<VapidKey>> {
    caller.require(Role::Viewer)?;
    match &state.notify.vapid_public_key {
        Some(k) => Ok(Json(VapidKey {
            public_key: k.clone(),
        })),
        None => Err(ApiError::unavailable(
            "web push needs a master key, from which the VAPID key is derived",
        )),
    }
}

/// A recipient's preferences (key: `email:alex@example.com`, `sms:+44…`, or `id:<your id>`).
#[utoipa::path(get, path = "/v1/recipients/{key}/preferences", tag = "notifications", params(("key" = String, Path, description = "the recipient key")),
    responses((status = 200, body = Preferences)))]
async fn get_preferences(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
) -> ApiResult<Json<Preferences>> {
    caller.require(Role::Viewer)?;
    Ok(Json(state.store.preferences(&caller.0.org_id, &key).await?))
}

/// Replaces a recipient's preferences: time zone, quiet hours, unsubscribed channels.
#[utoipa::path(put, path = "/v1/recipients/{key}/preferences", tag = "notifications", params(("key" = String, Path, description = "the recipient key")),
    request_body = Preferences, responses((status = 200, body = Preferences), (status = 422, body = Problem)))]
async fn put_preferences(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
    ApiJson(prefs): ApiJson<Preferences>,
) -> ApiResult<Json<Preferences>> {
    caller.require(Role::Editor)?;
    let mut errors = ValidationErrors::default();
    if key.is_empty() || key.len() > 300 {
        errors.add("key", "1 to 300 characters");
    }
    if let Some(z) = &prefs.time_zone
        && wedsync_core::org::TimeZone::parse(z).is_err()
    {
        errors.add("time_zone", "not an IANA time zone name");
    }
    if let Some(q) = &prefs.quiet_hours
        && let Err(e) = q.validate("quiet_hours")
    {
        errors.0.extend(e.0);
    }
    for c in &prefs.unsubscribed {
        if c != "*" && c.parse::<NotifyChannel>().is_err() {
            errors.add("unsubscribed", format!("`{c}` is not a channel (or `*`)"));
        }
    }
    errors.into_result(())?;
    state
        .store
        .put_preferences(&caller.0.org_id, &key, &prefs, "api")
        .await?;
    Ok(Json(prefs))
}

// --- alerts ------------------------------------------------------------------------

/// Lists alerts.
#[utoipa::path(get, path = "/v1/alerts", tag = "notifications", params(Paging), responses((status = 200, body = ListResponse<Alert>)))]
async fn list_alerts(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(paging): ApiQuery<Paging>,
) -> ApiResult<Json<ListResponse<Alert>>> {
    caller.require(Role::Viewer)?;
    let page = paging.request()?;
    Ok(Json(
        state
            .store
            .list_alerts(&caller.0.org_id, &page)
            .await?
            .into(),
    ))
}

/// The alert raised and the notifications it fanned out to.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RaisedAlert {
    /// The alert.
    pub alert: Alert,
    /// Its notifications.
    pub notifications: Vec<String>,
}

/// Raises an alert: to every alert route; in the wedding-day window its severity is raised
/// and the escalation chain runs; on Saturday it also goes to the on-call SMS and PagerDuty.
#[utoipa::path(post, path = "/v1/alerts", tag = "notifications", request_body = AlertInput,
    responses((status = 201, body = RaisedAlert), (status = 422, body = Problem)))]
async fn raise_alert(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<AlertInput>,
) -> ApiResult<(StatusCode, Json<RaisedAlert>)> {
    caller.require(Role::Editor)?;
    let (alert, ids) = wedsync_notify::alerts::raise(
        &state.store,
        &caller.0.org_id,
        input,
        &state.notify.calendar,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(RaisedAlert {
            alert,
            notifications: ids.iter().map(ToString::to_string).collect(),
        }),
    ))
}

/// One alert.
#[utoipa::path(get, path = "/v1/alerts/{id}", tag = "notifications", params(("id" = String, Path, description = "alr_…")),
    responses((status = 200, body = Alert), (status = 404, body = Problem)))]
async fn get_alert(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Alert>> {
    caller.require(Role::Viewer)?;
    Ok(Json(
        state
            .store
            .get_alert(&caller.0.org_id, &id)
            .await
            .map_err(missing("alert"))?,
    ))
}

/// Acknowledges an alert: its escalation stops; PagerDuty is told.
#[utoipa::path(post, path = "/v1/alerts/{id}/acknowledge", tag = "notifications", params(("id" = String, Path, description = "alr_…")),
    responses((status = 200, body = Alert), (status = 404, body = Problem)))]
async fn acknowledge_alert(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Alert>> {
    caller.require(Role::Editor)?;
    let by = caller.actor().to_string();
    Ok(Json(
        state
            .store
            .ack_alert(Some(&caller.0.org_id), &id, &by, false)
            .await
            .map_err(missing("alert"))?
            .0,
    ))
}

/// Resolves an alert; PagerDuty is told.
#[utoipa::path(post, path = "/v1/alerts/{id}/resolve", tag = "notifications", params(("id" = String, Path, description = "alr_…")),
    responses((status = 200, body = Alert), (status = 404, body = Problem)))]
async fn resolve_alert(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Alert>> {
    caller.require(Role::Editor)?;
    let by = caller.actor().to_string();
    Ok(Json(
        state
            .store
            .ack_alert(Some(&caller.0.org_id), &id, &by, true)
            .await
            .map_err(missing("alert"))?
            .0,
    ))
}

// --- inbox -------------------------------------------------------------------------

/// Whose inbox.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InboxQuery {
    /// The recipient's `id` as given when sending (a member id, a partner key…).
    pub recipient: String,
    /// Only unread messages.
    #[serde(default)]
    pub unread: bool,
    /// Items per page.
    pub limit: Option<u64>,
    /// The previous page's `next_cursor`.
    pub after: Option<String>,
}

/// A recipient's in-app inbox.
#[utoipa::path(get, path = "/v1/inbox", tag = "notifications", params(InboxQuery),
    responses((status = 200, body = ListResponse<Notification>)))]
async fn list_inbox(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<InboxQuery>,
) -> ApiResult<Json<ListResponse<Notification>>> {
    caller.require(Role::Viewer)?;
    let page = Paging {
        limit: q.limit,
        after: q.after,
    }
    .request()?;
    let filter = NotificationFilter {
        channel: Some(NotifyChannel::InApp),
        recipient_key: Some(format!("id:{}", q.recipient)),
        unread: q.unread,
        ..Default::default()
    };
    Ok(Json(
        state
            .store
            .list_notifications(&caller.0.org_id, &filter, &page)
            .await?
            .into(),
    ))
}

/// Marks an in-app message read.
#[utoipa::path(post, path = "/v1/inbox/{id}/read", tag = "notifications", params(("id" = String, Path, description = "ntf_…")),
    responses((status = 204), (status = 404, body = Problem)))]
async fn read_inbox(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Viewer)?;
    let (n, _) = state
        .store
        .get_notification(&caller.0.org_id, &id)
        .await
        .map_err(missing("notification"))?;
    if n.channel != NotifyChannel::InApp {
        return Err(ApiError::not_found("notification"));
    }
    state
        .store
        .notify_track(Some(&id), None, "read", None)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Whose live inbox.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InboxStreamQuery {
    /// The recipient's `id`.
    pub recipient: String,
}

/// New in-app messages for a recipient, live (Server-Sent Events, one JSON notification
/// per `data:`, `id:` set so a reconnecting client resumes with `Last-Event-ID`). Messages
/// stored on this node arrive at once; from other nodes within a second.
#[utoipa::path(get, path = "/v1/inbox/stream", tag = "notifications", params(InboxStreamQuery),
    responses((status = 200, description = "text/event-stream of notifications")))]
async fn stream_inbox(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<InboxStreamQuery>,
) -> ApiResult<
    axum::response::sse::Sse<
        impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
    >,
> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    caller.require(Role::Viewer)?;
    let org = caller.0.org_id;
    let key = format!("id:{}", q.recipient);
    // Resume after the last message the client saw (its delivery time and id), else now.
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once('/'))
        .and_then(|(micros, id)| {
            Some((
                wedsync_core::clock::from_micros(micros.parse().ok()?),
                id.to_owned(),
            ))
        });
    let cursor = resume.unwrap_or_else(|| (state.clock.now(), String::new()));
    let rx = state.notify.inbox.subscribe();
    let initial = (
        state,
        cursor,
        std::collections::VecDeque::<Notification>::new(),
        rx,
    );
    let stream =
        futures_util::stream::unfold(initial, move |(state, mut cursor, mut pending, mut rx)| {
            let key = key.clone();
            async move {
                loop {
                    if let Some(n) = pending.pop_front() {
                        let at = n.delivered_at.unwrap_or(cursor.0);
                        cursor = (at, n.id.to_string());
                        let event = Event::default()
                            .id(format!("{}/{}", wedsync_core::clock::to_micros(at), n.id))
                            .event("notification")
                            .json_data(&n)
                            .unwrap_or_else(|_| Event::default().comment("unserialisable"));
                        return Some((Ok(event), (state, cursor, pending, rx)));
                    }
                    match state
                        .store
                        .inbox_delivered_since(&org, &key, cursor.0, &cursor.1, 100)
                        .await
                    {
                        Ok(found) if !found.is_empty() => pending.extend(found),
                        Ok(_) => {
                            // Woken at once by this node's worker, or polling for other nodes'.
                            let _ =
                                tokio::time::timeout(std::time::Duration::from_secs(1), rx.recv())
                                    .await;
                        }
                        Err(error) => {
                            tracing::warn!(%error, "inbox stream could not read messages");
                            return None;
                        }
                    }
                }
            }
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

// --- public links ------------------------------------------------------------------

/// The public, unauthenticated routes the links in emails point at.
pub fn public_router() -> axum::Router<AppState> {
    axum::Router::new()
        .route(
            "/u/{id}/{sig}",
            axum::routing::get(unsubscribe_page).post(unsubscribe),
        )
        .route("/t/o/{id}/{sig}", axum::routing::get(open_pixel))
        .route("/t/c/{id}/{sig}", axum::routing::get(click))
}

fn verified(
    state: &AppState,
    purpose: Purpose,
    id: &str,
    extra: &str,
    sig: &str,
) -> Result<(), ApiError> {
    match &state.notify.links {
        Some(links) if links.verify(purpose, id, extra, sig) => Ok(()),
        // A bad signature and an unknown id look the same.
        _ => Err(ApiError::not_found("link")),
    }
}

async fn unsubscribe_page(
    State(state): State<AppState>,
    Path((id, sig)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    verified(&state, Purpose::Unsubscribe, &id, "", &sig)?;
    // A GET must not unsubscribe (mail scanners follow links): it shows a button.
    let page = format!(
        "<!doctype html><meta charset=utf-8><title>Unsubscribe</title>\
         <form method=post><p>Stop these messages?</p>\
         <input type=hidden name=List-Unsubscribe value=One-Click>\
         <button type=submit>Unsubscribe</button></form><!-- {id} -->"
    );
    Ok(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response())
}

/// RFC 8058: a POST with `List-Unsubscribe=One-Click` unsubscribes at once.
async fn unsubscribe(
    State(state): State<AppState>,
    Path((id, sig)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    verified(&state, Purpose::Unsubscribe, &id, "", &sig)?;
    state
        .store
        .unsubscribe_by_notification(&id)
        .await
        .map_err(missing("link"))?;
    metrics::counter!("wedsync_notification_unsubscribes_total").increment(1);
    Ok((
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<!doctype html><meta charset=utf-8><title>Unsubscribed</title><p>You are unsubscribed.</p>",
    )
        .into_response())
}

/// The 1×1 transparent GIF.
const PIXEL: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

async fn open_pixel(
    State(state): State<AppState>,
    Path((id, sig)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    verified(&state, Purpose::Open, &id, "", &sig)?;
    state
        .store
        .notify_track(Some(&id), None, "opened", None)
        .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/gif"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PIXEL,
    )
        .into_response())
}

/// Where a click goes.
#[derive(Debug, Deserialize)]
struct ClickQuery {
    u: String,
}

async fn click(
    State(state): State<AppState>,
    Path((id, sig)): Path<(String, String)>,
    Query(q): Query<ClickQuery>,
) -> Result<Response, ApiError> {
    // The signature covers the target, so this is never an open redirector.
    verified(&state, Purpose::Click, &id, &q.u, &sig)?;
    state
        .store
        .notify_track(Some(&id), None, "clicked", Some(&q.u))
        .await?;
    Ok((StatusCode::FOUND, [(header::LOCATION, q.u)]).into_response())
}

//! Notifications as data: providers (tried in order per channel), templates, per-organisation
//! settings, recipients' preferences, alerts, and each notification with its history.
//!
//! A **notification** is one message to one recipient on one channel. It is created `queued`
//! with a `notify.send` job in the same transaction; the worker (in `wedsync-notify`) decides
//! at send time whether it goes, waits (`deferred`, with the instant) or is `blocked` (with a
//! reason), and records the outcome, the next job and a history entry in one transaction.
//! Nothing is dropped silently: every state change has a history row saying why.
//!
//! Quota counting is a claim: inside a transaction that holds the organisation's row (on
//! PostgreSQL; SQLite writers are serialised anyway) the window's count is read and the
//! notification marked counted, so concurrent workers cannot overshoot a quota.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, QueryResult, Value};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use wedsync_core::clock::{from_micros, to_micros};
use wedsync_core::id::{
    AlertId, CoupleId, NotificationEventId, NotificationId, OrgId, ProviderId, TemplateId,
};
use wedsync_core::notify::{NotifyChannel, QuietHours, Reason, Severity};
use wedsync_core::validate::ValidationErrors;

use crate::audit::{self, Change};
use crate::page::{Page, PageRequest, paginate};
use crate::queue::{NewJob, enqueue_in};
use crate::{Actor, Store, StoreError, StoreResult};

/// The job kind that sends one notification.
pub const SEND_KIND: &str = "notify.send";
/// The job kind that escalates an unacknowledged alert by one step.
pub const ESCALATE_KIND: &str = "notify.escalate";
/// The prefix of the idempotency keys a bulk send gives its recipients (`bulk:<key>#<i>`);
/// a single send may not use it, so the two never meet.
pub const BULK_KEY_PREFIX: &str = "bulk:";

/// Recipients per transaction when a bulk send is created.
pub const BULK_CHUNK: usize = 50;
/// The most recipients one bulk request may name.
pub const BULK_MAX: usize = 1000;

/// Inbound event types that act on one of our alerts ([`Store::apply_alert_action`]):
/// acknowledge, then resolve.
pub const ALERT_ACTION_TYPES: [&str; 2] = ["incident.acknowledged", "incident.resolved"];

/// Twilio's status callbacks as the inbound gateway keeps them.
const TWILIO_STATUS_TYPE: &str = "twilio.raw";

/// Inbound event types that may be a provider's delivery report
/// ([`Store::apply_provider_status`]): Twilio's callbacks, and Resend's webhooks, which come
/// through Svix (or a Standard Webhooks source).
pub const PROVIDER_STATUS_TYPES: [&str; 3] =
    [TWILIO_STATUS_TYPE, "svix.raw", "standard_webhooks.raw"];

use crate::sql::stmt;

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Conflict(format!("stored notification data is unreadable: {e}"))
}

fn json_text(v: &impl Serialize) -> StoreResult<String> {
    serde_json::to_string(v).map_err(corrupt)
}

/// Who a notification goes to. Which fields matter depends on the channel: an email
/// address for email, an E.164 phone for SMS, a member id (or any `id`) for the in-app inbox;
/// team channels (Slack, Teams, Discord, PagerDuty, webhook) go to the organisation's
/// configured destination and need nothing here.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Recipient {
    /// The organisation's own key for this person (a partner, a member); preferences and
    /// quiet hours are kept under it. Defaults to the channel address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Phone number in E.164 form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// The recipient's IANA time zone, for quiet hours (else the couple's, else the
    /// organisation's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// The browser's Web Push subscription (`PushSubscription.toJSON()`), for `push`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<wedsync_core::notify::PushSubscription>,
}

impl Recipient {
    /// Validates the recipient for `channel` and returns its preference key.
    pub fn key_for(
        &mut self,
        channel: NotifyChannel,
        errors: &mut ValidationErrors,
        field: &str,
    ) -> String {
        if let Some(email) = self.email.take() {
            self.email = wedsync_core::org::parse_email(errors, &format!("{field}.email"), &email);
        }
        if let Some(phone) = self.phone.take() {
            self.phone =
                wedsync_core::couple::parse_phone(errors, &format!("{field}.phone"), &phone);
        }
        if let Some(p) = &self.push {
            p.validate(&format!("{field}.push"), errors);
        }
        if channel == NotifyChannel::Push && self.push.is_none() {
            errors.add(
                format!("{field}.push"),
                "push needs the browser's subscription (PushSubscription.toJSON())",
            );
        }
        if let Some(zone) = &self.time_zone
            && wedsync_core::org::TimeZone::parse(zone).is_err()
        {
            errors.add(format!("{field}.time_zone"), "not an IANA time zone name");
        }
        let address = match channel {
            // Addresses compare without case, so preferences follow the person.
            NotifyChannel::Email => self
                .email
                .as_ref()
                .map(|e| format!("email:{}", e.to_lowercase())),
            NotifyChannel::Sms => self.phone.as_ref().map(|p| format!("sms:{p}")),
            NotifyChannel::Push => self.push.as_ref().map(|p| format!("push:{}", p.endpoint)),
            NotifyChannel::InApp => None,
            _ => Some(format!("channel:{channel}")),
        };
        if let Some(id) = &self.id {
            if id.is_empty() || id.len() > 200 {
                errors.add(format!("{field}.id"), "1 to 200 characters");
            }
            return format!("id:{id}");
        }
        match address {
            Some(a) => a,
            None => {
                let needs = match channel {
                    NotifyChannel::Email => "an email address",
                    NotifyChannel::Sms => "a phone number",
                    NotifyChannel::Push => "a push subscription",
                    _ => "an id (the member or person whose inbox it is)",
                };
                if errors.0.iter().all(|e| !e.field.starts_with(field)) {
                    errors.add(field.to_owned(), format!("{channel} needs {needs}"));
                }
                String::new()
            }
        }
    }
}

/// A notification as a client asks for it.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationInput {
    /// The channel.
    #[schema(value_type = String, example = "email")]
    pub channel: Option<NotifyChannel>,
    /// The recipient.
    #[serde(default)]
    pub to: Recipient,
    /// A saved template's name (`/v1/templates`); or give `subject`/`text`/`html` inline.
    #[serde(default)]
    pub template: Option<String>,
    /// Inline subject (a template itself: `{{ couple.names }}` works).
    #[serde(default)]
    pub subject: Option<String>,
    /// Inline plain text.
    #[serde(default)]
    pub text: Option<String>,
    /// Inline HTML (email).
    #[serde(default)]
    pub html: Option<String>,
    /// Values for the template, besides the wedding context.
    #[serde(default)]
    pub data: Option<serde_json::Value>,
    /// The couple this is about: its names, date (in its zone) and venue reach the template,
    /// and a wedding today raises the send's priority.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub couple_id: Option<CoupleId>,
    /// How serious (default `info`); `critical` is urgent and ignores quiet hours.
    #[serde(default)]
    pub severity: Option<Severity>,
    /// A wedding-day emergency: bypasses quotas, tier limits, unsubscribes and quiet hours;
    /// flagged and counted.
    #[serde(default)]
    pub emergency: bool,
    /// Not before this instant.
    #[serde(default)]
    pub send_at: Option<DateTime<Utc>>,
}

/// Internal links between notifications (alerts, escalations, fallbacks).
#[derive(Debug, Clone, Default)]
pub struct Links {
    /// The alert it belongs to.
    pub alert_id: Option<AlertId>,
    /// The notification it follows (a fallback or escalation).
    pub parent_id: Option<NotificationId>,
    /// Why it was created, for its first history entry.
    pub cause: Option<String>,
    /// Provider-specific parameters (PagerDuty action and dedup key).
    pub extra: Option<serde_json::Value>,
}

/// A notification as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Notification {
    /// `ntf_…`.
    #[schema(value_type = String)]
    pub id: NotificationId,
    /// The channel.
    #[schema(value_type = String)]
    pub channel: NotifyChannel,
    /// The recipient.
    pub to: Recipient,
    /// The template used, if any.
    pub template: Option<String>,
    /// `queued`, `deferred`, `sending`, `sent`, `delivered`, `failed`, `bounced`, `blocked`.
    pub status: String,
    /// Why it is blocked, deferred or failed (`quota_exceeded`, `quiet_hours`, …).
    pub reason: Option<String>,
    /// More about the last change, for people.
    pub detail: Option<String>,
    /// Severity.
    #[schema(value_type = String)]
    pub severity: Severity,
    /// A wedding-day emergency.
    pub emergency: bool,
    /// Sent past a quota or tier limit because it was an emergency.
    pub quota_bypassed: bool,
    /// The provider that took it.
    #[schema(value_type = Option<String>)]
    pub provider_id: Option<ProviderId>,
    /// The provider's id for it.
    pub provider_message_id: Option<String>,
    /// Send attempts so far.
    pub attempts: i32,
    /// When it is (or was) due.
    pub due_at: DateTime<Utc>,
    /// When a provider accepted it.
    pub sent_at: Option<DateTime<Utc>>,
    /// When the provider reported it delivered (in-app: stored).
    pub delivered_at: Option<DateTime<Utc>>,
    /// First opened (email pixel).
    pub opened_at: Option<DateTime<Utc>>,
    /// First clicked (email link).
    pub clicked_at: Option<DateTime<Utc>>,
    /// Read in the inbox.
    pub read_at: Option<DateTime<Utc>>,
    /// The couple it is about.
    #[schema(value_type = Option<String>)]
    pub couple_id: Option<CoupleId>,
    /// The alert it belongs to.
    #[schema(value_type = Option<String>)]
    pub alert_id: Option<AlertId>,
    /// The notification it follows (fallback, escalation, Saturday copy).
    #[schema(value_type = Option<String>)]
    pub parent_id: Option<NotificationId>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// One entry in a notification's history.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    /// When.
    pub at: DateTime<Utc>,
    /// The status it moved to, or an event (`attempt_failed`, `opened`, …).
    pub status: String,
    /// Why.
    pub reason: Option<String>,
    /// Details for people (provider errors, the deferral instant).
    pub detail: Option<String>,
}

/// Everything the worker needs to send one notification, read in one go.
#[derive(Debug, Clone)]
pub struct NotifyWork {
    /// The notification.
    pub notification: Notification,
    /// The organisation.
    pub org: wedsync_core::org::Organization,
    /// Inline content (`subject`, `text`, `html`).
    pub content: serde_json::Value,
    /// Template data.
    pub data: serde_json::Value,
    /// Provider parameters stored with the notification (PagerDuty action, dedup key).
    pub extra: serde_json::Value,
    /// Whether it is urgent (ignores quiet hours).
    pub urgent: bool,
    /// Whether it was already counted against the quota (a retry).
    pub counted: bool,
    /// The saved template, when one is named: `(subject, text, html)`.
    pub template: Option<(Option<String>, String, Option<String>)>,
    /// The couple it is about.
    pub couple: Option<wedsync_core::couple::Couple>,
    /// The recipient's preferences.
    pub preferences: Preferences,
    /// The organisation's enabled providers for the channel, in failover order.
    pub providers: Vec<ProviderWork>,
    /// The organisation's notification settings.
    pub settings: Settings,
    /// The alert it belongs to.
    pub alert: Option<Alert>,
    /// For alerts: how many of the organisation's couples marry today (its local date).
    pub weddings_today: Option<i64>,
}

/// A provider with its secrets opened, for sending.
#[derive(Clone)]
pub struct ProviderWork {
    /// `npr_…`.
    pub id: ProviderId,
    /// The catalog kind (`resend`, `smtp`, …).
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Non-secret settings.
    pub config: serde_json::Map<String, serde_json::Value>,
    /// Opened secrets.
    pub secrets: serde_json::Map<String, serde_json::Value>,
}

impl std::fmt::Debug for ProviderWork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderWork")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A provider as created through the API.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderInput {
    /// The catalog kind: `smtp`, `resend`, `mailgun`, `twilio`, `slack`, `teams`, `discord`,
    /// `pagerduty`, `webhook`.
    pub kind: String,
    /// A name for people.
    #[serde(default)]
    pub name: Option<String>,
    /// Failover order within the channel, lowest first (default: after the others).
    #[serde(default)]
    pub position: Option<i32>,
    /// Non-secret settings (`from`, `domain`, `host`, …).
    #[serde(default)]
    pub config: serde_json::Map<String, serde_json::Value>,
    /// Secrets (`api_key`, `auth_token`, `webhook_url`, `password`, …): sealed at rest and
    /// never shown again.
    #[serde(default)]
    pub secrets: serde_json::Map<String, serde_json::Value>,
    /// Whether it is used (default true).
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// A provider as the API shows it: secrets by name only.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Provider {
    /// `npr_…`.
    #[schema(value_type = String)]
    pub id: ProviderId,
    /// The channel it serves.
    #[schema(value_type = String)]
    pub channel: NotifyChannel,
    /// The catalog kind.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Failover order, lowest first.
    pub position: i32,
    /// Non-secret settings.
    pub config: serde_json::Map<String, serde_json::Value>,
    /// The names of the secrets it holds.
    pub secrets: Vec<String>,
    /// Whether it is used.
    pub enabled: bool,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// A saved template.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Template {
    /// `tpl_…`.
    #[schema(value_type = String)]
    pub id: TemplateId,
    /// Its name, unique per channel.
    pub name: String,
    /// The channel.
    #[schema(value_type = String)]
    pub channel: NotifyChannel,
    /// The subject template (email).
    pub subject: Option<String>,
    /// The plain-text template.
    pub text: String,
    /// The HTML template (email).
    pub html: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// A template as saved through the API (checked by the caller before it gets here).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateInput {
    /// The name, e.g. `booking.confirmed`.
    pub name: String,
    /// The channel.
    #[schema(value_type = String)]
    pub channel: NotifyChannel,
    /// The subject template (email).
    #[serde(default)]
    pub subject: Option<String>,
    /// The plain-text template.
    pub text: String,
    /// The HTML template (email).
    #[serde(default)]
    pub html: Option<String>,
}

/// One step of an escalation chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EscalationStep {
    /// Minutes after the alert (not after the previous step).
    pub after_minutes: u32,
    /// The channel.
    #[schema(value_type = String)]
    pub channel: NotifyChannel,
    /// Who (for personal channels).
    #[serde(default)]
    pub to: Recipient,
}

/// Where alerts go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertRoute {
    /// The channel.
    #[schema(value_type = String)]
    pub channel: NotifyChannel,
    /// Who (for personal channels).
    #[serde(default)]
    pub to: Recipient,
}

/// An organisation's notification settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Branding for templates: `name`, `logo_url`, `colour`, `website`, `signature`.
    pub branding: BTreeMap<String, String>,
    /// Where every alert goes (Slack, Teams, email to the office…).
    pub alert_routes: Vec<AlertRoute>,
    /// Who is on call: on Saturdays every alert also goes to their SMS, and to PagerDuty.
    pub on_call: Vec<Recipient>,
    /// Unacknowledged alerts climb this chain.
    pub escalation: Vec<EscalationStep>,
    /// When an email fails for good, send the text by SMS when the recipient has a phone
    /// and the tier allows it (default true).
    pub sms_fallback: Option<bool>,
    /// Messages per recipient per hour, per channel (default 20).
    pub per_recipient_per_hour: Option<u32>,
    /// Messages per minute for the whole organisation, by channel (`{"sms": 30}`), e.g. to
    /// stay under a provider's own sending rate; over it, messages wait (`rate_limited`).
    pub per_channel_per_minute: BTreeMap<NotifyChannel, u32>,
    /// Quiet hours for recipients with none of their own.
    pub default_quiet_hours: Option<QuietHours>,
}

/// A recipient's preferences.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Preferences {
    /// The recipient's IANA time zone.
    pub time_zone: Option<String>,
    /// Weekly quiet hours in that zone.
    pub quiet_hours: Option<QuietHours>,
    /// Channels unsubscribed from; `*` means everything.
    pub unsubscribed: Vec<String>,
}

impl Preferences {
    /// Whether `channel` is unsubscribed.
    pub fn unsubscribed_from(&self, channel: NotifyChannel) -> bool {
        self.unsubscribed
            .iter()
            .any(|c| c == "*" || c == channel.as_str())
    }
}

/// An alert as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Alert {
    /// `alr_…`.
    #[schema(value_type = String)]
    pub id: AlertId,
    /// One line.
    pub summary: String,
    /// More.
    pub body: String,
    /// The severity asked for.
    #[schema(value_type = String)]
    pub severity: Severity,
    /// The severity after wedding-day escalation.
    #[schema(value_type = String)]
    pub raised_severity: Severity,
    /// `normal`, `elevated` or `maximum` (Saturday).
    pub escalation: String,
    /// The couple it is about.
    #[schema(value_type = Option<String>)]
    pub couple_id: Option<CoupleId>,
    /// A wedding-day emergency.
    pub emergency: bool,
    /// `open`, `acknowledged`, `resolved`.
    pub status: String,
    /// The PagerDuty dedup key.
    pub dedup_key: String,
    /// Escalation steps taken.
    pub escalation_step: i32,
    /// Who acknowledged it.
    pub acknowledged_by: Option<String>,
    /// When.
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// When it was resolved.
    pub resolved_at: Option<DateTime<Utc>>,
    /// When it was raised.
    pub created_at: DateTime<Utc>,
}

/// An alert as raised through the API.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertInput {
    /// One line (≤ 300 characters).
    pub summary: String,
    /// More (optional).
    #[serde(default)]
    pub body: Option<String>,
    /// Severity (default `warning`).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub severity: Option<Severity>,
    /// The couple it is about.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub couple_id: Option<CoupleId>,
    /// A wedding-day emergency: bypasses quotas (flagged and counted).
    #[serde(default)]
    pub emergency: bool,
}

/// The wedding-day plan the caller computed for a new alert.
#[derive(Debug, Clone)]
pub struct AlertPlanned {
    /// Severity after escalation.
    pub raised: Severity,
    /// `normal` / `elevated` / `maximum`.
    pub escalation: String,
    /// Also SMS to on-call and PagerDuty (Saturday).
    pub also_sms_and_pagerduty: bool,
    /// Schedule the escalation chain.
    pub escalate: bool,
    /// Queue priority for its sends.
    pub priority: i32,
}

/// How a send attempt ended, as the worker reports it.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A provider accepted it (or, in-app, it was stored).
    Sent {
        /// The provider.
        provider_id: Option<ProviderId>,
        /// The provider's id.
        provider_message_id: Option<String>,
        /// Already delivered (in-app).
        delivered: bool,
    },
    /// Not sent, for good.
    Blocked {
        /// Why.
        reason: Reason,
        /// Details.
        detail: String,
    },
    /// Held until `until`, then tried again.
    Deferred {
        /// When.
        until: DateTime<Utc>,
        /// Why.
        reason: Reason,
        /// Details.
        detail: String,
    },
    /// Every provider failed transiently: another attempt at `until`.
    Retry {
        /// When.
        until: DateTime<Utc>,
        /// Details.
        detail: String,
    },
    /// Failed for good; `fallback` is a notification to create instead (email → SMS).
    Failed {
        /// Why.
        reason: Reason,
        /// Details.
        detail: String,
        /// The fallback notification.
        fallback: Option<Box<NotificationInput>>,
    },
}

/// What a quota claim found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Counted; `bypassed` when an emergency went past the limit.
    Granted {
        /// Past the limit (an emergency).
        bypassed: bool,
    },
    /// The quota is used up.
    Exhausted {
        /// How many were counted in the window.
        used: u32,
    },
}

/// Counts per status and channel, for an organisation's statistics.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct StatRow {
    /// The channel.
    pub channel: String,
    /// The status.
    pub status: String,
    /// The reason, when there is one.
    pub reason: Option<String>,
    /// How many.
    pub count: i64,
}

/// Filters for listing notifications.
#[derive(Debug, Clone, Default)]
pub struct NotificationFilter {
    /// Only this status.
    pub status: Option<String>,
    /// Only this channel.
    pub channel: Option<NotifyChannel>,
    /// Only this recipient key.
    pub recipient_key: Option<String>,
    /// Only about this couple.
    pub couple_id: Option<CoupleId>,
    /// Only this alert's.
    pub alert_id: Option<AlertId>,
    /// Unread only (inbox).
    pub unread: bool,
}

fn opt_time(row: &QueryResult, col: &str) -> StoreResult<Option<DateTime<Utc>>> {
    Ok(row.try_get::<Option<i64>>("", col)?.map(from_micros))
}

fn parse_id<T: std::str::FromStr>(s: &str) -> StoreResult<T> {
    s.parse::<T>().map_err(|_| corrupt(format!("bad id {s}")))
}

fn opt_id<T: std::str::FromStr>(row: &QueryResult, col: &str) -> StoreResult<Option<T>> {
    row.try_get::<Option<String>>("", col)?
        .map(|s| parse_id(&s))
        .transpose()
}

fn to_notification(row: &QueryResult) -> StoreResult<Notification> {
    Ok(Notification {
        id: parse_id(&row.try_get::<String>("", "id")?)?,
        channel: row
            .try_get::<String>("", "channel")?
            .parse()
            .map_err(corrupt)?,
        to: serde_json::from_str(&row.try_get::<String>("", "recipient")?).map_err(corrupt)?,
        template: row.try_get("", "template")?,
        status: row.try_get("", "status")?,
        reason: row.try_get("", "reason")?,
        detail: row.try_get("", "detail")?,
        severity: row
            .try_get::<String>("", "severity")?
            .parse()
            .map_err(corrupt)?,
        emergency: row.try_get("", "emergency")?,
        quota_bypassed: row.try_get("", "quota_bypassed")?,
        provider_id: opt_id(row, "provider_id")?,
        provider_message_id: row.try_get("", "provider_message_id")?,
        attempts: row.try_get("", "attempts")?,
        due_at: from_micros(row.try_get("", "due_at")?),
        sent_at: opt_time(row, "sent_at")?,
        delivered_at: opt_time(row, "delivered_at")?,
        opened_at: opt_time(row, "opened_at")?,
        clicked_at: opt_time(row, "clicked_at")?,
        read_at: opt_time(row, "read_at")?,
        couple_id: opt_id(row, "couple_id")?,
        alert_id: opt_id(row, "alert_id")?,
        parent_id: opt_id(row, "parent_id")?,
        created_at: from_micros(row.try_get("", "created_at")?),
        updated_at: from_micros(row.try_get("", "updated_at")?),
    })
}

fn to_alert(row: &QueryResult) -> StoreResult<Alert> {
    Ok(Alert {
        id: parse_id(&row.try_get::<String>("", "id")?)?,
        summary: row.try_get("", "summary")?,
        body: row.try_get("", "body")?,
        severity: row
            .try_get::<String>("", "severity")?
            .parse()
            .map_err(corrupt)?,
        raised_severity: row
            .try_get::<String>("", "raised_severity")?
            .parse()
            .map_err(corrupt)?,
        escalation: row.try_get("", "escalation")?,
        couple_id: opt_id(row, "couple_id")?,
        emergency: row.try_get("", "emergency")?,
        status: row.try_get("", "status")?,
        dedup_key: row.try_get("", "dedup_key")?,
        escalation_step: row.try_get("", "escalation_step")?,
        acknowledged_by: row.try_get("", "acknowledged_by")?,
        acknowledged_at: opt_time(row, "acknowledged_at")?,
        resolved_at: opt_time(row, "resolved_at")?,
        created_at: from_micros(row.try_get("", "created_at")?),
    })
}

fn to_template(row: &QueryResult) -> StoreResult<Template> {
    Ok(Template {
        id: parse_id(&row.try_get::<String>("", "id")?)?,
        name: row.try_get("", "name")?,
        channel: row
            .try_get::<String>("", "channel")?
            .parse()
            .map_err(corrupt)?,
        subject: row.try_get("", "subject")?,
        text: row.try_get("", "body_text")?,
        html: row.try_get("", "body_html")?,
        created_at: from_micros(row.try_get("", "created_at")?),
        updated_at: from_micros(row.try_get("", "updated_at")?),
    })
}

fn to_provider(row: &QueryResult) -> StoreResult<Provider> {
    Ok(Provider {
        id: parse_id(&row.try_get::<String>("", "id")?)?,
        channel: row
            .try_get::<String>("", "channel")?
            .parse()
            .map_err(corrupt)?,
        kind: row.try_get("", "kind")?,
        name: row.try_get("", "name")?,
        position: row.try_get("", "position")?,
        config: serde_json::from_str(&row.try_get::<String>("", "config")?).map_err(corrupt)?,
        secrets: serde_json::from_str(&row.try_get::<String>("", "secret_names")?)
            .map_err(corrupt)?,
        enabled: row.try_get("", "enabled")?,
        created_at: from_micros(row.try_get("", "created_at")?),
    })
}

fn to_history(row: &QueryResult) -> StoreResult<HistoryEntry> {
    Ok(HistoryEntry {
        at: from_micros(row.try_get("", "at")?),
        status: row.try_get("", "status")?,
        reason: row.try_get("", "reason")?,
        detail: row.try_get("", "detail")?,
    })
}

/// Appends a history row.
async fn history<C: ConnectionTrait>(
    db: &C,
    org: &str,
    id: &str,
    at: DateTime<Utc>,
    status: &str,
    reason: Option<&str>,
    detail: Option<&str>,
) -> StoreResult<()> {
    db.execute_raw(stmt(
        db.get_database_backend(),
        "INSERT INTO notification_events (id, notification_id, org_id, at, status, reason, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        vec![
            NotificationEventId::new_at(at).to_string().into(),
            id.into(),
            org.into(),
            to_micros(at).into(),
            status.into(),
            reason.map(str::to_owned).into(),
            detail.map(str::to_owned).into(),
        ],
    ))
    .await?;
    Ok(())
}

fn send_job(org: &OrgId, id: &str, at: DateTime<Utc>, priority: i32) -> NewJob {
    let mut job = NewJob::new(SEND_KIND, serde_json::json!({ "notification_id": id }));
    job.org_id = Some(*org);
    job.run_at = Some(at);
    job.priority = priority;
    job
}

/// A validated notification, ready to insert.
struct Prepared {
    channel: NotifyChannel,
    to: Recipient,
    key: String,
    template: Option<String>,
    content: serde_json::Value,
    data: serde_json::Value,
    couple_id: Option<CoupleId>,
    severity: Severity,
    emergency: bool,
    due_at: DateTime<Utc>,
}

fn prepare(
    input: NotificationInput,
    now: DateTime<Utc>,
    field: &str,
) -> Result<Prepared, ValidationErrors> {
    let mut errors = ValidationErrors::default();
    let prefix = |f: &str| {
        if field.is_empty() {
            f.to_owned()
        } else {
            format!("{field}.{f}")
        }
    };
    let Some(channel) = input.channel else {
        return Err(ValidationErrors::single(prefix("channel"), "required"));
    };
    let mut to = input.to;
    let key = to.key_for(channel, &mut errors, &prefix("to"));
    if input.template.is_none() && input.text.is_none() {
        errors.add(prefix("text"), "give a template name or the text");
    }
    if input.template.is_some()
        && (input.text.is_some() || input.subject.is_some() || input.html.is_some())
    {
        errors.add(
            prefix("template"),
            "give either a template or inline subject/text/html, not both",
        );
    }
    if channel == NotifyChannel::Email && input.template.is_none() && input.subject.is_none() {
        errors.add(prefix("subject"), "an email needs a subject");
    }
    for (name, value, max) in [
        ("subject", &input.subject, 998),
        ("text", &input.text, 64 * 1024),
        ("html", &input.html, 256 * 1024),
    ] {
        if value.as_ref().is_some_and(|v| v.len() > max) {
            errors.add(prefix(name), format!("at most {max} bytes"));
        }
    }
    let data = input.data.unwrap_or_else(|| serde_json::json!({}));
    if !data.is_object() {
        errors.add(prefix("data"), "must be an object");
    } else if data.to_string().len() > 64 * 1024 {
        errors.add(prefix("data"), "at most 64 KiB");
    }
    errors.into_result(())?;
    Ok(Prepared {
        channel,
        to,
        key,
        template: input.template,
        content: serde_json::json!({ "subject": input.subject, "text": input.text, "html": input.html }),
        data,
        couple_id: input.couple_id,
        severity: input.severity.unwrap_or_default(),
        emergency: input.emergency,
        due_at: input.send_at.unwrap_or(now).max(now),
    })
}

impl Store {
    async fn wedding_today_priority_of<C: ConnectionTrait>(
        db: &C,
        couple: Option<&CoupleId>,
        now: DateTime<Utc>,
    ) -> StoreResult<i32> {
        let Some(couple) = couple else {
            return Ok(wedsync_core::calendar::PRIORITY_NORMAL);
        };
        let row = db
            .query_one_raw(stmt(
                db.get_database_backend(),
                "SELECT wedding_date, time_zone FROM couples WHERE id = $1",
                vec![couple.to_string().into()],
            ))
            .await?;
        let today = row.and_then(|r| {
            let date: chrono::NaiveDate = r.try_get("", "wedding_date").ok()?;
            let zone =
                wedsync_core::org::TimeZone::parse(&r.try_get::<String>("", "time_zone").ok()?)
                    .ok()?;
            Some(date == now.with_timezone(&zone.tz()).date_naive())
        });
        Ok(if today == Some(true) {
            wedsync_core::calendar::PRIORITY_WEDDING_TODAY
        } else {
            wedsync_core::calendar::PRIORITY_NORMAL
        })
    }

    async fn check_refs<C: ConnectionTrait>(
        db: &C,
        org: &OrgId,
        p: &Prepared,
        field: &str,
    ) -> StoreResult<()> {
        let backend = db.get_database_backend();
        if let Some(name) = &p.template {
            let found = db
                .query_one_raw(stmt(
                    backend,
                    "SELECT id FROM notify_templates WHERE org_id = $1 AND name = $2 AND channel = $3",
                    vec![org.to_string().into(), name.clone().into(), p.channel.as_str().into()],
                ))
                .await?;
            if found.is_none() {
                return Err(StoreError::Invalid(ValidationErrors::single(
                    format!("{field}template"),
                    format!("no {} template named `{name}`", p.channel),
                )));
            }
        }
        if let Some(couple) = &p.couple_id {
            let found = db
                .query_one_raw(stmt(
                    backend,
                    "SELECT id FROM couples WHERE org_id = $1 AND id = $2",
                    vec![org.to_string().into(), couple.to_string().into()],
                ))
                .await?;
            if found.is_none() {
                return Err(StoreError::Invalid(ValidationErrors::single(
                    format!("{field}couple_id"),
                    "no such couple",
                )));
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn insert_notification(
        tx: &DatabaseTransaction,
        org: &OrgId,
        p: &Prepared,
        links: &Links,
        idempotency: Option<(&str, &str)>,
        now: DateTime<Utc>,
        priority: Option<i32>,
    ) -> StoreResult<NotificationId> {
        let id = NotificationId::new_at(now);
        let urgent = p.emergency || p.severity == Severity::Critical;
        let mut content = p.content.clone();
        if let (Some(extra), Some(obj)) = (&links.extra, content.as_object_mut()) {
            obj.insert("extra".into(), extra.clone());
        }
        tx.execute_raw(stmt(
            tx.get_database_backend(),
            "INSERT INTO notifications (id, org_id, channel, recipient, recipient_key, template, content, data, \
             couple_id, alert_id, parent_id, severity, emergency, urgent, idempotency_key, idempotency_hash, status, \
             reason, detail, provider_id, provider_message_id, attempts, counted_at, quota_bypassed, due_at, sent_at, \
             delivered_at, opened_at, clicked_at, read_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, \
             $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, 'queued', NULL, NULL, NULL, NULL, 0, NULL, $17, $18, \
             NULL, NULL, NULL, NULL, NULL, $19, $19)",
            vec![
                id.to_string().into(),
                org.to_string().into(),
                p.channel.as_str().into(),
                json_text(&p.to)?.into(),
                p.key.clone().into(),
                p.template.clone().into(),
                content.to_string().into(),
                p.data.to_string().into(),
                p.couple_id.map(|c| c.to_string()).into(),
                links.alert_id.map(|a| a.to_string()).into(),
                links.parent_id.map(|a| a.to_string()).into(),
                p.severity.as_str().into(),
                p.emergency.into(),
                urgent.into(),
                idempotency.map(|(k, _)| k.to_owned()).into(),
                idempotency.map(|(_, h)| h.to_owned()).into(),
                false.into(),
                to_micros(p.due_at).into(),
                to_micros(now).into(),
            ],
        ))
        .await?;
        let detail = match (&links.cause, p.due_at > now) {
            (Some(c), _) => Some(c.clone()),
            (None, true) => Some(format!("scheduled for {}", p.due_at.to_rfc3339())),
            (None, false) => None,
        };
        history(
            tx,
            &org.to_string(),
            &id.to_string(),
            now,
            "queued",
            None,
            detail.as_deref(),
        )
        .await?;
        let priority = match priority {
            Some(p) => p,
            None => Self::wedding_today_priority_of(tx, p.couple_id.as_ref(), now).await?,
        };
        enqueue_in(tx, now, send_job(org, &id.to_string(), p.due_at, priority)).await?;
        Ok(id)
    }

    async fn notification_row<C: ConnectionTrait>(
        db: &C,
        org: Option<&OrgId>,
        id: &str,
    ) -> StoreResult<QueryResult> {
        let row = match org {
            Some(org) => {
                db.query_one_raw(stmt(
                    db.get_database_backend(),
                    "SELECT * FROM notifications WHERE org_id = $1 AND id = $2",
                    vec![org.to_string().into(), id.into()],
                ))
                .await?
            }
            None => {
                db.query_one_raw(stmt(
                    db.get_database_backend(),
                    "SELECT * FROM notifications WHERE id = $1",
                    vec![id.into()],
                ))
                .await?
            }
        };
        row.ok_or(StoreError::NotFound)
    }

    /// Creates a notification, `queued` with its send job. With an idempotency key, a repeat
    /// inside `window` returns the first one (`false`); the same key with a different request
    /// is a conflict.
    pub async fn create_notification(
        &self,
        org: &OrgId,
        input: NotificationInput,
        idempotency_key: Option<&str>,
        window: TimeDelta,
    ) -> StoreResult<(Notification, bool)> {
        if let Some(k) = idempotency_key
            && (k.is_empty() || k.len() > 255)
        {
            return Err(StoreError::Invalid(ValidationErrors::single(
                "Idempotency-Key",
                "an idempotency key is 1 to 255 characters",
            )));
        }
        if idempotency_key.is_some_and(|k| k.starts_with(BULK_KEY_PREFIX)) {
            return Err(StoreError::Invalid(ValidationErrors::single(
                "Idempotency-Key",
                format!("keys starting with `{BULK_KEY_PREFIX}` are the bulk sends' own"),
            )));
        }
        let now = self.clock().now();
        let hash_source = format!("{input:?}");
        let p = prepare(input, now, "")?;
        let hash = hex::encode(Sha256::digest(hash_source.as_bytes()));
        let tx = self.write_tx().await?;
        if let Some(key) = idempotency_key
            && let Some(row) = tx
                .query_one_raw(stmt(
                    self.backend(),
                    "SELECT * FROM notifications WHERE org_id = $1 AND idempotency_key = $2",
                    vec![org.to_string().into(), key.into()],
                ))
                .await?
        {
            let created = from_micros(row.try_get("", "created_at")?);
            if created + window > now {
                if row
                    .try_get::<Option<String>>("", "idempotency_hash")?
                    .as_deref()
                    != Some(&hash)
                {
                    return Err(StoreError::Conflict(
                        "this Idempotency-Key was used for a different request".into(),
                    ));
                }
                return Ok((to_notification(&row)?, false));
            }
            tx.execute_raw(stmt(
                self.backend(),
                "UPDATE notifications SET idempotency_key = NULL WHERE id = $1",
                vec![row.try_get::<String>("", "id")?.into()],
            ))
            .await?;
        }
        Self::check_refs(&tx, org, &p, "").await?;
        let id = Self::insert_notification(
            &tx,
            org,
            &p,
            &Links::default(),
            idempotency_key.map(|k| (k, hash.as_str())),
            now,
            None,
        )
        .await?;
        let row = Self::notification_row(&tx, Some(org), &id.to_string()).await?;
        tx.commit().await?;
        self.wake_workers();
        Ok((to_notification(&row)?, true))
    }

    /// Creates one notification per recipient from a shared request, in transactions of
    /// [`BULK_CHUNK`]; every one is sent through the same limits as a single send. Returns
    /// the ids in recipient order and how many were created now.
    ///
    /// With an idempotency key (honoured for `window`), recipient `i` gets the key
    /// `bulk:<key>#<i>`: a retry after a failure part-way (some chunks committed, then an error)
    /// finds the notifications already created and creates only the rest, so nobody gets the
    /// message twice. A recipient whose request differs from the first time is a conflict.
    pub async fn create_bulk(
        &self,
        org: &OrgId,
        template: NotificationInput,
        recipients: Vec<(Recipient, Option<serde_json::Value>)>,
        idempotency_key: Option<&str>,
        window: TimeDelta,
    ) -> StoreResult<(Vec<NotificationId>, usize)> {
        if recipients.is_empty() || recipients.len() > BULK_MAX {
            return Err(StoreError::Invalid(ValidationErrors::single(
                "recipients",
                format!("1 to {BULK_MAX} recipients"),
            )));
        }
        if let Some(k) = idempotency_key
            && (k.is_empty() || k.len() > 240)
        {
            return Err(StoreError::Invalid(ValidationErrors::single(
                "Idempotency-Key",
                "a bulk send's idempotency key is 1 to 240 characters",
            )));
        }
        let now = self.clock().now();
        // Validate everything first: a bulk send is all or nothing at the door.
        let mut prepared = Vec::with_capacity(recipients.len());
        let mut errors = ValidationErrors::default();
        for (i, (to, data)) in recipients.into_iter().enumerate() {
            let mut one = template.clone();
            one.to = to;
            if let Some(extra) = data {
                let mut merged = one.data.clone().unwrap_or_else(|| serde_json::json!({}));
                if let (Some(m), Some(e)) = (merged.as_object_mut(), extra.as_object()) {
                    for (k, v) in e {
                        m.insert(k.clone(), v.clone());
                    }
                }
                one.data = Some(merged);
            }
            let key = idempotency_key.map(|k| {
                let hash = hex::encode(Sha256::digest(format!("{one:?}").as_bytes()));
                (format!("{BULK_KEY_PREFIX}{k}#{i}"), hash)
            });
            match prepare(one, now, &format!("recipients[{i}]")) {
                Ok(p) => prepared.push((p, key)),
                Err(e) => errors.0.extend(e.0),
            }
        }
        errors.into_result(())?;
        let mut ids = Vec::with_capacity(prepared.len());
        let mut created = 0;
        for chunk in prepared.chunks(BULK_CHUNK) {
            let tx = self.write_tx().await?;
            let earlier = Self::bulk_earlier(&tx, org, chunk, now - window).await?;
            if let Some((first, _)) = chunk.first() {
                Self::check_refs(&tx, org, first, "").await?;
            }
            let priority = match chunk.first() {
                Some((p, _)) => {
                    Self::wedding_today_priority_of(&tx, p.couple_id.as_ref(), now).await?
                }
                None => 0,
            };
            for (p, key) in chunk {
                if let Some((k, hash)) = key
                    && let Some((id, earlier_hash)) = earlier.get(k)
                {
                    if earlier_hash.as_deref() != Some(hash.as_str()) {
                        return Err(StoreError::Conflict(format!(
                            "this Idempotency-Key was used for a different request (recipient {})",
                            k.rsplit('#').next().unwrap_or_default()
                        )));
                    }
                    ids.push(id.parse().map_err(|_| {
                        StoreError::Conflict("stored notification id is unreadable".into())
                    })?);
                    continue;
                }
                ids.push(
                    Self::insert_notification(
                        &tx,
                        org,
                        p,
                        &Links::default(),
                        key.as_ref().map(|(k, h)| (k.as_str(), h.as_str())),
                        now,
                        Some(priority),
                    )
                    .await?,
                );
                created += 1;
            }
            tx.commit().await?;
        }
        self.wake_workers();
        Ok((ids, created))
    }

    /// The notifications an earlier bulk send created under this chunk's keys since `since`
    /// (`key → (id, request hash)`); older ones give their key up, so it can be used again.
    async fn bulk_earlier(
        tx: &DatabaseTransaction,
        org: &OrgId,
        chunk: &[(Prepared, Option<(String, String)>)],
        since: DateTime<Utc>,
    ) -> StoreResult<HashMap<String, (String, Option<String>)>> {
        let keys: Vec<Value> = chunk
            .iter()
            .filter_map(|(_, k)| k.as_ref().map(|(k, _)| Value::from(k.clone())))
            .collect();
        let mut found = HashMap::new();
        if keys.is_empty() {
            return Ok(found);
        }
        let backend = tx.get_database_backend();
        let sql = format!(
            "SELECT id, idempotency_key, idempotency_hash, created_at FROM notifications \
             WHERE org_id = $1 AND idempotency_key IN ({})",
            crate::queue::placeholders(2, keys.len())
        );
        let mut values = vec![Value::from(org.to_string())];
        values.extend(keys);
        for row in tx.query_all_raw(stmt(backend, &sql, values)).await? {
            let id: String = row.try_get("", "id")?;
            if from_micros(row.try_get("", "created_at")?) < since {
                tx.execute_raw(stmt(
                    backend,
                    "UPDATE notifications SET idempotency_key = NULL WHERE id = $1",
                    vec![id.into()],
                ))
                .await?;
                continue;
            }
            found.insert(
                row.try_get("", "idempotency_key")?,
                (id, row.try_get("", "idempotency_hash")?),
            );
        }
        Ok(found)
    }

    /// One notification with its history.
    pub async fn get_notification(
        &self,
        org: &OrgId,
        id: &str,
    ) -> StoreResult<(Notification, Vec<HistoryEntry>)> {
        let row = Self::notification_row(self.connection(), Some(org), id).await?;
        let rows = self
            .connection()
            .query_all_raw(stmt(
                self.backend(),
                "SELECT * FROM notification_events WHERE notification_id = $1 ORDER BY id",
                vec![id.into()],
            ))
            .await?;
        Ok((
            to_notification(&row)?,
            rows.iter().map(to_history).collect::<StoreResult<_>>()?,
        ))
    }

    /// A page of `org`'s notifications, oldest first.
    pub async fn list_notifications(
        &self,
        org: &OrgId,
        filter: &NotificationFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Notification>> {
        let limit = page.limit();
        let mut sql = "SELECT * FROM notifications WHERE org_id = $1".to_owned();
        let mut values: Vec<Value> = vec![org.to_string().into()];
        let mut add = |clause: &str, value: Value, sql: &mut String| {
            values.push(value);
            sql.push_str(&clause.replace('?', &format!("${}", values.len())));
        };
        if let Some(after) = &page.after {
            add(" AND id > ?", after.clone().into(), &mut sql);
        }
        if let Some(s) = &filter.status {
            add(" AND status = ?", s.clone().into(), &mut sql);
        }
        if let Some(c) = filter.channel {
            add(" AND channel = ?", c.as_str().into(), &mut sql);
        }
        if let Some(k) = &filter.recipient_key {
            add(" AND recipient_key = ?", k.clone().into(), &mut sql);
        }
        if let Some(c) = &filter.couple_id {
            add(" AND couple_id = ?", c.to_string().into(), &mut sql);
        }
        if let Some(a) = &filter.alert_id {
            add(" AND alert_id = ?", a.to_string().into(), &mut sql);
        }
        if filter.unread {
            sql.push_str(" AND read_at IS NULL");
        }
        add(
            " ORDER BY id LIMIT ?",
            i64::try_from(limit + 1).unwrap_or(i64::MAX).into(),
            &mut sql,
        );
        let rows = self
            .connection()
            .query_all_raw(stmt(self.backend(), &sql, values))
            .await?;
        let items = rows
            .iter()
            .map(to_notification)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(items, limit, |n| n.id.to_string()))
    }

    /// In-app messages for `recipient_key` delivered after `(since, after_id)`, in delivery
    /// order: what an inbox stream has not shown yet. Reading by delivery time (not id) keeps
    /// a message created earlier but held by quiet hours from being skipped.
    pub async fn inbox_delivered_since(
        &self,
        org: &OrgId,
        recipient_key: &str,
        since: DateTime<Utc>,
        after_id: &str,
        limit: u64,
    ) -> StoreResult<Vec<Notification>> {
        let rows = self
            .connection()
            .query_all_raw(stmt(
                self.backend(),
                "SELECT * FROM notifications WHERE org_id = $1 AND recipient_key = $2 AND channel = 'in_app' \
                 AND status = 'delivered' AND (delivered_at > $3 OR (delivered_at = $3 AND id > $4)) \
                 ORDER BY delivered_at, id LIMIT $5",
                vec![
                    org.to_string().into(),
                    recipient_key.into(),
                    to_micros(since).into(),
                    after_id.into(),
                    i64::try_from(limit).unwrap_or(100).into(),
                ],
            ))
            .await?;
        rows.iter().map(to_notification).collect()
    }

    /// Everything needed to send notification `id`; `None` when it no longer exists.
    pub async fn notify_work(&self, id: &str) -> StoreResult<Option<NotifyWork>> {
        let db = self.connection();
        let row = match Self::notification_row(db, None, id).await {
            Ok(r) => r,
            Err(StoreError::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        let notification = to_notification(&row)?;
        let org_id: OrgId = parse_id(&row.try_get::<String>("", "org_id")?)?;
        let org = self.get_org(&org_id).await?;
        let couple = match &notification.couple_id {
            Some(c) => Some(self.get_couple(&org_id, c).await?),
            None => None,
        };
        let template = match &notification.template {
            Some(name) => db
                .query_one_raw(stmt(
                    self.backend(),
                    "SELECT * FROM notify_templates WHERE org_id = $1 AND name = $2 AND channel = $3",
                    vec![
                        org_id.to_string().into(),
                        name.clone().into(),
                        notification.channel.as_str().into(),
                    ],
                ))
                .await?
                .map(|r| to_template(&r).map(|t| (t.subject, t.text, t.html)))
                .transpose()?,
            None => None,
        };
        let key: String = row.try_get("", "recipient_key")?;
        let preferences = self.preferences(&org_id, &key).await?;
        let settings = self.notify_settings(&org_id).await?;
        let providers = self.provider_work(&org_id, notification.channel).await?;
        let alert = match &notification.alert_id {
            Some(a) => Some(self.get_alert(&org_id, &a.to_string()).await?),
            None => None,
        };
        let weddings_today = match &alert {
            Some(_) => Some(self.weddings_today(&org_id).await?),
            None => None,
        };
        let mut content: serde_json::Value =
            serde_json::from_str(&row.try_get::<String>("", "content")?).map_err(corrupt)?;
        let extra = content
            .as_object_mut()
            .and_then(|o| o.remove("extra"))
            .unwrap_or(serde_json::Value::Null);
        Ok(Some(NotifyWork {
            data: serde_json::from_str(&row.try_get::<String>("", "data")?).map_err(corrupt)?,
            content,
            extra,
            urgent: row.try_get("", "urgent")?,
            counted: row.try_get::<Option<i64>>("", "counted_at")?.is_some(),
            notification,
            org,
            template,
            couple,
            preferences,
            providers,
            settings,
            alert,
            weddings_today,
        }))
    }

    /// How many of `org`'s couples marry today, by the organisation's local date.
    pub async fn weddings_today(&self, org: &OrgId) -> StoreResult<i64> {
        let zone = self.org_time_zone(org).await?;
        let today = self.clock().now().with_timezone(&zone.tz()).date_naive();
        let row = self
            .connection()
            .query_one_raw(stmt(
                self.backend(),
                "SELECT COUNT(*) AS n FROM couples WHERE org_id = $1 AND wedding_date = $2",
                vec![org.to_string().into(), today.into()],
            ))
            .await?;
        Ok(row.map(|r| r.try_get("", "n")).transpose()?.unwrap_or(0))
    }

    /// The organisation's enabled providers for `channel`, secrets opened, in order.
    pub async fn provider_work(
        &self,
        org: &OrgId,
        channel: NotifyChannel,
    ) -> StoreResult<Vec<ProviderWork>> {
        let rows = self
            .connection()
            .query_all_raw(stmt(
                self.backend(),
                "SELECT * FROM notify_providers WHERE org_id = $1 AND channel = $2 AND enabled = $3 \
                 ORDER BY position, id",
                vec![org.to_string().into(), channel.as_str().into(), true.into()],
            ))
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = row.try_get("", "id")?;
            let secrets = match row.try_get::<Option<String>>("", "secrets_sealed")? {
                Some(sealed) => {
                    let plain = self.master_key()?.open(&format!("{id}:secrets"), &sealed)?;
                    serde_json::from_slice(&plain).map_err(corrupt)?
                }
                None => serde_json::Map::new(),
            };
            out.push(ProviderWork {
                id: parse_id(&id)?,
                kind: row.try_get("", "kind")?,
                name: row.try_get("", "name")?,
                config: serde_json::from_str(&row.try_get::<String>("", "config")?)
                    .map_err(corrupt)?,
                secrets,
            });
        }
        Ok(out)
    }

    /// Counts `channel` messages counted against `org`'s quota since `since`.
    pub async fn quota_used(
        &self,
        org: &OrgId,
        channel: NotifyChannel,
        since: DateTime<Utc>,
    ) -> StoreResult<u32> {
        count_counted(self.connection(), org, channel, since).await
    }

    /// Claims one unit of `org`'s quota for notification `id`: counts the window under the
    /// organisation's lock and marks the notification counted, unless the quota is used up
    /// and it is not an emergency.
    pub async fn claim_quota(
        &self,
        org: &OrgId,
        id: &str,
        channel: NotifyChannel,
        limit: Option<u32>,
        window: TimeDelta,
        emergency: bool,
    ) -> StoreResult<Claim> {
        let now = self.clock().now();
        let tx = self.write_tx().await?;
        if self.backend() == DbBackend::Postgres {
            tx.execute_raw(stmt(
                self.backend(),
                "SELECT id FROM organizations WHERE id = $1 FOR UPDATE",
                vec![org.to_string().into()],
            ))
            .await?;
        }
        let used = count_counted(&tx, org, channel, now - window).await?;
        let over = limit.is_some_and(|l| used >= l);
        if over && !emergency {
            return Ok(Claim::Exhausted { used });
        }
        tx.execute_raw(stmt(
            self.backend(),
            "UPDATE notifications SET counted_at = $1, quota_bypassed = $2 WHERE id = $3",
            vec![to_micros(now).into(), over.into(), id.into()],
        ))
        .await?;
        tx.commit().await?;
        Ok(Claim::Granted { bypassed: over })
    }

    /// Records a history entry that is not a state change (a provider failing over).
    pub async fn notify_note(
        &self,
        id: &str,
        status: &str,
        reason: Option<&str>,
        detail: &str,
    ) -> StoreResult<()> {
        let row = Self::notification_row(self.connection(), None, id).await?;
        let org: String = row.try_get("", "org_id")?;
        history(
            self.connection(),
            &org,
            id,
            self.clock().now(),
            status,
            reason,
            Some(detail),
        )
        .await
    }

    /// Records how a send attempt ended: the new state, a history entry, the next job (a
    /// deferral or retry) and any fallback notification, in one transaction.
    pub async fn notify_record(&self, work: &NotifyWork, outcome: Outcome) -> StoreResult<()> {
        let now = self.clock().now();
        let n = &work.notification;
        let id = n.id.to_string();
        let org = work.org.id;
        let backend = self.backend();
        let tx = self.write_tx().await?;
        // Only a notification still waiting to be sent changes: a concurrent run that got
        // here first wins, and this one records nothing.
        let current: String = Self::notification_row(&tx, None, &id)
            .await?
            .try_get("", "status")?;
        if !matches!(current.as_str(), "queued" | "deferred") {
            return Ok(());
        }
        let priority = Self::wedding_today_priority_of(&tx, n.couple_id.as_ref(), now).await?;
        let (status, reason, detail) = match &outcome {
            Outcome::Sent {
                provider_id,
                provider_message_id,
                delivered,
            } => {
                let status = if *delivered { "delivered" } else { "sent" };
                tx.execute_raw(stmt(
                    backend,
                    "UPDATE notifications SET status = $1, reason = NULL, detail = NULL, provider_id = $2, \
                     provider_message_id = $3, attempts = attempts + 1, sent_at = $4, delivered_at = $5, \
                     updated_at = $4 WHERE id = $6",
                    vec![
                        status.into(),
                        provider_id.map(|p| p.to_string()).into(),
                        provider_message_id.clone().into(),
                        to_micros(now).into(),
                        delivered.then(|| to_micros(now)).into(),
                        id.clone().into(),
                    ],
                ))
                .await?;
                let detail = provider_id.map(|p| {
                    let name = work
                        .providers
                        .iter()
                        .find(|w| w.id == p)
                        .map(|w| format!("{} ({})", w.name, w.kind))
                        .unwrap_or_else(|| p.to_string());
                    format!("accepted by {name}")
                });
                (status, None, detail)
            }
            Outcome::Blocked { reason, detail } => {
                self.set_state(&tx, &id, "blocked", Some(*reason), detail, None, now, false)
                    .await?;
                ("blocked", Some(*reason), Some(detail.clone()))
            }
            Outcome::Deferred {
                until,
                reason,
                detail,
            } => {
                self.set_state(
                    &tx,
                    &id,
                    "deferred",
                    Some(*reason),
                    detail,
                    Some(*until),
                    now,
                    false,
                )
                .await?;
                enqueue_in(&tx, now, send_job(&org, &id, *until, priority)).await?;
                ("deferred", Some(*reason), Some(detail.clone()))
            }
            Outcome::Retry { until, detail } => {
                self.set_state(
                    &tx,
                    &id,
                    "queued",
                    Some(Reason::ProvidersUnavailable),
                    detail,
                    Some(*until),
                    now,
                    true,
                )
                .await?;
                enqueue_in(&tx, now, send_job(&org, &id, *until, priority)).await?;
                (
                    "queued",
                    Some(Reason::ProvidersUnavailable),
                    Some(detail.clone()),
                )
            }
            Outcome::Failed {
                reason,
                detail,
                fallback,
            } => {
                self.set_state(&tx, &id, "failed", Some(*reason), detail, None, now, true)
                    .await?;
                // A message that was never sent does not use the quota.
                tx.execute_raw(stmt(
                    backend,
                    "UPDATE notifications SET counted_at = NULL WHERE id = $1",
                    vec![id.clone().into()],
                ))
                .await?;
                if let Some(input) = fallback.clone() {
                    let p = prepare(*input, now, "fallback")?;
                    let child = Self::insert_notification(
                        &tx,
                        &org,
                        &p,
                        &Links {
                            alert_id: n.alert_id,
                            parent_id: Some(n.id),
                            cause: Some(format!("fallback for {id}, whose {} failed", n.channel)),
                            extra: None,
                        },
                        None,
                        now,
                        Some(priority),
                    )
                    .await?;
                    history(
                        &tx,
                        &org.to_string(),
                        &id,
                        now,
                        "fallback",
                        None,
                        Some(&format!("falling back to {} as {child}", p.channel)),
                    )
                    .await?;
                }
                ("failed", Some(*reason), Some(detail.clone()))
            }
        };
        history(
            &tx,
            &org.to_string(),
            &id,
            now,
            status,
            reason.map(|r| r.as_str()),
            detail.as_deref(),
        )
        .await?;
        tx.commit().await?;
        self.wake_workers();
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn set_state(
        &self,
        tx: &DatabaseTransaction,
        id: &str,
        status: &str,
        reason: Option<Reason>,
        detail: &str,
        due: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        attempted: bool,
    ) -> StoreResult<()> {
        tx.execute_raw(stmt(
            self.backend(),
            "UPDATE notifications SET status = $1, reason = $2, detail = $3, due_at = COALESCE($4, due_at), \
             attempts = attempts + $5, updated_at = $6 WHERE id = $7",
            vec![
                status.into(),
                reason.map(|r| r.as_str().to_owned()).into(),
                detail.into(),
                due.map(to_micros).into(),
                i32::from(attempted).into(),
                to_micros(now).into(),
                id.into(),
            ],
        ))
        .await?;
        Ok(())
    }

    /// Applies a provider's report (delivered, bounced, failed, opened, clicked) to the
    /// notification it names, by our id or the provider's message id. Returns whether one
    /// matched. Opened and clicked keep the first time; a later status never goes backwards
    /// from `delivered` to `sent`.
    pub async fn notify_track(
        &self,
        id: Option<&str>,
        provider_message_id: Option<(&OrgId, &str)>,
        event: &str,
        detail: Option<&str>,
    ) -> StoreResult<bool> {
        let now = self.clock().now();
        let backend = self.backend();
        let tx = self.write_tx().await?;
        let row = match (id, provider_message_id) {
            (Some(id), _) => Self::notification_row(&tx, None, id).await.ok(),
            (None, Some((org, pm))) => {
                tx.query_one_raw(stmt(
                    backend,
                    "SELECT * FROM notifications WHERE provider_message_id = $1 AND org_id = $2",
                    vec![pm.into(), org.to_string().into()],
                ))
                .await?
            }
            (None, None) => None,
        };
        let Some(row) = row else {
            return Ok(false);
        };
        let nid: String = row.try_get("", "id")?;
        let org: String = row.try_get("", "org_id")?;
        let sql = match event {
            "delivered" => {
                "UPDATE notifications SET status = 'delivered', delivered_at = COALESCE(delivered_at, $1), \
                 updated_at = $1 WHERE id = $2 AND status IN ('sent', 'delivered')"
            }
            "bounced" => {
                "UPDATE notifications SET status = 'bounced', reason = 'rejected', updated_at = $1 WHERE id = $2"
            }
            "failed" => {
                "UPDATE notifications SET status = 'failed', reason = 'rejected', updated_at = $1 WHERE id = $2"
            }
            "opened" => {
                "UPDATE notifications SET opened_at = COALESCE(opened_at, $1), updated_at = $1 WHERE id = $2"
            }
            "clicked" => {
                "UPDATE notifications SET clicked_at = COALESCE(clicked_at, $1), \
                 opened_at = COALESCE(opened_at, $1), updated_at = $1 WHERE id = $2"
            }
            "read" => {
                "UPDATE notifications SET read_at = COALESCE(read_at, $1), updated_at = $1 WHERE id = $2"
            }
            other => {
                return Err(StoreError::Invalid(ValidationErrors::single(
                    "event",
                    format!("unknown tracking event {other}"),
                )));
            }
        };
        tx.execute_raw(stmt(
            backend,
            sql,
            vec![to_micros(now).into(), nid.clone().into()],
        ))
        .await?;
        history(&tx, &org, &nid, now, event, None, detail).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Counts by channel, status and reason since `since`.
    pub async fn notify_stats(
        &self,
        org: &OrgId,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<StatRow>> {
        let rows = self
            .connection()
            .query_all_raw(stmt(
                self.backend(),
                "SELECT channel, status, reason, COUNT(*) AS n FROM notifications WHERE org_id = $1 \
                 AND created_at >= $2 GROUP BY channel, status, reason ORDER BY channel, status, reason",
                vec![org.to_string().into(), to_micros(since).into()],
            ))
            .await?;
        rows.iter()
            .map(|r| {
                Ok(StatRow {
                    channel: r.try_get("", "channel")?,
                    status: r.try_get("", "status")?,
                    reason: r.try_get("", "reason")?,
                    count: r.try_get("", "n")?,
                })
            })
            .collect()
    }

    // --- providers -------------------------------------------------------------------

    /// Saves a provider (already checked against the catalog by the caller) for `channel`.
    pub async fn create_provider(
        &self,
        org: &OrgId,
        channel: NotifyChannel,
        input: ProviderInput,
        actor: &Actor,
    ) -> StoreResult<Provider> {
        let now = self.clock().now();
        let id = ProviderId::new_at(now);
        let names: Vec<&String> = input.secrets.keys().collect();
        let sealed = if input.secrets.is_empty() {
            None
        } else {
            let plain = serde_json::to_vec(&input.secrets).map_err(corrupt)?;
            Some(self.master_key()?.seal(&format!("{id}:secrets"), &plain)?)
        };
        let tx = self.write_tx().await?;
        let position = match input.position {
            Some(p) => p,
            None => {
                let row = tx
                    .query_one_raw(stmt(
                        self.backend(),
                        "SELECT COALESCE(MAX(position), -1) AS p FROM notify_providers WHERE org_id = $1 AND channel = $2",
                        vec![org.to_string().into(), channel.as_str().into()],
                    ))
                    .await?;
                row.map(|r| r.try_get::<i32>("", "p"))
                    .transpose()?
                    .unwrap_or(-1)
                    + 1
            }
        };
        tx.execute_raw(stmt(
            self.backend(),
            "INSERT INTO notify_providers (id, org_id, channel, kind, name, position, config, secret_names, \
             secrets_sealed, enabled, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)",
            vec![
                id.to_string().into(),
                org.to_string().into(),
                channel.as_str().into(),
                input.kind.clone().into(),
                input.name.clone().unwrap_or_else(|| input.kind.clone()).into(),
                position.into(),
                serde_json::Value::Object(input.config.clone()).to_string().into(),
                json_text(&names)?.into(),
                sealed.into(),
                input.enabled.unwrap_or(true).into(),
                to_micros(now).into(),
            ],
        ))
        .await?;
        let row = tx
            .query_one_raw(stmt(
                self.backend(),
                "SELECT * FROM notify_providers WHERE id = $1",
                vec![id.to_string().into()],
            ))
            .await?
            .ok_or(StoreError::NotFound)?;
        let view = to_provider(&row)?;
        audit::append(
            &tx,
            org,
            now,
            Change {
                actor,
                action: "notify_provider.create",
                target_type: "notify_provider",
                target_id: id.to_string(),
                before: None,
                after: serde_json::to_value(&view).ok(),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(view)
    }

    /// `org`'s providers, by channel and failover order.
    pub async fn list_providers(&self, org: &OrgId) -> StoreResult<Vec<Provider>> {
        let rows = self
            .connection()
            .query_all_raw(stmt(
                self.backend(),
                "SELECT * FROM notify_providers WHERE org_id = $1 ORDER BY channel, position, id",
                vec![org.to_string().into()],
            ))
            .await?;
        rows.iter().map(to_provider).collect()
    }

    /// Removes a provider.
    pub async fn delete_provider(&self, org: &OrgId, id: &str, actor: &Actor) -> StoreResult<()> {
        let now = self.clock().now();
        let tx = self.write_tx().await?;
        let row = tx
            .query_one_raw(stmt(
                self.backend(),
                "SELECT * FROM notify_providers WHERE org_id = $1 AND id = $2",
                vec![org.to_string().into(), id.into()],
            ))
            .await?
            .ok_or(StoreError::NotFound)?;
        let before = to_provider(&row)?;
        tx.execute_raw(stmt(
            self.backend(),
            "DELETE FROM notify_providers WHERE id = $1",
            vec![id.into()],
        ))
        .await?;
        audit::append(
            &tx,
            org,
            now,
            Change {
                actor,
                action: "notify_provider.delete",
                target_type: "notify_provider",
                target_id: id.to_owned(),
                before: serde_json::to_value(&before).ok(),
                after: None,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    // --- templates -------------------------------------------------------------------

    /// Creates or replaces the template named `input.name` for its channel.
    pub async fn put_template(&self, org: &OrgId, input: TemplateInput) -> StoreResult<Template> {
        let now = self.clock().now();
        let tx = self.write_tx().await?;
        let existing = tx
            .query_one_raw(stmt(
                self.backend(),
                "SELECT id FROM notify_templates WHERE org_id = $1 AND name = $2 AND channel = $3",
                vec![
                    org.to_string().into(),
                    input.name.clone().into(),
                    input.channel.as_str().into(),
                ],
            ))
            .await?;
        let id = match existing {
            Some(r) => {
                let id: String = r.try_get("", "id")?;
                tx.execute_raw(stmt(
                    self.backend(),
                    "UPDATE notify_templates SET subject = $1, body_text = $2, body_html = $3, updated_at = $4 WHERE id = $5",
                    vec![
                        input.subject.clone().into(),
                        input.text.clone().into(),
                        input.html.clone().into(),
                        to_micros(now).into(),
                        id.clone().into(),
                    ],
                ))
                .await?;
                id
            }
            None => {
                let id = TemplateId::new_at(now).to_string();
                tx.execute_raw(stmt(
                    self.backend(),
                    "INSERT INTO notify_templates (id, org_id, name, channel, subject, body_text, body_html, \
                     created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
                    vec![
                        id.clone().into(),
                        org.to_string().into(),
                        input.name.clone().into(),
                        input.channel.as_str().into(),
                        input.subject.clone().into(),
                        input.text.clone().into(),
                        input.html.clone().into(),
                        to_micros(now).into(),
                    ],
                ))
                .await?;
                id
            }
        };
        let row = tx
            .query_one_raw(stmt(
                self.backend(),
                "SELECT * FROM notify_templates WHERE id = $1",
                vec![id.into()],
            ))
            .await?
            .ok_or(StoreError::NotFound)?;
        tx.commit().await?;
        to_template(&row)
    }

    /// `org`'s templates.
    pub async fn list_templates(&self, org: &OrgId) -> StoreResult<Vec<Template>> {
        let rows = self
            .connection()
            .query_all_raw(stmt(
                self.backend(),
                "SELECT * FROM notify_templates WHERE org_id = $1 ORDER BY name, channel",
                vec![org.to_string().into()],
            ))
            .await?;
        rows.iter().map(to_template).collect()
    }

    /// Deletes a template.
    pub async fn delete_template(&self, org: &OrgId, id: &str) -> StoreResult<()> {
        let _turn = self.write_turn().await?;
        let done = self
            .connection()
            .execute_raw(stmt(
                self.backend(),
                "DELETE FROM notify_templates WHERE org_id = $1 AND id = $2",
                vec![org.to_string().into(), id.into()],
            ))
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    // --- settings and preferences ----------------------------------------------------

    /// `org`'s notification settings (defaults when none were saved).
    pub async fn notify_settings(&self, org: &OrgId) -> StoreResult<Settings> {
        let row = self
            .connection()
            .query_one_raw(stmt(
                self.backend(),
                "SELECT settings FROM notify_settings WHERE org_id = $1",
                vec![org.to_string().into()],
            ))
            .await?;
        match row {
            Some(r) => serde_json::from_str(&r.try_get::<String>("", "settings")?).map_err(corrupt),
            None => Ok(Settings::default()),
        }
    }

    /// Replaces `org`'s notification settings (validated by the caller), audited.
    pub async fn put_notify_settings(
        &self,
        org: &OrgId,
        settings: &Settings,
        actor: &Actor,
    ) -> StoreResult<()> {
        let now = self.clock().now();
        let before = self.notify_settings(org).await?;
        let tx = self.write_tx().await?;
        tx.execute_raw(stmt(
            self.backend(),
            "DELETE FROM notify_settings WHERE org_id = $1",
            vec![org.to_string().into()],
        ))
        .await?;
        tx.execute_raw(stmt(
            self.backend(),
            "INSERT INTO notify_settings (org_id, settings, updated_at) VALUES ($1, $2, $3)",
            vec![
                org.to_string().into(),
                json_text(settings)?.into(),
                to_micros(now).into(),
            ],
        ))
        .await?;
        audit::append(
            &tx,
            org,
            now,
            Change {
                actor,
                action: "notify_settings.update",
                target_type: "organization",
                target_id: org.to_string(),
                before: serde_json::to_value(&before).ok(),
                after: serde_json::to_value(settings).ok(),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A recipient's preferences (defaults when none were saved).
    pub async fn preferences(&self, org: &OrgId, key: &str) -> StoreResult<Preferences> {
        let row = self
            .connection()
            .query_one_raw(stmt(
                self.backend(),
                "SELECT * FROM notify_recipients WHERE org_id = $1 AND recipient_key = $2",
                vec![org.to_string().into(), key.into()],
            ))
            .await?;
        let Some(r) = row else {
            return Ok(Preferences::default());
        };
        Ok(Preferences {
            time_zone: r.try_get("", "time_zone")?,
            quiet_hours: r
                .try_get::<Option<String>>("", "quiet_hours")?
                .map(|q| serde_json::from_str(&q).map_err(corrupt))
                .transpose()?,
            unsubscribed: serde_json::from_str(&r.try_get::<String>("", "unsubscribed")?)
                .map_err(corrupt)?,
        })
    }

    /// Replaces a recipient's preferences; `source` says who changed them (`api`,
    /// `one-click`), kept as consent evidence.
    pub async fn put_preferences(
        &self,
        org: &OrgId,
        key: &str,
        prefs: &Preferences,
        source: &str,
    ) -> StoreResult<()> {
        let now = self.clock().now();
        let tx = self.write_tx().await?;
        tx.execute_raw(stmt(
            self.backend(),
            "DELETE FROM notify_recipients WHERE org_id = $1 AND recipient_key = $2",
            vec![org.to_string().into(), key.into()],
        ))
        .await?;
        tx.execute_raw(stmt(
            self.backend(),
            "INSERT INTO notify_recipients (org_id, recipient_key, time_zone, quiet_hours, unsubscribed, \
             unsubscribe_source, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            vec![
                org.to_string().into(),
                key.into(),
                prefs.time_zone.clone().into(),
                prefs.quiet_hours.as_ref().map(json_text).transpose()?.into(),
                json_text(&prefs.unsubscribed)?.into(),
                source.into(),
                to_micros(now).into(),
            ],
        ))
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Unsubscribes the recipient of notification `id` from its channel (one-click
    /// unsubscribe); returns the organisation and key. Repeating it changes nothing.
    pub async fn unsubscribe_by_notification(&self, id: &str) -> StoreResult<(OrgId, String)> {
        let row = Self::notification_row(self.connection(), None, id).await?;
        let org: OrgId = parse_id(&row.try_get::<String>("", "org_id")?)?;
        let key: String = row.try_get("", "recipient_key")?;
        let channel: String = row.try_get("", "channel")?;
        let mut prefs = self.preferences(&org, &key).await?;
        if !prefs.unsubscribed.contains(&channel) {
            prefs.unsubscribed.push(channel.clone());
            self.put_preferences(&org, &key, &prefs, "one-click")
                .await?;
        }
        history(
            self.connection(),
            &org.to_string(),
            id,
            self.clock().now(),
            "unsubscribed",
            None,
            Some(&format!(
                "the recipient unsubscribed from {channel} (one click)"
            )),
        )
        .await?;
        Ok((org, key))
    }

    // --- alerts ----------------------------------------------------------------------

    /// Raises an alert: its row, one notification per route (and, on Saturday, SMS to the
    /// on-call people and PagerDuty), and the first escalation job, in one transaction.
    pub async fn create_alert(
        &self,
        org: &OrgId,
        input: AlertInput,
        plan: &AlertPlanned,
        routes: &[AlertRoute],
    ) -> StoreResult<(Alert, Vec<NotificationId>)> {
        let mut errors = ValidationErrors::default();
        let summary = wedsync_core::validate::text(&mut errors, "summary", &input.summary, 300);
        let body = input.body.clone().unwrap_or_default();
        if body.len() > 16 * 1024 {
            errors.add("body", "at most 16 KiB");
        }
        let summary = errors.into_result(summary)?.unwrap_or_default();
        let now = self.clock().now();
        let id = AlertId::new_at(now);
        let severity = input.severity.unwrap_or(Severity::Warning);
        let settings = self.notify_settings(org).await?;
        let tx = self.write_tx().await?;
        if let Some(c) = &input.couple_id {
            let found = tx
                .query_one_raw(stmt(
                    self.backend(),
                    "SELECT id FROM couples WHERE org_id = $1 AND id = $2",
                    vec![org.to_string().into(), c.to_string().into()],
                ))
                .await?;
            if found.is_none() {
                return Err(StoreError::Invalid(ValidationErrors::single(
                    "couple_id",
                    "no such couple",
                )));
            }
        }
        let dedup_key = format!("wedsync-{id}");
        tx.execute_raw(stmt(
            self.backend(),
            "INSERT INTO alerts (id, org_id, summary, body, severity, raised_severity, escalation, couple_id, \
             emergency, status, dedup_key, escalation_step, acknowledged_by, acknowledged_at, resolved_at, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'open', $10, 0, NULL, NULL, NULL, $11, $11)",
            vec![
                id.to_string().into(),
                org.to_string().into(),
                summary.clone().into(),
                body.clone().into(),
                severity.as_str().into(),
                plan.raised.as_str().into(),
                plan.escalation.clone().into(),
                input.couple_id.map(|c| c.to_string()).into(),
                input.emergency.into(),
                dedup_key.clone().into(),
                to_micros(now).into(),
            ],
        ))
        .await?;
        let mut targets: Vec<(AlertRoute, &str)> =
            routes.iter().map(|r| (r.clone(), "alert route")).collect();
        if plan.also_sms_and_pagerduty {
            for person in &settings.on_call {
                if person.phone.is_some() {
                    targets.push((
                        AlertRoute {
                            channel: NotifyChannel::Sms,
                            to: person.clone(),
                        },
                        "Saturday: every alert also goes to SMS",
                    ));
                }
            }
            if !targets
                .iter()
                .any(|(r, _)| r.channel == NotifyChannel::Pagerduty)
            {
                targets.push((
                    AlertRoute {
                        channel: NotifyChannel::Pagerduty,
                        to: Recipient::default(),
                    },
                    "Saturday: every alert also goes to PagerDuty",
                ));
            }
        }
        let mut ids = Vec::new();
        for (route, cause) in targets {
            let ids_for = self
                .alert_notification(
                    &tx, org, &id, &dedup_key, &summary, &body, &input, plan, &route, cause, now,
                )
                .await?;
            ids.push(ids_for);
        }
        if plan.escalate
            && let Some(first) = settings.escalation.first()
        {
            let mut job = NewJob::new(
                ESCALATE_KIND,
                serde_json::json!({ "alert_id": id.to_string(), "step": 0 }),
            );
            job.org_id = Some(*org);
            job.run_at = Some(now + TimeDelta::minutes(i64::from(first.after_minutes)));
            job.priority = plan.priority;
            enqueue_in(&tx, now, job).await?;
        }
        let row = tx
            .query_one_raw(stmt(
                self.backend(),
                "SELECT * FROM alerts WHERE id = $1",
                vec![id.to_string().into()],
            ))
            .await?
            .ok_or(StoreError::NotFound)?;
        tx.commit().await?;
        self.wake_workers();
        Ok((to_alert(&row)?, ids))
    }

    #[allow(clippy::too_many_arguments)]
    async fn alert_notification(
        &self,
        tx: &DatabaseTransaction,
        org: &OrgId,
        alert: &AlertId,
        dedup_key: &str,
        summary: &str,
        body: &str,
        input: &AlertInput,
        plan: &AlertPlanned,
        route: &AlertRoute,
        cause: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<NotificationId> {
        let subject = format!("[{}] {summary}", plan.raised.as_str().to_uppercase());
        let text = if body.is_empty() {
            summary.to_owned()
        } else {
            format!("{summary}\n\n{body}")
        };
        let n = NotificationInput {
            channel: Some(route.channel),
            to: route.to.clone(),
            template: None,
            subject: Some(subject),
            text: Some(text),
            html: None,
            data: None,
            couple_id: input.couple_id,
            severity: Some(plan.raised),
            emergency: input.emergency,
            send_at: None,
        };
        let p = prepare(n, now, "alert_routes").map_err(StoreError::Invalid)?;
        Self::insert_notification(
            tx,
            org,
            &p,
            &Links {
                alert_id: Some(*alert),
                parent_id: None,
                cause: Some(cause.to_owned()),
                extra: Some(serde_json::json!({ "action": "trigger", "dedup_key": dedup_key })),
            },
            None,
            now,
            Some(plan.priority),
        )
        .await
    }

    /// One alert.
    pub async fn get_alert(&self, org: &OrgId, id: &str) -> StoreResult<Alert> {
        let row = self
            .connection()
            .query_one_raw(stmt(
                self.backend(),
                "SELECT * FROM alerts WHERE org_id = $1 AND id = $2",
                vec![org.to_string().into(), id.into()],
            ))
            .await?
            .ok_or(StoreError::NotFound)?;
        to_alert(&row)
    }

    /// A page of `org`'s alerts.
    pub async fn list_alerts(&self, org: &OrgId, page: &PageRequest) -> StoreResult<Page<Alert>> {
        let limit = page.limit();
        let rows = self
            .connection()
            .query_all_raw(stmt(
                self.backend(),
                "SELECT * FROM alerts WHERE org_id = $1 AND id > $2 ORDER BY id LIMIT $3",
                vec![
                    org.to_string().into(),
                    page.after.clone().unwrap_or_default().into(),
                    i64::try_from(limit + 1).unwrap_or(i64::MAX).into(),
                ],
            ))
            .await?;
        let items = rows.iter().map(to_alert).collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(items, limit, |a| a.id.to_string()))
    }

    /// Acknowledges (`resolve = false`) or resolves an alert. Stops its escalation, and
    /// sends the matching PagerDuty event when PagerDuty was triggered. Returns the alert
    /// and whether it changed (acknowledging twice changes nothing).
    pub async fn ack_alert(
        &self,
        org: Option<&OrgId>,
        id: &str,
        by: &str,
        resolve: bool,
    ) -> StoreResult<(Alert, bool)> {
        let now = self.clock().now();
        let tx = self.write_tx().await?;
        let row = match org {
            Some(org) => {
                tx.query_one_raw(stmt(
                    self.backend(),
                    "SELECT * FROM alerts WHERE org_id = $1 AND id = $2",
                    vec![org.to_string().into(), id.into()],
                ))
                .await?
            }
            None => {
                tx.query_one_raw(stmt(
                    self.backend(),
                    "SELECT * FROM alerts WHERE id = $1",
                    vec![id.into()],
                ))
                .await?
            }
        }
        .ok_or(StoreError::NotFound)?;
        let alert = to_alert(&row)?;
        let org_id: OrgId = parse_id(&row.try_get::<String>("", "org_id")?)?;
        let next = if resolve { "resolved" } else { "acknowledged" };
        if alert.status == "resolved" || alert.status == next {
            return Ok((alert, false));
        }
        if resolve {
            tx.execute_raw(stmt(
                self.backend(),
                "UPDATE alerts SET status = 'resolved', resolved_at = $1, acknowledged_at = COALESCE(acknowledged_at, $1), \
                 acknowledged_by = COALESCE(acknowledged_by, $2), updated_at = $1 WHERE id = $3",
                vec![to_micros(now).into(), by.into(), id.into()],
            ))
            .await?;
        } else {
            tx.execute_raw(stmt(
                self.backend(),
                "UPDATE alerts SET status = 'acknowledged', acknowledged_at = $1, acknowledged_by = $2, \
                 updated_at = $1 WHERE id = $3",
                vec![to_micros(now).into(), by.into(), id.into()],
            ))
            .await?;
        }
        // PagerDuty keeps its own incident: tell it, under the same dedup key.
        let paged = tx
            .query_one_raw(stmt(
                self.backend(),
                "SELECT id FROM notifications WHERE alert_id = $1 AND channel = 'pagerduty' AND parent_id IS NULL",
                vec![id.into()],
            ))
            .await?;
        if paged.is_some() {
            let n = NotificationInput {
                channel: Some(NotifyChannel::Pagerduty),
                text: Some(format!("{next} by {by}")),
                couple_id: alert.couple_id,
                severity: Some(alert.raised_severity),
                emergency: true,
                ..Default::default()
            };
            let p = prepare(n, now, "").map_err(StoreError::Invalid)?;
            Self::insert_notification(
                &tx,
                &org_id,
                &p,
                &Links {
                    alert_id: Some(alert.id),
                    parent_id: None,
                    cause: Some(format!("alert {next} by {by}")),
                    extra: Some(serde_json::json!({
                        "action": if resolve { "resolve" } else { "acknowledge" },
                        "dedup_key": alert.dedup_key,
                    })),
                },
                None,
                now,
                Some(wedsync_core::calendar::PRIORITY_WEDDING_TODAY),
            )
            .await?;
        }
        let row = tx
            .query_one_raw(stmt(
                self.backend(),
                "SELECT * FROM alerts WHERE id = $1",
                vec![id.into()],
            ))
            .await?
            .ok_or(StoreError::NotFound)?;
        tx.commit().await?;
        self.wake_workers();
        Ok((to_alert(&row)?, true))
    }

    /// Applies a provider's delivery report that arrived through the inbound gateway to the
    /// notification it names: Resend's webhooks (sent through Svix, so a `svix` source
    /// verifies them), `{"type": "email.delivered" | "email.bounced" | "email.opened" |
    /// "email.clicked" | …, "data": {"email_id"}}`, kept as `svix.raw` events; and Twilio's
    /// status callbacks (`twilio.raw`, `MessageSid` and `MessageStatus` `delivered`,
    /// `undelivered` or `failed`). Returns whether a notification matched.
    pub async fn apply_provider_status(&self, event_id: &str) -> StoreResult<bool> {
        let row = self
            .connection()
            .query_one_raw(stmt(
                self.backend(),
                "SELECT org_id, event_type, data FROM events WHERE id = $1",
                vec![event_id.into()],
            ))
            .await?;
        let Some(row) = row else { return Ok(false) };
        let event_type: String = row.try_get("", "event_type")?;
        let data: serde_json::Value =
            serde_json::from_str(&row.try_get::<String>("", "data")?).unwrap_or_default();
        let org: OrgId = parse_id(&row.try_get::<String>("", "org_id")?)?;
        if event_type == TWILIO_STATUS_TYPE {
            let text = |k: &str| data.get(k).and_then(serde_json::Value::as_str);
            let (Some(sid), Some(status)) = (text("MessageSid"), text("MessageStatus")) else {
                return Ok(false);
            };
            let event = match status {
                "delivered" => "delivered",
                "undelivered" | "failed" => "failed",
                _ => return Ok(false),
            };
            let detail = match text("ErrorCode") {
                Some(code) => format!("reported by Twilio ({status}, error {code})"),
                None => format!("reported by Twilio ({status})"),
            };
            return self
                .notify_track(None, Some((&org, sid)), event, Some(&detail))
                .await;
        }
        if !PROVIDER_STATUS_TYPES.contains(&event_type.as_str()) {
            return Ok(false);
        }
        let (Some(kind), Some(email_id)) = (
            data.get("type").and_then(serde_json::Value::as_str),
            data.pointer("/data/email_id")
                .and_then(serde_json::Value::as_str),
        ) else {
            return Ok(false);
        };
        let event = match kind {
            "email.delivered" => "delivered",
            "email.bounced" => "bounced",
            "email.complained" | "email.failed" => "failed",
            "email.opened" => "opened",
            "email.clicked" => "clicked",
            _ => return Ok(false),
        };
        let detail = format!("reported by the provider ({kind})");
        self.notify_track(None, Some((&org, email_id)), event, Some(&detail))
            .await
    }

    /// Applies an `incident.acknowledged` or `incident.resolved` event whose subject is one
    /// of the organisation's alerts (a button on an alert message, verified by the inbound
    /// gateway) to that alert. Other events, and alerts of other organisations, are left
    /// alone. Returns whether an alert changed.
    pub async fn apply_alert_action(&self, event_id: &str) -> StoreResult<bool> {
        let row = self
            .connection()
            .query_one_raw(stmt(
                self.backend(),
                "SELECT org_id, event_type, subject, data FROM events WHERE id = $1",
                vec![event_id.into()],
            ))
            .await?;
        let Some(row) = row else { return Ok(false) };
        let event_type: String = row.try_get("", "event_type")?;
        let resolve = match event_type.as_str() {
            t if t == ALERT_ACTION_TYPES[0] => false,
            t if t == ALERT_ACTION_TYPES[1] => true,
            _ => return Ok(false),
        };
        let Some(subject) = row.try_get::<Option<String>>("", "subject")? else {
            return Ok(false);
        };
        if subject.parse::<AlertId>().is_err() {
            return Ok(false);
        }
        let org: OrgId = parse_id(&row.try_get::<String>("", "org_id")?)?;
        let data: serde_json::Value =
            serde_json::from_str(&row.try_get::<String>("", "data")?).unwrap_or_default();
        let who = data
            .get("username")
            .or_else(|| data.get("user_id"))
            .and_then(serde_json::Value::as_str)
            .unwrap_or("someone");
        match self
            .ack_alert(Some(&org), &subject, &format!("slack:{who}"), resolve)
            .await
        {
            Ok((_, changed)) => Ok(changed),
            Err(StoreError::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Takes escalation step `step` of an alert if it is still open: one notification for
    /// the step and the next step's job. Returns the notification created, if any.
    pub async fn escalate_alert(
        &self,
        id: &str,
        step: usize,
        priority: i32,
    ) -> StoreResult<Option<NotificationId>> {
        let now = self.clock().now();
        let row = self
            .connection()
            .query_one_raw(stmt(
                self.backend(),
                "SELECT * FROM alerts WHERE id = $1",
                vec![id.into()],
            ))
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let alert = to_alert(&row)?;
        if alert.status != "open" || usize::try_from(alert.escalation_step).unwrap_or(0) != step {
            return Ok(None);
        }
        let org: OrgId = parse_id(&row.try_get::<String>("", "org_id")?)?;
        let settings = self.notify_settings(&org).await?;
        let Some(this) = settings.escalation.get(step) else {
            return Ok(None);
        };
        let tx = self.write_tx().await?;
        let input = AlertInput {
            summary: alert.summary.clone(),
            body: Some(alert.body.clone()),
            severity: Some(alert.severity),
            couple_id: alert.couple_id,
            emergency: alert.emergency,
        };
        let plan = AlertPlanned {
            raised: alert.raised_severity,
            escalation: alert.escalation.clone(),
            also_sms_and_pagerduty: false,
            escalate: true,
            priority,
        };
        let route = AlertRoute {
            channel: this.channel,
            to: this.to.clone(),
        };
        let cause = format!(
            "escalation step {}: unacknowledged after {} minutes",
            step + 1,
            this.after_minutes
        );
        let created = self
            .alert_notification(
                &tx,
                &org,
                &alert.id,
                &alert.dedup_key,
                &alert.summary,
                &alert.body,
                &input,
                &plan,
                &route,
                &cause,
                now,
            )
            .await?;
        tx.execute_raw(stmt(
            self.backend(),
            "UPDATE alerts SET escalation_step = $1, updated_at = $2 WHERE id = $3",
            vec![
                i32::try_from(step + 1).unwrap_or(i32::MAX).into(),
                to_micros(now).into(),
                id.into(),
            ],
        ))
        .await?;
        if let Some(next) = settings.escalation.get(step + 1) {
            let mut job = NewJob::new(
                ESCALATE_KIND,
                serde_json::json!({ "alert_id": id, "step": step + 1 }),
            );
            job.org_id = Some(org);
            job.run_at = Some(alert.created_at + TimeDelta::minutes(i64::from(next.after_minutes)));
            job.priority = priority;
            enqueue_in(&tx, now, job).await?;
        }
        tx.commit().await?;
        self.wake_workers();
        Ok(Some(created))
    }
}

async fn count_counted<C: ConnectionTrait>(
    db: &C,
    org: &OrgId,
    channel: NotifyChannel,
    since: DateTime<Utc>,
) -> StoreResult<u32> {
    let row = db
        .query_one_raw(stmt(
            db.get_database_backend(),
            "SELECT COUNT(*) AS n FROM notifications WHERE org_id = $1 AND channel = $2 AND counted_at >= $3",
            vec![
                org.to_string().into(),
                channel.as_str().into(),
                to_micros(since).into(),
            ],
        ))
        .await?;
    let n: i64 = row.map(|r| r.try_get("", "n")).transpose()?.unwrap_or(0);
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

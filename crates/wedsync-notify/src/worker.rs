//! The `notify.send` job: gate (preferences, tier, quiet hours), per-recipient rate limit,
//! quota claim, rendering, then the channel's providers in order with a circuit breaker
//! each, falling over on transient failures; retries when all are down; the email-to-SMS
//! fallback when an email fails for good. And `notify.escalate`, which climbs an
//! unacknowledged alert's escalation chain.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use tokio::sync::broadcast;
use wedsync_core::breaker::{Admission, BreakerPolicy};
use wedsync_core::notify::{GateInput, NotifyChannel, Quotas, Reason, Verdict, gate};
use wedsync_core::ratelimit::Rate;
use wedsync_core::retry::{Decision, Failure, RetryPolicy};
use wedsync_delivery::ssrf::{GuardedClient, refusal_of};
use wedsync_store::Store;
use wedsync_store::notify::{Claim, NotificationInput, NotifyWork, Outcome, ProviderWork};
use wedsync_store::queue::Job;
use wedsync_store::worker::{JobError, JobHandler};

use crate::catalog::{Body, Catalog, Reply};
use crate::email::{Email, SmtpPool, SmtpResult};
use crate::links::Links;
use crate::templates::{self, Rendered};

/// The rules the sender applies.
#[derive(Debug, Clone)]
pub struct NotifyPolicy {
    /// Tier quotas over a rolling window.
    pub quotas: Quotas,
    /// Retries while every provider of a channel is failing (default: from 30 s doubling
    /// to 30 min, 12 attempts within a day).
    pub retry: RetryPolicy,
    /// A circuit breaker per provider.
    pub breaker: BreakerPolicy,
    /// Messages per recipient per hour and channel when the organisation sets none.
    pub per_recipient_per_hour: u32,
}

impl Default for NotifyPolicy {
    fn default() -> Self {
        Self {
            quotas: Quotas::default(),
            retry: RetryPolicy {
                backoff: wedsync_core::retry::Backoff::Exponential {
                    base: TimeDelta::seconds(30),
                    factor: 2,
                    max: TimeDelta::minutes(30),
                },
                max_attempts: 12,
                max_age: TimeDelta::days(1),
                ..RetryPolicy::default()
            },
            breaker: BreakerPolicy::default(),
            per_recipient_per_hour: 20,
        }
    }
}

/// An in-app message, published live to inbox streams when it is stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InboxEvent {
    /// The organisation.
    pub org_id: String,
    /// The recipient key (`id:…`).
    pub recipient_key: String,
    /// The notification, as the API shows it.
    pub notification: Value,
}

/// Everything the notification jobs share: one per process.
pub struct Notifier {
    store: Store,
    catalog: Catalog,
    http: GuardedClient,
    smtp: SmtpPool,
    links: Option<Links>,
    vapid: Option<crate::push::Vapid>,
    policy: NotifyPolicy,
    inbox: broadcast::Sender<InboxEvent>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").finish_non_exhaustive()
    }
}

impl Notifier {
    /// A notifier sending through `http` (the SSRF-guarded client) and `smtp`, with links
    /// signed by `links` (none: no unsubscribe or tracking links, e.g. without a public URL),
    /// Web Push signed by `vapid` (none: push messages fail with `no_provider`),
    /// publishing in-app messages on `inbox` (shared with the server's streams).
    pub fn new(
        store: Store,
        http: GuardedClient,
        smtp: SmtpPool,
        links: Option<Links>,
        vapid: Option<crate::push::Vapid>,
        policy: NotifyPolicy,
        inbox: Option<broadcast::Sender<InboxEvent>>,
    ) -> Result<Arc<Self>, crate::catalog::CatalogError> {
        let inbox = inbox.unwrap_or_else(|| broadcast::channel(1024).0);
        Ok(Arc::new(Self {
            store,
            catalog: Catalog::builtin()?,
            http,
            smtp,
            links,
            vapid,
            policy,
            inbox,
        }))
    }

    /// Live in-app messages, for inbox streams.
    pub fn inbox(&self) -> broadcast::Receiver<InboxEvent> {
        self.inbox.subscribe()
    }

    /// The sender for live in-app messages (the server shares it with its streams).
    pub fn inbox_sender(&self) -> broadcast::Sender<InboxEvent> {
        self.inbox.clone()
    }

    /// The provider catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The policy.
    pub fn policy(&self) -> &NotifyPolicy {
        &self.policy
    }
}

fn transient(e: impl std::fmt::Display) -> JobError {
    JobError::transient(e.to_string())
}

/// The handler for `notify.send` jobs.
pub fn send_handler(notifier: Arc<Notifier>) -> impl JobHandler {
    move |job: Job| {
        let n = notifier.clone();
        async move {
            let Some(id) = job.payload.get("notification_id").and_then(Value::as_str) else {
                return Err(JobError::Permanent("malformed notify job".into()));
            };
            let Some(work) = n.store.notify_work(id).await.map_err(transient)? else {
                return Ok(());
            };
            if !matches!(work.notification.status.as_str(), "queued" | "deferred") {
                return Ok(()); // already settled: a rerun after the outcome was recorded
            }
            let outcome = n.attempt(&work).await.map_err(transient)?;
            metrics::counter!(
                "wedsync_notifications_total",
                "channel" => work.notification.channel.as_str(),
                "outcome" => outcome_name(&outcome),
            )
            .increment(1);
            n.store
                .notify_record(&work, outcome.clone())
                .await
                .map_err(transient)?;
            if let (Outcome::Sent { .. }, NotifyChannel::InApp) =
                (&outcome, work.notification.channel)
                && let Ok((stored, _)) = n
                    .store
                    .get_notification(&work.org.id, &work.notification.id.to_string())
                    .await
            {
                let _ = n.inbox.send(InboxEvent {
                    org_id: work.org.id.to_string(),
                    recipient_key: recipient_key(&work),
                    notification: serde_json::to_value(&stored).unwrap_or(Value::Null),
                });
            }
            Ok(())
        }
    }
}

fn recipient_key(work: &NotifyWork) -> String {
    match &work.notification.to.id {
        Some(id) => format!("id:{id}"),
        None => String::new(),
    }
}

fn outcome_name(o: &Outcome) -> &'static str {
    match o {
        Outcome::Sent { .. } => "sent",
        Outcome::Blocked { .. } => "blocked",
        Outcome::Deferred { .. } => "deferred",
        Outcome::Retry { .. } => "retry",
        Outcome::Failed { .. } => "failed",
    }
}

/// The handler for `notify.escalate` jobs.
pub fn escalate_handler(notifier: Arc<Notifier>) -> impl JobHandler {
    move |job: Job| {
        let n = notifier.clone();
        async move {
            let (Some(alert), Some(step)) = (
                job.payload.get("alert_id").and_then(Value::as_str),
                job.payload.get("step").and_then(Value::as_u64),
            ) else {
                return Err(JobError::Permanent("malformed escalation job".into()));
            };
            let created = n
                .store
                .escalate_alert(
                    alert,
                    usize::try_from(step).unwrap_or(usize::MAX),
                    job.priority,
                )
                .await
                .map_err(transient)?;
            if let Some(id) = created {
                tracing::info!(alert, step, notification = %id, "alert escalated");
                metrics::counter!("wedsync_alert_escalations_total").increment(1);
            }
            Ok(())
        }
    }
}

/// What one provider attempt came to.
enum Try {
    Accepted(Option<String>),
    Transient {
        reason: String,
        retry_after: Option<TimeDelta>,
    },
    Permanent(String),
}

impl Notifier {
    async fn attempt(&self, work: &NotifyWork) -> Result<Outcome, wedsync_store::StoreError> {
        let n = &work.notification;
        let now = self.store.clock().now();
        let channel = n.channel;
        let tier = work.org.tier;
        let zone = [
            work.preferences.time_zone.as_deref(),
            n.to.time_zone.as_deref(),
            Some(work.org.time_zone.as_str()),
        ]
        .into_iter()
        .flatten()
        .find_map(|z| wedsync_core::org::TimeZone::parse(z).ok())
        .map(|z| z.tz())
        .unwrap_or(chrono_tz::UTC);
        let quiet = if channel.is_personal() {
            work.preferences
                .quiet_hours
                .as_ref()
                .or(work.settings.default_quiet_hours.as_ref())
        } else {
            None
        };
        let input = GateInput {
            channel,
            tier,
            emergency: n.emergency,
            urgent: work.urgent,
            used_in_window: 0, // the claim below counts under a lock
            quotas: &self.policy.quotas,
            unsubscribed: channel.is_personal() && work.preferences.unsubscribed_from(channel),
            quiet: quiet.map(|q| (q, zone)),
            now,
        };
        match gate(&input) {
            Verdict::Block(reason) => {
                return Ok(Outcome::Blocked {
                    reason,
                    detail: block_detail(reason, channel, tier),
                });
            }
            Verdict::Defer { until, reason } => {
                return Ok(Outcome::Deferred {
                    until,
                    reason,
                    detail: format!(
                        "inside the recipient's quiet hours ({}); deferred to {}",
                        zone.name(),
                        until.with_timezone(&zone).to_rfc3339()
                    ),
                });
            }
            Verdict::Send { .. } => {}
        }
        // Per recipient and channel; emergencies are never held back.
        if channel.is_personal() && !n.emergency {
            let per_hour = work
                .settings
                .per_recipient_per_hour
                .unwrap_or(self.policy.per_recipient_per_hour);
            let key = format!("notify:{}:{}:{}", work.org.id, channel, key_of(work));
            let rate = Rate {
                capacity: per_hour.max(1),
                per: TimeDelta::hours(1),
            };
            if let Err(wait) = self.store.rate_take(&key, &rate, 1).await? {
                return Ok(Outcome::Deferred {
                    until: now + wait,
                    reason: Reason::RateLimited,
                    detail: format!("over {per_hour} {channel} messages an hour to this recipient"),
                });
            }
        }
        // Per organisation and channel, when the organisation sets a pace.
        if let Some(&per_minute) = work.settings.per_channel_per_minute.get(&channel)
            && !n.emergency
        {
            let key = format!("notify:{}:{channel}", work.org.id);
            let rate = Rate {
                capacity: per_minute.max(1),
                per: TimeDelta::minutes(1),
            };
            if let Err(wait) = self.store.rate_take(&key, &rate, 1).await? {
                return Ok(Outcome::Deferred {
                    until: now + wait,
                    reason: Reason::RateLimited,
                    detail: format!(
                        "over the organisation's {per_minute} {channel} messages a minute"
                    ),
                });
            }
        }
        let limit = self.policy.quotas.limit(tier, channel);
        if limit.is_some() && !work.counted {
            match self
                .store
                .claim_quota(
                    &work.org.id,
                    &n.id.to_string(),
                    channel,
                    limit,
                    self.policy.quotas.window,
                    n.emergency,
                )
                .await?
            {
                Claim::Exhausted { used } => {
                    return Ok(Outcome::Blocked {
                        reason: Reason::QuotaExceeded,
                        detail: format!(
                            "{used} of {} {channel} messages used in the last {} hours on the {tier} tier",
                            limit.unwrap_or(0),
                            self.policy.quotas.window.num_hours()
                        ),
                    });
                }
                Claim::Granted { bypassed: true } => {
                    metrics::counter!("wedsync_notification_quota_bypassed_total", "channel" => channel.as_str())
                        .increment(1);
                    self.store
                        .notify_note(
                            &n.id.to_string(),
                            "quota_bypassed",
                            Some(Reason::QuotaBypassed.as_str()),
                            "wedding-day emergency: sent past the tier's quota, flagged and counted",
                        )
                        .await?;
                }
                Claim::Granted { bypassed: false } => {}
            }
        }
        let rendered = match self.render(work, now) {
            Ok(r) => r,
            Err(e) => {
                return Ok(Outcome::Failed {
                    reason: Reason::TemplateError,
                    detail: e.to_string(),
                    fallback: None,
                });
            }
        };
        if channel == NotifyChannel::InApp {
            return Ok(Outcome::Sent {
                provider_id: None,
                provider_message_id: None,
                delivered: true,
            });
        }
        if channel == NotifyChannel::Push {
            return Ok(self.send_push(work, &rendered, now).await);
        }
        if work.providers.is_empty() {
            return Ok(Outcome::Failed {
                reason: Reason::NoProvider,
                detail: format!("no enabled {channel} provider is configured"),
                fallback: self.fallback(work, &rendered),
            });
        }
        let mut last_error = String::new();
        let mut retry_after: Option<TimeDelta> = None;
        for provider in &work.providers {
            let target = format!("notify:{}", provider.id);
            if let Admission::Defer { until } = self
                .store
                .breaker_admit(&work.org.id, &target, &self.policy.breaker)
                .await?
            {
                let detail = format!(
                    "skipped {} ({}): its circuit breaker is open until {}",
                    provider.name,
                    provider.kind,
                    until.to_rfc3339()
                );
                self.store
                    .notify_note(&n.id.to_string(), "provider_skipped", None, &detail)
                    .await?;
                last_error = detail;
                continue;
            }
            let started = Instant::now();
            let result = self.send_via(work, provider, &rendered).await;
            metrics::histogram!("wedsync_notification_provider_seconds", "kind" => provider.kind.clone())
                .record(started.elapsed().as_secs_f64());
            match result {
                Try::Accepted(id) => {
                    self.store
                        .breaker_record(&work.org.id, &target, &self.policy.breaker, true)
                        .await?;
                    return Ok(Outcome::Sent {
                        provider_id: Some(provider.id),
                        provider_message_id: id,
                        delivered: false,
                    });
                }
                Try::Transient {
                    reason,
                    retry_after: wait,
                } => {
                    self.store
                        .breaker_record(&work.org.id, &target, &self.policy.breaker, false)
                        .await?;
                    let detail = format!("{} ({}) failed: {reason}", provider.name, provider.kind);
                    tracing::info!(notification = %n.id, provider = %provider.id, reason, "provider failed; trying the next");
                    self.store
                        .notify_note(&n.id.to_string(), "attempt_failed", None, &detail)
                        .await?;
                    last_error = detail;
                    retry_after = retry_after.max(wait);
                }
                Try::Permanent(reason) => {
                    return Ok(Outcome::Failed {
                        reason: Reason::Rejected,
                        detail: format!(
                            "{} ({}) refused it: {reason}",
                            provider.name, provider.kind
                        ),
                        fallback: self.fallback(work, &rendered),
                    });
                }
            }
        }
        Ok(self.retry_or_fail(work, &rendered, last_error, retry_after, now))
    }

    /// Every way of sending failed for now: retry on the policy's schedule, or give up (and
    /// fall back).
    fn retry_or_fail(
        &self,
        work: &NotifyWork,
        rendered: &Rendered,
        last_error: String,
        retry_after: Option<TimeDelta>,
        now: DateTime<Utc>,
    ) -> Outcome {
        let n = &work.notification;
        let channel = n.channel;
        let attempts = u32::try_from(n.attempts).unwrap_or(0) + 1;
        match self.policy.retry.decide(
            attempts,
            n.created_at.max(n.due_at),
            now,
            &Failure::Transient {
                reason: last_error.clone(),
                retry_after,
            },
            rand::random::<f64>(),
        ) {
            Decision::RetryAt(until) => Outcome::Retry {
                until,
                detail: format!(
                    "every {channel} provider failed ({last_error}); retrying at {}",
                    until.to_rfc3339()
                ),
            },
            Decision::GiveUp { reason } => Outcome::Failed {
                reason: Reason::ProvidersUnavailable,
                detail: format!("gave up: {reason}; last error: {last_error}"),
                fallback: self.fallback(work, rendered),
            },
        }
    }

    /// Web Push: the payload encrypted for the browser and signed with the hub's VAPID key.
    async fn send_push(&self, work: &NotifyWork, r: &Rendered, now: DateTime<Utc>) -> Outcome {
        let n = &work.notification;
        let Some(vapid) = &self.vapid else {
            return Outcome::Failed {
                reason: Reason::NoProvider,
                detail: "web push needs the hub's VAPID key, derived from the master key".into(),
                fallback: None,
            };
        };
        let Some(subscription) = &n.to.push else {
            return Outcome::Failed {
                reason: Reason::NoAddress,
                detail: "no push subscription".into(),
                fallback: None,
            };
        };
        // Push services take at most 4 KiB of encrypted payload.
        let clip = |s: &str, max: usize| -> String {
            if s.len() <= max {
                return s.to_owned();
            }
            let mut end = max;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}…", &s[..end])
        };
        let payload = json!({
            "id": n.id,
            "title": clip(r.subject.as_deref().unwrap_or(&work.org.name), 200),
            "body": clip(&r.text, 2500),
            "severity": n.severity,
            "url": work.data.get("url"),
            "tag": n.alert_id.map(|a| a.to_string()).unwrap_or_else(|| n.id.to_string()),
        });
        let ttl = if work.urgent {
            std::time::Duration::from_secs(60 * 60)
        } else {
            std::time::Duration::from_secs(24 * 60 * 60)
        };
        let fail = |detail: String| Outcome::Failed {
            reason: Reason::Rejected,
            detail,
            fallback: None,
        };
        let request = match vapid.request(subscription, payload.to_string().as_bytes(), ttl) {
            Ok(r) => r,
            Err(e) => return fail(e),
        };
        let Ok(url) = reqwest::Url::parse(&request.url) else {
            return fail("the push endpoint is not a URL".into());
        };
        let mut builder = match self.http.post(url) {
            Ok(b) => b,
            Err(refusal) => return fail(refusal_text(&refusal)),
        };
        for (k, v) in &request.headers {
            builder = builder.header(k, v);
        }
        let urgency = if work.urgent { "high" } else { "normal" };
        let sent = builder
            .header("Urgency", urgency)
            .body(request.body)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                if let Some(refusal) = refusal_of(&e) {
                    return fail(refusal_text(refusal));
                }
                let reason = if e.is_timeout() {
                    "timeout"
                } else {
                    "connection failed"
                };
                return self.retry_or_fail(work, r, format!("push service: {reason}"), None, now);
            }
        };
        let status = response.status().as_u16();
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let location = header(reqwest::header::LOCATION);
        let retry_after = header(reqwest::header::RETRY_AFTER)
            .and_then(|v| wedsync_core::retry::parse_retry_after(&v, now));
        match status {
            200..=299 => Outcome::Sent {
                provider_id: None,
                provider_message_id: location,
                delivered: false,
            },
            404 | 410 => fail(format!(
                "the browser's push subscription has expired ({status}); ask for a new one"
            )),
            408 | 425 | 429 | 500..=599 => self.retry_or_fail(
                work,
                r,
                format!("push service answered {status}"),
                retry_after,
                now,
            ),
            _ => fail(format!("the push service refused it ({status})")),
        }
    }

    fn render(
        &self,
        work: &NotifyWork,
        now: DateTime<Utc>,
    ) -> Result<Rendered, templates::TemplateError> {
        let ctx = templates::context(
            &work.org,
            &work.settings,
            work.couple.as_ref(),
            &work.notification.to,
            &work.data,
            now,
        );
        match &work.template {
            Some((subject, text, html)) => {
                templates::render(subject.as_deref(), text, html.as_deref(), &ctx)
            }
            None => {
                let s = |k: &str| work.content.get(k).and_then(Value::as_str);
                templates::render(s("subject"), s("text").unwrap_or_default(), s("html"), &ctx)
            }
        }
    }

    /// Email failed for good: send the text by SMS instead, when the organisation allows it,
    /// the recipient has a phone and the tier includes SMS.
    fn fallback(&self, work: &NotifyWork, rendered: &Rendered) -> Option<Box<NotificationInput>> {
        let n = &work.notification;
        if n.channel != NotifyChannel::Email
            || work.settings.sms_fallback == Some(false)
            || n.to.phone.is_none()
            || (self.policy.quotas.limit(work.org.tier, NotifyChannel::Sms) == Some(0)
                && !n.emergency)
        {
            return None;
        }
        let mut text = match &rendered.subject {
            Some(s) => format!("{s}\n{}", rendered.text),
            None => rendered.text.clone(),
        };
        if text.chars().count() > 1600 {
            text = text.chars().take(1597).collect::<String>() + "...";
        }
        Some(Box::new(NotificationInput {
            channel: Some(NotifyChannel::Sms),
            to: n.to.clone(),
            text: Some(text),
            couple_id: n.couple_id,
            severity: Some(n.severity),
            emergency: n.emergency,
            ..Default::default()
        }))
    }

    async fn send_via(&self, work: &NotifyWork, p: &ProviderWork, r: &Rendered) -> Try {
        let n = &work.notification;
        let id = n.id.to_string();
        let mut headers: Vec<(String, String)> = Vec::new();
        let mut html = r.html.clone();
        let mut text = r.text.clone();
        if n.channel == NotifyChannel::Email
            && let Some(links) = &self.links
        {
            let unsubscribe = links.unsubscribe(&id);
            headers.push(("List-Unsubscribe".into(), format!("<{unsubscribe}>")));
            headers.push((
                "List-Unsubscribe-Post".into(),
                "List-Unsubscribe=One-Click".into(),
            ));
            text.push_str(&format!("\n\n--\nUnsubscribe: {unsubscribe}\n"));
            html = html.map(|h| {
                let footer = format!(
                    "<p style=\"font-size:12px;color:#888\"><a href=\"{unsubscribe}\">Unsubscribe</a></p>"
                );
                let h = match h.rfind("</body>") {
                    Some(at) => format!("{}{footer}{}", &h[..at], &h[at..]),
                    None => format!("{h}{footer}"),
                };
                links.track_html(&id, &h)
            });
        }
        headers.push(("X-WedSync-Notification".into(), id.clone()));
        let from = p
            .config
            .get("from")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| work.settings.branding.get("from").cloned());
        if p.kind == "smtp" {
            let Some(to) = n.to.email.clone() else {
                return Try::Permanent("no email address".into());
            };
            let email = Email {
                from: from.unwrap_or_default(),
                to_name: n.to.name.clone(),
                to,
                reply_to: work.settings.branding.get("reply_to").cloned(),
                subject: r.subject.clone().unwrap_or_default(),
                text,
                html,
                headers,
                message_id: format!("{id}@wedsync"),
            };
            return match self.smtp.send(p, &email).await {
                SmtpResult::Accepted(reply) => Try::Accepted(Some(reply)),
                SmtpResult::Transient(e) => Try::Transient {
                    reason: e,
                    retry_after: None,
                },
                SmtpResult::Permanent(e) => Try::Permanent(e),
            };
        }
        let Some(spec) = self.catalog.get(&p.kind) else {
            return Try::Transient {
                reason: format!("unknown provider kind {}", p.kind),
                retry_after: None,
            };
        };
        let extra = &work.extra;
        let alert = work.alert.as_ref().map(|a| {
            let couple = work.couple.as_ref();
            json!({
                "id": a.id,
                "notification_id": a.id,
                "summary": a.summary,
                "couple": couple.map(templates::couple_names),
                "wedding_date": couple.map(|c| templates::long_date(c.wedding_date)),
                "venue": couple.and_then(|c| c.venue.name.clone()),
                "weddings_today": work.weddings_today,
                "severity": a.raised_severity,
                "escalation": a.escalation,
                "org_name": work.org.name,
            })
        });
        let ctx = json!({
            "version": env!("CARGO_PKG_VERSION"),
            "message": {
                "id": id,
                "idempotency_key": id,
                "channel": n.channel,
                "to": { "name": n.to.name, "email": n.to.email, "phone": n.to.phone },
                "from": from,
                "reply_to": work.settings.branding.get("reply_to"),
                "subject": r.subject,
                "text": text,
                "html": html,
                "headers": headers
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect::<serde_json::Map<_, _>>(),
                "tags": { "notification_id": id, "org_id": work.org.id },
                "title": r.subject.clone().or_else(|| work.alert.as_ref().map(|a| a.summary.clone())),
                "severity": n.severity,
                "action": extra.get("action").and_then(Value::as_str).unwrap_or("trigger"),
                "dedup_key": extra.get("dedup_key").and_then(Value::as_str).unwrap_or(&id),
                "timestamp": self.store.clock().now().to_rfc3339(),
            },
            "alert": alert,
            "config": p.config,
            "secrets": p.secrets,
        });
        let request = match spec.render(&ctx) {
            Ok(r) => r,
            Err(e) => return Try::Permanent(e.to_string()),
        };
        let Ok(url) = reqwest::Url::parse(&request.url) else {
            return Try::Permanent("the provider URL is not valid".into());
        };
        let method =
            reqwest::Method::from_bytes(request.method.as_bytes()).unwrap_or(reqwest::Method::POST);
        let mut builder = match self.http.request(method, url) {
            Ok(b) => b,
            Err(refusal) => return Try::Permanent(refusal_text(&refusal)),
        };
        for (k, v) in &request.headers {
            builder = builder.header(k, v);
        }
        builder = match &request.body {
            Body::Json(v) => builder.json(v),
            Body::Form(fields) => builder.form(fields),
            Body::Multipart(fields) => {
                let mut form = reqwest::multipart::Form::new();
                for (k, v) in fields {
                    form = form.text(k.clone(), v.clone());
                }
                builder.multipart(form)
            }
        };
        let response = match builder.send().await {
            Ok(r) => r,
            Err(e) => {
                if let Some(refusal) = refusal_of(&e) {
                    return Try::Permanent(refusal_text(refusal));
                }
                return Try::Transient {
                    reason: format!(
                        "request failed: {}",
                        if e.is_timeout() {
                            "timeout"
                        } else if e.is_connect() {
                            "connection failed"
                        } else {
                            "error"
                        }
                    ),
                    retry_after: None,
                };
            }
        };
        let status = response.status().as_u16();
        let headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = response.bytes().await.unwrap_or_default();
        match spec.classify(status, &headers, &body) {
            Reply::Accepted { provider_id } => Try::Accepted(provider_id),
            Reply::Transient {
                reason,
                retry_after,
            } => Try::Transient {
                reason,
                retry_after: retry_after.and_then(|d| TimeDelta::from_std(d).ok()),
            },
            // A provider that does not know us (bad key, wrong account) is our problem, not
            // the message's: move on to the next provider.
            Reply::Permanent { reason } if matches!(status, 401 | 403 | 404) => Try::Transient {
                reason: format!("{status}: {reason}"),
                retry_after: None,
            },
            Reply::Permanent { reason } => Try::Permanent(format!("{status}: {reason}")),
        }
    }
}

fn key_of(work: &NotifyWork) -> String {
    let to = &work.notification.to;
    to.id
        .clone()
        .or_else(|| to.email.clone())
        .or_else(|| to.phone.clone())
        .unwrap_or_default()
}

fn block_detail(reason: Reason, channel: NotifyChannel, tier: wedsync_core::org::Tier) -> String {
    match reason {
        Reason::ChannelNotInTier => {
            format!("{channel} is not available on the {tier} tier; upgrade to send it")
        }
        Reason::Unsubscribed => format!("the recipient unsubscribed from {channel}"),
        other => other.as_str().replace('_', " "),
    }
}

/// A refusal for the history, without the URL: a webhook URL (Slack, Teams, Discord) is the
/// credential itself, so only its host may be shown.
fn refusal_text(refusal: &wedsync_delivery::ssrf::Refusal) -> String {
    match refusal.subject() {
        wedsync_delivery::ssrf::Subject::Url(url) => format!(
            "refused: {} {}",
            url.host_str().unwrap_or("the provider URL"),
            refusal.category()
        ),
        _ => refusal.to_string(),
    }
}

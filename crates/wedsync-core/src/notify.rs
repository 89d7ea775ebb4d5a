//! Notification rules: channels, severities, tier quotas, quiet hours, and the gate every
//! message passes before it is sent (block with a reason, defer to a later instant, or send).
//! Pure: the store supplies counts and preferences, the worker supplies the clock.

use std::collections::BTreeMap;

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, TimeZone as _,
    Utc, Weekday,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::calendar::{DayLevel, Moment};
use crate::org::{Tier, string_enum};
use crate::validate::ValidationErrors;

/// A way of reaching someone.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum NotifyChannel {
    /// Email, through SMTP, Resend or Mailgun, with failover between them.
    Email,
    /// SMS through Twilio.
    Sms,
    /// Web Push to a browser or the WedMe app.
    Push,
    /// A Slack incoming webhook (Block Kit, with Acknowledge and Resolve buttons on alerts).
    Slack,
    /// A Microsoft Teams Workflows webhook (Adaptive Card).
    Teams,
    /// A Discord webhook.
    Discord,
    /// PagerDuty Events v2.
    Pagerduty,
    /// A generic JSON webhook.
    Webhook,
    /// The in-app inbox of a team member or couple.
    InApp,
}
string_enum!(NotifyChannel, "channel", [Email => "email", Sms => "sms", Push => "push", Slack => "slack", Teams => "teams", Discord => "discord", Pagerduty => "pagerduty", Webhook => "webhook", InApp => "in_app"]);

impl NotifyChannel {
    /// Whether messages on this channel go to a person (and so honour that person's
    /// preferences, unsubscribes and quiet hours), rather than to a team's tool.
    pub fn is_personal(&self) -> bool {
        matches!(self, Self::Email | Self::Sms | Self::Push | Self::InApp)
    }
}

/// A browser's Web Push subscription, as `PushSubscription.toJSON()` gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushSubscription {
    /// The push service URL for this browser.
    pub endpoint: String,
    /// The subscription's keys.
    pub keys: PushKeys,
    /// When the subscription expires, if the browser said (ms since the epoch).
    #[serde(
        default,
        rename = "expirationTime",
        skip_serializing_if = "Option::is_none"
    )]
    pub expiration_time: Option<i64>,
}

/// The keys of a [`PushSubscription`], base64url.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushKeys {
    /// The browser's P-256 public key (65 bytes uncompressed).
    pub p256dh: String,
    /// The 16-byte authentication secret.
    pub auth: String,
}

impl PushSubscription {
    /// Checks the endpoint is an http(s) URL and the keys have the right lengths.
    pub fn validate(&self, field: &str, errors: &mut ValidationErrors) {
        use base64::Engine as _;
        let decode = |s: &str| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(s.trim_end_matches('='))
                .ok()
        };
        if !(self.endpoint.starts_with("https://") || self.endpoint.starts_with("http://"))
            || self.endpoint.len() > 2048
        {
            errors.add(
                format!("{field}.endpoint"),
                "an http(s) URL of at most 2048 characters",
            );
        }
        if decode(&self.keys.p256dh).is_none_or(|k| k.len() != 65) {
            errors.add(
                format!("{field}.keys.p256dh"),
                "base64url of a 65-byte P-256 public key",
            );
        }
        if decode(&self.keys.auth).is_none_or(|k| k.len() != 16) {
            errors.add(format!("{field}.keys.auth"), "base64url of 16 bytes");
        }
    }
}

/// How serious a message is, from least to most.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// For information; never urgent.
    #[default]
    Info,
    /// Something needs attention soon.
    Warning,
    /// Something failed.
    Error,
    /// A wedding is at risk now; bypasses quiet hours.
    Critical,
}
string_enum!(Severity, "severity", [Info => "info", Warning => "warning", Error => "error", Critical => "critical"]);

impl Severity {
    /// One step up (critical stays critical): alerts raised in the wedding-day window.
    pub fn raised(self) -> Self {
        match self {
            Self::Info => Self::Warning,
            Self::Warning => Self::Error,
            Self::Error | Self::Critical => Self::Critical,
        }
    }
}

/// Why a message was not sent, as recorded and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The organisation used its rolling quota for the channel.
    QuotaExceeded,
    /// The organisation's tier does not include the channel (SMS on free).
    ChannelNotInTier,
    /// The recipient unsubscribed from the channel or from everything.
    Unsubscribed,
    /// Inside the recipient's quiet hours; deferred, not dropped.
    QuietHours,
    /// Over a per-recipient or per-channel rate limit; deferred.
    RateLimited,
    /// Every provider for the channel is failing or its breaker is open; retried later.
    ProvidersUnavailable,
    /// No provider is configured for the channel.
    NoProvider,
    /// The recipient has no address for the channel (no phone for SMS, …).
    NoAddress,
    /// The template failed to render.
    TemplateError,
    /// The provider refused the message for good.
    Rejected,
    /// Sent despite a quota because it is a wedding-day emergency (flagged, counted).
    QuotaBypassed,
}
string_enum!(Reason, "reason", [QuotaExceeded => "quota_exceeded", ChannelNotInTier => "channel_not_in_tier", Unsubscribed => "unsubscribed", QuietHours => "quiet_hours", RateLimited => "rate_limited", ProvidersUnavailable => "providers_unavailable", NoProvider => "no_provider", NoAddress => "no_address", TemplateError => "template_error", Rejected => "rejected", QuotaBypassed => "quota_bypassed"]);

/// Per-tier quotas over a rolling window (product-rules.md), configurable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quotas {
    /// The rolling window (default 24 hours).
    pub window: TimeDelta,
    /// Messages allowed per window, by tier and channel. A channel absent for a tier has no
    /// quota; 0 means the channel is not in the tier.
    pub limits: BTreeMap<Tier, BTreeMap<NotifyChannel, u32>>,
}

impl Default for Quotas {
    fn default() -> Self {
        use NotifyChannel::{Email, Push, Sms};
        let table = [
            (Tier::Free, [10, 0, 5]),
            (Tier::Starter, [100, 20, 50]),
            (Tier::Professional, [500, 100, 200]),
            (Tier::Scale, [2000, 500, 1000]),
            (Tier::Enterprise, [10000, 2000, 5000]),
        ];
        Self {
            window: TimeDelta::hours(24),
            limits: table
                .into_iter()
                .map(|(tier, [email, sms, push])| {
                    (
                        tier,
                        BTreeMap::from([(Email, email), (Sms, sms), (Push, push)]),
                    )
                })
                .collect(),
        }
    }
}

impl Quotas {
    /// The quota of `channel` for `tier`: `None` when the channel has none.
    pub fn limit(&self, tier: Tier, channel: NotifyChannel) -> Option<u32> {
        self.limits
            .get(&tier)
            .and_then(|m| m.get(&channel))
            .copied()
    }
}

/// One recurring quiet period: from `start` on each of `days` (local wall clock) to `end`,
/// which is on the next day when it is not after `start` (22:00–07:00 spans midnight).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuietSpan {
    /// The days the span starts on (`mon` … `sun`); empty means every day.
    #[serde(default)]
    #[schema(value_type = Vec<String>, example = json!(["mon", "tue"]))]
    pub days: Vec<WeekdayName>,
    /// Local start, `HH:MM`.
    #[schema(value_type = String, example = "21:00")]
    pub start: NaiveTime,
    /// Local end, `HH:MM` (exclusive).
    #[schema(value_type = String, example = "08:00")]
    pub end: NaiveTime,
}

/// A weekday as written in schedules: `mon` … `sun`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeekdayName {
    /// Monday.
    Mon,
    /// Tuesday.
    Tue,
    /// Wednesday.
    Wed,
    /// Thursday.
    Thu,
    /// Friday.
    Fri,
    /// Saturday.
    Sat,
    /// Sunday.
    Sun,
}

impl WeekdayName {
    fn weekday(self) -> Weekday {
        match self {
            Self::Mon => Weekday::Mon,
            Self::Tue => Weekday::Tue,
            Self::Wed => Weekday::Wed,
            Self::Thu => Weekday::Thu,
            Self::Fri => Weekday::Fri,
            Self::Sat => Weekday::Sat,
            Self::Sun => Weekday::Sun,
        }
    }
}

/// A recipient's weekly quiet hours, in the recipient's own time zone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    /// The quiet periods; overlapping or back-to-back periods join up.
    pub spans: Vec<QuietSpan>,
}

impl QuietHours {
    /// Checks the schedule: a span must not be empty.
    pub fn validate(&self, field: &str) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::default();
        if self.spans.len() > 28 {
            errors.add(format!("{field}.spans"), "at most 28 spans");
        }
        for (i, span) in self.spans.iter().enumerate() {
            if span.start == span.end {
                errors.add(
                    format!("{field}.spans[{i}]"),
                    "start and end are equal; a quiet span must have a length",
                );
            }
        }
        errors.into_result(())
    }

    /// The end, on the local wall clock, of the span that covers `local`, if one does.
    fn covering_end(&self, local: NaiveDateTime) -> Option<NaiveDateTime> {
        let mut latest: Option<NaiveDateTime> = None;
        for span in &self.spans {
            // A span started today or (when it wraps midnight) yesterday may cover `local`.
            for back in [0, 1] {
                let Some(day) = local.date().checked_sub_days(chrono::Days::new(back)) else {
                    continue;
                };
                if !span.days.is_empty() && !span.days.iter().any(|d| d.weekday() == day.weekday())
                {
                    continue;
                }
                let start = day.and_time(span.start);
                let end_day = if span.end > span.start {
                    day
                } else {
                    day.succ_opt().unwrap_or(day)
                };
                let end = end_day.and_time(span.end);
                if start <= local && local < end {
                    latest = Some(latest.map_or(end, |l| l.max(end)));
                }
            }
        }
        latest
    }

    /// Whether the local wall time is quiet.
    pub fn is_quiet(&self, local: NaiveDateTime) -> bool {
        self.covering_end(local).is_some()
    }

    /// When a message that arrives at `at` may be sent: `None` when `at` is not quiet,
    /// otherwise the first instant after the quiet period (joined spans followed through).
    /// Wall times are resolved in `zone` so that a daylight-saving change neither skips nor
    /// repeats the moment: an end that falls in a spring-forward gap becomes the transition,
    /// an end that happens twice in a fall-back hour is the first occurrence after `at`.
    pub fn next_allowed(&self, at: DateTime<Utc>, zone: Tz) -> Option<DateTime<Utc>> {
        let local = at.with_timezone(&zone).naive_local();
        let mut end = self.covering_end(local)?;
        // Follow back-to-back spans (bounded: a schedule has at most 28 of them).
        for _ in 0..64 {
            match self.covering_end(end) {
                Some(later) if later > end => end = later,
                _ => break,
            }
        }
        Some(first_at_or_after(zone, end, at))
    }
}

/// The first instant at or after `not_before` whose local wall time in `zone` is `wall`: in a
/// spring-forward gap, the transition itself; in a repeated fall-back hour, the earlier
/// occurrence that is not before `not_before`.
pub fn first_at_or_after(
    zone: Tz,
    wall: NaiveDateTime,
    not_before: DateTime<Utc>,
) -> DateTime<Utc> {
    match zone.from_local_datetime(&wall) {
        LocalResult::Single(t) => t.with_timezone(&Utc).max(not_before),
        LocalResult::Ambiguous(a, b) => {
            let (a, b) = (a.with_timezone(&Utc), b.with_timezone(&Utc));
            let (early, late) = (a.min(b), a.max(b));
            if early >= not_before {
                early
            } else {
                late.max(not_before)
            }
        }
        LocalResult::None => {
            // Gaps are whole minutes in the tz database; walk to the first existing minute.
            let mut later = wall;
            for _ in 0..(24 * 60) {
                later += TimeDelta::minutes(1);
                // The first wall minute that exists after the gap is the transition.
                if let Some(t) = zone.from_local_datetime(&later).earliest() {
                    return t.with_timezone(&Utc).max(not_before);
                }
            }
            not_before
        }
    }
}

/// What the gate decided for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Send now. `quota_bypassed` marks an emergency sent past its quota or tier.
    Send {
        /// Whether an emergency went past a quota or a tier limit (flagged and counted).
        quota_bypassed: bool,
    },
    /// Not sent, for good, with the reason.
    Block(Reason),
    /// Not yet: try again at `until`.
    Defer {
        /// When to try again.
        until: DateTime<Utc>,
        /// Why.
        reason: Reason,
    },
}

/// What the gate weighs for one message.
#[derive(Debug, Clone)]
pub struct GateInput<'a> {
    /// The channel.
    pub channel: NotifyChannel,
    /// The organisation's tier.
    pub tier: Tier,
    /// A wedding-day emergency: bypasses quotas, tier limits, preferences and quiet hours,
    /// and is flagged.
    pub emergency: bool,
    /// Urgent messages (critical severity or emergencies) are not held by quiet hours.
    pub urgent: bool,
    /// Messages on this channel counted inside the current rolling window.
    pub used_in_window: u32,
    /// The quotas in force.
    pub quotas: &'a Quotas,
    /// The recipient has unsubscribed from this channel (or from everything).
    pub unsubscribed: bool,
    /// The recipient's quiet hours and time zone, for personal channels.
    pub quiet: Option<(&'a QuietHours, Tz)>,
    /// Now.
    pub now: DateTime<Utc>,
}

/// Decides whether a message is sent now, deferred or blocked. The order matters: an
/// unsubscribe or a channel outside the tier blocks at once; quiet hours defer before the
/// quota is counted, so the quota is read when the message can really go.
pub fn gate(input: &GateInput<'_>) -> Verdict {
    if input.unsubscribed && !input.emergency {
        return Verdict::Block(Reason::Unsubscribed);
    }
    let limit = input.quotas.limit(input.tier, input.channel);
    let mut bypassed = false;
    if limit == Some(0) {
        if !input.emergency {
            return Verdict::Block(Reason::ChannelNotInTier);
        }
        bypassed = true;
    }
    if !input.urgent
        && !input.emergency
        && let Some((quiet, zone)) = input.quiet
        && let Some(until) = quiet.next_allowed(input.now, zone)
    {
        return Verdict::Defer {
            until,
            reason: Reason::QuietHours,
        };
    }
    if let Some(limit) = limit
        && input.used_in_window >= limit
        && limit > 0
    {
        if !input.emergency {
            return Verdict::Block(Reason::QuotaExceeded);
        }
        bypassed = true;
    }
    Verdict::Send {
        quota_bypassed: bypassed,
    }
}

/// How an alert raised at a moment is delivered (product-rules.md, wedding time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlertPlan {
    /// The severity after wedding-day escalation.
    pub severity: Severity,
    /// Also send to SMS and PagerDuty, whatever the severity (every alert on Saturday).
    pub also_sms_and_pagerduty: bool,
    /// Escalate along the organisation's chain when unacknowledged (inside the window, or
    /// for critical alerts at any time).
    pub escalate: bool,
}

/// The plan for an alert of `severity` raised at `moment`.
pub fn alert_plan(moment: &Moment, severity: Severity) -> AlertPlan {
    let severity = if moment.in_window {
        severity.raised()
    } else {
        severity
    };
    AlertPlan {
        severity,
        also_sms_and_pagerduty: moment.level == DayLevel::Saturday,
        escalate: moment.in_window || severity == Severity::Critical,
    }
}

/// The local calendar date of `at` in `zone`.
pub fn local_date(at: DateTime<Utc>, zone: Tz) -> NaiveDate {
    at.with_timezone(&zone).date_naive()
}

/// The weekday name of a date, for templates (`Saturday`).
pub fn weekday_name(date: NaiveDate) -> &'static str {
    match date.weekday() {
        Weekday::Mon => "Monday",
        Weekday::Tue => "Tuesday",
        Weekday::Wed => "Wednesday",
        Weekday::Thu => "Thursday",
        Weekday::Fri => "Friday",
        Weekday::Sat => "Saturday",
        Weekday::Sun => "Sunday",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::{CalendarRules, classify};
    use crate::org::TimeZone;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    fn t(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).expect("time")
    }

    fn nightly(start: NaiveTime, end: NaiveTime) -> QuietHours {
        QuietHours {
            spans: vec![QuietSpan {
                days: vec![],
                start,
                end,
            }],
        }
    }

    const LONDON: Tz = chrono_tz::Europe::London;

    #[test]
    fn quotas_are_the_product_table() {
        let q = Quotas::default();
        assert_eq!(q.limit(Tier::Free, NotifyChannel::Email), Some(10));
        assert_eq!(q.limit(Tier::Free, NotifyChannel::Sms), Some(0));
        assert_eq!(q.limit(Tier::Free, NotifyChannel::Push), Some(5));
        assert_eq!(q.limit(Tier::Starter, NotifyChannel::Sms), Some(20));
        assert_eq!(q.limit(Tier::Professional, NotifyChannel::Push), Some(200));
        assert_eq!(q.limit(Tier::Scale, NotifyChannel::Email), Some(2000));
        assert_eq!(q.limit(Tier::Enterprise, NotifyChannel::Sms), Some(2000));
        assert_eq!(q.limit(Tier::Enterprise, NotifyChannel::Slack), None);
        assert_eq!(q.window, TimeDelta::hours(24));
    }

    #[test]
    fn quiet_hours_over_midnight() {
        let q = nightly(t(21, 0), t(8, 0));
        // 23:00 BST on a summer Tuesday is 22:00 UTC; allowed again at 08:00 BST = 07:00 UTC.
        assert_eq!(
            q.next_allowed(utc("2027-06-15T22:00:00Z"), LONDON),
            Some(utc("2027-06-16T07:00:00Z"))
        );
        // 07:59 local: still quiet, one minute to go.
        assert_eq!(
            q.next_allowed(utc("2027-06-16T06:59:00Z"), LONDON),
            Some(utc("2027-06-16T07:00:00Z"))
        );
        // 08:00 local exactly: allowed.
        assert_eq!(q.next_allowed(utc("2027-06-16T07:00:00Z"), LONDON), None);
        assert_eq!(q.next_allowed(utc("2027-06-16T12:00:00Z"), LONDON), None);
    }

    #[test]
    fn quiet_hours_across_spring_forward_end_at_local_time() {
        // Clocks go forward at 01:00 GMT on 28 March 2027. A message at 23:00 GMT on the 27th
        // waits for 08:00 BST, which is 07:00 UTC: seven hours of wall clock, not eight hours.
        let q = nightly(t(21, 0), t(8, 0));
        assert_eq!(
            q.next_allowed(utc("2027-03-27T23:00:00Z"), LONDON),
            Some(utc("2027-03-28T07:00:00Z"))
        );
        // And across fall-back (31 October 2027, 02:00 BST -> 01:00 GMT): 08:00 GMT = 08:00 UTC.
        assert_eq!(
            q.next_allowed(utc("2027-10-30T21:30:00Z"), LONDON),
            Some(utc("2027-10-31T08:00:00Z"))
        );
    }

    #[test]
    fn a_quiet_end_inside_the_gap_is_the_transition() {
        // Quiet until 01:30, which does not exist on 28 March 2027 in London: released at the
        // transition, 01:00 GMT = 02:00 BST.
        let q = nightly(t(0, 0), t(1, 30));
        assert_eq!(
            q.next_allowed(utc("2027-03-28T00:10:00Z"), LONDON),
            Some(utc("2027-03-28T01:00:00Z"))
        );
    }

    #[test]
    fn a_quiet_end_in_the_repeated_hour_is_released_once() {
        // 01:30 happens twice on 31 October 2027 (BST then GMT). Quiet 00:30-01:30 releases at
        // the first 01:30 (00:30 UTC); the second pass through 01:00-01:30 is quiet again on
        // the wall clock and releases at the second 01:30 (01:30 UTC), never before `at`.
        let q = nightly(t(0, 30), t(1, 30));
        assert_eq!(
            q.next_allowed(utc("2027-10-30T23:45:00Z"), LONDON),
            Some(utc("2027-10-31T00:30:00Z"))
        );
        let second = q
            .next_allowed(utc("2027-10-31T01:10:00Z"), LONDON)
            .expect("quiet on the wall clock");
        assert_eq!(second, utc("2027-10-31T01:30:00Z"));
    }

    #[test]
    fn back_to_back_spans_join_and_days_filter() {
        let q = QuietHours {
            spans: vec![
                QuietSpan {
                    days: vec![WeekdayName::Sat],
                    start: t(0, 0),
                    end: t(12, 0),
                },
                QuietSpan {
                    days: vec![WeekdayName::Fri],
                    start: t(22, 0),
                    end: t(0, 0),
                },
            ],
        };
        // Friday 23:00 BST -> quiet until Saturday 12:00 BST through the joined spans.
        assert_eq!(
            q.next_allowed(utc("2027-06-18T22:00:00Z"), LONDON),
            Some(utc("2027-06-19T11:00:00Z"))
        );
        // Thursday 23:00 is not quiet: the Friday span does not apply.
        assert_eq!(q.next_allowed(utc("2027-06-17T22:00:00Z"), LONDON), None);
    }

    fn gate_input<'a>(quotas: &'a Quotas, quiet: Option<(&'a QuietHours, Tz)>) -> GateInput<'a> {
        GateInput {
            channel: NotifyChannel::Email,
            tier: Tier::Free,
            emergency: false,
            urgent: false,
            used_in_window: 0,
            quotas,
            unsubscribed: false,
            quiet,
            now: utc("2027-06-15T12:00:00Z"),
        }
    }

    #[test]
    fn the_gate_blocks_defers_and_flags_bypasses() {
        let quotas = Quotas::default();
        let mut g = gate_input(&quotas, None);
        assert_eq!(
            gate(&g),
            Verdict::Send {
                quota_bypassed: false
            }
        );
        g.used_in_window = 10;
        assert_eq!(gate(&g), Verdict::Block(Reason::QuotaExceeded));
        g.emergency = true;
        assert_eq!(
            gate(&g),
            Verdict::Send {
                quota_bypassed: true
            }
        );
        g.emergency = false;
        g.used_in_window = 0;
        g.channel = NotifyChannel::Sms;
        assert_eq!(gate(&g), Verdict::Block(Reason::ChannelNotInTier));
        g.emergency = true;
        assert_eq!(
            gate(&g),
            Verdict::Send {
                quota_bypassed: true
            }
        );
        g.emergency = false;
        g.channel = NotifyChannel::Email;
        g.unsubscribed = true;
        assert_eq!(gate(&g), Verdict::Block(Reason::Unsubscribed));
        g.unsubscribed = false;
        let q = nightly(t(0, 0), t(23, 59));
        g.quiet = Some((&q, LONDON));
        assert!(matches!(
            gate(&g),
            Verdict::Defer {
                reason: Reason::QuietHours,
                ..
            }
        ));
        g.urgent = true;
        assert_eq!(
            gate(&g),
            Verdict::Send {
                quota_bypassed: false
            }
        );
    }

    #[test]
    fn alerts_escalate_in_the_window_and_page_on_saturday() {
        let zone = TimeZone::parse("Europe/London").expect("zone");
        let rules = CalendarRules::default();
        let tuesday = classify(utc("2027-06-15T12:00:00Z"), zone, &rules, |_| false);
        let plan = alert_plan(&tuesday, Severity::Warning);
        assert_eq!(plan.severity, Severity::Warning);
        assert!(!plan.also_sms_and_pagerduty && !plan.escalate);
        let friday_night = classify(utc("2027-06-18T19:00:00Z"), zone, &rules, |_| false);
        let plan = alert_plan(&friday_night, Severity::Warning);
        assert_eq!(plan.severity, Severity::Error);
        assert!(plan.escalate && !plan.also_sms_and_pagerduty);
        let saturday = classify(utc("2027-06-19T10:00:00Z"), zone, &rules, |_| false);
        let plan = alert_plan(&saturday, Severity::Info);
        assert!(plan.also_sms_and_pagerduty && plan.escalate);
    }
}

//! Retry policy for outbound work: when to try again after a failure and when to give up.
//! Pure: the caller supplies the clock readings and the random number, so every decision can
//! be replayed in a test.
//!
//! Attempts are numbered from 1 (the first try). A failure is either permanent (retrying
//! cannot help, e.g. a 404) or transient (a timeout, a 503, a 429); only transient failures
//! are retried, after a backoff delay with jitter (so that endpoints recovering from an
//! outage are not hit by every retry at once), never sooner than the server's `Retry-After`
//! (within bounds), and only while both the attempt count and the age of the work allow.

use chrono::{DateTime, TimeDelta, Utc};

use crate::validate::ValidationErrors;

/// How the nominal delay before each retry grows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backoff {
    /// `base` before attempt 2, multiplied by `factor` for each later attempt, capped at `max`.
    Exponential {
        /// The delay before the first retry (attempt 2).
        base: TimeDelta,
        /// The multiplier from one retry to the next; an integer so delays stay exact.
        factor: u32,
        /// The longest nominal delay, so that late retries still happen at a useful pace.
        max: TimeDelta,
    },
    /// An explicit schedule: entry `i` is the delay before attempt `i + 2`. Past the end the
    /// last entry repeats, so a longer `max_attempts` keeps the last pace.
    Schedule(Vec<TimeDelta>),
}

impl Backoff {
    /// The nominal (unjittered) delay before attempt `attempt`. Attempt 1, the first try,
    /// has none; negative configured delays count as zero.
    pub fn nominal(&self, attempt: u32) -> TimeDelta {
        let zero = TimeDelta::zero();
        let Some(retry) = attempt.checked_sub(2) else {
            return zero;
        };
        match self {
            Self::Exponential { base, factor, max } => {
                let (base, max) = ((*base).max(zero), (*max).max(zero));
                let factor = i32::try_from(*factor).unwrap_or(i32::MAX);
                let mut delay = base;
                // A factor of 0 or 1, or a zero base, never grows; stopping at once keeps a
                // huge attempt number from looping. Otherwise the delay reaches `max` within
                // a few dozen steps, because a `TimeDelta` overflows past ~292 million years.
                if factor > 1 && base > zero {
                    for _ in 0..retry {
                        if delay >= max {
                            break;
                        }
                        delay = delay.checked_mul(factor).unwrap_or(max);
                    }
                } else if factor == 0 && retry > 0 {
                    delay = zero;
                }
                delay.min(max)
            }
            Self::Schedule(delays) => usize::try_from(retry)
                .ok()
                .and_then(|i| delays.get(i))
                .or(delays.last())
                .copied()
                .unwrap_or(zero)
                .max(zero),
        }
    }
}

/// When and how often outbound work is retried. The defaults are the product's; each field is
/// configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// How the nominal delay grows from one retry to the next.
    pub backoff: Backoff,
    /// The jitter as a fraction of the nominal delay: 0.2 spreads each delay uniformly over
    /// ±20%, so that retries from one outage do not arrive together. Clamped to [0, 1].
    pub jitter: f64,
    /// Attempts in all, the first try included; after that many failures the work gives up.
    pub max_attempts: u32,
    /// How long after the first attempt the work may still be tried; a retry that would fall
    /// later gives up instead, so stale work is not delivered days late.
    pub max_age: TimeDelta,
    /// The shortest `Retry-After` honoured; a server asking for less still gets at least this.
    pub retry_after_min: TimeDelta,
    /// The longest `Retry-After` honoured, so that a server cannot park work indefinitely.
    pub retry_after_max: TimeDelta,
}

impl Default for RetryPolicy {
    /// Exponential from 5 s doubling to at most 1 h, ±20% jitter, 10 attempts within
    /// 3 days, `Retry-After` honoured between 1 s and 1 h.
    fn default() -> Self {
        Self {
            backoff: Backoff::Exponential {
                base: TimeDelta::seconds(5),
                factor: 2,
                max: TimeDelta::hours(1),
            },
            jitter: 0.2,
            max_attempts: 10,
            max_age: TimeDelta::days(3),
            retry_after_min: TimeDelta::seconds(1),
            retry_after_max: TimeDelta::hours(1),
        }
    }
}

impl RetryPolicy {
    /// The outbound-webhook policy: retries immediately, then after 5 s, 5 min, 30 min, 2 h,
    /// 5 h, 10 h and 10 h (±20% jitter); 9 attempts in all (the first try and 8 retries)
    /// within 5 days.
    pub fn webhook_default() -> Self {
        Self {
            backoff: Backoff::Schedule(vec![
                TimeDelta::zero(),
                TimeDelta::seconds(5),
                TimeDelta::minutes(5),
                TimeDelta::minutes(30),
                TimeDelta::hours(2),
                TimeDelta::hours(5),
                TimeDelta::hours(10),
                TimeDelta::hours(10),
            ]),
            max_attempts: 9,
            max_age: TimeDelta::days(5),
            ..Self::default()
        }
    }

    /// Checks the policy is usable, naming every bad field, for configuration checks at
    /// start-up. The other methods never panic on a bad policy, but their results would not
    /// be what the configuration meant.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let zero = TimeDelta::zero();
        match &self.backoff {
            Backoff::Exponential { base, factor, max } => {
                if *base < zero {
                    errors.add("backoff.base", "must not be negative");
                }
                if *factor < 1 {
                    errors.add("backoff.factor", "must be at least 1");
                }
                if max < base {
                    errors.add("backoff.max", "must be at least backoff.base");
                }
            }
            Backoff::Schedule(delays) => {
                if delays.is_empty() {
                    errors.add("backoff.schedule", "must list at least one delay");
                }
                if delays.iter().any(|d| *d < zero) {
                    errors.add("backoff.schedule", "must not contain negative delays");
                }
            }
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            errors.add("jitter", "must be between 0 and 1 (0.2 means ±20%)");
        }
        if self.max_attempts < 1 {
            errors.add("max_attempts", "must be at least 1");
        }
        if self.max_age <= zero {
            errors.add("max_age", "must be positive");
        }
        if self.retry_after_min < zero {
            errors.add("retry_after_min", "must not be negative");
        }
        if self.retry_after_max < self.retry_after_min {
            errors.add("retry_after_max", "must be at least retry_after_min");
        }
        errors.into_result(())
    }

    /// The delay before attempt `attempt` with jitter applied: the nominal delay ×
    /// (1 + jitter × (2 × `unit_random` − 1)). `unit_random` is uniform in [0, 1) from the
    /// caller (0.5 gives the nominal delay); values outside are clamped, NaN counts as 0.5.
    /// The result is in whole milliseconds, rounded towards the nominal delay so that it
    /// never leaves the jitter band.
    pub fn delay_for(&self, attempt: u32, unit_random: f64) -> TimeDelta {
        let nominal = self.backoff.nominal(attempt);
        let jitter = if self.jitter.is_nan() {
            0.0
        } else {
            self.jitter.clamp(0.0, 1.0)
        };
        let unit = if unit_random.is_nan() {
            0.5
        } else {
            unit_random.clamp(0.0, 1.0)
        };
        let millis = nominal.num_milliseconds();
        let scaled = millis as f64 * (1.0 + jitter * (2.0 * unit - 1.0));
        let rounded = if scaled >= millis as f64 {
            scaled.floor()
        } else {
            scaled.ceil()
        };
        // `as` saturates, and the band's upper end is at most twice the nominal delay.
        TimeDelta::try_milliseconds(rounded as i64).unwrap_or(nominal)
    }

    /// Decides what happens after attempt number `attempts_made` (counting the first try as
    /// 1) failed with `failure` at `now`, for work first attempted at `first_attempt_at`.
    ///
    /// Gives up on a permanent failure, when `attempts_made` has reached `max_attempts`, or
    /// when the retry would fall after `first_attempt_at + max_age`. Otherwise retries after
    /// [`RetryPolicy::delay_for`] the next attempt, or after the server's `Retry-After`
    /// (clamped to `[retry_after_min, retry_after_max]`) when that is longer: never sooner
    /// than the server asked, within bounds. The retry is never before `now`.
    pub fn decide(
        &self,
        attempts_made: u32,
        first_attempt_at: DateTime<Utc>,
        now: DateTime<Utc>,
        failure: &Failure,
        unit_random: f64,
    ) -> Decision {
        let (reason, retry_after) = match failure {
            Failure::Permanent { reason } => {
                return Decision::GiveUp {
                    reason: format!("permanent failure: {reason}"),
                };
            }
            Failure::Transient {
                reason,
                retry_after,
            } => (reason, *retry_after),
        };
        if attempts_made >= self.max_attempts {
            return Decision::GiveUp {
                reason: format!("gave up after {attempts_made} attempts: {reason}"),
            };
        }
        let mut delay = self.delay_for(attempts_made.saturating_add(1), unit_random);
        if let Some(asked) = retry_after {
            // `max` then `min` rather than `clamp`, which panics when the bounds are crossed.
            let asked = asked.max(self.retry_after_min).min(self.retry_after_max);
            delay = delay.max(asked);
        }
        let delay = delay.max(TimeDelta::zero());
        let too_old = || Decision::GiveUp {
            reason: format!(
                "the next attempt would be more than {} after the first: {reason}",
                describe(self.max_age)
            ),
        };
        let Some(at) = now.checked_add_signed(delay) else {
            return too_old();
        };
        // A deadline beyond the representable range is no deadline at all.
        match first_attempt_at.checked_add_signed(self.max_age) {
            Some(deadline) if at > deadline => too_old(),
            _ => Decision::RetryAt(at),
        }
    }
}

/// Writes a duration the way people say it in a reason: "5 days", "90 minutes", "12 seconds".
fn describe(duration: TimeDelta) -> String {
    if duration.num_milliseconds() % 1_000 != 0 {
        return format!("{} milliseconds", duration.num_milliseconds());
    }
    let seconds = duration.num_seconds();
    let units = [
        (86_400, "day"),
        (3_600, "hour"),
        (60, "minute"),
        (1, "second"),
    ];
    for (size, name) in units {
        if seconds != 0 && seconds % size == 0 {
            let n = seconds / size;
            let plural = if n.abs() == 1 { "" } else { "s" };
            return format!("{n} {name}{plural}");
        }
    }
    format!("{} milliseconds", duration.num_milliseconds())
}

/// Why an attempt failed, as far as retrying is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Retrying cannot help (a 404, a 422, a rejected signature): give up at once.
    Permanent {
        /// What went wrong, lowercase, for the delivery log.
        reason: String,
    },
    /// The same request may well succeed later (a timeout, a refused connection, a 503).
    Transient {
        /// What went wrong, lowercase, for the delivery log.
        reason: String,
        /// How long the server asked us to wait (its `Retry-After`), if it said.
        retry_after: Option<TimeDelta>,
    },
}

impl Failure {
    /// A permanent failure.
    pub fn permanent(reason: impl Into<String>) -> Self {
        Self::Permanent {
            reason: reason.into(),
        }
    }

    /// A transient failure with no `Retry-After`, e.g. a timeout or a connection error.
    pub fn transient(reason: impl Into<String>) -> Self {
        Self::Transient {
            reason: reason.into(),
            retry_after: None,
        }
    }

    /// Whether retrying cannot help.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Permanent { .. })
    }

    /// What went wrong.
    pub fn reason(&self) -> &str {
        match self {
            Self::Permanent { reason } | Self::Transient { reason, .. } => reason,
        }
    }
}

/// Classifies an HTTP response status: `None` for success (2xx); otherwise the failure.
///
/// 408 (request timeout), 425 (too early), 429 (too many requests) and every 5xx are
/// transient, and carry `retry_after`; any other 4xx is permanent, because the same request
/// will be refused again. A 3xx is permanent too: outbound calls do not follow redirects, so
/// a redirect means the configured URL is wrong. Statuses outside 200–599 are permanent, as a
/// server that answers them is broken in a way retrying will not fix.
pub fn classify_http_status(status: u16, retry_after: Option<TimeDelta>) -> Option<Failure> {
    match status {
        200..=299 => None,
        300..=399 => Some(Failure::permanent(format!(
            "unexpected redirect (http status {status})"
        ))),
        408 | 425 | 429 | 500..=599 => Some(Failure::Transient {
            reason: format!("http status {status}"),
            retry_after,
        }),
        400..=499 => Some(Failure::permanent(format!("http status {status}"))),
        _ => Some(Failure::permanent(format!(
            "unexpected http status {status}"
        ))),
    }
}

/// Parses a `Retry-After` header value as a wait from `now`: delta-seconds (`120`) or an
/// HTTP-date (`Wed, 21 Oct 2015 07:28:00 GMT`, and the obsolete RFC 850 and asctime forms
/// that RFC 9110 still asks recipients to accept). A date in the past gives zero; anything
/// else unparseable gives `None`, so the caller falls back to its own backoff.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<TimeDelta> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Digits only, so the parse fails only by overflow: a wait that long is "forever",
        // which the policy's upper bound then clamps.
        return Some(
            value
                .parse::<i64>()
                .ok()
                .and_then(TimeDelta::try_seconds)
                .unwrap_or(TimeDelta::MAX),
        );
    }
    let date = DateTime::parse_from_rfc2822(value)
        .map(|d| d.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            // RFC 850 ("Sunday, 06-Nov-94 08:49:37 GMT") and asctime ("Sun Nov  6 08:49:37
            // 1994"), both always in GMT.
            ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"]
                .iter()
                .find_map(|format| chrono::NaiveDateTime::parse_from_str(value, format).ok())
                .map(|naive| naive.and_utc())
        })?;
    Some((date - now).max(TimeDelta::zero()))
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Try again at this instant.
    RetryAt(DateTime<Utc>),
    /// Stop trying; the work is dead-lettered with this reason.
    GiveUp {
        /// Why, lowercase, for the delivery log and the dead-letter record.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;
    use proptest::prelude::*;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 13, 12, 0, 0)
            .single()
            .expect("instant")
    }

    fn secs(n: i64) -> TimeDelta {
        TimeDelta::seconds(n)
    }

    #[test]
    fn webhook_schedule_table() {
        let policy = RetryPolicy::webhook_default();
        let cases = [
            // (attempt, delay before it, without jitter)
            (1, TimeDelta::zero()),
            (2, TimeDelta::zero()),
            (3, secs(5)),
            (4, TimeDelta::minutes(5)),
            (5, TimeDelta::minutes(30)),
            (6, TimeDelta::hours(2)),
            (7, TimeDelta::hours(5)),
            (8, TimeDelta::hours(10)),
            (9, TimeDelta::hours(10)),
            (10, TimeDelta::hours(10)),
            (1_000, TimeDelta::hours(10)),
        ];
        for (attempt, expected) in cases {
            assert_eq!(
                policy.delay_for(attempt, 0.5),
                expected,
                "attempt {attempt}"
            );
        }
        assert_eq!(policy.max_attempts, 9);
        assert_eq!(policy.max_age, TimeDelta::days(5));
        assert_eq!(policy.validate(), Ok(()));
    }

    #[test]
    fn exponential_default_table() {
        let policy = RetryPolicy::default();
        let cases = [
            (1, TimeDelta::zero()),
            (2, secs(5)),
            (3, secs(10)),
            (4, secs(20)),
            (10, secs(1_280)),
            (12, secs(3_600)), // 5120 s capped at an hour
            (u32::MAX, secs(3_600)),
        ];
        for (attempt, expected) in cases {
            assert_eq!(
                policy.delay_for(attempt, 0.5),
                expected,
                "attempt {attempt}"
            );
        }
        assert_eq!(policy.validate(), Ok(()));
    }

    #[test]
    fn jitter_bounds_table() {
        let policy = RetryPolicy::webhook_default();
        let cases = [
            // (unit_random, delay before attempt 4, nominally 5 minutes)
            (0.0, secs(240)),
            (0.25, secs(270)),
            (0.5, secs(300)),
            (0.75, secs(330)),
            (0.999_999_9, TimeDelta::milliseconds(359_999)),
            (1.0, secs(360)),
            (7.0, secs(360)),
            (-1.0, secs(240)),
            (f64::NAN, secs(300)),
        ];
        for (unit, expected) in cases {
            assert_eq!(policy.delay_for(4, unit), expected, "unit {unit}");
        }
    }

    #[test]
    fn degenerate_backoffs_do_not_loop_or_panic() {
        let cases = [
            // (backoff, attempt, nominal delay)
            (Backoff::Schedule(vec![]), 5, TimeDelta::zero()),
            (Backoff::Schedule(vec![secs(-5)]), 2, TimeDelta::zero()),
            (
                Backoff::Exponential {
                    base: secs(5),
                    factor: 1,
                    max: secs(60),
                },
                u32::MAX,
                secs(5),
            ),
            (
                Backoff::Exponential {
                    base: secs(5),
                    factor: 0,
                    max: secs(60),
                },
                3,
                TimeDelta::zero(),
            ),
            (
                Backoff::Exponential {
                    base: secs(-5),
                    factor: 2,
                    max: secs(60),
                },
                u32::MAX,
                TimeDelta::zero(),
            ),
            (
                Backoff::Exponential {
                    base: secs(5),
                    factor: u32::MAX,
                    max: TimeDelta::MAX,
                },
                100,
                TimeDelta::MAX,
            ),
        ];
        for (backoff, attempt, expected) in cases {
            assert_eq!(backoff.nominal(attempt), expected, "{backoff:?} {attempt}");
        }
    }

    #[test]
    fn status_classification_table() {
        #[derive(Debug, PartialEq)]
        enum Kind {
            Success,
            Permanent,
            Transient,
        }
        let cases = [
            (200, Kind::Success),
            (204, Kind::Success),
            (301, Kind::Permanent),
            (400, Kind::Permanent),
            (401, Kind::Permanent),
            (404, Kind::Permanent),
            (408, Kind::Transient),
            (410, Kind::Permanent),
            (422, Kind::Permanent),
            (425, Kind::Transient),
            (429, Kind::Transient),
            (500, Kind::Transient),
            (503, Kind::Transient),
            (599, Kind::Transient),
            (101, Kind::Permanent),
            (600, Kind::Permanent),
        ];
        for (status, expected) in cases {
            let got = match classify_http_status(status, Some(secs(30))) {
                None => Kind::Success,
                Some(f) if f.is_permanent() => Kind::Permanent,
                Some(_) => Kind::Transient,
            };
            assert_eq!(got, expected, "status {status}");
        }
        assert_eq!(
            classify_http_status(429, Some(secs(30))),
            Some(Failure::Transient {
                reason: "http status 429".into(),
                retry_after: Some(secs(30)),
            })
        );
        assert_eq!(
            classify_http_status(301, None).map(|f| f.reason().to_owned()),
            Some("unexpected redirect (http status 301)".to_owned())
        );
    }

    #[test]
    fn retry_after_parsing_table() {
        let now = Utc
            .with_ymd_and_hms(2015, 10, 21, 7, 20, 0)
            .single()
            .expect("instant");
        let cases = [
            ("120", Some(secs(120))),
            (" 0 ", Some(TimeDelta::zero())),
            ("99999999999999999999999", Some(TimeDelta::MAX)),
            ("Wed, 21 Oct 2015 07:28:00 GMT", Some(secs(480))),
            ("Wednesday, 21-Oct-15 07:28:00 GMT", Some(secs(480))),
            ("Wed Oct 21 07:28:00 2015", Some(secs(480))),
            ("Sun Nov  6 08:49:37 1994", Some(TimeDelta::zero())),
            ("Wed, 21 Oct 2015 07:00:00 GMT", Some(TimeDelta::zero())),
            ("Thu, 01 Jan 1970 00:00:00 GMT", Some(TimeDelta::zero())),
            ("", None),
            ("soon", None),
            ("-5", None),
            ("+5", None),
            ("1.5", None),
            ("Wed, 32 Oct 2015 07:28:00 GMT", None),
        ];
        for (value, expected) in cases {
            assert_eq!(parse_retry_after(value, now), expected, "{value:?}");
        }
    }

    #[test]
    fn retry_after_is_honoured_within_bounds() {
        let policy = RetryPolicy::default();
        // Attempt 3 follows two failures; its nominal delay is 10 s, 8 s at the low jitter end.
        let cases = [
            // (Retry-After, unit_random, expected delay)
            (None, 0.0, secs(8)),
            (Some(secs(0)), 0.0, secs(8)), // raised to the 1 s minimum, still shorter
            (Some(secs(9)), 0.0, secs(9)), // longer than the backoff: the server wins
            (Some(secs(9)), 1.0, secs(12)), // shorter than the backoff: the backoff wins
            (Some(secs(600)), 0.5, secs(600)),
            (Some(TimeDelta::days(2)), 0.5, TimeDelta::hours(1)), // clamped to the maximum
            (Some(TimeDelta::MAX), 0.5, TimeDelta::hours(1)),
        ];
        for (retry_after, unit, expected) in cases {
            let failure = Failure::Transient {
                reason: "http status 503".into(),
                retry_after,
            };
            assert_eq!(
                policy.decide(2, t0(), t0(), &failure, unit),
                Decision::RetryAt(t0() + expected),
                "{retry_after:?} {unit}"
            );
        }

        // A minimum above the backoff raises even a short Retry-After to it.
        let strict = RetryPolicy {
            retry_after_min: secs(30),
            ..RetryPolicy::default()
        };
        let failure = Failure::Transient {
            reason: "http status 429".into(),
            retry_after: Some(secs(1)),
        };
        assert_eq!(
            strict.decide(1, t0(), t0(), &failure, 0.5),
            Decision::RetryAt(t0() + secs(30))
        );
    }

    #[test]
    fn give_up_table() {
        let policy = RetryPolicy::webhook_default();
        let timeout = Failure::transient("timed out after 30 seconds");
        let cases = [
            // (attempts made, now, failure, expected)
            (
                1,
                t0(),
                Failure::permanent("http status 410"),
                Decision::GiveUp {
                    reason: "permanent failure: http status 410".into(),
                },
            ),
            (1, t0(), timeout.clone(), Decision::RetryAt(t0())),
            (
                8,
                t0() + TimeDelta::hours(52),
                timeout.clone(),
                Decision::RetryAt(t0() + TimeDelta::hours(62)),
            ),
            (
                9,
                t0() + TimeDelta::hours(62),
                timeout.clone(),
                Decision::GiveUp {
                    reason: "gave up after 9 attempts: timed out after 30 seconds".into(),
                },
            ),
            // The retry at exactly the maximum age is still allowed; a minute later is not.
            (
                8,
                t0() + TimeDelta::days(5) - TimeDelta::hours(10),
                timeout.clone(),
                Decision::RetryAt(t0() + TimeDelta::days(5)),
            ),
            (
                8,
                t0() + TimeDelta::days(5) - TimeDelta::hours(10) + TimeDelta::minutes(1),
                timeout.clone(),
                Decision::GiveUp {
                    reason: "the next attempt would be more than 5 days after the first: \
                             timed out after 30 seconds"
                        .into(),
                },
            ),
        ];
        for (attempts, now, failure, expected) in cases {
            assert_eq!(
                policy.decide(attempts, t0(), now, &failure, 0.5),
                expected,
                "{attempts} {now}"
            );
        }
    }

    #[test]
    fn validation_names_every_bad_field() {
        let policy = RetryPolicy {
            backoff: Backoff::Exponential {
                base: secs(10),
                factor: 0,
                max: secs(5),
            },
            jitter: 1.5,
            max_attempts: 0,
            max_age: TimeDelta::zero(),
            retry_after_min: secs(10),
            retry_after_max: secs(5),
        };
        let errors = policy.validate().expect_err("invalid");
        let fields: Vec<_> = errors.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "backoff.factor",
                "backoff.max",
                "jitter",
                "max_attempts",
                "max_age",
                "retry_after_max"
            ]
        );
        let schedule = RetryPolicy {
            backoff: Backoff::Schedule(vec![]),
            ..RetryPolicy::default()
        };
        assert!(schedule.validate().is_err());
    }

    #[test]
    fn describe_table() {
        let cases = [
            (TimeDelta::days(5), "5 days"),
            (TimeDelta::days(1), "1 day"),
            (TimeDelta::minutes(90), "90 minutes"),
            (secs(12), "12 seconds"),
            (TimeDelta::milliseconds(1_500), "1500 milliseconds"),
        ];
        for (duration, expected) in cases {
            assert_eq!(describe(duration), expected);
        }
    }

    fn exponential() -> impl Strategy<Value = Backoff> {
        (1i64..600_000, 1u32..5, 1i64..86_400_000).prop_map(|(base, factor, max)| {
            Backoff::Exponential {
                base: TimeDelta::milliseconds(base),
                factor,
                max: TimeDelta::milliseconds(max),
            }
        })
    }

    fn any_backoff() -> impl Strategy<Value = Backoff> {
        prop_oneof![
            exponential(),
            proptest::collection::vec(0i64..86_400_000, 1..12).prop_map(|ms| {
                Backoff::Schedule(ms.into_iter().map(TimeDelta::milliseconds).collect())
            }),
        ]
    }

    fn policy(backoff: Backoff, jitter: f64) -> RetryPolicy {
        RetryPolicy {
            backoff,
            jitter,
            ..RetryPolicy::default()
        }
    }

    proptest! {
        /// The jittered delay stays within ±jitter of the nominal one (both in milliseconds).
        #[test]
        fn jitter_stays_in_its_band(
            backoff in any_backoff(),
            jitter in 0.0f64..=1.0,
            attempt in 1u32..40,
            unit in 0.0f64..1.0,
        ) {
            let policy = policy(backoff, jitter);
            let nominal = policy.backoff.nominal(attempt).num_milliseconds() as f64;
            let got = policy.delay_for(attempt, unit).num_milliseconds() as f64;
            prop_assert!((got - nominal).abs() <= jitter * nominal + 1e-6, "{} vs {}", got, nominal);
            prop_assert!(got >= 0.0);
        }

        /// At a fixed random number, exponential delays never shrink as attempts go on, and
        /// never exceed the cap plus its jitter.
        #[test]
        fn exponential_delays_grow_up_to_the_cap(
            backoff in exponential(),
            jitter in 0.0f64..=1.0,
            attempt in 1u32..60,
            unit in 0.0f64..1.0,
        ) {
            let Backoff::Exponential { max, .. } = backoff else {
                return Err(TestCaseError::fail("not exponential"));
            };
            let policy = policy(backoff, jitter);
            let (this, next) = (policy.delay_for(attempt, unit), policy.delay_for(attempt + 1, unit));
            prop_assert!(this <= next, "{} > {}", this, next);
            let cap = max.num_milliseconds() as f64 * (1.0 + jitter);
            prop_assert!(next.num_milliseconds() as f64 <= cap + 1e-6, "{} > {}", next, cap);
        }

        /// Whatever the policy, failure and inputs, a retry is never scheduled before now,
        /// never after the maximum age, and never sooner than a bounded Retry-After.
        #[test]
        fn decide_never_retries_in_the_past(
            backoff in any_backoff(),
            jitter in 0.0f64..=1.0,
            attempts in 0u32..15,
            elapsed in 0i64..10 * 86_400,
            retry_after in proptest::option::of(-100i64..100_000),
            permanent in proptest::bool::ANY,
            unit in 0.0f64..1.0,
        ) {
            let policy = policy(backoff, jitter);
            let first = t0();
            let now = first + secs(elapsed);
            let failure = if permanent {
                Failure::permanent("http status 404")
            } else {
                Failure::Transient { reason: "http status 503".into(), retry_after: retry_after.map(secs) }
            };
            match policy.decide(attempts, first, now, &failure, unit) {
                Decision::RetryAt(at) => {
                    prop_assert!(!permanent);
                    prop_assert!(attempts < policy.max_attempts);
                    prop_assert!(at >= now);
                    prop_assert!(at <= first + policy.max_age);
                    if let Some(asked) = retry_after {
                        let bounded = secs(asked).max(policy.retry_after_min).min(policy.retry_after_max);
                        prop_assert!(at >= now + bounded);
                    }
                }
                Decision::GiveUp { reason } => {
                    prop_assert!(!reason.is_empty());
                    prop_assert_eq!(reason.to_lowercase(), reason.clone());
                }
            }
        }
    }
}

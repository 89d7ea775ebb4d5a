//! Timestamp parsing and the replay window.

use chrono::{DateTime, TimeDelta, Utc};

use crate::Rejection;

/// Resolution of a provider's timestamp header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    /// Unix seconds (Stripe, Standard Webhooks, Slack, generic).
    Seconds,
    /// Unix milliseconds (HubSpot).
    Millis,
}

/// A signed timestamp taken from a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub(crate) value: i64,
    pub(crate) unit: Unit,
}

impl Stamp {
    /// Whole unix seconds, for [`Verified::timestamp`](crate::Verified).
    pub(crate) fn unix_seconds(self) -> i64 {
        match self.unit {
            Unit::Seconds => self.value,
            Unit::Millis => self.value.div_euclid(1000),
        }
    }
}

/// Parses a non-negative decimal timestamp.
///
/// Only ASCII digits are accepted: `i64::from_str` would also take a leading
/// `+`, and the raw text is what gets signed, so anything but plain digits is
/// refused instead of being quietly normalised. Overflow yields `None`.
pub(crate) fn parse_digits(text: &str) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Checks `stamp` against `now ± tolerance`, boundaries inclusive.
///
/// Seconds-based stamps are compared with whole seconds of `now`, as the
/// official Stripe and Standard Webhooks libraries do; HubSpot's are compared
/// in milliseconds. Arithmetic is done in `i128`, where no combination of
/// `i64` inputs can overflow. A negative tolerance is treated as zero rather
/// than rejecting every delivery.
pub(crate) fn check_window(
    stamp: Stamp,
    now: DateTime<Utc>,
    tolerance: TimeDelta,
) -> Result<(), Rejection> {
    let (now_value, tolerance_value) = match stamp.unit {
        Unit::Seconds => (now.timestamp(), tolerance.num_seconds()),
        Unit::Millis => (now.timestamp_millis(), tolerance.num_milliseconds()),
    };
    let tolerance_value = i128::from(tolerance_value.max(0));
    let age = i128::from(now_value) - i128::from(stamp.value);
    if age > tolerance_value {
        Err(Rejection::StaleTimestamp)
    } else if -age > tolerance_value {
        Err(Rejection::FutureTimestamp)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 0).expect("in range")
    }

    #[test]
    fn digits_only() {
        assert_eq!(parse_digits("1649367553"), Some(1_649_367_553));
        assert_eq!(parse_digits("0"), Some(0));
        assert_eq!(parse_digits(""), None);
        assert_eq!(parse_digits("+1"), None);
        assert_eq!(parse_digits("-1"), None);
        assert_eq!(parse_digits("1.5"), None);
        assert_eq!(parse_digits("99999999999999999999999"), None);
        assert_eq!(parse_digits("9223372036854775807"), Some(i64::MAX));
    }

    #[test]
    fn window_boundaries_are_inclusive() {
        let stamp = Stamp {
            value: 1_000,
            unit: Unit::Seconds,
        };
        let five = TimeDelta::seconds(300);
        assert_eq!(check_window(stamp, at(1_300), five), Ok(()));
        assert_eq!(
            check_window(stamp, at(1_301), five),
            Err(Rejection::StaleTimestamp)
        );
        assert_eq!(check_window(stamp, at(700), five), Ok(()));
        assert_eq!(
            check_window(stamp, at(699), five),
            Err(Rejection::FutureTimestamp)
        );
    }

    #[test]
    fn milliseconds_are_compared_at_full_resolution() {
        let stamp = Stamp {
            value: 1_000_000,
            unit: Unit::Millis,
        };
        let tolerance = TimeDelta::seconds(300);
        let ok = DateTime::from_timestamp_millis(1_300_000).expect("in range");
        let late = DateTime::from_timestamp_millis(1_300_001).expect("in range");
        assert_eq!(check_window(stamp, ok, tolerance), Ok(()));
        assert_eq!(
            check_window(stamp, late, tolerance),
            Err(Rejection::StaleTimestamp)
        );
        assert_eq!(stamp.unix_seconds(), 1_000);
    }

    #[test]
    fn extremes_do_not_overflow() {
        let huge = Stamp {
            value: i64::MAX,
            unit: Unit::Millis,
        };
        assert_eq!(
            check_window(huge, DateTime::<Utc>::MIN_UTC, TimeDelta::MAX),
            Err(Rejection::FutureTimestamp)
        );
        let zero = Stamp {
            value: 0,
            unit: Unit::Seconds,
        };
        assert_eq!(
            check_window(zero, DateTime::<Utc>::MAX_UTC, TimeDelta::MIN),
            Err(Rejection::StaleTimestamp)
        );
        assert_eq!(check_window(zero, at(0), TimeDelta::MIN), Ok(()));
    }
}

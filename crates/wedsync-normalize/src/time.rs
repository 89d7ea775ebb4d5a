//! Lenient timestamp parsing for provider payloads.
//!
//! Providers disagree on how to write a time (Stripe: unix seconds; HubSpot: unix
//! milliseconds; PagerDuty and Standard Webhooks: RFC 3339; Slack: `"1548426417.840180"`;
//! relays: anything). A time we cannot read is not an error: callers fall back to the
//! receive time, because losing the webhook over a timestamp would be worse than a slightly
//! late event time.
//!
//! Only times from 1970-01-01 to 9999-12-31 are accepted: anything else is almost surely a
//! wrong unit or a placeholder, and would not serialise as plain RFC 3339.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde_json::Value;

/// What a bare number means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    /// Unix seconds, possibly with a fraction (Stripe, Slack).
    Seconds,
    /// Unix milliseconds (HubSpot).
    Millis,
    /// Unknown sender: values of 10^11 and above are milliseconds (10^11 seconds would be the
    /// year 5138, while 10^11 milliseconds is 1973), smaller ones seconds.
    Guess,
}

/// 9999-12-31T23:59:59Z, the last second we accept.
const MAX_SECONDS: i64 = 253_402_300_799;
const GUESS_MILLIS_FROM: u64 = 100_000_000_000;

/// Reads a time from a JSON number or string.
pub(crate) fn from_json(value: &Value, unit: Unit) -> Option<DateTime<Utc>> {
    match value {
        // `Number`'s display is exact for integers and the shortest round-trip form for
        // floats, so parsing it as a decimal keeps microseconds that `as_f64` would blur.
        Value::Number(n) => from_number_text(&n.to_string(), unit),
        Value::String(s) => from_str(s, unit),
        _ => None,
    }
}

/// Reads a time from text: a unix number in `unit`, RFC 3339, RFC 2822, or a zone-less
/// `YYYY-MM-DD[T ]HH:MM:SS[.f]` read as UTC (the common relay habit; a local time would be
/// off by the zone offset, which is still better than the receive time of a retry).
pub(crate) fn from_str(text: &str, unit: Unit) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Some(t) = from_number_text(text, unit) {
        return Some(t);
    }
    let parsed = DateTime::parse_from_rfc3339(text)
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%:z"))
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f %z"))
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .or_else(|_| DateTime::parse_from_rfc2822(text))
        .map(|t| t.with_timezone(&Utc));
    let t = match parsed {
        Ok(t) => t,
        Err(_) => {
            let naive = text
                .strip_suffix(" UTC")
                .or_else(|| text.strip_suffix(" GMT"))
                .unwrap_or(text);
            let n = NaiveDateTime::parse_from_str(naive, "%Y-%m-%dT%H:%M:%S%.f")
                .or_else(|_| NaiveDateTime::parse_from_str(naive, "%Y-%m-%d %H:%M:%S%.f"))
                .ok()?;
            Utc.from_utc_datetime(&n)
        }
    };
    in_range(t)
}

/// Parses `digits[.digits]` exactly (no float rounding) and scales it by `unit`.
fn from_number_text(text: &str, unit: Unit) -> Option<DateTime<Utc>> {
    let (int_part, frac_part) = match text.split_once('.') {
        Some((i, f)) => (i, f),
        None => (text, ""),
    };
    if int_part.is_empty()
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        // Negative numbers, exponents and other text: not a timestamp we trust.
        return None;
    }
    let whole: u64 = int_part.parse().ok()?;
    // Fraction as nanoseconds of the unit: first nine digits, right-padded with zeros.
    let mut frac_nanos: u64 = 0;
    for i in 0..9 {
        let digit = frac_part
            .as_bytes()
            .get(i)
            .map_or(0, |d| u64::from(d - b'0'));
        frac_nanos = frac_nanos * 10 + digit;
    }
    let millis = match unit {
        Unit::Seconds => false,
        Unit::Millis => true,
        Unit::Guess => whole >= GUESS_MILLIS_FROM,
    };
    let (secs, nanos) = if millis {
        (whole / 1000, (whole % 1000) * 1_000_000 + frac_nanos / 1000)
    } else {
        (whole, frac_nanos)
    };
    let secs = i64::try_from(secs).ok()?;
    let nanos = u32::try_from(nanos).ok()?;
    DateTime::from_timestamp(secs, nanos).and_then(in_range)
}

fn in_range(t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let secs = t.timestamp();
    (0..=MAX_SECONDS).contains(&secs).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rfc(t: Option<DateTime<Utc>>) -> Option<String> {
        t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
    }

    #[test]
    fn unix_seconds_and_millis() {
        let want = Some("2024-05-01T10:00:00Z".to_owned());
        assert_eq!(rfc(from_json(&json!(1714557600), Unit::Seconds)), want);
        assert_eq!(
            rfc(from_json(&json!(1714557600000_u64), Unit::Millis)),
            want
        );
        assert_eq!(rfc(from_json(&json!(1714557600), Unit::Guess)), want);
        assert_eq!(rfc(from_json(&json!(1714557600000_u64), Unit::Guess)), want);
        assert_eq!(rfc(from_json(&json!("1714557600"), Unit::Seconds)), want);
    }

    #[test]
    fn slack_action_ts_keeps_microseconds() {
        assert_eq!(
            rfc(from_str("1548426417.840180", Unit::Seconds)),
            Some("2019-01-25T14:26:57.840180Z".to_owned())
        );
        assert_eq!(
            rfc(from_json(&json!(1548426417.84018), Unit::Seconds)),
            Some("2019-01-25T14:26:57.840180Z".to_owned())
        );
    }

    #[test]
    fn text_formats() {
        let want = Some("2024-05-01T10:00:00Z".to_owned());
        for text in [
            "2024-05-01T10:00:00Z",
            "2024-05-01T11:00:00+01:00",
            "2024-05-01 11:00:00+01:00",
            "2024-05-01 10:00:00 +0000",
            "2024-05-01T10:00:00",
            "2024-05-01 10:00:00",
            "2024-05-01 10:00:00 UTC",
            "Wed, 01 May 2024 10:00:00 +0000",
            "  2024-05-01T10:00:00.000Z ",
        ] {
            assert_eq!(rfc(from_str(text, Unit::Guess)), want, "{text}");
        }
    }

    #[test]
    fn rejects_nonsense_without_panicking() {
        for v in [
            json!(null),
            json!(true),
            json!(-5),
            json!(1e300),
            json!(u64::MAX),
            json!("99999999999999999999999"),
            json!("1.5e9"),
            json!(""),
            json!("tomorrow"),
            json!("2024-13-45T99:00:00Z"),
            json!({"t": 1}),
        ] {
            assert_eq!(from_json(&v, Unit::Seconds), None, "{v}");
        }
        assert_eq!(from_json(&json!(253_402_300_800_u64), Unit::Seconds), None);
    }
}

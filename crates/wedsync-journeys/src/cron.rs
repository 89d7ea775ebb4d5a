//! Cron schedules for `cron` triggers, on `croner` (the chosen cron crate: POSIX/Vixie
//! semantics, time zones, and a documented DST rule).
//!
//! Accepted: five fields, `minute hour day-of-month month day-of-week` (minute granularity:
//! a seconds or year field is refused), with lists, ranges, steps, month and weekday names,
//! the `@daily`-style nicknames and croner's `L`, `#` and `W` extensions.
//!
//! Ticks are computed in the schedule's IANA zone. Across a DST change a fixed time that does
//! not exist that day (01:30 on the spring-forward night in London) fires at the first minute
//! after the gap, and a fixed time that happens twice (01:30 on the fall-back night) fires
//! once, at its first occurrence: nothing is dropped and nothing doubled.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// Parses a five-field cron expression, saying what is wrong with it.
pub fn parse_cron(expression: &str) -> Result<Cron, String> {
    let fields = expression.split_whitespace().count();
    if !expression.trim_start().starts_with('@') && fields != 5 {
        return Err(format!(
            "needs 5 fields (minute hour day-of-month month day-of-week), found {fields}"
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(expression)
        .map_err(|e| e.to_string())
}

/// Checks a cron expression: it parses, and it fires at least once (`0 0 30 2 *` never does).
pub fn check_cron(expression: &str) -> Result<(), String> {
    let cron = parse_cron(expression)?;
    let from = DateTime::<Utc>::from_timestamp(1_767_225_600, 0).unwrap_or_default(); // 2026-01-01
    next_tick(&cron, from, Tz::UTC)
        .map(|_| ())
        .ok_or_else(|| "never fires".to_owned())
}

/// The first tick of `cron` strictly after `after`, reading the schedule in `zone`.
pub fn next_tick(cron: &Cron, after: DateTime<Utc>, zone: Tz) -> Option<DateTime<Utc>> {
    cron.find_next_occurrence(&after.with_timezone(&zone), false)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn accepts_common_expressions() {
        for expr in [
            "0 9 * * MON",
            "*/15 * * * *",
            "0 9-17/2 1,15 JAN-jun mon-fri",
            "30 8 * * 0",
            "0 0 1 1 7",
            "@daily",
            "0 9 L * *",
        ] {
            assert_eq!(check_cron(expr), Ok(()), "{expr}");
        }
    }

    #[test]
    fn rejects_bad_expressions() {
        let cases = [
            ("0 9 * *", "needs 5 fields"),
            ("0 0 9 * * *", "found 6"),
            ("60 9 * * *", ""),
            ("0 24 * * *", ""),
            ("0 9 0 * *", ""),
            ("0 9 * 13 *", ""),
            ("0 9 * * FUN", ""),
            ("*/0 * * * *", ""),
            ("0 0 30 2 *", "never fires"),
            ("", "needs 5 fields"),
        ];
        for (expr, fragment) in cases {
            let err = check_cron(expr).expect_err(expr);
            assert!(err.contains(fragment), "{expr}: {err}");
        }
    }

    #[test]
    fn ticks_follow_the_zone_across_both_dst_changes() {
        let cron = parse_cron("30 1 * * *").expect("parses");
        let london = chrono_tz::Europe::London;
        // 29 March 2026: 01:00 GMT jumps to 02:00 BST, so 01:30 does not exist; it fires at
        // the first minute after the gap, once.
        let spring = next_tick(&cron, utc("2026-03-28T02:00:00Z"), london).expect("tick");
        assert_eq!(spring, utc("2026-03-29T01:00:00Z"));
        let after = next_tick(&cron, spring, london).expect("tick");
        assert_eq!(after, utc("2026-03-30T00:30:00Z")); // 01:30 BST
        // 25 October 2026: 01:30 BST happens, then 01:30 GMT: once, at the first.
        let autumn = next_tick(&cron, utc("2026-10-24T12:00:00Z"), london).expect("tick");
        assert_eq!(autumn, utc("2026-10-25T00:30:00Z"));
        let after = next_tick(&cron, autumn, london).expect("tick");
        assert_eq!(after, utc("2026-10-26T01:30:00Z")); // 01:30 GMT the next day
    }

    #[test]
    fn a_weekly_schedule_is_read_in_its_zone() {
        let cron = parse_cron("0 9 * * MON").expect("parses");
        let tick = next_tick(
            &cron,
            utc("2026-11-21T00:00:00Z"),
            chrono_tz::America::New_York,
        )
        .expect("tick");
        assert_eq!(tick, utc("2026-11-23T14:00:00Z"));
    }
}

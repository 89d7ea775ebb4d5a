//! Couple-local, date-relative instants for `date_reached` triggers and `until_date` waits
//! (journeys), shared by the journey engine and the store, which recomputes waits when a
//! date moves.

use chrono::{
    DateTime, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, TimeZone, Utc,
};
use chrono_tz::Tz;

/// The instant of local wall time `date + offset_days` at `at` in `zone`.
///
/// DST-correct: a wall time inside a spring-forward gap gives the first instant after the gap
/// (the transition itself); an ambiguous fall-back wall time gives the earlier occurrence. A date
/// shifted past chrono's calendar range saturates at its end (validation keeps offsets within
/// ten years, so this never happens for a valid journey).
pub fn date_relative_instant(
    date: NaiveDate,
    offset_days: i32,
    at: NaiveTime,
    zone: Tz,
) -> DateTime<Utc> {
    let day = date
        .checked_add_signed(TimeDelta::days(i64::from(offset_days)))
        .unwrap_or(if offset_days < 0 {
            NaiveDate::MIN
        } else {
            NaiveDate::MAX
        });
    let local = day.and_time(at);
    match zone.from_local_datetime(&local) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(a, b) => a.with_timezone(&Utc).min(b.with_timezone(&Utc)),
        LocalResult::None => end_of_gap(local, zone),
    }
}

/// The first instant whose wall time in `zone` is later than `local`, which lies in a gap: that
/// is the transition that opened the gap. Binary search over whole seconds within a day either
/// side (UTC offsets stay within ±26 hours, so the window always holds it).
fn end_of_gap(local: NaiveDateTime, zone: Tz) -> DateTime<Utc> {
    let fallback = local.and_utc();
    let window = TimeDelta::hours(26);
    let (Some(low), Some(high)) = (
        local.checked_sub_signed(window),
        local.checked_add_signed(window),
    ) else {
        return fallback;
    };
    let wall_after = |secs: i64| {
        DateTime::from_timestamp(secs, 0).map(|u| u.with_timezone(&zone).naive_local() > local)
    };
    // Invariant: wall(low) <= local < wall(high).
    let (mut low, mut high) = (low.and_utc().timestamp(), high.and_utc().timestamp());
    while high - low > 1 {
        let mid = low + (high - low) / 2;
        match wall_after(mid) {
            Some(true) => high = mid,
            Some(false) => low = mid,
            None => return fallback,
        }
    }
    DateTime::from_timestamp(high, 0).unwrap_or(fallback)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;
    use proptest::prelude::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("valid date")
    }

    fn time(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).expect("valid time")
    }

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().expect("valid RFC 3339")
    }

    #[test]
    fn plain_offset_in_summer_and_winter() {
        let wedding = date(2027, 6, 12);
        assert_eq!(
            date_relative_instant(wedding, -30, time(9, 0), Tz::Europe__London),
            utc("2027-05-13T08:00:00Z"),
            "BST is UTC+1"
        );
        assert_eq!(
            date_relative_instant(wedding, 180, time(9, 0), Tz::Europe__London),
            utc("2027-12-09T09:00:00Z"),
            "GMT is UTC+0"
        );
        assert_eq!(
            date_relative_instant(wedding, 0, time(18, 30), Tz::America__New_York),
            utc("2027-06-12T22:30:00Z")
        );
    }

    #[test]
    fn spring_forward_gap_gives_the_transition() {
        // London skips 01:00–02:00 on 2027-03-28; the clocks go to 02:00 BST at 01:00 UTC.
        let got = date_relative_instant(date(2027, 3, 29), -1, time(1, 30), Tz::Europe__London);
        assert_eq!(got, utc("2027-03-28T01:00:00Z"));
        assert_eq!(
            got.with_timezone(&Tz::Europe__London).naive_local(),
            date(2027, 3, 28).and_time(time(2, 0))
        );
    }

    #[test]
    fn fall_back_ambiguity_gives_the_earlier_occurrence() {
        // 01:30 happens twice on 2027-10-31: first in BST (00:30 UTC), then in GMT (01:30 UTC).
        let got = date_relative_instant(date(2027, 10, 31), 0, time(1, 30), Tz::Europe__London);
        assert_eq!(got, utc("2027-10-31T00:30:00Z"));
    }

    #[test]
    fn a_whole_skipped_day_gives_the_transition() {
        // Samoa skipped 2011-12-30 entirely, moving from UTC-10 to UTC+14 at 10:00 UTC.
        let got = date_relative_instant(date(2011, 12, 29), 1, time(12, 0), Tz::Pacific__Apia);
        assert_eq!(got, utc("2011-12-30T10:00:00Z"));
    }

    #[test]
    fn out_of_range_offsets_saturate_without_panicking() {
        let _ = date_relative_instant(
            NaiveDate::MAX,
            i32::MAX,
            time(23, 59),
            Tz::Pacific__Kiritimati,
        );
        let _ = date_relative_instant(NaiveDate::MIN, i32::MIN, time(0, 0), Tz::Pacific__Pago_Pago);
    }

    proptest! {
        #[test]
        fn instant_shows_the_wall_time_or_the_end_of_its_gap(
            days in 0i64..(400 * 366),
            offset in -3650i32..=3650,
            minutes in 0u32..1440,
            zone in prop::sample::select(vec![
                Tz::Europe__London, Tz::America__New_York, Tz::Australia__Lord_Howe,
                Tz::America__Santiago, Tz::Asia__Kolkata, Tz::Pacific__Apia,
            ]),
        ) {
            let base = date(1900, 1, 1) + TimeDelta::days(days);
            let at = time(minutes / 60, minutes % 60);
            let got = date_relative_instant(base, offset, at, zone);
            let wanted = (base + TimeDelta::days(i64::from(offset))).and_time(at);
            let wall = got.with_timezone(&zone).naive_local();
            if wall != wanted {
                // A gap: the result is the first instant after it.
                prop_assert!(wall > wanted);
                let before = (got - TimeDelta::seconds(1)).with_timezone(&zone).naive_local();
                prop_assert!(before < wanted);
            } else {
                // Not a gap: no earlier instant shows the same wall time.
                let earlier = zone.from_local_datetime(&wanted).earliest();
                prop_assert_eq!(earlier.map(|t| t.with_timezone(&Utc)), Some(got));
            }
        }
    }
}

//! The wedding calendar: seasons, the wedding-day window and what it changes (how loudly
//! alerts escalate and which queued work runs first), decided from an instant and the
//! organisation's time zone. No IO: whether a day has a wedding booked is asked of the caller.
//!
//! Everything is decided on the organisation's *local wall clock*. The window is "Friday 18:00
//! to Sunday 23:00 where the vendor is", so a daylight-saving change moves the window's UTC
//! bounds with the clocks instead of shifting it by an hour; a weekend with a transition inside
//! it has a window 52 or 54 hours long in UTC, which is exactly what the vendor lives through.

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, Utc, Weekday};
use serde::{Deserialize, Serialize};

use crate::org::{TimeZone, string_enum};

/// The wedding season a date falls in. Seasons tag metrics and scale rate limits, because
/// peak season brings about ten times the traffic.
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
pub enum Season {
    /// May to September by default: most weddings, most traffic.
    Peak,
    /// April and October by default.
    Shoulder,
    /// November to March by default.
    Off,
}

string_enum!(Season, "season", [Peak => "peak", Shoulder => "shoulder", Off => "off"]);

/// The product's default season of each month, January first.
pub const DEFAULT_SEASONS: [Season; 12] = [
    Season::Off,      // January
    Season::Off,      // February
    Season::Off,      // March
    Season::Shoulder, // April
    Season::Peak,     // May
    Season::Peak,     // June
    Season::Peak,     // July
    Season::Peak,     // August
    Season::Peak,     // September
    Season::Shoulder, // October
    Season::Off,      // November
    Season::Off,      // December
];

/// The season of `date` under the product's default months ([`DEFAULT_SEASONS`]); use
/// [`CalendarRules::season`] where an organisation's own months apply.
pub fn season(date: NaiveDate) -> Season {
    season_in(&DEFAULT_SEASONS, date)
}

/// Looks `date`'s month up in a January-first table.
fn season_in(seasons: &[Season; 12], date: NaiveDate) -> Season {
    // `month0` is always 0..=11, so the index is always in bounds.
    seasons[date.month0() as usize]
}

/// Builds a time at compile time; an invalid literal fails the build rather than a request.
const fn hm(hour: u32, minute: u32) -> NaiveTime {
    match NaiveTime::from_hms_opt(hour, minute, 0) {
        Some(time) => time,
        None => panic!("invalid time of day"),
    }
}

/// The calendar's configurable numbers. The defaults are the product rules; an organisation
/// (or a deployment) may change any of them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CalendarRules {
    /// Where the weekly wedding-day window opens, on the local wall clock (inclusive).
    /// Default: Friday 18:00, when rehearsal dinners and early setups begin.
    pub window_start: (Weekday, NaiveTime),
    /// Where the weekly window closes, on the local wall clock (exclusive). Default: Sunday
    /// 23:00, after the last Sunday weddings are over. An end earlier in the week than the
    /// start wraps through Monday; an end equal to the start means no weekly window at all.
    pub window_end: (Weekday, NaiveTime),
    /// When peak ceremony hours begin each day, local (inclusive). Default 10:00.
    pub ceremony_start: NaiveTime,
    /// When peak ceremony hours end each day, local (exclusive). Default 18:00. An end
    /// earlier than the start wraps past midnight.
    pub ceremony_end: NaiveTime,
    /// The season of each month, January first, so that a southern-hemisphere vendor can
    /// have its own peak months. Default [`DEFAULT_SEASONS`].
    pub seasons: [Season; 12],
}

impl Default for CalendarRules {
    fn default() -> Self {
        Self {
            window_start: (Weekday::Fri, hm(18, 0)),
            window_end: (Weekday::Sun, hm(23, 0)),
            ceremony_start: hm(10, 0),
            ceremony_end: hm(18, 0),
            seasons: DEFAULT_SEASONS,
        }
    }
}

impl CalendarRules {
    /// The season of `date` under these rules' months.
    pub fn season(&self, date: NaiveDate) -> Season {
        season_in(&self.seasons, date)
    }

    /// Whether a local wall time falls in the weekly window (ignoring bookings and Saturday).
    fn in_weekly_window(&self, local: NaiveDateTime) -> bool {
        // Positions in the week compare as (day from Monday, time of day), so the window is a
        // plain half-open interval on the weekly cycle, wrapping when it crosses Monday 00:00.
        let position = |(day, time): (Weekday, NaiveTime)| (day.num_days_from_monday(), time);
        let now = position((local.weekday(), local.time()));
        let start = position(self.window_start);
        let end = position(self.window_end);
        within_cycle(start, end, now)
    }

    /// Whether a local time of day falls in peak ceremony hours.
    fn in_ceremony_hours(&self, time: NaiveTime) -> bool {
        within_cycle(self.ceremony_start, self.ceremony_end, time)
    }
}

/// Whether `value` is in the half-open interval `[start, end)` of a cycle: when `end` comes
/// before `start` the interval wraps round; when they are equal it is empty.
fn within_cycle<T: Ord>(start: T, end: T, value: T) -> bool {
    if start <= end {
        (start..end).contains(&value)
    } else {
        value >= start || value < end
    }
}

/// How much a moment matters, from lowest to highest; ordering matters
/// (`DayLevel::Saturday > DayLevel::BookedWedding`).
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
pub enum DayLevel {
    /// An ordinary working moment.
    Normal,
    /// Inside the weekly window (default Friday 18:00 to Sunday 23:00) with no booking.
    Window,
    /// A local day on which the organisation has a wedding booked, the whole day.
    BookedWedding,
    /// Any moment of a local Saturday, booked or not: the busiest wedding day.
    Saturday,
}

string_enum!(DayLevel, "day level", [Normal => "normal", Window => "window", BookedWedding => "booked_wedding", Saturday => "saturday"]);

impl DayLevel {
    /// The level's step above [`DayLevel::Normal`]: 0 for normal up to 3 for Saturday. Queue
    /// priority is built from it.
    pub fn rank(&self) -> i32 {
        match self {
            Self::Normal => 0,
            Self::Window => 1,
            Self::BookedWedding => 2,
            Self::Saturday => 3,
        }
    }
}

/// An instant as the wedding calendar sees it, in the organisation's time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
pub struct Moment {
    /// The organisation's local wall-clock time at the instant; every rule reads this.
    pub local: NaiveDateTime,
    /// The season of the local date.
    pub season: Season,
    /// How much the moment matters.
    pub level: DayLevel,
    /// Whether the moment is in the wedding-day window in the wide sense: the weekly window,
    /// a booked day or a Saturday (any level above [`DayLevel::Normal`]).
    pub in_window: bool,
    /// Whether the moment is in the window *and* inside peak ceremony hours, when a failure
    /// is most likely to spoil a ceremony in progress.
    pub ceremony_hours: bool,
}

/// Classifies the instant `at` for an organisation in `zone`.
///
/// `has_booked_wedding` answers for a local date; it is asked at most once, and not at all on
/// a Saturday (which is already the highest level), so the caller may back it with a query.
pub fn classify(
    at: DateTime<Utc>,
    zone: TimeZone,
    rules: &CalendarRules,
    has_booked_wedding: impl Fn(NaiveDate) -> bool,
) -> Moment {
    // The local wall clock, not a UTC offset taken at some other instant, so that the window
    // follows daylight-saving changes exactly.
    let local = at.with_timezone(&zone.tz()).naive_local();
    let date = local.date();
    let level = if date.weekday() == Weekday::Sat {
        DayLevel::Saturday
    } else if has_booked_wedding(date) {
        DayLevel::BookedWedding
    } else if rules.in_weekly_window(local) {
        DayLevel::Window
    } else {
        DayLevel::Normal
    };
    let in_window = level > DayLevel::Normal;
    Moment {
        local,
        season: rules.season(date),
        level,
        in_window,
        ceremony_hours: in_window && rules.in_ceremony_hours(local.time()),
    }
}

/// How loudly an alert raised at a moment is delivered.
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
pub enum Escalation {
    /// Outside the window: alerts go by their own severity.
    Normal,
    /// In the window or on a booked day: alerts are raised a step.
    Elevated,
    /// On Saturday: every alert, whatever its severity, also goes to SMS and PagerDuty.
    Maximum,
}

string_enum!(Escalation, "escalation", [Normal => "normal", Elevated => "elevated", Maximum => "maximum"]);

impl Escalation {
    /// Whether every alert also goes to SMS and PagerDuty, whatever its severity; only on
    /// Saturday, so that people are paged when a wedding is most likely to be happening.
    pub fn also_page_and_sms(&self) -> bool {
        matches!(self, Self::Maximum)
    }
}

/// The escalation for alerts raised at `moment`: normal outside the window, elevated in the
/// window or on a booked day, maximum on Saturday.
pub fn escalation(moment: &Moment) -> Escalation {
    match moment.level {
        DayLevel::Normal => Escalation::Normal,
        DayLevel::Window | DayLevel::BookedWedding => Escalation::Elevated,
        DayLevel::Saturday => Escalation::Maximum,
    }
}

/// The queue priority of ordinary work outside the window; higher runs first.
pub const PRIORITY_NORMAL: i32 = 0;
/// Added per step of [`DayLevel::rank`], so that work done in the window (and most on
/// Saturday) overtakes work queued on an ordinary day.
pub const PRIORITY_PER_LEVEL: i32 = 10;
/// Added for work tied to one of today's weddings. It outweighs every level step, so such
/// work runs before anything that is not tied to a wedding today.
pub const PRIORITY_WEDDING_TODAY: i32 = 100;

/// The queue priority of work enqueued at `moment`, higher first:
/// [`PRIORITY_NORMAL`] + [`PRIORITY_PER_LEVEL`] × the level's rank, + [`PRIORITY_WEDDING_TODAY`]
/// when the work is tied to a wedding today. The range is 0 to 130; the queue stores the
/// integer as is.
pub fn job_priority(moment: &Moment, tied_to_wedding_today: bool) -> i32 {
    let wedding = if tied_to_wedding_today {
        PRIORITY_WEDDING_TODAY
    } else {
        0
    };
    PRIORITY_NORMAL + PRIORITY_PER_LEVEL * moment.level.rank() + wedding
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{LocalResult, Offset, TimeDelta, TimeZone as _};
    use chrono_tz::Tz;
    use proptest::prelude::*;

    fn zone(name: &str) -> TimeZone {
        TimeZone::parse(name).expect("zone")
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("valid date")
    }

    fn local(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M").expect("local date-time")
    }

    /// The one instant at which `zone` shows `text`; the table avoids ambiguous times.
    fn instant(zone: TimeZone, text: &str) -> DateTime<Utc> {
        zone.tz()
            .from_local_datetime(&local(text))
            .single()
            .expect("unambiguous local time")
            .with_timezone(&Utc)
    }

    fn never_booked(_: NaiveDate) -> bool {
        false
    }

    #[test]
    fn season_table() {
        let cases = [
            (date(2026, 1, 1), Season::Off),
            (date(2026, 3, 31), Season::Off),
            (date(2026, 4, 1), Season::Shoulder),
            (date(2026, 4, 30), Season::Shoulder),
            (date(2026, 5, 1), Season::Peak),
            (date(2026, 7, 15), Season::Peak),
            (date(2026, 9, 30), Season::Peak),
            (date(2026, 10, 1), Season::Shoulder),
            (date(2026, 10, 31), Season::Shoulder),
            (date(2026, 11, 1), Season::Off),
            (date(2026, 12, 31), Season::Off),
            (date(2028, 2, 29), Season::Off),
        ];
        for (day, expected) in cases {
            assert_eq!(season(day), expected, "{day}");
            assert_eq!(CalendarRules::default().season(day), expected, "{day}");
        }
    }

    #[test]
    fn seasons_are_configurable() {
        // A southern-hemisphere vendor whose peak is October to April.
        use Season::{Off, Peak, Shoulder};
        let rules = CalendarRules {
            seasons: [
                Peak, Peak, Peak, Peak, Shoulder, Off, Off, Off, Shoulder, Peak, Peak, Peak,
            ],
            ..CalendarRules::default()
        };
        assert_eq!(rules.season(date(2026, 1, 10)), Season::Peak);
        assert_eq!(rules.season(date(2026, 9, 10)), Season::Shoulder);
        assert_eq!(rules.season(date(2026, 6, 10)), Season::Off);
        let moment = classify(
            instant(zone("Australia/Sydney"), "2026-06-10 12:00"),
            zone("Australia/Sydney"),
            &rules,
            never_booked,
        );
        assert_eq!(moment.season, Season::Off);
    }

    #[test]
    fn classification_table() {
        use DayLevel::*;
        let london = zone("Europe/London");
        // 12 June 2026 is a Friday; 17 June a Wednesday, which is the booked day here.
        let booked = |d: NaiveDate| d == date(2026, 6, 17) || d == date(2026, 6, 13);
        let cases = [
            // (local time in London, level, in window, ceremony hours)
            ("2026-06-12 17:59", Normal, false, false),
            ("2026-06-12 18:00", Window, true, false),
            ("2026-06-12 23:59", Window, true, false),
            ("2026-06-13 00:00", Saturday, true, false),
            ("2026-06-13 03:00", Saturday, true, false),
            ("2026-06-13 09:59", Saturday, true, false),
            ("2026-06-13 10:00", Saturday, true, true),
            ("2026-06-13 17:59", Saturday, true, true),
            ("2026-06-13 18:00", Saturday, true, false),
            ("2026-06-14 00:00", Window, true, false),
            ("2026-06-14 12:00", Window, true, true),
            ("2026-06-14 22:59", Window, true, false),
            ("2026-06-14 23:00", Normal, false, false),
            ("2026-06-15 00:00", Normal, false, false),
            ("2026-06-15 12:00", Normal, false, false),
            ("2026-06-17 00:00", BookedWedding, true, false),
            ("2026-06-17 14:00", BookedWedding, true, true),
            ("2026-06-17 23:59", BookedWedding, true, false),
            ("2026-06-18 14:00", Normal, false, false),
            ("2026-06-20 14:00", Saturday, true, true),
        ];
        for (text, level, in_window, ceremony) in cases {
            let moment = classify(
                instant(london, text),
                london,
                &CalendarRules::default(),
                booked,
            );
            assert_eq!(moment.local, local(text), "{text}");
            assert_eq!(moment.level, level, "{text}");
            assert_eq!(moment.in_window, in_window, "{text}");
            assert_eq!(moment.ceremony_hours, ceremony, "{text}");
            assert_eq!(moment.season, Season::Peak, "{text}");
        }
    }

    #[test]
    fn a_booking_raises_the_weekend_window() {
        let london = zone("Europe/London");
        let always = |_: NaiveDate| true;
        let cases = [
            ("2026-06-12 17:59", DayLevel::BookedWedding),
            ("2026-06-12 18:00", DayLevel::BookedWedding),
            ("2026-06-13 03:00", DayLevel::Saturday),
            ("2026-06-14 22:59", DayLevel::BookedWedding),
            ("2026-06-14 23:30", DayLevel::BookedWedding),
        ];
        for (text, level) in cases {
            let moment = classify(
                instant(london, text),
                london,
                &CalendarRules::default(),
                always,
            );
            assert_eq!(moment.level, level, "{text}");
        }
    }

    #[test]
    fn saturday_never_asks_about_bookings() {
        let london = zone("Europe/London");
        let asked = std::cell::Cell::new(0);
        let count = |_: NaiveDate| {
            asked.set(asked.get() + 1);
            false
        };
        classify(
            instant(london, "2026-06-13 12:00"),
            london,
            &CalendarRules::default(),
            count,
        );
        assert_eq!(asked.get(), 0);
        classify(
            instant(london, "2026-06-17 12:00"),
            london,
            &CalendarRules::default(),
            count,
        );
        assert_eq!(asked.get(), 1);
    }

    #[test]
    fn the_same_instant_is_classified_in_each_zones_own_time() {
        // 21:00 UTC on Friday 12 June 2026: 22:00 Friday in London, 17:00 Friday in New York,
        // 07:00 Saturday in Sydney.
        let at = Utc
            .with_ymd_and_hms(2026, 6, 12, 21, 0, 0)
            .single()
            .expect("instant");
        let rules = CalendarRules::default();
        let level = |name: &str| classify(at, zone(name), &rules, never_booked).level;
        assert_eq!(level("Europe/London"), DayLevel::Window);
        assert_eq!(level("America/New_York"), DayLevel::Normal);
        assert_eq!(level("Australia/Sydney"), DayLevel::Saturday);
    }

    #[test]
    fn custom_rules_table() {
        // A window from Thursday noon to Monday 06:00 wraps through Monday 00:00; ceremony
        // hours from 20:00 to 02:00 wrap through midnight.
        let rules = CalendarRules {
            window_start: (Weekday::Thu, hm(12, 0)),
            window_end: (Weekday::Mon, hm(6, 0)),
            ceremony_start: hm(20, 0),
            ceremony_end: hm(2, 0),
            seasons: DEFAULT_SEASONS,
        };
        let london = zone("Europe/London");
        let cases = [
            // (local time, level, ceremony hours); 15 June 2026 is a Monday.
            ("2026-06-15 05:59", DayLevel::Window, false),
            ("2026-06-15 06:00", DayLevel::Normal, false),
            ("2026-06-18 11:59", DayLevel::Normal, false),
            ("2026-06-18 12:00", DayLevel::Window, false),
            ("2026-06-18 20:00", DayLevel::Window, true),
            ("2026-06-19 01:59", DayLevel::Window, true),
            ("2026-06-19 02:00", DayLevel::Window, false),
            ("2026-06-21 23:30", DayLevel::Window, true),
        ];
        for (text, level, ceremony) in cases {
            let moment = classify(instant(london, text), london, &rules, never_booked);
            assert_eq!(moment.level, level, "{text}");
            assert_eq!(moment.ceremony_hours, ceremony, "{text}");
        }

        // Equal ends mean no weekly window, but Saturday and booked days still count.
        let no_window = CalendarRules {
            window_end: rules.window_start,
            ..rules
        };
        let level =
            |text: &str| classify(instant(london, text), london, &no_window, never_booked).level;
        assert_eq!(level("2026-06-18 12:00"), DayLevel::Normal);
        assert_eq!(level("2026-06-14 12:00"), DayLevel::Normal);
        assert_eq!(level("2026-06-13 12:00"), DayLevel::Saturday);
    }

    #[test]
    fn escalation_and_priority_table() {
        let london = zone("Europe/London");
        let cases = [
            // (local time, escalation, priority untied, priority tied to a wedding today)
            ("2026-06-15 12:00", Escalation::Normal, 0, 100),
            ("2026-06-12 19:00", Escalation::Elevated, 10, 110),
            ("2026-06-17 12:00", Escalation::Elevated, 20, 120),
            ("2026-06-13 12:00", Escalation::Maximum, 30, 130),
        ];
        let booked = |d: NaiveDate| d == date(2026, 6, 17);
        for (text, expected, untied, tied) in cases {
            let moment = classify(
                instant(london, text),
                london,
                &CalendarRules::default(),
                booked,
            );
            let got = escalation(&moment);
            assert_eq!(got, expected, "{text}");
            assert_eq!(
                got.also_page_and_sms(),
                expected == Escalation::Maximum,
                "{text}"
            );
            assert_eq!(job_priority(&moment, false), untied, "{text}");
            assert_eq!(job_priority(&moment, true), tied, "{text}");
        }
    }

    #[test]
    fn names_serialise_as_their_stable_strings() {
        for s in Season::ALL {
            let json = serde_json::to_string(s).expect("serialise");
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(s.as_str().parse::<Season>(), Ok(*s));
        }
        for l in DayLevel::ALL {
            let json = serde_json::to_string(l).expect("serialise");
            assert_eq!(json, format!("\"{}\"", l.as_str()));
            assert_eq!(l.as_str().parse::<DayLevel>(), Ok(*l));
        }
        for e in Escalation::ALL {
            let json = serde_json::to_string(e).expect("serialise");
            assert_eq!(json, format!("\"{}\"", e.as_str()));
            assert_eq!(e.as_str().parse::<Escalation>(), Ok(*e));
        }
        assert_eq!(DayLevel::BookedWedding.as_str(), "booked_wedding");
        assert!(DayLevel::ALL.windows(2).all(|w| w[0] < w[1]));
    }

    // ---- Daylight saving ----------------------------------------------------------------

    fn offset_seconds(tz: Tz, at: DateTime<Utc>) -> i32 {
        tz.offset_from_utc_datetime(&at.naive_utc())
            .fix()
            .local_minus_utc()
    }

    /// The instants in `year` at which `tz`'s UTC offset changes, found day by day and then
    /// narrowed to the second by bisection, so the tests do not restate the zones' rules.
    fn transitions(tz: Tz, year: i32) -> Vec<DateTime<Utc>> {
        let start = Utc
            .with_ymd_and_hms(year, 1, 1, 0, 0, 0)
            .single()
            .expect("new year");
        let mut found = Vec::new();
        for day in 0..366 {
            let (mut before, mut after) = (
                start + TimeDelta::days(day),
                start + TimeDelta::days(day + 1),
            );
            if offset_seconds(tz, before) == offset_seconds(tz, after) {
                continue;
            }
            let old = offset_seconds(tz, before);
            while after - before > TimeDelta::seconds(1) {
                let middle = before + (after - before) / 2;
                if offset_seconds(tz, middle) == old {
                    before = middle;
                } else {
                    after = middle;
                }
            }
            found.push(after);
        }
        found
    }

    /// The first instant whose local wall time in `tz` is at or after `wall`: the earlier of
    /// two when the clocks go back, the transition itself when `wall` falls in a gap.
    fn first_at_or_after(tz: Tz, wall: NaiveDateTime) -> DateTime<Utc> {
        match tz.from_local_datetime(&wall) {
            LocalResult::Single(t) => t.with_timezone(&Utc),
            LocalResult::Ambiguous(a, b) => a.min(b).with_timezone(&Utc),
            LocalResult::None => {
                let mut later = wall;
                loop {
                    later += TimeDelta::minutes(1);
                    if let Some(t) = tz.from_local_datetime(&later).earliest() {
                        return t.with_timezone(&Utc);
                    }
                }
            }
        }
    }

    /// The Friday of the weekend that contains (or, for a Monday to Thursday, precedes)
    /// the local date of `at`, moved by `weeks`.
    fn friday_of(tz: Tz, at: DateTime<Utc>, weeks: i64) -> NaiveDate {
        let day = at.with_timezone(&tz).date_naive();
        let back = (day.weekday().num_days_from_monday() + 7 - 4) % 7;
        day - TimeDelta::days(i64::from(back)) + TimeDelta::weeks(weeks)
    }

    /// What a minute-by-minute walk through a weekend saw.
    #[derive(Debug)]
    struct Walk {
        switched_on: u32,
        switched_off: u32,
        window: TimeDelta,
        saturday: TimeDelta,
    }

    /// Classifies every minute (in UTC) from `from` up to `to`, counting how often the
    /// window switches and how long it and the Saturday level last.
    fn walk(zone: TimeZone, from: DateTime<Utc>, to: DateTime<Utc>) -> Walk {
        let rules = CalendarRules::default();
        let step = TimeDelta::minutes(1);
        let mut seen = Walk {
            switched_on: 0,
            switched_off: 0,
            window: TimeDelta::zero(),
            saturday: TimeDelta::zero(),
        };
        let mut previous = classify(from, zone, &rules, never_booked).in_window;
        let mut at = from;
        while at < to {
            let moment = classify(at, zone, &rules, never_booked);
            match (previous, moment.in_window) {
                (false, true) => seen.switched_on += 1,
                (true, false) => seen.switched_off += 1,
                _ => {}
            }
            previous = moment.in_window;
            if moment.in_window {
                seen.window += step;
            }
            if moment.level == DayLevel::Saturday {
                seen.saturday += step;
            }
            at += step;
        }
        seen
    }

    /// Checks one weekend: the window opens once and closes once, lasts 53 hours less the
    /// change of offset inside it, and the Saturday level lasts exactly the local Saturday.
    fn check_weekend(name: &str, friday: NaiveDate, phase: i64) -> Result<Walk, TestCaseError> {
        let zone = zone(name);
        let tz = zone.tz();
        let at = |day: i64, hour: u32| {
            first_at_or_after(
                tz,
                (friday + TimeDelta::days(day))
                    .and_hms_opt(hour, 0, 0)
                    .expect("time"),
            )
        };
        // The walk runs from Friday 00:00 to Monday 00:00, local, starting anywhere within
        // the first minute so that it does not only ever look at whole minutes.
        let seen = walk(zone, at(0, 0) + TimeDelta::seconds(phase), at(3, 0));
        prop_assert_eq!(seen.switched_on, 1, "{} {}: {:?}", name, friday, seen);
        prop_assert_eq!(seen.switched_off, 1, "{} {}: {:?}", name, friday, seen);

        let (opens, closes) = (at(0, 18), at(2, 23));
        let shift = offset_seconds(tz, closes) - offset_seconds(tz, opens);
        let expected = TimeDelta::hours(53) - TimeDelta::seconds(i64::from(shift));
        prop_assert_eq!(closes - opens, expected, "{} {}", name, friday);
        prop_assert_eq!(seen.window, expected, "{} {}", name, friday);
        prop_assert!(
            [52, 53, 54].contains(&seen.window.num_hours()),
            "{} {}: {:?}",
            name,
            friday,
            seen
        );

        let saturday = at(2, 0) - at(1, 0);
        prop_assert_eq!(seen.saturday, saturday, "{} {}", name, friday);
        prop_assert!(
            [23, 24, 25].contains(&saturday.num_hours()),
            "{} {}",
            name,
            friday
        );
        Ok(seen)
    }

    #[test]
    fn dst_weekends_table() {
        let cases = [
            // (zone, Friday, window hours, Saturday hours)
            ("Europe/London", date(2026, 3, 27), 52, 24),
            ("Europe/London", date(2026, 10, 23), 54, 24),
            ("Europe/London", date(2026, 6, 12), 53, 24),
            ("America/New_York", date(2026, 3, 6), 52, 24),
            ("America/New_York", date(2026, 10, 30), 54, 24),
            ("Australia/Sydney", date(2026, 4, 3), 54, 24),
            ("Australia/Sydney", date(2026, 10, 2), 52, 24),
            // Chile changes at Saturday midnight: the hour before it repeats in April, and
            // Sunday 00:00 does not exist in September.
            ("America/Santiago", date(2026, 4, 3), 54, 25),
            ("America/Santiago", date(2026, 9, 4), 52, 24),
            // Easter Island changes at 22:00 on Saturday, so its Saturdays are 25 and 23 hours.
            ("Pacific/Easter", date(2026, 4, 3), 54, 25),
            ("Pacific/Easter", date(2026, 9, 4), 52, 23),
        ];
        for (name, friday, window, saturday) in cases {
            let seen = check_weekend(name, friday, 0).expect("weekend holds");
            assert_eq!(seen.window, TimeDelta::hours(window), "{name} {friday}");
            assert_eq!(seen.saturday, TimeDelta::hours(saturday), "{name} {friday}");
        }
    }

    /// The zones walked around their transitions: the three the product cares about most,
    /// and two whose clocks change on a Saturday night.
    const DST_ZONES: [&str; 5] = [
        "Europe/London",
        "America/New_York",
        "Australia/Sydney",
        "America/Santiago",
        "Pacific/Easter",
    ];

    /// Zones for the random-instant property: the DST ones, and offsets that are not whole
    /// hours (with and without daylight saving).
    const ANY_ZONES: [&str; 10] = [
        "Europe/London",
        "America/New_York",
        "Australia/Sydney",
        "America/Santiago",
        "Pacific/Easter",
        "Asia/Kolkata",
        "Asia/Kathmandu",
        "Pacific/Chatham",
        "Australia/Lord_Howe",
        "Pacific/Kiritimati",
    ];

    /// The level, ceremony flag and season classify must give, restated from the product
    /// rules in terms of the local weekday and time.
    fn check_consistent(
        name: &str,
        at: DateTime<Utc>,
        booked_every: i32,
    ) -> Result<(), TestCaseError> {
        let zone = zone(name);
        let booked = |d: NaiveDate| d.num_days_from_ce() % booked_every == 0;
        let moment = classify(at, zone, &CalendarRules::default(), booked);
        let wall = at.with_timezone(&zone.tz()).naive_local();
        prop_assert_eq!(moment.local, wall);

        let (day, time) = (wall.weekday(), wall.time());
        let weekend = (day == Weekday::Fri && time >= hm(18, 0))
            || day == Weekday::Sat
            || (day == Weekday::Sun && time < hm(23, 0));
        let expected = if day == Weekday::Sat {
            DayLevel::Saturday
        } else if booked(wall.date()) {
            DayLevel::BookedWedding
        } else if weekend {
            DayLevel::Window
        } else {
            DayLevel::Normal
        };
        prop_assert_eq!(moment.level, expected, "{} {}", name, wall);
        prop_assert_eq!(moment.in_window, expected != DayLevel::Normal);
        let ceremony = (hm(10, 0)..hm(18, 0)).contains(&time);
        prop_assert_eq!(moment.ceremony_hours, moment.in_window && ceremony);
        prop_assert_eq!(moment.season, season(wall.date()));
        prop_assert_eq!(escalation(&moment).also_page_and_sms(), day == Weekday::Sat);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Across a DST weekend (and the weekends either side), walked a minute at a time in
        /// UTC, the window switches on exactly once and off exactly once; it lasts 53 hours
        /// adjusted by exactly the shift inside it; the Saturday level lasts the local
        /// Saturday.
        #[test]
        fn dst_weekends_neither_drop_nor_double_the_window(
            name in proptest::sample::select(DST_ZONES.to_vec()),
            year in 2025i32..=2028,
            which in 0usize..2,
            weeks in -1i64..=1,
            phase in 0i64..60,
        ) {
            let tz = zone(name).tz();
            let changes = transitions(tz, year);
            prop_assert_eq!(changes.len(), 2, "{} {}", name, year);
            let friday = friday_of(tz, changes[which], weeks);
            let seen = check_weekend(name, friday, phase)?;
            if weeks == 0 {
                // In all these zones the clocks change inside the window.
                prop_assert_ne!(seen.window, TimeDelta::hours(53), "{} {}", name, friday);
            }
        }
    }

    proptest! {
        /// Near a transition, classification reads the instant's own local wall clock and
        /// the level follows from the local weekday, time and bookings.
        #[test]
        fn instants_near_transitions_classify_by_local_time(
            name in proptest::sample::select(ANY_ZONES.to_vec()),
            year in 2025i32..=2028,
            which in 0usize..2,
            offset in -3 * 86_400i64..3 * 86_400,
            booked_every in 2i32..9,
        ) {
            let tz = zone(name).tz();
            let mid_year = Utc.with_ymd_and_hms(year, 7, 1, 0, 0, 0).single().expect("instant");
            // Zones without daylight saving have no transitions; any instant will do there.
            let base = transitions(tz, year).get(which).copied().unwrap_or(mid_year);
            check_consistent(name, base + TimeDelta::seconds(offset), booked_every)?;
        }

        /// The same for any instant from 2025 to 2028.
        #[test]
        fn any_instant_classifies_by_local_time(
            name in proptest::sample::select(ANY_ZONES.to_vec()),
            seconds in 1_735_689_600i64..1_861_920_000,
            booked_every in 2i32..9,
        ) {
            let at = DateTime::from_timestamp(seconds, 0).expect("instant");
            check_consistent(name, at, booked_every)?;
        }
    }
}

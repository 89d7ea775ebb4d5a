//! Couples: two partners, a wedding date in a time zone, a venue, and the rule that guards
//! late changes to the wedding date.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::org::{TimeZone, parse_email, string_enum};
use crate::validate::{ValidationErrors, optional_text, text};

/// How a partner prefers to be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Email (needs an email address).
    Email,
    /// SMS (needs a phone number).
    Sms,
    /// Push notifications to the WedMe app.
    Push,
    /// The in-app inbox.
    InApp,
}
string_enum!(Channel, "channel", [Email => "email", Sms => "sms", Push => "push", InApp => "in_app"]);

/// One partner of a couple, as sent by a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PartnerInput {
    /// Full name as the couple wants it written.
    pub name: String,
    /// Email address; required when the preferred channel is email.
    #[serde(default)]
    pub email: Option<String>,
    /// Phone number in E.164 form (`+447700900123`); required for SMS.
    #[serde(default)]
    pub phone: Option<String>,
    /// The channel to try first. Defaults to email.
    #[serde(default = "default_channel")]
    pub preferred_channel: Channel,
}

fn default_channel() -> Channel {
    Channel::Email
}

/// A validated partner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Partner {
    /// Full name.
    pub name: String,
    /// Email address, if known.
    pub email: Option<String>,
    /// Phone number in E.164 form, if known.
    pub phone: Option<String>,
    /// The channel to try first.
    pub preferred_channel: Channel,
}

/// Normalises a phone number to E.164: `+` then 8 to 15 digits; spaces, dashes, dots and
/// brackets are dropped.
pub fn parse_phone(errors: &mut ValidationErrors, field: &str, value: &str) -> Option<String> {
    let compact: String = value
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
        .collect();
    let digits = compact.strip_prefix('+').unwrap_or("");
    if (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
    {
        Some(compact)
    } else {
        errors.add(
            field,
            "must be a phone number in international form such as +447700900123",
        );
        None
    }
}

impl PartnerInput {
    fn validate(&self, errors: &mut ValidationErrors, prefix: &str) -> Option<Partner> {
        let before = errors.0.len();
        let name = text(errors, &format!("{prefix}.name"), &self.name, 200);
        let email = self
            .email
            .as_deref()
            .filter(|e| !e.trim().is_empty())
            .and_then(|e| parse_email(errors, &format!("{prefix}.email"), e));
        let phone = self
            .phone
            .as_deref()
            .filter(|p| !p.trim().is_empty())
            .and_then(|p| parse_phone(errors, &format!("{prefix}.phone"), p));
        let channel_field = format!("{prefix}.preferred_channel");
        match self.preferred_channel {
            Channel::Email if self.email.as_deref().is_none_or(|e| e.trim().is_empty()) => {
                errors.add(channel_field, "email needs an email address")
            }
            Channel::Sms if self.phone.as_deref().is_none_or(|p| p.trim().is_empty()) => {
                errors.add(channel_field, "sms needs a phone number")
            }
            _ => {}
        }
        (errors.0.len() == before).then(|| Partner {
            name: name.unwrap_or_default(),
            email,
            phone,
            preferred_channel: self.preferred_channel,
        })
    }
}

/// Where the wedding takes place.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Venue {
    /// The venue's name.
    #[serde(default)]
    pub name: Option<String>,
    /// Postal address, free text.
    #[serde(default)]
    pub address: Option<String>,
    /// Latitude in degrees, -90 to 90; given together with `longitude`.
    #[serde(default)]
    pub latitude: Option<f64>,
    /// Longitude in degrees, -180 to 180; given together with `latitude`.
    #[serde(default)]
    pub longitude: Option<f64>,
}

impl Venue {
    fn validate(&self, errors: &mut ValidationErrors) -> Venue {
        let name = optional_text(errors, "venue.name", self.name.as_deref(), 200);
        let address = optional_text(errors, "venue.address", self.address.as_deref(), 1000);
        match (self.latitude, self.longitude) {
            (Some(lat), Some(lng)) => {
                if !(-90.0..=90.0).contains(&lat) {
                    errors.add("venue.latitude", "must be between -90 and 90");
                }
                if !(-180.0..=180.0).contains(&lng) {
                    errors.add("venue.longitude", "must be between -180 and 180");
                }
            }
            (None, None) => {}
            _ => errors.add("venue", "latitude and longitude go together"),
        }
        Venue {
            name,
            address,
            latitude: self.latitude,
            longitude: self.longitude,
        }
    }
}

/// A couple as a client sends it to create one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CoupleInput {
    /// Exactly two partners.
    pub partners: Vec<PartnerInput>,
    /// The wedding day, in the couple's time zone (`YYYY-MM-DD`).
    #[schema(value_type = String, format = Date, example = "2027-06-12")]
    pub wedding_date: NaiveDate,
    /// The IANA zone of the wedding; defaults to the organisation's.
    #[serde(default)]
    pub time_zone: Option<String>,
    /// Where the wedding takes place.
    #[serde(default)]
    pub venue: Option<Venue>,
    /// Free-text notes for the team.
    #[serde(default)]
    pub notes: Option<String>,
}

/// The validated, stored fields of a couple.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CoupleFields {
    /// The two partners.
    pub partners: [Partner; 2],
    /// The wedding day in `time_zone`.
    pub wedding_date: NaiveDate,
    /// The wedding's IANA time zone.
    pub time_zone: TimeZone,
    /// The venue.
    pub venue: Venue,
    /// Notes.
    pub notes: Option<String>,
}

impl CoupleInput {
    /// Validates the input; `default_zone` is the organisation's zone.
    pub fn validate(&self, default_zone: TimeZone) -> Result<CoupleFields, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let partners: Vec<Option<Partner>> = self
            .partners
            .iter()
            .enumerate()
            .map(|(i, p)| p.validate(&mut errors, &format!("partners[{i}]")))
            .collect();
        if self.partners.len() != 2 {
            errors.add("partners", "a couple has exactly two partners");
        }
        let time_zone = match self.time_zone.as_deref() {
            None | Some("") => Some(default_zone),
            Some(name) => TimeZone::parse(name)
                .map_err(|e| errors.add("time_zone", e))
                .ok(),
        };
        let venue = self.venue.clone().unwrap_or_default().validate(&mut errors);
        let notes = optional_text(&mut errors, "notes", self.notes.as_deref(), 10_000);
        if !errors.is_empty() {
            return Err(errors);
        }
        match (<[Option<Partner>; 2]>::try_from(partners), time_zone) {
            (Ok([Some(a), Some(b)]), Some(time_zone)) => Ok(CoupleFields {
                partners: [a, b],
                wedding_date: self.wedding_date,
                time_zone,
                venue,
                notes,
            }),
            _ => Err(ValidationErrors::single(
                "partners",
                "a couple has exactly two partners",
            )),
        }
    }
}

impl CoupleFields {
    /// The same fields as an input, so a partial update can be applied and re-validated.
    pub fn to_input(&self) -> CoupleInput {
        CoupleInput {
            partners: self
                .partners
                .iter()
                .map(|p| PartnerInput {
                    name: p.name.clone(),
                    email: p.email.clone(),
                    phone: p.phone.clone(),
                    preferred_channel: p.preferred_channel,
                })
                .collect(),
            wedding_date: self.wedding_date,
            time_zone: Some(self.time_zone.name().to_owned()),
            venue: Some(self.venue.clone()),
            notes: self.notes.clone(),
        }
    }
}

/// Whether moving a wedding from `old` to `new` needs explicit confirmation: it does when
/// either date is today or within `window_days` ahead, counted in the wedding's own zone.
/// Moving a wedding that is weeks away, or into a slot that is weeks away, is routine; moving
/// one that is close, or bringing one close, reshuffles suppliers and must be deliberate.
pub fn wedding_date_change_needs_confirmation(
    old: NaiveDate,
    new: NaiveDate,
    zone: TimeZone,
    now: DateTime<Utc>,
    window_days: i64,
) -> bool {
    if old == new {
        return false;
    }
    let today = now.with_timezone(&zone.tz()).date_naive();
    let close = |d: NaiveDate| (0..=window_days).contains(&(d - today).num_days());
    close(old) || close(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("valid date")
    }

    #[test]
    fn thirty_day_rule_table() {
        let london = TimeZone::parse("Europe/London").expect("zone");
        let now = Utc
            .with_ymd_and_hms(2026, 6, 1, 12, 0, 0)
            .single()
            .expect("valid");
        let cases = [
            // (old, new, needs confirmation)
            (date(2026, 6, 20), date(2026, 6, 27), true), // 19 days away
            (date(2026, 7, 1), date(2026, 8, 1), true),   // exactly 30 days away
            (date(2026, 7, 2), date(2026, 8, 1), false),  // 31 days away
            (date(2026, 9, 1), date(2026, 6, 15), true),  // pulled into the window
            (date(2026, 6, 1), date(2026, 6, 8), true),   // today
            (date(2026, 5, 1), date(2026, 9, 1), false),  // already past, moved far
            (date(2026, 6, 20), date(2026, 6, 20), false), // not a change
        ];
        for (old, new, expected) in cases {
            assert_eq!(
                wedding_date_change_needs_confirmation(old, new, london, now, 30),
                expected,
                "{old} -> {new}"
            );
        }
    }

    #[test]
    fn thirty_day_rule_counts_days_in_the_weddings_zone() {
        // 22:30 UTC on 1 June is 23:30 in London but already 2 June in Sydney: a wedding on 2 July is then 30
        // days away there, but 31 days away in London.
        let now = Utc
            .with_ymd_and_hms(2026, 6, 1, 22, 30, 0)
            .single()
            .expect("valid");
        let sydney = TimeZone::parse("Australia/Sydney").expect("zone");
        let london = TimeZone::parse("Europe/London").expect("zone");
        let (old, new) = (date(2026, 7, 2), date(2026, 12, 1));
        assert!(wedding_date_change_needs_confirmation(
            old, new, sydney, now, 30
        ));
        assert!(!wedding_date_change_needs_confirmation(
            old, new, london, now, 30
        ));
    }

    proptest::proptest! {
        /// Whatever the zone and the hour, the rule is exactly: a real change, with either
        /// date between today and today + window in the wedding's zone.
        #[test]
        fn thirty_day_rule_matches_its_definition(
            now_secs in 1_700_000_000i64..1_900_000_000,
            old_offset in -60i64..120,
            new_offset in -60i64..120,
            window in 0i64..60,
            zone in proptest::sample::select(vec!["Europe/London", "America/New_York", "Australia/Sydney", "Pacific/Kiritimati", "Pacific/Pago_Pago"]),
        ) {
            let zone = TimeZone::parse(zone).expect("zone");
            let now = DateTime::from_timestamp(now_secs, 0).expect("instant");
            let today = now.with_timezone(&zone.tz()).date_naive();
            let old = today + chrono::Duration::days(old_offset);
            let new = today + chrono::Duration::days(new_offset);
            let within = |o: i64| (0..=window).contains(&o);
            let expected = old != new && (within(old_offset) || within(new_offset));
            proptest::prop_assert_eq!(wedding_date_change_needs_confirmation(old, new, zone, now, window), expected);
        }
    }

    #[test]
    fn couple_validation_names_fields() {
        let input: CoupleInput = serde_json::from_value(serde_json::json!({
            "partners": [
                {"name": "Ana", "email": "not-an-email"},
                {"name": "", "preferred_channel": "sms"}
            ],
            "wedding_date": "2027-06-12",
            "time_zone": "Europe/Nowhere",
            "venue": {"latitude": 51.5}
        }))
        .expect("shape");
        let london = TimeZone::parse("Europe/London").expect("zone");
        let err = input.validate(london).expect_err("invalid");
        let fields: Vec<_> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "partners[0].email",
                "partners[1].name",
                "partners[1].preferred_channel",
                "time_zone",
                "venue"
            ]
        );
    }

    #[test]
    fn phones_normalise_to_e164() {
        let mut e = ValidationErrors::default();
        assert_eq!(
            parse_phone(&mut e, "p", "+44 7700 900-123").as_deref(),
            Some("+447700900123")
        );
        assert!(parse_phone(&mut e, "p", "07700 900123").is_none());
        assert!(parse_phone(&mut e, "p", "+1").is_none());
    }
}

/// A couple as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Couple {
    /// `cpl_…`.
    pub id: crate::id::CoupleId,
    /// The two partners.
    pub partners: Vec<Partner>,
    /// The wedding day in `time_zone`.
    #[schema(value_type = String, format = Date, example = "2027-06-12")]
    pub wedding_date: NaiveDate,
    /// The wedding's IANA time zone.
    pub time_zone: String,
    /// The venue.
    pub venue: Venue,
    /// Notes.
    pub notes: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

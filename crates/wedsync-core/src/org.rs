//! Organisations (vendor businesses), their tiers, team roles, time zones, countries and
//! currencies.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::validate::ValidationErrors;

/// A subscription tier; quotas and limits follow it (product-rules.md).
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
pub enum Tier {
    /// No payment; SMS not available.
    Free,
    /// Small studios.
    Starter,
    /// Established vendors.
    Professional,
    /// Multi-team businesses.
    Scale,
    /// Venues groups and planners at volume.
    Enterprise,
}

/// A team role, from least to most powerful. Ordering matters: `Role::Editor >= Role::Viewer`.
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
pub enum Role {
    /// Reads everything in the organisation, changes nothing.
    Viewer,
    /// Creates and changes couples, bookings and (later) journeys.
    Editor,
    /// Also manages members, API keys and integrations.
    Admin,
    /// Also changes the organisation itself and other owners.
    Owner,
}

macro_rules! string_enum {
    ($ty:ty, $what:literal, [$($variant:ident => $text:literal),+ $(,)?]) => {
        impl $ty {
            /// The stable lowercase name stored and shown in the API.
            pub fn as_str(&self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }

            /// Every value, in order.
            pub const ALL: &'static [$ty] = &[$(Self::$variant),+];
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $ty {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    other => Err(format!(
                        "`{other}` is not a {}; expected one of {}",
                        $what,
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}
pub(crate) use string_enum;

string_enum!(Tier, "tier", [Free => "free", Starter => "starter", Professional => "professional", Scale => "scale", Enterprise => "enterprise"]);
string_enum!(Role, "role", [Viewer => "viewer", Editor => "editor", Admin => "admin", Owner => "owner"]);

/// An IANA time zone name, checked against the tz database compiled into the binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimeZone(chrono_tz::Tz);

impl TimeZone {
    /// Parses an IANA name such as `Europe/London`.
    pub fn parse(name: &str) -> Result<Self, String> {
        name.parse::<chrono_tz::Tz>()
            .map(Self)
            .map_err(|_| format!("`{name}` is not an IANA time zone such as Europe/London"))
    }

    /// The chrono-tz zone, for conversions.
    pub fn tz(&self) -> chrono_tz::Tz {
        self.0
    }

    /// The IANA name.
    pub fn name(&self) -> &'static str {
        self.0.name()
    }
}

impl Serialize for TimeZone {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl fmt::Display for TimeZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// ISO 3166-1 alpha-2 codes in use.
const COUNTRIES: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

/// Active ISO 4217 currency codes.
const CURRENCIES: &str = "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG";

/// An ISO 3166-1 alpha-2 country code, uppercase.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Country(String);

impl Country {
    /// Parses a code such as `GB`; lowercase input is accepted and normalised.
    pub fn parse(code: &str) -> Result<Self, String> {
        let upper = code.trim().to_ascii_uppercase();
        if upper.len() == 2 && COUNTRIES.split(' ').any(|c| c == upper) {
            Ok(Self(upper))
        } else {
            Err(format!(
                "`{code}` is not an ISO 3166-1 alpha-2 country code such as GB"
            ))
        }
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An ISO 4217 currency code, uppercase.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Currency(String);

impl Currency {
    /// Parses a code such as `GBP`; lowercase input is accepted and normalised.
    pub fn parse(code: &str) -> Result<Self, String> {
        let upper = code.trim().to_ascii_uppercase();
        if upper.len() == 3 && CURRENCIES.split(' ').any(|c| c == upper) {
            Ok(Self(upper))
        } else {
            Err(format!(
                "`{code}` is not an ISO 4217 currency code such as GBP"
            ))
        }
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The validated fields of an organisation, as created or after an update.
#[derive(Debug, Clone, PartialEq)]
pub struct OrgSettings {
    /// The business name shown to couples.
    pub name: String,
    /// The zone the wedding-day window and quiet hours are computed in.
    pub time_zone: TimeZone,
    /// The subscription tier.
    pub tier: Tier,
    /// Where the business is registered (drives VAT rules later).
    pub country: Country,
    /// The currency bookings default to and reports are totalled in.
    pub currency: Currency,
}

impl OrgSettings {
    /// Validates raw input, collecting every failure.
    pub fn parse(
        name: &str,
        time_zone: &str,
        tier: &str,
        country: &str,
        currency: &str,
    ) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let name = crate::validate::text(&mut errors, "name", name, 200);
        let time_zone = TimeZone::parse(time_zone)
            .map_err(|e| errors.add("time_zone", e))
            .ok();
        let tier = tier.parse::<Tier>().map_err(|e| errors.add("tier", e)).ok();
        let country = Country::parse(country)
            .map_err(|e| errors.add("country", e))
            .ok();
        let currency = Currency::parse(currency)
            .map_err(|e| errors.add("currency", e))
            .ok();
        match (name, time_zone, tier, country, currency) {
            (Some(name), Some(time_zone), Some(tier), Some(country), Some(currency))
                if errors.is_empty() =>
            {
                Ok(Self {
                    name,
                    time_zone,
                    tier,
                    country,
                    currency,
                })
            }
            _ => Err(errors),
        }
    }
}

/// Checks an email address the way a mail server would accept it: one `@`, a non-empty local
/// part, a domain with a dot and no spaces. Deliverability is for the mail provider to judge.
pub fn parse_email(errors: &mut ValidationErrors, field: &str, value: &str) -> Option<String> {
    let value = value.trim();
    let valid = value.len() <= 254
        && !value.chars().any(char::is_whitespace)
        && match value.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            }
            None => false,
        };
    if valid {
        Some(value.to_owned())
    } else {
        errors.add(field, "must be an email address such as ana@example.com");
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn org_settings_collect_every_error() {
        let err =
            OrgSettings::parse(" ", "Mars/Olympus", "gold", "XX", "POUNDS").expect_err("invalid");
        let fields: Vec<_> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["name", "time_zone", "tier", "country", "currency"]);
    }

    #[test]
    fn org_settings_normalise_codes() {
        let s = OrgSettings::parse("Lens & Lace", "Europe/London", "starter", "gb", "gbp")
            .expect("valid");
        assert_eq!(s.country.as_str(), "GB");
        assert_eq!(s.currency.as_str(), "GBP");
        assert_eq!(s.time_zone.name(), "Europe/London");
    }

    #[test]
    fn roles_are_ordered_by_power() {
        assert!(
            Role::Owner > Role::Admin && Role::Admin > Role::Editor && Role::Editor > Role::Viewer
        );
    }

    #[test]
    fn emails() {
        for ok in ["a@b.co", "ana.smith+wed@example.org"] {
            assert!(
                parse_email(&mut ValidationErrors::default(), "e", ok).is_some(),
                "{ok}"
            );
        }
        for bad in [
            "", "a", "a@b", "@b.co", "a@@b.co", "a b@c.co", "a@.co", "a@co.",
        ] {
            assert!(
                parse_email(&mut ValidationErrors::default(), "e", bad).is_none(),
                "{bad}"
            );
        }
    }
}

/// An organisation as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Organization {
    /// `org_…`.
    pub id: crate::id::OrgId,
    /// Business name.
    pub name: String,
    /// IANA time zone.
    pub time_zone: String,
    /// Subscription tier.
    pub tier: Tier,
    /// ISO 3166-1 alpha-2 country.
    pub country: String,
    /// ISO 4217 currency.
    pub currency: String,
    /// When it was created.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// When it last changed.
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// A team member as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Member {
    /// `mem_…`.
    pub id: crate::id::MemberId,
    /// Sign-in email, unique within the organisation.
    pub email: String,
    /// Display name.
    pub name: String,
    /// What they may do.
    pub role: Role,
    /// When they were added.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// When they last changed.
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// An API key's metadata; the secret itself is shown once, at creation, and never again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiKeyInfo {
    /// `key_…`.
    pub id: crate::id::ApiKeyId,
    /// What the key is for, e.g. "Zapier".
    pub name: String,
    /// The role every request with this key acts with.
    pub role: Role,
    /// The first characters of the key, to tell keys apart.
    pub prefix: String,
    /// Who created it.
    pub created_by: String,
    /// When it was created.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// When it was last used (updated at most once a minute).
    pub last_used_at: Option<chrono::DateTime<chrono::Utc>>,
    /// When it was revoked; a revoked key authenticates nothing.
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

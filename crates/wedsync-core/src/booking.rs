//! Bookings: a couple engaging the organisation for a service over a time range, with a
//! status and an exact value.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::org::{Currency, string_enum};
use crate::validate::{ValidationErrors, optional_text, text};

/// Where a booking stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BookingStatus {
    /// The couple asked; nothing is held.
    Inquiry,
    /// The slot is held pending contract or deposit.
    Tentative,
    /// Contracted; the slot is the couple's.
    Confirmed,
    /// The service was delivered.
    Completed,
    /// Called off; kept for history.
    Cancelled,
}
string_enum!(BookingStatus, "booking status", [Inquiry => "inquiry", Tentative => "tentative", Confirmed => "confirmed", Completed => "completed", Cancelled => "cancelled"]);

/// An exact amount of money: minor units (pence, cents) and an ISO 4217 currency. Never a float.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Money {
    /// The amount in the currency's minor unit, e.g. 250000 for £2,500.00.
    pub amount_minor: i64,
    /// ISO 4217 code, e.g. `GBP`.
    pub currency: String,
}

/// The day a booking starting at `starts_at` starts on, in the couple's time zone: the
/// `booking_date` that journeys about a booking can wait for.
pub fn local_date(starts_at: DateTime<Utc>, zone: chrono_tz::Tz) -> chrono::NaiveDate {
    starts_at.with_timezone(&zone).date_naive()
}

/// A booking as a client sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BookingInput {
    /// The couple this booking is for (`cpl_…`).
    pub couple_id: String,
    /// The service, e.g. "Full-day photography".
    pub service: String,
    /// When the service starts (RFC 3339).
    pub starts_at: DateTime<Utc>,
    /// When the service ends (RFC 3339); after `starts_at`.
    pub ends_at: DateTime<Utc>,
    /// Defaults to `inquiry`.
    #[serde(default)]
    pub status: Option<BookingStatus>,
    /// The agreed value; the currency defaults to the organisation's.
    pub value: Money,
    /// Free-text notes.
    #[serde(default)]
    pub notes: Option<String>,
}

/// The validated, stored fields of a booking (the couple is checked by the store).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BookingFields {
    /// The service.
    pub service: String,
    /// Start instant.
    pub starts_at: DateTime<Utc>,
    /// End instant.
    pub ends_at: DateTime<Utc>,
    /// Status.
    pub status: BookingStatus,
    /// Value in minor units.
    pub amount_minor: i64,
    /// Value currency.
    pub currency: Currency,
    /// Notes.
    pub notes: Option<String>,
}

impl BookingInput {
    /// Validates everything but the couple reference.
    pub fn validate(&self) -> Result<BookingFields, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let service = text(&mut errors, "service", &self.service, 200);
        if self.ends_at <= self.starts_at {
            errors.add("ends_at", "must be after starts_at");
        }
        if self.value.amount_minor < 0 {
            errors.add("value.amount_minor", "must not be negative");
        }
        let currency = Currency::parse(&self.value.currency)
            .map_err(|e| errors.add("value.currency", e))
            .ok();
        let notes = optional_text(&mut errors, "notes", self.notes.as_deref(), 10_000);
        match (service, currency) {
            (Some(service), Some(currency)) if errors.is_empty() => Ok(BookingFields {
                service,
                starts_at: self.starts_at,
                ends_at: self.ends_at,
                status: self.status.unwrap_or(BookingStatus::Inquiry),
                amount_minor: self.value.amount_minor,
                currency,
                notes,
            }),
            _ => Err(errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booking_validation() {
        let input: BookingInput = serde_json::from_value(serde_json::json!({
            "couple_id": "cpl_x",
            "service": "Photography",
            "starts_at": "2027-06-12T10:00:00Z",
            "ends_at": "2027-06-12T09:00:00Z",
            "value": {"amount_minor": -1, "currency": "ZZZ"}
        }))
        .expect("shape");
        let err = input.validate().expect_err("invalid");
        let fields: Vec<_> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["ends_at", "value.amount_minor", "value.currency"]);
    }
}

/// A booking as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Booking {
    /// `bkg_…`.
    pub id: crate::id::BookingId,
    /// The couple (`cpl_…`).
    pub couple_id: crate::id::CoupleId,
    /// The service.
    pub service: String,
    /// Start instant.
    pub starts_at: DateTime<Utc>,
    /// End instant.
    pub ends_at: DateTime<Utc>,
    /// Status.
    pub status: BookingStatus,
    /// The agreed value.
    pub value: Money,
    /// Notes.
    pub notes: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

//! Typed, prefixed identifiers.
//!
//! Every id is a UUIDv7 (so ids sort by creation time) rendered as lowercase hex after a
//! short prefix naming what it identifies: `org_0193…`. The prefix makes a pasted id
//! self-describing and lets the API reject an id of the wrong kind before touching the store.
//!
//! Ids made in one process are strictly increasing, even within one millisecond (and with a
//! stopped test clock): the random part after the timestamp is a counter seeded per
//! millisecond ([`uuid::ContextV7`]). Cursor paging and outbox order rely on this. Across
//! nodes, ids are ordered to the millisecond.

use std::fmt;
use std::str::FromStr;

/// The error for a string that is not an id of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid {kind} id (expected `{prefix}` followed by 32 hex digits)")]
pub struct InvalidId {
    /// What kind of id was expected, e.g. `organisation`.
    pub kind: &'static str,
    /// The prefix that was expected, e.g. `org_`.
    pub prefix: &'static str,
}

/// One counter for the whole process, so ids of every kind are monotonic.
static ID_CONTEXT: std::sync::Mutex<uuid::ContextV7> =
    std::sync::Mutex::new(uuid::ContextV7::new());

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(uuid::Uuid);

        impl $name {
            /// The prefix every id of this kind starts with.
            pub const PREFIX: &'static str = $prefix;

            /// A new id whose time component is the given instant, so ids follow the
            /// injected clock rather than the system one.
            pub fn new_at(at: chrono::DateTime<chrono::Utc>) -> Self {
                let millis = u64::try_from(at.timestamp_millis()).unwrap_or(0);
                let context = ID_CONTEXT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let ts = uuid::Timestamp::from_unix(
                    &*context,
                    millis / 1000,
                    ((millis % 1000) * 1_000_000) as u32,
                );
                Self(uuid::Uuid::new_v7(ts))
            }

            /// The underlying UUID.
            pub fn uuid(&self) -> uuid::Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", $prefix, self.0.simple())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let err = InvalidId { kind: $kind, prefix: $prefix };
                let hex = s.strip_prefix($prefix).ok_or(err.clone())?;
                if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                    return Err(err);
                }
                uuid::Uuid::try_parse(hex).map(Self).map_err(|_| err)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .pattern(Some(concat!("^", $prefix, "[0-9a-f]{32}$")))
                    .description(Some(concat!("A ", $kind, " id.")))
                    .examples([concat!($prefix, "019a8f5e2b7c7d3e8a1b2c3d4e5f6a7b")])
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

typed_id!(
    /// Identifies an organisation (one vendor business).
    OrgId, "org_", "organisation"
);
typed_id!(
    /// Identifies a member of an organisation's team.
    MemberId, "mem_", "member"
);
typed_id!(
    /// Identifies an API key (not the secret itself).
    ApiKeyId, "key_", "api key"
);
typed_id!(
    /// Identifies a couple.
    CoupleId, "cpl_", "couple"
);
typed_id!(
    /// Identifies a booking.
    BookingId, "bkg_", "booking"
);
typed_id!(
    /// Identifies a domain event in the outbox.
    EventId, "evt_", "event"
);
typed_id!(
    /// Identifies an inbound source.
    SourceId, "src_", "source"
);
typed_id!(
    /// Identifies a received inbound request.
    RequestId, "req_", "inbound request"
);
typed_id!(
    /// Identifies a job in the durable queue.
    JobId, "job_", "job"
);
typed_id!(
    /// Identifies an audit log entry.
    AuditId, "aud_", "audit entry"
);
typed_id!(
    /// Identifies an outbound webhook endpoint.
    EndpointId, "ep_", "endpoint"
);
typed_id!(
    /// Identifies an outbound message (one event, sent to every matching endpoint).
    MessageId, "msg_", "message"
);
typed_id!(
    /// Identifies the delivery of one message to one endpoint.
    DeliveryId, "dlv_", "delivery"
);
typed_id!(
    /// Identifies one delivery attempt.
    AttemptId, "att_", "attempt"
);
typed_id!(
    /// Identifies a notification (one message to one recipient on one channel).
    NotificationId, "ntf_", "notification"
);
typed_id!(
    /// Identifies an entry in a notification's history.
    NotificationEventId, "nev_", "notification event"
);
typed_id!(
    /// Identifies a notification provider configured by an organisation.
    ProviderId, "npr_", "notification provider"
);
typed_id!(
    /// Identifies a notification template.
    TemplateId, "tpl_", "template"
);
typed_id!(
    /// Identifies an alert (fanned out to the organisation's alert channels).
    AlertId, "alr_", "alert"
);
typed_id!(
    /// Identifies a journey (an automation, with its draft and published versions).
    JourneyId, "jny_", "journey"
);
typed_id!(
    /// Identifies a running journey for one couple (an instance).
    JourneyInstanceId, "jin_", "journey instance"
);
typed_id!(
    /// Identifies one entry in an instance's history.
    JourneyStepId, "jst_", "journey step"
);
typed_id!(
    /// Identifies an organisation's connection to a CRM (its credentials).
    CrmConnectionId, "crm_", "crm connection"
);

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    #[test]
    fn ids_round_trip_and_reject_other_kinds() {
        let at = Utc
            .with_ymd_and_hms(2026, 6, 13, 14, 0, 0)
            .single()
            .expect("valid");
        let id = OrgId::new_at(at);
        let text = id.to_string();
        assert!(text.starts_with("org_"));
        assert_eq!(text.len(), 36);
        assert_eq!(text.parse::<OrgId>(), Ok(id));
        assert!(text.replace("org_", "cpl_").parse::<OrgId>().is_err());
        assert!("org_XYZ".parse::<OrgId>().is_err());
        assert!(text.to_uppercase().parse::<OrgId>().is_err());
    }

    #[test]
    fn ids_made_at_the_same_instant_still_sort_in_creation_order() {
        let at = Utc
            .with_ymd_and_hms(2026, 6, 13, 14, 0, 0)
            .single()
            .expect("valid");
        let ids: Vec<String> = (0..1000)
            .map(|_| CoupleId::new_at(at).to_string())
            .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }

    #[test]
    fn ids_sort_by_creation_time() {
        let early = Utc
            .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .expect("valid");
        let late = Utc
            .with_ymd_and_hms(2026, 1, 1, 0, 0, 1)
            .single()
            .expect("valid");
        let a = CoupleId::new_at(early).to_string();
        let b = CoupleId::new_at(late).to_string();
        assert!(a < b);
    }
}

//! The typed node configurations of a journey: one struct or enum per node `type`, deserialized
//! strictly from the node's `data` (unknown keys are errors).

use chrono::NaiveTime;
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The output handle of a `payment` node taken when the payment arrives.
pub const HANDLE_PAID: &str = "paid";
/// The output handle taken when a `payment` or `wait` `until_event` node times out.
pub const HANDLE_TIMEOUT: &str = "timeout";
/// The output handle of a `wait` `until_event` node taken when the event arrives.
pub const HANDLE_EVENT: &str = "event";
/// The couple's wedding date, the usual anchor of date-relative triggers and waits.
pub const WEDDING_DATE: &str = "wedding_date";
/// The day a booking starts, in the couple's time zone: an anchor for journeys whose subject
/// is a booking.
pub const BOOKING_DATE: &str = "booking_date";
/// The dates that date-relative triggers and waits can refer to: every journey has the
/// couple's `wedding_date`; a journey about a booking also has its `booking_date`. Any other
/// name is refused when the journey is saved.
pub const DATE_FIELDS: [&str; 2] = [WEDDING_DATE, BOOKING_DATE];

/// What one instance of a journey is about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    /// A couple: one instance per couple and trigger key.
    #[default]
    Couple,
    /// One of a couple's bookings: one instance per booking and trigger key, started only by
    /// what names a booking (its events, a manual start naming it, its `booking_date`).
    Booking,
}

impl Subject {
    /// Whether this is the default, couple subject.
    pub fn is_couple(&self) -> bool {
        *self == Self::Couple
    }

    /// The date fields a journey about this subject can refer to.
    pub fn date_fields(self) -> &'static [&'static str] {
        match self {
            Self::Couple => &DATE_FIELDS[..1],
            Self::Booking => &DATE_FIELDS,
        }
    }
}

/// A node's position on the canvas, in React Flow's coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Position {
    /// Horizontal position.
    pub x: f64,
    /// Vertical position.
    pub y: f64,
}

/// The canvas viewport the editor last showed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Viewport {
    /// Horizontal pan.
    pub x: f64,
    /// Vertical pan.
    pub y: f64,
    /// Zoom factor, greater than zero.
    pub zoom: f64,
}

impl Default for Viewport {
    fn default() -> Self {
        Self {
            x: 0.0,
            y: 0.0,
            zoom: 1.0,
        }
    }
}

/// What a node does, tagged by the React Flow node `type`, with its typed `data`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum NodeKind {
    /// Starts the journey; exactly one per journey.
    Trigger(TriggerNode),
    /// A task for the vendor to do and mark done; the journey waits for it.
    VendorAction(VendorAction),
    /// Something the couple does; the journey waits for it.
    ClientAction(ClientAction),
    /// Branches on MiniJinja conditions.
    Decision(Decision),
    /// Sends an email.
    Email(Email),
    /// Sends a text message.
    Sms(Sms),
    /// Sends a notification on one of the notify channels.
    Notification(Notification),
    /// Requests a payment, branching on `paid` / `timeout`.
    Payment(Payment),
    /// Emits an outbound webhook event.
    Webhook(Webhook),
    /// Creates a task in the vendor's task list (does not wait for it).
    Task(Task),
    /// Writes fields to a connected CRM.
    CrmUpdate(CrmUpdate),
    /// Pauses for a duration, until a date, or until an event.
    Wait(Wait),
    /// Ends the journey.
    End(End),
}

/// Every node `type` name, in the order of [`NodeKind`].
pub const NODE_TYPES: [&str; 13] = [
    "trigger",
    "vendor_action",
    "client_action",
    "decision",
    "email",
    "sms",
    "notification",
    "payment",
    "webhook",
    "task",
    "crm_update",
    "wait",
    "end",
];

/// The outputs a node offers to its outgoing edges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outputs<'a> {
    /// No outgoing edge is allowed (`end`).
    Terminal,
    /// One unnamed output: at most one outgoing edge, without a `sourceHandle`.
    Single,
    /// Named outputs; each edge names one via `sourceHandle` (or `label` when it has no handle).
    Branches(Vec<&'a str>),
}

impl NodeKind {
    /// The React Flow node `type` of this kind.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Trigger(_) => "trigger",
            Self::VendorAction(_) => "vendor_action",
            Self::ClientAction(_) => "client_action",
            Self::Decision(_) => "decision",
            Self::Email(_) => "email",
            Self::Sms(_) => "sms",
            Self::Notification(_) => "notification",
            Self::Payment(_) => "payment",
            Self::Webhook(_) => "webhook",
            Self::Task(_) => "task",
            Self::CrmUpdate(_) => "crm_update",
            Self::Wait(_) => "wait",
            Self::End(_) => "end",
        }
    }

    /// Whether the node blocks on time or on a person (`wait`, `client_action`,
    /// `vendor_action`): a cycle must pass through at least one such node.
    pub fn is_blocking(&self) -> bool {
        matches!(
            self,
            Self::Wait(_) | Self::ClientAction(_) | Self::VendorAction(_)
        )
    }

    /// The outputs this node offers. Decision labels come in condition order, then the default.
    pub fn outputs(&self) -> Outputs<'_> {
        match self {
            Self::End(_) => Outputs::Terminal,
            Self::Decision(d) => Outputs::Branches(
                d.conditions
                    .iter()
                    .map(|c| c.label.as_str())
                    .chain(std::iter::once(d.default_label.as_str()))
                    .collect(),
            ),
            Self::Payment(p) if p.timeout_days.is_some() => {
                Outputs::Branches(vec![HANDLE_PAID, HANDLE_TIMEOUT])
            }
            Self::Payment(_) => Outputs::Branches(vec![HANDLE_PAID]),
            Self::Wait(Wait::UntilEvent { .. }) => {
                Outputs::Branches(vec![HANDLE_EVENT, HANDLE_TIMEOUT])
            }
            _ => Outputs::Single,
        }
    }
}

/// The `data` of a `trigger` node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerNode {
    /// What starts the journey.
    pub trigger: Trigger,
    /// What each instance is about: a couple (the default) or one of its bookings.
    #[serde(default, skip_serializing_if = "Subject::is_couple")]
    pub subject: Subject,
}

/// What starts a journey, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Trigger {
    /// A normalized event, e.g. `payment.completed`.
    Event {
        /// Dot-separated lowercase event type.
        event_type: String,
        /// Optional JSON filter the event must match.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filter: Option<Map<String, Value>>,
    },
    /// A form submission, of one form or of any.
    FormSubmission {
        /// The form, or any form when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        form_id: Option<String>,
    },
    /// Any payment received.
    PaymentReceived {},
    /// A date of the couple's, shifted by whole days, at a couple-local wall time.
    DateReached {
        /// The date field, `wedding_date` or another date field name.
        date: String,
        /// Days after (positive) or before (negative) the date.
        offset_days: i32,
        /// Couple-local wall time, `HH:MM`.
        #[serde(with = "hh_mm")]
        at: NaiveTime,
    },
    /// A fixed delay after the journey is attached to a couple.
    TimeDelay {
        /// Seconds to wait.
        after_seconds: u64,
    },
    /// Started by hand.
    Manual {},
    /// A five-field cron schedule.
    Cron {
        /// `minute hour day-of-month month day-of-week`.
        expression: String,
        /// IANA time zone; the couple's when absent.
        #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_tz")]
        time_zone: Option<Tz>,
    },
}

/// The `data` of a `vendor_action` node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VendorAction {
    /// What the vendor has to do.
    pub title: String,
    /// Who on the vendor's team, when it matters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
}

/// The `data` of a `client_action` node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientAction {
    /// What the couple has to do.
    pub title: String,
    /// The form they fill in, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub form_id: Option<String>,
    /// Whether both partners must do it before the journey goes on.
    #[serde(default)]
    pub both_partners: bool,
}

/// The `data` of a `decision` node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// Conditions tried in order; the first true one picks its label.
    pub conditions: Vec<Condition>,
    /// The label taken when no condition is true.
    pub default_label: String,
}

/// One branch of a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// The output label; an outgoing edge's `sourceHandle` (or `label`).
    pub label: String,
    /// A MiniJinja expression evaluated against `{event, couple, booking, journey}`.
    pub when: String,
}

/// Who a message goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recipient {
    /// The first partner.
    PartnerA,
    /// The second partner.
    PartnerB,
    /// Both partners.
    BothPartners,
    /// The vendor.
    Vendor,
}

/// The `data` of an `email` node: `to` plus either `template` or inline `subject`/`text`/`html`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawEmail", into = "RawEmail")]
pub struct Email {
    /// Who receives it.
    pub to: Recipient,
    /// A stored template or inline content.
    pub content: EmailContent,
}

/// An email's content.
#[derive(Debug, Clone, PartialEq)]
pub enum EmailContent {
    /// A stored template, by name.
    Template {
        /// The template name.
        name: String,
    },
    /// Inline MiniJinja sources.
    Inline {
        /// Subject line template.
        subject: String,
        /// Plain-text body template.
        text: String,
        /// Optional HTML body template.
        html: Option<String>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmail {
    to: Recipient,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    html: Option<String>,
}

impl TryFrom<RawEmail> for Email {
    type Error = String;

    fn try_from(raw: RawEmail) -> Result<Self, String> {
        let to = raw.to;
        let content = match raw {
            RawEmail {
                template: Some(name),
                subject: None,
                text: None,
                html: None,
                ..
            } => EmailContent::Template { name },
            RawEmail {
                template: Some(_), ..
            } => {
                return Err(
                    "give either `template` or inline `subject`/`text`/`html`, not both".into(),
                );
            }
            RawEmail { text: None, .. } => {
                return Err("needs either `template` or inline `subject` and `text`".into());
            }
            RawEmail { subject: None, .. } => {
                return Err("an inline email needs a `subject`".into());
            }
            RawEmail {
                subject: Some(subject),
                text: Some(text),
                html,
                ..
            } => EmailContent::Inline {
                subject,
                text,
                html,
            },
        };
        Ok(Self { to, content })
    }
}

impl From<Email> for RawEmail {
    fn from(email: Email) -> Self {
        let mut raw = RawEmail {
            to: email.to,
            template: None,
            subject: None,
            text: None,
            html: None,
        };
        match email.content {
            EmailContent::Template { name } => raw.template = Some(name),
            EmailContent::Inline {
                subject,
                text,
                html,
            } => {
                raw.subject = Some(subject);
                raw.text = Some(text);
                raw.html = html;
            }
        }
        raw
    }
}

/// A message body: a stored template or inline MiniJinja text.
#[derive(Debug, Clone, PartialEq)]
pub enum MessageBody {
    /// A stored template, by name.
    Template {
        /// The template name.
        name: String,
    },
    /// Inline MiniJinja text.
    Text {
        /// The template source.
        text: String,
    },
}

impl MessageBody {
    fn from_parts(template: Option<String>, text: Option<String>) -> Result<Self, String> {
        match (template, text) {
            (Some(name), None) => Ok(Self::Template { name }),
            (None, Some(text)) => Ok(Self::Text { text }),
            (Some(_), Some(_)) => Err("give either `template` or `text`, not both".into()),
            (None, None) => Err("needs either `template` or `text`".into()),
        }
    }

    fn into_parts(self) -> (Option<String>, Option<String>) {
        match self {
            Self::Template { name } => (Some(name), None),
            Self::Text { text } => (None, Some(text)),
        }
    }
}

/// The `data` of an `sms` node: `to` plus either `template` or inline `text`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawSms", into = "RawSms")]
pub struct Sms {
    /// Who receives it.
    pub to: Recipient,
    /// A stored template or inline text.
    pub body: MessageBody,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSms {
    to: Recipient,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
}

impl TryFrom<RawSms> for Sms {
    type Error = String;

    fn try_from(raw: RawSms) -> Result<Self, String> {
        Ok(Self {
            to: raw.to,
            body: MessageBody::from_parts(raw.template, raw.text)?,
        })
    }
}

impl From<Sms> for RawSms {
    fn from(sms: Sms) -> Self {
        let (template, text) = sms.body.into_parts();
        Self {
            to: sms.to,
            template,
            text,
        }
    }
}

/// A notification channel: the same channels notifications go through.
pub use wedsync_core::notify::NotifyChannel as Channel;

/// The `data` of a `notification` node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawNotification", into = "RawNotification")]
pub struct Notification {
    /// The channel to send on.
    pub channel: Channel,
    /// A stored template or inline text.
    pub body: MessageBody,
    /// A channel-specific recipient; the channel's default when absent.
    pub to: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotification {
    channel: Channel,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to: Option<String>,
}

impl TryFrom<RawNotification> for Notification {
    type Error = String;

    fn try_from(raw: RawNotification) -> Result<Self, String> {
        Ok(Self {
            channel: raw.channel,
            body: MessageBody::from_parts(raw.template, raw.text)?,
            to: raw.to,
        })
    }
}

impl From<Notification> for RawNotification {
    fn from(n: Notification) -> Self {
        let (template, text) = n.body.into_parts();
        Self {
            channel: n.channel,
            template,
            text,
            to: n.to,
        }
    }
}

/// The `data` of a `payment` node: a payment request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payment {
    /// Amount in the currency's minor unit, greater than zero.
    pub amount_minor: u64,
    /// ISO 4217 code, three uppercase letters.
    pub currency: String,
    /// Shown to the couple.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Days before the `timeout` output is taken; never when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_days: Option<u32>,
}

/// The `data` of a `webhook` node: an outbound event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// Dot-separated lowercase event type.
    pub event_type: String,
    /// Extra payload fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Map<String, Value>>,
}

/// The `data` of a `task` node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    /// What to do.
    pub title: String,
    /// Due this many days after the task is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_offset_days: Option<i32>,
    /// Who on the vendor's team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
}

/// A CRM that a `crm_update` node writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CrmSystem {
    /// HubSpot.
    Hubspot,
    /// Táve.
    Tave,
    /// Salesforce.
    Salesforce,
}

/// The `data` of a `crm_update` node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrmUpdate {
    /// The CRM.
    pub system: CrmSystem,
    /// Fields to write; not empty. A string value is a MiniJinja template over the step's
    /// data (`{{ couple.wedding_date }}`, `{{ booking.service }}`…); other values are
    /// written as they are.
    pub fields: Map<String, Value>,
    /// Whose contact records: `partner_a`, `partner_b` or `both_partners` (the default).
    #[serde(default = "both_partners")]
    pub contacts: Recipient,
}

fn both_partners() -> Recipient {
    Recipient::BothPartners
}

/// What a `wait` node does when its computed instant is already past.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IfPassed {
    /// Go on at once.
    RunNow,
    /// Stop the instance here: the steps after the wait are not run.
    Skip,
}

/// The `data` of a `wait` node, tagged by `mode`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum Wait {
    /// A fixed duration.
    Duration {
        /// Seconds, greater than zero.
        seconds: u64,
    },
    /// Until a couple date shifted by whole days, at a couple-local wall time.
    UntilDate {
        /// The date field, `wedding_date` or another date field name.
        date: String,
        /// Days after (positive) or before (negative) the date.
        offset_days: i32,
        /// Couple-local wall time, `HH:MM`.
        #[serde(with = "hh_mm")]
        at: NaiveTime,
        /// What to do when the instant is already past (e.g. the wedding date moved).
        if_passed: IfPassed,
    },
    /// Until an event arrives, or a timeout; outputs `event` and `timeout`.
    UntilEvent {
        /// Dot-separated lowercase event type.
        event_type: String,
        /// Optional JSON filter the event must match.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filter: Option<Map<String, Value>>,
        /// Seconds before the `timeout` output is taken, greater than zero.
        timeout_seconds: u64,
    },
}

/// The `data` of an `end` node: nothing.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct End {}

/// `HH:MM` wall times.
mod hh_mm {
    use chrono::{NaiveTime, Timelike};
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(time: &NaiveTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{:02}:{:02}", time.hour(), time.minute()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveTime, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = text.as_bytes();
        let well_formed = bytes.len() == 5
            && bytes[2] == b':'
            && bytes
                .iter()
                .enumerate()
                .all(|(i, b)| i == 2 || b.is_ascii_digit());
        let parsed = well_formed
            .then(|| NaiveTime::parse_from_str(&text, "%H:%M").ok())
            .flatten();
        parsed
            .ok_or_else(|| D::Error::custom(format!("time `{text}` must be HH:MM, 00:00 to 23:59")))
    }
}

/// Optional IANA time zones as their names.
mod opt_tz {
    use chrono_tz::Tz;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    // Serde's `with` hands the field by reference, so the signature must take `&Option`.
    #[allow(clippy::ref_option)]
    pub fn serialize<S: Serializer>(zone: &Option<Tz>, s: S) -> Result<S::Ok, S::Error> {
        match zone {
            Some(zone) => s.serialize_some(zone.name()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Tz>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|name| {
                name.parse::<Tz>()
                    .map_err(|_| D::Error::custom(format!("unknown IANA time zone `{name}`")))
            })
            .transpose()
    }
}

//! Twilio status callbacks: form posts with `MessageSid`, `MessageStatus` (`queued`,
//! `sent`, `delivered`, `undelivered`, `failed`, `read`), `ErrorCode`, `To`, `From`,
//! `AccountSid`. None is a canonical event: each becomes `twilio.raw` with the fields as
//! `data` and the message id as `subject`, and the hub's notification tracking reads it.
//!
//! The dedupe key is `twilio:{MessageSid}:{MessageStatus}`: Twilio sends one callback
//! per status change and retries each, and signs no delivery id.

use crate::common::{body_hash_key, form_to_json, is_form, parse_json, provider_key, str_at};
use crate::{Canonical, Input, NormalizeError, Normalized, Provider};

pub(crate) fn normalize(input: &Input<'_>) -> Result<Normalized, NormalizeError> {
    let data = if is_form(input.content_type) {
        form_to_json(input.body)
    } else {
        parse_json(Provider::Twilio, input.body)?
    };
    let sid = str_at(&data, "MessageSid").or_else(|| str_at(&data, "SmsSid"));
    let status = str_at(&data, "MessageStatus").or_else(|| str_at(&data, "SmsStatus"));
    let dedupe_key = match (sid, status) {
        (Some(sid), Some(status)) => provider_key(Provider::Twilio, &format!("{sid}:{status}")),
        _ => body_hash_key(input.body),
    };
    Ok(Normalized {
        dedupe_key,
        events: vec![Canonical {
            event_type: Provider::Twilio.raw_event_type(),
            subject: sid.map(str::to_owned),
            time: input.received_at,
            data: data.clone(),
            couple_ref: None,
            booking_ref: None,
        }],
    })
}

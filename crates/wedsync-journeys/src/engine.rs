//! The durable engine's step runner: the `journey.step` job runs the node an instance is at,
//! exactly once in effect, and moves the instance on.
//!
//! Exactly once: a job names the instance and its step number; the instance moves on only
//! if it is still at that step (a conditional update in the same transaction that records
//! the step and enqueues the next job), and every effect carries the step-scoped key
//! `journey:<instance>:<step>[:<n>]`, which the notification and message stores honour, so a
//! step rerun after a crash finds its effect instead of repeating it.
//!
//! Runs every node. `crm_update` writes the partners' contacts to the organisation's CRM
//! connection ([`crate::crm`], HubSpot or Salesforce) when the handler has an HTTP client for it
//! ([`step_handler_with`]); without a connection the instance stops as `blocked`, saying
//! so. Waits for events (`wait` until an event, `payment` after its
//! request, a `client_action` form) are resumed by the store when a matching event for the
//! couple arrives, or time out through their job; a person's step (`vendor_action`, a
//! `client_action` without a form) waits until someone completes it.

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use wedsync_core::notify::NotifyChannel;
use wedsync_store::Store;

use wedsync_store::group_commit::GroupCommit;
use wedsync_store::journeys::{Advance, STEP_KEY_WINDOW_DAYS, StepRecord, StepWork, step_priority};
use wedsync_store::notify::{NotificationInput, Recipient as To};
use wedsync_store::queue::Job;
use wedsync_store::worker::{JobError, JobHandler};

use crate::model::{
    BOOKING_DATE, EmailContent, HANDLE_EVENT, HANDLE_PAID, HANDLE_TIMEOUT, IfPassed, MessageBody,
    NodeKind, Recipient, WEDDING_DATE, Wait,
};
use crate::{JourneyDocument, date_relative_instant};

fn transient(e: impl std::fmt::Display) -> JobError {
    JobError::transient(e.to_string())
}

/// Published versions already parsed, by `(journey, version)`: a version never changes once
/// published, so an entry never goes stale. Bounded; cleared when full.
#[derive(Default)]
struct Documents(std::sync::Mutex<HashMap<(String, i32), Arc<JourneyDocument>>>);

const CACHED_VERSIONS: usize = 1024;

impl Documents {
    async fn get(&self, store: &Store, work: &StepWork) -> Result<Arc<JourneyDocument>, JobError> {
        let key = (work.instance.journey_id.to_string(), work.instance.version);
        if let Some(doc) = self.0.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(doc);
        }
        let version = store
            .journey_version(
                &work.org_id,
                &work.instance.journey_id,
                work.instance.version,
            )
            .await
            .map_err(transient)?;
        let doc = Arc::new(JourneyDocument::parse(&version.document).map_err(|e| {
            JobError::Permanent(format!("the published document does not parse: {e}"))
        })?);
        if let Ok(mut map) = self.0.lock() {
            if map.len() >= CACHED_VERSIONS {
                map.clear();
            }
            map.insert(key, doc.clone());
        }
        Ok(doc)
    }
}

/// What steps reach outside the hub with, besides the store.
#[derive(Debug, Clone, Default)]
pub struct Effects {
    /// Writes `crm_update` steps to CRMs; without it they stop as blocked.
    pub crm: Option<crate::crm::CrmWriter>,
}

/// The handler for `journey.step` jobs, with no CRM writer ([`step_handler_with`]).
pub fn step_handler(store: Store) -> impl JobHandler {
    step_handler_with(store, Effects::default())
}

/// The handler for `journey.step` jobs. Call it inside the Tokio runtime: it starts the
/// tasks that commit steps. Concurrent steps share transactions (group commit): each step
/// is told it moved only after the transaction holding its advance has committed.
pub fn step_handler_with(store: Store, effects: Effects) -> impl JobHandler {
    let committers = if store.backend() == wedsync_store::Backend::Postgres {
        4
    } else {
        1
    };
    let committing = store.clone();
    // Should a shared transaction fail, each of its advances is committed again alone, so
    // one step that cannot be written fails only its own job, not its batch-mates'.
    let advances = GroupCommit::spawn(
        committers,
        256,
        "journey_steps",
        move |batch: Vec<(wedsync_core::id::OrgId, String, Advance)>| {
            let store = committing.clone();
            async move {
                let retry = (batch.len() > 1).then(|| batch.clone());
                match (store.advance_instances(batch).await, retry) {
                    (Ok(moved), _) => Ok(moved.into_iter().map(Ok).collect()),
                    (Err(error), None) => Ok(vec![Err(error.to_string())]),
                    (Err(_), Some(batch)) => {
                        let mut each = Vec::with_capacity(batch.len());
                        for one in batch {
                            each.push(
                                store
                                    .advance_instances(vec![one])
                                    .await
                                    .map(|moved| moved.first().copied().unwrap_or(false))
                                    .map_err(|e| e.to_string()),
                            );
                        }
                        Ok(each)
                    }
                }
            }
        },
    );
    let documents = Arc::new(Documents::default());
    let effects = Arc::new(effects);
    move |job: Job| {
        let store = store.clone();
        let advances = advances.clone();
        let documents = documents.clone();
        let effects = effects.clone();
        async move {
            let (Some(instance), Some(seq)) = (
                job.payload.get("instance_id").and_then(Value::as_str),
                job.payload
                    .get("seq")
                    .and_then(Value::as_i64)
                    .and_then(|s| i32::try_from(s).ok()),
            ) else {
                return Err(JobError::Permanent("malformed journey step job".into()));
            };
            let Some(work) = store.step_work(instance, seq).await.map_err(transient)? else {
                return Ok(()); // moved on, cancelled or gone: this job is stale
            };
            let now = store.clock().now();
            if work.instance.status == "waiting"
                && let Some(due) = work.instance.due_at
                && due > now
            {
                return Err(JobError::Deferred {
                    until: due,
                    reason: "the wait is not over".into(),
                });
            }
            let doc = documents.get(&store, &work).await?;
            let mut advance = run_step(&store, &effects, &work, &doc, now).await?;
            advance.priority = step_priority(
                work.couple.wedding_date,
                &work.couple.time_zone,
                advance.run_at.unwrap_or(now),
            );
            let moved = advances
                .submit((work.org_id, instance.to_owned(), advance))
                .await
                .map_err(JobError::transient)?
                .map_err(JobError::transient)?;
            if moved {
                metrics::counter!("wedsync_journey_steps_total").increment(1);
            }
            Ok(())
        }
    }
}

fn record(
    seq: i32,
    node: &str,
    kind: &str,
    now: DateTime<Utc>,
    outcome: &str,
    detail: String,
    output: Option<Value>,
) -> StepRecord {
    StepRecord {
        seq,
        node_id: node.to_owned(),
        node_type: kind.to_owned(),
        at: now,
        outcome: outcome.to_owned(),
        detail,
        output,
    }
}

fn stop(
    seq: i32,
    node: &str,
    kind: &str,
    now: DateTime<Utc>,
    status: &str,
    reason: String,
) -> Advance {
    Advance {
        seq,
        record: record(seq, node, kind, now, status, reason.clone(), None),
        next_node: node.to_owned(),
        status: status.to_owned(),
        wait: None,
        run_at: None,
        reason: Some(reason),
        priority: 0,
    }
}

fn go_on(
    seq: i32,
    node: &str,
    kind: &str,
    now: DateTime<Utc>,
    next: Option<&str>,
    detail: String,
    output: Option<Value>,
) -> Advance {
    match next {
        Some(next) => Advance {
            seq,
            record: record(seq, node, kind, now, "done", detail, output),
            next_node: next.to_owned(),
            status: "running".into(),
            wait: None,
            run_at: Some(now),
            reason: None,
            priority: 0,
        },
        None => Advance {
            seq,
            record: record(
                seq,
                node,
                kind,
                now,
                "done",
                format!("{detail}; no next step"),
                output,
            ),
            next_node: node.to_owned(),
            status: "blocked".into(),
            wait: None,
            run_at: None,
            reason: Some(format!("node {node} has no next step")),
            priority: 0,
        },
    }
}

/// The couple's partners a message goes to: `(index, name, email, phone)`.
fn partners(work: &StepWork, to: Recipient) -> Vec<(usize, To)> {
    let p = &work.couple.partners;
    let pick: Vec<usize> = match to {
        Recipient::PartnerA => vec![0],
        Recipient::PartnerB => vec![1],
        Recipient::BothPartners => vec![0, 1],
        Recipient::Vendor => vec![],
    };
    pick.into_iter()
        .filter_map(|i| {
            p.get(i).map(|partner| {
                (
                    i,
                    To {
                        id: Some(format!("{}:partner{}", work.couple.id, i)),
                        name: Some(partner.name.clone()),
                        email: partner.email.clone(),
                        phone: partner.phone.clone(),
                        time_zone: Some(work.couple.time_zone.clone()),
                        push: None,
                    },
                )
            })
        })
        .collect()
}

async fn send(
    store: &Store,
    work: &StepWork,
    seq: i32,
    n: usize,
    input: NotificationInput,
) -> Result<String, JobError> {
    let key = format!("journey:{}:{seq}:{n}", work.instance.id);
    let (created, _) = store
        .create_notification(
            &work.org_id,
            input,
            Some(&key),
            TimeDelta::days(STEP_KEY_WINDOW_DAYS),
        )
        .await
        .map_err(|e| match e {
            wedsync_store::StoreError::Invalid(v) => JobError::Permanent(v.to_string()),
            other => transient(other),
        })?;
    Ok(created.id.to_string())
}

fn data_for(work: &StepWork) -> Value {
    let mut data = json!({
        "journey": { "id": work.instance.journey_id, "instance": work.instance.id, "version": work.instance.version },
        "event": work.context,
    });
    if let Some(b) = &work.booking {
        data["booking"] = booking_json(work, b);
    }
    data
}

/// A booking as templates and conditions see it: its fields, plus `booking_date` (the day
/// it starts, couple-local).
fn booking_json(work: &StepWork, booking: &wedsync_core::booking::Booking) -> Value {
    let mut value = serde_json::to_value(booking).unwrap_or(Value::Null);
    if let Ok(zone) = wedsync_core::org::TimeZone::parse(&work.couple.time_zone) {
        value[BOOKING_DATE] = json!(wedsync_core::booking::local_date(
            booking.starts_at,
            zone.tz()
        ));
    }
    value
}

async fn run_step(
    store: &Store,
    effects: &Effects,
    work: &StepWork,
    doc: &JourneyDocument,
    now: DateTime<Utc>,
) -> Result<Advance, JobError> {
    let inst = &work.instance;
    let seq = inst.step_seq;
    let Some(node) = doc.node(&inst.current_node) else {
        return Ok(stop(
            seq,
            &inst.current_node,
            "-",
            now,
            "blocked",
            format!(
                "node {} is not in version {}",
                inst.current_node, inst.version
            ),
        ));
    };
    let id = node.id.as_str();
    let kind = node.kind.type_name();
    // A wait whose time has come: continue after it (a wait for an event that reaches its
    // time has timed out).
    if inst.status == "waiting" {
        let timed_out = matches!(
            node.kind,
            NodeKind::Wait(Wait::UntilEvent { .. }) | NodeKind::Payment(_)
        );
        let (handle, detail) = if timed_out {
            (Some(HANDLE_TIMEOUT), "timed out waiting")
        } else if matches!(node.kind, NodeKind::Trigger(_)) {
            (None, "the trigger's time has come")
        } else {
            (None, "the wait is over")
        };
        return Ok(go_on(
            seq,
            id,
            kind,
            now,
            doc.next(id, handle),
            detail.into(),
            None,
        ));
    }
    Ok(match &node.kind {
        NodeKind::Trigger(_) => {
            // The instance's first history row: a start writes none of its own.
            let mut advance = go_on(
                seq,
                id,
                kind,
                now,
                doc.next(id, None),
                format!("started on version {} ({})", inst.version, inst.trigger_key),
                None,
            );
            advance.record.outcome = "started".into();
            advance
        }
        NodeKind::Email(e) => {
            let (subject, text, html, template) = match &e.content {
                EmailContent::Template { name } => (None, None, None, Some(name.clone())),
                EmailContent::Inline {
                    subject,
                    text,
                    html,
                } => (
                    Some(subject.clone()),
                    Some(text.clone()),
                    html.clone(),
                    None,
                ),
            };
            let mut sent = Vec::new();
            for (i, to) in partners(work, e.to) {
                if to.email.is_none() {
                    continue;
                }
                let input = NotificationInput {
                    channel: Some(NotifyChannel::Email),
                    to,
                    template: template.clone(),
                    subject: subject.clone(),
                    text: text.clone(),
                    html: html.clone(),
                    data: Some(data_for(work)),
                    couple_id: Some(work.couple.id),
                    ..Default::default()
                };
                sent.push(send(store, work, seq, i, input).await?);
            }
            let detail = format!("email to {} recipient(s)", sent.len());
            go_on(
                seq,
                id,
                kind,
                now,
                doc.next(id, None),
                detail,
                Some(json!({ "notifications": sent })),
            )
        }
        NodeKind::Sms(s) => {
            let (template, text) = match &s.body {
                MessageBody::Template { name } => (Some(name.clone()), None),
                MessageBody::Text { text } => (None, Some(text.clone())),
            };
            let mut sent = Vec::new();
            for (i, to) in partners(work, s.to) {
                if to.phone.is_none() {
                    continue;
                }
                let input = NotificationInput {
                    channel: Some(NotifyChannel::Sms),
                    to,
                    template: template.clone(),
                    text: text.clone(),
                    data: Some(data_for(work)),
                    couple_id: Some(work.couple.id),
                    ..Default::default()
                };
                sent.push(send(store, work, seq, i, input).await?);
            }
            let detail = format!("SMS to {} recipient(s)", sent.len());
            go_on(
                seq,
                id,
                kind,
                now,
                doc.next(id, None),
                detail,
                Some(json!({ "notifications": sent })),
            )
        }
        NodeKind::Notification(n) => {
            let (template, text) = match &n.body {
                MessageBody::Template { name } => (Some(name.clone()), None),
                MessageBody::Text { text } => (None, Some(text.clone())),
            };
            let to = if n.channel.is_personal() {
                To {
                    id: Some(
                        n.to.clone()
                            .unwrap_or_else(|| format!("{}:couple", work.couple.id)),
                    ),
                    ..Default::default()
                }
            } else {
                To::default()
            };
            let input = NotificationInput {
                channel: Some(n.channel),
                to,
                template,
                text,
                data: Some(data_for(work)),
                couple_id: Some(work.couple.id),
                ..Default::default()
            };
            let sent = send(store, work, seq, 0, input).await?;
            go_on(
                seq,
                id,
                kind,
                now,
                doc.next(id, None),
                format!("{} notification", n.channel),
                Some(json!({ "notifications": [sent] })),
            )
        }
        NodeKind::Webhook(w) => {
            let mut data =
                json!({ "couple_id": work.couple.id, "journey": data_for(work)["journey"] });
            if let (Some(extra), Some(obj)) = (&w.data, data.as_object_mut()) {
                for (k, v) in extra {
                    obj.insert(k.clone(), v.clone());
                }
            }
            let key = format!("journey:{}:{seq}:0", inst.id);
            let (message, _) = store
                .create_message(
                    &work.org_id,
                    wedsync_store::webhooks::MessageInput {
                        event_type: w.event_type.clone(),
                        data,
                    },
                    Some(&key),
                    TimeDelta::days(STEP_KEY_WINDOW_DAYS),
                    None,
                )
                .await
                .map_err(transient)?;
            go_on(
                seq,
                id,
                kind,
                now,
                doc.next(id, None),
                format!("webhook {}", w.event_type),
                Some(json!({ "message": message.id })),
            )
        }
        NodeKind::Decision(d) => {
            let couple = serde_json::to_value(&work.couple).unwrap_or(Value::Null);
            let booking = work
                .booking
                .as_ref()
                .map_or(Value::Null, |b| booking_json(work, b));
            let ctx = minijinja::Value::from(minijinja::value::Serde(json!({
                "event": work.context, "couple": couple, "booking": booking,
                "journey": { "now": now },
            })));
            let mut env = minijinja::Environment::new();
            env.set_fuel(Some(10_000));
            let mut label = None;
            for c in &d.conditions {
                match env
                    .compile_expression(&c.when)
                    .and_then(|e| e.eval(ctx.clone()))
                {
                    Ok(v) if v.is_true() => {
                        label = Some(c.label.clone());
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        return Ok(stop(
                            seq,
                            id,
                            kind,
                            now,
                            "blocked",
                            format!("condition `{}` failed: {e}", c.when),
                        ));
                    }
                }
            }
            let label = label.unwrap_or_else(|| d.default_label.clone());
            go_on(
                seq,
                id,
                kind,
                now,
                doc.next(id, Some(&label)),
                format!("decided: {label}"),
                Some(json!({ "label": label })),
            )
        }
        NodeKind::Wait(Wait::Duration { seconds }) => {
            let due = now + TimeDelta::seconds(i64::try_from(*seconds).unwrap_or(i64::MAX / 1000));
            waiting(
                seq,
                id,
                now,
                due,
                json!({ "mode": "duration", "seconds": seconds }),
            )
        }
        NodeKind::Wait(Wait::UntilDate {
            date,
            offset_days,
            at,
            if_passed,
        }) => {
            let zone = wedsync_core::org::TimeZone::parse(&work.couple.time_zone)
                .map_err(|e| JobError::Permanent(e.to_string()))?;
            let day = match (date.as_str(), &work.booking) {
                (WEDDING_DATE, _) => work.couple.wedding_date,
                (BOOKING_DATE, Some(b)) => {
                    wedsync_core::booking::local_date(b.starts_at, zone.tz())
                }
                _ => {
                    return Ok(stop(
                        seq,
                        id,
                        kind,
                        now,
                        "blocked",
                        format!("waits on `{date}`, which this instance does not have"),
                    ));
                }
            };
            let instant = date_relative_instant(day, *offset_days, *at, zone.tz());
            let rule = json!({
                "mode": "until_date", "date": date, "offset_days": offset_days,
                "at": at.format("%H:%M").to_string(),
                "if_passed": if *if_passed == IfPassed::Skip { "skip" } else { "run_now" },
            });
            if instant > now {
                waiting(seq, id, now, instant, rule)
            } else if *if_passed == IfPassed::Skip {
                stop(
                    seq,
                    id,
                    kind,
                    now,
                    "skipped",
                    format!(
                        "{date} {offset_days:+} days had already passed ({}); its policy is skip",
                        instant.to_rfc3339()
                    ),
                )
            } else {
                go_on(
                    seq,
                    id,
                    kind,
                    now,
                    doc.next(id, None),
                    format!(
                        "{date} {offset_days:+} days had already passed ({}): runs now",
                        instant.to_rfc3339()
                    ),
                    None,
                )
            }
        }
        NodeKind::End(_) => Advance {
            seq,
            record: record(
                seq,
                id,
                kind,
                now,
                "completed",
                "the journey ends".into(),
                None,
            ),
            next_node: id.to_owned(),
            status: "completed".into(),
            wait: None,
            run_at: None,
            reason: None,
            priority: 0,
        },
        NodeKind::Wait(Wait::UntilEvent {
            event_type,
            filter,
            timeout_seconds,
        }) => {
            let due = now
                + TimeDelta::seconds(i64::try_from(*timeout_seconds).unwrap_or(i64::MAX / 1000));
            let rule = json!({
                "mode": "until_event", "event_type": event_type, "filter": filter,
                "on_event": doc.next(id, Some(HANDLE_EVENT)),
            });
            waiting_for(
                seq,
                id,
                kind,
                now,
                Some(due),
                rule,
                format!("waits for {event_type} until {}", due.to_rfc3339()),
            )
        }
        NodeKind::Payment(p) => {
            // The request goes out as a `payment.requested` webhook event, for whatever takes
            // payments (a Stripe checkout link, the CRM); then the journey waits for
            // `payment.completed`.
            let key = format!("journey:{}:{seq}:0", inst.id);
            let data = json!({
                "couple_id": work.couple.id, "amount_minor": p.amount_minor, "currency": p.currency,
                "description": p.description, "journey": data_for(work)["journey"],
            });
            let (message, _) = store
                .create_message(
                    &work.org_id,
                    wedsync_store::webhooks::MessageInput {
                        event_type: "payment.requested".into(),
                        data,
                    },
                    Some(&key),
                    TimeDelta::days(STEP_KEY_WINDOW_DAYS),
                    None,
                )
                .await
                .map_err(transient)?;
            let due = p.timeout_days.map(|d| now + TimeDelta::days(i64::from(d)));
            let rule = json!({
                "mode": "until_event", "event_type": "payment.completed", "filter": null,
                "on_event": doc.next(id, Some(HANDLE_PAID)), "request": message.id,
            });
            waiting_for(
                seq,
                id,
                kind,
                now,
                due,
                rule,
                format!(
                    "requested {}.{:02} {} and waits for payment.completed",
                    p.amount_minor / 100,
                    p.amount_minor % 100,
                    p.currency
                ),
            )
        }
        NodeKind::ClientAction(c) => match &c.form_id {
            Some(form) => {
                let rule = json!({
                    "mode": "until_event", "event_type": "form.submitted", "filter": { "form_id": form },
                    "needed": if c.both_partners { 2 } else { 1 }, "seen": [],
                    "on_event": doc.next(id, None),
                });
                let who = if c.both_partners {
                    "both partners"
                } else {
                    "the couple"
                };
                waiting_for(
                    seq,
                    id,
                    kind,
                    now,
                    None,
                    rule,
                    format!("waits for {who} to submit form `{form}`"),
                )
            }
            None => waiting_for(
                seq,
                id,
                kind,
                now,
                None,
                json!({ "mode": "person", "on_event": doc.next(id, None) }),
                format!(
                    "waits for the couple to \"{}\" (complete the step to go on)",
                    c.title
                ),
            ),
        },
        NodeKind::VendorAction(v) => waiting_for(
            seq,
            id,
            kind,
            now,
            None,
            json!({ "mode": "person", "on_event": doc.next(id, None) }),
            format!(
                "waits for the vendor to \"{}\" (complete the step to go on)",
                v.title
            ),
        ),
        NodeKind::Task(t) => {
            // Until a task list exists, a task is an in-app message to the vendor's team.
            let due = t
                .due_offset_days
                .map(|d| format!(" (due {d:+} days from the wedding)"))
                .unwrap_or_default();
            let input = NotificationInput {
                channel: Some(NotifyChannel::InApp),
                to: To {
                    id: Some(t.assignee.clone().unwrap_or_else(|| "team".into())),
                    ..Default::default()
                },
                subject: Some(format!("Task: {}", t.title)),
                text: Some(format!("{}{due}", t.title)),
                data: Some(data_for(work)),
                couple_id: Some(work.couple.id),
                ..Default::default()
            };
            let sent = send(store, work, seq, 0, input).await?;
            go_on(
                seq,
                id,
                kind,
                now,
                doc.next(id, None),
                format!("task \"{}\" sent to the team's inbox", t.title),
                Some(json!({ "notifications": [sent] })),
            )
        }
        NodeKind::CrmUpdate(c) => {
            let written = crm_update(store, effects, work, c, now).await?;
            match written {
                Ok(output) => go_on(
                    seq,
                    id,
                    kind,
                    now,
                    doc.next(id, None),
                    format!(
                        "{} contact(s) written to {}",
                        output["contacts"].as_array().map_or(0, Vec::len),
                        output["crm"].as_str().unwrap_or("the CRM")
                    ),
                    Some(output),
                ),
                Err(reason) => stop(seq, id, kind, now, "blocked", reason),
            }
        }
    })
}

/// Runs a `crm_update` step: renders its fields over the step's data and writes them to
/// each chosen partner's contact. `Ok(Err(reason))` stops the instance as blocked; a
/// retryable failure is the job's error.
async fn crm_update(
    store: &Store,
    effects: &Effects,
    work: &StepWork,
    node: &crate::model::CrmUpdate,
    now: DateTime<Utc>,
) -> Result<Result<Value, String>, JobError> {
    use crate::crm::CrmFailure;
    let system = match node.system {
        crate::model::CrmSystem::Hubspot => "hubspot",
        crate::model::CrmSystem::Salesforce => "salesforce",
        crate::model::CrmSystem::Tave => {
            return Ok(Err("WedSync cannot write to Táve yet".into()));
        }
    };
    let Some(writer) = &effects.crm else {
        return Ok(Err("this node has no HTTP client for CRM updates".into()));
    };
    let Some(creds) = store
        .crm_credentials(&work.org_id, system)
        .await
        .map_err(transient)?
    else {
        return Ok(Err(format!(
            "the organisation has no {system} connection: add one at /v1/crm-connections, then retry the step"
        )));
    };
    // The same data templates see, with the couple.
    let mut data = data_for(work);
    data["couple"] = serde_json::to_value(&work.couple).unwrap_or(Value::Null);
    let ctx = minijinja::Value::from(minijinja::value::Serde(&data));
    let env = {
        let mut env = minijinja::Environment::new();
        env.set_fuel(Some(100_000));
        env
    };
    let mut properties = serde_json::Map::new();
    for (key, value) in &node.fields {
        let rendered = match value {
            Value::String(source) => match env.render_str(source, ctx.clone()) {
                Ok(text) => Value::String(text),
                Err(e) => return Ok(Err(format!("field `{key}` does not render: {e}"))),
            },
            other => other.clone(),
        };
        properties.insert(key.clone(), rendered);
    }
    let mut written = Vec::new();
    let mut skipped = Vec::new();
    for (i, partner) in partners(work, node.contacts) {
        let Some(email) = partner.email.as_deref() else {
            skipped.push(json!({ "partner": i, "why": "no email address" }));
            continue;
        };
        let name = partner.name.as_deref().unwrap_or_default();
        let upsert = if system == "salesforce" {
            writer
                .salesforce_upsert(&creds, email, name, &properties, now)
                .await
        } else {
            writer
                .hubspot_upsert(&creds, email, name, &properties, now)
                .await
        };
        match upsert {
            Ok(contact) => written.push(json!({ "partner": i, "id": contact })),
            Err(CrmFailure::Retry(why)) => return Err(JobError::transient(why)),
            Err(CrmFailure::RetryAt(until, reason)) => {
                return Err(JobError::Deferred { until, reason });
            }
            Err(CrmFailure::Refused(why)) => return Ok(Err(why)),
        }
    }
    Ok(Ok(json!({
        "crm": system, "connection": creds.connection.id,
        "contacts": written, "skipped": skipped,
    })))
}

fn waiting_for(
    seq: i32,
    node: &str,
    kind: &str,
    now: DateTime<Utc>,
    due: Option<DateTime<Utc>>,
    rule: Value,
    detail: String,
) -> Advance {
    Advance {
        seq,
        // The rule lives on the instance while it waits; the history says it in words.
        record: record(seq, node, kind, now, "waiting", detail, None),
        next_node: node.to_owned(),
        status: "waiting".into(),
        wait: Some(rule),
        run_at: due,
        reason: None,
        priority: 0,
    }
}

fn waiting(seq: i32, node: &str, now: DateTime<Utc>, due: DateTime<Utc>, rule: Value) -> Advance {
    Advance {
        seq,
        record: record(
            seq,
            node,
            "wait",
            now,
            "waiting",
            format!("waits until {}", due.to_rfc3339()),
            None,
        ),
        next_node: node.to_owned(),
        status: "waiting".into(),
        wait: Some(rule),
        run_at: Some(due),
        reason: None,
        priority: 0,
    }
}

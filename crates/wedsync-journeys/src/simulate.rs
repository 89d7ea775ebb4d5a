//! Simulation: what a journey would do for a hypothetical couple, on a virtual clock, with
//! no side effects. Waits are computed exactly as the engine will compute them (dates in
//! the couple's zone, DST-correct), decisions evaluate their MiniJinja conditions against
//! the simulated event and couple, and waits for events take the first matching simulated
//! event. The result is a timeline a person can read.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::model::{
    EmailContent, HANDLE_EVENT, HANDLE_PAID, HANDLE_TIMEOUT, IfPassed, MessageBody, NodeKind,
    Trigger, WEDDING_DATE, Wait,
};
use crate::{JourneyDocument, MAX_STEPS_PER_INSTANCE, date_relative_instant};

/// An event that happens during the simulation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimEvent {
    /// The canonical event type, e.g. `payment.completed`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When it happens.
    pub at: DateTime<Utc>,
    /// Its data.
    #[serde(default)]
    pub data: Value,
}

/// The hypothetical couple and what happens around them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulationInput {
    /// The wedding date in the couple's zone.
    #[schema(value_type = String, format = Date)]
    pub wedding_date: NaiveDate,
    /// The couple's IANA time zone.
    #[schema(example = "Europe/London")]
    pub time_zone: String,
    /// Other dates waits may refer to, by field name (`booking_date` for a journey about a
    /// booking).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub dates: BTreeMap<String, NaiveDate>,
    /// Extra couple data conditions may read (`couple.budget_minor`…).
    #[serde(default)]
    pub couple: Map<String, Value>,
    /// For a journey about a booking: the booking data conditions may read
    /// (`booking.status`, `booking.service`…; `booking_date` comes from `dates`).
    #[serde(default)]
    pub booking: Map<String, Value>,
    /// When the journey is attached to the couple (the virtual clock's start).
    pub start_at: DateTime<Utc>,
    /// Events, in any order.
    #[serde(default)]
    pub events: Vec<SimEvent>,
    /// Stop simulating after this instant (default: start + 3 years).
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
}

/// One thing that would happen.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TimelineEntry {
    /// When (UTC).
    pub at: DateTime<Utc>,
    /// The same instant on the couple's wall clock, e.g. `Sat 18 Sep 2027 09:00 BST`.
    pub local: String,
    /// The node.
    pub node: String,
    /// The node type.
    pub kind: String,
    /// What happens, for people.
    pub what: String,
}

/// A simulated run.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Timeline {
    /// What would happen, in order.
    pub entries: Vec<TimelineEntry>,
    /// How the run ends: `ended`, `waiting`, `not_started`, `skipped`, `stuck`, `step_limit`.
    pub outcome: String,
    /// Why, for people.
    pub detail: String,
}

struct Run<'a> {
    input: &'a SimulationInput,
    zone: Tz,
    now: DateTime<Utc>,
    entries: Vec<TimelineEntry>,
    used: BTreeSet<usize>,
    event: Value,
}

impl Run<'_> {
    fn log(&mut self, node: &str, kind: &str, what: String) {
        self.entries.push(TimelineEntry {
            at: self.now,
            local: self
                .now
                .with_timezone(&self.zone)
                .format("%a %-d %b %Y %H:%M %Z")
                .to_string(),
            node: node.to_owned(),
            kind: kind.to_owned(),
            what,
        });
    }

    fn date(&self, field: &str) -> Option<NaiveDate> {
        if field == WEDDING_DATE {
            Some(self.input.wedding_date)
        } else {
            self.input.dates.get(field).copied()
        }
    }

    /// The first unused event of `event_type` at or after `from` (and not after `until`)
    /// matching `filter`; marks it used.
    fn take_event(
        &mut self,
        event_type: &str,
        filter: Option<&Map<String, Value>>,
        from: DateTime<Utc>,
        until: Option<DateTime<Utc>>,
    ) -> Option<SimEvent> {
        let mut order: Vec<usize> = (0..self.input.events.len()).collect();
        order.sort_by_key(|&i| self.input.events[i].at);
        let found = order.into_iter().find(|&i| {
            let e = &self.input.events[i];
            !self.used.contains(&i)
                && e.event_type == event_type
                && e.at >= from
                && until.is_none_or(|u| e.at <= u)
                && filter.is_none_or(|f| matches_filter(&e.data, f))
        })?;
        self.used.insert(found);
        let e = self.input.events[found].clone();
        self.event = json!({ "type": e.event_type, "time": e.at, "data": e.data });
        Some(e)
    }

    fn context(&self) -> Value {
        let mut couple = self.input.couple.clone();
        couple.insert(WEDDING_DATE.into(), json!(self.input.wedding_date));
        couple.insert("time_zone".into(), json!(self.zone.name()));
        let today = self.now.with_timezone(&self.zone).date_naive();
        couple.insert(
            "days_until_wedding".into(),
            json!((self.input.wedding_date - today).num_days()),
        );
        let mut booking = self.input.booking.clone();
        if let Some(day) = self.date(crate::model::BOOKING_DATE) {
            booking.insert(crate::model::BOOKING_DATE.into(), json!(day));
        }
        json!({
            "event": self.event, "couple": couple, "booking": booking, "journey": { "now": self.now },
        })
    }
}

/// Whether every `path: value` of the filter holds in `data` (paths are dot-separated).
fn matches_filter(data: &Value, filter: &Map<String, Value>) -> bool {
    filter.iter().all(|(path, expected)| {
        let mut at = data;
        for part in path.split('.') {
            match at.get(part) {
                Some(v) => at = v,
                None => return false,
            }
        }
        at == expected
    })
}

fn body_of(body: &MessageBody) -> String {
    match body {
        MessageBody::Template { name } => format!("template `{name}`"),
        MessageBody::Text { text } => format!("\"{}\"", clip(text, 60)),
    }
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

fn recipient(r: crate::model::Recipient) -> &'static str {
    use crate::model::Recipient as R;
    match r {
        R::PartnerA => "partner A",
        R::PartnerB => "partner B",
        R::BothPartners => "both partners",
        R::Vendor => "the vendor",
    }
}

fn duration_text(seconds: u64) -> String {
    let d = TimeDelta::seconds(i64::try_from(seconds).unwrap_or(i64::MAX));
    if d.num_days() >= 1 && d.num_seconds() % 86_400 == 0 {
        format!("{} days", d.num_days())
    } else if d.num_hours() >= 1 && d.num_seconds() % 3600 == 0 {
        format!("{} hours", d.num_hours())
    } else if d.num_minutes() >= 1 && d.num_seconds() % 60 == 0 {
        format!("{} minutes", d.num_minutes())
    } else {
        format!("{seconds} seconds")
    }
}

fn seconds(s: u64) -> TimeDelta {
    TimeDelta::seconds(i64::try_from(s).unwrap_or(i64::MAX / 1000))
}

fn finish(run: Run<'_>, outcome: &str, detail: String) -> Timeline {
    Timeline {
        entries: run.entries,
        outcome: outcome.to_owned(),
        detail,
    }
}

/// Simulates `doc` for the couple in `input`. The document should have passed
/// [`crate::validate`] in publish mode; anything it cannot follow ends the run as `stuck`.
pub fn simulate(
    doc: &JourneyDocument,
    input: &SimulationInput,
) -> Result<Timeline, wedsync_core::validate::ValidationErrors> {
    let zone: Tz = input.time_zone.parse().map_err(|_| {
        wedsync_core::validate::ValidationErrors::single("time_zone", "not an IANA time zone name")
    })?;
    Ok(run_simulation(doc, input, zone))
}

fn run_simulation(doc: &JourneyDocument, input: &SimulationInput, zone: Tz) -> Timeline {
    let horizon = input
        .until
        .unwrap_or(input.start_at + TimeDelta::days(3 * 366));
    let mut run = Run {
        input,
        zone,
        now: input.start_at,
        entries: Vec::new(),
        used: BTreeSet::new(),
        event: Value::Null,
    };
    let Some(trigger_node) = doc
        .nodes
        .iter()
        .find(|n| matches!(n.kind, NodeKind::Trigger(_)))
    else {
        return finish(run, "stuck", "the journey has no trigger".into());
    };
    let NodeKind::Trigger(t) = &trigger_node.kind else {
        return finish(run, "stuck", "the journey has no trigger".into());
    };
    let start = input.start_at;
    let started = match &t.trigger {
        Trigger::Event { event_type, filter } => run
            .take_event(event_type, filter.as_ref(), start, Some(horizon))
            .map(|e| (e.at, format!("started by {event_type}"))),
        Trigger::FormSubmission { form_id } => {
            let filter = form_id
                .as_ref()
                .map(|f| Map::from_iter([("form_id".to_owned(), json!(f))]));
            run.take_event("form.submitted", filter.as_ref(), start, Some(horizon))
                .map(|e| (e.at, "started by a form submission".to_owned()))
        }
        Trigger::PaymentReceived {} => run
            .take_event("payment.completed", None, start, Some(horizon))
            .map(|e| (e.at, "started by a payment".to_owned())),
        Trigger::DateReached {
            date,
            offset_days,
            at,
        } => match run.date(date) {
            None => return finish(run, "stuck", format!("the couple has no `{date}`")),
            Some(d) => {
                let instant = date_relative_instant(d, *offset_days, *at, zone);
                (instant >= start).then(|| {
                    (
                        instant,
                        format!(
                            "{date} {offset_days:+} days at {} reached",
                            at.format("%H:%M")
                        ),
                    )
                })
            }
        },
        Trigger::TimeDelay { after_seconds } => Some((
            start + seconds(*after_seconds),
            format!("{} after the start", duration_text(*after_seconds)),
        )),
        Trigger::Manual {} => Some((start, "started by hand".to_owned())),
        Trigger::Cron {
            expression,
            time_zone,
        } => crate::cron::parse_cron(expression)
            .ok()
            .and_then(|cron| crate::cron::next_tick(&cron, start, time_zone.unwrap_or(zone)))
            .filter(|tick| *tick <= horizon)
            .map(|tick| {
                (
                    tick,
                    format!(
                        "the schedule `{expression}` fires (its first tick; one instance per tick)"
                    ),
                )
            }),
    };
    let Some((at, what)) = started else {
        return finish(
            run,
            "not_started",
            "the trigger does not happen within the simulation".into(),
        );
    };
    run.now = at;
    run.log(&trigger_node.id, "trigger", what);
    let mut current = doc.next(&trigger_node.id, None).map(str::to_owned);
    for _ in 0..MAX_STEPS_PER_INSTANCE {
        let Some(id) = current.take() else {
            let last = run
                .entries
                .last()
                .map(|e| e.node.clone())
                .unwrap_or_default();
            return finish(run, "stuck", format!("node {last} has no next step"));
        };
        if run.now > horizon {
            return finish(
                run,
                "waiting",
                format!("still waiting at node {id} at the end of the simulation"),
            );
        }
        let Some(node) = doc.node(&id) else {
            return finish(
                run,
                "stuck",
                format!("an edge leads to a missing node {id}"),
            );
        };
        let kind = node.kind.type_name();
        let mut handle: Option<String> = None;
        match &node.kind {
            NodeKind::Trigger(_) => {
                return finish(run, "stuck", format!("node {id} is a second trigger"));
            }
            NodeKind::Email(e) => {
                let content = match &e.content {
                    EmailContent::Template { name } => format!("template `{name}`"),
                    EmailContent::Inline { subject, .. } => format!("\"{}\"", clip(subject, 60)),
                };
                run.log(
                    &id,
                    kind,
                    format!("sends an email to {}: {content}", recipient(e.to)),
                );
            }
            NodeKind::Sms(s) => {
                run.log(
                    &id,
                    kind,
                    format!("sends an SMS to {}: {}", recipient(s.to), body_of(&s.body)),
                );
            }
            NodeKind::Notification(n) => {
                run.log(
                    &id,
                    kind,
                    format!("sends a {} notification: {}", n.channel, body_of(&n.body)),
                );
            }
            NodeKind::Webhook(w) => {
                run.log(
                    &id,
                    kind,
                    format!("sends the webhook event {}", w.event_type),
                );
            }
            NodeKind::Task(t) => {
                let due = t
                    .due_offset_days
                    .map(|d| format!(", due {d:+} days"))
                    .unwrap_or_default();
                run.log(
                    &id,
                    kind,
                    format!("creates the task \"{}\"{due}", clip(&t.title, 60)),
                );
            }
            NodeKind::CrmUpdate(c) => {
                let fields: Vec<&String> = c.fields.keys().collect();
                run.log(
                    &id,
                    kind,
                    format!("updates {:?} in the CRM: {fields:?}", c.system),
                );
            }
            NodeKind::VendorAction(v) => {
                run.log(
                    &id,
                    kind,
                    format!(
                        "asks the vendor to \"{}\" (assumed done at once)",
                        clip(&v.title, 60)
                    ),
                );
            }
            NodeKind::ClientAction(c) => {
                let who = if c.both_partners {
                    "both partners"
                } else {
                    "the couple"
                };
                match &c.form_id {
                    Some(form) => {
                        run.log(&id, kind, format!("asks {who} to fill in form `{form}`"));
                        let filter = Map::from_iter([("form_id".to_owned(), json!(form))]);
                        let from = run.now;
                        let mut done = 0;
                        let needed = if c.both_partners { 2 } else { 1 };
                        while done < needed {
                            match run.take_event(
                                "form.submitted",
                                Some(&filter),
                                from,
                                Some(horizon),
                            ) {
                                Some(e) => {
                                    run.now = run.now.max(e.at);
                                    done += 1;
                                }
                                None => {
                                    return finish(
                                        run,
                                        "waiting",
                                        format!(
                                            "node {id} waits for {who} to submit form `{form}`"
                                        ),
                                    );
                                }
                            }
                        }
                        run.log(&id, kind, format!("{who} submitted form `{form}`"));
                    }
                    None => run.log(
                        &id,
                        kind,
                        format!(
                            "asks {who} to \"{}\" (assumed done at once)",
                            clip(&c.title, 60)
                        ),
                    ),
                }
            }
            NodeKind::Decision(d) => {
                let ctx = minijinja::Value::from(minijinja::value::Serde(run.context()));
                let env = minijinja::Environment::new();
                let mut chosen = None;
                for c in &d.conditions {
                    match env
                        .compile_expression(&c.when)
                        .and_then(|e| e.eval(ctx.clone()))
                    {
                        Ok(v) if v.is_true() => {
                            chosen = Some(c.label.clone());
                            break;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            return finish(
                                run,
                                "stuck",
                                format!("node {id}: condition `{}` failed: {e}", c.when),
                            );
                        }
                    }
                }
                let label = chosen.unwrap_or_else(|| d.default_label.clone());
                run.log(&id, kind, format!("decides: {label}"));
                handle = Some(label);
            }
            NodeKind::Payment(p) => {
                run.log(
                    &id,
                    kind,
                    format!(
                        "requests a payment of {}.{:02} {}",
                        p.amount_minor / 100,
                        p.amount_minor % 100,
                        p.currency
                    ),
                );
                let deadline = p
                    .timeout_days
                    .map(|d| run.now + TimeDelta::days(i64::from(d)));
                let from = run.now;
                match run.take_event("payment.completed", None, from, deadline.or(Some(horizon))) {
                    Some(e) => {
                        run.now = e.at;
                        run.log(&id, kind, "the payment arrives".into());
                        handle = Some(HANDLE_PAID.into());
                    }
                    None => match deadline {
                        Some(deadline) => {
                            run.now = deadline;
                            run.log(&id, kind, "no payment before the deadline".into());
                            handle = Some(HANDLE_TIMEOUT.into());
                        }
                        None => {
                            return finish(
                                run,
                                "waiting",
                                format!("node {id} waits for the payment"),
                            );
                        }
                    },
                }
            }
            NodeKind::Wait(Wait::Duration { seconds: s }) => {
                run.log(&id, kind, format!("waits {}", duration_text(*s)));
                run.now += seconds(*s);
            }
            NodeKind::Wait(Wait::UntilDate {
                date,
                offset_days,
                at,
                if_passed,
            }) => {
                let Some(d) = run.date(date) else {
                    return finish(
                        run,
                        "stuck",
                        format!("node {id}: the couple has no `{date}`"),
                    );
                };
                let instant = date_relative_instant(d, *offset_days, *at, zone);
                let local = instant.with_timezone(&zone).format("%a %-d %b %Y %H:%M %Z");
                if instant > run.now {
                    run.log(
                        &id,
                        kind,
                        format!(
                            "waits until {date} {offset_days:+} days at {} ({local})",
                            at.format("%H:%M")
                        ),
                    );
                    run.now = instant;
                } else {
                    match if_passed {
                        IfPassed::RunNow => run.log(
                            &id,
                            kind,
                            format!(
                                "{date} {offset_days:+} days ({local}) has already passed: runs now"
                            ),
                        ),
                        IfPassed::Skip => {
                            run.log(
                                &id,
                                kind,
                                format!("{date} {offset_days:+} days ({local}) has already passed: skipped"),
                            );
                            return finish(
                                run,
                                "skipped",
                                format!("node {id}: its date had passed, and its policy is skip"),
                            );
                        }
                    }
                }
            }
            NodeKind::Wait(Wait::UntilEvent {
                event_type,
                filter,
                timeout_seconds,
            }) => {
                let deadline = run.now + seconds(*timeout_seconds);
                run.log(
                    &id,
                    kind,
                    format!(
                        "waits for {event_type}, at most {}",
                        duration_text(*timeout_seconds)
                    ),
                );
                let from = run.now;
                match run.take_event(event_type, filter.as_ref(), from, Some(deadline)) {
                    Some(e) => {
                        run.now = e.at;
                        run.log(&id, kind, format!("{event_type} arrives"));
                        handle = Some(HANDLE_EVENT.into());
                    }
                    None => {
                        run.now = deadline;
                        run.log(&id, kind, format!("no {event_type}: timed out"));
                        handle = Some(HANDLE_TIMEOUT.into());
                    }
                }
            }
            NodeKind::End(_) => {
                run.log(&id, kind, "the journey ends".into());
                return finish(run, "ended", format!("reached the end at node {id}"));
            }
        }
        current = doc.next(&id, handle.as_deref()).map(str::to_owned);
    }
    finish(
        run,
        "step_limit",
        format!(
            "stopped after {MAX_STEPS_PER_INSTANCE} steps (a loop that never waits long enough?)"
        ),
    )
}

/// The timeline as lines of text, one per entry, for the CLI.
pub fn render_timeline(t: &Timeline) -> String {
    let mut out = String::new();
    for e in &t.entries {
        out.push_str(&format!(
            "{:<28} {:<16} {:<14} {}\n",
            e.local, e.node, e.kind, e.what
        ));
    }
    out.push_str(&format!("→ {}: {}\n", t.outcome, t.detail));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    fn countdown() -> JourneyDocument {
        let doc = json!({
            "nodes": [
                {"id": "start", "type": "trigger", "position": {"x": 0, "y": 0},
                 "data": {"trigger": {"kind": "event", "event_type": "booking.created"}}},
                {"id": "welcome", "type": "email", "position": {"x": 0, "y": 1},
                 "data": {"to": "both_partners", "template": "welcome"}},
                {"id": "t-30", "type": "wait", "position": {"x": 0, "y": 2},
                 "data": {"mode": "until_date", "date": "wedding_date", "offset_days": -30, "at": "09:00", "if_passed": "run_now"}},
                {"id": "ask", "type": "client_action", "position": {"x": 0, "y": 3},
                 "data": {"title": "Timeline form", "form_id": "timeline", "both_partners": true}},
                {"id": "big", "type": "decision", "position": {"x": 0, "y": 4},
                 "data": {"conditions": [{"label": "large", "when": "couple.guests > 100"}], "default_label": "small"}},
                {"id": "task", "type": "task", "position": {"x": 0, "y": 5}, "data": {"title": "Book a second shooter"}},
                {"id": "done", "type": "end", "position": {"x": 0, "y": 6}, "data": {}}
            ],
            "edges": [
                {"id": "e1", "source": "start", "target": "welcome"},
                {"id": "e2", "source": "welcome", "target": "t-30"},
                {"id": "e3", "source": "t-30", "target": "ask"},
                {"id": "e4", "source": "ask", "target": "big"},
                {"id": "e5", "source": "big", "target": "task", "sourceHandle": "large"},
                {"id": "e6", "source": "big", "target": "done", "sourceHandle": "small"},
                {"id": "e7", "source": "task", "target": "done"}
            ],
            "viewport": {"x": 0, "y": 0, "zoom": 1}
        });
        let doc = JourneyDocument::parse(&doc).expect("parses");
        crate::validate(&doc, crate::Mode::Publish).expect("valid");
        doc
    }

    fn input(wedding: &str, start: &str, events: Vec<SimEvent>) -> SimulationInput {
        SimulationInput {
            wedding_date: wedding.parse().expect("date"),
            time_zone: "Europe/London".into(),
            dates: BTreeMap::new(),
            couple: Map::from_iter([("guests".to_owned(), json!(140))]),
            booking: Map::new(),
            start_at: utc(start),
            events,
            until: None,
        }
    }

    fn ev(t: &str, at: &str, data: Value) -> SimEvent {
        SimEvent {
            event_type: t.into(),
            at: utc(at),
            data,
        }
    }

    #[test]
    fn a_countdown_runs_at_couple_local_times_across_the_clock_change() {
        // Wedding Sunday 25 April 2027: 30 days before is 26 March, still GMT.
        let events = vec![
            ev(
                "form.submitted",
                "2027-03-27T10:00:00Z",
                json!({"form_id": "timeline"}),
            ),
            ev("booking.created", "2027-01-10T12:00:00Z", json!({})),
            ev(
                "form.submitted",
                "2027-03-29T18:00:00Z",
                json!({"form_id": "timeline"}),
            ),
        ];
        let t = simulate(
            &countdown(),
            &input("2027-04-25", "2027-01-01T00:00:00Z", events),
        )
        .expect("zone");
        assert_eq!(t.outcome, "ended", "{}", render_timeline(&t));
        let at = |node: &str| t.entries.iter().find(|e| e.node == node).map(|e| e.at);
        assert_eq!(at("start"), Some(utc("2027-01-10T12:00:00Z")));
        assert_eq!(at("ask"), Some(utc("2027-03-26T09:00:00Z")), "09:00 GMT");
        let decided = t
            .entries
            .iter()
            .find(|e| e.node == "big")
            .expect("decision");
        assert_eq!(decided.what, "decides: large");
        assert_eq!(
            decided.at,
            utc("2027-03-29T18:00:00Z"),
            "after both partners submitted"
        );
        assert!(t.entries.iter().any(|e| e.node == "task"));
        // Wedding 20 November 2027: 30 days before is 21 October, still BST (08:00 UTC).
        let events = vec![ev("booking.created", "2027-06-01T12:00:00Z", json!({}))];
        let t = simulate(
            &countdown(),
            &input("2027-11-20", "2027-06-01T00:00:00Z", events),
        )
        .expect("zone");
        let wait = t.entries.iter().find(|e| e.node == "ask").expect("asked");
        assert_eq!(wait.at, utc("2027-10-21T08:00:00Z"));
        assert_eq!(wait.local, "Thu 21 Oct 2027 09:00 BST");
        assert_eq!(t.outcome, "waiting", "the forms never arrive");
    }

    #[test]
    fn a_date_that_has_passed_follows_the_nodes_policy() {
        // Booked 10 days before the wedding: the −30 days wait has passed and runs now.
        let events = vec![ev("booking.created", "2027-09-08T12:00:00Z", json!({}))];
        let t = simulate(
            &countdown(),
            &input("2027-09-18", "2027-09-01T00:00:00Z", events),
        )
        .expect("zone");
        let wait = t.entries.iter().find(|e| e.node == "t-30").expect("wait");
        assert!(
            wait.what.contains("has already passed: runs now"),
            "{}",
            wait.what
        );
        assert_eq!(wait.at, utc("2027-09-08T12:00:00Z"));
    }

    #[test]
    fn a_bad_zone_is_refused_and_a_missing_trigger_event_means_not_started() {
        let mut i = input("2027-09-18", "2027-01-01T00:00:00Z", vec![]);
        let t = simulate(&countdown(), &i).expect("zone");
        assert_eq!(t.outcome, "not_started");
        assert!(t.entries.is_empty());
        i.time_zone = "Mars/Olympus".into();
        assert!(simulate(&countdown(), &i).is_err());
    }
}

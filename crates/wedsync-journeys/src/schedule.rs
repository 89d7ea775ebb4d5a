//! Scheduled triggers: journeys that start by themselves, at a date of the couple's
//! (`date_reached`), a delay after a couple is added (`time_delay`), or on a cron schedule
//! (`cron`).
//!
//! - **`date_reached`** attaches the journey to every couple whose instant (the date shifted by
//!   whole days, at a couple-local wall time) is still ahead: each gets an instance *waiting at
//!   its trigger*, keyed `date_reached`, due at that instant. The wait keeps its rule, so when
//!   the couple's date moves the store recomputes it in the same transaction as any other
//!   date-relative wait, and a couple whose instant comes back into the future is attached
//!   again. An instant already past when a couple is attached starts nothing (a trigger is not
//!   a back-fill); one that passes because the date moved ends the instance as `skipped`.
//!   Publishing attaches existing couples in batches of [`ATTACH_BATCH`] through the queue
//!   (one transaction each); a couple added later is attached when its `client.created` event
//!   is published. A journey about bookings attaches every booking that is not cancelled the
//!   same way (one instance per booking), and a booking added or changed later through its
//!   `booking.created` / `booking.updated` event.
//! - **`time_delay`** starts `after_seconds` after a couple is added (its `created_at`), for
//!   couples added while the journey is published; publishing does not start it for the
//!   couples already there.
//! - **`cron`** starts one instance per couple per tick (keyed `cron:<tick>`), for couples whose
//!   wedding is today or ahead in the tick's zone. The schedule reads in the trigger's
//!   `time_zone`, or else in each couple's own zone: one chain of tick jobs per zone, each job
//!   enqueuing the next. A tick that runs late (the hub was down) fires once, and the next
//!   tick is the first one after now, so an outage does not replay a burst of old ticks.
//!
//! `time_delay` and `cron` start per couple; validation refuses them on a journey about
//! bookings.
//!
//! Every path is idempotent: instances are unique per (journey, subject, trigger key), tick
//! jobs are unique per (journey, version, zone, tick), and a batch that runs twice starts
//! nothing twice. A tick or batch for a version that is no longer published does nothing.

use chrono::{DateTime, NaiveTime, TimeDelta, Utc};
use chrono_tz::Tz;
use serde_json::{Value, json};
use wedsync_core::booking::{Booking, BookingStatus};
use wedsync_core::couple::Couple;
use wedsync_core::id::{BookingId, CoupleId, JourneyId, OrgId};
use wedsync_store::Store;
use wedsync_store::couples::CoupleFilter;
use wedsync_store::journeys::{CRON_KIND, NewStart, PUBLISHED_KIND, step_priority};
use wedsync_store::queue::{Job, NewJob};
use wedsync_store::worker::{JobError, JobHandler};

use crate::cron::{next_tick, parse_cron};
use crate::model::{BOOKING_DATE, NodeKind, Subject, Trigger, WEDDING_DATE};
use crate::{JourneyDocument, date_relative_instant};

/// Couples attached per transaction when a journey is published or a cron tick fires.
pub const ATTACH_BATCH: u64 = 500;

/// The trigger key of a `date_reached` instance: one per journey and couple.
pub const DATE_KEY: &str = "date_reached";
/// The trigger key of a `time_delay` instance: one per journey and couple.
pub const DELAY_KEY: &str = "time_delay";

fn transient(e: impl std::fmt::Display) -> JobError {
    JobError::transient(e.to_string())
}

fn field<'a>(job: &'a Job, name: &str) -> Result<&'a str, JobError> {
    job.payload
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| JobError::Permanent(format!("the job has no {name}")))
}

fn parse_id<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, JobError> {
    text.parse()
        .map_err(|_| JobError::Permanent(format!("malformed {what} `{text}`")))
}

fn org_of(job: &Job) -> Result<OrgId, JobError> {
    parse_id(
        job.org_id
            .as_deref()
            .ok_or_else(|| JobError::Permanent("the job has no organisation".into()))?,
        "organisation id",
    )
}

/// The organisation, journey and version a published or cron job is about.
fn journey_job(job: &Job) -> Result<(OrgId, JourneyId, i32), JobError> {
    let version = job
        .payload
        .get("version")
        .and_then(Value::as_i64)
        .and_then(|v| i32::try_from(v).ok())
        .ok_or_else(|| JobError::Permanent("the job has no version".into()))?;
    Ok((
        org_of(job)?,
        parse_id(field(job, "journey_id")?, "journey id")?,
        version,
    ))
}

/// The document of `journey`'s `version` while it is the published one.
async fn live_document(
    store: &Store,
    org: &OrgId,
    journey: &JourneyId,
    version: i32,
) -> Result<Option<Value>, JobError> {
    Ok(store
        .published_journeys(org)
        .await
        .map_err(transient)?
        .into_iter()
        .find(|(id, v, _)| id == journey && *v == version)
        .map(|(_, _, document)| document))
}

/// The trigger node of a published document: its id, trigger and subject.
fn trigger_of(document: &Value) -> Result<(String, Trigger, Subject), JobError> {
    let doc = JourneyDocument::parse(document)
        .map_err(|e| JobError::Permanent(format!("the published document does not parse: {e}")))?;
    doc.nodes
        .iter()
        .find_map(|n| match &n.kind {
            NodeKind::Trigger(t) => Some((n.id.clone(), t.trigger.clone(), t.subject)),
            _ => None,
        })
        .ok_or_else(|| JobError::Permanent("the published document has no trigger".into()))
}

fn zone_of(couple: &Couple) -> Option<Tz> {
    wedsync_core::org::TimeZone::parse(&couple.time_zone)
        .ok()
        .map(|z| z.tz())
}

/// The waiting start of a `date_reached` trigger for `couple` (or one of its bookings, for
/// a journey about bookings), if its instant is ahead. A cancelled booking starts nothing.
fn date_start(
    couple: &Couple,
    booking: Option<&Booking>,
    date: &str,
    offset_days: i32,
    at: NaiveTime,
    now: DateTime<Utc>,
) -> Option<NewStart> {
    let zone = zone_of(couple)?;
    if booking.is_some_and(|b| b.status == BookingStatus::Cancelled) {
        return None;
    }
    let day = match date {
        WEDDING_DATE => couple.wedding_date,
        BOOKING_DATE => wedsync_core::booking::local_date(booking?.starts_at, zone),
        _ => return None, // refused on save; nothing else is known
    };
    let instant = date_relative_instant(day, offset_days, at, zone);
    (instant > now).then(|| NewStart {
        couple: couple.id,
        booking: booking.map(|b| b.id),
        trigger_key: DATE_KEY.into(),
        status: "waiting".into(),
        due_at: Some(instant),
        wait: Some(json!({
            "mode": "until_date", "date": date, "offset_days": offset_days,
            "at": at.format("%H:%M").to_string(), "if_passed": "skip",
        })),
        context: json!({ "type": "schedule", "trigger": "date_reached", "at": instant }),
        detail: format!(
            "waits until {date} {offset_days:+} days at {} ({})",
            at.format("%H:%M"),
            instant.to_rfc3339()
        ),
        priority: step_priority(couple.wedding_date, &couple.time_zone, instant),
    })
}

/// The waiting start of a `time_delay` trigger for a couple just added.
fn delay_start(couple: &Couple, after_seconds: u64) -> NewStart {
    let due = couple.created_at
        + TimeDelta::seconds(i64::try_from(after_seconds).unwrap_or(i64::MAX / 1000));
    NewStart {
        couple: couple.id,
        booking: None,
        trigger_key: DELAY_KEY.into(),
        status: "waiting".into(),
        due_at: Some(due),
        wait: Some(json!({ "mode": "duration", "seconds": after_seconds })),
        context: json!({ "type": "schedule", "trigger": "time_delay", "at": due }),
        detail: format!("waits {after_seconds} s after the couple was added"),
        priority: step_priority(couple.wedding_date, &couple.time_zone, due),
    }
}

/// The tick job of `journey`'s `version` in `zone` at `tick` (unique, so enqueuing it twice
/// creates one), optionally continuing after a couple.
fn cron_job(
    org: &OrgId,
    journey: &JourneyId,
    version: i32,
    zone: &str,
    tick: DateTime<Utc>,
    after: Option<&str>,
) -> NewJob {
    let mut job = NewJob::new(
        CRON_KIND,
        json!({
            "journey_id": journey, "version": version, "zone": zone,
            "tick": tick.to_rfc3339(), "after": after,
        }),
    );
    job.org_id = Some(*org);
    job.run_at = Some(tick);
    job.dedupe_key = Some(format!(
        "cron:{journey}:{version}:{zone}:{}:{}",
        tick.timestamp(),
        after.unwrap_or("")
    ));
    job
}

/// The zone a cron trigger's schedule reads in for a couple in `couple_zone`.
fn cron_zone(time_zone: Option<Tz>, couple_zone: &str) -> String {
    time_zone.map_or_else(|| couple_zone.to_owned(), |z| z.name().to_owned())
}

/// Enqueues the next tick of a cron trigger in `zone` after `after` (idempotent).
async fn schedule_tick(
    store: &Store,
    org: &OrgId,
    journey: &JourneyId,
    version: i32,
    expression: &str,
    zone: &str,
    after: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, JobError> {
    let cron = parse_cron(expression).map_err(JobError::Permanent)?;
    let tz = wedsync_core::org::TimeZone::parse(zone)
        .map_err(JobError::Permanent)?
        .tz();
    let Some(tick) = next_tick(&cron, after, tz) else {
        return Ok(None);
    };
    store
        .enqueue(cron_job(org, journey, version, zone, tick, None))
        .await
        .map_err(transient)?;
    Ok(Some(tick))
}

/// Attaches one batch of couples (or bookings, for a journey about bookings) after `after`
/// to a `date_reached` journey; returns the last couple or booking of a full batch (more
/// may follow).
#[allow(clippy::too_many_arguments)]
async fn attach_batch(
    store: &Store,
    org: &OrgId,
    journey: &JourneyId,
    version: i32,
    trigger_node: &str,
    trigger: &Trigger,
    subject: Subject,
    after: Option<&str>,
) -> Result<Option<String>, JobError> {
    let Trigger::DateReached {
        date,
        offset_days,
        at,
    } = trigger
    else {
        return Ok(None);
    };
    let now = store.clock().now();
    if subject == Subject::Booking {
        let bookings = store
            .bookings_batch(org, after, ATTACH_BATCH)
            .await
            .map_err(transient)?;
        let starts: Vec<NewStart> = bookings
            .iter()
            .filter_map(|(b, c)| date_start(c, Some(b), date, *offset_days, *at, now))
            .collect();
        store
            .start_instances(org, journey, version, trigger_node, &starts)
            .await
            .map_err(transient)?;
        return Ok((bookings.len() as u64 == ATTACH_BATCH)
            .then(|| bookings.last().map(|(b, _)| b.id.to_string()))
            .flatten());
    }
    let couples = store
        .couples_batch(org, &CoupleFilter::default(), after, ATTACH_BATCH)
        .await
        .map_err(transient)?;
    let starts: Vec<NewStart> = couples
        .iter()
        .filter_map(|c| date_start(c, None, date, *offset_days, *at, now))
        .collect();
    store
        .start_instances(org, journey, version, trigger_node, &starts)
        .await
        .map_err(transient)?;
    Ok((couples.len() as u64 == ATTACH_BATCH)
        .then(|| couples.last().map(|c| c.id.to_string()))
        .flatten())
}

/// The handler for [`PUBLISHED_KIND`] jobs: a `date_reached` trigger is attached to every
/// couple (a batch per run, the job re-enqueuing itself after the last couple it saw); a
/// `cron` trigger's first tick is scheduled in every zone it reads in.
pub fn published_handler(store: Store) -> impl JobHandler {
    move |job: Job| {
        let store = store.clone();
        async move {
            let (org, journey, version) = journey_job(&job)?;
            let after = job.payload.get("after").and_then(Value::as_str);
            let Some(document) = live_document(&store, &org, &journey, version).await? else {
                return Ok(()); // a newer version is live (or none): its own job acts
            };
            let (trigger_node, trigger, subject) = trigger_of(&document)?;
            match &trigger {
                Trigger::DateReached { .. } => {
                    if let Some(last) = attach_batch(
                        &store,
                        &org,
                        &journey,
                        version,
                        &trigger_node,
                        &trigger,
                        subject,
                        after,
                    )
                    .await?
                    {
                        let mut next = NewJob::new(
                            PUBLISHED_KIND,
                            json!({ "journey_id": journey, "version": version, "after": last }),
                        );
                        next.org_id = Some(org);
                        next.priority = job.priority;
                        next.dedupe_key = Some(format!("published:{journey}:{version}:{last}"));
                        store.enqueue(next).await.map_err(transient)?;
                    }
                }
                Trigger::Cron {
                    expression,
                    time_zone,
                } => {
                    let now = store.clock().now();
                    let zones: Vec<String> = match time_zone {
                        Some(z) => vec![z.name().to_owned()],
                        None => store.couple_zones(&org).await.map_err(transient)?,
                    };
                    for zone in zones {
                        schedule_tick(&store, &org, &journey, version, expression, &zone, now)
                            .await?;
                    }
                }
                _ => {}
            }
            Ok(())
        }
    }
}

/// The handler for [`wedsync_store::journeys::COUPLE_KIND`] jobs: a couple (or a booking)
/// was added or changed. For a couple: attach it to every published couple `date_reached`
/// journey whose instant is ahead (and, when it was added, every `time_delay` journey), its
/// bookings to every booking `date_reached` journey (a moved wedding date may bring their
/// instants back), and make sure the cron schedules of its zone run. For a booking: attach
/// it to every booking `date_reached` journey whose instant is ahead.
pub fn couple_handler(store: Store) -> impl JobHandler {
    move |job: Job| {
        let store = store.clone();
        async move {
            let org = org_of(&job)?;
            let couple_id: CoupleId = parse_id(field(&job, "couple_id")?, "couple id")?;
            let booking_id: Option<BookingId> = match job.payload.get("booking_id") {
                Some(Value::String(b)) => Some(parse_id(b, "booking id")?),
                _ => None,
            };
            let created = job
                .payload
                .get("created")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let couple = match store.get_couple(&org, &couple_id).await {
                Ok(c) => c,
                Err(wedsync_store::StoreError::NotFound) => return Ok(()),
                Err(e) => return Err(transient(e)),
            };
            // The bookings this job is about: the one named, or all of the couple's.
            let bookings: Vec<Booking> = match &booking_id {
                Some(b) => match store.get_booking(&org, b).await {
                    Ok(b) if b.couple_id == couple.id => vec![b],
                    Ok(_) | Err(wedsync_store::StoreError::NotFound) => return Ok(()),
                    Err(e) => return Err(transient(e)),
                },
                None => couple_bookings(&store, &org, &couple.id).await?,
            };
            let now = store.clock().now();
            for (journey, version, document) in
                store.published_journeys(&org).await.map_err(transient)?
            {
                let Ok((trigger_node, trigger, subject)) = trigger_of(&document) else {
                    continue;
                };
                let mut starts = Vec::new();
                match (&trigger, subject) {
                    (
                        Trigger::DateReached {
                            date,
                            offset_days,
                            at,
                        },
                        Subject::Booking,
                    ) => starts.extend(bookings.iter().filter_map(|b| {
                        date_start(&couple, Some(b), date, *offset_days, *at, now)
                    })),
                    _ if booking_id.is_some() => {}
                    (
                        Trigger::DateReached {
                            date,
                            offset_days,
                            at,
                        },
                        Subject::Couple,
                    ) => starts.extend(date_start(&couple, None, date, *offset_days, *at, now)),
                    (Trigger::TimeDelay { after_seconds }, _) if created => {
                        starts.push(delay_start(&couple, *after_seconds));
                    }
                    (
                        Trigger::Cron {
                            expression,
                            time_zone,
                        },
                        _,
                    ) => {
                        let zone = cron_zone(*time_zone, &couple.time_zone);
                        schedule_tick(&store, &org, &journey, version, expression, &zone, now)
                            .await?;
                    }
                    _ => {}
                }
                if !starts.is_empty() {
                    store
                        .start_instances(&org, &journey, version, &trigger_node, &starts)
                        .await
                        .map_err(transient)?;
                }
            }
            Ok(())
        }
    }
}

/// Every booking of a couple, page by page.
async fn couple_bookings(
    store: &Store,
    org: &OrgId,
    couple: &CoupleId,
) -> Result<Vec<Booking>, JobError> {
    let filter = wedsync_store::bookings::BookingFilter {
        couple_id: Some(*couple),
        ..Default::default()
    };
    let mut page = wedsync_store::page::PageRequest {
        limit: Some(wedsync_store::page::MAX_LIMIT),
        after: None,
    };
    let mut all = Vec::new();
    loop {
        let got = store
            .list_bookings(org, &filter, &page)
            .await
            .map_err(transient)?;
        all.extend(got.data);
        match got.next_cursor {
            Some(next) => page.after = Some(next),
            None => return Ok(all),
        }
    }
}

/// The handler for [`CRON_KIND`] jobs: one tick of a cron trigger in one zone starts an
/// instance for every couple of that zone whose wedding is today or ahead (a batch per run,
/// continuing after the last couple), then schedules the next tick.
pub fn cron_handler(store: Store) -> impl JobHandler {
    move |job: Job| {
        let store = store.clone();
        async move {
            let (org, journey, version) = journey_job(&job)?;
            let zone = field(&job, "zone")?.to_owned();
            let tick = DateTime::parse_from_rfc3339(field(&job, "tick")?)
                .map_err(|e| JobError::Permanent(format!("malformed tick: {e}")))?
                .with_timezone(&Utc);
            let after = job.payload.get("after").and_then(Value::as_str);
            let Some(document) = live_document(&store, &org, &journey, version).await? else {
                return Ok(()); // the version is no longer live: its schedule ends here
            };
            let (trigger_node, trigger, _) = trigger_of(&document)?;
            let Trigger::Cron {
                expression,
                time_zone,
            } = &trigger
            else {
                return Ok(());
            };
            let tz = wedsync_core::org::TimeZone::parse(&zone)
                .map_err(JobError::Permanent)?
                .tz();
            let today = tick.with_timezone(&tz).date_naive();
            let filter = CoupleFilter {
                wedding_from: Some(today),
                // With the trigger's own zone every couple follows it; otherwise this chain
                // serves the couples of its zone.
                time_zone: time_zone.is_none().then(|| zone.clone()),
                ..CoupleFilter::default()
            };
            let couples = store
                .couples_batch(&org, &filter, after, ATTACH_BATCH)
                .await
                .map_err(transient)?;
            let key = format!("cron:{}", tick.to_rfc3339());
            let starts: Vec<NewStart> = couples
                .iter()
                .map(|c| NewStart {
                    couple: c.id,
                    booking: None,
                    trigger_key: key.clone(),
                    status: "running".into(),
                    due_at: None,
                    wait: None,
                    context: json!({ "type": "schedule", "trigger": "cron", "tick": tick }),
                    detail: format!("the schedule `{expression}` fired at {}", tick.to_rfc3339()),
                    priority: step_priority(c.wedding_date, &c.time_zone, tick),
                })
                .collect();
            store
                .start_instances(&org, &journey, version, &trigger_node, &starts)
                .await
                .map_err(transient)?;
            if couples.len() as u64 == ATTACH_BATCH
                && let Some(last) = couples.last()
            {
                let mut next = cron_job(
                    &org,
                    &journey,
                    version,
                    &zone,
                    tick,
                    Some(&last.id.to_string()),
                );
                next.run_at = None;
                store.enqueue(next).await.map_err(transient)?;
                return Ok(());
            }
            // The next tick: after this one, or after now when this one ran late, so an
            // outage fires one late tick rather than a burst.
            let now = store.clock().now();
            schedule_tick(
                &store,
                &org,
                &journey,
                version,
                expression,
                &zone,
                tick.max(now),
            )
            .await?;
            Ok(())
        }
    }
}

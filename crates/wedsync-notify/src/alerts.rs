//! Raising alerts: the wedding-day plan (product-rules.md) decides the severity, whether
//! SMS and PagerDuty are added (every alert on Saturday), whether the escalation chain
//! runs, and the queue priority; the store fans the alert out to the organisation's routes.

use wedsync_core::calendar::{CalendarRules, classify, escalation, job_priority};
use wedsync_core::id::{NotificationId, OrgId};
use wedsync_core::notify::{Severity, alert_plan};
use wedsync_store::notify::{Alert, AlertInput, AlertPlanned};
use wedsync_store::{Store, StoreResult};

/// Raises an alert for `org` now, under the organisation's wedding calendar.
pub async fn raise(
    store: &Store,
    org: &OrgId,
    input: AlertInput,
    rules: &CalendarRules,
) -> StoreResult<(Alert, Vec<NotificationId>)> {
    let now = store.clock().now();
    let zone = store.org_time_zone(org).await?;
    let today = now.with_timezone(&zone.tz()).date_naive();
    // A day with one of the organisation's weddings is a booked wedding day.
    let booked = store.weddings_today(org).await? > 0;
    let moment = classify(now, zone, rules, |date| date == today && booked);
    let plan = alert_plan(&moment, input.severity.unwrap_or(Severity::Warning));
    let tied_to_today = match &input.couple_id {
        Some(c) => store.get_couple(org, c).await?.wedding_date == today,
        None => false,
    };
    let planned = AlertPlanned {
        raised: plan.severity,
        escalation: escalation(&moment).as_str().to_owned(),
        also_sms_and_pagerduty: plan.also_sms_and_pagerduty,
        escalate: plan.escalate,
        priority: job_priority(&moment, tied_to_today || input.emergency),
    };
    let routes = store.notify_settings(org).await?.alert_routes;
    store.create_alert(org, input, &planned, &routes).await
}

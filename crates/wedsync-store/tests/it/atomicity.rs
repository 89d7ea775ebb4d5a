use wedsync_core::booking::BookingInput;
use wedsync_core::id::CoupleId;
use wedsync_store::StoreError;
use wedsync_store::couples::DateChangeRule;

use crate::support::{couple_fields, ctx, operator, org};

async fn counts(store: &wedsync_store::Store, org: &wedsync_core::id::OrgId) -> (usize, usize) {
    let audit = store
        .audit_entries(org, None, 100)
        .await
        .expect("audit")
        .len();
    let outbox = store
        .outbox_events(org, None, 100)
        .await
        .expect("outbox")
        .len();
    (audit, outbox)
}

#[tokio::test]
async fn every_change_writes_its_audit_entry_and_event_together() {
    let c = ctx().await;
    let org = org(&c.store, "Lens & Lace").await;
    let couple = c
        .store
        .create_couple(&org.id, couple_fields("2027-06-12"), &operator())
        .await
        .expect("couple");
    let events = c
        .store
        .outbox_events(&org.id, None, 10)
        .await
        .expect("outbox");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, "client.created");
    assert_eq!(events[0].subject, couple.id.to_string());
    assert_eq!(counts(&c.store, &org.id).await, (2, 1));
}

#[tokio::test]
async fn a_refused_change_leaves_nothing_behind() {
    let c = ctx().await;
    let org = org(&c.store, "Lens & Lace").await;
    let before = counts(&c.store, &org.id).await;
    // A booking for a couple that does not exist fails after the transaction began.
    let input: BookingInput = serde_json::from_value(serde_json::json!({
        "couple_id": "cpl_0193f0c0000070008000000000000000",
        "service": "Photography",
        "starts_at": "2027-06-12T10:00:00Z",
        "ends_at": "2027-06-12T18:00:00Z",
        "value": {"amount_minor": 100, "currency": "GBP"}
    }))
    .expect("shape");
    let missing: CoupleId = input.couple_id.parse().expect("id");
    let err = c
        .store
        .create_booking(
            &org.id,
            &missing,
            input.validate().expect("valid"),
            &operator(),
        )
        .await
        .expect_err("refused");
    assert!(matches!(err, StoreError::Invalid(_)));
    // A date change that needs confirmation is refused inside its transaction.
    c.clock.set(
        chrono::DateTime::parse_from_rfc3339("2027-06-01T09:00:00Z")
            .expect("t")
            .to_utc(),
    );
    let couple = c
        .store
        .create_couple(&org.id, couple_fields("2027-06-12"), &operator())
        .await
        .expect("couple");
    let mid = counts(&c.store, &org.id).await;
    assert_eq!(mid, (before.0 + 1, before.1 + 1));
    let rule = DateChangeRule {
        window_days: 30,
        confirmed: false,
    };
    let err = c
        .store
        .update_couple(&org.id, &couple.id, &operator(), rule, |f| {
            let mut f = f.clone();
            f.wedding_date = chrono::NaiveDate::from_ymd_opt(2027, 6, 19).expect("date");
            Ok(f)
        })
        .await
        .expect_err("needs confirmation");
    assert!(matches!(err, StoreError::NeedsConfirmation(_)));
    assert_eq!(counts(&c.store, &org.id).await, mid);
    let unchanged = c
        .store
        .get_couple(&org.id, &couple.id)
        .await
        .expect("couple");
    assert_eq!(unchanged.wedding_date.to_string(), "2027-06-12");
}

#[tokio::test]
async fn concurrent_writers_keep_one_unbroken_chain() {
    let c = ctx().await;
    let org = org(&c.store, "Lens & Lace").await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = c.store.clone();
        let org = org.id;
        tasks.push(tokio::spawn(async move {
            let date = format!("2027-06-{:02}", 1 + i);
            store
                .create_couple(&org, couple_fields(&date), &operator())
                .await
        }));
    }
    for t in tasks {
        t.await.expect("join").expect("create");
    }
    let report = c.store.verify_audit().await.expect("verify");
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.entries, 17);
}

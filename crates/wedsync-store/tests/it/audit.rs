use wedsync_store::testing::{drop_audit_guards, execute_raw};

use crate::support::{couple_fields, ctx, operator, org};

/// An org with a few audited changes: create org, two couples, one update.
async fn history(c: &crate::support::Ctx) -> String {
    let org = org(&c.store, "Lens & Lace").await;
    let a = c
        .store
        .create_couple(&org.id, couple_fields("2027-06-12"), &operator())
        .await
        .expect("couple");
    c.store
        .create_couple(&org.id, couple_fields("2027-07-03"), &operator())
        .await
        .expect("couple");
    c.store
        .update_couple(
            &org.id,
            &a.id,
            &operator(),
            wedsync_store::couples::DateChangeRule {
                window_days: 30,
                confirmed: false,
            },
            |f| {
                let mut f = f.clone();
                f.notes = Some("prefers film".into());
                Ok(f)
            },
        )
        .await
        .expect("update");
    org.id.to_string()
}

#[tokio::test]
async fn intact_chain_verifies() {
    let c = ctx().await;
    history(&c).await;
    let report = c.store.verify_audit().await.expect("verify");
    assert!(report.ok(), "{report:?}");
    assert_eq!((report.organizations, report.entries), (1, 4));
}

#[tokio::test]
async fn the_log_refuses_updates_and_deletes() {
    let c = ctx().await;
    history(&c).await;
    assert!(
        execute_raw(
            &c.store,
            "UPDATE audit_log SET actor = 'cli:mallory' WHERE seq = 2"
        )
        .await
        .is_err()
    );
    assert!(
        execute_raw(&c.store, "DELETE FROM audit_log WHERE seq = 2")
            .await
            .is_err()
    );
    assert!(c.store.verify_audit().await.expect("verify").ok());
}

#[tokio::test]
async fn an_edited_entry_is_named() {
    let c = ctx().await;
    let org = history(&c).await;
    drop_audit_guards(&c.store).await.expect("drop guards");
    execute_raw(
        &c.store,
        "UPDATE audit_log SET actor = 'cli:mallory' WHERE seq = 3",
    )
    .await
    .expect("tamper");
    let report = c.store.verify_audit().await.expect("verify");
    assert_eq!(report.faults.len(), 1, "{report:?}");
    let fault = &report.faults[0];
    assert_eq!((fault.org_id.as_str(), fault.seq), (org.as_str(), 3));
    assert!(fault.problem.contains("edited"), "{fault:?}");
}

#[tokio::test]
async fn a_deleted_entry_is_named() {
    let c = ctx().await;
    history(&c).await;
    drop_audit_guards(&c.store).await.expect("drop guards");
    execute_raw(&c.store, "DELETE FROM audit_log WHERE seq = 2")
        .await
        .expect("tamper");
    let report = c.store.verify_audit().await.expect("verify");
    let fault = &report.faults[0];
    assert_eq!(fault.seq, 2);
    assert!(fault.problem.contains("missing"), "{fault:?}");
}

#[tokio::test]
async fn a_deleted_tail_is_detected() {
    let c = ctx().await;
    history(&c).await;
    drop_audit_guards(&c.store).await.expect("drop guards");
    execute_raw(&c.store, "DELETE FROM audit_log WHERE seq = 4")
        .await
        .expect("tamper");
    let report = c.store.verify_audit().await.expect("verify");
    let fault = &report.faults[0];
    assert_eq!(fault.seq, 4);
    assert!(fault.problem.contains("deleted from the end"), "{fault:?}");
}

#[tokio::test]
async fn an_inserted_entry_is_named() {
    let c = ctx().await;
    let org = history(&c).await;
    drop_audit_guards(&c.store).await.expect("drop guards");
    // Shift entries 3.. up by one and slip a forged entry in at 3, copying entry 2's links.
    execute_raw(
        &c.store,
        "UPDATE audit_log SET seq = seq + 100 WHERE seq >= 3",
    )
    .await
    .expect("shift");
    execute_raw(
        &c.store,
        "UPDATE audit_log SET seq = seq - 99 WHERE seq >= 103",
    )
    .await
    .expect("shift back");
    execute_raw(
        &c.store,
        &format!(
            "INSERT INTO audit_log (org_id, seq, id, at, actor, action, target_type, target_id, before, after, prev_hash, hash) \
             SELECT org_id, 3, 'aud_forged', at, 'cli:mallory', 'couple.delete', target_type, target_id, NULL, NULL, hash, hash \
             FROM audit_log WHERE org_id = '{org}' AND seq = 2"
        ),
    )
    .await
    .expect("insert");
    let report = c.store.verify_audit().await.expect("verify");
    let fault = &report.faults[0];
    assert_eq!(fault.seq, 3, "{fault:?}");
    assert_eq!(fault.entry_id.as_deref(), Some("aud_forged"));
}

#[tokio::test]
async fn chains_are_per_organisation() {
    let c = ctx().await;
    let a = history(&c).await;
    let b = org(&c.store, "Petal & Stem").await;
    c.store
        .create_couple(&b.id, couple_fields("2027-08-01"), &operator())
        .await
        .expect("couple");
    drop_audit_guards(&c.store).await.expect("drop guards");
    execute_raw(
        &c.store,
        &format!("UPDATE audit_log SET action = 'x' WHERE org_id = '{a}' AND seq = 1"),
    )
    .await
    .expect("tamper");
    let report = c.store.verify_audit().await.expect("verify");
    assert_eq!(report.organizations, 2);
    assert_eq!(report.faults.len(), 1);
    assert_eq!(report.faults[0].org_id, a);
}

use std::sync::Arc;

use wedsync_core::clock::SystemClock;
use wedsync_store::testing::{execute_raw, fresh_db};
use wedsync_store::{SchemaStatus, Store, StoreError};

#[tokio::test]
async fn migrating_twice_is_a_no_op() {
    let db = fresh_db().await.expect("db");
    let store = Store::connect(&db.options, Arc::new(SystemClock))
        .await
        .expect("connect");
    assert!(matches!(
        store.schema_status().await.expect("status"),
        SchemaStatus::Behind(_)
    ));
    assert!(matches!(
        store.ensure_schema_current().await,
        Err(StoreError::SchemaBehind { .. })
    ));
    assert_eq!(
        store.migrate().await.expect("migrate"),
        [
            "m0001_foundation",
            "m0002_durable_work",
            "m0003_inbound",
            "m0004_outbound",
            "m0005_notifications",
            "m0006_journeys",
            "m0007_journey_instances",
            "m0008_timers",
            "m0009_booking_journeys",
            "m0010_crm_connections"
        ]
    );
    assert!(store.migrate().await.expect("again").is_empty());
    assert_eq!(
        store.schema_status().await.expect("status"),
        SchemaStatus::Current
    );
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let db = fresh_db().await.expect("db");
    let store = Store::connect(&db.options, Arc::new(SystemClock))
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    execute_raw(
        &store,
        "INSERT INTO seaql_migrations (version, applied_at) VALUES ('m9999_from_the_future', 0)",
    )
    .await
    .expect("insert");
    let err = store.migrate().await.expect_err("refused");
    assert!(
        matches!(&err, StoreError::SchemaTooNew { unknown } if unknown == &["m9999_from_the_future"])
    );
    assert!(err.to_string().contains("newer than this binary"), "{err}");
    assert!(matches!(
        store.ensure_schema_current().await,
        Err(StoreError::SchemaTooNew { .. })
    ));
}

/// Says which backend the run is on, and fails if the run asked for PostgreSQL but got
/// anything else: the PostgreSQL half of CI must never quietly run on SQLite.
#[tokio::test]
async fn the_run_uses_the_backend_it_asked_for() {
    let db = fresh_db().await.expect("db");
    let store = Store::connect(&db.options, Arc::new(SystemClock))
        .await
        .expect("connect");
    let expected = match wedsync_store::testing::backend_name() {
        "postgres" => sea_orm::DbBackend::Postgres,
        _ => sea_orm::DbBackend::Sqlite,
    };
    eprintln!(
        "backend under test: {}",
        wedsync_store::testing::backend_name()
    );
    assert_eq!(store.backend(), expected);
}

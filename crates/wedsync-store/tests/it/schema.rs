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
        vec!["m0001_foundation".to_owned()]
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

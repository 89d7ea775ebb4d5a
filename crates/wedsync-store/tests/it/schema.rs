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

/// A server on this machine is reached without TLS unless the URL sets something about TLS:
/// TLS over loopback protects nothing and cost a fifth to a third of the benchmarks'
/// database throughput.
#[tokio::test]
async fn a_loopback_server_is_reached_without_tls_unless_the_url_asks() {
    use sea_orm::ConnectionTrait as _;
    let db = fresh_db().await.expect("db");
    let store = Store::connect(&db.options, Arc::new(SystemClock))
        .await
        .expect("connect");
    let Some(plain) = wedsync_store::testing::pg_session_tls(&store)
        .await
        .expect("pg_stat_ssl")
    else {
        assert_eq!(store.backend(), sea_orm::DbBackend::Sqlite);
        return;
    };
    // CI's URL is 127.0.0.1 with no sslmode.
    assert!(
        db.options.url.contains("@127.0.0.1") && !db.options.url.contains("sslmode"),
        "this test expects a loopback URL without sslmode: {}",
        db.options.url
    );
    assert_eq!(
        plain,
        (false, false),
        "main and relaxed pools in plain text"
    );
    // With the mode chosen in the URL, the driver's choice stands: `prefer` is TLS exactly
    // when the server offers it. (This machine's server does, so the plain sessions above
    // are the rule at work; a server without TLS would make them plain anyway.)
    let offered = store
        .connection()
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT current_setting('ssl') = 'on' AS on",
        ))
        .await
        .expect("ssl setting")
        .expect("row")
        .try_get::<bool>("", "on")
        .expect("bool");
    if !offered {
        eprintln!("this server offers no TLS: the plain sessions above prove nothing here");
    }
    let mut chosen = db.options.clone();
    let sep = if chosen.url.contains('?') { '&' } else { '?' };
    chosen.url = format!("{}{sep}sslmode=prefer", chosen.url);
    let chosen = Store::connect(&chosen, Arc::new(SystemClock))
        .await
        .expect("connect with sslmode");
    assert_eq!(
        wedsync_store::testing::pg_session_tls(&chosen)
            .await
            .expect("pg_stat_ssl"),
        Some((offered, offered))
    );
}

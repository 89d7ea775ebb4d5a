use std::sync::Arc;

use chrono::{TimeZone, Utc};
use wedsync_core::clock::ManualClock;
use wedsync_core::couple::{CoupleFields, CoupleInput};
use wedsync_core::org::{OrgSettings, Organization};
use wedsync_store::testing::{TestDb, migrated_store};
use wedsync_store::{Actor, Store};

pub struct Ctx {
    pub store: Store,
    pub clock: ManualClock,
    pub _db: TestDb,
}

pub async fn ctx() -> Ctx {
    let clock = ManualClock::new(
        Utc.with_ymd_and_hms(2026, 5, 1, 9, 0, 0)
            .single()
            .expect("valid"),
    );
    let (store, db) = migrated_store(Arc::new(clock.clone()))
        .await
        .expect("test database");
    Ctx {
        store,
        clock,
        _db: db,
    }
}

impl Ctx {
    /// The manual clock's current instant.
    pub fn clock_now(&self) -> chrono::DateTime<chrono::Utc> {
        wedsync_core::clock::Clock::now(&self.clock)
    }

    /// Options reaching this test's database, for a second "node".
    pub fn options(&self) -> wedsync_store::StoreOptions {
        self._db.options.clone()
    }
}

pub fn operator() -> Actor {
    Actor::Cli("test".into())
}

pub async fn org(store: &Store, name: &str) -> Organization {
    let settings =
        OrgSettings::parse(name, "Europe/London", "professional", "GB", "GBP").expect("valid");
    store.create_org(settings, &operator()).await.expect("org")
}

pub fn couple_fields(date: &str) -> CoupleFields {
    let input: CoupleInput = serde_json::from_value(serde_json::json!({
        "partners": [{"name": "Ana", "email": "ana@example.com"}, {"name": "Ben", "email": "ben@example.com"}],
        "wedding_date": date,
    }))
    .expect("shape");
    input
        .validate(wedsync_core::org::TimeZone::parse("Europe/London").expect("zone"))
        .expect("valid")
}

use chrono::TimeDelta;
use wedsync_core::source::Provider;
use wedsync_store::StoreError;
use wedsync_store::inbound::{EventFilter, IncomingRequest, Ingested, NewEvent};
use wedsync_store::sources::{NewSource, SourceConfig, ip_allowed};

use crate::support::{couple_fields, ctx, operator, org};

fn config() -> SourceConfig {
    SourceConfig {
        generic: None,
        ip_allowlist: vec![],
        rate_per_minute: 100,
        tolerance_seconds: 300,
    }
}

#[tokio::test]
async fn sources_seal_their_secrets_and_rotation_keeps_the_old_one_for_the_grace() {
    let c = ctx().await;
    let org = org(&c.store, "Lens & Lace").await;
    let new =
        NewSource::parse("Svix relay", Provider::StandardWebhooks, config(), None).expect("valid");
    let (source, secret) = c
        .store
        .create_source(&org.id, new, &operator())
        .await
        .expect("create");
    assert!(
        secret.starts_with("whsec_"),
        "a Standard Webhooks secret is generated"
    );
    assert_eq!(source.inbound_path, format!("/v1/inbound/{}", source.id));
    let listed =
        serde_json::to_string(&c.store.list_sources(&org.id).await.expect("list")).expect("json");
    assert!(!listed.contains(&secret[6..]), "secrets never come back");
    let audit = serde_json::to_string(
        &c.store
            .audit_entries(&org.id, None, 10)
            .await
            .expect("audit"),
    )
    .expect("json");
    assert!(!audit.contains(&secret[6..]), "nor into the audit log");
    let raw = wedsync_store::testing::execute_raw(&c.store, "SELECT 1").await;
    assert!(raw.is_ok());

    let verifying = c
        .store
        .source_for_verification(&source.id)
        .await
        .expect("load")
        .expect("exists");
    assert_eq!(
        verifying.valid_secrets(c.clock_now()),
        vec![secret.as_bytes()]
    );

    let (_, rotated) = c
        .store
        .rotate_source_secret(&org.id, &source.id, None, TimeDelta::hours(24), &operator())
        .await
        .expect("rotate");
    let both = c
        .store
        .source_for_verification(&source.id)
        .await
        .expect("load")
        .expect("exists");
    assert_eq!(
        both.valid_secrets(c.clock_now()),
        vec![rotated.as_bytes(), secret.as_bytes()]
    );
    c.clock.advance(TimeDelta::hours(24));
    let after = c
        .store
        .source_for_verification(&source.id)
        .await
        .expect("load")
        .expect("exists");
    assert_eq!(
        after.valid_secrets(c.clock_now()),
        vec![rotated.as_bytes()],
        "the old secret expires after the grace"
    );
    assert_eq!(
        both.valid_secrets(c.clock_now()),
        vec![rotated.as_bytes()],
        "even in a copy loaded before it expired"
    );

    // Another organisation cannot see or rotate it.
    let other = crate::support::org(&c.store, "Petal & Stem").await;
    assert!(matches!(
        c.store.get_source(&other.id, &source.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        c.store
            .rotate_source_secret(
                &other.id,
                &source.id,
                None,
                TimeDelta::hours(1),
                &operator()
            )
            .await,
        Err(StoreError::NotFound)
    ));
}

#[tokio::test]
async fn provider_issued_secrets_must_be_given_and_settings_are_checked() {
    let err =
        NewSource::parse("Stripe", Provider::Stripe, config(), None).expect_err("needs a secret");
    assert_eq!(err.0[0].field, "secret");
    let mut bad = config();
    bad.ip_allowlist = vec!["10.0.0.0/33".into()];
    bad.rate_per_minute = 0;
    let err =
        NewSource::parse("Zap", Provider::Zapier, bad, Some("s".into())).expect_err("invalid");
    let fields: Vec<_> = err.0.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["generic", "ip_allowlist[0]", "rate_per_minute"]);
    let allow = vec!["203.0.113.0/24".to_owned(), "2001:db8::1".to_owned()];
    assert!(ip_allowed(&allow, "203.0.113.9".parse().expect("ip")));
    assert!(
        ip_allowed(&allow, "::ffff:203.0.113.9".parse().expect("ip")),
        "IPv4-mapped IPv6"
    );
    assert!(!ip_allowed(&allow, "198.51.100.1".parse().expect("ip")));
    assert!(
        ip_allowed(&[], "198.51.100.1".parse().expect("ip")),
        "no list allows any"
    );
}

fn request(
    source: &wedsync_store::sources::Source,
    org: wedsync_core::id::OrgId,
    key: &str,
) -> IncomingRequest {
    IncomingRequest {
        source_id: source.id,
        org_id: org,
        headers: vec![("content-type".into(), "application/json".into())],
        content_type: "application/json".into(),
        body: br#"{"id":"evt_1","type":"payment_intent.succeeded"}"#.to_vec(),
        dedupe_key: key.into(),
    }
}

/// A Stripe source of `org`'s, signing with `whsec_test`.
async fn stripe_source(
    store: &wedsync_store::Store,
    org: &wedsync_core::id::OrgId,
) -> wedsync_store::sources::Source {
    let new = NewSource::parse(
        "Stripe",
        Provider::Stripe,
        config(),
        Some("whsec_test".into()),
    )
    .expect("valid");
    store
        .create_source(org, new, &operator())
        .await
        .expect("source")
        .0
}

#[tokio::test]
async fn ingest_stores_once_links_the_couple_and_routes_todays_wedding_first() {
    let c = ctx().await;
    let org = org(&c.store, "Lens & Lace").await;
    let other = crate::support::org(&c.store, "Petal & Stem").await;
    let source = stripe_source(&c.store, &org.id).await;
    let today = c
        .store
        .create_couple(&org.id, couple_fields("2026-05-01"), &operator())
        .await
        .expect("couple");
    let foreign = c
        .store
        .create_couple(&other.id, couple_fields("2026-05-01"), &operator())
        .await
        .expect("couple");
    let event = |couple: &str| NewEvent {
        event_type: "payment.completed".into(),
        subject: Some("pi_1".into()),
        time: c.clock_now(),
        data: serde_json::json!({ "amount_minor": 50000, "currency": "GBP" }),
        couple_ref: Some(couple.to_owned()),
        booking_ref: None,
    };
    let first = c
        .store
        .ingest(
            request(&source, org.id, "stripe:evt_1"),
            vec![event(&today.id.to_string())],
        )
        .await
        .expect("ingest");
    let Ingested::Accepted {
        request_id,
        event_ids,
    } = first
    else {
        panic!("accepted")
    };
    let again = c
        .store
        .ingest(
            request(&source, org.id, "stripe:evt_1"),
            vec![event(&today.id.to_string())],
        )
        .await
        .expect("ingest");
    assert_eq!(
        again,
        Ingested::Duplicate {
            request_id: request_id.clone()
        }
    );

    let (cloud, raw) = c
        .store
        .get_event(&org.id, &event_ids[0])
        .await
        .expect("event");
    assert_eq!(cloud.specversion, "1.0");
    assert_eq!(cloud.source, format!("/sources/{}", source.id));
    assert_eq!(cloud.coupleid, Some(today.id.to_string()));
    assert_eq!(
        raw.body,
        r#"{"id":"evt_1","type":"payment_intent.succeeded"}"#
    );
    assert_eq!(raw.body_encoding, "utf8");
    // A reference to another organisation's couple is not linked.
    let second = c
        .store
        .ingest(
            request(&source, org.id, "stripe:evt_2"),
            vec![event(&foreign.id.to_string())],
        )
        .await
        .expect("ingest");
    let Ingested::Accepted {
        event_ids: ids2, ..
    } = second
    else {
        panic!("accepted")
    };
    assert_eq!(
        c.store
            .get_event(&org.id, &ids2[0])
            .await
            .expect("event")
            .0
            .coupleid,
        None
    );
    assert!(matches!(
        c.store.get_event(&other.id, &ids2[0]).await,
        Err(StoreError::NotFound)
    ));

    // The route job for today's wedding carries the wedding-day priority.
    let jobs = c
        .store
        .list_jobs(
            Some(&org.id),
            &wedsync_store::queue::JobFilter {
                state: None,
                kind: Some(wedsync_store::inbound::ROUTE_KIND.into()),
            },
            &Default::default(),
        )
        .await
        .expect("jobs");
    assert_eq!(jobs.data.len(), 2);
    assert_eq!(
        jobs.data[0].priority,
        wedsync_core::calendar::PRIORITY_WEDDING_TODAY
    );
    assert_eq!(
        jobs.data[1].priority,
        wedsync_core::calendar::PRIORITY_NORMAL
    );

    let filtered = c
        .store
        .list_events(
            &org.id,
            &EventFilter {
                subject: Some("pi_1".into()),
                event_type: Some("payment.completed".into()),
                ..Default::default()
            },
            &Default::default(),
        )
        .await
        .expect("list");
    assert_eq!(filtered.data.len(), 2);
    let replay_job = c
        .store
        .replay_event(&org.id, &event_ids[0], &operator())
        .await
        .expect("replay");
    assert!(replay_job.starts_with("job_"));
    assert_eq!(
        c.store
            .audit_entries(&org.id, None, 1)
            .await
            .expect("audit")[0]
            .action,
        "event.replay"
    );
}

#[tokio::test]
async fn a_group_commit_stores_all_or_nothing_and_spots_duplicates_within_it() {
    let c = ctx().await;
    let org = org(&c.store, "Lens & Lace").await;
    let source = stripe_source(&c.store, &org.id).await;
    let ev = || bare_event("payment.completed", c.clock_now());
    let out = c
        .store
        .ingest_many(vec![
            (request(&source, org.id, "stripe:a"), vec![ev()]),
            (request(&source, org.id, "stripe:b"), vec![ev()]),
            (request(&source, org.id, "stripe:a"), vec![ev()]),
        ])
        .await
        .expect("batch");
    assert!(
        matches!(out[0], Ingested::Accepted { .. }) && matches!(out[1], Ingested::Accepted { .. })
    );
    let Ingested::Accepted {
        request_id: first, ..
    } = &out[0]
    else {
        panic!("accepted")
    };
    assert_eq!(
        out[2],
        Ingested::Duplicate {
            request_id: first.clone()
        },
        "a duplicate inside the same batch"
    );

    // A batch that cannot be stored stores nothing of it: its senders are all told to retry.
    let mut unknown = request(&source, org.id, "stripe:c");
    unknown.source_id = "src_0193f0c0000070008000000000000000".parse().expect("id");
    let failed = c
        .store
        .ingest_many(vec![
            (request(&source, org.id, "stripe:d"), vec![ev()]),
            (unknown, vec![ev()]),
        ])
        .await;
    assert!(failed.is_err());
    let d = c
        .store
        .ingest(request(&source, org.id, "stripe:d"), vec![ev()])
        .await
        .expect("retry");
    assert!(
        matches!(d, Ingested::Accepted { .. }),
        "stripe:d was not half-stored by the failed batch"
    );
}

#[tokio::test]
async fn a_batch_failing_after_its_requests_are_written_keeps_none_of_them() {
    // The batch's statements go to the database in one hand-off on SQLite: a failure in a
    // later one (here the events insert, made to fail by a trigger) must undo the requests
    // the first one wrote, so their senders' retries are accepted, not called duplicates.
    let c = ctx().await;
    let org = org(&c.store, "Lens & Lace").await;
    let source = stripe_source(&c.store, &org.id).await;
    let trigger = match c.store.backend() {
        wedsync_store::Backend::Sqlite => vec![
            "CREATE TRIGGER explode BEFORE INSERT ON events WHEN NEW.event_type = 'test.explode' \
             BEGIN SELECT RAISE(ABORT, 'boom'); END",
        ],
        _ => vec![
            "CREATE FUNCTION explode() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             IF NEW.event_type = 'test.explode' THEN RAISE EXCEPTION 'boom'; END IF; RETURN NEW; END $$",
            "CREATE TRIGGER explode BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION explode()",
        ],
    };
    for sql in trigger {
        wedsync_store::testing::execute_raw(&c.store, sql)
            .await
            .expect("trigger");
    }
    let ev = |event_type: &str| bare_event(event_type, c.clock_now());
    let failed = c
        .store
        .ingest_many(vec![
            (
                request(&source, org.id, "stripe:ok"),
                vec![ev("payment.completed")],
            ),
            (
                request(&source, org.id, "stripe:bad"),
                vec![ev("test.explode")],
            ),
        ])
        .await;
    assert!(failed.is_err(), "the events insert failed");
    for table in [
        "inbound_requests",
        "events",
        "jobs WHERE kind = 'event.route'",
    ] {
        let n = wedsync_store::testing::query_i64(
            &c.store,
            &format!("SELECT COUNT(*) AS n FROM {table}"),
        )
        .await
        .expect("count");
        assert_eq!(n, 0, "nothing of the batch is left in {table}");
    }
    let retried = c
        .store
        .ingest(
            request(&source, org.id, "stripe:ok"),
            vec![ev("payment.completed")],
        )
        .await
        .expect("retry");
    let Ingested::Accepted { event_ids, .. } = retried else {
        panic!("the retry is new, not a duplicate: {retried:?}")
    };
    assert_eq!(event_ids.len(), 1);
    let jobs = wedsync_store::testing::query_i64(
        &c.store,
        "SELECT COUNT(*) AS n FROM jobs WHERE kind = 'event.route' AND state = 'ready'",
    )
    .await
    .expect("count");
    assert_eq!(jobs, 1, "and its routing job is queued");
}

#[tokio::test]
async fn the_dedupe_window_ends_with_retention_but_unrouted_events_are_never_pruned() {
    let c = ctx().await;
    let org = org(&c.store, "Lens & Lace").await;
    let source = stripe_source(&c.store, &org.id).await;
    let event = || NewEvent {
        event_type: "payment.completed".into(),
        subject: Some("pi_1".into()),
        time: c.clock_now(),
        data: serde_json::json!({ "amount_minor": 50000 }),
        couple_ref: None,
        booking_ref: None,
    };
    let accepted = |i: Ingested| match i {
        Ingested::Accepted { event_ids, .. } => event_ids,
        other => panic!("expected accepted, got {other:?}"),
    };
    let routed = accepted(
        c.store
            .ingest(request(&source, org.id, "stripe:evt_old"), vec![event()])
            .await
            .expect("ingest"),
    );
    c.store.mark_routed(&routed[0]).await.expect("routed");
    let unrouted = accepted(
        c.store
            .ingest(request(&source, org.id, "stripe:evt_stuck"), vec![event()])
            .await
            .expect("ingest"),
    );
    c.clock.advance(TimeDelta::days(10));
    let recent = accepted(
        c.store
            .ingest(request(&source, org.id, "stripe:evt_new"), vec![event()])
            .await
            .expect("ingest"),
    );
    c.store.mark_routed(&recent[0]).await.expect("routed");

    // Inside the window nothing goes and a redelivery is still a duplicate.
    let cutoff = c.clock_now() - TimeDelta::days(30);
    assert_eq!(c.store.prune_inbound(cutoff).await.expect("prune"), 0);
    c.clock.advance(TimeDelta::days(25));
    assert!(matches!(
        c.store
            .ingest(request(&source, org.id, "stripe:evt_old"), vec![event()])
            .await
            .expect("ingest"),
        Ingested::Duplicate { .. }
    ));

    // 35 days on, the routed old request goes; the unrouted one and the recent one stay.
    let cutoff = c.clock_now() - TimeDelta::days(30);
    assert_eq!(c.store.prune_inbound(cutoff).await.expect("prune"), 1);
    assert!(matches!(
        c.store.get_event(&org.id, &routed[0]).await,
        Err(StoreError::NotFound)
    ));
    c.store
        .get_event(&org.id, &unrouted[0])
        .await
        .expect("an unrouted event is kept");
    c.store
        .get_event(&org.id, &recent[0])
        .await
        .expect("a recent event is kept");
    // After the window a redelivery of the pruned event is new again.
    accepted(
        c.store
            .ingest(request(&source, org.id, "stripe:evt_old"), vec![event()])
            .await
            .expect("ingest"),
    );
}

#[tokio::test]
async fn a_large_batch_is_stored_set_wise_with_every_outcome_in_order() {
    let c = ctx().await;
    let org = org(&c.store, "Lens & Lace").await;
    let other = crate::support::org(&c.store, "Petal & Stem").await;
    let source = stripe_source(&c.store, &org.id).await;
    let booking = |org: wedsync_core::id::OrgId| {
        let store = c.store.clone();
        async move {
            let couple = store
                .create_couple(&org, couple_fields("2027-06-12"), &operator())
                .await
                .expect("couple");
            let input: wedsync_core::booking::BookingInput =
                serde_json::from_value(serde_json::json!({
                    "couple_id": couple.id.to_string(),
                    "service": "Photography",
                    "starts_at": "2027-06-12T10:00:00Z",
                    "ends_at": "2027-06-12T18:00:00Z",
                    "value": {"amount_minor": 100, "currency": "GBP"}
                }))
                .expect("shape");
            store
                .create_booking(
                    &org,
                    &couple.id,
                    input.validate().expect("valid"),
                    &operator(),
                )
                .await
                .expect("booking")
                .id
                .to_string()
        }
    };
    let ours = booking(org.id).await;
    let theirs = booking(other.id).await;
    let ev = |booking: Option<&String>| NewEvent {
        event_type: "booking.updated".into(),
        subject: None,
        time: c.clock_now(),
        data: serde_json::json!({}),
        couple_ref: None,
        booking_ref: booking.cloned(),
    };
    let Ingested::Accepted {
        request_id: old,
        event_ids: old_events,
    } = c
        .store
        .ingest(request(&source, org.id, "stripe:old"), vec![ev(None)])
        .await
        .expect("ingest")
    else {
        panic!("accepted")
    };

    // More requests than one multi-row statement takes, with a stored key twice, a repeat
    // within the batch, and events naming our booking, another organisation's, or none.
    let mut batch: Vec<(IncomingRequest, Vec<NewEvent>)> = (0..620)
        .map(|i| {
            let events = match i % 3 {
                0 => vec![ev(Some(&ours))],
                1 => vec![ev(Some(&theirs)), ev(None)],
                _ => vec![],
            };
            (request(&source, org.id, &format!("stripe:{i}")), events)
        })
        .collect();
    batch.insert(7, (request(&source, org.id, "stripe:old"), vec![ev(None)]));
    batch.push((request(&source, org.id, "stripe:old"), vec![ev(None)]));
    batch.push((request(&source, org.id, "stripe:3"), vec![ev(None)]));
    let out = c.store.ingest_many(batch).await.expect("batch");
    assert_eq!(out.len(), 623);
    let accepted: Vec<&Ingested> = out
        .iter()
        .filter(|o| matches!(o, Ingested::Accepted { .. }))
        .collect();
    assert_eq!(accepted.len(), 620);
    assert_eq!(
        out[7],
        Ingested::Duplicate {
            request_id: old.clone()
        }
    );
    assert_eq!(out[621], Ingested::Duplicate { request_id: old });
    let Ingested::Accepted {
        request_id: third,
        event_ids,
    } = &out[3]
    else {
        panic!("stripe:3 is accepted where it first appears")
    };
    assert_eq!(
        out[622],
        Ingested::Duplicate {
            request_id: third.clone()
        }
    );
    assert_eq!(event_ids.len(), 1);
    // Each request's events, in order, with only our own booking linked.
    let Ingested::Accepted {
        event_ids: first, ..
    } = &out[0]
    else {
        panic!("accepted")
    };
    let Ingested::Accepted {
        event_ids: second, ..
    } = &out[1]
    else {
        panic!("accepted")
    };
    assert_eq!(second.len(), 2);
    let linked = |id: &String| {
        let store = c.store.clone();
        let (org, id) = (org.id, id.clone());
        async move { store.get_event(&org, &id).await.expect("event").0.bookingid }
    };
    assert_eq!(linked(&first[0]).await, Some(ours));
    assert_eq!(
        linked(&second[0]).await,
        None,
        "another organisation's booking"
    );
    let total: usize = out
        .iter()
        .map(|o| match o {
            Ingested::Accepted { event_ids, .. } => event_ids.len(),
            Ingested::Duplicate { .. } => 0,
        })
        .sum();
    assert_eq!(total, 207 + 2 * 207);
    // Routing jobs list the batch's new events, each exactly once, at most 256 a job: one
    // job for the first ingest and three for the batch's 621 events.
    let jobs = c
        .store
        .list_jobs(
            Some(&org.id),
            &wedsync_store::queue::JobFilter {
                state: None,
                kind: Some(wedsync_store::inbound::ROUTE_KIND.into()),
            },
            &wedsync_store::page::PageRequest {
                limit: Some(100),
                after: None,
            },
        )
        .await
        .expect("jobs");
    assert_eq!(jobs.data.len(), 4);
    let mut routed: Vec<String> = jobs
        .data
        .iter()
        .flat_map(|j| {
            let ids = j.payload["event_ids"].as_array().expect("event_ids");
            assert!(!ids.is_empty() && ids.len() <= 256, "{} events", ids.len());
            ids.iter().map(|id| id.as_str().expect("text").to_owned())
        })
        .collect();
    routed.sort();
    let mut stored: Vec<String> = out
        .iter()
        .flat_map(|o| match o {
            Ingested::Accepted { event_ids, .. } => event_ids.clone(),
            Ingested::Duplicate { .. } => Vec::new(),
        })
        .collect();
    stored.extend(old_events);
    stored.sort();
    assert_eq!(
        routed, stored,
        "every new event is routed by exactly one job"
    );
}

#[tokio::test]
async fn a_batch_gets_one_routing_job_per_organisation_and_priority_and_each_routes_its_events() {
    use wedsync_store::worker::JobHandler;
    let c = ctx().await;
    let org = org(&c.store, "Lens & Lace").await;
    let other = crate::support::org(&c.store, "Petal & Stem").await;
    let ours = stripe_source(&c.store, &org.id).await;
    let theirs = stripe_source(&c.store, &other.id).await;
    let couple = |date: &'static str| {
        let store = c.store.clone();
        async move {
            store
                .create_couple(&org.id, couple_fields(date), &operator())
                .await
                .expect("couple")
                .id
                .to_string()
        }
    };
    let (today, later) = (couple("2026-05-01").await, couple("2027-06-05").await);
    let ev = |couple: Option<&String>| NewEvent {
        event_type: "payment.completed".into(),
        subject: Some("pi_1".into()),
        time: c.clock_now(),
        data: serde_json::json!({ "amount_minor": 100 }),
        couple_ref: couple.cloned(),
        booking_ref: None,
    };
    let out = c
        .store
        .ingest_many(vec![
            (request(&ours, org.id, "stripe:a"), vec![ev(Some(&later))]),
            (request(&ours, org.id, "stripe:b"), vec![ev(Some(&today))]),
            (request(&theirs, other.id, "stripe:c"), vec![ev(None)]),
            (request(&ours, org.id, "stripe:d"), vec![ev(None), ev(None)]),
            (request(&ours, org.id, "stripe:a"), vec![ev(Some(&later))]),
        ])
        .await
        .expect("batch");
    let ids = |i: usize| match &out[i] {
        Ingested::Accepted { event_ids, .. } => event_ids.clone(),
        other => panic!("accepted: {other:?}"),
    };
    assert!(matches!(out[4], Ingested::Duplicate { .. }));

    // Claimed highest priority first: today's wedding, then each organisation's routine
    // events in arrival order.
    let jobs = c
        .store
        .claim(
            "w",
            wedsync_store::inbound::ROUTE_KIND,
            10,
            TimeDelta::minutes(1),
        )
        .await
        .expect("claim");
    let listed = |j: &wedsync_store::queue::Job| -> Vec<String> {
        serde_json::from_value(j.payload["event_ids"].clone()).expect("event_ids")
    };
    assert_eq!(jobs.len(), 3, "{jobs:?}");
    assert_eq!(
        jobs[0].priority,
        wedsync_core::calendar::PRIORITY_WEDDING_TODAY
    );
    assert_eq!(listed(&jobs[0]), ids(1));
    assert_eq!(jobs[0].org_id.as_deref(), Some(org.id.to_string().as_str()));
    let routine: Vec<(Option<String>, Vec<String>)> = jobs[1..]
        .iter()
        .map(|j| {
            assert_eq!(j.priority, wedsync_core::calendar::PRIORITY_NORMAL);
            (j.org_id.clone(), listed(j))
        })
        .collect();
    assert!(routine.contains(&(Some(org.id.to_string()), [ids(0), ids(3)].concat())));
    assert!(routine.contains(&(Some(other.id.to_string()), ids(2))));

    // Each job routes every event it lists; an event that no longer exists is skipped.
    // Events nothing was sent for are marked routed with the job's completion: the pool
    // writes the handler's `on_success` statement with it, as done here.
    use sea_orm::ConnectionTrait as _;
    let handler = wedsync_store::inbound::route_handler(c.store.clone());
    for job in jobs {
        handler.run(job.clone()).await.expect("routed");
        let marks = handler.on_success(&[&job]);
        assert_eq!(marks.len(), 1, "one statement marks the job's events");
        for (sql, values) in marks {
            c.store
                .connection()
                .execute_raw(sea_orm::Statement::from_sql_and_values(
                    c.store.backend(),
                    sql,
                    values,
                ))
                .await
                .expect("marked");
        }
    }
    for (o, i) in [(org.id, 0), (org.id, 1), (other.id, 2), (org.id, 3)] {
        for id in ids(i) {
            let (event, _) = c.store.get_event(&o, &id).await.expect("event");
            assert!(event.routedat.is_some(), "{id} is routed");
        }
    }
    let mut gone = wedsync_store::queue::NewJob::new(
        wedsync_store::inbound::ROUTE_KIND,
        serde_json::json!({ "event_ids": ["evt_gone", ids(0)[0]] }),
    );
    gone.org_id = Some(org.id);
    c.store.enqueue(gone).await.expect("enqueue");
    let mut broken = wedsync_store::queue::NewJob::new(
        wedsync_store::inbound::ROUTE_KIND,
        serde_json::json!({ "event_ids": [7] }),
    );
    broken.priority = -1;
    c.store.enqueue(broken).await.expect("enqueue");
    let jobs = c
        .store
        .claim(
            "w",
            wedsync_store::inbound::ROUTE_KIND,
            10,
            TimeDelta::minutes(1),
        )
        .await
        .expect("claim");
    assert_eq!(jobs.len(), 2);
    let mut jobs = jobs.into_iter();
    handler
        .run(jobs.next().expect("job"))
        .await
        .expect("a missing event is skipped");
    assert!(matches!(
        handler.run(jobs.next().expect("job")).await,
        Err(wedsync_store::worker::JobError::Permanent(_))
    ));
}

#[tokio::test]
async fn a_postgres_batch_wakes_every_nodes_workers_once_it_is_stored() {
    let c = ctx().await;
    if c.store.backend() != sea_orm::DbBackend::Postgres {
        eprintln!("sqlite: workers are woken in process; NOTIFY is PostgreSQL's");
        return;
    }
    let pool = c.store.connection().get_postgres_connection_pool().clone();
    let org = org(&c.store, "Lens & Lace").await;
    let source = stripe_source(&c.store, &org.id).await;
    let mut listener = sea_orm::sqlx::postgres::PgListener::connect_with(&pool)
        .await
        .expect("listener");
    listener
        .listen(wedsync_store::queue::NOTIFY_CHANNEL)
        .await
        .expect("listen");
    let ev = bare_event("payment.completed", c.clock_now());
    c.store
        .ingest(request(&source, org.id, "stripe:1"), vec![ev])
        .await
        .expect("ingest");
    let woken = tokio::time::timeout(std::time::Duration::from_secs(10), listener.recv())
        .await
        .expect("a wake-up arrives")
        .expect("notification");
    assert_eq!(woken.payload(), wedsync_store::inbound::ROUTE_KIND);
}

/// A routing job that a worker pool of this process has room for is inserted already claimed
/// in that pool's name and handed to it, without a claim or a wake-up; one it has no room
/// for is inserted ready (and wakes the workers), and so is every job once the pool stops.
#[tokio::test]
async fn routing_jobs_go_straight_to_a_local_pool_with_room() {
    use wedsync_store::inbound::ROUTE_KIND;
    use wedsync_store::queue::JobState;
    let c = ctx().await;
    let org = org(&c.store, "Lens & Lace").await;
    let source = stripe_source(&c.store, &org.id).await;
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let handler_gate = gate.clone();
    let config = wedsync_store::worker::PoolConfig {
        worker_id: "local".into(),
        // Only a hand-over or a wake-up can start a job within this test.
        idle_poll: std::time::Duration::from_secs(3600),
        reap_every: std::time::Duration::from_secs(3600),
        vacuum_every: None,
        ..Default::default()
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let pool = wedsync_store::worker::WorkerPool::new(c.store.clone(), config)
        .register(
            ROUTE_KIND,
            move |job: wedsync_store::queue::Job| {
                let (seen, gate) = (seen_tx.clone(), handler_gate.clone());
                async move {
                    let _ = seen.send(job);
                    gate.acquire().await.expect("open").forget();
                    Ok(())
                }
            },
            1,
            Default::default(),
        )
        .spawn(stopped);
    let ev = || bare_event("payment.completed", c.clock_now());
    let ingest = |key: &'static str| {
        let (store, source, event) = (c.store.clone(), source.clone(), ev());
        async move {
            let woken = store.woken();
            let mut notified = Box::pin(woken.notified());
            notified.as_mut().enable();
            let out = store
                .ingest(request(&source, org.id, key), vec![event])
                .await
                .expect("ingest");
            let Ingested::Accepted { event_ids, .. } = out else {
                panic!("accepted: {out:?}")
            };
            // Polled once: ready only if a wake-up came during the ingest.
            let woken = tokio::time::timeout(std::time::Duration::ZERO, notified)
                .await
                .is_ok();
            (event_ids, woken)
        }
    };
    let job_of = |events: Vec<String>| {
        let store = c.store.clone();
        async move {
            let all = store
                .list_jobs(
                    None,
                    &wedsync_store::queue::JobFilter {
                        state: None,
                        kind: Some(ROUTE_KIND.into()),
                    },
                    &Default::default(),
                )
                .await
                .expect("jobs")
                .data;
            all.into_iter()
                .find(|j| j.payload["event_ids"] == serde_json::json!(events))
                .expect("a routing job lists the events")
        }
    };
    // Room: inserted claimed by the pool, handed over, nobody woken.
    let (first, woken) = ingest("stripe:1").await;
    assert!(!woken, "a job handed over wakes no one");
    let stored = job_of(first.clone()).await;
    assert_eq!(stored.state, JobState::Running);
    assert_eq!(stored.lease_owner.as_deref(), Some("local"));
    assert_eq!(stored.attempts, 1);
    let running = next_job(&mut seen).await;
    assert_eq!(running.id, stored.id);
    assert_eq!(running.payload["event_ids"], serde_json::json!(first));

    // No room (its one slot is busy): ready, and the workers are woken.
    let (second, woken) = ingest("stripe:2").await;
    assert!(woken, "a ready job wakes the workers");
    let waiting = job_of(second.clone()).await;
    assert_eq!(waiting.state, JobState::Ready);
    assert_eq!(waiting.lease_owner, None);

    // Once the slot is free the pool claims it, as it would any ready job.
    gate.add_permits(1);
    let claimed = next_job(&mut seen).await;
    assert_eq!(claimed.id, waiting.id);
    gate.add_permits(1);

    // A stopped pool takes nothing: the job waits, ready, for the next one.
    stop.send(true).expect("stop");
    pool.await.expect("pool");
    let (third, woken) = ingest("stripe:3").await;
    assert!(woken);
    assert_eq!(job_of(third).await.state, JobState::Ready);
    assert_eq!(job_of(first).await.state, JobState::Succeeded);
    assert_eq!(job_of(second).await.state, JobState::Succeeded);
}

async fn next_job(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<wedsync_store::queue::Job>,
) -> wedsync_store::queue::Job {
    tokio::time::timeout(std::time::Duration::from_secs(30), rx.recv())
        .await
        .expect("in time")
        .expect("open")
}

/// Through a worker pool, as on a node: an event nothing is subscribed to is routed, and
/// marked so with its job's completion (the route handler's `on_success`), not by a write
/// of its own.
#[tokio::test]
async fn a_pool_marks_events_routed_with_the_completion_of_their_job() {
    let c = ctx().await;
    let org = org(&c.store, "Lens & Lace").await;
    let source = stripe_source(&c.store, &org.id).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (ran_tx, mut ran) = tokio::sync::mpsc::unbounded_channel();
    let pool = wedsync_store::worker::WorkerPool::new(
        c.store.clone(),
        wedsync_store::worker::PoolConfig {
            worker_id: "node".into(),
            idle_poll: std::time::Duration::from_secs(3600),
            vacuum_every: None,
            ..Default::default()
        },
    )
    .register(
        wedsync_store::inbound::ROUTE_KIND,
        Signalling {
            inner: wedsync_store::inbound::route_handler(c.store.clone()),
            ran: ran_tx,
        },
        4,
        Default::default(),
    )
    .spawn(stopped);
    let ev = bare_event("payment.completed", c.clock_now());
    let Ingested::Accepted { event_ids, .. } = c
        .store
        .ingest(request(&source, org.id, "stripe:1"), vec![ev])
        .await
        .expect("ingest")
    else {
        panic!("accepted")
    };
    // Once the job has run, stopping the pool waits for its recorder, which writes the
    // completion and the marks.
    tokio::time::timeout(std::time::Duration::from_secs(30), ran.recv())
        .await
        .expect("the routing job ran in time")
        .expect("open");
    stop.send(true).expect("stop");
    pool.await.expect("pool");
    let (event, _) = c
        .store
        .get_event(&org.id, &event_ids[0])
        .await
        .expect("event");
    assert!(event.routedat.is_some(), "routed, and marked so");
}

/// A handler that runs `inner` and says so when an attempt has finished.
struct Signalling<H> {
    inner: H,
    ran: tokio::sync::mpsc::UnboundedSender<()>,
}

impl<H: wedsync_store::worker::JobHandler> wedsync_store::worker::JobHandler for Signalling<H> {
    fn run(&self, job: wedsync_store::queue::Job) -> wedsync_store::worker::JobFuture {
        let attempt = self.inner.run(job);
        let ran = self.ran.clone();
        Box::pin(async move {
            let outcome = attempt.await;
            let _ = ran.send(());
            outcome
        })
    }

    fn on_success(
        &self,
        jobs: &[&wedsync_store::queue::Job],
    ) -> Vec<(String, Vec<sea_orm::Value>)> {
        self.inner.on_success(jobs)
    }
}

/// An in-memory SQLite database lives only as long as its connection, so a failed ingest
/// there rolls back and keeps the connection (a file database's is closed instead): the
/// database and what it held survive, and the next batch is stored.
#[tokio::test]
async fn a_failed_batch_on_an_in_memory_database_keeps_the_database() {
    let (store, org, source) = exploding_sqlite("sqlite::memory:").await;
    let ev = |event_type: &str| bare_event(event_type, chrono::Utc::now());
    let failed = store
        .ingest(
            request(&source, org.id, "stripe:bad"),
            vec![ev("test.explode")],
        )
        .await;
    assert!(failed.is_err());
    // Bounded: a connection left inside the failed transaction would make this wait.
    let stored = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        store.ingest(
            request(&source, org.id, "stripe:ok"),
            vec![ev("payment.completed")],
        ),
    )
    .await
    .expect("not left waiting on the failed transaction")
    .expect("the next batch is stored");
    assert!(matches!(stored, Ingested::Accepted { .. }));
    let requests =
        wedsync_store::testing::query_i64(&store, "SELECT COUNT(*) AS n FROM inbound_requests")
            .await
            .expect("count");
    assert_eq!(requests, 1, "only the good request");
}

/// On a SQLite file, every group-committed batch is written on one dedicated connection
/// (its page and statement caches stay warm): its `total_changes()` counts their rows. A
/// failed batch is rolled back and its connection closed, so the next batch is written on a
/// new connection, whose count starts again.
#[tokio::test]
async fn sqlite_batches_share_one_writer_connection_that_a_failure_replaces() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = wedsync_store::StoreOptions::sqlite_in(dir.path());
    let (store, org, source) = exploding_sqlite(&url).await;
    let writer_changes = |store: wedsync_store::Store| async move {
        wedsync_store::testing::sqlite_writer_changes(&store)
            .await
            .expect("total_changes")
            .expect("sqlite")
    };
    let ev = |event_type: &str| bare_event(event_type, chrono::Utc::now());
    for i in 0..3 {
        store
            .ingest(
                request(&source, org.id, &format!("stripe:ok{i}")),
                vec![ev("payment.completed")],
            )
            .await
            .expect("stored");
    }
    // Each batch inserts its request, its event and its routing job.
    let before = writer_changes(store.clone()).await;
    assert!(
        before >= 6,
        "three batches were written on the writer connection: {before} rows"
    );
    let failed = store
        .ingest(
            request(&source, org.id, "stripe:bad"),
            vec![ev("test.explode")],
        )
        .await;
    assert!(failed.is_err());
    let stored = store
        .ingest(
            request(&source, org.id, "stripe:after"),
            vec![ev("payment.completed")],
        )
        .await
        .expect("the next batch is stored");
    assert!(matches!(stored, Ingested::Accepted { .. }));
    let after = writer_changes(store.clone()).await;
    assert!(
        (2..=3).contains(&after),
        "the batch after the failure was written on a new connection: {after} rows"
    );
    let requests =
        wedsync_store::testing::query_i64(&store, "SELECT COUNT(*) AS n FROM inbound_requests")
            .await
            .expect("count");
    assert_eq!(requests, 4, "the failed batch left nothing");
}

/// A migrated SQLite store at `url` with an organisation and a Stripe source, where an
/// event of type `test.explode` makes its batch's transaction fail.
async fn exploding_sqlite(
    url: &str,
) -> (
    wedsync_store::Store,
    wedsync_core::org::Organization,
    wedsync_store::sources::Source,
) {
    let store = wedsync_store::Store::connect(
        &wedsync_store::StoreOptions::new(url),
        std::sync::Arc::new(wedsync_core::clock::SystemClock),
    )
    .await
    .expect("connect")
    .with_master_key(wedsync_store::secrets::MasterKey::generate());
    store.migrate().await.expect("migrate");
    let org = org(&store, "Lens & Lace").await;
    let source = stripe_source(&store, &org.id).await;
    wedsync_store::testing::execute_raw(
        &store,
        "CREATE TRIGGER explode BEFORE INSERT ON events WHEN NEW.event_type = 'test.explode' \
         BEGIN SELECT RAISE(ABORT, 'boom'); END",
    )
    .await
    .expect("trigger");
    (store, org, source)
}

/// An event of `event_type` at `time` with no data and no couple or booking named.
fn bare_event(event_type: &str, time: chrono::DateTime<chrono::Utc>) -> NewEvent {
    NewEvent {
        event_type: event_type.into(),
        subject: None,
        time,
        data: serde_json::json!({}),
        couple_ref: None,
        booking_ref: None,
    }
}

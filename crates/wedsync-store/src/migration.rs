//! The one migration set, run on SQLite and PostgreSQL alike.
//!
//! Migrations are written with sea-query's schema builder so each backend gets its own
//! dialect from the same code. Where a backend needs its own statement (triggers), the
//! migration says so and covers both. Migrations are append-only: never edit a released one.

use sea_orm::DbBackend;
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

/// The ordered list of migrations this binary knows.
pub struct Migrator;

#[sea_orm_migration::async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_foundation::Migration),
            Box::new(m0002_durable_work::Migration),
            Box::new(m0003_inbound::Migration),
            Box::new(m0004_outbound::Migration),
            Box::new(m0005_notifications::Migration),
            Box::new(m0006_journeys::Migration),
            Box::new(m0007_journey_instances::Migration),
            Box::new(m0008_timers::Migration),
            Box::new(m0009_booking_journeys::Migration),
            Box::new(m0010_crm_connections::Migration),
        ]
    }
}

/// Builds a foreign key from `from_cols` of `from_table` to `to_cols` of `to_table`.
fn fk(
    name: &str,
    from_table: &str,
    from_cols: &[&'static str],
    to_table: &str,
    to_cols: &[&'static str],
) -> ForeignKeyCreateStatement {
    let mut fk = ForeignKey::create();
    fk.name(name)
        .from_tbl(Alias::new(from_table))
        .to_tbl(Alias::new(to_table))
        .on_delete(ForeignKeyAction::Restrict);
    for col in from_cols {
        fk.from_col(Alias::new(*col));
    }
    for col in to_cols {
        fk.to_col(Alias::new(*col));
    }
    fk
}

/// Builds an index over `cols` of `table`.
fn index(name: &str, table: &str, cols: &[&'static str], unique: bool) -> IndexCreateStatement {
    let mut idx = Index::create();
    idx.name(name).table(Alias::new(table));
    for col in cols {
        idx.col(Alias::new(*col));
    }
    if unique {
        idx.unique();
    }
    idx
}

mod m0001_foundation {
    use super::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m0001_foundation"
        }
    }

    #[sea_orm_migration::async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .create_table(
                    Table::create()
                        .table(Alias::new("organizations"))
                        .col(string("id").primary_key())
                        .col(text("name"))
                        .col(string("time_zone"))
                        .col(string("tier"))
                        .col(string("country"))
                        .col(string("currency"))
                        .col(big_integer("created_at"))
                        .col(big_integer("updated_at"))
                        .to_owned(),
                )
                .await?;

            manager
                .create_table(
                    Table::create()
                        .table(Alias::new("members"))
                        .col(string("id").primary_key())
                        .col(string("org_id"))
                        .col(string("email"))
                        .col(text("name"))
                        .col(string("role"))
                        .col(big_integer("created_at"))
                        .col(big_integer("updated_at"))
                        .foreign_key(&mut fk(
                            "fk_members_org",
                            "members",
                            &["org_id"],
                            "organizations",
                            &["id"],
                        ))
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(index(
                    "ux_members_org_email",
                    "members",
                    &["org_id", "email"],
                    true,
                ))
                .await?;

            manager
                .create_table(
                    Table::create()
                        .table(Alias::new("api_keys"))
                        .col(string("id").primary_key())
                        .col(string("org_id"))
                        .col(text("name"))
                        .col(string("role"))
                        .col(string("display_prefix"))
                        .col(string("key_hash").unique_key())
                        .col(string("created_by"))
                        .col(big_integer("created_at"))
                        .col(big_integer_null("last_used_at"))
                        .col(big_integer_null("revoked_at"))
                        .foreign_key(&mut fk(
                            "fk_api_keys_org",
                            "api_keys",
                            &["org_id"],
                            "organizations",
                            &["id"],
                        ))
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(index(
                    "ix_api_keys_org",
                    "api_keys",
                    &["org_id", "id"],
                    false,
                ))
                .await?;

            manager
                .create_table(
                    Table::create()
                        .table(Alias::new("couples"))
                        .col(string("id").primary_key())
                        .col(string("org_id"))
                        .col(text("partner_a_name"))
                        .col(text_null("partner_a_email"))
                        .col(string_null("partner_a_phone"))
                        .col(string("partner_a_channel"))
                        .col(text("partner_b_name"))
                        .col(text_null("partner_b_email"))
                        .col(string_null("partner_b_phone"))
                        .col(string("partner_b_channel"))
                        .col(date("wedding_date"))
                        .col(string("time_zone"))
                        .col(text_null("venue_name"))
                        .col(text_null("venue_address"))
                        .col(double_null("venue_latitude"))
                        .col(double_null("venue_longitude"))
                        .col(text_null("notes"))
                        .col(big_integer("created_at"))
                        .col(big_integer("updated_at"))
                        .foreign_key(&mut fk(
                            "fk_couples_org",
                            "couples",
                            &["org_id"],
                            "organizations",
                            &["id"],
                        ))
                        .to_owned(),
                )
                .await?;
            // The composite unique key lets bookings reference (org_id, id), so the database
            // itself refuses a booking that points at another organisation's couple.
            manager
                .create_index(index(
                    "ux_couples_org_id",
                    "couples",
                    &["org_id", "id"],
                    true,
                ))
                .await?;
            manager
                .create_index(index(
                    "ix_couples_org_date",
                    "couples",
                    &["org_id", "wedding_date"],
                    false,
                ))
                .await?;

            manager
                .create_table(
                    Table::create()
                        .table(Alias::new("bookings"))
                        .col(string("id").primary_key())
                        .col(string("org_id"))
                        .col(string("couple_id"))
                        .col(text("service"))
                        .col(big_integer("starts_at"))
                        .col(big_integer("ends_at"))
                        .col(string("status"))
                        .col(big_integer("amount_minor"))
                        .col(string("currency"))
                        .col(text_null("notes"))
                        .col(big_integer("created_at"))
                        .col(big_integer("updated_at"))
                        .foreign_key(&mut fk(
                            "fk_bookings_org",
                            "bookings",
                            &["org_id"],
                            "organizations",
                            &["id"],
                        ))
                        .foreign_key(&mut fk(
                            "fk_bookings_couple",
                            "bookings",
                            &["org_id", "couple_id"],
                            "couples",
                            &["org_id", "id"],
                        ))
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(index(
                    "ix_bookings_org_starts",
                    "bookings",
                    &["org_id", "starts_at"],
                    false,
                ))
                .await?;
            manager
                .create_index(index(
                    "ix_bookings_org_couple",
                    "bookings",
                    &["org_id", "couple_id"],
                    false,
                ))
                .await?;

            manager
                .create_table(
                    Table::create()
                        .table(Alias::new("audit_log"))
                        .col(string("org_id"))
                        .col(big_integer("seq"))
                        .col(string("id").unique_key())
                        .col(big_integer("at"))
                        .col(text("actor"))
                        .col(string("action"))
                        .col(string("target_type"))
                        .col(string("target_id"))
                        .col(text_null("before"))
                        .col(text_null("after"))
                        .col(string("prev_hash"))
                        .col(string("hash"))
                        .primary_key(
                            Index::create()
                                .col(Alias::new("org_id"))
                                .col(Alias::new("seq")),
                        )
                        .foreign_key(&mut fk(
                            "fk_audit_org",
                            "audit_log",
                            &["org_id"],
                            "organizations",
                            &["id"],
                        ))
                        .to_owned(),
                )
                .await?;
            manager
                .create_table(
                    Table::create()
                        .table(Alias::new("audit_heads"))
                        .col(string("org_id").primary_key())
                        .col(big_integer("seq"))
                        .col(string("hash"))
                        .foreign_key(&mut fk(
                            "fk_audit_heads_org",
                            "audit_heads",
                            &["org_id"],
                            "organizations",
                            &["id"],
                        ))
                        .to_owned(),
                )
                .await?;

            manager
                .create_table(
                    Table::create()
                        .table(Alias::new("outbox"))
                        .col(string("id").primary_key())
                        .col(string("org_id"))
                        .col(string("event_type"))
                        .col(string("subject"))
                        .col(text("data"))
                        .col(big_integer("occurred_at"))
                        .col(big_integer_null("published_at"))
                        .foreign_key(&mut fk(
                            "fk_outbox_org",
                            "outbox",
                            &["org_id"],
                            "organizations",
                            &["id"],
                        ))
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(index(
                    "ix_outbox_unpublished",
                    "outbox",
                    &["published_at", "id"],
                    false,
                ))
                .await?;

            // The audit log is append-only in the database too, so a bug (or a careless
            // operator with a SQL shell) cannot rewrite history without first dropping these
            // triggers; `wedsync audit verify` catches anyone who does.
            let db = manager.get_connection();
            match manager.get_database_backend() {
                DbBackend::Sqlite => {
                    db.execute_unprepared(
                        "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log \
                         BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
                    )
                    .await?;
                    db.execute_unprepared(
                        "CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log \
                         BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
                    )
                    .await?;
                }
                DbBackend::Postgres => {
                    db.execute_unprepared(
                        "CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS \
                         $$ BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$",
                    )
                    .await?;
                    db.execute_unprepared(
                        "CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log \
                         FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()",
                    )
                    .await?;
                }
                other => {
                    return Err(DbErr::Migration(format!("unsupported backend {other:?}")));
                }
            }
            Ok(())
        }
    }
}

mod m0002_durable_work {
    use super::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m0002_durable_work"
        }
    }

    #[sea_orm_migration::async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .create_table(
                    Table::create()
                        .table(Alias::new("jobs"))
                        .col(string("id").primary_key())
                        .col(string_null("org_id"))
                        .col(string("kind"))
                        .col(text("payload"))
                        .col(integer("priority"))
                        .col(string("state"))
                        .col(big_integer("run_at"))
                        .col(integer("attempts"))
                        .col(integer("max_attempts"))
                        .col(string_null("dedupe_key").unique_key())
                        .col(string_null("lease_owner"))
                        .col(big_integer_null("lease_expires_at"))
                        .col(text_null("last_error"))
                        .col(big_integer("created_at"))
                        .col(big_integer("updated_at"))
                        .col(big_integer_null("finished_at"))
                        .foreign_key(&mut fk(
                            "fk_jobs_org",
                            "jobs",
                            &["org_id"],
                            "organizations",
                            &["id"],
                        ))
                        .to_owned(),
                )
                .await?;
            // Partial indexes: a row is in the claim index only while ready and in the lease
            // index only while running, so each state change touches as few index entries as
            // possible (write amplification is the cost of a queue in a table).
            manager
                .create_index(
                    Index::create()
                        .name("ix_jobs_claim")
                        .table(Alias::new("jobs"))
                        .col(Alias::new("kind"))
                        .col((Alias::new("priority"), IndexOrder::Desc))
                        .col(Alias::new("run_at"))
                        .col(Alias::new("id"))
                        .and_where(Expr::col(Alias::new("state")).eq("ready"))
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(
                    Index::create()
                        .name("ix_jobs_lease")
                        .table(Alias::new("jobs"))
                        .col(Alias::new("lease_expires_at"))
                        .and_where(Expr::col(Alias::new("state")).eq("running"))
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(
                    Index::create()
                        .name("ix_jobs_finished")
                        .table(Alias::new("jobs"))
                        .col(Alias::new("finished_at"))
                        .and_where(Expr::col(Alias::new("finished_at")).is_not_null())
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(index("ix_jobs_org", "jobs", &["org_id", "id"], false))
                .await?;

            manager
                .create_table(
                    Table::create()
                        .table(Alias::new("breakers"))
                        .col(string("org_id"))
                        .col(string("target"))
                        .col(string("state"))
                        .col(integer("consecutive_failures"))
                        .col(big_integer_null("opened_at"))
                        .col(big_integer_null("probe_at"))
                        .col(big_integer_null("probe_started_at"))
                        .col(big_integer("updated_at"))
                        .primary_key(
                            Index::create()
                                .col(Alias::new("org_id"))
                                .col(Alias::new("target")),
                        )
                        .foreign_key(&mut fk(
                            "fk_breakers_org",
                            "breakers",
                            &["org_id"],
                            "organizations",
                            &["id"],
                        ))
                        .to_owned(),
                )
                .await?;

            manager
                .create_table(
                    Table::create()
                        .table(Alias::new("rate_buckets"))
                        .col(string("key").primary_key())
                        .col(big_integer("empty_at"))
                        .to_owned(),
                )
                .await?;
            Ok(())
        }
    }
}

mod m0003_inbound {
    use super::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m0003_inbound"
        }
    }

    #[sea_orm_migration::async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .create_table(
                    Table::create()
                        .table(Alias::new("sources"))
                        .col(string("id").primary_key())
                        .col(string("org_id"))
                        .col(text("name"))
                        .col(string("provider"))
                        .col(text("config"))
                        .col(text("secret_sealed"))
                        .col(text_null("previous_secret_sealed"))
                        .col(big_integer_null("previous_secret_expires_at"))
                        .col(boolean("enabled"))
                        .col(big_integer("created_at"))
                        .col(big_integer("updated_at"))
                        .foreign_key(&mut fk(
                            "fk_sources_org",
                            "sources",
                            &["org_id"],
                            "organizations",
                            &["id"],
                        ))
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(index("ix_sources_org", "sources", &["org_id", "id"], false))
                .await?;

            manager
                .create_table(
                    Table::create()
                        .table(Alias::new("inbound_requests"))
                        .col(string("id").primary_key())
                        .col(string("org_id"))
                        .col(string("source_id"))
                        .col(string("dedupe_key"))
                        .col(big_integer("received_at"))
                        .col(text("headers"))
                        .col(string("content_type"))
                        .col(text("body"))
                        .col(string("body_encoding"))
                        .foreign_key(&mut fk(
                            "fk_inbound_source",
                            "inbound_requests",
                            &["source_id"],
                            "sources",
                            &["id"],
                        ))
                        .to_owned(),
                )
                .await?;
            // The dedupe guard: one stored request per sender event per source.
            manager
                .create_index(index(
                    "ux_inbound_dedupe",
                    "inbound_requests",
                    &["source_id", "dedupe_key"],
                    true,
                ))
                .await?;
            manager
                .create_index(index(
                    "ix_inbound_received",
                    "inbound_requests",
                    &["received_at"],
                    false,
                ))
                .await?;

            manager
                .create_table(
                    Table::create()
                        .table(Alias::new("events"))
                        .col(string("id").primary_key())
                        .col(string("org_id"))
                        .col(string("source_id"))
                        .col(string("request_id"))
                        .col(string("event_type"))
                        .col(string_null("subject"))
                        .col(big_integer("time"))
                        .col(text("data"))
                        .col(string_null("couple_id"))
                        .col(string_null("booking_id"))
                        .col(big_integer("created_at"))
                        .col(big_integer_null("routed_at"))
                        .foreign_key(&mut fk(
                            "fk_events_request",
                            "events",
                            &["request_id"],
                            "inbound_requests",
                            &["id"],
                        ))
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(index("ix_events_org", "events", &["org_id", "id"], false))
                .await?;
            manager
                .create_index(index(
                    "ix_events_org_type",
                    "events",
                    &["org_id", "event_type", "id"],
                    false,
                ))
                .await?;
            Ok(())
        }
    }
}

mod m0004_outbound {
    use super::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m0004_outbound"
        }
    }

    #[sea_orm_migration::async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .create_table(
                    Table::create()
                        .table(Alias::new("endpoints"))
                        .col(string("id").primary_key())
                        .col(string("org_id"))
                        .col(text("url"))
                        .col(text("description"))
                        .col(text("event_types"))
                        .col(text_null("filter"))
                        .col(text("tags"))
                        .col(text("header_names"))
                        .col(text_null("headers_sealed"))
                        .col(integer_null("rate_limit_per_second"))
                        .col(integer("timeout_ms"))
                        .col(boolean("enabled"))
                        .col(text_null("disabled_reason"))
                        .col(big_integer_null("disabled_at"))
                        .col(text("secret_sealed"))
                        .col(text_null("previous_secret_sealed"))
                        .col(big_integer_null("previous_secret_expires_at"))
                        .col(big_integer_null("failing_since"))
                        .col(big_integer_null("last_success_at"))
                        .col(big_integer("created_at"))
                        .col(big_integer("updated_at"))
                        .foreign_key(&mut fk(
                            "fk_endpoints_org",
                            "endpoints",
                            &["org_id"],
                            "organizations",
                            &["id"],
                        ))
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(index(
                    "ix_endpoints_org",
                    "endpoints",
                    &["org_id", "id"],
                    false,
                ))
                .await?;

            manager
                .create_table(
                    Table::create()
                        .table(Alias::new("messages"))
                        .col(string("id").primary_key())
                        .col(string("org_id"))
                        .col(string("event_type"))
                        .col(string_null("event_id"))
                        .col(text("payload"))
                        .col(string_null("idempotency_key"))
                        .col(string_null("idempotency_hash"))
                        .col(integer("priority"))
                        .col(big_integer("created_at"))
                        .to_owned(),
                )
                .await?;
            // One message per canonical event (fan-out runs at least once), and one per
            // idempotency key while the key is held.
            manager
                .create_index(index(
                    "ux_messages_event",
                    "messages",
                    &["org_id", "event_id"],
                    true,
                ))
                .await?;
            manager
                .create_index(index(
                    "ux_messages_idempotency",
                    "messages",
                    &["org_id", "idempotency_key"],
                    true,
                ))
                .await?;
            manager
                .create_index(index(
                    "ix_messages_org",
                    "messages",
                    &["org_id", "id"],
                    false,
                ))
                .await?;

            manager
                .create_table(
                    Table::create()
                        .table(Alias::new("deliveries"))
                        .col(string("id").primary_key())
                        .col(string("org_id"))
                        .col(string("message_id"))
                        .col(string("endpoint_id"))
                        .col(string("status"))
                        .col(integer("generation"))
                        .col(integer("attempts"))
                        .col(integer("round_attempts"))
                        .col(big_integer("round_started_at"))
                        .col(big_integer_null("next_attempt_at"))
                        .col(big_integer_null("last_attempt_at"))
                        .col(integer_null("last_status_code"))
                        .col(text_null("last_error"))
                        .col(big_integer("created_at"))
                        .col(big_integer("updated_at"))
                        .foreign_key(&mut fk(
                            "fk_deliveries_message",
                            "deliveries",
                            &["message_id"],
                            "messages",
                            &["id"],
                        ))
                        .foreign_key(&mut fk(
                            "fk_deliveries_endpoint",
                            "deliveries",
                            &["endpoint_id"],
                            "endpoints",
                            &["id"],
                        ))
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(index(
                    "ux_deliveries_pair",
                    "deliveries",
                    &["message_id", "endpoint_id"],
                    true,
                ))
                .await?;
            manager
                .create_index(index(
                    "ix_deliveries_endpoint",
                    "deliveries",
                    &["endpoint_id", "status", "id"],
                    false,
                ))
                .await?;

            manager
                .create_table(
                    Table::create()
                        .table(Alias::new("delivery_attempts"))
                        .col(string("id").primary_key())
                        .col(string("org_id"))
                        .col(string("delivery_id"))
                        .col(string("message_id"))
                        .col(string("endpoint_id"))
                        .col(big_integer("attempted_at"))
                        .col(integer_null("status_code"))
                        .col(integer("latency_ms"))
                        .col(text("response_headers"))
                        .col(text("response_body"))
                        .col(string_null("error_class"))
                        .col(text_null("error"))
                        .col(boolean("success"))
                        .col(string("trigger"))
                        .foreign_key(&mut fk(
                            "fk_attempts_delivery",
                            "delivery_attempts",
                            &["delivery_id"],
                            "deliveries",
                            &["id"],
                        ))
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(index(
                    "ix_attempts_delivery",
                    "delivery_attempts",
                    &["delivery_id", "id"],
                    false,
                ))
                .await?;
            manager
                .create_index(index(
                    "ix_attempts_endpoint",
                    "delivery_attempts",
                    &["endpoint_id", "id"],
                    false,
                ))
                .await?;
            manager
                .create_index(index(
                    "ix_attempts_message",
                    "delivery_attempts",
                    &["message_id", "id"],
                    false,
                ))
                .await?;
            Ok(())
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            for table in ["delivery_attempts", "deliveries", "messages", "endpoints"] {
                manager
                    .drop_table(Table::drop().table(Alias::new(table)).to_owned())
                    .await?;
            }
            Ok(())
        }
    }
}

mod m0005_notifications {
    use super::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m0005_notifications"
        }
    }

    fn org_fk(table: &str) -> ForeignKeyCreateStatement {
        fk(
            &format!("fk_{table}_org"),
            table,
            &["org_id"],
            "organizations",
            &["id"],
        )
    }

    #[sea_orm_migration::async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            // Providers per organisation and channel, tried in `position` order (failover).
            manager
                .create_table(
                    Table::create()
                        .table(Alias::new("notify_providers"))
                        .col(string("id").primary_key())
                        .col(string("org_id"))
                        .col(string("channel"))
                        .col(string("kind"))
                        .col(string("name"))
                        .col(integer("position"))
                        .col(text("config"))
                        .col(text("secret_names"))
                        .col(text_null("secrets_sealed"))
                        .col(boolean("enabled"))
                        .col(big_integer("created_at"))
                        .col(big_integer("updated_at"))
                        .foreign_key(&mut org_fk("notify_providers"))
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(index(
                    "ix_notify_providers_org",
                    "notify_providers",
                    &["org_id", "channel", "position"],
                    false,
                ))
                .await?;
            manager
                .create_table(
                    Table::create()
                        .table(Alias::new("notify_templates"))
                        .col(string("id").primary_key())
                        .col(string("org_id"))
                        .col(string("name"))
                        .col(string("channel"))
                        .col(text_null("subject"))
                        .col(text("body_text"))
                        .col(text_null("body_html"))
                        .col(big_integer("created_at"))
                        .col(big_integer("updated_at"))
                        .foreign_key(&mut org_fk("notify_templates"))
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(index(
                    "ux_notify_templates_name",
                    "notify_templates",
                    &["org_id", "name", "channel"],
                    true,
                ))
                .await?;
            // One row of settings per organisation (branding, alert routes, escalation).
            manager
                .create_table(
                    Table::create()
                        .table(Alias::new("notify_settings"))
                        .col(string("org_id").primary_key())
                        .col(text("settings"))
                        .col(big_integer("updated_at"))
                        .foreign_key(&mut org_fk("notify_settings"))
                        .to_owned(),
                )
                .await?;
            // A recipient's preferences: time zone, quiet hours, unsubscribed channels.
            manager
                .create_table(
                    Table::create()
                        .table(Alias::new("notify_recipients"))
                        .col(string("org_id"))
                        .col(string("recipient_key"))
                        .col(string_null("time_zone"))
                        .col(text_null("quiet_hours"))
                        .col(text("unsubscribed"))
                        .col(text_null("unsubscribe_source"))
                        .col(big_integer("updated_at"))
                        .primary_key(
                            Index::create()
                                .col(Alias::new("org_id"))
                                .col(Alias::new("recipient_key")),
                        )
                        .foreign_key(&mut org_fk("notify_recipients"))
                        .to_owned(),
                )
                .await?;
            manager
                .create_table(
                    Table::create()
                        .table(Alias::new("alerts"))
                        .col(string("id").primary_key())
                        .col(string("org_id"))
                        .col(text("summary"))
                        .col(text("body"))
                        .col(string("severity"))
                        .col(string("raised_severity"))
                        .col(string("escalation"))
                        .col(string_null("couple_id"))
                        .col(boolean("emergency"))
                        .col(string("status"))
                        .col(string("dedup_key"))
                        .col(integer("escalation_step"))
                        .col(text_null("acknowledged_by"))
                        .col(big_integer_null("acknowledged_at"))
                        .col(big_integer_null("resolved_at"))
                        .col(big_integer("created_at"))
                        .col(big_integer("updated_at"))
                        .foreign_key(&mut org_fk("alerts"))
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(index("ix_alerts_org", "alerts", &["org_id", "id"], false))
                .await?;
            manager
                .create_table(
                    Table::create()
                        .table(Alias::new("notifications"))
                        .col(string("id").primary_key())
                        .col(string("org_id"))
                        .col(string("channel"))
                        .col(text("recipient"))
                        .col(string("recipient_key"))
                        .col(string_null("template"))
                        .col(text("content"))
                        .col(text("data"))
                        .col(string_null("couple_id"))
                        .col(string_null("alert_id"))
                        .col(string_null("parent_id"))
                        .col(string("severity"))
                        .col(boolean("emergency"))
                        .col(boolean("urgent"))
                        .col(string_null("idempotency_key"))
                        .col(string_null("idempotency_hash"))
                        .col(string("status"))
                        .col(string_null("reason"))
                        .col(text_null("detail"))
                        .col(string_null("provider_id"))
                        .col(string_null("provider_message_id"))
                        .col(integer("attempts"))
                        .col(big_integer_null("counted_at"))
                        .col(boolean("quota_bypassed"))
                        .col(big_integer("due_at"))
                        .col(big_integer_null("sent_at"))
                        .col(big_integer_null("delivered_at"))
                        .col(big_integer_null("opened_at"))
                        .col(big_integer_null("clicked_at"))
                        .col(big_integer_null("read_at"))
                        .col(big_integer("created_at"))
                        .col(big_integer("updated_at"))
                        .foreign_key(&mut org_fk("notifications"))
                        .to_owned(),
                )
                .await?;
            for (name, cols, unique) in [
                ("ix_notifications_org", &["org_id", "id"][..], false),
                (
                    "ux_notifications_idempotency",
                    &["org_id", "idempotency_key"][..],
                    true,
                ),
                (
                    "ix_notifications_quota",
                    &["org_id", "channel", "counted_at"][..],
                    false,
                ),
                (
                    "ix_notifications_recipient",
                    &["org_id", "recipient_key", "channel", "id"][..],
                    false,
                ),
                ("ix_notifications_alert", &["alert_id"][..], false),
                (
                    "ix_notifications_provider_message",
                    &["provider_message_id"][..],
                    false,
                ),
            ] {
                manager
                    .create_index(index(name, "notifications", cols, unique))
                    .await?;
            }
            manager
                .create_table(
                    Table::create()
                        .table(Alias::new("notification_events"))
                        .col(string("id").primary_key())
                        .col(string("notification_id"))
                        .col(string("org_id"))
                        .col(big_integer("at"))
                        .col(string("status"))
                        .col(string_null("reason"))
                        .col(text_null("detail"))
                        .foreign_key(&mut fk(
                            "fk_notification_events_notification",
                            "notification_events",
                            &["notification_id"],
                            "notifications",
                            &["id"],
                        ))
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(index(
                    "ix_notification_events_notification",
                    "notification_events",
                    &["notification_id", "id"],
                    false,
                ))
                .await?;
            Ok(())
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            for table in [
                "notification_events",
                "notifications",
                "alerts",
                "notify_recipients",
                "notify_settings",
                "notify_templates",
                "notify_providers",
            ] {
                manager
                    .drop_table(Table::drop().table(Alias::new(table)).to_owned())
                    .await?;
            }
            Ok(())
        }
    }
}

mod m0006_journeys {
    use super::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m0006_journeys"
        }
    }

    #[sea_orm_migration::async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            // The journey with its editable draft; `revision` is the optimistic lock.
            manager
                .create_table(
                    Table::create()
                        .table(Alias::new("journeys"))
                        .col(string("id").primary_key())
                        .col(string("org_id"))
                        .col(string("name"))
                        .col(text("description"))
                        .col(text("draft"))
                        .col(integer("revision"))
                        .col(integer_null("published_version"))
                        .col(big_integer("created_at"))
                        .col(big_integer("updated_at"))
                        .foreign_key(&mut fk(
                            "fk_journeys_org",
                            "journeys",
                            &["org_id"],
                            "organizations",
                            &["id"],
                        ))
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(index(
                    "ix_journeys_org",
                    "journeys",
                    &["org_id", "id"],
                    false,
                ))
                .await?;
            // Published versions: immutable once written.
            manager
                .create_table(
                    Table::create()
                        .table(Alias::new("journey_versions"))
                        .col(string("journey_id"))
                        .col(integer("version"))
                        .col(string("org_id"))
                        .col(text("document"))
                        .col(text_null("note"))
                        .col(string("published_by"))
                        .col(big_integer("published_at"))
                        .primary_key(
                            Index::create()
                                .col(Alias::new("journey_id"))
                                .col(Alias::new("version")),
                        )
                        .foreign_key(&mut fk(
                            "fk_journey_versions_journey",
                            "journey_versions",
                            &["journey_id"],
                            "journeys",
                            &["id"],
                        ))
                        .to_owned(),
                )
                .await?;
            Ok(())
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            for table in ["journey_versions", "journeys"] {
                manager
                    .drop_table(Table::drop().table(Alias::new(table)).to_owned())
                    .await?;
            }
            Ok(())
        }
    }
}

mod m0007_journey_instances {
    use super::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m0007_journey_instances"
        }
    }

    #[sea_orm_migration::async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            // One row per running journey for one couple. `step_seq` numbers the steps: a job
            // names the step it runs, so a rerun or an overtaken job does nothing.
            manager
                .create_table(
                    Table::create()
                        .table(Alias::new("journey_instances"))
                        .col(string("id").primary_key())
                        .col(string("org_id"))
                        .col(string("journey_id"))
                        .col(integer("version"))
                        .col(string("couple_id"))
                        .col(string("trigger_key"))
                        .col(string("status"))
                        .col(string("current_node"))
                        .col(integer("step_seq"))
                        .col(text_null("wait"))
                        .col(big_integer_null("due_at"))
                        .col(text("context"))
                        .col(text_null("reason"))
                        .col(big_integer("created_at"))
                        .col(big_integer("updated_at"))
                        .foreign_key(&mut fk(
                            "fk_journey_instances_journey",
                            "journey_instances",
                            &["journey_id"],
                            "journeys",
                            &["id"],
                        ))
                        .to_owned(),
                )
                .await?;
            for (name, cols, unique) in [
                (
                    "ux_journey_instances_start",
                    &["journey_id", "couple_id", "trigger_key"][..],
                    true,
                ),
                (
                    "ix_journey_instances_couple",
                    &["couple_id", "status"][..],
                    false,
                ),
                (
                    "ix_journey_instances_org",
                    &["org_id", "journey_id", "id"][..],
                    false,
                ),
            ] {
                manager
                    .create_index(index(name, "journey_instances", cols, unique))
                    .await?;
            }
            manager
                .create_table(
                    Table::create()
                        .table(Alias::new("journey_steps"))
                        .col(string("id").primary_key())
                        .col(string("instance_id"))
                        .col(integer("seq"))
                        .col(string("node_id"))
                        .col(string("node_type"))
                        .col(big_integer("at"))
                        .col(string("outcome"))
                        .col(text("detail"))
                        .col(text_null("output"))
                        .foreign_key(&mut fk(
                            "fk_journey_steps_instance",
                            "journey_steps",
                            &["instance_id"],
                            "journey_instances",
                            &["id"],
                        ))
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(index(
                    "ix_journey_steps_instance",
                    "journey_steps",
                    &["instance_id", "id"],
                    false,
                ))
                .await?;
            Ok(())
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            for table in ["journey_steps", "journey_instances"] {
                manager
                    .drop_table(Table::drop().table(Alias::new(table)).to_owned())
                    .await?;
            }
            Ok(())
        }
    }
}

mod m0008_timers {
    use super::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m0008_timers"
        }
    }

    #[sea_orm_migration::async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            // Workers ask when the next ready job is due to know how long to sleep. With a
            // hundred thousand timers waiting (journeys waiting for months), answering that
            // from the claim index (kind, priority, run_at) reads every ready entry; an index
            // on run_at alone answers it with its first entry.
            manager
                .create_index(
                    Index::create()
                        .name("ix_jobs_due")
                        .table(Alias::new("jobs"))
                        .col(Alias::new("run_at"))
                        .and_where(Expr::col(Alias::new("state")).eq("ready"))
                        .to_owned(),
                )
                .await?;
            // Instances are listed per journey (journey ids are unique, the organisation is
            // checked on the row): a narrower index, smaller per waiting instance.
            manager
                .drop_index(
                    Index::drop()
                        .name("ix_journey_instances_org")
                        .table(Alias::new("journey_instances"))
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(index(
                    "ix_journey_instances_journey",
                    "journey_instances",
                    &["journey_id", "id"],
                    false,
                ))
                .await?;
            Ok(())
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .drop_index(
                    Index::drop()
                        .name("ix_journey_instances_journey")
                        .table(Alias::new("journey_instances"))
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(index(
                    "ix_journey_instances_org",
                    "journey_instances",
                    &["org_id", "journey_id", "id"],
                    false,
                ))
                .await?;
            manager
                .drop_index(
                    Index::drop()
                        .name("ix_jobs_due")
                        .table(Alias::new("jobs"))
                        .to_owned(),
                )
                .await?;
            Ok(())
        }
    }
}

mod m0009_booking_journeys {
    use super::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m0009_booking_journeys"
        }
    }

    #[sea_orm_migration::async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            // A journey instance may be about one of the couple's bookings. The column is
            // empty, not NULL, for a couple's instance: a unique index treats NULLs as
            // distinct on both backends, and the start key must hold for couple instances
            // too. An empty string costs one byte per row and index entry.
            manager
                .alter_table(
                    Table::alter()
                        .table(Alias::new("journey_instances"))
                        .add_column(string("booking_id").default(""))
                        .to_owned(),
                )
                .await?;
            manager
                .drop_index(
                    Index::drop()
                        .name("ux_journey_instances_start")
                        .table(Alias::new("journey_instances"))
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(index(
                    "ux_journey_instances_subject",
                    "journey_instances",
                    &["journey_id", "couple_id", "booking_id", "trigger_key"],
                    true,
                ))
                .await?;
            Ok(())
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .drop_index(
                    Index::drop()
                        .name("ux_journey_instances_subject")
                        .table(Alias::new("journey_instances"))
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(index(
                    "ux_journey_instances_start",
                    "journey_instances",
                    &["journey_id", "couple_id", "trigger_key"],
                    true,
                ))
                .await?;
            manager
                .alter_table(
                    Table::alter()
                        .table(Alias::new("journey_instances"))
                        .drop_column(Alias::new("booking_id"))
                        .to_owned(),
                )
                .await?;
            Ok(())
        }
    }
}

mod m0010_crm_connections {
    use super::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m0010_crm_connections"
        }
    }

    #[sea_orm_migration::async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            // One connection per organisation and CRM: what `crm_update` steps write with.
            // The credentials (JSON) are sealed under the master key, bound to the row's id.
            manager
                .create_table(
                    Table::create()
                        .table(Alias::new("crm_connections"))
                        .col(string("id").primary_key())
                        .col(string("org_id"))
                        .col(string("system"))
                        .col(string("name"))
                        .col(text("config"))
                        .col(text("credentials_sealed"))
                        .col(big_integer("created_at"))
                        .col(big_integer("updated_at"))
                        .foreign_key(&mut fk(
                            "fk_crm_connections_org",
                            "crm_connections",
                            &["org_id"],
                            "organizations",
                            &["id"],
                        ))
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(index(
                    "ux_crm_connections_system",
                    "crm_connections",
                    &["org_id", "system"],
                    true,
                ))
                .await
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .drop_table(
                    Table::drop()
                        .table(Alias::new("crm_connections"))
                        .to_owned(),
                )
                .await
        }
    }
}

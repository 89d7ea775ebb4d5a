//! The subcommands. Each prints text for people or, with `--json`, one JSON document on
//! stdout; logs go to stderr so they never mix with output meant for scripts.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use wedsync_core::clock::{SharedClock, SystemClock};
use wedsync_core::org::{OrgSettings, Role};
use wedsync_store::{Actor, Store, StoreError};

use crate::config::Settings;
use crate::{
    ApiKeyCommand, AuditCommand, Command, ConfigCommand, EndpointCommand, JobsCommand,
    JourneyCommand, OrgCommand, SourceCommand,
};

/// Sets up structured logs on stderr, as text or JSON.
pub fn init_logging(settings: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&settings.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if settings.log.format == "json" {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

fn operator() -> Actor {
    Actor::Cli(
        std::env::var("USER")
            .or_else(|_| std::env::var("USERNAME"))
            .unwrap_or_else(|_| "operator".into()),
    )
}

fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

async fn open(settings: &Settings, clock: SharedClock) -> anyhow::Result<Store> {
    let store = Store::connect(&settings.store_options(), clock)
        .await
        .with_context(|| {
            format!(
                "cannot open the database at {}",
                crate::config::redact_url(&settings.database_url())
            )
        })?;
    let key = settings
        .master_key()
        .map_err(|e| anyhow::anyhow!("master key: {e}"))?;
    Ok(store.with_master_key(key))
}

/// Opens the store for an operator command: the embedded database is migrated on first use;
/// PostgreSQL must already be current.
async fn open_current(settings: &Settings) -> anyhow::Result<Store> {
    let store = open(settings, Arc::new(SystemClock)).await?;
    if settings.is_embedded() {
        store.migrate().await?;
    } else {
        store.ensure_schema_current().await?;
    }
    Ok(store)
}

fn parse_org(raw: &str) -> anyhow::Result<wedsync_core::id::OrgId> {
    raw.parse().map_err(|e| anyhow::anyhow!("--org: {e}"))
}

/// Runs one subcommand.
pub async fn dispatch(command: Command, settings: Settings) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => serve(settings, args.migrate).await,
        Command::Migrate(out) => {
            let store = open(&settings, Arc::new(SystemClock)).await?;
            let applied = store.migrate().await?;
            if out.json {
                print_json(&serde_json::json!({ "applied": applied }));
            } else if applied.is_empty() {
                println!("the database schema is current");
            } else {
                println!(
                    "applied {} migration(s): {}",
                    applied.len(),
                    applied.join(", ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Org(OrgCommand::Create {
            name,
            time_zone,
            tier,
            country,
            currency,
            out,
        }) => {
            let org_settings = OrgSettings::parse(&name, &time_zone, &tier, &country, &currency)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let store = open_current(&settings).await?;
            let org = store.create_org(org_settings, &operator()).await?;
            if out.json {
                print_json(&serde_json::to_value(&org)?);
            } else {
                println!("created organisation {} ({})", org.id, org.name);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Org(OrgCommand::List(out)) => {
            let store = open_current(&settings).await?;
            let orgs = store.list_orgs().await?;
            if out.json {
                print_json(&serde_json::to_value(&orgs)?);
            } else if orgs.is_empty() {
                println!("no organisations yet; create one with `wedsync org create`");
            } else {
                for org in orgs {
                    println!(
                        "{}  {}  {}  {}  {}/{}",
                        org.id, org.name, org.tier, org.time_zone, org.country, org.currency
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::ApiKey(ApiKeyCommand::Create {
            org,
            name,
            role,
            out,
        }) => {
            let org = parse_org(&org)?;
            let role: Role = role
                .parse()
                .map_err(|e: String| anyhow::anyhow!("--role: {e}"))?;
            let store = open_current(&settings).await?;
            let (info, secret) = match store.create_api_key(&org, &name, role, &operator()).await {
                Err(StoreError::NotFound) => anyhow::bail!("no organisation {org}"),
                other => other?,
            };
            if out.json {
                print_json(&serde_json::json!({ "key": info, "secret": secret }));
            } else {
                println!("created API key {} ({}, {})", info.id, info.name, info.role);
                println!("{secret}");
                println!("this key is shown once: store it now");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::ApiKey(ApiKeyCommand::List { org, out }) => {
            let org = parse_org(&org)?;
            let store = open_current(&settings).await?;
            store
                .get_org(&org)
                .await
                .map_err(|_| anyhow::anyhow!("no organisation {org}"))?;
            let keys = store.list_api_keys(&org).await?;
            if out.json {
                print_json(&serde_json::to_value(&keys)?);
            } else {
                for k in keys {
                    let state = if k.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    };
                    let used = k
                        .last_used_at
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_else(|| "never used".into());
                    println!(
                        "{}  {}…  {}  {}  {}  {}",
                        k.id, k.prefix, k.role, state, used, k.name
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::ApiKey(ApiKeyCommand::Revoke { org, key_id, out }) => {
            let org = parse_org(&org)?;
            let key: wedsync_core::id::ApiKeyId =
                key_id.parse().map_err(|e| anyhow::anyhow!("key id: {e}"))?;
            let store = open_current(&settings).await?;
            let info = match store.revoke_api_key(&org, &key, &operator()).await {
                Err(StoreError::NotFound) => {
                    anyhow::bail!("no API key {key} in organisation {org}")
                }
                other => other?,
            };
            if out.json {
                print_json(&serde_json::to_value(&info)?);
            } else {
                println!("revoked API key {}", info.id);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(AuditCommand::Verify(out)) => {
            let store = open_current(&settings).await?;
            let report = store.verify_audit().await?;
            if out.json {
                print_json(&serde_json::to_value(&report)?);
            } else if report.ok() {
                println!(
                    "audit log intact: {} entries in {} chains verified",
                    report.entries, report.organizations
                );
            } else {
                for f in &report.faults {
                    println!(
                        "audit log broken in {} at entry {}{}: {}",
                        f.org_id,
                        f.seq,
                        f.entry_id
                            .as_deref()
                            .map(|id| format!(" ({id})"))
                            .unwrap_or_default(),
                        f.problem
                    );
                }
            }
            Ok(if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Jobs(command) => jobs(&settings, command).await,
        Command::Source(command) => sources(&settings, command).await,
        Command::Endpoint(command) => endpoints(&settings, command).await,
        Command::Journey(command) => match command {
            JourneyCommand::Validate { .. }
            | JourneyCommand::Simulate { .. }
            | JourneyCommand::Template { .. } => journey(command),
            command => journey_in_db(&settings, command).await,
        },
        Command::Config(ConfigCommand::Check(out)) => {
            let value = settings.redacted();
            if out.json {
                print_json(&value);
            } else {
                println!("configuration is valid:");
                print_json(&value);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_endpoint(e: &wedsync_store::webhooks::Endpoint) {
    let state = if e.enabled {
        "enabled".to_owned()
    } else {
        format!(
            "disabled ({})",
            e.disabled_reason.as_deref().unwrap_or("no reason")
        )
    };
    let types = if e.event_types.is_empty() {
        "*".to_owned()
    } else {
        e.event_types.join(",")
    };
    println!("{}  {}  {}  {}", e.id, state, types, e.url);
}

async fn set_enabled(
    store: &wedsync_store::Store,
    org: &str,
    id: &str,
    enabled: bool,
    json: bool,
) -> anyhow::Result<()> {
    let org = parse_org(org)?;
    let id: wedsync_core::id::EndpointId = id
        .parse()
        .map_err(|e| anyhow::anyhow!("endpoint id: {e}"))?;
    let patch = wedsync_store::webhooks::EndpointPatch {
        enabled: Some(enabled),
        ..Default::default()
    };
    let endpoint = match store.update_endpoint(&org, &id, patch, &operator()).await {
        Err(StoreError::NotFound) => anyhow::bail!("no endpoint {id} in organisation {org}"),
        other => other?,
    };
    if json {
        print_json(&serde_json::to_value(&endpoint)?);
    } else {
        print_endpoint(&endpoint);
    }
    Ok(())
}

fn read_document(file: &std::path::Path) -> anyhow::Result<wedsync_journeys::JourneyDocument> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
    wedsync_journeys::JourneyDocument::parse(&value).map_err(|e| anyhow::anyhow!("{e}"))
}

fn print_instance(i: &wedsync_store::journeys::Instance) {
    println!(
        "{}  {:<9}  at {:<16}  v{}  {}{}  {}",
        i.id,
        i.status,
        i.current_node,
        i.version,
        i.couple_id,
        i.booking_id.map(|b| format!(" {b}")).unwrap_or_default(),
        i.due_at
            .map(|d| format!("due {}", d.to_rfc3339()))
            .or_else(|| i.reason.clone())
            .unwrap_or_default()
    );
}

/// The journey subcommands that work on an organisation's stored journeys.
async fn journey_in_db(settings: &Settings, command: JourneyCommand) -> anyhow::Result<ExitCode> {
    use wedsync_store::journeys::{InstanceFilter, Operation};
    let store = open_current(settings).await?;
    let journey_id = |raw: &str| -> anyhow::Result<wedsync_core::id::JourneyId> {
        raw.parse().map_err(|e| anyhow::anyhow!("journey id: {e}"))
    };
    let explain = |e: StoreError| match e {
        StoreError::NotFound => anyhow::anyhow!("no such journey or instance in this organisation"),
        StoreError::Invalid(errors) => anyhow::anyhow!(
            "{}",
            errors
                .0
                .iter()
                .map(|f| format!("{}: {}", f.field, f.message))
                .collect::<Vec<_>>()
                .join("\n")
        ),
        other => anyhow::anyhow!("{other}"),
    };
    let checked = |doc: &wedsync_journeys::JourneyDocument, mode| {
        wedsync_journeys::validate(doc, mode).map_err(|errors| {
            anyhow::anyhow!(
                "{}",
                errors
                    .0
                    .iter()
                    .map(|f| format!("{}: {}", f.field, f.message))
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        })
    };
    match command {
        JourneyCommand::Import {
            file,
            org,
            name,
            description,
            publish,
            out,
        } => {
            let org = parse_org(&org)?;
            let doc = read_document(&file)?;
            checked(&doc, wedsync_journeys::Mode::Draft)?;
            if publish {
                checked(&doc, wedsync_journeys::Mode::Publish)?;
            }
            let mut journey = store
                .create_journey(&org, &name, &description, &doc.to_json(), &operator())
                .await
                .map_err(explain)?;
            if publish {
                journey = store
                    .publish_journey(&org, &journey.id, journey.revision, &operator())
                    .await
                    .map_err(explain)?
                    .0;
            }
            if out.json {
                print_json(&serde_json::to_value(&journey)?);
            } else {
                println!(
                    "{}  {}  revision {}  {}",
                    journey.id,
                    journey.name,
                    journey.revision,
                    journey
                        .published_version
                        .map_or_else(|| "draft".to_owned(), |v| format!("published v{v}"))
                );
            }
        }
        JourneyCommand::Export { id, org, published } => {
            let org = parse_org(&org)?;
            let id = journey_id(&id)?;
            let document = match published {
                Some(v) => {
                    store
                        .journey_version(&org, &id, v)
                        .await
                        .map_err(explain)?
                        .document
                }
                None => store.get_journey(&org, &id).await.map_err(explain)?.draft,
            };
            print_json(&document);
        }
        JourneyCommand::Publish {
            id,
            org,
            revision,
            out,
        } => {
            let org = parse_org(&org)?;
            let id = journey_id(&id)?;
            let journey = store.get_journey(&org, &id).await.map_err(explain)?;
            if let Some(r) = revision
                && r != journey.revision
            {
                anyhow::bail!(
                    "the draft is at revision {}, not {r}: someone saved it since; review it (journey export) and publish again",
                    journey.revision
                );
            }
            let doc = wedsync_journeys::JourneyDocument::parse(&journey.draft)
                .map_err(|e| anyhow::anyhow!("the draft: {e}"))?;
            checked(&doc, wedsync_journeys::Mode::Publish)?;
            let (journey, version) = store
                .publish_journey(&org, &id, journey.revision, &operator())
                .await
                .map_err(explain)?;
            if out.json {
                print_json(&serde_json::json!({ "journey": journey, "version": version }));
            } else {
                println!("{} published as version {}", journey.id, version.version);
            }
        }
        JourneyCommand::Versions { id, org, out } => {
            let org = parse_org(&org)?;
            let id = journey_id(&id)?;
            let versions = store.journey_versions(&org, &id).await.map_err(explain)?;
            if out.json {
                print_json(&serde_json::to_value(&versions)?);
            } else {
                for v in &versions {
                    println!(
                        "v{:<3} {}  by {}{}",
                        v.version,
                        v.published_at.to_rfc3339(),
                        v.published_by,
                        v.note
                            .as_deref()
                            .map(|n| format!("  ({n})"))
                            .unwrap_or_default()
                    );
                }
            }
        }
        JourneyCommand::Rollback { id, org, to, out } => {
            let org = parse_org(&org)?;
            let id = journey_id(&id)?;
            let (journey, version) = store
                .rollback_journey(&org, &id, to, &operator())
                .await
                .map_err(explain)?;
            if out.json {
                print_json(&serde_json::json!({ "journey": journey, "version": version }));
            } else {
                println!(
                    "{} now runs version {} (version {to} again)",
                    journey.id, version.version
                );
            }
        }
        JourneyCommand::Instances {
            id,
            org,
            couple,
            booking,
            status,
            out,
        } => {
            let org = parse_org(&org)?;
            let id = journey_id(&id)?;
            let filter = InstanceFilter {
                couple_id: couple
                    .map(|c| c.parse())
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("--couple: {e}"))?,
                booking_id: booking
                    .map(|b| b.parse())
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("--booking: {e}"))?,
                status,
            };
            if let Some(s) = filter.status.as_deref()
                && !wedsync_store::journeys::INSTANCE_STATUSES.contains(&s)
            {
                anyhow::bail!(
                    "--status: `{s}` is not one of {}",
                    wedsync_store::journeys::INSTANCE_STATUSES.join(", ")
                );
            }
            let mut all = Vec::new();
            let mut page = wedsync_store::page::PageRequest {
                limit: Some(100),
                after: None,
            };
            loop {
                let got = store
                    .list_instances(&org, &id, &filter, &page)
                    .await
                    .map_err(explain)?;
                all.extend(got.data);
                match got.next_cursor {
                    Some(next) => page.after = Some(next),
                    None => break,
                }
            }
            if out.json {
                print_json(&serde_json::to_value(&all)?);
            } else {
                for i in &all {
                    print_instance(i);
                }
            }
        }
        JourneyCommand::Instance { id, org, out } => {
            let org = parse_org(&org)?;
            let (instance, history) = store.get_instance(&org, &id).await.map_err(explain)?;
            if out.json {
                print_json(&serde_json::json!({ "instance": instance, "history": history }));
            } else {
                print_instance(&instance);
                for h in &history {
                    println!(
                        "  {}  #{:<3} {:<16} {:<11} {}",
                        h.at.to_rfc3339(),
                        h.seq,
                        h.node_id,
                        h.outcome,
                        h.detail
                    );
                }
            }
        }
        JourneyCommand::Operate {
            id,
            operation,
            org,
            node,
            to_version,
            out,
        } => {
            let org = parse_org(&org)?;
            let instance = if operation == "cancel" {
                store
                    .cancel_instance(&org, &id, &operator())
                    .await
                    .map_err(explain)?
            } else {
                let op = match operation.as_str() {
                    "pause" => Operation::Pause,
                    "resume" => Operation::Resume,
                    "retry" => Operation::Retry,
                    "complete" => Operation::Complete,
                    "jump" => {
                        Operation::JumpTo(node.ok_or_else(|| anyhow::anyhow!("jump needs --node"))?)
                    }
                    "migrate" => Operation::Migrate(match to_version {
                        Some(v) => v,
                        None => {
                            let (inst, _) = store.get_instance(&org, &id).await.map_err(explain)?;
                            store
                                .get_journey(&org, &inst.journey_id)
                                .await
                                .map_err(explain)?
                                .published_version
                                .unwrap_or(inst.version)
                        }
                    }),
                    other => anyhow::bail!(
                        "unknown operation `{other}`: pause, resume, retry, complete, cancel, jump or migrate"
                    ),
                };
                store
                    .operate_instance(&org, &id, op, &operator())
                    .await
                    .map_err(explain)?
            };
            if out.json {
                print_json(&serde_json::to_value(&instance)?);
            } else {
                print_instance(&instance);
            }
        }
        JourneyCommand::Validate { .. }
        | JourneyCommand::Simulate { .. }
        | JourneyCommand::Template { .. } => return journey(command),
    }
    Ok(ExitCode::SUCCESS)
}

fn journey(command: JourneyCommand) -> anyhow::Result<ExitCode> {
    match command {
        JourneyCommand::Validate { file, publish, out } => {
            let doc = read_document(&file)?;
            let mode = if publish {
                wedsync_journeys::Mode::Publish
            } else {
                wedsync_journeys::Mode::Draft
            };
            match wedsync_journeys::validate(&doc, mode) {
                Ok(()) => {
                    if out.json {
                        print_json(&serde_json::json!({ "valid": true }));
                    } else {
                        println!("{} is valid", file.display());
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(errors) => {
                    if out.json {
                        print_json(&serde_json::json!({ "valid": false, "errors": errors.0 }));
                    } else {
                        for e in &errors.0 {
                            println!("{}: {}", e.field, e.message);
                        }
                    }
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        JourneyCommand::Simulate {
            file,
            wedding_date,
            time_zone,
            booking_date,
            start,
            events,
            out,
        } => {
            let doc = read_document(&file)?;
            let events = match events {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    serde_json::from_str(&text)
                        .with_context(|| format!("{}: not a list of events", path.display()))?
                }
                None => Vec::new(),
            };
            let input = wedsync_journeys::SimulationInput {
                wedding_date,
                time_zone,
                dates: booking_date
                    .map(|d| (wedsync_journeys::BOOKING_DATE.to_owned(), d))
                    .into_iter()
                    .collect(),
                couple: Default::default(),
                booking: Default::default(),
                start_at: start.unwrap_or_else(chrono::Utc::now),
                events,
                until: None,
            };
            let timeline =
                wedsync_journeys::simulate(&doc, &input).map_err(|e| anyhow::anyhow!("{e}"))?;
            if out.json {
                print_json(&serde_json::to_value(&timeline)?);
            } else {
                print!("{}", wedsync_journeys::render_timeline(&timeline));
            }
            Ok(ExitCode::SUCCESS)
        }
        JourneyCommand::Template { key } => {
            let Some((_, _, doc)) = wedsync_journeys::templates()
                .into_iter()
                .find(|(k, _, _)| *k == key)
            else {
                let keys: Vec<&str> = wedsync_journeys::templates()
                    .iter()
                    .map(|(k, _, _)| *k)
                    .collect();
                anyhow::bail!("no template `{key}`; there are {}", keys.join(", "));
            };
            print_json(&doc);
            Ok(ExitCode::SUCCESS)
        }
        _ => anyhow::bail!("this journey command needs the database"),
    }
}

async fn endpoints(settings: &Settings, command: EndpointCommand) -> anyhow::Result<ExitCode> {
    use wedsync_store::webhooks::EndpointInput;
    let store = open_current(settings).await?;
    let endpoint_id = |raw: &str| -> anyhow::Result<wedsync_core::id::EndpointId> {
        raw.parse().map_err(|e| anyhow::anyhow!("endpoint id: {e}"))
    };
    let explain = |e: StoreError, org: &wedsync_core::id::OrgId| match e {
        StoreError::NotFound => anyhow::anyhow!("no such endpoint in organisation {org}"),
        other => anyhow::anyhow!("{other}"),
    };
    match command {
        EndpointCommand::Create {
            org,
            url,
            event_types,
            description,
            rate_limit,
            timeout_ms,
            out,
        } => {
            let org = parse_org(&org)?;
            store
                .get_org(&org)
                .await
                .map_err(|_| anyhow::anyhow!("no organisation {org}"))?;
            let input = EndpointInput {
                url,
                description,
                event_types,
                rate_limit_per_second: rate_limit,
                timeout_ms,
                ..Default::default()
            };
            let (endpoint, secret) = store
                .create_endpoint(&org, input, &operator())
                .await
                .map_err(|e| explain(e, &org))?;
            if out.json {
                print_json(&serde_json::json!({ "endpoint": endpoint, "secret": secret }));
            } else {
                print_endpoint(&endpoint);
                println!("{secret}");
                println!("this signing secret is shown once: give it to the receiver now");
            }
        }
        EndpointCommand::List { org, out } => {
            let org = parse_org(&org)?;
            let mut all = Vec::new();
            let mut page = wedsync_store::page::PageRequest {
                limit: Some(100),
                after: None,
            };
            loop {
                let found = store.list_endpoints(&org, &page).await?;
                all.extend(found.data);
                match found.next_cursor {
                    Some(c) => page.after = Some(c),
                    None => break,
                }
            }
            if out.json {
                print_json(&serde_json::to_value(&all)?);
            } else {
                all.iter().for_each(print_endpoint);
            }
        }
        EndpointCommand::Enable {
            org,
            endpoint_id: id,
            out,
        } => set_enabled(&store, &org, &id, true, out.json).await?,
        EndpointCommand::Disable {
            org,
            endpoint_id: id,
            out,
        } => set_enabled(&store, &org, &id, false, out.json).await?,
        EndpointCommand::Rotate {
            org,
            endpoint_id: id,
            out,
        } => {
            let org = parse_org(&org)?;
            let id = endpoint_id(&id)?;
            let grace = chrono::TimeDelta::hours(i64::from(settings.outbound.rotation_grace_hours));
            let (endpoint, secret) = store
                .rotate_endpoint_secret(&org, &id, None, grace, &operator())
                .await
                .map_err(|e| explain(e, &org))?;
            if out.json {
                print_json(&serde_json::json!({ "endpoint": endpoint, "secret": secret }));
            } else {
                println!(
                    "rotated the secret of {}; the previous one signs beside it until {}",
                    endpoint.id,
                    endpoint
                        .previous_secret_expires_at
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default()
                );
                println!("{secret}");
            }
        }
        EndpointCommand::Recover {
            org,
            endpoint_id: id,
            since,
            out,
        } => {
            let org = parse_org(&org)?;
            let id = endpoint_id(&id)?;
            let resent = store
                .recover(&org, &id, since, &operator())
                .await
                .map_err(|e| explain(e, &org))?;
            if out.json {
                print_json(&serde_json::json!({ "resent": resent }));
            } else {
                println!("{resent} failed deliveries to {id} are on their way again");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn sources(settings: &Settings, command: SourceCommand) -> anyhow::Result<ExitCode> {
    use wedsync_store::sources::{DEFAULT_TOLERANCE_SECONDS, NewSource, SourceConfig};
    let store = open_current(settings).await?;
    match command {
        SourceCommand::Create {
            org,
            name,
            provider,
            secret,
            generic_json,
            rate_per_minute,
            allow_ip,
            out,
        } => {
            let org = parse_org(&org)?;
            store
                .get_org(&org)
                .await
                .map_err(|_| anyhow::anyhow!("no organisation {org}"))?;
            let provider: wedsync_core::source::Provider = provider
                .parse()
                .map_err(|e: String| anyhow::anyhow!("--provider: {e}"))?;
            let generic = generic_json
                .map(|j| {
                    serde_json::from_str(&j).map_err(|e| anyhow::anyhow!("--generic-json: {e}"))
                })
                .transpose()?;
            let config = SourceConfig {
                generic,
                ip_allowlist: allow_ip,
                rate_per_minute,
                tolerance_seconds: DEFAULT_TOLERANCE_SECONDS,
            };
            let new = NewSource::parse(&name, provider, config, secret)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let (source, secret) = store.create_source(&org, new, &operator()).await?;
            if out.json {
                print_json(&serde_json::json!({ "source": source, "secret": secret }));
            } else {
                println!(
                    "created source {} ({}, {}); senders post to {}",
                    source.id, source.name, source.provider, source.inbound_path
                );
                println!("{secret}");
                println!("this signing secret is shown once: configure it in the sender now");
            }
        }
        SourceCommand::List { org, out } => {
            let org = parse_org(&org)?;
            let list = store.list_sources(&org).await?;
            if out.json {
                print_json(&serde_json::to_value(&list)?);
            } else {
                for s in list {
                    let state = if s.enabled { "enabled" } else { "disabled" };
                    println!(
                        "{}  {}  {}  {}  {}",
                        s.id, s.provider, state, s.inbound_path, s.name
                    );
                }
            }
        }
        SourceCommand::Rotate {
            org,
            source_id,
            secret,
            out,
        } => {
            let org = parse_org(&org)?;
            let id: wedsync_core::id::SourceId = source_id
                .parse()
                .map_err(|e| anyhow::anyhow!("source id: {e}"))?;
            let grace = chrono::TimeDelta::hours(i64::from(settings.inbound.rotation_grace_hours));
            let (source, secret) = match store
                .rotate_source_secret(&org, &id, secret, grace, &operator())
                .await
            {
                Err(StoreError::NotFound) => anyhow::bail!("no source {id} in organisation {org}"),
                Err(StoreError::Invalid(e)) => anyhow::bail!("{e}"),
                other => other?,
            };
            if out.json {
                print_json(&serde_json::json!({ "source": source, "secret": secret }));
            } else {
                println!(
                    "rotated the secret of {}; the previous one verifies until {}",
                    source.id,
                    source
                        .previous_secret_expires_at
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default()
                );
                println!("{secret}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_job(job: &wedsync_store::queue::Job) {
    println!(
        "{}  {:<9}  {}  attempts {}/{}  run_at {}{}",
        job.id,
        job.state.as_str(),
        job.kind,
        job.attempts,
        job.max_attempts,
        job.run_at.to_rfc3339(),
        job.last_error
            .as_deref()
            .map(|e| format!("  last error: {e}"))
            .unwrap_or_default()
    );
}

async fn jobs(settings: &Settings, command: JobsCommand) -> anyhow::Result<ExitCode> {
    use wedsync_store::queue::{JobFilter, JobState};
    let store = open_current(settings).await?;
    let not_found = |e: StoreError, id: &str| match e {
        StoreError::NotFound => anyhow::anyhow!("no job {id}"),
        other => other.into(),
    };
    let (job, json) = match command {
        JobsCommand::List {
            state,
            kind,
            org,
            limit,
            out,
        } => {
            let state = state
                .map(|s| serde_json::from_value::<JobState>(serde_json::Value::String(s.clone())).map_err(|_| anyhow::anyhow!("--state: `{s}` is not one of ready, running, succeeded, dead, discarded")))
                .transpose()?;
            let org = org.map(|o| parse_org(&o)).transpose()?;
            let page = wedsync_store::page::PageRequest {
                limit: Some(limit),
                after: None,
            };
            let jobs = store
                .list_jobs(org.as_ref(), &JobFilter { state, kind }, &page)
                .await?;
            if out.json {
                print_json(&serde_json::to_value(&jobs.data)?);
            } else if jobs.data.is_empty() {
                println!("no jobs");
            } else {
                jobs.data.iter().for_each(print_job);
            }
            return Ok(ExitCode::SUCCESS);
        }
        JobsCommand::Show { id, out } => (
            store
                .get_job(None, &id)
                .await
                .map_err(|e| not_found(e, &id))?,
            out.json,
        ),
        JobsCommand::Retry { id, out } => (
            store
                .retry_job(None, &id, &operator())
                .await
                .map_err(|e| not_found(e, &id))?,
            out.json,
        ),
        JobsCommand::Discard { id, out } => (
            store
                .discard_job(None, &id, &operator())
                .await
                .map_err(|e| not_found(e, &id))?,
            out.json,
        ),
    };
    if json {
        print_json(&serde_json::to_value(&job)?);
    } else {
        print_job(&job);
    }
    Ok(ExitCode::SUCCESS)
}

async fn serve(settings: Settings, migrate: bool) -> anyhow::Result<ExitCode> {
    let clock: SharedClock = Arc::new(SystemClock);
    let store = open(&settings, clock.clone()).await?;
    if settings.is_embedded() || migrate {
        store.migrate().await?;
    } else {
        store.ensure_schema_current().await?;
    }
    let listener = tokio::net::TcpListener::bind(settings.listen_addr())
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let addr = listener.local_addr()?;
    let state = wedsync_server::AppState::new(
        store.clone(),
        wedsync_server::HttpSettings {
            body_limit: settings.http.body_limit_bytes,
            wedding_date_confirm_days: settings.rules.wedding_date_confirm_days,
            inbound_body_limit: settings.inbound.body_limit_bytes,
            inbound_peak_multiplier: settings.inbound.peak_multiplier,
            rotation_grace: chrono::TimeDelta::hours(i64::from(
                settings.inbound.rotation_grace_hours,
            )),
            endpoint_rotation_grace: chrono::TimeDelta::hours(i64::from(
                settings.outbound.rotation_grace_hours,
            )),
            idempotency_window: chrono::TimeDelta::hours(i64::from(
                settings.outbound.idempotency_hours,
            )),
            public_url: settings.public_url(),
        },
    );
    let notifier = wedsync_notify::worker::Notifier::new(
        store.clone(),
        wedsync_delivery::ssrf::GuardedClient::new(
            settings.ssrf_policy(),
            wedsync_delivery::ssrf::ClientOptions {
                connect_timeout: Duration::from_millis(settings.outbound.connect_timeout_ms),
                timeout: Duration::from_secs(30),
                max_redirects: settings.outbound.max_redirects,
                ..Default::default()
            },
        )
        .context("cannot build the notification HTTP client")?,
        wedsync_notify::email::SmtpPool::new(settings.ssrf_policy()),
        state.notify.links.clone(),
        store
            .derived_key(wedsync_notify::push::KEY_LABEL)
            .ok()
            .map(|seed| wedsync_notify::push::Vapid::from_seed(&seed, &settings.vapid_subject()))
            .transpose()
            .map_err(|e| anyhow::anyhow!("notify.vapid_subject: {e}"))?,
        settings.notify_policy(),
        Some(state.notify.inbox.clone()),
    )
    .context("the notification provider catalog")?;
    let sender = wedsync_delivery::sender::Sender::new(
        settings.ssrf_policy(),
        wedsync_delivery::ssrf::ClientOptions {
            connect_timeout: Duration::from_millis(settings.outbound.connect_timeout_ms),
            // Each attempt sets the endpoint's own timeout; this is only the ceiling.
            timeout: Duration::from_secs(60),
            max_redirects: settings.outbound.max_redirects,
            pool_idle_per_host: settings.outbound.per_endpoint_concurrency as usize,
            ..Default::default()
        },
    )
    .context("cannot build the webhook HTTP client")?;
    // crm_update steps reach the organisation's CRM through the same SSRF guard.
    let crm = wedsync_journeys::crm::CrmWriter::new(
        wedsync_delivery::ssrf::GuardedClient::new(
            settings.ssrf_policy(),
            wedsync_delivery::ssrf::ClientOptions {
                connect_timeout: Duration::from_millis(settings.outbound.connect_timeout_ms),
                timeout: Duration::from_secs(30),
                max_redirects: 0,
                ..Default::default()
            },
        )
        .context("cannot build the CRM HTTP client")?,
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let workers = settings.queue.enabled.then(|| {
        wedsync_store::worker::WorkerPool::new(store.clone(), settings.pool_config())
            .register(
                wedsync_store::outbox::PUBLISH_KIND,
                wedsync_store::outbox::publish_handler(store.clone()),
                settings.queue.publish_concurrency,
                wedsync_core::retry::RetryPolicy::default(),
            )
            .register(
                wedsync_store::inbound::ROUTE_KIND,
                wedsync_store::inbound::route_handler(store.clone()),
                settings.inbound.route_concurrency,
                wedsync_core::retry::RetryPolicy::default(),
            )
            .register(
                wedsync_store::webhooks::DELIVER_KIND,
                wedsync_delivery::worker::deliver_handler(
                    store.clone(),
                    sender,
                    settings.delivery_policy(),
                ),
                settings.outbound.concurrency,
                wedsync_core::retry::RetryPolicy::default(),
            )
            .register(
                wedsync_store::notify::SEND_KIND,
                wedsync_notify::worker::send_handler(notifier.clone()),
                settings.notify.concurrency,
                wedsync_core::retry::RetryPolicy::default(),
            )
            .register(
                wedsync_store::journeys::STEP_KIND,
                wedsync_journeys::engine::step_handler_with(
                    store.clone(),
                    wedsync_journeys::engine::Effects { crm: Some(crm) },
                ),
                settings.notify.concurrency,
                wedsync_core::retry::RetryPolicy::default(),
            )
            .register(
                wedsync_store::journeys::PUBLISHED_KIND,
                wedsync_journeys::schedule::published_handler(store.clone()),
                1,
                wedsync_core::retry::RetryPolicy::default(),
            )
            .register(
                wedsync_store::journeys::COUPLE_KIND,
                wedsync_journeys::schedule::couple_handler(store.clone()),
                2,
                wedsync_core::retry::RetryPolicy::default(),
            )
            .register(
                wedsync_store::journeys::CRON_KIND,
                wedsync_journeys::schedule::cron_handler(store.clone()),
                1,
                wedsync_core::retry::RetryPolicy::default(),
            )
            .register(
                wedsync_store::notify::ESCALATE_KIND,
                wedsync_notify::worker::escalate_handler(notifier.clone()),
                4,
                wedsync_core::retry::RetryPolicy::default(),
            )
            .spawn(stop_rx)
    });
    tracing::info!(%addr, database = %crate::config::redact_url(&settings.database_url()), "wedsync listening");
    println!("wedsync listening on http://{addr}");
    let shutdown = async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    };
    wedsync_server::run(
        listener,
        state,
        shutdown,
        Duration::from_secs(settings.http.shutdown_grace_seconds),
    )
    .await?;
    if let Some(workers) = workers {
        // The pool drains its running jobs within its own timeout.
        if let Err(error) = workers.await {
            tracing::error!(%error, "worker pool ended abnormally");
        }
    }
    store.close().await?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

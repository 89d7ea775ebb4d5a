//! `wedsync`: the integration hub for wedding businesses, and its operator commands.
//!
//! `main` stays thin: it parses the command line, loads configuration and calls into
//! [`commands`], which use the library crates. `serve` hands a bound listener to
//! [`wedsync_server::run`], the same function the tests call with port 0.

mod commands;
mod config;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// The WedSync integration hub.
#[derive(Debug, Parser)]
#[command(name = "wedsync", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Configuration file [env: WEDSYNC_CONFIG] [default: ./wedsync.toml when present]
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Folder for the embedded database [env: WEDSYNC_DATA_DIR] [default: ./data]
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// postgres://… to use PostgreSQL instead of the embedded SQLite [env: WEDSYNC_DATABASE_URL]
    #[arg(long, global = true, value_name = "URL")]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the hub: the HTTP API, and later its workers.
    Serve(ServeArgs),
    /// Apply pending database migrations (PostgreSQL needs this, or `serve --migrate`).
    Migrate(JsonFlag),
    /// Manage organisations.
    #[command(subcommand)]
    Org(OrgCommand),
    /// Manage API keys.
    #[command(subcommand, name = "api-key")]
    ApiKey(ApiKeyCommand),
    /// Work with the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Work with configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Inspect and manage the durable job queue (all organisations).
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Manage inbound webhook sources.
    #[command(subcommand)]
    Source(SourceCommand),
    /// Manage outbound webhook endpoints.
    #[command(subcommand)]
    Endpoint(EndpointCommand),
    /// Work with journey documents (needs no database).
    #[command(subcommand)]
    Journey(JourneyCommand),
}

#[derive(Debug, Subcommand)]
enum JourneyCommand {
    /// Check a journey document (a JSON file as the builder exports it).
    Validate {
        /// The document
        file: PathBuf,
        /// Check it for publishing (every node reachable, every branch connected)
        #[arg(long)]
        publish: bool,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Show what a journey would do for a hypothetical couple, with no side effects.
    Simulate {
        /// The document
        file: PathBuf,
        /// The wedding date, e.g. 2027-09-18
        #[arg(long)]
        wedding_date: chrono::NaiveDate,
        /// The couple's IANA time zone
        #[arg(long, default_value = "Europe/London")]
        time_zone: String,
        /// For a journey about a booking: the day the booking starts, e.g. 2027-09-17
        #[arg(long)]
        booking_date: Option<chrono::NaiveDate>,
        /// When the journey is attached (RFC 3339) [default: now]
        #[arg(long)]
        start: Option<chrono::DateTime<chrono::Utc>>,
        /// A JSON file with the events: [{"type": "booking.created", "at": "…", "data": {…}}]
        #[arg(long)]
        events: Option<PathBuf>,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Write one of the ready-made journeys as a document (enquiry_follow_up,
    /// booking_onboarding, final_details_countdown, post_wedding_review).
    Template {
        /// Its key
        key: String,
    },
    /// Import a document as a new journey of an organisation (checked as a draft).
    Import {
        /// The document (a JSON file as the builder exports it)
        file: PathBuf,
        /// The organisation (org_…)
        #[arg(long)]
        org: String,
        /// The journey's name
        #[arg(long)]
        name: String,
        /// A description
        #[arg(long, default_value = "")]
        description: String,
        /// Publish it at once (after the publish checks)
        #[arg(long)]
        publish: bool,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Write a journey's document as JSON on stdout: its draft, or a published version.
    Export {
        /// The journey (jny_…)
        id: String,
        /// The organisation (org_…)
        #[arg(long)]
        org: String,
        /// A published version instead of the draft
        #[arg(long)]
        published: Option<i32>,
    },
    /// Publish a journey's current draft as its next version (after the publish checks).
    Publish {
        /// The journey (jny_…)
        id: String,
        /// The organisation (org_…)
        #[arg(long)]
        org: String,
        /// The draft revision you reviewed: refused if someone saved since (as the API does)
        #[arg(long)]
        revision: Option<i32>,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// List a journey's published versions.
    Versions {
        /// The journey (jny_…)
        id: String,
        /// The organisation (org_…)
        #[arg(long)]
        org: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Make an earlier version live again, as a new version (audited).
    Rollback {
        /// The journey (jny_…)
        id: String,
        /// The organisation (org_…)
        #[arg(long)]
        org: String,
        /// The version to restore
        #[arg(long)]
        to: i32,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// List a journey's instances, optionally a couple's, a booking's or one status's.
    Instances {
        /// The journey (jny_…)
        id: String,
        /// The organisation (org_…)
        #[arg(long)]
        org: String,
        /// Only this couple's (cpl_…)
        #[arg(long)]
        couple: Option<String>,
        /// Only this booking's (bkg_…)
        #[arg(long)]
        booking: Option<String>,
        /// Only in this status (running, waiting, paused, completed, skipped, blocked, cancelled)
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Show an instance with its full history.
    Instance {
        /// The instance (jin_…)
        id: String,
        /// The organisation (org_…)
        #[arg(long)]
        org: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Operate an instance by hand (audited): pause, resume, retry, complete, cancel,
    /// jump (with --node) or migrate (with --to-version, default the published one).
    Operate {
        /// The instance (jin_…)
        id: String,
        /// The operation
        operation: String,
        /// The organisation (org_…)
        #[arg(long)]
        org: String,
        /// For jump: the node to continue from
        #[arg(long)]
        node: Option<String>,
        /// For migrate: the published version to move to
        #[arg(long)]
        to_version: Option<i32>,
        #[command(flatten)]
        out: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
enum EndpointCommand {
    /// Create an endpoint; its signing secret is printed once.
    Create {
        /// The organisation (org_…)
        #[arg(long)]
        org: String,
        /// Where deliveries are POSTed (http or https)
        #[arg(long)]
        url: String,
        /// An event type to receive, exact or ending in `.*` (repeatable); none receives all
        #[arg(long = "event-type")]
        event_types: Vec<String>,
        /// A description
        #[arg(long, default_value = "")]
        description: String,
        /// Deliveries a second at most
        #[arg(long)]
        rate_limit: Option<u32>,
        /// Per-attempt timeout in milliseconds (1000 to 30000)
        #[arg(long)]
        timeout_ms: Option<u32>,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// List an organisation's endpoints (never their secrets).
    List {
        /// The organisation (org_…)
        #[arg(long)]
        org: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Enable an endpoint (clearing its failure history).
    Enable {
        /// The organisation (org_…)
        #[arg(long)]
        org: String,
        /// The endpoint (ep_…)
        endpoint_id: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Disable an endpoint; its messages are kept as failed until recovered.
    Disable {
        /// The organisation (org_…)
        #[arg(long)]
        org: String,
        /// The endpoint (ep_…)
        endpoint_id: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Replace an endpoint's secret; the old one keeps signing beside it for the grace period.
    Rotate {
        /// The organisation (org_…)
        #[arg(long)]
        org: String,
        /// The endpoint (ep_…)
        endpoint_id: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Resend every failed delivery to an endpoint since a time (RFC 3339).
    Recover {
        /// The organisation (org_…)
        #[arg(long)]
        org: String,
        /// The endpoint (ep_…)
        endpoint_id: String,
        /// e.g. 2026-06-13T00:00:00Z
        #[arg(long)]
        since: chrono::DateTime<chrono::Utc>,
        #[command(flatten)]
        out: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
enum SourceCommand {
    /// Create a source; its signing secret is printed once.
    Create {
        /// The organisation (org_…)
        #[arg(long)]
        org: String,
        /// What it is, e.g. "Stripe live"
        #[arg(long)]
        name: String,
        /// stripe, standard_webhooks, svix, hubspot, slack, pagerduty, tave, zapier or generic
        #[arg(long)]
        provider: String,
        /// The signing secret the provider issued (Stripe, HubSpot, Slack, PagerDuty)
        #[arg(long)]
        secret: Option<String>,
        /// For tave, zapier and generic: how the sender signs, as JSON, e.g.
        /// '{"signature_header":"X-Hub-Signature-256","prefix":"sha256=","encoding":"hex","signed_content":"{body}"}'
        #[arg(long)]
        generic_json: Option<String>,
        /// Requests accepted per minute
        #[arg(long, default_value_t = 100)]
        rate_per_minute: u32,
        /// An address or CIDR range allowed to send (repeatable); none allows any
        #[arg(long = "allow-ip")]
        allow_ip: Vec<String>,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// List an organisation's sources (never their secrets).
    List {
        /// The organisation (org_…)
        #[arg(long)]
        org: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Replace a source's signing secret; the old one keeps verifying for the grace period.
    Rotate {
        /// The organisation (org_…)
        #[arg(long)]
        org: String,
        /// The source (src_…)
        source_id: String,
        /// The new secret, when the provider issues it; generated otherwise
        #[arg(long)]
        secret: Option<String>,
        #[command(flatten)]
        out: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
enum JobsCommand {
    /// List jobs, oldest first.
    List {
        /// Only this state: ready, running, succeeded, dead or discarded
        #[arg(long)]
        state: Option<String>,
        /// Only this kind, e.g. outbox.publish
        #[arg(long)]
        kind: Option<String>,
        /// Only this organisation's jobs (org_…)
        #[arg(long)]
        org: Option<String>,
        /// At most this many (1 to 100)
        #[arg(long, default_value_t = 50)]
        limit: u64,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Show one job with its attempts and last error.
    Show {
        /// The job (job_…)
        id: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Run a dead or discarded job again with fresh attempts.
    Retry {
        /// The job (job_…)
        id: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Drop a waiting or dead job.
    Discard {
        /// The job (job_…)
        id: String,
        #[command(flatten)]
        out: JsonFlag,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on [env: WEDSYNC_LISTEN] [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Apply pending migrations before serving (the embedded database always does)
    #[arg(long)]
    migrate: bool,
}

#[derive(Debug, Args)]
struct JsonFlag {
    /// Print one JSON document on stdout instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum OrgCommand {
    /// Create an organisation (a vendor business).
    Create {
        /// Business name
        #[arg(long)]
        name: String,
        /// IANA time zone, e.g. Europe/London
        #[arg(long)]
        time_zone: String,
        /// free, starter, professional, scale or enterprise
        #[arg(long, default_value = "free")]
        tier: String,
        /// ISO 3166-1 alpha-2 country, e.g. GB
        #[arg(long)]
        country: String,
        /// ISO 4217 currency, e.g. GBP
        #[arg(long)]
        currency: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// List organisations.
    List(JsonFlag),
}

#[derive(Debug, Subcommand)]
enum ApiKeyCommand {
    /// Create an API key; the key is printed once and cannot be shown again.
    Create {
        /// The organisation (org_…)
        #[arg(long)]
        org: String,
        /// What the key is for
        #[arg(long)]
        name: String,
        /// owner, admin, editor or viewer
        #[arg(long)]
        role: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// List an organisation's API keys (never their secrets).
    List {
        /// The organisation (org_…)
        #[arg(long)]
        org: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Revoke an API key at once.
    Revoke {
        /// The organisation (org_…)
        #[arg(long)]
        org: String,
        /// The key (key_…)
        key_id: String,
        #[command(flatten)]
        out: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Recompute every audit chain; exits 1 naming the first bad entry if any was edited,
    /// inserted or deleted.
    Verify(JsonFlag),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate the configuration and print it with secrets redacted.
    Check(JsonFlag),
}

/// mimalloc rather than glibc malloc: the hub allocates per request and per statement on
/// many threads (tokio workers, one thread per SQLite connection), where glibc's arenas
/// cost ~15% of the inbound pipeline's CPU (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let listen = match &cli.command {
        Command::Serve(args) => args.listen.clone(),
        _ => None,
    };
    let overrides = config::Overrides {
        listen,
        data_dir: cli.data_dir.clone(),
        database_url: cli.database_url.clone(),
    };
    let file = cli
        .config
        .clone()
        .or_else(|| std::env::var_os("WEDSYNC_CONFIG").map(PathBuf::from));
    let settings = match config::Settings::load(file.as_deref(), std::env::vars(), &overrides) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    commands::init_logging(&settings);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::dispatch(cli.command, settings)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

//! Layered configuration: defaults compiled in, then `wedsync.toml`, then `WEDSYNC_*`
//! environment variables, then command-line flags. Every value is validated at start-up and
//! an invalid one stops it with a message naming the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// The defaults, in the same format a user writes; `wedsync config check` shows the result.
const DEFAULTS: &str = r#"
listen = "127.0.0.1:8080"
data_dir = "./data"

[database]
max_connections = 10
busy_timeout_ms = 5000
acquire_timeout_ms = 10000

[http]
body_limit_bytes = 1048576
shutdown_grace_seconds = 30

[log]
level = "info"
format = "text"

[rules]
wedding_date_confirm_days = 30

[queue]
enabled = true
batch_size = 100
lease_seconds = 30
heartbeat_seconds = 10
idle_poll_ms = 30000
reap_seconds = 15
drain_seconds = 20
keep_done_hours = 168
keep_dead_days = 30
publish_concurrency = 16

[inbound]
body_limit_bytes = 1048576
peak_multiplier = 3.0
rotation_grace_hours = 24
route_concurrency = 16
retention_days = 30

[outbound]
concurrency = 256
per_endpoint_concurrency = 8
slot_wait_ms = 1000
retry_schedule_seconds = [0, 5, 300, 1800, 7200, 18000, 36000, 36000]
jitter = 0.2
disable_after_days = 5
rotation_grace_hours = 24
idempotency_hours = 24
retention_days = 30
connect_timeout_ms = 5000
max_redirects = 3
allow_subnets = []
breaker_failures = 5
breaker_cool_down_seconds = 300

[notify]
public_url = ""
vapid_subject = ""
concurrency = 32
quota_window_hours = 24
per_recipient_per_hour = 20
breaker_failures = 5
breaker_cool_down_seconds = 300

[secrets]
"#;

/// Environment variables with the `WEDSYNC_` prefix that are not configuration keys.
const NOT_CONFIG: &[&str] = &[
    "WEDSYNC_CONFIG",
    "WEDSYNC_TEST_DATABASE_URL",
    "WEDSYNC_TEST_LOG",
];

/// The effective configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address `serve` listens on.
    pub listen: String,
    /// Where the embedded database (and later other local state) lives.
    pub data_dir: PathBuf,
    /// `postgres://…` or `sqlite://…`; the embedded SQLite file in `data_dir` when absent.
    #[serde(default)]
    pub database_url: Option<SecretString>,
    /// Database pool settings.
    pub database: DatabaseSettings,
    /// HTTP settings.
    pub http: HttpSettings,
    /// Logging.
    pub log: LogSettings,
    /// Product rules.
    pub rules: RuleSettings,
    /// The durable job queue's workers on this node.
    pub queue: QueueSettings,
    /// Inbound webhooks.
    pub inbound: InboundSettings,
    /// Outbound webhooks.
    pub outbound: OutboundSettings,
    /// Notifications and alerts.
    pub notify: NotifySettings,
    /// Secrets at rest.
    pub secrets: SecretSettings,
}

/// `[outbound]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundSettings {
    /// Delivery attempts in flight on this node.
    pub concurrency: u32,
    /// Attempts in flight to one endpoint on this node.
    pub per_endpoint_concurrency: u32,
    /// How long an attempt waits on this node for one of its endpoint's slots before it
    /// goes back to the queue for later (0: at once).
    pub slot_wait_ms: u64,
    /// The delay before each retry, in seconds; the number of entries is the number of
    /// retries (the first try comes on top).
    pub retry_schedule_seconds: Vec<u64>,
    /// Each delay is spread over ±this fraction.
    pub jitter: f64,
    /// An endpoint failing without a success this long is disabled.
    pub disable_after_days: u32,
    /// How long a rotated endpoint secret keeps signing beside the new one.
    pub rotation_grace_hours: u32,
    /// How long an `Idempotency-Key` on `POST /v1/messages` is honoured.
    pub idempotency_hours: u32,
    /// How long finished messages, deliveries and attempts are kept.
    pub retention_days: u32,
    /// The longest a connection may take to open.
    pub connect_timeout_ms: u64,
    /// Redirects followed (each checked by the SSRF guard).
    pub max_redirects: usize,
    /// Private subnets deliveries may reach (the SSRF guard refuses the rest), e.g.
    /// `["10.20.0.0/16"]`; `WEDSYNC_OUTBOUND__ALLOW_SUBNETS` takes a comma-separated list.
    pub allow_subnets: Vec<String>,
    /// Consecutive failures that open an endpoint's circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker waits before a probe.
    pub breaker_cool_down_seconds: u32,
}

/// `[notify]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySettings {
    /// The hub's public URL (`https://hub.example`), for one-click unsubscribe, open-pixel
    /// and click links in emails; empty: emails carry none of them.
    pub public_url: String,
    /// The contact push services see in VAPID signatures (`mailto:` or `https:`); empty: the
    /// public URL when it is https, else `mailto:postmaster@localhost`.
    pub vapid_subject: String,
    /// Notification sends in flight on this node.
    pub concurrency: u32,
    /// The rolling window tier quotas count over (product rules: 24 hours).
    pub quota_window_hours: u32,
    /// Messages per recipient per hour and channel, unless an organisation sets its own.
    pub per_recipient_per_hour: u32,
    /// Consecutive failures that open a provider's circuit breaker.
    pub breaker_failures: u32,
    /// How long an open provider breaker waits before a probe.
    pub breaker_cool_down_seconds: u32,
}

/// `[inbound]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InboundSettings {
    /// Largest webhook body accepted, in bytes.
    pub body_limit_bytes: usize,
    /// How much sources' rate limits are raised in peak season (May to September).
    pub peak_multiplier: f64,
    /// How long a rotated source secret keeps verifying.
    pub rotation_grace_hours: u32,
    /// Routing jobs run at once on this node (each routes the events of one stored batch).
    pub route_concurrency: u32,
    /// How long raw requests and their events are kept; a provider's event id is recognised
    /// as a duplicate for as long as its request is kept.
    pub retention_days: u32,
}

/// `[secrets]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSettings {
    /// Base64 of 32 random bytes that seal stored secrets (`WEDSYNC_SECRETS__MASTER_KEY`).
    /// When unset, `master.key` in the data dir is used, created on first run; several
    /// PostgreSQL nodes must all be given the same key.
    #[serde(default)]
    pub master_key: Option<SecretString>,
}

/// `[queue]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    /// Whether this node runs workers (an API-only node can turn them off).
    pub enabled: bool,
    /// Jobs claimed per query.
    pub batch_size: u32,
    /// How long a claimed job is held without a heartbeat before another node may run it.
    pub lease_seconds: u64,
    /// How often running jobs' leases are renewed.
    pub heartbeat_seconds: u64,
    /// The longest an idle worker waits before looking for work (wake-ups come sooner).
    pub idle_poll_ms: u64,
    /// How often expired leases are reaped.
    pub reap_seconds: u64,
    /// How long shutdown waits for running jobs before handing them back.
    pub drain_seconds: u64,
    /// How long succeeded and discarded jobs are kept (and dedupe keys remembered).
    pub keep_done_hours: u64,
    /// How long dead jobs are kept for inspection and retry.
    pub keep_dead_days: u64,
    /// Outbox events published at once on this node.
    pub publish_concurrency: u32,
}

/// `[database]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// Pool size.
    pub max_connections: u32,
    /// SQLite: how long a write waits for the lock.
    pub busy_timeout_ms: u64,
    /// How long a request waits for a pooled connection.
    pub acquire_timeout_ms: u64,
}

/// `[http]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Largest request body, in bytes.
    pub body_limit_bytes: usize,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace_seconds: u64,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// A tracing filter, e.g. `info` or `wedsync=debug,info`.
    pub level: String,
    /// `text` for people, `json` for log pipelines.
    pub format: String,
}

/// `[rules]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSettings {
    /// Days before a wedding within which moving its date needs explicit confirmation.
    pub wedding_date_confirm_days: i64,
}

/// Values given as command-line flags, which override everything else.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<String>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--database-url`.
    pub database_url: Option<String>,
}

/// A configuration error; its message names the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl Settings {
    /// Loads the layers. `file` is `--config`/`WEDSYNC_CONFIG`; without it `./wedsync.toml`
    /// is read when present.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<Settings, ConfigError> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        match file {
            Some(path) => {
                if !path.exists() {
                    return Err(ConfigError(format!(
                        "config file {} does not exist",
                        path.display()
                    )));
                }
                builder =
                    builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
            }
            None => {
                builder = builder.add_source(
                    config::File::with_name("wedsync.toml")
                        .format(config::FileFormat::Toml)
                        .required(false),
                );
            }
        }
        let vars: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("WEDSYNC_") && !NOT_CONFIG.contains(&k.as_str()))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("WEDSYNC")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("outbound.allow_subnets")
                .with_list_parse_key("outbound.retry_schedule_seconds")
                .source(Some(vars)),
        );
        let set = |b: config::ConfigBuilder<config::builder::DefaultState>,
                   key: &str,
                   v: Option<String>| match v {
            Some(v) => b.set_override(key, v),
            None => Ok(b),
        };
        builder = set(builder, "listen", overrides.listen.clone())
            .map_err(|e| ConfigError(e.to_string()))?;
        builder = set(
            builder,
            "data_dir",
            overrides.data_dir.as_ref().map(|p| p.display().to_string()),
        )
        .map_err(|e| ConfigError(e.to_string()))?;
        builder = set(builder, "database_url", overrides.database_url.clone())
            .map_err(|e| ConfigError(e.to_string()))?;
        let settings: Settings = builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| ConfigError(e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let fail = |key: &str, why: String| Err(ConfigError(format!("{key}: {why}")));
        if self.listen.parse::<SocketAddr>().is_err() {
            return fail(
                "listen",
                format!("`{}` is not an address such as 127.0.0.1:8080", self.listen),
            );
        }
        if self.data_dir.as_os_str().is_empty() {
            return fail("data_dir", "must not be empty".into());
        }
        if let Some(url) = &self.database_url {
            let url = url.expose_secret();
            if !(url.starts_with("postgres://")
                || url.starts_with("postgresql://")
                || url.starts_with("sqlite:"))
            {
                return fail(
                    "database_url",
                    "must start with postgres:// or sqlite://".into(),
                );
            }
        }
        if self.database.max_connections == 0 {
            return fail("database.max_connections", "must be at least 1".into());
        }
        if self.http.body_limit_bytes < 1024 {
            return fail("http.body_limit_bytes", "must be at least 1024".into());
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return fail(
                "log.level",
                format!(
                    "`{}` is not a log filter such as info or wedsync=debug",
                    self.log.level
                ),
            );
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return fail(
                "log.format",
                format!("`{}` is not one of text, json", self.log.format),
            );
        }
        if let Some(key) = &self.secrets.master_key
            && let Err(why) = wedsync_store::secrets::MasterKey::from_base64(key.expose_secret())
        {
            return fail("secrets.master_key", why);
        }
        if self.inbound.body_limit_bytes < 1024 {
            return fail("inbound.body_limit_bytes", "must be at least 1024".into());
        }
        if !(1.0..=100.0).contains(&self.inbound.peak_multiplier) {
            return fail(
                "inbound.peak_multiplier",
                "must be between 1 and 100".into(),
            );
        }
        let o = &self.outbound;
        if o.concurrency == 0 || o.per_endpoint_concurrency == 0 {
            return fail(
                "outbound.concurrency",
                "concurrency and per_endpoint_concurrency must be above 0".into(),
            );
        }
        // The wait holds a delivery slot and the job's lease: a minute at most.
        if o.slot_wait_ms > 60_000 {
            return fail(
                "outbound.slot_wait_ms",
                "must be at most 60000 (a minute)".into(),
            );
        }
        if o.retry_schedule_seconds.is_empty() || o.retry_schedule_seconds.len() > 50 {
            return fail(
                "outbound.retry_schedule_seconds",
                "must list 1 to 50 delays".into(),
            );
        }
        if !(0.0..=1.0).contains(&o.jitter) {
            return fail("outbound.jitter", "must be between 0 and 1".into());
        }
        if o.disable_after_days == 0 || o.idempotency_hours == 0 || o.retention_days == 0 {
            return fail(
                "outbound",
                "disable_after_days, idempotency_hours and retention_days must be above 0".into(),
            );
        }
        if o.breaker_failures == 0 {
            return fail("outbound.breaker_failures", "must be above 0".into());
        }
        for subnet in &o.allow_subnets {
            if subnet.parse::<ipnet::IpNet>().is_err()
                && subnet.parse::<std::net::IpAddr>().is_err()
            {
                return fail(
                    "outbound.allow_subnets",
                    format!("`{subnet}` is not an address or CIDR subnet"),
                );
            }
        }
        let n = &self.notify;
        if n.concurrency == 0
            || n.quota_window_hours == 0
            || n.per_recipient_per_hour == 0
            || n.breaker_failures == 0
        {
            return fail(
                "notify",
                "concurrency, quota_window_hours, per_recipient_per_hour and breaker_failures must be above 0".into(),
            );
        }
        let url = &n.public_url;
        if !(url.is_empty() || url.starts_with("https://") || url.starts_with("http://")) {
            return fail("notify.public_url", "must be an http(s) URL".into());
        }
        let subject = &self.notify.vapid_subject;
        if !(subject.is_empty()
            || subject.starts_with("mailto:")
            || subject.starts_with("https://"))
        {
            return fail(
                "notify.vapid_subject",
                "must be a mailto: or https: URL".into(),
            );
        }
        if self.inbound.route_concurrency == 0 {
            return fail("inbound.route_concurrency", "must be above 0".into());
        }
        let q = &self.queue;
        if !(1..=1000).contains(&q.batch_size) {
            return fail("queue.batch_size", "must be between 1 and 1000".into());
        }
        if q.heartbeat_seconds == 0 || q.lease_seconds < 2 * q.heartbeat_seconds {
            return fail(
                "queue.lease_seconds",
                format!(
                    "must be at least twice queue.heartbeat_seconds ({}), so one late heartbeat does not lose a lease",
                    q.heartbeat_seconds
                ),
            );
        }
        if q.idle_poll_ms == 0 || q.reap_seconds == 0 || q.publish_concurrency == 0 {
            return fail(
                "queue",
                "idle_poll_ms, reap_seconds and publish_concurrency must be above 0".into(),
            );
        }
        if !(0..=365).contains(&self.rules.wedding_date_confirm_days) {
            return fail(
                "rules.wedding_date_confirm_days",
                "must be between 0 and 365".into(),
            );
        }
        Ok(())
    }

    /// The database URL in force: the configured one, or the embedded SQLite file.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.expose_secret().to_owned(),
            None => wedsync_store::StoreOptions::sqlite_in(&self.data_dir),
        }
    }

    /// Whether the store is the embedded default (which `serve` migrates automatically).
    pub fn is_embedded(&self) -> bool {
        self.database_url().starts_with("sqlite:")
    }

    /// The outbound delivery policy these describe.
    pub fn delivery_policy(&self) -> wedsync_delivery::worker::DeliveryPolicy {
        let o = &self.outbound;
        let seconds =
            |s: u64| chrono::TimeDelta::seconds(i64::try_from(s).unwrap_or(i64::MAX / 1_000_000));
        let schedule: Vec<chrono::TimeDelta> = o
            .retry_schedule_seconds
            .iter()
            .copied()
            .map(seconds)
            .collect();
        let mut retry = wedsync_core::retry::RetryPolicy::webhook_default();
        retry.max_attempts = u32::try_from(schedule.len()).unwrap_or(50) + 1;
        retry.backoff = wedsync_core::retry::Backoff::Schedule(schedule);
        retry.jitter = o.jitter;
        wedsync_delivery::worker::DeliveryPolicy {
            retry,
            disable_after: chrono::TimeDelta::days(i64::from(o.disable_after_days)),
            breaker: wedsync_core::breaker::BreakerPolicy {
                failure_threshold: o.breaker_failures,
                cool_down: chrono::TimeDelta::seconds(i64::from(o.breaker_cool_down_seconds)),
                ..Default::default()
            },
            per_endpoint_concurrency: o.per_endpoint_concurrency as usize,
            slot_wait: std::time::Duration::from_millis(o.slot_wait_ms),
        }
    }

    /// The SSRF guard's allow-list (validated by [`Settings::load`]).
    /// The notification worker's policy.
    pub fn notify_policy(&self) -> wedsync_notify::worker::NotifyPolicy {
        let n = &self.notify;
        let mut policy = wedsync_notify::worker::NotifyPolicy::default();
        policy.quotas.window = chrono::TimeDelta::hours(i64::from(n.quota_window_hours));
        policy.per_recipient_per_hour = n.per_recipient_per_hour;
        policy.breaker.failure_threshold = n.breaker_failures;
        policy.breaker.cool_down =
            chrono::TimeDelta::seconds(i64::from(n.breaker_cool_down_seconds));
        policy
    }

    /// The VAPID subject (validated by [`Settings::load`]).
    pub fn vapid_subject(&self) -> String {
        let n = &self.notify;
        if !n.vapid_subject.is_empty() {
            n.vapid_subject.clone()
        } else if n.public_url.starts_with("https://") {
            n.public_url.clone()
        } else {
            "mailto:postmaster@localhost".into()
        }
    }

    /// The public URL for links in emails, when one is set.
    pub fn public_url(&self) -> Option<String> {
        (!self.notify.public_url.is_empty()).then(|| self.notify.public_url.clone())
    }

    /// The SSRF policy (shared by outbound webhooks and notification providers).
    pub fn ssrf_policy(&self) -> wedsync_delivery::ssrf::SsrfPolicy {
        wedsync_delivery::ssrf::SsrfPolicy {
            allow: self
                .outbound
                .allow_subnets
                .iter()
                .filter_map(|s| {
                    s.parse::<ipnet::IpNet>()
                        .ok()
                        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
                })
                .collect(),
        }
    }

    /// The listen address (validated by [`Settings::load`]).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8080)))
    }

    /// The master key that seals stored secrets.
    pub fn master_key(&self) -> Result<wedsync_store::secrets::MasterKey, String> {
        match &self.secrets.master_key {
            Some(key) => wedsync_store::secrets::MasterKey::from_base64(key.expose_secret())
                .map_err(|e| format!("secrets.master_key: {e}")),
            None => {
                wedsync_store::secrets::MasterKey::load_or_create(&self.data_dir.join("master.key"))
            }
        }
    }

    /// The worker pool settings these describe.
    pub fn pool_config(&self) -> wedsync_store::worker::PoolConfig {
        use std::time::Duration;
        let q = &self.queue;
        wedsync_store::worker::PoolConfig {
            batch_size: q.batch_size,
            lease: chrono::TimeDelta::seconds(i64::try_from(q.lease_seconds).unwrap_or(i64::MAX)),
            heartbeat_every: Duration::from_secs(q.heartbeat_seconds),
            idle_poll: Duration::from_millis(q.idle_poll_ms),
            reap_every: Duration::from_secs(q.reap_seconds),
            drain_timeout: Duration::from_secs(q.drain_seconds),
            prune: Some(wedsync_store::worker::PruneConfig {
                every: Duration::from_secs(600),
                keep_done: chrono::TimeDelta::hours(
                    i64::try_from(q.keep_done_hours).unwrap_or(i64::MAX / 3_600_000_000),
                ),
                keep_dead: chrono::TimeDelta::days(
                    i64::try_from(q.keep_dead_days).unwrap_or(i64::MAX / 86_400_000_000),
                ),
                keep_inbound: Some(chrono::TimeDelta::days(i64::from(
                    self.inbound.retention_days.max(1),
                ))),
                keep_outbound: Some(chrono::TimeDelta::days(i64::from(
                    self.outbound.retention_days.max(1),
                ))),
            }),
            ..Default::default()
        }
    }

    /// The store options these settings describe.
    pub fn store_options(&self) -> wedsync_store::StoreOptions {
        let mut options = wedsync_store::StoreOptions::new(self.database_url());
        options.max_connections = self.database.max_connections;
        options.busy_timeout = std::time::Duration::from_millis(self.database.busy_timeout_ms);
        options.acquire_timeout =
            std::time::Duration::from_millis(self.database.acquire_timeout_ms);
        options
    }

    /// The effective configuration with secrets redacted, for `config check`.
    pub fn redacted(&self) -> serde_json::Value {
        serde_json::json!({
            "listen": self.listen,
            "data_dir": self.data_dir,
            "database_url": redact_url(&self.database_url()),
            "database": self.database,
            "http": self.http,
            "log": self.log,
            "rules": self.rules,
            "queue": self.queue,
            "inbound": self.inbound,
            "outbound": self.outbound,
            "notify": self.notify,
            "secrets": { "master_key": self.secrets.master_key.as_ref().map(|_| "***") },
        })
    }
}

/// Replaces the password in a URL's user-info with `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map(|(u, _)| u).unwrap_or(userinfo);
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{tail}")
            } else {
                format!("{scheme}://{user}@{host}{tail}")
            }
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(env: &[(&str, &str)], overrides: &Overrides) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("none.toml");
        std::fs::write(&missing, "").expect("write");
        Settings::load(
            Some(&missing),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            overrides,
        )
    }

    #[test]
    fn defaults_are_valid() {
        let s = load(&[], &Overrides::default()).expect("defaults");
        assert_eq!(s.listen, "127.0.0.1:8080");
        assert!(s.is_embedded());
    }

    #[test]
    fn environment_then_flags_override() {
        let env = [
            ("WEDSYNC_LISTEN", "127.0.0.1:9000"),
            ("WEDSYNC_DATABASE__MAX_CONNECTIONS", "3"),
        ];
        let s = load(&env, &Overrides::default()).expect("valid");
        assert_eq!(s.listen, "127.0.0.1:9000");
        assert_eq!(s.database.max_connections, 3);
        let flags = Overrides {
            listen: Some("127.0.0.1:9001".into()),
            ..Default::default()
        };
        assert_eq!(load(&env, &flags).expect("valid").listen, "127.0.0.1:9001");
    }

    #[test]
    fn file_layer_sits_between_defaults_and_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("wedsync.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:7000\"\n[log]\nformat = \"json\"\n",
        )
        .expect("write");
        let s = Settings::load(Some(&file), Vec::new(), &Overrides::default()).expect("valid");
        assert_eq!(
            (s.listen.as_str(), s.log.format.as_str()),
            ("127.0.0.1:7000", "json")
        );
        let env = vec![("WEDSYNC_LISTEN".to_string(), "127.0.0.1:7001".to_string())];
        assert_eq!(
            Settings::load(Some(&file), env, &Overrides::default())
                .expect("valid")
                .listen,
            "127.0.0.1:7001"
        );
    }

    #[test]
    fn errors_name_the_key() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("WEDSYNC_LISTEN", "nowhere")], "listen"),
            (
                &[("WEDSYNC_DATABASE__MAX_CONNECTIONS", "lots")],
                "database.max_connections",
            ),
            (
                &[("WEDSYNC_DATABASE__MAX_CONNECTIONS", "0")],
                "database.max_connections",
            ),
            (&[("WEDSYNC_DATABASE_URL", "mysql://x")], "database_url"),
            (&[("WEDSYNC_LOG__FORMAT", "xml")], "log.format"),
            (
                &[("WEDSYNC_HTTP__BODY_LIMIT_BYTES", "10")],
                "http.body_limit_bytes",
            ),
            (
                &[("WEDSYNC_RULES__WEDDING_DATE_CONFIRM_DAYS", "-1")],
                "rules.wedding_date_confirm_days",
            ),
            (&[("WEDSYNC_LISTNE", "127.0.0.1:1")], "listne"),
            (
                &[("WEDSYNC_QUEUE__LEASE_SECONDS", "5")],
                "queue.lease_seconds",
            ),
            (&[("WEDSYNC_QUEUE__BATCH_SIZE", "0")], "queue.batch_size"),
            (
                &[("WEDSYNC_SECRETS__MASTER_KEY", "c2hvcnQ=")],
                "secrets.master_key",
            ),
            (
                &[("WEDSYNC_INBOUND__PEAK_MULTIPLIER", "0.5")],
                "inbound.peak_multiplier",
            ),
            (
                &[("WEDSYNC_OUTBOUND__SLOT_WAIT_MS", "60001")],
                "outbound.slot_wait_ms",
            ),
        ];
        for (env, key) in cases {
            let err = load(env, &Overrides::default())
                .expect_err("invalid")
                .to_string();
            assert!(err.contains(key), "{err:?} should name {key}");
        }
    }

    #[test]
    fn the_slot_wait_reaches_the_delivery_policy() {
        let defaults = load(&[], &Overrides::default()).expect("defaults");
        assert_eq!(
            defaults.delivery_policy().slot_wait,
            std::time::Duration::from_secs(1)
        );
        let s = load(
            &[("WEDSYNC_OUTBOUND__SLOT_WAIT_MS", "250")],
            &Overrides::default(),
        )
        .expect("valid");
        assert_eq!(
            s.delivery_policy().slot_wait,
            std::time::Duration::from_millis(250)
        );
    }

    #[test]
    fn test_variables_are_not_configuration() {
        load(
            &[("WEDSYNC_TEST_DATABASE_URL", "postgres://x")],
            &Overrides::default(),
        )
        .expect("ignored");
    }

    #[test]
    fn redaction_hides_passwords_only() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/wed"),
            "postgres://app:***@db:5432/wed"
        );
        assert_eq!(redact_url("postgres://app@db/wed"), "postgres://app@db/wed");
        assert_eq!(
            redact_url("sqlite://./data/wedsync.db"),
            "sqlite://./data/wedsync.db"
        );
    }
}

//! Inbound sources: an organisation's senders of signed webhooks. Signing secrets are sealed
//! with the master key, returned only when created or rotated, and never audited; a rotation
//! keeps the previous secret valid for a grace period so senders can switch over.

use base64::Engine;
use chrono::{DateTime, TimeDelta, Utc};
use rand::RngCore;
use sea_orm::{ConnectionTrait, Statement, Value};
use serde::{Deserialize, Serialize};
use wedsync_core::clock::{from_micros, to_micros};
use wedsync_core::id::{OrgId, SourceId};
use wedsync_core::source::{GenericHmacConfig, Provider};
use wedsync_core::validate::{ValidationErrors, text};

use crate::audit::{self, Change};
use crate::secrets::MasterKey;
use crate::{Actor, Store, StoreError, StoreResult};

/// Default and bounds for a source's settings.
pub const DEFAULT_RATE_PER_MINUTE: u32 = 100;
/// Default timestamp tolerance in seconds (Stripe's is also 300 s).
pub const DEFAULT_TOLERANCE_SECONDS: u32 = 300;

/// Settings stored with a source (everything but its secrets).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SourceConfig {
    /// How a generic HMAC sender signs (Tave, Zapier, generic).
    pub generic: Option<GenericHmacConfig>,
    /// Addresses or CIDR ranges allowed to send; empty allows any.
    pub ip_allowlist: Vec<String>,
    /// Requests accepted per minute (scaled up in peak season).
    pub rate_per_minute: u32,
    /// How far a signed timestamp may be from now, in seconds.
    pub tolerance_seconds: u32,
}

/// A source as the API shows it: never its secrets.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Source {
    /// `src_…`.
    pub id: SourceId,
    /// What it is, e.g. "Stripe live".
    pub name: String,
    /// The sender.
    pub provider: Provider,
    /// Its settings.
    #[serde(flatten)]
    pub config: SourceConfig,
    /// Whether requests are accepted.
    pub enabled: bool,
    /// Where the sender posts to.
    pub inbound_path: String,
    /// Until when the previous secret still verifies, after a rotation.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// A source with what verification needs.
#[derive(Clone)]
pub struct VerifyingSource {
    /// The source.
    pub source: Source,
    /// Its organisation.
    pub org_id: OrgId,
    /// The current secret, then the previous one while it has one (see
    /// [`VerifyingSource::valid_secrets`] for which verify at a given instant).
    pub secrets: Vec<Vec<u8>>,
    /// When the previous secret stops verifying.
    pub previous_expires_at: Option<DateTime<Utc>>,
}

impl VerifyingSource {
    /// The secrets that verify at `now`: the current one, and the previous one until its
    /// grace ends. Checked at use time, so a cached source never outlives a grace period.
    pub fn valid_secrets(&self, now: DateTime<Utc>) -> Vec<&[u8]> {
        self.secrets
            .iter()
            .enumerate()
            .filter(|(i, _)| *i == 0 || self.previous_expires_at.is_some_and(|until| now < until))
            .map(|(_, s)| s.as_slice())
            .collect()
    }
}

impl std::fmt::Debug for VerifyingSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingSource")
            .field("source", &self.source.id)
            .field("secrets", &"***")
            .finish()
    }
}

/// Validated input for a new source.
#[derive(Debug, Clone)]
pub struct NewSource {
    /// Name.
    pub name: String,
    /// Sender.
    pub provider: Provider,
    /// Settings.
    pub config: SourceConfig,
    /// The signing secret, when the provider issued it.
    pub secret: Option<String>,
}

/// Checks a source's settings, naming bad fields.
pub fn validate_config(provider: Provider, config: &SourceConfig, errors: &mut ValidationErrors) {
    match (&config.generic, provider.uses_generic_hmac()) {
        (Some(g), true) => g.validate(errors, "generic"),
        (None, true) => errors.add(
            "generic",
            format!("{provider} sources need a generic HMAC description"),
        ),
        (Some(_), false) => errors.add(
            "generic",
            format!("{provider} has its own signature scheme"),
        ),
        (None, false) => {}
    }
    for (i, entry) in config.ip_allowlist.iter().enumerate() {
        if entry.parse::<ipnet::IpNet>().is_err() && entry.parse::<std::net::IpAddr>().is_err() {
            errors.add(
                format!("ip_allowlist[{i}]"),
                "must be an address or CIDR range such as 203.0.113.0/24",
            );
        }
    }
    if !(1..=1_000_000).contains(&config.rate_per_minute) {
        errors.add("rate_per_minute", "must be between 1 and 1000000");
    }
    if !(1..=3600).contains(&config.tolerance_seconds) {
        errors.add("tolerance_seconds", "must be between 1 and 3600");
    }
}

impl NewSource {
    /// Validates raw input.
    pub fn parse(
        name: &str,
        provider: Provider,
        config: SourceConfig,
        secret: Option<String>,
    ) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let name = text(&mut errors, "name", name, 200);
        validate_config(provider, &config, &mut errors);
        match (&secret, provider.issues_its_own_secret()) {
            (None, true) => errors.add(
                "secret",
                format!("{provider} issues the signing secret: paste it here"),
            ),
            (Some(s), _) if s.trim().is_empty() || s.len() > 512 => {
                errors.add("secret", "must be 1 to 512 characters")
            }
            _ => {}
        }
        errors.into_result(Self {
            name: name.unwrap_or_default(),
            provider,
            config,
            secret,
        })
    }
}

/// Whether an address may send to a source.
pub fn ip_allowed(allowlist: &[String], ip: std::net::IpAddr) -> bool {
    let ip = match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    allowlist.is_empty()
        || allowlist
            .iter()
            .any(|entry| match entry.parse::<ipnet::IpNet>() {
                Ok(net) => net.contains(&ip),
                Err(_) => entry.parse::<std::net::IpAddr>().is_ok_and(|a| a == ip),
            })
}

/// A new secret in the form the provider's scheme expects.
fn generate_secret(provider: Provider) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    match provider {
        Provider::StandardWebhooks | Provider::Svix => {
            format!(
                "whsec_{}",
                base64::engine::general_purpose::STANDARD.encode(bytes)
            )
        }
        _ => hex::encode(bytes),
    }
}

struct Row {
    id: String,
    org_id: String,
    name: String,
    provider: String,
    config: String,
    secret_sealed: String,
    previous_secret_sealed: Option<String>,
    previous_secret_expires_at: Option<i64>,
    enabled: bool,
    created_at: i64,
    updated_at: i64,
}

fn read_row(r: &sea_orm::QueryResult) -> StoreResult<Row> {
    Ok(Row {
        id: r.try_get("", "id")?,
        org_id: r.try_get("", "org_id")?,
        name: r.try_get("", "name")?,
        provider: r.try_get("", "provider")?,
        config: r.try_get("", "config")?,
        secret_sealed: r.try_get("", "secret_sealed")?,
        previous_secret_sealed: r.try_get("", "previous_secret_sealed")?,
        previous_secret_expires_at: r.try_get("", "previous_secret_expires_at")?,
        enabled: r.try_get("", "enabled")?,
        created_at: r.try_get("", "created_at")?,
        updated_at: r.try_get("", "updated_at")?,
    })
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Conflict(format!("corrupt source row: {e}"))
}

fn to_view(row: &Row) -> StoreResult<Source> {
    let id: SourceId = row.id.parse().map_err(corrupt)?;
    Ok(Source {
        inbound_path: format!("/v1/inbound/{id}"),
        id,
        name: row.name.clone(),
        provider: row.provider.parse().map_err(corrupt)?,
        config: serde_json::from_str(&row.config).map_err(corrupt)?,
        enabled: row.enabled,
        previous_secret_expires_at: row.previous_secret_expires_at.map(from_micros),
        created_at: from_micros(row.created_at),
        updated_at: from_micros(row.updated_at),
    })
}

impl Store {
    /// A key derived from the master key for `label` (see [`MasterKey::derive`]).
    pub fn derived_key(&self, label: &str) -> StoreResult<[u8; 32]> {
        Ok(self.master_key()?.derive(label))
    }

    pub(crate) fn master_key(&self) -> StoreResult<&MasterKey> {
        self.master_key.as_deref().ok_or_else(|| {
            StoreError::Config("no master key is configured for stored secrets".into())
        })
    }

    async fn source_row<C: ConnectionTrait>(
        db: &C,
        org: Option<&OrgId>,
        id: &SourceId,
    ) -> StoreResult<Row> {
        let row = db
            .query_one_raw(Statement::from_sql_and_values(
                db.get_database_backend(),
                "SELECT * FROM sources WHERE id = $1",
                vec![Value::from(id.to_string())],
            ))
            .await?
            .ok_or(StoreError::NotFound)?;
        let row = read_row(&row)?;
        if org.is_some_and(|o| o.to_string() != row.org_id) {
            return Err(StoreError::NotFound);
        }
        Ok(row)
    }

    /// Creates a source; returns it with its signing secret, shown this once.
    pub async fn create_source(
        &self,
        org: &OrgId,
        new: NewSource,
        actor: &Actor,
    ) -> StoreResult<(Source, String)> {
        let key = self.master_key()?.clone();
        let now = self.clock().now();
        let id = SourceId::new_at(now);
        let secret = new
            .secret
            .clone()
            .unwrap_or_else(|| generate_secret(new.provider));
        let sealed = key.seal(&id.to_string(), secret.as_bytes())?;
        let tx = self.write_tx().await?;
        tx.execute_raw(Statement::from_sql_and_values(
            self.backend(),
            "INSERT INTO sources (id, org_id, name, provider, config, secret_sealed, previous_secret_sealed, \
             previous_secret_expires_at, enabled, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, NULL, NULL, $7, $8, $8)",
            vec![
                id.to_string().into(),
                org.to_string().into(),
                new.name.clone().into(),
                new.provider.as_str().into(),
                serde_json::to_string(&new.config).map_err(corrupt)?.into(),
                sealed.into(),
                true.into(),
                to_micros(now).into(),
            ],
        ))
        .await?;
        let view = to_view(&Self::source_row(&tx, Some(org), &id).await?)?;
        audit::append(
            &tx,
            org,
            now,
            Change {
                actor,
                action: "source.create",
                target_type: "source",
                target_id: id.to_string(),
                before: None,
                after: serde_json::to_value(&view).ok(),
            },
        )
        .await?;
        tx.commit().await?;
        Ok((view, secret))
    }

    /// `org`'s sources.
    pub async fn list_sources(&self, org: &OrgId) -> StoreResult<Vec<Source>> {
        let rows = self
            .connection()
            .query_all_raw(Statement::from_sql_and_values(
                self.backend(),
                "SELECT * FROM sources WHERE org_id = $1 ORDER BY id",
                vec![Value::from(org.to_string())],
            ))
            .await?;
        rows.iter().map(|r| to_view(&read_row(r)?)).collect()
    }

    /// One of `org`'s sources.
    pub async fn get_source(&self, org: &OrgId, id: &SourceId) -> StoreResult<Source> {
        to_view(&Self::source_row(self.connection(), Some(org), id).await?)
    }

    /// Changes a source's name, settings or enabled flag; `edit` gets the current source.
    pub async fn update_source<F>(
        &self,
        org: &OrgId,
        id: &SourceId,
        actor: &Actor,
        edit: F,
    ) -> StoreResult<Source>
    where
        F: FnOnce(&Source) -> Result<(String, SourceConfig, bool), ValidationErrors> + Send,
    {
        let now = self.clock().now();
        let tx = self.write_tx().await?;
        let before = to_view(&Self::source_row(&tx, Some(org), id).await?)?;
        let (name, config, enabled) = edit(&before)?;
        tx.execute_raw(Statement::from_sql_and_values(
            self.backend(),
            "UPDATE sources SET name = $1, config = $2, enabled = $3, updated_at = $4 WHERE id = $5",
            vec![
                name.into(),
                serde_json::to_string(&config).map_err(corrupt)?.into(),
                enabled.into(),
                to_micros(now).into(),
                id.to_string().into(),
            ],
        ))
        .await?;
        let after = to_view(&Self::source_row(&tx, Some(org), id).await?)?;
        audit::append(
            &tx,
            org,
            now,
            Change {
                actor,
                action: "source.update",
                target_type: "source",
                target_id: id.to_string(),
                before: serde_json::to_value(&before).ok(),
                after: serde_json::to_value(&after).ok(),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(after)
    }

    /// Replaces a source's secret; the previous one keeps verifying for `grace`. Returns the
    /// new secret, shown this once.
    pub async fn rotate_source_secret(
        &self,
        org: &OrgId,
        id: &SourceId,
        secret: Option<String>,
        grace: TimeDelta,
        actor: &Actor,
    ) -> StoreResult<(Source, String)> {
        let key = self.master_key()?.clone();
        let now = self.clock().now();
        let tx = self.write_tx().await?;
        let row = Self::source_row(&tx, Some(org), id).await?;
        let provider: Provider = row.provider.parse().map_err(corrupt)?;
        let secret = match secret {
            Some(s) if !s.trim().is_empty() && s.len() <= 512 => s,
            Some(_) => {
                return Err(
                    ValidationErrors::single("secret", "must be 1 to 512 characters").into(),
                );
            }
            None if provider.issues_its_own_secret() => {
                return Err(ValidationErrors::single(
                    "secret",
                    format!("{provider} issues the signing secret: paste the new one"),
                )
                .into());
            }
            None => generate_secret(provider),
        };
        let sealed = key.seal(&row.id, secret.as_bytes())?;
        tx.execute_raw(Statement::from_sql_and_values(
            self.backend(),
            "UPDATE sources SET previous_secret_sealed = secret_sealed, previous_secret_expires_at = $1, \
             secret_sealed = $2, updated_at = $3 WHERE id = $4",
            vec![to_micros(now + grace).into(), sealed.into(), to_micros(now).into(), row.id.clone().into()],
        ))
        .await?;
        let after = to_view(&Self::source_row(&tx, Some(org), id).await?)?;
        audit::append(&tx, org, now, Change {
            actor,
            action: "source.rotate_secret",
            target_type: "source",
            target_id: id.to_string(),
            before: None,
            after: Some(serde_json::json!({ "previous_secret_expires_at": after.previous_secret_expires_at })),
        })
        .await?;
        tx.commit().await?;
        Ok((after, secret))
    }

    /// A source and its currently valid secrets, for verifying a request; `None` if it does
    /// not exist.
    pub async fn source_for_verification(
        &self,
        id: &SourceId,
    ) -> StoreResult<Option<VerifyingSource>> {
        let row = match Self::source_row(self.connection(), None, id).await {
            Ok(row) => row,
            Err(StoreError::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        let key = self.master_key()?;
        let mut secrets = vec![key.open(&row.id, &row.secret_sealed)?];
        if let Some(prev) = &row.previous_secret_sealed {
            secrets.push(key.open(&row.id, prev)?);
        }
        Ok(Some(VerifyingSource {
            source: to_view(&row)?,
            org_id: row.org_id.parse().map_err(corrupt)?,
            secrets,
            previous_expires_at: row.previous_secret_expires_at.map(from_micros),
        }))
    }
}

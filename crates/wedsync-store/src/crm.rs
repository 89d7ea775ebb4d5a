//! CRM connections: an organisation's credentials for a CRM that journeys' `crm_update`
//! steps write to. One connection per CRM; the credentials (HubSpot: a private app's access
//! token; Salesforce: a connected app's client id and secret) are sealed at rest (AES-256-GCM
//! under the master key, bound to the connection's id) and never returned.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, QueryResult};
use serde::{Deserialize, Serialize};
use wedsync_core::clock::{from_micros, to_micros};
use wedsync_core::id::{CrmConnectionId, OrgId};
use wedsync_core::validate::ValidationErrors;

use crate::audit::{self, Change};
use crate::sql::stmt;
use crate::{Actor, Store, StoreError, StoreResult};

/// The CRMs WedSync can write to.
pub const SYSTEMS: [&str; 2] = ["hubspot", "salesforce"];

/// A CRM connection as the API shows it (never its token).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CrmConnection {
    /// `crm_…`.
    #[schema(value_type = String)]
    pub id: CrmConnectionId,
    /// The CRM: `hubspot` or `salesforce`.
    pub system: String,
    /// A name for people.
    pub name: String,
    /// The API base URL (HubSpot: `https://api.hubapi.com`; Salesforce: the org's My Domain
    /// URL, where its token endpoint is).
    pub base_url: String,
    /// When it was added.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// A new CRM connection.
#[derive(Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CrmConnectionInput {
    /// The CRM: `hubspot` or `salesforce`.
    pub system: String,
    /// A name for people (default: the CRM's).
    #[serde(default)]
    pub name: Option<String>,
    /// HubSpot: a private app's access token (`pat-…`); write-only.
    #[serde(default)]
    pub access_token: Option<String>,
    /// Salesforce: the connected app's consumer key (client credentials flow); write-only.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Salesforce: the connected app's consumer secret; write-only.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// The API base URL: HubSpot's public API by default (set it for a proxy); required for
    /// Salesforce, the org's My Domain URL (`https://acme.my.salesforce.com`).
    #[serde(default)]
    pub base_url: Option<String>,
}

impl std::fmt::Debug for CrmConnectionInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrmConnectionInput")
            .field("system", &self.system)
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// A connection with its credentials opened, for a step that writes with it.
#[derive(Clone)]
pub struct CrmCredentials {
    /// The connection.
    pub connection: CrmConnection,
    /// The credentials by name: `access_token` (HubSpot), `client_id` and `client_secret`
    /// (Salesforce).
    pub secrets: BTreeMap<String, String>,
}

impl CrmCredentials {
    /// One credential, or an empty string when the connection has none by that name.
    pub fn secret(&self, name: &str) -> &str {
        self.secrets.get(name).map_or("", String::as_str)
    }
}

impl std::fmt::Debug for CrmCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrmCredentials")
            .field("connection", &self.connection)
            .finish_non_exhaustive()
    }
}

/// The public API base URL of `system`, when it has one (Salesforce's is per org).
pub fn default_base_url(system: &str) -> Option<&'static str> {
    (system == "hubspot").then_some("https://api.hubapi.com")
}

fn to_connection(row: &QueryResult) -> StoreResult<CrmConnection> {
    let config: serde_json::Value = serde_json::from_str(&row.try_get::<String>("", "config")?)
        .map_err(|e| StoreError::Conflict(format!("stored crm connection is unreadable: {e}")))?;
    let system: String = row.try_get("", "system")?;
    Ok(CrmConnection {
        id: row
            .try_get::<String>("", "id")?
            .parse()
            .map_err(|e| StoreError::Conflict(format!("stored crm connection id: {e:?}")))?,
        base_url: config
            .get("base_url")
            .and_then(serde_json::Value::as_str)
            .or(default_base_url(&system))
            .unwrap_or_default()
            .to_owned(),
        system,
        name: row.try_get("", "name")?,
        created_at: from_micros(row.try_get("", "created_at")?),
        updated_at: from_micros(row.try_get("", "updated_at")?),
    })
}

/// The name and the credentials a system needs.
fn credential_names(system: &str) -> (&'static str, &'static [&'static str]) {
    match system {
        "salesforce" => ("Salesforce", &["client_id", "client_secret"]),
        _ => ("HubSpot", &["access_token"]),
    }
}

/// Whether a base URL may be stored: https (http only to this machine: a local proxy or a
/// test double), no user or password (it is shown to viewers), no query or fragment.
fn base_url_ok(u: &url::Url) -> bool {
    let local = match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => return false,
    };
    (u.scheme() == "https" || (u.scheme() == "http" && local))
        && u.username().is_empty()
        && u.password().is_none()
        && u.query().is_none()
        && u.fragment().is_none()
}

/// What a valid input stores: the name, the base URL, the credentials to seal.
type Checked = (String, Option<String>, BTreeMap<String, String>);

impl CrmConnectionInput {
    fn validate(&self) -> Result<Checked, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        if !SYSTEMS.contains(&self.system.as_str()) {
            errors.add(
                "system",
                format!(
                    "`{}` is not a CRM WedSync writes to; use one of: {}",
                    self.system,
                    SYSTEMS.join(", ")
                ),
            );
        }
        let (label, needed) = credential_names(&self.system);
        let mut secrets = BTreeMap::new();
        for (field, value) in [
            ("access_token", &self.access_token),
            ("client_id", &self.client_id),
            ("client_secret", &self.client_secret),
        ] {
            let wanted = needed.contains(&field);
            match value.as_deref().map(str::trim) {
                Some(v) if wanted => {
                    if v.is_empty() || v.len() > 4096 || v.chars().any(char::is_control) {
                        errors.add(field, "1 to 4096 characters, no control characters");
                    } else {
                        secrets.insert(field.to_owned(), v.to_owned());
                    }
                }
                None if wanted => errors.add(field, format!("{label} needs it")),
                Some(_) => errors.add(field, format!("{label} does not take it")),
                None => {}
            }
        }
        let name = self
            .name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .unwrap_or(label)
            .to_owned();
        if name.chars().count() > 200 {
            errors.add("name", "at most 200 characters");
        }
        let base_url = match self.base_url.as_deref() {
            None => {
                if self.system == "salesforce" {
                    errors.add(
                        "base_url",
                        "Salesforce needs the org's My Domain URL, e.g. https://acme.my.salesforce.com",
                    );
                }
                None
            }
            Some(raw) => match url::Url::parse(raw) {
                Ok(u) if base_url_ok(&u) => Some(raw.trim_end_matches('/').to_owned()),
                _ => {
                    errors.add(
                        "base_url",
                        "an https URL with no credentials, query or fragment (plain http only to this machine)",
                    );
                    None
                }
            },
        };
        errors.into_result((name, base_url, secrets))
    }
}

impl Store {
    /// Adds the organisation's connection to a CRM (one per CRM: a second is a conflict).
    pub async fn create_crm_connection(
        &self,
        org: &OrgId,
        input: CrmConnectionInput,
        actor: &Actor,
    ) -> StoreResult<CrmConnection> {
        let (name, base_url, secrets) = input.validate()?;
        let now = self.clock().now();
        let id = CrmConnectionId::new_at(now);
        let plain = serde_json::to_vec(&secrets)
            .map_err(|e| StoreError::Conflict(format!("credentials: {e}")))?;
        let sealed = self
            .master_key()?
            .seal(&format!("{id}:credentials"), &plain)?;
        let config = serde_json::json!({ "base_url": base_url });
        let tx = self.write_tx().await?;
        let inserted = tx
            .execute_raw(stmt(
                self.backend(),
                "INSERT INTO crm_connections (id, org_id, system, name, config, credentials_sealed, \
                 created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
                vec![
                    id.to_string().into(),
                    org.to_string().into(),
                    input.system.clone().into(),
                    name.into(),
                    config.to_string().into(),
                    sealed.into(),
                    to_micros(now).into(),
                ],
            ))
            .await;
        if let Err(e) = inserted {
            return Err(if crate::is_unique_violation(&e) {
                StoreError::Conflict(format!(
                    "the organisation already has a {} connection; delete it first",
                    input.system
                ))
            } else {
                e.into()
            });
        }
        let view = to_connection(&Self::crm_row(&tx, org, &id.to_string()).await?)?;
        audit::append(
            &tx,
            org,
            now,
            Change {
                actor,
                action: "crm_connection.create",
                target_type: "crm_connection",
                target_id: id.to_string(),
                before: None,
                after: serde_json::to_value(&view).ok(),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(view)
    }

    async fn crm_row<C: ConnectionTrait>(
        db: &C,
        org: &OrgId,
        id: &str,
    ) -> StoreResult<QueryResult> {
        db.query_one_raw(stmt(
            db.get_database_backend(),
            "SELECT * FROM crm_connections WHERE org_id = $1 AND id = $2",
            vec![org.to_string().into(), id.into()],
        ))
        .await?
        .ok_or(StoreError::NotFound)
    }

    /// The organisation's CRM connections.
    pub async fn list_crm_connections(&self, org: &OrgId) -> StoreResult<Vec<CrmConnection>> {
        self.connection()
            .query_all_raw(stmt(
                self.backend(),
                "SELECT * FROM crm_connections WHERE org_id = $1 ORDER BY id",
                vec![org.to_string().into()],
            ))
            .await?
            .iter()
            .map(to_connection)
            .collect()
    }

    /// Removes a connection; `crm_update` steps for its CRM then stop as blocked.
    pub async fn delete_crm_connection(
        &self,
        org: &OrgId,
        id: &str,
        actor: &Actor,
    ) -> StoreResult<()> {
        let now = self.clock().now();
        let tx = self.write_tx().await?;
        let before = to_connection(&Self::crm_row(&tx, org, id).await?)?;
        tx.execute_raw(stmt(
            self.backend(),
            "DELETE FROM crm_connections WHERE org_id = $1 AND id = $2",
            vec![org.to_string().into(), id.into()],
        ))
        .await?;
        audit::append(
            &tx,
            org,
            now,
            Change {
                actor,
                action: "crm_connection.delete",
                target_type: "crm_connection",
                target_id: id.to_owned(),
                before: serde_json::to_value(&before).ok(),
                after: None,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The organisation's connection to `system` with its credentials opened; `None` when
    /// there is none.
    pub async fn crm_credentials(
        &self,
        org: &OrgId,
        system: &str,
    ) -> StoreResult<Option<CrmCredentials>> {
        let Some(row) = self
            .connection()
            .query_one_raw(stmt(
                self.backend(),
                "SELECT * FROM crm_connections WHERE org_id = $1 AND system = $2",
                vec![org.to_string().into(), system.into()],
            ))
            .await?
        else {
            return Ok(None);
        };
        let connection = to_connection(&row)?;
        let plain = self.master_key()?.open(
            &format!("{}:credentials", connection.id),
            &row.try_get::<String>("", "credentials_sealed")?,
        )?;
        Ok(Some(CrmCredentials {
            connection,
            secrets: serde_json::from_slice(&plain).map_err(|_| {
                StoreError::Conflict("stored crm credentials are unreadable".into())
            })?,
        }))
    }
}

//! Writing a couple's partners to a CRM for `crm_update` steps: HubSpot contacts, keyed by
//! email (`reference/providers.md`: contacts dedupe on `email`).
//!
//! One contact per partner with an email: `PATCH /crm/v3/objects/contacts/{email}
//! ?idProperty=email {"properties": {…}}` updates it; a 404 (no such contact) creates it with
//! `POST /crm/v3/objects/contacts {"properties": {…, "email", "firstname", "lastname"}}`; a
//! 409 on that create (someone created it in between) updates it after all. Both calls
//! carry `Authorization: Bearer <private app token>`. Writing the same properties twice
//! changes nothing, so a step rerun after a crash is safe.
//!
//! Requests go through the SSRF-guarded client (a connection's base URL is the customer's
//! to set). A 429 defers the step until `Retry-After`; a 5xx or a network failure retries it
//! under the durable work policy; a refused token (401, 403) or a request HubSpot rejects
//! (another 4xx, e.g. an unknown property) stops the instance as `blocked` with HubSpot's
//! message, for someone to fix and retry.

use chrono::{DateTime, TimeDelta, Utc};
use reqwest::Method;
use serde_json::{Map, Value, json};
use wedsync_delivery::ssrf::GuardedClient;
use wedsync_store::crm::CrmCredentials;

/// Why a CRM write did not happen.
#[derive(Debug, Clone, PartialEq)]
pub enum CrmFailure {
    /// Try again later (network, 5xx).
    Retry(String),
    /// Try again at this instant (429 `Retry-After`).
    RetryAt(DateTime<Utc>, String),
    /// A person must act (token refused, request rejected).
    Refused(String),
}

/// Writes to CRMs over the guarded HTTP client.
#[derive(Clone)]
pub struct CrmWriter {
    http: GuardedClient,
}

impl std::fmt::Debug for CrmWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrmWriter").finish_non_exhaustive()
    }
}

/// What HubSpot answered, reduced to what the step needs.
enum Answer {
    Ok(String),
    NotFound,
    Conflict,
}

impl CrmWriter {
    /// A writer sending through `http`.
    pub fn new(http: GuardedClient) -> Self {
        Self { http }
    }

    /// Creates or updates the HubSpot contact with `email`, setting `properties`; returns
    /// the contact's id. `name` fills `firstname`/`lastname` when the contact is created.
    pub async fn hubspot_upsert(
        &self,
        creds: &CrmCredentials,
        email: &str,
        name: &str,
        properties: &Map<String, Value>,
        now: DateTime<Utc>,
    ) -> Result<String, CrmFailure> {
        let base = creds.connection.base_url.trim_end_matches('/');
        let mut by_email = url::Url::parse(&format!("{base}/crm/v3/objects/contacts/"))
            .map_err(|e| CrmFailure::Refused(format!("the connection's base URL: {e}")))?;
        by_email
            .path_segments_mut()
            .map_err(|()| {
                CrmFailure::Refused("the connection's base URL cannot take a path".into())
            })?
            .pop_if_empty()
            .push(email);
        by_email
            .query_pairs_mut()
            .append_pair("idProperty", "email");
        let update = json!({ "properties": properties });
        match self
            .call(creds, Method::PATCH, by_email.clone(), &update, now)
            .await?
        {
            Answer::Ok(id) => return Ok(id),
            Answer::Conflict => {
                return Err(CrmFailure::Refused(
                    "HubSpot answered 409 to an update by email".into(),
                ));
            }
            Answer::NotFound => {}
        }
        let mut create = properties.clone();
        create.insert("email".into(), json!(email));
        let mut words = name.split_whitespace();
        if let Some(first) = words.next() {
            create.entry("firstname").or_insert_with(|| json!(first));
            let rest: Vec<&str> = words.collect();
            if !rest.is_empty() {
                create
                    .entry("lastname")
                    .or_insert_with(|| json!(rest.join(" ")));
            }
        }
        let contacts = url::Url::parse(&format!("{base}/crm/v3/objects/contacts"))
            .map_err(|e| CrmFailure::Refused(format!("the connection's base URL: {e}")))?;
        match self
            .call(
                creds,
                Method::POST,
                contacts,
                &json!({ "properties": create }),
                now,
            )
            .await?
        {
            Answer::Ok(id) => Ok(id),
            // Created by someone else since the update found nothing: update it now.
            Answer::Conflict => match self
                .call(creds, Method::PATCH, by_email, &update, now)
                .await?
            {
                Answer::Ok(id) => Ok(id),
                _ => Err(CrmFailure::Retry(
                    "HubSpot reported the contact both existing and missing".into(),
                )),
            },
            Answer::NotFound => Err(CrmFailure::Refused(
                "HubSpot answered 404 to creating a contact: check the connection's base URL"
                    .into(),
            )),
        }
    }

    async fn call(
        &self,
        creds: &CrmCredentials,
        method: Method,
        url: url::Url,
        body: &Value,
        now: DateTime<Utc>,
    ) -> Result<Answer, CrmFailure> {
        let what = format!("{method} {}", url.path());
        let request = self
            .http
            .request(method, url)
            .map_err(|refusal| {
                CrmFailure::Refused(format!("the CRM address is refused: {refusal}"))
            })?
            .bearer_auth(&creds.access_token)
            .json(body);
        let response = request
            .send()
            .await
            .map_err(|e| CrmFailure::Retry(format!("{what}: {}", without_url(&e))))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<i64>().ok());
        let text = response.text().await.unwrap_or_default();
        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let message = answer
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| text.chars().take(300).collect(), str::to_owned);
        match status.as_u16() {
            200..=299 => answer
                .get("id")
                .and_then(|id| match id {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .map(Answer::Ok)
                .ok_or_else(|| CrmFailure::Retry(format!("{what}: {status} without a contact id"))),
            404 => Ok(Answer::NotFound),
            409 => Ok(Answer::Conflict),
            429 => Err(CrmFailure::RetryAt(
                now + TimeDelta::seconds(retry_after.unwrap_or(10).clamp(1, 3600)),
                format!("{what}: HubSpot's rate limit (429)"),
            )),
            401 | 403 => Err(CrmFailure::Refused(format!(
                "HubSpot refused the connection's token ({status}): {message}"
            ))),
            400..=499 => Err(CrmFailure::Refused(format!(
                "HubSpot rejected {what} ({status}): {message}"
            ))),
            _ => Err(CrmFailure::Retry(format!("{what}: {status}: {message}"))),
        }
    }
}

/// A reqwest error's message without the URL (which may carry an email address).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<url>");
    }
    text
}

//! Writing a couple's partners to a CRM for `crm_update` steps: HubSpot or Salesforce
//! contacts, keyed by email.
//!
//! **HubSpot** (`reference/providers.md`: contacts dedupe on `email`). One contact per
//! partner with an email: `PATCH /crm/v3/objects/contacts/{email}
//! ?idProperty=email {"properties": {…}}` updates it; a 404 (no such contact) creates it with
//! `POST /crm/v3/objects/contacts {"properties": {…, "email", "firstname", "lastname"}}`; a
//! 409 on that create (someone created it in between) updates it after all. Both calls
//! carry `Authorization: Bearer <private app token>`. Writing the same properties twice
//! changes nothing, so a step rerun after a crash is safe.
//!
//! **Salesforce** (`reference/providers.md`). The connected app's client credentials buy a
//! session at `{base_url}/services/oauth2/token` (`grant_type=client_credentials`; the answer
//! names the `instance_url`), kept per connection until Salesforce refuses it (401), then
//! bought again once. The contact is found with SOQL (`GET /services/data/v60.0/query?q=SELECT
//! Id FROM Contact WHERE Email = '…' LIMIT 1`), then updated (`PATCH
//! /services/data/v60.0/sobjects/Contact/{Id}`) or created (`POST
//! /services/data/v60.0/sobjects/Contact` with `Email`, `FirstName`, `LastName`, which
//! Salesforce requires). Field names are Salesforce's (`Phone`, `Wedding_Date__c`…). A spent
//! API allowance (403 `REQUEST_LIMIT_EXCEEDED`) defers the step by an hour.
//!
//! Requests go through the SSRF-guarded client (a connection's base URL, and the instance
//! URL Salesforce answers with, are checked like any webhook URL). A 429 defers the step until `Retry-After`; a 5xx or a network failure retries it
//! under the durable work policy; a refused token (401, 403) or a request HubSpot rejects
//! (another 4xx, e.g. an unknown property) stops the instance as `blocked` with HubSpot's
//! message, for someone to fix and retry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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

/// The Salesforce REST API version the writer speaks.
pub const SALESFORCE_API: &str = "v60.0";

/// A Salesforce session bought with a connection's client credentials.
#[derive(Clone)]
struct Session {
    token: String,
    instance_url: String,
}

/// Writes to CRMs over the guarded HTTP client.
#[derive(Clone)]
pub struct CrmWriter {
    http: GuardedClient,
    /// Salesforce sessions by connection id.
    sessions: Arc<Mutex<HashMap<String, Session>>>,
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
        Self {
            http,
            sessions: Arc::default(),
        }
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
        // Said in errors, logs and instance reasons: never the contact's email.
        let path = url.path();
        let what = match path.find("/contacts/") {
            Some(i) => format!("{method} {}/contacts/{{email}}", &path[..i]),
            None => format!("{method} {path}"),
        };
        let request = self
            .http
            .request(method, url)
            .map_err(|refusal| {
                CrmFailure::Refused(format!("the CRM address is refused: {refusal}"))
            })?
            .bearer_auth(creds.secret("access_token"))
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

/// A Salesforce answer, reduced to what the step needs.
enum SfAnswer {
    Ok(Value),
    /// The session is no longer valid (401): buy another.
    Expired,
}

/// `text` as a SOQL string literal's contents.
fn soql_escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\'', "\\'")
}

impl CrmWriter {
    /// Creates or updates the Salesforce contact with `email`, setting `fields`; returns the
    /// contact's id. `name` fills `FirstName`/`LastName` when the contact is created.
    pub async fn salesforce_upsert(
        &self,
        creds: &CrmCredentials,
        email: &str,
        name: &str,
        fields: &Map<String, Value>,
        now: DateTime<Utc>,
    ) -> Result<String, CrmFailure> {
        for fresh in [false, true] {
            let session = self.salesforce_session(creds, fresh).await?;
            match self
                .salesforce_write(&session, email, name, fields, now)
                .await?
            {
                Some(id) => return Ok(id),
                None => {
                    self.sessions
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .remove(&creds.connection.id.to_string());
                }
            }
        }
        Err(CrmFailure::Refused(
            "Salesforce refused a session it had just granted (401)".into(),
        ))
    }

    /// The connection's session: the one kept, or (when `fresh`, or none is kept) a new one.
    async fn salesforce_session(
        &self,
        creds: &CrmCredentials,
        fresh: bool,
    ) -> Result<Session, CrmFailure> {
        let key = creds.connection.id.to_string();
        if !fresh
            && let Some(s) = self
                .sessions
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&key)
        {
            return Ok(s.clone());
        }
        let base = creds.connection.base_url.trim_end_matches('/');
        let url = url::Url::parse(&format!("{base}/services/oauth2/token"))
            .map_err(|e| CrmFailure::Refused(format!("the connection's base URL: {e}")))?;
        let response = self
            .http
            .post(url)
            .map_err(|refusal| {
                CrmFailure::Refused(format!("the CRM address is refused: {refusal}"))
            })?
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", creds.secret("client_id")),
                ("client_secret", creds.secret("client_secret")),
            ])
            .send()
            .await
            .map_err(|e| CrmFailure::Retry(format!("Salesforce token: {}", without_url(&e))))?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_server_error() {
            return Err(CrmFailure::Retry(format!("Salesforce token: {status}")));
        }
        let (Some(token), Some(instance_url)) = (
            answer.get("access_token").and_then(Value::as_str),
            answer.get("instance_url").and_then(Value::as_str),
        ) else {
            let why = answer
                .get("error_description")
                .or_else(|| answer.get("error"))
                .and_then(Value::as_str)
                .unwrap_or("no session in the answer");
            return Err(CrmFailure::Refused(format!(
                "Salesforce refused the connected app's credentials ({status}): {why}"
            )));
        };
        let session = Session {
            token: token.to_owned(),
            instance_url: instance_url.trim_end_matches('/').to_owned(),
        };
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key, session.clone());
        Ok(session)
    }

    /// Finds, then updates or creates the contact; `None` when the session has expired.
    async fn salesforce_write(
        &self,
        session: &Session,
        email: &str,
        name: &str,
        fields: &Map<String, Value>,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, CrmFailure> {
        let api = format!("{}/services/data/{SALESFORCE_API}", session.instance_url);
        let parse = |u: String| {
            url::Url::parse(&u)
                .map_err(|e| CrmFailure::Refused(format!("Salesforce's instance URL: {e}")))
        };
        let mut query = parse(format!("{api}/query"))?;
        query.query_pairs_mut().append_pair(
            "q",
            &format!(
                "SELECT Id FROM Contact WHERE Email = '{}' LIMIT 1",
                soql_escape(email)
            ),
        );
        let found = match self
            .salesforce_call(session, Method::GET, query, None, now)
            .await?
        {
            SfAnswer::Expired => return Ok(None),
            SfAnswer::Ok(answer) => answer
                .pointer("/records/0/Id")
                .and_then(Value::as_str)
                .map(str::to_owned),
        };
        if let Some(id) = found {
            // A record id is 15 or 18 letters and digits; anything else is not put in a path.
            if !matches!(id.len(), 15 | 18) || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(CrmFailure::Refused(format!(
                    "Salesforce answered the contact query with an unexpected id `{id}`"
                )));
            }
            let url = parse(format!("{api}/sobjects/Contact/{id}"))?;
            let body = Value::Object(fields.clone());
            return Ok(
                match self
                    .salesforce_call(session, Method::PATCH, url, Some(&body), now)
                    .await?
                {
                    SfAnswer::Expired => None,
                    SfAnswer::Ok(_) => Some(id),
                },
            );
        }
        let mut create = fields.clone();
        create.insert("Email".into(), json!(email));
        let words: Vec<&str> = name.split_whitespace().collect();
        let (first, last) = match words.as_slice() {
            [] => (None, email.split('@').next().unwrap_or(email).to_owned()),
            [only] => (None, (*only).to_owned()),
            [first, rest @ ..] => (Some(*first), rest.join(" ")),
        };
        if let Some(first) = first {
            create.entry("FirstName").or_insert_with(|| json!(first));
        }
        create.entry("LastName").or_insert_with(|| json!(last));
        let url = parse(format!("{api}/sobjects/Contact"))?;
        match self
            .salesforce_call(
                session,
                Method::POST,
                url,
                Some(&Value::Object(create)),
                now,
            )
            .await?
        {
            SfAnswer::Expired => Ok(None),
            SfAnswer::Ok(answer) => answer
                .get("id")
                .and_then(Value::as_str)
                .map(|id| Some(id.to_owned()))
                .ok_or_else(|| {
                    CrmFailure::Retry("Salesforce created a contact without an id".into())
                }),
        }
    }

    async fn salesforce_call(
        &self,
        session: &Session,
        method: Method,
        url: url::Url,
        body: Option<&Value>,
        now: DateTime<Utc>,
    ) -> Result<SfAnswer, CrmFailure> {
        let what = format!("{method} {}", url.path());
        let mut request = self
            .http
            .request(method, url)
            .map_err(|refusal| {
                CrmFailure::Refused(format!("the CRM address is refused: {refusal}"))
            })?
            .bearer_auth(&session.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| CrmFailure::Retry(format!("{what}: {}", without_url(&e))))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        // Errors come as `[{"message", "errorCode"}]`.
        let first = answer.get(0);
        let code = first
            .and_then(|e| e.get("errorCode"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let message = first
            .and_then(|e| e.get("message"))
            .and_then(Value::as_str)
            .map_or_else(|| text.chars().take(300).collect(), str::to_owned);
        match status.as_u16() {
            200..=299 => Ok(SfAnswer::Ok(answer)),
            401 => Ok(SfAnswer::Expired),
            403 if code == "REQUEST_LIMIT_EXCEEDED" => Err(CrmFailure::RetryAt(
                now + TimeDelta::hours(1),
                format!("{what}: the org's Salesforce API allowance is spent"),
            )),
            429 => Err(CrmFailure::RetryAt(
                now + TimeDelta::minutes(1),
                format!("{what}: Salesforce is limiting requests (429)"),
            )),
            400..=499 => Err(CrmFailure::Refused(format!(
                "Salesforce rejected {what} ({status} {code}): {message}"
            ))),
            _ => Err(CrmFailure::Retry(format!("{what}: {status}: {message}"))),
        }
    }
}

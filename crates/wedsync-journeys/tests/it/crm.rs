//! `crm_update` steps against local HubSpot and Salesforce stand-ins that keep contacts by
//! email and check every request's documented shape (`reference/providers.md`). HubSpot:
//! `POST /crm/v3/objects/contacts {"properties": {…}}`, contacts dedupe on `email`, a private
//! app token as a bearer token. Salesforce: a session from `/services/oauth2/token` (whose
//! answer names the `instance_url`), SOQL at `/query?q=`, `sobjects/Contact`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use serde_json::{Value, json};
use wedsync_core::clock::Clock;
use wedsync_journeys::crm::CrmWriter;
use wedsync_journeys::engine::{Effects, step_handler_with};
use wedsync_store::crm::CrmConnectionInput;

use super::{Ctx, ctx, operator};

const TOKEN: &str = "pat-eu1-test-token";

/// One request the stand-in received.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    query: Option<String>,
    body: Value,
}

#[derive(Default)]
struct HubSpot {
    contacts: HashMap<String, (String, Value)>,
    seen: Vec<Seen>,
    /// Answers to give before behaving: `(status, retry_after)`.
    queued: Vec<(u16, Option<u64>)>,
}

type Shared = Arc<Mutex<HubSpot>>;

async fn hubspot() -> (Shared, String) {
    let state: Shared = Arc::default();
    let s = state.clone();
    let app = axum::Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let s = s.clone();
            async move {
                let mut h = s.lock().expect("lock");
                // The documented request shape, on every call.
                assert_eq!(
                    headers.get("authorization").and_then(|v| v.to_str().ok()),
                    Some(format!("Bearer {TOKEN}").as_str())
                );
                assert_eq!(
                    headers.get("content-type").and_then(|v| v.to_str().ok()),
                    Some("application/json")
                );
                let body: Value = serde_json::from_slice(&body).expect("a JSON body");
                assert!(body["properties"].is_object(), "{body}");
                assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{body}");
                h.seen.push(Seen {
                    method: method.clone(),
                    path: uri.path().to_owned(),
                    query: uri.query().map(str::to_owned),
                    body: body.clone(),
                });
                let reply = |status: u16, body: Value| {
                    (
                        StatusCode::from_u16(status).expect("status"),
                        [("retry-after", "30")],
                        body.to_string(),
                    )
                };
                if !h.queued.is_empty() {
                    let (status, _) = h.queued.remove(0);
                    return reply(status, json!({"status": "error", "message": "queued answer"}));
                }
                let props = body["properties"].as_object().cloned().unwrap_or_default();
                match (method, uri.path()) {
                    (Method::PATCH, path) if path.starts_with("/crm/v3/objects/contacts/") => {
                        assert_eq!(uri.query(), Some("idProperty=email"));
                        let email = path["/crm/v3/objects/contacts/".len()..].replace("%40", "@");
                        match h.contacts.get_mut(&email) {
                            Some((id, stored)) => {
                                for (k, v) in props {
                                    stored[k] = v;
                                }
                                reply(200, json!({"id": id, "properties": stored}))
                            }
                            None => reply(
                                404,
                                json!({"status": "error", "message": "resource not found", "category": "OBJECT_NOT_FOUND"}),
                            ),
                        }
                    }
                    (Method::POST, "/crm/v3/objects/contacts") => {
                        let email = props["email"].as_str().expect("email").to_owned();
                        if let Some((id, _)) = h.contacts.get(&email) {
                            return reply(
                                409,
                                json!({"status": "error", "message": format!("Contact already exists. Existing ID: {id}"), "category": "CONFLICT"}),
                            );
                        }
                        let id = format!("{}", 1000 + h.contacts.len());
                        h.contacts
                            .insert(email, (id.clone(), Value::Object(props.clone())));
                        reply(201, json!({"id": id, "properties": props}))
                    }
                    (m, p) => panic!("unexpected {m} {p}"),
                }
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (state, format!("http://{addr}"))
}

/// trigger → CRM update (given) → end.
fn crm_journey(update: Value) -> Value {
    json!({
        "nodes": [
            {"id": "start", "type": "trigger", "position": {"x": 0, "y": 0}, "data": {"trigger": {"kind": "manual"}}},
            {"id": "crm", "type": "crm_update", "position": {"x": 0, "y": 1}, "data": update},
            {"id": "done", "type": "end", "position": {"x": 0, "y": 2}, "data": {}}
        ],
        "edges": [
            {"id": "a", "source": "start", "target": "crm"},
            {"id": "b", "source": "crm", "target": "done"}
        ],
        "viewport": {"x": 0, "y": 0, "zoom": 1}
    })
}

impl Ctx {
    /// This context's steps, run with a CRM writer allowed to reach loopback.
    fn with_crm(mut self) -> Self {
        let policy = wedsync_delivery::ssrf::SsrfPolicy {
            allow: vec!["127.0.0.1/32".parse().expect("net")],
        };
        let http =
            wedsync_delivery::ssrf::GuardedClient::new(policy, Default::default()).expect("client");
        self.step = Box::new(step_handler_with(
            self.store.clone(),
            Effects {
                crm: Some(CrmWriter::new(http)),
            },
        ));
        self
    }

    async fn connect_hubspot(&self, base: &str) {
        self.store
            .create_crm_connection(
                &self.org,
                CrmConnectionInput {
                    system: "hubspot".into(),
                    name: None,
                    access_token: Some(TOKEN.into()),
                    client_id: None,
                    client_secret: None,
                    base_url: Some(base.into()),
                },
                &operator(),
            )
            .await
            .expect("connection");
    }
}

#[tokio::test]
async fn a_crm_update_writes_both_partners_to_hubspot_creating_the_missing_one() {
    let c = ctx("2027-01-10T12:00:00Z", "2027-09-18").await.with_crm();
    let (hub, base) = hubspot().await;
    // Partner A is already a HubSpot contact; Sam is not.
    hub.lock().expect("lock").contacts.insert(
        "alex@example.com".into(),
        ("501".into(), json!({"email": "alex@example.com"})),
    );
    c.connect_hubspot(&base).await;
    let journey = c
        .publish(crm_journey(json!({
            "system": "hubspot",
            "fields": {
                "lifecyclestage": "customer",
                "wedding_date": "{{ couple.wedding_date }}",
                "guest_count": 140
            }
        })))
        .await;
    let (run, _) = c.start(&journey, "manual:1").await;
    c.drain().await;

    let (done, history) = c.instance(&run).await;
    assert_eq!(done.status, "completed");
    let step = history
        .iter()
        .find(|h| h.node_id == "crm")
        .expect("the crm step");
    assert_eq!(step.detail, "2 contact(s) written to hubspot");
    let output = step.output.clone().expect("output");
    assert_eq!(
        output["contacts"],
        json!([{"partner": 0, "id": "501"}, {"partner": 1, "id": "1001"}])
    );

    let h = hub.lock().expect("lock");
    let calls: Vec<(String, String, Option<String>)> = h
        .seen
        .iter()
        .map(|s| (s.method.to_string(), s.path.clone(), s.query.clone()))
        .collect();
    let q = Some("idProperty=email".to_owned());
    assert_eq!(
        calls,
        [
            (
                "PATCH".into(),
                "/crm/v3/objects/contacts/alex@example.com".into(),
                q.clone()
            ),
            (
                "PATCH".into(),
                "/crm/v3/objects/contacts/sam@example.com".into(),
                q
            ),
            ("POST".into(), "/crm/v3/objects/contacts".into(), None),
        ]
    );
    // Templates rendered, other values as they are; a created contact gets its name.
    assert_eq!(
        h.seen[0].body,
        json!({"properties": {"lifecyclestage": "customer", "wedding_date": "2027-09-18", "guest_count": 140}})
    );
    assert_eq!(
        h.seen[2].body,
        json!({"properties": {
            "lifecyclestage": "customer", "wedding_date": "2027-09-18", "guest_count": 140,
            "email": "sam@example.com", "firstname": "Sam", "lastname": "Taylor"
        }})
    );
}

#[tokio::test]
async fn a_crm_update_waits_out_a_rate_limit_and_stops_blocked_on_a_refused_token() {
    let c = ctx("2027-01-10T12:00:00Z", "2027-09-18").await.with_crm();
    let (hub, base) = hubspot().await;
    let update =
        json!({"system": "hubspot", "fields": {"hs_lead_status": "OPEN"}, "contacts": "partner_a"});
    let journey = c.publish(crm_journey(update)).await;

    // No connection yet: blocked, saying where to add one.
    let (first, _) = c.start(&journey, "manual:1").await;
    c.drain().await;
    let (blocked, _) = c.instance(&first).await;
    assert_eq!(blocked.status, "blocked");
    assert!(
        blocked
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("/v1/crm-connections")),
        "{blocked:?}"
    );

    // Rate limited once: the step waits Retry-After (30 s), then writes.
    c.connect_hubspot(&base).await;
    hub.lock().expect("lock").queued.push((429, Some(30)));
    let (second, _) = c.start(&journey, "manual:2").await;
    c.drain().await;
    assert_eq!(c.instance(&second).await.0.status, "running");
    c.clock.set(c.clock.now() + chrono::TimeDelta::seconds(29));
    c.drain().await;
    assert_eq!(c.instance(&second).await.0.status, "running");
    c.clock.set(c.clock.now() + chrono::TimeDelta::seconds(1));
    c.drain().await;
    assert_eq!(c.instance(&second).await.0.status, "completed");

    // A rejected property: blocked with HubSpot's answer, never naming the partner's email.
    hub.lock().expect("lock").queued.push((400, None));
    let (rejected, _) = c.start(&journey, "manual:rejected").await;
    c.drain().await;
    let (stopped, _) = c.instance(&rejected).await;
    assert_eq!(stopped.status, "blocked");
    let reason = stopped.reason.unwrap_or_default();
    assert!(
        reason.contains("rejected PATCH /crm/v3/objects/contacts/{email} (400"),
        "{reason}"
    );
    assert!(!reason.contains("alex@example.com"), "{reason}");

    // A revoked token: blocked with HubSpot's answer, and retried by hand once fixed.
    hub.lock().expect("lock").queued.push((401, None));
    let (third, _) = c.start(&journey, "manual:3").await;
    c.drain().await;
    let (refused, _) = c.instance(&third).await;
    assert_eq!(refused.status, "blocked");
    assert!(
        refused
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("refused the connection's token (401")),
        "{refused:?}"
    );
    assert!(
        !refused
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains(TOKEN)
    );
    c.store
        .operate_instance(
            &c.org,
            &third.id.to_string(),
            wedsync_store::journeys::Operation::Retry,
            &operator(),
        )
        .await
        .expect("retry");
    c.drain().await;
    assert_eq!(c.instance(&third).await.0.status, "completed");
}

#[test]
fn tave_updates_cannot_be_published_and_crm_templates_must_compile() {
    let check = |update: Value, mode| {
        let doc = wedsync_journeys::JourneyDocument::parse(&crm_journey(update)).expect("parses");
        wedsync_journeys::validate(&doc, mode)
            .err()
            .map(|e| e.0.iter().map(|f| f.field.clone()).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    use wedsync_journeys::Mode::{Draft, Publish};
    let tave = json!({"system": "tave", "fields": {"stage": "booked"}});
    assert!(check(tave.clone(), Draft).is_empty(), "a draft may hold it");
    assert_eq!(check(tave, Publish), ["nodes.crm.data.system"]);
    let broken = json!({"system": "hubspot", "fields": {"stage": "{{ couple.names "}});
    assert_eq!(check(broken, Draft), ["nodes.crm.data.fields.stage"]);
    let vendor = json!({"system": "hubspot", "fields": {"stage": "x"}, "contacts": "vendor"});
    assert_eq!(check(vendor, Draft), ["nodes.crm.data.contacts"]);
}

const CLIENT_ID: &str = "3MVG9-test-consumer-key";
const CLIENT_SECRET: &str = "sf-consumer-secret";

#[derive(Default)]
struct Salesforce {
    base: String,
    /// The session currently valid, and how many were granted.
    session: Option<String>,
    granted: usize,
    contacts: HashMap<String, (String, Value)>,
    calls: Vec<(String, String)>,
}

async fn salesforce() -> (Arc<Mutex<Salesforce>>, String) {
    let state: Arc<Mutex<Salesforce>> = Arc::default();
    let s = state.clone();
    let app = axum::Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let s = s.clone();
            async move {
                let mut sf = s.lock().expect("lock");
                let path = uri.path().to_owned();
                sf.calls.push((method.to_string(), path.clone()));
                let json_reply = |status: u16, body: Value| {
                    (StatusCode::from_u16(status).expect("status"), body.to_string())
                };
                if path == "/services/oauth2/token" {
                    assert_eq!(method, Method::POST);
                    assert_eq!(
                        headers.get("content-type").and_then(|v| v.to_str().ok()),
                        Some("application/x-www-form-urlencoded")
                    );
                    let form: HashMap<String, String> =
                        url::form_urlencoded::parse(&body).into_owned().collect();
                    assert_eq!(form["grant_type"], "client_credentials");
                    if form["client_id"] != CLIENT_ID || form["client_secret"] != CLIENT_SECRET {
                        return json_reply(
                            400,
                            json!({"error": "invalid_client", "error_description": "invalid client credentials"}),
                        );
                    }
                    sf.granted += 1;
                    let token = format!("00D!session-{}", sf.granted);
                    sf.session = Some(token.clone());
                    let base = sf.base.clone();
                    return json_reply(
                        200,
                        json!({"access_token": token, "instance_url": base, "token_type": "Bearer"}),
                    );
                }
                let bearer = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::to_owned);
                if bearer.is_none() || bearer != sf.session {
                    return json_reply(
                        401,
                        json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]),
                    );
                }
                let api = "/services/data/v60.0";
                if method == Method::GET && path == format!("{api}/query") {
                    let q: HashMap<String, String> = url::form_urlencoded::parse(
                        uri.query().expect("a query").as_bytes(),
                    )
                    .into_owned()
                    .collect();
                    let soql = &q["q"];
                    let email = soql
                        .strip_prefix("SELECT Id FROM Contact WHERE Email = '")
                        .and_then(|r| r.strip_suffix("' LIMIT 1"))
                        .expect("the documented SOQL");
                    let records: Vec<Value> = sf
                        .contacts
                        .get(email)
                        .map(|(id, _)| json!({"attributes": {"type": "Contact"}, "Id": id}))
                        .into_iter()
                        .collect();
                    return json_reply(
                        200,
                        json!({"totalSize": records.len(), "done": true, "records": records}),
                    );
                }
                let fields: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                if method == Method::POST && path == format!("{api}/sobjects/Contact") {
                    if fields.get("LastName").is_none() {
                        return json_reply(
                            400,
                            json!([{"message": "Required fields are missing: [LastName]", "errorCode": "REQUIRED_FIELD_MISSING"}]),
                        );
                    }
                    let email = fields["Email"].as_str().expect("Email").to_owned();
                    let id = format!("003{:015}", sf.contacts.len() + 1);
                    sf.contacts.insert(email, (id.clone(), fields));
                    return json_reply(201, json!({"id": id, "success": true, "errors": []}));
                }
                if method == Method::PATCH
                    && let Some(id) = path.strip_prefix(&format!("{api}/sobjects/Contact/"))
                {
                    let found = sf.contacts.values_mut().find(|(cid, _)| cid == id);
                    let Some((_, stored)) = found else {
                        return json_reply(404, json!([{"message": "not found", "errorCode": "NOT_FOUND"}]));
                    };
                    for (k, v) in fields.as_object().cloned().unwrap_or_default() {
                        stored[k] = v;
                    }
                    return (StatusCode::NO_CONTENT, String::new());
                }
                panic!("unexpected {method} {path}")
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let base = format!("http://{addr}");
    state.lock().expect("lock").base = base.clone();
    (state, base)
}

#[tokio::test]
async fn a_crm_update_writes_salesforce_contacts_with_a_session_it_renews_when_refused() {
    let c = ctx("2027-01-10T12:00:00Z", "2027-09-18").await.with_crm();
    let (sf, base) = salesforce().await;
    sf.lock().expect("lock").contacts.insert(
        "alex@example.com".into(),
        (
            "003000000000000501".into(),
            json!({"Email": "alex@example.com", "LastName": "Morgan"}),
        ),
    );
    c.store
        .create_crm_connection(
            &c.org,
            CrmConnectionInput {
                system: "salesforce".into(),
                name: Some("Lens & Lace Salesforce".into()),
                access_token: None,
                client_id: Some(CLIENT_ID.into()),
                client_secret: Some(CLIENT_SECRET.into()),
                base_url: Some(base.clone()),
            },
            &operator(),
        )
        .await
        .expect("connection");
    let journey = c
        .publish(crm_journey(json!({
            "system": "salesforce",
            "fields": {"Wedding_Date__c": "{{ couple.wedding_date }}", "LeadSource": "WedSync"}
        })))
        .await;
    let (first, _) = c.start(&journey, "manual:1").await;
    c.drain().await;
    let (done, history) = c.instance(&first).await;
    assert_eq!(done.status, "completed", "{history:?}");
    {
        let s = sf.lock().expect("lock");
        assert_eq!(s.granted, 1);
        let calls: Vec<(&str, &str)> = s
            .calls
            .iter()
            .map(|(m, p)| (m.as_str(), p.as_str()))
            .collect();
        assert_eq!(
            calls,
            [
                ("POST", "/services/oauth2/token"),
                ("GET", "/services/data/v60.0/query"),
                (
                    "PATCH",
                    "/services/data/v60.0/sobjects/Contact/003000000000000501"
                ),
                ("GET", "/services/data/v60.0/query"),
                ("POST", "/services/data/v60.0/sobjects/Contact"),
            ]
        );
        assert_eq!(
            s.contacts["alex@example.com"].1,
            json!({"Email": "alex@example.com", "LastName": "Morgan", "Wedding_Date__c": "2027-09-18", "LeadSource": "WedSync"})
        );
        assert_eq!(
            s.contacts["sam@example.com"].1,
            json!({"Email": "sam@example.com", "FirstName": "Sam", "LastName": "Taylor", "Wedding_Date__c": "2027-09-18", "LeadSource": "WedSync"})
        );
    }

    // Salesforce ends the session: the next step buys one more and goes on.
    sf.lock().expect("lock").session = Some("revoked".into());
    let (second, _) = c.start(&journey, "manual:2").await;
    c.drain().await;
    assert_eq!(c.instance(&second).await.0.status, "completed");
    assert_eq!(sf.lock().expect("lock").granted, 2);
}

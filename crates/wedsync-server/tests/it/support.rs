use std::sync::{Arc, Once};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use wedsync_core::clock::ManualClock;
use wedsync_core::id::OrgId;
use wedsync_core::org::{OrgSettings, Role};
use wedsync_server::{AppState, HttpSettings};
use wedsync_store::testing::{TestDb, migrated_store};
use wedsync_store::{Actor, Store};

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub store: Store,
    pub clock: ManualClock,
    _db: TestDb,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    /// Asserts a problem+json reply with this status and type slug.
    pub fn problem(&self, status: u16, slug: &str) -> &Self {
        assert_eq!(self.status.as_u16(), status, "{}", self.body);
        assert_eq!(
            self.headers
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "{}",
            self.body
        );
        assert_eq!(
            self.body["type"],
            format!("https://wedsync.dev/problems/{slug}"),
            "{}",
            self.body
        );
        assert_eq!(self.body["status"], status);
        assert!(self.body["title"].is_string() && self.body["detail"].is_string());
        self
    }

    pub fn ok(&self, status: u16) -> &Value {
        assert_eq!(self.status.as_u16(), status, "{}", self.body);
        &self.body
    }
}

static LOG: Once = Once::new();

/// The instant every test starts at: Friday 1 May 2026, 09:00 UTC.
pub fn start() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 5, 1, 9, 0, 0)
        .single()
        .expect("valid")
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(HttpSettings::default()).await
}

pub async fn spawn_app_with(settings: HttpSettings) -> TestApp {
    LOG.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber_init();
        }
    });
    let clock = ManualClock::new(start());
    let (store, db) = migrated_store(Arc::new(clock.clone()))
        .await
        .expect("test database");
    let state = AppState::new(store.clone(), settings);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(wedsync_server::run(
        listener,
        state,
        std::future::pending(),
        Duration::from_secs(5),
    ));
    TestApp {
        base,
        client: reqwest::Client::new(),
        store,
        clock,
        _db: db,
    }
}

fn tracing_subscriber_init() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_test_writer()
        .try_init()
}

impl TestApp {
    /// Creates an organisation and an owner key for it.
    pub async fn org(&self, name: &str) -> (OrgId, String) {
        let settings =
            OrgSettings::parse(name, "Europe/London", "professional", "GB", "GBP").expect("valid");
        let org = self
            .store
            .create_org(settings, &Actor::Cli("test".into()))
            .await
            .expect("org");
        let key = self.key(&org.id, Role::Owner).await;
        (org.id, key)
    }

    /// A key with `role` for `org`.
    pub async fn key(&self, org: &OrgId, role: Role) -> String {
        self.store
            .create_api_key(
                org,
                &format!("{role} key"),
                role,
                &Actor::Cli("test".into()),
            )
            .await
            .expect("key")
            .1
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Posts a raw body with the given content type, for tests of what is not valid JSON.
    pub async fn post_raw(&self, key: &str, path: &str, content_type: &str, body: String) -> Reply {
        let resp = self
            .client
            .post(format!("{}{}", self.base, path))
            .bearer_auth(key)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.json().await.unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, key: &str, path: &str) -> Reply {
        self.call(Method::GET, path, Some(key), None).await
    }

    pub async fn post(&self, key: &str, path: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(key), Some(body)).await
    }

    pub async fn patch(&self, key: &str, path: &str, body: Value) -> Reply {
        self.call(Method::PATCH, path, Some(key), Some(body)).await
    }

    pub async fn delete(&self, key: &str, path: &str) -> Reply {
        self.call(Method::DELETE, path, Some(key), None).await
    }

    /// Creates a couple marrying on `date` and returns its id.
    pub async fn couple(&self, key: &str, date: &str) -> String {
        let reply = self.post(key, "/v1/couples", couple_body(date)).await;
        reply.ok(201)["id"].as_str().expect("id").to_owned()
    }

    /// Creates a booking for `couple` and returns its id.
    pub async fn booking(&self, key: &str, couple: &str, starts: &str, ends: &str) -> String {
        let reply = self
            .post(key, "/v1/bookings", booking_body(couple, starts, ends))
            .await;
        reply.ok(201)["id"].as_str().expect("id").to_owned()
    }
}

pub fn couple_body(date: &str) -> Value {
    json!({
        "partners": [
            {"name": "Ana Silva", "email": "ana@example.com"},
            {"name": "Ben Okafor", "phone": "+447700900123", "preferred_channel": "sms"}
        ],
        "wedding_date": date,
        "venue": {"name": "Kew Gardens", "address": "Richmond TW9 3AE", "latitude": 51.4787, "longitude": -0.2956},
        "notes": "ceremony at the Temperate House"
    })
}

pub fn booking_body(couple: &str, starts: &str, ends: &str) -> Value {
    json!({
        "couple_id": couple,
        "service": "Full-day photography",
        "starts_at": starts,
        "ends_at": ends,
        "status": "confirmed",
        "value": {"amount_minor": 250000, "currency": "GBP"}
    })
}

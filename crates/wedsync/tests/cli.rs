//! The binary as an operator uses it: real processes, real databases (SQLite, or PostgreSQL
//! with `WEDSYNC_TEST_DATABASE_URL`).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use wedsync_store::testing::{TestDb, execute_raw, fresh_db};

const BIN: &str = env!("CARGO_BIN_EXE_wedsync");

struct Env {
    db: TestDb,
    dir: tempfile::TempDir,
}

async fn env() -> Env {
    Env {
        db: fresh_db().await.expect("db"),
        dir: tempfile::tempdir().expect("tempdir"),
    }
}

impl Env {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(self.dir.path())
            .env_remove("WEDSYNC_TEST_DATABASE_URL")
            .env("WEDSYNC_DATABASE_URL", &self.db.url)
            .env("WEDSYNC_LOG__LEVEL", "warn")
            .args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run wedsync")
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("stdout is one JSON document")
    }

    /// A migrated database's new organisation, made with `org create`; its id.
    fn org(&self) -> String {
        let org = self.json(&[
            "org",
            "create",
            "--name",
            "Lens & Lace",
            "--time-zone",
            "Europe/London",
            "--country",
            "GB",
            "--currency",
            "GBP",
            "--json",
        ]);
        org["id"].as_str().expect("id").to_owned()
    }

    fn is_postgres(&self) -> bool {
        self.db.url.starts_with("postgres")
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Waits for a child to exit, at most `limit`.
fn wait_exit(mut child: Child, limit: Duration) -> std::process::ExitStatus {
    let (tx, rx) = mpsc::channel();
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(limit) {
        Ok(status) => status.expect("wait"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("wedsync did not exit within {limit:?}");
        }
    }
}

#[test]
fn every_subcommand_has_help() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["migrate", "--help"],
        vec!["org", "create", "--help"],
        vec!["org", "list", "--help"],
        vec!["api-key", "create", "--help"],
        vec!["api-key", "list", "--help"],
        vec!["api-key", "revoke", "--help"],
        vec!["audit", "verify", "--help"],
        vec!["config", "check", "--help"],
        vec!["endpoint", "create", "--help"],
        vec!["endpoint", "recover", "--help"],
        vec!["journey", "simulate", "--help"],
        vec!["journey", "validate", "--help"],
        vec!["journey", "import", "--help"],
        vec!["journey", "export", "--help"],
        vec!["journey", "publish", "--help"],
        vec!["journey", "versions", "--help"],
        vec!["journey", "rollback", "--help"],
        vec!["journey", "instances", "--help"],
        vec!["journey", "instance", "--help"],
        vec!["journey", "operate", "--help"],
    ] {
        let out = Command::new(BIN).args(&args).output().expect("run");
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage:"), "{args:?}: {text}");
    }
    let serve = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&serve.stdout);
    for expected in [
        "--listen",
        "WEDSYNC_LISTEN",
        "--data-dir",
        "WEDSYNC_DATA_DIR",
        "--database-url",
        "WEDSYNC_DATABASE_URL",
        "--migrate",
    ] {
        assert!(text.contains(expected), "serve --help lacks {expected}");
    }
}

#[tokio::test]
async fn config_check_redacts_secrets_and_names_bad_keys() {
    let e = env().await;
    let out = e
        .cmd(&["config", "check", "--json"])
        .env(
            "WEDSYNC_DATABASE_URL",
            "postgres://app:hunter2@db.internal:5432/wedsync",
        )
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("hunter2"),
        "the password must never be printed"
    );
    let doc: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(
        doc["database_url"],
        "postgres://app:***@db.internal:5432/wedsync"
    );

    let out = e
        .cmd(&["config", "check"])
        .env("WEDSYNC_HTTP__BODY_LIMIT_BYTES", "lots")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("http.body_limit_bytes"),
        "{}",
        stderr(&out)
    );

    std::fs::write(
        e.dir.path().join("wedsync.toml"),
        "[log]\nformat = \"yaml\"\n",
    )
    .expect("write");
    let out = e.run(&["config", "check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("log.format"), "{}", stderr(&out));
}

#[tokio::test]
async fn organisations_and_keys_from_the_command_line() {
    let e = env().await;
    if e.is_postgres() {
        assert!(
            e.json(&["migrate", "--json"])["applied"]
                .as_array()
                .is_some()
        );
    }
    let org = e.json(&[
        "org",
        "create",
        "--name",
        "Lens & Lace",
        "--time-zone",
        "Europe/London",
        "--tier",
        "starter",
        "--country",
        "GB",
        "--currency",
        "GBP",
        "--json",
    ]);
    let org_id = org["id"].as_str().expect("id").to_owned();
    assert_eq!(org["tier"], "starter");
    let listed = e.json(&["org", "list", "--json"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(1));

    let bad = e.run(&[
        "org",
        "create",
        "--name",
        "X",
        "--time-zone",
        "Mars/Base",
        "--country",
        "GB",
        "--currency",
        "GBP",
    ]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("time_zone"), "{}", stderr(&bad));

    let created = e.json(&[
        "api-key",
        "create",
        "--org",
        &org_id,
        "--name",
        "bootstrap",
        "--role",
        "owner",
        "--json",
    ]);
    let secret = created["secret"].as_str().expect("secret").to_owned();
    let key_id = created["key"]["id"].as_str().expect("id").to_owned();
    let keys = e.json(&["api-key", "list", "--org", &org_id, "--json"]);
    assert!(!keys.to_string().contains(&secret[4..]));
    let revoked = e.json(&["api-key", "revoke", "--org", &org_id, &key_id, "--json"]);
    assert!(revoked["revoked_at"].is_string());

    let verified = e.json(&["audit", "verify", "--json"]);
    assert_eq!(verified["faults"], serde_json::json!([]));
    assert_eq!(verified["entries"], 3);

    // Tamper with the log behind wedsync's back: verify fails and names the entry.
    let store = wedsync_store::Store::connect(
        &e.db.options,
        std::sync::Arc::new(wedsync_core::clock::SystemClock),
    )
    .await
    .expect("connect");
    wedsync_store::testing::drop_audit_guards(&store)
        .await
        .expect("drop guards");
    execute_raw(&store, "UPDATE audit_log SET after = NULL WHERE seq = 2")
        .await
        .expect("tamper");
    let out = e.run(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("{org_id} at entry 2")) && text.contains("edited"),
        "{text}"
    );
}

#[tokio::test]
async fn serve_runs_and_stops_gracefully_on_sigterm() {
    let e = env().await;
    if e.is_postgres() {
        // PostgreSQL is migrated only when asked: a plain serve refuses a fresh database.
        let out = e.run(&["serve", "--listen", "127.0.0.1:0"]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains("wedsync migrate"), "{}", stderr(&out));
    }
    let mut child = e
        .cmd(&["serve", "--listen", "127.0.0.1:0", "--migrate"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    let url = line
        .trim()
        .strip_prefix("wedsync listening on ")
        .expect("prints its address")
        .to_owned();
    let health = reqwest::get(format!("{url}/healthz"))
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    let ready = reqwest::get(format!("{url}/readyz")).await.expect("readyz");
    assert_eq!(ready.status(), 200);
    let doc: Value = reqwest::get(format!("{url}/openapi.json"))
        .await
        .expect("openapi")
        .json()
        .await
        .expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    let status = wait_exit(child, Duration::from_secs(20));
    assert!(status.success(), "exit after SIGTERM: {status:?}");
}

#[tokio::test]
async fn a_database_from_a_newer_release_is_refused() {
    let e = env().await;
    assert!(e.run(&["migrate"]).status.success());
    let store = wedsync_store::Store::connect(
        &e.db.options,
        std::sync::Arc::new(wedsync_core::clock::SystemClock),
    )
    .await
    .expect("connect");
    execute_raw(
        &store,
        "INSERT INTO seaql_migrations (version, applied_at) VALUES ('m9999_future', 0)",
    )
    .await
    .expect("insert");
    for args in [
        vec!["serve", "--listen", "127.0.0.1:0"],
        vec!["migrate"],
        vec!["org", "list"],
    ] {
        let out = e.run(&args);
        assert!(!out.status.success(), "{args:?} must refuse");
        assert!(
            stderr(&out).contains("newer than this binary"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

#[tokio::test]
async fn dead_jobs_can_be_listed_retried_and_discarded_from_the_command_line() {
    let e = env().await;
    assert!(e.run(&["migrate"]).status.success());
    let store = wedsync_store::Store::connect(
        &e.db.options,
        std::sync::Arc::new(wedsync_core::clock::SystemClock),
    )
    .await
    .expect("connect");
    let id = store
        .enqueue(wedsync_store::queue::NewJob::new(
            "test.work",
            serde_json::json!({}),
        ))
        .await
        .expect("enqueue")
        .id;
    store
        .claim("w", "test.work", 1, chrono::TimeDelta::seconds(30))
        .await
        .expect("claim");
    store
        .fail(
            "w",
            &id,
            "smtp 550 mailbox unavailable",
            wedsync_store::queue::AfterFailure::Dead,
        )
        .await
        .expect("fail");

    let dead = e.json(&["jobs", "list", "--state", "dead", "--json"]);
    assert_eq!(dead[0]["id"], id.as_str());
    assert_eq!(dead[0]["last_error"], "smtp 550 mailbox unavailable");
    let text =
        String::from_utf8_lossy(&e.run(&["jobs", "list", "--state", "dead"]).stdout).into_owned();
    assert!(text.contains(&id) && text.contains("smtp 550"), "{text}");
    assert_eq!(e.json(&["jobs", "retry", &id, "--json"])["state"], "ready");
    assert_eq!(e.json(&["jobs", "show", &id, "--json"])["attempts"], 0);
    assert_eq!(
        e.json(&["jobs", "discard", &id, "--json"])["state"],
        "discarded"
    );
    let missing = e.run(&["jobs", "show", "job_0193f0c0000070008000000000000000"]);
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("no job"), "{}", stderr(&missing));
    let bad = e.run(&["jobs", "list", "--state", "sleeping"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("--state"), "{}", stderr(&bad));
}

#[tokio::test]
async fn sources_from_the_command_line() {
    let e = env().await;
    if e.is_postgres() {
        assert!(e.run(&["migrate"]).status.success());
    }
    let org_id = e.org();
    let created = e.json(&[
        "source", "create", "--org", &org_id, "--name", "GitHub-style relay", "--provider", "generic", "--generic-json",
        r#"{"signature_header":"X-Hub-Signature-256","prefix":"sha256=","encoding":"hex","signed_content":"{body}"}"#,
        "--allow-ip", "203.0.113.0/24", "--json",
    ]);
    let id = created["source"]["id"].as_str().expect("id").to_owned();
    let secret = created["secret"].as_str().expect("secret").to_owned();
    let listed = e.json(&["source", "list", "--org", &org_id, "--json"]);
    assert_eq!(listed[0]["ip_allowlist"][0], "203.0.113.0/24");
    assert!(
        !listed.to_string().contains(&secret),
        "secrets are never listed"
    );
    let rotated = e.json(&["source", "rotate", "--org", &org_id, &id, "--json"]);
    assert_ne!(rotated["secret"], secret.as_str());
    assert!(rotated["source"]["previous_secret_expires_at"].is_string());
    let stripe = e.run(&[
        "source",
        "create",
        "--org",
        &org_id,
        "--name",
        "Stripe",
        "--provider",
        "stripe",
    ]);
    assert!(!stripe.status.success());
    assert!(stderr(&stripe).contains("secret"), "{}", stderr(&stripe));
    // Without a configured key, one is created in the data dir, readable by its owner only.
    let key = e.dir.path().join("data").join("master.key");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key)
            .expect("master.key exists")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

/// Every log line `serve` writes at its most verbose, while keys and signing secrets are
/// created, used, rotated and guessed at, holds none of them; nor does any response after the
/// one that creates each.
#[tokio::test]
async fn secrets_stay_out_of_logs_and_responses() {
    let e = env().await;
    let master = wedsync_store::secrets::MasterKey::generate().to_base64();
    let log_path = e.dir.path().join("serve.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let with_key = |mut cmd: Command| {
        cmd.env("WEDSYNC_SECRETS__MASTER_KEY", &master);
        cmd
    };
    let mut child = with_key(e.cmd(&["serve", "--listen", "127.0.0.1:0", "--migrate"]))
        .env("WEDSYNC_LOG__LEVEL", "trace")
        .env("WEDSYNC_LOG__FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    let base = line
        .trim()
        .strip_prefix("wedsync listening on ")
        .expect("address")
        .to_owned();
    let cli = |args: &[&str]| {
        let out = with_key(e.cmd(args))
            .env("WEDSYNC_LOG__LEVEL", "trace")
            .output()
            .expect("run");
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        let logs = stderr(&out);
        (
            serde_json::from_slice::<Value>(&out.stdout).expect("json"),
            logs,
        )
    };
    let (org, mut logs) = cli(&[
        "org",
        "create",
        "--name",
        "Lens & Lace",
        "--time-zone",
        "Europe/London",
        "--country",
        "GB",
        "--currency",
        "GBP",
        "--json",
    ]);
    let org_id = org["id"].as_str().expect("id").to_owned();
    let (created, more) = cli(&[
        "api-key", "create", "--org", &org_id, "--name", "ops", "--role", "owner", "--json",
    ]);
    logs.push_str(&more);
    let api_key = created["secret"].as_str().expect("secret").to_owned();

    let client = reqwest::Client::new();
    let mut responses = String::new();
    let stripe_secret = "whsec_operator_supplied_stripe_secret";
    let post = async |path: &str, key: &str, body: Value| -> Value {
        let resp = client
            .post(format!("{base}{path}"))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .expect("send");
        resp.json::<Value>().await.expect("json")
    };
    let stripe = post(
        "/v1/sources",
        &api_key,
        serde_json::json!({"name": "Stripe", "provider": "stripe", "secret": stripe_secret}),
    )
    .await;
    let stripe_id = stripe["source"]["id"].as_str().expect("id").to_owned();
    let relay = post(
        "/v1/sources",
        &api_key,
        serde_json::json!({"name": "Relay", "provider": "standard_webhooks"}),
    )
    .await;
    let relay_secret = relay["secret"].as_str().expect("secret").to_owned();
    let relay_id = relay["source"]["id"].as_str().expect("id").to_owned();
    let rotated = post(
        &format!("/v1/sources/{relay_id}/rotate"),
        &api_key,
        serde_json::json!({}),
    )
    .await;
    let rotated_secret = rotated["secret"].as_str().expect("secret").to_owned();
    let guessed_key = format!("{}x", &api_key[..api_key.len() - 1]);
    responses.push_str(
        &post("/v1/sources", &guessed_key, serde_json::json!({}))
            .await
            .to_string(),
    );
    for path in [
        "/v1/sources".to_owned(),
        format!("/v1/sources/{stripe_id}"),
        format!("/v1/sources/{relay_id}"),
        "/v1/api-keys".to_owned(),
        "/v1/audit-log".to_owned(),
        "/v1/events".to_owned(),
    ] {
        let resp = client
            .get(format!("{base}{path}"))
            .bearer_auth(&api_key)
            .send()
            .await
            .expect("send");
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        responses.push_str(&resp.text().await.expect("body"));
    }

    // Webhooks signed with the new and the old secret, a forged one, and a Stripe delivery.
    let body = r#"{"type":"booking.created","data":{"n":1}}"#;
    let t = chrono::Utc::now().timestamp();
    for (n, secret) in [&rotated_secret, &relay_secret, &"whsec_Zm9yZ2Vk".to_owned()]
        .into_iter()
        .enumerate()
    {
        let id = format!("msg_{n}");
        let sig = wedsync_inbound::sign_standard_webhooks(
            &wedsync_inbound::Secret::from_str(secret),
            &id,
            t,
            body.as_bytes(),
        );
        let resp = client
            .post(format!("{base}/v1/inbound/{relay_id}"))
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", t.to_string())
            .header("webhook-signature", sig)
            .body(body)
            .send()
            .await
            .expect("send");
        let expected = if n < 2 { 200 } else { 401 };
        assert_eq!(resp.status(), expected, "webhook {n}");
        responses.push_str(&resp.text().await.expect("body"));
    }
    let stripe_body = r#"{"id":"evt_1","object":"event","type":"payment_intent.succeeded","created":1777625000,"data":{"object":{"id":"pi_1","object":"payment_intent","amount_received":100,"currency":"gbp","metadata":{}}}}"#;
    let sig = wedsync_inbound::sign_stripe(
        &wedsync_inbound::Secret::from_str(stripe_secret),
        t,
        stripe_body.as_bytes(),
    );
    let resp = client
        .post(format!("{base}/v1/inbound/{stripe_id}"))
        .header("content-type", "application/json")
        .header("stripe-signature", sig)
        .body(stripe_body)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    // The stored raw request, as the events API shows it, keeps no signature either.
    let events: Value = client
        .get(format!("{base}/v1/events"))
        .bearer_auth(&api_key)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    for event in events["data"].as_array().expect("events") {
        let id = event["id"].as_str().expect("id");
        let resp = client
            .get(format!("{base}/v1/events/{id}"))
            .bearer_auth(&api_key)
            .send()
            .await
            .expect("send");
        responses.push_str(&resp.text().await.expect("body"));
    }

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(wait_exit(child, Duration::from_secs(20)).success());
    logs.push_str(&std::fs::read_to_string(&log_path).expect("log"));
    assert!(
        logs.lines().count() > 20 && logs.contains("/v1/inbound/"),
        "the server logged its requests at trace level:\n{logs}"
    );
    let secret_part = |s: &str| s.trim_start_matches("whsec_").to_owned();
    for (what, secret) in [
        ("api key", api_key[4..].to_owned()),
        ("guessed api key", guessed_key[4..].to_owned()),
        ("master key", master.clone()),
        ("stripe secret", secret_part(stripe_secret)),
        ("generated secret", secret_part(&relay_secret)),
        ("rotated secret", secret_part(&rotated_secret)),
    ] {
        assert!(!logs.contains(&secret), "the {what} is in the logs");
        assert!(!responses.contains(&secret), "the {what} is in a response");
    }
    if let Some(at) = responses.find("v1,") {
        panic!(
            "a signature header came back: {}",
            &responses[at.saturating_sub(200)..(at + 60).min(responses.len())]
        );
    }
}

#[tokio::test]
async fn endpoints_are_managed_from_the_cli() {
    let e = env().await;
    assert!(e.run(&["migrate"]).status.success());
    let org_id = e.org();
    let created = e.json(&[
        "endpoint",
        "create",
        "--org",
        &org_id,
        "--url",
        "https://hooks.example.com/wedsync",
        "--event-type",
        "booking.*",
        "--json",
    ]);
    let secret = created["secret"].as_str().expect("secret").to_owned();
    assert!(secret.starts_with("whsec_"));
    let id = created["endpoint"]["id"].as_str().expect("id").to_owned();
    let listed = e.json(&["endpoint", "list", "--org", &org_id, "--json"]);
    assert_eq!(listed[0]["event_types"], serde_json::json!(["booking.*"]));
    assert!(!listed.to_string().contains(&secret[6..]));
    let disabled = e.json(&["endpoint", "disable", "--org", &org_id, &id, "--json"]);
    assert_eq!(disabled["enabled"], false);
    let out = e.run(&[
        "endpoint",
        "recover",
        "--org",
        &org_id,
        &id,
        "--since",
        "2026-01-01T00:00:00Z",
    ]);
    assert!(!out.status.success(), "a disabled endpoint cannot recover");
    assert!(stderr(&out).contains("enable it first"), "{}", stderr(&out));
    e.json(&["endpoint", "enable", "--org", &org_id, &id, "--json"]);
    let recovered = e.json(&[
        "endpoint",
        "recover",
        "--org",
        &org_id,
        &id,
        "--since",
        "2026-01-01T00:00:00Z",
        "--json",
    ]);
    assert_eq!(recovered["resent"], 0);
    let rotated = e.json(&["endpoint", "rotate", "--org", &org_id, &id, "--json"]);
    assert_ne!(rotated["secret"], created["secret"]);
    let bad = e.run(&["endpoint", "create", "--org", &org_id, "--url", "ftp://x"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("url"), "{}", stderr(&bad));
}

#[test]
fn a_journey_is_simulated_as_a_readable_timeline_without_a_database() {
    let dir = tempfile::tempdir().expect("dir");
    let out = Command::new(BIN)
        .args(["journey", "template", "post_wedding_review"])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    let doc = dir.path().join("review.json");
    std::fs::write(&doc, &out.stdout).expect("write");
    let out = Command::new(BIN)
        .args(["journey", "validate", "--publish"])
        .arg(&doc)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let events = dir.path().join("events.json");
    std::fs::write(
        &events,
        r#"[{"type": "booking.created", "at": "2027-03-01T12:00:00Z", "data": {}}]"#,
    )
    .expect("write");
    let out = Command::new(BIN)
        .args([
            "journey",
            "simulate",
            "--wedding-date",
            "2027-06-12",
            "--time-zone",
            "Europe/London",
        ])
        .args(["--start", "2027-03-01T00:00:00Z", "--events"])
        .arg(&events)
        .arg(&doc)
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}{}", text, stderr(&out));
    // Two weeks after the wedding at 10:00 BST, then the review request.
    assert!(text.contains("Sat 26 Jun 2027 10:00 BST"), "{text}");
    assert!(
        text.lines()
            .last()
            .is_some_and(|l| l.starts_with("→ ended")),
        "{text}"
    );

    // A broken document is refused, naming the node.
    std::fs::write(&doc, r#"{"nodes": [{"id": "t", "type": "trigger", "position": {"x": 0, "y": 0}, "data": {"trigger": {"kind": "manual"}}}, {"id": "w", "type": "wait", "position": {"x": 0, "y": 1}, "data": {"mode": "duration", "seconds": 0}}], "edges": [{"id": "e", "source": "t", "target": "w"}], "viewport": {"x": 0, "y": 0, "zoom": 1}}"#).expect("write");
    let out = Command::new(BIN)
        .args(["journey", "validate", "--publish"])
        .arg(&doc)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("nodes.w"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test]
async fn journeys_are_imported_published_exported_and_operated_from_the_cli() {
    let e = env().await;
    assert!(e.run(&["migrate"]).status.success());
    let org_id = e.org();
    // A ready-made journey, written to a file, imported and published in one go.
    let template = e.run(&["journey", "template", "final_details_countdown"]);
    assert!(template.status.success());
    let file = e.dir.path().join("countdown.json");
    std::fs::write(&file, &template.stdout).expect("write");
    let path = file.to_str().expect("path");
    let imported = e.json(&[
        "journey",
        "import",
        path,
        "--org",
        &org_id,
        "--name",
        "Countdown",
        "--publish",
        "--json",
    ]);
    assert_eq!(imported["published_version"], 1);
    let id = imported["id"].as_str().expect("id").to_owned();
    // Export gives the document back, the draft or a version.
    let draft = e.json(&["journey", "export", &id, "--org", &org_id]);
    let v1 = e.json(&[
        "journey",
        "export",
        &id,
        "--org",
        &org_id,
        "--published",
        "1",
    ]);
    assert_eq!(draft, v1);
    assert_eq!(
        draft["nodes"].as_array().map(Vec::len),
        serde_json::from_slice::<Value>(&template.stdout).expect("json")["nodes"]
            .as_array()
            .map(Vec::len)
    );
    // Someone saves a changed draft (the builder does this through the API).
    let store = wedsync_store::Store::connect(
        &e.db.options,
        std::sync::Arc::new(wedsync_core::clock::SystemClock),
    )
    .await
    .expect("connect");
    let org: wedsync_core::id::OrgId = org_id.parse().expect("org");
    let journey: wedsync_core::id::JourneyId = id.parse().expect("journey");
    let mut changed = draft.clone();
    changed["nodes"][0]["position"]["x"] = serde_json::json!(480);
    let revision = imported["revision"].as_i64().expect("revision").to_string();
    store
        .save_journey_draft(
            &org,
            &journey,
            imported["revision"].as_i64().expect("revision") as i32,
            None,
            &changed,
        )
        .await
        .expect("saved");
    // Publishing the revision one reviewed is refused once someone saved since.
    let stale = e.run(&[
        "journey",
        "publish",
        &id,
        "--org",
        &org_id,
        "--revision",
        &revision,
    ]);
    assert!(!stale.status.success());
    assert!(
        stderr(&stale).contains("someone saved it since"),
        "{}",
        stderr(&stale)
    );
    let republished = e.json(&["journey", "publish", &id, "--org", &org_id, "--json"]);
    assert_eq!(republished["version"]["version"], 2);
    // Roll back to version 1: version 3, the same document as 1, not as 2.
    let rolled = e.json(&[
        "journey", "rollback", &id, "--org", &org_id, "--to", "1", "--json",
    ]);
    assert_eq!(rolled["version"]["version"], 3);
    let versions = e.json(&["journey", "versions", &id, "--org", &org_id, "--json"]);
    let numbers: Vec<i64> = versions
        .as_array()
        .expect("versions")
        .iter()
        .filter_map(|v| v["version"].as_i64())
        .collect();
    assert_eq!(numbers, [3, 2, 1], "newest first");
    assert_eq!(versions[0]["document"], v1);
    assert_ne!(versions[1]["document"], v1);
    // A broken document is refused, naming the node; nothing is created.
    let broken = e.dir.path().join("broken.json");
    std::fs::write(
        &broken,
        r#"{"nodes":[{"id":"start","type":"trigger","position":{"x":0,"y":0},"data":{"trigger":{"kind":"manual"}}},
            {"id":"wait","type":"wait","position":{"x":0,"y":1},"data":{"mode":"duration","seconds":0}}],"edges":[]}"#,
    )
    .expect("write");
    let refused = e.run(&[
        "journey",
        "import",
        broken.to_str().expect("path"),
        "--org",
        &org_id,
        "--name",
        "Broken",
    ]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("nodes.wait.data.seconds"),
        "{}",
        stderr(&refused)
    );
    let journeys = store
        .list_journeys(&org, &Default::default())
        .await
        .expect("list");
    assert_eq!(journeys.data.len(), 1, "the broken one was not created");
    let typo = e.run(&[
        "journey",
        "instances",
        &id,
        "--org",
        &org_id,
        "--status",
        "wating",
    ]);
    assert!(!typo.status.success());
    assert!(stderr(&typo).contains("--status"), "{}", stderr(&typo));

    // An instance, started the way the API starts one, inspected and operated here.
    let couple = store
        .create_couple(
            &org,
            serde_json::from_value::<wedsync_core::couple::CoupleInput>(serde_json::json!({
                "partners": [{"name": "Alex Morgan", "email": "alex@example.com"}, {"name": "Sam Taylor", "email": "sam@example.com"}],
                "wedding_date": "2030-06-01", "time_zone": "Europe/London"
            }))
            .expect("input")
            .validate(wedsync_core::org::TimeZone::parse("Europe/London").expect("zone"))
            .expect("valid"),
            &wedsync_store::Actor::Cli("test".into()),
        )
        .await
        .expect("couple")
        .id;
    let (instance, _) = store
        .start_instance(
            &org,
            &id.parse().expect("journey"),
            &couple,
            None,
            "manual:cli",
            "trigger",
            &serde_json::json!({}),
        )
        .await
        .expect("start");
    let listed = e.json(&[
        "journey",
        "instances",
        &id,
        "--org",
        &org_id,
        "--couple",
        &couple.to_string(),
        "--json",
    ]);
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    let none = e.json(&[
        "journey",
        "instances",
        &id,
        "--org",
        &org_id,
        "--status",
        "completed",
        "--json",
    ]);
    assert_eq!(none, serde_json::json!([]));
    let iid = instance.id.to_string();
    let paused = e.json(&[
        "journey", "operate", &iid, "pause", "--org", &org_id, "--json",
    ]);
    assert_eq!(paused["status"], "paused");
    let shown = e.json(&["journey", "instance", &iid, "--org", &org_id, "--json"]);
    assert_eq!(shown["instance"]["status"], "paused");
    assert!(
        shown["history"]
            .as_array()
            .expect("history")
            .iter()
            .any(|h| h["outcome"] == "paused"),
        "{shown}"
    );
    let cancelled = e.json(&[
        "journey", "operate", &iid, "cancel", "--org", &org_id, "--json",
    ]);
    assert_eq!(cancelled["status"], "cancelled");
    let unknown = e.run(&["journey", "operate", &iid, "explode", "--org", &org_id]);
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("unknown operation"),
        "{}",
        stderr(&unknown)
    );
    let text = e.run(&["journey", "instance", &iid, "--org", &org_id]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("cancelled"));
}

//! Kill `wedsync serve` with SIGKILL while it is working through the queue, start it again,
//! and show that every job completed and none was lost. Each job (outbox.publish) records its
//! completion on its event, which is also its dedupe key.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use wedsync_core::clock::SystemClock;
use wedsync_store::queue::{JobFilter, JobState, NewJob};
use wedsync_store::testing::{execute_raw, fresh_db};
use wedsync_store::{Actor, Store};

const BIN: &str = env!("CARGO_BIN_EXE_wedsync");
const EVENTS: usize = 5000;

fn serve(url: &str, dir: &std::path::Path) -> Child {
    let mut child = Command::new(BIN)
        .current_dir(dir)
        .env_remove("WEDSYNC_TEST_DATABASE_URL")
        .env("WEDSYNC_DATABASE_URL", url)
        .env("WEDSYNC_LOG__LEVEL", "warn")
        // Short leases so the killed node's claims come back within the test.
        .env("WEDSYNC_QUEUE__LEASE_SECONDS", "2")
        .env("WEDSYNC_QUEUE__HEARTBEAT_SECONDS", "1")
        .env("WEDSYNC_QUEUE__REAP_SECONDS", "1")
        .env("WEDSYNC_QUEUE__IDLE_POLL_MS", "100")
        .args(["serve", "--listen", "127.0.0.1:0", "--migrate"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    assert!(line.starts_with("wedsync listening on"), "{line}");
    child
}

async fn published(store: &Store) -> usize {
    EVENTS - store.unpublished_count().await.expect("count") as usize
}

async fn wait_for(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tick.tick().await;
    }
}

#[tokio::test]
async fn a_killed_node_loses_no_work() {
    let db = fresh_db().await.expect("db");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::connect(&db.options, Arc::new(SystemClock))
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    let settings =
        wedsync_core::org::OrgSettings::parse("Lens & Lace", "Europe/London", "scale", "GB", "GBP")
            .expect("org");
    let org = store
        .create_org(settings, &Actor::Cli("test".into()))
        .await
        .expect("org");

    // A backlog of events, each with its publish job, as the outbox writes them.
    let now = wedsync_core::clock::to_micros(chrono::Utc::now());
    let ids: Vec<String> = (0..EVENTS)
        .map(|_| wedsync_core::id::EventId::new_at(chrono::Utc::now()).to_string())
        .collect();
    for chunk in ids.chunks(1000) {
        let values: Vec<String> = chunk
            .iter()
            .map(|id| {
                format!(
                    "('{id}', '{}', 'client.updated', 'cpl_x', '{{}}', {now}, NULL)",
                    org.id
                )
            })
            .collect();
        execute_raw(&store, &format!("INSERT INTO outbox (id, org_id, event_type, subject, data, occurred_at, published_at) VALUES {}", values.join(", ")))
            .await
            .expect("events");
        let jobs = chunk
            .iter()
            .map(|id| {
                let mut job = NewJob::new(
                    wedsync_store::outbox::PUBLISH_KIND,
                    serde_json::json!({ "event_id": id }),
                );
                job.org_id = Some(org.id);
                job.dedupe_key = Some(id.clone());
                job
            })
            .collect();
        store.enqueue_many(jobs).await.expect("jobs");
    }

    // Start a node and kill it mid-stream.
    let first = serve(&db.url, dir.path());
    wait_for(
        "the node to start publishing",
        Duration::from_secs(60),
        async || published(&store).await >= 100,
    )
    .await;
    Command::new("kill")
        .args(["-KILL", &first.id().to_string()])
        .status()
        .expect("kill");
    let mut first = first;
    first.wait().expect("reap the killed process");
    let done_at_kill = published(&store).await;
    let running_at_kill = store
        .list_jobs(
            None,
            &JobFilter {
                state: Some(JobState::Running),
                kind: None,
            },
            &wedsync_store::page::PageRequest {
                limit: Some(100),
                after: None,
            },
        )
        .await
        .expect("running")
        .data
        .len();
    eprintln!("killed with {done_at_kill}/{EVENTS} published and {running_at_kill} jobs in flight");
    assert!(
        done_at_kill < EVENTS,
        "the node finished before it was killed; nothing was in flight"
    );

    // A new node finishes everything, including the killed node's claims once their leases
    // run out.
    let mut second = serve(&db.url, dir.path());
    wait_for(
        "every event to be published",
        Duration::from_secs(120),
        async || published(&store).await == EVENTS,
    )
    .await;
    wait_for(
        "every job to be recorded",
        Duration::from_secs(60),
        async || {
            store
                .queue_depth()
                .await
                .expect("depth")
                .iter()
                .all(|d| d.state == JobState::Succeeded)
        },
    )
    .await;
    let depth = store.queue_depth().await.expect("depth");
    assert_eq!(
        depth.iter().map(|d| d.count).sum::<i64>(),
        EVENTS as i64,
        "one job per event: none lost, none doubled"
    );
    Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status()
        .expect("term");
    assert!(second.wait().expect("wait").success());
}

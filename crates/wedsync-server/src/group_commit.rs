//! Group commit for inbound webhooks: concurrent requests are stored in shared transactions,
//! so throughput is not one disk sync per request.
//!
//! Each verified request is handed to a committer task and its sender waits. A committer
//! takes whatever requests are waiting (up to a batch limit, never waiting for more), stores
//! them in one transaction, and only after it commits answers each request. If the
//! transaction fails, every request in it is answered with an error and nothing of it is
//! stored, so no sender is told "accepted" for something that was not kept.

use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};
use wedsync_store::Store;
use wedsync_store::inbound::{IncomingRequest, Ingested, NewEvent};

type Reply = oneshot::Sender<Result<Ingested, String>>;
type Item = (IncomingRequest, Vec<NewEvent>, Reply);

/// Hands requests to the committer tasks.
#[derive(Debug, Clone)]
pub struct GroupCommitter {
    queue: mpsc::Sender<Item>,
}

impl GroupCommitter {
    /// Starts `committers` tasks writing batches of at most `max_batch` requests. SQLite has
    /// one writer, so one committer; PostgreSQL commits in parallel, so a few.
    pub fn spawn(store: Store, committers: usize, max_batch: usize) -> Self {
        let (queue, receiver) = mpsc::channel::<Item>(4096);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..committers.max(1) {
            let (store, receiver) = (store.clone(), receiver.clone());
            tokio::spawn(async move {
                loop {
                    let mut batch = Vec::new();
                    {
                        let mut rx = receiver.lock().await;
                        match rx.recv().await {
                            Some(first) => batch.push(first),
                            None => return,
                        }
                        while batch.len() < max_batch {
                            match rx.try_recv() {
                                Ok(more) => batch.push(more),
                                Err(_) => break,
                            }
                        }
                    }
                    let size = batch.len();
                    let (items, replies): (Vec<_>, Vec<_>) = batch
                        .into_iter()
                        .map(|(r, e, reply)| ((r, e), reply))
                        .unzip();
                    metrics::histogram!("wedsync_inbound_commit_batch_size").record(size as f64);
                    match store.ingest_many(items).await {
                        Ok(outcomes) => {
                            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                                let _ = reply.send(Ok(outcome));
                            }
                        }
                        Err(error) => {
                            tracing::error!(%error, size, "storing a batch of inbound requests failed");
                            for reply in replies {
                                let _ = reply.send(Err("could not store the request".into()));
                            }
                        }
                    }
                }
            });
        }
        Self { queue }
    }

    /// Stores one request (with others arriving at the same time) and returns its outcome
    /// once it is committed.
    pub async fn submit(
        &self,
        request: IncomingRequest,
        events: Vec<NewEvent>,
    ) -> Result<Ingested, String> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((request, events, reply))
            .await
            .map_err(|_| "the store is shutting down".to_owned())?;
        answer
            .await
            .map_err(|_| "the store is shutting down".to_owned())?
    }
}

//! Group commit for inbound webhooks: concurrent requests are stored in shared transactions
//! (`wedsync_store::group_commit`), each answered only after its transaction commits. A
//! failed transaction answers every request in it with an error and stores nothing of it.

use wedsync_store::Store;
use wedsync_store::group_commit::GroupCommit;
use wedsync_store::inbound::{IncomingRequest, Ingested, NewEvent};

/// Hands requests to the committer tasks.
#[derive(Debug, Clone)]
pub struct GroupCommitter {
    inner: GroupCommit<(IncomingRequest, Vec<NewEvent>), Ingested>,
}

impl GroupCommitter {
    /// Starts `committers` tasks writing batches of at most `max_batch` requests.
    pub fn spawn(store: Store, committers: usize, max_batch: usize) -> Self {
        let inner = GroupCommit::spawn(committers, max_batch, "inbound", move |items| {
            let store = store.clone();
            async move {
                store.ingest_many(items).await.map_err(|error| {
                    tracing::error!(%error, "storing a batch of inbound requests failed");
                    "could not store the request".to_owned()
                })
            }
        });
        Self { inner }
    }

    /// Stores one request (with others arriving at the same time) and returns its outcome
    /// once it is committed.
    pub async fn submit(
        &self,
        request: IncomingRequest,
        events: Vec<NewEvent>,
    ) -> Result<Ingested, String> {
        self.inner.submit((request, events)).await
    }
}

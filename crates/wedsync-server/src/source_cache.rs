//! A short-lived, per-node cache of sources with their opened secrets, so the inbound hot
//! path does not read and decrypt the source on every request.
//!
//! Entries live `TTL`; this node drops an entry at once when it updates or rotates the
//! source. Another node's change (a disabled source, a rotated secret) reaches this node
//! within `TTL`; rotation keeps the previous secret valid for a day, so a sender switching
//! secrets is never refused for long, and a refused sender retries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wedsync_core::id::SourceId;
use wedsync_store::sources::VerifyingSource;
use wedsync_store::{Store, StoreResult};

/// How long an entry is trusted.
pub const TTL: Duration = Duration::from_secs(5);
/// Past this many entries, expired ones are swept.
const SWEEP_AT: usize = 10_000;

type Entry = (Instant, Option<Arc<VerifyingSource>>);

/// The cache.
#[derive(Debug, Default)]
pub struct SourceCache {
    entries: Mutex<HashMap<SourceId, Entry>>,
}

impl SourceCache {
    /// The source with its secrets, from the cache or the store; `None` if it does not exist.
    pub async fn get(
        &self,
        store: &Store,
        id: &SourceId,
    ) -> StoreResult<Option<Arc<VerifyingSource>>> {
        {
            let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, found)) = entries.get(id)
                && at.elapsed() < TTL
            {
                return Ok(found.clone());
            }
        }
        let found = store.source_for_verification(id).await?.map(Arc::new);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= SWEEP_AT {
            entries.retain(|_, (at, _)| at.elapsed() < TTL);
        }
        entries.insert(*id, (Instant::now(), found.clone()));
        Ok(found)
    }

    /// Forgets a source this node just changed.
    pub fn invalidate(&self, id: &SourceId) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }
}

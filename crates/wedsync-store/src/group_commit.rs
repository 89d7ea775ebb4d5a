//! Group commit: concurrent callers share transactions, so throughput is not one disk sync
//! per call.
//!
//! Each caller hands its item to a committer task and waits. A committer takes whatever
//! items are waiting (up to a batch limit, never waiting for more), writes them in one
//! transaction through the `commit` function, and only after it commits answers each caller
//! with its own result. If the transaction fails, every caller in it gets the error and
//! nothing of the batch is kept, so nobody is told "done" for something that was not stored.
//! Used by the inbound gateway (store before answering) and the delivery workers (record
//! each attempt).

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};

type Reply<O> = oneshot::Sender<Result<O, String>>;

/// Hands items to the committer tasks.
pub struct GroupCommit<I, O> {
    queue: mpsc::Sender<(I, Reply<O>)>,
}

impl<I, O> Clone for GroupCommit<I, O> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl<I, O> std::fmt::Debug for GroupCommit<I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

impl<I: Send + 'static, O: Send + 'static> GroupCommit<I, O> {
    /// Starts `committers` tasks writing batches of at most `max_batch` items with `commit`,
    /// which must return one result per item, in order. SQLite has one writer, so one
    /// committer; PostgreSQL commits in parallel, so a few. `what` names the work in logs
    /// and in the `wedsync_commit_batch_size` histogram.
    pub fn spawn<F, Fut>(committers: usize, max_batch: usize, what: &'static str, commit: F) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<O>, String>> + Send,
    {
        let (queue, receiver) = mpsc::channel::<(I, Reply<O>)>(4096);
        let receiver = Arc::new(Mutex::new(receiver));
        let commit = Arc::new(commit);
        for _ in 0..committers.max(1) {
            let (receiver, commit) = (receiver.clone(), commit.clone());
            tokio::spawn(async move {
                // One buffer for the task's life: growing a fresh one to a full batch took
                // nine reallocations, the largest into freshly faulted memory, every batch.
                let mut batch = Vec::with_capacity(max_batch.max(1));
                loop {
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
                    let (items, replies): (Vec<I>, Vec<Reply<O>>) = batch.drain(..).unzip();
                    metrics::histogram!("wedsync_commit_batch_size", "what" => what)
                        .record(size as f64);
                    match commit(items).await {
                        Ok(outcomes) if outcomes.len() == size => {
                            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                                let _ = reply.send(Ok(outcome));
                            }
                        }
                        Ok(outcomes) => {
                            tracing::error!(
                                what,
                                size,
                                got = outcomes.len(),
                                "a group commit returned the wrong number of results"
                            );
                            for reply in replies {
                                let _ = reply.send(Err("internal error".into()));
                            }
                        }
                        Err(error) => {
                            tracing::error!(%error, what, size, "a group commit failed");
                            for reply in replies {
                                let _ = reply.send(Err(error.clone()));
                            }
                        }
                    }
                }
            });
        }
        Self { queue }
    }

    /// Commits several items (queued together, so they usually share a transaction) and
    /// returns their results in order, each once it is committed.
    pub async fn submit_all(&self, items: Vec<I>) -> Vec<Result<O, String>> {
        let mut answers = Vec::with_capacity(items.len());
        for item in items {
            let (reply, answer) = oneshot::channel();
            answers.push(match self.queue.send((item, reply)).await {
                Ok(()) => Some(answer),
                Err(_) => None,
            });
        }
        let mut out = Vec::with_capacity(answers.len());
        for answer in answers {
            out.push(match answer {
                Some(answer) => answer
                    .await
                    .map_err(|_| "the store is shutting down".to_owned())
                    .and_then(|r| r),
                None => Err("the store is shutting down".to_owned()),
            });
        }
        out
    }

    /// Commits one item (with others arriving at the same time) and returns its result once
    /// it is committed.
    pub async fn submit(&self, item: I) -> Result<O, String> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((item, reply))
            .await
            .map_err(|_| "the store is shutting down".to_owned())?;
        answer
            .await
            .map_err(|_| "the store is shutting down".to_owned())?
    }
}

//! The store's own thread: the daemon's store calls run there, never on a tokio worker, and the
//! writes of many units share one commit.
//!
//! Callers queue a job and await its answer. The thread takes every job that is queued, runs the
//! reads first (they see only committed data), then runs the writes inside one
//! `BEGIN IMMEDIATE ... COMMIT` (each write is its own savepoint, so one that fails rolls back
//! alone) and answers the writers only after the commit is durable (`synchronous=FULL`): a
//! thousand units stepping at once cost a few fsyncs instead of a thousand, and no caller ever
//! acts on a write that a crash could still undo.
//!
//! It must not decide anything about units: it only orders and batches the [`Store`]'s calls.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use tokio::sync::oneshot;

use super::{Store, StoreError};

/// At most this many writes share one commit (bounds the time a commit holds the connection).
const MAX_GROUP: usize = 1024;

/// Hands the outcome of a write to its caller once the group's commit is known.
type Deliver = Box<dyn FnOnce(Option<&StoreError>) + Send>;

enum Job {
    Read(Box<dyn FnOnce(&Store) + Send>),
    Write(Box<dyn FnOnce(&Store) -> Deliver + Send>),
}

/// How many commits and writes the thread made: writes / commits is the grouping achieved.
#[derive(Debug, Default)]
pub struct GroupStats {
    commits: AtomicU64,
    writes: AtomicU64,
}

impl GroupStats {
    /// `(commits, writes)` so far.
    pub fn get(&self) -> (u64, u64) {
        (self.commits.load(Ordering::Relaxed), self.writes.load(Ordering::Relaxed))
    }
}

/// The async face of a [`Store`]: a cheap, cloneable handle to the thread that owns it.
///
/// Dropping the last handle stops the thread after the queued jobs and waits for it, so the
/// store (and its lock on `state_dir`) is released when the drop returns.
#[derive(Clone)]
pub struct StoreThread {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<Store>,
    /// `None` only while dropping.
    jobs: Option<mpsc::Sender<Job>>,
    stats: Arc<GroupStats>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for StoreThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreThread").field("store", &self.inner.store).finish_non_exhaustive()
    }
}

impl StoreThread {
    /// Starts the thread owning `store`'s writes.
    pub fn start(store: Arc<Store>) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel();
        let stats = Arc::new(GroupStats::default());
        let (thread_store, thread_stats) = (store.clone(), stats.clone());
        let thread = std::thread::Builder::new()
            .name("dcvd-store".into())
            .spawn(move || serve(&thread_store, &queue, &thread_stats))?;
        Ok(Self { inner: Arc::new(Inner { store, jobs: Some(jobs), stats, thread: Some(thread) }) })
    }

    /// The store, for synchronous callers outside the engine (`dcvd status`, tests).
    pub fn store(&self) -> &Arc<Store> {
        &self.inner.store
    }

    /// Commits and writes made so far.
    pub fn stats(&self) -> &GroupStats {
        &self.inner.stats
    }

    /// Runs `read` on the store's thread; it sees only committed data.
    pub async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Job::Read(Box::new(move |store| {
            let _ = tx.send(read(store));
        })))?;
        rx.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// Runs `write` on the store's thread in the next group transaction and returns its result
    /// once that transaction is committed (or the commit's error).
    pub async fn write<T: Send + 'static>(
        &self,
        write: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Job::Write(Box::new(move |store| {
            let result = write(store);
            Box::new(move |commit: Option<&StoreError>| {
                let _ = tx.send(match commit {
                    None => result,
                    Some(e) => Err(StoreError::Unavailable { message: format!("commit failed: {e}") }),
                });
            })
        })))?;
        rx.await.unwrap_or_else(|_| Err(stopped()))
    }

    fn send(&self, job: Job) -> Result<(), StoreError> {
        match &self.inner.jobs {
            Some(jobs) => jobs.send(job).map_err(|_| stopped()),
            None => Err(stopped()),
        }
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable { message: "the store thread stopped".into() }
}

/// The thread's loop: waits for a job, takes what else is queued, reads, then one group of writes.
fn serve(store: &Store, queue: &mpsc::Receiver<Job>, stats: &GroupStats) {
    while let Ok(first) = queue.recv() {
        let mut writes = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Read(read) => run_guarded(|| read(store)),
                Job::Write(write) => writes.push(write),
            }
            if writes.len() < MAX_GROUP {
                next = queue.try_recv().ok();
            }
        }
        if writes.is_empty() {
            continue;
        }
        // Should BEGIN fail, each write's savepoint commits on its own: slower, still durable.
        let grouped = store.begin_group().is_ok();
        let mut delivers: Vec<Deliver> = Vec::with_capacity(writes.len());
        for write in writes {
            match catch_unwind(AssertUnwindSafe(|| write(store))) {
                Ok(deliver) => delivers.push(deliver),
                // The write's savepoint rolled back while unwinding; its caller sees the
                // channel closed ("the store thread stopped") and retries the step.
                Err(_) => tracing::error!("a store write panicked; it was rolled back"),
            }
        }
        let commit = if grouped { store.commit_group() } else { Ok(()) };
        stats.commits.fetch_add(1, Ordering::Relaxed);
        stats.writes.fetch_add(delivers.len() as u64, Ordering::Relaxed);
        match &commit {
            // A database that does not answer is one condition, which the engine's lease renewal
            // reports once (ERROR, `/healthz`); each failed group would repeat it.
            Err(e @ StoreError::Unavailable { .. }) => {
                tracing::debug!(error = %e, writes = delivers.len(), "state store commit failed; the steps will be retried");
            }
            Err(e) => {
                tracing::error!(error = %e, writes = delivers.len(), "state store commit failed; the steps will be retried");
            }
            Ok(()) => {}
        }
        for deliver in delivers {
            deliver(commit.as_ref().err());
        }
    }
}

fn run_guarded(f: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(f)).is_err() {
        tracing::error!("a store read panicked");
    }
}

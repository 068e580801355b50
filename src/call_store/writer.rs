//! The drain: takes the queue's oldest rows to PostgreSQL in batches, in order, and takes
//! them out of the queue once committed. While PostgreSQL is down or refuses, it waits and
//! tries again, backing off; the rows stay queued.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::config::CallStoreConfig;
use super::database::Database;
use super::queue::Backlog;
use crate::hooks::store::StoreError;

/// The first pause after a failure; it doubles up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// How often the queue is looked at when nothing woke the drain (rows left by an earlier
/// run, a missed wake-up).
const POLL: Duration = Duration::from_secs(5);

/// What the drain has done, for the metrics.
#[derive(Debug, Default)]
pub(crate) struct DrainStats {
    /// Rows committed to PostgreSQL.
    pub(crate) written: AtomicU64,
    /// Batches that failed (and wait to be tried again).
    pub(crate) failures: AtomicU64,
    /// Rows waiting in the queue, as last counted.
    pub(crate) backlog: AtomicI64,
    /// Whether the last attempt reached PostgreSQL.
    pub(crate) connected: AtomicBool,
}

/// The running drain.
pub(crate) struct Drain {
    stop: CancellationToken,
    task: JoinHandle<()>,
    stats: Arc<DrainStats>,
}

impl Drain {
    /// Starts draining the queue at `path`, on `db` when already connected.
    pub(crate) fn start(
        cfg: CallStoreConfig,
        path: &Path,
        db: Option<Database>,
        wake: Arc<Notify>,
    ) -> Result<Drain, StoreError> {
        let backlog = Backlog::open(path)?;
        let stop = CancellationToken::new();
        let stats = Arc::new(DrainStats::default());
        stats.connected.store(db.is_some(), Ordering::Relaxed);
        let run = Run {
            cfg,
            backlog: Arc::new(Mutex::new(backlog)),
            db,
            wake,
            stop: stop.clone(),
            stats: Arc::clone(&stats),
        };
        Ok(Drain {
            stop,
            task: tokio::spawn(run.drain()),
            stats,
        })
    }

    /// The drain's figures.
    pub(crate) fn stats(&self) -> &Arc<DrainStats> {
        &self.stats
    }

    /// Writes what is queued while PostgreSQL answers, for at most `limit`, then stops;
    /// what is left stays queued for the next start.
    pub(crate) async fn finish(self, limit: Duration) {
        self.stop.cancel();
        let abort = self.task.abort_handle();
        if tokio::time::timeout(limit, self.task).await.is_err() {
            abort.abort();
            tracing::warn!(
                "call store: stopped with records still queued; they are written at the next start"
            );
        }
    }
}

struct Run {
    cfg: CallStoreConfig,
    backlog: Arc<Mutex<Backlog>>,
    db: Option<Database>,
    wake: Arc<Notify>,
    stop: CancellationToken,
    stats: Arc<DrainStats>,
}

impl Run {
    /// `f` on the queue, off the async threads.
    async fn queue<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Backlog) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let backlog = Arc::clone(&self.backlog);
        tokio::task::spawn_blocking(move || match backlog.lock() {
            Ok(b) => f(&b),
            Err(_) => Err(StoreError::Closed),
        })
        .await
        .unwrap_or(Err(StoreError::Closed))
    }

    /// Waits `pause` unless told to stop; false when stopping.
    async fn pause(&self, pause: Duration) -> bool {
        tokio::select! {
            _ = self.stop.cancelled() => false,
            _ = tokio::time::sleep(pause) => true,
        }
    }

    async fn drain(mut self) {
        let mut pause = RETRY_MIN;
        let mut down_since: Option<Instant> = None;
        let batch_max = self.cfg.batch_max;
        loop {
            let stopping = self.stop.is_cancelled();
            let (rows, last) = match self.queue(move |b| b.oldest(batch_max)).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "call store: cannot read the queue");
                    if stopping || !self.pause(RETRY_MAX).await {
                        return;
                    }
                    continue;
                }
            };
            let Some(last) = last else {
                self.stats.backlog.store(0, Ordering::Relaxed);
                if stopping {
                    return;
                }
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = self.stop.cancelled() => {}
                    _ = tokio::time::sleep(POLL) => {}
                }
                continue;
            };
            if let Ok(n) = self.queue(|b| b.len()).await {
                self.stats.backlog.store(n, Ordering::Relaxed);
            }
            let written = match self.db.as_mut() {
                Some(db) => db.write(&rows).await.map(|_| rows.len()),
                // At shutdown, only a connection already up is used.
                None if stopping => return,
                None => match Database::connect(&self.cfg).await {
                    Ok(db) => {
                        self.db = Some(db);
                        continue;
                    }
                    Err(e) => Err(e),
                },
            };
            match written {
                Ok(n) => {
                    if let Err(e) = self.queue(move |b| b.remove_through(last)).await {
                        // Written but still queued: written again later, which the upsert
                        // makes harmless.
                        tracing::error!(error = %e, "call store: cannot take written records out of the queue");
                    }
                    self.stats.written.fetch_add(n as u64, Ordering::Relaxed);
                    self.stats.connected.store(true, Ordering::Relaxed);
                    if let Some(since) = down_since.take() {
                        tracing::info!(
                            down_s = since.elapsed().as_secs(),
                            "call store: writing again"
                        );
                    }
                    pause = RETRY_MIN;
                }
                Err(e) => {
                    self.db = None;
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    self.stats.connected.store(false, Ordering::Relaxed);
                    if down_since.is_none() {
                        down_since = Some(Instant::now());
                        tracing::warn!(error = %e, "call store: cannot write; records wait in the outbox and are written when it answers");
                    } else if !e.is_transient() {
                        tracing::error!(error = %e, "call store: still cannot write");
                    } else {
                        tracing::debug!(error = %e, "call store: still cannot write");
                    }
                    if stopping || !self.pause(pause).await {
                        return;
                    }
                    pause = (pause * 2).min(RETRY_MAX);
                }
            }
        }
    }
}

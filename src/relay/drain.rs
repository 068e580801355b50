//! The drain: takes the queue's oldest items to their destination in batches, in order, and
//! takes them out of the queue once the destination has them. While it is down or refuses,
//! the drain waits and tries again, backing off; the items stay queued.

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::queue::{Backlog, Table};
use crate::hooks::store::StoreError;

/// Where a relay's items go (PostgreSQL, NATS JetStream).
pub(crate) trait Sink: Send + Sync + 'static {
    /// A live connection.
    type Conn: Send + Sync + 'static;
    /// Why connecting or writing failed.
    type Error: std::fmt::Display + Send;
    /// What the logs call the destination.
    const NAME: &'static str;
    /// Connects.
    fn connect(&self) -> impl Future<Output = Result<Self::Conn, Self::Error>> + Send;
    /// Writes a batch, oldest first; Ok once the destination has all of it.
    fn write(
        &self,
        conn: &mut Self::Conn,
        items: &[serde_json::Value],
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// Whether the failure is the kind that passes (a restart, a dropped connection), logged
    /// quietly after the first.
    fn is_transient(e: &Self::Error) -> bool;
}

/// The first pause after a failure; it doubles up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// How often the queue is looked at when nothing woke the drain (rows left by an earlier
/// run, a missed wake-up).
const POLL: Duration = Duration::from_secs(5);

/// What the drain has done, for the metrics.
#[derive(Debug, Default)]
pub(crate) struct DrainStats {
    /// Items the destination has.
    pub(crate) written: AtomicU64,
    /// Batches that failed (and wait to be tried again).
    pub(crate) failures: AtomicU64,
    /// Items waiting in the queue, as last counted.
    pub(crate) backlog: AtomicI64,
    /// Whether the last attempt reached the destination.
    pub(crate) connected: AtomicBool,
}

/// The running drain.
pub(crate) struct Drain {
    stop: CancellationToken,
    task: JoinHandle<()>,
    stats: Arc<DrainStats>,
    name: &'static str,
}

impl Drain {
    /// Starts draining `table` of the outbox at `path` into `sink`, `batch_max` items at a
    /// time, on `conn` when already connected.
    pub(crate) fn start<S: Sink>(
        sink: S,
        batch_max: usize,
        path: &Path,
        table: &'static Table,
        conn: Option<S::Conn>,
        wake: Arc<Notify>,
    ) -> Result<Drain, StoreError> {
        let backlog = Backlog::open(path, table)?;
        let stop = CancellationToken::new();
        let stats = Arc::new(DrainStats::default());
        stats.connected.store(conn.is_some(), Ordering::Relaxed);
        let run = Run {
            sink,
            batch_max,
            backlog: Arc::new(Mutex::new(backlog)),
            conn,
            wake,
            stop: stop.clone(),
            stats: Arc::clone(&stats),
        };
        Ok(Drain {
            stop,
            task: tokio::spawn(run.drain()),
            stats,
            name: S::NAME,
        })
    }

    /// The drain's figures.
    pub(crate) fn stats(&self) -> &Arc<DrainStats> {
        &self.stats
    }

    /// Writes what is queued while the destination answers, for at most `limit`, then
    /// stops; what is left stays queued for the next start.
    pub(crate) async fn finish(self, limit: Duration) {
        self.stop.cancel();
        let abort = self.task.abort_handle();
        if tokio::time::timeout(limit, self.task).await.is_err() {
            abort.abort();
            tracing::warn!(
                "{}: stopped with items still queued; they are written at the next start",
                self.name
            );
        }
    }
}

struct Run<S: Sink> {
    sink: S,
    batch_max: usize,
    backlog: Arc<Mutex<Backlog>>,
    conn: Option<S::Conn>,
    wake: Arc<Notify>,
    stop: CancellationToken,
    stats: Arc<DrainStats>,
}

impl<S: Sink> Run<S> {
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
        let batch_max = self.batch_max;
        let name = S::NAME;
        loop {
            let stopping = self.stop.is_cancelled();
            let (rows, last) = match self.queue(move |b| b.oldest(batch_max)).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "{name}: cannot read the queue");
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
            let written = match self.conn.as_mut() {
                Some(conn) => self.sink.write(conn, &rows).await.map(|()| rows.len()),
                // At shutdown, only a connection already up is used.
                None if stopping => return,
                None => match self.sink.connect().await {
                    Ok(conn) => {
                        self.conn = Some(conn);
                        continue;
                    }
                    Err(e) => Err(e),
                },
            };
            match written {
                Ok(n) => {
                    if let Err(e) = self.queue(move |b| b.remove_through(last)).await {
                        // Written but still queued: written again later, which the
                        // destination makes harmless (an upsert, a de-duplicating id).
                        tracing::error!(error = %e, "{name}: cannot take written items out of the queue");
                    }
                    self.stats.written.fetch_add(n as u64, Ordering::Relaxed);
                    self.stats.connected.store(true, Ordering::Relaxed);
                    if let Some(since) = down_since.take() {
                        tracing::info!(down_s = since.elapsed().as_secs(), "{name}: writing again");
                    }
                    pause = RETRY_MIN;
                }
                Err(e) => {
                    self.conn = None;
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    self.stats.connected.store(false, Ordering::Relaxed);
                    if down_since.is_none() {
                        down_since = Some(Instant::now());
                        tracing::warn!(error = %e, "{name}: cannot write; items wait in the outbox and are written when it answers");
                    } else if !S::is_transient(&e) {
                        tracing::error!(error = %e, "{name}: still cannot write");
                    } else {
                        tracing::debug!(error = %e, "{name}: still cannot write");
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

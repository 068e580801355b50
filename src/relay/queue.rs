//! A relay's queue: items committed to a table of the local outbox (SQLite, WAL) the moment
//! they happen, and taken out only once their destination has them.
//!
//! The pipeline hands items to a thread that makes their JSON, owns a connection and
//! commits whatever has come in one transaction, so a burst of hangups costs one commit and
//! the event loop neither waits on a disk nor spends its time making JSON.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use rusqlite::{params, Connection};
use tokio::sync::Notify;

use crate::hooks::store::{self as outbox, StoreError};

/// Items handed over but not yet committed, at most: beyond, the newest are refused (and
/// counted), so memory stays bounded while the disk is full.
const HANDED_MAX: usize = 4_096;

/// The outbox table a relay's queue lives in (made by the outbox's migrations), with an
/// integer `seq` that orders it, a key, a JSON text and the time it was queued.
pub(crate) struct Table {
    /// The table.
    pub(crate) name: &'static str,
    /// The key column (what the item is about).
    pub(crate) key: &'static str,
    /// The JSON column.
    pub(crate) json: &'static str,
    /// What the items are, for the logs.
    pub(crate) items: &'static str,
}

/// The writing end: items go in, committed by the queue's thread as `(key, JSON)`.
pub struct Queue<T> {
    tx: Option<SyncSender<T>>,
    thread: Option<thread::JoinHandle<()>>,
    committed: Arc<Notify>,
}

impl<T: Send + 'static> Queue<T> {
    /// Opens the queue in `table` of the outbox at `path`; `make` turns an item into its key
    /// and JSON on the queue's thread; `committed` is woken after each commit.
    pub(crate) fn open(
        path: &Path,
        table: &'static Table,
        make: fn(T) -> (String, String),
        committed: Arc<Notify>,
    ) -> Result<Queue<T>, StoreError> {
        let conn = outbox::open(path)?;
        let (tx, rx) = mpsc::sync_channel(HANDED_MAX);
        let wake = Arc::clone(&committed);
        let path = path.to_owned();
        let thread = thread::Builder::new()
            .name(format!("{}-queue", table.name))
            .spawn(move || commit_loop(conn, rx, table, make, &wake, &path))
            .map_err(|_| StoreError::Closed)?;
        Ok(Queue {
            tx: Some(tx),
            thread: Some(thread),
            committed,
        })
    }

    /// Hands an item over; false when too many wait for the disk already (it is dropped).
    pub fn push(&self, item: T) -> bool {
        let Some(tx) = &self.tx else { return false };
        match tx.try_send(item) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

impl<T> Queue<T> {
    /// Commits what was handed over and stops the thread.
    pub fn close(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.committed.notify_one();
    }
}

impl<T> Drop for Queue<T> {
    fn drop(&mut self) {
        self.close();
    }
}

fn commit_loop<T>(
    mut conn: Connection,
    rx: Receiver<T>,
    table: &Table,
    make: fn(T) -> (String, String),
    committed: &Notify,
    path: &Path,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![make(first)];
        while let Ok(more) = rx.try_recv() {
            batch.push(make(more));
            if batch.len() >= 1000 {
                break;
            }
        }
        let mut pause = Duration::from_millis(100);
        loop {
            match insert(&mut conn, table, &batch) {
                Ok(()) => break,
                Err(e) => {
                    // A full or failing disk: keep the batch and try again; the pipeline
                    // goes on, and what it hands over waits in the channel meanwhile.
                    tracing::error!(path = %path.display(), error = %e, items = table.items, "cannot queue in the outbox; retrying");
                    thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
        committed.notify_one();
    }
}

fn insert(
    conn: &mut Connection,
    table: &Table,
    batch: &[(String, String)],
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(&format!(
            "INSERT INTO {} ({}, {}, queued_ms) VALUES (?1, ?2, ?3)",
            table.name, table.key, table.json
        ))?;
        let now = outbox::now_ms();
        for (id, row) in batch {
            stmt.execute(params![id, row, now])?;
        }
    }
    tx.commit()
}

/// The reading end: what waits, oldest first, and taking out what was delivered.
pub(crate) struct Backlog {
    conn: Connection,
    path: PathBuf,
    table: &'static Table,
}

impl Backlog {
    /// Opens the queue in `table` of the outbox at `path` for reading and removing.
    pub(crate) fn open(path: &Path, table: &'static Table) -> Result<Backlog, StoreError> {
        Ok(Backlog {
            conn: outbox::open(path)?,
            path: path.to_owned(),
            table,
        })
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// The oldest `n` items, and the place in the queue of the last one read. An item that
    /// is not JSON (a damaged file) is skipped with an error logged, and taken out with the
    /// batch.
    pub(crate) fn oldest(
        &self,
        n: usize,
    ) -> Result<(Vec<serde_json::Value>, Option<i64>), StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT seq, {} FROM {} ORDER BY seq LIMIT ?1",
                self.table.json, self.table.name
            ))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![n as i64], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.err(e))?;
        let last = rows.last().map(|(seq, _)| *seq);
        let mut out = Vec::with_capacity(rows.len());
        for (seq, text) in rows {
            match serde_json::from_str(&text) {
                Ok(row) => out.push(row),
                Err(e) => {
                    tracing::error!(seq, error = %e, items = self.table.items, "a queued item is not JSON; skipped")
                }
            }
        }
        Ok((out, last))
    }

    /// Takes out every item up to `seq`.
    pub(crate) fn remove_through(&self, seq: i64) -> Result<(), StoreError> {
        self.conn
            .execute(
                &format!("DELETE FROM {} WHERE seq <= ?1", self.table.name),
                params![seq],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// How many items wait.
    pub(crate) fn len(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row(
                &format!("SELECT COUNT(*) FROM {}", self.table.name),
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_wait_in_order_across_a_reopen_until_taken_out() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let capture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/freeswitch-1.10/16-concurrent-mix.esl");
        let records = rt
            .block_on(crate::replay::records(&capture, Default::default()))
            .unwrap();
        assert_eq!(records.len(), 5);
        let ids: Vec<&str> = records.iter().map(|r| r.cdr.id.as_str()).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.db");
        let table = &crate::call_store::QUEUE;
        let make = crate::call_store::queued;
        let mut q = Queue::open(&path, table, make, Arc::new(Notify::new())).unwrap();
        for r in &records {
            assert!(q.push(crate::call_store::RowSource::new(r)));
        }
        q.close();
        let b = Backlog::open(&path, table).unwrap();
        let (rows, last) = b.oldest(3).unwrap();
        let first: Vec<_> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
        assert_eq!(first, ids[..3]);
        assert_eq!(rows[0], crate::call_store::row(&records[0]));
        b.remove_through(last.unwrap()).unwrap();
        drop(b);
        let b = Backlog::open(&path, table).unwrap();
        assert_eq!(b.len().unwrap(), 2);
        assert_eq!(b.oldest(10).unwrap().0[0]["id"], ids[3]);
    }
}

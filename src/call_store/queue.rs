//! The call store's queue: records committed to the local outbox (SQLite, WAL) the moment a
//! call finishes, and taken out only once PostgreSQL has committed them.
//!
//! The pipeline hands records to a thread that makes their rows, owns a connection and
//! commits whatever has come in one transaction, so a burst of hangups costs one commit and
//! the event loop neither waits on a disk nor spends its time making JSON.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use rusqlite::{params, Connection};
use tokio::sync::Notify;

use super::columns::{self, RowSource};
use crate::hooks::store::{self as outbox, StoreError};

/// Rows handed over but not yet committed, at most: beyond, the newest are refused (and
/// counted), so memory stays bounded while the disk is full.
const HANDED_MAX: usize = 4_096;

/// The writing end: rows go in, committed by the queue's thread.
pub struct Queue {
    tx: Option<SyncSender<RowSource>>,
    thread: Option<thread::JoinHandle<()>>,
    committed: Arc<Notify>,
}

impl Queue {
    /// Opens the queue in the outbox at `path`; `committed` is woken after each commit.
    pub fn open(path: &Path, committed: Arc<Notify>) -> Result<Queue, StoreError> {
        let conn = outbox::open(path)?;
        let (tx, rx) = mpsc::sync_channel(HANDED_MAX);
        let wake = Arc::clone(&committed);
        let path = path.to_owned();
        let thread = thread::Builder::new()
            .name("call-store-queue".into())
            .spawn(move || commit_loop(conn, rx, &wake, &path))
            .map_err(|_| StoreError::Closed)?;
        Ok(Queue {
            tx: Some(tx),
            thread: Some(thread),
            committed,
        })
    }

    /// Hands a record over; false when too many wait for the disk already (it is dropped).
    pub fn push(&self, record: RowSource) -> bool {
        let Some(tx) = &self.tx else { return false };
        match tx.try_send(record) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Commits what was handed over and stops the thread.
    pub fn close(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.committed.notify_one();
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        self.close();
    }
}

fn commit_loop(mut conn: Connection, rx: Receiver<RowSource>, committed: &Notify, path: &Path) {
    let as_row = |r: RowSource| (r.id().to_owned(), columns::row(&r).to_string());
    while let Ok(first) = rx.recv() {
        let mut batch = vec![as_row(first)];
        while let Ok(more) = rx.try_recv() {
            batch.push(as_row(more));
            if batch.len() >= 1000 {
                break;
            }
        }
        let mut pause = Duration::from_millis(100);
        loop {
            match insert(&mut conn, &batch) {
                Ok(()) => break,
                Err(e) => {
                    // A full or failing disk: keep the batch and try again; the pipeline
                    // goes on, and what it hands over waits in the channel meanwhile.
                    tracing::error!(path = %path.display(), error = %e, "cannot queue call records for the call store; retrying");
                    thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
        committed.notify_one();
    }
}

fn insert(conn: &mut Connection, batch: &[(String, String)]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO call_store_queue (call_id, row_json, queued_ms) VALUES (?1, ?2, ?3)",
        )?;
        let now = outbox::now_ms();
        for (id, row) in batch {
            stmt.execute(params![id, row, now])?;
        }
    }
    tx.commit()
}

/// The reading end: what waits, oldest first, and taking out what was written.
pub(crate) struct Backlog {
    conn: Connection,
    path: PathBuf,
}

impl Backlog {
    /// Opens the queue at `path` for reading and removing.
    pub(crate) fn open(path: &Path) -> Result<Backlog, StoreError> {
        Ok(Backlog {
            conn: outbox::open(path)?,
            path: path.to_owned(),
        })
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// The oldest `n` rows. A row that is not JSON (a damaged file) is skipped with an error
    /// logged, and taken out with the batch.
    /// Also the place in the queue of the last row read.
    pub(crate) fn oldest(
        &self,
        n: usize,
    ) -> Result<(Vec<serde_json::Value>, Option<i64>), StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT seq, row_json FROM call_store_queue ORDER BY seq LIMIT ?1")
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
                    tracing::error!(seq, error = %e, "a queued call record is not JSON; skipped")
                }
            }
        }
        Ok((out, last))
    }

    /// Takes out every row up to `seq`.
    pub(crate) fn remove_through(&self, seq: i64) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM call_store_queue WHERE seq <= ?1", params![seq])
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// How many rows wait.
    pub(crate) fn len(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM call_store_queue", [], |r| r.get(0))
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
        let mut q = Queue::open(&path, Arc::new(Notify::new())).unwrap();
        for r in &records {
            assert!(q.push(RowSource::new(r)));
        }
        q.close();
        let b = Backlog::open(&path).unwrap();
        let (rows, last) = b.oldest(3).unwrap();
        let first: Vec<_> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
        assert_eq!(first, ids[..3]);
        assert_eq!(rows[0], crate::call_store::row(&records[0]));
        b.remove_through(last.unwrap()).unwrap();
        drop(b);
        let b = Backlog::open(&path).unwrap();
        assert_eq!(b.len().unwrap(), 2);
        assert_eq!(b.oldest(10).unwrap().0[0]["id"], ids[3]);
    }
}

//! The outbox: every webhook request, committed to an embedded SQLite database (WAL) before
//! it is attempted, with its attempts, its outcome and, when it could not be delivered, a
//! dead letter keeping the last response.
//!
//! One writer thread owns the connection and commits whatever has queued up in one
//! transaction (group commit), so thousands of deliveries a second cost a handful of fsyncs.
//! WAL with `synchronous = NORMAL` survives the process being killed at any point (only a
//! power loss can drop the last transactions).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::thread;

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;

use super::moment_data::MomentData;
use super::request::Request;
use super::webhook::WebhookSet;

/// `[store]`: where the outbox lives.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// The SQLite database file (created if missing).
    pub path: PathBuf,
    /// Delivered requests older than this are deleted (hourly); dead letters are kept
    /// until purged.
    #[serde(with = "humantime_serde")]
    pub keep_delivered: std::time::Duration,
    /// While the outbox cannot commit (a full disk), webhook requests wait in memory, at
    /// most this many bytes of them; the newest beyond it are given up and counted.
    pub hold_max_bytes: usize,
    /// Pending webhook requests are kept in memory up to this many bytes; the rest wait in
    /// the outbox alone and are read back when their turn comes.
    pub pending_memory_bytes: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("switchhook.db"),
            keep_delivered: std::time::Duration::from_secs(7 * 24 * 3600),
            hold_max_bytes: 64 << 20,
            pending_memory_bytes: 64 << 20,
        }
    }
}

impl StoreConfig {
    /// Every problem with the section's values, by key path.
    pub fn check(&self) -> Vec<crate::problem::Problem> {
        if self.path.as_os_str().is_empty() {
            return vec![crate::problem::Problem::new(
                "store.path",
                "must name a file",
            )];
        }
        Vec::new()
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting for its (next) attempt.
    Pending,
    /// Delivered (a 2xx).
    Delivered,
    /// Given up; see the dead letter.
    Dead,
    /// Its webhook is disabled; replayed in order when it is enabled again.
    Parked,
}

impl State {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Delivered => "delivered",
            State::Dead => "dead",
            State::Parked => "parked",
        }
    }

    /// The state spelled `s`.
    pub fn parse(s: &str) -> Option<State> {
        [State::Pending, State::Delivered, State::Dead, State::Parked]
            .into_iter()
            .find(|x| x.as_str() == s)
    }
}

/// A delivery as the outbox holds it.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Row id: the commit order, which is the delivery order within a call.
    pub rowid: i64,
    /// The request.
    pub request: Request,
    /// Attempts made so far.
    pub attempts: u32,
    /// Earliest next attempt, unix ms.
    pub next_ms: i64,
}

/// One attempt's result, as recorded.
#[derive(Debug, Clone, Default)]
pub struct AttemptRecord {
    /// The response status, if a response came.
    pub status: Option<u16>,
    /// Why no response came (timeout, refused…).
    pub error: Option<String>,
    /// The start of the response body.
    pub response: Option<String>,
}

/// What the delivery becomes after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Delivered.
    Delivered,
    /// Another attempt at this unix ms.
    RetryAt(i64),
    /// Dead letter.
    Dead,
    /// Parked (its webhook got disabled).
    Parked,
}

/// A row for `deliveries list` / `show`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    /// Row id.
    pub rowid: i64,
    /// `webhook-id`.
    pub id: String,
    /// Webhook name.
    pub webhook: String,
    /// Trigger.
    pub trigger: String,
    /// Call id.
    pub call_id: String,
    /// State.
    pub state: String,
    /// Attempts made.
    pub attempts: u32,
    /// When it was committed, unix ms.
    pub created_ms: i64,
    /// Next attempt, unix ms (pending).
    pub next_ms: i64,
    /// Last response status.
    pub last_status: Option<u16>,
    /// Last error.
    pub last_error: Option<String>,
    /// Last response body (start of).
    pub last_response: Option<String>,
    /// The request (for `show`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<Request>,
    /// Every attempt, oldest first (for `show`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Attempt>,
}

/// One attempt of a delivery, as `show` lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Attempt {
    /// 1, 2, 3… (a retry from the command line starts again at 1).
    pub attempt: u32,
    /// When its outcome was recorded, unix ms.
    pub at_ms: i64,
    /// The response status, if a response came.
    pub status: Option<u16>,
    /// Why no response came.
    pub error: Option<String>,
    /// What the delivery became: delivered, retry, dead, parked.
    pub outcome: String,
}

/// A delivery as the command line names it: its row number (`rowid` in `list`) or its
/// `webhook-id` (`msg_…`, as the logs and the receiver's `webhook-id` header show it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryRef {
    /// The row number.
    Row(i64),
    /// The `webhook-id`.
    Msg(String),
}

impl std::str::FromStr for DeliveryRef {
    type Err = String;

    fn from_str(s: &str) -> Result<DeliveryRef, String> {
        let s = s.trim();
        if let Ok(n) = s.parse::<i64>() {
            return Ok(DeliveryRef::Row(n));
        }
        if s.starts_with("msg_") && s.len() > 4 {
            return Ok(DeliveryRef::Msg(s.to_owned()));
        }
        Err(format!(
            "{s:?}: a row number (from `list`) or a webhook-id (msg_...)"
        ))
    }
}

impl std::fmt::Display for DeliveryRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeliveryRef::Row(n) => write!(f, "{n}"),
            DeliveryRef::Msg(m) => f.write_str(m),
        }
    }
}

impl DeliveryRef {
    /// The row number and the webhook-id to match (one of them matches nothing).
    fn keys(&self) -> (i64, &str) {
        match self {
            DeliveryRef::Row(n) => (*n, ""),
            DeliveryRef::Msg(m) => (-1, m.as_str()),
        }
    }
}

/// The outbox could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite said no.
    #[error("outbox {path}: {source}")]
    Sqlite {
        /// The database file.
        path: String,
        /// The error.
        #[source]
        source: rusqlite::Error,
    },
    /// A backup would overwrite a file.
    #[error("{path} exists already: back up to a new file")]
    BackupExists {
        /// The file named.
        path: String,
    },
    /// The transaction this operation was batched into could not begin or commit.
    #[error("outbox {path}: the transaction failed: {message}")]
    Batch {
        /// The database file.
        path: String,
        /// SQLite's message.
        message: String,
    },
    /// The writer thread is gone (the process is shutting down).
    #[error("the outbox writer has stopped")]
    Closed,
    /// The outbox was written by a newer switchhook: its schema is ahead of this binary's.
    #[error("outbox {path}: schema version {found} is newer than this switchhook's ({known}): run the newer version, or restore a backup")]
    Newer {
        /// The database file.
        path: String,
        /// The schema version found.
        found: i64,
        /// The newest this binary knows.
        known: i64,
    },
    /// The schema could not be brought up to date.
    #[error("outbox {path}: schema upgrade failed: {message}")]
    Migration {
        /// The database file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// Version 1: the outbox as first shipped (written with `IF NOT EXISTS`, so an outbox of
/// that time, which carries no version, is taken up as version 1).
const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS deliveries (
    rowid_ INTEGER PRIMARY KEY,
    msg_id TEXT NOT NULL UNIQUE,
    webhook TEXT NOT NULL,
    call_id TEXT NOT NULL,
    trig TEXT NOT NULL,
    request TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL,
    next_ms INTEGER NOT NULL,
    done_ms INTEGER,
    last_status INTEGER,
    last_error TEXT,
    last_response TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_open ON deliveries(state) WHERE state IN ('pending', 'parked');
CREATE INDEX IF NOT EXISTS deliveries_call ON deliveries(call_id);
CREATE TABLE IF NOT EXISTS dead_letters (
    rowid_ INTEGER PRIMARY KEY REFERENCES deliveries(rowid_) ON DELETE CASCADE,
    at_ms INTEGER NOT NULL,
    status INTEGER,
    error TEXT,
    response TEXT
);
CREATE TABLE IF NOT EXISTS webhook_state (
    name TEXT PRIMARY KEY,
    disabled INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    since_ms INTEGER
);
CREATE TABLE IF NOT EXISTS meta (
    k TEXT PRIMARY KEY,
    v INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (k, v) VALUES ('generation', 0);
";

/// Version 2: every attempt of a delivery, not only the last.
const SCHEMA_V2: &str = "
CREATE TABLE attempts (
    id INTEGER PRIMARY KEY,
    rowid_ INTEGER NOT NULL REFERENCES deliveries(rowid_) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    status INTEGER,
    error TEXT,
    outcome TEXT NOT NULL
);
CREATE INDEX attempts_delivery ON attempts(rowid_);
";

/// Version 3: the rows per state, kept by triggers as they change, so a probe or a scrape
/// reads a handful of rows instead of counting the whole table.
const SCHEMA_V3: &str = "
CREATE TABLE state_counts (state TEXT PRIMARY KEY, n INTEGER NOT NULL);
INSERT INTO state_counts (state, n) SELECT state, COUNT(*) FROM deliveries GROUP BY state;
CREATE TRIGGER deliveries_count_insert AFTER INSERT ON deliveries BEGIN
    INSERT INTO state_counts (state, n) VALUES (NEW.state, 1)
        ON CONFLICT(state) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER deliveries_count_delete AFTER DELETE ON deliveries BEGIN
    UPDATE state_counts SET n = n - 1 WHERE state = OLD.state;
END;
CREATE TRIGGER deliveries_count_update AFTER UPDATE OF state ON deliveries
WHEN OLD.state != NEW.state BEGIN
    UPDATE state_counts SET n = n - 1 WHERE state = OLD.state;
    INSERT INTO state_counts (state, n) VALUES (NEW.state, 1)
        ON CONFLICT(state) DO UPDATE SET n = n + 1;
END;
";

/// Version 4: finished calls' records waiting for the PostgreSQL call store, in order.
const SCHEMA_V4: &str = "
CREATE TABLE call_store_queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id TEXT NOT NULL,
    row_json TEXT NOT NULL,
    queued_ms INTEGER NOT NULL
);
";

/// Version 5: what each moment gave its webhooks to render, once per moment, so a delivery
/// can be rendered again under a later configuration (`deliveries retry --render`).
const SCHEMA_V5: &str = "
CREATE TABLE moments (
    call_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (call_id, seq)
) WITHOUT ROWID;
";

/// Version 6: messages waiting for NATS JetStream, in order.
const SCHEMA_V6: &str = "
CREATE TABLE bus_queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    msg_id TEXT NOT NULL,
    message_json TEXT NOT NULL,
    queued_ms INTEGER NOT NULL
);
";

/// The outbox's schema versions, in order (SQLite's `user_version` holds the applied one).
fn migrations() -> rusqlite_migration::Migrations<'static> {
    use rusqlite_migration::M;
    rusqlite_migration::Migrations::new(vec![
        M::up(SCHEMA_V1),
        M::up(SCHEMA_V2),
        M::up(SCHEMA_V3),
        M::up(SCHEMA_V4),
        M::up(SCHEMA_V5),
        M::up(SCHEMA_V6),
    ])
}

/// The newest schema version this binary writes.
pub(crate) const SCHEMA_VERSION: i64 = 6;

/// Opens (creating if needed) the database at `path` with the outbox's settings.
pub(crate) fn open(path: &Path) -> Result<Connection, StoreError> {
    let err = |source| StoreError::Sqlite {
        path: path.display().to_string(),
        source,
    };
    let mut conn = Connection::open(path).map_err(err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(err)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(err)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(err)?;
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(err)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::Newer {
            path: path.display().to_string(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    migrations()
        .to_latest(&mut conn)
        .map_err(|e| StoreError::Migration {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
    Ok(conn)
}

/// Unix time now, ms.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A pending delivery as a rescan lists it: where it belongs, not what it sends (its
/// request is read when it is next to go, so a long backlog costs no memory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRow {
    /// Row id (the commit order).
    pub rowid: i64,
    /// Its webhook.
    pub webhook: String,
    /// Its call.
    pub call_id: String,
}

/// What a rescan finds.
#[derive(Debug, Default)]
pub struct PendingSet {
    /// Pending deliveries in commit order.
    pub pending: Vec<PendingRow>,
    /// Disabled webhooks and why.
    pub disabled: Vec<(String, String)>,
    /// Enabled webhooks failing since (unix ms): the disable window survives a restart.
    pub failing_since: Vec<(String, i64)>,
}

/// A reply that waits for its batch's commit; it is told the commit's failure, if any.
type Deferred = Box<dyn FnOnce(Option<&StoreError>)>;

enum Op {
    Enqueue(Vec<(Request, bool)>, Reply<Vec<Stored>>),
    Record(i64, u32, AttemptRecord, After, Reply<()>),
    Disable(String, String, Reply<()>),
    Failing(String, Option<i64>),
    LoadPending(Reply<PendingSet>),
    Load(i64, Reply<Option<Stored>>),
    Generation(Reply<i64>),
    RequeueDead(String, Reply<usize>),
    Unfinished(Vec<String>, Reply<HashSet<String>>),
}

/// The outbox: a handle to the writer thread. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Op>,
    path: PathBuf,
}

impl Outbox {
    /// Opens the outbox at `path` and starts its writer thread.
    pub fn open(path: &Path) -> Result<Outbox, StoreError> {
        let conn = open(path)?;
        let (tx, rx) = mpsc::channel();
        let p = path.display().to_string();
        thread::Builder::new()
            .name("outbox-writer".into())
            .spawn(move || writer(conn, rx, p))
            .map_err(|_| StoreError::Closed)?;
        Ok(Outbox {
            tx,
            path: path.to_owned(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Op) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Commits new requests (`true`: its webhook is disabled, store it parked). Requests
    /// whose `webhook-id` is already stored (a restart re-seeing a call) are skipped; the
    /// rows actually added come back in commit order.
    pub async fn enqueue(&self, requests: Vec<(Request, bool)>) -> Result<Vec<Stored>, StoreError> {
        self.ask(|r| Op::Enqueue(requests, r)).await
    }

    /// Records attempt number `attempt` of delivery `rowid` and what follows it.
    pub async fn record(
        &self,
        rowid: i64,
        attempt: u32,
        rec: AttemptRecord,
        after: After,
    ) -> Result<(), StoreError> {
        self.ask(|r| Op::Record(rowid, attempt, rec, after, r))
            .await
    }

    /// Disables a webhook and parks its pending deliveries.
    pub async fn disable(&self, webhook: &str, reason: &str) -> Result<(), StoreError> {
        self.ask(|r| Op::Disable(webhook.to_owned(), reason.to_owned(), r))
            .await
    }

    /// Notes since when a webhook has been failing (`None`: it succeeded).
    pub fn set_failing(&self, webhook: &str, since_ms: Option<i64>) {
        let _ = self.tx.send(Op::Failing(webhook.to_owned(), since_ms));
    }

    /// Queues a webhook's dead letters again (they go out in commit order with its pending
    /// deliveries once rescanned); how many.
    pub async fn requeue_dead(&self, webhook: &str) -> Result<usize, StoreError> {
        let name = webhook.to_owned();
        self.ask(|r| Op::RequeueDead(name, r)).await
    }

    /// Every pending delivery in commit order, and the disabled webhooks with their reasons.
    pub async fn load_pending(&self) -> Result<PendingSet, StoreError> {
        self.ask(Op::LoadPending).await
    }

    /// Delivery `rowid` with its request, if it is still pending.
    pub async fn load(&self, rowid: i64) -> Result<Option<Stored>, StoreError> {
        self.ask(|r| Op::Load(rowid, r)).await
    }

    /// Which of these `webhook-id`s are still pending (not yet delivered, dead or parked).
    pub async fn unfinished(&self, ids: Vec<String>) -> Result<HashSet<String>, StoreError> {
        self.ask(|r| Op::Unfinished(ids, r)).await
    }

    /// A counter other processes (`switchhook deliveries …`) bump when they change the outbox.
    pub async fn generation(&self) -> Result<i64, StoreError> {
        self.ask(Op::Generation).await
    }
}

fn writer(mut conn: Connection, rx: mpsc::Receiver<Op>, path: String) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < 4096 {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let batch_error = |e: rusqlite::Error| StoreError::Batch {
            path: path.clone(),
            message: e.to_string(),
        };
        let tx = match conn.transaction() {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, path, "outbox: cannot begin a transaction");
                let failure = batch_error(e);
                for op in batch {
                    op.fail(&failure);
                }
                continue;
            }
        };
        let mut replies: Vec<Deferred> = Vec::new();
        for op in batch {
            apply(&tx, op, &mut replies, &path);
        }
        let failure = tx.commit().err().map(batch_error);
        if let Some(e) = &failure {
            tracing::error!(error = %e, "outbox: commit failed");
        }
        for reply in replies {
            reply(failure.as_ref());
        }
    }
}

impl StoreError {
    /// A copy for another waiter (rusqlite's errors are not `Clone`).
    fn copy(&self) -> StoreError {
        match self {
            StoreError::Sqlite { path, source } => StoreError::Batch {
                path: path.clone(),
                message: source.to_string(),
            },
            StoreError::Batch { path, message } => StoreError::Batch {
                path: path.clone(),
                message: message.clone(),
            },
            StoreError::BackupExists { path } => StoreError::BackupExists { path: path.clone() },
            StoreError::Closed => StoreError::Closed,
            StoreError::Newer { path, found, known } => StoreError::Newer {
                path: path.clone(),
                found: *found,
                known: *known,
            },
            StoreError::Migration { path, message } => StoreError::Migration {
                path: path.clone(),
                message: message.clone(),
            },
        }
    }
}

impl Op {
    /// Answers the op with `e` without running it.
    fn fail(self, e: &StoreError) {
        match self {
            Op::Enqueue(_, r) => drop(r.send(Err(e.copy()))),
            Op::Record(.., r) => drop(r.send(Err(e.copy()))),
            Op::Disable(_, _, r) => drop(r.send(Err(e.copy()))),
            Op::LoadPending(r) => drop(r.send(Err(e.copy()))),
            Op::Load(_, r) => drop(r.send(Err(e.copy()))),
            Op::Generation(r) => drop(r.send(Err(e.copy()))),
            Op::RequeueDead(_, r) => drop(r.send(Err(e.copy()))),
            Op::Unfinished(_, r) => drop(r.send(Err(e.copy()))),
            Op::Failing(..) => {}
        }
    }
}

/// Runs one op inside the batch's transaction; its reply waits for the commit.
fn apply(tx: &rusqlite::Transaction<'_>, op: Op, replies: &mut Vec<Deferred>, path: &str) {
    let path = path.to_owned();
    let wrap = move |e: rusqlite::Error| StoreError::Sqlite {
        path: path.clone(),
        source: e,
    };
    macro_rules! later {
        ($reply:expr, $value:expr) => {{
            let value = atomically(tx, || $value).map_err(&wrap);
            replies.push(Box::new(move |failed: Option<&StoreError>| {
                let _ = $reply.send(match failed {
                    Some(e) => Err(e.copy()),
                    None => value,
                });
            }));
        }};
    }
    match op {
        Op::Enqueue(reqs, reply) => later!(reply, enqueue(tx, reqs)),
        Op::Record(rowid, attempt, rec, after, reply) => {
            later!(reply, record(tx, rowid, attempt, &rec, after))
        }
        Op::Disable(name, reason, reply) => later!(reply, disable(tx, &name, &reason)),
        Op::RequeueDead(name, reply) => later!(
            reply,
            tx.execute(
                "UPDATE deliveries SET state = 'pending', attempts = 0, next_ms = ?2, done_ms = NULL
                 WHERE webhook = ?1 AND state = 'dead'",
                params![name, now_ms()],
            )
        ),
        Op::Failing(name, since) => {
            if let Err(e) = tx.execute(
                "INSERT INTO webhook_state (name, since_ms) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET since_ms = ?2",
                params![name, since],
            ) {
                tracing::warn!(error = %e, "outbox: cannot note a failing webhook");
            }
        }
        Op::LoadPending(reply) => later!(reply, load_pending(tx)),
        Op::Unfinished(ids, reply) => later!(reply, unfinished(tx, ids)),
        Op::Load(rowid, reply) => later!(reply, load_one(tx, rowid)),
        Op::Generation(reply) => later!(
            reply,
            tx.query_row("SELECT v FROM meta WHERE k = 'generation'", [], |r| r
                .get(0))
        ),
    }
}

/// Runs one op all or nothing inside the batch's transaction: an op that fails halfway (a
/// full disk after some of its rows) leaves none of its writes behind, so its reply (an
/// error, and the op is tried again) matches what the commit keeps.
fn atomically<T>(
    tx: &rusqlite::Transaction<'_>,
    op: impl FnOnce() -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    tx.execute_batch("SAVEPOINT op")?;
    let value = op();
    match &value {
        Ok(_) => tx.execute_batch("RELEASE op")?,
        Err(_) => {
            let _ = tx.execute_batch("ROLLBACK TO op; RELEASE op");
        }
    }
    value
}

fn enqueue(
    tx: &rusqlite::Transaction<'_>,
    reqs: Vec<(Request, bool)>,
) -> rusqlite::Result<Vec<Stored>> {
    let now = now_ms();
    let mut out = Vec::new();
    let mut stmt = tx.prepare_cached(
        "INSERT OR IGNORE INTO deliveries (msg_id, webhook, call_id, trig, request, state, created_ms, next_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
    )?;
    let mut keep_moment = tx
        .prepare_cached("INSERT OR IGNORE INTO moments (call_id, seq, data) VALUES (?1, ?2, ?3)")?;
    // The moment last kept: a moment's requests come together, so it is written once.
    let mut kept: Option<(String, u32)> = None;
    for (mut req, parked) in reqs {
        let moment = req.moment.take();
        let json = serde_json::to_string(&req).unwrap_or_default();
        let state = if parked {
            State::Parked
        } else {
            State::Pending
        };
        let n = stmt.execute(params![
            req.id,
            req.webhook,
            req.call_id,
            req.trigger,
            json,
            state.as_str(),
            now
        ])?;
        let rowid = tx.last_insert_rowid();
        if n == 1 {
            let key = (req.call_id.clone(), req.seq);
            if let Some(m) = moment.filter(|_| kept.as_ref() != Some(&key)) {
                let data = serde_json::to_string(&*m).unwrap_or_default();
                keep_moment.execute(params![key.0, key.1, data])?;
                kept = Some(key);
            }
        }
        if n == 1 && !parked {
            out.push(Stored {
                rowid,
                request: req,
                attempts: 0,
                next_ms: now,
            });
        }
    }
    Ok(out)
}

fn record(
    tx: &rusqlite::Transaction<'_>,
    rowid: i64,
    attempt: u32,
    rec: &AttemptRecord,
    after: After,
) -> rusqlite::Result<()> {
    let now = now_ms();
    let (state, next, done) = match after {
        After::Delivered => (State::Delivered, now, Some(now)),
        After::RetryAt(at) => (State::Pending, at, None),
        After::Dead => (State::Dead, now, Some(now)),
        After::Parked => (State::Parked, now, None),
    };
    tx.prepare_cached(
        "UPDATE deliveries SET state = ?2, attempts = ?3, next_ms = ?4, done_ms = ?5,
         last_status = ?6, last_error = ?7, last_response = ?8 WHERE rowid_ = ?1",
    )?
    .execute(params![
        rowid,
        state.as_str(),
        attempt,
        next,
        done,
        rec.status,
        rec.error,
        rec.response
    ])?;
    let outcome = match after {
        After::Delivered => "delivered",
        After::RetryAt(_) => "retry",
        After::Dead => "dead",
        After::Parked => "parked",
    };
    tx.prepare_cached(
        "INSERT INTO attempts (rowid_, attempt, at_ms, status, error, outcome) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![rowid, attempt, now, rec.status, rec.error, outcome])?;
    if after == After::Dead {
        tx.prepare_cached(
            "INSERT OR REPLACE INTO dead_letters (rowid_, at_ms, status, error, response) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![rowid, now, rec.status, rec.error, rec.response])?;
    }
    Ok(())
}

fn disable(tx: &rusqlite::Transaction<'_>, name: &str, reason: &str) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO webhook_state (name, disabled, reason) VALUES (?1, 1, ?2)
         ON CONFLICT(name) DO UPDATE SET disabled = 1, reason = ?2",
        params![name, reason],
    )?;
    tx.execute(
        "UPDATE deliveries SET state = 'parked' WHERE webhook = ?1 AND state = 'pending'",
        params![name],
    )?;
    Ok(())
}

fn parse_stored(rowid: i64, json: &str, attempts: u32, next_ms: i64) -> Option<Stored> {
    match serde_json::from_str::<Request>(json) {
        Ok(request) => Some(Stored {
            rowid,
            request,
            attempts,
            next_ms,
        }),
        Err(e) => {
            tracing::error!(rowid, error = %e, "outbox: unreadable stored request, skipped");
            None
        }
    }
}

fn load_one(tx: &rusqlite::Transaction<'_>, rowid: i64) -> rusqlite::Result<Option<Stored>> {
    let row = tx
        .query_row(
            "SELECT request, attempts, next_ms FROM deliveries WHERE rowid_ = ?1 AND state = 'pending'",
            params![rowid],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, u32>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            },
        )
        .optional()?;
    Ok(row.and_then(|(json, a, n)| parse_stored(rowid, &json, a, n)))
}

fn unfinished(
    tx: &rusqlite::Transaction<'_>,
    ids: Vec<String>,
) -> rusqlite::Result<HashSet<String>> {
    let mut stmt =
        tx.prepare_cached("SELECT 1 FROM deliveries WHERE msg_id = ?1 AND state = 'pending'")?;
    let mut out = HashSet::new();
    for id in ids {
        if stmt.exists(params![id])? {
            out.insert(id);
        }
    }
    Ok(out)
}

fn load_pending(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<PendingSet> {
    let mut stmt = tx.prepare(
        "SELECT rowid_, webhook, call_id FROM deliveries WHERE state = 'pending' ORDER BY rowid_",
    )?;
    let pending = stmt
        .query_map([], |r| {
            Ok(PendingRow {
                rowid: r.get(0)?,
                webhook: r.get(1)?,
                call_id: r.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut stmt =
        tx.prepare("SELECT name, COALESCE(reason, '') FROM webhook_state WHERE disabled = 1")?;
    let disabled = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut stmt = tx.prepare(
        "SELECT name, since_ms FROM webhook_state WHERE disabled = 0 AND since_ms IS NOT NULL",
    )?;
    let failing_since = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(PendingSet {
        pending,
        disabled,
        failing_since,
    })
}

/// The `switchhook deliveries` commands: direct access from another process while the
/// service runs (SQLite's locking keeps both consistent). Each change bumps the generation
/// counter, which the running service polls to pick it up.
pub struct Admin {
    conn: Connection,
}

/// What [`Admin::retry_rendered`] did.
#[derive(Debug, Default)]
pub struct Rerendered {
    /// Rendered again and queued.
    pub queued: usize,
    /// Left as they were: the delivery's number and why.
    pub left: Vec<(i64, String)>,
}

/// Where announcing dead letters has got to: a dead letter's time and number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct DeadCursor {
    /// When it died, ms since the epoch.
    pub at_ms: i64,
    /// The delivery's number.
    pub rowid: i64,
}

/// A dead letter as a fleet announces it: what it was and why it died, without its URL,
/// headers or body.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Its place among the dead letters.
    pub cursor: DeadCursor,
    /// The `webhook-id`.
    pub id: String,
    /// The webhook.
    pub webhook: String,
    /// The trigger.
    pub trigger: String,
    /// The call.
    pub call_id: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last answer's status, if any.
    pub status: Option<u16>,
    /// The last error, if any.
    pub error: Option<String>,
    /// The call's tenant, when the moment is still kept (else empty).
    pub tenant: String,
}

/// What `deliveries list` selects.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this state.
    pub state: Option<State>,
    /// Only this webhook.
    pub webhook: Option<String>,
    /// Only this call.
    pub call_id: Option<String>,
    /// At most this many (newest first).
    pub limit: usize,
}

impl Admin {
    /// Opens the outbox at `path`.
    pub fn open(path: &Path) -> Result<Admin, StoreError> {
        Ok(Admin { conn: open(path)? })
    }

    fn err(&self, e: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.conn.path().unwrap_or_default().to_owned(),
            source: e,
        }
    }

    fn bump(&self) -> Result<(), StoreError> {
        self.conn
            .execute("UPDATE meta SET v = v + 1 WHERE k = 'generation'", [])
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Deliveries, newest first.
    pub fn list(&self, f: &ListFilter) -> Result<Vec<Row>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT rowid_, msg_id, webhook, trig, call_id, state, attempts, created_ms, next_ms,
                 last_status, last_error, last_response FROM deliveries
                 WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR webhook = ?2) AND (?3 IS NULL OR call_id = ?3)
                 ORDER BY rowid_ DESC LIMIT ?4",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(
                params![
                    f.state.map(State::as_str),
                    f.webhook,
                    f.call_id,
                    if f.limit == 0 { -1 } else { f.limit as i64 }
                ],
                row,
            )
            .and_then(|r| r.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// One delivery, with its request.
    pub fn show(&self, which: &DeliveryRef) -> Result<Option<Row>, StoreError> {
        let (rowid, msg_id) = which.keys();
        let found = self
            .conn
            .query_row(
                "SELECT rowid_, msg_id, webhook, trig, call_id, state, attempts, created_ms, next_ms,
                 last_status, last_error, last_response, request FROM deliveries
                 WHERE rowid_ = ?1 OR msg_id = ?2",
                params![rowid, msg_id],
                |r| {
                    let mut out = row(r)?;
                    let json: String = r.get(12)?;
                    out.request = serde_json::from_str(&json).ok();
                    Ok(out)
                },
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let Some(mut found) = found else {
            return Ok(None);
        };
        let mut q = self
            .conn
            .prepare(
                "SELECT attempt, at_ms, status, error, outcome FROM attempts WHERE rowid_ = ?1 ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        found.history = q
            .query_map(params![found.rowid], |r| {
                Ok(Attempt {
                    attempt: r.get(0)?,
                    at_ms: r.get(1)?,
                    status: r.get(2)?,
                    error: r.get(3)?,
                    outcome: r.get(4)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.err(e))?;
        Ok(Some(found))
    }

    /// Sends deliveries again: one (any state but pending), or every dead one of a webhook
    /// (or of all). Returns how many were queued.
    pub fn retry(
        &self,
        which: Option<&DeliveryRef>,
        webhook: Option<&str>,
    ) -> Result<usize, StoreError> {
        let now = now_ms();
        let n = match which.map(DeliveryRef::keys) {
            Some((rowid, msg_id)) => self.conn.execute(
                "UPDATE deliveries SET state = 'pending', attempts = 0, next_ms = ?3, done_ms = NULL
                 WHERE (rowid_ = ?1 OR msg_id = ?2) AND state != 'pending'",
                params![rowid, msg_id, now],
            ),
            None => self.conn.execute(
                "UPDATE deliveries SET state = 'pending', attempts = 0, next_ms = ?2, done_ms = NULL
                 WHERE state = 'dead' AND (?1 IS NULL OR webhook = ?1)",
                params![webhook, now],
            ),
        }
        .map_err(|e| self.err(e))?;
        self.bump()?;
        Ok(n)
    }

    /// Like [`Admin::retry`], but each delivery is first rendered again from the moment it
    /// was made of, by the webhook of that name in `hooks` (the configuration of today: a
    /// corrected URL, template or header). A delivery that cannot be rendered again is left
    /// as it was and said why.
    pub fn retry_rendered(
        &self,
        which: Option<&DeliveryRef>,
        webhook: Option<&str>,
        hooks: &WebhookSet,
    ) -> Result<Rerendered, StoreError> {
        let tx = self.conn.unchecked_transaction().map_err(|e| self.err(e))?;
        let (rowid, msg_id) = which.map_or((-1, ""), DeliveryRef::keys);
        let candidates = tx
            .prepare(
                "SELECT rowid_, webhook, request FROM deliveries WHERE
                 CASE WHEN ?1 THEN (rowid_ = ?2 OR msg_id = ?3) AND state != 'pending'
                 ELSE state = 'dead' AND (?4 IS NULL OR webhook = ?4) END
                 ORDER BY rowid_",
            )
            .and_then(|mut stmt| {
                stmt.query_map(params![which.is_some(), rowid, msg_id, webhook], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(|e| self.err(e))?;
        let mut done = Rerendered::default();
        let now = now_ms();
        for (rowid, name, json) in candidates {
            let moment = serde_json::from_str::<Request>(&json)
                .ok()
                .map(|old| {
                    tx.query_row(
                        "SELECT data FROM moments WHERE call_id = ?1 AND seq = ?2",
                        params![old.call_id, old.seq],
                        |r| r.get::<_, String>(0),
                    )
                    .optional()
                })
                .transpose()
                .map_err(|e| self.err(e))?
                .flatten()
                .and_then(|data| serde_json::from_str::<MomentData>(&data).ok());
            let rendered = match (hooks.get(&name), moment) {
                (None, _) => Err(format!("webhook {name:?} is not in the configuration")),
                (_, None) => Err(
                    "the moment it was made of was not kept (queued by an older switchhook)".into(),
                ),
                (Some(hook), Some(m)) => hook.request(&Arc::new(m)).ok_or_else(|| {
                    format!(
                        "webhook {name:?} does not fire for it under the configuration \
                         (disabled, or its triggers, call types, numbers or filters leave it out)"
                    )
                }),
            };
            match rendered {
                Ok(mut req) => {
                    req.moment = None;
                    tx.execute(
                        "UPDATE deliveries SET request = ?2, state = 'pending', attempts = 0,
                         next_ms = ?3, done_ms = NULL WHERE rowid_ = ?1",
                        params![rowid, serde_json::to_string(&req).unwrap_or_default(), now],
                    )
                    .map_err(|e| self.err(e))?;
                    done.queued += 1;
                }
                Err(why) => done.left.push((rowid, why)),
            }
        }
        tx.commit().map_err(|e| self.err(e))?;
        self.bump()?;
        Ok(done)
    }

    /// Sends again what was delivered in a window of commit times (`since` ≤ created <
    /// `until`, unix ms), of one webhook or all, in commit order: a receiver that lost a
    /// stretch of data gets it again (it de-duplicates by `webhook-id` if it has some).
    /// Returns how many were queued.
    pub fn resend_delivered(
        &self,
        since_ms: i64,
        until_ms: i64,
        webhook: Option<&str>,
    ) -> Result<usize, StoreError> {
        let n = self
            .conn
            .execute(
                "UPDATE deliveries SET state = 'pending', attempts = 0, next_ms = ?4, done_ms = NULL
                 WHERE state = 'delivered' AND created_ms >= ?1 AND created_ms < ?2
                 AND (?3 IS NULL OR webhook = ?3)",
                params![since_ms, until_ms, webhook, now_ms()],
            )
            .map_err(|e| self.err(e))?;
        self.bump()?;
        Ok(n)
    }

    /// Enables a disabled webhook: its parked deliveries go back to pending, in order. None:
    /// the outbox has never heard of that webhook.
    pub fn enable(&self, webhook: &str) -> Result<Option<usize>, StoreError> {
        let known: bool = self
            .conn
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM webhook_state WHERE name = ?1)
                     OR EXISTS(SELECT 1 FROM deliveries WHERE webhook = ?1)",
                params![webhook],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        if !known {
            return Ok(None);
        }
        self.conn
            .execute(
                "UPDATE webhook_state SET disabled = 0, reason = NULL, since_ms = NULL WHERE name = ?1",
                params![webhook],
            )
            .map_err(|e| self.err(e))?;
        let n = self
            .conn
            .execute(
                "UPDATE deliveries SET state = 'pending', next_ms = ?2 WHERE webhook = ?1 AND state = 'parked'",
                params![webhook, now_ms()],
            )
            .map_err(|e| self.err(e))?;
        self.bump()?;
        Ok(Some(n))
    }

    /// Disabled webhooks and why.
    pub fn disabled(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.pairs(
            "SELECT name, COALESCE(reason, '') FROM webhook_state WHERE disabled = 1 ORDER BY name",
        )
    }

    /// Disables a webhook as the service does when it gives up on one: its pending
    /// deliveries are parked until it is enabled. For a fleet, where another worker gave up.
    pub fn disable(&self, webhook: &str, reason: &str) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction().map_err(|e| self.err(e))?;
        disable(&tx, webhook, reason).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        self.bump()
    }

    /// Webhooks failing (not disabled) and since when, ms.
    pub fn failing(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.pairs(
            "SELECT name, since_ms FROM webhook_state
             WHERE disabled = 0 AND since_ms IS NOT NULL ORDER BY name",
        )
    }

    /// Notes that a webhook has been failing since `since_ms` (elsewhere in a fleet), when
    /// that is earlier than what the outbox knows, so its disabling window counts from the
    /// first failure anywhere. False: nothing changed.
    pub fn failing_since(&self, webhook: &str, since_ms: i64) -> Result<bool, StoreError> {
        let n = self
            .conn
            .execute(
                "INSERT INTO webhook_state (name, since_ms) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET since_ms = ?2
                 WHERE disabled = 0 AND (since_ms IS NULL OR since_ms > ?2)",
                params![webhook, since_ms],
            )
            .map_err(|e| self.err(e))?;
        if n > 0 {
            self.bump()?;
        }
        Ok(n > 0)
    }

    /// Dead letters recorded after `after` (their time and number), oldest first, at most
    /// `limit`: what a fleet worker announces.
    pub fn dead_after(
        &self,
        after: DeadCursor,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT l.at_ms, d.rowid_, d.msg_id, d.webhook, d.trig, d.call_id, d.attempts,
                        l.status, l.error, COALESCE(json_extract(m.data, '$.tenant'), '')
                 FROM dead_letters l JOIN deliveries d ON d.rowid_ = l.rowid_
                 LEFT JOIN moments m ON m.call_id = d.call_id
                      AND m.seq = json_extract(d.request, '$.seq')
                 WHERE d.state = 'dead' AND (l.at_ms, l.rowid_) > (?1, ?2)
                 ORDER BY l.at_ms, l.rowid_ LIMIT ?3",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![after.at_ms, after.rowid, limit as i64], |r| {
                Ok(DeadLetter {
                    cursor: DeadCursor {
                        at_ms: r.get(0)?,
                        rowid: r.get(1)?,
                    },
                    id: r.get(2)?,
                    webhook: r.get(3)?,
                    trigger: r.get(4)?,
                    call_id: r.get(5)?,
                    attempts: r.get(6)?,
                    status: r.get(7)?,
                    error: r.get(8)?,
                    tenant: r.get(9)?,
                })
            })
            .and_then(|r| r.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// How far dead letters have been announced (kept in the outbox across restarts).
    pub fn dead_announced(&self) -> Result<DeadCursor, StoreError> {
        let get = |k: &str| {
            self.conn
                .query_row("SELECT v FROM meta WHERE k = ?1", params![k], |r| r.get(0))
                .optional()
                .map(Option::unwrap_or_default)
                .map_err(|e| self.err(e))
        };
        Ok(DeadCursor {
            at_ms: get("dead_announced_ms")?,
            rowid: get("dead_announced_row")?,
        })
    }

    /// Notes that dead letters through `upto` have been announced.
    pub fn set_dead_announced(&self, upto: DeadCursor) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO meta (k, v) VALUES ('dead_announced_ms', ?1), ('dead_announced_row', ?2)
                 ON CONFLICT(k) DO UPDATE SET v = excluded.v",
                params![upto.at_ms, upto.rowid],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// The two-column rows of `sql`.
    fn pairs<B: rusqlite::types::FromSql>(
        &self,
        sql: &str,
    ) -> Result<Vec<(String, B)>, StoreError> {
        let mut stmt = self.conn.prepare(sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|r| r.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// Deletes finished deliveries (delivered and/or dead) older than `older_than_ms`.
    pub fn purge(&self, states: &[State], older_than_ms: i64) -> Result<usize, StoreError> {
        let cutoff = now_ms() - older_than_ms;
        let mut n = 0;
        for s in states {
            if matches!(s, State::Pending | State::Parked) {
                continue;
            }
            n += self
                .conn
                .execute(
                    "DELETE FROM deliveries WHERE state = ?1 AND COALESCE(done_ms, created_ms) <= ?2",
                    params![s.as_str(), cutoff],
                )
                .map_err(|e| self.err(e))?;
        }
        // A moment is kept while a delivery of its call is.
        self.conn
            .execute(
                "DELETE FROM moments WHERE NOT EXISTS
                 (SELECT 1 FROM deliveries d WHERE d.call_id = moments.call_id)",
                [],
            )
            .map_err(|e| self.err(e))?;
        self.bump()?;
        Ok(n)
    }

    /// Writes a consistent copy of the outbox to `to` (a new file), also while `run` is
    /// writing to it: SQLite's `VACUUM INTO` reads one snapshot.
    pub fn backup(&self, to: &Path) -> Result<(), StoreError> {
        if to.exists() {
            return Err(StoreError::BackupExists {
                path: to.display().to_string(),
            });
        }
        let target = to.to_string_lossy();
        self.conn
            .execute("VACUUM INTO ?1", params![target.as_ref()])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Counts by state (kept as rows change: no scan).
    pub fn counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.pairs("SELECT state, n FROM state_counts WHERE n > 0 ORDER BY state")
    }

    /// Opens the outbox at `path` to read only (a probe, a scrape): it is never created,
    /// upgraded or written, and the writer is not held up.
    pub fn open_read_only(path: &Path) -> Result<Admin, StoreError> {
        let err = |source| StoreError::Sqlite {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(2))
            .map_err(err)?;
        Ok(Admin { conn })
    }
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        rowid: r.get(0)?,
        id: r.get(1)?,
        webhook: r.get(2)?,
        trigger: r.get(3)?,
        call_id: r.get(4)?,
        state: r.get(5)?,
        attempts: r.get(6)?,
        created_ms: r.get(7)?,
        next_ms: r.get(8)?,
        last_status: r.get(9)?,
        last_error: r.get(10)?,
        last_response: r.get(11)?,
        request: None,
        history: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outbox_of_the_first_version_is_upgraded_and_a_newer_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.db");
        // An outbox as the first version wrote it: that schema, no version, a delivery.
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA_V1).unwrap();
            conn.execute(
                "INSERT INTO deliveries (msg_id, webhook, call_id, trig, request, state, created_ms, next_ms)
                 VALUES ('msg_1', 'crm', 'c1', 'call.hangup', '{}', 'dead', 1, 1)",
                [],
            )
            .unwrap();
        }
        let conn = open(&path).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let kept: String = conn
            .query_row("SELECT msg_id FROM deliveries", [], |r| r.get(0))
            .unwrap();
        assert_eq!(kept, "msg_1");
        conn.execute(
            "INSERT INTO attempts (rowid_, attempt, at_ms, outcome) VALUES (1, 1, 2, 'dead')",
            [],
        )
        .unwrap();
        drop(conn);
        // Opening again changes nothing.
        assert!(open(&path).is_ok());
        // An outbox from a newer switchhook is refused, not written to.
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = open(&path).unwrap_err();
        assert!(matches!(err, StoreError::Newer { found: 99, .. }), "{err}");
        assert!(
            err.to_string().contains("schema version 99 is newer"),
            "{err}"
        );
    }

    #[test]
    fn the_counts_follow_every_change_and_a_probe_only_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.db");
        let conn = open(&path).unwrap();
        for (i, state) in ["pending", "pending", "dead", "delivered"]
            .iter()
            .enumerate()
        {
            conn.execute(
                "INSERT INTO deliveries (msg_id, webhook, call_id, trig, request, state, created_ms, next_ms)
                 VALUES (?1, 'crm', 'c1', 'call.hangup', '{}', ?2, 1, 1)",
                params![format!("msg_{i}"), state],
            )
            .unwrap();
        }
        conn.execute(
            "UPDATE deliveries SET state = 'delivered' WHERE msg_id = 'msg_0'",
            [],
        )
        .unwrap();
        conn.execute(
            "UPDATE deliveries SET attempts = 2 WHERE msg_id = 'msg_1'",
            [],
        )
        .unwrap();
        conn.execute("DELETE FROM deliveries WHERE state = 'dead'", [])
            .unwrap();
        let admin = Admin::open_read_only(&path).unwrap();
        let scanned = admin
            .pairs("SELECT state, COUNT(*) FROM deliveries GROUP BY state ORDER BY state")
            .unwrap();
        assert_eq!(admin.counts().unwrap(), scanned);
        assert_eq!(
            scanned,
            [("delivered".to_owned(), 2), ("pending".to_owned(), 1)]
        );
        // A probe cannot write, and does not create an outbox that is not there.
        assert!(admin.conn.execute("DELETE FROM deliveries", []).is_err());
        let missing = dir.path().join("missing.db");
        assert!(Admin::open_read_only(&missing).is_err());
        assert!(!missing.exists());
    }

    /// A request of the example webhook for moment `seq` of call c1.
    fn example_request(seq: u32, moment: Option<MomentData>) -> Request {
        Request {
            id: format!("msg_{seq}"),
            webhook: "example".into(),
            trigger: "call.hangup".into(),
            call_id: "c1".into(),
            seq,
            method: "POST".into(),
            url: "http://127.0.0.1:1/as-first-made".into(),
            headers: vec![],
            body: "{}".into(),
            signed: false,
            max_attempts: 1,
            schedule: Default::default(),
            timeout_ms: 1000,
            at_us: 0,
            moment: moment.map(Arc::new),
            moment_bytes: 0,
        }
    }

    #[test]
    fn a_moment_is_kept_once_rendered_again_from_and_purged_with_its_call() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.db");
        let mut conn = open(&path).unwrap();
        let mut fields = serde_json::Map::new();
        fields.insert("trigger".into(), "call.hangup".into());
        let data = MomentData {
            trigger: crate::session::Trigger::parse("call.hangup").unwrap(),
            call_id: "c1".into(),
            seq: 1,
            at_us: 0,
            ended: true,
            kind: Default::default(),
            tenant: String::new(),
            times: Default::default(),
            detail: Default::default(),
            fields,
        };
        let mut twin = example_request(1, Some(data.clone()));
        twin.id = "msg_1b".into();
        twin.webhook = "other".into();
        let tx = conn.transaction().unwrap();
        // Two requests of moment 1, and one of moment 2 queued before moments were kept.
        let stored = enqueue(
            &tx,
            vec![
                (example_request(1, Some(data)), false),
                (twin, false),
                (example_request(2, None), false),
            ],
        )
        .unwrap();
        tx.commit().unwrap();
        assert!(
            stored.iter().all(|s| s.request.moment.is_none()),
            "not held past the commit"
        );
        let kept = |conn: &Connection| -> i64 {
            conn.query_row("SELECT COUNT(*) FROM moments", [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(kept(&conn), 1);
        conn.execute("UPDATE deliveries SET state = 'dead'", [])
            .unwrap();
        let admin = Admin::open(&path).unwrap();
        let done = admin
            .retry_rendered(None, Some("example"), &WebhookSet::example())
            .unwrap();
        assert_eq!(done.queued, 1);
        assert_eq!(done.left.len(), 1);
        assert!(done.left[0].1.contains("was not kept"), "{:?}", done.left);
        let (state, json): (String, String) = conn
            .query_row(
                "SELECT state, request FROM deliveries WHERE msg_id = 'msg_1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        let again: Request = serde_json::from_str(&json).unwrap();
        assert_eq!(state, "pending");
        assert_eq!(again.url, "http://127.0.0.1:8080/hooks/call.hangup");
        let hangup = crate::session::Trigger::parse("call.hangup").unwrap();
        assert_eq!(
            again.id,
            crate::hooks::webhook::message_id("example", "c1", hangup)
        );
        conn.execute("UPDATE deliveries SET state = 'dead'", [])
            .unwrap();
        admin.purge(&[State::Dead], 0).unwrap();
        assert_eq!(kept(&conn), 0, "purged with the last delivery of its call");
    }
}

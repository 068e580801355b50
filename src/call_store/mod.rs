//! The call store: every finished call's record, one row per call, in PostgreSQL, where
//! engineers ask it questions (missed calls per DID, ring time per group, who answered a
//! customer).
//!
//! A record goes first to a queue in the local outbox (the same SQLite file and durability
//! as webhooks), then in batches to PostgreSQL, in order; a row leaves the queue only once
//! PostgreSQL has committed it. Writes are upserts by call id, so a record written twice (a
//! kill between commit and dequeue, a replayed capture) leaves one row, and a partial record
//! completed later (a restart, a resync) updates it. Event processing never waits for
//! PostgreSQL: while it is down, records wait in the queue.

mod columns;
mod config;
mod database;
mod reports;

pub use config::CallStoreConfig;
pub(crate) use database::known_version;
pub use database::Database;
pub use database::DatabaseError;
pub use reports::Report;
pub(crate) use reports::{ListFilter, Table};

pub use columns::RowSource;

/// The row a record becomes (column name → value), as queued and as written.
pub fn row(record: &crate::session::CallRecord) -> serde_json::Value {
    columns::row(&RowSource::new(record))
}

/// The outbox table records wait in for PostgreSQL.
pub(crate) static QUEUE: crate::relay::Table = crate::relay::Table {
    name: "call_store_queue",
    key: "call_id",
    json: "row_json",
    items: "call records",
};

/// Opens the call store's queue in the outbox at `path` (what `run` hands finished records
/// to); `committed` is woken after each commit.
pub fn open_queue(
    path: &std::path::Path,
    committed: std::sync::Arc<tokio::sync::Notify>,
) -> Result<crate::relay::Queue<RowSource>, crate::hooks::StoreError> {
    crate::relay::Queue::open(path, &QUEUE, queued, committed)
}

/// A record as its queue keeps it: the call id and the row (made on the queue's thread).
pub(crate) fn queued(record: RowSource) -> (String, String) {
    (record.id().to_owned(), columns::row(&record).to_string())
}

/// The relay's destination: PostgreSQL as `[call_store]` names it.
pub(crate) struct Postgres(pub(crate) CallStoreConfig);

impl crate::relay::Sink for Postgres {
    type Conn = Database;
    type Error = DatabaseError;
    const NAME: &'static str = "call store";

    async fn connect(&self) -> Result<Database, DatabaseError> {
        Database::connect(&self.0).await
    }

    async fn write(
        &self,
        db: &mut Database,
        rows: &[serde_json::Value],
    ) -> Result<(), DatabaseError> {
        db.write(rows).await.map(|_| ())
    }

    fn is_transient(e: &DatabaseError) -> bool {
        e.is_transient()
    }
}

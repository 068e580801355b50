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
mod queue;
mod reports;
mod writer;

pub use config::CallStoreConfig;
pub(crate) use database::known_version;
pub use database::Database;
pub use database::DatabaseError;
pub use queue::Queue;
pub use reports::Report;
pub(crate) use reports::{ListFilter, Table};
pub(crate) use writer::{Drain, DrainStats};

pub use columns::RowSource;

/// The row a record becomes (column name → value), as queued and as written.
pub fn row(record: &crate::session::CallRecord) -> serde_json::Value {
    columns::row(&RowSource::new(record))
}

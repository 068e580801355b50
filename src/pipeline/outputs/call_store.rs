//! The call store: each finished call's record queued in the outbox, then written to
//! PostgreSQL by the drain.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::Notify;

use super::{Output, Shared};
use crate::call_store::{self, CallStoreConfig, Database, DatabaseError, Postgres, RowSource};
use crate::hooks::store::StoreConfig;
use crate::pipeline::StartError;
use crate::relay::{Drain, Queue};
use crate::session::CallRecord;

/// How long the drain gets at shutdown to write what is queued.
const FINISH: Duration = Duration::from_secs(5);

/// The queue and its drain.
pub(super) struct CallStore {
    queue: Queue<RowSource>,
    drain: Drain,
    /// Records refused because too many waited for the disk.
    refused: u64,
}

impl CallStore {
    /// Opens the queue in the outbox and starts the drain. PostgreSQL is asked once here: a
    /// schema newer than this binary stops the start; a server that does not answer is only
    /// logged (records wait in the queue). The live page starts from the latest calls.
    pub(super) async fn start(
        cfg: &CallStoreConfig,
        store: &StoreConfig,
        shared: &mut Shared,
    ) -> Result<CallStore, StartError> {
        let db = match Database::connect(cfg).await {
            Ok(db) => Some(db),
            Err(e @ (DatabaseError::Newer { .. } | DatabaseError::Settings(_))) => {
                return Err(StartError::CallStore(e))
            }
            Err(e) => {
                tracing::warn!(error = %e, "call store: not reachable at start; records wait in the outbox until it answers");
                None
            }
        };
        if let (Some(db), Some(live), true) = (&db, &shared.live, cfg.live_history) {
            match db.latest(crate::admin::live::FINISHED as i64).await {
                Ok(calls) => live.history(calls.iter().rev().filter_map(|c| c.to_line())),
                Err(e) => {
                    tracing::warn!(error = %e, "call store: cannot read the latest calls for the live page")
                }
            }
        }
        let wake = Arc::new(Notify::new());
        let queue = Queue::open(
            &store.path,
            &call_store::QUEUE,
            call_store::queued,
            Arc::clone(&wake),
        )
        .map_err(StartError::Outbox)?;
        let sink = Postgres(cfg.clone());
        let drain = Drain::start(
            sink,
            cfg.batch_max,
            &store.path,
            &call_store::QUEUE,
            db,
            wake,
        )
        .map_err(StartError::Outbox)?;
        shared.call_store = Some(Arc::clone(drain.stats()));
        Ok(CallStore {
            queue,
            drain,
            refused: 0,
        })
    }
}

impl Output for CallStore {
    fn finished(&mut self, record: &CallRecord) {
        // A copy of what the row is made of: the row itself is made on the queue's thread.
        if !self.queue.push(RowSource::new(record)) {
            self.refused += 1;
            tracing::error!(call_id = %record.cdr.id, refused = self.refused, "call store: the queue cannot take the record (the outbox's disk is failing); it is in this log's CDR line only");
        }
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        let CallStore { queue, drain, .. } = *self;
        Box::pin(crate::relay::close(queue, drain, FINISH))
    }
}

//! Publishing as `run` does: moments and finished records in, queued in the outbox, and
//! published to JetStream by the relay's drain.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::config::NatsConfig;
use super::jetstream::JetStream;
use super::message::{queued, Message, QUEUE};
use crate::hooks::moment_data::LazyData;
use crate::hooks::StoreError;
use crate::relay::{Drain, DrainStats, Queue};
use crate::session::{CallRecord, Moment};

/// The outbox's queue for the bus and its drain.
pub struct Publisher {
    cfg: NatsConfig,
    queue: Queue<Message>,
    drain: Drain,
}

impl Publisher {
    /// Opens the queue in the outbox at `outbox` and starts publishing what it holds; NATS is
    /// reached by the drain (messages wait in the outbox until it answers).
    pub fn start(cfg: &NatsConfig, outbox: &Path) -> Result<Publisher, StoreError> {
        let wake = Arc::new(Notify::new());
        let queue = Queue::open(outbox, &QUEUE, queued, Arc::clone(&wake))?;
        let drain = Drain::start(
            JetStream(cfg.clone()),
            cfg.batch_max,
            outbox,
            &QUEUE,
            None,
            wake,
        )?;
        Ok(Publisher {
            cfg: cfg.clone(),
            queue,
            drain,
        })
    }

    /// Queues a lifecycle moment; false when the outbox cannot take it (its disk is failing
    /// and too many wait already).
    pub fn moment(&self, m: &Moment) -> bool {
        self.moment_with(m, &LazyData::default())
    }

    /// [`Publisher::moment`], with the moment's data made once for every user of it
    /// (`data` belongs to `m`).
    pub(crate) fn moment_with(&self, m: &Moment, data: &LazyData) -> bool {
        self.queue
            .push(Message::moment(&self.cfg, m, Arc::clone(data.get(m))))
    }

    /// Queues a finished call's CDR; false as for [`Publisher::moment`].
    pub fn finished(&self, record: &CallRecord) -> bool {
        self.queue.push(Message::cdr(&self.cfg, record))
    }

    /// The drain's figures.
    pub(crate) fn stats(&self) -> &Arc<DrainStats> {
        self.drain.stats()
    }

    /// Commits what was handed over, then publishes what NATS takes within `limit`; the
    /// rest stays queued for the next start.
    pub async fn close(self, limit: Duration) {
        crate::relay::close(self.queue, self.drain, limit).await;
    }
}

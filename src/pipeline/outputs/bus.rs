//! The bus: each moment and each finished call's CDR queued in the outbox, then published to
//! NATS JetStream by the drain.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::Notify;

use super::{Output, Shared};
use crate::bus::{self, JetStream, Message, NatsConfig};
use crate::hooks::store::StoreConfig;
use crate::pipeline::StartError;
use crate::relay::{Drain, Queue};
use crate::session::{CallRecord, Moment};

/// How long the drain gets at shutdown to publish what is queued.
const FINISH: Duration = Duration::from_secs(5);

/// The queue and its drain.
pub(super) struct Bus {
    cfg: NatsConfig,
    queue: Queue<Message>,
    drain: Drain,
    /// Messages refused because too many waited for the disk.
    refused: u64,
}

impl Bus {
    /// Opens the queue in the outbox and starts the drain; NATS itself is reached by the
    /// drain (messages wait in the outbox until it answers).
    pub(super) fn start(
        cfg: &NatsConfig,
        store: &StoreConfig,
        shared: &mut Shared,
    ) -> Result<Bus, StartError> {
        let wake = Arc::new(Notify::new());
        let queue = Queue::open(&store.path, &bus::QUEUE, bus::queued, Arc::clone(&wake))
            .map_err(StartError::Outbox)?;
        let sink = JetStream(cfg.clone());
        let drain = Drain::start(sink, cfg.batch_max, &store.path, &bus::QUEUE, None, wake)
            .map_err(StartError::Outbox)?;
        shared.bus = Some(Arc::clone(drain.stats()));
        Ok(Bus {
            cfg: cfg.clone(),
            queue,
            drain,
            refused: 0,
        })
    }

    fn push(&mut self, m: Message, call_id: &str) {
        if !self.queue.push(m) {
            self.refused += 1;
            tracing::error!(%call_id, refused = self.refused, "NATS: the queue cannot take the message (the outbox's disk is failing); it is not published");
        }
    }
}

impl Output for Bus {
    fn moments(&mut self, moments: &[Moment]) {
        for m in moments {
            let msg = Message::moment(&self.cfg, m);
            self.push(msg, &m.call_id);
        }
    }

    fn finished(&mut self, record: &CallRecord) {
        let msg = Message::cdr(&self.cfg, record);
        self.push(msg, &record.cdr.id);
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        let Bus { queue, drain, .. } = *self;
        Box::pin(crate::relay::close(queue, drain, FINISH))
    }
}

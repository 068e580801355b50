//! The bus: each moment and each finished call's CDR published to NATS JetStream through
//! the outbox.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::{Moments, Output, Shared};
use crate::bus::{NatsConfig, Publisher};
use crate::hooks::store::StoreConfig;
use crate::pipeline::StartError;
use crate::session::CallRecord;

/// How long the drain gets at shutdown to publish what is queued.
const FINISH: Duration = Duration::from_secs(5);

/// The publisher, and what it could not take.
pub(super) struct Bus {
    publisher: Publisher,
    /// Messages refused because too many waited for the disk.
    refused: u64,
}

impl Bus {
    /// Opens the queue in the outbox and starts publishing.
    pub(super) fn start(
        cfg: &NatsConfig,
        store: &StoreConfig,
        shared: &mut Shared,
    ) -> Result<Bus, StartError> {
        let publisher = Publisher::start(cfg, &store.path).map_err(StartError::Outbox)?;
        shared.bus = Some(Arc::clone(publisher.stats()));
        Ok(Bus {
            publisher,
            refused: 0,
        })
    }

    fn refused(&mut self, call_id: &str) {
        self.refused += 1;
        tracing::error!(%call_id, refused = self.refused, "NATS: the queue cannot take the message (the outbox's disk is failing); it is not published");
    }
}

impl Output for Bus {
    fn moments(&mut self, moments: &Moments<'_>) {
        for (m, data) in moments.iter() {
            if !self.publisher.moment_with(m, data) {
                self.refused(&m.call_id);
            }
        }
    }

    fn finished(&mut self, record: &CallRecord) {
        if !self.publisher.finished(record) {
            self.refused(&record.cdr.id);
        }
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(self.publisher.close(FINISH))
    }
}

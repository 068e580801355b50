//! Lifecycle webhooks: each moment becomes the requests its webhooks plan, committed to the
//! outbox and delivered; delivered rows past their keep time are pruned hourly.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::task::JoinHandle;

use super::{Moments, Output, Shared};
use crate::hooks::delivery::DeliveryOptions;
use crate::hooks::store::{Admin, State, StoreConfig};
use crate::hooks::{DeliveryQueue, Outbox, WebhookSet};
use crate::pipeline::{Compiled, StartError};

/// How often delivered requests past their keep time are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The outbox and its delivery queue.
pub(super) struct Webhooks {
    queue: DeliveryQueue,
    hooks: Arc<WebhookSet>,
    prune: JoinHandle<()>,
}

impl Webhooks {
    /// Opens the outbox (`[store]`) and starts delivering what it holds.
    pub(super) async fn start(
        store: &StoreConfig,
        compiled: &Compiled,
        shared: &mut Shared,
    ) -> Result<Webhooks, StartError> {
        let outbox = Outbox::open(&store.path).map_err(StartError::Outbox)?;
        let options = DeliveryOptions {
            hold_max_bytes: store.hold_max_bytes,
            pending_memory_bytes: store.pending_memory_bytes,
            ..DeliveryOptions::default()
        };
        let queue = DeliveryQueue::start(outbox, Arc::clone(&compiled.hooks), options)
            .await
            .map_err(StartError::Outbox)?;
        shared.delivery = queue.shared_stats();
        let prune = tokio::spawn(prune_delivered(store.path.clone(), store.keep_delivered));
        Ok(Webhooks {
            queue,
            hooks: Arc::clone(&compiled.hooks),
            prune,
        })
    }
}

impl Output for Webhooks {
    fn moments(&mut self, moments: &Moments<'_>) {
        self.queue.submit(
            moments
                .iter()
                .flat_map(|(m, data)| self.hooks.plan_lazy(m, data))
                .collect(),
        );
    }

    fn reload(&mut self, compiled: &Compiled) {
        self.queue.set_hooks(Arc::clone(&compiled.hooks));
        self.hooks = Arc::clone(&compiled.hooks);
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            self.prune.abort();
            // Everything handed over is committed before the process exits.
            self.queue.close().await;
        })
    }
}

/// Deletes delivered requests past their keep time, hourly.
async fn prune_delivered(path: PathBuf, keep: Duration) {
    let mut every = tokio::time::interval(PRUNE_EVERY);
    loop {
        every.tick().await;
        let p = path.clone();
        let keep_ms = keep.as_millis() as i64;
        let done = tokio::task::spawn_blocking(move || {
            Admin::open(&p)?.purge(&[State::Delivered], keep_ms)
        })
        .await;
        match done {
            Ok(Ok(n)) if n > 0 => tracing::info!(deleted = n, "pruned delivered webhook requests"),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot prune the outbox"),
            _ => {}
        }
    }
}

//! `switchhook deliver` assembled: the worker's outbox and delivery queue, the bus worker
//! taking moments from JetStream, the admin endpoint, and the configuration file watched so
//! a change of webhooks applies from the next moment on.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{bind_admin, reload, service, Beside, Compiled, StartError};
use crate::admin::{LiveView, Sources};
use crate::bus::Worker;
use crate::config::Config;
use crate::hooks::delivery::DeliveryOptions;
use crate::hooks::{DeliveryQueue, Outbox, WebhookSet};

/// A running webhook worker.
pub struct WorkerProcess {
    cfg: Config,
    queue: Arc<DeliveryQueue>,
    hooks: watch::Sender<Arc<WebhookSet>>,
    stop: CancellationToken,
    worker: tokio::task::JoinHandle<()>,
    admin: Option<Beside>,
    reloads: tokio::sync::mpsc::UnboundedReceiver<reload::Reloaded>,
    service: service::ServiceManager,
}

impl WorkerProcess {
    /// Opens the outbox (resuming its pending deliveries), starts the admin endpoint when
    /// `[admin] listen` is set, and starts taking moments from NATS; `path` (the
    /// configuration file) is watched for changes.
    pub async fn start(
        cfg: Config,
        compiled: Compiled,
        path: Option<PathBuf>,
    ) -> Result<WorkerProcess, StartError> {
        let outbox = Outbox::open(&cfg.store.path).map_err(StartError::Outbox)?;
        let options = DeliveryOptions {
            hold_max_bytes: cfg.store.hold_max_bytes,
            pending_memory_bytes: cfg.store.pending_memory_bytes,
            ..DeliveryOptions::default()
        };
        let queue = DeliveryQueue::start(outbox, Arc::clone(&compiled.hooks), options)
            .await
            .map(Arc::new)
            .map_err(StartError::Outbox)?;
        let server = match bind_admin(&cfg).await {
            Ok(s) => s,
            Err(e) => {
                close(queue).await;
                return Err(e);
            }
        };
        let (hooks, watching) = watch::channel(Arc::clone(&compiled.hooks));
        let worker = Worker::new(
            cfg.nats.clone(),
            cfg.worker.clone(),
            watching,
            Arc::clone(&queue),
            cfg.store.path.clone(),
        );
        let admin = server.map(|server| {
            let sources = Sources {
                esl: None,
                pipeline: None,
                worker: Some(worker.stats()),
                delivery: queue.shared_stats(),
                routing: None,
                outbox: cfg.store.path.clone(),
                call_store: None,
                bus: None,
                live: Arc::new(LiveView::default()),
            };
            let stop = CancellationToken::new();
            let task = tokio::spawn(server.serve(sources, stop.clone()));
            tracing::info!(listen = %cfg.admin.listen, "admin endpoint listening (/metrics /healthz /readyz)");
            Beside { stop, task }
        });
        let stop = CancellationToken::new();
        let worker = tokio::spawn({
            let stop = stop.clone();
            async move { worker.run(stop).await }
        });
        let reloads = reload::watch(path, &cfg);
        let mut service = service::ServiceManager::from_env();
        service.subscribed();
        Ok(WorkerProcess {
            cfg,
            queue,
            hooks,
            stop,
            worker,
            admin,
            reloads,
            service,
        })
    }

    /// Works until `stop` completes, applying configuration changes as they come.
    pub async fn run(&mut self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut alive = self.service.watchdog_every().map(tokio::time::interval);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                Some(new) = self.reloads.recv() => self.reload(new),
                _ = async { alive.as_mut().expect("watched").tick().await }, if alive.is_some() => {
                    self.service.alive();
                }
            }
        }
    }

    /// The webhooks (and egress policy) of a changed configuration apply from the next
    /// moment on, and to every attempt's signing; the rest needs a restart.
    fn reload(&mut self, new: reload::Reloaded) {
        self.service.reloading();
        let sections = [
            ("nats", changed(&new.cfg.nats, &self.cfg.nats)),
            ("worker", changed(&new.cfg.worker, &self.cfg.worker)),
            ("store", changed(&new.cfg.store, &self.cfg.store)),
            ("admin", changed(&new.cfg.admin, &self.cfg.admin)),
        ];
        for (section, _) in sections.iter().filter(|(_, c)| *c) {
            tracing::warn!("[{section}] changed: restart the worker to apply it");
        }
        self.queue.set_hooks(Arc::clone(&new.compiled.hooks));
        self.hooks.send_replace(Arc::clone(&new.compiled.hooks));
        tracing::info!(
            webhooks = new.compiled.hooks.hooks().len(),
            "configuration reloaded"
        );
        self.service.reloaded();
    }

    /// Hands the partitions back (deliveries under way get a sixth of `lease`), stops the
    /// admin endpoint, and closes the outbox (everything committed).
    pub async fn shutdown(self) {
        self.service.stopping();
        self.stop.cancel();
        let _ = self.worker.await;
        if let Some(admin) = self.admin {
            admin.stop.cancel();
            let _ = admin.task.await;
        }
        close(self.queue).await;
    }
}

async fn close(queue: Arc<DeliveryQueue>) {
    if let Ok(queue) = Arc::try_unwrap(queue) {
        queue.close().await;
    }
}

/// Whether a reload changed a section.
fn changed<T: serde::Serialize>(new: &T, old: &T) -> bool {
    serde_json::to_value(new).ok() != serde_json::to_value(old).ok()
}

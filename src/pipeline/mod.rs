//! The live pipeline, assembled: events from the event socket are assembled into calls, and
//! what that yields (finished calls, lifecycle moments, the calls in progress) goes to every
//! output ([`outputs`]). Beside it run the routing server and the admin endpoint.
//!
//! Three steps, kept apart: [`Pipeline::start`] starts the parts in order and, when one
//! cannot start, stops those already started; [`Pipeline::run`] feeds the outputs until told
//! to stop; [`Pipeline::shutdown`] stops the parts in reverse order and lets the outputs
//! finish what they were handed.

mod compiled;
mod outputs;
mod reload;
mod service;
mod worker;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use compiled::Compiled;
pub use worker::WorkerProcess;

use crate::admin::{AdminServer, LiveView, PipelineStats, Sources};
use crate::config::Config;
use crate::esl::{EslClient, EslSignal};
use crate::hooks::store::StoreError;
use crate::routing::{Router, RoutingServer};
use crate::secrets::SecretError;
use crate::session::SessionTracker;
use outputs::{Outputs, Shared};

/// How often the calls in progress are handed to the outputs (when events have come).
const CALLS_EVERY: Duration = Duration::from_millis(250);

/// How long routing steps under way get to finish at shutdown (each is bounded by its own
/// deadline, at most 30 s).
const ROUTING_DRAIN: Duration = Duration::from_secs(35);

/// A part of the pipeline could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The webhook outbox cannot be opened.
    #[error(transparent)]
    Outbox(StoreError),
    /// The routing server cannot listen.
    #[error("routing.listen {listen}: {source}")]
    Routing {
        /// The configured address.
        listen: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The admin endpoint cannot listen.
    #[error("admin.listen {listen}: {source}")]
    Admin {
        /// The configured address.
        listen: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The call store cannot be used as configured.
    #[error(transparent)]
    CallStore(crate::call_store::DatabaseError),
    /// The admin password's variable went away after the configuration was checked.
    #[error("admin.password_env: {0}")]
    AdminCredentials(#[source] SecretError),
}

/// A task beside the pipeline, and how to stop it.
struct Beside {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// The started pipeline.
pub struct Pipeline {
    cfg: Config,
    tracker: SessionTracker,
    outputs: Outputs,
    counters: Arc<PipelineStats>,
    client: EslClient,
    signals: mpsc::Receiver<EslSignal>,
    client_task: JoinHandle<()>,
    routing: Option<(Arc<Router>, Beside)>,
    admin: Option<Beside>,
    reloads: mpsc::UnboundedReceiver<reload::Reloaded>,
    /// FreeSWITCH's answers about quiet calls (see [`ask_about_quiet_calls`]).
    expiry_answers: (mpsc::Sender<ChannelsUp>, mpsc::Receiver<ChannelsUp>),
    service: service::ServiceManager,
}

impl Pipeline {
    /// Starts the outputs, the routing server, the admin endpoint and then the event-socket
    /// client, in that order; `path` (the configuration file) is watched for changes. When a
    /// part cannot start, the parts already started are stopped before the error returns.
    pub async fn start(
        cfg: Config,
        compiled: Compiled,
        path: Option<PathBuf>,
    ) -> Result<Pipeline, StartError> {
        let mut shared = Shared {
            // The live page's state is kept only while the admin endpoint is on.
            live: (!cfg.admin.listen.is_empty()).then(|| Arc::new(LiveView::default())),
            ..Shared::default()
        };
        let outputs = outputs::start(&cfg, &compiled, &mut shared).await?;
        let routing = match start_routing(&cfg, &compiled).await {
            Ok(r) => r,
            Err(e) => {
                outputs.close().await;
                return Err(e);
            }
        };
        let admin = match bind_admin(&cfg).await {
            Ok(a) => a,
            Err(e) => {
                if let Some((_, routing)) = routing {
                    stop_routing(routing).await;
                }
                outputs.close().await;
                return Err(e);
            }
        };
        // Nothing can fail from here: connect to FreeSWITCH last.
        let (client, signals, client_task) = EslClient::spawn(cfg.freeswitch.clone());
        let admin = match (admin, shared.live) {
            (Some(server), Some(live)) => {
                let sources = Sources {
                    esl: Some(Arc::clone(client.stats())),
                    pipeline: Some(Arc::clone(&shared.counters)),
                    worker: None,
                    delivery: Arc::clone(&shared.delivery),
                    routing: routing.as_ref().map(|(r, _)| Arc::clone(r)),
                    outbox: cfg.store.path.clone(),
                    call_store: shared.call_store.clone(),
                    bus: shared.bus.clone(),
                    live,
                };
                let stop = CancellationToken::new();
                let task = tokio::spawn(server.serve(sources, stop.clone()));
                tracing::info!(listen = %cfg.admin.listen, "admin endpoint listening (live page at /, /metrics /healthz /readyz)");
                Some(Beside { stop, task })
            }
            _ => None,
        };
        tracing::info!(
            webhooks = compiled.hooks.hooks().len(),
            routes = cfg.routes.len(),
            routing = %cfg.routing.listen,
            outbox = %cfg.store.path.display(),
            freeswitch = %format!("{}:{}", cfg.freeswitch.host, cfg.freeswitch.port),
            "switchhook running"
        );
        let reloads = reload::watch(path, &cfg);
        Ok(Pipeline {
            tracker: SessionTracker::new(compiled.settings)
                .with_moments()
                .ask_before_expiry(),
            expiry_answers: mpsc::channel(1),
            service: service::ServiceManager::from_env(),
            outputs,
            counters: shared.counters,
            client,
            signals,
            client_task,
            routing,
            admin,
            reloads,
            cfg,
        })
    }

    /// Feeds the outputs until `stop` completes or the event-socket client ends.
    pub async fn run(&mut self, stop: impl std::future::Future<Output = ()>) {
        let mut calls_tick = tokio::time::interval(CALLS_EVERY);
        calls_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut calls_changed = false;
        let mut trim = crate::memory::Trim::default();
        let mut trim_tick = tokio::time::interval(crate::memory::TRIM_EVERY);
        trim_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stop = std::pin::pin!(stop);
        // The watchdog is fed from this loop: if it stalls, systemd restarts the service.
        let mut watchdog = self
            .service
            .watchdog_every()
            .map(|every| tokio::time::interval(every));
        loop {
            tokio::select! {
                _ = tick(&mut watchdog) => self.service.alive(),
                _ = &mut stop => {
                    tracing::info!("shutting down");
                    return;
                }
                _ = trim_tick.tick() => {
                    if trim.check(self.tracker.active()) {
                        tracing::debug!(active = self.tracker.active(), "calls ended: freed memory returned to the system");
                    }
                }
                _ = calls_tick.tick(), if calls_changed => {
                    self.outputs.calls(&self.tracker);
                    calls_changed = false;
                }
                Some(new) = self.reloads.recv() => self.reload(new),
                Some(alive) = self.expiry_answers.1.recv() => {
                    for rec in self.tracker.settle_expiry(alive.as_ref()) {
                        self.outputs.finished(&rec);
                    }
                    calls_changed = true;
                }
                signal = self.signals.recv() => {
                    let Some(signal) = signal else { return };
                    self.on_signal(signal);
                    calls_changed = true;
                }
            }
            self.counters
                .active_calls
                .store(self.tracker.active() as i64, Ordering::Relaxed);
            if let Some(q) = self.tracker.take_expiry_question() {
                let (client, answers) = (self.client.clone(), self.expiry_answers.0.clone());
                tokio::spawn(ask_about_quiet_calls(client, q, answers));
            }
            let moments = self.tracker.take_moments();
            self.outputs.moments(&moments);
        }
    }

    fn on_signal(&mut self, signal: EslSignal) {
        match signal {
            EslSignal::Event(ev) => {
                for rec in self.tracker.on_event(&ev) {
                    self.outputs.finished(&rec);
                }
            }
            EslSignal::Connected { connection } => {
                tracing::info!(connection, "subscribed");
                self.service.subscribed();
            }
            EslSignal::Resync {
                connection,
                channels,
            } => {
                tracing::info!(
                    connection,
                    channels = channels.len(),
                    active = self.tracker.active(),
                    "resynced channels in progress"
                );
                for rec in self.tracker.on_resync(&channels) {
                    self.outputs.finished(&rec);
                }
            }
            EslSignal::Gap(reason) => {
                tracing::warn!(
                    ?reason,
                    active = self.tracker.active(),
                    "event gap: calls in progress become partial"
                );
                self.tracker.on_gap(&format!("{reason:?}"));
            }
        }
    }

    fn reload(&mut self, new: reload::Reloaded) {
        self.service.reloading();
        if new.freeswitch_changed {
            tracing::warn!("[freeswitch] changed: restart switchhook to apply it");
        }
        let call_store = |c: &Config| serde_json::to_value(&c.call_store).ok();
        if call_store(&new.cfg) != call_store(&self.cfg) {
            tracing::warn!("[call_store] changed: restart switchhook to apply it");
        }
        let nats = |c: &Config| serde_json::to_value(&c.nats).ok();
        if nats(&new.cfg) != nats(&self.cfg) {
            tracing::warn!("[nats] changed: restart switchhook to apply it");
        }
        match &self.routing {
            Some((router, _)) => {
                if new.cfg.routing.listen != self.cfg.routing.listen {
                    tracing::warn!("[routing] listen changed: restart switchhook to apply it");
                }
                router.set_routes(Arc::clone(&new.compiled.routes));
            }
            None if !new.cfg.routing.listen.is_empty() => {
                tracing::warn!(
                    "[routing] listen set: restart switchhook to start the routing server"
                )
            }
            None => {}
        }
        self.tracker
            .set_settings(Arc::clone(&new.compiled.settings));
        self.outputs.reload(&new.compiled);
        tracing::info!(
            webhooks = new.compiled.hooks.hooks().len(),
            "configuration reloaded"
        );
        self.service.reloaded();
    }

    /// Stops the event-socket client, the routing server (steps under way finish) and the
    /// admin endpoint; calls still up are logged as partial records; then every output
    /// finishes what it was handed (the outbox commits everything before this returns).
    pub async fn shutdown(mut self) {
        self.service.stopping();
        self.client.shutdown().await;
        drop(self.signals);
        let _ = self.client_task.await;
        if let Some((_, routing)) = self.routing {
            stop_routing(routing).await;
        }
        if let Some(admin) = self.admin {
            admin.stop.cancel();
            let _ = admin.task.await;
        }
        // Not hangups: the calls go on in FreeSWITCH, and a restart adopts them.
        for rec in self
            .tracker
            .flush("switchhook stopped while the call was up")
        {
            self.outputs.finished(&rec);
        }
        self.outputs.close().await;
    }
}

/// The next tick of an interval; never, without one.
async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The channels FreeSWITCH has, by `Unique-ID`; `None` when it could not be asked.
type ChannelsUp = Option<HashSet<String>>;

/// Asks FreeSWITCH which channels it has, for calls that have been quiet for
/// `expire_after` (a call on hold for hours sends nothing): the answer goes back to the loop,
/// which keeps the calls FreeSWITCH still has. Its own task: the loop must keep draining
/// events while the command waits behind them.
async fn ask_about_quiet_calls(
    client: EslClient,
    question: crate::session::ExpiryQuestion,
    answers: mpsc::Sender<ChannelsUp>,
) {
    let alive = match client.api("show channels as json").await {
        Ok(reply) => {
            let rows = crate::esl::parse_channels(&reply.text());
            Some(rows.into_iter().map(|c| c.uuid).collect::<HashSet<_>>())
        }
        Err(e) => {
            tracing::warn!(error = %e, legs = question.legs.len(), "could not ask FreeSWITCH about quiet calls: they stay open");
            None
        }
    };
    if let Some(alive) = &alive {
        let up = question.legs.iter().filter(|l| alive.contains(*l)).count();
        tracing::info!(
            legs = question.legs.len(),
            up,
            "quiet calls checked with FreeSWITCH"
        );
    }
    let _ = answers.send(alive).await;
}

/// Starts the routing server when `[routing] listen` is set.
async fn start_routing(
    cfg: &Config,
    compiled: &Compiled,
) -> Result<Option<(Arc<Router>, Beside)>, StartError> {
    if cfg.routing.listen.is_empty() {
        return Ok(None);
    }
    let router = Arc::new(Router::new(&cfg.routing, Arc::clone(&compiled.routes)));
    let server = RoutingServer::bind(&cfg.routing.listen, Arc::clone(&router))
        .await
        .map_err(|source| StartError::Routing {
            listen: cfg.routing.listen.clone(),
            source,
        })?;
    tracing::info!(listen = %cfg.routing.listen, routes = cfg.routes.len(), "routing server listening");
    let stop = CancellationToken::new();
    let task = tokio::spawn(server.serve(stop.clone()));
    Ok(Some((router, Beside { stop, task })))
}

async fn stop_routing(routing: Beside) {
    routing.stop.cancel();
    let _ = tokio::time::timeout(ROUTING_DRAIN, routing.task).await;
}

/// Binds the admin endpoint when `[admin] listen` is set.
async fn bind_admin(cfg: &Config) -> Result<Option<AdminServer>, StartError> {
    if cfg.admin.listen.is_empty() {
        return Ok(None);
    }
    // The check vouched for the variable; a failure here is a race with the environment,
    // and the endpoint then stays closed rather than open.
    let credentials = cfg
        .admin
        .credentials()
        .map_err(StartError::AdminCredentials)?;
    let exposed = cfg
        .admin
        .listen
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|a| !a.ip().is_loopback());
    if exposed && credentials.is_none() {
        // /live.json carries callers' numbers: beyond loopback it wants a password.
        tracing::warn!(listen = %cfg.admin.listen, "the admin endpoint listens beyond loopback without a password: anyone who reaches it sees the calls (set [admin] password_env)");
    }
    let server = AdminServer::bind(&cfg.admin.listen)
        .await
        .map_err(|source| StartError::Admin {
            listen: cfg.admin.listen.clone(),
            source,
        })?;
    Ok(Some(server.require(credentials)))
}

/// SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

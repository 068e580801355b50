//! `switchhook run`: the live pipeline. Events from the event socket are assembled into
//! calls; every finished call's CDR is logged; every lifecycle moment becomes webhook
//! requests, committed to the outbox and delivered. The configuration file is watched (and
//! re-read on SIGHUP): a good edit applies at once, a bad one is logged and the running
//! configuration stays.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use std::sync::atomic::Ordering;

use crate::admin::{AdminServer, LiveView, PipelineStats, Sources};
use crate::config::Config;
use crate::esl::{ClientConfig, EslClient, EslSignal};
use crate::hooks::delivery::DeliveryOptions;
use crate::hooks::store::{Admin, State};
use crate::hooks::{DeliveryQueue, Outbox, WebhookSet};
use crate::routing::{Router, RoutingServer};
use crate::session::{CallRecord, SessionTracker, Settings};
use tokio_util::sync::CancellationToken;

/// How often the configuration file is looked at.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// How often the live page's calls in progress are refreshed (when events have come).
const LIVE_EVERY: Duration = Duration::from_millis(250);

/// A call has finished: counted, logged, and listed on the live page.
fn finished(stats: &PipelineStats, live: Option<&LiveView>, rec: &CallRecord) {
    stats.cdrs.fetch_add(1, Ordering::Relaxed);
    if rec.cdr.partial.is_some() {
        stats.partial.fetch_add(1, Ordering::Relaxed);
    }
    log_record(rec);
    if let Some(live) = live {
        live.finished(rec);
    }
}

fn log_record(rec: &CallRecord) {
    let cdr = serde_json::to_string(&rec.cdr).unwrap_or_default();
    tracing::info!(call_id = %rec.cdr.id, partial = rec.cdr.partial.is_some(), %cdr, "call finished");
}

/// A reloaded configuration, compiled.
struct Reloaded {
    settings: Arc<Settings>,
    hooks: Arc<WebhookSet>,
    freeswitch_changed: bool,
    cfg: Config,
}

/// Runs until SIGINT/SIGTERM.
pub async fn run(cfg: Config, path: Option<PathBuf>) -> ExitCode {
    run_until(cfg, path, shutdown_signal()).await
}

/// Runs until `stop` completes (the demo stops when its capture has played).
pub async fn run_until(
    cfg: Config,
    path: Option<PathBuf>,
    stop: impl std::future::Future<Output = ()>,
) -> ExitCode {
    let settings = match Settings::from_config(&cfg) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let hooks = match WebhookSet::compile(&cfg.webhooks, &cfg.egress, &settings.numbers) {
        Ok(h) => Arc::new(h),
        Err(problems) => {
            for (p, m) in problems {
                eprintln!("{p}: {m}");
            }
            return ExitCode::from(2);
        }
    };
    let outbox = match Outbox::open(&cfg.store.path) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let options = DeliveryOptions {
        hold_max_bytes: cfg.store.hold_max_bytes,
        pending_memory_bytes: cfg.store.pending_memory_bytes,
        ..DeliveryOptions::default()
    };
    let queue = match DeliveryQueue::start(outbox, Arc::clone(&hooks), options).await {
        Ok(q) => q,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let stop_routing = CancellationToken::new();
    let (router, routing_task) = match start_routing(&cfg, stop_routing.clone()).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            queue.close().await;
            return ExitCode::from(2);
        }
    };
    tracing::info!(
        webhooks = hooks.hooks().len(),
        routes = cfg.routes.len(),
        routing = %cfg.routing.listen,
        outbox = %cfg.store.path.display(),
        freeswitch = %format!("{}:{}", cfg.freeswitch.host, cfg.freeswitch.port),
        "switchhook running"
    );
    let prune = tokio::spawn(prune_delivered(
        cfg.store.path.clone(),
        cfg.store.keep_delivered,
    ));
    let mut reloads = watch(path, cfg.clone());
    let mut hooks = hooks;
    let mut tracker = SessionTracker::new(settings).with_moments();
    let (client, mut signals, task) = EslClient::spawn(ClientConfig::from(&cfg.freeswitch));
    let pipeline = Arc::new(PipelineStats::default());
    let stop_admin = CancellationToken::new();
    // The live page's state; only kept up to date while the admin endpoint is on.
    let live = (!cfg.admin.listen.is_empty()).then(|| Arc::new(LiveView::default()));
    let mut live_tick = tokio::time::interval(LIVE_EVERY);
    live_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut live_dirty = false;
    let mut trim = crate::memory::Trim::default();
    let mut trim_tick = tokio::time::interval(crate::memory::TRIM_EVERY);
    trim_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    if let Some(live) = &live {
        let sources = Sources {
            esl: Arc::clone(client.stats()),
            pipeline: Arc::clone(&pipeline),
            delivery: queue.shared_stats(),
            routing: router.clone(),
            outbox: cfg.store.path.clone(),
            live: Arc::clone(live),
        };
        // check-config has vouched for the variable; a failure here is a race with the
        // environment, and the endpoint then stays closed rather than open.
        let credentials = match cfg.admin.credentials() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("admin.password_env: {e}");
                client.shutdown().await;
                queue.close().await;
                return ExitCode::from(2);
            }
        };
        let exposed = cfg
            .admin
            .listen
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| !a.ip().is_loopback());
        if exposed && credentials.is_none() {
            // /live.json carries callers' numbers: beyond loopback it wants a password.
            tracing::warn!(listen = %cfg.admin.listen, "the admin endpoint listens beyond loopback without a password: anyone who reaches it sees the calls (set [admin] password_env)");
        }
        match AdminServer::bind(&cfg.admin.listen, sources).await {
            Ok(server) => {
                let server = server.require(credentials);
                tracing::info!(listen = %cfg.admin.listen, "admin endpoint listening (live page at /, /metrics /healthz /readyz)");
                tokio::spawn(server.serve(stop_admin.clone()));
            }
            Err(e) => {
                eprintln!("admin.listen {}: {e}", cfg.admin.listen);
                client.shutdown().await;
                queue.close().await;
                return ExitCode::from(2);
            }
        }
    }
    let mut shutdown = std::pin::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut shutdown => {
                tracing::info!("shutting down");
                client.shutdown().await;
                break;
            }
            _ = trim_tick.tick() => {
                if trim.check(tracker.active()) {
                    tracing::debug!(active = tracker.active(), "calls ended: freed memory returned to the system");
                }
            }
            _ = live_tick.tick(), if live.is_some() && live_dirty => {
                if let Some(live) = &live {
                    live.refresh(tracker.calls(), tracker.settings());
                }
                live_dirty = false;
            }
            Some(new) = reloads.recv() => {
                if new.freeswitch_changed {
                    tracing::warn!("[freeswitch] changed: restart switchhook to apply it");
                }
                if let Some(router) = &router {
                    if new.cfg.routing.listen != cfg.routing.listen {
                        tracing::warn!("[routing] listen changed: restart switchhook to apply it");
                    }
                    // Checked by the reload already; a failure here keeps the running routes.
                    if let Err(p) = router.set_routes(&new.cfg.routing, &new.cfg.routes) {
                        tracing::error!(problems = ?p, "routes not reloaded");
                    }
                } else if !new.cfg.routing.listen.is_empty() {
                    tracing::warn!("[routing] listen set: restart switchhook to start the routing server");
                }
                tracker.set_settings(new.settings);
                queue.set_hooks(Arc::clone(&new.hooks));
                hooks = new.hooks;
                tracing::info!(webhooks = hooks.hooks().len(), "configuration reloaded");
            }
            sig = signals.recv() => match sig {
                None => break,
                Some(EslSignal::Event(ev)) => {
                    for rec in tracker.on_event(&ev) {
                        finished(&pipeline, live.as_deref(), &rec);
                    }
                    live_dirty = true;
                }
                Some(EslSignal::Connected { connection }) => {
                    if connection > 1 {
                        pipeline.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    tracing::info!(connection, "subscribed")
                }
                Some(EslSignal::Resync { connection, channels }) => {
                    tracing::info!(connection, channels = channels.len(), active = tracker.active(), "resynced channels in progress");
                    for rec in tracker.on_resync(&channels) {
                        finished(&pipeline, live.as_deref(), &rec);
                    }
                    live_dirty = true;
                }
                Some(EslSignal::Gap(reason)) => {
                    tracing::warn!(?reason, active = tracker.active(), "event gap: calls in progress become partial");
                    tracker.on_gap(&format!("{reason:?}"));
                    live_dirty = true;
                }
            }
        }
        pipeline
            .active_calls
            .store(tracker.active() as i64, Ordering::Relaxed);
        let moments = tracker.take_moments();
        if !moments.is_empty() {
            pipeline
                .moments
                .fetch_add(moments.len() as u64, Ordering::Relaxed);
            queue.submit(moments.iter().flat_map(|m| hooks.plan(m)).collect());
        }
    }
    drop(signals);
    let _ = task.await;
    stop_routing.cancel();
    stop_admin.cancel();
    if let Some(t) = routing_task {
        // Steps under way finish (each is bounded by its deadline).
        let _ = tokio::time::timeout(Duration::from_secs(35), t).await;
    }
    for rec in tracker.flush("switchhook stopped while the call was up") {
        log_record(&rec);
    }
    prune.abort();
    // Everything handed over is committed before the process exits.
    queue.close().await;
    ExitCode::SUCCESS
}

type RoutingParts = (Option<Arc<Router>>, Option<tokio::task::JoinHandle<()>>);

/// Starts the routing server when `[routing] listen` is set.
async fn start_routing(cfg: &Config, stop: CancellationToken) -> Result<RoutingParts, String> {
    if cfg.routing.listen.is_empty() {
        return Ok((None, None));
    }
    let router = Router::new(&cfg.routing, &cfg.routes)
        .map(Arc::new)
        .map_err(|p| {
            p.into_iter()
                .map(|(k, m)| format!("{k}: {m}"))
                .collect::<Vec<_>>()
                .join("\n")
        })?;
    let server = RoutingServer::bind(&cfg.routing.listen, Arc::clone(&router))
        .await
        .map_err(|e| format!("routing.listen {}: {e}", cfg.routing.listen))?;
    tracing::info!(listen = %cfg.routing.listen, routes = cfg.routes.len(), "routing server listening");
    let task = tokio::spawn(server.serve(stop));
    Ok((Some(router), Some(task)))
}

/// SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
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

/// Deletes delivered requests past their keep time, hourly.
async fn prune_delivered(path: PathBuf, keep: Duration) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
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

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Watches the configuration file (and SIGHUP); sends each good new configuration.
fn watch(path: Option<PathBuf>, current: Config) -> mpsc::UnboundedReceiver<Reloaded> {
    let (tx, rx) = mpsc::unbounded_channel();
    let Some(path) = path else {
        return rx;
    };
    tokio::spawn(async move {
        let mut last = stamp(&path);
        let mut running = serde_json::to_value(&current.freeswitch).ok();
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            #[cfg(unix)]
            let forced = match hup.as_mut() {
                Some(h) => tokio::select! {
                    _ = tokio::time::sleep(WATCH_EVERY) => false,
                    _ = h.recv() => true,
                },
                None => {
                    tokio::time::sleep(WATCH_EVERY).await;
                    false
                }
            };
            #[cfg(not(unix))]
            let forced = {
                tokio::time::sleep(WATCH_EVERY).await;
                false
            };
            let now = stamp(&path);
            if !forced && now == last {
                continue;
            }
            last = now;
            match reload(&path) {
                Ok((cfg, settings, hooks)) => {
                    let fs = serde_json::to_value(&cfg.freeswitch).ok();
                    let freeswitch_changed = fs != running;
                    running = fs;
                    if tx
                        .send(Reloaded {
                            settings,
                            hooks,
                            freeswitch_changed,
                            cfg,
                        })
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) => tracing::error!(
                    file = %path.display(),
                    error = %e,
                    "configuration change rejected; the running configuration stays"
                ),
            }
        }
    });
    rx
}

fn reload(path: &Path) -> Result<(Config, Arc<Settings>, Arc<WebhookSet>), String> {
    let cfg = Config::load(Some(path)).map_err(|e| e.to_string())?;
    let settings = Settings::from_config(&cfg)?;
    let hooks =
        WebhookSet::compile(&cfg.webhooks, &cfg.egress, &settings.numbers).map_err(|p| {
            p.into_iter()
                .map(|(k, m)| format!("{k}: {m}"))
                .collect::<Vec<_>>()
                .join("; ")
        })?;
    Ok((cfg, Arc::new(settings), Arc::new(hooks)))
}

//! The routing server: listens where FreeSWITCH's `socket` application connects and runs one
//! task per call.

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::breaker::BreakerConfig;
use super::config::{RouteConfig, RoutingConfig};
use super::lookup::{Asker, Route, Source};
use super::reply::ReplyRules;
use super::socket::{OutboundSocket, SocketTimeouts};
use super::step::{self, StepReport};
use crate::esl::Limits;
use crate::problem::Problem;

/// The routes in force (replaced as a whole on a configuration reload).
#[derive(Debug)]
pub struct RouteTable {
    routes: HashMap<String, Route>,
    rules: ReplyRules,
}

impl RouteTable {
    /// Compiles checked configuration; problems come back by key path.
    pub fn compile(
        routing: &RoutingConfig,
        routes: &[RouteConfig],
    ) -> Result<RouteTable, Vec<Problem>> {
        let bad = super::config::check(routing, routes);
        if !bad.is_empty() {
            return Err(bad);
        }
        let rules = ReplyRules::new(&routing.destination_pattern, routing.callername_max)
            .map_err(|e| vec![Problem::new("routing.destination_pattern", e)])?;
        Ok(RouteTable {
            routes: routes
                .iter()
                .map(|r| (r.name.clone(), Route::new(r.clone())))
                .collect(),
            rules,
        })
    }

    /// The route of that name.
    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.get(name)
    }

    /// How replies are judged.
    pub fn rules(&self) -> &ReplyRules {
        &self.rules
    }
}

/// Counters of routing steps (read by the admin endpoint and the CLI).
#[derive(Debug)]
pub struct RoutingStats {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Steps by status, indexed by [`RoutingStatus::index`](super::RoutingStatus::index).
    pub by_status: [AtomicU64; 5],
    /// Steps answered from the last-known-good cache.
    pub from_cache: AtomicU64,
    /// Steps refused by an open circuit breaker.
    pub circuit_open: AtomicU64,
    /// Steps the caller left before they finished.
    pub hangups: AtomicU64,
    /// Steps that failed on the socket (FreeSWITCH refused, timed out, closed).
    pub socket_errors: AtomicU64,
    /// Seconds the decision took (the routing server's round trips, retries included; zero
    /// for a menu timeout), by status.
    pub latency: StatusHistograms,
}

/// Histograms labelled `status`.
pub(crate) type StatusHistograms =
    Family<[(&'static str, String); 1], Histogram, fn() -> Histogram>;

/// 1 ms to about 8 s: a local routing server to one past any sane deadline.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

impl Default for RoutingStats {
    fn default() -> Self {
        RoutingStats {
            connections: AtomicU64::new(0),
            by_status: Default::default(),
            from_cache: AtomicU64::new(0),
            circuit_open: AtomicU64::new(0),
            hangups: AtomicU64::new(0),
            socket_errors: AtomicU64::new(0),
            latency: Family::new_with_constructor(latency_histogram),
        }
    }
}

impl RoutingStats {
    fn count(&self, r: &StepReport) {
        if let Some(a) = &r.answer {
            self.by_status[a.decision.status.index()].fetch_add(1, Ordering::Relaxed);
            self.latency
                .get_or_create(&[("status", a.decision.status.as_str().to_owned())])
                .observe(a.latency.as_secs_f64());
            match a.source {
                Source::Cache => self.from_cache.fetch_add(1, Ordering::Relaxed),
                Source::CircuitOpen => self.circuit_open.fetch_add(1, Ordering::Relaxed),
                _ => 0,
            };
        }
        match &r.aborted {
            Some(e) if e.call_gone() => self.hangups.fetch_add(1, Ordering::Relaxed),
            Some(_) => self.socket_errors.fetch_add(1, Ordering::Relaxed),
            None => 0,
        };
    }
}

/// What every call's task shares: the routes, the asker (breakers, caches), the counters.
pub struct Router {
    table: RwLock<Arc<RouteTable>>,
    asker: Asker,
    stats: RoutingStats,
    limits: Limits,
    timeouts: SocketTimeouts,
}

impl Router {
    /// A router with `[routing]`'s breaker and cache settings, answering from `table`.
    pub fn new(routing: &RoutingConfig, table: Arc<RouteTable>) -> Router {
        Router {
            table: RwLock::new(table),
            asker: Asker::new(
                BreakerConfig {
                    failures: routing.breaker_failures,
                    cooldown: routing.breaker_cooldown,
                },
                routing.cache_max,
            ),
            stats: RoutingStats::default(),
            limits: Limits::default(),
            timeouts: SocketTimeouts::default(),
        }
    }

    /// The routes in force now.
    pub fn table(&self) -> Arc<RouteTable> {
        self.table.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the routes (a configuration reload); steps under way keep the old ones.
    pub fn set_routes(&self, table: Arc<RouteTable>) {
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = table;
    }

    /// The HTTP side.
    pub fn asker(&self) -> &Asker {
        &self.asker
    }

    /// The counters.
    pub fn stats(&self) -> &RoutingStats {
        &self.stats
    }
}

/// The listening routing server.
pub struct RoutingServer {
    listener: TcpListener,
    router: Arc<Router>,
    reports: Option<mpsc::UnboundedSender<StepReport>>,
}

impl RoutingServer {
    /// Binds the listen address.
    pub async fn bind(addr: &str, router: Arc<Router>) -> std::io::Result<RoutingServer> {
        Ok(RoutingServer {
            listener: TcpListener::bind(addr).await?,
            router,
            reports: None,
        })
    }

    /// The bound address (for port 0 in tests).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Sends every finished step's report to `tx` as well as to the log.
    pub fn report_to(&mut self, tx: mpsc::UnboundedSender<StepReport>) {
        self.reports = Some(tx);
    }

    /// Accepts calls until `stop`; then waits for the steps under way (each is bounded by its
    /// deadline and the socket timeouts) so no caller is cut off mid-step.
    pub async fn serve(self, stop: CancellationToken) {
        let tasks = TaskTracker::new();
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => break,
                a = self.listener.accept() => a,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "routing server accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let router = self.router.clone();
            let reports = self.reports.clone();
            router.stats.connections.fetch_add(1, Ordering::Relaxed);
            tasks.spawn(async move {
                let report =
                    match OutboundSocket::connect(stream, router.limits, router.timeouts).await {
                        Ok((sock, data)) => step::run(sock, data, &router).await,
                        Err(e) => StepReport {
                            call_id: String::new(),
                            route: None,
                            answer: None,
                            code: None,
                            aborted: Some(e),
                        },
                    };
                router.stats.count(&report);
                log(&report, peer);
                if let Some(tx) = reports {
                    let _ = tx.send(report);
                }
            });
        }
        tasks.close();
        tasks.wait().await;
    }
}

fn log(r: &StepReport, peer: SocketAddr) {
    let route = r.route.as_deref().unwrap_or("-");
    match (&r.answer, &r.aborted) {
        // A health probe or a port scan, or a channel gone before FreeSWITCH sent its data:
        // there is no call to speak of.
        (None, Some(e)) if r.call_id.is_empty() => {
            tracing::debug!(%peer, reason = %e, "routing connection ended before the channel data")
        }
        (_, Some(e)) if e.call_gone() => {
            tracing::info!(call_id = %r.call_id, route, reason = %e, "routing step ended: the caller left")
        }
        (_, Some(e)) => {
            tracing::warn!(call_id = %r.call_id, route, %peer, error = %e, "routing step failed on the socket")
        }
        (Some(a), None) => tracing::info!(
            call_id = %r.call_id,
            route,
            status = a.decision.status.as_str(),
            source = a.source.as_str(),
            latency_ms = a.latency.as_millis() as u64,
            reason = %a.decision.reason,
            "routing step decided"
        ),
        (None, None) => {}
    }
}

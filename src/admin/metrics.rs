//! What `/metrics` reports. The pipeline's counters are plain atomics owned by the parts that
//! count (the event-socket client, the delivery queue, the routing server); a
//! prometheus-client [`Collector`] reads them at each scrape, so counting costs nothing more
//! than it did.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::esl::client::ClientStats;
use crate::hooks::delivery::DeliveryStats;
use crate::routing::{Router, RoutingStatus};
use prometheus_client::metrics::MetricType;

/// Counters of the session pipeline (kept by `run`'s loop).
#[derive(Debug, Default)]
pub(crate) struct PipelineStats {
    /// Calls in progress.
    pub(crate) active_calls: AtomicI64,
    /// CDRs emitted (finished calls).
    pub(crate) cdrs: AtomicU64,
    /// Of those, partial records (a gap, a shutdown, an expiry).
    pub(crate) partial: AtomicU64,
    /// Lifecycle moments found.
    pub(crate) moments: AtomicU64,
}

/// Where the figures come from.
#[derive(Clone)]
pub(crate) struct Sources {
    /// The event-socket client's counters (`run`).
    pub(crate) esl: Option<Arc<ClientStats>>,
    /// The session pipeline's counters (`run`).
    pub(crate) pipeline: Option<Arc<PipelineStats>>,
    /// The webhook worker's figures (`deliver`).
    pub(crate) worker: Option<Arc<crate::bus::WorkerStats>>,
    /// The delivery queue's counters.
    pub(crate) delivery: Arc<DeliveryStats>,
    /// The routing server, when it runs.
    pub(crate) routing: Option<Arc<Router>>,
    /// The outbox file (its depth is read at each scrape).
    pub(crate) outbox: PathBuf,
    /// The call store's drain, when the call store is on.
    pub(crate) call_store: Option<Arc<crate::relay::DrainStats>>,
    /// The NATS drain, when `[nats]` is on.
    pub(crate) bus: Option<Arc<crate::relay::DrainStats>>,
    /// The live page's calls.
    pub(crate) live: Arc<super::LiveView>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources").finish_non_exhaustive()
    }
}

/// Reads [`Sources`] at scrape time; the outbox depth is passed in (read off the runtime).
#[derive(Debug)]
pub(crate) struct Snapshot {
    sources: Sources,
    outbox_depth: Vec<(String, i64)>,
}

impl Snapshot {
    /// A snapshot with the outbox's rows per state.
    pub(crate) fn new(sources: Sources, outbox_depth: Vec<(String, i64)>) -> Snapshot {
        Snapshot {
            sources,
            outbox_depth,
        }
    }
}

fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: &AtomicU64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v.load(Ordering::Relaxed));
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

/// The standard process metrics (the names every Prometheus client library uses), read from
/// `/proc/self` at each scrape; a figure that cannot be read is left out.
fn process_metrics(e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let Ok(me) = procfs::process::Process::myself() else {
        return Ok(());
    };
    let ticks = procfs::ticks_per_second().max(1) as f64;
    if let Ok(stat) = me.stat() {
        let cpu = ConstCounter::new((stat.utime + stat.stime) as f64 / ticks);
        cpu.encode(e.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time spent, in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let rss = stat.rss.saturating_mul(procfs::page_size()) as i64;
        gauge(
            e,
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            rss,
        )?;
        if let Ok(boot) = procfs::boot_time_secs() {
            let start = ConstGauge::new(boot as f64 + stat.starttime as f64 / ticks);
            start.encode(e.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch, in seconds",
                None,
                start.metric_type(),
            )?)?;
        }
    }
    if let Ok(n) = me.fd_count() {
        gauge(e, "process_open_fds", "Open file descriptors", n as i64)?;
    }
    if let Ok(limits) = me.limits() {
        if let procfs::process::LimitValue::Value(max) = limits.max_open_files.soft_limit {
            gauge(
                e,
                "process_max_fds",
                "The most file descriptors the process may open",
                max as i64,
            )?;
        }
    }
    Ok(())
}

/// The classic Prometheus text format (0.0.4) of an OpenMetrics exposition, for scrapers and
/// tools that ask for it (`promtool check metrics`, a plain `curl`): a counter's `HELP` and
/// `TYPE` name its `_total` series, and OpenMetrics' `UNIT` lines and `# EOF` go.
pub(crate) fn classic_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                out.push_str(&format!("{prefix}{name}{suffix} {tail}"));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// A counter family with one label.
fn counter_family(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: &[(&str, &AtomicU64)],
) -> Result<(), std::fmt::Error> {
    let mut fam = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, v) in values {
        ConstCounter::new(v.load(Ordering::Relaxed))
            .encode(fam.encode_family(&[(label, *value)])?)?;
    }
    Ok(())
}

fn esl_metrics(e: &mut DescriptorEncoder, esl: &ClientStats) -> Result<(), std::fmt::Error> {
    gauge(
        e,
        "switchhook_esl_connected",
        "1 while the event socket is connected and subscribed",
        esl.connected.load(Ordering::Relaxed) as i64,
    )?;
    let counters: [(&str, &str, &AtomicU64); 6] = [
        (
            "switchhook_esl_connects",
            "Successful event-socket logins",
            &esl.connects,
        ),
        (
            "switchhook_esl_connect_failures",
            "Failed event-socket connection attempts",
            &esl.connect_failures,
        ),
        (
            "switchhook_esl_frames",
            "Frames read from the event socket",
            &esl.frames,
        ),
        (
            "switchhook_esl_bytes",
            "Bytes read from the event socket",
            &esl.bytes,
        ),
        (
            "switchhook_esl_parse_errors",
            "Malformed frames skipped",
            &esl.parse_errors,
        ),
        (
            "switchhook_esl_dropped_events",
            "Events dropped by the overflow policy",
            &esl.dropped_events,
        ),
    ];
    for (name, help, v) in counters {
        counter(e, name, help, v)?;
    }
    Ok(())
}

fn pipeline_metrics(e: &mut DescriptorEncoder, p: &PipelineStats) -> Result<(), std::fmt::Error> {
    gauge(
        e,
        "switchhook_active_calls",
        "Calls in progress",
        p.active_calls.load(Ordering::Relaxed),
    )?;
    counter(e, "switchhook_cdrs", "CDRs emitted", &p.cdrs)?;
    counter(
        e,
        "switchhook_partial_cdrs",
        "CDRs marked partial",
        &p.partial,
    )?;
    counter(
        e,
        "switchhook_moments",
        "Lifecycle moments found",
        &p.moments,
    )
}

fn worker_metrics(
    e: &mut DescriptorEncoder,
    w: &crate::bus::WorkerStats,
) -> Result<(), std::fmt::Error> {
    gauge(
        e,
        "switchhook_worker_connected",
        "1 while the webhook worker's NATS session is up",
        w.connected.load(Ordering::Relaxed) as i64,
    )?;
    gauge(
        e,
        "switchhook_worker_partitions",
        "Partitions the webhook worker holds",
        w.partitions.load(Ordering::Relaxed),
    )?;
    gauge(
        e,
        "switchhook_worker_unfinished",
        "Moments taken and not yet acknowledged (their webhooks still being delivered)",
        w.unfinished.load(Ordering::Relaxed),
    )?;
    counter(
        e,
        "switchhook_worker_moments_taken",
        "Moments taken from the stream",
        &w.taken,
    )?;
    counter(
        e,
        "switchhook_worker_moments_acknowledged",
        "Moments acknowledged to the stream",
        &w.acknowledged,
    )?;
    counter(
        e,
        "switchhook_worker_dead_letters_announced",
        "Dead letters announced on the bus",
        &w.dead_letters,
    )
}

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.sources;
        let d = &s.delivery;
        {
            let mut fam = e.encode_descriptor(
                "switchhook_build_info",
                "The running build: its version (always 1)",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(1)
                .encode(fam.encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?)?;
        }
        process_metrics(&mut e)?;
        if let Some(esl) = &s.esl {
            esl_metrics(&mut e, esl)?;
        }
        if let Some(p) = &s.pipeline {
            pipeline_metrics(&mut e, p)?;
        }
        if let Some(w) = &s.worker {
            worker_metrics(&mut e, w)?;
        }
        gauge(
            &mut e,
            "switchhook_outbox_held",
            "Webhook requests waiting in memory because the outbox cannot commit",
            d.held.load(Ordering::Relaxed) as i64,
        )?;
        gauge(
            &mut e,
            "switchhook_outbox_unrecorded",
            "Webhook attempts whose outcome waits in memory because the outbox cannot commit",
            d.unrecorded.load(Ordering::Relaxed) as i64,
        )?;
        let counters: [(&str, &str, &AtomicU64); 4] = [
            (
                "switchhook_webhooks_enqueued",
                "Webhook requests committed to the outbox",
                &d.enqueued,
            ),
            (
                "switchhook_webhook_attempts",
                "Webhook HTTP attempts",
                &d.attempts,
            ),
            (
                "switchhook_outbox_write_failures",
                "Outbox writes that failed (each is tried again)",
                &d.outbox_failures,
            ),
            (
                "switchhook_webhooks_lost",
                "Webhook requests given up: the outbox could not commit and the memory bound was reached",
                &d.lost,
            ),
        ];
        for (name, help, v) in counters {
            counter(&mut e, name, help, v)?;
        }
        // A relay's four series: connected, backlog, written, failures.
        let relays = [
            (
                &s.call_store,
                [
                    "switchhook_call_store_connected",
                    "switchhook_call_store_backlog",
                    "switchhook_call_store_written",
                    "switchhook_call_store_failures",
                ],
                ("the call store", "PostgreSQL", "Call records"),
            ),
            (
                &s.bus,
                [
                    "switchhook_nats_connected",
                    "switchhook_nats_backlog",
                    "switchhook_nats_written",
                    "switchhook_nats_failures",
                ],
                ("NATS", "JetStream", "Bus messages"),
            ),
        ];
        for (stats, [connected, backlog, written, failures], (what, server, items)) in relays {
            let Some(c) = stats else { continue };
            gauge(
                &mut e,
                connected,
                &format!("1 while {what}'s last write reached {server}"),
                c.connected.load(Ordering::Relaxed) as i64,
            )?;
            gauge(
                &mut e,
                backlog,
                &format!("{items} waiting in the outbox for {what}"),
                c.backlog.load(Ordering::Relaxed),
            )?;
            counter(
                &mut e,
                written,
                &format!("{items} {server} has committed"),
                &c.written,
            )?;
            counter(
                &mut e,
                failures,
                &format!("Batches for {what} that failed (each is tried again)"),
                &c.failures,
            )?;
        }
        d.by_webhook.encode(e.encode_descriptor(
            "switchhook_webhook_deliveries",
            "Webhook delivery outcomes by webhook",
            None,
            MetricType::Counter,
        )?)?;
        d.latency.encode(e.encode_descriptor(
            "switchhook_webhook_latency_seconds",
            "Time from sending a webhook request to its response or failure, by webhook",
            None,
            MetricType::Histogram,
        )?)?;
        {
            let mut fam = e.encode_descriptor(
                "switchhook_outbox_depth",
                "Outbox rows by state",
                None,
                MetricType::Gauge,
            )?;
            for (state, n) in &self.outbox_depth {
                ConstGauge::new(*n).encode(fam.encode_family(&[("state", state.as_str())])?)?;
            }
        }
        if let Some(st) = s.routing.as_ref().map(|r| r.stats()) {
            let by_status: Vec<(&str, &AtomicU64)> = RoutingStatus::ALL
                .iter()
                .map(|s| (s.as_str(), &st.by_status[s.index()]))
                .collect();
            counter_family(
                &mut e,
                "switchhook_routing_decisions",
                "Routing steps by status",
                "status",
                &by_status,
            )?;
            st.latency.encode(e.encode_descriptor(
                "switchhook_routing_latency_seconds",
                "Time a routing decision took (the routing server's round trips), by status",
                None,
                MetricType::Histogram,
            )?)?;
            counter(
                &mut e,
                "switchhook_routing_connections",
                "Outbound-socket connections accepted",
                &st.connections,
            )?;
            counter(
                &mut e,
                "switchhook_routing_from_cache",
                "Routing steps answered from the last-known-good cache",
                &st.from_cache,
            )?;
            counter(
                &mut e,
                "switchhook_routing_circuit_open",
                "Routing steps refused by an open circuit breaker",
                &st.circuit_open,
            )?;
            counter(
                &mut e,
                "switchhook_routing_hangups",
                "Routing steps the caller left",
                &st.hangups,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_classic_format_names_counters_by_their_total_series_and_drops_openmetrics_lines() {
        let om = "# HELP a_frames Frames read.\n# TYPE a_frames counter\na_frames_total 3\n\
                  # HELP a_up Up.\n# TYPE a_up gauge\na_up 1\n\
                  # HELP a_seconds Latency.\n# TYPE a_seconds histogram\n# UNIT a_seconds seconds\n\
                  a_seconds_bucket{le=\"0.1\"} 1\na_seconds_bucket{le=\"+Inf\"} 2\na_seconds_sum 0.3\na_seconds_count 2\n\
                  # EOF\n";
        assert_eq!(
            classic_text(om),
            "# HELP a_frames_total Frames read.\n# TYPE a_frames_total counter\na_frames_total 3\n\
             # HELP a_up Up.\n# TYPE a_up gauge\na_up 1\n\
             # HELP a_seconds Latency.\n# TYPE a_seconds histogram\n\
             a_seconds_bucket{le=\"0.1\"} 1\na_seconds_bucket{le=\"+Inf\"} 2\na_seconds_sum 0.3\na_seconds_count 2\n"
        );
    }
}

//! Where the pipeline's results go. Every output sees the same things in the same order:
//! each finished call's record, each lifecycle moment, now and then the calls in progress, a
//! reloaded configuration, and at the end a close in which it finishes what it was handed.
//!
//! A new output is a file here with its configuration section, and a line in [`start`].

mod bus;
mod call_store;
mod cdr_log;
mod counters;
mod live_feed;
mod webhooks;

use std::sync::Arc;

use futures::future::BoxFuture;

use super::{Compiled, StartError};
use crate::admin::{LiveView, PipelineStats};
use crate::config::Config;
use crate::hooks::delivery::DeliveryStats;
use crate::hooks::moment_data::LazyData;
use crate::session::{CallRecord, Moment, SessionTracker};

/// One destination of the pipeline's results.
pub(crate) trait Output: Send {
    /// A call has finished (also a partial record: a gap, an expiry, a shutdown).
    fn finished(&mut self, _record: &CallRecord) {}

    /// Lifecycle moments, in the order they were found.
    fn moments(&mut self, _moments: &Moments<'_>) {}

    /// The calls in progress, at most a few times a second while events come.
    fn calls(&mut self, _tracker: &SessionTracker) {}

    /// A new configuration is in force.
    fn reload(&mut self, _compiled: &Compiled) {}

    /// The pipeline stops: finish what was handed over (commit, flush) before returning.
    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

/// Moments handed to the outputs, each with its data for webhooks and the bus, made by the
/// first output that asks and shared with the next.
pub(crate) struct Moments<'a> {
    list: &'a [Moment],
    data: Vec<LazyData>,
}

impl Moments<'_> {
    /// Each moment with its data.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Moment, &LazyData)> {
        self.list.iter().zip(&self.data)
    }

    /// How many.
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }
}

/// What outputs share with the admin endpoint, which reads them.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// The pipeline's counters.
    pub counters: Arc<PipelineStats>,
    /// The live page's state, when the admin endpoint is on.
    pub live: Option<Arc<LiveView>>,
    /// The webhook delivery counters.
    pub delivery: Arc<DeliveryStats>,
    /// The call store's figures, when it is on.
    pub call_store: Option<Arc<crate::relay::DrainStats>>,
    /// The NATS drain's figures, when `[nats]` is on.
    pub bus: Option<Arc<crate::relay::DrainStats>>,
}

/// The outputs in force, fed in the order they were started.
#[derive(Default)]
pub(crate) struct Outputs(Vec<Box<dyn Output>>);

impl Outputs {
    pub(crate) fn finished(&mut self, record: &CallRecord) {
        self.0.iter_mut().for_each(|o| o.finished(record));
    }

    pub(crate) fn moments(&mut self, moments: &[Moment]) {
        if !moments.is_empty() {
            let moments = Moments {
                data: moments.iter().map(|_| LazyData::default()).collect(),
                list: moments,
            };
            self.0.iter_mut().for_each(|o| o.moments(&moments));
        }
    }

    pub(crate) fn calls(&mut self, tracker: &SessionTracker) {
        self.0.iter_mut().for_each(|o| o.calls(tracker));
    }

    pub(crate) fn reload(&mut self, compiled: &Compiled) {
        self.0.iter_mut().for_each(|o| o.reload(compiled));
    }

    /// Closes every output, the last started first.
    pub(crate) async fn close(self) {
        for output in self.0.into_iter().rev() {
            output.close().await;
        }
    }
}

/// Starts every output for this configuration. When one cannot start, those already started
/// are closed and the error comes back.
pub(crate) async fn start(
    cfg: &Config,
    compiled: &Compiled,
    shared: &mut Shared,
) -> Result<Outputs, StartError> {
    let mut outputs = Outputs::default();
    outputs
        .0
        .push(Box::new(counters::Counters::new(&shared.counters)));
    outputs.0.push(Box::new(cdr_log::CdrLog));
    if let Some(live) = &shared.live {
        outputs.0.push(Box::new(live_feed::LiveFeed::new(live)));
    }
    // In a fleet, workers deliver webhooks from the stream; `run` only publishes.
    let workers = cfg.nats.enabled() && cfg.nats.webhooks == crate::bus::WebhookDelivery::Workers;
    if !workers {
        match webhooks::Webhooks::start(&cfg.store, compiled, shared).await {
            Ok(w) => outputs.0.push(Box::new(w)),
            Err(e) => {
                outputs.close().await;
                return Err(e);
            }
        }
    }
    if cfg.call_store.enabled() {
        match call_store::CallStore::start(&cfg.call_store, &cfg.store, shared).await {
            Ok(c) => outputs.0.push(Box::new(c)),
            Err(e) => {
                outputs.close().await;
                return Err(e);
            }
        }
    }
    if cfg.nats.enabled() {
        match bus::Bus::start(&cfg.nats, &cfg.store, shared) {
            Ok(b) => outputs.0.push(Box::new(b)),
            Err(e) => {
                outputs.close().await;
                return Err(e);
            }
        }
    }
    Ok(outputs)
}

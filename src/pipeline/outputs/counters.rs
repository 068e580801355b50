//! The pipeline's counters behind `/metrics`: records and moments. (The calls-in-progress
//! gauge is set by the pipeline after every event, so a scrape never sees a stale one.)

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{Moments, Output};
use crate::admin::PipelineStats;
use crate::session::CallRecord;

/// Counts what passes.
pub(super) struct Counters(Arc<PipelineStats>);

impl Counters {
    pub(super) fn new(stats: &Arc<PipelineStats>) -> Counters {
        Counters(Arc::clone(stats))
    }
}

impl Output for Counters {
    fn finished(&mut self, rec: &CallRecord) {
        self.0.cdrs.fetch_add(1, Ordering::Relaxed);
        if rec.cdr.partial.is_some() {
            self.0.partial.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn moments(&mut self, moments: &Moments<'_>) {
        self.0
            .moments
            .fetch_add(moments.len() as u64, Ordering::Relaxed);
    }
}

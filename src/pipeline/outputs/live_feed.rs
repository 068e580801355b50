//! The live page's calls: those in progress and the latest finished.

use std::sync::Arc;

use super::Output;
use crate::admin::LiveView;
use crate::session::{CallRecord, SessionTracker};

/// Keeps the admin endpoint's [`LiveView`] up to date.
pub(super) struct LiveFeed(Arc<LiveView>);

impl LiveFeed {
    pub(super) fn new(view: &Arc<LiveView>) -> LiveFeed {
        LiveFeed(Arc::clone(view))
    }
}

impl Output for LiveFeed {
    fn finished(&mut self, rec: &CallRecord) {
        self.0.finished(rec);
    }

    fn calls(&mut self, tracker: &SessionTracker) {
        self.0.refresh(tracker.calls(), tracker.settings());
    }
}

//! Every finished call's CDR, logged as one "call finished" line.

use super::Output;
use crate::session::CallRecord;

/// Logs each record at `info`.
pub(super) struct CdrLog;

impl Output for CdrLog {
    fn finished(&mut self, rec: &CallRecord) {
        let cdr = serde_json::to_string(&rec.cdr).unwrap_or_default();
        tracing::info!(call_id = %rec.cdr.id, partial = rec.cdr.partial.is_some(), %cdr, "call finished");
    }
}

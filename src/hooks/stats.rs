//! What the delivery queue has done: running totals, outcomes per webhook, how long receivers
//! take to answer, and the latest deliveries (the admin endpoint's `/metrics` and live page
//! read them). Counting is atomics and one short lock per attempt, so it costs nothing a
//! receiver's round trip would notice.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use serde::Serialize;

use super::request::Request;
use super::store::now_ms;

/// How many deliveries [`DeliveryStats::recent`] keeps.
pub(crate) const RECENT: usize = 50;

/// Labels `webhook`, `outcome`.
pub(crate) type OutcomeLabels = [(&'static str, String); 2];
/// Label `webhook`.
pub(crate) type WebhookLabel = [(&'static str, String); 1];
/// Histograms labelled `webhook`.
pub(crate) type HistogramFamily = Family<WebhookLabel, Histogram, fn() -> Histogram>;

/// What became of one attempt (or of a request that was not attempted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// A 2xx: done.
    Delivered,
    /// Failed; another attempt is scheduled.
    Retried,
    /// Failed for good: a dead letter.
    Dead,
    /// Held back because its webhook is disabled.
    Parked,
}

impl Outcome {
    /// The lowercase name (the `outcome` label).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Retried => "retried",
            Outcome::Dead => "dead",
            Outcome::Parked => "parked",
        }
    }
}

/// One delivery attempt as the live page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryNote {
    /// When it finished, unix ms.
    pub at_ms: i64,
    /// The webhook.
    pub webhook: String,
    /// The trigger (`call.answered`…).
    pub trigger: String,
    /// The call's session id.
    pub call_id: String,
    /// What became of it.
    pub outcome: Outcome,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The receiver's status code, if it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why it failed without a status (timeout, refused…).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long the receiver took, ms (absent when no request was made).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
}

/// Running totals and the latest deliveries.
#[derive(Debug)]
pub struct DeliveryStats {
    /// Requests committed to the outbox.
    pub enqueued: AtomicU64,
    /// HTTP attempts made.
    pub attempts: AtomicU64,
    /// Deliveries that got a 2xx.
    pub delivered: AtomicU64,
    /// Attempts that will be retried.
    pub retried: AtomicU64,
    /// Deliveries given up (dead letters).
    pub dead: AtomicU64,
    /// Deliveries parked because their webhook is disabled.
    pub parked: AtomicU64,
    /// Requests waiting in memory because the outbox could not commit them.
    pub held: AtomicU64,
    /// Attempts made whose outcome the outbox could not record yet.
    pub unrecorded: AtomicU64,
    /// Outbox writes that failed (each is tried again).
    pub outbox_failures: AtomicU64,
    /// Requests given up: more were waiting for the outbox than its memory bound holds.
    pub lost: AtomicU64,
    /// Outcomes by webhook.
    pub by_webhook: Family<OutcomeLabels, Counter>,
    /// Seconds from sending a request to its response (or its failure), by webhook.
    pub latency: HistogramFamily,
    recent: Mutex<VecDeque<DeliveryNote>>,
    /// The outbox's latest write failure.
    outbox_error: Mutex<Option<String>>,
}

/// 1 ms to about 16 s: a receiver on the same host to one at its timeout.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Default for DeliveryStats {
    fn default() -> Self {
        DeliveryStats {
            enqueued: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            dead: AtomicU64::new(0),
            parked: AtomicU64::new(0),
            held: AtomicU64::new(0),
            unrecorded: AtomicU64::new(0),
            outbox_failures: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            outbox_error: Mutex::new(None),
            by_webhook: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
        }
    }
}

impl DeliveryStats {
    /// Counts one attempt's outcome (or a request parked unattempted: `latency` None).
    pub fn note(
        &self,
        req: &Request,
        outcome: Outcome,
        attempt: u32,
        status: Option<u16>,
        error: Option<&str>,
        latency: Option<Duration>,
    ) {
        let total = match outcome {
            Outcome::Delivered => &self.delivered,
            Outcome::Retried => &self.retried,
            Outcome::Dead => &self.dead,
            Outcome::Parked => &self.parked,
        };
        total.fetch_add(1, Ordering::Relaxed);
        self.by_webhook
            .get_or_create(&[
                ("webhook", req.webhook.clone()),
                ("outcome", outcome.as_str().to_owned()),
            ])
            .inc();
        if let Some(l) = latency {
            self.latency
                .get_or_create(&[("webhook", req.webhook.clone())])
                .observe(l.as_secs_f64());
        }
        let note = DeliveryNote {
            at_ms: now_ms(),
            webhook: req.webhook.clone(),
            trigger: req.trigger.clone(),
            call_id: req.call_id.clone(),
            outcome,
            attempt,
            status,
            error: error.map(str::to_owned),
            latency_ms: latency.map(|l| l.as_millis() as u64),
        };
        if let Ok(mut r) = self.recent.lock() {
            if r.len() == RECENT {
                r.pop_front();
            }
            r.push_back(note);
        }
    }

    /// Notes a failed outbox write.
    pub(crate) fn outbox_failed(&self, error: &str) {
        self.outbox_failures.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut e) = self.outbox_error.lock() {
            *e = Some(error.to_owned());
        }
    }

    /// Why the outbox is not keeping up, while requests or outcomes wait in memory for it;
    /// None when everything is written.
    pub fn outbox_problem(&self) -> Option<String> {
        let held = self.held.load(Ordering::Relaxed);
        let unrecorded = self.unrecorded.load(Ordering::Relaxed);
        if held == 0 && unrecorded == 0 {
            return None;
        }
        let error = self
            .outbox_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .unwrap_or_default();
        Some(format!(
            "outbox cannot commit ({error}): {held} webhook requests and {unrecorded} attempt outcomes wait in memory"
        ))
    }

    /// The latest deliveries, newest first.
    pub fn recent(&self) -> Vec<DeliveryNote> {
        self.recent
            .lock()
            .map(|r| r.iter().rev().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(webhook: &str) -> Request {
        Request {
            id: "msg_1".into(),
            webhook: webhook.into(),
            trigger: "call.hangup".into(),
            call_id: "c1".into(),
            seq: 1,
            method: "POST".into(),
            url: "http://127.0.0.1:1/x".into(),
            headers: vec![],
            body: String::new(),
            signed: false,
            max_attempts: 1,
            schedule: Default::default(),
            timeout_ms: 1000,
            at_us: 0,
            moment: None,
            moment_bytes: 0,
        }
    }

    #[test]
    fn outcomes_are_counted_per_webhook_and_the_ring_keeps_the_latest() {
        let s = DeliveryStats::default();
        for i in 0..(RECENT + 5) {
            let w = if i % 2 == 0 { "crm" } else { "slack" };
            s.note(
                &req(w),
                Outcome::Delivered,
                1,
                Some(200),
                None,
                Some(Duration::from_millis(3)),
            );
        }
        s.note(&req("crm"), Outcome::Parked, 0, None, None, None);
        assert_eq!(s.delivered.load(Ordering::Relaxed), RECENT as u64 + 5);
        assert_eq!(s.parked.load(Ordering::Relaxed), 1);
        let crm = s
            .by_webhook
            .get_or_create(&[("webhook", "crm".into()), ("outcome", "delivered".into())])
            .get();
        assert_eq!(crm, 28);
        let recent = s.recent();
        assert_eq!(recent.len(), RECENT);
        assert_eq!(recent[0].outcome, Outcome::Parked);
        assert_eq!(recent[0].latency_ms, None);
        assert_eq!(recent[1].latency_ms, Some(3));
    }
}

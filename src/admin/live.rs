//! What the live page shows: the calls in progress with their segment timelines, the calls
//! that just finished, and the latest webhook deliveries. `run`'s loop refreshes the calls in
//! progress a few times a second (only while the admin endpoint is on); the page polls
//! `/live.json`.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

use crate::hooks::stats::DeliveryNote;
use crate::session::cdr::{self, CallRecord};
use crate::session::{CallSession, Segment, SegmentKind, Settings};

/// How many finished calls the page lists.
pub const FINISHED: usize = 20;

/// How many calls in progress the page draws (the latest started). A busy PBX has thousands;
/// drawing them all would cost the event loop a CDR build each, 4 times a second, for a page
/// nobody can read. The page shows the total beside.
pub const ACTIVE_SHOWN: usize = 200;

/// One call as the page draws it.
#[derive(Debug, Clone, Serialize)]
pub struct CallLine {
    /// The session id.
    pub id: String,
    /// `start`, in the configured time zone.
    pub start: String,
    /// The caller's number (E.164 where it is one).
    pub caller: String,
    /// The number called.
    pub called: String,
    /// inbound, outbound, internal, click_to_call.
    pub kind: &'static str,
    /// What the caller is doing now (the last segment), or did last.
    pub state: SegmentKind,
    /// ms from the start to now (in progress) or to the end.
    pub duration_ms: i64,
    /// The timeline so far.
    pub segments: Vec<Segment>,
    /// Answered (finished calls).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered: Option<bool>,
    /// The hangup cause (finished calls).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// Why the record is incomplete, if it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partial: Option<String>,
    /// Start, ms since the epoch: the page writes every time in one zone and format.
    pub start_ms: i64,
    /// Start, µs since the epoch (to extend an open segment to now).
    #[serde(skip)]
    start_us: i64,
}

impl CallLine {
    /// A finished call as a stored CDR describes it (`kind` and `start_ms` beside it).
    pub(crate) fn stored(cdr: &serde_json::Value, kind: &str, start_ms: i64) -> Option<CallLine> {
        let text = |k: &str| cdr.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        let segments: Vec<Segment> =
            serde_json::from_value(cdr.get("timeline")?.clone()).unwrap_or_default();
        let kind: crate::session::cdr::CallKind =
            serde_json::from_value(serde_json::Value::String(kind.to_owned())).ok()?;
        Some(CallLine {
            id: text("id")?,
            start: text("start").unwrap_or_default(),
            caller: text("cliNum").unwrap_or_default(),
            called: text("ddiNum").unwrap_or_default(),
            kind: kind.as_str(),
            state: segments
                .last()
                .map(|s| s.kind)
                .unwrap_or(SegmentKind::Setup),
            duration_ms: segments.last().map(|s| s.end_ms).unwrap_or(0),
            segments,
            answered: Some(cdr.get("ans").and_then(|v| v.as_u64()) == Some(1)),
            cause: text("cause"),
            partial: text("partial"),
            start_ms,
            start_us: start_ms * 1000,
        })
    }

    fn from_record(rec: &CallRecord, finished: bool) -> CallLine {
        let c = &rec.cdr;
        CallLine {
            id: c.id.clone(),
            start: c.start.clone(),
            caller: c.cliNum.clone(),
            called: c.ddiNum.clone(),
            kind: rec.kind.as_str(),
            state: c
                .timeline
                .last()
                .map(|s| s.kind)
                .unwrap_or(SegmentKind::Setup),
            duration_ms: c.timeline.last().map(|s| s.end_ms).unwrap_or(0),
            segments: if c.timeline.is_empty() && !finished {
                // A call just created has no segment yet: it is in setup, and the open
                // segment grows from its start like any other.
                vec![Segment {
                    kind: SegmentKind::Setup,
                    party: None,
                    start_ms: 0,
                    end_ms: 0,
                }]
            } else {
                c.timeline.clone()
            },
            answered: finished.then_some(c.ans == Some(1)),
            cause: if finished { c.cause.clone() } else { None },
            partial: c.partial.clone(),
            start_ms: rec.times.start_us.div_euclid(1000),
            start_us: rec.times.start_us,
        }
    }

    /// The open segment runs on to `now_us`.
    fn extend_to(&mut self, now_us: i64) {
        let now_ms = (now_us - self.start_us).div_euclid(1000);
        if let Some(last) = self.segments.last_mut() {
            if now_ms > last.end_ms {
                last.end_ms = now_ms;
                self.duration_ms = now_ms;
            }
        }
    }
}

/// A segment kind and its colour (the page's legend).
#[derive(Debug, Clone, Serialize)]
pub struct KindColour {
    /// The kind.
    pub kind: SegmentKind,
    /// A CSS colour.
    pub colour: &'static str,
}

/// `/live.json`.
#[derive(Debug, Clone, Serialize)]
pub struct LivePage {
    /// Calls in progress (the latest [`ACTIVE_SHOWN`] started), oldest first.
    pub active: Vec<CallLine>,
    /// How many calls are in progress in all.
    pub active_total: usize,
    /// Calls that finished, newest first.
    pub finished: Vec<CallLine>,
    /// Webhook deliveries, newest first.
    pub deliveries: Vec<DeliveryNote>,
    /// The legend.
    pub kinds: Vec<KindColour>,
    /// The IANA zone every time on the page is written in (`[sessions] time_zone`).
    pub tz: String,
}

#[derive(Debug, Default)]
struct LiveState {
    active: Vec<CallLine>,
    active_total: usize,
    finished: VecDeque<CallLine>,
    /// The latest event time seen (µs) and when it was seen, so an open segment keeps
    /// growing between events.
    clock: Option<(i64, Instant)>,
    /// `[sessions] time_zone` as of the last refresh.
    tz: String,
}

/// The live page's state, shared by `run`'s loop (writer) and the admin server (reader).
#[derive(Debug)]
pub struct LiveView {
    state: Mutex<LiveState>,
    shown: usize,
}

impl Default for LiveView {
    fn default() -> Self {
        LiveView::showing(ACTIVE_SHOWN)
    }
}

impl LiveView {
    /// A view drawing at most `shown` calls in progress.
    pub fn showing(shown: usize) -> LiveView {
        LiveView {
            state: Mutex::default(),
            shown: shown.max(1),
        }
    }

    /// Replaces the calls in progress.
    pub fn refresh<'a>(&self, calls: impl Iterator<Item = &'a CallSession>, settings: &Settings) {
        let mut calls: Vec<&CallSession> = calls.collect();
        let total = calls.len();
        let latest = calls.iter().map(|c| c.end_us()).max().unwrap_or(i64::MIN);
        // The latest started, without sorting them all.
        if total > self.shown {
            calls.select_nth_unstable_by_key(total - self.shown, |c| c.timeline.start_us());
            calls.drain(..total - self.shown);
        }
        let mut active: Vec<CallLine> = calls
            .into_iter()
            .map(|c| CallLine::from_record(&cdr::build(c, settings, cdr::Stage::InProgress), false))
            .collect();
        active.sort_by_key(|c| c.start_us);
        if let Ok(mut s) = self.state.lock() {
            let later = match s.clock {
                Some((at, _)) => latest > at,
                None => latest != i64::MIN,
            };
            if later {
                s.clock = Some((latest, Instant::now()));
            }
            s.active = active;
            s.active_total = total;
            if s.tz != settings.tz_name {
                s.tz = settings.tz_name.clone();
            }
        }
    }

    /// Adds a finished call.
    pub fn finished(&self, rec: &CallRecord) {
        if let Ok(mut s) = self.state.lock() {
            if s.finished.len() == FINISHED {
                s.finished.pop_back();
            }
            s.finished.push_front(CallLine::from_record(rec, true));
        }
    }

    /// Adds calls that finished before this process started (oldest first), as the call
    /// store kept them.
    pub(crate) fn history(&self, lines: impl Iterator<Item = CallLine>) {
        if let Ok(mut s) = self.state.lock() {
            for line in lines {
                if s.finished.len() == FINISHED {
                    s.finished.pop_back();
                }
                s.finished.push_front(line);
            }
        }
    }

    /// The page's data, with `deliveries` (newest first).
    pub fn page(&self, deliveries: Vec<DeliveryNote>) -> LivePage {
        let (mut active, active_total, finished, clock, tz) = match self.state.lock() {
            Ok(s) => (
                s.active.clone(),
                s.active_total,
                s.finished.iter().cloned().collect(),
                s.clock,
                s.tz.clone(),
            ),
            Err(_) => Default::default(),
        };
        if let Some((at, seen)) = clock {
            let now_us = at + seen.elapsed().as_micros() as i64;
            for c in &mut active {
                c.extend_to(now_us);
            }
        }
        LivePage {
            active,
            active_total,
            finished,
            deliveries,
            kinds: SegmentKind::ALL
                .iter()
                .map(|&kind| KindColour {
                    kind,
                    colour: kind.colour(),
                })
                .collect(),
            tz: if tz.is_empty() { "UTC".into() } else { tz },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::esl::{Limits, Message};
    use crate::session::SessionTracker;
    use futures::StreamExt;
    use std::sync::Arc;

    #[tokio::test]
    async fn calls_in_progress_grow_and_finished_calls_keep_their_timeline() {
        let settings = Arc::new(Settings::default());
        let mut tracker = SessionTracker::new(Arc::clone(&settings));
        let view = LiveView::default();
        let mut saw_active = false;
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/freeswitch-1.10/01-inbound-answered.esl");
        let mut stream = crate::replay::open(&path, Limits::default()).await.unwrap();
        while let Some(item) = stream.next().await {
            let Ok(Ok(Message::Event(ev))) = item else {
                continue;
            };
            for rec in tracker.on_event(&ev) {
                view.finished(&rec);
            }
            view.refresh(tracker.calls(), &settings);
            let page = view.page(Vec::new());
            for c in &page.active {
                // Every call in progress draws a bar, even before its first segment.
                assert!(!c.segments.is_empty(), "{c:?}");
            }
            if let Some(c) = page.active.first() {
                saw_active = true;
                assert_eq!(c.segments.last().map_or(0, |s| s.end_ms), c.duration_ms);
                assert!(c.answered.is_none());
            }
        }
        assert!(saw_active);
        let page = view.page(Vec::new());
        assert!(page.active.is_empty());
        assert_eq!(page.finished.len(), 1);
        let done = &page.finished[0];
        assert_eq!(done.answered, Some(true));
        assert!(done.segments.iter().any(|s| s.kind == SegmentKind::Talk));
        assert_eq!(page.kinds.len(), SegmentKind::ALL.len());
    }

    #[tokio::test]
    async fn a_busy_pbx_draws_only_its_latest_calls_and_counts_them_all() {
        let settings = Arc::new(Settings::default());
        let mut tracker = SessionTracker::new(Arc::clone(&settings));
        let view = LiveView::showing(2);
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/freeswitch-1.10/16-concurrent-mix.esl");
        let mut stream = crate::replay::open(&path, Limits::default()).await.unwrap();
        let mut most = 0;
        while let Some(item) = stream.next().await {
            let Ok(Ok(Message::Event(ev))) = item else {
                continue;
            };
            tracker.on_event(&ev);
            view.refresh(tracker.calls(), &settings);
            let page = view.page(Vec::new());
            assert_eq!(page.active_total, tracker.active());
            assert_eq!(page.active.len(), tracker.active().min(2));
            // The two drawn are the two latest started, oldest first.
            let mut starts: Vec<i64> = tracker.calls().map(|c| c.timeline.start_us()).collect();
            starts.sort_unstable();
            let drawn: Vec<i64> = page.active.iter().map(|c| c.start_us).collect();
            assert_eq!(drawn, starts[starts.len() - drawn.len()..]);
            most = most.max(page.active_total);
        }
        assert!(most >= 4, "capture 16 has up to 5 calls at once: {most}");
    }

    #[test]
    fn an_open_segment_runs_on_to_now() {
        let mut line = CallLine {
            id: "c".into(),
            start: String::new(),
            caller: String::new(),
            called: String::new(),
            kind: "inbound",
            state: SegmentKind::Talk,
            duration_ms: 2_000,
            segments: vec![Segment {
                kind: SegmentKind::Talk,
                party: None,
                start_ms: 0,
                end_ms: 2_000,
            }],
            answered: None,
            cause: None,
            partial: None,
            start_ms: 1_000,
            start_us: 1_000_000,
        };
        line.extend_to(1_000_000 + 5_000_000);
        assert_eq!((line.segments[0].end_ms, line.duration_ms), (5_000, 5_000));
        line.extend_to(1_000_000);
        assert_eq!(line.duration_ms, 5_000, "never shrinks");
    }
}

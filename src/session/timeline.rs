//! A call's segment timeline: what the caller was doing from the first leg's creation to the
//! last leg's end. Segments partition the call: contiguous, none negative, summing to the
//! duration to the millisecond.

use serde::{Deserialize, Serialize};

/// What the caller was doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum SegmentKind {
    /// Before anything else: dial plan, transfers between steps.
    Setup,
    /// In an IVR (answered by the PBX, not a person).
    Ivr,
    /// Waiting in a call-center queue.
    Queue,
    /// A device, agent, group or the far end is alerting.
    Ring,
    /// Bridged with a person or the far end.
    Talk,
    /// Either party holding.
    Hold,
    /// Parked (valet parking).
    Park,
    /// In voicemail.
    Voicemail,
    /// The event stream had a gap: what happened is not known.
    Unknown,
}

impl SegmentKind {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            SegmentKind::Setup => "setup",
            SegmentKind::Ivr => "ivr",
            SegmentKind::Queue => "queue",
            SegmentKind::Ring => "ring",
            SegmentKind::Talk => "talk",
            SegmentKind::Hold => "hold",
            SegmentKind::Park => "park",
            SegmentKind::Voicemail => "voicemail",
            SegmentKind::Unknown => "unknown",
        }
    }

    /// Every kind, in the order a legend lists them.
    pub const ALL: [SegmentKind; 9] = [
        SegmentKind::Setup,
        SegmentKind::Ivr,
        SegmentKind::Queue,
        SegmentKind::Ring,
        SegmentKind::Talk,
        SegmentKind::Hold,
        SegmentKind::Park,
        SegmentKind::Voicemail,
        SegmentKind::Unknown,
    ];

    /// The colour a timeline picture draws it in (the live page and `explain --svg` share
    /// it, so the two pictures read the same).
    pub fn colour(self) -> &'static str {
        match self {
            SegmentKind::Setup => "#9aa5b1",
            SegmentKind::Ivr => "#8e6bd1",
            SegmentKind::Queue => "#b5651d",
            SegmentKind::Ring => "#f2c94c",
            SegmentKind::Talk => "#27ae60",
            SegmentKind::Hold => "#eb5757",
            SegmentKind::Park => "#2d9cdb",
            SegmentKind::Voicemail => "#56ccf2",
            SegmentKind::Unknown => "#d0d0d0",
        }
    }
}

/// One stretch of the call, in milliseconds from the call's start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Segment {
    /// What happened.
    pub kind: SegmentKind,
    /// Who the caller was with (a device number, `group:2001`, `queue:support@default`, an
    /// external number), when it applies.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub party: Option<String>,
    /// Start, ms after the call started.
    pub start_ms: i64,
    /// End, ms after the call started.
    pub end_ms: i64,
}

impl Segment {
    /// Length in ms.
    pub fn ms(&self) -> i64 {
        self.end_ms - self.start_ms
    }
}

/// A timeline under construction. Times are µs (event timestamps); they are clamped to never
/// go backwards, because FreeSWITCH stamps events from several threads.
#[derive(Debug, Clone)]
pub struct Timeline {
    start_us: i64,
    closed: Vec<(SegmentKind, Option<String>, i64, i64)>,
    open: (SegmentKind, Option<String>, i64),
    last_us: i64,
}

impl Timeline {
    /// A timeline starting at `start_us` in `setup`.
    pub fn new(start_us: i64) -> Self {
        Timeline {
            start_us,
            closed: Vec::new(),
            open: (SegmentKind::Setup, None, start_us),
            last_us: start_us,
        }
    }

    /// When the call started (µs).
    pub fn start_us(&self) -> i64 {
        self.start_us
    }

    /// The latest time seen (µs).
    pub fn last_us(&self) -> i64 {
        self.last_us
    }

    /// Moves the clock; returns the clamped time.
    pub fn tick(&mut self, at_us: i64) -> i64 {
        self.last_us = self.last_us.max(at_us);
        self.last_us
    }

    /// Enters `kind` with `party` at `at_us`, closing the open segment if it differs.
    pub fn enter(&mut self, kind: SegmentKind, party: Option<String>, at_us: i64) {
        let at = self.tick(at_us);
        if self.open.0 == kind && self.open.1 == party {
            return;
        }
        let (k, p, s) = std::mem::replace(&mut self.open, (kind, party, at));
        if at > s {
            self.closed.push((k, p, s, at));
        }
    }

    /// Moves the start to `start_us` when nothing has happened on the timeline yet and it is
    /// within the first stretch: an adopted call's start is known only to the second from
    /// `show channels` until its first event gives the microsecond.
    pub fn refine_start(&mut self, start_us: i64) {
        if self.closed.is_empty()
            && self.open.2 == self.start_us
            && (self.start_us..=self.last_us).contains(&start_us)
        {
            self.start_us = start_us;
            self.open.2 = start_us;
        }
    }

    /// The same timeline starting earlier, the added stretch `unknown` (a call joined after a
    /// reconnect, whose start FreeSWITCH reported later).
    pub fn with_earlier_start(mut self, start_us: i64) -> Self {
        if start_us < self.start_us {
            self.closed
                .insert(0, (SegmentKind::Unknown, None, start_us, self.start_us));
            self.start_us = start_us;
        }
        self
    }

    /// Closes the timeline at `end_us` and returns the segments (ms from the start; merged
    /// where neighbours are equal) with the partition check's verdict.
    pub fn finish(&self, end_us: i64) -> (Vec<Segment>, Result<(), PartitionError>) {
        self.segments(end_us, false)
    }

    /// The timeline of a call still in progress, up to `now_us`: like [`Timeline::finish`],
    /// but the open segment stays last even while it is empty, so that what the caller is
    /// doing now (talking since the bridge a moment ago) is what the record says and what a
    /// live view extends.
    pub fn so_far(&self, now_us: i64) -> (Vec<Segment>, Result<(), PartitionError>) {
        self.segments(now_us, true)
    }

    fn segments(&self, end_us: i64, keep_open: bool) -> (Vec<Segment>, Result<(), PartitionError>) {
        let end_us = end_us.max(self.last_us);
        let mut raw = self.closed.clone();
        let (k, p, s) = self.open.clone();
        raw.push((k, p, s, end_us));
        let last = raw.len() - 1;
        let ms = |us: i64| (us - self.start_us).div_euclid(1000);
        let mut out: Vec<Segment> = Vec::with_capacity(raw.len());
        for (i, (kind, party, s, e)) in raw.into_iter().enumerate() {
            let (start_ms, end_ms) = (ms(s), ms(e));
            if end_ms == start_ms && !(keep_open && i == last) {
                continue;
            }
            match out.last_mut() {
                Some(l) if l.kind == kind && l.party == party && l.end_ms == start_ms => {
                    l.end_ms = end_ms
                }
                _ => out.push(Segment {
                    kind,
                    party,
                    start_ms,
                    end_ms,
                }),
            }
        }
        let verdict = check_partition(&out, ms(end_us));
        (out, verdict)
    }
}

/// A timeline that does not partition its call: a bug to report, never silent garbage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartitionError {
    /// A gap or an overlap.
    #[error("segment {kind} starts at {start_ms} ms, expected {expected_ms}")]
    NotContiguous {
        /// The segment's kind.
        kind: &'static str,
        /// Where it starts.
        start_ms: i64,
        /// Where the one before ended.
        expected_ms: i64,
    },
    /// A segment ends before it starts.
    #[error("segment {0} is negative")]
    Negative(&'static str),
    /// The segments do not add up to the call.
    #[error("segments end at {end_ms} ms, the call lasted {duration_ms} ms")]
    WrongLength {
        /// Where the last segment ends.
        end_ms: i64,
        /// The call's duration.
        duration_ms: i64,
    },
}

/// The partition invariant: contiguous from 0, none negative, ending at `duration_ms`.
pub(crate) fn check_partition(
    segments: &[Segment],
    duration_ms: i64,
) -> Result<(), PartitionError> {
    let mut at = 0;
    for s in segments {
        if s.start_ms != at {
            return Err(PartitionError::NotContiguous {
                kind: s.kind.as_str(),
                start_ms: s.start_ms,
                expected_ms: at,
            });
        }
        if s.end_ms < s.start_ms {
            return Err(PartitionError::Negative(s.kind.as_str()));
        }
        at = s.end_ms;
    }
    if at != duration_ms.max(0) {
        return Err(PartitionError::WrongLength {
            end_ms: at,
            duration_ms,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_partition_and_merge_and_clamp() {
        let mut t = Timeline::new(1_000_000);
        t.enter(SegmentKind::Ring, Some("1001".into()), 1_020_000);
        t.enter(SegmentKind::Talk, Some("1001".into()), 4_000_000);
        // A late, earlier-stamped event cannot make a segment negative: the hold is clamped
        // to 4.0 s and the empty talk before it disappears.
        t.enter(SegmentKind::Hold, None, 3_900_000);
        t.enter(SegmentKind::Talk, Some("1001".into()), 6_000_000);
        let (segs, ok) = t.finish(9_000_000);
        ok.unwrap();
        let kinds: Vec<_> = segs.iter().map(|s| s.kind).collect();
        use SegmentKind::*;
        assert_eq!(kinds, vec![Setup, Ring, Hold, Talk]);
        assert_eq!(segs[2].start_ms, 3_000);
        assert_eq!(segs.iter().map(Segment::ms).sum::<i64>(), 8_000);
        assert!(segs.iter().all(|s| s.ms() >= 0));
    }

    #[test]
    fn a_broken_partition_is_reported() {
        let segs = vec![Segment {
            kind: SegmentKind::Talk,
            party: None,
            start_ms: 5,
            end_ms: 10,
        }];
        assert!(check_partition(&segs, 10).is_err());
        assert!(check_partition(&[], 0).is_ok());
    }
}

//! The session tracker's clock: the event stream's own time (`Event-Date-Timestamp`), which
//! drives expiry.
//!
//! It follows the events, but one timestamp far from the others (a glitching clock, a corrupt
//! frame, a hostile peer) must not become the time: a single HEARTBEAT dated eight days ahead
//! would otherwise expire every call in progress and every call after it. A timestamp more
//! than [`MAX_JUMP_US`] away from the clock is an outlier: counted and ignored, unless the
//! events after it agree with it ([`CONFIRMATIONS`] in a row), which is what a real jump looks
//! like (a reconnect after an outage, the next capture file of a replay).

/// How far one event may move the clock without being confirmed.
pub(super) const MAX_JUMP_US: i64 = 5 * 60 * 1_000_000;

/// Consecutive events that must agree with a far timestamp before the clock takes it.
pub(super) const CONFIRMATIONS: u32 = 3;

/// The stream's time, in microseconds since the epoch (0 before the first event).
#[derive(Debug, Default, Clone)]
pub(super) struct EventClock {
    now_us: i64,
    /// A far timestamp seen, and how many events in a row have agreed with it.
    candidate: Option<(i64, u32)>,
    outliers: u64,
}

impl EventClock {
    /// The current time.
    pub(super) fn now_us(&self) -> i64 {
        self.now_us
    }

    /// Timestamps ignored as outliers so far.
    pub(super) fn outliers(&self) -> u64 {
        self.outliers
    }

    /// Takes an event's timestamp; returns whether it was an outlier (ignored).
    pub(super) fn observe(&mut self, ts: i64) -> bool {
        if self.now_us == 0 || ts.abs_diff(self.now_us) <= MAX_JUMP_US as u64 {
            self.candidate = None;
            self.now_us = self.now_us.max(ts);
            return false;
        }
        let agreeing = match self.candidate {
            Some((at, n)) if ts.abs_diff(at) <= MAX_JUMP_US as u64 => n + 1,
            _ => 1,
        };
        if agreeing >= CONFIRMATIONS {
            // The stream has moved: follow it, backwards too (an older capture replayed
            // after a newer one).
            self.candidate = None;
            self.now_us = ts;
            return false;
        }
        self.candidate = Some((ts, agreeing));
        self.outliers += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_796_000_000_000_000;
    const SECOND: i64 = 1_000_000;

    #[test]
    fn follows_the_stream_and_ignores_a_lone_far_timestamp() {
        let mut c = EventClock::default();
        assert!(!c.observe(T0));
        assert!(!c.observe(T0 + 20 * SECOND));
        // Slightly out of order: kept, the clock does not go back.
        assert!(!c.observe(T0 + 19 * SECOND));
        assert_eq!(c.now_us(), T0 + 20 * SECOND);
        for far in [i64::MAX, T0 + 8 * 86_400 * SECOND, 0, i64::MIN, -1] {
            assert!(c.observe(far), "{far}");
            assert!(!c.observe(T0 + 21 * SECOND));
            assert_eq!(c.now_us(), T0 + 21 * SECOND);
        }
        assert_eq!(c.outliers(), 5);
    }

    #[test]
    fn a_real_jump_is_taken_once_the_events_after_it_agree() {
        let mut c = EventClock::default();
        c.observe(T0);
        let later = T0 + 3 * 3600 * SECOND;
        assert!(c.observe(later));
        assert!(c.observe(later + SECOND));
        assert!(!c.observe(later + 2 * SECOND));
        assert_eq!(c.now_us(), later + 2 * SECOND);
        // Backwards as well: an older capture after a newer one.
        let earlier = T0 - 86_400 * SECOND;
        for i in 0..3 {
            c.observe(earlier + i * SECOND);
        }
        assert_eq!(c.now_us(), earlier + 2 * SECOND);
        assert_eq!(c.outliers(), 4);
    }

    #[test]
    fn far_timestamps_that_disagree_with_each_other_never_move_it() {
        let mut c = EventClock::default();
        c.observe(T0);
        for i in 0..100 {
            assert!(c.observe(T0 + (i + 1) * 86_400 * SECOND));
        }
        assert_eq!(c.now_us(), T0);
    }
}

//! A circuit breaker per routing URL: during an outage, calls go straight to the failure branch
//! (or the last-known-good cache) instead of each caller waiting out the deadline.
//!
//! Closed → after `failures` consecutive failures → open for `cooldown` → one probe call is
//! let through (half-open): success closes the breaker, failure opens it again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// When the breaker opens and for how long.
#[derive(Debug, Clone, Copy)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker; 0 turns breakers off.
    pub failures: u32,
    /// How long it stays open before one probe is let through.
    pub cooldown: Duration,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    Probing { since: Instant },
}

/// May this call go to the routing server?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Yes.
    Go,
    /// Yes, as the single probe after a cooldown.
    Probe,
    /// No: the breaker is open.
    Refused,
}

/// The breakers of every routing URL (keyed by the URL template, so one per configured URL).
#[derive(Debug)]
pub(crate) struct Breakers {
    cfg: BreakerConfig,
    states: Mutex<HashMap<String, State>>,
}

impl Breakers {
    /// Breakers with one configuration.
    pub(crate) fn new(cfg: BreakerConfig) -> Breakers {
        Breakers {
            cfg,
            states: Mutex::new(HashMap::new()),
        }
    }

    /// Asks before calling `key`.
    pub(crate) fn admit(&self, key: &str) -> Admission {
        if self.cfg.failures == 0 {
            return Admission::Go;
        }
        let now = Instant::now();
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let state = states
            .entry(key.to_owned())
            .or_insert(State::Closed { failures: 0 });
        match *state {
            State::Closed { .. } => Admission::Go,
            State::Open { until } if now >= until => {
                *state = State::Probing { since: now };
                Admission::Probe
            }
            State::Open { .. } => Admission::Refused,
            // A probe that never reported back (its caller hung up) must not wedge the
            // breaker: after another cooldown, let a new probe through.
            State::Probing { since } if now.duration_since(since) >= self.cfg.cooldown => {
                *state = State::Probing { since: now };
                Admission::Probe
            }
            State::Probing { .. } => Admission::Refused,
        }
    }

    /// Reports how a call to `key` went. Returns true when this report opened the breaker.
    pub(crate) fn record(&self, key: &str, ok: bool) -> bool {
        if self.cfg.failures == 0 {
            return false;
        }
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let state = states
            .entry(key.to_owned())
            .or_insert(State::Closed { failures: 0 });
        let open = State::Open {
            until: Instant::now() + self.cfg.cooldown,
        };
        match (*state, ok) {
            (_, true) => {
                *state = State::Closed { failures: 0 };
                false
            }
            (State::Closed { failures }, false) if failures + 1 >= self.cfg.failures => {
                *state = open;
                true
            }
            (State::Closed { failures }, false) => {
                *state = State::Closed {
                    failures: failures + 1,
                };
                false
            }
            (State::Probing { .. }, false) => {
                *state = open;
                true
            }
            (State::Open { .. }, false) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_and_probes_after_the_cooldown() {
        let b = Breakers::new(BreakerConfig {
            failures: 3,
            cooldown: Duration::from_millis(60),
        });
        for _ in 0..2 {
            assert_eq!(b.admit("u"), Admission::Go);
            assert!(!b.record("u", false));
        }
        // A success in between resets the count.
        assert!(!b.record("u", true));
        for i in 0..3 {
            assert_eq!(b.admit("u"), Admission::Go);
            assert_eq!(b.record("u", false), i == 2);
        }
        assert_eq!(b.admit("u"), Admission::Refused);
        assert_eq!(b.admit("other"), Admission::Go, "breakers are per URL");
        std::thread::sleep(Duration::from_millis(70));
        assert_eq!(b.admit("u"), Admission::Probe);
        assert_eq!(b.admit("u"), Admission::Refused, "one probe at a time");
        assert!(b.record("u", false), "a failed probe opens it again");
        assert_eq!(b.admit("u"), Admission::Refused);
        std::thread::sleep(Duration::from_millis(70));
        assert_eq!(b.admit("u"), Admission::Probe);
        b.record("u", true);
        assert_eq!(b.admit("u"), Admission::Go, "a good probe closes it");
    }

    #[test]
    fn a_lost_probe_does_not_wedge_the_breaker() {
        let b = Breakers::new(BreakerConfig {
            failures: 1,
            cooldown: Duration::from_millis(30),
        });
        b.record("u", false);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.admit("u"), Admission::Probe);
        // The probe's caller hung up: no report.
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.admit("u"), Admission::Probe);
    }

    #[test]
    fn zero_failures_turns_it_off() {
        let b = Breakers::new(BreakerConfig {
            failures: 0,
            cooldown: Duration::from_secs(1),
        });
        for _ in 0..10 {
            b.record("u", false);
        }
        assert_eq!(b.admit("u"), Admission::Go);
    }
}

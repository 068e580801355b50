//! What an attempt's outcome means for the delivery: done, again later, give up, or stop
//! the whole webhook.

use std::time::Duration;

/// The result of one HTTP attempt, as far as retrying cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// A response arrived.
    Response {
        /// Its status code.
        status: u16,
        /// Its `Retry-After` header, if any.
        retry_after: Option<String>,
    },
    /// No response: timeout, refused, reset, TLS or DNS failure.
    Failed,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Delivered.
    Delivered,
    /// Try again after this long.
    Retry(Duration),
    /// Give up: dead letter.
    Dead,
    /// 410 Gone: the receiver asked never to be called again; disable the webhook.
    Disable,
}

/// The longest `Retry-After` honoured: a receiver asking for days is parked for an hour.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// When failed attempts are tried again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Schedule {
    /// Attempt `n` × 2 s (about two minutes over 10 retries): the documented default.
    #[default]
    Linear,
    /// 10 s, 20 s, 40 s… doubling up to `max_ms`, each ±25 % at random: for receivers that
    /// may be down for hours (30 retries with a 1 h cap span about a day).
    Exponential {
        /// The longest wait between two attempts, ms.
        max_ms: u64,
    },
}

/// The delay after attempt `n` (1-based) on `schedule`.
pub(crate) fn backoff(attempt: u32, schedule: Schedule) -> Duration {
    let n = attempt.max(1);
    match schedule {
        Schedule::Linear => Duration::from_secs(2 * u64::from(n)),
        Schedule::Exponential { max_ms } => {
            let step = 10_000u64
                .saturating_mul(1u64 << (n - 1).min(40))
                .min(max_ms.max(10_000));
            // ±25 %: receivers coming back are not met by every waiting request at once.
            let jitter = fastrand::u64(0..=step / 2);
            Duration::from_millis(step - step / 4 + jitter)
        }
    }
}

/// Decides what attempt number `attempt` (1-based) of `max_attempts` leads to. `now_unix` is
/// for `Retry-After` given as an HTTP date.
pub(crate) fn judge(
    outcome: &Attempt,
    attempt: u32,
    max_attempts: u32,
    schedule: Schedule,
    now_unix: i64,
) -> Verdict {
    let backoff = |n| backoff(n, schedule);
    let again = |d: Duration| {
        if attempt < max_attempts {
            Verdict::Retry(d)
        } else {
            Verdict::Dead
        }
    };
    match outcome {
        Attempt::Response { status, .. } if (200..300).contains(status) => Verdict::Delivered,
        Attempt::Response { status: 410, .. } => Verdict::Disable,
        Attempt::Response {
            status: 429 | 503,
            retry_after,
        } => {
            let asked = retry_after
                .as_deref()
                .and_then(|v| parse_retry_after(v, now_unix));
            again(asked.map_or(backoff(attempt), |d| d.min(MAX_RETRY_AFTER)))
        }
        // A timeout from a proxy is worth another try.
        Attempt::Response { status: 408, .. } => again(backoff(attempt)),
        Attempt::Response { status, .. } if (400..500).contains(status) => Verdict::Dead,
        Attempt::Response { .. } | Attempt::Failed => again(backoff(attempt)),
    }
}

/// `Retry-After`: delta seconds or an HTTP date.
pub(crate) fn parse_retry_after(value: &str, now_unix: i64) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = jiff::fmt::rfc2822::parse(v).ok()?.timestamp().as_second();
    Some(Duration::from_secs(
        at.saturating_sub(now_unix).max(0) as u64
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, ra: Option<&str>) -> Attempt {
        Attempt::Response {
            status,
            retry_after: ra.map(str::to_owned),
        }
    }

    #[test]
    fn any_2xx_is_success() {
        for s in [200, 201, 202, 204, 299] {
            assert_eq!(
                judge(&resp(s, None), 1, 2, Schedule::Linear, 0),
                Verdict::Delivered
            );
        }
    }

    #[test]
    fn server_errors_and_timeouts_retry_on_the_schedule_then_die() {
        assert_eq!(
            judge(&resp(500, None), 1, 3, Schedule::Linear, 0),
            Verdict::Retry(Duration::from_secs(2))
        );
        assert_eq!(
            judge(&Attempt::Failed, 2, 3, Schedule::Linear, 0),
            Verdict::Retry(Duration::from_secs(4))
        );
        assert_eq!(
            judge(&Attempt::Failed, 3, 3, Schedule::Linear, 0),
            Verdict::Dead
        );
        assert_eq!(
            judge(&resp(502, None), 1, 1, Schedule::Linear, 0),
            Verdict::Dead
        );
    }

    #[test]
    fn client_errors_stop_and_410_disables() {
        assert_eq!(
            judge(&resp(400, None), 1, 5, Schedule::Linear, 0),
            Verdict::Dead
        );
        assert_eq!(
            judge(&resp(404, None), 1, 5, Schedule::Linear, 0),
            Verdict::Dead
        );
        assert_eq!(
            judge(&resp(410, None), 1, 5, Schedule::Linear, 0),
            Verdict::Disable
        );
        assert_eq!(
            judge(&resp(408, None), 1, 5, Schedule::Linear, 0),
            Verdict::Retry(Duration::from_secs(2))
        );
    }

    #[test]
    fn retry_after_is_honoured_in_seconds_and_dates() {
        assert_eq!(
            judge(&resp(429, Some("7")), 1, 2, Schedule::Linear, 0),
            Verdict::Retry(Duration::from_secs(7))
        );
        let now = jiff::fmt::rfc2822::parse("Wed, 21 Oct 2015 07:28:00 GMT")
            .unwrap()
            .timestamp()
            .as_second();
        assert_eq!(
            judge(
                &resp(503, Some("Wed, 21 Oct 2015 07:28:30 GMT")),
                1,
                2,
                Schedule::Linear,
                now
            ),
            Verdict::Retry(Duration::from_secs(30))
        );
        assert_eq!(
            judge(&resp(503, Some("999999")), 1, 2, Schedule::Linear, 0),
            Verdict::Retry(MAX_RETRY_AFTER)
        );
        assert_eq!(
            judge(&resp(503, Some("soon")), 2, 3, Schedule::Linear, 0),
            Verdict::Retry(Duration::from_secs(4))
        );
    }

    #[test]
    fn the_exponential_schedule_doubles_with_jitter_up_to_its_cap() {
        let hour = Schedule::Exponential { max_ms: 3_600_000 };
        for (attempt, step_s) in [(1, 10), (2, 20), (3, 40), (9, 2560), (10, 3600), (30, 3600)] {
            for _ in 0..50 {
                let d = backoff(attempt, hour).as_millis() as u64;
                let step = step_s * 1000;
                assert!(
                    (step * 3 / 4..=step * 5 / 4).contains(&d),
                    "attempt {attempt}: {d} ms, step {step}"
                );
            }
        }
        // Thirty retries span about a day.
        let total: u64 = (1..=30)
            .map(|n| 10_000u64.saturating_mul(1 << (n - 1)).min(3_600_000))
            .sum();
        assert!(
            (20 * 3600 * 1000..30 * 3600 * 1000).contains(&total),
            "{total}"
        );
        assert!(matches!(
            judge(&Attempt::Failed, 30, 31, hour, 0),
            Verdict::Retry(d) if (2700..=4500).contains(&d.as_secs())
        ));
        assert_eq!(judge(&Attempt::Failed, 31, 31, hour, 0), Verdict::Dead);
    }
}

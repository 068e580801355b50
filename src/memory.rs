//! Giving memory back once calls have ended. glibc's allocator keeps what a burst of calls
//! allocated in its arenas for reuse; a process that once held thousands of calls would stay
//! at that size for good. After many calls have ended, the free pages are returned to the
//! system (`malloc_trim`).

use std::time::Duration;

/// How often the number of calls is looked at.
pub(crate) const TRIM_EVERY: Duration = Duration::from_secs(15);

/// Calls that must have ended since the last trim before the next one: a trim walks the
/// heap, so it is kept for when there is something worth returning.
const ENDED_BEFORE_TRIM: usize = 1_000;

/// The most calls in progress since the last trim.
#[derive(Debug, Default)]
pub(crate) struct Trim {
    high: usize,
}

impl Trim {
    /// Notes the calls in progress now; trims when enough have ended since the high mark.
    /// True when it trimmed.
    pub(crate) fn check(&mut self, active: usize) -> bool {
        self.high = self.high.max(active);
        if self.high - active < ENDED_BEFORE_TRIM {
            return false;
        }
        self.high = active;
        release();
        true
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release() {
    // SAFETY: malloc_trim only walks and releases the allocator's own free memory; it takes
    // the allocator's locks like any allocation does.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_a_thousand_calls_have_ended_since_the_high_mark() {
        let mut t = Trim::default();
        assert!(!t.check(5_000));
        assert!(!t.check(4_500));
        assert!(t.check(3_900));
        // The mark is now 3,900: another thousand must end first.
        assert!(!t.check(3_000));
        assert!(t.check(2_800));
        assert!(t.check(0));
        assert_eq!(t.high, 0);
    }
}

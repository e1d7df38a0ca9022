// SPDX-License-Identifier: GPL-2.0

//! When to try again: the retry delay that doubles from 5 s to 300 s, the one queued retry,
//! and how much one `PLUG` may ask for after refusals.

use kernel::prelude::*;

/// First retry delay after a refused or failed request, in seconds.
pub(crate) const RETRY_MIN_SECS: u32 = 5;
/// Longest retry delay, in seconds.
pub(crate) const RETRY_MAX_SECS: u32 = 300;

/// The retry state of a device's run loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Backoff {
    /// Delay before the next retry after a failure.
    delay_secs: u32,
    /// When the retry this step scheduled runs, in ms of `CLOCK_BOOTTIME` (shown in sysfs).
    retry_at_ms: Option<i64>,
    /// When the queued retry work item runs, if one is queued.
    queued_ms: Option<i64>,
}

impl Backoff {
    pub(crate) const fn new() -> Self {
        Self {
            delay_secs: RETRY_MIN_SECS,
            retry_at_ms: None,
            queued_ms: None,
        }
    }

    /// Something went through: the next failure waits the shortest delay again.
    pub(crate) fn reset(&mut self) {
        self.delay_secs = RETRY_MIN_SECS;
    }

    /// The delay for a retry after a failure; the one after it is twice as long, up to the
    /// longest.
    pub(crate) fn next_delay(&mut self) -> u32 {
        let secs = self.delay_secs;
        self.delay_secs = (secs * 2).min(RETRY_MAX_SECS);
        secs
    }

    /// A retry in `secs` seconds from `now_ms` is wanted. A queued retry that comes sooner
    /// stays (it runs a step that schedules again if it needs to); otherwise the queued one is
    /// moved (or one queued): returns the delay to queue it with, in seconds.
    pub(crate) fn schedule(&mut self, now_ms: i64, secs: u32) -> Option<u32> {
        let at = now_ms + i64::from(secs) * 1000;
        match self.queued_ms {
            Some(queued) if queued > now_ms && queued <= at => {
                self.retry_at_ms = Some(queued);
                None
            }
            _ => {
                self.retry_at_ms = Some(at);
                self.queued_ms = Some(at);
                Some(secs)
            }
        }
    }

    /// The queued retry runs now.
    pub(crate) fn ran(&mut self) {
        self.queued_ms = None;
    }

    /// A step starts, or the loop stops: no retry is promised (until one is scheduled).
    pub(crate) fn clear(&mut self) {
        self.retry_at_ms = None;
    }

    /// Unbinding: nothing is queued any more.
    pub(crate) fn cancelled(&mut self) {
        self.retry_at_ms = None;
        self.queued_ms = None;
    }

    /// When the promised retry runs, in ms of `CLOCK_BOOTTIME`.
    pub(crate) fn retry_at_ms(&self) -> Option<i64> {
        self.retry_at_ms
    }
}

/// The most bytes one `PLUG` asks for: halved when the device refuses a plug or does not
/// answer in time (e.g. the host cannot back that much now, or needs long to), so that what it
/// can back is plugged; doubled again after each plug it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PlugLimit {
    max: u64,
    /// Whether the first halving was logged.
    told: bool,
}

impl PlugLimit {
    pub(crate) const fn new() -> Self {
        Self {
            max: u64::MAX,
            told: false,
        }
    }

    /// The most bytes one `PLUG` asks for now.
    pub(crate) fn get(&self) -> u64 {
        self.max
    }

    /// A plug of `tried` bytes was refused or not answered: halves the limit if plugs down to
    /// `least` bytes are possible. Returns `None` if it did not (nothing smaller to try), else
    /// whether this is the first halving (to be logged).
    pub(crate) fn halve(&mut self, tried: u64, least: u64) -> Option<bool> {
        if tried <= least {
            return None;
        }
        self.max = (tried / 2).max(least);
        let first = !self.told;
        self.told = true;
        Some(first)
    }

    /// The device accepted a plug: more may be asked for at once again.
    pub(crate) fn accepted(&mut self) {
        self.max = self.max.saturating_mul(2);
    }
}

#[kunit_tests(virtio_mem_rust_backoff)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_longest_and_reset() {
        let mut b = Backoff::new();
        assert_eq!(b.next_delay(), 5);
        assert_eq!(b.next_delay(), 10);
        for _ in 0..10 {
            b.next_delay();
        }
        assert_eq!(b.next_delay(), RETRY_MAX_SECS);
        b.reset();
        assert_eq!(b.next_delay(), RETRY_MIN_SECS);
    }

    #[test]
    fn a_sooner_retry_moves_the_queued_one_up() {
        let mut b = Backoff::new();
        // Nothing queued: queue one in 300 s.
        assert_eq!(b.schedule(1000, 300), Some(300));
        assert_eq!(b.retry_at_ms(), Some(301_000));
        // A retry wanted in 5 s moves it up (the queued one would hide it).
        assert_eq!(b.schedule(2000, 5), Some(5));
        assert_eq!(b.retry_at_ms(), Some(7000));
        // One wanted later keeps the sooner one, and shows when that runs.
        assert_eq!(b.schedule(3000, 60), None);
        assert_eq!(b.retry_at_ms(), Some(7000));
        // Once it ran, the next one is queued again.
        b.ran();
        assert_eq!(b.schedule(8000, 60), Some(60));
        b.cancelled();
        assert_eq!(b.retry_at_ms(), None);
        assert_eq!(b.schedule(9000, 60), Some(60));
    }

    #[test]
    fn plug_limit_halves_down_to_the_least_and_grows_back() {
        let mut l = PlugLimit::new();
        assert_eq!(l.halve(1 << 30, 128 << 20), Some(true));
        assert_eq!(l.get(), 512 << 20);
        assert_eq!(l.halve(512 << 20, 128 << 20), Some(false));
        assert_eq!(l.halve(160 << 20, 128 << 20), Some(false));
        assert_eq!(l.get(), 128 << 20);
        assert_eq!(l.halve(128 << 20, 128 << 20), None);
        l.accepted();
        assert_eq!(l.get(), 256 << 20);
    }
}

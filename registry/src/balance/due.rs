//! [`Due`]: the moment a snapshot stops being right (a warm-up step, the end of an ejection),
//! checked on every pick against a clock that costs a few nanoseconds to read.
//!
//! While anything warms up or is ejected, every pick asks "is the snapshot due?". With
//! `Instant::now()` (`CLOCK_MONOTONIC`) that one question was a third of such a pick: 20–55 ns
//! of a 70–140 ns pick at 10 000 instances, measured on the 2-core CI machine. On Linux the
//! question is asked of `CLOCK_MONOTONIC_COARSE` instead: the same clock as of the last timer
//! tick, read by libc from the vDSO without touching the time source (about 10 ns here;
//! through rustix with `use-libc`, since rustix's own vDSO parser crashes programs run under
//! valgrind, rustix#1559). It lags the
//! precise clock by at most one tick (1–10 ms, `CONFIG_HZ`), so a snapshot is rebuilt at most
//! one tick late; since it never runs ahead, the rebuild it triggers (which reads the precise
//! clock) always finds the due step passed. Elsewhere the precise clock is read.

use std::time::Instant;

/// When a snapshot is due: the instant, and the same moment on the cheap clock.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Due {
    at: Instant,
    /// `at` in nanoseconds of [`cheap_nanos`]'s clock.
    nanos: u64,
}

impl Due {
    /// Due at `at`; `now` is the precise clock read by the caller (a snapshot build has one).
    pub(crate) fn new(at: Instant, now: Instant) -> Self {
        let base = precise_nanos();
        let ahead = at.saturating_duration_since(now).as_nanos();
        let behind = now.saturating_duration_since(at).as_nanos();
        let nanos = u128::from(base)
            .saturating_add(ahead)
            .saturating_sub(behind);
        Self {
            at,
            nanos: u64::try_from(nanos).unwrap_or(u64::MAX),
        }
    }

    /// The moment, on the precise clock.
    pub(crate) fn at(self) -> Instant {
        self.at
    }

    /// True once the moment has passed, by the cheap clock (at most one tick late).
    #[inline]
    pub(crate) fn passed(self) -> bool {
        cheap_nanos() >= self.nanos
    }
}

/// `CLOCK_MONOTONIC`, in nanoseconds: the clock `Instant` reads, on the same scale as
/// [`cheap_nanos`].
#[cfg(any(target_os = "linux", target_os = "android"))]
fn precise_nanos() -> u64 {
    nanos(rustix::time::clock_gettime(
        rustix::time::ClockId::Monotonic,
    ))
}

/// `CLOCK_MONOTONIC_COARSE`, in nanoseconds.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[inline]
fn cheap_nanos() -> u64 {
    nanos(rustix::time::clock_gettime(
        rustix::time::ClockId::MonotonicCoarse,
    ))
}

#[cfg(any(target_os = "linux", target_os = "android"))]
#[inline]
fn nanos(time: rustix::time::Timespec) -> u64 {
    // The monotonic clock counts from boot: never negative.
    let secs = u64::try_from(time.tv_sec).unwrap_or(0);
    let subsec = u64::try_from(time.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(subsec)
}

/// Without a coarse clock: nanoseconds of `Instant` since the first read in the process.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn precise_nanos() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(Instant::now().saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
#[inline]
fn cheap_nanos() -> u64 {
    precise_nanos()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_moment_in_the_past_has_passed_and_one_ahead_has_not() {
        let now = Instant::now();
        assert!(Due::new(now - Duration::from_millis(50), now).passed());
        assert!(!Due::new(now + Duration::from_secs(60), now).passed());
    }

    #[test]
    fn passes_within_a_tick_of_the_moment_and_never_before_it() {
        let now = Instant::now();
        let due = Due::new(now + Duration::from_millis(30), now);
        let deadline = now + Duration::from_secs(2);
        while !due.passed() {
            assert!(
                Instant::now() < deadline,
                "not passed 2 s after a 30 ms due"
            );
            std::hint::spin_loop();
        }
        let seen = Instant::now();
        assert!(seen >= due.at(), "passed before its moment");
        // One tick is at most 10 ms (CONFIG_HZ 100); allow for a preempted test thread.
        assert!(
            seen.duration_since(due.at()) < Duration::from_millis(500),
            "passed {:?} late",
            seen.duration_since(due.at())
        );
    }
}

//! Outlier ejection (passive health checking, as Envoy's outlier detection): callers report how
//! each call went, and an instance that fails several calls in a row is left out of picking for
//! a while.
//!
//! The numbers live per address in a 16-byte [`Health`] record, inline in each snapshot and
//! copied to the next one when the set changes (a report that lands on the old snapshot during
//! that copy is lost, which only delays an ejection by a failure). While every record is clean
//! (no failure since the last success, no ejection left to forgive) a snapshot holds none, so
//! a healthy set costs nothing extra to rebuild; the first failure reported adds them. The hot
//! path ([`Health::success`], [`Health::failure`]) is a few relaxed atomics; deciding an
//! ejection, bringing an instance back and the share cap happen when the balancer rebuilds its
//! picker, under its rebuild lock.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How one call to an instance went, as reported to [`Balancer::report`](super::Balancer::report).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The instance answered (whatever the answer meant for the caller).
    Success,
    /// The instance could not be reached, timed out or answered with an error that says it
    /// is unhealthy.
    Failure,
}

/// Outlier ejection settings, set on
/// [`BalancerBuilder::outlier_detection`](super::BalancerBuilder::outlier_detection). The defaults follow Envoy's outlier detection
/// where Envoy has one: 5 consecutive failures eject an instance for 30 s, times the number of
/// times it has been ejected, at most 300 s; at most 50 % of the instances are ejected at once.
///
/// ```
/// use std::time::Duration;
/// use service_registry::balance::{Balancer, OutlierDetection, Outcome, Strategy};
/// use service_registry::{Info, Instance};
///
/// let set = [1, 2, 3].map(|p| Instance::from(&Info::new("s", format!("127.0.0.1:{p}").parse().unwrap())));
/// let balancer = Balancer::builder(Strategy::WeightedRandom)
///     .outlier_detection(
///         OutlierDetection::new()
///             .consecutive_failures(3)
///             .base_ejection_time(Duration::from_secs(10))
///             .max_ejection_time(Duration::from_secs(60))
///             .max_ejection_percent(50),
///     )
///     .build(set);
/// let bad = "127.0.0.1:2".parse().unwrap();
/// for _ in 0..3 {
///     balancer.report(bad, Outcome::Failure);
/// }
/// assert_eq!(balancer.ejected()[0].addr, bad);
/// assert!((0..100).all(|_| balancer.pick().unwrap().addr != bad));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutlierDetection {
    pub(crate) enabled: bool,
    pub(crate) consecutive_failures: u32,
    pub(crate) base_ejection_time: Duration,
    pub(crate) max_ejection_time: Duration,
    pub(crate) max_ejection_percent: u32,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        Self {
            enabled: true,
            consecutive_failures: 5,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 50,
        }
    }
}

impl OutlierDetection {
    /// The defaults: 5 consecutive failures, 30 s base ejection time, 300 s at most, at most
    /// 50 % ejected.
    ///
    /// See [`OutlierDetection`] for an example.
    pub fn new() -> Self {
        Self::default()
    }

    /// No ejection: reports are ignored.
    ///
    /// ```
    /// use service_registry::balance::{Balancer, OutlierDetection, Outcome, Strategy};
    /// use service_registry::{Info, Instance};
    /// let one = Instance::from(&Info::new("s", "127.0.0.1:1".parse().unwrap()));
    /// let two = Instance::from(&Info::new("s", "127.0.0.1:2".parse().unwrap()));
    /// let balancer = Balancer::builder(Strategy::WeightedRandom)
    ///     .outlier_detection(OutlierDetection::disabled())
    ///     .build([one.clone(), two]);
    /// (0..100).for_each(|_| balancer.report(one.addr, Outcome::Failure));
    /// assert!(balancer.ejected().is_empty());
    /// ```
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }

    /// Failures in a row, with no success in between, that eject an instance (default 5; at
    /// least 1).
    ///
    /// See [`OutlierDetection`] for an example.
    pub fn consecutive_failures(mut self, failures: u32) -> Self {
        self.consecutive_failures = failures.max(1);
        self
    }

    /// How long an instance stays out the first time (default 30 s). The `k`-th ejection in a
    /// row lasts `k` times as long, up to [`max_ejection_time`](Self::max_ejection_time); the
    /// count goes down by one for every base time the instance then stays healthy.
    ///
    /// See [`OutlierDetection`] for an example.
    pub fn base_ejection_time(mut self, time: Duration) -> Self {
        self.base_ejection_time = time;
        self
    }

    /// The longest an instance stays out (default 300 s).
    ///
    /// See [`OutlierDetection`] for an example.
    pub fn max_ejection_time(mut self, time: Duration) -> Self {
        self.max_ejection_time = time;
        self
    }

    /// The largest share of the instances that may be out at once, in percent (default 50,
    /// Envoy's `max_ejection_percent`; at most 100): an ejection that would take more than
    /// `floor(instances × percent / 100)` out does not happen. With 50 %, one instance of two or
    /// three may be ejected, two of four or five, and the only instance never is.
    ///
    /// See [`OutlierDetection`] for an example.
    pub fn max_ejection_percent(mut self, percent: u32) -> Self {
        self.max_ejection_percent = percent.min(100);
        self
    }

    /// How many of `instances` may be ejected at once.
    pub(crate) fn cap(&self, instances: usize) -> usize {
        instances * self.max_ejection_percent as usize / 100
    }

    /// How long the ejection of an instance already ejected `times` times (this one included)
    /// lasts.
    pub(crate) fn ejection_time(&self, times: u32) -> Duration {
        self.base_ejection_time
            .saturating_mul(times.max(1))
            .min(self.max_ejection_time)
    }
}

/// An instance that is out of picking, as [`Balancer::ejected`](super::Balancer::ejected)
/// reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Ejection {
    /// The instance.
    pub addr: SocketAddr,
    /// Until it is picked again.
    pub remaining: Duration,
    /// How many times in a row it has been ejected, this time included.
    pub times: u32,
}

/// A point in time as nanoseconds after the balancer's epoch, plus one: 0 means "never".
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    epoch: Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Self {
            epoch: Instant::now(),
        }
    }

    /// Saturates after 146 years (62 bits of nanoseconds).
    pub(crate) fn at(&self, instant: Instant) -> u64 {
        let nanos = instant.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX).min(1 << 62) + 1
    }

    pub(crate) fn instant(&self, at: u64) -> Instant {
        self.epoch + Duration::from_nanos(at.saturating_sub(1))
    }
}

/// The top bit of [`Health::state`]: set while ejected.
const EJECTED: u64 = 1 << 63;

/// The passive health of one address: 16 bytes, so that a snapshot of 10 000 instances copies
/// 160 KB of them.
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// Failures since the last success (or since it came back).
    failures: AtomicU32,
    /// Ejections in a row (decays while healthy); changed under the rebuild lock.
    times: AtomicU32,
    /// A [`Clock`] time: with [`EJECTED`] set, when it comes back; without, when it last came
    /// back (0: never ejected).
    state: AtomicU64,
}

impl Health {
    /// A copy of the record as it is now, for the next snapshot.
    pub(crate) fn copy(&self) -> Self {
        Self {
            failures: AtomicU32::new(self.failures.load(Ordering::Relaxed)),
            times: AtomicU32::new(self.times.load(Ordering::Relaxed)),
            state: AtomicU64::new(self.state.load(Ordering::Relaxed)),
        }
    }

    /// A success: the failure streak ends. Writes only when there was one.
    #[inline]
    pub(crate) fn success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    /// A failure; true when it makes `threshold` in a row (an ejection is due). Failures of an
    /// instance already out (calls that were in flight) do not count.
    #[inline]
    pub(crate) fn failure(&self, threshold: u32) -> bool {
        if self.is_ejected() {
            return false;
        }
        self.failures.fetch_add(1, Ordering::Relaxed) + 1 >= threshold
    }

    #[inline]
    pub(crate) fn is_ejected(&self) -> bool {
        self.state.load(Ordering::Relaxed) & EJECTED != 0
    }

    /// When it comes back, if ejected.
    pub(crate) fn ejected_until(&self) -> Option<u64> {
        let state = self.state.load(Ordering::Relaxed);
        (state & EJECTED != 0).then_some(state & !EJECTED)
    }

    pub(crate) fn failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }

    pub(crate) fn times(&self) -> u32 {
        self.times.load(Ordering::Relaxed)
    }

    /// Ejects it at `now` (Clock time); returns how long for. Under the rebuild lock.
    pub(crate) fn eject(&self, config: &OutlierDetection, now: u64) -> (Duration, u32) {
        // One ejection in a row forgiven per base time spent healthy since it came back.
        let mut times = self.times.load(Ordering::Relaxed);
        let back_at = self.state.load(Ordering::Relaxed) & !EJECTED;
        if back_at != 0 && !config.base_ejection_time.is_zero() {
            let healthy = Duration::from_nanos(now.saturating_sub(back_at));
            let forgiven = healthy.as_nanos() / config.base_ejection_time.as_nanos();
            times = times.saturating_sub(u32::try_from(forgiven).unwrap_or(u32::MAX));
        }
        times = times.saturating_add(1);
        let time = config.ejection_time(times);
        let nanos = u64::try_from(time.as_nanos()).unwrap_or(u64::MAX);
        let until = now.saturating_add(nanos).clamp(1, !EJECTED);
        self.times.store(times, Ordering::Relaxed);
        self.failures.store(0, Ordering::Relaxed);
        self.state.store(EJECTED | until, Ordering::Relaxed);
        (time, times)
    }

    /// Brings it back at `now` (Clock time). Under the rebuild lock.
    pub(crate) fn restore(&self, now: u64) {
        self.failures.store(0, Ordering::Relaxed);
        self.state.store(now & !EJECTED, Ordering::Relaxed);
    }

    /// Forgets its past ejections once it has been healthy long enough to have had them all
    /// forgiven (one per base ejection time). Under the rebuild lock.
    pub(crate) fn forgive(&self, config: &OutlierDetection, now: u64) {
        let (times, state) = (self.times(), self.state.load(Ordering::Relaxed));
        if times == 0 || state & EJECTED != 0 {
            return;
        }
        let healthy = Duration::from_nanos(now.saturating_sub(state));
        if healthy >= config.base_ejection_time.saturating_mul(times) {
            self.times.store(0, Ordering::Relaxed);
            self.state.store(0, Ordering::Relaxed);
        }
    }

    /// True for a record with nothing to remember: no failures, never ejected (or forgiven).
    pub(crate) fn is_clean(&self) -> bool {
        self.failures() == 0 && self.times() == 0 && self.state.load(Ordering::Relaxed) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejection_time_grows_with_each_ejection_and_is_capped() {
        let config = OutlierDetection::new();
        let times: Vec<u64> = (1..=12)
            .map(|k| config.ejection_time(k).as_secs())
            .collect();
        assert_eq!(
            times,
            [30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 300, 300]
        );
    }

    #[test]
    fn the_cap_rounds_down() {
        let config = OutlierDetection::new();
        let caps: Vec<usize> = (0..=6).map(|n| config.cap(n)).collect();
        assert_eq!(caps, [0, 0, 1, 1, 2, 2, 3]);
        assert_eq!(OutlierDetection::new().max_ejection_percent(250).cap(3), 3);
    }

    #[test]
    fn repeated_ejections_last_longer_and_healthy_time_forgives_them() {
        let config = OutlierDetection::new().base_ejection_time(Duration::from_secs(10));
        let health = Health::default();
        let s = |secs: u64| secs * 1_000_000_000 + 1;
        assert!(!health.failure(2));
        assert!(health.failure(2));
        assert_eq!(health.eject(&config, s(0)), (Duration::from_secs(10), 1));
        assert!(!health.failure(2), "failures while ejected do not count");
        health.restore(s(10));
        // Failing again right away: twice as long.
        assert_eq!(health.eject(&config, s(11)).0, Duration::from_secs(20));
        health.restore(s(31));
        // 25 s healthy forgives two of the two ejections: back to the base time.
        assert_eq!(health.eject(&config, s(56)).0, Duration::from_secs(10));
    }

    #[test]
    fn a_success_ends_the_streak() {
        let health = Health::default();
        for _ in 0..4 {
            assert!(!health.failure(5));
        }
        health.success();
        assert_eq!(health.failures(), 0);
        for _ in 0..4 {
            assert!(!health.failure(5));
        }
        assert!(health.failure(5));
    }
}

//! The one retry schedule used by the harness and every backend.

use std::time::Duration;

/// Capped exponential backoff with jitter.
///
/// Delay `n` (from 0) is drawn uniformly from `[d/2, d]` where `d = min(max, initial * 2^n)`
/// ("equal jitter"): retries of many processes spread out, and no delay is ever shorter than
/// half the schedule, so a struggling registry is not hammered.
///
/// ```
/// use std::time::Duration;
/// use service_registry::Backoff;
///
/// let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
/// let first = backoff.next_delay();
/// assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
/// for _ in 0..20 { assert!(backoff.next_delay() <= Duration::from_secs(5)); }
/// backoff.reset();
/// assert!(backoff.next_delay() <= Duration::from_millis(100));
/// ```
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Default for Backoff {
    /// 200 ms doubling up to 30 s.
    fn default() -> Self {
        Self::new(Duration::from_millis(200), Duration::from_secs(30))
    }
}

impl Backoff {
    /// A schedule starting at `initial` and never exceeding `max`.
    ///
    /// ```
    /// let b = service_registry::Backoff::new(std::time::Duration::from_millis(10), std::time::Duration::from_secs(1));
    /// assert_eq!(b.attempt(), 0);
    /// ```
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        Self {
            initial,
            max: max.max(initial),
            attempt: 0,
        }
    }

    /// How many delays were handed out since the last reset.
    ///
    /// ```
    /// let mut b = service_registry::Backoff::default();
    /// b.next_delay();
    /// assert_eq!(b.attempt(), 1);
    /// ```
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The delay before the next attempt.
    ///
    /// ```
    /// let mut b = service_registry::Backoff::default();
    /// assert!(b.next_delay() > std::time::Duration::ZERO);
    /// ```
    pub fn next_delay(&mut self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        let ceiling = self.initial.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        let spread = (ceiling - half).as_nanos() as u64;
        half + Duration::from_nanos(fastrand::u64(0..=spread))
    }

    /// Starts the schedule over (after a success).
    ///
    /// ```
    /// let mut b = service_registry::Backoff::default();
    /// b.next_delay();
    /// b.reset();
    /// assert_eq!(b.attempt(), 0);
    /// ```
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(80));
        let ceilings = [10, 20, 40, 80, 80, 80];
        for ceiling in ceilings {
            let d = b.next_delay();
            let ceiling = Duration::from_millis(ceiling);
            assert!(d >= ceiling / 2 && d <= ceiling, "{d:?} vs {ceiling:?}");
        }
    }

    #[test]
    fn survives_many_attempts() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_secs(30));
        for _ in 0..1000 {
            assert!(b.next_delay() <= Duration::from_secs(30));
        }
    }
}

//! Warm-up: a new instance's weight ramps up over its `warmup` after its `start_time`.

use std::time::{Duration, SystemTime};

use crate::discovery::Instance;
use crate::info::{MAX_WEIGHT, MIN_WEIGHT};

/// The share of its weight an instance gets right after it starts (default 10 %).
pub const DEFAULT_MIN_FRACTION: f64 = 0.1;

/// The weight a picker gives `instance`: its weight bounded to
/// [`MIN_WEIGHT`](crate::MIN_WEIGHT)..=[`MAX_WEIGHT`](crate::MAX_WEIGHT), the range a
/// registration may declare. A registry holds whatever any writer put there (`u32::MAX` is one
/// etcd put away); bounded here, one such value costs what the heaviest valid instance costs,
/// whichever backend decoded it, and gets that instance's share.
#[inline]
pub(crate) fn bounded_weight(instance: &Instance) -> u32 {
    instance.weight.clamp(MIN_WEIGHT, MAX_WEIGHT)
}

/// The weight `instance` should get at `now`: its full weight once `warmup` has passed since
/// `start_time` (or when either is unknown); before that a linear ramp from `min_fraction` of
/// the weight up to all of it. The full weight is the instance's weight bounded to
/// [`MIN_WEIGHT`](crate::MIN_WEIGHT)..=[`MAX_WEIGHT`](crate::MAX_WEIGHT), as every picker
/// bounds it.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use service_registry::{balance::effective_weight, Info, Instance};
///
/// let mut info = Info::new("s", "127.0.0.1:1".parse().unwrap());
/// info.weight = 100;
/// info.warmup = Duration::from_secs(10);
/// let instance = Instance::from(&info);
/// let at = |secs| effective_weight(&instance, info.start_time + Duration::from_secs(secs), 0.1);
/// assert_eq!(at(0), 10.0);
/// assert_eq!(at(5), 50.0);
/// assert_eq!(at(10), 100.0);
/// ```
pub fn effective_weight(instance: &Instance, now: SystemTime, min_fraction: f64) -> f64 {
    let full = f64::from(bounded_weight(instance));
    let Some(start) = instance.start_time else {
        return full;
    };
    if instance.warmup.is_zero() {
        return full;
    }
    let elapsed = now.duration_since(start).unwrap_or_default();
    if elapsed >= instance.warmup {
        return full;
    }
    let fraction =
        (elapsed.as_secs_f64() / instance.warmup.as_secs_f64()).max(min_fraction.clamp(0.0, 1.0));
    (full * fraction).max(f64::MIN_POSITIVE)
}

/// True while `instance` is still ramping up at `now`.
pub(crate) fn warming(instance: &Instance, now: SystemTime) -> bool {
    match instance.start_time {
        Some(start) if !instance.warmup.is_zero() => {
            now.duration_since(start).unwrap_or_default() < instance.warmup
        }
        _ => false,
    }
}

/// How often a set with warming instances gets its weights recomputed: a hundredth of the
/// shortest warm-up under way, but no more often than every 5 ms.
const MIN_REFRESH: Duration = Duration::from_millis(5);

/// When the weights of `instances` at `now` stop being right: `None` when nobody is warming
/// up, otherwise the time until the next step of the ramp (or the end of the first warm-up
/// to finish, whichever is sooner).
pub(crate) fn next_refresh<'a>(
    instances: impl IntoIterator<Item = &'a Instance>,
    now: SystemTime,
) -> Option<Duration> {
    instances
        .into_iter()
        .filter(|i| warming(i, now))
        .map(|i| {
            let left = i
                .start_time
                .and_then(|start| (start + i.warmup).duration_since(now).ok())
                .unwrap_or_default();
            left.min((i.warmup / 100).max(MIN_REFRESH))
        })
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Info;
    use std::time::Duration;

    #[test]
    fn ramp_is_linear_from_the_floor_to_full() {
        let mut info = Info::new("s", "127.0.0.1:1".parse().unwrap());
        info.weight = 200;
        info.warmup = Duration::from_secs(100);
        let instance = Instance::from(&info);
        let at = |secs: u64| {
            effective_weight(&instance, info.start_time + Duration::from_secs(secs), 0.1)
        };
        let shape: Vec<f64> = [0, 5, 10, 25, 50, 75, 99, 100, 1000]
            .iter()
            .map(|s| at(*s))
            .collect();
        assert_eq!(
            shape,
            [20.0, 20.0, 20.0, 50.0, 100.0, 150.0, 198.0, 200.0, 200.0]
        );
        // A clock behind the start time counts as "just started".
        assert_eq!(
            effective_weight(&instance, info.start_time - Duration::from_secs(5), 0.1),
            20.0
        );
        assert!(warming(
            &instance,
            info.start_time + Duration::from_secs(99)
        ));
        assert!(!warming(
            &instance,
            info.start_time + Duration::from_secs(100)
        ));
        // Refreshed every second (a hundredth of 100 s), until the end of the warm-up.
        let at = |secs: f64| info.start_time + Duration::from_secs_f64(secs);
        assert_eq!(
            next_refresh([&instance], at(10.0)),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            next_refresh([&instance], at(99.5)),
            Some(Duration::from_millis(500))
        );
        assert_eq!(next_refresh([&instance], at(100.0)), None);
    }

    #[test]
    fn unknown_start_or_no_warmup_means_full_weight() {
        let mut info = Info::new("s", "127.0.0.1:1".parse().unwrap());
        info.weight = 7;
        let mut instance = Instance::from(&info);
        assert_eq!(effective_weight(&instance, SystemTime::now(), 0.1), 7.0);
        instance.warmup = Duration::from_secs(10);
        instance.start_time = None;
        assert_eq!(effective_weight(&instance, SystemTime::now(), 0.1), 7.0);
    }
}

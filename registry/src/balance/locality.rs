//! Locality: where the caller is (its zone), which instances are standby (priority levels),
//! and how traffic spills from one to the next as health is lost, as Envoy's priority levels
//! with their overprovisioning factor and panic threshold do.

/// Envoy's overprovisioning factor: a level (or the local zone) keeps all of its traffic
/// while at least `1 / 1.4` (71.4 %) of it is healthy, and a share of `1.4 × health` below.
pub const DEFAULT_OVERPROVISIONING: f64 = 1.4;

/// Envoy's panic threshold: when the set as a whole cannot take all traffic and a priority
/// level is less than half healthy, that level ignores health and spreads over all of its
/// instances.
pub const DEFAULT_PANIC_THRESHOLD: f64 = 0.5;

/// Why a [`Locality`] could not be made.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum LocalityError {
    /// The variable that should name the caller's own zone is not set, or empty.
    #[error("environment variable `{variable}` (the caller's own `{key}` tag) is not set or empty: set it, or give the zone in code with `Locality::zone`")]
    MissingZone {
        /// The variable read.
        variable: String,
        /// The tag key it gives the value of.
        key: String,
    },
    /// The variable is set, but not to valid Unicode.
    #[error(
        "environment variable `{variable}` (the caller's own `{key}` tag) is not valid Unicode"
    )]
    NotUnicode {
        /// The variable read.
        variable: String,
        /// The tag key it gives the value of.
        key: String,
    },
}

/// Zone-aware routing with failover, priority levels and a panic threshold, for
/// [`BalancerBuilder::locality`](super::BalancerBuilder::locality). It replaces a tag filter
/// with a fallback to all, which was all or nothing: here traffic leaves the local zone (or
/// the primary level) only as far as it lacks health.
///
/// An instance's health is 1 while it serves normally, 0 while it is ejected (see
/// [`OutlierDetection`](super::OutlierDetection)), and its warm-up fraction while it ramps up
/// (a just-started instance counts for the floor, 10 % by default). A group's health is the
/// mean over its instances. With `f` the overprovisioning factor (default 1.4):
///
/// - **Priority levels** ([`priority_tag`](Self::priority_tag); no tag or `0` is the first
///   level, `1` the next, ...; a value that is not a number ranks after every level): each
///   level takes `min(1, f × health)` of what the levels before it left over. When the levels
///   together are not enough (`Σ min(1, f × health) < 1`) the loads are scaled up to add to
///   one, and then a level under the [panic threshold](Self::panic_threshold) (default 50 %)
///   picks among all of its instances, ejected ones too, instead of overloading the few left.
///   When every instance of the set is out, the first level panics.
/// - **Zones** ([`zone`](Self::zone)): inside a level that is not in panic, the instances
///   whose tag `key` equals the caller's own value take `min(1, f × local health)` of the
///   level's traffic and the rest goes to the other zones, spread by weight over their
///   healthy instances. A local zone with no healthy instance (or none at all) fails over
///   entirely; other zones with no healthy instance leave everything local.
///
/// Within a group the balancer's [`Strategy`](super::Strategy) picks, by weight (warm-up
/// applied), among the group's instances that are not ejected. Without a `Locality` none of
/// this applies: every instance that is not ejected is picked by weight.
///
/// ```
/// use service_registry::balance::{Balancer, Locality, OutlierDetection, Outcome, Strategy};
/// use service_registry::{Info, Instance};
///
/// let instance = |port: u16, zone: &str| {
///     let mut info = Info::new("s", format!("127.0.0.1:{port}").parse().unwrap());
///     info.tags.insert("zone".into(), zone.into());
///     Instance::from(&info)
/// };
/// let set = [instance(1, "hz"), instance(2, "hz"), instance(3, "sh"), instance(4, "sh")];
/// let balancer = Balancer::builder(Strategy::WeightedRandom)
///     .locality(Locality::new().zone("zone", "hz"))
///     .outlier_detection(OutlierDetection::new().consecutive_failures(1))
///     .build(set);
/// // All of hz is healthy: every pick stays local.
/// assert!((0..1000).all(|_| balancer.pick().unwrap().addr.port() <= 2));
/// // Half of hz is out: hz keeps 1.4 × 50 % = 70 %, the rest spills over to sh.
/// balancer.report("127.0.0.1:1".parse().unwrap(), Outcome::Failure);
/// let remote = (0..10_000).filter(|_| balancer.pick().unwrap().addr.port() > 2).count();
/// assert!((2_500..3_500).contains(&remote), "{remote}");
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Locality {
    pub(crate) zone: Option<(String, String)>,
    pub(crate) priority_key: Option<String>,
    pub(crate) overprovisioning: f64,
    pub(crate) panic_threshold: f64,
}

impl Default for Locality {
    fn default() -> Self {
        Self::new()
    }
}

impl Locality {
    /// No zone and one priority level: only the panic threshold applies.
    ///
    /// See [`Locality`] for an example.
    pub fn new() -> Self {
        Self {
            zone: None,
            priority_key: None,
            overprovisioning: DEFAULT_OVERPROVISIONING,
            panic_threshold: DEFAULT_PANIC_THRESHOLD,
        }
    }

    /// The caller's own zone: instances whose tag `key` is `value` are local.
    ///
    /// See [`Locality`] for an example.
    pub fn zone(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.zone = Some((key.into(), value.into()));
        self
    }

    /// The caller's own zone from the environment variable `variable` (as a process finds
    /// where it was scheduled): instances whose tag `key` equals its value are local. Unset,
    /// empty or not Unicode is an error that names the variable; code that wants a default
    /// matches on it and calls [`zone`](Self::zone).
    ///
    /// ```
    /// use service_registry::balance::{Locality, LocalityError};
    ///
    /// std::env::set_var("LOCALITY_DOC_ZONE", "hz");
    /// assert_eq!(
    ///     Locality::new().zone_from_env("zone", "LOCALITY_DOC_ZONE").unwrap(),
    ///     Locality::new().zone("zone", "hz"),
    /// );
    /// std::env::remove_var("LOCALITY_DOC_ZONE");
    /// let err = Locality::new().zone_from_env("zone", "LOCALITY_DOC_ZONE").unwrap_err();
    /// assert!(matches!(err, LocalityError::MissingZone { .. }));
    /// assert!(err.to_string().contains("LOCALITY_DOC_ZONE"));
    /// ```
    pub fn zone_from_env(
        self,
        key: impl Into<String>,
        variable: &str,
    ) -> Result<Self, LocalityError> {
        let key = key.into();
        match std::env::var(variable) {
            Ok(value) if !value.is_empty() => Ok(self.zone(key, value)),
            Ok(_) | Err(std::env::VarError::NotPresent) => Err(LocalityError::MissingZone {
                variable: variable.to_string(),
                key,
            }),
            Err(std::env::VarError::NotUnicode(_)) => Err(LocalityError::NotUnicode {
                variable: variable.to_string(),
                key,
            }),
        }
    }

    /// Priority levels from tag `key`: `0` (or no tag) first, then `1`, and so on.
    ///
    /// ```
    /// use service_registry::balance::{Balancer, Locality, Strategy};
    /// use service_registry::{Info, Instance};
    ///
    /// let mut primary = Info::new("s", "127.0.0.1:1".parse().unwrap());
    /// primary.tags.insert("priority".into(), "0".into());
    /// let mut standby = Info::new("s", "127.0.0.1:2".parse().unwrap());
    /// standby.tags.insert("priority".into(), "1".into());
    /// let balancer = Balancer::builder(Strategy::WeightedRandom)
    ///     .locality(Locality::new().priority_tag("priority"))
    ///     .build([Instance::from(&primary), Instance::from(&standby)]);
    /// assert!((0..1000).all(|_| balancer.pick().unwrap().addr == primary.addr));
    /// ```
    pub fn priority_tag(mut self, key: impl Into<String>) -> Self {
        self.priority_key = Some(key.into());
        self
    }

    /// The overprovisioning factor (default [`DEFAULT_OVERPROVISIONING`], 1.4; values below 1
    /// count as 1, which spills as soon as any health is lost).
    ///
    /// See [`Locality`] for the rule it enters.
    pub fn overprovisioning(mut self, factor: f64) -> Self {
        self.overprovisioning = if factor.is_nan() {
            1.0
        } else {
            factor.max(1.0)
        };
        self
    }

    /// The panic threshold (default [`DEFAULT_PANIC_THRESHOLD`], 0.5; bounded to 0..=1, where
    /// 0 turns panic off except when every instance is out).
    ///
    /// See [`Locality`] for the rule it enters.
    pub fn panic_threshold(mut self, share: f64) -> Self {
        self.panic_threshold = if share.is_nan() {
            0.0
        } else {
            share.clamp(0.0, 1.0)
        };
        self
    }
}

/// The share of traffic each of `healths` (in order of preference, each in 0..=1) takes
/// with overprovisioning `factor`, and whether they were enough: each takes
/// `min(1, factor × health)` of what the ones before left over; when they add up to less than
/// one they are scaled up to one, and `false` says so.
pub(crate) fn spill(healths: &[f64], factor: f64) -> (Vec<f64>, bool) {
    let scaled: Vec<f64> = healths.iter().map(|h| (h * factor).min(1.0)).collect();
    let total: f64 = scaled.iter().sum();
    if total >= 1.0 {
        let mut left = 1.0f64;
        let loads = scaled
            .iter()
            .map(|s| {
                let load = s.min(left);
                left -= load;
                load
            })
            .collect();
        (loads, true)
    } else if total > 0.0 {
        (scaled.iter().map(|s| s / total).collect(), false)
    } else {
        (vec![0.0; healths.len()], false)
    }
}

/// The priority level of an instance with tag value `value` (none: 0; not a number: after
/// every level).
pub(crate) fn level(value: Option<&str>) -> u64 {
    let Some(v) = value else {
        return 0;
    };
    // Read once per instance per rebuild: a short run of ASCII digits (every real tag) is
    // summed by hand, without the Unicode trim and the checked parse.
    let bytes = v.as_bytes();
    if (1..=9).contains(&bytes.len()) && bytes.iter().all(u8::is_ascii_digit) {
        return bytes
            .iter()
            .fold(0, |level, digit| level * 10 + u64::from(digit - b'0'));
    }
    v.trim()
        .parse::<u32>()
        .map_or(u64::from(u32::MAX) + 1, u64::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: &[f64], want: &[f64]) -> bool {
        got.len() == want.len() && got.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-9)
    }

    #[test]
    fn spill_follows_envoys_priority_load_formula() {
        // Envoy's examples (factor 1.4): P0 100 % healthy takes all.
        assert!(close(&spill(&[1.0, 1.0], 1.4).0, &[1.0, 0.0]));
        // P0 72 % healthy: 1.4 × 0.72 > 1, still all.
        assert!(close(&spill(&[0.72, 1.0], 1.4).0, &[1.0, 0.0]));
        // P0 71 %: 99.4 % / 0.6 %.
        assert!(close(&spill(&[0.71, 1.0], 1.4).0, &[0.994, 0.006]));
        // P0 50 %: 70 / 30.
        assert!(close(&spill(&[0.5, 1.0], 1.4).0, &[0.7, 0.3]));
        // P0 25 %, P1 100 %: 35 / 65.
        assert!(close(&spill(&[0.25, 1.0], 1.4).0, &[0.35, 0.65]));
        // Three levels: 20 %, 20 %, 100 %: 28, 28, 44.
        assert!(close(&spill(&[0.2, 0.2, 1.0], 1.4).0, &[0.28, 0.28, 0.44]));
        // Not enough in total: 20 % and 10 % (28 + 14 = 42) are scaled to 2/3 and 1/3.
        let (loads, enough) = spill(&[0.2, 0.1], 1.4);
        assert!(close(&loads, &[2.0 / 3.0, 1.0 / 3.0]), "{loads:?}");
        assert!(!enough);
        assert!(spill(&[0.5, 1.0], 1.4).1);
        // Nothing healthy anywhere.
        assert_eq!(spill(&[0.0, 0.0], 1.4), (vec![0.0, 0.0], false));
    }

    #[test]
    fn priority_values_parse_and_bad_ones_rank_last() {
        assert_eq!(level(None), 0);
        assert_eq!(level(Some("2")), 2);
        assert_eq!(level(Some(" 1 ")), 1);
        // The digit fast path agrees with the parse at its edges.
        assert_eq!(level(Some("007")), 7);
        assert_eq!(level(Some("999999999")), 999_999_999);
        assert_eq!(level(Some("4294967295")), u64::from(u32::MAX));
        assert_eq!(level(Some("4294967296")), u64::from(u32::MAX) + 1);
        assert_eq!(level(Some("+3")), 3);
        assert_eq!(level(Some("")), u64::from(u32::MAX) + 1);
        assert!(level(Some("standby")) > level(Some(&u32::MAX.to_string())));
    }

    #[test]
    fn factor_and_threshold_are_bounded() {
        let l = Locality::new().overprovisioning(0.5).panic_threshold(7.0);
        assert_eq!((l.overprovisioning, l.panic_threshold), (1.0, 1.0));
        let l = Locality::new()
            .overprovisioning(f64::NAN)
            .panic_threshold(-1.0);
        assert_eq!((l.overprovisioning, l.panic_threshold), (1.0, 0.0));
    }
}

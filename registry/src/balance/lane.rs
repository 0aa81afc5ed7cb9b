//! Lanes: request routing by a lane / canary key that a call carries, matched against an
//! instance tag, with a fallback rule when no instance of the lane can take it.

/// Where a call goes when its lane has no instance that can take it (none tagged with it, or
/// all of them ejected).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LaneFallback {
    /// To the base lane: the instances without the lane tag (default; as kitex-contrib's
    /// loadbalance-tagging and most lane / swimlane setups do).
    #[default]
    Base,
    /// To every instance, whatever its lane.
    All,
    /// Nowhere: the pick gives `None` (the tower layer fails the call with
    /// [`CallError::NoInstance`](crate::balance::CallError::NoInstance)).
    Fail,
}

/// Request routing by lane, for [`BalancerBuilder::lanes`](super::BalancerBuilder::lanes):
/// an instance tagged `key = v` is in lane `v`, one without the tag in the base lane. A call
/// for lane `v` ([`Balancer::pick_in_lane`](super::Balancer::pick_in_lane), or the tower
/// layer's [`with_lane`](crate::balance::Balanced::with_lane)) goes to lane `v`'s instances,
/// and when it has none that can take it, by the [`LaneFallback`]; a call without a lane goes
/// to the base lane. Each lane is balanced on its own, with the balancer's strategy, warm-up,
/// ejection and [`Locality`](super::Locality).
///
/// ```
/// use service_registry::balance::{Balancer, LaneFallback, Lanes, Strategy};
/// use service_registry::{Info, Instance};
///
/// let stable = Info::new("s", "127.0.0.1:1".parse().unwrap());
/// let mut canary = Info::new("s", "127.0.0.1:2".parse().unwrap());
/// canary.tags.insert("lane".into(), "canary".into());
/// let balancer = Balancer::builder(Strategy::WeightedRandom)
///     .lanes(Lanes::new("lane"))
///     .build([Instance::from(&stable), Instance::from(&canary)]);
/// assert_eq!(balancer.pick_in_lane(Some("canary")).unwrap().addr, canary.addr);
/// // Plain calls never reach the canary; a lane nobody serves falls back to the base lane.
/// assert!((0..100).all(|_| balancer.pick_in_lane(None).unwrap().addr == stable.addr));
/// assert_eq!(balancer.pick_in_lane(Some("gray")).unwrap().addr, stable.addr);
///
/// let strict = Balancer::builder(Strategy::WeightedRandom)
///     .lanes(Lanes::new("lane").fallback(LaneFallback::Fail))
///     .build([Instance::from(&stable), Instance::from(&canary)]);
/// assert!(strict.pick_in_lane(Some("gray")).is_none());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lanes {
    pub(crate) key: String,
    pub(crate) fallback: LaneFallback,
}

impl Lanes {
    /// Lanes by tag `key`, falling back to the base lane.
    ///
    /// See [`Lanes`] for an example.
    pub fn new(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            fallback: LaneFallback::Base,
        }
    }

    /// Where a call goes when its lane has no instance that can take it.
    ///
    /// See [`Lanes`] for an example.
    pub fn fallback(mut self, fallback: LaneFallback) -> Self {
        self.fallback = fallback;
        self
    }
}

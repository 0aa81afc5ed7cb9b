//! [`Picker`]: the instances of one Volo call.

use std::net::SocketAddr;

use volo::net::Address;
use volo::FastStr;

use crate::balance::Balancer;

/// The instances of one call, in the order Volo tries them: the balancer's pick first (made
/// when the call asked for its picker), then (on a retry) instances not tried yet; all in the
/// call's [`Lane`](super::Lane) while it has untried ones, then by the lanes' fallback.
///
/// ```
/// use service_registry::volo::VoloBalance;
/// use volo::discovery::StaticDiscover;
/// use volo::loadbalance::LoadBalance;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let discover = StaticDiscover::from(vec!["127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap()]);
/// let balance = VoloBalance::default();
/// let endpoint = volo::context::Endpoint::new("echo".into());
/// let tried: Vec<_> = balance.get_picker(&endpoint, &discover).await.unwrap().collect();
/// assert_eq!(tried.len(), 2);
/// assert_ne!(tried[0], tried[1]);
/// # }
/// ```
#[derive(Debug)]
pub struct Picker {
    balancer: Balancer,
    /// The call's lane (`None`: the base lane).
    lane: Option<FastStr>,
    /// The first pick; `None` when there was nothing to pick.
    first: Option<SocketAddr>,
    /// Whether `first` has been handed out.
    started: bool,
    /// Every address handed out, once a retry asks for a second one.
    tried: Vec<SocketAddr>,
}

impl Picker {
    /// A picker over `balancer` for a call in `lane`, whose first pick is made now.
    pub(crate) fn first(balancer: Balancer, lane: Option<FastStr>) -> Self {
        let first = pick(&balancer, lane.as_deref());
        Self {
            balancer,
            lane,
            first,
            started: false,
            tried: Vec::new(),
        }
    }

    /// Whether the first pick found an instance.
    pub(crate) fn found(&self) -> bool {
        self.first.is_some()
    }

    /// Picks the first instance again (the set changed while the call waited for one).
    pub(crate) fn pick_again(&mut self) -> bool {
        self.first = pick(&self.balancer, self.lane.as_deref());
        self.found()
    }
}

/// One pick's address: [`Balancer::pick_in_lane`] without cloning the instance's `Arc`.
#[inline]
fn pick(balancer: &Balancer, lane: Option<&str>) -> Option<SocketAddr> {
    balancer.pick_in_lane_map(lane, |instance| instance.addr)
}

impl Iterator for Picker {
    type Item = Address;

    fn next(&mut self) -> Option<Address> {
        if !self.started {
            self.started = true;
            return self.first.map(Address::Ip);
        }
        let first = self.first?;
        if self.tried.is_empty() {
            self.tried.push(first);
        }
        let picked = self
            .balancer
            .pick_avoiding_in(self.lane.as_deref(), &self.tried)?
            .addr;
        self.tried.push(picked);
        Some(Address::Ip(picked))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::{LaneFallback, Lanes, Strategy};
    use crate::{Info, Instance};

    /// Ports 1, 2 in lane `canary`, 3, 4 in the base lane.
    fn balancer(fallback: LaneFallback) -> Balancer {
        let set = (1..=4u16).map(|port| {
            let mut info = Info::new("s", SocketAddr::from(([127, 0, 0, 1], port)));
            if port <= 2 {
                info.tags.insert("lane".into(), "canary".into());
            }
            Instance::from(&info)
        });
        Balancer::builder(Strategy::WeightedRandom)
            .lanes(Lanes::new("lane").fallback(fallback))
            .build(set)
    }

    fn ports(picker: Picker) -> Vec<u16> {
        picker
            .map(|address| match address {
                Address::Ip(addr) => addr.port(),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn retries_stay_in_the_lane_until_it_is_exhausted_then_follow_the_fallback() {
        for _ in 0..50 {
            let tried = ports(Picker::first(
                balancer(LaneFallback::Base),
                Some("canary".into()),
            ));
            assert_eq!(tried.len(), 4, "{tried:?}");
            let (lane, then) = tried.split_at(2);
            assert!(lane.iter().all(|p| *p <= 2), "{tried:?}");
            assert!(then.iter().all(|p| *p > 2), "{tried:?}");
            assert_ne!(lane[0], lane[1]);
            assert_ne!(then[0], then[1]);

            let strict = ports(Picker::first(
                balancer(LaneFallback::Fail),
                Some("canary".into()),
            ));
            assert_eq!(strict.len(), 2, "{strict:?}");
            assert!(strict.iter().all(|p| *p <= 2), "{strict:?}");

            let plain = ports(Picker::first(balancer(LaneFallback::Base), None));
            assert_eq!(plain.len(), 2, "{plain:?}");
            assert!(plain.iter().all(|p| *p > 2), "{plain:?}");
        }
    }
}

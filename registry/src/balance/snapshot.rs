//! One immutable view of a balancer: the instances, their health records, which of them may be
//! picked (not ejected), and the picker built over those. Built whenever the set changes, an
//! instance is ejected or comes back, or warm-up weights are due; never changed afterwards.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::carry::same_address;
use super::due::Due;
use super::filter::TagFilter;
use super::groups::Groups;
use super::lane::{LaneFallback, Lanes};
use super::locality::Locality;
use super::outlier::{Clock, Health, OutlierDetection};
use super::route::{Inputs, Route};
use super::subset::Subset;
use super::tags::{read_all, Keys, Read};
use super::warmup::{bounded_weight, effective_weight, next_refresh};
use super::Strategy;
use crate::discovery::Instance;

/// What a [`BalancerBuilder`](super::BalancerBuilder) sets; fixed for the life of the balancer.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) strategy: Strategy,
    pub(crate) filter: TagFilter,
    pub(crate) min_fraction: f64,
    pub(crate) outliers: OutlierDetection,
    pub(crate) locality: Option<Locality>,
    pub(crate) lanes: Option<Lanes>,
    pub(crate) subset: Option<Subset>,
}

/// What a snapshot is built from: the instances and their health records (`None`: all clean).
pub(crate) type Parts = (Vec<Arc<Instance>>, Option<Vec<Health>>);

/// The routes of the lanes other than the base one.
#[derive(Debug)]
pub(crate) struct LaneRoutes {
    /// Sorted by lane, for a binary search (cheaper than hashing the lane on every pick).
    by_lane: Vec<(Box<str>, Route)>,
    /// Over every instance, for [`LaneFallback::All`].
    all: Option<Route>,
    fallback: LaneFallback,
}

#[derive(Debug)]
pub(crate) struct Snapshot {
    /// The instances after the tag filter, sorted by address.
    pub(crate) instances: Vec<Arc<Instance>>,
    /// The health record of each instance (same order), copied from the snapshot before for
    /// as long as the address stays in the set; `None` while every record would be clean.
    pub(crate) health: Option<Vec<Health>>,
    /// Where calls without a lane go (with lanes: the base lane; without: everything).
    route: Route,
    /// With lanes: the other lanes' routes.
    lanes: Option<LaneRoutes>,
    /// How many instances are ejected in this view.
    pub(crate) ejected: usize,
    /// When this view stops being right: the next warm-up step or the end of the first
    /// ejection to end, whichever is sooner.
    pub(crate) refresh_at: Option<Due>,
    /// Set by the one pick that rebuilds it.
    pub(crate) refreshing: AtomicBool,
    /// Least request only (empty otherwise): the calls in flight to each instance (same
    /// order), shared with the snapshot before for as long as the address stays in the set.
    pub(crate) in_flight: Vec<Arc<AtomicUsize>>,
    /// What each instance is routed by (same order; empty without a locality and lanes),
    /// carried into the next snapshot for the instances it shares.
    reads: Vec<Read>,
    hashes: bool,
}

impl Config {
    /// The view of `instances` (filtered, sorted by address; `health` in the same order) as of
    /// `now`: ejections that are over end here, and the share cap is enforced.
    pub(crate) fn snapshot(
        &self,
        (instances, health): Parts,
        previous: Option<&Snapshot>,
        clock: &Clock,
        now: Instant,
    ) -> Snapshot {
        let (health, ejected) = match health {
            Some(health) => {
                let ejected = self.settle_ejections(&instances, &health, clock, now);
                let clean = ejected.is_empty() && health.iter().all(Health::is_clean);
                ((!clean).then_some(health), ejected)
            }
            None => (None, Vec::new()),
        };
        let wall = SystemTime::now();
        let hashes = self.strategy == Strategy::ConsistentHash;
        let warmup = if hashes {
            // The ring ignores warm-up: changing its points would move keys.
            None
        } else {
            next_refresh(instances.iter().map(|i| &**i), wall)
        };
        let weights: Vec<f64> = instances
            .iter()
            .map(|i| match warmup {
                Some(_) => effective_weight(i, wall, self.min_fraction),
                None => f64::from(bounded_weight(i)),
            })
            .collect();
        let out =
            |i: usize| !ejected.is_empty() && health.as_ref().is_some_and(|h| h[i].is_ejected());
        let scores: Vec<f64> = (0..instances.len())
            .map(|i| {
                if out(i) {
                    0.0
                } else if warmup.is_some() {
                    // Warming counts for its share of the full weight (never quite zero).
                    (weights[i] / f64::from(bounded_weight(&instances[i]))).max(1e-9)
                } else {
                    1.0
                }
            })
            .collect();
        let in_flight = match self.strategy {
            Strategy::LeastRequest => carry_in_flight(&instances, previous),
            _ => Vec::new(),
        };
        let reads = read_all(
            &instances,
            Keys::new(self.locality.as_ref(), self.lanes.as_ref()),
            previous.map(|p| (&p.instances[..], &p.reads[..])),
        );
        let inputs = Inputs {
            strategy: self.strategy,
            instances: &instances,
            weights,
            health: scores,
            in_flight: &in_flight,
            warming: warmup.is_some(),
            previous_ring: previous.and_then(|p| p.route.ring()),
            reads: &reads,
        };
        let locality = self.locality.as_ref();
        let all: Vec<u32> = (0..instances.len() as u32).collect();
        let (route, lanes) = match &self.lanes {
            None => (inputs.route(&all, locality), None),
            Some(lanes) => {
                let mut base = Vec::with_capacity(instances.len());
                let mut by_lane = Groups::new();
                for (i, read) in reads.iter().enumerate() {
                    match read.lane.as_deref() {
                        Some(lane) => by_lane.add(lane, i as u32),
                        None => base.push(i as u32),
                    }
                }
                let mut by_lane: Vec<(Box<str>, Route)> = by_lane
                    .into_vec()
                    .into_iter()
                    // A lane none of whose instances can take a call falls back.
                    .filter(|(_, members)| inputs.any_healthy(members))
                    .map(|(lane, members)| (lane.into(), inputs.route(&members, locality)))
                    .collect();
                by_lane.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                let all =
                    (lanes.fallback == LaneFallback::All).then(|| inputs.route(&all, locality));
                (
                    inputs.route(&base, locality),
                    Some(LaneRoutes {
                        by_lane,
                        all,
                        fallback: lanes.fallback,
                    }),
                )
            }
        };
        let ejection_ends = ejected.iter().map(|(_, until)| clock.instant(*until)).min();
        let refresh_at = match (warmup.map(|after| now + after), ejection_ends) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
        .map(|at| Due::new(at, now));
        Snapshot {
            in_flight,
            instances,
            health,
            route,
            lanes,
            ejected: ejected.len(),
            refresh_at,
            refreshing: AtomicBool::new(false),
            reads,
            hashes,
        }
    }

    /// Brings back every instance whose ejection is over, then the ones that end soonest while
    /// more than the cap are out (the set shrank); returns the ones still out, with their end.
    fn settle_ejections(
        &self,
        instances: &[Arc<Instance>],
        health: &[Health],
        clock: &Clock,
        now: Instant,
    ) -> Vec<(usize, u64)> {
        let now = clock.at(now);
        let mut out: Vec<(usize, u64)> = Vec::new();
        for (i, record) in health.iter().enumerate() {
            let Some(until) = record.ejected_until() else {
                record.forgive(&self.outliers, now);
                continue;
            };
            if until <= now || !self.outliers.enabled {
                record.restore(now);
                tracing::info!(addr = %instances[i].addr, "ejected instance back in the set");
            } else {
                out.push((i, until));
            }
        }
        let cap = self.outliers.cap(instances.len());
        if out.len() > cap {
            out.sort_by_key(|(_, until)| *until);
            for (i, _) in out.drain(..out.len() - cap) {
                health[i].restore(now);
                tracing::info!(
                    addr = %instances[i].addr,
                    "ejected instance back early: more than the allowed share was out"
                );
            }
        }
        out
    }
}

/// The in-flight counters for `instances` (sorted by address): `previous`'s counter of the
/// same address, or a new one.
fn carry_in_flight(
    instances: &[Arc<Instance>],
    previous: Option<&Snapshot>,
) -> Vec<Arc<AtomicUsize>> {
    let (old, counters) = match previous {
        Some(p) if p.in_flight.len() == p.instances.len() => (&p.instances[..], &p.in_flight[..]),
        _ => (&[][..], &[][..]),
    };
    same_address(instances, old)
        .map(|j| j.map_or_else(Arc::default, |j| counters[j].clone()))
        .collect()
}

impl Snapshot {
    /// Where `addr` is in `instances`.
    #[inline]
    pub(crate) fn position(&self, addr: SocketAddr) -> Option<usize> {
        self.instances.binary_search_by_key(&addr, |i| i.addr).ok()
    }

    /// The parts of this snapshot, health as it is now, to build the next one from.
    pub(crate) fn parts(&self) -> Parts {
        (
            self.instances.clone(),
            self.health
                .as_ref()
                .map(|health| health.iter().map(Health::copy).collect()),
        )
    }

    /// The parts of this snapshot with a health record for every instance (clean ones where
    /// it had none): what the first failure needs.
    pub(crate) fn parts_tracked(&self) -> Parts {
        let (instances, health) = self.parts();
        let health =
            health.unwrap_or_else(|| instances.iter().map(|_| Health::default()).collect());
        (instances, Some(health))
    }

    /// The health records for `instances` (sorted by address): a copy of this snapshot's
    /// record of the same address, or a new one; `None` when this snapshot has none.
    pub(crate) fn carry_health(&self, instances: &[Arc<Instance>]) -> Option<Vec<Health>> {
        let health = self.health.as_ref()?;
        Some(
            same_address(instances, &self.instances)
                .map(|j| j.map_or_else(Health::default, |j| health[j].copy()))
                .collect(),
        )
    }

    /// The health record of the `i`-th instance, if records are kept.
    #[inline]
    pub(crate) fn health(&self, i: usize) -> Option<&Health> {
        self.health.as_ref()?.get(i)
    }

    /// Where a call for `lane` goes (`None`: no lane, the base lane); `None` when its lane
    /// has no instance that can take it and the fallback is to fail.
    #[inline]
    pub(crate) fn route_for(&self, lane: Option<&str>) -> Option<&Route> {
        let (Some(lanes), Some(lane)) = (&self.lanes, lane) else {
            return Some(&self.route);
        };
        match lanes.by_lane.binary_search_by(|(l, _)| (**l).cmp(lane)) {
            Ok(k) => Some(&lanes.by_lane[k].1),
            Err(_) => match lanes.fallback {
                LaneFallback::Base => Some(&self.route),
                LaneFallback::All => lanes.all.as_ref(),
                LaneFallback::Fail => None,
            },
        }
    }

    /// Where a call for `lane` goes once every instance of its own lane has failed it: the
    /// lane's fallback (`None` for a call without a lane, without lanes, or to fail).
    pub(crate) fn fallback_for(&self, lane: Option<&str>) -> Option<&Route> {
        let (Some(lanes), Some(_)) = (&self.lanes, lane) else {
            return None;
        };
        match lanes.fallback {
            LaneFallback::Base => Some(&self.route),
            LaneFallback::All => lanes.all.as_ref(),
            LaneFallback::Fail => None,
        }
    }

    /// How many instances `route` chooses from.
    pub(crate) fn pickable_len(&self, route: &Route) -> usize {
        route.len(self.instances.len())
    }

    /// The `k`-th instance `route` chooses from.
    #[inline]
    pub(crate) fn chosen(&self, route: &Route, k: usize) -> Option<&Arc<Instance>> {
        self.instances.get(route.chosen(k))
    }

    /// `route`'s choice for the `cursor`-th round-robin pick, random number source `rng`, or
    /// key hash `hash` (consistent hashing).
    #[inline]
    pub(crate) fn pick(
        &self,
        route: &Route,
        cursor: impl FnOnce() -> usize,
        rng: &mut fastrand::Rng,
        hash: Option<u64>,
    ) -> Option<&Arc<Instance>> {
        self.instances.get(route.pick(cursor, rng, hash)?)
    }

    /// True for a consistent-hashing view.
    pub(crate) fn hashes(&self) -> bool {
        self.hashes
    }
}

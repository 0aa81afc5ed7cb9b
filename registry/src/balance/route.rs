//! A route: where the calls of one lane go. One group of instances with its picker, or
//! several (priority levels, local and other zones) with the share of calls each takes, chosen
//! by a small alias table before the group's own picker chooses the instance. Built with the
//! snapshot it belongs to; never changed afterwards.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use super::consistent_hash::Ring;
use super::groups::Groups;
use super::least_request::LeastRequest;
use super::locality::{spill, Locality};
use super::round_robin::Schedule;
use super::tags::Read;
use super::weighted_random::AliasTable;
use super::Strategy;
use crate::discovery::Instance;

#[derive(Debug)]
pub(crate) enum Picker {
    Random(AliasTable),
    RoundRobin(Schedule),
    Hash(Ring),
    Least(LeastRequest),
}

/// Instances one picker chooses from.
#[derive(Debug)]
struct Group {
    /// Indexes into the snapshot's instances; `None`: all of them, in order.
    members: Option<Vec<u32>>,
    picker: Picker,
}

#[derive(Debug)]
pub(crate) struct Route {
    groups: Vec<Group>,
    /// Over the groups' shares of the calls, when there is more than one group.
    table: Option<AliasTable>,
    /// Every instance a retry may go to (sorted): what any group may pick, and every other
    /// member of the route that is not ejected (other zones and levels, which take no share
    /// of first attempts while the preferred ones are healthy); `None`: all of the snapshot's
    /// instances.
    pickable: Option<Vec<u32>>,
    /// How many that is.
    count: usize,
}

/// What every route of one snapshot is built from, per instance (in the snapshot's order).
pub(crate) struct Inputs<'a> {
    pub(crate) strategy: Strategy,
    pub(crate) instances: &'a [Arc<Instance>],
    /// The weight each picker gives (warm-up applied, except on a hash ring).
    pub(crate) weights: Vec<f64>,
    /// 0 while ejected, the warm-up fraction while warming, 1 otherwise.
    pub(crate) health: Vec<f64>,
    /// Least request only (empty otherwise).
    pub(crate) in_flight: &'a [Arc<AtomicUsize>],
    /// Whether anyone is warming up (round-robin slots then count sixteenths).
    pub(crate) warming: bool,
    /// The ring of the route before, to keep its resolution.
    pub(crate) previous_ring: Option<&'a Ring>,
    /// What each instance is routed by (empty without a locality and lanes): read from its
    /// tags once, not once per route that considers it.
    pub(crate) reads: &'a [Read],
}

impl Inputs<'_> {
    fn ejected(&self, i: u32) -> bool {
        self.health[i as usize] <= 0.0
    }

    fn mean_health(&self, members: &[u32]) -> f64 {
        if members.is_empty() {
            return 0.0;
        }
        members
            .iter()
            .map(|i| self.health[*i as usize])
            .sum::<f64>()
            / members.len() as f64
    }

    /// `members` without the ejected ones, reusing `members` when none is.
    fn healthy_of(&self, members: Vec<u32>) -> Vec<u32> {
        if members.iter().any(|i| self.ejected(*i)) {
            self.healthy(&members)
        } else {
            members
        }
    }

    fn healthy(&self, members: &[u32]) -> Vec<u32> {
        members
            .iter()
            .copied()
            .filter(|i| !self.ejected(*i))
            .collect()
    }

    fn picker(&self, members: &[u32], ring_before: Option<&Ring>) -> Picker {
        let weights =
            || -> Vec<f64> { members.iter().map(|i| self.weights[*i as usize]).collect() };
        match self.strategy {
            Strategy::WeightedRandom => Picker::Random(AliasTable::new(&weights())),
            Strategy::LeastRequest => Picker::Least(LeastRequest::new(
                &weights(),
                members.iter().map(|i| self.in_flight[*i as usize].clone()),
            )),
            Strategy::SmoothRoundRobin => {
                // Warm-up weights in sixteenths, so that the ramp survives integer slots.
                let resolution = if self.warming { 16.0 } else { 1.0 };
                let slots: Vec<u64> = weights()
                    .into_iter()
                    .map(|w| (w * resolution).round().max(1.0) as u64)
                    .collect();
                Picker::RoundRobin(Schedule::new(&slots))
            }
            Strategy::ConsistentHash => Picker::Hash(Ring::new(
                members.iter().map(|i| &*self.instances[*i as usize]),
                ring_before,
            )),
        }
    }

    fn group(&self, members: Vec<u32>, ring_before: Option<&Ring>) -> Group {
        let picker = self.picker(&members, ring_before);
        let identity = members.len() == self.instances.len();
        Group {
            members: (!identity).then_some(members),
            picker,
        }
    }

    /// True when some of `members` is not ejected.
    pub(crate) fn any_healthy(&self, members: &[u32]) -> bool {
        members.iter().any(|i| !self.ejected(*i))
    }

    /// The route over `members` (sorted indexes). Without a `locality`: one group of the
    /// members that are not ejected, or of all of them when every one is. With one: the
    /// groups and shares [`Locality`] describes.
    pub(crate) fn route(&self, members: &[u32], locality: Option<&Locality>) -> Route {
        let healthy = self.healthy(members);
        let Some(locality) = locality else {
            let chosen = if healthy.is_empty() {
                members.to_vec()
            } else {
                healthy
            };
            let group = self.group(chosen, self.previous_ring);
            return Route::new(vec![(group, 1.0)], &[], self.instances.len());
        };
        let mut by_level = Groups::new();
        for &i in members {
            by_level.add(self.reads[i as usize].level, i);
        }
        let mut by_level = by_level.into_vec();
        by_level.sort_unstable_by_key(|(level, _)| *level);
        let levels: Vec<Vec<u32>> = by_level.into_iter().map(|(_, m)| m).collect();
        let healths: Vec<f64> = levels.iter().map(|m| self.mean_health(m)).collect();
        let factor = locality.overprovisioning;
        let (mut loads, enough) = spill(&healths, factor);
        let none_healthy = healthy.is_empty();
        if none_healthy {
            // Everything is out: the first level takes it all, ignoring health.
            if let Some(first) = loads.first_mut() {
                *first = 1.0;
            }
        }
        let mut groups = Vec::new();
        for (k, (level, load)) in levels.into_iter().zip(loads).enumerate() {
            if load <= 0.0 {
                continue;
            }
            let panic = none_healthy || (!enough && healths[k] < locality.panic_threshold);
            if panic {
                tracing::debug!(
                    instances = level.len(),
                    health = healths[k],
                    "priority level in panic: picking among all of its instances"
                );
                groups.push((self.group(level, None), load));
                continue;
            }
            if locality.zone.is_none() {
                groups.push((self.group(self.healthy_of(level), None), load));
                continue;
            }
            let (mut local, mut remote) = (
                Vec::with_capacity(level.len()),
                Vec::with_capacity(level.len()),
            );
            for &i in &level {
                if self.reads[i as usize].local {
                    local.push(i);
                } else {
                    remote.push(i);
                }
            }
            let (split, _) = spill(
                &[self.mean_health(&local), self.mean_health(&remote)],
                factor,
            );
            for (part, share) in [(local, split[0]), (remote, split[1])] {
                if share > 0.0 {
                    groups.push((self.group(self.healthy_of(part), None), load * share));
                }
            }
        }
        Route::new(groups, &healthy, self.instances.len())
    }
}

impl Route {
    /// Over `groups` with their shares; a retry may also go to `reserve` (of `all`
    /// instances in the snapshot).
    fn new(groups: Vec<(Group, f64)>, reserve: &[u32], all: usize) -> Self {
        let table = (groups.len() > 1)
            .then(|| AliasTable::new(&groups.iter().map(|(_, s)| *s).collect::<Vec<f64>>()));
        let groups: Vec<Group> = groups.into_iter().map(|(g, _)| g).collect();
        let whole = groups.iter().any(|g| g.members.is_none());
        let pickable = if whole {
            None
        } else {
            // Marked, then read in order: O(n), no sort.
            let mut marked = vec![false; all];
            for &i in groups
                .iter()
                .flat_map(|g| g.members.iter().flatten())
                .chain(reserve)
            {
                marked[i as usize] = true;
            }
            let union: Vec<u32> = (0..all as u32).filter(|i| marked[*i as usize]).collect();
            (union.len() < all).then_some(union)
        };
        let count = pickable.as_ref().map_or(usize::MAX, Vec::len);
        Self {
            groups,
            table,
            pickable,
            count,
        }
    }

    /// The instance (index into the snapshot's) for the `cursor`-th round-robin pick, random
    /// number source `rng` (weighted random, least request, the choice of group), or key hash
    /// `hash` (consistent hashing; it chooses the group too, so a key keeps its instance).
    #[inline]
    pub(crate) fn pick(
        &self,
        cursor: impl FnOnce() -> usize,
        rng: &mut fastrand::Rng,
        hash: Option<u64>,
    ) -> Option<usize> {
        let group = match &self.table {
            None => self.groups.first()?,
            Some(table) => {
                let g = match hash {
                    Some(hash) => table.pick(&mut fastrand::Rng::with_seed(hash)),
                    None => table.pick(rng),
                }?;
                &self.groups[g]
            }
        };
        let k = match &group.picker {
            Picker::Random(table) => table.pick(rng),
            Picker::RoundRobin(schedule) => schedule.pick(cursor()),
            Picker::Hash(ring) => ring.pick(hash.unwrap_or_else(|| rng.u64(..))),
            Picker::Least(least) => least.pick(rng),
        }?;
        match &group.members {
            Some(members) => members.get(k).map(|i| *i as usize),
            None => Some(k),
        }
    }

    /// How many instances this route may pick, given the snapshot's instance count `all`.
    pub(crate) fn len(&self, all: usize) -> usize {
        if self.count == usize::MAX {
            all
        } else {
            self.count
        }
    }

    /// The `k`-th instance this route may pick (index into the snapshot's).
    #[inline]
    pub(crate) fn chosen(&self, k: usize) -> usize {
        match &self.pickable {
            Some(indexes) => indexes[k] as usize,
            None => k,
        }
    }

    /// The ring of a one-group hashing route, for the next snapshot to keep its resolution.
    pub(crate) fn ring(&self) -> Option<&Ring> {
        match self.groups.as_slice() {
            [Group {
                picker: Picker::Hash(ring),
                ..
            }] => Some(ring),
            _ => None,
        }
    }
}

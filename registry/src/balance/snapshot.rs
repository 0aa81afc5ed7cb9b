//! One immutable view of a balancer: the instances, their health records, which of them may be
//! picked (not ejected), and the picker built over those. Built whenever the set changes, an
//! instance is ejected or comes back, or warm-up weights are due; never changed afterwards.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::consistent_hash::Ring;
use super::filter::TagFilter;
use super::least_request::LeastRequest;
use super::outlier::{Clock, Health, OutlierDetection};
use super::round_robin::Schedule;
use super::warmup::{bounded_weight, effective_weight, next_refresh};
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

/// What a [`BalancerBuilder`](super::BalancerBuilder) sets; fixed for the life of the balancer.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) strategy: Strategy,
    pub(crate) filter: TagFilter,
    pub(crate) min_fraction: f64,
    pub(crate) outliers: OutlierDetection,
}

/// What a snapshot is built from: the instances and their health records (`None`: all clean).
pub(crate) type Parts = (Vec<Arc<Instance>>, Option<Vec<Health>>);

#[derive(Debug)]
pub(crate) struct Snapshot {
    /// The instances after the tag filter, sorted by address.
    pub(crate) instances: Vec<Arc<Instance>>,
    /// The health record of each instance (same order), copied from the snapshot before for
    /// as long as the address stays in the set; `None` while every record would be clean.
    pub(crate) health: Option<Vec<Health>>,
    /// While some are ejected: the indexes (into `instances`) the picker was built over.
    pickable: Option<Vec<u32>>,
    picker: Picker,
    /// How many instances are ejected in this view.
    pub(crate) ejected: usize,
    /// When this view stops being right: the next warm-up step or the end of the first
    /// ejection to end, whichever is sooner.
    pub(crate) refresh_at: Option<Instant>,
    /// Set by the one pick that rebuilds it.
    pub(crate) refreshing: AtomicBool,
    /// Least request only (empty otherwise): the calls in flight to each instance (same
    /// order), shared with the snapshot before for as long as the address stays in the set.
    pub(crate) in_flight: Vec<Arc<AtomicUsize>>,
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
        let pickable = match &health {
            Some(health) if !ejected.is_empty() && ejected.len() < instances.len() => Some(
                (0..instances.len() as u32)
                    .filter(|i| !health[*i as usize].is_ejected())
                    .collect::<Vec<u32>>(),
            ),
            _ => None,
        };
        let chosen = |k: usize| -> &Instance {
            match &pickable {
                Some(indexes) => &instances[indexes[k] as usize],
                None => &instances[k],
            }
        };
        let count = pickable.as_ref().map_or(instances.len(), Vec::len);
        let wall = SystemTime::now();
        let warmup = match self.strategy {
            // The ring ignores warm-up: changing its points would move keys.
            Strategy::ConsistentHash => None,
            _ => next_refresh(instances.iter().map(|i| &**i), wall),
        };
        let weights = || {
            (0..count)
                .map(|k| match warmup {
                    Some(_) => effective_weight(chosen(k), wall, self.min_fraction),
                    None => f64::from(bounded_weight(chosen(k))),
                })
                .collect::<Vec<f64>>()
        };
        let in_flight = match self.strategy {
            Strategy::LeastRequest => carry_in_flight(&instances, previous),
            _ => Vec::new(),
        };
        let picker = match self.strategy {
            Strategy::WeightedRandom => Picker::Random(AliasTable::new(&weights())),
            Strategy::LeastRequest => Picker::Least(LeastRequest::new(
                &weights(),
                (0..count).map(|k| match &pickable {
                    Some(indexes) => in_flight[indexes[k] as usize].clone(),
                    None => in_flight[k].clone(),
                }),
            )),
            Strategy::SmoothRoundRobin => {
                // Warm-up weights in sixteenths, so that the ramp survives integer slots.
                let resolution = if warmup.is_some() { 16.0 } else { 1.0 };
                let slots: Vec<u64> = weights()
                    .into_iter()
                    .map(|w| (w * resolution).round().max(1.0) as u64)
                    .collect();
                Picker::RoundRobin(Schedule::new(&slots))
            }
            Strategy::ConsistentHash => {
                let previous = previous.and_then(|s| match &s.picker {
                    Picker::Hash(ring) => Some(ring),
                    _ => None,
                });
                Picker::Hash(Ring::new((0..count).map(chosen), previous))
            }
        };
        let ejection_ends = ejected.iter().map(|(_, until)| clock.instant(*until)).min();
        let refresh_at = match (warmup.map(|after| now + after), ejection_ends) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Snapshot {
            in_flight,
            instances,
            health,
            pickable,
            picker,
            ejected: ejected.len(),
            refresh_at,
            refreshing: AtomicBool::new(false),
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
    let mut j = 0;
    instances
        .iter()
        .map(|instance| {
            while j < old.len() && old[j].addr < instance.addr {
                j += 1;
            }
            match old.get(j) {
                Some(o) if o.addr == instance.addr => counters[j].clone(),
                _ => Arc::default(),
            }
        })
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
        let old = &self.instances;
        let mut j = 0;
        let carried = instances
            .iter()
            .map(|instance| {
                while j < old.len() && old[j].addr < instance.addr {
                    j += 1;
                }
                match old.get(j) {
                    Some(o) if o.addr == instance.addr => health[j].copy(),
                    _ => Health::default(),
                }
            })
            .collect();
        Some(carried)
    }

    /// The health record of the `i`-th instance, if records are kept.
    #[inline]
    pub(crate) fn health(&self, i: usize) -> Option<&Health> {
        self.health.as_ref()?.get(i)
    }

    /// How many instances the picker chooses from.
    pub(crate) fn pickable_len(&self) -> usize {
        self.pickable
            .as_ref()
            .map_or(self.instances.len(), Vec::len)
    }

    /// The instance behind the picker's `k`-th choice.
    #[inline]
    pub(crate) fn chosen(&self, k: usize) -> Option<&Arc<Instance>> {
        match &self.pickable {
            Some(indexes) => self.instances.get(*indexes.get(k)? as usize),
            None => self.instances.get(k),
        }
    }

    /// The picker's choice for the `cursor`-th round-robin pick, random number `random`
    /// (weighted random), or key hash `hash` (consistent hashing).
    #[inline]
    pub(crate) fn pick(
        &self,
        cursor: impl FnOnce() -> usize,
        rng: &mut fastrand::Rng,
        hash: Option<u64>,
    ) -> Option<&Arc<Instance>> {
        let k = match &self.picker {
            Picker::Random(table) => table.pick(rng),
            Picker::RoundRobin(schedule) => schedule.pick(cursor()),
            Picker::Hash(ring) => ring.pick(hash.unwrap_or_else(|| rng.u64(..))),
            Picker::Least(least) => least.pick(rng),
        }?;
        self.chosen(k)
    }

    /// True for a consistent-hashing view.
    pub(crate) fn hashes(&self) -> bool {
        matches!(self.picker, Picker::Hash(_))
    }
}

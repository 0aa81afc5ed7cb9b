//! [`Balancer`]: a live instance set (fed by `Discovery::watch`) and a picking strategy,
//! configured beforehand through [`BalancerBuilder`].

use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use futures_util::StreamExt;
use tokio::sync::watch;

use super::consistent_hash::{self, Ring};
use super::filter::TagFilter;
use super::round_robin::Schedule;
use super::warmup::{effective_weight, next_refresh, DEFAULT_MIN_FRACTION};
use super::weighted_random::AliasTable;
use crate::discovery::{Discovery, DiscoveryError, Instance};

/// How a [`Balancer`] chooses among instances (Kitex has all three).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Each pick independently, with probability proportional to weight (an alias table).
    WeightedRandom,
    /// Smooth weighted round-robin: exact proportions over every cycle, evenly interleaved.
    SmoothRoundRobin,
    /// A hash ring on a caller-given key ([`Balancer::pick_by_key`]).
    ConsistentHash,
}

#[derive(Debug)]
enum Picker {
    Random(AliasTable),
    RoundRobin(Schedule),
    Hash(Ring),
}

/// One immutable view: the filtered instances and the picker built over them.
#[derive(Debug)]
struct Snapshot {
    instances: Vec<Arc<Instance>>,
    picker: Picker,
    /// While instances warm up: when the picker's weights are due to be recomputed.
    refresh_at: Option<Instant>,
    /// Set by the one pick that recomputes them.
    refreshing: AtomicBool,
}

/// What a [`BalancerBuilder`] sets; fixed for the life of the balancer.
#[derive(Clone, Debug)]
struct Config {
    strategy: Strategy,
    filter: TagFilter,
    min_fraction: f64,
}

impl Config {
    /// The picker over `instances` (already filtered) as of now.
    fn snapshot(&self, instances: Vec<Arc<Instance>>, previous: Option<&Snapshot>) -> Snapshot {
        let now = SystemTime::now();
        let refresh = match self.strategy {
            // The ring ignores warm-up: changing its points would move keys.
            Strategy::ConsistentHash => None,
            _ => next_refresh(instances.iter().map(|i| &**i), now),
        };
        let weights = || {
            instances
                .iter()
                .map(|i| match refresh {
                    Some(_) => effective_weight(i, now, self.min_fraction),
                    None => f64::from(i.weight.max(1)),
                })
                .collect::<Vec<f64>>()
        };
        let picker = match self.strategy {
            Strategy::WeightedRandom => Picker::Random(AliasTable::new(&weights())),
            Strategy::SmoothRoundRobin => {
                // Warm-up weights in sixteenths, so that the ramp survives integer slots.
                let resolution = if refresh.is_some() { 16.0 } else { 1.0 };
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
                Picker::Hash(Ring::new(instances.iter().map(|i| &**i), previous))
            }
        };
        Snapshot {
            instances,
            picker,
            refresh_at: refresh.map(|after| Instant::now() + after),
            refreshing: AtomicBool::new(false),
        }
    }
}

#[derive(Debug)]
struct Inner {
    config: Config,
    snapshot: ArcSwap<Snapshot>,
    /// Round-robin position, kept across snapshots so a change does not restart the cycle.
    cursor: AtomicUsize,
    /// Never sent on: dropped with the last clone of the balancer, which ends its watch task.
    owner: watch::Sender<()>,
}

impl Inner {
    fn replace(&self, instances: impl IntoIterator<Item = Instance>) {
        let all: Vec<Arc<Instance>> = instances.into_iter().map(Arc::new).collect();
        let filtered = if self.config.filter.admits_all() {
            all
        } else {
            self.config.filter.apply(&all)
        };
        let previous = self.snapshot.load();
        let next = self.config.snapshot(filtered, Some(&previous));
        self.snapshot.store(Arc::new(next));
    }

    /// Recomputes warm-up weights of `current`, unless another pick is at it or the set has
    /// changed in the meantime.
    #[cold]
    fn refresh(&self, current: &Arc<Snapshot>) {
        if current.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let next = Arc::new(
            self.config
                .snapshot(current.instances.clone(), Some(current)),
        );
        let _previous = self.snapshot.compare_and_swap(current, next);
    }
}

/// Configures a [`Balancer`]: strategy, tag filter, warm-up floor. Nothing configures a
/// balancer once it exists; [`watch`](Self::watch) or [`build`](Self::build) ends the
/// configuration.
///
/// ```
/// use service_registry::balance::{Balancer, Strategy, TagFilter};
/// use service_registry::{Info, Instance, MemoryRegistry, Registry};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let registry = MemoryRegistry::new();
/// let mut heavy = Info::new("echo", "127.0.0.1:7001".parse().unwrap());
/// heavy.weight = 30;
/// heavy.tags.insert("idc".into(), "hz".into());
/// registry.register(&heavy).await.unwrap();
///
/// let balancer = Balancer::builder(Strategy::WeightedRandom)
///     .filter(TagFilter::new().require("idc", "hz").fallback_to_all(true))
///     .warmup_floor(0.05)
///     .watch(&registry, "echo")
///     .await
///     .unwrap();
/// assert_eq!(balancer.pick().unwrap().addr, heavy.addr);
/// # }
/// ```
///
/// A live balancer has no configuration methods, so configuring one after `watch` cannot
/// compile:
///
/// ```compile_fail
/// # use service_registry::balance::{Balancer, Strategy, TagFilter};
/// # async fn f(registry: service_registry::MemoryRegistry) {
/// let balancer = Balancer::builder(Strategy::WeightedRandom)
///     .watch(&registry, "echo")
///     .await
///     .unwrap()
///     .filter(TagFilter::new().require("idc", "hz"));
/// # }
/// ```
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `watch` or `build`"]
pub struct BalancerBuilder {
    config: Config,
}

impl BalancerBuilder {
    /// Picks only among instances this filter admits (default: all).
    ///
    /// See [`BalancerBuilder`] for an example.
    pub fn filter(mut self, filter: TagFilter) -> Self {
        self.config.filter = filter;
        self
    }

    /// The share of its weight a just-started instance gets (default 0.1); it then ramps
    /// linearly to its full weight over its `warmup`. The ramp is applied in steps of a
    /// hundredth of the warm-up (at most every 5 ms), not on every pick.
    ///
    /// See [`BalancerBuilder`] for an example.
    pub fn warmup_floor(mut self, min_fraction: f64) -> Self {
        self.config.min_fraction = min_fraction;
        self
    }

    /// A balancer over `instances`, changed only by [`Balancer::update`].
    ///
    /// ```
    /// use service_registry::balance::{Balancer, Strategy};
    /// use service_registry::{Info, Instance};
    ///
    /// let one = Instance::from(&Info::new("s", "127.0.0.1:1".parse().unwrap()));
    /// let balancer = Balancer::builder(Strategy::SmoothRoundRobin).build([one]);
    /// assert_eq!(balancer.instances().len(), 1);
    /// assert!(Balancer::builder(Strategy::ConsistentHash).build([]).pick().is_none());
    /// ```
    pub fn build(self, instances: impl IntoIterator<Item = Instance>) -> Balancer {
        let inner = Inner {
            snapshot: ArcSwap::from_pointee(self.config.snapshot(Vec::new(), None)),
            config: self.config,
            cursor: AtomicUsize::new(0),
            owner: watch::channel(()).0,
        };
        inner.replace(instances);
        Balancer {
            inner: Arc::new(inner),
        }
    }

    /// A balancer following `service` through `discovery`: the current set is in place when
    /// this returns, and every later change is applied as it arrives. The task that applies
    /// them ends, and with it the watch, as soon as the last clone of the balancer is dropped.
    ///
    /// See [`BalancerBuilder`] for an example.
    pub async fn watch<D: Discovery + ?Sized>(
        self,
        discovery: &D,
        service: &str,
    ) -> Result<Balancer, DiscoveryError> {
        let mut changes = discovery.watch(service).await?;
        let first = changes.next().await.map(|c| c.all).unwrap_or_default();
        let balancer = self.build(first);
        let weak: Weak<Inner> = Arc::downgrade(&balancer.inner);
        let mut owner = balancer.inner.owner.subscribe();
        let service = service.to_string();
        tokio::spawn(async move {
            loop {
                let change = tokio::select! {
                    // Nothing is ever sent: this completes when the balancer is gone.
                    _ = owner.changed() => return,
                    change = changes.next() => change,
                };
                let Some(change) = change else { return };
                let Some(inner) = weak.upgrade() else { return };
                tracing::debug!(service, instances = change.all.len(), "balancer updated");
                inner.replace(change.all);
            }
        });
        Ok(balancer)
    }
}

/// Picks instances of one service: weighted random, smooth weighted round-robin or consistent
/// hashing, with warm-up and tag filters, all set up front by [`Balancer::builder`].
///
/// Every change builds a new immutable picker (alias table, round-robin cycle or hash ring)
/// and swaps it in (`arc-swap`): picking never waits for a change, takes no lock, allocates
/// nothing, and costs the same whatever the number of instances. Cheap to clone.
///
/// See [`BalancerBuilder`] for an example.
#[derive(Clone, Debug)]
pub struct Balancer {
    inner: Arc<Inner>,
}

impl Balancer {
    /// Starts configuring a balancer using `strategy`.
    ///
    /// See [`BalancerBuilder`] for an example.
    pub fn builder(strategy: Strategy) -> BalancerBuilder {
        BalancerBuilder {
            config: Config {
                strategy,
                filter: TagFilter::default(),
                min_fraction: DEFAULT_MIN_FRACTION,
            },
        }
    }

    /// Replaces the instance set. This is what the watch does on every change: on a balancer
    /// from [`BalancerBuilder::watch`], the next change from discovery replaces it again.
    ///
    /// ```
    /// use service_registry::balance::{Balancer, Strategy};
    /// use service_registry::{Info, Instance};
    /// let b = Balancer::builder(Strategy::WeightedRandom).build([]);
    /// b.update([Instance::from(&Info::new("s", "127.0.0.1:1".parse().unwrap()))]);
    /// assert_eq!(b.instances().len(), 1);
    /// ```
    pub fn update(&self, instances: impl IntoIterator<Item = Instance>) {
        self.inner.replace(instances);
    }

    /// The instances picks are made from (after the tag filter).
    ///
    /// See [`update`](Self::update) for an example.
    pub fn instances(&self) -> Vec<Arc<Instance>> {
        self.inner.snapshot.load().instances.clone()
    }

    /// Picks an instance (for consistent hashing: for a random key).
    ///
    /// See [`BalancerBuilder`] for an example.
    pub fn pick(&self) -> Option<Arc<Instance>> {
        let mut rng = fastrand::Rng::with_seed(fastrand::u64(..));
        self.pick_with(&mut rng)
    }

    /// Picks with a caller-owned random source (seed it for reproducible sequences).
    ///
    /// ```
    /// use service_registry::balance::{Balancer, Strategy};
    /// use service_registry::{Info, Instance};
    /// let b = Balancer::builder(Strategy::WeightedRandom)
    ///     .build([Instance::from(&Info::new("s", "127.0.0.1:1".parse().unwrap()))]);
    /// let mut rng = fastrand::Rng::with_seed(7);
    /// assert!(b.pick_with(&mut rng).is_some());
    /// ```
    pub fn pick_with(&self, rng: &mut fastrand::Rng) -> Option<Arc<Instance>> {
        let snapshot = self.inner.snapshot.load();
        if let Some(at) = snapshot.refresh_at {
            if Instant::now() >= at {
                self.inner.refresh(&snapshot);
            }
        }
        let index = match &snapshot.picker {
            Picker::Random(table) => table.pick(rng),
            Picker::RoundRobin(schedule) => {
                schedule.pick(self.inner.cursor.fetch_add(1, Ordering::Relaxed))
            }
            Picker::Hash(ring) => ring.pick(rng.u64(..)),
        }?;
        snapshot.instances.get(index).cloned()
    }

    /// Picks for `key`: with [`Strategy::ConsistentHash`] the same key maps to the same instance
    /// while the set is stable; other strategies ignore the key.
    ///
    /// ```
    /// use service_registry::balance::{Balancer, Strategy};
    /// use service_registry::{Info, Instance};
    /// let b = Balancer::builder(Strategy::ConsistentHash).build(
    ///     [1, 2, 3].map(|p| Instance::from(&Info::new("s", format!("127.0.0.1:{p}").parse().unwrap()))),
    /// );
    /// assert_eq!(b.pick_by_key("user-42").unwrap().addr, b.pick_by_key("user-42").unwrap().addr);
    /// ```
    pub fn pick_by_key(&self, key: impl Hash) -> Option<Arc<Instance>> {
        let snapshot = self.inner.snapshot.load();
        match &snapshot.picker {
            Picker::Hash(ring) => snapshot
                .instances
                .get(ring.pick(consistent_hash::hash(key))?)
                .cloned(),
            _ => self.pick(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Info;
    use std::collections::HashMap;
    use std::time::Duration;

    fn weighted(weights: &[u32]) -> Vec<Instance> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let mut info = Info::new("s", format!("127.0.0.1:{}", i + 1).parse().unwrap());
                info.weight = *w;
                Instance::from(&info)
            })
            .collect()
    }

    fn shares(balancer: &Balancer, picks: usize, seed: u64) -> HashMap<u16, f64> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut counts: HashMap<u16, usize> = HashMap::new();
        for _ in 0..picks {
            *counts
                .entry(balancer.pick_with(&mut rng).unwrap().addr.port())
                .or_default() += 1;
        }
        counts
            .into_iter()
            .map(|(port, n)| (port, n as f64 / picks as f64))
            .collect()
    }

    #[test]
    fn hundred_thousand_picks_follow_the_weights_within_two_points() {
        let weights = [10, 20, 30, 40];
        for strategy in [
            Strategy::WeightedRandom,
            Strategy::SmoothRoundRobin,
            Strategy::ConsistentHash,
        ] {
            let balancer = Balancer::builder(strategy).build(weighted(&weights));
            let got = shares(&balancer, 100_000, 42);
            for (i, w) in weights.iter().enumerate() {
                let want = f64::from(*w) / 100.0;
                let share = got[&(i as u16 + 1)];
                assert!(
                    (share - want).abs() <= 0.02,
                    "{strategy:?}: port {} got {share:.4}, want {want:.2}",
                    i + 1
                );
            }
        }
    }

    #[test]
    fn smooth_round_robin_interleaves_exactly() {
        let balancer = Balancer::builder(Strategy::SmoothRoundRobin).build(weighted(&[5, 1, 1]));
        let mut rng = fastrand::Rng::with_seed(1);
        let order: Vec<u16> = (0..7)
            .map(|_| balancer.pick_with(&mut rng).unwrap().addr.port())
            .collect();
        // nginx's sequence for weights 5, 1, 1 is a a b a c a a; the precomputed cycle puts
        // each instance's picks at the midpoints of equal parts of the cycle (a at 0.5, 1.5,
        // .., 4.5 sevenths of 5, b and c at 3.5), which gives a a a b c a a: the same counts,
        // the light instances still apart from each other and inside a's run.
        assert_eq!(order, [1, 1, 1, 2, 3, 1, 1]);
        // The next cycle repeats it.
        let again: Vec<u16> = (0..7)
            .map(|_| balancer.pick_with(&mut rng).unwrap().addr.port())
            .collect();
        assert_eq!(again, order);
    }

    #[test]
    fn the_ramp_advances_without_a_set_change() {
        // Started just now, warm-up 300 ms: it gets the 10 % floor at first, all of its
        // weight once the warm-up is over, with no update in between.
        for strategy in [Strategy::WeightedRandom, Strategy::SmoothRoundRobin] {
            let mut instances = weighted(&[50, 50]);
            instances[1].start_time = Some(SystemTime::now());
            instances[1].warmup = Duration::from_millis(300);
            let balancer = Balancer::builder(strategy).build(instances);
            let early = shares(&balancer, 20_000, 3);
            std::thread::sleep(Duration::from_millis(350));
            let late = shares(&balancer, 20_000, 4);
            assert!(
                early[&2] < 0.25,
                "{strategy:?}: early share {:.3}",
                early[&2]
            );
            assert!(
                (late[&2] - 0.5).abs() <= 0.02,
                "{strategy:?}: late share {:.3}",
                late[&2]
            );
        }
    }

    #[test]
    fn warming_instance_gets_a_ramped_share() {
        let mut instances = weighted(&[50, 50]);
        // The second one started just now with a long warm-up: it gets the 10 % floor.
        instances[1].start_time = Some(SystemTime::now());
        instances[1].warmup = Duration::from_secs(3600);
        for strategy in [Strategy::WeightedRandom, Strategy::SmoothRoundRobin] {
            let balancer = Balancer::builder(strategy).build(instances.clone());
            let got = shares(&balancer, 50_000, 7);
            let want = 5.0 / 55.0;
            assert!(
                (got[&2] - want).abs() <= 0.02,
                "{strategy:?}: warming share {:.4}, want {want:.4}",
                got[&2]
            );
        }
    }

    #[test]
    fn filters_apply_and_fall_back() {
        let mut instances = weighted(&[10, 10]);
        instances[0].tags.insert("idc".into(), "hz".into());
        let only_hz = Balancer::builder(Strategy::WeightedRandom)
            .filter(TagFilter::new().require("idc", "hz"))
            .build(instances.clone());
        assert!((0..100).all(|_| only_hz.pick().unwrap().addr.port() == 1));
        let none = Balancer::builder(Strategy::WeightedRandom)
            .filter(TagFilter::new().require("idc", "bj"))
            .build(instances.clone());
        assert!(none.pick().is_none());
        let fallback = Balancer::builder(Strategy::WeightedRandom)
            .filter(TagFilter::new().require("idc", "bj").fallback_to_all(true))
            .build(instances);
        assert_eq!(fallback.instances().len(), 2);
    }

    #[tokio::test]
    async fn watch_removal_takes_the_instance_out() {
        use crate::{MemoryRegistry, Registry};
        let registry = MemoryRegistry::new();
        let a = Info::new("svc", "127.0.0.1:1".parse().unwrap());
        let b = Info::new("svc", "127.0.0.1:2".parse().unwrap());
        registry.register(&a).await.unwrap();
        registry.register(&b).await.unwrap();
        let balancer = Balancer::builder(Strategy::SmoothRoundRobin)
            .watch(&registry, "svc")
            .await
            .unwrap();
        assert_eq!(balancer.instances().len(), 2);
        registry.deregister(&a).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while balancer.instances().len() != 1 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "removal not applied within 1 s"
            );
            tokio::task::yield_now().await;
        }
        assert!((0..20).all(|_| balancer.pick().unwrap().addr == b.addr));
    }

    /// Alive tasks on the current runtime.
    fn alive() -> usize {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    }

    #[tokio::test]
    async fn the_watch_task_ends_when_the_last_clone_is_dropped() {
        use crate::MemoryRegistry;
        let registry = MemoryRegistry::new();
        let baseline = alive();
        let balancer = Balancer::builder(Strategy::WeightedRandom)
            .watch(&registry, "svc")
            .await
            .unwrap();
        assert_eq!(alive(), baseline + 1, "one task follows the watch");
        let clone = balancer.clone();
        drop(balancer);
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(alive(), baseline + 1, "a clone still owns the task");
        drop(clone);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while alive() != baseline {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the watch task outlived its balancer by 1 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

//! [`Balancer`]: a live instance set (fed by `Discovery::watch`) and a picking strategy.

use std::hash::Hash;
use std::sync::{Arc, Weak};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use futures_util::StreamExt;
use tokio::sync::watch;

use super::consistent_hash::ConsistentHash;
use super::filter::TagFilter;
use super::round_robin::SmoothRoundRobin;
use super::warmup::DEFAULT_MIN_FRACTION;
use super::weighted_random::WeightedRandom;
use crate::discovery::{Discovery, DiscoveryError, Instance};

/// How a [`Balancer`] chooses among instances (Kitex has all three).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Each pick independently, with probability proportional to weight.
    WeightedRandom,
    /// nginx's smooth weighted round-robin: exact proportions, evenly interleaved.
    SmoothRoundRobin,
    /// A hash ring on a caller-given key ([`Balancer::pick_by_key`]).
    ConsistentHash,
}

#[derive(Debug)]
enum Picker {
    Random(WeightedRandom),
    RoundRobin(SmoothRoundRobin),
    Hash(ConsistentHash),
}

/// One immutable view: the filtered instances and the picker built over them.
#[derive(Debug)]
struct Snapshot {
    instances: Vec<Arc<Instance>>,
    picker: Picker,
}

#[derive(Debug)]
struct Inner {
    strategy: Strategy,
    filter: TagFilter,
    min_fraction: f64,
    snapshot: ArcSwap<Snapshot>,
    /// Never sent on: dropped with the last clone of the balancer, which ends its watch tasks.
    owner: watch::Sender<()>,
}

impl Inner {
    fn build(&self, instances: &[Instance]) -> Snapshot {
        let all: Vec<Arc<Instance>> = instances.iter().cloned().map(Arc::new).collect();
        let instances = self.filter.apply(&all);
        let picker = match self.strategy {
            Strategy::WeightedRandom => Picker::Random(WeightedRandom::new(instances.clone())),
            Strategy::SmoothRoundRobin => {
                Picker::RoundRobin(SmoothRoundRobin::new(instances.clone()))
            }
            Strategy::ConsistentHash => Picker::Hash(ConsistentHash::new(instances.clone())),
        };
        Snapshot { instances, picker }
    }
}

/// Picks instances of one service: weighted random, smooth weighted round-robin or consistent
/// hashing, with warm-up and tag filters.
///
/// Updates build a new immutable snapshot and swap it in (`arc-swap`), so picking never waits
/// for an update; weighted random and consistent hashing take no lock at all, smooth
/// round-robin one short mutex for its running weights. Cheap to clone.
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
/// let balancer = Balancer::new(Strategy::WeightedRandom)
///     .with_filter(TagFilter::new().require("idc", "hz").fallback_to_all(true))
///     .watch(&registry, "echo")
///     .await
///     .unwrap();
/// assert_eq!(balancer.pick().unwrap().addr, heavy.addr);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Balancer {
    inner: Arc<Inner>,
}

impl Balancer {
    /// An empty balancer using `strategy`.
    ///
    /// ```
    /// use service_registry::balance::{Balancer, Strategy};
    /// assert!(Balancer::new(Strategy::SmoothRoundRobin).pick().is_none());
    /// ```
    pub fn new(strategy: Strategy) -> Self {
        let inner = Inner {
            strategy,
            filter: TagFilter::default(),
            min_fraction: DEFAULT_MIN_FRACTION,
            snapshot: ArcSwap::from_pointee(Snapshot {
                instances: Vec::new(),
                picker: Picker::Random(WeightedRandom::new(Vec::new())),
            }),
            owner: watch::channel(()).0,
        };
        let balancer = Self {
            inner: Arc::new(inner),
        };
        balancer.update(&[]);
        balancer
    }

    fn reconfigure(self, change: impl FnOnce(&mut Inner)) -> Self {
        let current: Vec<Instance> = self
            .inner
            .snapshot
            .load()
            .instances
            .iter()
            .map(|i| (**i).clone())
            .collect();
        let mut inner = Inner {
            strategy: self.inner.strategy,
            filter: self.inner.filter.clone(),
            min_fraction: self.inner.min_fraction,
            snapshot: ArcSwap::from_pointee(Snapshot {
                instances: Vec::new(),
                picker: Picker::Random(WeightedRandom::new(Vec::new())),
            }),
            owner: watch::channel(()).0,
        };
        change(&mut inner);
        let balancer = Self {
            inner: Arc::new(inner),
        };
        balancer.update(&current);
        balancer
    }

    /// Picks only among instances this filter admits. Set it before [`watch`](Self::watch).
    ///
    /// See [`Balancer`] for an example.
    pub fn with_filter(self, filter: TagFilter) -> Self {
        self.reconfigure(|inner| inner.filter = filter)
    }

    /// The share of its weight a just-started instance gets (default 0.1); it then ramps
    /// linearly to its full weight over its `warmup`.
    ///
    /// ```
    /// use service_registry::balance::{Balancer, Strategy};
    /// let b = Balancer::new(Strategy::WeightedRandom).with_warmup_floor(0.05);
    /// # let _ = b;
    /// ```
    pub fn with_warmup_floor(self, min_fraction: f64) -> Self {
        self.reconfigure(|inner| inner.min_fraction = min_fraction)
    }

    /// Replaces the instance set (what the watch does on every change).
    ///
    /// ```
    /// use service_registry::balance::{Balancer, Strategy};
    /// use service_registry::{Info, Instance};
    /// let b = Balancer::new(Strategy::WeightedRandom);
    /// b.update(&[Instance::from(&Info::new("s", "127.0.0.1:1".parse().unwrap()))]);
    /// assert_eq!(b.instances().len(), 1);
    /// ```
    pub fn update(&self, instances: &[Instance]) {
        self.inner
            .snapshot
            .store(Arc::new(self.inner.build(instances)));
    }

    /// The instances picks are made from (after the tag filter).
    ///
    /// See [`update`](Self::update) for an example.
    pub fn instances(&self) -> Vec<Arc<Instance>> {
        self.inner.snapshot.load().instances.clone()
    }

    /// Picks an instance (for consistent hashing: for a random key).
    ///
    /// See [`Balancer`] for an example.
    pub fn pick(&self) -> Option<Arc<Instance>> {
        let mut rng = fastrand::Rng::with_seed(fastrand::u64(..));
        self.pick_with(&mut rng)
    }

    /// Picks with a caller-owned random source (seed it for reproducible sequences).
    ///
    /// ```
    /// use service_registry::balance::{Balancer, Strategy};
    /// use service_registry::{Info, Instance};
    /// let b = Balancer::new(Strategy::WeightedRandom);
    /// b.update(&[Instance::from(&Info::new("s", "127.0.0.1:1".parse().unwrap()))]);
    /// let mut rng = fastrand::Rng::with_seed(7);
    /// assert!(b.pick_with(&mut rng).is_some());
    /// ```
    pub fn pick_with(&self, rng: &mut fastrand::Rng) -> Option<Arc<Instance>> {
        let snapshot = self.inner.snapshot.load();
        let now = SystemTime::now();
        match &snapshot.picker {
            Picker::Random(p) => p.pick(rng, now, self.inner.min_fraction).cloned(),
            Picker::RoundRobin(p) => p.pick(now, self.inner.min_fraction).cloned(),
            Picker::Hash(p) => p.pick(rng.u64(..)).cloned(),
        }
    }

    /// Picks for `key`: with [`Strategy::ConsistentHash`] the same key maps to the same instance
    /// while the set is stable; other strategies ignore the key.
    ///
    /// ```
    /// use service_registry::balance::{Balancer, Strategy};
    /// use service_registry::{Info, Instance};
    /// let b = Balancer::new(Strategy::ConsistentHash);
    /// b.update(&[1, 2, 3].map(|p| Instance::from(&Info::new("s", format!("127.0.0.1:{p}").parse().unwrap()))));
    /// assert_eq!(b.pick_by_key("user-42").unwrap().addr, b.pick_by_key("user-42").unwrap().addr);
    /// ```
    pub fn pick_by_key(&self, key: impl Hash) -> Option<Arc<Instance>> {
        let snapshot = self.inner.snapshot.load();
        match &snapshot.picker {
            Picker::Hash(p) => p.pick(key).cloned(),
            _ => self.pick(),
        }
    }

    /// Follows `service` through `discovery`: the current set is in place when this returns,
    /// and every later change is applied as it arrives. The task that applies them ends, and
    /// with it the watch, as soon as the last clone of the balancer is dropped.
    ///
    /// See [`Balancer`] for an example.
    pub async fn watch<D: Discovery + ?Sized>(
        self,
        discovery: &D,
        service: &str,
    ) -> Result<Self, DiscoveryError> {
        let mut changes = discovery.watch(service).await?;
        if let Some(first) = changes.next().await {
            self.update(&first.all);
        }
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let mut owner = self.inner.owner.subscribe();
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
                inner.snapshot.store(Arc::new(inner.build(&change.all)));
            }
        });
        Ok(self)
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
        // Consistent hashing spreads keys by ring coverage, which follows the weights only as
        // closely as its virtual nodes allow: it gets a wider bound.
        for (strategy, bound) in [
            (Strategy::WeightedRandom, 0.02),
            (Strategy::SmoothRoundRobin, 0.02),
            (Strategy::ConsistentHash, 0.04),
        ] {
            let balancer = Balancer::new(strategy);
            balancer.update(&weighted(&weights));
            let got = shares(&balancer, 100_000, 42);
            for (i, w) in weights.iter().enumerate() {
                let want = f64::from(*w) / 100.0;
                let share = got[&(i as u16 + 1)];
                assert!(
                    (share - want).abs() <= bound,
                    "{strategy:?}: port {} got {share:.4}, want {want:.2}",
                    i + 1
                );
            }
        }
    }

    #[test]
    fn smooth_round_robin_interleaves_exactly() {
        let balancer = Balancer::new(Strategy::SmoothRoundRobin);
        balancer.update(&weighted(&[5, 1, 1]));
        let mut rng = fastrand::Rng::with_seed(1);
        let order: Vec<u16> = (0..7)
            .map(|_| balancer.pick_with(&mut rng).unwrap().addr.port())
            .collect();
        // nginx's documented sequence for weights 5, 1, 1: a a b a c a a.
        assert_eq!(order, [1, 1, 2, 1, 3, 1, 1]);
    }

    #[test]
    fn warming_instance_gets_a_ramped_share() {
        let mut instances = weighted(&[50, 50]);
        // The second one started just now with a long warm-up: it gets the 10 % floor.
        instances[1].start_time = Some(SystemTime::now());
        instances[1].warmup = Duration::from_secs(3600);
        for strategy in [Strategy::WeightedRandom, Strategy::SmoothRoundRobin] {
            let balancer = Balancer::new(strategy);
            balancer.update(&instances);
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
        let only_hz = Balancer::new(Strategy::WeightedRandom)
            .with_filter(TagFilter::new().require("idc", "hz"));
        only_hz.update(&instances);
        assert!((0..100).all(|_| only_hz.pick().unwrap().addr.port() == 1));
        let none = Balancer::new(Strategy::WeightedRandom)
            .with_filter(TagFilter::new().require("idc", "bj"));
        none.update(&instances);
        assert!(none.pick().is_none());
        let fallback = Balancer::new(Strategy::WeightedRandom)
            .with_filter(TagFilter::new().require("idc", "bj").fallback_to_all(true));
        fallback.update(&instances);
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
        let balancer = Balancer::new(Strategy::SmoothRoundRobin)
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
        let balancer = Balancer::new(Strategy::WeightedRandom)
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

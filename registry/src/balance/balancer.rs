//! [`Balancer`]: a live instance set (fed by `Discovery::watch`) and a picking strategy,
//! configured beforehand through [`BalancerBuilder`].

use std::hash::Hash;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::watch;

use super::consistent_hash;
use super::filter::TagFilter;
use super::lane::Lanes;
use super::locality::Locality;
use super::outlier::{Clock, Ejection, Outcome, OutlierDetection};
use super::published::Published;
use super::route::Route;
use super::snapshot::{Config, Snapshot};
use super::subset::Subset;
use super::warmup::DEFAULT_MIN_FRACTION;
use crate::discovery::{Discovery, DiscoveryError, Instance};

/// How a [`Balancer`] chooses among instances (Kitex has all three).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Each pick independently, with probability proportional to weight (an alias table).
    WeightedRandom,
    /// Smooth weighted round-robin: exact proportions over every cycle, evenly interleaved.
    SmoothRoundRobin,
    /// A hash ring on a caller-given key ([`Balancer::pick_by_key`]; [`Balancer::pick`] gives
    /// `None`, and the tower [`Balanced`](crate::balance::Balanced) service needs a key
    /// extractor, `with_hash_key`).
    ConsistentHash,
    /// Least request (gRPC A48, Envoy): two candidates drawn by weight (warm-up applied), the
    /// one with fewer calls in flight per unit of weight wins. Calls in flight are counted
    /// from [`Balancer::start`] to the drop of its guard, which the tower layers do for every
    /// call; a balancer nobody counts on picks as [`WeightedRandom`](Self::WeightedRandom).
    LeastRequest,
}

/// A call in flight to one instance, counted by a [`Strategy::LeastRequest`] balancer from
/// [`Balancer::start`] until this is dropped (a no-op for other strategies).
#[derive(Debug)]
#[must_use = "the call counts as in flight only while this is alive"]
pub struct InFlight(Option<Arc<AtomicUsize>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(count) = &self.0 {
            count.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// How long a watched service that turns empty keeps its last instances by default (see
/// [`BalancerBuilder::hold_when_empty`]).
pub const DEFAULT_HOLD_WHEN_EMPTY: Duration = Duration::from_secs(10);

/// Picks tried before [`Balancer::pick_avoiding`] looks through the set in order.
const AVOIDING_PICKS: usize = 8;

#[derive(Debug)]
struct Inner {
    config: Config,
    snapshot: Published,
    /// Held while a new snapshot is built from the current one and swapped in (set changes,
    /// ejections, returns, warm-up steps), so that none of them undoes another; picks and
    /// reports never take it.
    rebuild: Mutex<()>,
    clock: Clock,
    /// Round-robin position, kept across snapshots so a change does not restart the cycle.
    cursor: AtomicUsize,
    /// Never sent on: dropped with the last clone of the balancer, which ends its watch task.
    owner: watch::Sender<()>,
    /// The service a watch feeds this balancer from; `None` for one from `build`.
    watched: Option<String>,
}

/// Why [`Balancer::update`] refused.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpdateError {
    /// The balancer follows a watch ([`BalancerBuilder::watch`]), whose next change would
    /// replace the update: only a balancer from [`BalancerBuilder::build`] takes updates.
    #[error("the balancer follows service `{service}` through a watch; its next change would overwrite the update (use `BalancerBuilder::build` for a hand-fed balancer)")]
    Watched {
        /// The watched service.
        service: String,
    },
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, ()> {
        // The lock guards no data of its own: a panic while holding it leaves nothing torn.
        self.rebuild
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn replace(&self, instances: impl IntoIterator<Item = Arc<Instance>>) {
        // Watches hand the set over sorted by address and shared: checked on the way, sorted
        // only if not; the instances are not copied.
        let (mut sorted, mut last) = (true, None);
        let all: Vec<Arc<Instance>> = instances
            .into_iter()
            .inspect(|instance| {
                sorted &= last.is_none_or(|last| last <= instance.addr);
                last = Some(instance.addr);
            })
            .collect();
        let mut filtered = if self.config.filter.admits_all() {
            all
        } else {
            self.config.filter.apply(&all)
        };
        if !sorted {
            filtered.sort_by_key(|i| i.addr);
        }
        if let Some(subset) = &self.config.subset {
            let addrs: Vec<SocketAddr> = filtered.iter().map(|i| i.addr).collect();
            let kept = subset.choose(&addrs);
            if kept.len() < filtered.len() {
                filtered = kept.into_iter().map(|k| filtered[k].clone()).collect();
            }
        }
        let _rebuilding = self.lock();
        let previous = self.snapshot.load();
        let health = previous.carry_health(&filtered);
        let next = self.config.snapshot(
            (filtered, health),
            Some(&previous),
            &self.clock,
            Instant::now(),
        );
        self.snapshot.store(Arc::new(next));
    }

    /// Rebuilds `current` as of now (warm-up weights, ejections that are over), unless another
    /// pick is at it or something else is rebuilding (which brings everything up to date too).
    #[cold]
    fn refresh(&self, current: &Arc<Snapshot>) {
        if current.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(_rebuilding) = self.rebuild.try_lock() else {
            return;
        };
        if !Arc::ptr_eq(&self.snapshot.load(), current) {
            return;
        }
        let next =
            self.config
                .snapshot(current.parts(), Some(current), &self.clock, Instant::now());
        self.snapshot.store(Arc::new(next));
    }

    /// Rebuilds the snapshot when its `refresh_at` has passed.
    #[inline]
    fn refresh_if_due(&self, snapshot: &Arc<Snapshot>) {
        if let Some(due) = snapshot.refresh_at {
            if due.passed() {
                self.refresh(snapshot);
            }
        }
    }

    /// Ejects `addr` if it still has its failures in a row, is still in the set, and the cap
    /// allows.
    #[cold]
    fn eject(&self, addr: SocketAddr) {
        let outliers = &self.config.outliers;
        let _rebuilding = self.lock();
        let now = Instant::now();
        let mut current = self.snapshot.load_full();
        if current.refresh_at.is_some_and(|due| now >= due.at()) {
            // Ejections that are over must not count against the cap.
            let settled = self
                .config
                .snapshot(current.parts(), Some(&current), &self.clock, now);
            current = Arc::new(settled);
            self.snapshot.store(current.clone());
        }
        let Some(health) = current.position(addr).and_then(|i| current.health(i)) else {
            return;
        };
        if health.is_ejected() || health.failures() < outliers.consecutive_failures {
            return;
        }
        let cap = outliers.cap(current.instances.len());
        if current.ejected >= cap {
            tracing::debug!(
                %addr,
                ejected = current.ejected,
                instances = current.instances.len(),
                "not ejecting: the allowed share of instances is already out"
            );
            return;
        }
        let (time, times) = health.eject(outliers, self.clock.at(now));
        tracing::warn!(
            %addr,
            failures = outliers.consecutive_failures,
            ejected_for = ?time,
            times,
            "instance ejected after consecutive failures"
        );
        let next = self
            .config
            .snapshot(current.parts(), Some(&current), &self.clock, now);
        self.snapshot.store(Arc::new(next));
    }

    /// Counts a failure of `addr` when the snapshot keeps no health records (every instance
    /// was clean): adds them, with this failure in; true when it completes a streak.
    #[cold]
    fn first_failure(&self, addr: SocketAddr) -> bool {
        let threshold = self.config.outliers.consecutive_failures;
        let _rebuilding = self.lock();
        let current = self.snapshot.load_full();
        let Some(i) = current.position(addr) else {
            return false;
        };
        if let Some(health) = current.health(i) {
            // Another failure added them meanwhile.
            return health.failure(threshold);
        }
        let (instances, health) = current.parts_tracked();
        let due = health
            .as_ref()
            .and_then(|health| health.get(i))
            .is_some_and(|record| record.failure(threshold));
        let next = self.config.snapshot(
            (instances, health),
            Some(&current),
            &self.clock,
            Instant::now(),
        );
        self.snapshot.store(Arc::new(next));
        due
    }
}

/// Configures a [`Balancer`]: strategy, tag filter, warm-up floor, outlier ejection. Nothing
/// configures a balancer once it exists; [`watch`](Self::watch) or [`build`](Self::build)
/// ends the configuration.
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
///     .filter(TagFilter::new().require("idc", "hz"))
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
    hold_when_empty: Duration,
}

impl BalancerBuilder {
    /// Picks only among instances this filter admits (default: all).
    ///
    /// See [`BalancerBuilder`] for an example.
    pub fn filter(mut self, filter: TagFilter) -> Self {
        self.config.filter = filter;
        self
    }

    /// Zone-aware routing with failover, priority levels and a panic threshold (default: none;
    /// every instance that is not ejected is picked by weight).
    ///
    /// See [`Locality`] for the rules and an example.
    pub fn locality(mut self, locality: Locality) -> Self {
        self.config.locality = Some(locality);
        self
    }

    /// Request routing by lane (default: none; the lane of a call is ignored).
    ///
    /// See [`Lanes`] for the rules and an example.
    pub fn lanes(mut self, lanes: Lanes) -> Self {
        self.config.lanes = Some(lanes);
        self
    }

    /// Deterministic subsetting: keep only this client's subset of the instances (after the
    /// filter; default: all of them).
    ///
    /// See [`Subset`] for the algorithm and an example.
    pub fn subset(mut self, subset: Subset) -> Self {
        self.config.subset = Some(subset);
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

    /// Outlier ejection: how many failures in a row take an instance out, for how long, and
    /// how much of the set may be out at once (default [`OutlierDetection::new`]: 5, 30 s
    /// growing to 300 s, 50 %). Failures are what callers [`report`](Balancer::report), by
    /// hand or through the tower layers (feature `tower`).
    ///
    /// See [`OutlierDetection`] for an example.
    pub fn outlier_detection(mut self, outliers: OutlierDetection) -> Self {
        self.config.outliers = outliers;
        self
    }

    /// Push-empty protection: when the watched service turns empty, keep picking from its last
    /// instances for up to `hold` (default [`DEFAULT_HOLD_WHEN_EMPTY`], 10 s;
    /// `Duration::ZERO` turns it off). Applies to balancers from [`watch`](Self::watch), not to
    /// [`Balancer::update`].
    ///
    /// A registry restarted without its data (or replaced, or failed over to a node that lost
    /// it) lists an empty service to a watch that syncs again, until every process has
    /// registered again: on etcd, ZooKeeper and Nacos alike that is a fraction of a second to
    /// a few seconds in which a balancer would otherwise have nothing to pick, although every
    /// instance is still serving. The rule:
    ///
    /// - A change that leaves the service with no instance is held: the balancer keeps the set
    ///   it had, and logs a warning.
    /// - Any change that brings an instance back ends the hold at once: the balancer takes
    ///   exactly that set (so instances that are back at new addresses are used at once, and
    ///   held ones that did not come back are gone).
    /// - When the service is still empty `hold` after it turned empty, the balancer empties
    ///   too: a service whose instances all really left has none within `hold`.
    /// - Only the empty set is held. A set that shrinks keeps shrinking with every change, so
    ///   a scale-down, a rollout or a tag filter that admits nothing any more is followed at
    ///   once; only the step to zero waits.
    ///
    /// Why every step to zero, and not only those after an outage: a watch delivers the
    /// current set and what changed, nothing about how it learned it. A watch that lists
    /// again after a broken connection sends the difference to the new listing, and for a
    /// wiped registry that is one change removing every instance; the last instance of a
    /// service leaving while the watch is in sync is one change removing every instance too
    /// (etcd and ZooKeeper deliver deletions as changes; a lease or session that expires
    /// deletes all of its keys at once). No content of the stream tells the two apart for a
    /// service of one instance. Holding is cheap where it is wrong: calls to a service that
    /// has really left fail either way, now with the connection error of the held address
    /// (which outlier ejection and retries see) instead of "no instance", for at most `hold`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use service_registry::balance::{Balancer, Strategy};
    /// use service_registry::{Info, MemoryRegistry, Registry};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let registry = MemoryRegistry::new();
    /// let only = Info::new("echo", "127.0.0.1:7001".parse().unwrap());
    /// registry.register(&only).await.unwrap();
    /// let balancer = Balancer::builder(Strategy::WeightedRandom)
    ///     .hold_when_empty(Duration::from_secs(2))
    ///     .watch(&registry, "echo")
    ///     .await
    ///     .unwrap();
    /// registry.deregister(&only).await.unwrap();
    /// tokio::time::sleep(Duration::from_secs(1)).await;
    /// assert!(balancer.pick().is_some(), "held for 2 s");
    /// tokio::time::sleep(Duration::from_secs(2)).await;
    /// assert!(balancer.pick().is_none(), "gone after the hold");
    /// # }
    /// ```
    pub fn hold_when_empty(mut self, hold: Duration) -> Self {
        self.hold_when_empty = hold;
        self
    }

    /// The hold set by [`hold_when_empty`](Self::hold_when_empty), for adapters that feed a
    /// balancer from another framework's changes (the Volo `VoloBalance`) and hold alike.
    #[cfg_attr(not(feature = "volo"), allow(dead_code))]
    pub(crate) fn held_when_empty(&self) -> Duration {
        self.hold_when_empty
    }

    /// A balancer over `instances`, changed only by [`Balancer::update`] (which a balancer
    /// from [`watch`](Self::watch) refuses).
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
        self.build_fed(instances.into_iter().map(Arc::new), None)
    }

    /// [`build`](Self::build), for a watch of `watched` when it is `Some`.
    fn build_fed(
        self,
        instances: impl IntoIterator<Item = Arc<Instance>>,
        watched: Option<String>,
    ) -> Balancer {
        let clock = Clock::new();
        let empty = self
            .config
            .snapshot((Vec::new(), None), None, &clock, Instant::now());
        let inner = Inner {
            snapshot: Published::new(empty),
            config: self.config,
            rebuild: Mutex::new(()),
            clock,
            cursor: AtomicUsize::new(0),
            owner: watch::channel(()).0,
            watched,
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
        let hold = self.hold_when_empty;
        // Whether the balancer holds instances from discovery (before the tag filter).
        let mut listed = !first.is_empty();
        let balancer = self.build_fed(first, Some(service.to_string()));
        let weak: Weak<Inner> = Arc::downgrade(&balancer.inner);
        let mut owner = balancer.inner.owner.subscribe();
        let service = service.to_string();
        tokio::spawn(async move {
            // While the service reads as empty and the last set is kept: when to let it go.
            let mut held_until: Option<tokio::time::Instant> = None;
            loop {
                let change = tokio::select! {
                    // Nothing is ever sent: this completes when the balancer is gone.
                    _ = owner.changed() => return,
                    () = tokio::time::sleep_until(held_until.unwrap_or_else(tokio::time::Instant::now)),
                        if held_until.is_some() =>
                    {
                        held_until = None;
                        listed = false;
                        let Some(inner) = weak.upgrade() else { return };
                        tracing::warn!(
                            service,
                            held = ?hold,
                            "the service is still empty after the hold; the balancer is empty too"
                        );
                        inner.replace(Vec::new());
                        continue;
                    }
                    change = changes.next() => change,
                };
                let Some(change) = change else { return };
                let Some(inner) = weak.upgrade() else { return };
                if change.all.is_empty() && listed && !hold.is_zero() {
                    if held_until.is_none() {
                        held_until = Some(tokio::time::Instant::now() + hold);
                        tracing::warn!(
                            service,
                            removed = change.removed.len(),
                            hold = ?hold,
                            "the service turned empty; keeping its last instances until they \
                             are back or the hold is over"
                        );
                    }
                    continue;
                }
                if held_until.take().is_some() {
                    tracing::info!(
                        service,
                        instances = change.all.len(),
                        "instances are back; the hold on the last set is over"
                    );
                }
                listed = !change.all.is_empty();
                tracing::debug!(service, instances = change.all.len(), "balancer updated");
                inner.replace(change.all);
            }
        });
        Ok(balancer)
    }
}

/// Picks instances of one service: weighted random, smooth weighted round-robin, consistent
/// hashing or least request, with warm-up, tag filters and outlier ejection, all set up front by
/// [`Balancer::builder`].
///
/// Every change builds a new immutable picker (alias table, round-robin cycle or hash ring)
/// and swaps it in (`arc-swap`): picking never waits for a change, takes no lock, allocates
/// nothing, and costs the same whatever the number of instances. An ejection (see
/// [`report`](Self::report)) is such a change: the picker is rebuilt without the instance, and
/// again when its time is up (found by the first pick after that; while any instance is out,
/// a pick also reads the monotonic clock). Cheap to clone.
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
                outliers: OutlierDetection::default(),
                locality: None,
                lanes: None,
                subset: None,
            },
            hold_when_empty: DEFAULT_HOLD_WHEN_EMPTY,
        }
    }

    /// Replaces the instance set of a balancer from [`BalancerBuilder::build`]. A balancer
    /// from [`BalancerBuilder::watch`] refuses ([`UpdateError::Watched`]): its watch's next
    /// change would replace the update.
    ///
    /// Takes owned instances, or shared ones (`Arc<Instance>`, or the
    /// [`Instances`](crate::Instances) a [`Discovery::resolve`](crate::Discovery::resolve)
    /// returns), which it keeps without copying them.
    ///
    /// ```
    /// use service_registry::balance::{Balancer, Strategy, UpdateError};
    /// use service_registry::{Discovery, Info, Instance, MemoryRegistry, Registry};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let one = || [Instance::from(&Info::new("s", "127.0.0.1:1".parse().unwrap()))];
    /// let b = Balancer::builder(Strategy::WeightedRandom).build([]);
    /// b.update(one()).unwrap();
    /// assert_eq!(b.instances().len(), 1);
    ///
    /// // What a resolve returns goes in as it is: shared, not copied.
    /// let registry = MemoryRegistry::new();
    /// registry.register(&Info::new("s", "127.0.0.1:2".parse().unwrap())).await.unwrap();
    /// let resolved = registry.resolve("s").await.unwrap();
    /// b.update(resolved.clone()).unwrap();
    /// assert!(std::sync::Arc::ptr_eq(&b.instances()[0], resolved.shared().next().unwrap()));
    ///
    /// let watched = Balancer::builder(Strategy::WeightedRandom)
    ///     .watch(&MemoryRegistry::new(), "s")
    ///     .await
    ///     .unwrap();
    /// assert!(matches!(watched.update(one()), Err(UpdateError::Watched { .. })));
    /// # }
    /// ```
    pub fn update<I>(&self, instances: I) -> Result<(), UpdateError>
    where
        I: IntoIterator,
        I::Item: Into<Arc<Instance>>,
    {
        if let Some(service) = &self.inner.watched {
            return Err(UpdateError::Watched {
                service: service.clone(),
            });
        }
        self.inner.replace(instances.into_iter().map(Into::into));
        Ok(())
    }

    /// The instances picks are made from (after the tag filter), sorted by address; ejected
    /// ones included (see [`ejected`](Self::ejected)).
    ///
    /// See [`update`](Self::update) for an example.
    pub fn instances(&self) -> Vec<Arc<Instance>> {
        self.inner.snapshot.load().instances.clone()
    }

    /// Picks an instance. `None` when there is none to pick, and always `None` on a
    /// [`Strategy::ConsistentHash`] balancer ([`hashes`](Self::hashes)): a hashing balancer
    /// picks only for a key ([`pick_by_key`](Self::pick_by_key)), so that a caller that forgot
    /// the key finds out instead of spreading its calls at random.
    ///
    /// ```
    /// use service_registry::balance::{Balancer, Strategy};
    /// use service_registry::{Info, Instance};
    /// let one = || [Instance::from(&Info::new("s", "127.0.0.1:1".parse().unwrap()))];
    /// assert!(Balancer::builder(Strategy::WeightedRandom).build(one()).pick().is_some());
    /// let hashing = Balancer::builder(Strategy::ConsistentHash).build(one());
    /// assert!(hashing.pick().is_none(), "no key, no pick");
    /// assert!(hashing.pick_by_key("user-42").is_some());
    /// ```
    pub fn pick(&self) -> Option<Arc<Instance>> {
        self.pick_in_lane_map(None, Arc::clone)
    }

    /// Picks with a caller-owned random source (seed it for reproducible sequences). `None`
    /// on a hashing balancer, as [`pick`](Self::pick).
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
        self.pick_in_lane_with(None, rng)
    }

    /// Picks for a call in `lane` (`None`: a call without one), on a balancer with
    /// [`Lanes`](super::Lanes): an instance of that lane, or where its
    /// [`LaneFallback`](super::LaneFallback) sends calls when the lane has none that can
    /// take it. Without lanes the lane is ignored. `None` on a hashing balancer, as
    /// [`pick`](Self::pick).
    ///
    /// See [`Lanes`](super::Lanes) for an example.
    pub fn pick_in_lane(&self, lane: Option<&str>) -> Option<Arc<Instance>> {
        self.pick_in_lane_map(lane, Arc::clone)
    }

    /// [`pick_in_lane`](Self::pick_in_lane) with a caller-owned random source.
    ///
    /// ```
    /// use service_registry::balance::{Balancer, Lanes, Strategy};
    /// use service_registry::{Info, Instance};
    /// let b = Balancer::builder(Strategy::WeightedRandom)
    ///     .lanes(Lanes::new("lane"))
    ///     .build([Instance::from(&Info::new("s", "127.0.0.1:1".parse().unwrap()))]);
    /// let mut rng = fastrand::Rng::with_seed(7);
    /// assert!(b.pick_in_lane_with(Some("canary"), &mut rng).is_some(), "falls back");
    /// ```
    pub fn pick_in_lane_with(
        &self,
        lane: Option<&str>,
        rng: &mut fastrand::Rng,
    ) -> Option<Arc<Instance>> {
        self.pick_in_lane_then(lane, rng, Arc::clone)
    }

    /// [`pick_in_lane_with`](Self::pick_in_lane_with), handing the pick to `then` instead of
    /// cloning its `Arc` (the Volo adapter needs only the address: two atomic operations fewer
    /// per call).
    #[inline]
    pub(crate) fn pick_in_lane_then<T>(
        &self,
        lane: Option<&str>,
        rng: &mut fastrand::Rng,
        then: impl FnOnce(&Arc<Instance>) -> T,
    ) -> Option<T> {
        self.inner
            .snapshot
            .with(|snapshot, _| self.pick_from(snapshot, lane, rng, then))
    }

    /// [`pick_in_lane_then`](Self::pick_in_lane_then) with this thread's random source.
    #[inline]
    pub(crate) fn pick_in_lane_map<T>(
        &self,
        lane: Option<&str>,
        then: impl FnOnce(&Arc<Instance>) -> T,
    ) -> Option<T> {
        self.inner
            .snapshot
            .with(|snapshot, rng| self.pick_from(snapshot, lane, rng, then))
    }

    #[inline]
    fn pick_from<T>(
        &self,
        snapshot: &Arc<Snapshot>,
        lane: Option<&str>,
        rng: &mut fastrand::Rng,
        then: impl FnOnce(&Arc<Instance>) -> T,
    ) -> Option<T> {
        if snapshot.hashes() {
            return None;
        }
        self.inner.refresh_if_due(snapshot);
        let route = snapshot.route_for(lane)?;
        snapshot
            .pick(
                route,
                || self.inner.cursor.fetch_add(1, Ordering::Relaxed),
                rng,
                None,
            )
            .map(then)
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
        self.pick_by_hash(None, consistent_hash::hash(key))
    }

    /// [`pick_by_key`](Self::pick_by_key) for a key already hashed, in `lane`.
    pub(crate) fn pick_by_hash(&self, lane: Option<&str>, hash: u64) -> Option<Arc<Instance>> {
        self.inner.snapshot.with(|snapshot, rng| {
            if !snapshot.hashes() {
                // From the snapshot in hand: a nested read would miss the thread's view.
                return self.pick_from(snapshot, lane, rng, Arc::clone);
            }
            self.inner.refresh_if_due(snapshot);
            let mut rng = fastrand::Rng::with_seed(0);
            let route = snapshot.route_for(lane)?;
            snapshot.pick(route, || 0, &mut rng, Some(hash)).cloned()
        })
    }

    /// True for a [`Strategy::ConsistentHash`] balancer: it picks only by key
    /// ([`pick_by_key`](Self::pick_by_key)); [`pick`](Self::pick) gives `None`.
    ///
    /// ```
    /// use service_registry::balance::{Balancer, Strategy};
    /// assert!(Balancer::builder(Strategy::ConsistentHash).build([]).hashes());
    /// assert!(!Balancer::builder(Strategy::WeightedRandom).build([]).hashes());
    /// ```
    pub fn hashes(&self) -> bool {
        self.inner.config.strategy == Strategy::ConsistentHash
    }

    /// Picks an instance whose address is not in `tried` (for a retry), when there is one:
    /// a few ordinary picks first, then the first suitable instance from a random place in
    /// the set. On a hashing balancer the retry target is not tied to a key (the key's own
    /// instance is what failed): a random untried one. Ejected instances are never picked; `None` when every pickable instance has
    /// been tried.
    ///
    /// ```
    /// use service_registry::balance::{Balancer, Strategy};
    /// use service_registry::{Info, Instance};
    /// let b = Balancer::builder(Strategy::WeightedRandom).build(
    ///     [1, 2].map(|p| Instance::from(&Info::new("s", format!("127.0.0.1:{p}").parse().unwrap()))),
    /// );
    /// let first = b.pick().unwrap().addr;
    /// let other = b.pick_avoiding(&[first]).unwrap().addr;
    /// assert_ne!(first, other);
    /// assert!(b.pick_avoiding(&[first, other]).is_none());
    /// ```
    pub fn pick_avoiding(&self, tried: &[SocketAddr]) -> Option<Arc<Instance>> {
        self.pick_avoiding_in(None, tried)
    }

    /// [`pick_avoiding`](Self::pick_avoiding) among the instances a call in `lane` may go to.
    pub(crate) fn pick_avoiding_in(
        &self,
        lane: Option<&str>,
        tried: &[SocketAddr],
    ) -> Option<Arc<Instance>> {
        self.inner.snapshot.with(|snapshot, rng| {
            self.inner.refresh_if_due(snapshot);
            let route = snapshot.route_for(lane)?;
            self.avoiding(snapshot, route, tried, rng)
                .or_else(|| {
                    // Every instance of the call's lane failed it: its fallback may take it.
                    let fallback = snapshot.fallback_for(lane)?;
                    self.avoiding(snapshot, fallback, tried, rng)
                })
                .cloned()
        })
    }

    /// An instance of `route` not in `tried`, if there is one.
    fn avoiding<'s>(
        &self,
        snapshot: &'s Snapshot,
        route: &Route,
        tried: &[SocketAddr],
        rng: &mut fastrand::Rng,
    ) -> Option<&'s Arc<Instance>> {
        let cursor = || self.inner.cursor.fetch_add(1, Ordering::Relaxed);
        for _ in 0..AVOIDING_PICKS {
            let picked = snapshot.pick(route, cursor, rng, None)?;
            if !tried.contains(&picked.addr) {
                return Some(picked);
            }
        }
        let count = snapshot.pickable_len(route);
        if count == 0 {
            return None;
        }
        let start = rng.usize(..count);
        (0..count)
            .filter_map(|k| snapshot.chosen(route, (start + k) % count))
            .find(|i| !tried.contains(&i.addr))
    }

    /// Records how a call to `addr` went, for outlier ejection: a success ends its failure
    /// streak; the failure that completes a streak of
    /// [`consecutive_failures`](OutlierDetection::consecutive_failures) ejects it (when the
    /// share cap allows). Addresses not in the set are ignored. Costs a few atomic operations
    /// and a binary search; only the ejecting failure rebuilds the picker.
    ///
    /// See [`OutlierDetection`] for an example.
    pub fn report(&self, addr: SocketAddr, outcome: Outcome) {
        let outliers = &self.inner.config.outliers;
        if !outliers.enabled {
            return;
        }
        self.inner.snapshot.with(|snapshot, _| {
            if outcome == Outcome::Success && snapshot.health.is_none() {
                return; // a clean set has nothing to reset
            }
            let Some(i) = snapshot.position(addr) else {
                return;
            };
            let due = match (snapshot.health(i), outcome) {
                (Some(health), Outcome::Success) => {
                    health.success();
                    false
                }
                // A success in a clean set: nothing to record.
                (None, Outcome::Success) => false,
                (Some(health), Outcome::Failure) => health.failure(outliers.consecutive_failures),
                (None, Outcome::Failure) => self.inner.first_failure(addr),
            };
            if due {
                // Capped: skip the lock until an ejection ends.
                let capped = snapshot.ejected >= outliers.cap(snapshot.instances.len())
                    && snapshot.refresh_at.is_none_or(|due| !due.passed());
                if !capped {
                    self.inner.eject(addr);
                }
            }
        })
    }

    /// Counts a call to `addr` as in flight until the returned guard is dropped, for
    /// [`Strategy::LeastRequest`] (other strategies, and addresses not in the set, count
    /// nothing). The tower layers ([`Reporting`](crate::balance::Reporting), and so
    /// [`Balanced`](crate::balance::Balanced)) do it for every call; call it by hand when
    /// calling picked instances some other way, next to [`report`](Self::report).
    ///
    /// ```
    /// use service_registry::balance::{Balancer, Outcome, Strategy};
    /// use service_registry::{Info, Instance};
    /// let set = [1, 2].map(|p| Instance::from(&Info::new("s", format!("127.0.0.1:{p}").parse().unwrap())));
    /// let balancer = Balancer::builder(Strategy::LeastRequest).build(set);
    /// let busy = "127.0.0.1:1".parse().unwrap();
    /// let calls: Vec<_> = (0..100).map(|_| balancer.start(busy)).collect();
    /// // 2 has nothing in flight: it wins whenever it is one of the two candidates.
    /// let to_busy = (0..1000).filter(|_| balancer.pick().unwrap().addr == busy).count();
    /// assert!(to_busy < 400, "{to_busy}");
    /// drop(calls);
    /// balancer.report(busy, Outcome::Success);
    /// ```
    pub fn start(&self, addr: SocketAddr) -> InFlight {
        if self.inner.config.strategy != Strategy::LeastRequest {
            return InFlight(None);
        }
        let counter = self.inner.snapshot.with(|snapshot, _| {
            snapshot
                .position(addr)
                .and_then(|i| snapshot.in_flight.get(i))
                .cloned()
        });
        if let Some(count) = &counter {
            count.fetch_add(1, Ordering::Relaxed);
        }
        InFlight(counter)
    }

    /// How many instances are in the set (after the tag filter).
    #[cfg(feature = "tower")]
    pub(crate) fn len(&self) -> usize {
        self.inner.snapshot.load().instances.len()
    }

    /// True when `addr` is in the set.
    #[cfg(feature = "tower")]
    pub(crate) fn contains(&self, addr: SocketAddr) -> bool {
        self.inner.snapshot.load().position(addr).is_some()
    }

    /// The instances ejected now, with the time each has left.
    ///
    /// See [`OutlierDetection`] for an example.
    pub fn ejected(&self) -> Vec<Ejection> {
        let snapshot = self.inner.snapshot.load();
        self.inner.refresh_if_due(&snapshot);
        let snapshot = self.inner.snapshot.load();
        let now = Instant::now();
        let Some(health) = &snapshot.health else {
            return Vec::new();
        };
        snapshot
            .instances
            .iter()
            .zip(health)
            .filter_map(|(instance, health)| {
                let until = self.inner.clock.instant(health.ejected_until()?);
                if until <= now {
                    return None; // over; the next rebuild brings it back
                }
                Some(Ejection {
                    addr: instance.addr,
                    remaining: until.saturating_duration_since(now),
                    times: health.times(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Info;
    use std::collections::HashMap;
    use std::time::{Duration, SystemTime};

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
            let picked = if balancer.hashes() {
                balancer.pick_by_key(rng.u64(..))
            } else {
                balancer.pick_with(&mut rng)
            };
            *counts.entry(picked.unwrap().addr.port()).or_default() += 1;
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
            Strategy::LeastRequest,
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

    /// Defect 3 of issue 18: any writer can put weight `u32::MAX` into a registry. Every picker
    /// counts it as the heaviest valid weight, so it gets that share and no more.
    #[test]
    fn weights_beyond_the_range_get_the_share_of_the_heaviest_valid_weight() {
        let max = crate::MAX_WEIGHT;
        for strategy in [
            Strategy::WeightedRandom,
            Strategy::SmoothRoundRobin,
            Strategy::ConsistentHash,
            Strategy::LeastRequest,
        ] {
            let balancer =
                Balancer::builder(strategy).build(weighted(&[u32::MAX, max, max / 2, 0]));
            let got = shares(&balancer, 100_000, 11);
            // 0 reads as the lightest valid weight (1): 10 000 : 10 000 : 5 000 : 1.
            let total = f64::from(max * 5 / 2 + 1);
            for (port, want) in [(1, max), (2, max), (3, max / 2)] {
                let want = f64::from(want) / total;
                let share = got.get(&port).copied().unwrap_or(0.0);
                assert!(
                    (share - want).abs() <= 0.02,
                    "{strategy:?}: port {port} got {share:.4}, want {want:.4}"
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
        for strategy in [
            Strategy::WeightedRandom,
            Strategy::SmoothRoundRobin,
            Strategy::LeastRequest,
        ] {
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
        for strategy in [
            Strategy::WeightedRandom,
            Strategy::SmoothRoundRobin,
            Strategy::LeastRequest,
        ] {
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
    fn filters_apply() {
        let mut instances = weighted(&[10, 10]);
        instances[0].tags.insert("idc".into(), "hz".into());
        let only_hz = Balancer::builder(Strategy::WeightedRandom)
            .filter(TagFilter::new().require("idc", "hz"))
            .build(instances.clone());
        assert!((0..100).all(|_| only_hz.pick().unwrap().addr.port() == 1));
        let none = Balancer::builder(Strategy::WeightedRandom)
            .filter(TagFilter::new().require("idc", "bj"))
            .build(instances.clone());
        assert!(none.pick().is_none(), "a filter is a hard constraint");
    }

    /// Trap 2 of issue 20: an update on a watched balancer was silently undone by the
    /// watch's next change.
    #[tokio::test]
    async fn a_watched_balancer_refuses_updates_the_watch_would_overwrite() {
        use crate::{MemoryRegistry, Registry};
        let registry = MemoryRegistry::new();
        let a = Info::new("svc", "127.0.0.1:1".parse().unwrap());
        registry.register(&a).await.unwrap();
        let balancer = Balancer::builder(Strategy::WeightedRandom)
            .watch(&registry, "svc")
            .await
            .unwrap();
        let err = balancer.update(weighted(&[10, 10, 10])).unwrap_err();
        assert_eq!(
            err,
            UpdateError::Watched {
                service: "svc".into()
            }
        );
        assert!(err.to_string().contains("`svc`"), "{err}");
        assert_eq!(
            balancer.instances().len(),
            1,
            "the refused update changed nothing"
        );
        // The watch still feeds it.
        let b = Info::new("svc", "127.0.0.1:2".parse().unwrap());
        registry.register(&b).await.unwrap();
        settle(&balancer, 2).await;
        // A built balancer takes updates.
        let built = Balancer::builder(Strategy::WeightedRandom).build([]);
        built.update(weighted(&[10, 10])).unwrap();
        assert_eq!(built.instances().len(), 2);
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

    /// Waits (paused clock: no real time passes) until `balancer` has `n` instances.
    async fn settle(balancer: &Balancer, n: usize) {
        for _ in 0..100 {
            if balancer.instances().len() == n {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("{} instances, want {n}", balancer.instances().len());
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_service_keeps_its_last_set_for_the_hold() {
        use crate::{MemoryRegistry, Registry};
        let registry = MemoryRegistry::new();
        let a = Info::new("svc", "127.0.0.1:1".parse().unwrap());
        let b = Info::new("svc", "127.0.0.1:2".parse().unwrap());
        let c = Info::new("svc", "127.0.0.1:3".parse().unwrap());
        registry.register(&a).await.unwrap();
        registry.register(&b).await.unwrap();
        let hold = Duration::from_secs(5);
        let balancer = Balancer::builder(Strategy::WeightedRandom)
            .hold_when_empty(hold)
            .watch(&registry, "svc")
            .await
            .unwrap();
        // A shrinking set is followed at once.
        registry.deregister(&a).await.unwrap();
        settle(&balancer, 1).await;
        // Empty: held, up to the hold.
        registry.deregister(&b).await.unwrap();
        tokio::time::sleep(hold - Duration::from_millis(1)).await;
        assert_eq!(balancer.instances()[0].addr, b.addr, "held");
        // Another instance ends the hold at once, with exactly the new set.
        registry.register(&c).await.unwrap();
        settle(&balancer, 1).await;
        tokio::task::yield_now().await;
        assert_eq!(balancer.instances()[0].addr, c.addr);
        // Empty again: a new hold of its own, and empty once it is over.
        registry.deregister(&c).await.unwrap();
        tokio::time::sleep(hold - Duration::from_millis(1)).await;
        assert_eq!(
            balancer.instances().len(),
            1,
            "held again, for a whole hold"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
        settle(&balancer, 0).await;
        assert!(balancer.pick().is_none());
        // From empty, the next instance is taken at once.
        registry.register(&a).await.unwrap();
        settle(&balancer, 1).await;
    }

    #[tokio::test(start_paused = true)]
    async fn no_hold_when_turned_off_or_when_only_the_filter_admits_nothing() {
        use crate::{MemoryRegistry, Registry};
        let registry = MemoryRegistry::new();
        let mut a = Info::new("svc", "127.0.0.1:1".parse().unwrap());
        a.tags.insert("idc".into(), "hz".into());
        registry.register(&a).await.unwrap();
        let off = Balancer::builder(Strategy::WeightedRandom)
            .hold_when_empty(Duration::ZERO)
            .watch(&registry, "svc")
            .await
            .unwrap();
        let filtered = Balancer::builder(Strategy::WeightedRandom)
            .filter(TagFilter::new().require("idc", "hz"))
            .watch(&registry, "svc")
            .await
            .unwrap();
        settle(&filtered, 1).await;
        // Still listed, but no longer admitted: followed at once.
        a.tags.insert("idc".into(), "sh".into());
        registry.register(&a).await.unwrap();
        settle(&filtered, 0).await;
        registry.deregister(&a).await.unwrap();
        settle(&off, 0).await;
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

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn fail(balancer: &Balancer, port: u16, times: usize) {
        (0..times).for_each(|_| balancer.report(addr(port), Outcome::Failure));
    }

    fn quick(failures: u32, base: Duration) -> OutlierDetection {
        OutlierDetection::new()
            .consecutive_failures(failures)
            .base_ejection_time(base)
    }

    #[test]
    fn consecutive_failures_eject_and_a_success_resets_the_streak() {
        for strategy in [
            Strategy::WeightedRandom,
            Strategy::SmoothRoundRobin,
            Strategy::ConsistentHash,
            Strategy::LeastRequest,
        ] {
            let balancer = Balancer::builder(strategy).build(weighted(&[10, 20, 30]));
            fail(&balancer, 2, 4);
            balancer.report(addr(2), Outcome::Success);
            fail(&balancer, 2, 4);
            assert!(balancer.ejected().is_empty(), "{strategy:?}: 4 in a row");
            fail(&balancer, 2, 1);
            let ejected = balancer.ejected();
            assert_eq!(ejected.len(), 1, "{strategy:?}");
            assert_eq!((ejected[0].addr, ejected[0].times), (addr(2), 1));
            assert!(ejected[0].remaining <= Duration::from_secs(30));
            assert!(ejected[0].remaining > Duration::from_secs(29));
            // Never picked while out; the others keep their proportions (10 : 30).
            let got = shares(&balancer, 100_000, 5);
            assert!(
                !got.contains_key(&2),
                "{strategy:?}: picked an ejected instance"
            );
            assert!((got[&1] - 0.25).abs() <= 0.02, "{strategy:?}: {got:?}");
            assert!((got[&3] - 0.75).abs() <= 0.02, "{strategy:?}: {got:?}");
            assert_eq!(balancer.instances().len(), 3, "ejected is still in the set");
        }
    }

    #[test]
    fn an_ejected_instance_comes_back_by_itself_and_longer_the_next_time() {
        let base = Duration::from_millis(100);
        let balancer = Balancer::builder(Strategy::SmoothRoundRobin)
            .outlier_detection(quick(2, base))
            .build(weighted(&[1, 1]));
        fail(&balancer, 1, 2);
        assert!((0..10).all(|_| balancer.pick().unwrap().addr == addr(2)));
        let ejected_at = Instant::now();
        let deadline = ejected_at + Duration::from_secs(2);
        // Picks alone bring it back: no task, no update.
        while !(0..10).any(|_| balancer.pick().unwrap().addr == addr(1)) {
            assert!(Instant::now() < deadline, "not back within 2 s");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(ejected_at.elapsed() >= base);
        assert!(balancer.ejected().is_empty());
        // Failing again at once: the second ejection in a row lasts twice the base.
        fail(&balancer, 1, 2);
        let again = balancer.ejected();
        assert_eq!(again[0].times, 2);
        assert!(again[0].remaining > base, "{:?}", again[0].remaining);
    }

    #[test]
    fn never_more_than_the_allowed_share_is_out() {
        // Default 50 %: of 3, one; of 4, two; of 1, none.
        for (n, cap) in [(1, 0), (2, 1), (3, 1), (4, 2), (5, 2), (10, 5)] {
            let balancer =
                Balancer::builder(Strategy::WeightedRandom).build(weighted(&vec![10; n]));
            for port in 1..=n as u16 {
                fail(&balancer, port, 20);
            }
            assert_eq!(balancer.ejected().len(), cap, "{n} instances");
            assert!(balancer.pick().is_some());
        }
        // 100 %: everything may go out, and then picks ignore ejection rather than fail.
        let all = Balancer::builder(Strategy::WeightedRandom)
            .outlier_detection(OutlierDetection::new().max_ejection_percent(100))
            .build(weighted(&[10, 10]));
        fail(&all, 1, 5);
        fail(&all, 2, 5);
        assert_eq!(all.ejected().len(), 2);
        assert!(all.pick().is_some());
    }

    #[test]
    fn ejection_survives_set_changes_and_a_shrinking_set_brings_the_excess_back() {
        let balancer = Balancer::builder(Strategy::WeightedRandom).build(weighted(&[10; 4]));
        fail(&balancer, 1, 5);
        fail(&balancer, 2, 5);
        assert_eq!(balancer.ejected().len(), 2);
        // The same set again (a weight change elsewhere): still out.
        let mut changed = weighted(&[10; 4]);
        changed[3].weight = 99;
        balancer.update(changed).unwrap();
        assert_eq!(balancer.ejected().len(), 2);
        // Down to 3 instances: only one may be out.
        balancer.update(weighted(&[10; 3])).unwrap();
        assert_eq!(balancer.ejected().len(), 1);
        // An address that leaves the set and comes back starts afresh.
        balancer.update(weighted(&[10; 4])[2..].to_vec()).unwrap();
        balancer.update(weighted(&[10; 4])).unwrap();
        assert!(balancer.ejected().is_empty());
    }

    #[test]
    fn disabled_detection_ignores_reports() {
        let balancer = Balancer::builder(Strategy::WeightedRandom)
            .outlier_detection(OutlierDetection::disabled())
            .build(weighted(&[10, 10]));
        fail(&balancer, 1, 100);
        assert!(balancer.ejected().is_empty());
    }

    #[test]
    fn ejecting_moves_only_the_ejected_instances_keys() {
        let n = 20u16;
        let balancer =
            Balancer::builder(Strategy::ConsistentHash).build(weighted(&vec![10; n as usize]));
        let owner = |b: &Balancer, k: u64| b.pick_by_key(k).unwrap().addr;
        let before: Vec<SocketAddr> = (0..20_000).map(|k| owner(&balancer, k)).collect();
        fail(&balancer, 7, 5);
        let moved = (0..20_000u64)
            .filter(|k| {
                let now = owner(&balancer, *k);
                assert_ne!(now, addr(7));
                now != before[*k as usize]
            })
            .count();
        // Only keys that were on the ejected instance move: about 1/n of them.
        let share = moved as f64 / 20_000.0;
        assert!(share <= 1.0 / f64::from(n) + 0.02, "{share:.3}");
        assert!((0..20_000u64).all(|k| {
            before[k as usize] == addr(7) || owner(&balancer, k) == before[k as usize]
        }));
    }

    #[test]
    fn a_retry_pick_avoids_what_was_tried() {
        for strategy in [
            Strategy::WeightedRandom,
            Strategy::SmoothRoundRobin,
            Strategy::ConsistentHash,
            Strategy::LeastRequest,
        ] {
            // A heavy instance that random picks would almost always return.
            let balancer = Balancer::builder(strategy).build(weighted(&[10_000, 1, 1]));
            for _ in 0..100 {
                let other = balancer.pick_avoiding(&[addr(1)]).unwrap().addr;
                assert_ne!(other, addr(1), "{strategy:?}");
            }
            assert!(balancer
                .pick_avoiding(&[addr(1), addr(2), addr(3)])
                .is_none());
            fail(&balancer, 3, 5);
            assert_eq!(
                balancer.pick_avoiding(&[addr(1)]).unwrap().addr,
                addr(2),
                "{strategy:?}: the ejected one is not a candidate"
            );
        }
    }

    #[test]
    fn a_clean_set_keeps_no_health_records() {
        let balancer = Balancer::builder(Strategy::WeightedRandom)
            .outlier_detection(quick(2, Duration::from_millis(50)))
            .build(weighted(&[10, 10, 10]));
        let records = |b: &Balancer| b.inner.snapshot.load().health.is_some();
        balancer.report(addr(1), Outcome::Success);
        assert!(
            !records(&balancer),
            "successes in a clean set record nothing"
        );
        balancer.report(addr(1), Outcome::Failure);
        assert!(records(&balancer), "the first failure adds the records");
        assert_eq!(
            balancer.inner.snapshot.load().health(0).unwrap().failures(),
            1
        );
        balancer.report(addr(1), Outcome::Success);
        balancer.update(weighted(&[10, 10, 10])).unwrap();
        assert!(
            !records(&balancer),
            "clean again: the next rebuild drops them"
        );
        // An ejection is remembered until it is forgiven (one base time per ejection).
        fail(&balancer, 2, 2);
        assert_eq!(balancer.ejected().len(), 1);
        std::thread::sleep(Duration::from_millis(60));
        assert!(balancer.ejected().is_empty());
        balancer.update(weighted(&[10, 10, 10])).unwrap();
        assert!(records(&balancer), "back, not forgiven yet");
        std::thread::sleep(Duration::from_millis(60));
        balancer.update(weighted(&[10, 10, 10])).unwrap();
        assert!(!records(&balancer), "forgiven");
    }

    #[test]
    fn an_unsorted_set_is_sorted_so_that_reports_find_their_instance() {
        let mut set = weighted(&[10, 10, 10, 10]);
        set.reverse();
        let balancer = Balancer::builder(Strategy::SmoothRoundRobin)
            .outlier_detection(quick(1, Duration::from_secs(60)))
            .build(set);
        let ports: Vec<u16> = balancer.instances().iter().map(|i| i.addr.port()).collect();
        assert_eq!(ports, [1, 2, 3, 4]);
        fail(&balancer, 3, 1);
        assert_eq!(balancer.ejected()[0].addr, addr(3));
    }

    #[test]
    fn least_request_sends_few_picks_to_an_instance_with_many_calls_in_flight() {
        let balancer = Balancer::builder(Strategy::LeastRequest).build(weighted(&[10; 4]));
        let slow: Vec<InFlight> = (0..50).map(|_| balancer.start(addr(1))).collect();
        // One call in flight to each of the others: they still win against 50.
        let others: Vec<InFlight> = (2..=4).map(|p| balancer.start(addr(p))).collect();
        let got = shares(&balancer, 40_000, 9);
        // Picked only when both candidates are it: 1/16.
        assert!(got[&1] < 0.08, "slow share {:.4}", got[&1]);
        // The counts survive a rebuild of the set.
        balancer.update(weighted(&[10; 4])).unwrap();
        let again = shares(&balancer, 40_000, 10);
        assert!(again[&1] < 0.08, "after a rebuild {:.4}", again[&1]);
        // Calls that end count no more.
        drop((slow, others));
        let idle = shares(&balancer, 40_000, 11);
        assert!((idle[&1] - 0.25).abs() < 0.02, "idle share {:.4}", idle[&1]);
        // Other strategies count nothing.
        let random = Balancer::builder(Strategy::WeightedRandom).build(weighted(&[10; 2]));
        let _calls: Vec<InFlight> = (0..50).map(|_| random.start(addr(1))).collect();
        assert!((shares(&random, 40_000, 12)[&1] - 0.5).abs() < 0.02);
    }

    #[test]
    fn least_request_weighs_calls_in_flight_by_weight() {
        // A48 / Envoy: the score is in flight per unit of weight. 4 calls on the heavy one
        // (weight 40: 0.1 per unit) lose to 1 call on the light one (weight 10: also 0.1:
        // a tie, the first drawn wins) but beat 2 (0.2).
        let balancer = Balancer::builder(Strategy::LeastRequest).build(weighted(&[40, 10]));
        let _heavy: Vec<InFlight> = (0..4).map(|_| balancer.start(addr(1))).collect();
        let light: Vec<InFlight> = (0..2).map(|_| balancer.start(addr(2))).collect();
        // Heavy drawn with 0.8: it wins unless both draws are the light one (0.04).
        let got = shares(&balancer, 40_000, 13);
        assert!((got[&1] - 0.96).abs() < 0.01, "{:.4}", got[&1]);
        drop(light);
        let _light: Vec<InFlight> = (0..1).map(|_| balancer.start(addr(2))).collect();
        // A tie: shares as drawn, 0.8 / 0.2.
        let tie = shares(&balancer, 40_000, 14);
        assert!((tie[&1] - 0.8).abs() < 0.02, "{:.4}", tie[&1]);
    }
}

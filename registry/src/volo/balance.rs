//! [`VoloBalance`]: Volo's `LoadBalance` backed by this crate's [`Balancer`].

use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use volo::context::Endpoint;
use volo::discovery::{Change as VoloChange, Discover, Instance as VoloInstance};
use volo::loadbalance::error::LoadBalanceError;
use volo::loadbalance::LoadBalance;
use volo::FastStr;

use metainfo::Forward;

use super::keyed::Keyed;
use super::keys::Keys;
use super::lane::Lane;
use super::picker::Picker;
use crate::balance::{Balancer, BalancerBuilder, Strategy};

/// How long a call waits for an instance when its service has none to pick, by default (see
/// [`VoloBalance::wait_for_instance`]).
pub const DEFAULT_WAIT_FOR_INSTANCE: Duration = Duration::from_secs(1);

/// Volo's [`LoadBalance`] backed by one [`Balancer`] per key: a Volo client keeps this crate's
/// O(1) pickers, warm-up ramp, tag filters, outlier ejection and least request (report
/// outcomes and count calls in flight with [`ReportLayer`](super::ReportLayer)), and the
/// routing of [`BalancerBuilder`] (zones, subsets, lanes).
///
/// Works with any Volo `Discover`; with [`VoloDiscover`](super::VoloDiscover) the warm-up of
/// each instance arrives in its tags. A key is discovered once, on its first call; after that
/// the balancer follows the discover's change channel (a change for a key not picked yet is
/// kept too, so a change that races the first `discover` is never lost). Retries on another
/// instance come from Volo's own `retry_count`: the picker never returns an instance twice.
///
/// An empty set is handled as this crate's watched balancers handle it: a service that turns
/// empty keeps its last instances for the builder's
/// [`hold_when_empty`](BalancerBuilder::hold_when_empty) (default 10 s) or until instances are
/// back, and a call that finds nothing to pick waits up to
/// [`wait_for_instance`](Self::wait_for_instance) (default 1 s) for an instance to arrive
/// before it fails, so a client whose view of the registry lags (its service's first instance
/// is registered but not seen yet) waits instead of failing with no instance.
///
/// Request routing by lane works as under tower: with a builder that has
/// [`Lanes`](crate::balance::Lanes), a call whose callee endpoint carries a
/// [`Lane`](super::Lane) tag (set per call through `with_callopt`, or by a client layer) goes
/// to the instances of that lane, and by the lanes' fallback when it has none that can take
/// it; a call without one goes to the base lane (see [`Lane`](super::Lane) for an example).
/// With [`lane_from_metainfo`](Self::lane_from_metainfo) a call without the tag takes its lane
/// from Volo's `metainfo` (a persistent value follows the whole call chain, as in Kitex). A
/// call that finds nothing to pick in its lane (fallback
/// [`Fail`](crate::balance::LaneFallback::Fail)) waits as any call that finds nothing does,
/// then fails.
///
/// Volo hands a balancer no request, so there is no key to hash: a
/// [`Strategy::ConsistentHash`](crate::balance::Strategy::ConsistentHash) builder picks
/// nothing here (the call fails with no instance, it never turns random); use Volo's own
/// consistent-hash balancer for hashing.
///
/// ```
/// use service_registry::balance::{Balancer, Strategy, TagFilter};
/// use service_registry::volo::{VoloBalance, VoloDiscover};
/// use service_registry::{Info, MemoryRegistry, Registry};
/// use volo::loadbalance::LoadBalance;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let registry = MemoryRegistry::new();
/// let mut hz = Info::new("echo", "127.0.0.1:7000".parse().unwrap());
/// hz.tags.insert("idc".into(), "hz".into());
/// registry.register(&hz).await.unwrap();
/// registry.register(&Info::new("echo", "127.0.0.1:7001".parse().unwrap())).await.unwrap();
///
/// let discover = VoloDiscover::new(registry.clone());
/// let balance = VoloBalance::new(
///     Balancer::builder(Strategy::WeightedRandom).filter(TagFilter::new().require("idc", "hz")),
/// );
/// let endpoint = volo::context::Endpoint::new("echo".into());
/// let mut picker = balance.get_picker(&endpoint, &discover).await.unwrap();
/// assert_eq!(picker.next(), Some(volo::net::Address::Ip(hz.addr)));
/// assert_eq!(picker.next(), None); // no other instance passes the filter
/// # }
/// ```
pub struct VoloBalance<K> {
    inner: Arc<Inner<K>>,
    wait: Duration,
    /// The metainfo key a call's lane is read from when its callee carries no [`Lane`].
    metainfo_lane: Option<FastStr>,
}

struct Inner<K> {
    builder: BalancerBuilder,
    /// Read by every call without a lock; grows by a key at a time.
    balancers: Keys<K, Arc<Keyed>>,
}

impl<K> Clone for VoloBalance<K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            wait: self.wait,
            metainfo_lane: self.metainfo_lane.clone(),
        }
    }
}

impl<K: std::fmt::Debug + Clone> std::fmt::Debug for VoloBalance<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoloBalance")
            .field("keys", &self.inner.balancers.keys())
            .finish_non_exhaustive()
    }
}

impl<K> Default for VoloBalance<K>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    /// Weighted random with the default warm-up floor and outlier detection.
    fn default() -> Self {
        Self::new(Balancer::builder(Strategy::WeightedRandom))
    }
}

impl<K> VoloBalance<K>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    /// A balance that builds the balancer of each key with `builder` (strategy, filter,
    /// warm-up floor, outlier detection).
    ///
    /// See [`VoloBalance`] for an example.
    pub fn new(builder: BalancerBuilder) -> Self {
        Self {
            inner: Arc::new(Inner {
                builder,
                balancers: Keys::default(),
            }),
            wait: DEFAULT_WAIT_FOR_INSTANCE,
            metainfo_lane: None,
        }
    }

    /// Reads a call's lane from Volo's `metainfo` under `key` when its callee carries no
    /// [`Lane`] tag: the persistent value first (`RPC_PERSIST_<key>` on the wire, which Kitex
    /// and Volo servers pass on to their own outgoing calls, so a lane set at the edge follows
    /// the whole call chain), then the transient one. Kitex's `metainfo.WithPersistentValue`
    /// sets the same values on the Go side. Applies to this value and the clones made from it
    /// afterwards.
    ///
    /// ```
    /// use std::cell::RefCell;
    /// use metainfo::{Forward, MetaInfo, METAINFO};
    /// use service_registry::balance::{Balancer, Lanes, Strategy};
    /// use service_registry::volo::{VoloBalance, VoloDiscover};
    /// use service_registry::{Info, MemoryRegistry, Registry};
    /// use volo::loadbalance::LoadBalance;
    /// use volo::net::Address;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let registry = MemoryRegistry::new();
    /// let mut canary = Info::new("echo", "127.0.0.1:7001".parse().unwrap());
    /// canary.tags.insert("lane".into(), "canary".into());
    /// registry.register(&Info::new("echo", "127.0.0.1:7000".parse().unwrap())).await.unwrap();
    /// registry.register(&canary).await.unwrap();
    /// let discover = VoloDiscover::new(registry.clone());
    /// let balance = VoloBalance::new(Balancer::builder(Strategy::WeightedRandom).lanes(Lanes::new("lane")))
    ///     .lane_from_metainfo("lane");
    ///
    /// let mut info = MetaInfo::default();
    /// info.set_persistent("lane", "canary");
    /// let endpoint = volo::context::Endpoint::new("echo".into());
    /// let picked = METAINFO
    ///     .scope(RefCell::new(info), async {
    ///         balance.get_picker(&endpoint, &discover).await.unwrap().next()
    ///     })
    ///     .await;
    /// assert_eq!(picked, Some(Address::Ip(canary.addr)));
    /// # }
    /// ```
    pub fn lane_from_metainfo(mut self, key: impl Into<FastStr>) -> Self {
        self.metainfo_lane = Some(key.into());
        self
    }

    /// The call's lane: its callee's [`Lane`] tag, else the metainfo value under the
    /// configured key (a call that carries neither costs an emptiness check and, when a key is
    /// configured, one task-local read).
    #[inline]
    fn lane_of(&self, endpoint: &Endpoint) -> Option<FastStr> {
        if !endpoint.faststr_tags.is_empty() {
            if let Some(lane) = endpoint.get_faststr::<Lane>() {
                return Some(lane.clone());
            }
        }
        let key = self.metainfo_lane.as_ref()?;
        metainfo::METAINFO
            .try_with(|info| {
                let info = info.borrow();
                info.get_persistent(key).or_else(|| info.get_transient(key))
            })
            .ok()
            .flatten()
    }

    /// How long a call that finds no instance to pick waits for one (default
    /// [`DEFAULT_WAIT_FOR_INSTANCE`], 1 s; `Duration::ZERO` fails at once). The call picks as
    /// soon as a change brings an instance; after `wait` it fails as Volo fails a call with no
    /// instance. A [`Strategy::ConsistentHash`] balancer never waits (it never picks here).
    /// Applies to this value and the clones made from it afterwards.
    ///
    /// ```
    /// use std::time::Duration;
    /// use service_registry::volo::VoloBalance;
    /// use volo::discovery::StaticDiscover;
    /// use volo::loadbalance::LoadBalance;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let balance = VoloBalance::default().wait_for_instance(Duration::from_millis(20));
    /// let endpoint = volo::context::Endpoint::new("echo".into());
    /// let started = std::time::Instant::now();
    /// let mut picker = balance.get_picker(&endpoint, &StaticDiscover::new(vec![])).await.unwrap();
    /// assert_eq!(picker.next(), None);
    /// assert!(started.elapsed() >= Duration::from_millis(20));
    /// # }
    /// ```
    pub fn wait_for_instance(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// The balancer of `key`, once it has been called or changed (for
    /// [`report`](Balancer::report), [`ejected`](Balancer::ejected) or
    /// [`instances`](Balancer::instances)).
    ///
    /// ```
    /// # use service_registry::volo::VoloBalance;
    /// let balance = VoloBalance::<volo::FastStr>::default();
    /// assert!(balance.balancer(&"echo".into()).is_none());
    /// ```
    pub fn balancer(&self, key: &K) -> Option<Balancer> {
        self.keyed(key).map(|keyed| keyed.balancer.clone())
    }

    fn keyed(&self, key: &K) -> Option<Arc<Keyed>> {
        self.inner.balancers.with(key, Arc::clone)
    }

    /// The entry of `key`: the existing one (left as it is), or a new one over `instances`.
    fn get_or_insert(&self, key: K, label: &str, instances: &[Arc<VoloInstance>]) -> Arc<Keyed> {
        self.inner
            .balancers
            .get_or_insert_with(key, || Keyed::new(&self.inner.builder, label, instances))
    }

    /// The call of `picker` (made on `keyed`, which had nothing to pick) once a change brings an
    /// instance or the wait is over (then it picks nothing).
    #[cold]
    async fn wait_for_instance_of(&self, keyed: Arc<Keyed>, mut picker: Picker) -> Picker {
        if self.wait.is_zero() || keyed.balancer.hashes() {
            return picker;
        }
        let deadline = tokio::time::Instant::now() + self.wait;
        keyed.wait_for(deadline, || picker.pick_again()).await;
        picker
    }

    /// The first call for `key`: discovers it, then picks (waiting as any call that finds
    /// nothing).
    #[cold]
    async fn first_call<D>(
        &self,
        key: K,
        lane: Option<FastStr>,
        endpoint: &Endpoint,
        discover: &D,
    ) -> Result<Picker, LoadBalanceError>
    where
        D: Discover<Key = K>,
    {
        let instances = discover.discover(endpoint).await.map_err(Into::into)?;
        let keyed = self.get_or_insert(key, endpoint.service_name_ref(), &instances);
        let picker = Picker::first(keyed.balancer.clone(), lane);
        if picker.found() {
            return Ok(picker);
        }
        Ok(self.wait_for_instance_of(keyed, picker).await)
    }
}

impl<D> LoadBalance<D> for VoloBalance<D::Key>
where
    D: Discover,
{
    type InstanceIter = Picker;

    async fn get_picker<'future>(
        &'future self,
        endpoint: &'future Endpoint,
        discover: &'future D,
    ) -> Result<Picker, LoadBalanceError> {
        let key = discover.key(endpoint);
        let mut lane = self.lane_of(endpoint);
        // The path of nearly every call: the key is known and has an instance to pick. It
        // awaits nothing; the rare paths are boxed, so this call's future stays small (a
        // larger one costs its copies on every call).
        let found = self.inner.balancers.with(&key, |keyed| {
            let picker = Picker::first(keyed.balancer.clone(), lane.take());
            if picker.found() {
                Ok(picker)
            } else {
                Err((keyed.clone(), picker))
            }
        });
        match found {
            Some(Ok(picker)) => Ok(picker),
            Some(Err((keyed, picker))) => {
                Ok(Box::pin(self.wait_for_instance_of(keyed, picker)).await)
            }
            None => Box::pin(self.first_call(key, lane, endpoint, discover)).await,
        }
    }

    fn rebalance(&self, change: VoloChange<D::Key>) {
        // Inserted meanwhile by a first call with an older set, or held: this one is newer.
        let keyed = match self.keyed(&change.key) {
            Some(keyed) => keyed,
            // Volo keys are not `Display`: the service is named once a call names it.
            None => self.get_or_insert(change.key.clone(), "", &change.all),
        };
        keyed.apply(&change.all);
    }
}

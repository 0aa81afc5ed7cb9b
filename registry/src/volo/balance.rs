//! [`VoloBalance`]: Volo's `LoadBalance` backed by this crate's [`Balancer`].

use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use volo::context::Endpoint;
use volo::discovery::{Change as VoloChange, Discover, Instance as VoloInstance};
use volo::loadbalance::error::LoadBalanceError;
use volo::loadbalance::LoadBalance;
use volo::net::Address;

use super::convert::from_volo;
use crate::balance::{Balancer, BalancerBuilder, Strategy};

/// Volo's [`LoadBalance`] backed by one [`Balancer`] per key: a Volo client keeps this crate's
/// O(1) pickers, warm-up ramp, tag filters and outlier ejection (report outcomes with
/// [`ReportLayer`](super::ReportLayer)).
///
/// Works with any Volo `Discover`; with [`VoloDiscover`](super::VoloDiscover) the warm-up of
/// each instance arrives in its tags. A key is discovered once, on its first call; after that
/// the balancer follows the discover's change channel (a change for a key not picked yet is
/// kept too, so a change that races the first `discover` is never lost). Retries on another
/// instance come from Volo's own `retry_count`: the picker never returns an instance twice.
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
}

struct Inner<K> {
    builder: BalancerBuilder,
    /// Copy-on-write: a call reads it without a lock; only a new key rebuilds it.
    balancers: ArcSwap<HashMap<K, Balancer>>,
    insert: Mutex<()>,
}

impl<K> Clone for VoloBalance<K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<K: std::fmt::Debug> std::fmt::Debug for VoloBalance<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let balancers = self.inner.balancers.load();
        f.debug_struct("VoloBalance")
            .field("keys", &balancers.keys().collect::<Vec<_>>())
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
                balancers: ArcSwap::from_pointee(HashMap::new()),
                insert: Mutex::new(()),
            }),
        }
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
        self.inner.balancers.load().get(key).cloned()
    }

    /// The balancer of `key`: the existing one (left as it is), or a new one over `instances`.
    fn get_or_insert(&self, key: K, instances: &[Arc<VoloInstance>]) -> Balancer {
        let _guard = self
            .inner
            .insert
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(existing) = self.balancer(&key) {
            return existing;
        }
        let balancer = self.inner.builder.clone().build(ours(instances));
        let mut next = HashMap::clone(&self.inner.balancers.load());
        next.insert(key, balancer.clone());
        self.inner.balancers.store(Arc::new(next));
        balancer
    }
}

/// This crate's instances from Volo's (non-IP addresses left out).
fn ours(instances: &[Arc<VoloInstance>]) -> Vec<crate::Instance> {
    instances
        .iter()
        .filter_map(|instance| {
            let converted = from_volo(instance);
            if converted.is_none() {
                tracing::debug!(address = %instance.address, "skipping a non-IP Volo instance");
            }
            converted
        })
        .collect()
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
        if let Some(balancer) = self.balancer(&key) {
            return Ok(Picker::new(balancer));
        }
        let instances = discover.discover(endpoint).await.map_err(Into::into)?;
        Ok(Picker::new(self.get_or_insert(key, &instances)))
    }

    fn rebalance(&self, change: VoloChange<D::Key>) {
        // Inserted meanwhile by a first call with an older set, or held: this one is newer.
        let balancer = match self.balancer(&change.key) {
            Some(balancer) => balancer,
            None => self.get_or_insert(change.key, &change.all),
        };
        // Our balancers are built from sets (never from a watch), so an update is accepted.
        if let Err(err) = balancer.update(ours(&change.all)) {
            tracing::warn!(error = %err, "a Volo change was not applied");
        }
    }
}

/// The instances of one call, in the order Volo tries them: the balancer's pick first, then
/// (on a retry) instances not tried yet.
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
    first: Option<SocketAddr>,
    tried: Vec<SocketAddr>,
}

impl Picker {
    fn new(balancer: Balancer) -> Self {
        Self {
            balancer,
            first: None,
            tried: Vec::new(),
        }
    }
}

impl Iterator for Picker {
    type Item = Address;

    fn next(&mut self) -> Option<Address> {
        let picked = match self.first {
            None => self.balancer.pick()?,
            Some(first) => {
                if self.tried.is_empty() {
                    self.tried.push(first);
                }
                self.balancer.pick_avoiding(&self.tried)?
            }
        };
        if self.first.is_none() {
            self.first = Some(picked.addr);
        } else {
            self.tried.push(picked.addr);
        }
        Some(Address::Ip(picked.addr))
    }
}

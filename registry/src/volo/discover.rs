//! [`VoloDiscover`]: Volo's `Discover` over any [`Discovery`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use arc_swap::ArcSwap;
use async_broadcast::{InactiveReceiver, Receiver, Sender, TrySendError};
use futures_util::StreamExt;
use tokio::sync::{watch, OnceCell};
use volo::context::Endpoint;
use volo::discovery::{Change as VoloChange, Discover, Instance as VoloInstance};
use volo::loadbalance::error::LoadBalanceError;
use volo::FastStr;

use super::convert::to_volo_all;
use crate::discovery::{Change, Discovery, DiscoveryError, WatchStream};

/// The smallest capacity of the change channel; it grows with the number of followed services
/// so the latest change of every service always fits (see [`VoloDiscover`]).
pub const DEFAULT_CHANNEL_CAPACITY: usize = 64;

type Key = FastStr;
type Instances = Arc<Vec<Arc<VoloInstance>>>;

/// Volo's [`Discover`] over any [`Discovery`] (memory, etcd, ZooKeeper, Nacos,
/// [`MergedDiscovery`](crate::MergedDiscovery)): the key is the callee's service name.
///
/// The first `discover` of a service starts a live [`Discovery::watch`] of it and answers
/// from its snapshot; every later `discover` answers from the watched set, never with a
/// registry round trip (Volo awaits `discover` while it holds a map entry, so a slow one would
/// stall every caller). Each change of a followed service goes out, with its real `added`,
/// `updated` (a weight or tag change) and `removed` instances, on one bounded
/// `async_broadcast` channel: the one [`watch`](Discover::watch) hands out and Volo's
/// `LoadBalanceService` subscribes to when the client is built.
///
/// The channel holds the latest state, not a history: it is bounded and overflows (a slow
/// receiver loses old changes, not new ones), and a change that is still the latest of its
/// service is put back at the end instead of being dropped, so a receiver always ends up with
/// every service's current set (`all`; the `added`/`updated`/`removed` of a change it reads
/// after an overflow are relative to the change before it, not to what it saw last). Its
/// capacity is at least the number of followed services.
///
/// Every watch task ends when the last clone of the discover is dropped (with the client
/// that holds it).
///
/// ```
/// use service_registry::{volo::VoloDiscover, Info, MemoryRegistry, Registry};
/// use volo::discovery::Discover;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let registry = MemoryRegistry::new();
/// registry.register(&Info::new("echo", "127.0.0.1:7000".parse().unwrap())).await.unwrap();
/// let discover = VoloDiscover::new(registry.clone());
/// let mut changes = discover.watch(None).unwrap();
///
/// let endpoint = volo::context::Endpoint::new("echo".into());
/// assert_eq!(discover.discover(&endpoint).await.unwrap().len(), 1);
///
/// registry.register(&Info::new("echo", "127.0.0.1:7001".parse().unwrap())).await.unwrap();
/// let change = changes.recv().await.unwrap();
/// assert_eq!((change.key.as_str(), change.all.len(), change.added.len()), ("echo", 2, 1));
/// # }
/// ```
pub struct VoloDiscover<D> {
    shared: Arc<Shared<D>>,
}

impl<D> Clone for VoloDiscover<D> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<D> std::fmt::Debug for VoloDiscover<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<Key> = self.shared.lock_keys().keys().cloned().collect();
        f.debug_struct("VoloDiscover")
            .field("services", &keys)
            .finish_non_exhaustive()
    }
}

struct Shared<D> {
    discovery: D,
    min_capacity: usize,
    /// One entry per service ever discovered; the cell is set once its watch runs.
    keys: Mutex<HashMap<Key, Arc<OnceCell<Arc<Followed>>>>>,
    /// The sending side; the lock also orders the sends.
    sender: Mutex<Sender<VoloChange<Key>>>,
    /// Keeps the channel open while no client subscribes.
    inactive: InactiveReceiver<VoloChange<Key>>,
    /// Dropped with the discover: ends every watch task.
    owner: watch::Sender<()>,
}

/// One followed service: its current set, as Volo instances.
struct Followed {
    current: ArcSwap<Vec<Arc<VoloInstance>>>,
}

impl<D> Shared<D> {
    fn lock_keys(&self) -> MutexGuard<'_, HashMap<Key, Arc<OnceCell<Arc<Followed>>>>> {
        self.keys
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn lock_sender(&self) -> MutexGuard<'_, Sender<VoloChange<Key>>> {
        self.sender
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Whether `change` still carries the current set of its service.
    fn is_latest(&self, change: &VoloChange<Key>) -> bool {
        let cell = self.lock_keys().get(&change.key).cloned();
        let Some(followed) = cell.as_ref().and_then(|cell| cell.get()) else {
            return false;
        };
        let current = followed.current.load();
        current.len() == change.all.len()
            && current
                .iter()
                .zip(&change.all)
                .all(|(a, b)| Arc::ptr_eq(a, b))
    }

    /// Sends `change` to every subscriber; an evicted change that is still the latest of its
    /// service goes back at the end (bounded: the capacity is at least the number of services,
    /// so a stale change is always found and dropped first).
    fn publish(&self, change: VoloChange<Key>) {
        let sender = self.lock_sender();
        let mut next = Some(change);
        let mut budget = sender.capacity() + 1;
        while let Some(message) = next.take() {
            match sender.try_broadcast(message) {
                Ok(None) => {}
                Ok(Some(evicted)) => {
                    tracing::debug!(service = %evicted.key, "a slow Volo subscriber skipped a change");
                    if budget > 0 && self.is_latest(&evicted) {
                        budget -= 1;
                        next = Some(evicted);
                    }
                }
                // No client subscribes now: a later one starts from `discover`.
                Err(TrySendError::Inactive(_)) | Err(TrySendError::Closed(_)) => {}
                Err(TrySendError::Full(_)) => {
                    tracing::warn!("the Volo change channel is full; dropping a change");
                }
            }
        }
    }
}

impl<D: Discovery> VoloDiscover<D> {
    /// Volo's `Discover` over `discovery`, with a change channel of
    /// [`DEFAULT_CHANNEL_CAPACITY`].
    ///
    /// See [`VoloDiscover`] for an example.
    pub fn new(discovery: D) -> Self {
        Self::with_capacity(discovery, DEFAULT_CHANNEL_CAPACITY)
    }

    /// Like [`new`](Self::new), with a change channel of at least `capacity` (minimum 1)
    /// messages.
    ///
    /// ```
    /// use service_registry::{volo::VoloDiscover, MemoryRegistry};
    /// let discover = VoloDiscover::with_capacity(MemoryRegistry::new(), 8);
    /// # let _ = discover;
    /// ```
    pub fn with_capacity(discovery: D, capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let (mut sender, receiver) = async_broadcast::broadcast(capacity);
        sender.set_overflow(true);
        sender.set_await_active(false);
        Self {
            shared: Arc::new(Shared {
                discovery,
                min_capacity: capacity,
                keys: Mutex::new(HashMap::new()),
                sender: Mutex::new(sender),
                inactive: receiver.deactivate(),
                owner: watch::channel(()).0,
            }),
        }
    }

    /// The services followed so far (each `discover`ed once).
    ///
    /// ```
    /// # use service_registry::{volo::VoloDiscover, MemoryRegistry};
    /// let discover = VoloDiscover::new(MemoryRegistry::new());
    /// assert!(discover.services().is_empty());
    /// ```
    pub fn services(&self) -> Vec<String> {
        let keys = self.shared.lock_keys();
        let mut names: Vec<String> = keys
            .iter()
            .filter(|(_, cell)| cell.initialized())
            .map(|(key, _)| key.to_string())
            .collect();
        names.sort();
        names
    }

    /// The current set of `service` from its watch (`None` before its first `discover`).
    fn current(&self, service: &Key) -> Option<Instances> {
        let cell = self.shared.lock_keys().get(service).cloned()?;
        cell.get().map(|followed| followed.current.load_full())
    }

    async fn follow(&self, service: &Key) -> Result<Instances, DiscoveryError> {
        if let Some(current) = self.current(service) {
            return Ok(current);
        }
        let cell = self
            .shared
            .lock_keys()
            .entry(service.clone())
            .or_default()
            .clone();
        let followed = cell.get_or_try_init(|| self.start(service)).await?;
        Ok(followed.current.load_full())
    }

    /// Starts the watch of `service`: its snapshot, then a task that follows it.
    async fn start(&self, service: &Key) -> Result<Arc<Followed>, DiscoveryError> {
        let mut changes = self.shared.discovery.watch(service).await?;
        let first = changes.next().await.map(|c| c.all).unwrap_or_default();
        let followed = Arc::new(Followed {
            current: ArcSwap::from_pointee(to_volo_all(&first, &[], |_| true)),
        });
        let services = self.shared.lock_keys().len();
        {
            let mut sender = self.shared.lock_sender();
            let wanted = services.max(self.shared.min_capacity);
            if sender.capacity() < wanted {
                sender.set_capacity(wanted);
            }
        }
        tracing::debug!(%service, instances = first.len(), "Volo discover follows a service");
        tokio::spawn(follow_changes(
            Arc::downgrade(&self.shared),
            followed.clone(),
            service.clone(),
            changes,
            self.shared.owner.subscribe(),
        ));
        Ok(followed)
    }
}

/// Applies each change of `service` to its set and publishes it, until the discover is dropped
/// or the watch ends.
async fn follow_changes<D>(
    shared: Weak<Shared<D>>,
    followed: Arc<Followed>,
    service: Key,
    mut changes: WatchStream,
    mut owner: watch::Receiver<()>,
) {
    loop {
        let change = tokio::select! {
            _ = owner.changed() => return,
            change = changes.next() => change,
        };
        let Some(change) = change else {
            tracing::debug!(%service, "the watch ended; Volo discover stops following");
            return;
        };
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let volo_change = apply(&followed, &service, &change);
        tracing::debug!(
            %service,
            instances = volo_change.all.len(),
            added = volo_change.added.len(),
            updated = volo_change.updated.len(),
            removed = volo_change.removed.len(),
            "Volo discover publishes a change"
        );
        shared.publish(volo_change);
    }
}

/// Stores the set after `change` and returns Volo's view of the change.
fn apply(followed: &Followed, service: &Key, change: &Change) -> VoloChange<Key> {
    let previous = followed.current.load_full();
    let all = to_volo_all(&change.all, &previous, |addr| {
        change.added.contains(addr) || change.updated.contains(addr)
    });
    let pick = |addr: std::net::SocketAddr, from: &[Arc<VoloInstance>]| {
        from.iter()
            .find(|i| i.address == volo::net::Address::Ip(addr))
            .cloned()
    };
    let added = change
        .added
        .iter()
        .filter_map(|i| pick(i.addr, &all))
        .collect();
    let updated = change
        .updated
        .iter()
        .filter_map(|i| pick(i.addr, &all))
        .collect();
    let removed = change
        .removed
        .iter()
        .filter_map(|i| pick(i.addr, &previous))
        .collect();
    followed.current.store(Arc::new(all.clone()));
    VoloChange {
        key: service.clone(),
        all,
        added,
        updated,
        removed,
    }
}

impl<D: Discovery> Discover for VoloDiscover<D> {
    type Key = Key;
    type Error = VoloDiscoverError;

    async fn discover<'s>(
        &'s self,
        endpoint: &'s Endpoint,
    ) -> Result<Vec<Arc<VoloInstance>>, Self::Error> {
        let service = endpoint.service_name();
        let current = self.follow(&service).await.map_err(VoloDiscoverError)?;
        Ok(current.as_ref().clone())
    }

    fn key(&self, endpoint: &Endpoint) -> Key {
        endpoint.service_name()
    }

    /// The one change channel of this discover, for every followed service (`keys` does not
    /// narrow it: a broadcast receiver cannot be filtered).
    fn watch(&self, _keys: Option<&[Key]>) -> Option<Receiver<VoloChange<Key>>> {
        Some(self.shared.inactive.activate_cloned())
    }
}

/// Why [`VoloDiscover`] could not answer `discover`: the first watch of the service failed
/// (the next `discover` tries again). Volo reads it as `LoadBalanceError::Discover`.
///
/// ```
/// use service_registry::{volo::VoloDiscoverError, DiscoveryError};
/// use service_registry::kit::shared;
/// let err = VoloDiscoverError(DiscoveryError::Backend { backend: "etcd", service: "echo".into(), source: shared("down") });
/// let volo: volo::loadbalance::error::LoadBalanceError = err.into();
/// assert!(volo.to_string().contains("echo"));
/// ```
#[derive(Clone, Debug, thiserror::Error)]
#[error(transparent)]
pub struct VoloDiscoverError(pub DiscoveryError);

impl From<VoloDiscoverError> for LoadBalanceError {
    fn from(err: VoloDiscoverError) -> Self {
        LoadBalanceError::Discover(Box::new(err))
    }
}

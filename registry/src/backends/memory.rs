//! [`MemoryRegistry`]: an in-process registry with discovery and watch.

use std::collections::HashMap;

use foldhash::fast::RandomState;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use async_trait::async_trait;

use crate::discovery::latest::{self, Publisher};
use crate::discovery::{Discovery, DiscoveryError, Instance, Instances, WatchStream};
use crate::info::Info;
use crate::registry::{Registry, RegistryError};

/// Channels are swept when there are at least this many.
const MIN_SWEEP: usize = 16;

/// The instances of one service.
#[derive(Default)]
struct Service {
    /// Shared with every watcher and resolve; a change costs `O(log n)`, not a copy.
    instances: Instances,
}

struct State {
    services: HashMap<String, Service, RandomState>,
    /// One latest-state channel per watched service, shared by all its watchers: a watcher
    /// costs a receiver, however many changes it has not read.
    watchers: HashMap<String, Publisher, RandomState>,
    /// When `watchers` reaches this size, channels whose watchers are all gone are dropped, and
    /// the next sweep waits for twice the survivors: dropped watchers never pile up, at an
    /// amortized constant cost per watch.
    sweep_at: usize,
}

impl Default for State {
    fn default() -> Self {
        Self {
            services: HashMap::default(),
            watchers: HashMap::default(),
            sweep_at: MIN_SWEEP,
        }
    }
}

impl State {
    /// The instances of `service` (empty when it has none).
    fn instances(&self, service: &str) -> Instances {
        self.services
            .get(service)
            .map(|service| service.instances.clone())
            .unwrap_or_default()
    }

    fn publish(&mut self, service: &str) {
        match self.watchers.get(service) {
            None => return,
            Some(publisher) if publisher.is_closed() => {
                self.watchers.remove(service);
                return;
            }
            Some(_) => {}
        }
        let instances = self.instances(service);
        if let Some(publisher) = self.watchers.get(service) {
            publisher.publish(instances);
        }
    }

    fn sweep(&mut self) {
        if self.watchers.len() < self.sweep_at {
            return;
        }
        self.watchers.retain(|_, publisher| !publisher.is_closed());
        self.sweep_at = (self.watchers.len() * 2).max(MIN_SWEEP);
    }
}

/// The default registry: in-process, shared by clones, with working watch.
///
/// Useful for tests, single-process deployments and the quickstart. Every clone sees the same
/// state; all operations are safe to call concurrently.
///
/// ```
/// use service_registry::{Discovery, Info, MemoryRegistry, Registry};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let registry = MemoryRegistry::new();
/// let client_side = registry.clone();
/// registry.register(&Info::new("echo", "127.0.0.1:9000".parse().unwrap())).await.unwrap();
/// let found = client_side.resolve("echo").await.unwrap();
/// assert_eq!(found[0].addr.port(), 9000);
/// # }
/// ```
#[derive(Clone, Default)]
pub struct MemoryRegistry {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for MemoryRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("MemoryRegistry")
            .field("services", &state.services.len())
            .finish()
    }
}

impl MemoryRegistry {
    /// An empty registry.
    ///
    /// ```
    /// let registry = service_registry::MemoryRegistry::new();
    /// assert!(registry.service_names().is_empty());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// The names of the services that have at least one instance.
    ///
    /// ```
    /// use service_registry::{Info, MemoryRegistry, Registry};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let registry = MemoryRegistry::new();
    /// registry.register(&Info::new("a", "127.0.0.1:1".parse().unwrap())).await.unwrap();
    /// assert_eq!(registry.service_names(), vec!["a".to_string()]);
    /// # }
    /// ```
    pub fn service_names(&self) -> Vec<String> {
        let state = self.lock();
        let mut names: Vec<_> = state
            .services
            .iter()
            .filter(|(_, service)| !service.instances.is_empty())
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        names
    }

    /// The instances of `service` as one shared list: what [`resolve`](Discovery::resolve)
    /// returns, without copying it into a `Vec` (a pointer copy, for callers that look the
    /// service up on every call).
    ///
    /// ```
    /// use service_registry::{Info, MemoryRegistry, Registry};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let registry = MemoryRegistry::new();
    /// registry.register(&Info::new("echo", "127.0.0.1:9000".parse().unwrap())).await.unwrap();
    /// assert_eq!(registry.instances("echo")[0].addr.port(), 9000);
    /// assert!(registry.instances("nothing").is_empty());
    /// # }
    /// ```
    pub fn instances(&self, service: &str) -> Instances {
        self.lock().instances(service)
    }

    /// The process-wide registry the [`Registrar`](crate::Registrar) uses when none is given.
    ///
    /// ```
    /// use service_registry::MemoryRegistry;
    /// let a = MemoryRegistry::global();
    /// let b = MemoryRegistry::global();
    /// assert!(a.same_as(b));
    /// ```
    pub fn global() -> &'static MemoryRegistry {
        static GLOBAL: OnceLock<MemoryRegistry> = OnceLock::new();
        GLOBAL.get_or_init(MemoryRegistry::new)
    }

    /// True when `self` and `other` share their state (one is a clone of the other).
    ///
    /// ```
    /// let a = service_registry::MemoryRegistry::new();
    /// assert!(a.same_as(&a.clone()));
    /// assert!(!a.same_as(&service_registry::MemoryRegistry::new()));
    /// ```
    pub fn same_as(&self, other: &MemoryRegistry) -> bool {
        Arc::ptr_eq(&self.state, &other.state)
    }

    /// How many watch channels the registry holds (one per watched service, whatever the
    /// number of its watchers); channels whose watchers are all gone are dropped as it goes.
    /// For tests.
    ///
    /// ```
    /// use service_registry::{Discovery, MemoryRegistry};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let registry = MemoryRegistry::new();
    /// let a = registry.watch("echo").await.unwrap();
    /// let b = registry.watch("echo").await.unwrap();
    /// assert_eq!(registry.watch_channels(), 1);
    /// # drop((a, b));
    /// # }
    /// ```
    #[doc(hidden)]
    pub fn watch_channels(&self) -> usize {
        self.lock().watchers.len()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated (every update is a
        // single insert or remove), so a poisoned lock is still consistent.
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

#[async_trait]
impl Registry for MemoryRegistry {
    fn name(&self) -> String {
        "memory".to_string()
    }

    async fn register(&self, info: &Info) -> Result<(), RegistryError> {
        let mut state = self.lock();
        let service = state.services.entry(info.service_name.clone()).or_default();
        service.instances.insert(Instance::from(info));
        state.publish(&info.service_name);
        Ok(())
    }

    async fn deregister(&self, info: &Info) -> Result<(), RegistryError> {
        let mut state = self.lock();
        if let Some(service) = state.services.get_mut(&info.service_name) {
            service.instances.remove(&info.addr);
            if service.instances.is_empty() {
                state.services.remove(&info.service_name);
            }
        }
        state.publish(&info.service_name);
        Ok(())
    }
}

#[async_trait]
impl Discovery for MemoryRegistry {
    async fn resolve(&self, service: &str) -> Result<Instances, DiscoveryError> {
        // Shared, not copied: one reference count under the lock.
        Ok(self.lock().instances(service))
    }

    async fn watch(&self, service: &str) -> Result<WatchStream, DiscoveryError> {
        let mut state = self.lock();
        state.sweep();
        let all = state.instances(service);
        // Snapshot and subscription under one lock: no change can fall between them.
        if let Some(publisher) = state.watchers.get(service) {
            publisher.publish(all);
            return Ok(publisher.subscribe());
        }
        let (publisher, stream) = latest::channel("memory", service, all);
        state.watchers.insert(service.to_string(), publisher);
        Ok(stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use std::net::SocketAddr;

    fn info(port: u16) -> Info {
        Info::new("svc", SocketAddr::from(([127, 0, 0, 1], port)))
    }

    #[tokio::test]
    async fn watch_sees_snapshot_add_update_remove() {
        let registry = MemoryRegistry::new();
        registry.register(&info(1)).await.unwrap();
        let mut watch = registry.watch("svc").await.unwrap();
        let first = watch.next().await.unwrap();
        assert_eq!(first.all.len(), 1);
        assert_eq!(first.added.len(), 1);

        registry.register(&info(2)).await.unwrap();
        let change = watch.next().await.unwrap();
        assert_eq!(change.added[0].addr.port(), 2);
        assert_eq!(change.all.len(), 2);

        let mut heavier = info(2);
        heavier.weight = 99;
        registry.register(&heavier).await.unwrap();
        let change = watch.next().await.unwrap();
        assert_eq!(change.updated[0].weight, 99);

        registry.deregister(&info(1)).await.unwrap();
        let change = watch.next().await.unwrap();
        assert_eq!(change.removed[0].addr.port(), 1);
        assert_eq!(change.all.len(), 1);
    }

    #[tokio::test]
    async fn same_registration_twice_is_silent() {
        let registry = MemoryRegistry::new();
        let i = info(1);
        registry.register(&i).await.unwrap();
        let mut watch = registry.watch("svc").await.unwrap();
        watch.next().await.unwrap();
        registry.register(&i).await.unwrap();
        registry.deregister(&info(5)).await.unwrap();
        registry.deregister(&i).await.unwrap();
        assert!(watch.next().await.unwrap().removed.len() == 1);
    }

    #[tokio::test]
    async fn watchers_of_one_service_share_a_channel_that_goes_with_them() {
        let registry = MemoryRegistry::new();
        let mut a = registry.watch("svc").await.unwrap();
        let mut b = registry.watch("svc").await.unwrap();
        assert_eq!(registry.watch_channels(), 1);
        for watch in [&mut a, &mut b] {
            assert!(watch.next().await.unwrap().all.is_empty());
        }
        registry.register(&info(1)).await.unwrap();
        for watch in [&mut a, &mut b] {
            assert_eq!(watch.next().await.unwrap().added.len(), 1);
        }
        drop(a);
        registry.deregister(&info(1)).await.unwrap();
        assert_eq!(b.next().await.unwrap().removed.len(), 1);
        drop(b);
        // The next change of the service drops its channel.
        registry.register(&info(1)).await.unwrap();
        assert_eq!(registry.watch_channels(), 0);
    }

    #[tokio::test]
    async fn a_late_watcher_starts_from_the_current_set() {
        let registry = MemoryRegistry::new();
        let _early = registry.watch("svc").await.unwrap();
        registry.register(&info(1)).await.unwrap();
        let mut late = registry.watch("svc").await.unwrap();
        let first = late.next().await.unwrap();
        assert_eq!(first.added.len(), 1);
        assert_eq!(first.all, first.added);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_registrations_all_land() {
        let registry = MemoryRegistry::new();
        let mut tasks = Vec::new();
        for port in 1..=200u16 {
            let r = registry.clone();
            tasks.push(tokio::spawn(async move { r.register(&info(port)).await }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(registry.resolve("svc").await.unwrap().len(), 200);
    }

    #[tokio::test]
    async fn resolve_shares_the_set_instead_of_copying_it() {
        let registry = MemoryRegistry::new();
        registry.register(&info(1)).await.unwrap();
        let (a, b) = (
            registry.resolve("svc").await.unwrap(),
            registry.resolve("svc").await.unwrap(),
        );
        assert!(a.ptr_eq(&b), "two resolves share one set");
        registry.register(&info(2)).await.unwrap();
        let c = registry.resolve("svc").await.unwrap();
        assert!(!a.ptr_eq(&c));
        assert_eq!((a.len(), c.len()), (1, 2));
    }
}

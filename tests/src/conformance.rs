//! One behaviour suite for every backend, as opendal runs its behaviour tests against each
//! service: a scenario is written once against [`Backend`] and `tests/tests/conformance.rs` runs
//! it on memory, etcd, ZooKeeper and Nacos, one test per (backend, scenario).
//!
//! Scenarios panic with the backend's name and what was observed. They wait on conditions with
//! deadlines; the only sleeps hold an outage open past the lease TTL / session timeout.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use async_trait::async_trait;
use futures_util::StreamExt;
use service_registry::kit::shared;
use service_registry::{
    Backoff, Change, Discovery, Health, Info, InfoOverride, MemoryRegistry, Registrar, Registry,
    RegistryError, ServiceStatus, WatchStream,
};

// `registrar_address_change_leaves_no_old_address` runs a registrar for `linked.alpha`, a
// `#[service]` defined in that library: link it.
use linked_services as _;

/// How long a change may take to show in a watch or a resolve.
const CHANGE: Duration = Duration::from_secs(5);
/// How long an instance may take to be back once the server answers again.
const RECOVERY: Duration = Duration::from_secs(5);
/// The lease TTL / session timeout the real backends are configured with.
pub const EXPIRY: Duration = Duration::from_secs(3);

/// A registry backend under test: how to make its clients, write foreign data into its store,
/// and take its server away and back.
#[async_trait]
pub trait Backend: Send + Sync {
    /// `memory`, `etcd`, `zookeeper`.
    fn name(&self) -> &'static str;
    /// A new registry client (each call: a new lease / session).
    async fn registry(&self) -> Arc<dyn Registry>;
    /// A new discovery client.
    async fn discovery(&self) -> Arc<dyn Discovery>;
    /// Writes `bytes` where an instance `node` of `service` would be, the way a foreign writer
    /// would (etcd key `{prefix}/{service}/{node}`, ZooKeeper node `/{service}/{node}`).
    /// Memory cannot hold foreign bytes: a no-op there, and the scenarios that need it are not
    /// run on memory.
    async fn put_raw(&self, service: &str, node: &str, bytes: &[u8]);
    /// Stops the server, keeping its data. Not applicable to memory.
    async fn outage(&mut self);
    /// Starts the server again on the same address and data, and waits until it answers.
    async fn recover(&mut self);
    /// Closes every registry this backend made (bounded), before the server goes away.
    async fn finish(&mut self) {}
    /// A tag value larger than one registration request to this backend may carry (etcd's
    /// 1.5 MiB `--max-request-bytes`, ZooKeeper's 1 MiB `jute.maxbuffer`, Nacos' 10 MiB
    /// inbound message limit).
    fn oversized_value(&self) -> usize {
        5 << 20
    }
    /// Whether the server applies a changed tag of a registered instance. r-nacos 0.8.8 does
    /// not: it keeps the metadata an instance was first registered with ahead of later SDK
    /// updates (`naming/service.rs` `update_instance`, its "priority metadata") until the
    /// instance has been gone for a while; weights do change.
    fn updates_tags(&self) -> bool {
        true
    }
}

/// The in-process registry; registry and discovery share one [`MemoryRegistry`].
#[derive(Default)]
pub struct MemoryBackend {
    registry: MemoryRegistry,
}

impl MemoryBackend {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }
    async fn registry(&self) -> Arc<dyn Registry> {
        Arc::new(self.registry.clone())
    }
    async fn discovery(&self) -> Arc<dyn Discovery> {
        Arc::new(self.registry.clone())
    }
    async fn put_raw(&self, _service: &str, _node: &str, _bytes: &[u8]) {
        // Memory holds decoded instances only: there is nowhere to put foreign bytes.
    }
    async fn outage(&mut self) {
        panic!("memory has no server to take away: outage scenarios do not apply to it");
    }
    async fn recover(&mut self) {
        panic!("memory has no server to bring back: outage scenarios do not apply to it");
    }
}

#[cfg(feature = "etcd")]
pub use self::etcd::EtcdBackend;

#[cfg(feature = "etcd")]
mod etcd {
    use super::*;
    use crate::fixtures::etcd::Etcd;
    use service_registry::etcd::{EtcdConfig, EtcdDiscovery, EtcdRegistry, DEFAULT_PREFIX};
    use service_registry::Backoff;
    use std::sync::Mutex;

    /// A one-member etcd started by the fixture; registries use a 3 s lease.
    pub struct EtcdBackend {
        pub etcd: Etcd,
        registries: Mutex<Vec<EtcdRegistry>>,
    }

    impl EtcdBackend {
        /// Starts etcd and waits until it answers.
        pub async fn start() -> Self {
            Self {
                etcd: Etcd::start().await,
                registries: Mutex::default(),
            }
        }

        /// The configuration every client here uses.
        pub fn config(&self) -> EtcdConfig {
            EtcdConfig::new(self.etcd.endpoints())
                .lease_ttl(EXPIRY)
                .backoff(Backoff::new(
                    Duration::from_millis(50),
                    Duration::from_millis(500),
                ))
        }
    }

    #[async_trait]
    impl Backend for EtcdBackend {
        fn name(&self) -> &'static str {
            "etcd"
        }
        async fn registry(&self) -> Arc<dyn Registry> {
            let registry = EtcdRegistry::new(self.config()).expect("etcd registry");
            self.registries.lock().unwrap().push(registry.clone());
            Arc::new(registry)
        }
        async fn discovery(&self) -> Arc<dyn Discovery> {
            Arc::new(EtcdDiscovery::new(self.config()))
        }
        async fn put_raw(&self, service: &str, node: &str, bytes: &[u8]) {
            let mut client = self.etcd.client().await;
            client
                .put(format!("{DEFAULT_PREFIX}/{service}/{node}"), bytes, None)
                .await
                .expect("raw put into etcd");
        }
        async fn outage(&mut self) {
            self.etcd.stop();
        }
        async fn recover(&mut self) {
            self.etcd.restart().await;
        }
        async fn finish(&mut self) {
            let registries = std::mem::take(&mut *self.registries.lock().unwrap());
            for registry in registries {
                let _ = tokio::time::timeout(Duration::from_secs(5), registry.close()).await;
            }
        }
    }
}

#[cfg(feature = "zookeeper")]
pub use self::zookeeper::ZookeeperBackend;

#[cfg(feature = "zookeeper")]
mod zookeeper {
    use super::*;
    use crate::fixtures::zookeeper::ZooKeeper;
    use service_registry::zookeeper::{ZookeeperConfig, ZookeeperDiscovery, ZookeeperRegistry};
    use service_registry::Backoff;
    use std::sync::Mutex;
    use zookeeper_client::{Acls, CreateMode};

    /// A standalone ZooKeeper started by the fixture; registries use a 3 s session.
    pub struct ZookeeperBackend {
        pub zk: ZooKeeper,
        registries: Mutex<Vec<ZookeeperRegistry>>,
    }

    impl ZookeeperBackend {
        /// Starts ZooKeeper and waits until it answers.
        pub async fn start() -> Self {
            Self {
                zk: ZooKeeper::start().await,
                registries: Mutex::default(),
            }
        }

        /// The configuration every client here uses.
        pub fn config(&self) -> ZookeeperConfig {
            ZookeeperConfig::new(self.zk.connect_string())
                .session_timeout(EXPIRY)
                .backoff(Backoff::new(
                    Duration::from_millis(50),
                    Duration::from_millis(500),
                ))
        }
    }

    #[async_trait]
    impl Backend for ZookeeperBackend {
        fn name(&self) -> &'static str {
            "zookeeper"
        }
        async fn registry(&self) -> Arc<dyn Registry> {
            let registry = ZookeeperRegistry::new(self.config()).expect("zookeeper registry");
            self.registries.lock().unwrap().push(registry.clone());
            Arc::new(registry)
        }
        async fn discovery(&self) -> Arc<dyn Discovery> {
            Arc::new(ZookeeperDiscovery::new(self.config()))
        }
        async fn put_raw(&self, service: &str, node: &str, bytes: &[u8]) {
            let client = self.zk.client(None).await;
            let persistent = CreateMode::Persistent.with_acls(Acls::anyone_all());
            match client
                .create(&format!("/{service}"), b"", &persistent)
                .await
            {
                Ok(_) | Err(zookeeper_client::Error::NodeExists) => {}
                Err(err) => panic!("create /{service}: {err}"),
            }
            let path = format!("/{service}/{node}");
            match client.create(&path, bytes, &persistent).await {
                Ok(_) => {}
                Err(zookeeper_client::Error::NodeExists) => {
                    client.set_data(&path, bytes, None).await.expect("set data");
                }
                Err(err) => panic!("create {path}: {err}"),
            }
        }
        async fn outage(&mut self) {
            self.zk.stop();
        }
        async fn recover(&mut self) {
            self.zk.restart().await;
        }
        async fn finish(&mut self) {
            let registries = std::mem::take(&mut *self.registries.lock().unwrap());
            for registry in registries {
                let _ = tokio::time::timeout(Duration::from_secs(5), registry.close()).await;
            }
        }
    }
}

#[cfg(feature = "nacos")]
pub use self::nacos::NacosBackend;

#[cfg(feature = "nacos")]
mod nacos {
    use super::*;
    use crate::fixtures::nacos::Nacos;
    use service_registry::nacos::{NacosConfig, NacosDiscovery, NacosRegistry};
    use service_registry::Backoff;
    use std::sync::Mutex;

    /// An rnacos started by the fixture; clients check the connection every second.
    pub struct NacosBackend {
        pub nacos: Nacos,
        registries: Mutex<Vec<NacosRegistry>>,
    }

    impl NacosBackend {
        /// Starts rnacos and waits until it answers.
        pub async fn start() -> Self {
            Self {
                nacos: Nacos::start().await,
                registries: Mutex::default(),
            }
        }

        /// The configuration every client here uses.
        pub fn config(&self) -> NacosConfig {
            NacosConfig::new("127.0.0.1", self.nacos.http_port)
                .grpc_port(self.nacos.grpc_port)
                .heartbeat(Duration::from_secs(1))
                .request_timeout(Duration::from_secs(2))
                .backoff(Backoff::new(
                    Duration::from_millis(50),
                    Duration::from_millis(500),
                ))
        }
    }

    #[async_trait]
    impl Backend for NacosBackend {
        fn name(&self) -> &'static str {
            "nacos"
        }
        fn oversized_value(&self) -> usize {
            11 << 20
        }
        fn updates_tags(&self) -> bool {
            false
        }
        async fn registry(&self) -> Arc<dyn Registry> {
            let registry = NacosRegistry::new(self.config()).expect("nacos registry");
            self.registries.lock().unwrap().push(registry.clone());
            Arc::new(registry)
        }
        async fn discovery(&self) -> Arc<dyn Discovery> {
            Arc::new(NacosDiscovery::new(self.config()))
        }
        /// Nacos stores structured instances, not bytes: the nearest thing to unreadable data
        /// is an instance Kitex's resolver would not use, which the server still lists.
        /// `node` is its `ip:port`; it is registered through the HTTP open API with weight 0
        /// and `bytes` (lossily) as metadata.
        async fn put_raw(&self, service: &str, node: &str, bytes: &[u8]) {
            let addr: SocketAddr = node.parse().expect("node is ip:port");
            let metadata = serde_json::json!({ "raw": String::from_utf8_lossy(bytes) });
            self.nacos
                .register_http(
                    service,
                    &addr.ip().to_string(),
                    addr.port(),
                    0.0,
                    &metadata,
                    "",
                )
                .await;
        }
        async fn outage(&mut self) {
            self.nacos.stop();
        }
        async fn recover(&mut self) {
            self.nacos.restart().await;
        }
        async fn finish(&mut self) {
            let registries = std::mem::take(&mut *self.registries.lock().unwrap());
            for registry in registries {
                let _ = tokio::time::timeout(Duration::from_secs(5), registry.close()).await;
            }
        }
    }
}

/// What a scenario compares: address, weight and tags (start time and the rest vary by backend).
pub type Seen = (SocketAddr, u32, BTreeMap<String, String>);

/// The comparable part of instances, sorted by address.
pub fn seen(instances: &service_registry::Instances) -> Vec<Seen> {
    let mut seen: Vec<Seen> = instances
        .iter()
        .map(|i| (i.addr, i.weight, i.tags.clone()))
        .collect();
    seen.sort_by_key(|s| s.0);
    seen
}

/// The comparable part of `infos`, sorted by address.
pub fn expected(infos: &[&Info]) -> Vec<Seen> {
    let mut seen: Vec<Seen> = infos
        .iter()
        .map(|i| (i.addr, i.weight, i.tags.clone()))
        .collect();
    seen.sort_by_key(|s| s.0);
    seen
}

fn addrs(instances: &service_registry::Instances) -> Vec<SocketAddr> {
    let mut addrs: Vec<_> = instances.iter().map(|i| i.addr).collect();
    addrs.sort();
    addrs
}

/// An instance of `service` on `127.0.0.1:port` with `weight` and `tags`.
pub fn info(service: &str, port: u16, weight: u32, tags: &[(&str, &str)]) -> Info {
    let mut info = Info::new(service, SocketAddr::from(([127, 0, 0, 1], port)));
    info.weight = weight;
    info.tags = tags
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    info
}

async fn register(backend: &str, registry: &dyn Registry, info: &Info) {
    registry
        .register(info)
        .await
        .unwrap_or_else(|err| panic!("[{backend}] register {}: {err}", info.addr));
}

async fn deregister(backend: &str, registry: &dyn Registry, info: &Info) {
    registry
        .deregister(info)
        .await
        .unwrap_or_else(|err| panic!("[{backend}] deregister {}: {err}", info.addr));
}

pub(crate) async fn resolve(backend: &str, discovery: &dyn Discovery, service: &str) -> Vec<Seen> {
    let found = discovery
        .resolve(service)
        .await
        .unwrap_or_else(|err| panic!("[{backend}] resolve {service}: {err}"));
    seen(&found)
}

pub(crate) async fn watch(backend: &str, discovery: &dyn Discovery, service: &str) -> WatchStream {
    discovery
        .watch(service)
        .await
        .unwrap_or_else(|err| panic!("[{backend}] watch {service}: {err}"))
}

/// The next change that changes something (empty changes are passed over), within [`CHANGE`].
pub(crate) async fn next_change(
    backend: &str,
    watch: &mut WatchStream,
    waiting_for: &str,
) -> Change {
    let deadline = Instant::now() + CHANGE;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let change = tokio::time::timeout(remaining, watch.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "[{backend}] no watch change within {CHANGE:?} while waiting for {waiting_for}"
                )
            })
            .unwrap_or_else(|| {
                panic!("[{backend}] the watch ended while waiting for {waiting_for}")
            });
        if !(change.added.is_empty() && change.updated.is_empty() && change.removed.is_empty()) {
            return change;
        }
    }
}

/// Reads `watch` until the latest complete set (`latest`) equals `want`, within `limit`.
async fn watch_until(
    backend: &str,
    watch: &mut WatchStream,
    latest: &mut Vec<Seen>,
    want: &[Seen],
    limit: Duration,
) {
    let deadline = Instant::now() + limit;
    let mut history = Vec::new();
    while latest.as_slice() != want {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, watch.next()).await {
            Ok(Some(change)) => {
                *latest = seen(&change.all);
                history.push(format!(
                    "+{:?} ~{:?} -{:?}",
                    addrs(&change.added),
                    addrs(&change.updated),
                    addrs(&change.removed)
                ));
            }
            Ok(None) => panic!("[{backend}] the watch ended; changes seen: {history:?}"),
            Err(_) => panic!(
                "[{backend}] the watch did not reach {want:?} within {limit:?}; its latest set is \
                 {latest:?}; changes seen: {history:?}"
            ),
        }
    }
}

/// Polls `check` every 50 ms until it returns `Ok`, or panics after `limit` with the last
/// `Err` (what was observed instead).
pub(crate) async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let last = match check().await {
            Ok(value) => return value,
            Err(observed) => observed,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}; last observed: {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `resolve` as an observation: the instances, or the error text.
pub(crate) async fn observe(discovery: &dyn Discovery, service: &str) -> Result<Vec<Seen>, String> {
    match tokio::time::timeout(Duration::from_secs(3), discovery.resolve(service)).await {
        Ok(Ok(found)) => Ok(seen(&found)),
        Ok(Err(err)) => Err(format!("resolve failed: {err}")),
        Err(_) => Err("resolve took over 3 s".into()),
    }
}

/// Register → resolve shows exactly it: address, weight and tags; other services stay empty.
pub async fn register_then_resolve(backend: &mut dyn Backend) {
    let name = backend.name();
    let registry = backend.registry().await;
    let discovery = backend.discovery().await;
    let a = info("conf.resolve", 7001, 30, &[("idc", "hz"), ("env", "test")]);
    register(name, &*registry, &a).await;
    assert_eq!(
        resolve(name, &*discovery, "conf.resolve").await,
        expected(&[&a]),
        "[{name}] resolve right after register"
    );
    assert_eq!(
        resolve(name, &*discovery, "conf.nothing").await,
        Vec::new(),
        "[{name}] a service nobody registered"
    );
}

/// A watch gives the snapshot first, then added, updated (weight change) and removed.
pub async fn watch_snapshot_then_changes(backend: &mut dyn Backend) {
    let name = backend.name();
    let service = "conf.watch";
    let registry = backend.registry().await;
    let discovery = backend.discovery().await;
    let mut a = info(service, 7001, 10, &[("idc", "hz")]);
    let b = info(service, 7002, 20, &[]);
    register(name, &*registry, &a).await;

    let mut watch = watch(name, &*discovery, service).await;
    let snapshot = next_change(name, &mut watch, "the snapshot").await;
    assert_eq!(
        seen(&snapshot.all),
        expected(&[&a]),
        "[{name}] snapshot: all"
    );
    assert_eq!(
        seen(&snapshot.added),
        expected(&[&a]),
        "[{name}] snapshot: added"
    );
    assert!(
        snapshot.updated.is_empty() && snapshot.removed.is_empty(),
        "[{name}] snapshot has updated/removed: {snapshot:?}"
    );

    register(name, &*registry, &b).await;
    let added = next_change(name, &mut watch, "b added").await;
    assert_eq!(
        seen(&added.added),
        expected(&[&b]),
        "[{name}] added: {added:?}"
    );
    assert!(
        added.updated.is_empty() && added.removed.is_empty(),
        "[{name}] adding b changed more: {added:?}"
    );
    assert_eq!(
        seen(&added.all),
        expected(&[&a, &b]),
        "[{name}] all after adding b"
    );

    a.weight = 50;
    register(name, &*registry, &a).await;
    let updated = next_change(name, &mut watch, "a's weight updated").await;
    assert_eq!(
        seen(&updated.updated),
        expected(&[&a]),
        "[{name}] updated: {updated:?}"
    );
    assert!(
        updated.added.is_empty() && updated.removed.is_empty(),
        "[{name}] a weight change reported as more than an update: {updated:?}"
    );
    assert_eq!(
        seen(&updated.all),
        expected(&[&a, &b]),
        "[{name}] all after the update"
    );

    deregister(name, &*registry, &b).await;
    let removed = next_change(name, &mut watch, "b removed").await;
    assert_eq!(
        addrs(&removed.removed),
        vec![b.addr],
        "[{name}] removed: {removed:?}"
    );
    assert!(
        removed.added.is_empty() && removed.updated.is_empty(),
        "[{name}] removing b changed more: {removed:?}"
    );
    assert_eq!(
        seen(&removed.all),
        expected(&[&a]),
        "[{name}] all after removing b"
    );
}

/// A deregistered instance is gone from the very next resolve, by any client.
pub async fn deregister_removes_at_once(backend: &mut dyn Backend) {
    let name = backend.name();
    let service = "conf.deregister";
    let registry = backend.registry().await;
    let discovery = backend.discovery().await;
    let a = info(service, 7001, 10, &[]);
    let b = info(service, 7002, 10, &[]);
    register(name, &*registry, &a).await;
    register(name, &*registry, &b).await;
    assert_eq!(
        resolve(name, &*discovery, service).await,
        expected(&[&a, &b])
    );

    deregister(name, &*registry, &a).await;
    assert_eq!(
        resolve(name, &*discovery, service).await,
        expected(&[&b]),
        "[{name}] resolve right after deregistering a"
    );
    let fresh = backend.discovery().await;
    assert_eq!(
        resolve(name, &*fresh, service).await,
        expected(&[&b]),
        "[{name}] a new discovery client right after deregistering a"
    );
    deregister(name, &*registry, &b).await;
    assert_eq!(
        resolve(name, &*discovery, service).await,
        Vec::new(),
        "[{name}] resolve right after deregistering the last instance"
    );
}

/// Registering twice and deregistering twice are not errors and leave one / no instance;
/// deregistering what was never registered succeeds.
pub async fn register_and_deregister_are_idempotent(backend: &mut dyn Backend) {
    let name = backend.name();
    let service = "conf.idempotent";
    let registry = backend.registry().await;
    let discovery = backend.discovery().await;
    let a = info(service, 7001, 10, &[("k", "v")]);
    register(name, &*registry, &a).await;
    register(name, &*registry, &a).await;
    assert_eq!(
        resolve(name, &*discovery, service).await,
        expected(&[&a]),
        "[{name}] after registering twice"
    );
    deregister(name, &*registry, &a).await;
    deregister(name, &*registry, &a).await;
    assert_eq!(
        resolve(name, &*discovery, service).await,
        Vec::new(),
        "[{name}] after deregistering twice"
    );
    let never = info(service, 7999, 10, &[]);
    deregister(name, &*registry, &never).await;
    // And the registry still works afterwards.
    register(name, &*registry, &a).await;
    assert_eq!(resolve(name, &*discovery, service).await, expected(&[&a]));
}

/// Unreadable data beside a valid instance is left out and the valid one is served, by resolve
/// and by a watch (also when the unreadable data arrives while watching). Not run on memory,
/// which cannot hold foreign bytes.
pub async fn unreadable_data_is_left_out(backend: &mut dyn Backend) {
    let name = backend.name();
    let service = "conf.unreadable";
    let registry = backend.registry().await;
    let discovery = backend.discovery().await;
    let a = info(service, 7001, 30, &[("idc", "hz")]);
    register(name, &*registry, &a).await;
    backend
        .put_raw(service, "127.0.0.1:7901", b"\xff\xfe not json at all")
        .await;
    backend
        .put_raw(
            service,
            "127.0.0.1:7902",
            br#"{"network":"tcp","address":"127.0.0.1:7902","weight":"#,
        )
        .await;

    assert_eq!(
        resolve(name, &*discovery, service).await,
        expected(&[&a]),
        "[{name}] resolve beside unreadable data"
    );
    let mut watch = watch(name, &*discovery, service).await;
    let snapshot = next_change(name, &mut watch, "the snapshot").await;
    assert_eq!(
        seen(&snapshot.all),
        expected(&[&a]),
        "[{name}] watch snapshot beside unreadable data"
    );

    // More unreadable data while watching, then a valid instance: only the valid one shows.
    backend
        .put_raw(service, "127.0.0.1:7903", b"{\"Weight\": \"heavy\"")
        .await;
    let b = info(service, 7002, 10, &[]);
    register(name, &*registry, &b).await;
    let added = next_change(name, &mut watch, "b added").await;
    assert_eq!(
        (seen(&added.added), seen(&added.all)),
        (expected(&[&b]), expected(&[&a, &b])),
        "[{name}] the change after unreadable data and b: {added:?}"
    );
    assert_eq!(
        resolve(name, &*discovery, service).await,
        expected(&[&a, &b]),
        "[{name}] resolve at the end"
    );
}

/// Register, stop the server past the lease TTL / session timeout, restart it with its data:
/// the instance is back within [`RECOVERY`] of the server answering, and a watch opened before
/// the outage sees it and keeps working. Not run on memory.
pub async fn outage_and_recovery(backend: &mut dyn Backend) {
    let name = backend.name();
    let service = "conf.outage";
    let registry = backend.registry().await;
    let discovery = backend.discovery().await;
    let a = info(service, 7001, 30, &[("idc", "hz")]);
    register(name, &*registry, &a).await;
    let mut watch = watch(name, &*discovery, service).await;
    let snapshot = next_change(name, &mut watch, "the snapshot").await;
    let mut latest = seen(&snapshot.all);
    assert_eq!(
        latest,
        expected(&[&a]),
        "[{name}] snapshot before the outage"
    );

    backend.outage().await;
    tokio::time::sleep(EXPIRY + Duration::from_secs(2)).await; // hold the outage past the TTL
    backend.recover().await;
    let answered = Instant::now();

    let want = expected(&[&a]);
    eventually(
        RECOVERY,
        &format!("[{name}] a resolvable again after the outage"),
        || {
            let (discovery, want) = (&discovery, &want);
            async move {
                let found = observe(&**discovery, service).await?;
                if &found == want {
                    Ok(())
                } else {
                    Err(format!("{found:?}"))
                }
            }
        },
    )
    .await;
    let back = answered.elapsed();
    watch_until(name, &mut watch, &mut latest, &want, RECOVERY).await;

    // The watch still follows changes after the outage. The registry may still be rebuilding
    // its connection; an `Unavailable` register is retried, as the harness would.
    let b = info(service, 7002, 10, &[]);
    let started = Instant::now();
    let failures = std::sync::Mutex::new(Vec::new());
    eventually(
        RECOVERY,
        &format!("[{name}] registering b after the outage"),
        || {
            let (registry, b, failures) = (&registry, &b, &failures);
            async move {
                let result = registry.register(b).await.map_err(|err| err.to_string());
                if let Err(err) = &result {
                    failures.lock().unwrap().push(err.clone());
                }
                result
            }
        },
    )
    .await;
    let failures = failures.into_inner().unwrap();
    if !failures.is_empty() {
        println!(
            "[{name}] register after the outage failed {} time(s) over {:?} before succeeding; \
             first error: {}",
            failures.len(),
            started.elapsed(),
            failures[0]
        );
    }
    let both = expected(&[&a, &b]);
    watch_until(name, &mut watch, &mut latest, &both, CHANGE).await;
    println!("[{name}] instance back {back:?} after the server answered again");

    // And they stay, past the point where the old lease / session would expire.
    let fresh = backend.discovery().await;
    stays(
        name,
        [&*discovery, &*fresh],
        service,
        &both,
        &[],
        answered,
        answered + EXPIRY + Duration::from_secs(2),
        true,
    )
    .await;
    watch_until(name, &mut watch, &mut latest, &both, CHANGE).await;
}

/// A deregistration made while the server is down stays gone once it is back (the instance
/// registered beside it stays). Not run on memory.
pub async fn deregistration_during_outage_stays_gone(backend: &mut dyn Backend) {
    let name = backend.name();
    let service = "conf.outage-deregister";
    let registry = backend.registry().await;
    let discovery = backend.discovery().await;
    let a = info(service, 7001, 10, &[]);
    let b = info(service, 7002, 10, &[]);
    register(name, &*registry, &a).await;
    register(name, &*registry, &b).await;
    assert_eq!(
        resolve(name, &*discovery, service).await,
        expected(&[&a, &b])
    );

    backend.outage().await;
    let deregistration = tokio::spawn({
        let (registry, a) = (registry.clone(), a.clone());
        async move {
            let started = Instant::now();
            let result = registry.deregister(&a).await;
            (result.map_err(|err| err.to_string()), started.elapsed())
        }
    });
    tokio::time::sleep(EXPIRY + Duration::from_secs(2)).await; // hold the outage past the TTL
    backend.recover().await;
    let answered = Instant::now();

    // Nobody is held up by an outage: the deregistration is accepted while the server is down
    // (the backend removes the instance once the server is back, or it goes with the lease /
    // session), and the backend must not bring the instance back.
    match tokio::time::timeout(Duration::from_secs(10), deregistration).await {
        Ok(Ok((result, took))) => {
            println!("[{name}] deregister during the outage returned {result:?} after {took:?}");
            assert_eq!(
                result,
                Ok(()),
                "[{name}] deregister during the outage failed after {took:?}"
            );
            assert!(
                took < EXPIRY + Duration::from_secs(2),
                "[{name}] deregister during the outage waited {took:?}, until the server was back"
            );
        }
        Ok(Err(err)) => panic!("[{name}] the deregister task failed: {err}"),
        Err(_) => {
            panic!("[{name}] deregister did not return within 10 s of the server coming back")
        }
    }

    let want = expected(&[&b]);
    eventually(
        RECOVERY,
        &format!("[{name}] only b registered after the outage"),
        || {
            let (discovery, want) = (&discovery, &want);
            async move {
                let found = observe(&**discovery, service).await?;
                if &found == want {
                    Ok(())
                } else {
                    Err(format!("{found:?}"))
                }
            }
        },
    )
    .await;
    println!(
        "[{name}] settled {:?} after the server answered",
        answered.elapsed()
    );
    // Stays gone past the point where the old lease / session would expire. (Whether b, never
    // deregistered, stays visible throughout is `outage_and_recovery`'s business: here a gap
    // is only printed, and b must be there at the end.)
    let fresh = backend.discovery().await;
    stays(
        name,
        [&*discovery, &*fresh],
        service,
        &want,
        &[a.addr],
        answered,
        answered + EXPIRY + Duration::from_secs(2),
        false,
    )
    .await;
    eventually(
        RECOVERY,
        &format!("[{name}] only b registered at the end"),
        || {
            let (fresh, want) = (&fresh, &want);
            async move {
                let found = observe(&**fresh, service).await?;
                if &found == want {
                    Ok(())
                } else {
                    Err(format!("{found:?}"))
                }
            }
        },
    )
    .await;
}

/// A registry (the backend's own) that refuses the next register call once it is told to, as a
/// registry that is briefly overloaded would.
#[derive(Clone)]
pub struct RefusesNext {
    inner: Arc<dyn Registry>,
    armed: Arc<AtomicBool>,
    refused: Arc<AtomicU32>,
}

impl RefusesNext {
    /// Wraps `inner`; nothing is refused until [`RefusesNext::arm`].
    pub fn new(inner: Arc<dyn Registry>) -> Self {
        Self {
            inner,
            armed: Arc::default(),
            refused: Arc::default(),
        }
    }

    /// The next register call fails.
    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// How many register calls were refused.
    pub fn refused(&self) -> u32 {
        self.refused.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Registry for RefusesNext {
    async fn register(&self, info: &Info) -> Result<(), RegistryError> {
        if self.armed.swap(false, Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(RegistryError::Backend {
                backend: "test",
                source: shared("refused once by the test"),
            });
        }
        self.inner.register(info).await
    }
    async fn deregister(&self, info: &Info) -> Result<(), RegistryError> {
        self.inner.deregister(info).await
    }
    fn health(&self) -> Option<tokio::sync::watch::Receiver<Health>> {
        self.inner.health()
    }
    fn name(&self) -> String {
        self.inner.name()
    }
}

/// Until `discovery` lists exactly `want` for `service`, within `limit`.
async fn lists(
    name: &str,
    discovery: &dyn Discovery,
    service: &str,
    want: &[Seen],
    limit: Duration,
    what: &str,
) {
    eventually(limit, &format!("[{name}] {what}"), || async {
        let found = observe(discovery, service).await?;
        if found == want {
            Ok(())
        } else {
            Err(format!("{found:?}"))
        }
    })
    .await;
}

/// Issue 18, defect 2: a registrar moves its service to another address (`ControlHandle::update`
/// with a new address) while the registry refuses the next register once. Afterwards only the
/// new address is listed, and after shutdown neither: every address this process registered is
/// deregistered. Runs on every backend (the refusal is the registrar's to handle).
pub async fn registrar_address_change_leaves_no_old_address(backend: &mut dyn Backend) {
    let name = backend.name();
    let service = "linked.alpha";
    let registry = RefusesNext::new(backend.registry().await);
    let discovery = backend.discovery().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = listener.local_addr().unwrap();
    let b = SocketAddr::from(([127, 0, 0, 1], if a.port() == 7401 { 7402 } else { 7401 }));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let registrar = Registrar::builder()
        .shared_registry(Arc::new(registry.clone()))
        .listen_addr(a)
        .only([service])
        .backoff(Backoff::new(
            Duration::from_millis(50),
            Duration::from_millis(500),
        ))
        .drain_delay(Duration::ZERO)
        .shutdown_signal(async {
            let _ = stopped.await;
        })
        .build()
        .unwrap();
    let status = registrar.status();
    let control = registrar.control();
    let at = |addr: SocketAddr| {
        let mut info = registrar.infos()[0].clone();
        info.addr = addr;
        expected(&[&info])
    };
    let (at_a, at_b) = (at(a), at(b));
    let server = tokio::spawn(registrar.serve(|shutdown| async move {
        let _listener = listener;
        shutdown.await;
        Ok::<_, std::io::Error>(())
    }));
    tokio::time::timeout(
        CHANGE,
        status.wait_for(|s| s[service] == ServiceStatus::Registered),
    )
    .await
    .unwrap_or_else(|_| panic!("[{name}] not registered: {:?}", status.snapshot()));
    lists(
        name,
        &*discovery,
        service,
        &at_a,
        CHANGE,
        "the first address listed",
    )
    .await;

    registry.arm();
    control
        .update(service, InfoOverride::new().addr(b))
        .unwrap();
    lists(
        name,
        &*discovery,
        service,
        &at_b,
        CHANGE,
        "only the new address listed after the refused register",
    )
    .await;
    assert_eq!(
        registry.refused(),
        1,
        "[{name}] the register of the new address was refused once"
    );
    assert_eq!(
        status.get(service),
        Some(ServiceStatus::Registered),
        "[{name}]"
    );

    stop.send(()).unwrap();
    tokio::time::timeout(CHANGE * 2, server)
        .await
        .unwrap_or_else(|_| panic!("[{name}] serve did not return"))
        .unwrap()
        .unwrap();
    lists(
        name,
        &*discovery,
        service,
        &[],
        CHANGE,
        "nothing listed after shutdown",
    )
    .await;
}

/// Issue 18, defect 7: an update the server refuses on its own merits (a tag that makes the value
/// larger than the server takes: etcd's `--max-request-bytes`, 1.5 MiB by default; ZooKeeper's
/// `jute.maxbuffer`, 1 MiB; gRPC's 4 MiB message limit on Nacos) fails with the server's error,
/// and the last accepted value stays registered: served now, and written again after an outage
/// past the lease TTL / session timeout. Not run on memory, which takes any size.
pub async fn refused_update_keeps_the_last_accepted_value(backend: &mut dyn Backend) {
    let name = backend.name();
    let service = "conf.refused-update";
    let registry = backend.registry().await;
    let discovery = backend.discovery().await;
    let a = info(service, 7001, 10, &[("v", "1")]);
    register(name, &*registry, &a).await;
    let want = expected(&[&a]);
    lists(name, &*discovery, service, &want, CHANGE, "a listed").await;

    let mut big = a.clone();
    let oversized = backend.oversized_value();
    big.tags.insert("big".into(), "x".repeat(oversized));
    let started = Instant::now();
    let refused = tokio::time::timeout(Duration::from_secs(15), registry.register(&big))
        .await
        .unwrap_or_else(|_| panic!("[{name}] the oversized update did not return within 15 s"));
    println!(
        "[{name}] the oversized update returned after {:?}: {refused:?}",
        started.elapsed()
    );
    assert!(
        refused.is_err(),
        "[{name}] a value of {oversized} bytes was accepted"
    );
    lists(
        name,
        &*discovery,
        service,
        &want,
        CHANGE,
        "a still listed with its old value after the refused update",
    )
    .await;

    backend.outage().await;
    tokio::time::sleep(EXPIRY + Duration::from_secs(2)).await; // hold the outage past the TTL
    backend.recover().await;
    let answered = Instant::now();
    lists(
        name,
        &*discovery,
        service,
        &want,
        RECOVERY,
        "a back with its old value after the outage",
    )
    .await;
    println!(
        "[{name}] a back {:?} after the server answered",
        answered.elapsed()
    );
    // And a later update the server takes still applies.
    let v2 = if backend.updates_tags() { "2" } else { "1" };
    let a2 = info(service, 7001, 20, &[("v", v2)]);
    // The registry may still be rebuilding its connection (a ZooKeeper session reconnecting):
    // an `Unavailable` register is retried, as the harness would.
    eventually(
        RECOVERY,
        &format!("[{name}] the next update after the outage"),
        || {
            let (registry, a2) = (&registry, &a2);
            async move { registry.register(a2).await.map_err(|err| err.to_string()) }
        },
    )
    .await;
    lists(
        name,
        &*discovery,
        service,
        &expected(&[&a2]),
        CHANGE,
        "the next accepted update",
    )
    .await;
}

/// Watches what `clients` resolve for `service` until `until` (times are measured from
/// `answered`, when the server answered again). An address in `forbidden` showing up fails at
/// once. Any other observation that differs from `want` is a gap: with `strict` it fails the
/// scenario, otherwise it is printed. Resolve errors are tolerated and printed.
#[allow(clippy::too_many_arguments)]
async fn stays(
    name: &str,
    clients: [&dyn Discovery; 2],
    service: &str,
    want: &[Seen],
    forbidden: &[SocketAddr],
    answered: Instant,
    until: Instant,
    strict: bool,
) {
    let mut errors = Vec::new();
    let mut timeline: Vec<String> = Vec::new();
    let mut gaps = 0;
    let mut last: [Option<Vec<Seen>>; 2] = [None, None];
    let until = until.max(Instant::now() + Duration::from_secs(1));
    while Instant::now() < until {
        for (i, client) in clients.iter().enumerate() {
            let at = answered.elapsed();
            match observe(*client, service).await {
                Ok(found) => {
                    if last[i].as_ref() != Some(&found) {
                        let addrs: Vec<_> = found.iter().map(|s| s.0).collect();
                        timeline.push(format!("{at:.2?}: client {i} sees {addrs:?}"));
                        last[i] = Some(found.clone());
                    }
                    if let Some(back) = found.iter().find(|s| forbidden.contains(&s.0)) {
                        panic!(
                            "[{name}] the deregistered instance {} came back {at:?} after the \
                             server answered; timeline: {timeline:#?}",
                            back.0
                        );
                    }
                    if found != want {
                        gaps += 1;
                    }
                }
                Err(err) => errors.push(format!("{at:.2?}: client {i}: {err}")),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if gaps > 0 {
        let message = format!(
            "[{name}] after the outage, {gaps} resolve(s) did not show exactly {:?}; \
             timeline (from the server answering): {timeline:#?}; resolve errors: {errors:?}",
            want.iter().map(|s| s.0).collect::<Vec<_>>()
        );
        assert!(!strict, "{message}");
        println!("{message}");
    } else if !errors.is_empty() {
        println!("[{name}] resolve errors after the outage: {errors:?}");
    }
}

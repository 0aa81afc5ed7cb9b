//! One behaviour suite for every backend, as opendal runs its behaviour tests against each
//! service: a scenario is written once against a [`Harness`] and `tests/tests/conformance.rs`
//! runs it on memory, etcd, ZooKeeper and Nacos, one test per (backend, scenario).
//!
//! A backend's adapter ([`memory`], [`etcd`], [`zookeeper`], [`nacos`]) implements [`Backend`]:
//! how to make its clients, write foreign data into its store, read back what it stores, and take
//! its server away and back. The [`Harness`] around it is the same for all four: it keeps every
//! registry a scenario opens and closes them at the end.
//!
//! Scenarios panic with the backend's name and what was observed. They wait on conditions with
//! deadlines; the only sleeps hold an outage open past the lease TTL / session timeout (or past
//! the point where the registrar's own backoff has grown).

use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use service_registry::{Discovery, Registry, RegistryError};

// The scenarios that run a registrar register `linked.alpha` and `linked.warm`, `#[service]`s
// defined in that library: link it.
use linked_services as _;

#[cfg(feature = "etcd")]
pub mod etcd;
mod foreign;
pub mod lifecycle;
pub mod memory;
#[cfg(feature = "nacos")]
pub mod nacos;
mod observe;
mod reconnect;
mod refuses;
mod scenarios;
#[cfg(feature = "zookeeper")]
pub mod zookeeper;

pub use self::foreign::*;
pub use self::lifecycle::*;
pub(crate) use self::observe::{eventually, next_change, observe, watch};
pub use self::observe::{expected, info, seen, Seen};
pub use self::reconnect::*;
pub use self::refuses::RefusesNext;
pub use self::scenarios::*;

/// How long a change may take to show in a watch or a resolve.
const CHANGE: Duration = Duration::from_secs(5);
/// How long an instance may take to be back once the server answers again.
const RECOVERY: Duration = Duration::from_secs(5);
/// The lease TTL / session timeout the real backends are configured with.
pub const EXPIRY: Duration = Duration::from_secs(3);

/// A registry backend under test, as its adapter describes it. Scenarios reach it through a
/// [`Harness`].
#[async_trait]
pub trait Backend: Send + Sync {
    /// `memory`, `etcd`, `zookeeper`, `nacos`.
    fn name(&self) -> &'static str;
    /// A new registry client (each call: a new lease / session), with the backend's own
    /// credentials, or with `password` instead of its password (see [`Backend::user`]).
    /// [`Harness::registry`] calls this and keeps the client, to close it at the end.
    fn connect(&self, password: Option<&str>) -> Arc<dyn Registry>;
    /// A new registry client whose lease TTL / session timeout is `expiry` instead of
    /// [`EXPIRY`]; `None` where the backend has no such thing (memory; Nacos, whose instances
    /// live as long as their connection). [`Harness::registry_with_expiry`] calls this.
    fn connect_with_expiry(&self, expiry: Duration) -> Option<Arc<dyn Registry>> {
        let _ = expiry;
        None
    }
    /// A new discovery client (with the backend's credentials, if it has any).
    async fn discovery(&self) -> Arc<dyn Discovery>;
    /// Writes `bytes` where an instance `node` of `service` would be, the way a foreign writer
    /// would (etcd key `{prefix}/{service}/{node}`, ZooKeeper node `/{service}/{node}`).
    /// Memory cannot hold foreign bytes: a no-op there, and the scenarios that need it are not
    /// run on memory.
    async fn put_raw(&self, service: &str, node: &str, bytes: &[u8]);
    /// What the server holds at instance `node` of `service` (etcd's key, ZooKeeper's node),
    /// read around our clients; `None` when there is nothing. Only etcd and ZooKeeper store
    /// records of their own to read: the scenarios that need it run there only.
    async fn record(&self, service: &str, node: &str) -> Option<Record> {
        let _ = (service, node);
        panic!("[{}] stores no record to read", self.name());
    }
    /// Deletes instance `node` of `service` the way a foreign writer would (see
    /// [`Backend::record`] for where it applies).
    async fn delete_raw(&self, service: &str, node: &str) {
        let _ = (service, node);
        panic!("[{}] stores no record to delete", self.name());
    }
    /// The addresses the server holds for `service`, read around our discovery client (the
    /// etcd keys under the service's prefix, ZooKeeper's children of `/{service}`, what Nacos'
    /// open API lists), sorted.
    async fn stored(&self, service: &str) -> Vec<SocketAddr>;
    /// The address registries reach the server at (etcd's client port, Nacos' gRPC port), for
    /// a [`FaultProxy`](crate::proxy::FaultProxy) to stand in front of. etcd, ZooKeeper and
    /// Nacos run the proxied scenarios.
    fn server_addr(&self) -> SocketAddr {
        panic!("[{}] runs no proxied scenario", self.name());
    }
    /// A registry that reaches the server at `addr` (a proxy in front of
    /// [`Backend::server_addr`]) with the backend's default backoff (100 ms doubling to 2 s);
    /// etcd's lease TTL is [`EXPIRY`], Nacos checks its connection every second. Closed by
    /// [`Harness::finish`] when made by [`Harness::registry_through`].
    fn connect_through(&self, addr: SocketAddr) -> Arc<dyn Registry> {
        let _ = addr;
        panic!("[{}] runs no proxied scenario", self.name());
    }
    /// How a registry whose connection is cut 300 ms after it opens may rebuild it at the most:
    /// over how long, how many times (etcd: 8 in 4 s; Nacos, which opens a connection in two
    /// steps: 10 in 8 s). Backing off from 100 ms doubling allows about half of that.
    fn reconnections_at_most(&self) -> (Duration, usize) {
        panic!("[{}] runs no proxied scenario", self.name());
    }
    /// Whether the registry's health counts its failed attempts to reach the server while it
    /// is away (etcd, Nacos: each attempt backs off further). ZooKeeper's does not: its client
    /// reconnects within the session and a sentinel probes every 200 ms.
    fn counts_failed_attempts(&self) -> bool {
        true
    }
    /// How many times [`everything_is_back_within_a_second_of_a_wiped_server_answering`] wipes
    /// and restarts the server (each round a new registry).
    fn wiped_restarts(&self) -> usize {
        1
    }
    /// How soon after a wiped server answers every instance of that scenario (5, and a batch
    /// of 100 services registered just before the outage) must be back; the first one must be
    /// back within 1 s everywhere.
    fn back_after_wipe_within(&self) -> Duration {
        Duration::from_secs(1)
    }
    /// How many writes the store has taken so far (etcd's revision), where it counts them.
    async fn writes(&self) -> Option<i64> {
        None
    }
    /// Deletes the stopped server's data (r-nacos keeps ephemeral instances in memory only: a
    /// restart loses them anyway). Between [`Backend::outage`] and [`Backend::recover`]. Memory
    /// has no server and no data apart from its registries: it overrides this with a panic, and
    /// the scenarios that wipe are not run on it.
    fn wipe(&mut self) {
        panic!("[{}] has no data to wipe", self.name());
    }
    /// Stops the server, keeping its data. Not applicable to memory.
    async fn outage(&mut self);
    /// Starts the server again on the same address and data, and waits until it answers.
    async fn recover(&mut self);
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
    /// Whether what the backend stores carries an instance's warm-up (Kitex's ZooKeeper data
    /// holds only weight and tags).
    fn stores_warmup(&self) -> bool {
        true
    }
    /// This backend's example binary pointed at this server, and how soon the registrations of
    /// a SIGKILLed one must be gone. `None` on memory, which lives in the test process.
    fn example(&self) -> Option<Example> {
        None
    }
    /// How soon after the server answers again a service started during the outage must be
    /// registered (its registrar's backoff has grown to seconds by then).
    fn registers_after_outage_within(&self) -> Duration {
        Duration::from_secs(1)
    }
    /// What the error of a call to this backend's stopped server says.
    fn unreachable_says(&self) -> &'static str {
        "is unreachable"
    }
    /// The user of a backend started with credentials; `None` when it has none.
    fn user(&self) -> Option<&'static str> {
        None
    }
    /// Checks the error of a registry whose password is wrong: `text` as the registrar reports
    /// it, `error` when a direct call returned it. Panics with what differs.
    fn check_wrong_password(&self, text: &str, error: Option<&RegistryError>) {
        let _ = (text, error);
        panic!(
            "[{}] has no credentials: the wrong-password scenario does not apply",
            self.name()
        );
    }
}

/// One instance's record as the server holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The stored bytes.
    pub bytes: Vec<u8>,
    /// What keeps it alive: etcd's lease, ZooKeeper's ephemeral owner (0: nothing).
    pub holder: i64,
    /// The store's version of this record (etcd's `mod_revision`, ZooKeeper's `mzxid`): it
    /// changes with every write of the record, a delete and create included.
    pub version: i64,
}

impl Record {
    /// What an instance's restored record has again: its bytes and its holder (its version
    /// moves on).
    pub fn content(&self) -> (&[u8], i64) {
        (&self.bytes, self.holder)
    }
}

/// A backend's example binary with the environment that points it at the test's server.
#[derive(Clone, Debug)]
pub struct Example {
    /// The binary's name under `target/<profile>/examples`.
    pub binary: &'static str,
    /// Its environment.
    pub env: Vec<(&'static str, String)>,
    /// How soon after a SIGKILL its registrations must be gone (the lease TTL or session
    /// timeout plus a second; Nacos: when its connection closes).
    pub gone_within: Duration,
}

/// What every scenario runs against: one backend's adapter, and the registries opened on it.
pub struct Harness {
    backend: Box<dyn Backend>,
    opened: Mutex<Vec<Arc<dyn Registry>>>,
}

impl Harness {
    /// A harness around `backend`.
    pub fn new(backend: impl Backend + 'static) -> Self {
        Self {
            backend: Box::new(backend),
            opened: Mutex::default(),
        }
    }

    /// A new registry client with the backend's own credentials, closed by [`Harness::finish`].
    pub async fn registry(&self) -> Arc<dyn Registry> {
        self.keep(self.backend.connect(None))
    }

    /// A new registry client whose password is `password`, closed by [`Harness::finish`].
    pub async fn registry_with_password(&self, password: &str) -> Arc<dyn Registry> {
        self.keep(self.backend.connect(Some(password)))
    }

    /// A new registry client whose lease TTL / session timeout is `expiry`, closed by
    /// [`Harness::finish`]; `None` where [`Backend::connect_with_expiry`] has none.
    pub async fn registry_with_expiry(&self, expiry: Duration) -> Option<Arc<dyn Registry>> {
        let registry = self.backend.connect_with_expiry(expiry)?;
        Some(self.keep(registry))
    }

    /// A registry reaching the server at `addr` (see [`Backend::connect_through`]), closed by
    /// [`Harness::finish`].
    pub async fn registry_through(&self, addr: SocketAddr) -> Arc<dyn Registry> {
        self.keep(self.backend.connect_through(addr))
    }

    fn keep(&self, registry: Arc<dyn Registry>) -> Arc<dyn Registry> {
        self.opened
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(registry.clone());
        registry
    }

    /// Closes every registry this harness made (each bounded to 5 s), before the server goes.
    pub async fn finish(&mut self) {
        let opened = std::mem::take(&mut *self.opened.lock().unwrap_or_else(|p| p.into_inner()));
        for registry in opened {
            let _ = tokio::time::timeout(Duration::from_secs(5), registry.close()).await;
        }
    }
}

impl Deref for Harness {
    type Target = dyn Backend;
    fn deref(&self) -> &Self::Target {
        &*self.backend
    }
}

impl DerefMut for Harness {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut *self.backend
    }
}

/// `names` (each `ip:port`, as a backend stores it) as sorted addresses; panics on a name that is
/// none, naming `place` (where the name was found).
#[cfg_attr(
    not(any(feature = "etcd", feature = "zookeeper", feature = "nacos")),
    allow(dead_code)
)]
fn sorted_addrs(names: impl IntoIterator<Item = String>, place: &str) -> Vec<SocketAddr> {
    let mut addrs: Vec<SocketAddr> = names
        .into_iter()
        .map(|name| {
            name.parse()
                .unwrap_or_else(|_| panic!("not an address of ours in {place}: {name}"))
        })
        .collect();
    addrs.sort();
    addrs
}

/// [`Backend::check_wrong_password`] of a backend that checks passwords: `text` says `says` and
/// names `server`; `error` is [`RegistryError::Unauthenticated`] for `user`.
#[cfg_attr(not(any(feature = "etcd", feature = "nacos")), allow(dead_code))]
fn check_unauthenticated(
    name: &str,
    (text, error): (&str, Option<&RegistryError>),
    says: &str,
    user: &str,
    server: &str,
) {
    assert!(text.contains(says), "[{name}] {text}");
    assert!(
        text.contains(server),
        "[{name}] the error must name the server: {text}"
    );
    if let Some(error) = error {
        assert!(
            matches!(error, RegistryError::Unauthenticated { user: u, .. } if u == user),
            "[{name}] {error}"
        );
    }
}

/// The configuration's backoff in every adapter: quick, so that scenarios do not wait on it.
#[cfg_attr(
    not(any(feature = "etcd", feature = "zookeeper", feature = "nacos")),
    allow(dead_code)
)]
fn quick_backoff() -> service_registry::Backoff {
    service_registry::Backoff::new(Duration::from_millis(50), Duration::from_millis(500))
}

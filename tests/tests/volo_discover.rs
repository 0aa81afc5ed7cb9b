//! `VoloDiscover` (issue 19, part 1): Volo's `Discover` over every backend, answered from a live
//! watch, with real added/updated/removed changes on one bounded broadcast channel.
//!
//! `follows_a_service` is one scenario run on memory, etcd, ZooKeeper and Nacos; the rest run
//! on memory (they test the adapter, not the backend).
#![cfg(feature = "volo")]

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::Stream;
use service_registry::volo::VoloDiscover;
use service_registry::{
    Discovery, DiscoveryError, Info, Instances, MemoryRegistry, Registry, WatchStream,
};
use tests::conformance::Harness;
use tests::poll;
use volo::context::Endpoint;
use volo::discovery::{Change, Discover};
use volo::net::Address;
use volo::FastStr;

const CHANGE: Duration = Duration::from_secs(10);

/// Counts the calls a `VoloDiscover` makes to its `Discovery`, and the watches still open.
#[derive(Clone)]
struct Counting<D> {
    inner: D,
    resolves: Arc<AtomicUsize>,
    watches: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
}

impl<D> Counting<D> {
    fn new(inner: D) -> Self {
        Self {
            inner,
            resolves: Arc::default(),
            watches: Arc::default(),
            open: Arc::default(),
        }
    }
}

/// A watch stream that counts itself open until dropped.
struct Open {
    inner: WatchStream,
    open: Arc<AtomicUsize>,
}

impl Stream for Open {
    type Item = service_registry::Change;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl<D: Discovery> Discovery for Counting<D> {
    async fn resolve(&self, service: &str) -> Result<Instances, DiscoveryError> {
        self.resolves.fetch_add(1, Ordering::SeqCst);
        self.inner.resolve(service).await
    }
    async fn watch(&self, service: &str) -> Result<WatchStream, DiscoveryError> {
        self.watches.fetch_add(1, Ordering::SeqCst);
        let inner = self.inner.watch(service).await?;
        self.open.fetch_add(1, Ordering::SeqCst);
        Ok(Box::pin(Open {
            inner,
            open: self.open.clone(),
        }))
    }
}

fn endpoint(service: &str) -> Endpoint {
    Endpoint::new(FastStr::new(service))
}

fn info(service: &str, addr: &str, weight: u32) -> Info {
    let mut info = Info::new(service, addr.parse().unwrap());
    info.weight = weight;
    info
}

fn ip(addr: SocketAddr) -> Address {
    Address::Ip(addr)
}

fn addrs(instances: &[Arc<volo::discovery::Instance>]) -> Vec<Address> {
    let mut out: Vec<Address> = instances.iter().map(|i| i.address.clone()).collect();
    out.sort_by_key(|a| a.to_string());
    out
}

/// The next change on `rx` for which `pick` answers, within [`CHANGE`].
async fn change_where(
    rx: &mut async_broadcast::Receiver<Change<FastStr>>,
    what: &str,
    mut pick: impl FnMut(&Change<FastStr>) -> bool,
) -> Change<FastStr> {
    let wait = async {
        loop {
            match rx.recv().await {
                Ok(change) if pick(&change) => return change,
                Ok(_) | Err(async_broadcast::RecvError::Overflowed(_)) => {}
                Err(async_broadcast::RecvError::Closed) => panic!("channel closed: {what}"),
            }
        }
    };
    tokio::time::timeout(CHANGE, wait)
        .await
        .unwrap_or_else(|_| panic!("timed out after {CHANGE:?} waiting for {what}"))
}

/// The scenario every backend runs: the first `discover` starts one watch; a new instance is
/// `added`, a weight change `updated`, a deregistration `removed`; a thousand more `discover`s
/// make no call to the registry; dropping the discover ends the watch.
async fn follows_a_service(backend: &Harness) {
    let name = backend.name();
    let service = format!("volo.follow.{name}");
    let registry = backend.registry().await;
    let counting = Counting::new(backend.discovery().await);
    let discover = VoloDiscover::new(counting.clone());
    let mut rx = discover
        .watch(None)
        .expect("VoloDiscover hands out its channel");

    let a = info(&service, "127.0.0.1:7101", 10);
    registry.register(&a).await.unwrap();
    poll::until(CHANGE, &format!("{name}: a listed"), || async {
        let found = discover.discover(&endpoint(&service)).await.ok()?;
        (addrs(&found) == [ip(a.addr)]).then_some(())
    })
    .await;

    let b = info(&service, "127.0.0.1:7102", 10);
    registry.register(&b).await.unwrap();
    let added = change_where(&mut rx, &format!("{name}: b added"), |c| {
        c.added.iter().any(|i| i.address == ip(b.addr))
    })
    .await;
    assert_eq!(added.key, service.as_str(), "{name}");
    assert_eq!(addrs(&added.all), [ip(a.addr), ip(b.addr)], "{name}");
    assert!(added.removed.is_empty(), "{name}: {added:?}");

    let heavier = info(&service, "127.0.0.1:7101", 30);
    registry.register(&heavier).await.unwrap();
    let updated = change_where(&mut rx, &format!("{name}: a's weight updated"), |c| {
        c.updated.iter().any(|i| i.address == ip(a.addr))
    })
    .await;
    assert_eq!(updated.updated.len(), 1, "{name}: {updated:?}");
    assert_eq!(updated.updated[0].weight, 30, "{name}");
    assert!(
        updated.added.is_empty() && updated.removed.is_empty(),
        "{name}: a weight change is an update, not a remove + add: {updated:?}"
    );

    registry.deregister(&b).await.unwrap();
    let removed = change_where(&mut rx, &format!("{name}: b removed"), |c| {
        c.removed.iter().any(|i| i.address == ip(b.addr))
    })
    .await;
    assert_eq!(addrs(&removed.all), [ip(a.addr)], "{name}");
    let now = discover.discover(&endpoint(&service)).await.unwrap();
    assert_eq!(
        addrs(&now),
        [ip(a.addr)],
        "{name}: discover follows the watch"
    );
    assert_eq!(now[0].weight, 30, "{name}");

    for _ in 0..1000 {
        discover.discover(&endpoint(&service)).await.unwrap();
    }
    assert_eq!(
        counting.watches.load(Ordering::SeqCst),
        1,
        "{name}: one watch per service"
    );
    assert_eq!(
        counting.resolves.load(Ordering::SeqCst),
        0,
        "{name}: discover never resolves"
    );
    assert_eq!(counting.open.load(Ordering::SeqCst), 1, "{name}");

    drop(rx);
    drop(discover);
    poll::until(
        CHANGE,
        &format!("{name}: the watch ends with the discover"),
        || async { (counting.open.load(Ordering::SeqCst) == 0).then_some(()) },
    )
    .await;
    registry.deregister(&heavier).await.unwrap();
}

#[tokio::test]
async fn memory_follows_a_service() {
    follows_a_service(&Harness::memory()).await;
}

#[cfg(feature = "etcd")]
#[tokio::test]
async fn etcd_follows_a_service() {
    let mut backend = Harness::etcd().await;
    follows_a_service(&backend).await;
    backend.finish().await;
}

#[cfg(feature = "zookeeper")]
#[tokio::test]
async fn zookeeper_follows_a_service() {
    let mut backend = Harness::zookeeper().await;
    follows_a_service(&backend).await;
    backend.finish().await;
}

#[cfg(feature = "nacos")]
#[tokio::test]
async fn nacos_follows_a_service() {
    let mut backend = Harness::nacos().await;
    follows_a_service(&backend).await;
    backend.finish().await;
}

/// A receiver that reads nothing while 40 services change 25 times each holds at most the
/// channel's capacity, and once it reads, it ends with every service's current set.
#[tokio::test]
async fn a_slow_receiver_gets_the_latest_state_of_every_service() {
    const SERVICES: usize = 40;
    const ROUNDS: u16 = 25;
    let registry = MemoryRegistry::new();
    let discover = VoloDiscover::with_capacity(registry.clone(), 8);
    let mut slow = discover.watch(None).unwrap();
    let name = |s: usize| format!("volo.slow.{s:02}");
    for s in 0..SERVICES {
        discover.discover(&endpoint(&name(s))).await.unwrap();
    }
    for round in 0..ROUNDS {
        for s in 0..SERVICES {
            let addr = format!("127.0.0.1:{}", 8000 + round);
            registry.register(&info(&name(s), &addr, 10)).await.unwrap();
        }
    }
    // Every change has reached the channel once discover lists the last one everywhere.
    let last = ip(format!("127.0.0.1:{}", 8000 + ROUNDS - 1).parse().unwrap());
    poll::until(
        CHANGE,
        "every service's last instance discovered",
        || async {
            for s in 0..SERVICES {
                let found = discover.discover(&endpoint(&name(s))).await.ok()?;
                if !found.iter().any(|i| i.address == last) {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    let queued = slow.len();
    assert!(
        queued <= SERVICES,
        "the channel grew to {queued} messages for {SERVICES} services"
    );
    let mut latest: std::collections::HashMap<FastStr, Vec<Address>> = Default::default();
    while let Ok(change) = slow.try_recv().or_else(|err| match err {
        async_broadcast::TryRecvError::Overflowed(_) => slow.try_recv(),
        other => Err(other),
    }) {
        latest.insert(change.key.clone(), addrs(&change.all));
    }
    assert_eq!(latest.len(), SERVICES, "a service's final state was lost");
    for s in 0..SERVICES {
        let want = addrs(&discover.discover(&endpoint(&name(s))).await.unwrap());
        assert_eq!(latest[name(s).as_str()], want, "{}", name(s));
        assert_eq!(want.len(), ROUNDS as usize);
    }
    eprintln!("slow receiver: {queued} queued messages for {SERVICES} services x {ROUNDS} rounds");
}

/// A discover that races a change: concurrent first calls share one watch.
#[tokio::test]
async fn concurrent_first_discovers_share_one_watch() {
    let registry = MemoryRegistry::new();
    registry
        .register(&info("volo.race", "127.0.0.1:7201", 10))
        .await
        .unwrap();
    let counting = Counting::new(registry);
    let discover = VoloDiscover::new(counting.clone());
    let calls = (0..16).map(|_| {
        let discover = discover.clone();
        tokio::spawn(async move { discover.discover(&endpoint("volo.race")).await.unwrap() })
    });
    for call in calls {
        assert_eq!(call.await.unwrap().len(), 1);
    }
    assert_eq!(counting.watches.load(Ordering::SeqCst), 1);
    assert_eq!(discover.services(), ["volo.race"]);
}

/// Tags pass through; the reserved warm-up tags appear only for an instance that warms up.
#[tokio::test]
async fn tags_and_warmup_pass_through() {
    let registry = MemoryRegistry::new();
    let mut warming = info("volo.tags", "127.0.0.1:7301", 10);
    warming.tags.insert("idc".into(), "hz".into());
    warming.warmup = Duration::from_secs(60);
    let mut plain = info("volo.tags", "127.0.0.1:7302", 10);
    plain.tags.insert("idc".into(), "bj".into());
    registry.register(&warming).await.unwrap();
    registry.register(&plain).await.unwrap();
    let discover = VoloDiscover::new(registry);
    let found = discover.discover(&endpoint("volo.tags")).await.unwrap();
    let of = |addr: SocketAddr| found.iter().find(|i| i.address == ip(addr)).unwrap();
    assert_eq!(of(warming.addr).tags["idc"], "hz");
    assert_eq!(
        of(warming.addr).tags[service_registry::volo::WARMUP_TAG],
        "60000"
    );
    assert!(of(warming.addr)
        .tags
        .contains_key(service_registry::volo::START_TIME_TAG));
    assert_eq!(of(plain.addr).tags.len(), 1);
}

//! No call lost to a registry fault (issue 18): a client calls TCP echo listeners through a
//! [`Balancer`] watching the registry every 10 ms, while the registry is SIGKILLed, wiped and
//! restarted 20 times. A wiped registry lists the service as empty until every process has
//! registered again; the balancer holds its last set meanwhile (push-empty protection), so no
//! call finds no instance. And a service whose instances all really leave is empty within the
//! hold.
//!
//! Each backend's test runs the same scenario ([`calls_survive_wiped_restarts`]) against its
//! real server from the fixtures.
#![cfg(any(feature = "etcd", feature = "zookeeper", feature = "nacos"))]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use service_registry::balance::{Balancer, Strategy};
use service_registry::{Discovery, Info, Registry};
use tests::{echo, poll};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const SERVICE: &str = "example.echo";
const INSTANCES: usize = 3;
const RESTARTS: usize = 20;

/// A registry server the scenario can restart with its data wiped.
#[async_trait]
trait Server: Send {
    /// SIGKILL, delete the data, start again; returns once the server answers.
    async fn wiped_restart(&mut self);
}

/// TCP echo listeners on loopback, serving until dropped.
struct Echoes {
    infos: Vec<Info>,
    _stops: Vec<oneshot::Sender<()>>,
}

async fn echoes(count: usize) -> Echoes {
    let mut infos = Vec::new();
    let mut stops = Vec::new();
    for _ in 0..count {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(echo::serve(listener, async {
            let _ = stopped.await;
        }));
        infos.push(Info::new(SERVICE, addr));
        stops.push(stop);
    }
    Echoes {
        infos,
        _stops: stops,
    }
}

/// What the caller saw.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    /// The first few failures, for the message.
    failures: Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, why: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut failures = self.failures.lock().unwrap();
        if failures.len() < 10 {
            failures.push(why);
        }
    }
}

/// Calls through `balancer` every 10 ms (one call at a time: pick, connect, echo) until `stop`.
fn call_every_10_ms(
    balancer: Balancer,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let started = Instant::now();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            n += 1;
            let message = format!("call-{n}");
            let at = started.elapsed();
            match balancer.pick() {
                None => tally.fail(format!("{at:?}: no instance to pick")),
                Some(instance) => match echo::call(instance.addr, &message).await {
                    Ok(reply) if reply == message => {
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(reply) => {
                        tally.fail(format!("{at:?}: {} answered {reply:?}", instance.addr))
                    }
                    Err(err) => tally.fail(format!("{at:?}: {}: {err}", instance.addr)),
                },
            }
        }
    })
}

/// Aborts its task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Follows `service` with a plain watch (no balancer): counts the changes that show it empty,
/// which is what the fault shows every watcher, and keeps the latest set's size.
struct Witness {
    empties: Arc<AtomicUsize>,
    latest: Arc<AtomicUsize>,
    _task: AbortOnDrop,
}

async fn witness<D: Discovery>(discovery: &D) -> Witness {
    let mut changes = discovery.watch(SERVICE).await.unwrap();
    let empties = Arc::new(AtomicUsize::new(0));
    let latest = Arc::new(AtomicUsize::new(usize::MAX));
    let task = {
        let (empties, latest) = (empties.clone(), latest.clone());
        tokio::spawn(async move {
            while let Some(change) = changes.next().await {
                if change.all.is_empty() {
                    empties.fetch_add(1, Ordering::Relaxed);
                }
                latest.store(change.all.len(), Ordering::Relaxed);
            }
        })
    };
    Witness {
        empties,
        latest,
        _task: AbortOnDrop(task),
    }
}

/// The scenario: `INSTANCES` echo listeners registered through `registry`, a client calling
/// them through a balancer (default options) on `discovery`, and `RESTARTS` wiped restarts of
/// `server`, each waited out until `check` lists every instance and a plain watcher has them
/// all again. Asserts that no call failed, and with `must_see_empty` that a plain watcher saw
/// the service empty at least once (that the fault happened).
async fn calls_survive_wiped_restarts<R, D, C>(
    name: &str,
    must_see_empty: bool,
    server: &mut dyn Server,
    registry: &R,
    discovery: &D,
    check: &C,
) where
    R: Registry,
    D: Discovery,
    C: Discovery,
{
    let echoes = echoes(INSTANCES).await;
    for info in &echoes.infos {
        registry.register(info).await.unwrap();
    }
    let everyone = |listed: service_registry::Instances| {
        let mut addrs: Vec<SocketAddr> = listed.iter().map(|i| i.addr).collect();
        addrs.sort();
        let mut want: Vec<SocketAddr> = echoes.infos.iter().map(|i| i.addr).collect();
        want.sort();
        addrs == want
    };
    poll::until(Duration::from_secs(10), "every instance listed", || async {
        check
            .resolve(SERVICE)
            .await
            .ok()
            .filter(|l| everyone(l.clone()))
    })
    .await;
    let balancer = Balancer::builder(Strategy::WeightedRandom)
        .watch(discovery, SERVICE)
        .await
        .unwrap();
    let witness = witness(discovery).await;
    poll::until(
        Duration::from_secs(10),
        "the balancer has every instance",
        || {
            let n = balancer.instances().len();
            async move { (n == INSTANCES).then_some(()) }
        },
    )
    .await;

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let caller = call_every_10_ms(balancer.clone(), tally.clone(), stop.clone());
    let started = Instant::now();
    let (mut restarting, mut slowest_back) = (Duration::ZERO, Duration::ZERO);
    for round in 0..RESTARTS {
        let round_started = Instant::now();
        server.wiped_restart().await;
        restarting += round_started.elapsed();
        let answering = Instant::now();
        let listed = poll::within(
            Duration::from_secs(20),
            Duration::from_millis(20),
            || async {
                check
                    .resolve(SERVICE)
                    .await
                    .ok()
                    .filter(|l| everyone(l.clone()))
            },
        )
        .await;
        assert!(
            listed.is_some(),
            "{name} round {round}: the instances were not registered again within 20 s"
        );
        poll::until(
            Duration::from_secs(20),
            "a plain watcher to see every instance again",
            || {
                let n = witness.latest.load(Ordering::Relaxed);
                async move { (n == INSTANCES).then_some(()) }
            },
        )
        .await;
        slowest_back = slowest_back.max(answering.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    caller.await.unwrap();
    let (ok, failed) = (
        tally.ok.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
    );
    let empties = witness.empties.load(Ordering::Relaxed);
    println!(
        "{name}: {RESTARTS} wiped restarts in {:?} (the server took {restarting:?} to answer; \
         every instance back and watched at most {slowest_back:?} after it answered); a plain \
         watcher saw the service empty {empties} times; calls through the balancer: {ok} ok, \
         {failed} failed",
        started.elapsed()
    );
    assert!(
        empties > 0 || !must_see_empty,
        "{name}: no watcher ever saw the service empty: the fault did not happen"
    );
    assert!(ok > 0, "{name}: no call succeeded");
    assert_eq!(
        failed,
        0,
        "{name}: calls failed during wiped restarts: {:?}",
        tally.failures.lock().unwrap()
    );
}

/// A service whose instances all leave (deregistered while the registry is up): a shrinking
/// set is followed at once, the step to empty is held for the hold and no longer.
async fn a_service_that_really_leaves_is_empty_within_the_hold<R, D>(
    name: &str,
    registry: &R,
    discovery: &D,
) where
    R: Registry,
    D: Discovery,
{
    const HOLD: Duration = Duration::from_secs(2);
    let service = "example.leaving";
    let infos: Vec<Info> = (0..INSTANCES)
        .map(|i| Info::new(service, SocketAddr::from(([127, 0, 0, 1], 7400 + i as u16))))
        .collect();
    for info in &infos {
        registry.register(info).await.unwrap();
    }
    let balancer = Balancer::builder(Strategy::SmoothRoundRobin)
        .hold_when_empty(HOLD)
        .watch(discovery, service)
        .await
        .unwrap();
    poll::until(
        Duration::from_secs(10),
        "every instance in the balancer",
        || {
            let n = balancer.instances().len();
            async move { (n == INSTANCES).then_some(()) }
        },
    )
    .await;
    // Scale-down: all but one leave; followed at once, not held.
    for info in &infos[1..] {
        registry.deregister(info).await.unwrap();
    }
    let shrunk = Instant::now();
    poll::until(
        Duration::from_secs(5),
        "the balancer to shrink to one",
        || {
            let n = balancer.instances().len();
            async move { (n == 1).then_some(()) }
        },
    )
    .await;
    let followed = shrunk.elapsed();
    // The last one leaves: held, then empty within the hold (plus the watch's delivery).
    let leaving = Instant::now();
    registry.deregister(&infos[0]).await.unwrap();
    let emptied = poll::until(HOLD + Duration::from_secs(3), "the balancer empty", || {
        let empty = balancer.instances().is_empty();
        async move { empty.then(|| leaving.elapsed()) }
    })
    .await;
    println!(
        "{name}: a scale-down from {INSTANCES} to 1 followed in {followed:?}; the last \
         instance leaving emptied the balancer after {emptied:?} (hold {HOLD:?})"
    );
    assert!(
        followed < HOLD,
        "{name}: a shrinking set was held ({followed:?})"
    );
    // The hold starts when the watch sees the removal, after the deregistration began.
    assert!(
        emptied >= HOLD,
        "{name}: emptied after {emptied:?}, before the hold of {HOLD:?} was over"
    );
    assert!(balancer.pick().is_none());
}

#[cfg(feature = "etcd")]
mod etcd {
    use super::*;
    use service_registry::etcd::{EtcdConfig, EtcdDiscovery, EtcdRegistry};
    use service_registry::Backoff;
    use tests::fixtures::etcd::Etcd;

    fn config(etcd: &Etcd) -> EtcdConfig {
        EtcdConfig::new(etcd.endpoints()).backoff(Backoff::new(
            Duration::from_millis(50),
            Duration::from_millis(500),
        ))
    }

    #[async_trait]
    impl Server for Etcd {
        async fn wiped_restart(&mut self) {
            self.stop();
            self.wipe();
            self.restart().await;
        }
    }

    #[tokio::test]
    async fn no_call_fails_across_20_wiped_etcd_restarts() {
        let mut etcd = Etcd::start().await;
        let registry = EtcdRegistry::new(config(&etcd)).unwrap();
        let discovery = EtcdDiscovery::new(config(&etcd));
        let check = EtcdDiscovery::new(config(&etcd).resolve_from_watch(false));
        calls_survive_wiped_restarts("etcd", true, &mut etcd, &registry, &discovery, &check).await;
        registry.close().await;
    }

    #[tokio::test]
    async fn a_service_that_leaves_etcd_is_empty_within_the_hold() {
        let etcd = Etcd::start().await;
        let registry = EtcdRegistry::new(config(&etcd)).unwrap();
        let discovery = EtcdDiscovery::new(config(&etcd));
        a_service_that_really_leaves_is_empty_within_the_hold("etcd", &registry, &discovery).await;
        registry.close().await;
    }
}

#[cfg(feature = "zookeeper")]
mod zookeeper {
    use super::*;
    use service_registry::zookeeper::{ZookeeperConfig, ZookeeperDiscovery, ZookeeperRegistry};
    use service_registry::Backoff;
    use tests::fixtures::zookeeper::ZooKeeper;

    fn config(zk: &ZooKeeper) -> ZookeeperConfig {
        ZookeeperConfig::new(zk.connect_string())
            .session_timeout(Duration::from_secs(2))
            .backoff(Backoff::new(
                Duration::from_millis(50),
                Duration::from_millis(500),
            ))
    }

    #[async_trait]
    impl Server for ZooKeeper {
        async fn wiped_restart(&mut self) {
            self.stop();
            self.wipe();
            self.restart().await;
        }
    }

    #[tokio::test]
    async fn no_call_fails_across_20_wiped_zookeeper_restarts() {
        let mut zk = ZooKeeper::start().await;
        let registry = ZookeeperRegistry::new(config(&zk)).unwrap();
        let discovery = ZookeeperDiscovery::new(config(&zk));
        let check = ZookeeperDiscovery::new(config(&zk).resolve_from_watch(false));
        // ZooKeeper's registry usually has its nodes back before discovery's new session lists
        // (a plain watcher saw the empty tree in 0 to 5 of 20 rounds here), so the fault is
        // not certain in every run; a call that finds no instance still fails the test (1 of
        // 9 288 before the hold).
        calls_survive_wiped_restarts("zookeeper", false, &mut zk, &registry, &discovery, &check)
            .await;
        registry.close().await;
    }

    #[tokio::test]
    async fn a_service_that_leaves_zookeeper_is_empty_within_the_hold() {
        let zk = ZooKeeper::start().await;
        let registry = ZookeeperRegistry::new(config(&zk)).unwrap();
        let discovery = ZookeeperDiscovery::new(config(&zk));
        a_service_that_really_leaves_is_empty_within_the_hold("zookeeper", &registry, &discovery)
            .await;
        registry.close().await;
    }
}

#[cfg(feature = "nacos")]
mod nacos {
    use super::*;
    use service_registry::nacos::{NacosConfig, NacosDiscovery, NacosRegistry};
    use service_registry::Backoff;
    use tests::fixtures::nacos::Nacos;

    fn config(nacos: &Nacos) -> NacosConfig {
        NacosConfig::new("127.0.0.1", nacos.http_port)
            .grpc_port(nacos.grpc_port)
            .heartbeat(Duration::from_secs(1))
            .request_timeout(Duration::from_secs(2))
            .backoff(Backoff::new(
                Duration::from_millis(50),
                Duration::from_millis(500),
            ))
    }

    #[async_trait]
    impl Server for Nacos {
        async fn wiped_restart(&mut self) {
            self.stop();
            self.wipe();
            self.restart().await;
        }
    }

    #[tokio::test]
    async fn no_call_fails_across_20_wiped_nacos_restarts() {
        let mut nacos = Nacos::start().await;
        let registry = NacosRegistry::new(config(&nacos)).unwrap();
        let discovery = NacosDiscovery::new(config(&nacos));
        let check = NacosDiscovery::new(config(&nacos).resolve_from_watch(false));
        calls_survive_wiped_restarts("nacos", true, &mut nacos, &registry, &discovery, &check)
            .await;
        registry.close().await;
    }

    #[tokio::test]
    async fn a_service_that_leaves_nacos_is_empty_within_the_hold() {
        let nacos = Nacos::start().await;
        let registry = NacosRegistry::new(config(&nacos)).unwrap();
        let discovery = NacosDiscovery::new(config(&nacos));
        a_service_that_really_leaves_is_empty_within_the_hold("nacos", &registry, &discovery).await;
        registry.close().await;
    }
}

//! `resolve` answers from a live watch of the same discovery, and only while that watch is in
//! sync: with the server black-holed behind a fault proxy, a resolve with no watch fails; with
//! a live watch it answers at once; once the watch has noticed the black hole it fails again
//! (no stale answers); and once the server is back the watch lists again and answers with
//! what changed meanwhile.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use service_registry::{Change, Discovery, DiscoveryError, WatchStream};
use tests::proxy::{Fault, FaultProxy};

/// A cached answer comes back in well under this; a round trip to a black hole never does.
const CACHED: Duration = Duration::from_millis(100);

fn addrs(instances: &service_registry::Instances) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = instances.iter().map(|i| i.addr).collect();
    out.sort();
    out
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

async fn next(watch: &mut WatchStream) -> Change {
    tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("a change within 10 s")
        .expect("the stream is open")
}

/// A resolve that must be answered from the watch: right away, with `want`.
async fn cached(discovery: &dyn Discovery, service: &str, want: &[SocketAddr]) {
    let started = Instant::now();
    let found = tokio::time::timeout(CACHED, discovery.resolve(service))
        .await
        .expect("a cached resolve answers at once")
        .expect("a cached resolve succeeds");
    let took = started.elapsed();
    assert_eq!(addrs(&found), want);
    println!("cached resolve with the server black-holed: {took:?}");
}

/// The scenario, for any backend: `put(port)` / `delete(port)` change the registry directly
/// (not through the proxy); `discovery` reaches the server only through `proxy`.
async fn scenario<P, D>(
    name: &str,
    discovery: &dyn Discovery,
    proxy: &FaultProxy,
    service: &str,
    put: impl Fn(u16) -> P,
    delete: impl Fn(u16) -> D,
) where
    P: std::future::Future<Output = ()>,
    D: std::future::Future<Output = ()>,
{
    put(1).await;
    put(2).await;
    assert_eq!(
        addrs(&discovery.resolve(service).await.unwrap()),
        [addr(1), addr(2)]
    );

    // No watch: a round trip, which the black hole stops.
    proxy.set(Fault::Blackhole);
    let started = Instant::now();
    let uncached = discovery.resolve(service).await;
    // A timeout has one spelling on every backend (issue 22): `Timeout`, not `Unavailable`
    // with "no answer" in its text.
    assert!(
        matches!(uncached, Err(DiscoveryError::Timeout { .. })),
        "[{name}] {uncached:?}"
    );
    println!(
        "[{name}] uncached resolve with the server black-holed failed after {:?}",
        started.elapsed()
    );
    proxy.set(Fault::Pass);

    // A live watch: resolve answers from it, without the server.
    let mut watch = tests::poll::until(Duration::from_secs(20), "a watch", || async {
        discovery.watch(service).await.ok()
    })
    .await;
    assert_eq!(addrs(&next(&mut watch).await.all), [addr(1), addr(2)]);
    proxy.set(Fault::Blackhole);
    cached(discovery, service, &[addr(1), addr(2)]).await;

    // A change the watch cannot see. Until the watch knows it is cut off it may still answer
    // (with what it had); once it knows, resolve must fail rather than serve that.
    delete(1).await;
    let blackholed = Instant::now();
    let answered_meanwhile = std::cell::Cell::new(0);
    let stopped = tests::poll::until(
        Duration::from_secs(30),
        &format!("[{name}] resolve to stop answering once the watch broke"),
        || async {
            match discovery.resolve(service).await {
                Ok(found) => {
                    assert_eq!(addrs(&found), [addr(1), addr(2)]);
                    answered_meanwhile.set(answered_meanwhile.get() + 1);
                    None
                }
                Err(_) => Some(blackholed.elapsed()),
            }
        },
    )
    .await;
    println!(
        "[{name}] the watch noticed the black hole after {stopped:?} \
         ({} cached answers before)",
        answered_meanwhile.get()
    );
    // And stays failing while the server cannot be reached: no stale answer comes back.
    for _ in 0..3 {
        assert!(discovery.resolve(service).await.is_err());
    }

    // The server is back: the watch lists again, sees the deletion, and answers from there.
    proxy.set(Fault::Pass);
    let healed = Instant::now();
    let change = next(&mut watch).await;
    assert_eq!(addrs(&change.removed), [addr(1)], "{change:?}");
    println!(
        "[{name}] the watch was in sync again {:?} after the black hole ended",
        healed.elapsed()
    );
    proxy.set(Fault::Blackhole);
    cached(discovery, service, &[addr(2)]).await;
    proxy.set(Fault::Pass);

    // Dropping the watch ends the cache: a black hole stops resolve again.
    drop(watch);
    tests::poll::until(Duration::from_secs(5), "the watch task to end", || async {
        proxy.set(Fault::Blackhole);
        let failed = discovery.resolve(service).await.is_err();
        proxy.set(Fault::Pass);
        failed.then_some(())
    })
    .await;
}

#[cfg(feature = "etcd")]
#[tokio::test]
async fn etcd_resolve_answers_from_a_live_watch_only_while_it_is_in_sync() {
    use service_registry::etcd::{EtcdConfig, EtcdDiscovery};
    use tests::fixtures::etcd::Etcd;

    let etcd = Etcd::start().await;
    let proxy = FaultProxy::start(addr(etcd.members[0].client_port)).await;
    let discovery = EtcdDiscovery::new(
        EtcdConfig::new([format!("http://{}", proxy.endpoint())])
            .connect_timeout(Duration::from_secs(1))
            .request_timeout(Duration::from_secs(1)),
    );
    let client = etcd.client().await;
    let key = |port: u16| format!("kitex/registry-etcd/cached.svc/127.0.0.1:{port}");
    let put = |port: u16| {
        let mut client = client.clone();
        async move {
            let value = format!(
                r#"{{"network":"tcp","address":"127.0.0.1:{port}","weight":10,"tags":{{}}}}"#
            );
            client.put(key(port), value, None).await.unwrap();
        }
    };
    let delete = |port: u16| {
        let mut client = client.clone();
        async move {
            client.delete(key(port), None).await.unwrap();
        }
    };
    scenario("etcd", &discovery, &proxy, "cached.svc", put, delete).await;
}

#[cfg(feature = "zookeeper")]
#[tokio::test]
async fn zookeeper_resolve_answers_from_a_live_watch_only_while_it_is_in_sync() {
    use service_registry::zookeeper::{ZookeeperConfig, ZookeeperDiscovery};
    use tests::fixtures::zookeeper::ZooKeeper;
    use zookeeper_client::{Acls, CreateMode};

    let zk = ZooKeeper::start().await;
    let proxy = FaultProxy::start(zk.addr()).await;
    let discovery = ZookeeperDiscovery::new(
        ZookeeperConfig::new(proxy.endpoint())
            .connect_timeout(Duration::from_secs(1))
            .request_timeout(Duration::from_secs(1)),
    );
    let client = zk.client(None).await;
    let open = CreateMode::Persistent.with_acls(Acls::anyone_all());
    client.create("/cached.svc", b"", &open).await.unwrap();
    let put = |port: u16| {
        let (client, open) = (client.clone(), open.clone());
        async move {
            client
                .create(
                    &format!("/cached.svc/127.0.0.1:{port}"),
                    br#"{"Weight":10,"Tags":{}}"#,
                    &open,
                )
                .await
                .unwrap();
        }
    };
    let delete = |port: u16| {
        let client = client.clone();
        async move {
            client
                .delete(&format!("/cached.svc/127.0.0.1:{port}"), None)
                .await
                .unwrap();
        }
    };
    scenario("zookeeper", &discovery, &proxy, "cached.svc", put, delete).await;
}

#[cfg(feature = "nacos")]
#[tokio::test]
async fn nacos_resolve_answers_from_a_live_watch_only_while_it_is_in_sync() {
    use service_registry::nacos::{NacosConfig, NacosDiscovery, NacosRegistry};
    use service_registry::{Info, Registry};
    use tests::fixtures::nacos::Nacos;

    let nacos = Nacos::start().await;
    let proxy = FaultProxy::start(addr(nacos.grpc_port)).await;
    let discovery = NacosDiscovery::new(
        NacosConfig::new("127.0.0.1", nacos.http_port)
            .grpc_port(proxy.addr().port())
            .connect_timeout(Duration::from_secs(1))
            .request_timeout(Duration::from_secs(1))
            .heartbeat(Duration::from_secs(1)),
    );
    // Nacos instances live on a connection: the writer's goes to the server directly.
    let registry = NacosRegistry::new(
        NacosConfig::new("127.0.0.1", nacos.http_port).grpc_port(nacos.grpc_port),
    )
    .unwrap();
    let info = |port: u16| Info::new("cached.svc", addr(port));
    let put = |port: u16| {
        let registry = registry.clone();
        async move { registry.register(&info(port)).await.unwrap() }
    };
    let delete = |port: u16| {
        let registry = registry.clone();
        async move { registry.deregister(&info(port)).await.unwrap() }
    };
    scenario("nacos", &discovery, &proxy, "cached.svc", put, delete).await;
    registry.close().await;
}

//! `MergedDiscovery` over real etcd and ZooKeeper: a service moving from etcd to ZooKeeper reads
//! as one set of instances, and a registry that is down leaves the other serving.
#![cfg(all(feature = "etcd", feature = "zookeeper"))]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use service_registry::etcd::{EtcdConfig, EtcdDiscovery, EtcdRegistry};
use service_registry::zookeeper::{ZookeeperConfig, ZookeeperDiscovery, ZookeeperRegistry};
use service_registry::{Backoff, Change, Discovery, Info, MergedDiscovery, Registry, WatchStream};
use tests::fixtures::etcd::Etcd;
use tests::fixtures::zookeeper::ZooKeeper;
use tests::poll;
use tests::proxy::{Fault, FaultProxy};

fn etcd_config(etcd: &Etcd) -> EtcdConfig {
    EtcdConfig::new(etcd.endpoints())
        .connect_timeout(Duration::from_secs(1))
        .request_timeout(Duration::from_secs(2))
}

fn zk_config(zk: &ZooKeeper) -> ZookeeperConfig {
    ZookeeperConfig::new(zk.connect_string())
        .connect_timeout(Duration::from_secs(1))
        .request_timeout(Duration::from_secs(2))
}

fn info(service: &str, addr: &str) -> Info {
    Info::new(service, addr.parse().unwrap())
}

fn addrs(instances: &service_registry::Instances) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = instances.iter().map(|i| i.addr).collect();
    out.sort();
    out
}

/// The next change of `watch`, within 10 s.
async fn next(watch: &mut WatchStream, what: &str) -> Change {
    tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .unwrap_or_else(|_| panic!("timed out after 10 s waiting for {what}"))
        .expect("the merged watch is open")
}

/// Waits until `discovery` lists exactly `want` for `service`.
async fn lists(discovery: &impl Discovery, service: &str, want: &[&Info], what: &str) {
    let mut want: Vec<SocketAddr> = want.iter().map(|i| i.addr).collect();
    want.sort();
    poll::until(Duration::from_secs(10), what, || async {
        let found = discovery.resolve(service).await.ok()?;
        (addrs(&found) == want).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_service_moving_from_etcd_to_zookeeper_reads_as_one_set() {
    const SERVICE: &str = "merged.move";
    let (etcd, zk) = tokio::join!(Etcd::start(), ZooKeeper::start());
    let etcd_registry = EtcdRegistry::new(etcd_config(&etcd)).unwrap();
    let zk_registry = ZookeeperRegistry::new(zk_config(&zk)).unwrap();
    let etcd_discovery = EtcdDiscovery::new(etcd_config(&etcd));
    let zk_discovery = ZookeeperDiscovery::new(zk_config(&zk));
    // The registry services move to comes first: its data wins.
    let merged = MergedDiscovery::new()
        .source("zookeeper", zk_discovery.clone())
        .source("etcd", etcd_discovery.clone());

    let both = info(SERVICE, "127.0.0.1:7001");
    let zk_only = info(SERVICE, "127.0.0.1:7002");
    etcd_registry.register(&both).await.unwrap();
    zk_registry.register(&both).await.unwrap();
    zk_registry.register(&zk_only).await.unwrap();
    lists(
        &etcd_discovery,
        SERVICE,
        &[&both],
        "etcd to list one instance",
    )
    .await;
    lists(
        &zk_discovery,
        SERVICE,
        &[&both, &zk_only],
        "ZooKeeper to list two",
    )
    .await;

    let found = merged.resolve(SERVICE).await.unwrap();
    assert_eq!(addrs(&found), [both.addr, zk_only.addr]);
    // The address both list reads as ZooKeeper has it.
    let from_zk = zk_discovery.resolve(SERVICE).await.unwrap();
    let zk_both = from_zk.iter().find(|i| i.addr == both.addr).unwrap();
    assert_eq!(found.iter().find(|i| i.addr == both.addr).unwrap(), zk_both);

    // How long a fresh discovery of each takes to start a watch and read its snapshot: the
    // merged watch waits 250 ms for the others once one has started.
    let fresh: [(&str, Box<dyn Discovery>); 2] = [
        ("etcd", Box::new(EtcdDiscovery::new(etcd_config(&etcd)))),
        (
            "ZooKeeper",
            Box::new(ZookeeperDiscovery::new(zk_config(&zk))),
        ),
    ];
    for (name, discovery) in fresh {
        let started = std::time::Instant::now();
        let mut watch = discovery.watch(SERVICE).await.unwrap();
        next(&mut watch, "a snapshot").await;
        println!(
            "a fresh {name} discovery started a watch and read its snapshot in {:?}",
            started.elapsed()
        );
    }
    let started = std::time::Instant::now();
    let mut watch = merged.watch(SERVICE).await.unwrap();
    let snapshot = next(&mut watch, "the merged snapshot").await;
    println!(
        "the merged watch gave its snapshot in {:?}",
        started.elapsed()
    );
    assert_eq!(snapshot, Change::snapshot(SERVICE, found.clone()));

    // Gone from etcd, still in ZooKeeper: no change. A later etcd change shows etcd's removal
    // was seen: one source's states reach the merged watch in order, and a change it had made
    // would be part of the next one.
    etcd_registry.deregister(&both).await.unwrap();
    let marker = info(SERVICE, "127.0.0.1:7003");
    etcd_registry.register(&marker).await.unwrap();
    let change = next(&mut watch, "the marker added to etcd").await;
    assert_eq!(addrs(&change.added), [marker.addr]);
    assert!(change.updated.is_empty(), "{change:?}");
    assert!(change.removed.is_empty(), "{change:?}");
    etcd_registry.deregister(&marker).await.unwrap();
    let change = next(&mut watch, "the marker removed from etcd").await;
    assert_eq!(addrs(&change.removed), [marker.addr]);
    assert!(change.added.is_empty() && change.updated.is_empty());

    // Gone from ZooKeeper too: removed.
    zk_registry.deregister(&both).await.unwrap();
    let change = next(&mut watch, "the instance removed from ZooKeeper").await;
    assert_eq!(addrs(&change.removed), [both.addr]);
    assert!(change.added.is_empty() && change.updated.is_empty());
    assert_eq!(addrs(&change.all), [zk_only.addr]);
    assert_eq!(
        addrs(&merged.resolve(SERVICE).await.unwrap()),
        [zk_only.addr]
    );
}

#[tokio::test]
async fn a_registry_that_is_down_leaves_the_other_serving_and_joins_when_back() {
    const SERVICE: &str = "merged.down";
    let (mut etcd, mut zk) = tokio::join!(Etcd::start(), ZooKeeper::start());
    let zk_registry = ZookeeperRegistry::new(zk_config(&zk)).unwrap();
    let zk_discovery = ZookeeperDiscovery::new(zk_config(&zk));
    let merged = MergedDiscovery::new()
        .source("etcd", EtcdDiscovery::new(etcd_config(&etcd)))
        .source("zookeeper", zk_discovery.clone())
        .backoff(Backoff::new(
            Duration::from_millis(50),
            Duration::from_millis(500),
        ));
    let in_zk = info(SERVICE, "127.0.0.1:7101");
    zk_registry.register(&in_zk).await.unwrap();
    lists(
        &zk_discovery,
        SERVICE,
        &[&in_zk],
        "ZooKeeper to list the instance",
    )
    .await;

    etcd.stop();
    assert_eq!(addrs(&merged.resolve(SERVICE).await.unwrap()), [in_zk.addr]);
    let mut watch = merged.watch(SERVICE).await.unwrap();
    assert_eq!(
        addrs(&next(&mut watch, "the merged snapshot").await.all),
        [in_zk.addr]
    );

    // etcd comes back: the merged watch picks it up, and its instances join.
    etcd.restart().await;
    let etcd_registry = EtcdRegistry::new(etcd_config(&etcd)).unwrap();
    let in_etcd = info(SERVICE, "127.0.0.1:7102");
    poll::until(
        Duration::from_secs(10),
        "etcd to take the registration",
        || {
            let etcd_registry = etcd_registry.clone();
            let in_etcd = in_etcd.clone();
            async move { etcd_registry.register(&in_etcd).await.ok() }
        },
    )
    .await;
    let change = next(&mut watch, "the etcd instance to join").await;
    assert_eq!(addrs(&change.added), [in_etcd.addr]);
    assert_eq!(addrs(&change.all), [in_zk.addr, in_etcd.addr]);

    // With ZooKeeper down instead, resolve answers from etcd alone: at once if no watch were
    // live; here the merged watch's ZooKeeper watch may still be in the middle of ending, and
    // until it (or the ZooKeeper client) has noticed, `ZookeeperDiscovery::resolve` answers from
    // it, as it would have a moment before the stop (see its docs).
    drop(watch);
    zk.stop();
    poll::until(
        Duration::from_secs(5),
        "resolve to answer from etcd alone",
        || async {
            let found = addrs(&merged.resolve(SERVICE).await.unwrap());
            (found == [in_etcd.addr]).then_some(())
        },
    )
    .await;
}

/// Issue 18, defect 12: a source whose server is black-holed (it accepts connections and never
/// answers) does not hold the merged watch up: `watch` returns with the healthy source's
/// instances at once, and the slow source joins as a change once it answers.
#[tokio::test]
async fn a_black_holed_source_does_not_delay_the_watch() {
    const SERVICE: &str = "merged.blackhole";
    let (etcd, zk) = tokio::join!(Etcd::start(), ZooKeeper::start());
    let proxy = FaultProxy::start(etcd.members[0].client_addr()).await;
    let zk_registry = ZookeeperRegistry::new(zk_config(&zk)).unwrap();
    let etcd_registry = EtcdRegistry::new(etcd_config(&etcd)).unwrap();
    let in_zk = info(SERVICE, "127.0.0.1:7201");
    let in_etcd = info(SERVICE, "127.0.0.1:7202");
    zk_registry.register(&in_zk).await.unwrap();
    etcd_registry.register(&in_etcd).await.unwrap();
    let zk_discovery = ZookeeperDiscovery::new(zk_config(&zk));
    lists(
        &zk_discovery,
        SERVICE,
        &[&in_zk],
        "ZooKeeper to list the instance",
    )
    .await;

    proxy.set(Fault::Blackhole);
    // etcd's own defaults, as a user would have them: the black hole costs its connect timeout.
    let merged = MergedDiscovery::new()
        .source(
            "etcd",
            EtcdDiscovery::new(EtcdConfig::new([proxy.endpoint()])),
        )
        .source("zookeeper", zk_discovery)
        .backoff(Backoff::new(
            Duration::from_millis(50),
            Duration::from_millis(500),
        ));
    let started = std::time::Instant::now();
    let mut watch = tokio::time::timeout(Duration::from_secs(30), merged.watch(SERVICE))
        .await
        .expect("watch returns within 30 s")
        .unwrap();
    let took = started.elapsed();
    let snapshot = next(&mut watch, "the merged snapshot").await;
    println!("merged watch returned after {took:?} with one source black-holed");
    assert!(
        took < Duration::from_secs(1),
        "the merged watch waited {took:?} for the black-holed source"
    );
    assert_eq!(addrs(&snapshot.all), [in_zk.addr]);

    proxy.set(Fault::Pass);
    let change = next(&mut watch, "the etcd instance to join").await;
    assert_eq!(addrs(&change.added), [in_etcd.addr]);
    assert_eq!(addrs(&change.all), [in_zk.addr, in_etcd.addr]);
}

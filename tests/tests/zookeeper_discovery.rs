//! ZooKeeper discovery against a real server: an unreadable child affects only itself, duplicate
//! addresses read as one instance, watch tasks end with their owners, and a black-holed server
//! holds no caller longer than one connect.
#![cfg(feature = "zookeeper")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use service_registry::balance::{Balancer, Strategy};
use service_registry::zookeeper::{ZookeeperConfig, ZookeeperDiscovery};
use service_registry::Discovery;
use tests::fixtures::zookeeper::ZooKeeper;
use tests::poll;
use zookeeper_client::{Acls, CreateMode};

const DATA: &[u8] = br#"{"Weight":10,"Tags":{"idc":"hz"}}"#;

fn config(zk: &ZooKeeper) -> ZookeeperConfig {
    ZookeeperConfig::new(zk.connect_string())
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn addrs(instances: &service_registry::Instances) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = instances.iter().map(|i| i.addr).collect();
    out.sort();
    out
}

async fn next(watch: &mut service_registry::WatchStream) -> service_registry::Change {
    tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("a change within 5 s")
        .expect("the stream is open")
}

#[tokio::test]
async fn a_child_only_another_user_may_read_is_left_out() {
    let zk = ZooKeeper::start().await;
    let anyone = zk.client(None).await;
    let bob = zk.client(Some("bob:secret")).await;
    let open = CreateMode::Persistent.with_acls(Acls::anyone_all());
    let bobs_only = CreateMode::Persistent.with_acls(Acls::creator_all());
    anyone.create("/acl.svc", b"", &open).await.unwrap();
    bob.create("/acl.svc/127.0.0.1:1", DATA, &bobs_only)
        .await
        .unwrap();
    anyone
        .create("/acl.svc/127.0.0.1:2", DATA, &open)
        .await
        .unwrap();
    assert!(matches!(
        anyone.get_data("/acl.svc/127.0.0.1:1").await,
        Err(zookeeper_client::Error::NoAuth)
    ));

    let discovery = ZookeeperDiscovery::new(config(&zk));
    let found = discovery.resolve("acl.svc").await.expect("resolve");
    assert_eq!(addrs(&found), [addr("127.0.0.1:2")]);
    let mut watch = discovery.watch("acl.svc").await.expect("watch");
    assert_eq!(addrs(&next(&mut watch).await.all), [addr("127.0.0.1:2")]);

    // Another unreadable child while watching changes nothing; a readable one comes through.
    bob.create("/acl.svc/127.0.0.1:3", DATA, &bobs_only)
        .await
        .unwrap();
    anyone
        .create("/acl.svc/127.0.0.1:4", DATA, &open)
        .await
        .unwrap();
    let change = next(&mut watch).await;
    assert_eq!(addrs(&change.added), [addr("127.0.0.1:4")]);
    assert_eq!(
        addrs(&change.all),
        [addr("127.0.0.1:2"), addr("127.0.0.1:4")]
    );
}

#[tokio::test]
async fn two_nodes_for_one_address_are_one_instance() {
    let zk = ZooKeeper::start().await;
    let raw = zk.client(None).await;
    let open = CreateMode::Persistent.with_acls(Acls::anyone_all());
    raw.create("/dup.svc", b"", &open).await.unwrap();
    for name in ["127.0.0.1:80", "127.0.0.1:0080"] {
        raw.create(&format!("/dup.svc/{name}"), DATA, &open)
            .await
            .unwrap();
    }
    let discovery = ZookeeperDiscovery::new(config(&zk));
    assert_eq!(
        addrs(&discovery.resolve("dup.svc").await.unwrap()),
        [addr("127.0.0.1:80")]
    );
    let mut watch = discovery.watch("dup.svc").await.unwrap();
    assert_eq!(addrs(&next(&mut watch).await.all), [addr("127.0.0.1:80")]);

    raw.delete("/dup.svc/127.0.0.1:0080", None).await.unwrap();
    raw.create("/dup.svc/127.0.0.1:81", DATA, &open)
        .await
        .unwrap();
    let change = next(&mut watch).await;
    assert!(change.removed.is_empty(), "{change:?}");
    assert_eq!(addrs(&change.added), [addr("127.0.0.1:81")]);
    assert_eq!(
        addrs(&change.all),
        [addr("127.0.0.1:80"), addr("127.0.0.1:81")]
    );

    raw.delete("/dup.svc/127.0.0.1:80", None).await.unwrap();
    let change = next(&mut watch).await;
    assert_eq!(addrs(&change.removed), [addr("127.0.0.1:80")]);
    assert_eq!(addrs(&change.all), [addr("127.0.0.1:81")]);
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

async fn tasks_become(want: usize, what: &str) -> Duration {
    let started = Instant::now();
    poll::until(Duration::from_secs(1), what, || async {
        (alive_tasks() == want).then_some(())
    })
    .await;
    started.elapsed()
}

#[tokio::test]
async fn dropped_watches_and_balancers_end_their_tasks_within_a_second() {
    let zk = ZooKeeper::start().await;
    let discovery = ZookeeperDiscovery::new(config(&zk));
    // Connect first: the session's own tasks are not the watch's.
    discovery.resolve("quiet.svc").await.unwrap();
    let baseline = alive_tasks();

    let mut watch = discovery.watch("quiet.svc").await.unwrap();
    assert!(next(&mut watch).await.all.is_empty());
    assert!(alive_tasks() > baseline, "a watch runs a task");
    drop(watch);
    let took = tasks_become(
        baseline,
        "the watch task to end after its stream was dropped",
    )
    .await;
    println!("a dropped watch's task ended after {took:?}");

    let balancer = Balancer::builder(Strategy::SmoothRoundRobin)
        .watch(&discovery, "quiet.svc")
        .await
        .unwrap();
    assert!(alive_tasks() > baseline);
    drop(balancer);
    let took = tasks_become(baseline, "the balancer's tasks to end after it was dropped").await;
    println!("a dropped balancer's tasks ended after {took:?}");
}

#[tokio::test]
async fn concurrent_resolves_against_a_black_hole_wait_one_connect_not_eight() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let discovery = Arc::new(ZookeeperDiscovery::new(
        ZookeeperConfig::new(hole.to_string())
            .connect_timeout(Duration::from_secs(1))
            .session_timeout(Duration::from_secs(2)),
    ));
    let started = Instant::now();
    let calls = (0..8).map(|_| {
        let discovery = discovery.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let result = discovery.resolve("any.svc").await;
            (result.is_err(), started.elapsed())
        })
    });
    let results = futures_util::future::join_all(calls).await;
    let total = started.elapsed();
    let each: Vec<Duration> = results
        .into_iter()
        .map(|r| {
            let (failed, took) = r.unwrap();
            assert!(failed, "a resolve against a black hole succeeded");
            took
        })
        .collect();
    println!("8 resolves failed after {total:?} in all: {each:?}");
    assert!(
        total < Duration::from_millis(3500),
        "8 concurrent resolves took {total:?} against a black hole: callers queue behind one another"
    );
    task.abort();
}

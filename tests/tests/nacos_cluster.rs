//! Nacos as a cluster: a registry and a discovery given every node of a 3-node r-nacos cluster
//! move to another node when the one they are connected to is SIGKILLed, register everything
//! again there and re-subscribe; a watcher sees no gap and nothing is lost.
#![cfg(feature = "nacos")]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use service_registry::nacos::{NacosConfig, NacosDiscovery, NacosRegistry, NacosServer};
use service_registry::{Backoff, Discovery, Health, Info, Registry};
use tests::fixtures::nacos::{Nacos, NacosCluster};

const SERVICE: &str = "cluster.svc";
const PORTS: [u16; 5] = [7101, 7102, 7103, 7104, 7105];

/// Every node of `cluster`, starting with node `first`.
fn config(cluster: &NacosCluster, first: usize) -> NacosConfig {
    let count = cluster.nodes.len();
    let node = |i: usize| &cluster.nodes[(first + i) % count];
    let mut config = NacosConfig::new("127.0.0.1", node(0).http_port)
        .grpc_port(node(0).grpc_port)
        .heartbeat(Duration::from_secs(1))
        .request_timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_secs(1))
        .backoff(Backoff::new(
            Duration::from_millis(50),
            Duration::from_millis(500),
        ));
    for i in 1..count {
        config = config.add_server(
            NacosServer::new("127.0.0.1", node(i).http_port).grpc_port(node(i).grpc_port),
        );
    }
    config
}

/// The index in `cluster` of the node with gRPC port `server`'s.
fn index_of(cluster: &NacosCluster, server: &NacosServer) -> usize {
    let port: u16 = server
        .grpc_addr()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port");
    cluster
        .nodes
        .iter()
        .position(|n| n.grpc_port == port)
        .expect("a node of the cluster")
}

async fn listed(nacos: &Nacos) -> Vec<u16> {
    nacos.ports(SERVICE).await
}

/// Polls until every running node lists exactly `want`, or fails after `limit`.
async fn until_listed_everywhere(cluster: &NacosCluster, want: &[u16], limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let mut views = Vec::new();
        for node in cluster.nodes.iter().filter(|n| n.running()) {
            views.push(listed(node).await);
        }
        if views.iter().all(|v| v == want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the nodes did not all list {want:?} within {limit:?}: {views:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_connected_node_ten_times_loses_nothing_and_the_watcher_sees_no_gap() {
    let mut cluster = NacosCluster::start(3).await;
    let registry = NacosRegistry::new(config(&cluster, 0)).unwrap();
    for port in PORTS {
        registry
            .register(&Info::new(
                SERVICE,
                SocketAddr::from(([127, 0, 0, 1], port)),
            ))
            .await
            .unwrap();
    }
    until_listed_everywhere(&cluster, &PORTS, Duration::from_secs(10)).await;

    // The watcher starts on another node than the registry's.
    let discovery = NacosDiscovery::new(config(&cluster, 1));
    let mut watch = discovery.watch(SERVICE).await.unwrap();
    let first = watch.next().await.unwrap();
    assert_eq!(first.all.len(), PORTS.len(), "{:?}", first.all);
    let seen: Arc<Mutex<Vec<usize>>> = Arc::default();
    let record = seen.clone();
    let watcher = tokio::spawn(async move {
        while let Some(change) = watch.next().await {
            record.lock().unwrap().push(change.all.len());
        }
    });

    let mut health = registry.health().unwrap();
    let mut moved = Vec::new();
    let mut watcher_moves = 0;
    for round in 1..=10 {
        let from = index_of(&cluster, &registry.server().expect("connected"));
        let watcher_on = discovery.server().map(|s| index_of(&cluster, &s));
        let killed = Instant::now();
        cluster.nodes[from].stop();
        // The registry notices and registers everything on another node.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let on = registry.server().map(|s| index_of(&cluster, &s));
            if on != Some(from) && *health.borrow_and_update() == Health::Healthy {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: the registry did not move off node {from} within 10 s ({:?})",
                *health.borrow()
            );
            let _ = tokio::time::timeout(Duration::from_millis(20), health.changed()).await;
        }
        moved.push(killed.elapsed());
        until_listed_everywhere(&cluster, &PORTS, Duration::from_secs(10)).await;
        if watcher_on == Some(from) {
            // The watcher's node went too: its watch moves on to another node.
            let deadline = Instant::now() + Duration::from_secs(10);
            while discovery.server().map(|s| index_of(&cluster, &s)) == Some(from) {
                assert!(
                    Instant::now() < deadline,
                    "round {round}: the watch did not move off node {from}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            watcher_moves += 1;
        }
        // Back with its data: it loads the naming data from the others.
        cluster.nodes[from].restart().await;
        until_listed_everywhere(&cluster, &PORTS, Duration::from_secs(20)).await;
    }
    // The last node killed stays down past r-nacos' 15 s node timeout, when the others drop the
    // clients that node held: the instances registered again elsewhere must not go with them.
    let from = index_of(&cluster, &registry.server().expect("connected"));
    cluster.nodes[from].stop();
    let deadline = Instant::now() + Duration::from_secs(10);
    while registry.server().map(|s| index_of(&cluster, &s)) == Some(from)
        || *health.borrow_and_update() != Health::Healthy
    {
        assert!(
            Instant::now() < deadline,
            "the registry did not move off node {from}"
        );
        let _ = tokio::time::timeout(Duration::from_millis(20), health.changed()).await;
    }
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        until_listed_everywhere(&cluster, &PORTS, Duration::from_secs(2)).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let gaps: Vec<usize> = seen
        .lock()
        .unwrap()
        .iter()
        .copied()
        .filter(|n| *n != PORTS.len())
        .collect();
    let slowest = moved.iter().max().copied().unwrap_or_default();
    println!("10 kills of the connected node: registry moved within {slowest:?} at most ({moved:?}); watcher states {:?}", seen.lock().unwrap());
    assert!(gaps.is_empty(), "the watcher saw a gap: {gaps:?}");
    assert!(
        watcher_moves > 0,
        "the watcher's node was never the one killed"
    );
    println!("the watcher's node went with the registry's {watcher_moves} times");
    // Still a live registration: a deregistration reaches every node.
    registry
        .deregister(&Info::new(
            SERVICE,
            SocketAddr::from(([127, 0, 0, 1], PORTS[0])),
        ))
        .await
        .unwrap();
    until_listed_everywhere(&cluster, &PORTS[1..], Duration::from_secs(10)).await;
    watcher.abort();
    registry.close().await;
}

//! Faults a fault review reproduced against the ZooKeeper backend, each against a real ZooKeeper
//! started by the fixture, through the loopback fault proxy where the fault is in the network.
#![cfg(feature = "zookeeper")]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use service_registry::zookeeper::{ZookeeperConfig, ZookeeperRegistry};
use service_registry::{service, Backoff, Info, Registry, ServiceStatus};
use tests::fixtures::zookeeper::ZooKeeper;
use tests::poll;
use tests::proxy::{Fault, FaultProxy};
use tests::running::Running;

#[service(name = "zkf.echo")]
pub struct ZkfEcho;

#[service(name = "zkf.other")]
pub struct ZkfOther;

const OURS: [&str; 2] = ["zkf.echo", "zkf.other"];

fn info(service: &str, port: u16) -> Info {
    Info::new(service, SocketAddr::from(([127, 0, 0, 1], port)))
}

fn config(connect: String) -> ZookeeperConfig {
    ZookeeperConfig::new(connect)
        .session_timeout(Duration::from_secs(4))
        .backoff(Backoff::new(
            Duration::from_millis(50),
            Duration::from_millis(500),
        ))
}

async fn exists(zk: &ZooKeeper, path: &str) -> bool {
    let raw = zk.client(None).await;
    raw.check_stat(path).await.unwrap().is_some()
}

/// Defect 5: a delete that failed during a short disconnection must be retried: the session
/// survives the disconnection, so nothing else would ever remove the node.
#[tokio::test]
async fn a_delete_that_failed_while_disconnected_is_retried() {
    let zk = ZooKeeper::start().await;
    let proxy = FaultProxy::start(zk.addr()).await;
    let registry = ZookeeperRegistry::new(
        config(proxy.endpoint())
            .session_timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(1))
            .request_timeout(Duration::from_secs(1)),
    )
    .unwrap();
    let gone = info("zkf.delete", 7801);
    registry.register(&gone).await.unwrap();
    let path = format!("/zkf.delete/{}", gone.addr);
    assert!(exists(&zk, &path).await);

    proxy.set(Fault::Blackhole);
    let result = registry.deregister(&gone).await;
    println!("deregister while black-holed: {result:?}");
    proxy.set(Fault::Pass);
    proxy.cut();
    // The session (10 s) outlives all of this: only a retried delete removes the node.
    let started = Instant::now();
    poll::until(
        Duration::from_secs(5),
        "the node deleted after the reconnect",
        || async { (!exists(&zk, &path).await).then_some(()) },
    )
    .await;
    println!("node gone {:?} after the link came back", started.elapsed());
    registry.close().await;
}

/// Defect 11: a parent deleted from outside (after its last child left) must be created again,
/// not fail every later registration with `NoNode`.
#[tokio::test]
async fn a_parent_deleted_from_outside_is_created_again() {
    let zk = ZooKeeper::start().await;
    let registry = ZookeeperRegistry::new(config(zk.connect_string())).unwrap();
    let one = info("zkf.parent", 7811);
    registry.register(&one).await.unwrap();
    registry.deregister(&one).await.unwrap();
    let raw = zk.client(None).await;
    raw.delete("/zkf.parent", None).await.unwrap();
    registry
        .register(&one)
        .await
        .expect("registration after the parent was deleted");
    assert!(exists(&zk, &format!("/zkf.parent/{}", one.addr)).await);
    registry.close().await;
}

/// Defect 12: two teams with their own digest users share a root; the second must be able to
/// register its own service there (only leaf nodes are protected).
#[tokio::test]
async fn another_digest_user_can_register_under_a_shared_root() {
    let zk = ZooKeeper::start().await;
    let alice = ZookeeperRegistry::new(
        config(zk.connect_string())
            .root("/kitex")
            .digest_auth("team-a", "a"),
    )
    .unwrap();
    let bob = ZookeeperRegistry::new(
        config(zk.connect_string())
            .root("/kitex")
            .digest_auth("team-b", "b"),
    )
    .unwrap();
    alice.register(&info("zkf.a", 7821)).await.unwrap();
    bob.register(&info("zkf.b", 7822))
        .await
        .expect("team-b registers its own service under the shared root");
    // Team b still cannot remove team a's node.
    let raw = zk.client(Some("team-b:b")).await;
    assert!(raw
        .delete("/kitex/zkf.a/127.0.0.1:7821", None)
        .await
        .is_err());
    alice.close().await;
    bob.close().await;
}

/// Defect 19: shutting down while ZooKeeper is down is bounded: deregistration is accepted at once
/// (the node goes once reconnected, or with the session) and close returns at once.
#[tokio::test]
async fn shutdown_while_zookeeper_is_down_is_quick() {
    let mut zk = ZooKeeper::start().await;
    let registry = ZookeeperRegistry::new(config(zk.connect_string())).unwrap();
    let running = Running::start(registry.clone(), &OURS).await;
    running.registered(Duration::from_secs(10)).await;
    zk.stop();
    let mut health = registry.health().unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        health.wait_for(|h| *h != service_registry::Health::Healthy),
    )
    .await
    .expect("the outage is noticed")
    .unwrap();
    let started = Instant::now();
    running.stop().await;
    registry.close().await;
    let took = started.elapsed();
    println!("shutdown with ZooKeeper down took {took:?}");
    assert!(took < Duration::from_millis(1500), "shutdown took {took:?}");
}

/// Defect 17: a service started during an outage is registered within a second of ZooKeeper
/// answering, not after the rest of the registrar's backoff.
#[tokio::test]
async fn a_service_started_during_an_outage_registers_within_a_second() {
    let mut zk = ZooKeeper::start().await;
    zk.stop();
    let registry = ZookeeperRegistry::new(config(zk.connect_string())).unwrap();
    let running = Running::start(registry.clone(), &OURS).await;
    running.retrying(Duration::from_secs(10)).await;
    // Long enough for the registrar's own backoff to grow past several seconds.
    tokio::time::sleep(Duration::from_secs(8)).await;
    zk.restart().await;
    let answering = Instant::now();
    let done = running
        .status
        .wait_for(|s| s.values().all(|s| *s == ServiceStatus::Registered));
    tokio::time::timeout(Duration::from_secs(15), done)
        .await
        .expect("registered after ZooKeeper came back");
    let took = answering.elapsed();
    println!("registered {took:?} after ZooKeeper answered");
    assert!(
        took <= Duration::from_secs(1),
        "registered only after {took:?}"
    );
    running.stop().await;
    registry.close().await;
}

/// Defect 20: a node of ours deleted or overwritten by someone else while our session lives is
/// restored within a second; a deregistered node stays gone.
#[tokio::test]
async fn nodes_deleted_or_overwritten_by_others_are_restored() {
    let zk = ZooKeeper::start().await;
    let registry = ZookeeperRegistry::new(config(zk.connect_string())).unwrap();
    let ours = info("zkf.entropy", 7951);
    let gone = info("zkf.entropy", 7952);
    registry.register(&ours).await.unwrap();
    registry.register(&gone).await.unwrap();
    registry.deregister(&gone).await.unwrap();
    let path = format!("/zkf.entropy/{}", ours.addr);
    let raw = zk.client(None).await;
    let (original, _) = raw.get_data(&path).await.unwrap();
    let session = registry.session().unwrap().id().0;

    raw.delete(&path, None).await.unwrap();
    let deleted = Instant::now();
    poll::until(
        Duration::from_secs(1),
        "the deleted node restored within 1 s",
        || async {
            let (_, stat) = raw.get_data(&path).await.ok()?;
            (stat.ephemeral_owner == session).then_some(())
        },
    )
    .await;
    println!("deleted node restored after {:?}", deleted.elapsed());

    raw.set_data(&path, b"garbage", None).await.unwrap();
    let overwritten = Instant::now();
    poll::until(
        Duration::from_secs(1),
        "the overwritten node restored within 1 s",
        || async {
            let (data, _) = raw.get_data(&path).await.ok()?;
            (data == original).then_some(())
        },
    )
    .await;
    println!(
        "overwritten node restored after {:?}",
        overwritten.elapsed()
    );
    assert!(!exists(&zk, &format!("/zkf.entropy/{}", gone.addr)).await);
    registry.close().await;
}

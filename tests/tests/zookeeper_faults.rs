//! Faults a fault review reproduced against the ZooKeeper backend, each against a real ZooKeeper
//! started by the fixture, through the loopback fault proxy where the fault is in the network.
#![cfg(feature = "zookeeper")]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use service_registry::zookeeper::{ZookeeperConfig, ZookeeperDiscovery, ZookeeperRegistry};
use service_registry::{service, Backoff, Discovery, Health, Info, Registry};
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
            .user("team-a", "a"),
    )
    .unwrap();
    let bob = ZookeeperRegistry::new(
        config(zk.connect_string())
            .root("/kitex")
            .user("team-b", "b"),
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

/// RELIABILITY.md finding 3: watching the directories of many new services for anti-entropy
/// must not hold up the session task: one more registration right after thousands answers at
/// once, not after one `AddWatch` round trip per directory.
#[tokio::test]
async fn a_registration_after_thousands_is_not_held_up_by_watching_their_directories() {
    const SERVICES: usize = 3_000;
    let zk = ZooKeeper::start().await;
    let registry = ZookeeperRegistry::new(config(zk.connect_string())).unwrap();
    let infos: Vec<Info> = (0..SERVICES)
        .map(|i| info(&format!("zkf.many{i}"), 7000))
        .collect();
    let started = Instant::now();
    let results = futures_util::future::join_all(infos.iter().map(|i| registry.register(i))).await;
    assert!(
        results.iter().all(Result::is_ok),
        "every registration answered Ok"
    );
    println!(
        "{SERVICES} registrations returned after {:?}",
        started.elapsed()
    );

    let one_more = Instant::now();
    registry
        .register(&info("zkf.onemore", 7001))
        .await
        .expect("one more registration");
    let took = one_more.elapsed();
    println!("one more register call took {took:?}");
    assert!(
        took <= Duration::from_millis(500),
        "one more register call took {took:?}: the session task was busy"
    );
    registry.close().await;
}

/// A node of ours deleted by someone else before the watch over its directory is in place (the
/// watches of thousands of new directories take a moment) is restored too: once a directory's
/// watch is in place, the guard lists it and the session puts back what is missing. Before that,
/// such a deletion went unnoticed for the rest of the session.
#[tokio::test]
async fn a_node_deleted_before_its_directory_is_watched_is_restored() {
    const SERVICES: usize = 2_000;
    const DELETED: usize = 20;
    let zk = ZooKeeper::start().await;
    let registry = ZookeeperRegistry::new(config(zk.connect_string())).unwrap();
    let raw = zk.client(None).await;
    let infos: Vec<Info> = (0..SERVICES)
        .map(|i| info(&format!("zkf.early{i}"), 7100))
        .collect();
    let results = futures_util::future::join_all(infos.iter().map(|i| registry.register(i))).await;
    assert!(
        results.iter().all(Result::is_ok),
        "every registration answered Ok"
    );
    // At once, while most of the new directories' watches are still being added: the last
    // services registered are the last to be watched.
    let paths: Vec<String> = infos[SERVICES - DELETED..]
        .iter()
        .map(|i| format!("/{}/{}", i.service_name, i.addr))
        .collect();
    let deleted = Instant::now();
    for result in futures_util::future::join_all(paths.iter().map(|p| raw.delete(p, None))).await {
        result.unwrap();
    }
    let session = registry.session().unwrap().id().0;
    let took = poll::until(
        Duration::from_secs(5),
        "every node deleted before its directory was watched restored",
        || async {
            for path in &paths {
                let (_, stat) = raw.get_data(path).await.ok()?;
                if stat.ephemeral_owner != session {
                    return None;
                }
            }
            Some(deleted.elapsed())
        },
    )
    .await;
    println!("{DELETED} nodes deleted early restored after {took:?}");
    registry.close().await;
}

/// Defect 13: a session that ends between being established and the session task watching its
/// state must not leave the registry reporting `Healthy` on a dead client (the task used to
/// subscribe to state changes only after establishing, and a terminal state that came first was
/// never delivered).
///
/// That window had no await in it, so the test holds the session task there: a borrow of the
/// health value holds tokio's watch read lock, and the task's `send(Healthy)` right after
/// establishing blocks on it (before the fix: the session already set, its state not yet
/// watched). Meanwhile the link is cut past the session's expiry, so the client ends the session;
/// then the task is let go. Multi-threaded, so that the client's own task runs while one worker
/// is held. The hold covers a reconnect with a node to create, not the first connect: there the
/// client's task, just spawned on the worker about to be held, may not have run yet (tokio's
/// LIFO slot cannot be stolen by the other worker). Fails on b2fae10: `Healthy`, the dead session, no node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_ends_right_after_it_is_established_is_noticed() {
    const SESSION: Duration = Duration::from_secs(1);
    let zk = ZooKeeper::start().await;
    let proxy = FaultProxy::start(zk.addr()).await;
    // No session can be opened yet, so the task waits between attempts. (Before issue 21 the
    // test got here by letting a first session lapse; a session is no longer given up on the
    // client's side, and with the link refused the server cannot say it is gone.)
    proxy.set(Fault::Refuse);
    let registry = ZookeeperRegistry::new(
        config(proxy.endpoint())
            .session_timeout(SESSION)
            // Time enough, between attempts, to hold the task before the next one succeeds.
            .backoff(Backoff::new(Duration::from_secs(1), Duration::from_secs(1))),
    )
    .unwrap();
    let ours = info("zkf.held", 7961);
    // Answered with the outage; kept, and created by the first session.
    let _ = registry.register(&ours).await;
    let path = format!("/zkf.held/{}", ours.addr);
    let mut health = registry.health().unwrap();
    let held = tokio::time::timeout(
        Duration::from_secs(15),
        health.wait_for(|h| matches!(h, Health::Recovering { attempt, .. } if *attempt >= 1)),
    )
    .await
    .expect("the outage is noticed")
    .unwrap();
    // Held from here: the next attempt connects, creates our node, and stops at `send(Healthy)`.
    proxy.set(Fault::Pass);
    let second = poll::until(Duration::from_secs(10), "a session established", || async {
        registry.session().map(|s| s.id())
    })
    .await;
    // End it while the task is held: no link past 1.4 × the session timeout, when the client
    // gives the session up, and the server has expired it (a deliberate outage length).
    proxy.set(Fault::Refuse);
    proxy.cut();
    tokio::time::sleep(SESSION * 14 / 10 + Duration::from_secs(1)).await;
    proxy.set(Fault::Pass);
    drop(held);

    let raw = zk.client(None).await;
    let third = poll::until(
        Duration::from_secs(10),
        "the ended session noticed and our node back in a new one",
        || async {
            let id = registry.session()?.id();
            let (_, stat) = raw.get_data(&path).await.ok()?;
            (id != second && stat.ephemeral_owner == id.0).then_some(id)
        },
    )
    .await;
    println!("sessions: {second} (ended while held), then {third}");
    let mut health = registry.health().unwrap();
    tokio::time::timeout(
        Duration::from_secs(5),
        health.wait_for(|h| *h == Health::Healthy),
    )
    .await
    .expect("healthy again")
    .unwrap();
    registry.close().await;
}

/// The session of `registry` once it is healthy again, or `None` while it is not.
fn healthy_session(registry: &ZookeeperRegistry) -> Option<i64> {
    let healthy = registry
        .health()
        .is_some_and(|h| *h.borrow() == Health::Healthy);
    healthy.then(|| registry.session().map(|s| s.id().0))?
}

/// `(czxid, ephemeral owner)` of each path: a node deleted and created again, or taken over by
/// another session, shows a different pair.
async fn identities(raw: &zookeeper_client::Client, paths: &[String]) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    for path in paths {
        let stat = raw.check_stat(path).await.unwrap();
        let stat = stat.unwrap_or_else(|| panic!("{path} exists"));
        out.push((stat.czxid, stat.ephemeral_owner));
    }
    out
}

/// Issue 21: after a restart that kept its data, ZooKeeper still holds our session; the registry
/// must be attached to it again within 1 s of ZooKeeper answering (the goal etcd meets), not
/// whenever the client library's own reconnect backoff next tries: 100 ms doubling without a
/// cap, tries about 0.1, 0.3, 0.7, 1.5, 3.1, 6.3 and 12.7 s after the disconnection, so a server
/// that answers 3.5–6 s after it went away (2–3 s down plus its start) waits until 6.3 s. A 10 s
/// session, so that the client's own 1.4 × timeout plays no part here. The same session, the
/// same nodes (same czxid), and a watcher that sees no change.
#[tokio::test]
async fn a_kept_data_restart_reattaches_within_a_second_of_zookeeper_answering() {
    let mut zk = ZooKeeper::start().await;
    let registry = ZookeeperRegistry::new(
        config(zk.connect_string()).session_timeout(Duration::from_secs(10)),
    )
    .unwrap();
    let running = Running::start(registry.clone(), &OURS).await;
    running.registered(Duration::from_secs(10)).await;
    let paths: Vec<String> = OURS
        .iter()
        .map(|s| format!("/{s}/{}", running.addr))
        .collect();
    let session = poll::until(Duration::from_secs(10), "a session", || async {
        healthy_session(&registry)
    })
    .await;
    let before = identities(&zk.client(None).await, &paths).await;
    let discovery = ZookeeperDiscovery::new(config(zk.connect_string()));
    let mut changes = discovery.watch(OURS[0]).await.unwrap();
    let first = changes.next().await.expect("the first snapshot");
    assert_eq!(first.all.len(), 1, "{first:?}");

    let mut times = Vec::new();
    // Deliberate outage lengths (the fault), well inside the session timeout.
    for down in [2000, 3000] {
        let killed = Instant::now();
        zk.stop();
        tokio::time::sleep(Duration::from_millis(down)).await;
        zk.restart().await;
        let answering = Instant::now();
        println!(
            "down {down} ms: ZooKeeper answered {:?} after it was killed",
            killed.elapsed()
        );
        let back = poll::until(
            Duration::from_secs(15),
            "the registry healthy again after ZooKeeper came back with its data",
            || async { healthy_session(&registry).map(|s| (s, answering.elapsed())) },
        )
        .await;
        println!(
            "down {down} ms: healthy {:?} after ZooKeeper answered (session {:#x} -> {:#x})",
            back.1, session, back.0
        );
        times.push((down, back.0 == session, back.1));
    }
    let after = identities(&zk.client(None).await, &paths).await;
    // Anything the watcher reports now is a change it should not have seen.
    let seen = tokio::time::timeout(Duration::from_millis(500), changes.next()).await;
    running.stop().await;
    registry.close().await;
    assert_eq!(
        before, after,
        "nodes deleted and created again, or taken over"
    );
    assert!(seen.is_err(), "the watcher saw a change: {seen:?}");
    assert!(
        times
            .iter()
            .all(|(_, same, took)| *same && *took <= Duration::from_secs(1)),
        "(down ms, same session, healthy after ZooKeeper answered): {times:?}"
    );
}

/// Issue 21: a disconnection longer than the session timeout is not an expiry on the client's
/// side; only the server's answer ends a session. ZooKeeper killed with its data kept and
/// restarted 0.8 × the session timeout later (plus the time it takes to start) restores our
/// session with a fresh timeout: the same session must come back within 1 s of ZooKeeper
/// answering, no node deleted or created again, and a watcher sees no change.
#[tokio::test]
async fn a_kept_data_restart_after_most_of_the_session_timeout_keeps_the_session() {
    const SESSION: Duration = Duration::from_secs(4);
    let mut zk = ZooKeeper::start().await;
    let registry =
        ZookeeperRegistry::new(config(zk.connect_string()).session_timeout(SESSION)).unwrap();
    let running = Running::start(registry.clone(), &OURS).await;
    running.registered(Duration::from_secs(10)).await;
    let paths: Vec<String> = OURS
        .iter()
        .map(|s| format!("/{s}/{}", running.addr))
        .collect();
    let session = poll::until(Duration::from_secs(10), "a session", || async {
        healthy_session(&registry)
    })
    .await;
    let before = identities(&zk.client(None).await, &paths).await;
    let discovery = ZookeeperDiscovery::new(config(zk.connect_string()));
    let mut changes = discovery.watch(OURS[0]).await.unwrap();
    let first = changes.next().await.expect("the first snapshot");
    assert_eq!(first.all.len(), 1, "{first:?}");

    let killed = Instant::now();
    zk.stop();
    tokio::time::sleep(SESSION * 8 / 10).await;
    zk.restart().await;
    let answering = Instant::now();
    println!(
        "ZooKeeper answered {:?} after it was killed",
        killed.elapsed()
    );
    let back = poll::within(
        Duration::from_secs(15),
        Duration::from_millis(10),
        || async { healthy_session(&registry).map(|s| (s, answering.elapsed())) },
    )
    .await;
    println!("healthy again: {back:?} after ZooKeeper answered (session was {session:#x})");
    let after = identities(&zk.client(None).await, &paths).await;
    // Past the point where the server would have expired a session nobody reattached.
    let seen = tokio::time::timeout(SESSION + Duration::from_secs(1), changes.next()).await;
    let last = identities(&zk.client(None).await, &paths).await;
    running.stop().await;
    registry.close().await;
    let (same, took) = back.expect("healthy again within 15 s");
    assert_eq!(same, session, "the session was given up");
    assert_eq!(
        before, after,
        "nodes deleted and created again, or taken over"
    );
    assert_eq!(
        before, last,
        "nodes deleted and created again, or taken over"
    );
    assert!(seen.is_err(), "the watcher saw a change: {seen:?}");
    assert!(
        took <= Duration::from_secs(1),
        "healthy only {took:?} after ZooKeeper answered"
    );
}

/// Issue 18, defect 7: a live update the server cannot take (a tag that makes the node larger
/// than ZooKeeper's `jute.maxbuffer`, 1 MiB by default: the server drops the connection of a
/// client that sends it) is refused with an error naming the size; the value registered before
/// stays registered (and is still restored if someone deletes it), and the session is not
/// disturbed. What every backend does with a refused update (the old value served, written
/// again after an outage, later updates applied) is the conformance suite's
/// `refused_update_keeps_the_last_accepted_value`; this test keeps what only ZooKeeper shows.
#[tokio::test]
async fn an_update_too_large_for_zookeeper_keeps_the_value_registered_before() {
    let zk = ZooKeeper::start().await;
    let registry = ZookeeperRegistry::new(config(zk.connect_string())).unwrap();
    let mut ours = info("zkf.large", 7981);
    ours.tags.insert("idc".into(), "hz".into());
    registry.register(&ours).await.unwrap();
    let path = format!("/zkf.large/{}", ours.addr);
    let raw = zk.client(None).await;
    let (accepted, _) = raw.get_data(&path).await.unwrap();
    let session = registry.session().unwrap().id();

    let mut larger = ours.clone();
    larger
        .tags
        .insert("blob".into(), "x".repeat(2 * 1024 * 1024));
    let refused = tokio::time::timeout(Duration::from_secs(10), registry.register(&larger))
        .await
        .expect("the update answers");
    println!("the too-large update: {refused:?}");
    let err = refused.expect_err("an update too large for ZooKeeper is refused");
    assert!(
        !matches!(err, service_registry::RegistryError::Unavailable { .. }),
        "a refusal, not an outage: {err}"
    );
    assert!(err.to_string().contains("jute.maxbuffer"), "{err}");
    // Nothing happened to the session: connected all along, same session, old value in place.
    assert_eq!(*registry.health().unwrap().borrow(), Health::Healthy);
    assert_eq!(registry.session().unwrap().id(), session);
    assert_eq!(raw.get_data(&path).await.unwrap().0, accepted);

    // Still ours: deleted from outside, it comes back with the value registered before.
    raw.delete(&path, None).await.unwrap();
    let back = poll::until(
        Duration::from_secs(2),
        "the node restored after it was deleted from outside",
        || async { raw.get_data(&path).await.ok().map(|(data, _)| data) },
    )
    .await;
    assert_eq!(back, accepted);
    registry.close().await;
}

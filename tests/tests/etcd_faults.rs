//! Faults a fault review reproduced against the etcd backend, each against a real etcd started by
//! the fixture (with shrunken limits where the fault needs them) and, where the fault is in the
//! network, through the loopback fault proxy.
#![cfg(feature = "etcd")]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use futures_util::future::join_all;
use service_registry::etcd::{EtcdConfig, EtcdRegistry};
use service_registry::{Backoff, Info, Registry};
use tests::fixtures::etcd::{Etcd, EtcdOptions};
use tests::poll;
use tests::proxy::{Fault, FaultProxy};

const PREFIX: &str = "kitex/registry-etcd";

fn info(service: &str, port: u16) -> Info {
    Info::new(service, SocketAddr::from(([127, 0, 0, 1], port)))
}

fn key(info: &Info) -> String {
    format!("{PREFIX}/{}/{}", info.service_name, info.addr)
}

async fn start(extra_args: &[&str]) -> Etcd {
    Etcd::start_with(EtcdOptions {
        members: 1,
        extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    })
    .await
}

fn config(endpoints: Vec<String>) -> EtcdConfig {
    EtcdConfig::new(endpoints)
        .lease_ttl(Duration::from_secs(3))
        .backoff(Backoff::new(
            Duration::from_millis(50),
            Duration::from_millis(500),
        ))
}

/// The keys under the prefix, through a raw client (with `user` when auth is on).
async fn keys(etcd: &Etcd, user: Option<(&str, &str)>) -> BTreeSet<String> {
    let mut options = etcd.connect_options();
    if let Some((user, password)) = user {
        options = options.with_user(user, password);
    }
    let mut client = Client::connect(etcd.endpoints(), Some(options))
        .await
        .expect("raw client connects");
    let response = client
        .get(
            PREFIX,
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await
        .expect("raw read");
    response
        .kvs()
        .iter()
        .map(|kv| kv.key_str().unwrap().to_string())
        .collect()
}

/// Defect 1: etcd's simple auth tokens expire (300 s by default, 2 s here); the registry must
/// authenticate again instead of failing every later call as a credentials error.
#[tokio::test]
async fn expired_auth_tokens_are_renewed() {
    let etcd = start(&["--auth-token-ttl=2"]).await;
    etcd.enable_auth("secret").await;
    let registry = EtcdRegistry::new(config(etcd.endpoints()).user("root", "secret")).unwrap();
    let first = info("auth.first", 7001);
    registry.register(&first).await.unwrap();
    // Idle past the token's TTL (this is the scenario, not a wait for a condition).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let second = info("auth.second", 7002);
    registry
        .register(&second)
        .await
        .expect("register after the token expired");
    registry
        .deregister(&first)
        .await
        .expect("deregister after the token expired");
    let stored = keys(&etcd, Some(("root", "secret"))).await;
    assert_eq!(stored, BTreeSet::from([key(&second)]));
    registry.close().await;
}

/// Defect 3: an operator lowered `--max-txn-ops` below our batch size. Registrations, the
/// re-registration after etcd lost its data, and deregistrations must all still go through.
#[tokio::test]
async fn a_lowered_max_txn_ops_is_learned() {
    let mut etcd = start(&["--max-txn-ops=4"]).await;
    let registry = EtcdRegistry::new(config(etcd.endpoints())).unwrap();
    let infos: Vec<Info> = (0..10).map(|i| info("txn.ops", 7100 + i)).collect();
    let results = join_all(infos.iter().map(|i| registry.register(i))).await;
    for result in &results {
        assert!(result.is_ok(), "registration failed: {result:?}");
    }
    let expected: BTreeSet<String> = infos.iter().map(key).collect();
    assert_eq!(keys(&etcd, None).await, expected);

    // etcd comes back without its data: every key must be written again, in small txns.
    etcd.stop();
    etcd.wipe();
    etcd.restart().await;
    poll::until(
        Duration::from_secs(5),
        "every key back after etcd lost its data",
        || async { (keys(&etcd, None).await == expected).then_some(()) },
    )
    .await;
    registry.close().await;
}

/// Defect 5: a delete that failed (here: etcd refused the transaction as too large) must not be
/// forgotten while the key stays on our live lease.
#[tokio::test]
async fn failed_deletes_are_retried_until_the_key_is_gone() {
    let etcd = start(&["--max-txn-ops=4"]).await;
    // One registration at a time, so the writes fit; the deregistrations then come at once.
    let registry = EtcdRegistry::new(config(etcd.endpoints())).unwrap();
    let infos: Vec<Info> = (0..10).map(|i| info("txn.delete", 7200 + i)).collect();
    for i in &infos {
        registry.register(i).await.unwrap();
    }
    let _ = join_all(infos.iter().map(|i| registry.deregister(i))).await;
    poll::until(
        Duration::from_secs(5),
        "every deregistered key gone (the lease is alive, so only deletes remove them)",
        || async { keys(&etcd, None).await.is_empty().then_some(()) },
    )
    .await;
    registry.close().await;
}

/// Defect 14: one operation etcd refuses (a value over `--max-request-bytes`) must fail alone,
/// not take the registrations batched with it down too.
#[tokio::test]
async fn one_bad_operation_fails_alone() {
    let etcd = start(&["--max-request-bytes=65536"]).await;
    let registry = EtcdRegistry::new(config(etcd.endpoints())).unwrap();
    let mut infos: Vec<Info> = (0..8).map(|i| info("bad.op", 7300 + i)).collect();
    infos[3].tags.insert("blob".into(), "x".repeat(100_000));
    let results = join_all(infos.iter().map(|i| registry.register(i))).await;
    for (i, result) in results.iter().enumerate() {
        if i == 3 {
            assert!(result.is_err(), "the oversized value must be refused");
        } else {
            assert!(result.is_ok(), "registration {i} failed: {result:?}");
        }
    }
    let expected: BTreeSet<String> = infos
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3)
        .map(|(_, i)| key(i))
        .collect();
    assert_eq!(keys(&etcd, None).await, expected);
    registry.close().await;
}

/// Defect 2: keep-alives must not wait behind writes. A slow link (150 ms each way) and small
/// transactions make writing 60 keys take longer than the 2 s lease: the lease must survive.
#[tokio::test]
async fn keep_alive_does_not_wait_behind_writes() {
    let etcd = start(&[]).await;
    let proxy = FaultProxy::start(etcd_addr(&etcd)).await;
    proxy.set_latency(Duration::from_millis(150));
    let registry = EtcdRegistry::new(
        EtcdConfig::new([format!("http://{}", proxy.endpoint())])
            .lease_ttl(Duration::from_secs(2))
            .max_batch_ops(4)
            .request_timeout(Duration::from_secs(10)),
    )
    .unwrap();
    let infos: Vec<Info> = (0..60).map(|i| info("slow.link", 7500 + i)).collect();
    let started = Instant::now();
    let results = tokio::time::timeout(
        Duration::from_secs(30),
        join_all(infos.iter().map(|i| registry.register(i))),
    )
    .await
    .expect("registrations answered within 30 s");
    println!(
        "60 registrations over a 300 ms RTT link took {:?}",
        started.elapsed()
    );
    for result in &results {
        assert!(result.is_ok(), "registration failed: {result:?}");
    }
    let expected: BTreeSet<String> = infos.iter().map(key).collect();
    // Keys still there a full lease TTL and more later: the lease was kept alive throughout.
    let hold = Instant::now() + Duration::from_secs(4);
    while Instant::now() < hold {
        assert_eq!(keys(&etcd, None).await, expected, "a key disappeared");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    registry.close().await;
}

/// Defect 4: a deregistration that arrives while the connection is being rebuilt is applied
/// before anything is written again: the key must never come back.
#[tokio::test]
async fn a_deregistration_queued_during_reconnect_never_comes_back() {
    let etcd = start(&[]).await;
    let proxy = FaultProxy::start(etcd_addr(&etcd)).await;
    let registry = EtcdRegistry::new(config(vec![format!("http://{}", proxy.endpoint())])).unwrap();
    let gone = info("queued.delete", 7601);
    let kept = info("queued.delete", 7602);
    registry.register(&gone).await.unwrap();
    registry.register(&kept).await.unwrap();

    // Every write to the deregistered key from now on shows up on this raw watch.
    let mut raw = etcd.client().await;
    let mut events = raw
        .watch(key(&gone), Some(WatchOptions::new()))
        .await
        .unwrap();

    // A very slow link makes the reconnect take seconds; cut the connection to force it, and
    // deregister once the registry knows it lost the connection (so while it reconnects).
    let mut health = service_registry::Registry::health(&registry).unwrap();
    proxy.set_latency(Duration::from_millis(700));
    proxy.cut();
    tokio::time::timeout(
        Duration::from_secs(5),
        health.wait_for(|h| *h != service_registry::Health::Healthy),
    )
    .await
    .expect("the registry noticed the cut")
    .unwrap();
    let deregistered = registry.deregister(&gone).await;
    println!("deregister during the reconnect: {deregistered:?}");
    proxy.set_latency(Duration::ZERO);
    poll::until(
        Duration::from_secs(20),
        "the kept key back on a live lease",
        || async { keys(&etcd, None).await.contains(&key(&kept)).then_some(()) },
    )
    .await;
    // Give any late write a chance to show, then check that none was a put.
    let quiet = Instant::now() + Duration::from_secs(2);
    while Instant::now() < quiet {
        if let Ok(Ok(Some(response))) =
            tokio::time::timeout(Duration::from_millis(100), events.message()).await
        {
            for event in response.events() {
                assert_ne!(
                    event.event_type(),
                    EventType::Put,
                    "the deregistered key was written again"
                );
            }
        }
    }
    assert!(!keys(&etcd, None).await.contains(&key(&gone)));
    registry.close().await;
}

/// Defect 10: `close()` has one deadline, whatever the registry does.
#[tokio::test]
async fn close_is_bounded_when_etcd_hangs() {
    let etcd = start(&[]).await;
    let proxy = FaultProxy::start(etcd_addr(&etcd)).await;
    let registry = EtcdRegistry::new(config(vec![format!("http://{}", proxy.endpoint())])).unwrap();
    for i in 0..3 {
        registry
            .register(&info("close.hang", 7700 + i))
            .await
            .unwrap();
    }
    proxy.set(Fault::Blackhole);
    let started = Instant::now();
    registry.close().await;
    let took = started.elapsed();
    println!("close with a black-holed etcd took {took:?}");
    assert!(took < Duration::from_secs(4), "close took {took:?}");
}

fn etcd_addr(etcd: &Etcd) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], etcd.members[0].client_port))
}

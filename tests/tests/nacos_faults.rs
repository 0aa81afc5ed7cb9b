//! The Nacos backend when the connection breaks: cut (reset) and black-holed by a fault proxy
//! between the registry and a real Nacos (rnacos).
#![cfg(feature = "nacos")]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use service_registry::nacos::{NacosConfig, NacosRegistry};
use service_registry::{Backoff, Health, Info, Registry};
use tests::fixtures::nacos::Nacos;
use tests::proxy::{Fault, FaultProxy};

fn config(nacos: &Nacos, proxy: &FaultProxy) -> NacosConfig {
    NacosConfig::new("127.0.0.1", nacos.http_port)
        .grpc_port(proxy.addr().port())
        .heartbeat(Duration::from_secs(1))
        .request_timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_secs(1))
        .backoff(Backoff::new(
            Duration::from_millis(50),
            Duration::from_millis(500),
        ))
}

async fn listed(nacos: &Nacos, service: &str) -> Vec<u16> {
    nacos.ports(service).await
}

async fn until_health(registry: &NacosRegistry, what: &str, check: impl Fn(&Health) -> bool) {
    let mut health = registry.health().unwrap();
    tokio::time::timeout(Duration::from_secs(15), health.wait_for(|h| check(h)))
        .await
        .unwrap_or_else(|_| panic!("health never became {what}"))
        .unwrap();
}

fn info(port: u16) -> Info {
    Info::new("faults.svc", SocketAddr::from(([127, 0, 0, 1], port)))
}

#[tokio::test]
async fn a_cut_connection_is_replaced_and_everything_registered_again() {
    let nacos = Nacos::start().await;
    let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], nacos.grpc_port))).await;
    let registry = NacosRegistry::new(config(&nacos, &proxy)).unwrap();
    registry.register(&info(7001)).await.unwrap();
    registry.register(&info(7002)).await.unwrap();
    registry.deregister(&info(7002)).await.unwrap();
    assert_eq!(listed(&nacos, "faults.svc").await, vec![7001]);

    let mut health = registry.health().unwrap();
    health.borrow_and_update();
    let cut = Instant::now();
    proxy.cut();
    // The registry notices (its health changes) and registers everything on a new connection;
    // the server drops what the old connection held, which must not take the new one along.
    tokio::time::timeout(Duration::from_secs(5), health.changed())
        .await
        .expect("the registry notices the cut")
        .unwrap();
    until_health(&registry, "healthy", |h| *h == Health::Healthy).await;
    let back = cut.elapsed();
    println!("after a cut: connected and registered again within {back:?}");
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert_eq!(listed(&nacos, "faults.svc").await, vec![7001]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And it is a live registration: a deregistration still works.
    registry.deregister(&info(7001)).await.unwrap();
    assert!(listed(&nacos, "faults.svc").await.is_empty());
    registry.close().await;
}

#[tokio::test]
async fn a_black_holed_connection_is_detected_and_replaced_and_the_old_one_takes_nothing_along() {
    let nacos = Nacos::start().await;
    let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], nacos.grpc_port))).await;
    let registry = NacosRegistry::new(config(&nacos, &proxy)).unwrap();
    registry.register(&info(7001)).await.unwrap();
    let gone = info(7002);
    registry.register(&gone).await.unwrap();
    assert_eq!(listed(&nacos, "faults.svc").await, vec![7001, 7002]);

    proxy.set(Fault::Blackhole);
    let holed = Instant::now();
    until_health(&registry, "recovering", |h| {
        matches!(h, Health::Recovering { .. })
    })
    .await;
    println!("black hole detected after {:?}", holed.elapsed());
    // Deregistered while unreachable: must not come back.
    registry.deregister(&gone).await.unwrap();
    // While it lasts, the server still holds the old connection and lists its instances (no
    // deletion gets through the black hole): the registry keeps that connection open until a
    // new one holds everything (closing it would take 7001 away until then).
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        assert!(
            listed(&nacos, "faults.svc").await.contains(&7001),
            "during the black hole"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxy.set(Fault::Pass);
    until_health(&registry, "healthy", |h| *h == Health::Healthy).await;
    let passed = Instant::now();
    // The deregistration is applied once traffic passes (the old connection, which held 7002,
    // is closed once the new one holds everything).
    tests::poll::until(
        Duration::from_secs(5),
        "7002 gone after recovery",
        || async { (listed(&nacos, "faults.svc").await == vec![7001]).then_some(()) },
    )
    .await;

    // The server may still hold the old, black-holed connection until its own detection (15 s
    // idle + 3 s) closes it; closing it must not remove what the new connection registered,
    // nor bring back what was deregistered.
    let until = passed + Duration::from_secs(22);
    while Instant::now() < until {
        assert_eq!(
            listed(&nacos, "faults.svc").await,
            vec![7001],
            "{:?} after traffic passed again",
            passed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    registry.close().await;
    assert!(listed(&nacos, "faults.svc").await.is_empty());
}

#[tokio::test]
async fn a_process_resumed_after_the_server_dropped_it_registers_again() {
    // A process that hangs (SIGSTOP: a long GC pause, a frozen VM) closes nothing: the server
    // finds out by its own checks and drops its instances (rnacos: a connection idle for 15 s
    // gets a ClientDetectionRequest, closed when nothing answers within 3 s). That part is the
    // server's. The library's part comes when the process runs again: it must notice that its
    // connection is gone and register everything again on a new one, without a restart.
    let nacos = Nacos::start().await;
    let (mut child, registered) = tests::child::spawn_example(
        "nacos",
        &[
            ("serverAddr", "127.0.0.1".to_string()),
            ("serverPort", nacos.http_port.to_string()),
            ("NACOS_GRPC_PORT", nacos.grpc_port.to_string()),
        ],
    )
    .await;
    let (service, addr) = registered[0].clone();
    assert_eq!(listed(&nacos, &service).await, vec![addr.port()]);
    let pid = child.id().unwrap().to_string();
    let signal = |name: &str| {
        let sent = std::process::Command::new("kill")
            .args([name, &pid])
            .status()
            .unwrap();
        assert!(sent.success(), "kill {name} {pid}");
    };
    signal("-STOP");
    let hung = Instant::now();
    let dropped = tests::poll::until(
        Duration::from_secs(40),
        "the server to drop the hung process",
        || async {
            listed(&nacos, &service)
                .await
                .is_empty()
                .then(|| hung.elapsed())
        },
    )
    .await;
    println!("the server dropped the hung process's instances after {dropped:?}");
    signal("-CONT");
    let resumed = Instant::now();
    // Back within a heartbeat and a request timeout of the example (5 s each, Java's
    // defaults), at most: the server closed the stream, which is seen at once.
    let back = tests::poll::until(
        Duration::from_secs(10),
        "the resumed process registered again",
        || async {
            (listed(&nacos, &service).await == vec![addr.port()]).then(|| resumed.elapsed())
        },
    )
    .await;
    println!("the resumed process was registered again after {back:?}");
    // And it stays: the new registration is a live one, not a leftover of the old connection.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert_eq!(listed(&nacos, &service).await, vec![addr.port()]);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}

#[tokio::test]
async fn a_close_while_reconnecting_returns_at_once_and_registers_nothing_again() {
    let nacos = Nacos::start().await;
    let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], nacos.grpc_port))).await;
    // A second between attempts, so that each phase (waiting, connecting) is seen.
    let config = config(&nacos, &proxy)
        .backoff(Backoff::new(Duration::from_secs(1), Duration::from_secs(1)));
    let registry = NacosRegistry::new(config).unwrap();
    registry.register(&info(7001)).await.unwrap();
    proxy.set(Fault::Blackhole);
    until_health(
        &registry,
        "recovering",
        |h| matches!(h, Health::Recovering { attempt, .. } if *attempt >= 1),
    )
    .await;
    // A connect failed. The next starts within the backoff (0.5-1 s; meanwhile probes, each
    // on a short-lived connection of its own, wait for the server to answer) and hangs until
    // its own timeout (1 s + 2 × 2 s here), beside the old, black-holed connection: 1.2 s with
    // no further failed attempt puts the close inside that connect.
    let mut health = registry.health().unwrap();
    health.borrow_and_update();
    assert!(
        tokio::time::timeout(Duration::from_millis(1200), health.changed())
            .await
            .is_err(),
        "another attempt failed within 1.2 s"
    );
    assert!(proxy.connections() >= 2, "a connect in progress");
    // The close must not wait for the connect (nor for the close timeout, 2 s).
    let closing = Instant::now();
    registry.close().await;
    let took = closing.elapsed();
    println!("close while reconnecting took {took:?}");
    assert!(took < Duration::from_secs(1), "close took {took:?}");
    // And the connect is abandoned, not completed later to register everything again: every
    // connection is closed.
    tests::poll::until(
        Duration::from_secs(1),
        "every connection closed",
        || async { (proxy.connections() == 0).then_some(()) },
    )
    .await;
    proxy.set(Fault::Pass);
}

#[tokio::test]
async fn calls_in_flight_end_as_soon_as_the_connection_is_known_dead() {
    let nacos = Nacos::start().await;
    let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], nacos.grpc_port))).await;
    let registry = NacosRegistry::new(config(&nacos, &proxy)).unwrap();
    registry.register(&info(7000)).await.unwrap();
    proxy.set(Fault::Blackhole);
    // 320 writes at 64 at a time: five rounds of the 2 s request timeout if each call waited
    // out its own timeout; the first one that times out (or the heartbeat) ends them all.
    let infos: Vec<Info> = (0..320).map(|i| info(8000 + i)).collect();
    let started = Instant::now();
    let results = futures_util::future::join_all(infos.iter().map(|i| registry.register(i))).await;
    let took = started.elapsed();
    println!("320 registrations on a dead connection answered after {took:?}");
    assert!(results.iter().all(Result::is_err));
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    until_health(&registry, "recovering", |h| {
        matches!(h, Health::Recovering { .. })
    })
    .await;
    proxy.set(Fault::Pass);
    until_health(&registry, "healthy", |h| *h == Health::Healthy).await;
    tests::poll::until(Duration::from_secs(10), "all 321 listed", || async {
        (listed(&nacos, "faults.svc").await.len() == 321).then_some(())
    })
    .await;
    registry.close().await;
}

#[tokio::test]
async fn a_deregistration_while_away_reaches_the_server_on_the_old_connection() {
    let nacos = Nacos::start().await;
    let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], nacos.grpc_port))).await;
    let registry = NacosRegistry::new(config(&nacos, &proxy)).unwrap();
    registry.register(&info(7001)).await.unwrap();
    let gone = info(7002);
    registry.register(&gone).await.unwrap();
    // A round trip of 3 s, over the 2 s request timeout: the registry gives the connection up
    // (and cannot make a new one), but the server still holds it, and our instances with it.
    proxy.set_latency(Duration::from_millis(1500));
    until_health(&registry, "recovering", |h| {
        matches!(h, Health::Recovering { .. })
    })
    .await;
    registry.deregister(&gone).await.unwrap();
    let deregistered = Instant::now();
    // Only that connection can remove 7002 (rnacos ignores a deregistration from another
    // connection), and it is still there: the deregistration must reach the server on it.
    tests::poll::until(
        Duration::from_secs(6),
        "7002 gone while the connection is away",
        || async { (listed(&nacos, "faults.svc").await == vec![7001]).then_some(()) },
    )
    .await;
    println!(
        "deregistered on the old connection after {:?}",
        deregistered.elapsed()
    );
    proxy.set_latency(Duration::ZERO);
    until_health(&registry, "healthy", |h| *h == Health::Healthy).await;
    assert_eq!(listed(&nacos, "faults.svc").await, vec![7001]);
    registry.close().await;
}

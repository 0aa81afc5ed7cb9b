//! The etcd backend against real etcd servers started by the fixture.
#![cfg(feature = "etcd")]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etcd_client::GetOptions;
use futures_util::StreamExt;
use service_registry::etcd::{EtcdConfig, EtcdDiscovery, EtcdRegistry};
use service_registry::{service, Discovery, Info, Registry, RegistryError, ServiceStatus};
use tests::child::{example_path, next_line, spawn_example, terminate};
use tests::fixtures::etcd::{Etcd, EtcdOptions, TlsFiles};
use tests::running::Running;
use tests::{echo, poll};

#[service(name = "etcd.echo", weight = 30, tag(idc = "hz"))]
pub struct EtcdEcho;

#[service(name = "etcd.other", warmup = "2s")]
pub struct EtcdOther;

const OURS: [&str; 2] = ["etcd.echo", "etcd.other"];
const PREFIX: &str = "kitex/registry-etcd";

fn config(etcd: &Etcd) -> EtcdConfig {
    EtcdConfig::new(etcd.endpoints()).lease_ttl(Duration::from_secs(3))
}

/// Keys under `prefix`, by key. Retries transient errors (a leader election) for up to 5 s.
async fn stored(etcd: &Etcd, prefix: &str) -> BTreeMap<String, String> {
    let response = poll::until(
        Duration::from_secs(5),
        "a successful read from etcd",
        || async {
            let mut client = etcd.client().await;
            client
                .get(prefix, Some(GetOptions::new().with_prefix()))
                .await
                .ok()
        },
    )
    .await;
    response
        .kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str().unwrap().to_string(),
                kv.value_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn key(service: &str, addr: SocketAddr) -> String {
    format!("{PREFIX}/{service}/{addr}")
}

#[tokio::test]
async fn writes_exactly_what_kitex_writes_and_reads_what_kitex_writes() {
    let etcd = Etcd::start().await;
    let registry = EtcdRegistry::new(config(&etcd)).unwrap();
    let mut info = Info::new("kitex.echo", "127.0.0.1:8888".parse().unwrap());
    info.tags.insert("idc".into(), "xxx".into());
    info.start_time = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
    registry.register(&info).await.unwrap();
    let mut v6 = info.clone();
    v6.addr = "[::1]:8889".parse().unwrap();
    registry.register(&v6).await.unwrap();

    let all = stored(&etcd, "kitex/registry-etcd/kitex.echo/").await;
    assert_eq!(
        all.get("kitex/registry-etcd/kitex.echo/127.0.0.1:8888")
            .map(String::as_str),
        Some(
            r#"{"network":"tcp","address":"127.0.0.1:8888","weight":10,"tags":{"idc":"xxx"},"start_time_ms":1700000000123}"#
        )
    );
    assert!(
        all.contains_key("kitex/registry-etcd/kitex.echo/[::1]:8889"),
        "{all:?}"
    );
    // Our key carries our lease.
    let mut client = etcd.client().await;
    let kv = client
        .get("kitex/registry-etcd/kitex.echo/127.0.0.1:8888", None)
        .await
        .unwrap();
    assert_ne!(kv.kvs()[0].lease(), 0, "registrations must hang on a lease");

    // Values as Kitex's Go registry writes them, plus garbage that must be left out.
    let go_written = [
        (
            "kitex/registry-etcd/go.svc/127.0.0.1:1",
            r#"{"network":"tcp","address":"127.0.0.1:1","weight":10,"tags":{"idc":"xxx"}}"#,
        ),
        (
            "kitex/registry-etcd/go.svc/127.0.0.1:2",
            r#"{"network":"tcp","address":"127.0.0.1:2","weight":0,"tags":null}"#,
        ),
        (
            "kitex/registry-etcd/go.svc/127.0.0.1:3",
            r#"{"network":"tcp","address":"127.0.0.1:3","weight":5,"extra":{"a":1}}"#,
        ),
        ("kitex/registry-etcd/go.svc/127.0.0.1:4", "{not json"),
        (
            "kitex/registry-etcd/go.svc/127.0.0.1:5",
            r#"{"network":"tcp","address":"nope","weight":5}"#,
        ),
        (
            "kitex/registry-etcd/go.svc/nested/127.0.0.1:6",
            r#"{"network":"tcp","address":"127.0.0.1:6","weight":5}"#,
        ),
    ];
    for (k, v) in go_written {
        client.put(k, v, None).await.unwrap();
    }
    let discovery = EtcdDiscovery::new(config(&etcd));
    // In address order.
    let found = discovery.resolve("go.svc").await.unwrap();
    let summary: Vec<(u16, u32, usize)> = found
        .iter()
        .map(|i| (i.addr.port(), i.weight, i.tags.len()))
        .collect();
    assert_eq!(summary, [(1, 10, 1), (2, 10, 0), (3, 5, 0)]);

    // A watcher survives a malformed update: the key reads as gone, the rest stays.
    let mut watch = discovery.watch("go.svc").await.unwrap();
    assert_eq!(watch.next().await.unwrap().all.len(), 3);
    client
        .put("kitex/registry-etcd/go.svc/127.0.0.1:3", "garbage", None)
        .await
        .unwrap();
    let change = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(change.removed.len(), 1);
    assert_eq!(change.all.len(), 2);
    registry.close().await;
    assert!(
        stored(&etcd, "kitex/registry-etcd/kitex.echo/")
            .await
            .is_empty(),
        "close deletes our keys"
    );
}

#[tokio::test]
async fn restart_with_same_and_wiped_data_restores_every_registration() {
    let mut etcd = Etcd::start().await;
    let registry = EtcdRegistry::new(config(&etcd)).unwrap();
    let running = Running::start(registry.clone(), &OURS).await;
    running.registered(Duration::from_secs(10)).await;
    let expected: Vec<String> = OURS.iter().map(|s| key(s, running.addr)).collect();
    // A watcher opened before the outages must still follow the service after them, even
    // though the wiped etcd starts its revisions over.
    let discovery = EtcdDiscovery::new(config(&etcd));
    let mut watch = discovery.watch("etcd.echo").await.unwrap();
    assert_eq!(watch.next().await.unwrap().all.len(), 1);

    for wipe in [false, true] {
        etcd.stop();
        // The outage lasts 10 s; the service must answer throughout and report the outage.
        let outage_end = Instant::now() + Duration::from_secs(10);
        let mut calls = 0;
        while Instant::now() < outage_end {
            assert_eq!(
                echo::call(running.addr, "up?").await.unwrap(),
                "up?",
                "service stopped answering during the outage"
            );
            calls += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(calls >= 20);
        let status = running.status.snapshot();
        assert!(
            status
                .values()
                .all(|s| matches!(s, ServiceStatus::Retrying { .. })),
            "status must show the outage: {status:?}"
        );
        if wipe {
            etcd.wipe();
        }
        etcd.restart().await;
        let answering = Instant::now();
        let back = poll::until(
            Duration::from_secs(3),
            "registrations back within 3 s of etcd answering",
            || async {
                let keys = stored(&etcd, PREFIX).await;
                expected
                    .iter()
                    .all(|k| keys.contains_key(k))
                    .then(|| answering.elapsed())
            },
        )
        .await;
        println!("wipe={wipe}: registrations back {back:?} after etcd answered");
        running.registered(Duration::from_secs(3)).await;
        assert_eq!(echo::call(running.addr, "after").await.unwrap(), "after");
        // etcd restores leases (and their keys) from its data on restart, so keys being there
        // proves nothing by itself: they must still be there two TTLs later, on a lease that
        // etcd reports alive, which only the registry's keep-alive achieves.
        let hold = Instant::now() + Duration::from_secs(6);
        while Instant::now() < hold {
            let mut client = etcd.client().await;
            for k in &expected {
                let got = client.get(k.as_str(), None).await.unwrap();
                let kv = got
                    .kvs()
                    .first()
                    .unwrap_or_else(|| panic!("wipe={wipe}: {k} gone"));
                let lease = client.lease_time_to_live(kv.lease(), None).await.unwrap();
                assert!(lease.ttl() > 0, "wipe={wipe}: {k} on a dead lease");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    running.stop().await;
    assert!(stored(&etcd, PREFIX).await.is_empty());
    // The watcher must follow writes made after both restarts (the wiped etcd started its
    // revisions over): a Go-style put of a new instance shows up as added.
    let mut client = etcd.client().await;
    client
        .put(
            key("etcd.echo", "127.0.0.1:1".parse().unwrap()),
            r#"{"network":"tcp","address":"127.0.0.1:1","weight":10,"tags":null}"#,
            None,
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let change = watch.next().await.expect("the watch must not end");
            if change.added.iter().any(|i| i.addr.port() == 1) {
                return;
            }
        }
    })
    .await
    .expect("the watcher saw a put made after the restarts within 10 s");
    registry.close().await;
}

#[tokio::test]
async fn cluster_leader_loss_keeps_registrations() {
    let mut etcd = Etcd::start_cluster().await;
    let registry = EtcdRegistry::new(config(&etcd)).unwrap();
    let running = Running::start(registry.clone(), &OURS).await;
    running.registered(Duration::from_secs(10)).await;
    let leader = etcd.leader().await;
    etcd.members[leader].kill();
    let killed = Instant::now();
    // Observe past two lease TTLs (3 s each): the keys must be there the whole time.
    while killed.elapsed() < Duration::from_secs(7) {
        let keys = stored(&etcd, PREFIX).await;
        assert_eq!(
            keys.len(),
            2,
            "registrations lost {:?} after the leader died: {keys:?}",
            killed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let status = running.status.snapshot();
    assert!(
        status.values().all(|s| *s == ServiceStatus::Registered),
        "{status:?}"
    );
    running.stop().await;
    assert!(stored(&etcd, PREFIX).await.is_empty());
    registry.close().await;
}

#[tokio::test]
async fn tls_with_client_certificates() {
    let files = TlsFiles::generate();
    let etcd = Etcd::start_with(EtcdOptions {
        tls: Some(&files),
        members: 1,
        ..Default::default()
    })
    .await;
    let config = config(&etcd)
        .tls_files(&files.ca, Some((&files.client_cert, &files.client_key)))
        .unwrap();
    let registry = EtcdRegistry::new(config.clone()).unwrap();
    let running = Running::start(registry.clone(), &OURS).await;
    running.registered(Duration::from_secs(10)).await;
    let found = EtcdDiscovery::new(config.clone())
        .resolve("etcd.echo")
        .await
        .unwrap();
    assert_eq!(found[0].addr, running.addr);

    // Without a client certificate the server refuses, and the error says so.
    let no_cert = EtcdConfig::new(etcd.endpoints()).tls(std::fs::read(&files.ca).unwrap(), None);
    let err = EtcdDiscovery::new(no_cert.request_timeout(Duration::from_secs(2)))
        .resolve("etcd.echo")
        .await;
    assert!(err.is_err(), "a client without certificate must be refused");
    running.stop().await;
    registry.close().await;
}

#[tokio::test]
async fn direct_registry_calls_are_idempotent_and_validated() {
    let etcd = Etcd::start().await;
    let registry = EtcdRegistry::new(config(&etcd)).unwrap();
    let info = Info::new("idem", "127.0.0.1:5".parse().unwrap());
    registry.register(&info).await.unwrap();
    registry.register(&info).await.unwrap();
    registry.deregister(&info).await.unwrap();
    registry.deregister(&info).await.unwrap();
    assert!(stored(&etcd, PREFIX).await.is_empty());
    let bad = Info::new("a/b", "127.0.0.1:5".parse().unwrap());
    assert!(matches!(
        registry.register(&bad).await,
        Err(RegistryError::InvalidInfo { .. })
    ));
    registry.close().await;
    assert!(
        registry.register(&info).await.is_err(),
        "a closed registry refuses work"
    );
    let _ = SystemTime::now();
}

#[tokio::test]
async fn example_exits_zero_on_sigterm_and_client_example_follows_it() {
    let etcd = Etcd::start().await;
    let (mut server, registered) = spawn_example(
        "etcd",
        &[
            ("ETCD_ENDPOINTS", etcd.endpoint()),
            ("REGISTRY_LEASE_TTL", "15".into()),
        ],
    )
    .await;
    let keys = stored(&etcd, PREFIX).await;
    assert_eq!(keys.len(), 2, "{keys:?}");
    let (_, addr) = registered
        .iter()
        .find(|(s, _)| s == "example.echo")
        .unwrap();

    // The client example resolves, watches and calls; it sees the snapshot and the removal.
    let mut client = tokio::process::Command::new(example_path("etcd_client"))
        .arg("example.echo")
        .env("ETCD_ENDPOINTS", etcd.endpoint())
        .env("MAX_CHANGES", "2")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut client_lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(client.stdout.take().unwrap()));
    assert_eq!(next_line(&mut client_lines).await, "resolved 1 instances");
    assert_eq!(next_line(&mut client_lines).await, "change +1 ~0 -0 now 1");
    assert_eq!(
        next_line(&mut client_lines).await,
        format!("called {addr}: example.echo says hello")
    );

    terminate(&server);
    let exit = tokio::time::timeout(Duration::from_secs(10), server.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        exit.success(),
        "the example must exit 0 on SIGTERM: {exit:?}"
    );
    assert!(
        stored(&etcd, PREFIX).await.is_empty(),
        "keys must be gone once the example has exited"
    );

    assert_eq!(next_line(&mut client_lines).await, "change +0 ~0 -1 now 0");
    let exit = tokio::time::timeout(Duration::from_secs(10), client.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success());
}

#[tokio::test]
async fn tonic_greeter_example_runs_on_etcd() {
    let etcd = Etcd::start().await;
    let out = tokio::process::Command::new(example_path("tonic_greeter"))
        .env("ETCD_ENDPOINTS", etcd.endpoint())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("registry: etcd at {}", etcd.endpoint())),
        "{stdout}"
    );
    assert!(
        stdout.contains("graceful stop of c:") && stdout.contains(", 0 errors\n"),
        "{stdout}"
    );
    assert!(stdout.trim_end().ends_with("ok"), "{stdout}");
}

#[tokio::test]
async fn balancer_drops_a_deregistered_instance_long_before_its_lease_would_expire() {
    use service_registry::balance::{Balancer, Strategy};
    let etcd = Etcd::start().await;
    let registry =
        EtcdRegistry::new(EtcdConfig::new(etcd.endpoints()).lease_ttl(Duration::from_secs(15)))
            .unwrap();
    let a = Info::new("lb.svc", "127.0.0.1:7101".parse().unwrap());
    let b = Info::new("lb.svc", "127.0.0.1:7102".parse().unwrap());
    registry.register(&a).await.unwrap();
    registry.register(&b).await.unwrap();
    let balancer = Balancer::builder(Strategy::SmoothRoundRobin)
        .watch(
            &EtcdDiscovery::new(EtcdConfig::new(etcd.endpoints())),
            "lb.svc",
        )
        .await
        .unwrap();
    assert_eq!(balancer.instances().len(), 2);
    registry.deregister(&a).await.unwrap();
    let removed = Instant::now();
    let took = poll::until(
        Duration::from_secs(1),
        "the balancer to drop the instance",
        || async { (balancer.instances().len() == 1).then(|| removed.elapsed()) },
    )
    .await;
    println!("balancer dropped the deregistered instance after {took:?} (lease TTL 15 s)");
    assert!((0..20).all(|_| balancer.pick().unwrap().addr == b.addr));
    registry.close().await;
}

/// The granted TTL of the lease that holds `key`.
async fn lease_ttl_of(etcd: &Etcd, key: &str) -> i64 {
    let mut client = etcd.client().await;
    let response = client.get(key, None).await.unwrap();
    let lease = response.kvs().first().expect("the key exists").lease();
    client
        .lease_time_to_live(lease, None)
        .await
        .unwrap()
        .granted_ttl()
}

/// Kitex's variables: `KITEX_IP_TO_REGISTRY` / `KITEX_PORT_TO_REGISTRY` set the registered
/// address and `KITEX_ETCD_REGISTRY_LEASE_TTL` the lease; our own names win over them.
#[tokio::test]
async fn kitex_environment_variables_set_address_and_lease_ttl() {
    let etcd = Etcd::start().await;
    let (_kitex, registered) = spawn_example(
        "etcd",
        &[
            ("ETCD_ENDPOINTS", etcd.endpoint()),
            ("KITEX_IP_TO_REGISTRY", "127.0.0.9".into()),
            ("KITEX_PORT_TO_REGISTRY", "4567".into()),
            ("KITEX_ETCD_REGISTRY_LEASE_TTL", "7".into()),
        ],
    )
    .await;
    let at: SocketAddr = "127.0.0.9:4567".parse().unwrap();
    assert!(registered.iter().all(|(_, a)| *a == at), "{registered:?}");
    let key = format!("{PREFIX}/example.echo/{at}");
    assert!(stored(&etcd, PREFIX).await.contains_key(&key));
    assert_eq!(lease_ttl_of(&etcd, &key).await, 7);

    let (_ours, registered) = spawn_example(
        "etcd",
        &[
            ("ETCD_ENDPOINTS", etcd.endpoint()),
            ("SERVICE_REGISTRY_ADVERTISE_ADDR", "127.0.0.10:4568".into()),
            ("KITEX_IP_TO_REGISTRY", "127.0.0.9".into()),
            ("REGISTRY_LEASE_TTL", "9".into()),
            ("KITEX_ETCD_REGISTRY_LEASE_TTL", "7".into()),
        ],
    )
    .await;
    let at: SocketAddr = "127.0.0.10:4568".parse().unwrap();
    assert!(registered.iter().all(|(_, a)| *a == at), "{registered:?}");
    let key = format!("{PREFIX}/example.echo/{at}");
    assert_eq!(lease_ttl_of(&etcd, &key).await, 9);
}

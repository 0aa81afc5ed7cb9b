//! The Nacos backend against a real Nacos server (rnacos) started by the fixture.
#![cfg(feature = "nacos")]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use service_registry::nacos::{NacosConfig, NacosDiscovery, NacosRegistry};
use service_registry::{service, Backoff, Discovery, Health, Info, Registry, ServiceStatus};
use tests::fixtures::nacos::{Nacos, NacosOptions};
use tests::poll;
use tests::running::Running;

#[service(name = "nacos.echo", weight = 30, tag(idc = "hz"))]
pub struct NacosEcho;

#[service(name = "nacos.other", warmup = "2s")]
pub struct NacosOther;

const OURS: [&str; 2] = ["nacos.echo", "nacos.other"];

/// For servers with auth: a login hashes the password, which can take seconds on a busy
/// machine; a login that times out is (rightly) "unreachable", not "refused".
fn auth_config(nacos: &Nacos) -> NacosConfig {
    config(nacos).request_timeout(Duration::from_secs(10))
}

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

/// `ip:port` of every instance the open API lists for `service`.
async fn listed(nacos: &Nacos, service: &str) -> Vec<SocketAddr> {
    let mut addrs: Vec<SocketAddr> = nacos
        .list(service)
        .await
        .iter()
        .map(|h| {
            format!("{}:{}", h["ip"].as_str().unwrap(), h["port"])
                .parse()
                .unwrap()
        })
        .collect();
    addrs.sort();
    addrs
}

/// Waits until the open API lists exactly `want` for `service`; how long it took.
async fn until_listed(
    nacos: &Nacos,
    service: &str,
    want: &[SocketAddr],
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    let mut want = want.to_vec();
    want.sort();
    poll::until(limit, &format!("{service} listed as {want:?}"), || {
        let want = want.clone();
        async move { (listed(nacos, service).await == want).then(|| started.elapsed()) }
    })
    .await
}

#[tokio::test]
async fn the_open_api_shows_kitex_fields() {
    let nacos = Nacos::start().await;
    // KITEX_NACOS_ENV_TAGS over the instance's own tags, as Kitex's mergeTags.
    let config = config(&nacos).extra_metadata([("idc", "sh"), ("env", "prod")]);
    let registry = NacosRegistry::new(config).unwrap();
    let running = Running::start(registry.clone(), &OURS).await;
    running.registered(Duration::from_secs(10)).await;

    // What nacos-sdk-go (and so Kitex's resolver) reads: /nacos/v1/ns/instance/list.
    let hosts = nacos.list("nacos.echo").await;
    assert_eq!(hosts.len(), 1, "{hosts:?}");
    let host = &hosts[0];
    assert_eq!(host["ip"], "127.0.0.1");
    assert_eq!(host["port"], running.addr.port());
    assert_eq!(host["weight"].as_f64(), Some(30.0));
    assert_eq!(host["healthy"], true);
    assert_eq!(host["enabled"], true);
    assert_eq!(host["ephemeral"], true);
    assert_eq!(host["clusterName"], "DEFAULT");
    assert_eq!(host["metadata"]["idc"], "sh", "{host}");
    assert_eq!(host["metadata"]["env"], "prod", "{host}");
    assert!(
        host["serviceName"]
            .as_str()
            .unwrap()
            .ends_with("nacos.echo"),
        "{host}"
    );
    assert!(
        host["metadata"]["service-registry.start_time_ms"].is_string(),
        "{host}"
    );
    running.stop().await;
    registry.close().await;
}

#[tokio::test]
async fn resolves_kitex_shaped_instances_and_skips_what_kitex_skips() {
    let nacos = Nacos::start().await;
    let service = "kitex.hello";
    // As Kitex's v1 registry writes: metadata = tags + cloudwego.nacos.client=kitex.
    let kitex_tags = json!({"cloudwego.nacos.client": "kitex", "idc": "sh"});
    nacos
        .register_http(service, "127.0.0.1", 9001, 20.0, &kitex_tags, "")
        .await;
    // What the resolver must leave out: disabled, weight 0 (or below 1), another cluster.
    nacos
        .register_http(
            service,
            "127.0.0.1",
            9002,
            10.0,
            &json!({}),
            "enabled=false",
        )
        .await;
    nacos
        .register_http(service, "127.0.0.1", 9003, 0.0, &json!({}), "")
        .await;
    // Kitex reads int(0.5) = 0, and its balancers skip weight 0.
    nacos
        .register_http(service, "127.0.0.1", 9005, 0.5, &json!({}), "")
        .await;
    nacos
        .register_http(
            service,
            "127.0.0.1",
            9004,
            10.0,
            &json!({}),
            "clusterName=OTHER",
        )
        .await;
    let stored = nacos.list(service).await;
    println!("the open API lists {stored:?}");
    assert!(stored.len() >= 3, "{stored:?}");

    let discovery = NacosDiscovery::new(config(&nacos));
    let found = discovery.resolve(service).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].addr, "127.0.0.1:9001".parse().unwrap());
    assert_eq!(found[0].weight, 20);
    assert_eq!(found[0].tags["idc"], "sh");
    assert_eq!(found[0].tags["cloudwego.nacos.client"], "kitex");
    assert_eq!(found[0].start_time, None);

    let mut watch = discovery.watch(service).await.unwrap();
    let snapshot = watch.next().await.unwrap();
    assert_eq!(snapshot.all, found);

    // Another cluster is read when configured, as Kitex's `WithCluster`.
    let other = NacosDiscovery::new(config(&nacos).cluster("OTHER"));
    let found = other.resolve(service).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].addr.port(), 9004);
}

async fn wait_health(
    registry: &NacosRegistry,
    what: &str,
    check: impl Fn(&Health) -> bool,
) -> Health {
    let mut health = registry.health().unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(20), health.wait_for(|h| check(h)))
        .await
        .unwrap_or_else(|_| panic!("health never became {what}"))
        .unwrap()
        .clone();
    seen
}

/// r-nacos keeps ephemeral instances in memory only, so a restart loses every one of them
/// whether its data directory is kept or wiped (to the client the two are the same restart; the
/// loss itself is checked in `nacos_faults::registrations_are_back_within_a_second_of_a_restarted_nacos_answering`):
/// the registry must register each again on a new connection, and none that was deregistered
/// while the server was down.
#[tokio::test]
async fn every_instance_a_restart_lost_is_registered_again_and_no_deregistered_one() {
    let mut nacos = Nacos::start().await;
    let registry = NacosRegistry::new(config(&nacos)).unwrap();
    let running = Running::start(registry.clone(), &OURS).await;
    running.registered(Duration::from_secs(10)).await;
    let deregistered = Info::new("nacos.gone", "127.0.0.1:9999".parse().unwrap());
    registry.register(&deregistered).await.unwrap();
    registry.deregister(&deregistered).await.unwrap();
    let leaving = Info::new("nacos.gone", "127.0.0.1:9998".parse().unwrap());
    registry.register(&leaving).await.unwrap();
    assert_eq!(listed(&nacos, "nacos.gone").await, vec![leaving.addr]);

    nacos.stop();
    // The registrar shows the outage.
    let status = running
        .status
        .wait_for(|s| {
            s.values()
                .all(|s| matches!(s, ServiceStatus::Retrying { .. }))
        })
        .await
        .unwrap();
    println!("during the outage: {status:?}");
    wait_health(&registry, "recovering", |h| {
        matches!(h, Health::Recovering { .. })
    })
    .await;
    // Deregistered while the server is down: must not come back with the others.
    registry.deregister(&leaving).await.unwrap();

    nacos.restart().await;
    let back = Instant::now();
    for service in OURS {
        until_listed(&nacos, service, &[running.addr], Duration::from_secs(10)).await;
    }
    println!(
        "restart: everything back {:?} after the fixture saw the server answer",
        back.elapsed()
    );
    running.registered(Duration::from_secs(10)).await;
    assert!(listed(&nacos, "nacos.gone").await.is_empty());
    running.stop().await;
    for service in OURS {
        until_listed(&nacos, service, &[], Duration::from_secs(5)).await;
    }
    registry.close().await;
}

#[tokio::test]
async fn a_watch_follows_the_service_across_a_restart() {
    let mut nacos = Nacos::start().await;
    let registry = NacosRegistry::new(config(&nacos)).unwrap();
    let discovery = NacosDiscovery::new(config(&nacos));
    let a = Info::new("nacos.watched", "127.0.0.1:7001".parse().unwrap());
    registry.register(&a).await.unwrap();
    let mut watch = discovery.watch("nacos.watched").await.unwrap();
    let snapshot = watch.next().await.unwrap();
    assert_eq!(snapshot.all.len(), 1);

    nacos.restart().await;
    // Registered again after the restart, and a change made after it is seen too.
    let b = Info::new("nacos.watched", "127.0.0.1:7002".parse().unwrap());
    poll::until(
        Duration::from_secs(10),
        "registering b after the restart",
        || async { registry.register(&b).await.ok() },
    )
    .await;
    let want: Vec<SocketAddr> = vec![a.addr, b.addr];
    let started = Instant::now();
    let mut latest = Vec::new();
    while latest != want {
        let change = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .unwrap_or_else(|_| panic!("the watch did not reach {want:?}; latest {latest:?}"))
            .expect("the watch ended");
        latest = change.all.iter().map(|i| i.addr).collect();
        latest.sort();
    }
    println!("watch caught up {:?} after the restart", started.elapsed());
    registry.deregister(&a).await.unwrap();
    let change = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(change.removed.len(), 1);
    assert_eq!(change.removed[0].addr, a.addr);
    registry.close().await;
}

#[tokio::test]
async fn an_expired_token_is_renewed_not_taken_for_a_wrong_password() {
    let nacos = Nacos::start_with(NacosOptions {
        auth: Some(("admin".into(), "secret".into())),
        token_ttl: Some(2),
        ..NacosOptions::default()
    })
    .await;
    let config = auth_config(&nacos).user("admin", "secret");
    let registry = NacosRegistry::new(config.clone()).unwrap();
    let discovery = NacosDiscovery::new(config);
    let a = Info::new("nacos.token", "127.0.0.1:7001".parse().unwrap());
    registry.register(&a).await.unwrap();
    assert_eq!(discovery.resolve("nacos.token").await.unwrap().len(), 1);
    // Past the token's life the server refuses it (checked with a token of the same age).
    let old = nacos.login().await.unwrap();
    let path = format!("/nacos/v1/ns/instance/list?serviceName=nacos.token&accessToken={old}");
    assert_eq!(nacos.http("GET", &path, "").await.unwrap().0, 200);
    poll::until(Duration::from_secs(10), "the token to expire", || async {
        (nacos.http("GET", &path, "").await.unwrap().0 == 403).then_some(())
    })
    .await;
    let b = Info::new("nacos.token", "127.0.0.1:7002".parse().unwrap());
    registry.register(&b).await.unwrap();
    assert_eq!(discovery.resolve("nacos.token").await.unwrap().len(), 2);
    assert_eq!(registry.health().unwrap().borrow().clone(), Health::Healthy);

    // No user at all: the server's refusal says a login is needed. (A wrong password on every
    // backend: `conformance::nacos_auth::wrong_password_is_a_clear_error_and_the_service_keeps_serving`.)
    let anonymous = NacosDiscovery::new(auth_config(&nacos));
    let err = anonymous
        .resolve("nacos.token")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("requires a login"), "{err}");
    registry.close().await;
}

#[tokio::test]
async fn namespace_group_and_cluster_separate_registrations() {
    let nacos = Nacos::start().await;
    let dev = config(&nacos)
        .namespace("dev")
        .group("ORDERS")
        .cluster("HZ");
    let registry = NacosRegistry::new(dev.clone()).unwrap();
    let a = Info::new("nacos.ns", "127.0.0.1:7001".parse().unwrap());
    registry.register(&a).await.unwrap();
    let found = NacosDiscovery::new(dev).resolve("nacos.ns").await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].addr, a.addr);
    for other in [
        config(&nacos),
        config(&nacos).namespace("dev"),
        config(&nacos).namespace("dev").group("ORDERS"),
        config(&nacos).group("ORDERS").cluster("HZ"),
    ] {
        let seen = NacosDiscovery::new(other.clone())
            .resolve("nacos.ns")
            .await
            .unwrap();
        assert!(seen.is_empty(), "{other:?} sees {seen:?}");
    }
    registry.close().await;
}

/// Established TCP connections from this process to `port` on 127.0.0.1.
fn connections_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let remote = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(2) == Some(&remote.as_str()) && fields.get(3) == Some(&"01")
        })
        .count()
}

#[tokio::test]
async fn three_hundred_services_share_one_connection() {
    let nacos = Nacos::start().await;
    let registry = NacosRegistry::new(config(&nacos)).unwrap();
    let infos: Vec<Info> = (0..300)
        .map(|i| {
            Info::new(
                format!("many.{i}"),
                SocketAddr::from(([127, 0, 0, 1], 10_000 + i)),
            )
        })
        .collect();
    let started = Instant::now();
    let results = futures_util::future::join_all(infos.iter().map(|i| registry.register(i))).await;
    assert!(
        results.iter().all(Result::is_ok),
        "{:?}",
        results.iter().find(|r| r.is_err())
    );
    println!("300 registrations in {:?}", started.elapsed());
    for info in infos.iter().step_by(37) {
        assert_eq!(listed(&nacos, &info.service_name).await, vec![info.addr]);
    }
    assert_eq!(
        connections_to(nacos.grpc_port),
        1,
        "every registration shares one connection"
    );
    // They stay through several health checks (every second here), on that one connection.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert_eq!(listed(&nacos, "many.299").await, vec![infos[299].addr]);
        assert_eq!(connections_to(nacos.grpc_port), 1);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let closing = Instant::now();
    registry.close().await;
    println!("close deregistered 300 in {:?}", closing.elapsed());
    for info in infos.iter().step_by(37) {
        assert!(listed(&nacos, &info.service_name).await.is_empty());
    }
}

#[tokio::test]
async fn dropping_the_registry_closes_its_connection_and_nacos_drops_its_instances() {
    let nacos = Nacos::start().await;
    let registry = NacosRegistry::new(config(&nacos)).unwrap();
    let a = Info::new("nacos.dropped", "127.0.0.1:7001".parse().unwrap());
    registry.register(&a).await.unwrap();
    assert_eq!(connections_to(nacos.grpc_port), 1);
    let dropped = Instant::now();
    drop(registry);
    until_listed(&nacos, "nacos.dropped", &[], Duration::from_secs(5)).await;
    poll::until(
        Duration::from_secs(5),
        "the connection to close",
        || async { (connections_to(nacos.grpc_port) == 0).then_some(()) },
    )
    .await;
    println!(
        "dropped registry: instance gone after {:?}",
        dropped.elapsed()
    );
}

#[tokio::test]
async fn watches_share_one_connection_and_end_with_their_streams() {
    let nacos = Nacos::start().await;
    let registry = NacosRegistry::new(config(&nacos)).unwrap();
    let discovery = NacosDiscovery::new(config(&nacos));
    let mut watches = Vec::new();
    for i in 0..50 {
        let mut watch = discovery.watch(&format!("nacos.w{i}")).await.unwrap();
        assert!(watch.next().await.unwrap().all.is_empty());
        watches.push(watch);
    }
    // The registry's connection and the discovery's: two in all, for 50 watches.
    registry
        .register(&Info::new("nacos.w7", "127.0.0.1:7007".parse().unwrap()))
        .await
        .unwrap();
    assert_eq!(connections_to(nacos.grpc_port), 2);
    let change = tokio::time::timeout(Duration::from_secs(5), watches[7].next())
        .await
        .expect("a push within 5 s")
        .unwrap();
    assert_eq!(change.added.len(), 1);
    drop(watches);
    drop(discovery);
    poll::until(
        Duration::from_secs(5),
        "the discovery connection to close",
        || async { (connections_to(nacos.grpc_port) == 1).then_some(()) },
    )
    .await;
    registry.close().await;
}

/// Local ports of this machine's established TCP connections to `port` on 127.0.0.1.
fn local_ports_to(port: u16) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let remote = format!("0100007F:{port:04X}");
    let mut ports: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(2) == Some(&remote.as_str()) && fields.get(3) == Some(&"01"))
                .then(|| fields[1].to_string())
        })
        .collect();
    ports.sort();
    ports
}

/// Defect 8 of issue 18: a service of 5 000 instances with 1 KB of metadata each (an answer of
/// about 6 MB, over tonic's default 4 MiB) is resolved and watched, pushes included.
#[tokio::test]
async fn a_service_of_five_thousand_instances_with_1_kb_of_metadata_is_resolved_and_watched() {
    let nacos = Nacos::start().await;
    let registry = NacosRegistry::new(config(&nacos)).unwrap();
    let instance = |i: u16| {
        let mut info = Info::new(
            "nacos.large",
            SocketAddr::from(([127, 0, 0, 1], 20_000 + i)),
        );
        info.tags.insert("blob".into(), format!("{i:0>1024}"));
        info
    };
    let started = Instant::now();
    let results = futures_util::future::join_all((0..5000).map(|i| {
        let registry = registry.clone();
        async move { registry.register(&instance(i)).await }
    }))
    .await;
    assert!(
        results.iter().all(Result::is_ok),
        "{:?}",
        results.iter().find(|r| r.is_err())
    );
    println!("5 000 registrations in {:?}", started.elapsed());
    let discovery = NacosDiscovery::new(config(&nacos).resolve_from_watch(false));
    let found = discovery.resolve("nacos.large").await.unwrap();
    assert_eq!(found.len(), 5000);
    assert_eq!(found[0].tags["blob"].len(), 1024);
    let mut watch = discovery.watch("nacos.large").await.unwrap();
    assert_eq!(watch.next().await.unwrap().all.len(), 5000);
    // A change is pushed with every instance: over 4 MiB too.
    registry.register(&instance(5000)).await.unwrap();
    let change = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("a push within 10 s")
        .unwrap();
    assert_eq!(change.added.len(), 1, "{:?}", change.added.len());
    assert_eq!(change.all.len(), 5001);
    registry.close().await;
}

/// Defect 8 of issue 18: an answer over the client's limit (10 MiB, as the Java client) is a
/// size error, not an invalid query, and costs nothing else: the shared connection stays, for
/// queries and for the other watches on it, whether the answer is a query's or a push.
#[tokio::test]
async fn an_answer_over_the_size_limit_is_a_size_error_and_keeps_the_shared_connection() {
    let nacos = Nacos::start().await;
    // A writer that ignores the servers' request limit (r-nacos has none): this crate refuses
    // such a registration by default (`max_request_size`).
    let registry = NacosRegistry::new(config(&nacos).max_request_size(32 << 20)).unwrap();
    let small = Info::new("nacos.small", "127.0.0.1:7001".parse().unwrap());
    registry.register(&small).await.unwrap();
    let grows = Info::new("nacos.grows", "127.0.0.1:7003".parse().unwrap());
    registry.register(&grows).await.unwrap();
    // rnacos takes an 11 MiB registration; its answers for that service are then over the
    // limit: the query fails with a gRPC error of its own (OutOfRange).
    let mut big = Info::new("nacos.big", "127.0.0.1:7002".parse().unwrap());
    big.tags.insert("blob".into(), "x".repeat(11 << 20));
    registry.register(&big).await.unwrap();
    let discovery = NacosDiscovery::new(config(&nacos));
    let mut small_watch = discovery.watch("nacos.small").await.unwrap();
    assert_eq!(small_watch.next().await.unwrap().all.len(), 1);
    let mut grows_watch = discovery.watch("nacos.grows").await.unwrap();
    assert_eq!(grows_watch.next().await.unwrap().all.len(), 1);
    let before = local_ports_to(nacos.grpc_port);
    assert_eq!(before.len(), 2, "the registry's and the discovery's");
    let err = discovery.resolve("nacos.big").await.unwrap_err();
    println!("the oversized answer: {err}");
    let text = err.to_string();
    assert!(text.contains("too large"), "{text}");
    assert!(!text.contains("invalid"), "{text}");
    // The connection is fine: the next query uses it, and nothing reconnects.
    assert_eq!(discovery.resolve("nacos.small").await.unwrap().len(), 1);
    assert_eq!(
        local_ports_to(nacos.grpc_port),
        before,
        "the same connections"
    );

    // A push over the limit: `nacos.grows` gets an 11 MiB instance while watched. Its watch
    // cannot show it; the stream, and the other watch on it, go on.
    let mut huge = Info::new("nacos.grows", "127.0.0.1:7004".parse().unwrap());
    huge.tags.insert("blob".into(), "y".repeat(11 << 20));
    registry.register(&huge).await.unwrap();
    let err = poll::until(
        Duration::from_secs(10),
        "resolve to stop answering from the watch that cannot follow",
        || async { discovery.resolve("nacos.grows").await.err() },
    )
    .await;
    assert!(err.to_string().contains("too large"), "{err}");
    let other = Info::new("nacos.small", "127.0.0.1:7005".parse().unwrap());
    registry.register(&other).await.unwrap();
    let change = tokio::time::timeout(Duration::from_secs(10), small_watch.next())
        .await
        .expect("the other watch goes on")
        .unwrap();
    assert_eq!(change.all.len(), 2);
    assert_eq!(
        local_ports_to(nacos.grpc_port),
        before,
        "the same connections after a push over the limit"
    );
    // Once the service is small again, its watch follows it again.
    registry.deregister(&huge).await.unwrap();
    poll::until(
        Duration::from_secs(10),
        "the service to resolve again",
        || async {
            discovery
                .resolve("nacos.grows")
                .await
                .ok()
                .filter(|f| f.len() == 1)
        },
    )
    .await;
    let again = Info::new("nacos.grows", "127.0.0.1:7006".parse().unwrap());
    registry.register(&again).await.unwrap();
    let mut latest = Vec::new();
    while latest != vec![grows.addr, again.addr] {
        let change = tokio::time::timeout(Duration::from_secs(10), grows_watch.next())
            .await
            .unwrap_or_else(|_| panic!("the watch did not come back; latest {latest:?}"))
            .expect("the watch ended");
        latest = change.all.iter().map(|i| i.addr).collect();
    }
    registry.close().await;
}

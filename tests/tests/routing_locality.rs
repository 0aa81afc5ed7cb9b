//! Zone-aware routing, priority levels and the panic threshold (`balance::Locality`), issue 20.
//!
//! Shares are measured over seeded picks (`pick_with`), so every run sees the same sequence,
//! and checked against the formula: with factor f = 1.4, a group of health h keeps
//! `min(1, f × h)` of its traffic and the rest spills to the next one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use service_registry::balance::tower::{Balanced, Call, CallError, RetryPolicy};
use service_registry::balance::{Balancer, Locality, Outcome, OutlierDetection, Strategy};
use service_registry::{Info, Instance, MemoryRegistry, Registry};
use tests::echo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

const PICKS: usize = 200_000;
/// Seeded picks land within this of the formula (200 000 picks: a standard error of at most
/// 0.0011 on a share).
const TOLERANCE: f64 = 0.006;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Instance `port` with the given tags.
fn instance(port: u16, tags: &[(&str, &str)]) -> Instance {
    let mut info = Info::new("svc", addr(port));
    for (k, v) in tags {
        info.tags.insert((*k).into(), (*v).into());
    }
    Instance::from(&info)
}

/// Ports 1..=n in zone `hz`, n+1..=2n in zone `sh`.
fn two_zones(n: u16) -> Vec<Instance> {
    (1..=2 * n)
        .map(|p| instance(p, &[("zone", if p <= n { "hz" } else { "sh" })]))
        .collect()
}

/// Ejects on the first failure; any share of the set may be out.
fn eager() -> OutlierDetection {
    OutlierDetection::new()
        .consecutive_failures(1)
        .max_ejection_percent(100)
        .base_ejection_time(Duration::from_secs(600))
}

fn eject(balancer: &Balancer, ports: impl IntoIterator<Item = u16>) {
    for port in ports {
        balancer.report(addr(port), Outcome::Failure);
    }
}

/// Share of `PICKS` seeded picks per port.
fn shares(balancer: &Balancer, seed: u64) -> HashMap<u16, f64> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut counts: HashMap<u16, usize> = HashMap::new();
    for _ in 0..PICKS {
        let picked = balancer.pick_with(&mut rng).expect("a pick");
        *counts.entry(picked.addr.port()).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(port, n)| (port, n as f64 / PICKS as f64))
        .collect()
}

fn sum(shares: &HashMap<u16, f64>, ports: impl IntoIterator<Item = u16>) -> f64 {
    ports
        .into_iter()
        .map(|p| shares.get(&p).copied().unwrap_or(0.0))
        .sum()
}

fn zoned(set: Vec<Instance>) -> Balancer {
    Balancer::builder(Strategy::WeightedRandom)
        .locality(Locality::new().zone("zone", "hz"))
        .outlier_detection(eager())
        .build(set)
}

#[test]
fn a_healthy_local_zone_takes_every_pick() {
    for strategy in [
        Strategy::WeightedRandom,
        Strategy::SmoothRoundRobin,
        Strategy::LeastRequest,
    ] {
        let balancer = Balancer::builder(strategy)
            .locality(Locality::new().zone("zone", "hz"))
            .build(two_zones(10));
        let got = shares(&balancer, 1);
        assert_eq!(sum(&got, 11..=20), 0.0, "{strategy:?}: {got:?}");
        // Spread evenly inside the zone.
        for port in 1..=10 {
            assert!(
                (got[&port] - 0.1).abs() < TOLERANCE,
                "{strategy:?}: {got:?}"
            );
        }
    }
    // Consistent hashing: every key stays local, and keeps its instance.
    let hashing = Balancer::builder(Strategy::ConsistentHash)
        .locality(Locality::new().zone("zone", "hz"))
        .build(two_zones(10));
    for key in 0..10_000u64 {
        let first = hashing.pick_by_key(key).unwrap().addr;
        assert!(first.port() <= 10, "key {key} left the zone");
        assert_eq!(hashing.pick_by_key(key).unwrap().addr, first);
    }
}

#[test]
fn a_degraded_local_zone_spills_over_in_proportion_to_its_shortage() {
    // 10 instances per zone; k of the local ones out. Local health h = (10 - k) / 10 keeps
    // min(1, 1.4 h); the rest spreads evenly over the other zone.
    for k in [0u16, 1, 2, 3, 4, 5, 7, 9, 10] {
        let balancer = zoned(two_zones(10));
        eject(&balancer, 1..=k);
        let got = shares(&balancer, 2 + u64::from(k));
        let h = f64::from(10 - k) / 10.0;
        let want = (1.4 * h).min(1.0);
        let local = sum(&got, 1..=10);
        assert!(
            (local - want).abs() < TOLERANCE,
            "{k} out: local share {local:.4}, formula {want:.4}"
        );
        assert_eq!(sum(&got, 1..=k), 0.0, "{k} out: an ejected one was picked");
        for port in 11..=20 {
            let each = (1.0 - want) / 10.0;
            let share = got.get(&port).copied().unwrap_or(0.0);
            assert!(
                (share - each).abs() < TOLERANCE,
                "{k} out: {port}: {share:.4}"
            );
        }
    }
}

#[test]
fn a_warming_local_zone_counts_for_its_ramp() {
    // Every local instance just started, with an hour of warm-up: each counts for the 10 %
    // floor, so the zone keeps 1.4 × 0.1 = 14 % and the rest spills over.
    let mut set = two_zones(5);
    for i in &mut set[..5] {
        i.start_time = Some(SystemTime::now());
        i.warmup = Duration::from_secs(3600);
    }
    let got = shares(&zoned(set), 21);
    let local = sum(&got, 1..=5);
    assert!((local - 0.14).abs() < TOLERANCE, "local share {local:.4}");
}

#[test]
fn a_local_zone_with_nothing_healthy_fails_over_entirely() {
    let balancer = zoned(two_zones(3));
    eject(&balancer, 1..=3);
    assert_eq!(sum(&shares(&balancer, 3), 4..=6), 1.0);
    // No local instance at all (a client in a zone the service is not in): the same.
    let elsewhere = Balancer::builder(Strategy::WeightedRandom)
        .locality(Locality::new().zone("zone", "bj"))
        .build(two_zones(3));
    let got = shares(&elsewhere, 4);
    assert_eq!(sum(&got, 1..=6), 1.0);
    assert!(
        got.values().all(|s| (s - 1.0 / 6.0).abs() < TOLERANCE),
        "{got:?}"
    );
}

#[test]
fn below_the_panic_threshold_picks_ignore_health_and_spread_over_all() {
    // 20 instances in one zone. 10 out: 50 % healthy, not under the threshold: only the
    // healthy ones. 11 out: 45 %: all 20, ejected ones too, 5 % each.
    let set = || {
        (1..=20)
            .map(|p| instance(p, &[("zone", "hz")]))
            .collect::<Vec<_>>()
    };
    let at_threshold = zoned(set());
    eject(&at_threshold, 1..=10);
    let got = shares(&at_threshold, 5);
    assert_eq!(sum(&got, 1..=10), 0.0, "at 50 % there is no panic");

    let below = zoned(set());
    eject(&below, 1..=11);
    let got = shares(&below, 6);
    let ejected = sum(&got, 1..=11);
    assert!(
        (ejected - 0.55).abs() < TOLERANCE,
        "ejected share {ejected:.4}"
    );
    for port in 1..=20 {
        assert!(
            (got[&port] - 0.05).abs() < TOLERANCE,
            "{port}: {:.4}",
            got[&port]
        );
    }

    // A threshold of 0 turns panic off: the healthy 9 take it all.
    let no_panic = Balancer::builder(Strategy::WeightedRandom)
        .locality(Locality::new().zone("zone", "hz").panic_threshold(0.0))
        .outlier_detection(eager())
        .build(set());
    eject(&no_panic, 1..=11);
    assert_eq!(sum(&shares(&no_panic, 7), 1..=11), 0.0);
}

/// Primary (priority 0, ports 1..=4) and standby (priority 1, ports 5..=8).
fn primary_and_standby() -> Balancer {
    let set = (1..=8)
        .map(|p| instance(p, &[("priority", if p <= 4 { "0" } else { "1" })]))
        .collect::<Vec<_>>();
    Balancer::builder(Strategy::WeightedRandom)
        .locality(Locality::new().priority_tag("priority"))
        .outlier_detection(eager())
        .build(set)
}

#[test]
fn standby_gets_traffic_only_as_the_primary_loses_health() {
    // (primaries out, primary share by the formula)
    for (out, want) in [(0u16, 1.0), (1, 1.0), (2, 0.7), (3, 0.35)] {
        let balancer = primary_and_standby();
        eject(&balancer, 1..=out);
        let got = shares(&balancer, 8 + u64::from(out));
        let primary = sum(&got, 1..=4);
        assert!(
            (primary - want).abs() < TOLERANCE,
            "{out} primaries out: primary share {primary:.4}, formula {want:.2}"
        );
        // The standby can take the rest (normalized total health 100 %): no panic, ejected
        // primaries get nothing.
        assert_eq!(sum(&got, 1..=out), 0.0, "{out} out");
    }
}

#[test]
fn levels_that_together_are_not_enough_share_by_health_and_panic_below_the_threshold() {
    // 3 of 4 out on both levels: health 25 % each, 35 % + 35 % < 100 %: scaled to 50 / 50,
    // and both levels are under the threshold, so each spreads over all of its instances.
    let balancer = primary_and_standby();
    eject(&balancer, [1, 2, 3, 5, 6, 7]);
    let got = shares(&balancer, 12);
    for port in 1..=8 {
        assert!(
            (got[&port] - 0.125).abs() < TOLERANCE,
            "{port}: {:.4}",
            got[&port]
        );
    }
    // 2 of 4 out on both: 70 % + 70 % is enough: 70 / 30, healthy instances only.
    let balancer = primary_and_standby();
    eject(&balancer, [1, 2, 5, 6]);
    let got = shares(&balancer, 13);
    assert!((sum(&got, [3, 4]) - 0.7).abs() < TOLERANCE, "{got:?}");
    assert!((sum(&got, [7, 8]) - 0.3).abs() < TOLERANCE, "{got:?}");
}

#[test]
fn zones_apply_inside_each_priority_level() {
    // Primary: 2 local + 2 remote; standby: 2 local + 2 remote.
    let set = (1..=8)
        .map(|p| {
            let priority = if p <= 4 { "0" } else { "1" };
            let zone = if p % 2 == 1 { "hz" } else { "sh" };
            instance(p, &[("priority", priority), ("zone", zone)])
        })
        .collect::<Vec<_>>();
    let balancer = Balancer::builder(Strategy::WeightedRandom)
        .locality(Locality::new().zone("zone", "hz").priority_tag("priority"))
        .outlier_detection(eager())
        .build(set);
    assert_eq!(
        sum(&shares(&balancer, 14), [1, 3]),
        1.0,
        "local primaries only"
    );
    // One local primary out: the local zone of the primary level is half healthy (70 % of
    // the level stays local); the level itself is 75 % healthy (1.05: keeps all).
    eject(&balancer, [1]);
    let got = shares(&balancer, 15);
    assert!((got[&3] - 0.7).abs() < TOLERANCE, "{got:?}");
    assert!((sum(&got, [2, 4]) - 0.3).abs() < TOLERANCE, "{got:?}");
    assert_eq!(sum(&got, 5..=8), 0.0, "standby untouched");
}

#[test]
fn the_callers_zone_comes_from_the_environment_or_an_error_names_the_variable() {
    std::env::set_var("ROUTING_TEST_ZONE", "sh");
    let locality = Locality::new()
        .zone_from_env("zone", "ROUTING_TEST_ZONE")
        .unwrap();
    let balancer = Balancer::builder(Strategy::WeightedRandom)
        .locality(locality)
        .build(two_zones(2));
    assert_eq!(sum(&shares(&balancer, 16), [3, 4]), 1.0);
    std::env::set_var("ROUTING_TEST_ZONE", "");
    let err = Locality::new()
        .zone_from_env("zone", "ROUTING_TEST_ZONE")
        .unwrap_err();
    assert!(err.to_string().contains("ROUTING_TEST_ZONE"), "{err}");
    std::env::remove_var("ROUTING_TEST_ZONE");
}

/// An echo server on loopback that stops when told.
struct Echo {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Echo {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(echo::serve(listener, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    async fn kill(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.unwrap().unwrap();
    }
}

fn echo_service(
    addr: SocketAddr,
) -> impl Service<String, Response = SocketAddr, Error = BoxError, Future: Send> + Clone {
    ServiceBuilder::new()
        .timeout(Duration::from_secs(2))
        .service_fn(move |line: String| async move { echo::call(addr, &line).await.map(|_| addr) })
}

#[tokio::test]
async fn through_tower_a_dead_local_zone_fails_over_and_no_call_is_lost() {
    // Two local and two remote echo servers, registered with their zone; a client in hz.
    let registry = MemoryRegistry::new();
    let mut servers = Vec::new();
    for zone in ["hz", "hz", "sh", "sh"] {
        let server = Echo::start().await;
        let mut info = Info::new("echo", server.addr);
        info.tags.insert("zone".into(), zone.into());
        registry.register(&info).await.unwrap();
        servers.push(server);
    }
    let local: Vec<SocketAddr> = servers[..2].iter().map(|s| s.addr).collect();
    let balancer = Balancer::builder(Strategy::WeightedRandom)
        .locality(Locality::new().zone("zone", "hz"))
        .outlier_detection(OutlierDetection::new().consecutive_failures(2))
        .watch(&registry, "echo")
        .await
        .unwrap();
    let client = ServiceBuilder::new()
        .retry(RetryPolicy::new())
        .service(Balanced::new(balancer.clone(), |i| echo_service(i.addr)));
    let call = |n: usize| {
        client
            .clone()
            .oneshot(Call::new(format!("call {n}")).idempotent(true))
    };
    for n in 0..200 {
        let by: SocketAddr = call(n).await.unwrap();
        assert!(local.contains(&by), "call {n} left a healthy zone: {by}");
    }
    // The local zone dies: connections are refused, calls are retried elsewhere, both local
    // instances get ejected, and from then on every call goes to the other zone at once.
    for server in servers.drain(..2) {
        server.kill().await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 200;
    while balancer.ejected().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "local zone not ejected within 10 s"
        );
        let result: Result<SocketAddr, CallError> = call(n).await;
        assert!(!local.contains(&result.unwrap()), "call {n}");
        n += 1;
    }
    let mut rng = fastrand::Rng::with_seed(17);
    assert!((0..1000).all(|_| !local.contains(&balancer.pick_with(&mut rng).unwrap().addr)));
    for n in n..n + 200 {
        let by = call(n).await.unwrap();
        assert!(!local.contains(&by), "call {n} went to the dead zone");
    }
}

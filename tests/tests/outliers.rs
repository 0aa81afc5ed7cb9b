//! Outlier ejection and retries against real listeners: three echo instances registered in a
//! `MemoryRegistry`, one killed (its listener dropped: connection refused) and one black-holed
//! (a fault proxy in front of it accepts and never answers; a per-call timeout ends the wait).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use service_registry::balance::tower::{Balanced, Call, CallError, RetryPolicy};
use service_registry::balance::{Balancer, OutlierDetection, Strategy};
use service_registry::{Info, MemoryRegistry, Registry};
use tests::echo;
use tests::proxy::{Fault, FaultProxy};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

const SERVICE: &str = "echo";
/// Per attempt: how long a black-holed instance holds a call.
const CALL_TIMEOUT: Duration = Duration::from_millis(250);
/// The steady call rate of the measured phase: one call every 5 ms.
const PACE: Duration = Duration::from_millis(5);

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

    /// Stops accepting and drops the listener: connecting is refused from now on.
    async fn kill(mut self) -> SocketAddr {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.unwrap().unwrap();
        self.addr
    }
}

/// The three instances: `healthy`, `killed` (refuses connections) and `holed` (a black-holed
/// proxy in front of a live echo server), all registered.
struct Fleet {
    registry: MemoryRegistry,
    healthy: SocketAddr,
    killed: SocketAddr,
    holed: SocketAddr,
    proxy: FaultProxy,
    _servers: Vec<Echo>,
}

async fn fleet() -> Fleet {
    let registry = MemoryRegistry::new();
    let healthy = Echo::start().await;
    let doomed = Echo::start().await;
    let behind = Echo::start().await;
    let proxy = FaultProxy::start(behind.addr).await;
    for addr in [healthy.addr, doomed.addr, proxy.addr()] {
        registry.register(&Info::new(SERVICE, addr)).await.unwrap();
    }
    let healthy_addr = healthy.addr;
    let killed = doomed.kill().await;
    assert!(
        echo::call(killed, "x").await.is_err(),
        "the killed one refuses"
    );
    proxy.set(Fault::Blackhole);
    Fleet {
        registry,
        healthy: healthy_addr,
        killed,
        holed: proxy.addr(),
        proxy,
        _servers: vec![healthy, behind],
    }
}

/// The per-instance service: one echo exchange, answered with the instance's address, within
/// `CALL_TIMEOUT`.
fn echo_service(
    addr: SocketAddr,
) -> impl Service<String, Response = (SocketAddr, String), Error = BoxError, Future: Send> + Clone {
    ServiceBuilder::new()
        .timeout(CALL_TIMEOUT)
        .service_fn(move |line: String| async move {
            echo::call(addr, &line).await.map(|reply| (addr, reply))
        })
}

async fn balancer(registry: &MemoryRegistry, outliers: OutlierDetection) -> Balancer {
    let balancer = Balancer::builder(Strategy::WeightedRandom)
        .outlier_detection(outliers)
        .watch(registry, SERVICE)
        .await
        .unwrap();
    assert_eq!(balancer.instances().len(), 3);
    balancer
}

/// Two bad instances of three: the default 50 % would leave one of them in, so these tests
/// allow 2 of 3 out (see `never_more_than_half_is_ejected_by_default` for the default).
fn two_of_three() -> OutlierDetection {
    OutlierDetection::new().max_ejection_percent(67)
}

/// What a run of calls gave.
#[derive(Debug, Default)]
struct Tally {
    calls: usize,
    answered_by: HashMap<SocketAddr, usize>,
    failures_by: HashMap<Option<SocketAddr>, usize>,
    unreachable: usize,
    failed: usize,
}

impl Tally {
    fn failures(&self) -> usize {
        self.failures_by.values().sum()
    }

    fn record(&mut self, line: &str, result: Result<(SocketAddr, String), CallError>) {
        self.calls += 1;
        match result {
            Ok((addr, reply)) => {
                assert_eq!(reply, line);
                *self.answered_by.entry(addr).or_default() += 1;
            }
            Err(err) => {
                match &err {
                    CallError::Unreachable { .. } => self.unreachable += 1,
                    CallError::Failed { .. } => self.failed += 1,
                    other => panic!("unexpected error: {other}"),
                }
                *self.failures_by.entry(err.addr()).or_default() += 1;
            }
        }
    }
}

/// Calls `client` one call at a time, every `PACE` (or as soon as the previous call ends when
/// it took longer), until `done` holds (or `count` calls were made).
async fn calls<S>(
    client: &S,
    tally: &mut Tally,
    count: Option<usize>,
    limit: Duration,
    mut done: impl FnMut(&Tally) -> bool,
) where
    S: Service<Call<String>, Response = (SocketAddr, String), Error = CallError> + Clone,
{
    let deadline = Instant::now() + limit;
    let mut pace = tokio::time::interval(PACE);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut made = 0;
    while count.is_none_or(|c| made < c) && !done(tally) {
        assert!(
            Instant::now() < deadline,
            "not done within {limit:?}: {tally:?}"
        );
        pace.tick().await;
        let line = format!("call {}", tally.calls);
        let result = client
            .clone()
            .oneshot(Call::new(line.clone()).idempotent(true))
            .await;
        tally.record(&line, result);
        made += 1;
    }
}

fn both_out(balancer: &Balancer, fleet: &Fleet) -> bool {
    let out: Vec<SocketAddr> = balancer.ejected().iter().map(|e| e.addr).collect();
    out.contains(&fleet.killed) && out.contains(&fleet.holed)
}

#[tokio::test]
async fn with_retries_a_killed_and_a_black_holed_instance_cost_no_call() {
    let fleet = fleet().await;
    let balancer = balancer(&fleet.registry, two_of_three()).await;
    let client = ServiceBuilder::new()
        .retry(RetryPolicy::new())
        .service(Balanced::new(balancer.clone(), |i| echo_service(i.addr)));

    // Until both bad instances are out: their failures are retried on the healthy one.
    let mut ejecting = Tally::default();
    let started = Instant::now();
    calls(
        &client,
        &mut ejecting,
        None,
        Duration::from_secs(30),
        |_| both_out(&balancer, &fleet),
    )
    .await;
    println!(
        "both ejected after {} calls in {:?}",
        ejecting.calls,
        started.elapsed()
    );
    assert_eq!(ejecting.failures(), 0, "{ejecting:?}");

    // 1 000 calls at a steady rate: every one answered, by the healthy instance.
    let mut steady = Tally::default();
    let started = Instant::now();
    calls(
        &client,
        &mut steady,
        Some(1000),
        Duration::from_secs(60),
        |_| false,
    )
    .await;
    println!("1000 calls in {:?}: {steady:?}", started.elapsed());
    assert_eq!(steady.failures(), 0, "{steady:?}");
    assert_eq!(steady.answered_by.get(&fleet.healthy), Some(&1000));
    assert!(both_out(&balancer, &fleet));
}

#[tokio::test]
async fn without_retries_each_bad_instance_fails_at_most_five_calls() {
    let fleet = fleet().await;
    let balancer = balancer(&fleet.registry, two_of_three()).await;
    let client = Balanced::new(balancer.clone(), |i| echo_service(i.addr));

    let mut ejecting = Tally::default();
    calls(
        &client,
        &mut ejecting,
        None,
        Duration::from_secs(30),
        |_| both_out(&balancer, &fleet),
    )
    .await;
    println!("ejecting: {ejecting:?}");
    // Five failures in a row eject an instance; calls are one at a time, so no more.
    assert_eq!(ejecting.failures_by.get(&Some(fleet.killed)), Some(&5));
    assert_eq!(ejecting.failures_by.get(&Some(fleet.holed)), Some(&5));
    assert_eq!(ejecting.unreachable, 5, "connection refused: unreachable");
    assert_eq!(ejecting.failed, 5, "timed out: failed");

    let mut steady = Tally::default();
    calls(
        &client,
        &mut steady,
        Some(1000),
        Duration::from_secs(60),
        |_| false,
    )
    .await;
    println!("steady: {steady:?}");
    assert_eq!(steady.failures(), 0, "{steady:?}");
    let ejected = balancer.ejected();
    assert_eq!(ejected.len(), 2);
    assert!(ejected.iter().all(|e| e.times == 1));
}

#[tokio::test]
async fn an_ejected_instance_comes_back_when_its_time_is_up() {
    let fleet = fleet().await;
    let base = Duration::from_millis(500);
    let balancer = balancer(&fleet.registry, two_of_three().base_ejection_time(base)).await;
    let client = Balanced::new(balancer.clone(), |i| echo_service(i.addr));
    let mut ejecting = Tally::default();
    calls(
        &client,
        &mut ejecting,
        None,
        Duration::from_secs(30),
        |_| balancer.ejected().iter().any(|e| e.addr == fleet.holed),
    )
    .await;
    let ejected_at = Instant::now();
    // The black hole heals; the instance stays out until its 500 ms are up, then serves.
    fleet.proxy.set(Fault::Pass);
    let mut back = Tally::default();
    calls(&client, &mut back, None, Duration::from_secs(10), |t| {
        t.answered_by.contains_key(&fleet.holed)
    })
    .await;
    let took = ejected_at.elapsed();
    println!("back after {took:?}: {back:?}");
    assert!(took >= base, "back after {took:?}, before its {base:?}");
    assert!(!balancer.ejected().iter().any(|e| e.addr == fleet.holed));
}

#[tokio::test]
async fn never_more_than_half_is_ejected_by_default() {
    // Four instances, three of them refusing connections: 50 % of 4 is 2.
    let registry = MemoryRegistry::new();
    let healthy = Echo::start().await;
    registry
        .register(&Info::new(SERVICE, healthy.addr))
        .await
        .unwrap();
    let mut killed = Vec::new();
    for _ in 0..3 {
        let server = Echo::start().await;
        registry
            .register(&Info::new(SERVICE, server.addr))
            .await
            .unwrap();
        killed.push(server.kill().await);
    }
    let balancer = Balancer::builder(Strategy::SmoothRoundRobin)
        .watch(&registry, SERVICE)
        .await
        .unwrap();
    let client = Balanced::new(balancer.clone(), |i| echo_service(i.addr));
    let mut tally = Tally::default();
    let mut most_out = 0;
    calls(
        &client,
        &mut tally,
        Some(300),
        Duration::from_secs(30),
        |_| {
            most_out = most_out.max(balancer.ejected().len());
            false
        },
    )
    .await;
    most_out = most_out.max(balancer.ejected().len());
    println!("{tally:?}");
    assert_eq!(most_out, 2, "at most half of 4 out, and that many");
    // The third killed instance stays in, and keeps failing.
    let in_set: Vec<&SocketAddr> = killed
        .iter()
        .filter(|a| !balancer.ejected().iter().any(|e| e.addr == **a))
        .collect();
    assert_eq!(in_set.len(), 1);
    assert!(tally.failures_by[&Some(*in_set[0])] > 5);
}

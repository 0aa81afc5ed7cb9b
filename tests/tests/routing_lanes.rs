//! Request routing by lane (`balance::Lanes`), issue 20: calls carry a lane, reach the
//! instances tagged with it, and fall back by the configured rule; against real listeners
//! through the tower layer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use service_registry::balance::tower::{Balanced, Call, CallError, RetryPolicy};
use service_registry::balance::{Balancer, LaneFallback, Lanes, OutlierDetection, Strategy};
use service_registry::{Info, MemoryRegistry, Registry};
use tests::echo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

/// A request for some lane.
#[derive(Clone, Debug)]
struct Request {
    lane: Option<String>,
    line: String,
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
) -> impl Service<Request, Response = SocketAddr, Error = BoxError, Future: Send> + Clone {
    ServiceBuilder::new()
        .timeout(Duration::from_secs(2))
        .service_fn(move |request: Request| async move {
            let reply = echo::call(addr, &request.line).await?;
            assert_eq!(reply, request.line);
            Ok::<_, BoxError>(addr)
        })
}

/// Two base instances, one `canary`, one `gray`; registered in a memory registry.
struct Fleet {
    registry: MemoryRegistry,
    base: Vec<SocketAddr>,
    canary: SocketAddr,
    gray: SocketAddr,
    servers: HashMap<SocketAddr, Echo>,
}

async fn fleet() -> Fleet {
    let registry = MemoryRegistry::new();
    let mut servers = HashMap::new();
    let mut by_lane: HashMap<Option<&str>, Vec<SocketAddr>> = HashMap::new();
    for lane in [None, None, Some("canary"), Some("gray")] {
        let server = Echo::start().await;
        let mut info = Info::new("echo", server.addr);
        if let Some(lane) = lane {
            info.tags.insert("lane".into(), lane.into());
        }
        registry.register(&info).await.unwrap();
        by_lane.entry(lane).or_default().push(server.addr);
        servers.insert(server.addr, server);
    }
    Fleet {
        registry,
        base: by_lane[&None].clone(),
        canary: by_lane[&Some("canary")][0],
        gray: by_lane[&Some("gray")][0],
        servers,
    }
}

async fn client(
    fleet: &Fleet,
    fallback: LaneFallback,
) -> (
    Balancer,
    impl Service<Call<Request>, Response = SocketAddr, Error = CallError, Future: Send> + Clone,
) {
    let balancer = Balancer::builder(Strategy::WeightedRandom)
        .lanes(Lanes::new("lane").fallback(fallback))
        .outlier_detection(OutlierDetection::new().consecutive_failures(1))
        .watch(&fleet.registry, "echo")
        .await
        .unwrap();
    assert_eq!(balancer.instances().len(), 4);
    let client = ServiceBuilder::new().retry(RetryPolicy::new()).service(
        Balanced::new(balancer.clone(), |i| echo_service(i.addr))
            .with_lane(|r: &Request| r.lane.as_deref()),
    );
    (balancer, client)
}

async fn send<S>(client: &S, lane: Option<&str>, n: usize) -> Result<SocketAddr, CallError>
where
    S: Service<Call<Request>, Response = SocketAddr, Error = CallError> + Clone,
{
    let request = Request {
        lane: lane.map(str::to_string),
        line: format!("call {n}"),
    };
    client
        .clone()
        .oneshot(Call::new(request).idempotent(true))
        .await
}

#[tokio::test]
async fn calls_reach_their_lane_and_plain_calls_stay_on_the_base_lane() {
    let fleet = fleet().await;
    let (_, client) = client(&fleet, LaneFallback::Base).await;
    let mut base_counts: HashMap<SocketAddr, usize> = HashMap::new();
    for n in 0..300 {
        assert_eq!(
            send(&client, Some("canary"), n).await.unwrap(),
            fleet.canary
        );
        assert_eq!(send(&client, Some("gray"), n).await.unwrap(), fleet.gray);
        let plain = send(&client, None, n).await.unwrap();
        assert!(fleet.base.contains(&plain), "a plain call reached {plain}");
        *base_counts.entry(plain).or_default() += 1;
        // A lane nobody serves falls back to the base lane.
        let unknown = send(&client, Some("blue"), n).await.unwrap();
        assert!(fleet.base.contains(&unknown), "lane blue reached {unknown}");
    }
    // Both base instances share the plain calls.
    assert!(base_counts.values().all(|c| *c > 100), "{base_counts:?}");
}

#[tokio::test]
async fn fallback_rules_all_and_fail() {
    let fleet = fleet().await;
    let (_, to_all) = client(&fleet, LaneFallback::All).await;
    let mut reached = std::collections::HashSet::new();
    for n in 0..400 {
        reached.insert(send(&to_all, Some("blue"), n).await.unwrap());
    }
    assert_eq!(reached.len(), 4, "lane blue falls back to every instance");

    let (_, strict) = client(&fleet, LaneFallback::Fail).await;
    let err = send(&strict, Some("blue"), 0).await.unwrap_err();
    assert!(matches!(err, CallError::NoInstance), "{err}");
    assert_eq!(
        send(&strict, Some("canary"), 1).await.unwrap(),
        fleet.canary
    );
}

#[tokio::test]
async fn a_dead_canary_falls_back_without_losing_a_call() {
    let mut fleet = fleet().await;
    let (balancer, client) = client(&fleet, LaneFallback::Base).await;
    assert_eq!(
        send(&client, Some("canary"), 0).await.unwrap(),
        fleet.canary
    );
    fleet.servers.remove(&fleet.canary).unwrap().kill().await;
    // The first canary call after the kill fails on the canary (ejecting it) and is retried
    // on the base lane; the ones after it go to the base lane at once.
    let deadline = Instant::now() + Duration::from_secs(10);
    for n in 1..100 {
        assert!(Instant::now() < deadline);
        let by = send(&client, Some("canary"), n).await.unwrap();
        assert!(fleet.base.contains(&by), "call {n} reached {by}");
    }
    assert_eq!(balancer.ejected().len(), 1);
    assert_eq!(balancer.ejected()[0].addr, fleet.canary);
    // The gray lane is untouched.
    assert_eq!(send(&client, Some("gray"), 100).await.unwrap(), fleet.gray);
}

//! Three tonic greeter servers, each an annotated `#[service]` registered through its own
//! `Registrar` (weights 10, 20, 30), and a client that finds them only through discovery and
//! spreads calls by weight with the crate's `Balancer`, as a tower stack: `Balanced` picks an
//! instance and reports each outcome (outlier ejection), `RetryPolicy` sends a failed call to
//! another instance. Then one server stops gracefully and another is killed while calls keep
//! flowing.
//!
//! ```text
//! cargo run -p examples --example tonic_greeter
//! ETCD_ENDPOINTS=http://127.0.0.1:2379 cargo run -p examples --features etcd --example tonic_greeter
//! ```
//!
//! Exits 0 when the spread follows the weights (±5 points), the graceful stop cost no call, the
//! kill cost at most the calls in flight at that moment (with retries: none so far), and the
//! killed server was ejected.

use std::collections::BTreeMap;
use std::error::Error;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use service_registry::balance::tower::{Balanced, Call, CallError, RetryPolicy};
use service_registry::balance::{Balancer, Outcome, OutlierDetection, Strategy};
use service_registry::{
    service, Discovery, InfoOverride, Instance, Registrar, RegistrarError, Registry, ServiceStatus,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Endpoint;
use tonic::{Code, Request, Response, Status};
use tower::util::BoxCloneSyncService;
use tower::{BoxError, ServiceBuilder, ServiceExt};

mod proto {
    tonic::include_proto!("greeter");
}
use proto::greeter_client::GreeterClient;
use proto::greeter_server::{Greeter as GreeterRpc, GreeterServer};
use proto::{HelloReply, HelloRequest};

/// The greeter; every server process of it registers as `greeter`.
#[service(name = "greeter", payload_codec = "grpc")]
pub struct Greeter {
    id: String,
}

#[tonic::async_trait]
impl GreeterRpc for Greeter {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        Ok(Response::new(HelloReply {
            message: format!("hello {}", request.into_inner().name),
            server: self.id.clone(),
        }))
    }
}

/// One running server and its registration.
struct Server {
    id: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), RegistrarError>>,
}

async fn start_server(
    registry: Arc<dyn Registry>,
    id: &str,
    weight: u32,
) -> Result<Server, Box<dyn Error>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let (stop, stopped) = oneshot::channel::<()>();
    let registrar = Registrar::builder()
        .shared_registry(registry)
        .listen_addr(listener.local_addr()?)
        .only(["greeter"])
        // The demo's client watches and drops a removed server within milliseconds, so a short
        // drain is enough here; servers with polling (Kitex) clients keep the default 6 s.
        .drain_delay(Duration::from_millis(200))
        .override_service(
            "greeter",
            InfoOverride::new().weight(weight).tag("server", id),
        )
        .shutdown_signal(async {
            let _ = stopped.await;
        })
        .build()?;
    let status = registrar.status();
    let greeter = Greeter { id: id.to_string() };
    let task = tokio::spawn(registrar.serve(move |shutdown| {
        tonic::transport::Server::builder()
            .add_service(GreeterServer::new(greeter))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
    }));
    status
        .wait_for(|s| s.values().all(|s| *s == ServiceStatus::Registered))
        .await
        .ok_or("the registrar stopped before registering")?;
    Ok(Server {
        id: id.to_string(),
        stop: Some(stop),
        task,
    })
}

/// One greeter instance as a tower service: a lazily connected tonic channel, one second per
/// attempt.
fn greeter_at(
    instance: &Instance,
) -> impl tower::Service<HelloRequest, Response = HelloReply, Error = BoxError, Future: Send>
       + Clone
       + Send
       + 'static {
    let channel = Endpoint::from_shared(format!("http://{}", instance.addr))
        .expect("an address makes a valid URI")
        .connect_timeout(Duration::from_secs(1))
        .connect_lazy();
    let client = GreeterClient::new(channel);
    ServiceBuilder::new()
        .timeout(Duration::from_secs(1))
        .service_fn(move |request: HelloRequest| {
            let mut client = client.clone();
            async move { client.say_hello(request).await.map(Response::into_inner) }
        })
}

/// Which errors count against an instance: transport failures, timeouts and server faults do;
/// a status that is the caller's own (`InvalidArgument`, `NotFound`, ...) does not. This
/// client never cancels a call, so `Cancelled` means the connection closed under it.
fn instance_fault(result: Result<&HelloReply, &BoxError>) -> Outcome {
    let Err(err) = result else {
        return Outcome::Success;
    };
    match err.downcast_ref::<Status>().map(Status::code) {
        Some(
            Code::Unavailable
            | Code::Unknown
            | Code::Internal
            | Code::DeadlineExceeded
            | Code::Cancelled,
        )
        | None => Outcome::Failure,
        Some(_) => Outcome::Success,
    }
}

/// The client: calls through discovery, picking by weight, never an ejected instance, and
/// retrying a failed call once or twice on another instance (`SayHello` is idempotent).
#[derive(Clone)]
struct Client {
    balancer: Balancer,
    service: BoxCloneSyncService<Call<HelloRequest>, HelloReply, CallError>,
}

impl Client {
    fn new(balancer: Balancer) -> Self {
        let service = ServiceBuilder::new()
            .retry(RetryPolicy::new())
            .service(Balanced::new(balancer.clone(), greeter_at).classify(instance_fault));
        Self {
            balancer,
            service: BoxCloneSyncService::new(service),
        }
    }

    async fn say_hello(&self, name: &str) -> Result<HelloReply, CallError> {
        let request = HelloRequest {
            name: name.to_string(),
        };
        self.service
            .clone()
            .oneshot(Call::new(request).idempotent(true))
            .await
    }
}

/// Calls from `callers` tasks until `stop` is set; returns (calls, errors).
async fn call_until(client: Arc<Client>, callers: usize, stop: Arc<AtomicBool>) -> (usize, usize) {
    let calls = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (client, stop, calls, errors) =
                (client.clone(), stop.clone(), calls.clone(), errors.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    calls.fetch_add(1, Ordering::Relaxed);
                    if let Err(err) = client.say_hello("loop").await {
                        errors.fetch_add(1, Ordering::Relaxed);
                        eprintln!("call failed: {err}");
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    (
        calls.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
    )
}

async fn registry_and_discovery() -> Result<(Arc<dyn Registry>, Arc<dyn Discovery>), Box<dyn Error>>
{
    #[cfg(feature = "etcd")]
    if std::env::var("ETCD_ENDPOINTS").is_ok() {
        use service_registry::etcd::{EtcdConfig, EtcdDiscovery, EtcdRegistry};
        let config = EtcdConfig::from_env()?;
        println!("registry: etcd at {}", config.endpoints().join(","));
        return Ok((
            Arc::new(EtcdRegistry::new(config.clone())?),
            Arc::new(EtcdDiscovery::new(config)),
        ));
    }
    println!("registry: in memory");
    let registry = service_registry::MemoryRegistry::new();
    Ok((Arc::new(registry.clone()), Arc::new(registry)))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let (registry, discovery) = registry_and_discovery().await?;
    let mut servers = Vec::new();
    for (id, weight) in [("a", 10), ("b", 20), ("c", 30)] {
        servers.push(start_server(registry.clone(), id, weight).await?);
    }
    let balancer = Balancer::builder(Strategy::WeightedRandom)
        // 3 failures in a row take an instance out for 10 s (growing if it keeps failing).
        .outlier_detection(
            OutlierDetection::new()
                .consecutive_failures(3)
                .base_ejection_time(Duration::from_secs(10)),
        )
        .watch(discovery.as_ref(), "greeter")
        .await?;
    println!(
        "discovered {} greeter instances",
        balancer.instances().len()
    );
    let client = Arc::new(Client::new(balancer));

    // 1. The spread follows the weights.
    let total = 3000;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..total {
        let reply = client
            .say_hello(&format!("call {i}"))
            .await
            .map_err(|e| e.to_string())?;
        *counts.entry(reply.server).or_default() += 1;
    }
    let mut spread_ok = true;
    for (id, weight) in [("a", 10.0), ("b", 20.0), ("c", 30.0)] {
        let share = *counts.get(id).unwrap_or(&0) as f64 / f64::from(total);
        let want = weight / 60.0;
        spread_ok &= (share - want).abs() <= 0.05;
        println!(
            "server {id}: {:.1}% of {total} calls (weight share {:.1}%)",
            share * 100.0,
            want * 100.0
        );
    }

    // 2. tonic's own balancer (power of two choices) over the same discovery, through
    // service_registry::balance::balance_channel: every call succeeds.
    let channel =
        service_registry::balance::balance_channel(discovery.as_ref(), "greeter", |instance| {
            Endpoint::from_shared(format!("http://{}", instance.addr)).ok()
        })
        .await?;
    let mut tonic_client = GreeterClient::new(channel);
    let mut answered_by = BTreeMap::<String, usize>::new();
    let mut tonic_ok = true;
    for i in 0..300 {
        match tonic_client
            .say_hello(HelloRequest {
                name: format!("p2c {i}"),
            })
            .await
        {
            Ok(reply) => *answered_by.entry(reply.into_inner().server).or_default() += 1,
            Err(status) => {
                tonic_ok = false;
                eprintln!("balance_channel call failed: {status}");
            }
        }
    }
    println!("balance_channel: 300 calls, answered by {answered_by:?}, all ok: {tonic_ok}");

    // 3. c stops gracefully while 4 callers keep calling: no call may fail.
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(call_until(client.clone(), 4, stop.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut c = servers.pop().ok_or("no server c")?;
    if let Some(signal) = c.stop.take() {
        let _ = signal.send(());
    }
    c.task.await??;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (calls, errors) = load.await?;
    println!("graceful stop of {}: {calls} calls, {errors} errors", c.id);
    let graceful_ok = errors == 0;

    // 4. b is killed (no deregistration) while 4 callers keep calling: at most the calls in
    // flight at the kill may fail.
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(call_until(client.clone(), 4, stop.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = servers.pop().ok_or("no server b")?;
    b.task.abort();
    let _ = b.task.await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (calls, errors) = load.await?;
    println!(
        "kill of {}: {calls} calls, {errors} errors (at most 4 were in flight)",
        b.id
    );
    // Still registered (it never deregistered), but out of picking.
    let ejected: Vec<String> = client
        .balancer
        .ejected()
        .iter()
        .map(|e| format!("{} for {:.1?}", e.addr, e.remaining))
        .collect();
    println!("ejected after the kill: {ejected:?}");
    let kill_ok = errors <= 4 && ejected.len() == 1;

    for mut server in servers {
        if let Some(signal) = server.stop.take() {
            let _ = signal.send(());
        }
        server.task.await??;
    }
    if spread_ok && graceful_ok && kill_ok && tonic_ok {
        println!("ok");
        Ok(())
    } else {
        Err(format!("expectations failed: spread {spread_ok}, balance_channel {tonic_ok}, graceful stop {graceful_ok}, kill {kill_ok}").into())
    }
}

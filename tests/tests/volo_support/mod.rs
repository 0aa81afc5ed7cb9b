//! Shared by the Volo tests: an in-process volo-grpc greeter registered through the
//! `Registrar`, and a volo-grpc client over `VoloDiscover` + `VoloBalance`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use examples::volo_common::{echo, greeter};
use service_registry::volo::{grpc_shutdown, ReportLayer, VoloBalance, VoloDiscover};
use service_registry::{
    service, ControlHandle, Discovery, InfoOverride, Registrar, RegistrarError, Registry,
    ServiceStatus,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use volo::FastStr;
use volo_grpc::server::{Server, ServiceBuilder};

/// The service the in-process greeters register.
pub const SERVICE: &str = "volo.it.greeter";

#[service(name = "volo.it.greeter", weight = 10)]
pub struct ItGreeter {
    served: Arc<AtomicUsize>,
    server: String,
    /// How long each call waits before its reply.
    delay: Duration,
}

impl greeter::Greeter for ItGreeter {
    async fn say_hello(
        &self,
        req: volo_grpc::Request<greeter::HelloRequest>,
    ) -> Result<volo_grpc::Response<greeter::HelloReply>, volo_grpc::Status> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.served.fetch_add(1, Ordering::SeqCst);
        Ok(volo_grpc::Response::new(greeter::HelloReply {
            message: format!("Hello, {}!", req.get_ref().name).into(),
            server: self.server.clone().into(),
        }))
    }
}

/// One greeter serving and registered.
pub struct Running {
    pub addr: SocketAddr,
    pub served: Arc<AtomicUsize>,
    pub control: ControlHandle,
    stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<Result<(), RegistrarError>>,
}

impl Running {
    /// Calls served so far.
    pub fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }

    /// Starts the registrar's shutdown (deregister, drain, stop) and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .expect("the greeter stops within 30 s")
            .unwrap()
            .unwrap();
    }
}

/// Starts a greeter on a free loopback port, registered in `registry`, with `drain`.
pub async fn start_greeter(registry: Arc<dyn Registry>, drain: Duration) -> Running {
    start_greeter_with(registry, drain, InfoOverride::new()).await
}

/// [`start_greeter`], registered with `registered` applied (tags, weight).
pub async fn start_greeter_with(
    registry: Arc<dyn Registry>,
    drain: Duration,
    registered: InfoOverride,
) -> Running {
    start(registry, drain, registered, Duration::ZERO).await
}

/// [`start_greeter`], answering each call after `delay`.
pub async fn start_slow_greeter(
    registry: Arc<dyn Registry>,
    drain: Duration,
    delay: Duration,
) -> Running {
    start(registry, drain, InfoOverride::new(), delay).await
}

async fn start(
    registry: Arc<dyn Registry>,
    drain: Duration,
    registered: InfoOverride,
    delay: Duration,
) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let registrar = Registrar::builder()
        .shared_registry(registry)
        .listen_addr(addr)
        .only([SERVICE])
        .override_service(SERVICE, registered)
        .drain_delay(drain)
        .shutdown_signal(async move {
            let _ = stopped.await;
        })
        .build()
        .unwrap();
    let control = registrar.control();
    let status = registrar.status();
    let served = Arc::new(AtomicUsize::new(0));
    let greeter = greeter::GreeterServer::new(ItGreeter {
        served: served.clone(),
        server: addr.to_string(),
        delay,
    });
    let task = tokio::spawn(registrar.serve(|shutdown| async move {
        Server::new()
            .add_service(ServiceBuilder::new(greeter).build())
            .run_with_shutdown(
                volo::net::incoming::DefaultIncoming::from(listener),
                grpc_shutdown(shutdown),
            )
            .await
    }));
    tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| s.values().all(|s| *s == ServiceStatus::Registered)),
    )
    .await
    .expect("the greeter registers within 10 s");
    Running {
        addr,
        served,
        control,
        stop: Some(stop),
        task,
    }
}

/// A volo-grpc greeter client that finds `service` through `VoloDiscover` over `discovery`
/// (volo-grpc 0.12's load-balance layer makes one attempt: no `retry_count`).
pub fn client(
    discovery: Arc<dyn Discovery>,
    service: &str,
) -> (greeter::GreeterClient, VoloBalance<FastStr>) {
    client_with(VoloDiscover::new(discovery), service)
}

/// [`client`] over a given discover (to follow its change channel too).
pub fn client_with(
    discover: VoloDiscover<Arc<dyn Discovery>>,
    service: &str,
) -> (greeter::GreeterClient, VoloBalance<FastStr>) {
    client_over(discover, service, VoloBalance::default())
}

/// [`client`] over a given discover and balance (a balancer builder of its own).
pub fn client_over(
    discover: VoloDiscover<Arc<dyn Discovery>>,
    service: &str,
    balance: VoloBalance<FastStr>,
) -> (greeter::GreeterClient, VoloBalance<FastStr>) {
    let client = greeter::GreeterClientBuilder::new(service)
        .load_balance(balance.clone())
        .discover(discover)
        .layer_inner(ReportLayer::new(balance.clone()))
        .build();
    (client, balance)
}

/// One call; the answering server's address.
pub async fn hello(client: &greeter::GreeterClient) -> Result<String, String> {
    let request = greeter::HelloRequest {
        name: FastStr::from_static_str("volo"),
    };
    match tokio::time::timeout(Duration::from_secs(5), client.say_hello(request)).await {
        Ok(Ok(reply)) => Ok(reply.into_inner().server.to_string()),
        Ok(Err(status)) => Err(status.to_string()),
        Err(_) => Err("no reply within 5 s".into()),
    }
}

/// One volo-thrift echo call; the answering server's address.
pub async fn ping(client: &echo::EchoClient) -> Result<String, String> {
    let request = echo::EchoRequest {
        message: FastStr::from_static_str("ping"),
    };
    match tokio::time::timeout(Duration::from_secs(5), client.echo(request)).await {
        Ok(Ok(reply)) => Ok(reply.server.to_string()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err("no reply within 5 s".to_string()),
    }
}

/// Whether `balance` holds `addr` for `service` now.
pub fn holds(balance: &VoloBalance<FastStr>, service: &str, addr: SocketAddr) -> bool {
    balance
        .balancer(&FastStr::new(service))
        .is_some_and(|b| b.instances().iter().any(|i| i.addr == addr))
}

/// An etcd discovery whose view lags the registry: every byte between it and `etcd` is
/// delayed by `one_way` each way by a loopback [`FaultProxy`](tests::proxy::FaultProxy)
/// (a client far from etcd, or an etcd slow to notify). Keep the proxy alive while the
/// discovery is used.
#[cfg(feature = "etcd")]
pub async fn lagging_discovery(
    etcd: &tests::fixtures::etcd::Etcd,
    one_way: Duration,
) -> (tests::proxy::FaultProxy, Arc<dyn Discovery>) {
    use service_registry::etcd::{EtcdConfig, EtcdDiscovery};
    let proxy = tests::proxy::FaultProxy::start(etcd.members[0].client_addr()).await;
    proxy.set_latency(one_way);
    let config = EtcdConfig::new(vec![format!("http://{}", proxy.endpoint())]);
    (proxy, Arc::new(EtcdDiscovery::new(config)))
}

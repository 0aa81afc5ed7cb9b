//! A volo-grpc greeter annotated with `#[service]`, registered into etcd (or Nacos) by the
//! `Registrar` once it listens.
//!
//! ```text
//! ETCD_ENDPOINTS=http://127.0.0.1:2379 cargo run -p examples --features volo,etcd --example volo_greeter_server
//! ```
//!
//! Listens on `LISTEN_ADDR` (default `127.0.0.1:0`) and prints
//! `registered example.volo.greeter at <host:port>`. On SIGINT/SIGTERM it deregisters first,
//! keeps serving for the drain delay (`SERVICE_REGISTRY_DRAIN_DELAY`, default 6 s), then lets
//! volo-grpc stop (`run_with_shutdown`) and exits 0.

use std::error::Error;

use examples::volo_common::{announce, greeter, listen, Backend, GREETER};
use service_registry::volo::grpc_shutdown;
use service_registry::{service, Registrar};
use volo_grpc::server::{Server, ServiceBuilder};

#[service(name = "example.volo.greeter", weight = 10, payload_codec = "protobuf")]
struct VoloGreeter {
    server: String,
}

impl greeter::Greeter for VoloGreeter {
    async fn say_hello(
        &self,
        req: volo_grpc::Request<greeter::HelloRequest>,
    ) -> Result<volo_grpc::Response<greeter::HelloReply>, volo_grpc::Status> {
        let reply = greeter::HelloReply {
            message: format!("Hello, {}!", req.get_ref().name).into(),
            server: self.server.clone().into(),
        };
        Ok(volo_grpc::Response::new(reply))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    examples::init_logging();
    let backend = Backend::from_env()?;
    let listener = listen().await?;
    let addr = listener.local_addr()?;
    let registrar = Registrar::builder()
        .shared_registry(backend.registry())
        .listen_addr(addr)
        .only([GREETER])
        .build()?;
    announce(&registrar);
    registrar
        .serve(|shutdown| async move {
            let greeter = greeter::GreeterServer::new(VoloGreeter {
                server: addr.to_string(),
            });
            Server::new()
                .add_service(ServiceBuilder::new(greeter).build())
                .run_with_shutdown(
                    volo::net::incoming::DefaultIncoming::from(listener),
                    grpc_shutdown(shutdown),
                )
                .await
        })
        .await?;
    println!("deregistered; bye");
    Ok(())
}

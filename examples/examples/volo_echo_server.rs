//! A volo-thrift echo annotated with `#[service]`, registered into etcd (or Nacos) by the
//! `Registrar` once it listens.
//!
//! ```text
//! ETCD_ENDPOINTS=http://127.0.0.1:2379 cargo run -p examples --features volo,etcd --example volo_echo_server
//! ```
//!
//! Listens on `LISTEN_ADDR` (default `127.0.0.1:0`) and prints
//! `registered example.volo.echo at <host:port>`. volo-thrift handles SIGINT/SIGHUP/SIGTERM
//! itself; its shutdown hook (`thrift_shutdown`) deregisters first, keeps serving for the
//! drain delay (`SERVICE_REGISTRY_DRAIN_DELAY`, default 6 s), then lets volo-thrift stop.

use std::error::Error;

use examples::volo_common::{announce, echo, listen, Backend, ECHO};
use service_registry::volo::thrift_shutdown;
use service_registry::{service, Registrar};

#[service(name = "example.volo.echo", weight = 10, payload_codec = "thrift")]
struct VoloEcho {
    server: String,
}

impl echo::Echo for VoloEcho {
    async fn echo(
        &self,
        req: echo::EchoRequest,
    ) -> Result<echo::EchoResponse, volo_thrift::ServerError> {
        Ok(echo::EchoResponse {
            message: req.message,
            server: self.server.clone().into(),
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    examples::init_logging();
    let backend = Backend::from_env()?;
    let listener = listen().await?;
    let addr = listener.local_addr()?;
    let (hook, signal) = thrift_shutdown();
    let registrar = Registrar::builder()
        .shared_registry(backend.registry())
        .listen_addr(addr)
        .only([ECHO])
        .shutdown_signal(signal)
        .build()?;
    announce(&registrar);
    registrar
        .serve(|shutdown| async move {
            echo::EchoServer::new(VoloEcho {
                server: addr.to_string(),
            })
            .register_shutdown_hook(hook.until(shutdown))
            .run(volo::net::incoming::DefaultIncoming::from(listener))
            .await
        })
        .await?;
    println!("deregistered; bye");
    Ok(())
}

//! Two annotated services on a real TCP listener, registered into Nacos.
//!
//! ```text
//! serverAddr=127.0.0.1 serverPort=8848 cargo run -p examples --features nacos --example nacos
//! ```
//!
//! Reads Kitex's variables (`serverAddr`, `serverPort`, `namespace`, `KITEX_NACOS_ENV_TAGS`)
//! plus `NACOS_GRPC_PORT`, `NACOS_USERNAME` and `NACOS_PASSWORD`. Listens on `LISTEN_ADDR`
//! (default `0.0.0.0:0`), prints `registered <service> at <host:port>` once each service is
//! registered, and on SIGINT/SIGTERM deregisters, closes the connection and exits 0. Each
//! connection gets one line back per line: `example.echo says <line>`, or the upper-cased text
//! for `shout <text>`.

use std::error::Error;

use service_registry::nacos::{NacosConfig, NacosRegistry};

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    examples::init_logging();
    let registry = NacosRegistry::new(NacosConfig::from_env()?)?;
    // Deregisters at shutdown, then closes the registry.
    examples::serve_example_services(registry).await?;
    println!("deregistered; bye");
    Ok(())
}

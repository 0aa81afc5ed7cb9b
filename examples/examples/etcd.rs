//! Two annotated services on a real TCP listener, registered into etcd.
//!
//! ```text
//! ETCD_ENDPOINTS=http://127.0.0.1:2379 cargo run -p examples --features etcd --example etcd
//! ```
//!
//! Listens on `LISTEN_ADDR` (default `0.0.0.0:0`), prints `registered <service> at <host:port>`
//! once each service is registered, and on SIGINT/SIGTERM deregisters, revokes the lease and
//! exits 0. Each connection gets one line back per line: `example.echo says <line>`, or the
//! upper-cased text for `shout <text>`.

use std::error::Error;

use service_registry::etcd::{EtcdConfig, EtcdRegistry};

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    examples::init_logging();
    let registry = EtcdRegistry::new(EtcdConfig::from_env()?)?;
    // Deregisters at shutdown, then closes the registry.
    examples::serve_example_services(registry).await?;
    println!("deregistered; bye");
    Ok(())
}

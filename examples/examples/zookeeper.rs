//! Two annotated services on a real TCP listener, registered into ZooKeeper.
//!
//! ```text
//! ZOOKEEPER_ENDPOINTS=127.0.0.1:2181 cargo run -p examples --features zookeeper --example zookeeper
//! ```
//!
//! Listens on `LISTEN_ADDR` (default `0.0.0.0:0`), prints `registered <service> at <host:port>`
//! once each service is registered, and on SIGINT/SIGTERM deletes its nodes, closes the session
//! and exits 0. `ZOOKEEPER_SESSION_TIMEOUT` (seconds) changes the 10 s session timeout.

use std::error::Error;

use service_registry::zookeeper::{ZookeeperConfig, ZookeeperRegistry};

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    examples::init_logging();
    let registry = ZookeeperRegistry::new(ZookeeperConfig::from_env()?)?;
    // Deregisters at shutdown, then closes the registry.
    examples::serve_example_services(registry).await?;
    println!("deregistered; bye");
    Ok(())
}

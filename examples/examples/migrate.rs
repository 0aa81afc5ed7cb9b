//! A fleet moving from etcd to ZooKeeper: the server registers into both registries at once,
//! and a client reads both as one set through `MergedDiscovery`.
//!
//! ```text
//! ETCD_ENDPOINTS=http://127.0.0.1:2379 ZOOKEEPER_ENDPOINTS=127.0.0.1:2181 \
//!     cargo run -p examples --features etcd,zookeeper --example migrate
//! ```
//!
//! Prints `registered <service> at <host:port>` once a service is registered in both, then
//! `merged view of example.echo: <n> instance(s)` as seen through both registries, and on
//! SIGINT/SIGTERM deregisters from both (drain: `SERVICE_REGISTRY_DRAIN_DELAY`, default 6 s)
//! and exits 0. With one registry down the other is registered at once and the status says
//! which one is retrying.

use std::error::Error;
use std::sync::Arc;

use service_registry::etcd::{EtcdConfig, EtcdDiscovery, EtcdRegistry};
use service_registry::zookeeper::{ZookeeperConfig, ZookeeperDiscovery, ZookeeperRegistry};
use service_registry::{Discovery, MergedDiscovery, Registry};

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    examples::init_logging();
    let etcd = EtcdRegistry::new(EtcdConfig::from_env()?)?;
    let zookeeper = ZookeeperRegistry::new(ZookeeperConfig::from_env()?)?;

    // The client side of the migration: the registry services move to comes first, so its
    // data wins for an instance both list.
    let merged = MergedDiscovery::new()
        .source(
            "zookeeper",
            ZookeeperDiscovery::new(ZookeeperConfig::from_env()?),
        )
        .source("etcd", EtcdDiscovery::new(EtcdConfig::from_env()?));
    tokio::spawn(async move {
        let mut changes = match merged.watch("example.echo").await {
            Ok(changes) => changes,
            Err(err) => return eprintln!("cannot watch example.echo: {err}"),
        };
        use futures_util::StreamExt;
        while let Some(change) = changes.next().await {
            if !change.all.is_empty() {
                println!(
                    "merged view of example.echo: {} instance(s)",
                    change.all.len()
                );
            }
        }
    });

    // Deregisters from both at shutdown, then closes both.
    let registries: Vec<Arc<dyn Registry>> = vec![Arc::new(etcd), Arc::new(zookeeper)];
    examples::serve_example_services_in(registries).await?;
    println!("deregistered from etcd and ZooKeeper; bye");
    Ok(())
}

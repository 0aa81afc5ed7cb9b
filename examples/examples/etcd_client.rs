//! Resolves and watches a service in etcd, calls an instance on every change, and prints what
//! it sees.
//!
//! ```text
//! ETCD_ENDPOINTS=http://127.0.0.1:2379 cargo run -p examples --features etcd --example etcd_client -- example.echo
//! ```
//!
//! Prints `resolved <n> instances`, then for each change `change +<added> ~<updated> -<removed>
//! now <n>` and `called <addr>: <reply>` for one current instance. Stops after `MAX_CHANGES`
//! changes (default: never) or on Ctrl-C.

use std::error::Error;
use std::time::Duration;

use futures_util::StreamExt;
use service_registry::etcd::{EtcdConfig, EtcdDiscovery};
use service_registry::{Discovery, Instance};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

async fn call(instance: &Instance) -> std::io::Result<String> {
    let exchange = async {
        let mut stream = TcpStream::connect(instance.addr).await?;
        stream.write_all(b"hello\n").await?;
        let mut reply = String::new();
        BufReader::new(stream).read_line(&mut reply).await?;
        Ok(reply.trim_end().to_string())
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no reply within 2 s"))?
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let service = std::env::args()
        .nth(1)
        .ok_or("usage: etcd_client <service name>")?;
    let max_changes: usize = std::env::var("MAX_CHANGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(usize::MAX);
    let discovery = EtcdDiscovery::new(EtcdConfig::from_env()?);

    let instances = discovery.resolve(&service).await?;
    println!("resolved {} instances", instances.len());
    let mut changes = discovery.watch(&service).await?;
    let mut seen = 0;
    while seen < max_changes {
        let change = tokio::select! {
            change = changes.next() => match change { Some(c) => c, None => break },
            _ = tokio::signal::ctrl_c() => break,
        };
        seen += 1;
        println!(
            "change +{} ~{} -{} now {}",
            change.added.len(),
            change.updated.len(),
            change.removed.len(),
            change.all.len()
        );
        if let Some(instance) = change.all.first() {
            match call(instance).await {
                Ok(reply) => println!("called {}: {reply}", instance.addr),
                Err(err) => println!("call to {} failed: {err}", instance.addr),
            }
        }
    }
    Ok(())
}

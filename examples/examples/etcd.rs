//! Two annotated services on a real TCP listener, registered into etcd.
//!
//! ```text
//! ETCD_ENDPOINTS=http://127.0.0.1:2379 cargo run -p examples --features etcd --example etcd
//! ```
//!
//! Listens on `LISTEN_ADDR` (default `0.0.0.0:0`), prints `registered <service> at <host:port>`
//! once each service is registered, and on SIGINT/SIGTERM deregisters, revokes the lease and
//! exits 0. Each connection gets one line back: `<service> says <line>` for `echo` requests and
//! the upper-cased line for `shout` requests (`shout <text>`).

use std::collections::BTreeSet;
use std::error::Error;

use service_registry::etcd::{EtcdConfig, EtcdRegistry};
use service_registry::{service, Registrar, ServiceStatus};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Echoes lines.
#[service(name = "example.echo", weight = 10, tag(idc = "${IDC:-hz}"))]
pub struct Echo;

/// Shouts lines.
#[service(name = "example.shout", weight = 20, payload_codec = "json")]
pub struct Shout;

async fn handle(socket: TcpStream) -> std::io::Result<()> {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        let reply = match line.split_once(' ') {
            Some(("shout", text)) => text.to_uppercase(),
            _ => format!("example.echo says {line}"),
        };
        write.write_all(format!("{reply}\n").as_bytes()).await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let listen = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "0.0.0.0:0".into());
    let listener = TcpListener::bind(&listen).await?;
    let registry = EtcdRegistry::new(EtcdConfig::from_env())?;
    let registrar = Registrar::builder()
        .registry(registry.clone())
        .listen_addr(listener.local_addr()?)
        .only(["example.echo", "example.shout"])
        .build()?;
    let addrs: Vec<_> = registrar
        .infos()
        .iter()
        .map(|i| (i.service_name.clone(), i.addr))
        .collect();

    let mut status = registrar.status();
    tokio::spawn(async move {
        let mut printed = BTreeSet::new();
        loop {
            for (name, addr) in &addrs {
                if status.get(name) == Some(ServiceStatus::Registered)
                    && printed.insert(name.clone())
                {
                    println!("registered {name} at {addr}");
                }
            }
            if printed.len() == addrs.len() || !status.changed().await {
                return;
            }
        }
    });

    registrar
        .serve(|shutdown| async move {
            tokio::pin!(shutdown);
            loop {
                tokio::select! {
                    () = &mut shutdown => return Ok::<_, std::io::Error>(()),
                    accepted = listener.accept() => {
                        let (socket, _) = accepted?;
                        tokio::spawn(handle(socket));
                    }
                }
            }
        })
        .await?;
    registry.close().await;
    println!("deregistered; bye");
    Ok(())
}

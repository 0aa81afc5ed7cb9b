//! Pieces shared by the backend examples (`etcd`, `zookeeper`): two annotated services on one
//! TCP listener, registered through the `Registrar` into whichever registry the example built.

#[cfg(feature = "volo")]
pub mod volo_common;

use std::collections::BTreeSet;
use std::error::Error;
use std::sync::Arc;

use service_registry::{service, Registrar, Registry, ServiceStatus};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Echoes lines: `example.echo says <line>`.
#[service(name = "example.echo", weight = 10, tag(idc = "${IDC:-hz}"))]
pub struct Echo;

/// Shouts lines sent as `shout <text>`.
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

/// Logs to stderr at `RUST_LOG` (default `warn`).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
}

/// Serves both services on `LISTEN_ADDR` (default `0.0.0.0:0`) until SIGINT/SIGTERM, printing
/// `registered <service> at <host:port>` once each is registered in `registry`.
pub async fn serve_example_services(registry: impl Registry) -> Result<(), Box<dyn Error>> {
    serve_example_services_in(vec![Arc::new(registry)]).await
}

/// Prints `registered <service> at <host:port>` once each service of `registrar` is
/// registered (in every registry it registers into); the tests read these lines.
pub fn announce(registrar: &Registrar) {
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
}

/// [`serve_example_services`] registering into every registry of `registries` at once (the
/// `registered` line appears once a service is registered in all of them).
pub async fn serve_example_services_in(
    registries: Vec<Arc<dyn Registry>>,
) -> Result<(), Box<dyn Error>> {
    let listen = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "0.0.0.0:0".into());
    let listener = TcpListener::bind(&listen).await?;
    let builder = registries
        .into_iter()
        .fold(Registrar::builder(), |b, r| b.shared_registry(r));
    let registrar = builder
        .listen_addr(listener.local_addr()?)
        .only(["example.echo", "example.shout"])
        .build()?;
    announce(&registrar);

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
    Ok(())
}

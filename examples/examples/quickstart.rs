//! Two annotated services on a real TCP listener, registered into the in-memory registry; a
//! client in the same process finds `echo` through discovery, calls it, and prints the reply;
//! then a graceful shutdown removes every instance.
//!
//! ```text
//! cargo run -p examples --example quickstart
//! ```

use std::error::Error;

use service_registry::{service, Discovery, MemoryRegistry, Registrar, ServiceStatus};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Echoes each line back.
#[service(name = "echo", weight = 10, tag(idc = "${IDC:-hz}"))]
pub struct Echo;

/// Answers each line in upper case (shares the listener: one server, two services).
#[service(name = "shout", weight = 5, payload_codec = "json", warmup = "500ms")]
pub struct Shout;

async fn handle(socket: TcpStream) -> std::io::Result<()> {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        let reply = match line.split_once(' ') {
            Some(("shout", text)) => text.to_uppercase(),
            _ => line,
        };
        write.write_all(format!("{reply}\n").as_bytes()).await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .init();

    let registry = MemoryRegistry::new();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let (stop, stopped) = oneshot::channel::<()>();
    let registrar = Registrar::builder()
        .registry(registry.clone())
        .listen_addr(listener.local_addr()?)
        // Every client of this demo lives in this process and watches, so nothing to wait
        // for after deregistering; a real server keeps the default drain (6 s).
        .drain_delay(std::time::Duration::ZERO)
        .shutdown_signal(async {
            let _ = stopped.await;
        })
        .build()?;
    let status = registrar.status();
    let server = tokio::spawn(registrar.serve(|shutdown| async move {
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
    }));

    status
        .wait_for(|all| all.values().all(|s| *s == ServiceStatus::Registered))
        .await
        .ok_or("the registrar stopped before registering")?;

    // The client side: find `echo` only through discovery.
    let instances = registry.resolve("echo").await?;
    let instance = instances.first().ok_or("echo is not registered")?;
    println!(
        "resolved echo at {} (weight {}, tags {:?})",
        instance.addr, instance.weight, instance.tags
    );
    let mut stream = TcpStream::connect(instance.addr).await?;
    stream.write_all(b"hello, registry\n").await?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).await?;
    println!("echo replied: {}", reply.trim_end());

    stop.send(()).map_err(|_| "the registrar is gone")?;
    server.await??;
    let left = registry.service_names();
    println!("after shutdown the registry lists {} services", left.len());
    if !left.is_empty() {
        return Err(format!("still registered: {left:?}").into());
    }
    Ok(())
}

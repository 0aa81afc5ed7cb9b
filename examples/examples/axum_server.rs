//! An axum HTTP server whose routes are `#[service]`s, registered while it serves and removed
//! before it stops. Stops on Ctrl-C, or after one request to `/quit`.
//!
//! ```text
//! LISTEN_ADDR=127.0.0.1:3000 cargo run -p examples --example axum_server
//! curl http://127.0.0.1:3000/hello
//! ```

use std::error::Error;
use std::future::IntoFuture;

use axum::routing::get;
use axum::Router;
use service_registry::{service, MemoryRegistry, Registrar, ServiceStatus};
use tokio::sync::mpsc;

/// `GET /hello`.
#[service(name = "web.hello", payload_codec = "json", tag(proto = "http"))]
pub struct Hello;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr) // stdout carries the `registered ..` line
        .init();
    let listen = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1:0".into());
    let listener = tokio::net::TcpListener::bind(&listen).await?;

    let (quit_tx, mut quit_rx) = mpsc::channel::<()>(1);
    let app = Router::new()
        .route("/hello", get(|| async { "hello from axum\n" }))
        .route(
            "/quit",
            get(move || {
                let quit = quit_tx.clone();
                async move {
                    let _ = quit.try_send(());
                    "bye\n"
                }
            }),
        );

    let registrar = Registrar::builder()
        // This process's own in-memory registry, chosen on purpose: left out, the registrar
        // uses the same one but warns that nobody else can find the server.
        .registry(MemoryRegistry::global().clone())
        .listen_addr(listener.local_addr()?)
        .shutdown_signal(async move {
            tokio::select! {
                _ = quit_rx.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        })
        .build()?;
    let mut status = registrar.status();
    let addr = registrar.infos()[0].addr;
    tokio::spawn(async move {
        loop {
            if status.get("web.hello") == Some(ServiceStatus::Registered) {
                println!("registered web.hello at {addr}");
                return;
            }
            if !status.changed().await {
                return;
            }
        }
    });
    registrar
        .serve(|shutdown| {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .into_future()
        })
        .await?;
    println!("deregistered and stopped");
    Ok(())
}

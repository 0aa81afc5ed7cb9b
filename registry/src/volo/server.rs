//! Server glue: a volo-grpc or volo-thrift server registers through the [`Registrar`] and, on
//! SIGTERM, deregisters first, drains, then stops.
//!
//! [`Registrar`]: crate::Registrar

use std::future::Future;
use std::pin::Pin;

use tokio::sync::oneshot;

use crate::ShutdownSignal;

/// The signal volo-grpc's `Server::run_with_shutdown(incoming, signal)` wants: completes when
/// the registrar has deregistered every service and drained.
///
/// volo-grpc installs no signal handler of its own in `run_with_shutdown`, so the registrar's
/// SIGINT/SIGTERM handling (or its `shutdown_signal`) drives the order: deregister, drain, then
/// this completes and the server stops accepting and finishes its connections.
///
/// ```no_run
/// # async fn doc(listener: tokio::net::TcpListener) -> Result<(), Box<dyn std::error::Error>> {
/// use service_registry::{volo::grpc_shutdown, Registrar};
/// let registrar = Registrar::builder().listen_addr(listener.local_addr()?).build()?;
/// registrar
///     .serve(|shutdown| async move {
///         # let server: Result<(), std::io::Error> = { let _ = grpc_shutdown(shutdown); Ok(()) };
///         // volo_grpc::server::Server::new().add_service(..)
///         //     .run_with_shutdown(volo::net::DefaultIncoming::from(listener), grpc_shutdown(shutdown))
///         //     .await
///         # server
///     })
///     .await?;
/// # Ok(()) }
/// ```
pub async fn grpc_shutdown(shutdown: ShutdownSignal) -> std::io::Result<()> {
    shutdown.await;
    Ok(())
}

/// The future volo-thrift's `register_shutdown_hook` takes.
pub type HookFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Joins volo-thrift's own signal handling to the registrar's shutdown order.
///
/// volo-thrift's `Server::run` installs its own SIGINT/SIGHUP/SIGTERM handlers and, on a
/// signal, awaits its shutdown hooks while it still accepts, then stops. [`thrift_shutdown`]
/// makes the signal the registrar's start: [`ThriftSignal`] goes to
/// [`RegistrarBuilder::shutdown_signal`](crate::RegistrarBuilder::shutdown_signal), and the hook
/// ([`ThriftHook::until`], given the [`ShutdownSignal`] that `serve` hands out) tells the
/// registrar and then holds volo-thrift's shutdown until every service is deregistered and the
/// drain is over. No second signal handler competes with volo-thrift's.
///
/// ```no_run
/// # async fn doc(listener: tokio::net::TcpListener) -> Result<(), Box<dyn std::error::Error>> {
/// use service_registry::{volo::thrift_shutdown, Registrar};
/// let (hook, signal) = thrift_shutdown();
/// let registrar = Registrar::builder()
///     .listen_addr(listener.local_addr()?)
///     .shutdown_signal(signal)
///     .build()?;
/// registrar
///     .serve(|shutdown| async move {
///         let hook = hook.until(shutdown);
///         # let server: Result<(), std::io::Error> = { let _ = hook; Ok(()) };
///         // volo_gen::..::EchoServer::new(Echo).register_shutdown_hook(hook)
///         //     .run(volo::net::DefaultIncoming::from(listener)).await
///         # server
///     })
///     .await?;
/// # Ok(()) }
/// ```
pub fn thrift_shutdown() -> (ThriftHook, ThriftSignal) {
    let (called, wait) = oneshot::channel();
    (ThriftHook { called }, ThriftSignal { wait: Some(wait) })
}

/// The hook half of [`thrift_shutdown`].
#[derive(Debug)]
pub struct ThriftHook {
    called: oneshot::Sender<()>,
}

impl ThriftHook {
    /// The shutdown hook for volo-thrift's `register_shutdown_hook`: when volo-thrift calls it
    /// (it got a signal), it starts the registrar's shutdown and completes once `shutdown` does
    /// (every service deregistered, the drain over).
    ///
    /// See [`thrift_shutdown`] for an example.
    pub fn until(self, shutdown: ShutdownSignal) -> impl FnOnce() -> HookFuture + Send + 'static {
        move || {
            Box::pin(async move {
                tracing::info!("volo-thrift shutdown hook: deregistering before the server stops");
                let _ = self.called.send(());
                shutdown.await;
            }) as HookFuture
        }
    }
}

/// The signal half of [`thrift_shutdown`]: completes when volo-thrift calls the hook. If the
/// hook is dropped uncalled (the server ended on its own), it never completes; the registrar
/// sees the server's end instead.
#[derive(Debug)]
pub struct ThriftSignal {
    wait: Option<oneshot::Receiver<()>>,
}

impl Future for ThriftSignal {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let Some(wait) = self.wait.as_mut() else {
            return std::task::Poll::Pending;
        };
        match Pin::new(wait).poll(cx) {
            std::task::Poll::Ready(Ok(())) => std::task::Poll::Ready(()),
            std::task::Poll::Ready(Err(_)) => {
                self.wait = None; // the hook is gone: never
                std::task::Poll::Pending
            }
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

//! The registrar: registers every `#[service]` once the server is bound, keeps retrying until
//! the registry has them, and removes them before the server stops.

mod advertise;
mod builder;
mod checks;
mod control;
mod desired;
mod drain;
mod error;
mod lifecycle;
mod overrides;
mod status;

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::backoff::Backoff;
use crate::info::Info;
use crate::registry::{BoxError, Health};

pub use builder::RegistrarBuilder;
pub use checks::{CheckOutcome, HealthCheck};
pub use control::ControlHandle;
pub use error::RegistrarError;
pub use overrides::InfoOverride;
pub use status::{ServiceStatus, StatusHandle};

use builder::ShutdownFuture;
use checks::BoxFuture;
use desired::DesiredSet;
use lifecycle::NamedRegistry;
use status::StatusBoard;

/// Registers the linked `#[service]` types while a server runs.
///
/// Give it one or more registries, the bound listener's address and the server;
/// [`serve`](Self::serve) registers every service in the background once the
/// [readiness gate](RegistrarBuilder::ready_when) passes (retrying forever with backoff, never
/// stopping the server), follows the [health check](RegistrarBuilder::health_check) and the
/// [`ControlHandle`], and on SIGINT/SIGTERM or the
/// [`shutdown_signal`](RegistrarBuilder::shutdown_signal) it deregisters every service first,
/// keeps serving for the [drain delay](RegistrarBuilder::drain_delay) so clients stop calling,
/// then tells the server to stop, waits for it up to the grace period, closes every registry
/// ([`Registry::close`](crate::Registry::close)) and returns.
///
/// ```no_run
/// use service_registry::{service, Registrar};
/// use tokio::io::AsyncWriteExt;
///
/// #[service(name = "hello", weight = 10, tag(idc = "hz"))]
/// struct Hello;
///
/// #[tokio::main]
/// async fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
///     Registrar::builder()
///         .listen_addr(listener.local_addr()?)
///         .build()?
///         .serve(|shutdown| async move {
///             tokio::pin!(shutdown);
///             loop {
///                 tokio::select! {
///                     _ = &mut shutdown => return Ok::<_, std::io::Error>(()),
///                     accepted = listener.accept() => {
///                         let (mut socket, _) = accepted?;
///                         tokio::spawn(async move { let _ = socket.write_all(b"hello\n").await; });
///                     }
///                 }
///             }
///         })
///         .await?;
///     Ok(())
/// }
/// ```
pub struct Registrar {
    registries: Vec<NamedRegistry>,
    /// The one record of what each service registers (and whether it should be now).
    desired: DesiredSet,
    board: StatusBoard,
    advertised: SocketAddr,
    backoff: Backoff,
    register_timeout: Duration,
    deregister_timeout: Duration,
    grace_period: Duration,
    drain_delay: Duration,
    shutdown: Option<ShutdownFuture>,
    readiness: Option<BoxFuture<()>>,
    health_check: Option<HealthCheck>,
}

impl std::fmt::Debug for Registrar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registrar")
            .field("infos", &self.desired.infos())
            .field(
                "registries",
                &self.registries.iter().map(|r| &r.name).collect::<Vec<_>>(),
            )
            .field("backoff", &self.backoff)
            .field("drain_delay", &self.drain_delay)
            .field("health_check", &self.health_check)
            .finish_non_exhaustive()
    }
}

/// Completes when the registrar wants the server to stop (after deregistration).
///
/// ```
/// # use service_registry::{service, MemoryRegistry, Registrar};
/// # #[service(name = "signal-doc")] struct Doc;
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let registrar = Registrar::builder()
///     .registry(MemoryRegistry::new())
///     .listen_addr("127.0.0.1:9".parse().unwrap())
///     .only(["signal-doc"])
///     .shutdown_signal(async {}) // shut down at once
///     .build()
///     .unwrap();
/// registrar
///     .serve(|shutdown: service_registry::ShutdownSignal| async move {
///         shutdown.await; // completes once the service is deregistered
///         Ok::<_, std::io::Error>(())
///     })
///     .await
///     .unwrap();
/// # }
/// ```
///
/// Pass it to the server's graceful shutdown: axum's `with_graceful_shutdown(shutdown)`,
/// tonic's `serve_with_incoming_shutdown(incoming, shutdown)`, or a `select!` in an accept loop.
#[derive(Debug)]
pub struct ShutdownSignal(oneshot::Receiver<()>);

impl Future for ShutdownSignal {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // A dropped sender also means "stop".
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

impl Registrar {
    /// Starts a [`RegistrarBuilder`].
    ///
    /// ```
    /// let builder = service_registry::Registrar::builder();
    /// # let _ = builder;
    /// ```
    pub fn builder() -> RegistrarBuilder {
        RegistrarBuilder::default()
    }

    /// A handle that takes services out of rotation and changes their weight or tags while the
    /// server runs.
    ///
    /// See [`ControlHandle`] for an example.
    pub fn control(&self) -> ControlHandle {
        ControlHandle::new(self.desired.clone(), self.board.handle())
    }

    /// The drain delay in effect (`SERVICE_REGISTRY_DRAIN_DELAY` if set, else the builder's).
    ///
    /// ```
    /// # use service_registry::{service, MemoryRegistry, Registrar};
    /// # #[service(name = "drain-doc")] struct Doc;
    /// let registrar = Registrar::builder()
    ///     .listen_addr("127.0.0.1:9".parse().unwrap())
    ///     .only(["drain-doc"])
    ///     .drain_delay(std::time::Duration::from_secs(2))
    ///     .build()
    ///     .unwrap();
    /// # if std::env::var_os("SERVICE_REGISTRY_DRAIN_DELAY").is_none() {
    /// assert_eq!(registrar.drain_delay(), std::time::Duration::from_secs(2));
    /// # }
    /// ```
    pub fn drain_delay(&self) -> Duration {
        self.drain_delay
    }

    /// What each service registers, one [`Info`] per service, ordered by service name: as
    /// built, with every change made since through a [`ControlHandle`] (the same record the
    /// registration tasks follow).
    ///
    /// ```
    /// use service_registry::{service, InfoOverride, MemoryRegistry, Registrar};
    /// # #[service(name = "infos-doc")] struct Doc;
    /// let registrar = Registrar::builder()
    ///     .registry(MemoryRegistry::new())
    ///     .listen_addr("127.0.0.1:8080".parse().unwrap())
    ///     .only(["infos-doc"])
    ///     .build()
    ///     .unwrap();
    /// registrar.control().update("infos-doc", InfoOverride::new().weight(7)).unwrap();
    /// assert_eq!(registrar.infos()[0].weight, 7);
    /// ```
    pub fn infos(&self) -> Vec<Info> {
        self.desired.infos()
    }

    /// A handle on every service's registration status.
    ///
    /// See [`StatusHandle`] for an example.
    pub fn status(&self) -> StatusHandle {
        self.board.handle()
    }

    /// Runs the server built by `server` and manages the registrations around it.
    ///
    /// `server` receives a [`ShutdownSignal`] that completes once every service is deregistered;
    /// the server should then stop accepting and finish. If the server future ends on its own,
    /// the services are deregistered and its result returned.
    ///
    /// See [`Registrar`] for an example.
    pub async fn serve<F, Fut, E>(mut self, server: F) -> Result<(), RegistrarError>
    where
        F: FnOnce(ShutdownSignal) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send,
        E: Into<BoxError>,
    {
        let (stop_server, stop_signal) = oneshot::channel();
        let server = server(ShutdownSignal(stop_signal));
        tokio::pin!(server);

        let holdings = lifecycle::Holdings::default();
        let mut tasks: Vec<JoinHandle<()>> = Vec::new();
        for name in self.desired.names() {
            let Some(desired) = self.desired.subscribe(name) else {
                continue;
            };
            for target in &self.registries {
                tasks.push(tokio::spawn(lifecycle::keep(
                    target.clone(),
                    desired.clone(),
                    self.board.clone(),
                    holdings.clone(),
                    self.backoff.clone(),
                    self.register_timeout,
                )));
            }
        }
        for target in &self.registries {
            if let Some(rx) = target.registry.health() {
                tasks.push(tokio::spawn(follow_health(
                    rx,
                    self.board.clone(),
                    target.name.clone(),
                )));
            }
        }
        let readiness = self.readiness.take();
        let health_check = self.health_check.take();
        if readiness.is_some() || health_check.is_some() {
            let desired = self.desired.clone();
            let addr = self.advertised;
            tasks.push(tokio::spawn(async move {
                if let Some(ready) = readiness {
                    if let Err(panic) = AssertUnwindSafe(ready).catch_unwind().await {
                        // A future that panicked cannot be polled again: the gate never passes.
                        let error = format!(
                            "the readiness gate panicked: {}; nothing is registered (restart the process)",
                            lifecycle::panic_text(panic)
                        );
                        tracing::error!("{error}");
                        desired.update_all(|d| d.gate_failed = Some(error.clone()));
                        return;
                    }
                    desired.update_all(|d| d.ready = true);
                }
                if let Some(check) = health_check {
                    check.run(addr, desired).await;
                }
            }));
        }

        let custom_shutdown = self.shutdown.is_some();
        let shutdown = self.shutdown.take().unwrap_or_else(os_signal);
        let early_exit = tokio::select! {
            result = &mut server => Some(result),
            () = shutdown => None,
        };
        // From the first signal on, a second SIGINT/SIGTERM cuts short whatever is still waited
        // for: the deregistration, then the drain.
        let mut second_signal: ShutdownFuture = if custom_shutdown || early_exit.is_some() {
            Box::pin(std::future::pending())
        } else {
            os_signal()
        };

        for task in &tasks {
            task.abort();
        }
        let was_registered = self.board.any_live();
        // What each service registers now, live changes included.
        let current: Vec<Info> = self.desired.infos();
        // Keep serving while the registrations are withdrawn: clients still routed here must be
        // answered until the registry no longer lists this instance.
        let withdraw = async {
            for task in tasks {
                // Wait until no register call can still be in flight; a cancelled task is fine.
                let _ = task.await;
            }
            lifecycle::deregister_all(
                &self.registries,
                &current,
                &holdings,
                &self.board,
                self.deregister_timeout,
            )
            .await;
        };
        let (early_exit, cut_short) = match early_exit {
            Some(result) => {
                withdraw.await;
                (Some(result), false)
            }
            None => match keep_serving(server.as_mut(), withdraw, second_signal.as_mut()).await {
                Withdrawal::Done => (None, false),
                Withdrawal::ServerEnded(result) => (Some(result), false),
                Withdrawal::CutShort => (None, true),
            },
        };
        let early_exit = match early_exit {
            None if was_registered && !cut_short && !self.drain_delay.is_zero() => {
                drain(server.as_mut(), self.drain_delay, second_signal.as_mut()).await
            }
            other => other,
        };

        let result = match early_exit {
            Some(result) => {
                tracing::warn!("the server stopped on its own; its services were deregistered");
                result
            }
            None => {
                let _ = stop_server.send(());
                match tokio::time::timeout(self.grace_period, &mut server).await {
                    Ok(result) => result,
                    Err(_) => {
                        tracing::warn!(grace = ?self.grace_period, "the server did not stop within the grace period; dropping it");
                        Ok(())
                    }
                }
            }
        };
        close_registries(&self.registries).await;
        result.map_err(|err| RegistrarError::Server(err.into()))
    }
}

/// Closes every registry this registrar holds the last reference to, all at once (each close
/// is bounded by its backend's close timeout). A [`shared_registry`](RegistrarBuilder::shared_registry)
/// still held elsewhere (another registrar of the same process, a client) is left open for
/// its other holders; the last one to drop it closes it, or its owner does.
async fn close_registries(registries: &[NamedRegistry]) {
    futures_util::future::join_all(registries.iter().map(|target| async move {
        // Every task of this registrar has ended by now: only `registries` holds it here.
        if Arc::strong_count(&target.registry) > 1 {
            tracing::debug!(registry = %target.name, "the registry is shared and still held elsewhere; left open");
            return;
        }
        tracing::debug!(registry = %target.name, "closing the registry");
        target.registry.close().await;
    }))
    .await;
}

/// Keeps serving for `delay` after deregistration so that clients stop calling first; a second
/// SIGINT/SIGTERM (`second_signal`) cuts it short. Returns the server's result if it ended
/// meanwhile.
async fn drain<S: Future>(
    server: Pin<&mut S>,
    delay: Duration,
    second_signal: Pin<&mut (dyn Future<Output = ()> + Send)>,
) -> Option<S::Output> {
    tracing::info!(?delay, "deregistered; draining before the server stops");
    tokio::select! {
        () = tokio::time::sleep(delay) => None,
        () = second_signal => {
            tracing::info!("second signal: stopping without the rest of the drain");
            None
        }
        result = server => Some(result),
    }
}

/// How the deregistration at shutdown ended.
enum Withdrawal<T> {
    /// Every deregistration call returned.
    Done,
    /// The server ended meanwhile (the deregistration was still waited for): its result.
    ServerEnded(T),
    /// A second signal cut the wait short.
    CutShort,
}

/// Runs `work` while still polling `server`, until `work` is done or `second_signal` comes.
async fn keep_serving<S: Future>(
    mut server: Pin<&mut S>,
    work: impl Future<Output = ()>,
    mut second_signal: Pin<&mut (dyn Future<Output = ()> + Send)>,
) -> Withdrawal<S::Output> {
    tokio::pin!(work);
    let cut_short = || {
        tracing::warn!(
            "second signal: stopping without waiting for the rest of the deregistration; \
             what is left expires with its lease or session"
        );
        Withdrawal::CutShort
    };
    tokio::select! {
        () = &mut work => Withdrawal::Done,
        () = &mut second_signal => cut_short(),
        result = &mut server => {
            tokio::select! {
                () = &mut work => Withdrawal::ServerEnded(result),
                () = &mut second_signal => {
                    cut_short();
                    Withdrawal::ServerEnded(result)
                }
            }
        }
    }
}

/// Mirrors the backend's health onto the status of every live service.
async fn follow_health(
    rx: tokio::sync::watch::Receiver<Health>,
    board: StatusBoard,
    registry: String,
) {
    let span = tracing::info_span!("registry_health", registry = %registry);
    tracing::Instrument::instrument(follow_health_inner(rx, board, registry), span).await
}

async fn follow_health_inner(
    mut rx: tokio::sync::watch::Receiver<Health>,
    board: StatusBoard,
    registry: String,
) {
    let mut lost_at: Option<std::time::Instant> = None;
    loop {
        let health = rx.borrow_and_update().clone();
        let affected = board.apply_health(&registry, &health);
        match (&health, lost_at) {
            (Health::Recovering { .. }, None) => lost_at = Some(std::time::Instant::now()),
            (Health::Healthy, Some(at)) => {
                let took = at.elapsed();
                tracing::info!(registry, ?took, "recovered");
                crate::metrics::recovered(&registry, took);
                lost_at = None;
            }
            _ => {}
        }
        match &health {
            Health::Healthy if affected > 0 => {
                tracing::info!(
                    registry,
                    services = affected,
                    "registry connection healthy again"
                )
            }
            Health::Failed { error } => {
                tracing::error!(registry, services = affected, %error, "the registry failed for good")
            }
            Health::Recovering {
                attempt,
                last_error,
            } if affected > 0 => tracing::warn!(
                registry,
                services = affected,
                attempt,
                error = %last_error,
                "registry connection lost; the backend is restoring registrations"
            ),
            _ => {}
        }
        if matches!(health, Health::Failed { .. }) {
            return;
        }
        if rx.changed().await.is_err() {
            // Every sender is gone while the registrar still runs: the backend's task ended
            // without being closed, so nothing keeps the registrations alive any more.
            let error =
                "the registry's background task ended; registrations are no longer kept alive"
                    .to_string();
            tracing::error!(registry, "{error}");
            board.apply_health(&registry, &Health::Failed { error });
            return;
        }
    }
}

/// The next SIGINT or SIGTERM (Ctrl-C elsewhere), counted from this call on: the listeners are
/// installed now, not when the future is first polled, so a signal in between is not lost.
fn os_signal() -> ShutdownFuture {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(mut int), Ok(mut term)) => Box::pin(async move {
                tokio::select! {
                    _ = int.recv() => tracing::info!("SIGINT received; shutting down"),
                    _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
                }
            }),
            _ => {
                tracing::error!("cannot install SIGINT/SIGTERM handlers; shut down with a shutdown_signal future instead");
                Box::pin(std::future::pending())
            }
        }
    }
    #[cfg(not(unix))]
    {
        Box::pin(async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}

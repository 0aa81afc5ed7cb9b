//! A registrar serving on a loopback listener, for backend and registrar tests.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use service_registry::kit::BoxError;
use service_registry::{
    ControlHandle, Info, Registrar, RegistrarBuilder, RegistrarError, Registry, ServiceStatus,
    ShutdownSignal, StatusHandle,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::echo;

/// A running registrar with its stop switch and status.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    pub status: StatusHandle,
    pub control: ControlHandle,
    /// What the registrar registers, as [`Registrar::infos`] listed it before serving.
    pub infos: Vec<Info>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), RegistrarError>>,
}

impl Running {
    /// Serves echo on 127.0.0.1 and registers the services named in `only`.
    pub async fn start(registry: impl Registry, only: &[&str]) -> Self {
        Self::start_with(|builder| builder.registry(registry).only(only.iter().copied())).await
    }

    /// Serves echo on 127.0.0.1 with a registrar that `configure` sets up; the listen address
    /// and the shutdown signal are already set.
    pub async fn start_with(configure: impl FnOnce(RegistrarBuilder) -> RegistrarBuilder) -> Self {
        Self::try_start_with(configure).await.unwrap()
    }

    /// [`Running::start_with`] on `listener`, bound by the caller (who needed its address
    /// first).
    pub async fn start_on(
        listener: TcpListener,
        configure: impl FnOnce(RegistrarBuilder) -> RegistrarBuilder,
    ) -> Self {
        Self::try_serve_on(listener, configure, echo::serve)
            .await
            .unwrap()
    }

    /// [`Running::start_with`], returning the error of `build` instead of panicking.
    pub async fn try_start_with(
        configure: impl FnOnce(RegistrarBuilder) -> RegistrarBuilder,
    ) -> Result<Self, RegistrarError> {
        Self::try_serve_on(loopback().await, configure, echo::serve).await
    }

    /// [`Running::start_with`] with the server that `server` builds from the listener and the
    /// registrar's shutdown signal, instead of echo.
    pub async fn serve_with<S, Fut, E>(
        configure: impl FnOnce(RegistrarBuilder) -> RegistrarBuilder,
        server: S,
    ) -> Self
    where
        S: FnOnce(TcpListener, ShutdownSignal) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError> + Send + 'static,
    {
        Self::try_serve_on(loopback().await, configure, server)
            .await
            .unwrap()
    }

    async fn try_serve_on<S, Fut, E>(
        listener: TcpListener,
        configure: impl FnOnce(RegistrarBuilder) -> RegistrarBuilder,
        server: S,
    ) -> Result<Self, RegistrarError>
    where
        S: FnOnce(TcpListener, ShutdownSignal) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError> + Send + 'static,
    {
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        // No drain unless a test asks for one: most tests stop right after checking something.
        let builder = Registrar::builder()
            .listen_addr(addr)
            .drain_delay(Duration::ZERO)
            .shutdown_signal(async {
                let _ = stopped.await;
            });
        let registrar = configure(builder).build()?;
        let status = registrar.status();
        let control = registrar.control();
        let infos = registrar.infos();
        let task = tokio::spawn(registrar.serve(|shutdown| server(listener, shutdown)));
        Ok(Self {
            addr,
            status,
            control,
            infos,
            stop: Some(stop),
            task,
        })
    }

    /// Waits until every service is `Registered`, or panics after `limit`.
    pub async fn registered(&self, limit: Duration) {
        let wait = self
            .status
            .wait_for(|s| s.values().all(|s| *s == ServiceStatus::Registered));
        tokio::time::timeout(limit, wait).await.unwrap_or_else(|_| {
            panic!(
                "not registered within {limit:?}: {:?}",
                self.status.snapshot()
            )
        });
    }

    /// Waits until every service shows `Retrying`, or panics after `limit`.
    pub async fn retrying(
        &self,
        limit: Duration,
    ) -> std::collections::BTreeMap<String, ServiceStatus> {
        let wait = self.status.wait_for(|s| {
            s.values()
                .all(|s| matches!(s, ServiceStatus::Retrying { .. }))
        });
        tokio::time::timeout(limit, wait)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "not retrying within {limit:?}: {:?}",
                    self.status.snapshot()
                )
            })
            .unwrap()
    }

    /// Triggers shutdown without waiting for it; panics if the registrar no longer listens.
    pub fn signal_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).unwrap();
        }
    }

    /// Waits for `serve` to return without triggering shutdown, and returns its result.
    pub async fn join(self) -> Result<(), RegistrarError> {
        // Holding the sender keeps the shutdown signal pending.
        let Self { stop, task, .. } = self;
        let result = task.await.unwrap();
        drop(stop);
        result
    }

    /// Triggers shutdown (unless [`Running::signal_stop`] did) and waits for `serve` to return
    /// `Ok`.
    pub async fn stop(mut self) {
        self.signal_stop();
        self.join().await.unwrap();
    }
}

/// A listener on `127.0.0.1:0`.
async fn loopback() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

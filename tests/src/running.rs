//! A registrar serving the echo server on a loopback listener, for backend tests.

use std::net::SocketAddr;
use std::time::Duration;

use service_registry::{Registrar, RegistrarError, Registry, ServiceStatus, StatusHandle};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::echo;

/// A running registrar with its stop switch and status.
pub struct Running {
    pub addr: SocketAddr,
    pub status: StatusHandle,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), RegistrarError>>,
}

impl Running {
    /// Serves echo on 127.0.0.1 and registers the services named in `only`.
    pub async fn start(registry: impl Registry, only: &[&str]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let registrar = Registrar::builder()
            .registry(registry)
            .listen_addr(addr)
            .only(only.iter().copied())
            .shutdown_signal(async {
                let _ = stopped.await;
            })
            .build()
            .unwrap();
        let status = registrar.status();
        let task = tokio::spawn(registrar.serve(|shutdown| echo::serve(listener, shutdown)));
        Self {
            addr,
            status,
            stop: Some(stop),
            task,
        }
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

    /// Triggers shutdown and waits for `serve` to return.
    pub async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

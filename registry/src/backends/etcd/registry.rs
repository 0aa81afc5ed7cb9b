//! [`EtcdRegistry`]: the `Registry` over one shared lease.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot, watch};

use super::config::{EtcdConfig, EtcdConfigError};
use super::session::{Command, Session};
use super::wire;
use crate::info::Info;
use crate::registry::{Health, Registry, RegistryError};

struct Inner {
    config: EtcdConfig,
    commands: mpsc::UnboundedSender<Command>,
    health: watch::Receiver<Health>,
}

/// Registers services in etcd the way Kitex's `registry-etcd` does, on one lease per process.
///
/// All registrations share one lease, kept alive every TTL/3; concurrent registrations are
/// written in as few transactions as etcd allows. When the lease or the connection is lost
/// (etcd restarted, with or without its data; network gone; lease expired), a background task
/// grants a new lease and puts every live registration again, with backoff, forever; meanwhile
/// [`Registry::health`] reports `Recovering`. Nothing here ever stops the server.
///
/// Cheap to clone. When the last clone is dropped, the lease is revoked; call
/// [`close`](Self::close) to delete every key and revoke the lease and wait for it.
///
/// ```no_run
/// use service_registry::etcd::{EtcdConfig, EtcdRegistry};
/// use service_registry::Registrar;
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = EtcdRegistry::new(EtcdConfig::from_env())?;
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await?;
/// Registrar::builder()
///     .registry(registry.clone())
///     .listen_addr(listener.local_addr()?)
///     .build()?
///     .serve(|shutdown| async move { shutdown.await; drop(listener); Ok::<_, std::io::Error>(()) })
///     .await?;
/// registry.close().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct EtcdRegistry {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EtcdRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdRegistry")
            .field("endpoints", &self.inner.config.endpoints)
            .field("prefix", &self.inner.config.prefix)
            .finish()
    }
}

impl EtcdRegistry {
    /// Starts the lease task. Returns at once: etcd need not be up yet (registrations are
    /// retried until it is). Must be called inside a Tokio runtime.
    ///
    /// ```
    /// use service_registry::etcd::{EtcdConfig, EtcdConfigError, EtcdRegistry};
    /// // Outside a runtime there is nowhere to run the lease task.
    /// let err = EtcdRegistry::new(EtcdConfig::new(["http://127.0.0.1:2379"])).unwrap_err();
    /// assert!(matches!(err, EtcdConfigError::NoRuntime));
    /// ```
    pub fn new(config: EtcdConfig) -> Result<Self, EtcdConfigError> {
        config.check()?;
        let ttl = config.effective_ttl()?;
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| EtcdConfigError::NoRuntime)?;
        let (commands, rx) = mpsc::unbounded_channel();
        let (health_tx, health) = watch::channel(Health::Recovering {
            attempt: 0,
            last_error: "connecting to etcd".to_string(),
        });
        runtime.spawn(Session::new(config.clone(), ttl, health_tx, rx).run());
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                commands,
                health,
            }),
        })
    }

    /// The configuration in use.
    ///
    /// ```no_run
    /// # use service_registry::etcd::{EtcdConfig, EtcdRegistry};
    /// # #[tokio::main] async fn main() {
    /// let registry = EtcdRegistry::new(EtcdConfig::new(["http://127.0.0.1:2379"])).unwrap();
    /// assert_eq!(registry.config().endpoints().len(), 1);
    /// # }
    /// ```
    pub fn config(&self) -> &EtcdConfig {
        &self.inner.config
    }

    /// Deletes every registration, revokes the lease and stops the lease task. Later calls fail.
    ///
    /// See [`EtcdRegistry`] for an example.
    pub async fn close(&self) {
        let (done, wait) = oneshot::channel();
        if self.inner.commands.send(Command::Close { done }).is_ok() {
            let _ = wait.await;
        }
    }

    async fn call(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<(), RegistryError>>) -> Command,
    ) -> Result<(), RegistryError> {
        let closed = || RegistryError::Backend {
            backend: "etcd",
            source: "the etcd registry was closed".into(),
        };
        let (done, wait) = oneshot::channel();
        self.inner
            .commands
            .send(command(done))
            .map_err(|_| closed())?;
        wait.await.map_err(|_| closed())?
    }
}

fn check(info: &Info) -> Result<(), RegistryError> {
    if info.service_name.is_empty() || info.service_name.contains('/') {
        return Err(RegistryError::InvalidInfo {
            service: info.service_name.clone(),
            reason: "an etcd service name must be non-empty and must not contain `/`".into(),
        });
    }
    Ok(())
}

#[async_trait]
impl Registry for EtcdRegistry {
    async fn register(&self, info: &Info) -> Result<(), RegistryError> {
        check(info)?;
        let key = wire::key(&self.inner.config.prefix, info);
        let value = wire::encode(info);
        self.call(|done| Command::Put { key, value, done }).await
    }

    async fn deregister(&self, info: &Info) -> Result<(), RegistryError> {
        check(info)?;
        let key = wire::key(&self.inner.config.prefix, info);
        self.call(|done| Command::Delete { key, done }).await
    }

    fn health(&self) -> Option<watch::Receiver<Health>> {
        Some(self.inner.health.clone())
    }
}

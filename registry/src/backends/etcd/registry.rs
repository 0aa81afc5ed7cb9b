//! [`EtcdRegistry`]: the `Registry` over one shared lease.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;

use super::config::{EtcdConfig, EtcdConfigError};
use super::session::Session;
use super::wire;
use crate::backends::kit::driver::drive;
use crate::backends::kit::handle::SessionHandle;
use crate::backends::kit::names::check_service_name;
use crate::info::Info;
use crate::registry::{Health, Registry, RegistryError};

struct Inner {
    config: EtcdConfig,
    session: SessionHandle,
}

/// Registers services in etcd the way Kitex's `registry-etcd` does, on one lease per process.
///
/// All registrations share one lease, kept alive every TTL/3; concurrent registrations are
/// written in as few transactions as etcd allows. When the lease or the connection is lost
/// (etcd restarted, with or without its data; network gone; lease expired), a background task
/// grants a new lease and puts every live registration again, with backoff, forever; meanwhile
/// [`Registry::health`] reports `Recovering`. Nothing here ever stops the server.
///
/// A refusal that can pass never drops a registration: when etcd's database is full (its
/// NOSPACE alarm, `--quota-backend-bytes`), it is rate-limiting ("too many requests"), or the
/// user's role may not write one service's prefix, the key is kept and written again with
/// backoff until etcd takes it; only that key is affected, and while a rewrite nobody waits
/// for (after a lost lease, or restoring a key someone deleted) is refused, [`Registry::health`]
/// says `Recovering` with etcd's reason. A user who may not watch the whole prefix (RBAC per
/// service) is guarded per service prefix instead.
///
/// Two processes advertising the same address (a VIP) write the same key: the one that finds
/// its key on another live lease leaves it to that process (logged once) and takes it back
/// when the other deletes it or its lease expires, so the key stays while either lives and
/// neither rewrites it in a loop.
///
/// Cheap to clone. When the last clone is dropped, the lease is revoked; call
/// [`close`](Self::close) to delete every key and revoke the lease and wait for it.
///
/// ```no_run
/// use service_registry::etcd::{EtcdConfig, EtcdRegistry};
/// use service_registry::Registrar;
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = EtcdRegistry::new(EtcdConfig::from_env()?)?;
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await?;
/// Registrar::builder()
///     .registry(registry)
///     .listen_addr(listener.local_addr()?)
///     .build()?
///     .serve(|shutdown| async move { shutdown.await; drop(listener); Ok::<_, std::io::Error>(()) })
///     .await?; // deregisters, then closes the registry
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
        config.warn_if_plain_text_credentials("EtcdRegistry");
        let task_config = config.clone();
        let session =
            SessionHandle::spawn("etcd", config.close_timeout, move |health, commands| {
                drive(Session::new(task_config, ttl, health, commands))
            })
            .ok_or(EtcdConfigError::NoRuntime)?;
        Ok(Self {
            inner: Arc::new(Inner { config, session }),
        })
    }

    /// The configuration in use (its `Debug` shows the user, never the password).
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
    /// The same as [`Registry::close`], which [`Registrar::serve`](crate::Registrar::serve)
    /// calls at its end; call this one when the registry is used without a registrar.
    ///
    /// See [`EtcdRegistry`] for an example.
    pub async fn close(&self) {
        self.inner.session.close().await;
    }
}

#[async_trait]
impl Registry for EtcdRegistry {
    async fn register(&self, info: &Info) -> Result<(), RegistryError> {
        check_service_name(info, "etcd")?;
        let key = wire::key(&self.inner.config.prefix, info);
        self.inner
            .session
            .put(key, wire::encode(info).into_bytes())
            .await
    }

    async fn deregister(&self, info: &Info) -> Result<(), RegistryError> {
        check_service_name(info, "etcd")?;
        let key = wire::key(&self.inner.config.prefix, info);
        self.inner.session.delete(key).await
    }

    fn name(&self) -> String {
        "etcd".to_string()
    }

    fn health(&self) -> Option<watch::Receiver<Health>> {
        Some(self.inner.session.health())
    }

    async fn close(&self) {
        self.inner.session.close().await;
    }
}

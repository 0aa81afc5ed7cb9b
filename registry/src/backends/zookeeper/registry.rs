//! [`ZookeeperRegistry`]: the `Registry` over one ZooKeeper session.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::watch;
use zookeeper_client::SessionInfo;

use super::config::{ZookeeperConfig, ZookeeperConfigError};
use super::session::Session;
use super::wire;
use crate::backends::kit::driver::drive;
use crate::backends::kit::handle::SessionHandle;
use crate::backends::kit::names::check_service_name;
use crate::info::Info;
use crate::registry::{Health, Registry, RegistryError};

struct Inner {
    config: ZookeeperConfig,
    session: SessionHandle,
    current: Arc<Mutex<Option<SessionInfo>>>,
}

/// Registers services in ZooKeeper the way Kitex's `registry-zookeeper` does: an ephemeral
/// node `/{service}/{host}:{port}` holding `{"Weight":..,"Tags":{..}}` under persistent parents.
///
/// One session serves every registration. While ZooKeeper is away the session is kept, however
/// long that takes: when it answers again and still holds the session (a restart that kept its
/// data restores sessions with a fresh timeout) the registry attaches to it again as soon as a
/// probe (every 200 ms while away) is answered, nodes untouched; only when the server says the session is gone (expired, or a
/// restart without its data) does a background task open a new one and create every live node
/// again, with backoff, forever (a node left by an earlier session of ours is replaced).
/// Meanwhile [`Registry::health`] reports `Recovering`.
///
/// A node that another live session holds at the same path (another process advertising the
/// same address, under an identity that may remove it) is left alone and the registration
/// counts as done: the address stays registered as long as either process lives, and this
/// registry's own node takes its place when the other goes. Logged once. With [`user`](ZookeeperConfig::user) nodes are protected by an
/// ACL: this identity may do anything, everyone else may only read.
///
/// Cheap to clone. [`close`](Self::close) deletes every node and closes the session; dropping the
/// last clone closes the session too (its ephemeral nodes go at once).
///
/// ```no_run
/// use service_registry::zookeeper::{ZookeeperConfig, ZookeeperRegistry};
/// use service_registry::Registrar;
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = ZookeeperRegistry::new(ZookeeperConfig::from_env()?)?;
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
pub struct ZookeeperRegistry {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ZookeeperRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZookeeperRegistry")
            .field("connect", &self.inner.config.connect)
            .field("root", &self.inner.config.root)
            .finish()
    }
}

impl ZookeeperRegistry {
    /// Starts the session task. Returns at once: ZooKeeper need not be up yet (registrations
    /// are retried until it is). Must be called inside a Tokio runtime.
    ///
    /// See [`ZookeeperConfigError`] for an example.
    pub fn new(config: ZookeeperConfig) -> Result<Self, ZookeeperConfigError> {
        config.check()?;
        let current = Arc::new(Mutex::new(None));
        let (task_config, task_current) = (config.clone(), current.clone());
        let session = SessionHandle::spawn(
            "zookeeper",
            config.close_timeout,
            move |health, commands| {
                drive(Session::new(task_config, health, commands, task_current))
            },
        )
        .ok_or(ZookeeperConfigError::NoRuntime)?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                session,
                current,
            }),
        })
    }

    /// The configuration in use (its `Debug` shows the user, never the password).
    ///
    /// ```no_run
    /// # use service_registry::zookeeper::{ZookeeperConfig, ZookeeperRegistry};
    /// # #[tokio::main] async fn main() {
    /// let registry = ZookeeperRegistry::new(ZookeeperConfig::new("127.0.0.1:2181")).unwrap();
    /// assert_eq!(registry.config().endpoints(), ["127.0.0.1:2181"]);
    /// # }
    /// ```
    pub fn config(&self) -> &ZookeeperConfig {
        &self.inner.config
    }

    /// The current session's id and password (`None` while there is none), for handing over to
    /// another client or for tests that force the session to expire.
    ///
    /// ```no_run
    /// # use service_registry::zookeeper::{ZookeeperConfig, ZookeeperRegistry};
    /// # #[tokio::main] async fn main() {
    /// let registry = ZookeeperRegistry::new(ZookeeperConfig::from_env().unwrap()).unwrap();
    /// if let Some(session) = registry.session() { println!("session {}", session.id()); }
    /// # }
    /// ```
    pub fn session(&self) -> Option<SessionInfo> {
        self.inner
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Deletes every node, closes the session and stops the session task. Later calls fail.
    ///
    /// The same as [`Registry::close`], which [`Registrar::serve`](crate::Registrar::serve)
    /// calls at its end; call this one when the registry is used without a registrar.
    ///
    /// See [`ZookeeperRegistry`] for an example.
    pub async fn close(&self) {
        self.inner.session.close().await;
    }
}

#[async_trait]
impl Registry for ZookeeperRegistry {
    async fn register(&self, info: &Info) -> Result<(), RegistryError> {
        check_service_name(info, "ZooKeeper")?;
        let path = wire::path(&self.inner.config.root, info);
        self.inner.session.put(path, wire::encode(info)).await
    }

    async fn deregister(&self, info: &Info) -> Result<(), RegistryError> {
        check_service_name(info, "ZooKeeper")?;
        let path = wire::path(&self.inner.config.root, info);
        self.inner.session.delete(path).await
    }

    fn name(&self) -> String {
        "zookeeper".to_string()
    }

    fn health(&self) -> Option<watch::Receiver<Health>> {
        Some(self.inner.session.health())
    }

    async fn close(&self) {
        self.inner.session.close().await;
    }
}

//! [`NacosRegistry`]: the `Registry` over one shared Nacos 2.x connection.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;

use super::config::{NacosConfig, NacosConfigError, REQUEST_OVERHEAD};
use super::server::NacosServer;
use super::session::{InstanceKey, Session};
use super::wire;
use super::wire::NacosInstance;
use crate::backends::kit::driver::drive;
use crate::backends::kit::handle::SessionHandle;
use crate::info::Info;
use crate::registry::{Health, Registry, RegistryError};

struct Inner {
    config: NacosConfig,
    session: SessionHandle<InstanceKey, NacosInstance>,
}

/// Registers services in Nacos the way Kitex's `registry-nacos` does, on one gRPC connection
/// per process.
///
/// Every instance is ephemeral and tied to the connection: Nacos removes them all as soon as
/// the connection closes (the process exits or is killed) or stops answering its checks. When
/// the connection is lost (Nacos restarted, with or without its data; network gone), a
/// background task connects again and registers every live instance again, with backoff,
/// forever; meanwhile [`Registry::health`] reports `Recovering`. Deregistered instances stay
/// gone.
///
/// Cheap to clone. When the last clone is dropped, the connection closes (and Nacos drops its
/// instances); call [`close`](Self::close) to deregister everything and wait for it.
///
/// ```no_run
/// use service_registry::nacos::{NacosConfig, NacosRegistry};
/// use service_registry::Registrar;
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = NacosRegistry::new(NacosConfig::from_env()?)?;
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
pub struct NacosRegistry {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NacosRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NacosRegistry")
            .field("server", &self.inner.config.grpc_addr())
            .field("namespace", &self.inner.config.namespace)
            .field("group", &self.inner.config.group)
            .finish()
    }
}

impl NacosRegistry {
    /// Starts the connection task. Returns at once: Nacos need not be up yet (registrations
    /// are retried until it is). Must be called inside a Tokio runtime.
    ///
    /// ```
    /// use service_registry::nacos::{NacosConfig, NacosConfigError, NacosRegistry};
    /// // Outside a runtime there is nowhere to run the connection task.
    /// let err = NacosRegistry::new(NacosConfig::new("127.0.0.1", 8848)).unwrap_err();
    /// assert!(matches!(err, NacosConfigError::NoRuntime));
    /// ```
    pub fn new(config: NacosConfig) -> Result<Self, NacosConfigError> {
        config.check()?;
        let task_config = config.clone();
        let session =
            SessionHandle::spawn("nacos", config.close_timeout, move |health, commands| {
                drive(Session::new(task_config, health, commands))
            })
            .ok_or(NacosConfigError::NoRuntime)?;
        Ok(Self {
            inner: Arc::new(Inner { config, session }),
        })
    }

    /// The configuration in use.
    ///
    /// ```no_run
    /// # use service_registry::nacos::{NacosConfig, NacosRegistry};
    /// # #[tokio::main] async fn main() {
    /// let registry = NacosRegistry::new(NacosConfig::new("127.0.0.1", 8848)).unwrap();
    /// assert_eq!(registry.config().http_addr(), "127.0.0.1:8848");
    /// # }
    /// ```
    pub fn config(&self) -> &NacosConfig {
        &self.inner.config
    }

    /// The cluster node this registry's connection went to last ([`NacosConfig::add_server`]):
    /// while it is healthy, where its instances are registered; `None` before the first
    /// connection.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use service_registry::nacos::{NacosConfig, NacosRegistry, NacosServer};
    ///
    /// let config = NacosConfig::new("10.0.0.5", 8848).add_server(NacosServer::new("10.0.0.6", 8848));
    /// let registry = NacosRegistry::new(config)?;
    /// if let Some(node) = registry.server() {
    ///     println!("connected to {}", node.grpc_addr());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn server(&self) -> Option<NacosServer> {
        self.inner.config.last_server()
    }

    /// Deregisters every instance, closes the connection and stops the task. Later calls fail.
    ///
    /// The same as [`Registry::close`], which [`Registrar::serve`](crate::Registrar::serve)
    /// calls at its end; call this one when the registry is used without a registrar.
    ///
    /// See [`NacosRegistry`] for an example.
    pub async fn close(&self) {
        self.inner.session.close().await;
    }
}

fn check(info: &Info) -> Result<(), RegistryError> {
    if info.service_name.is_empty() || info.service_name.contains("@@") {
        return Err(RegistryError::InvalidInfo {
            service: info.service_name.clone(),
            reason: "a Nacos service name must be non-empty and must not contain `@@` (Nacos' group separator)".into(),
        });
    }
    Ok(())
}

#[async_trait]
impl Registry for NacosRegistry {
    async fn register(&self, info: &Info) -> Result<(), RegistryError> {
        check(info)?;
        let config = &self.inner.config;
        let instance = wire::encode(info, &config.cluster, &config.extra_metadata);
        // The size of the instance as a request carries it. Plain strings, numbers and a map:
        // serializing cannot fail.
        let size = serde_json::to_vec(&instance).map_or(0, |json| json.len());
        let limit = config.max_request_size;
        if size + REQUEST_OVERHEAD > limit {
            tracing::warn!(
                service = %info.service_name,
                addr = %info.addr,
                bytes = size,
                limit,
                "registration refused: the instance is larger than a Nacos request may be; the value registered before (if any) stays"
            );
            return Err(RegistryError::InvalidInfo {
                service: info.service_name.clone(),
                reason: format!(
                    "the instance at {} is {} bytes, more than one Nacos request carries ({limit} \
                     bytes less 1 KiB for the request; see NacosConfig::max_request_size); not \
                     sent, the value registered before stays",
                    info.addr, size
                ),
            });
        }
        self.inner
            .session
            .put(InstanceKey::of(info), instance)
            .await
    }

    async fn deregister(&self, info: &Info) -> Result<(), RegistryError> {
        check(info)?;
        self.inner.session.delete(InstanceKey::of(info)).await
    }

    fn name(&self) -> String {
        "nacos".to_string()
    }

    fn health(&self) -> Option<watch::Receiver<Health>> {
        Some(self.inner.session.health())
    }

    async fn close(&self) {
        self.inner.session.close().await;
    }
}

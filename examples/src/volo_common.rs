//! Shared by the Volo examples (feature `volo`): the code volo-build generates from
//! `proto/greeter.proto` and `idl/echo.thrift`, and the registry they use.
//!
//! The registry: etcd (`ETCD_ENDPOINTS`, feature `etcd`) or Nacos (`serverAddr`, ...; feature
//! `nacos`). With both features, `VOLO_REGISTRY=nacos` picks Nacos.

use std::error::Error;
use std::sync::Arc;

use service_registry::{Discovery, Registry};

/// The generated code (volo-build, in `build.rs`).
#[allow(missing_docs, clippy::all, unused_imports, dead_code)]
pub mod gen {
    include!(concat!(env!("OUT_DIR"), "/volo_greeter.rs"));
    include!(concat!(env!("OUT_DIR"), "/volo_echo.rs"));
}

pub use gen::volo_echo::echo;
pub use gen::volo_greeter::greeter;

/// The greeter's service name, registered and discovered.
pub const GREETER: &str = "example.volo.greeter";
/// The echo's service name, registered and discovered.
pub const ECHO: &str = "example.volo.echo";

/// The registry picked by the features and `VOLO_REGISTRY`.
pub enum Backend {
    /// etcd (`ETCD_ENDPOINTS`).
    #[cfg(feature = "etcd")]
    Etcd(service_registry::etcd::EtcdRegistry),
    /// Nacos (`NacosConfig::from_env`).
    #[cfg(feature = "nacos")]
    Nacos(service_registry::nacos::NacosRegistry),
}

fn wants_nacos() -> bool {
    let named = std::env::var("VOLO_REGISTRY").ok();
    match named.as_deref() {
        Some("nacos") => true,
        Some(_) => false,
        None => !cfg!(feature = "etcd"),
    }
}

impl Backend {
    /// Connects the registry the features and `VOLO_REGISTRY` pick.
    pub fn from_env() -> Result<Self, Box<dyn Error>> {
        #[cfg(feature = "nacos")]
        if wants_nacos() {
            let config = service_registry::nacos::NacosConfig::from_env()?;
            return Ok(Backend::Nacos(service_registry::nacos::NacosRegistry::new(
                config,
            )?));
        }
        #[cfg(feature = "etcd")]
        if !wants_nacos() {
            let config = service_registry::etcd::EtcdConfig::from_env()?;
            return Ok(Backend::Etcd(service_registry::etcd::EtcdRegistry::new(
                config,
            )?));
        }
        let _ = wants_nacos;
        Err("build the Volo examples with `--features volo,etcd` or `--features volo,nacos`".into())
    }

    /// The registry, for the registrar (which closes it at the end of `serve`).
    pub fn registry(self) -> Arc<dyn Registry> {
        match self {
            #[cfg(feature = "etcd")]
            Backend::Etcd(r) => Arc::new(r),
            #[cfg(feature = "nacos")]
            Backend::Nacos(r) => Arc::new(r),
        }
    }
}

/// The discovery the features and `VOLO_REGISTRY` pick.
pub fn discovery_from_env() -> Result<Arc<dyn Discovery>, Box<dyn Error>> {
    #[cfg(feature = "nacos")]
    if wants_nacos() {
        let config = service_registry::nacos::NacosConfig::from_env()?;
        return Ok(Arc::new(service_registry::nacos::NacosDiscovery::new(
            config,
        )));
    }
    #[cfg(feature = "etcd")]
    if !wants_nacos() {
        let config = service_registry::etcd::EtcdConfig::from_env()?;
        return Ok(Arc::new(service_registry::etcd::EtcdDiscovery::new(config)));
    }
    Err("build the Volo examples with `--features volo,etcd` or `--features volo,nacos`".into())
}

pub use crate::announce;

/// `LISTEN_ADDR`, default `127.0.0.1:0`.
pub async fn listen() -> std::io::Result<tokio::net::TcpListener> {
    let listen = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1:0".into());
    tokio::net::TcpListener::bind(&listen).await
}

//! Declarative service registration, modelled on CloudWeGo Kitex's `pkg/registry`.
//!
//! Annotate a type with [`#[service]`](macro@service); at startup a [`Registrar`] registers every
//! annotated type with the server's real address into a [`Registry`] (in-memory by default; etcd,
//! ZooKeeper and Nacos behind cargo features), keeps it registered, and removes it at shutdown. Clients
//! find instances through [`Discovery`].
//!
//! ```
//! use futures_util::StreamExt;
//! use service_registry::{service, Discovery, MemoryRegistry, Registrar, ServiceStatus};
//!
//! #[service(name = "crate-doc-echo", weight = 10, tag(idc = "hz"))]
//! struct Echo;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = MemoryRegistry::new();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let registrar = Registrar::builder()
//!     .registry(registry.clone())
//!     .listen_addr(listener.local_addr()?)
//!     .only(["crate-doc-echo"])
//!     .drain_delay(std::time::Duration::ZERO) // no remote clients here; the default waits 6 s
//!     .shutdown_signal(async { let _ = stopped.await; })
//!     .build()?;
//! let status = registrar.status();
//! let running = tokio::spawn(registrar.serve(|shutdown| async move {
//!     shutdown.await; // a real server accepts on `listener` until this completes
//!     drop(listener);
//!     Ok::<_, std::io::Error>(())
//! }));
//! status.wait_for(|s| s.values().all(|s| *s == ServiceStatus::Registered)).await;
//! assert_eq!(registry.resolve("crate-doc-echo").await?.len(), 1);
//! stop.send(()).ok();
//! running.await??;
//! assert!(registry.resolve("crate-doc-echo").await?.is_empty());
//! # Ok(()) }
//! ```
//!
//! # Services defined in a library
//!
//! `#[service]` submits its descriptor through `inventory`, which sees only what the final
//! binary links. Rust links a dependency only when the binary refers to it, so a library crate
//! that only *defines* services must be named once in the binary:
//!
//! ```text
//! use my_services as _; // links the library, and with it its #[service] types
//! ```
#![deny(missing_docs)]

mod backends;
mod backoff;
pub mod balance;
mod discovery;
pub mod env;
mod http_client;
mod info;
pub mod kit;
mod merged;
pub mod metrics;
mod registrar;
mod registry;
mod tags;

pub use backends::memory::MemoryRegistry;
pub use backoff::Backoff;
pub use discovery::{
    Change, Discovery, DiscoveryError, Instance, Instances, InstancesIter, WatchStream,
};
// Moved to `kit` (helpers for backend authors); the old root paths keep working, out of the docs.
pub use info::{Endpoint, EndpointBasicInfo, Info, DEFAULT_WEIGHT, MAX_WEIGHT, MIN_WEIGHT};
#[doc(hidden)]
pub use kit::{diff_instances, shared, BoxError, SharedError};
pub use merged::MergedDiscovery;
pub use registrar::{
    CheckOutcome, ControlHandle, HealthCheck, InfoOverride, Registrar, RegistrarBuilder,
    RegistrarError, ServiceStatus, ShutdownSignal, StatusHandle,
};
pub use registry::{Health, Registry, RegistryError};
pub use service_registry_macros::service;

/// Moved to [`env::ADVERTISE_ADDR_ENV`].
#[deprecated(
    since = "0.1.0",
    note = "use `service_registry::env::ADVERTISE_ADDR_ENV`"
)]
#[doc(hidden)]
pub const ADVERTISE_ADDR_ENV: &str = env::ADVERTISE_ADDR_ENV;
/// Moved to [`env::KITEX_IP_ENV`].
#[deprecated(since = "0.1.0", note = "use `service_registry::env::KITEX_IP_ENV`")]
#[doc(hidden)]
pub const KITEX_IP_ENV: &str = env::KITEX_IP_ENV;
/// Moved to [`env::KITEX_PORT_ENV`].
#[deprecated(since = "0.1.0", note = "use `service_registry::env::KITEX_PORT_ENV`")]
#[doc(hidden)]
pub const KITEX_PORT_ENV: &str = env::KITEX_PORT_ENV;
/// Moved to [`env::DRAIN_DELAY_ENV`].
#[deprecated(since = "0.1.0", note = "use `service_registry::env::DRAIN_DELAY_ENV`")]
#[doc(hidden)]
pub const DRAIN_DELAY_ENV: &str = env::DRAIN_DELAY_ENV;

/// The pieces `#[service]` generates and the registrar reads: the inventory entry of each
/// annotated type and its tag templates. Rarely needed directly:
/// [`ServiceEntry::all`](endpoint::ServiceEntry::all) lists every linked service.
///
/// ```
/// use service_registry::endpoint::{ServiceEntry, TagTemplate};
/// # #[service_registry::service(name = "endpoint-doc", tag(idc = "${IDC:-hz}"))] struct Doc;
/// let entry = ServiceEntry::all().find(|e| e.info.service_name == "endpoint-doc").unwrap();
/// let idc: &TagTemplate = &entry.info.tags[0].value;
/// assert_eq!(idc.raw, "${IDC:-hz}");
/// ```
pub mod endpoint {
    pub use crate::info::ServiceEntry;
    pub use crate::tags::{MissingVariable, StaticTag, TagPart, TagTemplate};
}

/// The etcd backend: [`EtcdRegistry`](etcd::EtcdRegistry) and
/// [`EtcdDiscovery`](etcd::EtcdDiscovery), wire-compatible with Kitex's `registry-etcd`.
#[cfg(feature = "etcd")]
pub mod etcd {
    pub use crate::backends::etcd::*;
}

/// The ZooKeeper backend: [`ZookeeperRegistry`](zookeeper::ZookeeperRegistry) and
/// [`ZookeeperDiscovery`](zookeeper::ZookeeperDiscovery), wire-compatible with Kitex's
/// `registry-zookeeper`.
#[cfg(feature = "zookeeper")]
pub mod zookeeper {
    pub use crate::backends::zookeeper::*;
}

/// The Nacos backend: [`NacosRegistry`](nacos::NacosRegistry) and
/// [`NacosDiscovery`](nacos::NacosDiscovery), wire-compatible with Kitex's `registry-nacos`.
#[cfg(feature = "nacos")]
pub mod nacos {
    pub use crate::backends::nacos::*;
}

// Documented in `volo/mod.rs` (one doc, so its links resolve in the module).
#[cfg(feature = "volo")]
pub mod volo;

/// What the code generated by `#[service]` needs; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use inventory;
}

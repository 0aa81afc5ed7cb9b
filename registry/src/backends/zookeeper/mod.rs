//! The ZooKeeper backend (feature `zookeeper`), wire-compatible with Kitex's
//! `registry-zookeeper`: ephemeral nodes `/{service}/{host}:{port}` holding
//! `{"Weight":..,"Tags":{..}}`.

mod client;
mod config;
mod discovery;
mod error;
mod guard;
mod registry;
mod sentinel;
mod session;
mod wire;

pub use config::{ZookeeperConfig, ZookeeperConfigError};

use crate::env::{ZOOKEEPER_ENDPOINTS_ENV, ZOOKEEPER_SESSION_TIMEOUT_ENV};

/// Moved to [`env::ZOOKEEPER_ENDPOINTS_ENV`](crate::env::ZOOKEEPER_ENDPOINTS_ENV).
#[deprecated(
    since = "0.1.0",
    note = "use `service_registry::env::ZOOKEEPER_ENDPOINTS_ENV`"
)]
#[doc(hidden)]
pub const ENDPOINTS_ENV: &str = ZOOKEEPER_ENDPOINTS_ENV;
/// Moved to [`env::ZOOKEEPER_SESSION_TIMEOUT_ENV`](crate::env::ZOOKEEPER_SESSION_TIMEOUT_ENV).
#[deprecated(
    since = "0.1.0",
    note = "use `service_registry::env::ZOOKEEPER_SESSION_TIMEOUT_ENV`"
)]
#[doc(hidden)]
pub const SESSION_TIMEOUT_ENV: &str = ZOOKEEPER_SESSION_TIMEOUT_ENV;
pub use discovery::ZookeeperDiscovery;
pub use registry::ZookeeperRegistry;

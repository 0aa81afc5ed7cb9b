//! The ZooKeeper backend (feature `zookeeper`), wire-compatible with Kitex's
//! `registry-zookeeper`: ephemeral nodes `/{service}/{host}:{port}` holding
//! `{"Weight":..,"Tags":{..}}`.

mod config;
mod discovery;
mod error;
mod guard;
mod registry;
mod sentinel;
mod session;
mod wire;

pub use config::{ZookeeperConfig, ZookeeperConfigError, ENDPOINTS_ENV, SESSION_TIMEOUT_ENV};
pub use discovery::ZookeeperDiscovery;
pub use registry::ZookeeperRegistry;

//! The etcd backend (feature `etcd`), wire-compatible with Kitex's `registry-etcd`.
//!
//! Keys are `{prefix}/{service}/{host}:{port}` (prefix `kitex/registry-etcd` by default) and
//! values are Kitex's JSON `{"network":"tcp","address":..,"weight":..,"tags":{..}}`, so Go
//! services using Kitex and Rust services using this crate find each other.

mod chunk;
mod config;
mod discovery;
mod error;
mod guard;
mod lease;
mod probe;
mod registry;
mod session;
mod wire;

pub use config::{EtcdConfig, EtcdConfigError};

use crate::env::{ETCD_ENDPOINTS_ENV, ETCD_LEASE_TTL_ENV, KITEX_ETCD_LEASE_TTL_ENV};

/// Moved to [`env::ETCD_ENDPOINTS_ENV`](crate::env::ETCD_ENDPOINTS_ENV).
#[deprecated(
    since = "0.1.0",
    note = "use `service_registry::env::ETCD_ENDPOINTS_ENV`"
)]
#[doc(hidden)]
pub const ENDPOINTS_ENV: &str = ETCD_ENDPOINTS_ENV;
/// Moved to [`env::ETCD_LEASE_TTL_ENV`](crate::env::ETCD_LEASE_TTL_ENV).
#[deprecated(
    since = "0.1.0",
    note = "use `service_registry::env::ETCD_LEASE_TTL_ENV`"
)]
#[doc(hidden)]
pub const LEASE_TTL_ENV: &str = ETCD_LEASE_TTL_ENV;
/// Moved to [`env::KITEX_ETCD_LEASE_TTL_ENV`](crate::env::KITEX_ETCD_LEASE_TTL_ENV).
#[deprecated(
    since = "0.1.0",
    note = "use `service_registry::env::KITEX_ETCD_LEASE_TTL_ENV`"
)]
#[doc(hidden)]
pub const KITEX_LEASE_TTL_ENV: &str = KITEX_ETCD_LEASE_TTL_ENV;
pub use discovery::EtcdDiscovery;
pub use registry::EtcdRegistry;
pub use wire::DEFAULT_PREFIX;

//! The etcd backend (feature `etcd`), wire-compatible with Kitex's `registry-etcd`.
//!
//! Keys are `{prefix}/{service}/{host}:{port}` (prefix `kitex/registry-etcd` by default) and
//! values are Kitex's JSON `{"network":"tcp","address":..,"weight":..,"tags":{..}}`, so Go
//! services using Kitex and Rust services using this crate find each other.

mod config;
mod discovery;
mod error;
mod guard;
mod lease;
mod registry;
mod wire;

pub use config::{EtcdConfig, EtcdConfigError, ENDPOINTS_ENV, KITEX_LEASE_TTL_ENV, LEASE_TTL_ENV};
pub use discovery::EtcdDiscovery;
pub use registry::EtcdRegistry;
pub use wire::DEFAULT_PREFIX;

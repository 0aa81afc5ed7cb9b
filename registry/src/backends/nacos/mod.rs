//! The Nacos backend (feature `nacos`), wire-compatible with Kitex's `registry-nacos`.
//!
//! Instances are registered over Nacos 2.x's gRPC API on one connection per process, ephemeral,
//! with Kitex's fields: service name, group `DEFAULT_GROUP`, cluster `DEFAULT`, ip, port,
//! weight, `enabled` and `healthy` true, metadata = tags. Go services using Kitex (through
//! nacos-sdk-go v1 or v2) and Rust services using this crate find each other.

/// What a watch does per push, for `registry/benches/nacos_push.rs`; not a public API.
#[doc(hidden)]
#[path = "bench.rs"]
pub mod __bench;
mod auth;
mod config;
mod connection;
mod discovery;
mod error;
mod heartbeat;
mod lost;
mod proto;
mod push;
mod registry;
mod server;
mod session;
mod stream;
mod wire;

pub use config::{NacosConfig, NacosConfigError, DEFAULT_CLUSTER, DEFAULT_GROUP};

/// Moved to [`env::NACOS_SERVER_ADDR_ENV`](crate::env::NACOS_SERVER_ADDR_ENV).
#[deprecated(
    since = "0.1.0",
    note = "use `service_registry::env::NACOS_SERVER_ADDR_ENV`"
)]
#[doc(hidden)]
pub const SERVER_ADDR_ENV: &str = crate::env::NACOS_SERVER_ADDR_ENV;
/// Moved to [`env::NACOS_SERVER_PORT_ENV`](crate::env::NACOS_SERVER_PORT_ENV).
#[deprecated(
    since = "0.1.0",
    note = "use `service_registry::env::NACOS_SERVER_PORT_ENV`"
)]
#[doc(hidden)]
pub const SERVER_PORT_ENV: &str = crate::env::NACOS_SERVER_PORT_ENV;
/// Moved to [`env::NACOS_NAMESPACE_ENV`](crate::env::NACOS_NAMESPACE_ENV).
#[deprecated(
    since = "0.1.0",
    note = "use `service_registry::env::NACOS_NAMESPACE_ENV`"
)]
#[doc(hidden)]
pub const NAMESPACE_ENV: &str = crate::env::NACOS_NAMESPACE_ENV;
/// Moved to [`env::KITEX_NACOS_TAGS_ENV`](crate::env::KITEX_NACOS_TAGS_ENV).
#[deprecated(
    since = "0.1.0",
    note = "use `service_registry::env::KITEX_NACOS_TAGS_ENV`"
)]
#[doc(hidden)]
pub const KITEX_TAGS_ENV: &str = crate::env::KITEX_NACOS_TAGS_ENV;
/// Moved to [`env::NACOS_GRPC_PORT_ENV`](crate::env::NACOS_GRPC_PORT_ENV).
#[deprecated(
    since = "0.1.0",
    note = "use `service_registry::env::NACOS_GRPC_PORT_ENV`"
)]
#[doc(hidden)]
pub const GRPC_PORT_ENV: &str = crate::env::NACOS_GRPC_PORT_ENV;
/// Moved to [`env::NACOS_USERNAME_ENV`](crate::env::NACOS_USERNAME_ENV).
#[deprecated(
    since = "0.1.0",
    note = "use `service_registry::env::NACOS_USERNAME_ENV`"
)]
#[doc(hidden)]
pub const USERNAME_ENV: &str = crate::env::NACOS_USERNAME_ENV;
/// Moved to [`env::NACOS_PASSWORD_ENV`](crate::env::NACOS_PASSWORD_ENV).
#[deprecated(
    since = "0.1.0",
    note = "use `service_registry::env::NACOS_PASSWORD_ENV`"
)]
#[doc(hidden)]
pub const PASSWORD_ENV: &str = crate::env::NACOS_PASSWORD_ENV;

pub use discovery::NacosDiscovery;
pub use error::NacosError;
pub use registry::NacosRegistry;
pub use server::NacosServer;
pub use wire::{PAYLOAD_CODEC_KEY, START_TIME_KEY, WARMUP_KEY};

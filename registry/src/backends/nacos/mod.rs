//! The Nacos backend (feature `nacos`), wire-compatible with Kitex's `registry-nacos`.
//!
//! Instances are registered over Nacos 2.x's gRPC API on one connection per process, ephemeral,
//! with Kitex's fields: service name, group `DEFAULT_GROUP`, cluster `DEFAULT`, ip, port,
//! weight, `enabled` and `healthy` true, metadata = tags. Go services using Kitex (through
//! nacos-sdk-go v1 or v2) and Rust services using this crate find each other.

mod auth;
mod config;
mod connection;
mod discovery;
mod error;
mod heartbeat;
mod proto;
mod registry;
mod server;
mod session;
mod stream;
mod wire;

pub use config::{
    NacosConfig, NacosConfigError, DEFAULT_CLUSTER, DEFAULT_GROUP, GRPC_PORT_ENV, KITEX_TAGS_ENV,
    NAMESPACE_ENV, PASSWORD_ENV, SERVER_ADDR_ENV, SERVER_PORT_ENV, USERNAME_ENV,
};
pub use discovery::NacosDiscovery;
pub use error::NacosError;
pub use registry::NacosRegistry;
pub use server::NacosServer;
pub use wire::{PAYLOAD_CODEC_KEY, START_TIME_KEY, WARMUP_KEY};

//! Registry backends. The in-memory one is always compiled; the others sit behind features and
//! share the kit in `kit/`.

pub mod memory;

#[cfg(any(feature = "etcd", feature = "zookeeper", feature = "nacos"))]
pub(crate) mod kit;

#[cfg(feature = "etcd")]
pub mod etcd;

#[cfg(feature = "zookeeper")]
pub mod zookeeper;

#[cfg(feature = "nacos")]
pub mod nacos;

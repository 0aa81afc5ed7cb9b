//! Registry backends. The in-memory one is always compiled; the others sit behind features.

pub mod memory;
pub(crate) mod watch;

#[cfg(any(feature = "etcd", feature = "zookeeper", feature = "nacos"))]
pub(crate) mod cache;
#[cfg(any(feature = "etcd", feature = "zookeeper"))]
pub(crate) mod call;
#[cfg(any(feature = "etcd", feature = "zookeeper", feature = "nacos"))]
pub(crate) mod handle;
#[cfg(any(feature = "etcd", feature = "zookeeper", feature = "nacos"))]
pub(crate) mod live;
#[cfg(any(feature = "etcd", feature = "zookeeper"))]
pub(crate) mod names;

#[cfg(feature = "etcd")]
pub mod etcd;

#[cfg(feature = "zookeeper")]
pub mod zookeeper;

#[cfg(feature = "nacos")]
pub mod nacos;

//! Registry backends. The in-memory one is always compiled; the others sit behind features.

pub mod memory;
#[cfg(any(feature = "etcd", feature = "zookeeper"))]
pub(crate) mod session;

#[cfg(feature = "etcd")]
pub mod etcd;

#[cfg(feature = "zookeeper")]
pub mod zookeeper;

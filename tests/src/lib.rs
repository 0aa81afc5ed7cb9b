//! Shared pieces of the integration tests: a TCP echo server, test registries, deadline polling,
//! and (behind features) fixtures that start real etcd / ZooKeeper servers.

#[cfg(all(feature = "etcd", feature = "zookeeper", feature = "nacos"))]
pub mod campaign;
pub mod child;
pub mod conformance;
pub mod echo;
pub mod fixtures;
pub mod poll;
pub mod proxy;
pub mod registries;
pub mod rollout;
pub mod running;

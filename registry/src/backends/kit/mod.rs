//! The kit the network backends (etcd, ZooKeeper, Nacos) are built from; each file one piece.
//!
//! Registry side: a session task, run by the [`driver`], owns a [`live`] set that [`handle`] commands apply to, and
//! every call it makes is bounded ([`call`]); [`names`] refuses names a path cannot hold.
//! Discovery side: a [`watch`] task follows one service through a backend's `Source` and
//! publishes to the [latest-state channel](crate::discovery::latest), the resolve [`cache`]
//! answers from live watches, and the calls of one discovery share one [`client`].
//!
//! (The public [`kit`](crate::kit) module is the part of this that authors of a backend
//! outside this crate can use.)

pub(crate) mod cache;
#[cfg(any(feature = "etcd", feature = "zookeeper"))]
pub(crate) mod call;
pub(crate) mod client;
pub(crate) mod driver;
pub(crate) mod handle;
pub(crate) mod live;
#[cfg(any(feature = "etcd", feature = "zookeeper"))]
pub(crate) mod names;
pub(crate) mod watch;

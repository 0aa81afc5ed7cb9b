//! The client side: [`Discovery`] resolves and watches the instances of a service; [`latest`]
//! is the channel every watch is built on.

mod instances;
pub(crate) mod latest;

pub use instances::{Instances, InstancesIter};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures_core::Stream;
use thiserror::Error;

use crate::info::Info;
use crate::registry::SharedError;

/// One instance of a service, as a client sees it.
///
/// ```
/// use service_registry::{Info, Instance};
///
/// let info = Info::new("echo", "127.0.0.1:1".parse().unwrap());
/// let instance = Instance::from(&info);
/// assert_eq!(instance.addr, info.addr);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    /// Where to connect.
    pub addr: SocketAddr,
    /// The instance weight, in `MIN_WEIGHT..=MAX_WEIGHT` when read from a registry (a value
    /// of 0 reads as the default weight, one above `MAX_WEIGHT` as `MAX_WEIGHT`).
    pub weight: u32,
    /// The instance's tags.
    pub tags: BTreeMap<String, String>,
    /// When the instance started, when the registry records it.
    pub start_time: Option<SystemTime>,
    /// The warm-up period (zero when not recorded).
    pub warmup: Duration,
    /// The payload codec, when recorded.
    pub payload_codec: Option<String>,
}

impl From<&Info> for Instance {
    fn from(info: &Info) -> Self {
        Self {
            addr: info.addr,
            weight: info.weight,
            tags: info.tags.clone(),
            start_time: Some(info.start_time),
            warmup: info.warmup,
            payload_codec: info.payload_codec.clone(),
        }
    }
}

/// One step of a watch, modelled on Volo's `Change`: the whole current set plus what changed.
///
/// The first item of every watch has `all == added` (the snapshot); later items carry the
/// differences, and `all` is always the complete set after the change. Every field is an
/// [`Instances`]: the instances are shared with the watch and with each other, never copied,
/// so a change of one instance in a large service costs `O(log n)`, not a copy of the set.
///
/// ```
/// use service_registry::{Info, Instance, Instances};
/// use service_registry::kit::diff_instances;
/// let a = Instance::from(&Info::new("s", "127.0.0.1:1".parse().unwrap()));
/// let change = diff_instances("s", &a.clone().into(), &Instances::new()).unwrap();
/// assert_eq!(change.removed, vec![a]);
/// assert!(change.all.is_empty());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The watched service.
    pub service: String,
    /// Every instance after this change.
    pub all: Instances,
    /// Instances that appeared.
    pub added: Instances,
    /// Instances whose data changed (same address).
    pub updated: Instances,
    /// Instances that went away (as they were last seen).
    pub removed: Instances,
}

impl Change {
    /// The first item of every watch: `all` is the current set, and every instance in it counts
    /// as added.
    ///
    /// ```
    /// use service_registry::{Change, Info, Instance};
    /// let a = Instance::from(&Info::new("s", "127.0.0.1:1".parse().unwrap()));
    /// let first = Change::snapshot("s", vec![a.clone()]);
    /// assert_eq!(first.all, first.added);
    /// assert!(first.updated.is_empty() && first.removed.is_empty());
    /// ```
    pub fn snapshot(service: &str, all: impl Into<Instances>) -> Self {
        let all = all.into();
        Self {
            service: service.to_string(),
            added: all.clone(),
            all,
            updated: Instances::new(),
            removed: Instances::new(),
        }
    }
}

/// The stream returned by [`Discovery::watch`].
pub type WatchStream = Pin<Box<dyn Stream<Item = Change> + Send + 'static>>;

/// Why discovery failed.
///
/// ```
/// use service_registry::DiscoveryError;
/// use service_registry::kit::shared;
/// let err = DiscoveryError::Backend { backend: "etcd", service: "echo".into(), source: shared("boom") };
/// assert!(err.to_string().contains("echo"));
/// ```
#[derive(Clone, Debug, Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The registry could not be reached.
    #[error(
        "{backend} registry at {endpoint} is unreachable while resolving `{service}`: {source}"
    )]
    Unavailable {
        /// The backend.
        backend: &'static str,
        /// The endpoint(s) tried.
        endpoint: String,
        /// The service being resolved.
        service: String,
        /// The client error.
        #[source]
        source: SharedError,
    },
    /// The registry did not answer within a time limit (the one spelling of a timeout, as
    /// [`RegistryError::Timeout`](crate::RegistryError::Timeout)); a later call may succeed.
    #[error(
        "{backend} registry{} did not answer within {timeout:?} while resolving `{service}`",
        crate::registry::at_endpoint(.endpoint)
    )]
    Timeout {
        /// The backend.
        backend: &'static str,
        /// The endpoint(s) asked, when known.
        endpoint: Option<String>,
        /// The service being resolved.
        service: String,
        /// The limit that was exceeded.
        timeout: std::time::Duration,
    },
    /// The registry server lacks something this client needs to follow a service (ZooKeeper
    /// older than 3.6 has no persistent watches).
    #[error("{backend} registry at {endpoint} cannot watch `{service}`: {reason}")]
    Unsupported {
        /// The backend.
        backend: &'static str,
        /// The endpoint(s) tried.
        endpoint: String,
        /// The service being watched.
        service: String,
        /// What is missing, and what to do about it.
        reason: String,
    },
    /// Any other backend failure.
    #[error("{backend} discovery of `{service}` failed: {source}")]
    Backend {
        /// The backend.
        backend: &'static str,
        /// The service being resolved.
        service: String,
        /// The client error.
        #[source]
        source: SharedError,
    },
    /// No source of a [`MergedDiscovery`](crate::MergedDiscovery) answered: each failed, or
    /// none was added.
    ///
    /// ```
    /// use service_registry::DiscoveryError;
    /// use service_registry::kit::shared;
    /// let down = DiscoveryError::Backend { backend: "etcd", service: "echo".into(), source: shared("refused") };
    /// let err = DiscoveryError::AllSourcesFailed {
    ///     operation: "resolve",
    ///     service: "echo".into(),
    ///     failures: vec![("etcd".into(), down)],
    /// };
    /// assert!(err.to_string().starts_with("cannot resolve `echo` from any source: etcd: "));
    /// ```
    #[error("{}", all_sources_failed(.operation, .service, .failures))]
    AllSourcesFailed {
        /// What was attempted: `resolve` or `watch`.
        operation: &'static str,
        /// The service.
        service: String,
        /// Each source's name and failure, in the order the sources were added.
        failures: Vec<(String, DiscoveryError)>,
    },
}

/// The message of [`DiscoveryError::AllSourcesFailed`].
fn all_sources_failed(
    operation: &str,
    service: &str,
    failures: &[(String, DiscoveryError)],
) -> String {
    if failures.is_empty() {
        return format!(
            "cannot {operation} `{service}`: the merged discovery has no source; add one with `MergedDiscovery::source`"
        );
    }
    let each: Vec<String> = failures
        .iter()
        .map(|(name, err)| format!("{name}: {err}"))
        .collect();
    format!(
        "cannot {operation} `{service}` from any source: {}; check that at least one of these registries is reachable",
        each.join("; ")
    )
}

impl DiscoveryError {
    /// The discovery-side reading of a backend call's [`RegistryError`](crate::RegistryError).
    #[cfg(any(feature = "etcd", feature = "zookeeper", feature = "nacos"))]
    pub(crate) fn from_registry(
        backend: &'static str,
        service: &str,
        err: crate::RegistryError,
    ) -> Self {
        match err {
            crate::RegistryError::Unavailable {
                endpoint, source, ..
            } => DiscoveryError::Unavailable {
                backend,
                endpoint,
                service: service.to_string(),
                source,
            },
            crate::RegistryError::Timeout {
                endpoint, timeout, ..
            } => DiscoveryError::Timeout {
                backend,
                endpoint,
                service: service.to_string(),
                timeout,
            },
            other => DiscoveryError::Backend {
                backend,
                service: service.to_string(),
                source: std::sync::Arc::new(other),
            },
        }
    }
}

/// Finds the instances of a service (Volo's `Discover`).
///
/// ```
/// use futures_util::StreamExt;
/// use service_registry::{Discovery, Info, MemoryRegistry, Registry};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let registry = MemoryRegistry::new();
/// let mut watch = registry.watch("echo").await.unwrap();
/// assert!(watch.next().await.unwrap().all.is_empty()); // the snapshot comes first
///
/// registry.register(&Info::new("echo", "127.0.0.1:7000".parse().unwrap())).await.unwrap();
/// let change = watch.next().await.unwrap();
/// assert_eq!(change.added.len(), 1);
/// assert_eq!(registry.resolve("echo").await.unwrap().len(), 1);
/// # }
/// ```
#[async_trait]
pub trait Discovery: Send + Sync + 'static {
    /// The instances registered now.
    ///
    /// The etcd and ZooKeeper discoveries answer from a live watch on the same service when
    /// they have one that is in sync (no round trip; as fresh as the watch), and read from the
    /// registry otherwise.
    ///
    /// The set is shared, not copied: answering from a watch costs a reference count.
    async fn resolve(&self, service: &str) -> Result<Instances, DiscoveryError>;
    /// The current set first (a [`Change::snapshot`]), then the changes; the stream ends only
    /// when the backend is dropped. Backends recover from broken watches by themselves (re-list
    /// and resume).
    ///
    /// A watch holds the latest state, not a history: a reader that falls behind gets one
    /// [`Change`] from what it last saw to the current set, so a watcher that never reads costs
    /// memory in proportion to the instance set, however often it changes. Dropping the stream
    /// ends whatever follows the service for it (a backend task, its server-side watch).
    async fn watch(&self, service: &str) -> Result<WatchStream, DiscoveryError>;
}

#[async_trait]
impl<D: Discovery + ?Sized> Discovery for std::sync::Arc<D> {
    async fn resolve(&self, service: &str) -> Result<Instances, DiscoveryError> {
        (**self).resolve(service).await
    }
    async fn watch(&self, service: &str) -> Result<WatchStream, DiscoveryError> {
        (**self).watch(service).await
    }
}

/// Computes the [`Change`] from `old` to `new` (keyed by address); `None` when nothing changed.
///
/// Backends that re-list after an outage use this so watchers see exactly what differs. The
/// parts the two sets share are skipped, not compared: the difference between two versions of
/// one set costs in proportion to what changed.
///
/// ```
/// use service_registry::{Info, Instance, Instances};
/// use service_registry::kit::diff_instances;
///
/// let a = Instance::from(&Info::new("s", "127.0.0.1:1".parse().unwrap()));
/// let change = diff_instances("s", &Instances::new(), &a.clone().into()).unwrap();
/// assert_eq!(change.added, vec![a.clone()]);
/// assert!(diff_instances("s", &a.clone().into(), &a.into()).is_none());
/// ```
pub fn diff_instances(service: &str, old: &Instances, new: &Instances) -> Option<Change> {
    let (added, updated, removed) = old.diff(new);
    let empty = added.is_empty() && updated.is_empty() && removed.is_empty();
    (!empty).then(|| Change {
        service: service.to_string(),
        all: new.clone(),
        added,
        updated,
        removed,
    })
}

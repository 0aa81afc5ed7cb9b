//! The [`Registry`] trait every backend implements (Kitex's `registry.Registry`).

use async_trait::async_trait;
use thiserror::Error;

use crate::info::Info;

/// A boxed error from a backend's client library.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The source of a [`RegistryError`] or [`DiscoveryError`](crate::DiscoveryError): shared, so
/// one failure can be handed to every waiter (as tonic's `Status` does).
pub type SharedError = std::sync::Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Wraps an error or a message as a [`SharedError`].
///
/// ```
/// use service_registry::RegistryError;
/// use service_registry::kit::shared;
/// let err = RegistryError::Backend { backend: "custom", source: shared("disk full") };
/// let copy = err.clone();
/// assert_eq!(copy.to_string(), "custom registry call failed: disk full");
/// ```
pub fn shared(err: impl Into<BoxError>) -> SharedError {
    std::sync::Arc::from(err.into())
}

/// Why a registry call failed.
///
/// ```
/// use service_registry::RegistryError;
/// let err = RegistryError::InvalidInfo { service: "a/b".into(), reason: "contains `/`".into() };
/// assert_eq!(err.to_string(), "cannot register service `a/b`: contains `/`");
/// ```
#[derive(Clone, Debug, Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The registry could not be reached; the call may succeed later.
    #[error("{backend} registry at {endpoint} is unreachable: {source}; check that it is running and reachable (the call is retried)")]
    Unavailable {
        /// The backend (`etcd`, `zookeeper`, ...).
        backend: &'static str,
        /// The endpoint(s) tried.
        endpoint: String,
        /// The client error.
        #[source]
        source: SharedError,
    },
    /// The registry refused the credentials.
    #[error("{backend} at {endpoint} rejected the credentials of user `{user}`: {source}; check the user name and password")]
    Unauthenticated {
        /// The backend.
        backend: &'static str,
        /// The endpoint(s) tried.
        endpoint: String,
        /// The user name presented.
        user: String,
        /// The client error.
        #[source]
        source: SharedError,
    },
    /// The registration data cannot be written (for example a service name with `/`).
    #[error("cannot register service `{service}`: {reason}")]
    InvalidInfo {
        /// The service name.
        service: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The registry did not answer within a time limit: a backend's own network call, or the
    /// registrar's limit on a whole register/deregister. The call may succeed later (the
    /// registrar retries it). This is the one spelling of a timeout; see
    /// [`is_transient`](Self::is_transient).
    ///
    /// ```
    /// use std::time::Duration;
    /// use service_registry::RegistryError;
    /// let err = RegistryError::Timeout {
    ///     backend: "etcd",
    ///     endpoint: Some("127.0.0.1:2379".into()),
    ///     service: None,
    ///     timeout: Duration::from_secs(3),
    /// };
    /// assert_eq!(err.to_string(), "etcd registry at 127.0.0.1:2379 did not answer within 3s; the call is retried");
    /// assert!(err.is_transient());
    /// ```
    #[error(
        "{backend} registry{} did not answer within {timeout:?}{}; the call is retried",
        at_endpoint(.endpoint),
        for_service(.service)
    )]
    Timeout {
        /// The backend.
        backend: &'static str,
        /// The endpoint(s) asked, when the call went to known ones.
        endpoint: Option<String>,
        /// The service the call was for, when it was for one.
        service: Option<String>,
        /// The limit that was exceeded.
        timeout: std::time::Duration,
    },
    /// Any other backend failure.
    #[error("{backend} registry call failed: {source}")]
    Backend {
        /// The backend.
        backend: &'static str,
        /// The client error.
        #[source]
        source: SharedError,
    },
}

/// ` at <endpoint>` when the endpoint is known (also used by `DiscoveryError::Timeout`).
pub(crate) fn at_endpoint(endpoint: &Option<String>) -> String {
    endpoint
        .as_deref()
        .map(|e| format!(" at {e}"))
        .unwrap_or_default()
}

fn for_service(service: &Option<String>) -> String {
    service
        .as_deref()
        .map(|s| format!(" for service `{s}`"))
        .unwrap_or_default()
}

impl RegistryError {
    /// Whether the registry could not be reached or did not answer in time
    /// ([`Unavailable`](Self::Unavailable) or [`Timeout`](Self::Timeout)): the same call may
    /// succeed later, and a connection it went over may be dead.
    ///
    /// ```
    /// use service_registry::RegistryError;
    /// let invalid = RegistryError::InvalidInfo { service: "a/b".into(), reason: "contains `/`".into() };
    /// assert!(!invalid.is_transient());
    /// ```
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Timeout { .. })
    }
}

/// A service registry: makes instances findable and removes them.
///
/// Two required methods, as in Kitex: a backend owns its connection state (leases, sessions)
/// and keeps its live registrations alive by itself; the harness ([`crate::Registrar`]) owns
/// retries, status and shutdown, and calls [`close`](Self::close) when it is done. Both
/// methods must be idempotent: registering the same `Info` twice overwrites, deregistering
/// something absent succeeds.
///
/// ```
/// use service_registry::{Info, MemoryRegistry, Registry};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let registry = MemoryRegistry::new();
/// let info = Info::new("echo", "127.0.0.1:7000".parse().unwrap());
/// registry.register(&info).await.unwrap();
/// registry.deregister(&info).await.unwrap();
/// # }
/// ```
#[async_trait]
pub trait Registry: Send + Sync + 'static {
    /// Makes `info` findable; overwrites an earlier registration of the same service and address.
    async fn register(&self, info: &Info) -> Result<(), RegistryError>;
    /// Removes the registration of `info.service_name` at `info.addr`.
    async fn deregister(&self, info: &Info) -> Result<(), RegistryError>;

    /// The state of the backend's connection, for backends that keep registrations alive by
    /// themselves (an etcd lease, a ZooKeeper session). While it says
    /// [`Health::Recovering`], the [`Registrar`](crate::Registrar) shows every registered
    /// service as `Retrying` with the cause. `None` (the default): nothing to watch.
    ///
    /// ```
    /// use service_registry::{MemoryRegistry, Registry};
    /// assert!(MemoryRegistry::new().health().is_none());
    /// ```
    fn health(&self) -> Option<tokio::sync::watch::Receiver<Health>> {
        None
    }

    /// A short name for status, logs and metrics (`memory`, `etcd`, `zookeeper`); the
    /// [`Registrar`](crate::Registrar) adds `#2`, `#3` to repeats. Default: `registry`.
    ///
    /// ```
    /// use service_registry::{MemoryRegistry, Registry};
    /// assert_eq!(MemoryRegistry::new().name(), "memory");
    /// ```
    fn name(&self) -> String {
        "registry".to_string()
    }

    /// Removes whatever this registry still holds and releases its connection (an etcd lease,
    /// a ZooKeeper session, a Nacos connection); later calls fail. Bounded by the backend's
    /// close timeout; what it cannot remove in time expires with the lease or session. Calling
    /// it again does nothing.
    ///
    /// [`Registrar::serve`](crate::Registrar::serve) calls it on every registry it was given,
    /// once its services are deregistered and its server has stopped, so a server does not
    /// keep a clone of its registry just to close it (a
    /// [`shared_registry`](crate::RegistrarBuilder::shared_registry) still held elsewhere is
    /// left open). Default: nothing to release (the
    /// in-memory registry keeps its data, so a test can read it afterwards).
    ///
    /// ```
    /// use service_registry::{MemoryRegistry, Registry};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let registry = MemoryRegistry::new();
    /// registry.close().await; // nothing to release
    /// # }
    /// ```
    async fn close(&self) {}
}

/// The connection state a backend reports through [`Registry::health`].
///
/// ```
/// use service_registry::Health;
/// let h = Health::Recovering { attempt: 1, last_error: "connection refused".into() };
/// assert_ne!(h, Health::Healthy);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Registrations are live.
    Healthy,
    /// The connection, lease or session was lost; the backend is restoring its registrations.
    Recovering {
        /// Failed recovery attempts so far (0 while the first one runs).
        attempt: u32,
        /// What was lost, or why the last attempt failed.
        last_error: String,
    },
    /// The backend stopped keeping registrations alive for good (its background task panicked
    /// or was cancelled); only a new registry (in practice, a restart) brings them back.
    Failed {
        /// What happened.
        error: String,
    },
}

#[async_trait]
impl<R: Registry + ?Sized> Registry for std::sync::Arc<R> {
    async fn register(&self, info: &Info) -> Result<(), RegistryError> {
        (**self).register(info).await
    }
    async fn deregister(&self, info: &Info) -> Result<(), RegistryError> {
        (**self).deregister(info).await
    }
    fn health(&self) -> Option<tokio::sync::watch::Receiver<Health>> {
        (**self).health()
    }
    fn name(&self) -> String {
        (**self).name()
    }
    async fn close(&self) {
        (**self).close().await
    }
}

//! Per-service registration status, observable while the server runs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::registry::Health;

/// Where one service's registration stands.
///
/// ```
/// use service_registry::ServiceStatus;
/// let s = ServiceStatus::Retrying { attempt: 2, last_error: "etcd unreachable".into() };
/// assert!(matches!(s, ServiceStatus::Retrying { attempt: 2, .. }));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceStatus {
    /// The first attempt is under way.
    Registering,
    /// The registry holds the registration.
    Registered,
    /// An attempt failed; another follows after a backoff delay.
    Retrying {
        /// How many attempts have failed so far.
        attempt: u32,
        /// The last failure, as text.
        last_error: String,
    },
    /// The registration was removed at shutdown.
    Deregistered,
    /// The registry's backend stopped keeping registrations alive for good (its background task
    /// panicked, was cancelled, or ended without being closed): nothing is retried; restart the
    /// process (or build a new registry) to register again.
    Failed {
        /// What happened.
        error: String,
    },
}

/// A cheap, cloneable view of every service's [`ServiceStatus`].
///
/// ```
/// use service_registry::{service, MemoryRegistry, Registrar, ServiceStatus};
///
/// #[service(name = "status-doc")]
/// struct Doc;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// let registrar = Registrar::builder()
///     .registry(MemoryRegistry::new())
///     .listen_addr(listener.local_addr().unwrap())
///     .only(["status-doc"])
///     .shutdown_signal(std::future::pending())
///     .build()
///     .unwrap();
/// let status = registrar.status();
/// assert_eq!(status.get("status-doc"), Some(ServiceStatus::Registering));
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct StatusHandle {
    rx: watch::Receiver<BTreeMap<String, ServiceStatus>>,
}

impl StatusHandle {
    pub(crate) fn new(rx: watch::Receiver<BTreeMap<String, ServiceStatus>>) -> Self {
        Self { rx }
    }

    /// The status of one service, if the registrar manages it.
    ///
    /// See [`StatusHandle`] for an example.
    pub fn get(&self, service: &str) -> Option<ServiceStatus> {
        self.rx.borrow().get(service).cloned()
    }

    /// Every managed service with its status.
    ///
    /// ```
    /// # use service_registry::{service, MemoryRegistry, Registrar};
    /// # #[service(name = "snapshot-doc")] struct Doc;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let registrar = Registrar::builder().registry(MemoryRegistry::new())
    /// #     .listen_addr("127.0.0.1:9".parse().unwrap()).only(["snapshot-doc"]).build().unwrap();
    /// let all = registrar.status().snapshot();
    /// assert!(all.contains_key("snapshot-doc"));
    /// # }
    /// ```
    pub fn snapshot(&self) -> BTreeMap<String, ServiceStatus> {
        self.rx.borrow().clone()
    }

    /// Waits until `done` holds for the whole status map; returns the map that satisfied it.
    /// Returns `None` if the registrar is gone before that.
    ///
    /// ```
    /// # use service_registry::{service, MemoryRegistry, Registrar, ServiceStatus};
    /// # #[service(name = "wait-doc")] struct Doc;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    /// # let registrar = Registrar::builder().registry(MemoryRegistry::new())
    /// #     .listen_addr("127.0.0.1:9".parse().unwrap()).only(["wait-doc"])
    /// #     .shutdown_signal(async { let _ = stopped.await; }).build().unwrap();
    /// let status = registrar.status();
    /// let run = tokio::spawn(registrar.serve(|_shutdown| async { std::future::pending::<std::io::Result<()>>().await }));
    /// status.wait_for(|all| all.values().all(|s| *s == ServiceStatus::Registered)).await;
    /// # stop.send(()).unwrap(); run.await.unwrap().unwrap();
    /// # }
    /// ```
    pub async fn wait_for(
        &self,
        mut done: impl FnMut(&BTreeMap<String, ServiceStatus>) -> bool,
    ) -> Option<BTreeMap<String, ServiceStatus>> {
        let mut rx = self.rx.clone();
        let result = rx.wait_for(|map| done(map)).await;
        result.ok().map(|map| map.clone())
    }

    /// Waits for the next status change; `false` when the registrar is gone.
    ///
    /// ```
    /// # use service_registry::{service, MemoryRegistry, Registrar};
    /// # #[service(name = "changed-doc")] struct Doc;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let registrar = Registrar::builder().registry(MemoryRegistry::new())
    /// #     .listen_addr("127.0.0.1:9".parse().unwrap()).only(["changed-doc"]).build().unwrap();
    /// let mut status = registrar.status();
    /// drop(registrar);
    /// assert!(!status.changed().await);
    /// # }
    /// ```
    pub async fn changed(&mut self) -> bool {
        self.rx.changed().await.is_ok()
    }
}

/// The writing side, owned by the registrar.
#[derive(Clone, Debug)]
pub(crate) struct StatusBoard {
    tx: watch::Sender<BTreeMap<String, ServiceStatus>>,
    /// Services the registry has accepted and not yet removed: the ones a backend outage
    /// affects.
    live: Arc<Mutex<BTreeSet<String>>>,
}

impl StatusBoard {
    pub(crate) fn new(services: impl IntoIterator<Item = String>) -> Self {
        let map = services
            .into_iter()
            .map(|name| (name, ServiceStatus::Registering))
            .collect();
        Self {
            tx: watch::channel(map).0,
            live: Arc::default(),
        }
    }

    pub(crate) fn handle(&self) -> StatusHandle {
        StatusHandle::new(self.tx.subscribe())
    }

    fn live(&self) -> MutexGuard<'_, BTreeSet<String>> {
        // Each update is a single insert or remove, so a poisoned set is still consistent.
        self.live
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    pub(crate) fn set(&self, service: &str, status: ServiceStatus) {
        {
            let mut live = self.live();
            match status {
                ServiceStatus::Registered => live.insert(service.to_string()),
                ServiceStatus::Deregistered => live.remove(service),
                _ => false,
            };
        }
        self.tx.send_modify(|map| {
            map.insert(service.to_string(), status);
        });
    }

    /// Shows the backend's health on every live service (a failure on every service not yet
    /// deregistered); returns how many it touched.
    pub(crate) fn apply_health(&self, health: &Health) -> usize {
        let status = match health {
            Health::Healthy => ServiceStatus::Registered,
            Health::Recovering {
                attempt,
                last_error,
            } => ServiceStatus::Retrying {
                attempt: *attempt,
                last_error: last_error.clone(),
            },
            Health::Failed { error } => {
                let mut touched = 0;
                self.tx.send_modify(|map| {
                    for status in map.values_mut() {
                        if *status != ServiceStatus::Deregistered {
                            *status = ServiceStatus::Failed {
                                error: error.clone(),
                            };
                            touched += 1;
                        }
                    }
                });
                return touched;
            }
        };
        let live = self.live().clone();
        self.tx.send_modify(|map| {
            for name in &live {
                map.insert(name.clone(), status.clone());
            }
        });
        live.len()
    }
}

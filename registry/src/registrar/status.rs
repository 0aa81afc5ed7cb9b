//! Per-service registration status, observable while the server runs.

use std::collections::BTreeMap;
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
#[non_exhaustive]
pub enum ServiceStatus {
    /// The readiness gate ([`RegistrarBuilder::ready_when`](crate::RegistrarBuilder::ready_when)
    /// or [`ready_check`](crate::RegistrarBuilder::ready_check)) has not passed yet; nothing is
    /// registered.
    WaitingForReady,
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
    /// The health check ([`RegistrarBuilder::health_check`](crate::RegistrarBuilder::health_check))
    /// fails: the registration was withdrawn while the server keeps serving; it comes back when
    /// the check passes again.
    Unhealthy {
        /// The last failure of the check.
        reason: String,
    },
    /// Taken out of rotation through [`ControlHandle::take_out`](crate::ControlHandle::take_out):
    /// deregistered while the server keeps serving.
    OutOfService,
    /// The registration was removed at shutdown.
    Deregistered,
    /// The registry's backend stopped keeping registrations alive for good (its background task
    /// panicked, was cancelled, or ended without being closed), or the readiness gate
    /// ([`RegistrarBuilder::ready_when`](crate::RegistrarBuilder::ready_when)) panicked and so
    /// can never pass: nothing is retried; restart the process (or build a new registry) to
    /// register again. The server keeps serving, and shutdown works as usual.
    Failed {
        /// What happened.
        error: String,
    },
}

impl ServiceStatus {
    /// The `state` label of the `service_registry_registrations` gauge.
    fn label(&self) -> &'static str {
        match self {
            ServiceStatus::WaitingForReady => "waiting_for_ready",
            ServiceStatus::Registering => "registering",
            ServiceStatus::Registered => "registered",
            ServiceStatus::Retrying { .. } => "retrying",
            ServiceStatus::Unhealthy { .. } => "unhealthy",
            ServiceStatus::OutOfService => "out_of_service",
            ServiceStatus::Deregistered => "deregistered",
            ServiceStatus::Failed { .. } => "failed",
        }
    }

    /// Which status wins when one service stands differently in several registries: the one
    /// that needs attention first.
    fn urgency(&self) -> u8 {
        match self {
            ServiceStatus::Failed { .. } => 0,
            ServiceStatus::Retrying { .. } => 1,
            ServiceStatus::Registering => 2,
            ServiceStatus::WaitingForReady => 3,
            ServiceStatus::Unhealthy { .. } => 4,
            ServiceStatus::OutOfService => 5,
            ServiceStatus::Registered => 6,
            ServiceStatus::Deregistered => 7,
        }
    }
}

/// Service name → registry name → status.
pub(crate) type Detail = BTreeMap<String, BTreeMap<String, ServiceStatus>>;

/// One status for a service across its registries: the same status everywhere is that status;
/// otherwise the most urgent one, with the registry named in its error text.
fn combine(per_registry: &BTreeMap<String, ServiceStatus>) -> Option<ServiceStatus> {
    let (registry, worst) = per_registry.iter().min_by_key(|(_, s)| s.urgency())?;
    if per_registry.len() == 1 || per_registry.values().all(|s| s == worst) {
        return Some(worst.clone());
    }
    Some(match worst {
        ServiceStatus::Retrying {
            attempt,
            last_error,
        } => ServiceStatus::Retrying {
            attempt: *attempt,
            last_error: format!("{registry}: {last_error}"),
        },
        ServiceStatus::Failed { error } => ServiceStatus::Failed {
            error: format!("{registry}: {error}"),
        },
        other => other.clone(),
    })
}

fn combine_all(detail: &Detail) -> BTreeMap<String, ServiceStatus> {
    detail
        .iter()
        .filter_map(|(service, per)| Some((service.clone(), combine(per)?)))
        .collect()
}

/// A cheap, cloneable view of every service's [`ServiceStatus`].
///
/// With several registries ([`RegistrarBuilder::named_registry`](crate::RegistrarBuilder::named_registry)),
/// [`get`](Self::get) and [`snapshot`](Self::snapshot) give one status per service (the most
/// urgent across registries) and [`per_registry`](Self::per_registry) the detail.
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
    rx: watch::Receiver<Detail>,
}

impl StatusHandle {
    pub(crate) fn new(rx: watch::Receiver<Detail>) -> Self {
        Self { rx }
    }

    /// The status of one service, if the registrar manages it.
    ///
    /// See [`StatusHandle`] for an example.
    pub fn get(&self, service: &str) -> Option<ServiceStatus> {
        self.rx.borrow().get(service).and_then(combine)
    }

    /// The status of one service in each registry, by registry name.
    ///
    /// ```
    /// # use service_registry::{service, MemoryRegistry, Registrar, ServiceStatus};
    /// # #[service(name = "per-registry-doc")] struct Doc;
    /// let registrar = Registrar::builder()
    ///     .named_registry("dc1", MemoryRegistry::new())
    ///     .named_registry("dc2", MemoryRegistry::new())
    ///     .listen_addr("127.0.0.1:9".parse().unwrap())
    ///     .only(["per-registry-doc"])
    ///     .build()
    ///     .unwrap();
    /// let per = registrar.status().per_registry("per-registry-doc").unwrap();
    /// assert_eq!(per.keys().collect::<Vec<_>>(), ["dc1", "dc2"]);
    /// assert_eq!(per["dc1"], ServiceStatus::Registering);
    /// ```
    pub fn per_registry(&self, service: &str) -> Option<BTreeMap<String, ServiceStatus>> {
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
        combine_all(&self.rx.borrow())
    }

    /// Every managed service with its status in each registry.
    ///
    /// ```
    /// # use service_registry::{service, MemoryRegistry, Registrar};
    /// # #[service(name = "detail-doc")] struct Doc;
    /// # let registrar = Registrar::builder().registry(MemoryRegistry::new())
    /// #     .listen_addr("127.0.0.1:9".parse().unwrap()).only(["detail-doc"]).build().unwrap();
    /// let detail = registrar.status().detail();
    /// assert!(detail["detail-doc"].contains_key("memory"));
    /// ```
    pub fn detail(&self) -> BTreeMap<String, BTreeMap<String, ServiceStatus>> {
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
    /// #     .drain_delay(std::time::Duration::ZERO)
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
        let result = rx.wait_for(|detail| done(&combine_all(detail))).await;
        result.ok().map(|detail| combine_all(&detail))
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
    tx: watch::Sender<Detail>,
    /// (service, registry) pairs the registry has accepted and not yet removed (the ones a
    /// backend outage affects), with what their registration task said last: `Registered`, or
    /// `Retrying` while a later update is still refused. A backend that is healthy again shows
    /// that, not more.
    live: Arc<Mutex<BTreeMap<(String, String), ServiceStatus>>>,
}

impl StatusBoard {
    pub(crate) fn new(
        services: impl IntoIterator<Item = String>,
        registries: &[String],
        initial: ServiceStatus,
    ) -> Self {
        let map = services
            .into_iter()
            .map(|name| {
                let per = registries
                    .iter()
                    .map(|r| (r.clone(), initial.clone()))
                    .collect();
                (name, per)
            })
            .collect();
        let board = Self {
            tx: watch::channel(map).0,
            live: Arc::default(),
        };
        board.record();
        board
    }

    pub(crate) fn handle(&self) -> StatusHandle {
        StatusHandle::new(self.tx.subscribe())
    }

    /// Sets the `service_registry_registrations` gauge of every registry and state.
    fn record(&self) {
        let mut counts: BTreeMap<String, BTreeMap<&'static str, usize>> = BTreeMap::new();
        for per in self.tx.borrow().values() {
            for (registry, status) in per {
                *counts
                    .entry(registry.clone())
                    .or_default()
                    .entry(status.label())
                    .or_default() += 1;
            }
        }
        for (registry, by_state) in counts {
            for state in crate::metrics::STATES {
                let n = by_state.get(state).copied().unwrap_or(0);
                crate::metrics::registrations(&registry, state, n);
            }
        }
    }

    fn live(&self) -> MutexGuard<'_, BTreeMap<(String, String), ServiceStatus>> {
        // Each update is a single insert or remove, so a poisoned set is still consistent.
        self.live
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Whether any registry holds (or may hold) a registration of this process.
    pub(crate) fn any_live(&self) -> bool {
        !self.live().is_empty()
    }

    #[cfg(test)]
    pub(crate) fn get(&self, service: &str, registry: &str) -> Option<ServiceStatus> {
        self.tx.borrow().get(service)?.get(registry).cloned()
    }

    pub(crate) fn set(&self, service: &str, registry: &str, status: ServiceStatus) {
        {
            let key = (service.to_string(), registry.to_string());
            let mut live = self.live();
            match &status {
                ServiceStatus::Registered => {
                    live.insert(key, status.clone());
                }
                ServiceStatus::Retrying { .. } => {
                    if let Some(own) = live.get_mut(&key) {
                        *own = status.clone();
                    }
                }
                ServiceStatus::Failed { .. } => {}
                _ => {
                    live.remove(&key);
                }
            }
        }
        let changed = self.tx.send_if_modified(|map| {
            let slot = map
                .entry(service.to_string())
                .or_default()
                .entry(registry.to_string())
                .or_insert(ServiceStatus::Registering);
            if *slot == status {
                return false;
            }
            *slot = status;
            true
        });
        if changed {
            self.record();
        }
    }

    /// Shows `registry`'s health on every service live there (a failure on every service not
    /// yet deregistered); returns how many it touched.
    pub(crate) fn apply_health(&self, registry: &str, health: &Health) -> usize {
        let outage = match health {
            Health::Healthy => None,
            Health::Recovering {
                attempt,
                last_error,
            } => Some(ServiceStatus::Retrying {
                attempt: *attempt,
                last_error: last_error.clone(),
            }),
            Health::Failed { error } => {
                let mut touched = 0;
                self.tx.send_modify(|map| {
                    for per in map.values_mut() {
                        if let Some(status) = per.get_mut(registry) {
                            if *status != ServiceStatus::Deregistered {
                                *status = ServiceStatus::Failed {
                                    error: error.clone(),
                                };
                                touched += 1;
                            }
                        }
                    }
                });
                self.record();
                return touched;
            }
        };
        // Healthy again: each live service shows what its registration task said last.
        let live: Vec<(String, ServiceStatus)> = self
            .live()
            .iter()
            .filter(|((_, r), _)| r == registry)
            .map(|((s, _), own)| (s.clone(), outage.clone().unwrap_or_else(|| own.clone())))
            .collect();
        self.tx.send_modify(|map| {
            for (service, status) in &live {
                if let Some(slot) = map.get_mut(service).and_then(|per| per.get_mut(registry)) {
                    *slot = status.clone();
                }
            }
        });
        self.record();
        live.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_registry_is_shown_as_is() {
        let per = BTreeMap::from([("etcd".to_string(), ServiceStatus::OutOfService)]);
        assert_eq!(combine(&per), Some(ServiceStatus::OutOfService));
    }

    #[test]
    fn the_most_urgent_registry_wins_and_is_named() {
        let per = BTreeMap::from([
            ("a".to_string(), ServiceStatus::Registered),
            (
                "b".to_string(),
                ServiceStatus::Retrying {
                    attempt: 3,
                    last_error: "refused".into(),
                },
            ),
        ]);
        assert_eq!(
            combine(&per),
            Some(ServiceStatus::Retrying {
                attempt: 3,
                last_error: "b: refused".into()
            })
        );
        let same = BTreeMap::from([
            ("a".to_string(), ServiceStatus::Registered),
            ("b".to_string(), ServiceStatus::Registered),
        ]);
        assert_eq!(combine(&same), Some(ServiceStatus::Registered));
    }

    #[test]
    fn health_touches_only_its_registry() {
        let board = StatusBoard::new(
            ["s".to_string()],
            &["a".to_string(), "b".to_string()],
            ServiceStatus::Registering,
        );
        board.set("s", "a", ServiceStatus::Registered);
        board.set("s", "b", ServiceStatus::Registered);
        let lost = Health::Recovering {
            attempt: 0,
            last_error: "gone".into(),
        };
        assert_eq!(board.apply_health("b", &lost), 1);
        assert_eq!(board.get("s", "a"), Some(ServiceStatus::Registered));
        assert!(matches!(
            board.get("s", "b"),
            Some(ServiceStatus::Retrying { .. })
        ));
    }

    #[test]
    fn healthy_again_shows_a_refused_update_as_retrying() {
        let board = StatusBoard::new(
            ["s".to_string()],
            &["a".to_string()],
            ServiceStatus::Registering,
        );
        board.set("s", "a", ServiceStatus::Registered);
        let refused = ServiceStatus::Retrying {
            attempt: 1,
            last_error: "too large".into(),
        };
        board.set("s", "a", refused.clone());
        let lost = Health::Recovering {
            attempt: 0,
            last_error: "gone".into(),
        };
        board.apply_health("a", &lost);
        board.apply_health("a", &Health::Healthy);
        assert_eq!(board.get("s", "a"), Some(refused));
        board.set("s", "a", ServiceStatus::Registered);
        board.apply_health("a", &lost);
        board.apply_health("a", &Health::Healthy);
        assert_eq!(board.get("s", "a"), Some(ServiceStatus::Registered));
    }
}

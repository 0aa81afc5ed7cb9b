//! The life of one service in one registry: register, follow live changes, withdraw and come
//! back, retry failures, and the final removal at shutdown.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::watch;
use tracing::Instrument;

use crate::backoff::Backoff;
use crate::info::Info;
use crate::registry::shared;
use crate::registry::{Health, Registry, RegistryError};

use super::desired::{Desired, Want};
use super::status::{ServiceStatus, StatusBoard};

/// A registry with the name it has in status, logs and metrics.
#[derive(Clone)]
pub(crate) struct NamedRegistry {
    pub(crate) name: String,
    pub(crate) registry: Arc<dyn Registry>,
}

fn span(info: &Info, registry: &str) -> tracing::Span {
    tracing::info_span!("registration", service = %info.service_name, addr = %info.addr, registry)
}

/// Every address each service may hold in each registry, kept by its registration task and read
/// at shutdown: whatever this process registered is deregistered, an address it moved away
/// from included.
#[derive(Clone, Debug, Default)]
pub(crate) struct Holdings {
    held: Arc<Mutex<Held>>,
}

/// (service, registry) → the addresses it may hold there.
type Held = BTreeMap<(String, String), Vec<Info>>;

impl Holdings {
    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        // Each update replaces one entry whole, so a poisoned map is still consistent.
        self.held
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// What `service` may hold in `registry`.
    pub(crate) fn get(&self, service: &str, registry: &str) -> Vec<Info> {
        self.lock()
            .get(&(service.to_string(), registry.to_string()))
            .cloned()
            .unwrap_or_default()
    }

    fn set(&self, service: &str, registry: &str, held: &[Info]) {
        let key = (service.to_string(), registry.to_string());
        let mut map = self.lock();
        if held.is_empty() {
            map.remove(&key);
        } else {
            map.insert(key, held.to_vec());
        }
    }
}

/// Deregisters every address in `held` except `keep`; each one whose deregistration succeeded
/// leaves `held`. The first failure is returned (the others are still tried).
async fn remove(
    registry_name: &str,
    service: &str,
    timeout: Duration,
    registry: &dyn Registry,
    held: &mut Vec<Info>,
    keep: Option<SocketAddr>,
) -> Result<(), RegistryError> {
    let mut outcome = Ok(());
    let mut still = Vec::with_capacity(held.len());
    for info in std::mem::take(held) {
        if Some(info.addr) == keep {
            still.push(info);
            continue;
        }
        match call(
            "deregister",
            registry_name,
            service,
            timeout,
            registry.deregister(&info),
        )
        .await
        {
            Ok(()) => {
                if keep.is_some() {
                    tracing::info!(old = %info.addr, "the old address is deregistered");
                }
            }
            Err(err) => {
                still.push(info);
                if outcome.is_ok() {
                    outcome = Err(err);
                }
            }
        }
    }
    *held = still;
    outcome
}

pub(crate) fn panic_text(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic payload".to_string())
}

/// One call to the registry: bounded by `timeout`; a panic in the registry is a failed call.
async fn call<F>(
    what: &str,
    registry: &str,
    service: &str,
    timeout: Duration,
    call: F,
) -> Result<(), RegistryError>
where
    F: std::future::Future<Output = Result<(), RegistryError>>,
{
    let result = match tokio::time::timeout(timeout, AssertUnwindSafe(call).catch_unwind()).await {
        Ok(Ok(result)) => result,
        Ok(Err(panic)) => Err(RegistryError::Backend {
            backend: "registry",
            source: shared(format!(
                "the registry panicked in {what}: {}",
                panic_text(panic)
            )),
        }),
        Err(_) => Err(RegistryError::Timeout {
            backend: "registry",
            endpoint: None,
            service: Some(service.to_string()),
            timeout,
        }),
    };
    crate::metrics::call(what == "deregister", registry, service, result.is_ok());
    result
}

/// Sleeps `delay`, or less when the backend reports that it is healthy again (it changed while
/// the failed attempt ran, or changes during the sleep) or when what is wanted changes: a
/// registry that is back is used at once, not after the rest of a long backoff.
async fn pause(
    delay: Duration,
    health: &mut Option<watch::Receiver<Health>>,
    desired: &mut watch::Receiver<Desired>,
) {
    let healthy_again = async {
        let Some(rx) = health else {
            return std::future::pending().await;
        };
        loop {
            if rx.has_changed().unwrap_or(false) && *rx.borrow_and_update() == Health::Healthy {
                return;
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
            if *rx.borrow() == Health::Healthy {
                return;
            }
        }
    };
    tokio::select! {
        () = tokio::time::sleep(delay) => {}
        () = healthy_again => tracing::debug!("the registry is healthy again; retrying now"),
        changed = desired.changed() => if changed.is_err() {
            // The registrar is gone; it aborts this task right after.
            std::future::pending::<()>().await;
        },
    }
}

/// Keeps one service in one registry as [`Desired`] says, for as long as the registrar runs:
/// registers (and re-registers changed data), withdraws while the service is out of rotation,
/// unhealthy or not ready, and retries every failure with `backoff` — forever, because the
/// registry may come back at any time and serving goes on meanwhile.
pub(crate) async fn keep(
    target: NamedRegistry,
    mut desired: watch::Receiver<Desired>,
    board: StatusBoard,
    holdings: Holdings,
    mut backoff: Backoff,
    timeout: Duration,
) {
    let NamedRegistry {
        name: registry_name,
        registry,
    } = target;
    let first = desired.borrow().info.clone();
    let span = span(&first, &registry_name);
    let mut health = registry.health();
    async move {
        let service = first.service_name.clone();
        // Every address the registry may hold: one is added before its register call (which
        // may land even if the call fails or times out) and leaves once its deregistration
        // succeeded. More than one while an address change is under way.
        let mut held: Vec<Info> = holdings.get(&service, &registry_name);
        // What the registry acknowledged last.
        let mut confirmed: Option<Info> = None;
        let mut failures = 0u32;
        loop {
            let want = desired.borrow_and_update().want();
            if let Some(rx) = &mut health {
                // Whatever the health says now is seen; a change during the call shows later.
                rx.borrow_and_update();
            }
            let result = match &want {
                Want::Registered(info) if confirmed.as_ref() == Some(info) => Ok(()),
                Want::Registered(info) => {
                    held.retain(|old| old.addr != info.addr);
                    held.push(info.clone());
                    holdings.set(&service, &registry_name, &held);
                    confirmed = None;
                    let mut result =
                        call("register", &registry_name, &service, timeout, registry.register(info)).await;
                    if result.is_ok() {
                        // Make before break: the new address is registered, the old ones go.
                        result = remove(&registry_name, &service, timeout, &*registry, &mut held, Some(info.addr)).await;
                        holdings.set(&service, &registry_name, &held);
                    }
                    if result.is_ok() {
                        confirmed = Some(info.clone());
                        tracing::info!(
                            attempts = failures + 1,
                            weight = info.weight,
                            "registered"
                        );
                        board.set(&service, &registry_name, ServiceStatus::Registered);
                    }
                    result
                }
                Want::Withdrawn(status) => {
                    let had = !held.is_empty();
                    let result = remove(&registry_name, &service, timeout, &*registry, &mut held, None).await;
                    holdings.set(&service, &registry_name, &held);
                    if result.is_ok() {
                        confirmed = None;
                        if had {
                            tracing::info!(reason = ?status, "withdrawn from the registry");
                        }
                        board.set(&service, &registry_name, status.clone());
                    }
                    result
                }
            };
            match result {
                Ok(()) => {
                    failures = 0;
                    backoff.reset();
                    if desired.changed().await.is_err() {
                        // The registrar is gone; it aborts this task right after.
                        return;
                    }
                }
                Err(err) => {
                    failures += 1;
                    let delay = backoff.next_delay();
                    let doing = match want {
                        Want::Registered(_) => "registration",
                        Want::Withdrawn(_) => "withdrawal",
                    };
                    tracing::warn!(attempt = failures, error = %err, retry_in = ?delay, "{doing} failed; retrying");
                    board.set(
                        &service,
                        &registry_name,
                        ServiceStatus::Retrying {
                            attempt: failures,
                            last_error: err.to_string(),
                        },
                    );
                    pause(delay, &mut health, &mut desired).await;
                }
            }
        }
    }
    .instrument(span)
    .await
}

/// Deregisters every service from every registry at once, each call bounded by `timeout`:
/// what each service registers now (`infos`) and every other address it may still hold there.
pub(crate) async fn deregister_all(
    registries: &[NamedRegistry],
    infos: &[Info],
    holdings: &Holdings,
    board: &StatusBoard,
    timeout: Duration,
) {
    let calls = registries.iter().flat_map(|target| {
        infos.iter().map(move |info| {
            let registry = target.registry.clone();
            let name = target.name.clone();
            let mut all = holdings.get(&info.service_name, &name);
            all.retain(|held| held.addr != info.addr);
            all.push(info.clone());
            async move {
                let mut failed = false;
                for info in &all {
                    if let Err(err) = call("deregister", &name, &info.service_name, timeout, registry.deregister(info)).await {
                        failed = true;
                        tracing::warn!(error = %err, addr = %info.addr, "deregistration failed; the registration remains until the registry removes or expires it");
                    }
                }
                if !failed {
                    tracing::info!("deregistered");
                    board.set(&info.service_name, &name, ServiceStatus::Deregistered);
                }
            }
            .instrument(span(info, &target.name))
        })
    });
    futures_util::future::join_all(calls).await;
}

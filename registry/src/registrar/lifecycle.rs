//! The life of one registration: first attempt, retries, and removal.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::watch;
use tracing::Instrument;

use crate::backoff::Backoff;
use crate::info::Info;
use crate::registry::shared;
use crate::registry::{Health, Registry, RegistryError};

use super::status::{ServiceStatus, StatusBoard};

fn span(info: &Info) -> tracing::Span {
    tracing::info_span!("registration", service = %info.service_name, addr = %info.addr)
}

/// One register call: bounded by `timeout`; a panic in the registry is a failed attempt.
async fn attempt(
    registry: &Arc<dyn Registry>,
    info: &Info,
    timeout: Duration,
) -> Result<(), RegistryError> {
    let call = AssertUnwindSafe(registry.register(info)).catch_unwind();
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(result)) => result,
        Ok(Err(panic)) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-text panic payload".to_string());
            Err(RegistryError::Backend {
                backend: "registry",
                source: shared(format!("the registry panicked in register: {message}")),
            })
        }
        Err(_) => Err(RegistryError::Timeout {
            backend: "registry",
            service: info.service_name.clone(),
            timeout,
        }),
    }
}

/// Sleeps `delay`, or less when the backend reports that it is healthy again (it changed while
/// the failed attempt ran, or changes during the sleep): a registry that is back is used at
/// once, not after the rest of a long backoff.
async fn pause(delay: Duration, health: &mut Option<watch::Receiver<Health>>) {
    let Some(rx) = health else {
        return tokio::time::sleep(delay).await;
    };
    let healthy_again = async {
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
    }
}

/// Registers `info`, retrying with `backoff` until it succeeds. Never gives up: the registry may
/// come back at any time, and serving goes on meanwhile.
pub(crate) async fn register_until_done(
    registry: Arc<dyn Registry>,
    info: Info,
    board: StatusBoard,
    mut backoff: Backoff,
    timeout: Duration,
) {
    let span = span(&info);
    let mut health = registry.health();
    async move {
        let mut attempts = 0u32;
        loop {
            // Whatever the health says now is seen; a change during the attempt shows later.
            if let Some(rx) = &mut health {
                rx.borrow_and_update();
            }
            match attempt(&registry, &info, timeout).await {
                Ok(()) => {
                    tracing::info!(attempts = attempts + 1, "registered");
                    board.set(&info.service_name, ServiceStatus::Registered);
                    return;
                }
                Err(err) => {
                    attempts += 1;
                    let delay = backoff.next_delay();
                    tracing::warn!(attempt = attempts, error = %err, retry_in = ?delay, "registration failed; retrying");
                    board.set(
                        &info.service_name,
                        ServiceStatus::Retrying {
                            attempt: attempts,
                            last_error: err.to_string(),
                        },
                    );
                    pause(delay, &mut health).await;
                }
            }
        }
    }
    .instrument(span)
    .await
}

/// Deregisters every service at once, each bounded by `timeout`.
pub(crate) async fn deregister_all(
    registry: &Arc<dyn Registry>,
    infos: &[Info],
    board: &StatusBoard,
    timeout: Duration,
) {
    let calls = infos.iter().map(|info| {
        let registry = registry.clone();
        async move {
            let call = AssertUnwindSafe(registry.deregister(info)).catch_unwind();
            match tokio::time::timeout(timeout, call).await {
                Ok(Ok(Ok(()))) => {
                    tracing::info!("deregistered");
                    board.set(&info.service_name, ServiceStatus::Deregistered);
                }
                Ok(Ok(Err(err))) => tracing::warn!(error = %err, "deregistration failed; the registration remains until the registry removes or expires it"),
                Ok(Err(_)) => tracing::error!("the registry panicked in deregister; the registration remains until the registry expires it"),
                Err(_) => tracing::warn!(?timeout, "deregistration timed out; the registration remains until the registry expires it"),
            }
        }
        .instrument(span(info))
    });
    futures_util::future::join_all(calls).await;
}

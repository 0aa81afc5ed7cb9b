//! The life of one registration: first attempt, retries, and removal.

use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use crate::backoff::Backoff;
use crate::info::Info;
use crate::registry::{Registry, RegistryError};

use super::status::{ServiceStatus, StatusBoard};

fn span(info: &Info) -> tracing::Span {
    tracing::info_span!("registration", service = %info.service_name, addr = %info.addr)
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
    async move {
        let mut attempt = 0u32;
        loop {
            let result = match tokio::time::timeout(timeout, registry.register(&info)).await {
                Ok(result) => result,
                Err(_) => Err(RegistryError::Timeout {
                    backend: "registry",
                    service: info.service_name.clone(),
                    timeout,
                }),
            };
            match result {
                Ok(()) => {
                    tracing::info!(attempts = attempt + 1, "registered");
                    board.set(&info.service_name, ServiceStatus::Registered);
                    return;
                }
                Err(err) => {
                    attempt += 1;
                    let delay = backoff.next_delay();
                    tracing::warn!(attempt, error = %err, retry_in = ?delay, "registration failed; retrying");
                    board.set(
                        &info.service_name,
                        ServiceStatus::Retrying {
                            attempt,
                            last_error: err.to_string(),
                        },
                    );
                    tokio::time::sleep(delay).await;
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
            match tokio::time::timeout(timeout, registry.deregister(info)).await {
                Ok(Ok(())) => {
                    tracing::info!("deregistered");
                    board.set(&info.service_name, ServiceStatus::Deregistered);
                }
                Ok(Err(err)) => tracing::warn!(error = %err, "deregistration failed; the registration remains until the registry expires it"),
                Err(_) => tracing::warn!(?timeout, "deregistration timed out; the registration remains until the registry expires it"),
            }
        }
        .instrument(span(info))
    });
    futures_util::future::join_all(calls).await;
}

//! Bounded backend calls: every network call a backend makes has a time limit, and running out
//! of it is a [`RegistryError::Timeout`].

use std::future::Future;
use std::time::Duration;

use crate::registry::RegistryError;

/// Runs one backend call under `limit`: its own error goes through `map`, no answer in time
/// is a [`RegistryError::Timeout`] at `endpoint`.
pub(crate) async fn bounded_call<T, E>(
    backend: &'static str,
    endpoint: &str,
    limit: Duration,
    call: impl Future<Output = Result<T, E>>,
    map: impl FnOnce(E) -> RegistryError,
) -> Result<T, RegistryError> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result.map_err(map),
        Err(_) => Err(timed_out(backend, endpoint, limit)),
    }
}

/// The error for a call that got no answer within `limit`.
pub(crate) fn timed_out(backend: &'static str, endpoint: &str, limit: Duration) -> RegistryError {
    RegistryError::Timeout {
        backend,
        endpoint: Some(endpoint.to_string()),
        service: None,
        timeout: limit,
    }
}

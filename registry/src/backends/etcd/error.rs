//! Turning `etcd_client` errors into the crate's error types.

use std::future::Future;
use std::time::Duration;

use etcd_client::Error as EtcdError;

use super::config::EtcdConfig;
use crate::backends::session::bounded_call;
use crate::registry::RegistryError;

const BACKEND: &str = "etcd";

/// True when etcd rejected the credentials (as opposed to being unreachable).
fn is_auth_failure(err: &EtcdError) -> bool {
    match err {
        EtcdError::GRpcStatus(status) => {
            matches!(
                status.code(),
                tonic_code::Unauthenticated | tonic_code::PermissionDenied
            ) || status.message().contains("authentication failed")
                || status.message().contains("invalid auth token")
                || status.message().contains("user name is empty")
        }
        _ => false,
    }
}

use tonic::Code as tonic_code;

/// Maps a client error to a [`RegistryError`] naming the endpoint (and user, for auth).
pub(crate) fn registry_error(config: &EtcdConfig, err: EtcdError) -> RegistryError {
    let endpoint = config.endpoint_list();
    if is_auth_failure(&err) {
        return RegistryError::Unauthenticated {
            backend: BACKEND,
            endpoint,
            user: config
                .user
                .as_ref()
                .map(|(user, _)| user.clone())
                .unwrap_or_else(|| "(none: no user configured)".to_string()),
            source: Box::new(err),
        };
    }
    match err {
        EtcdError::TransportError(_) | EtcdError::IoError(_) => RegistryError::Unavailable {
            backend: BACKEND,
            endpoint,
            source: Box::new(err),
        },
        EtcdError::GRpcStatus(ref status)
            if matches!(
                status.code(),
                tonic_code::Unavailable
                    | tonic_code::DeadlineExceeded
                    | tonic_code::Cancelled
                    | tonic_code::Unknown
            ) =>
        {
            RegistryError::Unavailable {
                backend: BACKEND,
                endpoint,
                source: Box::new(err),
            }
        }
        other => RegistryError::Backend {
            backend: BACKEND,
            source: Box::new(other),
        },
    }
}

/// Runs one etcd call under `limit`; a timeout reads as "unavailable".
pub(crate) async fn bounded<T>(
    config: &EtcdConfig,
    limit: Duration,
    call: impl Future<Output = Result<T, EtcdError>>,
) -> Result<T, RegistryError> {
    bounded_call(BACKEND, &config.endpoint_list(), limit, call, |err| {
        registry_error(config, err)
    })
    .await
}

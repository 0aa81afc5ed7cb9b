//! Turning `etcd_client` errors into the crate's error types.

use std::future::Future;
use std::time::Duration;

use etcd_client::Error as EtcdError;

use super::config::EtcdConfig;
use crate::backends::kit::call::bounded_call;
use crate::registry::shared;
use crate::registry::RegistryError;

const BACKEND: &str = "etcd";

/// What etcd says when a token expired (simple tokens live `--auth-token-ttl`, 300 s by
/// default). That is not a wrong password: the client authenticates again and retries.
const INVALID_TOKEN: &str = "invalid auth token";
/// What etcd says when a transaction has more operations than `--max-txn-ops` allows.
const TOO_MANY_OPS: &str = "too many operations in txn request";
/// What etcd says when the lease a put names has expired or was revoked.
const LEASE_NOT_FOUND: &str = "requested lease not found";

fn message(err: &EtcdError) -> Option<&str> {
    match err {
        EtcdError::GRpcStatus(status) => Some(status.message()),
        _ => None,
    }
}

/// True when etcd rejected the credentials (as opposed to being unreachable, or a token that
/// merely expired).
fn is_auth_failure(err: &EtcdError) -> bool {
    match err {
        EtcdError::GRpcStatus(status) => {
            if status.message().contains(INVALID_TOKEN) {
                return false;
            }
            matches!(
                status.code(),
                tonic_code::Unauthenticated | tonic_code::PermissionDenied
            ) || status.message().contains("authentication failed")
                || status.message().contains("user name is empty")
        }
        _ => false,
    }
}

/// How a failed transaction is handled.
pub(crate) enum TxnFailure {
    /// The connection, the credentials or the lease is gone: nothing more can be written.
    Fatal(RegistryError),
    /// More operations than etcd's `--max-txn-ops`: split and remember the smaller size.
    TooManyOps(RegistryError),
    /// etcd refuses every write for now, whatever it holds: its database is full (the NOSPACE
    /// alarm) or it is too far behind ("too many requests"). Nothing in the transaction is at
    /// fault: keep it and retry later; splitting it would only be refused again.
    Busy(RegistryError),
    /// etcd refused something in it: isolate the operation. `passes` when the refusal can pass
    /// (a permission an operator may still grant): the key is kept and retried; otherwise (a
    /// value too large, ...) it would be refused again as it is.
    Refused {
        /// Why.
        error: RegistryError,
        /// Whether the same write may be accepted later.
        passes: bool,
    },
}

/// Whether `err` is etcd refusing every write for now (`ResourceExhausted`: "database space
/// exceeded", "too many requests").
pub(crate) fn is_busy(err: &EtcdError) -> bool {
    matches!(err, EtcdError::GRpcStatus(status) if status.code() == tonic_code::ResourceExhausted)
}

/// Sorts a transaction's error into what to do about it.
pub(crate) fn txn_failure(config: &EtcdConfig, err: EtcdError) -> TxnFailure {
    let text = message(&err).unwrap_or_default().to_string();
    if text.contains(TOO_MANY_OPS) {
        return TxnFailure::TooManyOps(registry_error(config, err));
    }
    if text.contains(LEASE_NOT_FOUND) {
        return TxnFailure::Fatal(RegistryError::Unavailable {
            backend: BACKEND,
            endpoint: config.endpoint_list(),
            source: shared(format!("the lease expired or was revoked ({text})")),
        });
    }
    if is_busy(&err) {
        return TxnFailure::Busy(RegistryError::Backend {
            backend: BACKEND,
            source: shared(format!(
                "etcd refuses writes for now ({text}); the registration is kept and retried"
            )),
        });
    }
    if matches!(&err, EtcdError::GRpcStatus(status) if status.code() == tonic_code::PermissionDenied)
    {
        // The user is who it claims to be (a wrong password is refused at authentication), it
        // may just not write this key: that key fails, not the lease of every other.
        let user = config
            .user
            .as_ref()
            .map_or("(none)", |(user, _)| user.as_str());
        return TxnFailure::Refused {
            error: RegistryError::Backend {
                backend: BACKEND,
                source: shared(format!(
                    "user `{user}` may not write this key ({text}); grant its role read-write on the service's prefix"
                )),
            },
            passes: true,
        };
    }
    match registry_error(config, err) {
        err @ (RegistryError::Unavailable { .. }
        | RegistryError::Timeout { .. }
        | RegistryError::Unauthenticated { .. }) => TxnFailure::Fatal(err),
        other => TxnFailure::Refused {
            error: other,
            passes: false,
        },
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
            source: std::sync::Arc::new(err),
        };
    }
    if message(&err).is_some_and(|m| m.contains(INVALID_TOKEN)) {
        // Still expired after the client's own refresh: a race with the TTL; retried.
        return RegistryError::Unavailable {
            backend: BACKEND,
            endpoint,
            source: std::sync::Arc::new(err),
        };
    }
    match err {
        EtcdError::TransportError(_) | EtcdError::IoError(_) => RegistryError::Unavailable {
            backend: BACKEND,
            endpoint,
            source: std::sync::Arc::new(err),
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
                source: std::sync::Arc::new(err),
            }
        }
        other => RegistryError::Backend {
            backend: BACKEND,
            source: std::sync::Arc::new(other),
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

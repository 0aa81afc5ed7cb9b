//! Turning `zookeeper_client` errors into the crate's error types.

use std::future::Future;
use std::time::Duration;

use zookeeper_client::Error as ZkError;

use super::config::ZookeeperConfig;
use crate::backends::call::bounded_call;
use crate::registry::shared;
use crate::registry::RegistryError;

const BACKEND: &str = "zookeeper";

/// Maps a client error to a [`RegistryError`] naming the servers (and the user, for auth).
pub(crate) fn registry_error(config: &ZookeeperConfig, err: ZkError) -> RegistryError {
    let endpoint = config.connect.clone();
    match err {
        ZkError::AuthFailed => RegistryError::Unauthenticated {
            backend: BACKEND,
            endpoint,
            user: config
                .user()
                .unwrap_or("(none: no digest auth configured)")
                .to_string(),
            source: shared(format!("{err}: ZooKeeper refused the digest credentials")),
        },
        // The credentials were accepted (a wrong password fails the session with AuthFailed):
        // the node belongs to another identity. Not a password problem.
        ZkError::NoAuth => RegistryError::Backend {
            backend: BACKEND,
            source: shared(format!(
                "{err}: the node's ACL does not admit user `{}` (another identity created it)",
                config.user().unwrap_or("(none: no digest auth configured)")
            )),
        },
        // `Custom` carries I/O failures of the connection (reset, broken pipe) and
        // `Throttled` is the server shedding load: both pass.
        ZkError::ConnectionLoss
        | ZkError::Custom(_)
        | ZkError::Throttled
        | ZkError::SessionExpired
        | ZkError::Timeout
        | ZkError::NoHosts
        | ZkError::ClientClosed
        | ZkError::SessionMoved => RegistryError::Unavailable {
            backend: BACKEND,
            endpoint,
            source: std::sync::Arc::new(err),
        },
        other => RegistryError::Backend {
            backend: BACKEND,
            source: std::sync::Arc::new(other),
        },
    }
}

/// Runs one ZooKeeper call under `limit`; a timeout reads as "unavailable".
pub(crate) async fn bounded<T>(
    config: &ZookeeperConfig,
    limit: Duration,
    call: impl Future<Output = Result<T, ZkError>>,
) -> Result<T, RegistryError> {
    bounded_call(BACKEND, &config.connect, limit, call, |err| {
        registry_error(config, err)
    })
    .await
}

/// The error for a call that got no answer within `limit`.
pub(crate) fn timed_out(config: &ZookeeperConfig, limit: Duration) -> RegistryError {
    crate::backends::call::timed_out(BACKEND, &config.connect, limit)
}

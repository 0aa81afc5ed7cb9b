//! Turning `zookeeper_client` errors into the crate's error types, and running one call.

use std::future::Future;
use std::time::Duration;

use zookeeper_client::{Client, Error as ZkError, SessionState};

use super::config::ZookeeperConfig;
use crate::backends::kit::call::bounded_call;
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
                .user_name()
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
                config
                    .user_name()
                    .unwrap_or("(none: no digest auth configured)")
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

/// Runs one ZooKeeper call under `limit`; no answer in time is a `RegistryError::Timeout`.
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
    crate::backends::kit::call::timed_out(BACKEND, &config.connect, limit)
}

/// The error for a request not made, or given up, because the session is not connected.
pub(crate) fn not_connected(config: &ZookeeperConfig) -> RegistryError {
    RegistryError::Unavailable {
        backend: BACKEND,
        endpoint: config.connect.clone(),
        source: shared("not connected to ZooKeeper (the session is reconnecting or gone)"),
    }
}

/// Makes one request on `client` (`call` sends it) only while its session is connected, and
/// gives up on it as soon as the connection drops, within `limit` in any case. The outer error
/// says no answer came (not connected, disconnected meanwhile, or out of time); the inner result
/// is the server's answer.
///
/// The client queues what is asked of it while disconnected until it reconnects, which for a
/// session the server no longer accepts never happens: such a request would hold its caller for
/// all of `limit` (the session task, and with it everything behind it). A request given up here
/// may still reach the server if the session reconnects; every caller's writes are idempotent
/// (creates check what exists, deletes accept `NoNode`).
pub(crate) async fn while_connected<T, E, Fut>(
    client: &Client,
    config: &ZookeeperConfig,
    limit: Duration,
    call: impl FnOnce() -> Fut,
) -> Result<Result<T, E>, RegistryError>
where
    Fut: Future<Output = Result<T, E>>,
{
    // Subscribe first: a change after the check below wakes the select.
    let mut states = client.state_watcher();
    if client.state() != SessionState::SyncConnected {
        return Err(not_connected(config));
    }
    let call = tokio::time::timeout(limit, call());
    tokio::pin!(call);
    loop {
        tokio::select! {
            biased;
            answer = &mut call => return answer.map_err(|_| timed_out(config, limit)),
            state = states.changed() => {
                if state != SessionState::SyncConnected {
                    return Err(not_connected(config));
                }
            }
        }
    }
}

/// [`while_connected`] with the server's refusal mapped too.
pub(crate) async fn request<T, Fut>(
    client: &Client,
    config: &ZookeeperConfig,
    limit: Duration,
    call: impl FnOnce() -> Fut,
) -> Result<T, RegistryError>
where
    Fut: Future<Output = Result<T, ZkError>>,
{
    while_connected(client, config, limit, call)
        .await?
        .map_err(|err| registry_error(config, err))
}

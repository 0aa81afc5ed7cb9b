//! The ZooKeeper clients we open, all with the configured timeouts and credentials: a plain
//! session (discovery, the sentinel's probes), a detached client for the registry's session
//! (new, or attached to a session we hold), and the explicit close of such a session.

use std::time::Duration;

use tokio::time::Instant;
use zookeeper_client::{Client, Error as ZkError, SessionInfo, StateWatcher};

use super::config::ZookeeperConfig;
use super::error::bounded;
use crate::registry::RegistryError;

/// A connector with the configured timeouts and credentials.
fn connector(config: &ZookeeperConfig) -> zookeeper_client::Connector {
    let mut connector = Client::connector()
        .with_session_timeout(config.session_timeout)
        .with_connection_timeout(config.connect_timeout)
        .with_fail_eagerly();
    if let Some((user, password)) = &config.auth {
        connector = connector.with_auth("digest", format!("{user}:{password}").as_bytes());
    }
    connector
}

/// Connects a new session with the configured credentials; dropping the last clone of the
/// client closes it (for discovery and probes).
pub(crate) async fn connect(config: &ZookeeperConfig) -> Result<Client, RegistryError> {
    let limit = config.connect_timeout + config.session_timeout;
    bounded(config, limit, connector(config).connect(&config.connect)).await
}

/// A detached client for the registry's session: on `session` (its id and password), or on a
/// new session. Dropping it leaves the session open; [`close_session`] ends it.
pub(crate) async fn attach(
    config: &ZookeeperConfig,
    session: Option<SessionInfo>,
) -> Result<Client, RegistryError> {
    let mut connector = connector(config).with_detached();
    if let Some(session) = session {
        connector = connector.with_session(session);
    }
    let limit = config.connect_timeout + config.session_timeout;
    bounded(config, limit, connector.connect(&config.connect)).await
}

/// Ends the session `info` by the deadline: a client attached to it for the moment closes it
/// when dropped. Tried again while ZooKeeper does not answer; done once the server has closed
/// it, or answers that it is gone.
pub(super) async fn close_session(config: ZookeeperConfig, info: SessionInfo, deadline: Instant) {
    let id = info.id();
    let mut pause = tokio::time::interval(Duration::from_millis(200));
    pause.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let attempt = tokio::time::timeout_at(
            deadline,
            connector(&config)
                .with_session(info.clone())
                .connect(&config.connect),
        )
        .await;
        match attempt {
            Ok(Ok(client)) => {
                let states = client.state_watcher();
                drop(client);
                let _ = tokio::time::timeout_at(deadline, terminated(states)).await;
                tracing::debug!(session = %id, "ZooKeeper session closed");
                return;
            }
            Ok(Err(ZkError::SessionExpired)) => return,
            Ok(Err(err)) => {
                tracing::debug!(session = %id, error = %err, "cannot close the ZooKeeper session yet")
            }
            Err(_) => break,
        }
        if tokio::time::timeout_at(deadline, pause.tick())
            .await
            .is_err()
        {
            break;
        }
    }
    tracing::debug!(session = %id, "could not close the ZooKeeper session in time; it expires on the server");
}

/// Waits until the client behind `states` has ended (its task is gone).
pub(super) async fn terminated(mut states: StateWatcher) {
    while !states.state().is_terminated() {
        states.changed().await;
    }
}

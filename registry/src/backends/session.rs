//! What the etcd and ZooKeeper backends share: a session task that owns the connection and
//! the live registrations, and the handle that registry calls go through.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::info::Info;
use crate::registry::{Health, RegistryError};

/// Where the result of one command goes.
pub(crate) type Reply = oneshot::Sender<Result<(), RegistryError>>;

/// What a handle asks its session task to do.
pub(crate) enum Command {
    /// Make `key` hold `value` for as long as the session lives (and in every later session).
    Put {
        key: String,
        value: Vec<u8>,
        done: Reply,
    },
    /// Remove `key`.
    Delete { key: String, done: Reply },
    /// Remove every key, end the session, stop the task.
    Close { done: oneshot::Sender<()> },
}

/// The registry side of a session task: cheap to share, one channel to the task.
pub(crate) struct SessionHandle {
    backend: &'static str,
    commands: mpsc::UnboundedSender<Command>,
    health: watch::Receiver<Health>,
}

impl SessionHandle {
    /// Spawns `run(health, commands)` on the current Tokio runtime; `None` outside one.
    pub(crate) fn spawn<F, Fut>(backend: &'static str, run: F) -> Option<Self>
    where
        F: FnOnce(watch::Sender<Health>, mpsc::UnboundedReceiver<Command>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (commands, rx) = mpsc::unbounded_channel();
        let (health_tx, health) = watch::channel(Health::Recovering {
            attempt: 0,
            last_error: format!("connecting to {backend}"),
        });
        runtime.spawn(run(health_tx, rx));
        Some(Self {
            backend,
            commands,
            health,
        })
    }

    async fn call(&self, command: impl FnOnce(Reply) -> Command) -> Result<(), RegistryError> {
        let closed = || RegistryError::Backend {
            backend: self.backend,
            source: format!("the {} registry was closed", self.backend).into(),
        };
        let (done, wait) = oneshot::channel();
        self.commands.send(command(done)).map_err(|_| closed())?;
        wait.await.map_err(|_| closed())?
    }

    pub(crate) async fn put(&self, key: String, value: Vec<u8>) -> Result<(), RegistryError> {
        self.call(|done| Command::Put { key, value, done }).await
    }

    pub(crate) async fn delete(&self, key: String) -> Result<(), RegistryError> {
        self.call(|done| Command::Delete { key, done }).await
    }

    /// Asks the task to remove everything and stop, and waits until it has.
    pub(crate) async fn close(&self) {
        let (done, wait) = oneshot::channel();
        if self.commands.send(Command::Close { done }).is_ok() {
            let _ = wait.await;
        }
    }

    pub(crate) fn health(&self) -> watch::Receiver<Health> {
        self.health.clone()
    }
}

/// Runs one backend call under `limit`: its own error goes through `map`, no answer in time
/// reads as "unavailable" at `endpoint`.
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
    RegistryError::Unavailable {
        backend,
        endpoint: endpoint.to_string(),
        source: format!("no answer within {limit:?}").into(),
    }
}

/// Refuses service names that cannot be one path segment.
pub(crate) fn check_service_name(info: &Info, backend: &str) -> Result<(), RegistryError> {
    if info.service_name.is_empty() || info.service_name.contains('/') {
        return Err(RegistryError::InvalidInfo {
            service: info.service_name.clone(),
            reason: format!("a {backend} service name must be non-empty and must not contain `/`"),
        });
    }
    Ok(())
}

/// While no session is held: answers commands for `delay`. Puts fail with `cause` (the
/// registrar retries them); deletes only forget the key, since the lost session's expiry
/// removes any copy the server still holds. Returns true once the registry is closed.
pub(crate) async fn wait_offline(
    commands: &mut mpsc::UnboundedReceiver<Command>,
    live: &mut BTreeMap<String, Vec<u8>>,
    delay: Duration,
    cause: &RegistryError,
) -> bool {
    let deadline = tokio::time::sleep(delay);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut deadline => return false,
            command = commands.recv() => match command {
                None => return true,
                Some(Command::Put { done, .. }) => {
                    let _ = done.send(Err(cause.duplicate()));
                }
                Some(Command::Delete { key, done }) => {
                    live.remove(&key);
                    let _ = done.send(Ok(()));
                }
                Some(Command::Close { done }) => {
                    live.clear();
                    let _ = done.send(());
                    return true;
                }
            },
        }
    }
}

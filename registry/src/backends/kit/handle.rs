//! The registry side of a session task (etcd lease, ZooKeeper session, Nacos connection): the
//! commands a handle sends, the handle itself, and the supervisor that reports a task that died.
//!
//! Commands carry the backend's own record: a key and bytes for etcd and ZooKeeper (the
//! defaults), Nacos' typed instance under its address and service.

use std::future::Future;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::registry::shared;
use crate::registry::{Health, RegistryError};

/// Where the result of one command goes.
pub(crate) type Reply = oneshot::Sender<Result<(), RegistryError>>;

/// What a handle asks its session task to do, about records of type `V` under keys of type `K`.
pub(crate) enum Command<K = String, V = Vec<u8>> {
    /// Make `key` hold `value` for as long as the session lives (and in every later session).
    Put { key: K, value: V, done: Reply },
    /// Remove `key`.
    Delete { key: K, done: Reply },
    /// Remove every key, end the session, stop the task.
    Close { done: oneshot::Sender<()> },
}

/// Tells whoever waits for a close that it is done.
pub(crate) fn finish(done: Option<oneshot::Sender<()>>) {
    if let Some(done) = done {
        let _ = done.send(());
    }
}

/// The registry side of a session task: cheap to share, one channel to the task.
pub(crate) struct SessionHandle<K = String, V = Vec<u8>> {
    backend: &'static str,
    commands: mpsc::UnboundedSender<Command<K, V>>,
    health: watch::Receiver<Health>,
    close_limit: Duration,
}

impl<K, V> SessionHandle<K, V> {
    /// Spawns `run(health, commands)` on the current Tokio runtime; `None` outside one. A
    /// supervisor reports the task's end through [`Health::Failed`] if it panics or is
    /// cancelled before it was closed. [`close`](Self::close) waits at most `close_limit`.
    pub(crate) fn spawn<F, Fut>(
        backend: &'static str,
        close_limit: Duration,
        run: F,
    ) -> Option<Self>
    where
        F: FnOnce(watch::Sender<Health>, mpsc::UnboundedReceiver<Command<K, V>>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (commands, rx) = mpsc::unbounded_channel();
        let (health_tx, health) = watch::channel(Health::Recovering {
            attempt: 0,
            last_error: format!("connecting to {backend}"),
        });
        let task = runtime.spawn(run(health_tx.clone(), rx));
        runtime.spawn(async move {
            let Err(err) = task.await else { return };
            let what = if err.is_panic() {
                "panicked"
            } else {
                "was cancelled"
            };
            let error = format!(
                "the {backend} session task {what}; registrations are no longer kept alive: restart the process"
            );
            tracing::error!(backend, %err, "{error}");
            let _ = health_tx.send(Health::Failed { error });
        });
        Some(Self {
            backend,
            commands,
            health,
            close_limit,
        })
    }

    fn closed(&self) -> RegistryError {
        let reason = match &*self.health.borrow() {
            Health::Failed { error } => error.clone(),
            _ => format!("the {} registry was closed", self.backend),
        };
        RegistryError::Backend {
            backend: self.backend,
            source: shared(reason),
        }
    }

    async fn call(
        &self,
        command: impl FnOnce(Reply) -> Command<K, V>,
    ) -> Result<(), RegistryError> {
        let (done, wait) = oneshot::channel();
        self.commands
            .send(command(done))
            .map_err(|_| self.closed())?;
        wait.await.map_err(|_| self.closed())?
    }

    pub(crate) async fn put(&self, key: K, value: V) -> Result<(), RegistryError> {
        self.call(|done| Command::Put { key, value, done }).await
    }

    pub(crate) async fn delete(&self, key: K) -> Result<(), RegistryError> {
        self.call(|done| Command::Delete { key, done }).await
    }

    /// Asks the task to remove everything and stop, and waits until it has, at most the close
    /// limit (the task's own calls are bounded by the same limit).
    pub(crate) async fn close(&self) {
        let (done, wait) = oneshot::channel();
        if self.commands.send(Command::Close { done }).is_ok()
            && tokio::time::timeout(self.close_limit, wait).await.is_err()
        {
            tracing::warn!(
                backend = self.backend,
                limit = ?self.close_limit,
                "close did not finish in time; what is left expires with the lease or session"
            );
        }
    }

    pub(crate) fn health(&self) -> watch::Receiver<Health> {
        self.health.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_task_is_reported_as_failed() {
        let handle: SessionHandle =
            SessionHandle::spawn("test", Duration::from_secs(1), |_health, _rx| async {
                panic!("boom");
            })
            .unwrap();
        let mut health = handle.health();
        let failed = tokio::time::timeout(
            Duration::from_secs(5),
            health.wait_for(|h| matches!(h, Health::Failed { .. })),
        )
        .await
        .expect("the failure is reported")
        .expect("the supervisor holds a sender")
        .clone();
        assert!(
            matches!(&failed, Health::Failed { error } if error.contains("panicked")),
            "{failed:?}"
        );
        let err = handle.put("k".into(), Vec::new()).await.unwrap_err();
        assert!(err.to_string().contains("panicked"), "{err}");
    }
}

//! Anti-entropy for the ZooKeeper session: persistent recursive watches over the directories of
//! our nodes, so that a node of ours deleted or overwritten by someone else is seen (and the
//! session task restores it). Once a directory's watch is in place the directory is listed
//! once, so that a node deleted before the watch was in place is seen too.
//!
//! Watches are added off the session task: one task per directory adds its watch (a bounded
//! number of `AddWatch` requests in flight at once, pipelined on the session's connection) and
//! then forwards its events. The session task only starts them, so registrations, removals,
//! close and session-state changes never wait for thousands of directories to be watched.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use zookeeper_client::{
    AddWatchMode, Client, Error as ZkError, EventType, SessionState, StateWatcher,
};

use super::config::ZookeeperConfig;
use super::error::request;

/// `AddWatch` requests in flight at once. ZooKeeper answers one session's requests in order, so
/// a registration sent meanwhile waits behind at most this many; enough to pipeline the round
/// trips.
const WATCHES_IN_FLIGHT: usize = 64;

/// After a failed `AddWatch`, how long to wait before trying again (once connected).
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// What the guard saw below our directories.
#[derive(Debug)]
pub(super) enum Seen {
    /// The node at this path was deleted or its data changed.
    Changed(String),
    /// The watch over `dir` is in place, and these were its children right after.
    Listed { dir: String, children: Vec<String> },
}

/// The watches over our directories within one session, and what they see. Its tasks end when
/// it is dropped (with the session).
pub(super) struct Guard {
    client: Client,
    config: ZookeeperConfig,
    permits: Arc<Semaphore>,
    sender: mpsc::UnboundedSender<Seen>,
    events: mpsc::UnboundedReceiver<Seen>,
    dirs: BTreeMap<String, JoinHandle<()>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for task in self.dirs.values() {
            task.abort();
        }
    }
}

impl Guard {
    pub(super) fn new(client: &Client, config: &ZookeeperConfig) -> Self {
        let (sender, events) = mpsc::unbounded_channel();
        Self {
            client: client.clone(),
            config: config.clone(),
            permits: Arc::new(Semaphore::new(WATCHES_IN_FLIGHT)),
            sender,
            events,
            dirs: BTreeMap::new(),
        }
    }

    /// Starts watching every directory in `dirs` not watched yet; returns at once.
    pub(super) fn cover(&mut self, dirs: impl IntoIterator<Item = String>) {
        for dir in dirs {
            if self.dirs.contains_key(&dir) {
                continue;
            }
            let task = tokio::spawn(watch_dir(
                self.client.clone(),
                self.config.clone(),
                dir.clone(),
                self.permits.clone(),
                self.sender.clone(),
            ));
            self.dirs.insert(dir, task);
        }
    }

    /// The next deletion or data change under a watched directory, or the listing of a
    /// directory whose watch was just put in place.
    pub(super) async fn next(&mut self) -> Seen {
        match self.events.recv().await {
            Some(event) => event,
            // Cannot happen: the guard holds a sender itself.
            None => std::future::pending().await,
        }
    }
}

/// Adds a persistent recursive watch on `dir` (retried until it is in place or the session
/// ends), lists the directory once, then forwards deletions and data changes below it.
async fn watch_dir(
    client: Client,
    config: ZookeeperConfig,
    dir: String,
    permits: Arc<Semaphore>,
    events: mpsc::UnboundedSender<Seen>,
) {
    let mut states = client.state_watcher();
    let watching = retrying(&client, &config, &permits, &mut states, &dir, || {
        client.watch(&dir, AddWatchMode::PersistentRecursive)
    });
    let Some(mut watcher) = watching.await else {
        return;
    };
    // What was deleted before the watch was in place is not among the children.
    let listing = retrying(&client, &config, &permits, &mut states, &dir, || {
        client.list_children(&dir)
    });
    let Some(children) = listing.await else {
        return;
    };
    if events
        .send(Seen::Listed {
            dir: dir.clone(),
            children,
        })
        .is_err()
    {
        return;
    }
    // The session's own handle is not kept past this point: the watcher alone forwards events.
    drop(client);
    loop {
        let event = watcher.changed().await;
        let forward = match event.event_type {
            EventType::Session if event.session_state.is_terminated() => return,
            EventType::NodeDeleted | EventType::NodeDataChanged => true,
            _ => false,
        };
        if forward && events.send(Seen::Changed(event.path)).is_err() {
            return;
        }
    }
}

/// One request about `dir` under a permit, tried again once connected until it succeeds;
/// `None` when the session ends first.
async fn retrying<T, Fut>(
    client: &Client,
    config: &ZookeeperConfig,
    permits: &Semaphore,
    states: &mut StateWatcher,
    dir: &str,
    call: impl Fn() -> Fut,
) -> Option<T>
where
    Fut: Future<Output = Result<T, ZkError>>,
{
    loop {
        let result = {
            let _permit = permits.acquire().await.ok()?;
            request(client, config, config.request_timeout, &call).await
        };
        match result {
            Ok(value) => return Some(value),
            Err(err) => {
                tracing::debug!(dir, error = %err, "cannot watch or list a directory of ours yet; retrying once connected");
                tokio::time::sleep(RETRY_AFTER).await;
                loop {
                    match client.state() {
                        SessionState::SyncConnected => break,
                        state if state.is_terminated() => return None,
                        _ => {
                            states.changed().await;
                        }
                    }
                }
            }
        }
    }
}

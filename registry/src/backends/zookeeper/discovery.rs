//! [`ZookeeperDiscovery`]: resolve = list children + read data; watch = a persistent recursive
//! watch, with a full re-list after every reconnect.

use async_trait::async_trait;
use zookeeper_client::{
    AddWatchMode, Client, Error as ZkError, EventType, PersistentWatcher, SessionState, Stat,
};

use super::client::connect;
use super::config::ZookeeperConfig;
use super::error::bounded;
use super::wire;
use crate::backends::kit::cache::WatchCache;
use crate::backends::kit::client::SharedClient;
use crate::backends::kit::watch::{self, Entries, Source, Step};
use crate::backoff::Backoff;
use crate::discovery::{Discovery, DiscoveryError, Instance, Instances, WatchStream};
use crate::registry::RegistryError;

const BACKEND: &str = "zookeeper";

/// Finds instances that Kitex (Go) or [`ZookeeperRegistry`](super::ZookeeperRegistry)
/// registered. Children it cannot read (malformed, or an ACL that does not admit this client)
/// are left out and logged; the rest still count. Several children holding one address are one
/// instance.
///
/// `watch` needs persistent recursive watches, which ZooKeeper has since 3.6; against an older
/// server it fails with [`DiscoveryError::Unsupported`] (`resolve` works with any version).
/// Concurrent calls share one session and one connect in flight.
///
/// While a watch on a service is live in this discovery (or a clone of it), `resolve` answers
/// from that watch's latest state, without a round trip to ZooKeeper. It does so only while the
/// watch is in sync: from the moment the session disconnects (the client notices a silent
/// server once nothing has come back for its connect timeout, 3 s by default) until it has
/// reconnected and the watch has
/// listed the service again, or after the session ended until a new watch has listed it,
/// `resolve` reads from ZooKeeper as it does with no watch. A cached answer lags ZooKeeper by
/// the watch's notification delay; it is not a linearizable read
/// ([`ZookeeperConfig::resolve_from_watch`] turns it off).
///
/// ```no_run
/// use futures_util::StreamExt;
/// use service_registry::Discovery;
/// use service_registry::zookeeper::{ZookeeperConfig, ZookeeperDiscovery};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let discovery = ZookeeperDiscovery::new(ZookeeperConfig::from_env()?);
/// let mut changes = discovery.watch("echo").await?;
/// while let Some(change) = changes.next().await {
///     println!("{} instances", change.all.len());
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ZookeeperDiscovery {
    config: ZookeeperConfig,
    client: SharedClient<Client>,
    cache: WatchCache,
}

impl std::fmt::Debug for ZookeeperDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZookeeperDiscovery")
            .field("connect", &self.config.connect)
            .finish()
    }
}

fn discovery_error(service: &str, err: RegistryError) -> DiscoveryError {
    DiscoveryError::from_registry(BACKEND, service, err)
}

/// What reading one child gave.
enum Read {
    Found(Vec<u8>, Stat),
    /// Deleted meanwhile.
    Gone,
    /// The child's ACL does not let this client read it.
    Denied,
}

/// Why a persistent watch could not be added.
enum AddWatch {
    Added(PersistentWatcher),
    /// The server predates persistent watches (ZooKeeper < 3.6).
    Unimplemented,
}

/// Sorts the answer to adding a persistent watch: a server older than 3.6 answers
/// `Unimplemented` (and closes the connection), which no retry can fix.
fn added(result: Result<PersistentWatcher, ZkError>) -> Result<AddWatch, ZkError> {
    match result {
        Ok(watcher) => Ok(AddWatch::Added(watcher)),
        Err(ZkError::Unimplemented) => Ok(AddWatch::Unimplemented),
        Err(err) => Err(err),
    }
}

/// The error for a server without persistent watches.
fn unsupported(config: &ZookeeperConfig, service: &str) -> DiscoveryError {
    DiscoveryError::Unsupported {
        backend: BACKEND,
        endpoint: config.connect.clone(),
        service: service.to_string(),
        reason: "the server does not implement persistent recursive watches (added in \
                 ZooKeeper 3.6); upgrade it, or poll with `resolve`"
            .to_string(),
    }
}

/// A live persistent watch on one service, in one session.
pub(crate) struct Cursor {
    client: Client,
    watcher: PersistentWatcher,
    dir: String,
}

impl ZookeeperDiscovery {
    /// Discovery over these settings; connects on first use.
    ///
    /// ```
    /// use service_registry::zookeeper::{ZookeeperConfig, ZookeeperDiscovery};
    /// let discovery = ZookeeperDiscovery::new(ZookeeperConfig::new("127.0.0.1:2181"));
    /// # let _ = discovery;
    /// ```
    pub fn new(config: ZookeeperConfig) -> Self {
        Self {
            config,
            client: SharedClient::default(),
            cache: WatchCache::default(),
        }
    }

    /// The shared session, or a new one when there is none or it has ended; concurrent callers
    /// share one connect.
    async fn client(&self) -> Result<Client, RegistryError> {
        let config = self.config.clone();
        self.client
            .get(
                |client: &Client| !client.state().is_terminated(),
                move || async move { connect(&config).await },
            )
            .await
            .map(|(client, _)| client)
    }

    /// Reads one child; `None` (logged) when it is gone or unreadable.
    async fn read(
        &self,
        client: &Client,
        dir: &str,
        name: &str,
    ) -> Result<Option<Instance>, RegistryError> {
        let path = format!("{dir}/{name}");
        let read = bounded(&self.config, self.config.request_timeout, async {
            match client.get_data(&path).await {
                Ok((data, stat)) => Ok(Read::Found(data, stat)),
                Err(ZkError::NoNode) => Ok(Read::Gone),
                Err(ZkError::NoAuth) => Ok(Read::Denied),
                Err(err) => Err(err),
            }
        })
        .await?;
        match read {
            Read::Found(data, stat) => match wire::decode(name, &data, stat.ctime) {
                Ok(instance) => Ok(Some(instance)),
                Err(err) => {
                    tracing::warn!(path, error = %err, "ignoring an unreadable registry node");
                    Ok(None)
                }
            },
            Read::Gone => Ok(None),
            Read::Denied => {
                tracing::warn!(
                    path,
                    user = self.config.user_name().unwrap_or("(none)"),
                    "ignoring a registry node whose ACL does not let this client read it"
                );
                Ok(None)
            }
        }
    }

    /// Every readable child of the service, by node name.
    async fn list(&self, client: &Client, service: &str) -> Result<Entries, RegistryError> {
        let dir = wire::service_path(&self.config.root, service);
        let children = bounded(&self.config, self.config.request_timeout, async {
            match client.list_children(&dir).await {
                Err(ZkError::NoNode) => Ok(Vec::new()),
                other => other,
            }
        })
        .await?;
        let reads = children.iter().map(|name| self.read(client, &dir, name));
        let mut out = Entries::new();
        for (name, result) in children
            .iter()
            .zip(futures_util::future::join_all(reads).await)
        {
            if let Some(instance) = result? {
                out.insert(name.clone(), instance);
            }
        }
        Ok(out)
    }

    /// Applies one node event under `cursor.dir` to `entries`.
    async fn apply(
        &self,
        cursor: &Cursor,
        entries: &mut Entries,
        kind: EventType,
        path: &str,
    ) -> Result<(), RegistryError> {
        let Some(name) = path
            .strip_prefix(cursor.dir.as_str())
            .and_then(|p| p.strip_prefix('/'))
        else {
            return Ok(());
        };
        if name.contains('/') {
            return Ok(());
        }
        let current = if kind == EventType::NodeDeleted {
            None
        } else {
            self.read(&cursor.client, &cursor.dir, name).await?
        };
        match current {
            Some(instance) => entries.insert(name.to_string(), instance),
            None => entries.remove(name),
        };
        Ok(())
    }
}

#[async_trait]
impl Source for ZookeeperDiscovery {
    const BACKEND: &'static str = "zookeeper";

    type Cursor = Cursor;

    async fn open(&self, service: &str) -> Result<(Cursor, Entries), DiscoveryError> {
        let error = |err| discovery_error(service, err);
        let client = self.client().await.map_err(error)?;
        let dir = wire::service_path(&self.config.root, service);
        let added = bounded(&self.config, self.config.request_timeout, async {
            added(client.watch(&dir, AddWatchMode::PersistentRecursive).await)
        })
        .await
        .map_err(error)?;
        let AddWatch::Added(watcher) = added else {
            return Err(unsupported(&self.config, service));
        };
        // List under the watch, so nothing between the list and the watch is lost.
        let entries = self.list(&client, service).await.map_err(error)?;
        let cursor = Cursor {
            client,
            watcher,
            dir,
        };
        Ok((cursor, entries))
    }

    async fn next(
        &self,
        service: &str,
        cursor: &mut Cursor,
        entries: &mut Entries,
    ) -> Result<Step, String> {
        loop {
            let event = cursor.watcher.changed().await;
            match event.event_type {
                EventType::Session => match event.session_state {
                    // Events during the disconnection may be lost: not current until re-listed.
                    SessionState::Disconnected => return Ok(Step::Disconnected),
                    SessionState::SyncConnected | SessionState::ConnectedReadOnly => {
                        let listed = self
                            .list(&cursor.client, service)
                            .await
                            .map_err(|err| err.to_string())?;
                        entries.assign(listed);
                        return Ok(Step::Applied);
                    }
                    // Terminal: this watcher must not be polled again.
                    state => return Err(format!("session ended: {state:?}")),
                },
                EventType::NodeCreated | EventType::NodeDataChanged | EventType::NodeDeleted => {
                    return self
                        .apply(cursor, entries, event.event_type, &event.path)
                        .await
                        .map(|()| Step::Applied)
                        .map_err(|err| err.to_string());
                }
                EventType::NodeChildrenChanged => continue,
            }
        }
    }

    fn backoff(&self) -> Backoff {
        self.config.backoff.clone()
    }

    async fn read(&self, service: &str) -> Result<Entries, DiscoveryError> {
        let client = self
            .client()
            .await
            .map_err(|err| discovery_error(service, err))?;
        self.list(&client, service)
            .await
            .map_err(|err| discovery_error(service, err))
    }

    fn resolve_from_watch(&self) -> bool {
        self.config.resolve_from_watch
    }

    fn cache(&self) -> &WatchCache {
        &self.cache
    }
}

#[async_trait]
impl Discovery for ZookeeperDiscovery {
    async fn resolve(&self, service: &str) -> Result<Instances, DiscoveryError> {
        watch::resolve(self, service).await
    }

    async fn watch(&self, service: &str) -> Result<WatchStream, DiscoveryError> {
        watch::watch(self, service).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_without_persistent_watches_is_a_clear_error() {
        // No ZooKeeper older than 3.6 is at hand: the server's answer is fed in directly.
        assert!(matches!(
            added(Err(ZkError::Unimplemented)),
            Ok(AddWatch::Unimplemented)
        ));
        assert!(matches!(
            added(Err(ZkError::ConnectionLoss)),
            Err(ZkError::ConnectionLoss)
        ));
        let config = ZookeeperConfig::new("127.0.0.1:2181");
        let err = unsupported(&config, "echo");
        assert!(matches!(err, DiscoveryError::Unsupported { .. }));
        let text = err.to_string();
        assert!(
            text.contains("3.6") && text.contains("echo") && text.contains("127.0.0.1:2181"),
            "{text}"
        );
    }
}

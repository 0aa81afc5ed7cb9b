//! [`ZookeeperDiscovery`]: resolve = list children + read data; watch = a persistent recursive
//! watch, with a full re-list after every reconnect.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{mpsc, Mutex};
use tokio_stream::wrappers::UnboundedReceiverStream;
use zookeeper_client::{AddWatchMode, Client, Error as ZkError, EventType, SessionState};

use super::config::ZookeeperConfig;
use super::error::{registry_error, timed_out};
use super::session::connect;
use super::wire;
use crate::discovery::{diff_instances, Change, Discovery, DiscoveryError, Instance, WatchStream};
use crate::registry::RegistryError;

/// Finds instances that Kitex (Go) or [`ZookeeperRegistry`](super::ZookeeperRegistry)
/// registered. Nodes it cannot read are left out and logged; the rest still count.
///
/// ```no_run
/// use futures_util::StreamExt;
/// use service_registry::Discovery;
/// use service_registry::zookeeper::{ZookeeperConfig, ZookeeperDiscovery};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let discovery = ZookeeperDiscovery::new(ZookeeperConfig::from_env());
/// let mut changes = discovery.watch("echo").await?;
/// while let Some(change) = changes.next().await {
///     println!("{} instances", change.all.len());
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ZookeeperDiscovery {
    config: ZookeeperConfig,
    client: Arc<Mutex<Option<Client>>>,
}

impl std::fmt::Debug for ZookeeperDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZookeeperDiscovery")
            .field("connect", &self.config.connect)
            .finish()
    }
}

fn discovery_error(service: &str, err: RegistryError) -> DiscoveryError {
    DiscoveryError::from_registry("zookeeper", service, err)
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
            client: Arc::default(),
        }
    }

    /// The cached client, or a new session when there is none or it has ended.
    async fn client(&self) -> Result<Client, RegistryError> {
        let mut cached = self.client.lock().await;
        if let Some(client) = cached.as_ref() {
            if !client.state().is_terminated() {
                return Ok(client.clone());
            }
        }
        let client = connect(&self.config).await?;
        *cached = Some(client.clone());
        Ok(client)
    }

    async fn call<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, ZkError>>,
    ) -> Result<T, RegistryError> {
        let limit = self.config.request_timeout;
        match tokio::time::timeout(limit, call).await {
            Ok(result) => result.map_err(|err| registry_error(&self.config, err)),
            Err(_) => Err(timed_out(&self.config, limit)),
        }
    }

    /// Reads one child; `None` (logged) when it is gone or unreadable.
    async fn read(
        &self,
        client: &Client,
        dir: &str,
        name: &str,
    ) -> Result<Option<Instance>, RegistryError> {
        let path = format!("{dir}/{name}");
        let limit = self.config.request_timeout;
        match tokio::time::timeout(limit, client.get_data(&path)).await {
            Ok(Ok((data, stat))) => match wire::decode(name, &data, stat.ctime) {
                Ok(instance) => Ok(Some(instance)),
                Err(err) => {
                    tracing::warn!(path, error = %err, "ignoring an unreadable registry node");
                    Ok(None)
                }
            },
            Ok(Err(ZkError::NoNode)) => Ok(None),
            Ok(Err(err)) => Err(registry_error(&self.config, err)),
            Err(_) => Err(timed_out(&self.config, limit)),
        }
    }

    /// Every readable child of the service, by node name.
    async fn list(
        &self,
        client: &Client,
        service: &str,
    ) -> Result<BTreeMap<String, Instance>, RegistryError> {
        let dir = wire::service_path(&self.config.root, service);
        let children =
            match tokio::time::timeout(self.config.request_timeout, client.list_children(&dir))
                .await
            {
                Ok(Ok(children)) => children,
                Ok(Err(ZkError::NoNode)) => Vec::new(),
                Ok(Err(err)) => return Err(registry_error(&self.config, err)),
                Err(_) => return Err(timed_out(&self.config, self.config.request_timeout)),
            };
        let reads = children.iter().map(|name| self.read(client, &dir, name));
        let mut out = BTreeMap::new();
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

    /// Follows one service until the receiver goes away.
    async fn follow(
        self,
        service: String,
        mut known: BTreeMap<String, Instance>,
        tx: mpsc::UnboundedSender<Change>,
    ) {
        let dir = wire::service_path(&self.config.root, &service);
        let mut backoff = self.config.backoff.clone();
        loop {
            let cause = tokio::select! {
                () = tx.closed() => return,
                cause = self.watch_session(&service, &dir, &mut known, &tx) => cause,
            };
            match cause {
                None => return,
                Some(cause) => {
                    tracing::warn!(service, %cause, "ZooKeeper watch interrupted; re-listing")
                }
            }
            let delay = backoff.next_delay();
            tokio::select! {
                () = tx.closed() => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Watches within one session; returns why it stopped (`None`: the watcher went away).
    async fn watch_session(
        &self,
        service: &str,
        dir: &str,
        known: &mut BTreeMap<String, Instance>,
        tx: &mpsc::UnboundedSender<Change>,
    ) -> Option<String> {
        let client = match self.client().await {
            Ok(client) => client,
            Err(err) => return Some(err.to_string()),
        };
        let mut watcher = match self
            .call(client.watch(dir, AddWatchMode::PersistentRecursive))
            .await
        {
            Ok(watcher) => watcher,
            Err(err) => return Some(format!("cannot add a watch: {err}")),
        };
        // (Re-)list under the watch, so nothing between the list and the watch is lost.
        if let Err(err) = self.relist(&client, service, known, tx).await {
            return Some(err.to_string());
        }
        loop {
            let event = watcher.changed().await;
            let before: Vec<Instance> = known.values().cloned().collect();
            match event.event_type {
                EventType::Session => match event.session_state {
                    SessionState::Disconnected => continue,
                    SessionState::SyncConnected | SessionState::ConnectedReadOnly => {
                        // Events during the disconnection may be lost: rebuild from a list.
                        if let Err(err) = self.relist(&client, service, known, tx).await {
                            return Some(err.to_string());
                        }
                        continue;
                    }
                    // Terminal: this watcher must not be polled again.
                    state => return Some(format!("session ended: {state:?}")),
                },
                EventType::NodeCreated | EventType::NodeDataChanged | EventType::NodeDeleted => {
                    let Some(name) = event
                        .path
                        .strip_prefix(dir)
                        .and_then(|p| p.strip_prefix('/'))
                    else {
                        continue;
                    };
                    if name.contains('/') {
                        continue;
                    }
                    let current = if event.event_type == EventType::NodeDeleted {
                        None
                    } else {
                        match self.read(&client, dir, name).await {
                            Ok(instance) => instance,
                            Err(err) => return Some(err.to_string()),
                        }
                    };
                    match current {
                        Some(instance) => known.insert(name.to_string(), instance),
                        None => known.remove(name),
                    };
                }
                EventType::NodeChildrenChanged => continue,
            }
            let after: Vec<Instance> = known.values().cloned().collect();
            if let Some(change) = diff_instances(service, &before, &after) {
                if tx.send(change).is_err() {
                    return None;
                }
            }
        }
    }

    async fn relist(
        &self,
        client: &Client,
        service: &str,
        known: &mut BTreeMap<String, Instance>,
        tx: &mpsc::UnboundedSender<Change>,
    ) -> Result<(), RegistryError> {
        let listed = self.list(client, service).await?;
        let before: Vec<Instance> = known.values().cloned().collect();
        let after: Vec<Instance> = listed.values().cloned().collect();
        *known = listed;
        if let Some(change) = diff_instances(service, &before, &after) {
            let _ = tx.send(change);
        }
        Ok(())
    }
}

#[async_trait]
impl Discovery for ZookeeperDiscovery {
    async fn resolve(&self, service: &str) -> Result<Vec<Instance>, DiscoveryError> {
        let client = self
            .client()
            .await
            .map_err(|err| discovery_error(service, err))?;
        self.list(&client, service)
            .await
            .map(|instances| instances.into_values().collect())
            .map_err(|err| discovery_error(service, err))
    }

    async fn watch(&self, service: &str) -> Result<WatchStream, DiscoveryError> {
        let client = self
            .client()
            .await
            .map_err(|err| discovery_error(service, err))?;
        let known = self
            .list(&client, service)
            .await
            .map_err(|err| discovery_error(service, err))?;
        let all: Vec<Instance> = known.values().cloned().collect();
        let (tx, rx) = mpsc::unbounded_channel();
        // The receiver is alive, so this send cannot fail.
        let _ = tx.send(Change {
            service: service.to_string(),
            added: all.clone(),
            all,
            updated: Vec::new(),
            removed: Vec::new(),
        });
        tokio::spawn(self.clone().follow(service.to_string(), known, tx));
        Ok(Box::pin(UnboundedReceiverStream::new(rx)))
    }
}

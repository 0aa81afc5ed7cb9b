//! [`EtcdDiscovery`]: resolve with one range read; watch from the listed revision.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use etcd_client::{Client, EventType, GetOptions, KeyValue, WatchOptions};
use tokio::sync::{mpsc, Mutex};
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::config::EtcdConfig;
use super::error::bounded;
use super::wire;
use crate::discovery::{diff_instances, Change, Discovery, DiscoveryError, Instance, WatchStream};
use crate::registry::RegistryError;

/// Finds instances that Kitex (Go) or [`EtcdRegistry`](super::EtcdRegistry) registered.
///
/// `resolve` is one range read of `{prefix}/{service}/`. `watch` lists, then watches from the
/// listed revision + 1, so no change falls between; when the watch breaks (etcd restarted,
/// compaction, network), it lists again, reports the difference, and resumes. Keys or values it
/// cannot read are left out and logged; the rest still count.
///
/// ```no_run
/// use futures_util::StreamExt;
/// use service_registry::Discovery;
/// use service_registry::etcd::{EtcdConfig, EtcdDiscovery};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let discovery = EtcdDiscovery::new(EtcdConfig::from_env());
/// println!("{:?}", discovery.resolve("echo").await?);
/// let mut changes = discovery.watch("echo").await?;
/// while let Some(change) = changes.next().await {
///     println!("+{} ~{} -{}", change.added.len(), change.updated.len(), change.removed.len());
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct EtcdDiscovery {
    config: EtcdConfig,
    client: Arc<Mutex<Option<Client>>>,
}

impl std::fmt::Debug for EtcdDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdDiscovery")
            .field("endpoints", &self.config.endpoints)
            .finish()
    }
}

fn discovery_error(service: &str, err: RegistryError) -> DiscoveryError {
    DiscoveryError::from_registry("etcd", service, err)
}

/// Decodes one key-value under `service_prefix`; `None` (logged) when it is not readable.
fn decode(service_prefix: &str, kv: &KeyValue) -> Option<Instance> {
    let key = String::from_utf8_lossy(kv.key());
    if !key.starts_with(service_prefix) || key[service_prefix.len()..].contains('/') {
        tracing::debug!(%key, "ignoring a key that is not an instance of this service");
        return None;
    }
    match wire::decode(kv.value()) {
        Ok(instance) => Some(instance),
        Err(err) => {
            tracing::warn!(%key, error = %err, "ignoring an unreadable registry value");
            None
        }
    }
}

impl EtcdDiscovery {
    /// Discovery over these settings; connects on first use.
    ///
    /// ```
    /// use service_registry::etcd::{EtcdConfig, EtcdDiscovery};
    /// let discovery = EtcdDiscovery::new(EtcdConfig::new(["http://127.0.0.1:2379"]));
    /// # let _ = discovery;
    /// ```
    pub fn new(config: EtcdConfig) -> Self {
        Self {
            config,
            client: Arc::default(),
        }
    }

    async fn client(&self) -> Result<Client, RegistryError> {
        let mut cached = self.client.lock().await;
        if let Some(client) = cached.as_ref() {
            return Ok(client.clone());
        }
        let limit = self.config.connect_timeout + self.config.request_timeout;
        let client = bounded(
            &self.config,
            limit,
            Client::connect(&self.config.endpoints, Some(self.config.connect_options())),
        )
        .await?;
        *cached = Some(client.clone());
        Ok(client)
    }

    /// Lists the service: instances by key, and the revision of the read.
    async fn list(
        &self,
        service: &str,
    ) -> Result<(BTreeMap<String, Instance>, i64), RegistryError> {
        let prefix = wire::service_prefix(&self.config.prefix, service);
        let mut client = self.client().await?;
        let read = bounded(
            &self.config,
            self.config.request_timeout,
            client.get(prefix.as_str(), Some(GetOptions::new().with_prefix())),
        )
        .await;
        let response = match read {
            Ok(response) => response,
            Err(err) => {
                // Reconnect next time: the cached client may hold a dead token or channel.
                *self.client.lock().await = None;
                return Err(err);
            }
        };
        let revision = response.header().map(|h| h.revision()).unwrap_or(0);
        let instances = response
            .kvs()
            .iter()
            .filter_map(|kv| {
                decode(&prefix, kv).map(|i| (String::from_utf8_lossy(kv.key()).into_owned(), i))
            })
            .collect();
        Ok((instances, revision))
    }

    /// Follows the service: watch from `revision + 1`; on any break, list again and resume.
    async fn follow(
        self,
        service: String,
        mut known: BTreeMap<String, Instance>,
        mut revision: i64,
        tx: mpsc::UnboundedSender<Change>,
    ) {
        let prefix = wire::service_prefix(&self.config.prefix, &service);
        let mut backoff = self.config.backoff.clone();
        loop {
            let cause = tokio::select! {
                () = tx.closed() => return,
                cause = self.watch_from(&prefix, &service, &mut known, &mut revision, &tx) => cause,
            };
            tracing::warn!(service, %cause, "etcd watch broken; listing again");
            loop {
                let delay = backoff.next_delay();
                tokio::select! {
                    () = tx.closed() => return,
                    () = tokio::time::sleep(delay) => {}
                }
                match self.list(&service).await {
                    Ok((listed, listed_revision)) => {
                        let before: Vec<Instance> = known.values().cloned().collect();
                        let after: Vec<Instance> = listed.values().cloned().collect();
                        known = listed;
                        revision = listed_revision;
                        if let Some(change) = diff_instances(&service, &before, &after) {
                            if tx.send(change).is_err() {
                                return;
                            }
                        }
                        backoff.reset();
                        break;
                    }
                    Err(err) => tracing::debug!(service, error = %err, "listing failed; retrying"),
                }
            }
        }
    }

    /// Watches until the watch breaks; returns why.
    async fn watch_from(
        &self,
        prefix: &str,
        service: &str,
        known: &mut BTreeMap<String, Instance>,
        revision: &mut i64,
        tx: &mpsc::UnboundedSender<Change>,
    ) -> String {
        let mut client = match self.client().await {
            Ok(client) => client,
            Err(err) => return err.to_string(),
        };
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(*revision + 1);
        let mut stream = match client.watch(prefix, Some(options)).await {
            Ok(stream) => stream,
            Err(err) => {
                *self.client.lock().await = None;
                return format!("cannot start watch: {err}");
            }
        };
        loop {
            let response = match stream.message().await {
                Ok(Some(response)) => response,
                Ok(None) => return "the watch stream ended".into(),
                Err(err) => {
                    *self.client.lock().await = None;
                    return format!("the watch stream failed: {err}");
                }
            };
            if response.compact_revision() > 0 {
                return format!("revision {} was compacted", *revision + 1);
            }
            if response.canceled() {
                return format!("etcd cancelled the watch: {}", response.cancel_reason());
            }
            let mut change = Change {
                service: service.to_string(),
                all: Vec::new(),
                added: Vec::new(),
                updated: Vec::new(),
                removed: Vec::new(),
            };
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                *revision = (*revision).max(kv.mod_revision());
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                let decoded = match event.event_type() {
                    EventType::Put => decode(prefix, kv),
                    EventType::Delete => None,
                };
                match (decoded, known.remove(&key)) {
                    (Some(new), None) => {
                        change.added.push(new.clone());
                        known.insert(key, new);
                    }
                    (Some(new), Some(old)) => {
                        if new != old {
                            change.updated.push(new.clone());
                        }
                        known.insert(key, new);
                    }
                    (None, Some(old)) => change.removed.push(old),
                    (None, None) => {}
                }
            }
            if change.added.is_empty() && change.updated.is_empty() && change.removed.is_empty() {
                continue;
            }
            change.all = known.values().cloned().collect();
            if tx.send(change).is_err() {
                return "the watcher went away".into();
            }
        }
    }
}

#[async_trait]
impl Discovery for EtcdDiscovery {
    async fn resolve(&self, service: &str) -> Result<Vec<Instance>, DiscoveryError> {
        self.list(service)
            .await
            .map(|(instances, _)| instances.into_values().collect())
            .map_err(|err| discovery_error(service, err))
    }

    async fn watch(&self, service: &str) -> Result<WatchStream, DiscoveryError> {
        let (known, revision) = self
            .list(service)
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
        tokio::spawn(
            self.clone()
                .follow(service.to_string(), known, revision, tx),
        );
        Ok(Box::pin(UnboundedReceiverStream::new(rx)))
    }
}

//! [`NacosDiscovery`]: resolve by query, watch by Nacos' push.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::value::RawValue;
use tokio::sync::watch;

use super::config::NacosConfig;
use super::connection::Connection;
use super::error::NacosError;
use super::push::{Push, MAX_ANSWER};
use super::server::NacosServer;
use super::wire::{self, QueryRequest, ServiceInfo, SubscribeRequest};
use crate::backends::kit::cache::WatchCache;
use crate::backends::kit::client::SharedClient;
use crate::backends::kit::watch::{resolve, watch, Entries, Source, Step};
use crate::backoff::Backoff;
use crate::discovery::{Discovery, DiscoveryError, Instance, Instances, WatchStream};

const BACKEND: &str = "nacos";

/// Finds instances registered in Nacos by this crate or by Kitex's `registry-nacos` (Go).
///
/// Reads what Kitex's resolver reads: the configured group and cluster, healthy and enabled
/// instances, the weight truncated to an integer and left out when that is 0 (Kitex's balancers
/// skip weight 0), the metadata as tags.
/// Instances that fail these rules, or whose address cannot be read, are left out and logged.
///
/// [`watch`](Discovery::watch) subscribes to the service: Nacos pushes every change on the
/// connection, and nothing polls. When the connection is lost, the watch connects again,
/// subscribes again and reports the difference from what it showed last. All calls of one
/// `NacosDiscovery` (and its clones) share one connection.
///
/// While a watch on a service is live in this discovery, `resolve` answers from that watch's
/// latest state without a query, as long as the watch is in sync (see
/// [`NacosConfig::resolve_from_watch`]).
///
/// ```no_run
/// use futures_util::StreamExt;
/// use service_registry::nacos::{NacosConfig, NacosDiscovery};
/// use service_registry::Discovery;
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let discovery = NacosDiscovery::new(NacosConfig::from_env()?);
/// println!("{:?}", discovery.resolve("echo").await?);
/// let mut changes = discovery.watch("echo").await?;
/// while let Some(change) = changes.next().await {
///     println!("now {} instance(s)", change.all.len());
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct NacosDiscovery {
    config: Arc<NacosConfig>,
    client: SharedClient<Arc<Connection>>,
    cache: WatchCache,
}

impl std::fmt::Debug for NacosDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NacosDiscovery")
            .field("server", &self.config.grpc_addr())
            .field("group", &self.config.group)
            .field("cluster", &self.config.cluster)
            .finish()
    }
}

impl NacosDiscovery {
    /// A discovery on `config`; connects on first use.
    ///
    /// ```
    /// use service_registry::nacos::{NacosConfig, NacosDiscovery};
    /// let discovery = NacosDiscovery::new(NacosConfig::new("127.0.0.1", 8848));
    /// # let _ = discovery;
    /// ```
    pub fn new(config: NacosConfig) -> Self {
        config.warn_plain_text_credentials();
        Self {
            config: Arc::new(config),
            client: SharedClient::default(),
            cache: WatchCache::default(),
        }
    }

    /// The cluster node this discovery's connection went to last
    /// ([`NacosConfig::add_server`]); `None` before the first connection.
    ///
    /// ```
    /// use service_registry::nacos::{NacosConfig, NacosDiscovery};
    /// let discovery = NacosDiscovery::new(NacosConfig::new("127.0.0.1", 8848));
    /// assert_eq!(discovery.server(), None);
    /// ```
    pub fn server(&self) -> Option<NacosServer> {
        self.config.last_server()
    }

    async fn connection(&self, service: &str) -> Result<(Arc<Connection>, u64), DiscoveryError> {
        let config = self.config.clone();
        self.client
            .get(
                |connection: &Arc<Connection>| connection.lost_cause().is_none(),
                move || async move {
                    Connection::connect(&config)
                        .await
                        .map_err(NacosError::into_registry)
                },
            )
            .await
            .map_err(|err| DiscoveryError::from_registry(BACKEND, service, err))
    }

    /// The service's current instances, by a query on `connection`.
    async fn query(
        &self,
        connection: &Connection,
        service: &str,
    ) -> Result<Option<ServiceInfo>, NacosError> {
        let config = &self.config;
        let request = QueryRequest {
            namespace: &config.namespace,
            service_name: service,
            group_name: &config.group,
            cluster: &config.cluster,
            healthy_only: false,
            udp_port: 0,
        };
        let what = format!("the query of `{service}`");
        let response = connection
            .call("ServiceQueryRequest", &what, request)
            .await?;
        Ok(response.service_info)
    }

    fn failed(&self, service: &str, epoch: u64, err: NacosError) -> DiscoveryError {
        if err.is_connection() {
            self.client.forget(epoch);
        }
        DiscoveryError::from_registry(BACKEND, service, err.into_registry())
    }
}

/// What a watch knows of the hosts it was listed last: each host's JSON, as the server wrote
/// it, and the instance it read as. A host the server writes again byte for byte reads the
/// same, so a push reads only the hosts whose JSON is new, and an unchanged host keeps the
/// instance shown (the same `Arc`). Hosts left out are not kept: they are read (and logged)
/// again at each push, as every host was before.
#[derive(Debug, Default)]
pub(crate) struct Known(HashMap<Box<str>, Arc<Instance>, foldhash::fast::RandomState>);

impl Known {
    /// The instances of `info` Kitex's resolver would use, in the order listed; remembers
    /// them (and forgets the hosts `info` does not list).
    pub(crate) fn read(
        &mut self,
        service: &str,
        cluster: &str,
        info: Option<&ServiceInfo>,
    ) -> Vec<Arc<Instance>> {
        let hosts = info.and_then(|i| i.hosts.as_deref()).unwrap_or_default();
        let mut known = HashMap::with_capacity_and_hasher(hosts.len(), Default::default());
        let mut instances = Vec::with_capacity(hosts.len());
        for host in hosts {
            let json = host.get();
            let instance = match self.0.remove_entry(json) {
                Some((json, instance)) => {
                    known.insert(json, instance.clone());
                    instance
                }
                None => {
                    let Some(instance) = read(service, cluster, host) else {
                        continue;
                    };
                    let instance = Arc::new(instance);
                    known.insert(json.into(), instance.clone());
                    instance
                }
            };
            instances.push(instance);
        }
        self.0 = known;
        instances
    }
}

/// The instance Kitex's resolver would read `host` as; logged and left out otherwise.
fn read(service: &str, cluster: &str, host: &RawValue) -> Option<Instance> {
    let host = wire::read_logged(service, host)?;
    match wire::decode(&host, cluster) {
        Ok(instance) => Some(instance),
        Err(why) => {
            tracing::debug!(
                service,
                ip = host.ip,
                port = host.port,
                %why,
                "instance left out"
            );
            None
        }
    }
}

/// The instances of `info` Kitex's resolver would use, by address (a fresh listing).
fn entries(service: &str, cluster: &str, info: Option<&ServiceInfo>, known: &mut Known) -> Entries {
    let mut entries = Entries::new();
    entries.assign_by_addr(known.read(service, cluster, info));
    entries
}

/// Makes `entries_now` what `info` (a push, or a query's answer) lists, touching only the
/// addresses that changed: what a watch does with each push.
pub(crate) fn apply_push(
    service: &str,
    cluster: &str,
    info: Option<&ServiceInfo>,
    entries_now: &mut Entries,
    known: &mut Known,
) {
    entries_now.assign_by_addr(known.read(service, cluster, info));
}

#[async_trait]
impl Discovery for NacosDiscovery {
    async fn resolve(&self, service: &str) -> Result<Instances, DiscoveryError> {
        resolve(self, service).await
    }

    async fn watch(&self, service: &str) -> Result<WatchStream, DiscoveryError> {
        watch(self, service).await
    }
}

/// A subscription on one connection: its pushes, and the unsubscription when dropped.
pub(crate) struct Subscription {
    connection: Arc<Connection>,
    grouped: String,
    service: String,
    pushes: Option<watch::Receiver<Option<Push>>>,
    config: Arc<NacosConfig>,
    /// The `lastRefTime` of the state shown: a push older than it is out of order (or the
    /// server's clock went back), and the service is queried instead.
    last_ref_time: i64,
    /// The hosts of the state shown.
    known: Known,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        drop(self.pushes.take());
        if !self.connection.forget_pushes(&self.grouped) || self.connection.lost_cause().is_some() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (connection, config, service, grouped) = (
            self.connection.clone(),
            self.config.clone(),
            std::mem::take(&mut self.service),
            std::mem::take(&mut self.grouped),
        );
        runtime.spawn(async move {
            let _order = connection.subscribing().await;
            if connection.followed(&grouped) {
                return; // followed again meanwhile: its subscription stands
            }
            let request = SubscribeRequest {
                namespace: &config.namespace,
                service_name: &service,
                group_name: &config.group,
                subscribe: false,
                clusters: "",
            };
            if let Err(err) = connection
                .call("SubscribeServiceRequest", "an unsubscription", request)
                .await
            {
                tracing::debug!(service, error = %err, "unsubscribing failed; the subscription ends with the connection");
            }
        });
    }
}

#[async_trait]
impl Source for NacosDiscovery {
    type Cursor = Subscription;

    async fn open(&self, service: &str) -> Result<(Subscription, Entries), DiscoveryError> {
        let (connection, epoch) = self.connection(service).await?;
        let config = &self.config;
        let grouped = wire::grouped(&config.group, service);
        let order = connection.subscribing().await;
        // Follow pushes before subscribing, so none that follows the answer is missed.
        let pushes = connection.pushes(&grouped);
        let subscription = Subscription {
            connection: connection.clone(),
            grouped,
            service: service.to_string(),
            pushes: Some(pushes),
            config: config.clone(),
            last_ref_time: 0,
            known: Known::default(),
        };
        let request = SubscribeRequest {
            namespace: &config.namespace,
            service_name: service,
            group_name: &config.group,
            subscribe: true,
            clusters: "",
        };
        let what = format!("the subscription to `{service}`");
        let response = connection
            .call("SubscribeServiceRequest", &what, request)
            .await
            .map_err(|err| self.failed(service, epoch, err))?;
        drop(order);
        let mut subscription = subscription;
        let info = response.service_info;
        subscription.last_ref_time = info.as_ref().map_or(0, |i| i.last_ref_time);
        let found = entries(
            service,
            &config.cluster,
            info.as_ref(),
            &mut subscription.known,
        );
        Ok((subscription, found))
    }

    async fn next(
        &self,
        service: &str,
        cursor: &mut Subscription,
        entries_now: &mut Entries,
    ) -> Result<Step, String> {
        let Some(pushes) = cursor.pushes.as_mut() else {
            return Err("the subscription is closed".into());
        };
        loop {
            tokio::select! {
                cause = cursor.connection.lost() => return Err(cause),
                changed = pushes.changed() => {
                    if changed.is_err() {
                        return Err("the connection dropped the subscription".into());
                    }
                    let Some(push) = pushes.borrow_and_update().clone() else { continue };
                    let info = match push {
                        Push::State(info) => info,
                        Push::TooLarge(size) => {
                            return Err(format!(
                                "a push of {size} bytes is over the {MAX_ANSWER}-byte limit"
                            ))
                        }
                    };
                    if info.last_ref_time > 0 && info.last_ref_time < cursor.last_ref_time {
                        // Out of order, or the server's clock went back: neither the push
                        // nor what is shown is known to be the latest. Ask.
                        tracing::debug!(
                            service,
                            push = info.last_ref_time,
                            shown = cursor.last_ref_time,
                            "a push older than the state shown; querying the service"
                        );
                        let current = self
                            .query(&cursor.connection, service)
                            .await
                            .map_err(|err| format!("querying after an out-of-order push: {err}"))?;
                        cursor.last_ref_time = current.as_ref().map_or(0, |i| i.last_ref_time);
                        apply_push(service, &self.config.cluster, current.as_ref(), entries_now, &mut cursor.known);
                        return Ok(Step::Applied);
                    }
                    cursor.last_ref_time = info.last_ref_time;
                    apply_push(service, &self.config.cluster, Some(&info), entries_now, &mut cursor.known);
                    return Ok(Step::Applied);
                }
            }
        }
    }

    fn backoff(&self) -> Backoff {
        self.config.backoff.clone()
    }

    async fn read(&self, service: &str) -> Result<Entries, DiscoveryError> {
        let (connection, epoch) = self.connection(service).await?;
        let info = self
            .query(&connection, service)
            .await
            .map_err(|err| self.failed(service, epoch, err))?;
        Ok(entries(
            service,
            &self.config.cluster,
            info.as_ref(),
            &mut Known::default(),
        ))
    }

    fn resolve_from_watch(&self) -> bool {
        self.config.resolve_from_watch
    }

    fn cache(&self) -> &WatchCache {
        &self.cache
    }

    const BACKEND: &'static str = BACKEND;
}

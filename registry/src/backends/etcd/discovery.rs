//! [`EtcdDiscovery`]: resolve with paged range reads at one revision; watch from the listed
//! revision.

use async_trait::async_trait;
use etcd_client::{
    Client, ConnectOptions, Error as EtcdError, EventType, GetOptions, GetResponse, KeyValue,
    WatchOptions, WatchStream as EtcdWatchStream,
};

use super::config::EtcdConfig;
use super::error::bounded;
use super::wire;
use crate::backends::kit::cache::WatchCache;
use crate::backends::kit::client::SharedClient;
use crate::backends::kit::watch::{self, Entries, Source, Step};
use crate::backoff::Backoff;
use crate::discovery::{Discovery, DiscoveryError, Instance, Instances, WatchStream};
use crate::registry::shared;
use crate::registry::RegistryError;

/// Keys per range read. Kitex values are a few hundred bytes, so a page is far under the
/// response limit; a page that still exceeds it (large foreign values) is read again smaller.
const PAGE: i64 = 256;
/// The largest response discovery decodes (tonic's default is 4 MiB). etcd refuses requests
/// over `--max-request-bytes` (1.5 MiB by default), so any single value fits; only pages of
/// several large values need splitting.
const MAX_RESPONSE: usize = 16 << 20;
/// How often a listing starts over when etcd compacts the revision it is reading at.
const LIST_ATTEMPTS: u32 = 3;

/// Finds instances that Kitex (Go) or [`EtcdRegistry`](super::EtcdRegistry) registered.
///
/// `resolve` reads `{prefix}/{service}/` in pages, all at the revision of the first, so a
/// service of any size is one consistent view and a few huge values cannot push a response
/// over the limit. `watch` lists, then watches from the listed revision + 1, so no change falls
/// between; when the watch breaks (etcd restarted, compaction, network, the member lost its
/// leader), it lists again, reports the difference, and resumes. Keys or values it cannot read
/// (not UTF-8, no port, not Kitex JSON, too large) are left out and logged; the rest still
/// count. Several keys holding one address are one instance.
///
/// Concurrent calls share one connection and one connect in flight.
///
/// While a watch on a service is live in this discovery (or a clone of it), `resolve` answers
/// from that watch's latest state, without a round trip to etcd. It does so only while the
/// watch is in sync: once its stream fails (etcd restarted, compaction, the member lost its
/// leader, the connection's 5 s keep-alive ping went unanswered for 3 s) and until it has
/// listed again, `resolve` reads from etcd as it does with no watch. A cached answer lags etcd
/// by the watch's notification delay (under a millisecond on loopback, `BENCHMARKS.md`); it is
/// not a linearizable read ([`EtcdConfig::resolve_from_watch`] turns it off).
///
/// ```no_run
/// use futures_util::StreamExt;
/// use service_registry::Discovery;
/// use service_registry::etcd::{EtcdConfig, EtcdDiscovery};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let discovery = EtcdDiscovery::new(EtcdConfig::from_env()?);
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
    client: SharedClient<Client>,
    cache: WatchCache,
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

/// Decodes one key-value under `service_prefix`: its key and instance, or `None` (logged) when
/// it is not a readable instance of this service.
fn decode(service_prefix: &str, kv: &KeyValue) -> Option<(String, Instance)> {
    let Ok(key) = std::str::from_utf8(kv.key()) else {
        tracing::warn!(key = %String::from_utf8_lossy(kv.key()), "ignoring a key that is not UTF-8");
        return None;
    };
    let Some(name) = key.strip_prefix(service_prefix) else {
        tracing::debug!(key, "ignoring a key outside this service");
        return None;
    };
    if name.contains('/') {
        tracing::debug!(
            key,
            "ignoring a key that is not an instance of this service"
        );
        return None;
    }
    if !has_port(name) {
        tracing::warn!(key, "ignoring a key that is not host:port");
        return None;
    }
    match wire::decode(kv.value()) {
        Ok(instance) => Some((key.to_string(), instance)),
        Err(err) => {
            tracing::warn!(key, error = %err, "ignoring an unreadable registry value");
            None
        }
    }
}

/// `host:port`, as Kitex writes the last key segment (the host may be a name; the value's
/// address is what counts).
fn has_port(name: &str) -> bool {
    name.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

/// The first key after every key that starts with `prefix`.
fn range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    // Only 0xff bytes: to the end of the keyspace.
    vec![0]
}

/// The key right after `key`.
fn successor(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}

/// A range read that etcd answered, or a reason to read differently.
enum Page {
    Read(GetResponse),
    /// The response is over [`MAX_RESPONSE`].
    TooLarge,
    /// The revision being read was compacted meanwhile.
    Compacted,
}

fn page(result: Result<GetResponse, EtcdError>) -> Result<Page, EtcdError> {
    match result {
        Ok(response) => Ok(Page::Read(response)),
        Err(EtcdError::GRpcStatus(status)) if status.code() == tonic::Code::OutOfRange => {
            if status.message().contains("message length too large") {
                Ok(Page::TooLarge)
            } else if status.message().contains("compacted") {
                Ok(Page::Compacted)
            } else {
                Err(EtcdError::GRpcStatus(status))
            }
        }
        Err(err) => Err(err),
    }
}

/// A live etcd watch on one service.
pub(crate) struct Cursor {
    stream: EtcdWatchStream,
    /// The revision seen last.
    revision: i64,
    /// The client's epoch, forgotten when the stream fails.
    epoch: u64,
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
        config.warn_if_plain_text_credentials("EtcdDiscovery");
        Self {
            config,
            client: SharedClient::default(),
            cache: WatchCache::default(),
        }
    }

    /// Options for discovery's client: the registry's, and a watch on a member that lost its
    /// leader fails (and is opened again, through any member) instead of going quiet.
    fn connect_options(&self) -> ConnectOptions {
        self.config.connect_options().with_require_leader(true)
    }

    /// The shared client and its epoch; concurrent callers share one connect.
    async fn client(&self) -> Result<(Client, u64), RegistryError> {
        let config = self.config.clone();
        let options = self.connect_options();
        self.client
            .get(
                |_| true,
                move || async move {
                    let limit = config.connect_timeout + config.request_timeout;
                    bounded(
                        &config,
                        limit,
                        Client::connect(&config.endpoints, Some(options)),
                    )
                    .await
                },
            )
            .await
    }

    /// Lists the service: instances by key, and the revision of the read.
    async fn list(&self, service: &str) -> Result<(Entries, i64), RegistryError> {
        let (client, epoch) = self.client().await?;
        let listed = self.list_with(&client, service).await;
        if listed.as_ref().is_err_and(RegistryError::is_transient) {
            // Reconnect next time: the connection may be dead.
            self.client.forget(epoch);
        }
        listed
    }

    async fn list_with(
        &self,
        client: &Client,
        service: &str,
    ) -> Result<(Entries, i64), RegistryError> {
        let mut attempt = 1;
        loop {
            match self.read_pages(client, service).await? {
                Some(listed) => return Ok(listed),
                None if attempt < LIST_ATTEMPTS => {
                    tracing::debug!(service, "revision compacted while listing; starting over");
                    attempt += 1;
                }
                None => {
                    return Err(RegistryError::Unavailable {
                        backend: "etcd",
                        endpoint: self.config.endpoint_list(),
                        source: shared(format!(
                        "etcd compacted the revision being listed {LIST_ATTEMPTS} times in a row"
                    )),
                    })
                }
            }
        }
    }

    /// Reads every page at the revision of the first; `None` when that revision was compacted
    /// before the last page.
    async fn read_pages(
        &self,
        client: &Client,
        service: &str,
    ) -> Result<Option<(Entries, i64)>, RegistryError> {
        let prefix = wire::service_prefix(&self.config.prefix, service);
        let end = range_end(prefix.as_bytes());
        let mut kv = client.kv_client().max_decoding_message_size(MAX_RESPONSE);
        let mut entries = Entries::new();
        let mut start = prefix.as_bytes().to_vec();
        let mut revision = 0;
        let mut limit = PAGE;
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(limit);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let read = bounded(&self.config, self.config.request_timeout, async {
                page(kv.get(start.clone(), Some(options)).await)
            })
            .await?;
            let response = match read {
                Page::Read(response) => response,
                Page::Compacted => return Ok(None),
                Page::TooLarge if limit > 1 => {
                    limit = (limit / 8).max(1);
                    continue;
                }
                Page::TooLarge => {
                    // One value alone is over the limit: step over it, reading only its key.
                    let options = GetOptions::new()
                        .with_range(end.clone())
                        .with_limit(1)
                        .with_keys_only()
                        .with_revision(revision);
                    let read = bounded(&self.config, self.config.request_timeout, async {
                        page(kv.get(start.clone(), Some(options)).await)
                    })
                    .await?;
                    let Page::Read(response) = read else {
                        return Ok(None);
                    };
                    if let Some(kv) = response.kvs().first() {
                        tracing::warn!(
                            key = %String::from_utf8_lossy(kv.key()),
                            limit = MAX_RESPONSE,
                            "ignoring a registry value larger than discovery reads"
                        );
                    }
                    response
                }
            };
            if revision == 0 {
                revision = response.header().map(|h| h.revision()).unwrap_or(0);
            }
            for kv in response.kvs() {
                if let Some((key, instance)) = decode(&prefix, kv) {
                    entries.insert(key, instance);
                }
            }
            match response.kvs().last() {
                Some(last) if response.more() => start = successor(last.key()),
                _ => return Ok(Some((entries, revision))),
            }
            limit = (limit * 2).min(PAGE);
        }
    }
}

#[async_trait]
impl Source for EtcdDiscovery {
    const BACKEND: &'static str = "etcd";

    type Cursor = Cursor;

    async fn open(&self, service: &str) -> Result<(Cursor, Entries), DiscoveryError> {
        let error = |err| discovery_error(service, err);
        let (client, epoch) = self.client().await.map_err(error)?;
        let (entries, revision) = match self.list_with(&client, service).await {
            Ok(listed) => listed,
            Err(err) => {
                if err.is_transient() {
                    self.client.forget(epoch);
                }
                return Err(error(err));
            }
        };
        let prefix = wire::service_prefix(&self.config.prefix, service);
        let options = WatchOptions::new()
            .with_range(range_end(prefix.as_bytes()))
            .with_start_revision(revision + 1);
        let mut watch_client = client
            .watch_client()
            .max_decoding_message_size(MAX_RESPONSE);
        let stream = bounded(
            &self.config,
            self.config.request_timeout,
            watch_client.watch(prefix.as_str(), Some(options)),
        )
        .await
        .inspect_err(|_| self.client.forget(epoch))
        .map_err(error)?;
        let cursor = Cursor {
            stream,
            revision,
            epoch,
        };
        Ok((cursor, entries))
    }

    async fn next(
        &self,
        service: &str,
        cursor: &mut Cursor,
        entries: &mut Entries,
    ) -> Result<Step, String> {
        let response = match cursor.stream.message().await {
            Ok(Some(response)) => response,
            Ok(None) => return Err("the watch stream ended".into()),
            Err(err) => {
                self.client.forget(cursor.epoch);
                return Err(format!("the watch stream failed: {err}"));
            }
        };
        if response.compact_revision() > 0 {
            return Err(format!(
                "revision {} was compacted (now {})",
                cursor.revision + 1,
                response.compact_revision()
            ));
        }
        if response.canceled() {
            return Err(format!(
                "etcd cancelled the watch: {}",
                response.cancel_reason()
            ));
        }
        let prefix = wire::service_prefix(&self.config.prefix, service);
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            cursor.revision = cursor.revision.max(kv.mod_revision());
            let decoded = match event.event_type() {
                EventType::Put => decode(&prefix, kv),
                EventType::Delete => None,
            };
            match decoded {
                Some((key, instance)) => {
                    entries.insert(key, instance);
                }
                // Deleted, or now unreadable: the key reads as gone.
                None => {
                    if let Ok(key) = std::str::from_utf8(kv.key()) {
                        entries.remove(key);
                    }
                }
            }
        }
        Ok(Step::Applied)
    }

    fn backoff(&self) -> Backoff {
        self.config.backoff.clone()
    }

    async fn read(&self, service: &str) -> Result<Entries, DiscoveryError> {
        self.list(service)
            .await
            .map(|(entries, _)| entries)
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
impl Discovery for EtcdDiscovery {
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
    fn range_end_covers_exactly_the_prefix() {
        assert_eq!(
            range_end(b"kitex/registry-etcd/echo/"),
            b"kitex/registry-etcd/echo0"
        );
        assert_eq!(range_end(b"a\xff"), b"b");
        assert_eq!(range_end(b"\xff\xff"), b"\0");
        assert_eq!(successor(b"k/1"), b"k/1\0");
    }

    #[test]
    fn instance_keys_end_in_host_and_port() {
        for good in ["127.0.0.1:80", "[fd00::1]:8080", "host-a:9", "fd00::1:8080"] {
            assert!(has_port(good), "{good}");
        }
        for bad in [
            "127.0.0.1",
            "host:",
            ":80",
            "127.0.0.1:http",
            "127.0.0.1:70000",
            "",
        ] {
            assert!(!has_port(bad), "{bad}");
        }
    }
}

//! [`MergedDiscovery`]: one [`Discovery`] over several registries at once, for a migration from
//! one registry to another or for one registry per datacenter.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::{self, BoxFuture};
use futures_util::stream::{self, BoxStream, FuturesUnordered, SelectAll};
use futures_util::{FutureExt, StreamExt};
use tracing::Instrument;

use crate::backoff::Backoff;
use crate::discovery::latest::{self, Publisher};
use crate::discovery::{Discovery, DiscoveryError, Instances, WatchStream};
use crate::registry::shared;

/// How long [`MergedDiscovery::watch`] waits for the other sources once one has started.
/// Measured on loopback: a fresh etcd or ZooKeeper discovery starts a watch and reads its
/// snapshot within tens of milliseconds (see `tests/tests/merged_discovery.rs`).
const JOIN_GRACE: Duration = Duration::from_millis(250);

/// One named source.
#[derive(Clone)]
struct Source {
    name: Arc<str>,
    discovery: Arc<dyn Discovery>,
}

/// The instances of a service in several registries at once, as one [`Discovery`].
///
/// For the client side of a migration (services moving from etcd to ZooKeeper) or of several
/// datacenters with a registry each: clients see the union of what every source lists, one
/// instance per address, so an instance registered in two registries appears once.
///
/// **Precedence.** When sources disagree on the data of one address (weight, tags, start time,
/// ...), the first source that lists it, in the order they were added, gives its data. Backends
/// do not record the same things (ZooKeeper keeps no warm-up or payload codec, and its start
/// time is the node's creation time), so the same instance can read differently from two
/// registries. In a migration, add the registry services move *to* first: an instance
/// registered in both reads as the new registry has it, and its removal from the old registry
/// changes nothing for clients.
///
/// **`resolve`** asks every source at once and waits for all of them (each backend bounds its
/// own calls). A source that fails is left out of that answer and logged (`warn`); its
/// addresses are missing unless another source lists them, and precedence passes to the next
/// source that does. When no source answers, the error
/// ([`DiscoveryError::AllSourcesFailed`]) names each source and its failure.
///
/// **`watch`** opens every source's watch at once and returns once every source has started or
/// failed, or 250 ms after the first one started, whichever comes first: a source that is slow
/// to answer (a server that accepts connections and never answers costs its client's connect
/// timeout, 5 s by default on etcd) holds up no one. Its first item is the merged snapshot of
/// the sources started by then; a source that starts later joins as a change. Then a
/// [`Change`](crate::Change) comes whenever the merged set changes, and nothing when a
/// source's change leaves it as it was (an instance added to one registry that another, earlier
/// source already lists with the same data, or removed from one while an earlier source still
/// lists it). A source whose watch cannot start is logged (`warn`) and opened again in the
/// background with the [`backoff`](Self::backoff) schedule until it starts; its instances then
/// join the merged set as a change. Only when no source's watch starts does `watch` fail. A
/// source whose watch stream ends (the backends here never end theirs) keeps its last instances
/// in the merged set and is watched again with the same schedule; the backends recover from
/// their own outages and keep their last known set meanwhile.
///
/// Like every watch, the merged one holds the latest state, never a history: a reader that
/// falls behind gets one change from what it last saw to the current merged set. Dropping the
/// stream ends its task, every source watch it holds and any retry in progress. A source that
/// panics counts as failed, and only that source.
///
/// Cheap to clone; clones share the sources.
///
/// ```
/// use futures_util::StreamExt;
/// use service_registry::{Discovery, Info, MemoryRegistry, MergedDiscovery, Registry};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let old = MemoryRegistry::new(); // the registry services leave, etcd say
/// let new = MemoryRegistry::new(); // the one they move to, ZooKeeper say
/// let merged = MergedDiscovery::new()
///     .source("zookeeper", new.clone())
///     .source("etcd", old.clone());
///
/// let a = Info::new("echo", "127.0.0.1:7001".parse()?);
/// let b = Info::new("echo", "127.0.0.1:7002".parse()?);
/// old.register(&a).await?;
/// new.register(&a).await?;
/// new.register(&b).await?;
/// assert_eq!(merged.resolve("echo").await?.len(), 2); // `a` once
///
/// let mut watch = merged.watch("echo").await?;
/// assert_eq!(watch.next().await.unwrap().all.len(), 2); // the merged snapshot
/// old.deregister(&a).await?; // still in the new registry: no change
/// new.deregister(&a).await?; // gone from both
/// let change = watch.next().await.unwrap();
/// assert_eq!(change.removed[0].addr, a.addr);
/// assert_eq!(change.all.len(), 1);
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct MergedDiscovery {
    sources: Vec<Source>,
    backoff: Backoff,
}

impl std::fmt::Debug for MergedDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.sources.iter().map(|s| &*s.name).collect();
        f.debug_struct("MergedDiscovery")
            .field("sources", &names)
            .field("backoff", &self.backoff)
            .finish()
    }
}

impl MergedDiscovery {
    /// A discovery with no source yet; add them with [`source`](Self::source).
    ///
    /// ```
    /// use service_registry::{Discovery, MergedDiscovery};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let err = MergedDiscovery::new().resolve("echo").await.unwrap_err();
    /// assert!(err.to_string().contains("no source"));
    /// # }
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a source: any [`Discovery`], an `Arc<dyn Discovery>` included. Sources added
    /// earlier take precedence when two list one address with different data. `name` appears
    /// in logs and errors; give each source its own.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use service_registry::{Discovery, MemoryRegistry, MergedDiscovery};
    ///
    /// let shared: Arc<dyn Discovery> = Arc::new(MemoryRegistry::new());
    /// let merged = MergedDiscovery::new()
    ///     .source("dc-east", MemoryRegistry::new())
    ///     .source("dc-west", shared);
    /// assert!(format!("{merged:?}").contains("dc-west"));
    /// ```
    pub fn source(mut self, name: impl Into<String>, discovery: impl Discovery) -> Self {
        self.sources.push(Source {
            name: Arc::from(name.into()),
            discovery: Arc::new(discovery),
        });
        self
    }

    /// How often a watch opens again a source whose watch could not start or ended (default
    /// [`Backoff::default`]: 200 ms doubling up to 30 s).
    ///
    /// ```
    /// use std::time::Duration;
    /// use service_registry::{Backoff, MergedDiscovery};
    ///
    /// let merged = MergedDiscovery::new()
    ///     .backoff(Backoff::new(Duration::from_millis(50), Duration::from_secs(5)));
    /// # let _ = merged;
    /// ```
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    fn no_source_answered(
        &self,
        operation: &'static str,
        service: &str,
        failures: Vec<(usize, DiscoveryError)>,
    ) -> DiscoveryError {
        DiscoveryError::AllSourcesFailed {
            operation,
            service: service.to_string(),
            failures: failures
                .into_iter()
                .map(|(i, err)| (self.sources[i].name.to_string(), err))
                .collect(),
        }
    }
}

/// The union of `sets`, one instance per address, sorted by address: the first set that lists
/// an address gives its data.
fn merge<'a>(sets: impl IntoIterator<Item = &'a Instances>) -> Instances {
    let mut sets = sets.into_iter();
    // Built on the first set, so it shares that set's structure.
    let mut merged = sets.next().cloned().unwrap_or_default();
    for set in sets {
        for instance in set.shared() {
            if !merged.contains(&instance.addr) {
                merged.insert(Arc::clone(instance));
            }
        }
    }
    merged
}

/// A failure of `source` that the source itself did not report (a panic, a stream that ended
/// before its snapshot).
fn failed(source: &Source, service: &str, what: &str) -> DiscoveryError {
    DiscoveryError::Backend {
        backend: "merged",
        service: service.to_string(),
        source: shared(format!("source `{}` {what}", source.name)),
    }
}

/// `call` on `source`, with a panic read as its failure.
async fn guarded<T>(
    source: &Source,
    service: &str,
    call: impl Future<Output = Result<T, DiscoveryError>>,
) -> Result<T, DiscoveryError> {
    AssertUnwindSafe(call)
        .catch_unwind()
        .await
        .unwrap_or_else(|_| Err(failed(source, service, "panicked")))
}

/// A started source watch and the instances of its snapshot.
type Opened = (WatchStream, Instances);

/// Opens the watch of `source` and reads its snapshot.
async fn open(source: Source, service: String) -> Result<Opened, DiscoveryError> {
    let mut changes = guarded(&source, &service, source.discovery.watch(&service)).await?;
    match AssertUnwindSafe(changes.next()).catch_unwind().await {
        Ok(Some(snapshot)) => Ok((changes, snapshot.all)),
        Ok(None) => Err(failed(
            &source,
            &service,
            "ended its watch before the first snapshot",
        )),
        Err(_) => Err(failed(&source, &service, "panicked")),
    }
}

/// An event of source `index`: its latest set, or `None` when its watch ended.
type Event = (usize, Option<Instances>);

/// The changes of source `index` as events, a panic ending them like the end of the stream.
fn events(index: usize, source: &Source, changes: WatchStream) -> BoxStream<'static, Event> {
    let name = source.name.clone();
    AssertUnwindSafe(changes)
        .catch_unwind()
        .filter_map(move |change| {
            future::ready(match change {
                Ok(change) => Some((index, Some(change.all))),
                Err(_) => {
                    tracing::error!(source = %name, "the source's watch panicked");
                    None
                }
            })
        })
        .chain(stream::once(future::ready((index, None))))
        .boxed()
}

/// The state of one merged watch, owned by its task.
struct Follow {
    service: String,
    sources: Vec<Source>,
    /// The latest set of each source, by index; `None` until its watch first starts.
    sets: Vec<Option<Instances>>,
    /// The retry schedule of each source.
    backoffs: Vec<Backoff>,
    /// The started source watches.
    streams: SelectAll<BoxStream<'static, Event>>,
    /// Sources being opened again, after a delay.
    retries: FuturesUnordered<BoxFuture<'static, (usize, Result<Opened, DiscoveryError>)>>,
}

enum Step {
    Source(Event),
    Reopened(usize, Result<Opened, DiscoveryError>),
}

impl Follow {
    fn new(service: &str, sources: &[Source], backoff: &Backoff) -> Self {
        Self {
            service: service.to_string(),
            sources: sources.to_vec(),
            sets: vec![None; sources.len()],
            backoffs: vec![backoff.clone(); sources.len()],
            streams: SelectAll::new(),
            retries: FuturesUnordered::new(),
        }
    }

    fn started(&mut self, index: usize, (changes, all): Opened) {
        self.sets[index] = Some(all);
        self.streams
            .push(events(index, &self.sources[index], changes));
    }

    fn merged(&self) -> Instances {
        merge(self.sets.iter().flatten())
    }

    /// Opens source `index` again after its next backoff delay.
    fn retry(&mut self, index: usize) {
        let delay = self.backoffs[index].next_delay();
        tracing::debug!(source = %self.sources[index].name, retry_in = ?delay, "watching the source again later");
        let source = self.sources[index].clone();
        let service = self.service.clone();
        self.retries.push(
            async move {
                tokio::time::sleep(delay).await;
                (index, open(source, service).await)
            }
            .boxed(),
        );
    }

    /// Follows the sources until every consumer of `publisher` is gone.
    async fn run(mut self, publisher: Publisher) {
        loop {
            let step = tokio::select! {
                () = publisher.closed() => return,
                Some(event) = self.streams.next(), if !self.streams.is_empty() => Step::Source(event),
                Some((index, opened)) = self.retries.next(), if !self.retries.is_empty() => {
                    Step::Reopened(index, opened)
                }
            };
            match step {
                Step::Source((index, Some(all))) => {
                    self.sets[index] = Some(all);
                    publisher.publish(self.merged());
                }
                Step::Source((index, None)) => {
                    tracing::warn!(
                        source = %self.sources[index].name,
                        "the source's watch ended; keeping its last instances and watching it again"
                    );
                    self.retry(index);
                }
                Step::Reopened(index, Ok(opened)) => {
                    tracing::info!(source = %self.sources[index].name, "watching the source");
                    self.backoffs[index].reset();
                    self.started(index, opened);
                    publisher.publish(self.merged());
                }
                Step::Reopened(index, Err(err)) => {
                    tracing::debug!(source = %self.sources[index].name, error = %err, "the source's watch still cannot start");
                    self.retry(index);
                }
            }
        }
    }
}

#[async_trait]
impl Discovery for MergedDiscovery {
    async fn resolve(&self, service: &str) -> Result<Instances, DiscoveryError> {
        let calls = self
            .sources
            .iter()
            .map(|source| guarded(source, service, source.discovery.resolve(service)));
        let mut answered = Vec::new();
        let mut failures = Vec::new();
        for (index, result) in future::join_all(calls).await.into_iter().enumerate() {
            match result {
                Ok(instances) => answered.push(instances),
                Err(err) => failures.push((index, err)),
            }
        }
        if answered.is_empty() {
            return Err(self.no_source_answered("resolve", service, failures));
        }
        for (index, err) in &failures {
            tracing::warn!(
                source = %self.sources[*index].name,
                service,
                error = %err,
                "a source of the merged discovery failed; answering from the others"
            );
        }
        Ok(merge(&answered))
    }

    async fn watch(&self, service: &str) -> Result<WatchStream, DiscoveryError> {
        let mut opening: FuturesUnordered<
            BoxFuture<'static, (usize, Result<Opened, DiscoveryError>)>,
        > = self
            .sources
            .iter()
            .enumerate()
            .map(|(index, source)| {
                let (source, service) = (source.clone(), service.to_string());
                async move { (index, open(source, service).await) }.boxed()
            })
            .collect();
        let mut follow = Follow::new(service, &self.sources, &self.backoff);
        let mut failures = Vec::new();
        // Until one source has started (or every one has failed): a source that is slow to
        // answer (a black-holed server costs its client's connect timeout) holds up no one.
        while let Some((index, opened)) = opening.next().await {
            match opened {
                Ok(opened) => {
                    follow.started(index, opened);
                    break;
                }
                Err(err) => failures.push((index, err)),
            }
        }
        // The others are part of the snapshot if they start within `JOIN_GRACE` of the first:
        // healthy registries answer within milliseconds, and a snapshot without one of them
        // would show an address both list with the data of the wrong one until it joins.
        if !follow.streams.is_empty() {
            let grace = tokio::time::sleep(JOIN_GRACE);
            tokio::pin!(grace);
            while !opening.is_empty() {
                tokio::select! {
                    () = &mut grace => break,
                    Some((index, opened)) = opening.next() => match opened {
                        Ok(opened) => follow.started(index, opened),
                        Err(err) => failures.push((index, err)),
                    },
                }
            }
        }
        failures.sort_by_key(|(index, _)| *index);
        if follow.streams.is_empty() {
            return Err(self.no_source_answered("watch", service, failures));
        }
        for (index, err) in failures {
            tracing::warn!(
                source = %self.sources[index].name,
                service,
                error = %err,
                "cannot watch a source of the merged discovery; following the others and retrying it"
            );
            follow.retry(index);
        }
        // The others join as a change once they start (or are retried if they fail).
        for pending in opening {
            follow.retries.push(pending);
        }
        let (publisher, changes) = latest::channel("merged", service, follow.merged());
        let span = tracing::info_span!("merged_watch", service);
        tokio::spawn(follow.run(publisher).instrument(span));
        Ok(changes)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::sync::Notify;

    use super::*;
    use crate::discovery::Change;
    use crate::{Info, Instance, MemoryRegistry, Registry};

    const SERVICE: &str = "svc";

    fn info(port: u16, weight: u32) -> Info {
        let mut info = Info::new(SERVICE, SocketAddr::from(([127, 0, 0, 1], port)));
        info.weight = weight;
        // The same instance in two registries: equal data unless the weight says otherwise.
        info.start_time = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        info
    }

    fn instance(info: &Info) -> Instance {
        Instance::from(info)
    }

    fn ports(instances: &Instances) -> Vec<u16> {
        instances.iter().map(|i| i.addr.port()).collect()
    }

    fn fast() -> Backoff {
        Backoff::new(Duration::from_millis(1), Duration::from_millis(10))
    }

    fn down(why: &str) -> DiscoveryError {
        DiscoveryError::Backend {
            backend: "test",
            service: SERVICE.into(),
            source: shared(why.to_string()),
        }
    }

    /// A registry that cannot be reached: every call fails with `why`.
    struct Down(&'static str);

    #[async_trait]
    impl Discovery for Down {
        async fn resolve(&self, _: &str) -> Result<Instances, DiscoveryError> {
            Err(down(self.0))
        }
        async fn watch(&self, _: &str) -> Result<WatchStream, DiscoveryError> {
            Err(down(self.0))
        }
    }

    /// A broken source: every call panics.
    struct Panics;

    #[async_trait]
    impl Discovery for Panics {
        async fn resolve(&self, _: &str) -> Result<Instances, DiscoveryError> {
            panic!("a broken source")
        }
        async fn watch(&self, _: &str) -> Result<WatchStream, DiscoveryError> {
            panic!("a broken source")
        }
    }

    /// Watches `inner`, once the first `failures` watch calls have failed.
    struct Flaky {
        inner: MemoryRegistry,
        failures: usize,
        calls: AtomicUsize,
    }

    #[async_trait]
    impl Discovery for Flaky {
        async fn resolve(&self, service: &str) -> Result<Instances, DiscoveryError> {
            self.inner.resolve(service).await
        }
        async fn watch(&self, service: &str) -> Result<WatchStream, DiscoveryError> {
            if self.calls.fetch_add(1, Ordering::SeqCst) < self.failures {
                return Err(down("not yet"));
            }
            self.inner.watch(service).await
        }
    }

    /// Its first watch fails; later ones hang, holding a clone of `in_flight` while they do.
    #[derive(Default)]
    struct Hangs {
        in_flight: Arc<()>,
        calls: AtomicUsize,
    }

    #[async_trait]
    impl Discovery for Hangs {
        async fn resolve(&self, _: &str) -> Result<Instances, DiscoveryError> {
            Err(down("hangs"))
        }
        async fn watch(&self, _: &str) -> Result<WatchStream, DiscoveryError> {
            if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(down("first call"));
            }
            let _held = self.in_flight.clone();
            future::pending().await
        }
    }

    /// Its first watch sends `first` and ends; the second waits for `release`, then sends
    /// `second` and stays open.
    struct EndsOnce {
        first: Vec<Instance>,
        second: Vec<Instance>,
        release: Notify,
        calls: AtomicUsize,
    }

    #[async_trait]
    impl Discovery for EndsOnce {
        async fn resolve(&self, _: &str) -> Result<Instances, DiscoveryError> {
            Ok(self.first.clone().into())
        }
        async fn watch(&self, service: &str) -> Result<WatchStream, DiscoveryError> {
            if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
                let snapshot = Change::snapshot(service, self.first.clone());
                return Ok(stream::iter([snapshot]).boxed());
            }
            self.release.notified().await;
            let snapshot = Change::snapshot(service, self.second.clone());
            Ok(stream::iter([snapshot]).chain(stream::pending()).boxed())
        }
    }

    /// Its watch waits for `release`, then watches `inner`.
    struct Slow {
        inner: MemoryRegistry,
        release: Notify,
    }

    #[async_trait]
    impl Discovery for Slow {
        async fn resolve(&self, service: &str) -> Result<Instances, DiscoveryError> {
            self.inner.resolve(service).await
        }
        async fn watch(&self, service: &str) -> Result<WatchStream, DiscoveryError> {
            self.release.notified().await;
            self.inner.watch(service).await
        }
    }

    /// The next item of `watch`, within 5 s.
    async fn next(watch: &mut WatchStream) -> Change {
        tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .expect("a change within 5 s")
            .expect("the watch is open")
    }

    /// Waits until `done`, for at most 5 s.
    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn only_added(change: &Change, added: &Info) {
        assert_eq!(change.added, vec![instance(added)]);
        assert!(
            change.updated.is_empty() && change.removed.is_empty(),
            "{change:?}"
        );
    }

    #[tokio::test]
    async fn resolve_lists_each_address_once_and_the_first_source_gives_its_data() {
        let (first, second) = (MemoryRegistry::new(), MemoryRegistry::new());
        first.register(&info(1, 10)).await.unwrap();
        first.register(&info(2, 10)).await.unwrap();
        second.register(&info(2, 20)).await.unwrap();
        second.register(&info(3, 20)).await.unwrap();
        second.register(&info(1, 10)).await.unwrap();

        let merged = MergedDiscovery::new()
            .source("first", first.clone())
            .source("second", second.clone());
        let found = merged.resolve(SERVICE).await.unwrap();
        assert_eq!(ports(&found), [1, 2, 3]);
        let weights: Vec<u32> = found.iter().map(|i| i.weight).collect();
        assert_eq!(weights, [10, 10, 20]);

        let reversed = MergedDiscovery::new()
            .source("second", second)
            .source("first", first);
        let found = reversed.resolve(SERVICE).await.unwrap();
        assert_eq!(ports(&found), [1, 2, 3]);
        assert_eq!(found[1].weight, 20);
    }

    #[tokio::test]
    async fn resolve_answers_from_the_sources_that_answer() {
        let memory = MemoryRegistry::new();
        memory.register(&info(1, 10)).await.unwrap();
        let merged = MergedDiscovery::new()
            .source("down", Down("connection refused"))
            .source("broken", Panics)
            .source("memory", memory);
        assert_eq!(ports(&merged.resolve(SERVICE).await.unwrap()), [1]);
    }

    #[tokio::test]
    async fn resolve_fails_naming_every_source_when_none_answers() {
        let merged = MergedDiscovery::new()
            .source("etcd", Down("connection refused"))
            .source("zookeeper", Panics);
        let err = merged.resolve(SERVICE).await.unwrap_err();
        let DiscoveryError::AllSourcesFailed {
            operation,
            service,
            failures,
        } = &err
        else {
            panic!("unexpected error: {err}");
        };
        assert_eq!((*operation, service.as_str()), ("resolve", SERVICE));
        let names: Vec<&str> = failures.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["etcd", "zookeeper"]);
        let message = err.to_string();
        assert!(
            message.contains("etcd: test discovery of `svc` failed: connection refused"),
            "{message}"
        );
        assert!(
            message.contains(
                "zookeeper: merged discovery of `svc` failed: source `zookeeper` panicked"
            ),
            "{message}"
        );
        assert!(message.contains("check that at least one"), "{message}");

        let none = MergedDiscovery::new().resolve(SERVICE).await.unwrap_err();
        assert!(none.to_string().contains("has no source"), "{none}");
    }

    #[tokio::test]
    async fn watch_sends_the_merged_snapshot_then_only_changes_of_the_merged_set() {
        let (first, second) = (MemoryRegistry::new(), MemoryRegistry::new());
        first.register(&info(1, 10)).await.unwrap();
        second.register(&info(2, 10)).await.unwrap();
        let merged = MergedDiscovery::new()
            .source("first", first.clone())
            .source("second", second.clone());
        let mut watch = merged.watch(SERVICE).await.unwrap();
        let snapshot = next(&mut watch).await;
        assert_eq!(
            snapshot,
            Change::snapshot(
                SERVICE,
                vec![instance(&info(1, 10)), instance(&info(2, 10))]
            )
        );

        // The second source adds what the first lists, or lists it with other data: no change.
        // (A later change of the same source shows these were seen: one source's states arrive
        // in order.)
        second.register(&info(1, 10)).await.unwrap();
        second.register(&info(1, 99)).await.unwrap();
        second.register(&info(3, 10)).await.unwrap();
        only_added(&next(&mut watch).await, &info(3, 10));

        // Gone from the first source, still in the second: its data now comes from there.
        first.deregister(&info(1, 10)).await.unwrap();
        let change = next(&mut watch).await;
        assert_eq!(change.updated, vec![instance(&info(1, 99))]);
        assert!(change.added.is_empty() && change.removed.is_empty());

        // The second source lists again what the first does: no change.
        first.register(&info(1, 99)).await.unwrap();
        first.register(&info(4, 10)).await.unwrap();
        only_added(&next(&mut watch).await, &info(4, 10));

        // Gone from one source: no change; from both: removed.
        first.deregister(&info(1, 99)).await.unwrap();
        first.register(&info(5, 10)).await.unwrap();
        only_added(&next(&mut watch).await, &info(5, 10));
        second.deregister(&info(1, 99)).await.unwrap();
        let change = next(&mut watch).await;
        assert_eq!(change.removed, vec![instance(&info(1, 99))]);
        assert!(change.added.is_empty() && change.updated.is_empty());
        assert_eq!(ports(&change.all), [2, 3, 4, 5]);
    }

    #[tokio::test]
    async fn a_reader_that_falls_behind_gets_the_latest_merged_set_once() {
        let (first, second) = (MemoryRegistry::new(), MemoryRegistry::new());
        let merged = MergedDiscovery::new()
            .source("first", first.clone())
            .source("second", second.clone());
        let mut watch = merged.watch(SERVICE).await.unwrap();
        for _ in 0..1000 {
            first.register(&info(1, 10)).await.unwrap();
            second.register(&info(2, 10)).await.unwrap();
            first.deregister(&info(1, 10)).await.unwrap();
            second.deregister(&info(2, 10)).await.unwrap();
        }
        second.register(&info(2, 10)).await.unwrap();
        assert!(next(&mut watch).await.all.is_empty()); // the snapshot, taken before
        only_added(&next(&mut watch).await, &info(2, 10));
        first.register(&info(3, 10)).await.unwrap();
        only_added(&next(&mut watch).await, &info(3, 10));
    }

    #[tokio::test]
    async fn watch_follows_the_others_and_retries_a_source_that_cannot_start() {
        let flaky = Arc::new(Flaky {
            inner: MemoryRegistry::new(),
            failures: 3,
            calls: AtomicUsize::new(0),
        });
        flaky.inner.register(&info(1, 10)).await.unwrap();
        let memory = MemoryRegistry::new();
        memory.register(&info(2, 10)).await.unwrap();
        let merged = MergedDiscovery::new()
            .source("flaky", flaky.clone() as Arc<dyn Discovery>)
            .source("memory", memory.clone())
            .backoff(fast());
        let mut watch = merged.watch(SERVICE).await.unwrap();
        assert_eq!(ports(&next(&mut watch).await.all), [2]);
        // Started after three failures, the flaky source's instances join.
        only_added(&next(&mut watch).await, &info(1, 10));
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 4);
        flaky.inner.register(&info(3, 10)).await.unwrap();
        only_added(&next(&mut watch).await, &info(3, 10));
    }

    #[tokio::test]
    async fn watch_returns_without_waiting_for_a_slow_source_which_joins_later() {
        let slow = Arc::new(Slow {
            inner: MemoryRegistry::new(),
            release: Notify::new(),
        });
        slow.inner.register(&info(1, 10)).await.unwrap();
        let memory = MemoryRegistry::new();
        memory.register(&info(2, 10)).await.unwrap();
        let merged = MergedDiscovery::new()
            .source("slow", slow.clone() as Arc<dyn Discovery>)
            .source("memory", memory)
            .backoff(fast());
        let mut watch = tokio::time::timeout(Duration::from_secs(5), merged.watch(SERVICE))
            .await
            .expect("the watch returns while the slow source has not answered")
            .unwrap();
        assert_eq!(ports(&next(&mut watch).await.all), [2]);
        slow.release.notify_one();
        only_added(&next(&mut watch).await, &info(1, 10));
    }

    #[tokio::test]
    async fn watch_fails_when_no_source_can_start() {
        let merged = MergedDiscovery::new()
            .source("etcd", Down("connection refused"))
            .source("zookeeper", Panics);
        let err = match merged.watch(SERVICE).await {
            Ok(_) => panic!("a watch with no source started"),
            Err(err) => err,
        };
        assert!(
            matches!(&err, DiscoveryError::AllSourcesFailed { operation: "watch", failures, .. } if failures.len() == 2),
            "{err}"
        );
        assert!(err
            .to_string()
            .starts_with("cannot watch `svc` from any source: etcd: "));
        assert!(MergedDiscovery::new().watch(SERVICE).await.is_err());
    }

    #[tokio::test]
    async fn a_source_whose_watch_ends_keeps_its_instances_until_it_is_watched_again() {
        let ends = Arc::new(EndsOnce {
            first: vec![instance(&info(1, 10))],
            second: vec![instance(&info(2, 10))],
            release: Notify::new(),
            calls: AtomicUsize::new(0),
        });
        let merged = MergedDiscovery::new()
            .source("ends", ends.clone() as Arc<dyn Discovery>)
            .backoff(fast());
        let mut watch = merged.watch(SERVICE).await.unwrap();
        assert_eq!(ports(&next(&mut watch).await.all), [1]);
        // The watch ended and is being opened again: its instance stays meanwhile.
        until("the source to be watched again", || {
            ends.calls.load(Ordering::SeqCst) == 2
        })
        .await;
        assert!(watch.next().now_or_never().is_none());
        ends.release.notify_one();
        let change = next(&mut watch).await;
        assert_eq!(ports(&change.added), [2]);
        assert_eq!(ports(&change.removed), [1]);
    }

    #[tokio::test]
    async fn dropping_the_watch_ends_every_source_watch_and_retry() {
        let memory = MemoryRegistry::new();
        let hangs = Arc::new(Hangs::default());
        let merged = MergedDiscovery::new()
            .source("memory", memory.clone())
            .source("hangs", hangs.clone() as Arc<dyn Discovery>)
            .backoff(fast());
        let mut watch = merged.watch(SERVICE).await.unwrap();
        next(&mut watch).await;
        assert_eq!(memory.watch_channels(), 1);
        until("a retry of the hanging source", || {
            Arc::strong_count(&hangs.in_flight) == 2
        })
        .await;

        drop(watch);
        until("the retry to be dropped", || {
            Arc::strong_count(&hangs.in_flight) == 1
        })
        .await;
        // The task is gone, and the memory source's stream with it: the memory registry drops
        // a channel whose watchers are all gone on the service's next change.
        memory.register(&info(9, 10)).await.unwrap();
        assert_eq!(memory.watch_channels(), 0);
        assert_eq!(hangs.calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn merge_keeps_the_first_data_of_each_address_in_address_order() {
        let a: Instances = [instance(&info(3, 1)), instance(&info(1, 1))].into();
        let b: Instances = [instance(&info(2, 2)), instance(&info(3, 2))].into();
        let merged = merge([&a, &b]);
        assert_eq!(ports(&merged), [1, 2, 3]);
        assert_eq!(merged[2].weight, 1);
        assert!(merge(std::iter::empty()).is_empty());
    }
}

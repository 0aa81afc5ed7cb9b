//! What every [`Discovery::watch`](crate::Discovery::watch) shares: a channel that holds the
//! latest instance set (never a history), the task that follows a service for one watcher and
//! ends as soon as that watcher is gone, and a client connection that concurrent callers share.
//!
//! The producer [`publish`](Publisher::publish)es the whole current set; the consumer stream,
//! when polled, yields the [`Change`] from what it last delivered to the latest set (the first
//! item is a [`Change::snapshot`]), or nothing when the two are equal. A slow consumer therefore
//! skips intermediate states instead of queueing them, and each watcher costs two copies of the
//! current set at most.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;
use tokio::sync::watch;

use crate::discovery::{diff_instances, Change, Instance, WatchStream};

/// The shared state: the latest set, behind an `Arc` so consumers clone a pointer.
pub(crate) type Latest = Arc<Vec<Instance>>;

/// The producer side of a latest-state channel. Dropping it ends every consumer stream (after
/// the last state is delivered).
#[derive(Debug)]
pub(crate) struct Publisher {
    backend: &'static str,
    service: String,
    tx: watch::Sender<Latest>,
}

/// A latest-state channel for `service`, starting at `initial`, and its first consumer.
/// `backend` labels its metrics (`service_registry_watch_events_total`,
/// `service_registry_watched_instances`).
pub(crate) fn channel(
    backend: &'static str,
    service: &str,
    initial: Vec<Instance>,
) -> (Publisher, WatchStream) {
    crate::metrics::watch_state(backend, service, initial.len(), true);
    let (tx, rx) = watch::channel(Arc::new(sorted(initial)));
    let publisher = Publisher {
        backend,
        service: service.to_string(),
        tx,
    };
    let stream = Box::pin(Changes::new(service, rx));
    (publisher, stream)
}

fn sorted(mut instances: Vec<Instance>) -> Vec<Instance> {
    instances.sort_by_key(|i| i.addr);
    instances
}

impl Publisher {
    /// Makes `instances` the latest set; consumers are woken only when it differs.
    pub(crate) fn publish(&self, instances: Vec<Instance>) {
        let instances = sorted(instances);
        let count = instances.len();
        let changed = self.tx.send_if_modified(|latest| {
            if **latest == instances {
                return false;
            }
            *latest = Arc::new(instances);
            true
        });
        if changed {
            crate::metrics::watch_state(self.backend, &self.service, count, true);
        }
    }

    /// The channel's sender, for the resolve cache to read the latest set from. It keeps no
    /// consumer stream open: the cache entry holding it goes with the task that publishes.
    #[cfg_attr(not(any(feature = "etcd", feature = "zookeeper")), allow(dead_code))]
    pub(crate) fn sender(&self) -> watch::Sender<Latest> {
        self.tx.clone()
    }

    /// Another consumer, whose first item is the latest set as a snapshot.
    pub(crate) fn subscribe(&self) -> WatchStream {
        Box::pin(Changes::new(&self.service, self.tx.subscribe()))
    }

    /// Completes once every consumer stream has been dropped.
    pub(crate) async fn closed(&self) {
        self.tx.closed().await;
    }

    /// True when every consumer stream has been dropped.
    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// The consumer side: yields the difference between what it delivered and the latest set.
struct Changes {
    service: String,
    latest: tokio_stream::wrappers::WatchStream<Latest>,
    /// What this consumer delivered last; `None` before the snapshot.
    delivered: Option<Latest>,
}

impl Changes {
    fn new(service: &str, rx: watch::Receiver<Latest>) -> Self {
        Self {
            service: service.to_string(),
            // Yields the current value at once (the snapshot), then each newer one.
            latest: tokio_stream::wrappers::WatchStream::new(rx),
            delivered: None,
        }
    }
}

impl Stream for Changes {
    type Item = Change;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Change>> {
        let this = &mut *self;
        loop {
            let latest = match Pin::new(&mut this.latest).poll_next(cx) {
                Poll::Ready(Some(latest)) => latest,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            };
            let change = match &this.delivered {
                None => Some(Change::snapshot(&this.service, latest.to_vec())),
                Some(delivered) => diff_instances(&this.service, delivered, &latest),
            };
            this.delivered = Some(latest);
            if let Some(change) = change {
                return Poll::Ready(Some(change));
            }
        }
    }
}

#[cfg(any(feature = "etcd", feature = "zookeeper", feature = "nacos"))]
pub(crate) use self::remote::*;

/// The parts only network backends need.
#[cfg(any(feature = "etcd", feature = "zookeeper", feature = "nacos"))]
mod remote {
    use std::collections::BTreeMap;
    use std::future::Future;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex, MutexGuard};

    use async_trait::async_trait;
    use futures_util::future::{BoxFuture, FutureExt, Shared};

    use super::{channel, Publisher};
    use crate::backends::cache::{Entry, WatchCache};
    use crate::backoff::Backoff;
    use crate::discovery::{DiscoveryError, Instance, WatchStream};
    use crate::registry::RegistryError;

    /// What a backend read for one service: instances by registry key (etcd key, ZooKeeper node
    /// name). Two keys may name the same address; [`by_addr`] makes them one instance.
    pub(crate) type Entries = BTreeMap<String, Instance>;

    /// One instance per address. When several keys hold the same address, the key that spells
    /// the address exactly wins, then the smallest key; removing one of them leaves the address
    /// in place as long as another key still holds it.
    pub(crate) fn by_addr(entries: &Entries) -> Vec<Instance> {
        let mut chosen: BTreeMap<SocketAddr, (&str, &Instance)> = BTreeMap::new();
        for (key, instance) in entries {
            let exact = |k: &str| k.ends_with(&instance.addr.to_string());
            match chosen.get(&instance.addr) {
                Some((kept, _)) if exact(kept) || !exact(key) => {}
                _ => {
                    chosen.insert(instance.addr, (key, instance));
                }
            }
        }
        chosen.into_values().map(|(_, i)| i.clone()).collect()
    }

    /// What one [`Source::next`] did.
    #[derive(Debug, PartialEq, Eq)]
    pub(crate) enum Step {
        /// Applied an event (or a fresh listing) to the entries: they are current.
        Applied,
        /// The connection dropped; the watch may resume, but events may be missed meanwhile
        /// (the entries are not current until the next `Applied`).
        #[cfg_attr(not(feature = "zookeeper"), allow(dead_code))]
        Disconnected,
    }

    /// A backend's way of following one service.
    #[async_trait]
    pub(crate) trait Source: Clone + Send + Sync + 'static {
        /// A live watch on one service; dropping it closes the watch on the server.
        type Cursor: Send;

        /// Opens a watch on `service` and lists it, ordered so that no change falls between.
        async fn open(&self, service: &str) -> Result<(Self::Cursor, Entries), DiscoveryError>;

        /// Waits for the next event and applies it to `entries`; `Err` (why) when the watch is
        /// broken and must be opened again.
        async fn next(
            &self,
            service: &str,
            cursor: &mut Self::Cursor,
            entries: &mut Entries,
        ) -> Result<Step, String>;

        /// The discovery's resolve cache, which the watches of this source keep current.
        fn cache(&self) -> &WatchCache;

        /// The retry schedule for opening the watch again.
        fn backoff(&self) -> Backoff;

        /// `etcd`, `zookeeper`: the `backend` label of the watch metrics.
        const BACKEND: &'static str;
    }

    /// Opens a watch through `source` (errors are the caller's), then follows it in a task that
    /// ends as soon as the returned stream is dropped.
    pub(crate) async fn watch<S: Source>(
        source: &S,
        service: &str,
    ) -> Result<WatchStream, DiscoveryError> {
        let (cursor, entries) = source.open(service).await?;
        let (publisher, stream) = channel(S::BACKEND, service, by_addr(&entries));
        let cached = source.cache().follow(service, publisher.sender());
        cached.in_sync();
        let span = tracing::info_span!("watch", backend = S::BACKEND, service);
        tokio::spawn(tracing::Instrument::instrument(
            follow(
                source.clone(),
                service.to_string(),
                cursor,
                entries,
                publisher,
                cached,
            ),
            span,
        ));
        Ok(stream)
    }

    async fn follow<S: Source>(
        source: S,
        service: String,
        mut cursor: S::Cursor,
        mut entries: Entries,
        publisher: Publisher,
        cached: Arc<Entry>,
    ) {
        let mut backoff = source.backoff();
        loop {
            let cause = loop {
                tokio::select! {
                    () = publisher.closed() => return,
                    step = source.next(&service, &mut cursor, &mut entries) => match step {
                        Ok(Step::Applied) => {
                            publisher.publish(by_addr(&entries));
                            cached.in_sync();
                        }
                        Ok(Step::Disconnected) => cached.broken(),
                        Err(cause) => break cause,
                    },
                }
            };
            cached.broken();
            tracing::warn!(service, %cause, "watch broken; listing again");
            // Close the broken watch now, not once the next one is open.
            drop(cursor);
            loop {
                let delay = backoff.next_delay();
                tokio::select! {
                    () = publisher.closed() => return,
                    () = tokio::time::sleep(delay) => {}
                }
                let opened = tokio::select! {
                    () = publisher.closed() => return,
                    opened = source.open(&service) => opened,
                };
                match opened {
                    Ok((opened, listed)) => {
                        cursor = opened;
                        entries = listed;
                        publisher.publish(by_addr(&entries));
                        cached.in_sync();
                        backoff.reset();
                        break;
                    }
                    Err(err @ DiscoveryError::Unsupported { .. }) => {
                        tracing::error!(service, error = %err, "cannot watch again; retrying");
                    }
                    Err(err) => tracing::debug!(service, error = %err, "listing failed; retrying"),
                }
            }
        }
    }

    type Connecting<C> = Shared<BoxFuture<'static, Result<C, Arc<RegistryError>>>>;

    enum Slot<C> {
        Empty,
        Connecting { epoch: u64, done: Connecting<C> },
        Ready { epoch: u64, client: C },
    }

    struct Inner<C> {
        slot: Slot<C>,
        epochs: u64,
    }

    /// A client connection shared by every call of one discovery: concurrent callers share one
    /// connect in flight, which runs in its own task, so none waits longer than that one
    /// connect, and a caller that gives up does not stall the others.
    pub(crate) struct SharedClient<C> {
        inner: Arc<Mutex<Inner<C>>>,
    }

    impl<C> Clone for SharedClient<C> {
        fn clone(&self) -> Self {
            Self {
                inner: self.inner.clone(),
            }
        }
    }

    impl<C> Default for SharedClient<C> {
        fn default() -> Self {
            Self {
                inner: Arc::new(Mutex::new(Inner {
                    slot: Slot::Empty,
                    epochs: 0,
                })),
            }
        }
    }

    fn lock<C>(inner: &Mutex<Inner<C>>) -> MutexGuard<'_, Inner<C>> {
        // Every update is one assignment: a poisoned lock is still consistent.
        inner.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    impl<C: Clone + Send + Sync + 'static> SharedClient<C> {
        /// The connected client and its epoch (for [`forget`](Self::forget)): the cached one
        /// when `usable`, else the result of the connect in flight, else of a new `connect`.
        pub(crate) async fn get<F>(
            &self,
            usable: impl Fn(&C) -> bool,
            connect: impl FnOnce() -> F,
        ) -> Result<(C, u64), RegistryError>
        where
            F: Future<Output = Result<C, RegistryError>> + Send + 'static,
        {
            let (epoch, done) = {
                let mut inner = lock(&self.inner);
                match &inner.slot {
                    Slot::Ready { epoch, client } if usable(client) => {
                        return Ok((client.clone(), *epoch));
                    }
                    Slot::Connecting { epoch, done } => (*epoch, done.clone()),
                    _ => {
                        inner.epochs += 1;
                        let epoch = inner.epochs;
                        let done = self.spawn_connect(epoch, connect());
                        inner.slot = Slot::Connecting {
                            epoch,
                            done: done.clone(),
                        };
                        (epoch, done)
                    }
                }
            };
            match done.await {
                Ok(client) => Ok((client, epoch)),
                Err(err) => Err(RegistryError::clone(&err)),
            }
        }

        fn spawn_connect(
            &self,
            epoch: u64,
            connect: impl Future<Output = Result<C, RegistryError>> + Send + 'static,
        ) -> Connecting<C> {
            let shared = self.inner.clone();
            let task = tokio::spawn(async move {
                let result = connect.await.map_err(Arc::new);
                let mut inner = lock(&shared);
                if matches!(inner.slot, Slot::Connecting { epoch: e, .. } if e == epoch) {
                    inner.slot = match &result {
                        Ok(client) => Slot::Ready {
                            epoch,
                            client: client.clone(),
                        },
                        Err(_) => Slot::Empty,
                    };
                }
                result
            });
            async move {
                task.await.unwrap_or_else(|err| {
                    Err(Arc::new(RegistryError::Backend {
                        backend: "discovery",
                        source: crate::registry::shared(format!("the connect task failed: {err}")),
                    }))
                })
            }
            .boxed()
            .shared()
        }

        /// Drops the client of `epoch` (it failed), so the next call connects again; a newer
        /// client is kept. (A ZooKeeper client reconnects by itself; only its end counts, which
        /// `usable` sees.)
        #[cfg_attr(not(any(feature = "etcd", feature = "nacos")), allow(dead_code))]
        pub(crate) fn forget(&self, epoch: u64) {
            let mut inner = lock(&self.inner);
            if matches!(inner.slot, Slot::Ready { epoch: e, .. } if e == epoch) {
                inner.slot = Slot::Empty;
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::time::Duration;

        use super::*;
        use crate::Info;

        fn instance(port: u16, weight: u32) -> Instance {
            let mut info = Info::new("s", ([127, 0, 0, 1], port).into());
            info.weight = weight;
            Instance::from(&info)
        }

        #[test]
        fn one_instance_per_address_and_the_exact_key_wins() {
            let mut entries = Entries::new();
            entries.insert("p/s/127.0.0.1:0080".into(), instance(80, 1));
            entries.insert("p/s/127.0.0.1:80".into(), instance(80, 2));
            entries.insert("p/s/host-a:80".into(), instance(80, 3));
            entries.insert("p/s/127.0.0.1:81".into(), instance(81, 4));
            let all = by_addr(&entries);
            assert_eq!(all.len(), 2);
            assert_eq!(all[0].weight, 2);
            entries.remove("p/s/127.0.0.1:80");
            // Neither spells the address: the smallest key.
            assert_eq!(by_addr(&entries)[0].weight, 1);
        }

        fn unavailable() -> RegistryError {
            RegistryError::Unavailable {
                backend: "test",
                endpoint: "nowhere".into(),
                source: crate::registry::shared("no"),
            }
        }

        #[tokio::test(start_paused = true)]
        async fn concurrent_callers_share_one_connect() {
            let client: SharedClient<u32> = SharedClient::default();
            let connects = Arc::new(AtomicUsize::new(0));
            let calls = (0..8).map(|_| {
                let client = client.clone();
                let connects = connects.clone();
                tokio::spawn(async move {
                    client
                        .get(
                            |_| true,
                            move || async move {
                                connects.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_secs(1)).await;
                                Err::<u32, _>(unavailable())
                            },
                        )
                        .await
                })
            });
            let started = tokio::time::Instant::now();
            for result in futures_util::future::join_all(calls).await {
                assert!(result.unwrap().is_err());
            }
            assert_eq!(connects.load(Ordering::SeqCst), 1);
            assert_eq!(started.elapsed(), Duration::from_secs(1));

            // The failure is not cached: the next call connects again, and keeps the client.
            let (value, epoch) = client.get(|_| true, || async { Ok(7) }).await.unwrap();
            assert_eq!(value, 7);
            let (again, _) = client.get(|_| true, || async { Ok(8) }).await.unwrap();
            assert_eq!(again, 7);
            // A client that is no longer usable, or forgotten, is replaced.
            let (fresh, _) = client.get(|c| *c != 7, || async { Ok(9) }).await.unwrap();
            assert_eq!(fresh, 9);
            client.forget(epoch); // an older epoch: kept
            assert_eq!(
                client.get(|_| true, || async { Ok(10) }).await.unwrap().0,
                9
            );
        }

        #[tokio::test(start_paused = true)]
        async fn a_caller_that_gives_up_does_not_stall_the_connect() {
            let client: SharedClient<u32> = SharedClient::default();
            let slow = || async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok(5)
            };
            let gave_up =
                tokio::time::timeout(Duration::from_millis(100), client.get(|_| true, slow)).await;
            assert!(gave_up.is_err());
            tokio::time::sleep(Duration::from_secs(2)).await;
            let started = tokio::time::Instant::now();
            let (value, _) = client.get(|_| true, || async { Ok(6) }).await.unwrap();
            assert_eq!((value, started.elapsed()), (5, Duration::ZERO));
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::{FutureExt, StreamExt};

    use super::*;
    use crate::Info;

    fn instance(port: u16) -> Instance {
        let mut instance = Instance::from(&Info::new("s", ([127, 0, 0, 1], port).into()));
        instance.start_time = None;
        instance
    }

    #[tokio::test]
    async fn a_slow_reader_gets_the_difference_to_the_latest_set() {
        let (publisher, mut stream) = channel("test", "s", vec![instance(1)]);
        for round in 0..1000 {
            if round % 2 == 0 {
                publisher.publish(vec![instance(1), instance(2)]);
            } else {
                publisher.publish(vec![instance(1)]);
            }
        }
        publisher.publish(vec![instance(3), instance(1)]);
        let first = stream.next().await.unwrap();
        assert_eq!(first, Change::snapshot("s", vec![instance(1), instance(3)]));
        assert!(stream.next().now_or_never().is_none());

        // Back and forth between reads: nothing to report.
        publisher.publish(vec![instance(1)]);
        publisher.publish(vec![instance(1), instance(3)]);
        assert!(stream.next().now_or_never().is_none());

        publisher.publish(vec![instance(3)]);
        let change = stream.next().await.unwrap();
        assert_eq!(change.removed, vec![instance(1)]);
        assert_eq!(change.all, vec![instance(3)]);
    }

    #[tokio::test]
    async fn closed_completes_when_every_stream_is_dropped() {
        let (publisher, stream) = channel("test", "s", Vec::new());
        let second = publisher.subscribe();
        drop(stream);
        assert!(!publisher.is_closed());
        drop(second);
        assert!(publisher.is_closed());
        publisher.closed().now_or_never().expect("closed at once");
    }

    #[tokio::test]
    async fn the_stream_ends_after_the_last_state_when_the_publisher_goes() {
        let (publisher, mut stream) = channel("test", "s", Vec::new());
        publisher.publish(vec![instance(1)]);
        drop(publisher);
        assert_eq!(stream.next().await.unwrap().all, vec![instance(1)]);
        assert!(stream.next().await.is_none());
    }
}

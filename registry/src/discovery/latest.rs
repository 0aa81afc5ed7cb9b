//! The latest-state channel every [`Discovery::watch`](crate::Discovery::watch) is built on
//! (the memory registry, [`MergedDiscovery`](crate::MergedDiscovery) and each network backend):
//! a channel that holds the latest instance set, never a history.
//!
//! The producer [`publish`](Publisher::publish)es the whole current set, or
//! [`apply`](Publisher::apply)s what changed to it; the consumer stream, when polled, yields the
//! [`Change`] from what it last delivered to the latest set (the first item is a
//! [`Change::snapshot`]), or nothing when the two are equal. A slow consumer therefore skips
//! intermediate states instead of queueing them. The sets are [`Instances`]: versions share
//! what they have in common, so an event costs `O(log n)` to publish and to deliver, and a
//! watcher holds at most two versions of the set.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;
use tokio::sync::watch;

use crate::discovery::{diff_instances, Change, Instance, Instances, WatchStream};

/// The shared state: the latest set (a clone shares it).
pub(crate) type Latest = Instances;

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
    initial: impl Into<Instances>,
) -> (Publisher, WatchStream) {
    let initial = initial.into();
    crate::metrics::watch_state(backend, service, initial.len(), true);
    let (tx, rx) = watch::channel(initial);
    let publisher = Publisher {
        backend,
        service: service.to_string(),
        tx,
    };
    let stream = Box::pin(Changes::new(service, rx));
    (publisher, stream)
}

impl Publisher {
    /// Makes `instances` the latest set; consumers are woken only when it differs.
    pub(crate) fn publish(&self, instances: impl Into<Instances>) {
        let instances = instances.into();
        let mut count = 0;
        let changed = self.tx.send_if_modified(|latest| {
            if latest.ptr_eq(&instances) || *latest == instances {
                return false;
            }
            count = instances.len();
            *latest = instances;
            true
        });
        if changed {
            crate::metrics::watch_state(self.backend, &self.service, count, true);
        }
    }

    /// Applies `updates` to the latest set: each address gets its new instance, or leaves
    /// (`None`). Costs `O(log n)` per update, not a copy of the set; consumers are woken only
    /// when something differs.
    #[cfg_attr(
        not(any(feature = "etcd", feature = "zookeeper", feature = "nacos")),
        allow(dead_code)
    )]
    pub(crate) fn apply(
        &self,
        updates: impl IntoIterator<Item = (std::net::SocketAddr, Option<Arc<Instance>>)>,
    ) {
        let mut count = 0;
        let changed = self.tx.send_if_modified(|latest| {
            let mut changed = false;
            for (addr, instance) in updates {
                changed |= match instance {
                    Some(instance) => match latest.get_shared(&addr) {
                        Some(old) if Arc::ptr_eq(old, &instance) || **old == *instance => false,
                        _ => {
                            latest.insert(instance);
                            true
                        }
                    },
                    None => latest.remove(&addr).is_some(),
                };
            }
            count = latest.len();
            changed
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
                None => Some(Change::snapshot(&this.service, latest.clone())),
                Some(delivered) => diff_instances(&this.service, delivered, &latest),
            };
            this.delivered = Some(latest);
            if let Some(change) = change {
                return Poll::Ready(Some(change));
            }
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

    #[tokio::test]
    async fn applied_updates_are_delivered_as_a_change_of_what_they_touched() {
        let all: Vec<Instance> = (1..=1000).map(instance).collect();
        let (publisher, mut stream) = channel("test", "s", all);
        let first = stream.next().await.unwrap();
        assert_eq!(first.all.len(), 1000);
        let mut moved = instance(500);
        moved.weight = 9;
        publisher.apply([
            (instance(1).addr, None),
            (moved.addr, Some(Arc::new(moved.clone()))),
            (instance(1001).addr, Some(Arc::new(instance(1001)))),
            // Equal to what is there: not a change.
            (instance(2).addr, Some(Arc::new(instance(2)))),
        ]);
        let change = stream.next().await.unwrap();
        assert_eq!(change.removed, vec![instance(1)]);
        assert_eq!(change.updated, vec![moved]);
        assert_eq!(change.added, vec![instance(1001)]);
        assert_eq!(change.all.len(), 1000);
        // The untouched instances are the very ones of the snapshot, not copies.
        let shared = |set: &Instances, port: u16| set.get_shared(&instance(port).addr).cloned();
        assert!(Arc::ptr_eq(
            &shared(&first.all, 3).unwrap(),
            &shared(&change.all, 3).unwrap()
        ));
        // Nothing differs: no wake-up.
        publisher.apply([(instance(2).addr, Some(Arc::new(instance(2))))]);
        assert!(stream.next().now_or_never().is_none());
    }
}

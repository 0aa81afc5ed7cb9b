//! The watch task of a network backend: a [`Source`] (how etcd, ZooKeeper or Nacos opens,
//! lists and follows one service) and the task that follows it for one watcher, publishes each
//! state to the [latest-state channel](crate::discovery::latest), keeps the resolve cache in
//! step, opens the watch again when it breaks, and ends as soon as that watcher is gone.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;

use super::cache::{Entry, WatchCache};
use crate::backoff::Backoff;
use crate::discovery::latest::{channel, Publisher};
use crate::discovery::{DiscoveryError, Instance, WatchStream};

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

#[cfg(test)]
mod tests {
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
}

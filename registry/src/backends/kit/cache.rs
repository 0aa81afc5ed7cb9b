//! The resolve cache of a network discovery: while a watch on a service is live in the same
//! discovery, `resolve` answers from that watch's latest state instead of a round trip.
//!
//! The rule: an entry answers only while its watch is *in sync*, from the moment its listing and
//! watch are both in place until the watch is known to be broken (the stream failed or ended,
//! etcd cancelled or compacted it, the ZooKeeper session disconnected). While broken, and until
//! the watch has listed again, `resolve` makes its round trip as if there were no watch. So a
//! cached answer is never older than what the watch itself would deliver: it lags the registry
//! by the watch's notification delay, plus, when the server silently stops answering, the time
//! the client takes to notice (etcd: the 5 s keep-alive ping and its 3 s timeout; ZooKeeper:
//! nothing received for the connect timeout, 3 s by default). It is not a linearizable read: a
//! registration made a moment ago through another client may not be in it yet.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::watch;

use crate::discovery::latest::Latest;

/// Services are swept of dead entries when there are at least this many.
const MIN_SWEEP: usize = 16;

/// One watch as the cache sees it: its latest-state channel (the very set its consumers get)
/// and whether it is in sync. Owned by the task that follows the watch; the cache holds it
/// weakly, so it goes with the watch. It answers only while the watch still has a consumer.
#[derive(Debug)]
pub(crate) struct Entry {
    latest: watch::Sender<Latest>,
    in_sync: AtomicBool,
}

impl Entry {
    /// The watch is in sync: its channel holds the current set (publish first, then call this).
    pub(crate) fn in_sync(&self) {
        self.in_sync.store(true, Ordering::Release);
    }

    /// The watch is broken or disconnected: stop answering until it is in sync again.
    pub(crate) fn broken(&self) {
        self.in_sync.store(false, Ordering::Release);
    }

    /// The set, if the watch is in sync and still has a consumer.
    fn current(&self) -> Option<Latest> {
        let live = self.in_sync.load(Ordering::Acquire) && !self.latest.is_closed();
        live.then(|| self.latest.borrow().clone())
    }
}

#[derive(Default)]
struct Entries {
    by_service: HashMap<String, Vec<Weak<Entry>>>,
    sweep_at: usize,
}

/// The live watches of one discovery (and its clones), by service.
#[derive(Clone, Default)]
pub(crate) struct WatchCache {
    entries: Arc<Mutex<Entries>>,
}

impl std::fmt::Debug for WatchCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchCache")
            .field("services", &self.lock().by_service.len())
            .finish()
    }
}

impl WatchCache {
    fn lock(&self) -> MutexGuard<'_, Entries> {
        // Every update is one insert, push or retain: a poisoned map is still consistent.
        self.entries
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// A new entry for a watch on `service` whose latest-state channel is `latest`; not in
    /// sync yet.
    pub(crate) fn follow(&self, service: &str, latest: watch::Sender<Latest>) -> Arc<Entry> {
        let entry = Arc::new(Entry {
            latest,
            in_sync: AtomicBool::new(false),
        });
        let mut entries = self.lock();
        let list = entries.by_service.entry(service.to_string()).or_default();
        list.retain(|e| e.strong_count() > 0);
        list.push(Arc::downgrade(&entry));
        if entries.by_service.len() >= entries.sweep_at.max(MIN_SWEEP) {
            entries.by_service.retain(|_, list| {
                list.retain(|e| e.strong_count() > 0);
                !list.is_empty()
            });
            entries.sweep_at = entries.by_service.len() * 2;
        }
        entry
    }

    /// The set of `service` from a watch that is in sync, if there is one.
    pub(crate) fn resolve(&self, service: &str) -> Option<Latest> {
        let latest = {
            let mut entries = self.lock();
            let list = entries.by_service.get_mut(service)?;
            list.retain(|e| e.strong_count() > 0);
            let latest = list
                .iter()
                .filter_map(Weak::upgrade)
                .find_map(|e| e.current());
            if list.is_empty() {
                entries.by_service.remove(service);
            }
            latest
        }?;
        tracing::trace!(service, "resolved from a live watch");
        Some(latest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Info, Instance};

    fn set(port: u16) -> Latest {
        Instance::from(&Info::new("s", ([127, 0, 0, 1], port).into())).into()
    }

    #[test]
    fn answers_only_while_a_watch_is_in_sync_and_watched() {
        let cache = WatchCache::default();
        assert!(cache.resolve("s").is_none());
        let (tx, rx) = watch::channel(set(1));
        let entry = cache.follow("s", tx.clone());
        assert!(cache.resolve("s").is_none(), "not listed yet");
        entry.in_sync();
        assert_eq!(cache.resolve("s").unwrap()[0].addr.port(), 1);
        assert!(cache.resolve("other").is_none());
        entry.broken();
        assert!(cache.resolve("s").is_none(), "broken: no answer");
        // A second watch of the same service that is in sync answers.
        let (tx2, rx2) = watch::channel(set(2));
        let second = cache.follow("s", tx2);
        second.in_sync();
        assert_eq!(cache.resolve("s").unwrap()[0].addr.port(), 2);
        drop(second);
        tx.send_replace(set(3));
        entry.in_sync();
        assert_eq!(cache.resolve("s").unwrap()[0].addr.port(), 3);
        // Its consumer is gone: no answer, even before the task has noticed.
        drop(rx);
        assert!(cache.resolve("s").is_none(), "nobody watches any more");
        drop((entry, rx2));
        assert!(cache.resolve("s").is_none(), "the watch is gone");
        assert!(cache.lock().by_service.is_empty());
    }

    #[test]
    fn dropped_watches_do_not_pile_up() {
        let cache = WatchCache::default();
        for i in 0..1000 {
            drop(cache.follow(&format!("s{i}"), watch::channel(set(1)).0));
        }
        assert!(cache.lock().by_service.len() <= 2 * MIN_SWEEP);
    }
}

//! The watch task of a network backend: a [`Source`] (how etcd, ZooKeeper or Nacos opens,
//! lists and follows one service) and the task that follows it for one watcher, publishes each
//! state to the [latest-state channel](crate::discovery::latest), keeps the resolve cache in
//! step, opens the watch again when it breaks, and ends as soon as that watcher is gone.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;

use super::cache::{Entry, WatchCache};
use crate::backoff::Backoff;
use crate::discovery::latest::{channel, Publisher};
use crate::discovery::{DiscoveryError, Instance, Instances, WatchStream};

/// An address and what it reads as now (`None`: gone).
pub(crate) type Update = (SocketAddr, Option<Arc<Instance>>);

/// What a backend read for one service: instances by registry key (etcd key, ZooKeeper node
/// name). Two keys may name the same address; [`by_addr`] makes them one instance.
///
/// It remembers which addresses its inserts and removals touched since it was last
/// [`settle`](Entries::settle)d, so a watch publishes an event in `O(log n)`: only the
/// addresses it touched are looked at again.
#[derive(Debug, Default)]
pub(crate) struct Entries {
    by_key: BTreeMap<String, Arc<Instance>>,
    /// The keys that hold each address.
    keys_by_addr: HashMap<SocketAddr, BTreeSet<String>>,
    /// The addresses touched since the last `settle`.
    touched: Vec<SocketAddr>,
    /// Built from nothing since the last `settle` (a fresh listing): publish it whole.
    fresh: bool,
}

impl Entries {
    /// No entries; a fresh listing.
    pub(crate) fn new() -> Self {
        Self {
            fresh: true,
            ..Self::default()
        }
    }

    /// Puts `instance` under `key`.
    #[cfg_attr(not(any(feature = "etcd", feature = "zookeeper")), allow(dead_code))]
    pub(crate) fn insert(&mut self, key: String, instance: Instance) {
        self.insert_shared(key, Arc::new(instance));
    }

    fn insert_shared(&mut self, key: String, instance: Arc<Instance>) {
        let addr = instance.addr;
        if let Some(old) = self.by_key.insert(key.clone(), instance) {
            if old.addr != addr {
                self.unlink(&key, old.addr);
            }
        }
        self.keys_by_addr.entry(addr).or_default().insert(key);
        self.touched.push(addr);
    }

    /// Takes the instance under `key` away.
    pub(crate) fn remove(&mut self, key: &str) {
        if let Some(old) = self.by_key.remove(key) {
            self.unlink(key, old.addr);
        }
    }

    /// Makes these entries what `listed` holds (a listing of the whole service), touching only
    /// the keys that differ, so what is published after it shares the rest.
    #[cfg_attr(not(feature = "zookeeper"), allow(dead_code))]
    pub(crate) fn assign(&mut self, listed: Entries) {
        let gone: Vec<String> = self
            .by_key
            .keys()
            .filter(|key| !listed.by_key.contains_key(*key))
            .cloned()
            .collect();
        for key in gone {
            self.remove(&key);
        }
        for (key, instance) in listed.by_key {
            match self.by_key.get(&key) {
                Some(old) if **old == *instance => {}
                _ => self.insert_shared(key, instance),
            }
        }
    }

    /// Makes these entries what `listed` holds (a listing of the whole service), for a backend
    /// whose every key is its instance's address as `addr.to_string()` spells it (Nacos): the
    /// same as [`assign`](Entries::assign) of a listing that inserted each of `listed` under
    /// its address in turn (the last of one address wins), without building that listing. An
    /// instance equal to the one held keeps the one held, and only the addresses that differ
    /// are touched.
    #[cfg_attr(not(feature = "nacos"), allow(dead_code))]
    pub(crate) fn assign_by_addr(&mut self, listed: Vec<Arc<Instance>>) {
        let mut listed_by_addr: HashMap<SocketAddr, Arc<Instance>, foldhash::fast::RandomState> =
            HashMap::with_capacity_and_hasher(listed.len(), Default::default());
        for instance in listed {
            listed_by_addr.insert(instance.addr, instance);
        }
        // One walk over what is held: each key is its address, so each address is met once.
        let (mut gone, mut changed) = (Vec::new(), Vec::new());
        for (key, held) in &self.by_key {
            debug_assert_eq!(*key, held.addr.to_string(), "a key that is not its address");
            match listed_by_addr.remove(&held.addr) {
                None => gone.push(key.clone()),
                Some(instance) if !Arc::ptr_eq(held, &instance) && **held != *instance => {
                    changed.push(instance)
                }
                Some(_) => {}
            }
        }
        for key in gone {
            self.remove(&key);
        }
        for instance in changed.into_iter().chain(listed_by_addr.into_values()) {
            self.insert_shared(instance.addr.to_string(), instance);
        }
    }

    fn unlink(&mut self, key: &str, addr: SocketAddr) {
        if let Some(keys) = self.keys_by_addr.get_mut(&addr) {
            keys.remove(key);
            if keys.is_empty() {
                self.keys_by_addr.remove(&addr);
            }
        }
        self.touched.push(addr);
    }

    /// The instance `addr` reads as. When several keys hold the same address, the key that
    /// spells the address exactly wins, then the smallest key; removing one of them leaves the
    /// address in place as long as another key still holds it.
    fn chosen(&self, addr: &SocketAddr) -> Option<&Arc<Instance>> {
        let keys = self.keys_by_addr.get(addr)?;
        let spelled = addr.to_string();
        let key = keys
            .iter()
            .find(|key| key.ends_with(&spelled))
            .or_else(|| keys.iter().next())?;
        self.by_key.get(key)
    }

    /// What changed since the last call (or the whole set, after a fresh listing), and forgets
    /// it: `Err(all)` after a fresh listing, `Ok(updates)` otherwise.
    pub(crate) fn settle(&mut self) -> Result<Vec<Update>, Instances> {
        let touched = std::mem::take(&mut self.touched);
        if std::mem::take(&mut self.fresh) {
            return Err(by_addr(self));
        }
        let mut seen = BTreeSet::new();
        Ok(touched
            .into_iter()
            .filter(|addr| seen.insert(*addr))
            .map(|addr| (addr, self.chosen(&addr).cloned()))
            .collect())
    }
}

impl Entries {
    /// The whole set, forgetting what was touched.
    fn settle_whole(&mut self) -> Instances {
        self.touched.clear();
        self.fresh = false;
        by_addr(self)
    }
}

/// One instance per address (see [`Entries`] for which key wins).
pub(crate) fn by_addr(entries: &Entries) -> Instances {
    entries
        .keys_by_addr
        .keys()
        .filter_map(|addr| entries.chosen(addr).cloned())
        .collect()
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

    /// Lists `service` once, without a watch (a resolve with no live watch to answer it).
    async fn read(&self, service: &str) -> Result<Entries, DiscoveryError>;

    /// Whether a resolve may answer from a live watch (`resolve_from_watch` of the config).
    fn resolve_from_watch(&self) -> bool;

    /// The discovery's resolve cache, which the watches of this source keep current.
    fn cache(&self) -> &WatchCache;

    /// The retry schedule for opening the watch again.
    fn backoff(&self) -> Backoff;

    /// `etcd`, `zookeeper`: the `backend` label of the watch metrics.
    const BACKEND: &'static str;
}

/// [`Discovery::resolve`](crate::Discovery::resolve) of every network backend: from a live
/// watch of the service in sync, when there is one and the config allows it; a listing
/// otherwise.
pub(crate) async fn resolve<S: Source>(
    source: &S,
    service: &str,
) -> Result<Instances, DiscoveryError> {
    if source.resolve_from_watch() {
        if let Some(instances) = source.cache().resolve(service) {
            return Ok(instances);
        }
    }
    source.read(service).await.map(|entries| by_addr(&entries))
}

/// Opens a watch through `source` (errors are the caller's), then follows it in a task that
/// ends as soon as the returned stream is dropped.
pub(crate) async fn watch<S: Source>(
    source: &S,
    service: &str,
) -> Result<WatchStream, DiscoveryError> {
    let (cursor, mut entries) = source.open(service).await?;
    let (publisher, stream) = channel(S::BACKEND, service, entries.settle_whole());
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
                        match entries.settle() {
                            Ok(updates) => publisher.apply(updates),
                            Err(all) => publisher.publish(all),
                        }
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
                    // A fresh listing: published whole (its consumers get the difference).
                    publisher.publish(entries.settle_whole());
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
        // Equal data reads as equal (`Info::new` stamps the current time).
        Instance {
            start_time: None,
            ..Instance::from(&info)
        }
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

    #[test]
    fn what_an_event_touched_adds_up_to_the_whole_set() {
        // Seeded random puts, moves and removals over keys that share addresses: after each
        // step, the set rebuilt from what was touched equals the set listed whole.
        let mut rng = fastrand::Rng::with_seed(22);
        let mut entries = Entries::new();
        let mut published = entries.settle_whole();
        assert!(published.is_empty());
        let keys = [
            "127.0.0.1:1",
            "127.0.0.1:01",
            "a:1",
            "127.0.0.1:2",
            "b:2",
            "127.0.0.1:3",
        ];
        for step in 0..2000 {
            for _ in 0..rng.usize(1..4) {
                let key = format!("p/s/{}", keys[rng.usize(..keys.len())]);
                if rng.bool() {
                    entries.insert(key, instance(rng.u16(1..4), rng.u32(1..4)));
                } else {
                    entries.remove(&key);
                }
            }
            match entries.settle() {
                Ok(updates) => {
                    for (addr, instance) in updates {
                        match instance {
                            Some(instance) => published.insert(instance),
                            None => published.remove(&addr),
                        };
                    }
                }
                Err(_) => panic!("step {step}: not a fresh listing"),
            }
            assert_eq!(published, by_addr(&entries), "step {step}");
        }
    }

    #[test]
    fn assigning_by_address_is_assigning_a_listing_by_address() {
        // Seeded random listings (with an address listed twice now and then): assigning the
        // instances by address leaves the same entries, and touches the same addresses, as
        // assigning the listing that inserts each under its address.
        let mut rng = fastrand::Rng::with_seed(7);
        let (mut by_listing, mut by_addr_entries) = (Entries::new(), Entries::new());
        by_listing.settle_whole();
        by_addr_entries.settle_whole();
        for step in 0..500 {
            let listed: Vec<Instance> = (0..rng.usize(0..12))
                .map(|_| instance(rng.u16(1..10), rng.u32(1..3)))
                .collect();
            let mut listing = Entries::new();
            for instance in listed.clone() {
                listing.insert(instance.addr.to_string(), instance);
            }
            by_listing.assign(listing);
            by_addr_entries.assign_by_addr(listed.into_iter().map(Arc::new).collect());
            let sorted = |entries: &mut Entries| {
                let mut touched: Vec<Update> = entries.settle().expect("not fresh");
                touched.sort_by_key(|(addr, _)| *addr);
                touched
            };
            let (a, b) = (sorted(&mut by_listing), sorted(&mut by_addr_entries));
            assert_eq!(a, b, "step {step}");
            assert_eq!(
                by_addr(&by_listing),
                by_addr(&by_addr_entries),
                "step {step}"
            );
            assert_eq!(by_listing.by_key, by_addr_entries.by_key, "step {step}");
        }
    }

    #[test]
    fn assigning_a_listing_touches_only_what_differs() {
        let mut entries = Entries::new();
        for port in 1..=100 {
            entries.insert(format!("p/s/127.0.0.1:{port}"), instance(port, 1));
        }
        let before = entries.settle_whole();
        let mut listed = Entries::new();
        for port in 2..=101 {
            let weight = if port == 50 { 7 } else { 1 };
            listed.insert(format!("p/s/127.0.0.1:{port}"), instance(port, weight));
        }
        entries.assign(listed);
        let updates = entries.settle().expect("not fresh");
        let mut ports: Vec<u16> = updates.iter().map(|(addr, _)| addr.port()).collect();
        ports.sort();
        assert_eq!(ports, [1, 50, 101]);
        let mut after = before.clone();
        for (addr, instance) in updates {
            match instance {
                Some(instance) => after.insert(instance),
                None => after.remove(&addr),
            };
        }
        assert_eq!(after, by_addr(&entries));
        assert_eq!(after.get(&([127, 0, 0, 1], 50).into()).unwrap().weight, 7);
    }
}

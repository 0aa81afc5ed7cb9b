//! The live set a session task owns: what must exist while the lease or session lives, and what
//! was deregistered but is not yet confirmed gone.
//!
//! Commands apply to this set in the order they arrive, whether or not the registry is reachable;
//! whatever is written to the server is written from it. So a deregistration that arrives while
//! the connection is being rebuilt is applied before anything is written again, and a delete
//! that failed is retried until it succeeds or the lease/session that owns the key is gone.
//!
//! The set holds whatever record its backend writes: etcd and ZooKeeper keep bytes under a key
//! or path (the defaults, `String` and `Vec<u8>`); Nacos keeps its typed instance under its
//! address and service, and builds its requests from them directly.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use tokio::sync::mpsc;

use super::handle::{Command, Reply};
use crate::registry::RegistryError;

/// Keys to keep (with the value each must hold), and keys to remove with whoever waits for
/// their removal.
pub(crate) struct LiveSet<K = String, V = Vec<u8>> {
    keys: BTreeMap<K, V>,
    /// What a key held before its latest put: the value to keep if the server refuses the new
    /// one (a live update the server finds too large leaves the registration as it was).
    previous: BTreeMap<K, V>,
    doomed: BTreeMap<K, Vec<Reply>>,
}

impl<K, V> Default for LiveSet<K, V> {
    fn default() -> Self {
        Self {
            keys: BTreeMap::new(),
            previous: BTreeMap::new(),
            doomed: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone + Debug, V: PartialEq + Clone> LiveSet<K, V> {
    /// `key` must hold `value` from now on; a pending removal of it is superseded (its waiters
    /// are told it is done: the removal happened, then the key was registered again).
    pub(crate) fn put(&mut self, key: K, value: V) {
        if let Some(waiters) = self.doomed.remove(&key) {
            for waiter in waiters {
                let _ = waiter.send(Ok(()));
            }
        }
        match self.keys.insert(key.clone(), value) {
            Some(old) if self.keys.get(&key) != Some(&old) => {
                self.previous.insert(key, old);
            }
            Some(_) => {}
            None => {
                self.previous.remove(&key);
            }
        }
    }

    /// `key` must go; `waiter` (if any) hears when it is gone or the first attempt fails.
    pub(crate) fn delete(&mut self, key: K, waiter: Option<Reply>) {
        self.keys.remove(&key);
        self.previous.remove(&key);
        let waiters = self.doomed.entry(key).or_default();
        waiters.extend(waiter);
    }

    /// A put the server refused on its own merits (not a connection problem): it would be
    /// refused again, so it is no longer kept. The value the key held before it is kept instead
    /// (the server still holds it: a refused write changes nothing there); a key that held
    /// nothing before is dropped. The caller reports the refusal to whoever made the put.
    pub(crate) fn refused<Q, W>(&mut self, key: &Q, value: &W)
    where
        K: Borrow<Q>,
        Q: Ord + Debug + ?Sized,
        V: PartialEq<W>,
        W: ?Sized,
    {
        if self.keys.get(key).is_some_and(|v| v == value) {
            match self.previous.remove(key) {
                Some(old) => {
                    tracing::warn!(
                        key = ?key,
                        "the server refused an update; keeping the value it had"
                    );
                    if let Some(kept) = self.keys.get_mut(key) {
                        *kept = old;
                    }
                }
                None => {
                    self.keys.remove(key);
                }
            }
        }
    }

    /// The server confirmed that `key` is gone.
    pub(crate) fn deleted<Q: Ord + ?Sized>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
    {
        if let Some(waiters) = self.doomed.remove(key) {
            for waiter in waiters {
                let _ = waiter.send(Ok(()));
            }
        }
    }

    /// The removal of `key` failed this time: its waiters hear why; it is retried later.
    pub(crate) fn delete_failed<Q: Ord + ?Sized>(&mut self, key: &Q, err: &RegistryError)
    where
        K: Borrow<Q>,
    {
        if let Some(waiters) = self.doomed.get_mut(key) {
            for waiter in waiters.drain(..) {
                let _ = waiter.send(Err(err.clone()));
            }
        }
    }

    /// The connection is gone while removals are pending: they are accepted for now, as during
    /// an outage ([`wait_offline`]): waiters hear success, and each removal stays pending until
    /// it is made once the registry answers again, or its lease or session is gone. Nobody is
    /// held up by an outage, whether it was known before the removal came or found by it.
    pub(crate) fn deletes_failed(&mut self, err: &RegistryError) {
        if self.has_doomed() {
            tracing::debug!(error = %err, "the connection is gone; pending removals are made once it is back");
        }
        self.owner_pending();
    }

    /// Every pending removal is accepted for now (the registry is unreachable): waiters hear
    /// success, and the removals stay pending until done or their owner is gone.
    pub(crate) fn owner_pending(&mut self) {
        for waiters in self.doomed.values_mut() {
            for waiter in waiters.drain(..) {
                let _ = waiter.send(Ok(()));
            }
        }
    }

    /// The lease or session that held every doomed key is gone, and the keys with it.
    pub(crate) fn owner_gone(&mut self) {
        for (_, waiters) in std::mem::take(&mut self.doomed) {
            for waiter in waiters {
                let _ = waiter.send(Ok(()));
            }
        }
    }

    /// Whether `key` is to be kept.
    #[cfg_attr(not(any(feature = "etcd", feature = "zookeeper")), allow(dead_code))]
    pub(crate) fn contains<Q: Ord + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.keys.contains_key(key)
    }

    /// What `key` must hold, if it is kept.
    pub(crate) fn value<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.keys.get(key)
    }

    /// How many keys are kept.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether removals are pending.
    pub(crate) fn has_doomed(&self) -> bool {
        !self.doomed.is_empty()
    }

    /// Everything to write on a new lease or session: pending removals first, then every key.
    #[cfg_attr(not(any(feature = "etcd", feature = "nacos")), allow(dead_code))]
    pub(crate) fn writes(&self) -> Vec<(K, Option<V>)> {
        self.doomed
            .keys()
            .map(|k| (k.clone(), None))
            .chain(self.keys.iter().map(|(k, v)| (k.clone(), Some(v.clone()))))
            .collect()
    }

    /// The pending removals.
    pub(crate) fn doomed_keys(&self) -> Vec<K> {
        self.doomed.keys().cloned().collect()
    }

    /// Every kept key.
    #[cfg_attr(not(any(feature = "zookeeper", feature = "nacos")), allow(dead_code))]
    pub(crate) fn keys(&self) -> impl Iterator<Item = &K> {
        self.keys.keys()
    }

    /// Forgets everything (the registry is closed).
    pub(crate) fn clear(&mut self) {
        self.keys.clear();
        self.previous.clear();
        self.owner_gone();
    }
}

impl<V> LiveSet<String, V> {
    /// The kept keys that start with `prefix`, in order.
    #[cfg_attr(not(feature = "zookeeper"), allow(dead_code))]
    pub(crate) fn keys_with_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = &'a String> + 'a {
        self.keys
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .map(|(key, _)| key)
            .take_while(move |key| key.starts_with(prefix))
    }
}

/// What [`absorb_queued`] found besides puts and deletes.
pub(crate) struct Absorbed<K = String> {
    /// Puts applied to the live set (key, reply), answered once they are written.
    pub(crate) puts: Vec<(K, Reply)>,
    /// A close request, if one was queued (nothing after it was taken).
    pub(crate) close: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Applies every queued command to `live` without writing anything: called right before a new
/// lease or session writes the live set, so that what it writes is what was asked last.
pub(crate) fn absorb_queued<K: Ord + Clone + Debug, V: PartialEq + Clone>(
    commands: &mut mpsc::UnboundedReceiver<Command<K, V>>,
    live: &mut LiveSet<K, V>,
) -> Absorbed<K> {
    let mut absorbed = Absorbed {
        puts: Vec::new(),
        close: None,
    };
    while let Ok(command) = commands.try_recv() {
        match command {
            Command::Put { key, value, done } => {
                live.put(key.clone(), value);
                absorbed.puts.push((key, done));
            }
            Command::Delete { key, done } => live.delete(key, Some(done)),
            Command::Close { done } => {
                absorbed.close = Some(done);
                break;
            }
        }
    }
    absorbed
}

/// While no lease or session is held: answers commands for `delay`. Puts and deletes apply to
/// `live` at once. A put is answered with `cause` (it is written once the registry is back; the
/// registrar shows `Retrying`); a delete succeeds (the key is deleted once the registry is
/// back, or goes with its lease or session). Nobody is held up by an outage. Returns the
/// close request's reply once the registry is closed (or all handles are gone: `Some(None)`).
#[cfg_attr(not(any(feature = "etcd", feature = "zookeeper")), allow(dead_code))]
pub(crate) async fn wait_offline<K: Ord + Clone + Debug, V: PartialEq + Clone>(
    commands: &mut mpsc::UnboundedReceiver<Command<K, V>>,
    live: &mut LiveSet<K, V>,
    delay: Duration,
    cause: &RegistryError,
) -> Option<Option<tokio::sync::oneshot::Sender<()>>> {
    let deadline = tokio::time::sleep(delay);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut deadline => return None,
            command = commands.recv() => match command {
                None => return Some(None),
                Some(Command::Put { key, value, done }) => {
                    live.put(key, value);
                    let _ = done.send(Err(cause.clone()));
                }
                Some(Command::Delete { key, done }) => {
                    live.delete(key, None);
                    let _ = done.send(Ok(()));
                }
                Some(Command::Close { done }) => return Some(Some(done)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    #[test]
    fn a_put_supersedes_a_pending_delete_and_answers_its_waiter() {
        let mut live: LiveSet = LiveSet::default();
        let (tx, mut rx) = oneshot::channel();
        live.put("k".into(), b"1".to_vec());
        live.delete("k".into(), Some(tx));
        assert!(!live.contains("k"));
        assert_eq!(live.writes(), vec![("k".to_string(), None)]);
        live.put("k".into(), b"2".to_vec());
        assert!(rx.try_recv().unwrap().is_ok());
        assert_eq!(live.writes(), vec![("k".to_string(), Some(b"2".to_vec()))]);
    }

    #[test]
    fn a_failed_delete_stays_pending_until_confirmed() {
        let mut live: LiveSet = LiveSet::default();
        let (tx, mut rx) = oneshot::channel();
        live.delete("k".into(), Some(tx));
        let err = RegistryError::Backend {
            backend: "test",
            source: crate::registry::shared("refused"),
        };
        live.delete_failed("k", &err);
        assert!(rx.try_recv().unwrap().is_err());
        assert!(live.has_doomed());
        live.deleted("k");
        assert!(!live.has_doomed());
    }

    #[test]
    fn a_refused_update_keeps_the_value_before_it() {
        let mut live: LiveSet = LiveSet::default();
        live.put("k".into(), b"1".to_vec());
        live.put("k".into(), b"2".to_vec());
        live.refused("k", b"2");
        assert_eq!(live.value("k"), Some(&b"1".to_vec()));
        // A refused first value leaves nothing; so does a refusal after the fallback was used.
        live.refused("k", b"1");
        assert!(!live.contains("k"));
        live.put("n".into(), b"1".to_vec());
        live.refused("n", b"1");
        assert!(!live.contains("n"));
        // A refusal of a value already replaced changes nothing.
        live.put("m".into(), b"1".to_vec());
        live.put("m".into(), b"2".to_vec());
        live.put("m".into(), b"3".to_vec());
        live.refused("m", b"2");
        assert_eq!(live.value("m"), Some(&b"3".to_vec()));
        live.refused("m", b"3");
        assert_eq!(live.value("m"), Some(&b"2".to_vec()));
        // A delete forgets the fallback: a put after it has none.
        live.delete("m".into(), None);
        live.put("m".into(), b"4".to_vec());
        live.refused("m", b"4");
        assert!(!live.contains("m"));
    }

    #[test]
    fn typed_records_are_kept_as_they_are() {
        #[derive(Clone, Debug, PartialEq)]
        struct Record {
            weight: f64,
        }
        let mut live: LiveSet<(u16, String), Record> = LiveSet::default();
        let key = (80, "svc".to_string());
        live.put(key.clone(), Record { weight: 1.0 });
        live.put(key.clone(), Record { weight: 2.0 });
        live.refused(&key, &Record { weight: 2.0 });
        assert_eq!(live.value(&key), Some(&Record { weight: 1.0 }));
        live.delete(key.clone(), None);
        assert_eq!(live.writes(), vec![(key, None)]);
    }

    #[tokio::test]
    async fn queued_commands_apply_in_order_before_a_write() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut live: LiveSet = LiveSet::default();
        live.put("a".into(), b"1".to_vec());
        let (d1, _w1) = oneshot::channel();
        let (d2, _w2) = oneshot::channel();
        tx.send(Command::Delete {
            key: "a".into(),
            done: d1,
        })
        .unwrap();
        tx.send(Command::Put {
            key: "b".into(),
            value: b"2".to_vec(),
            done: d2,
        })
        .unwrap();
        let absorbed = absorb_queued(&mut rx, &mut live);
        assert_eq!(absorbed.puts.len(), 1);
        assert!(absorbed.close.is_none());
        assert_eq!(
            live.writes(),
            vec![
                ("a".to_string(), None),
                ("b".to_string(), Some(b"2".to_vec()))
            ]
        );
    }
}

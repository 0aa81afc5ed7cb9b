//! [`Keys`]: the keys of a [`VoloBalance`](super::VoloBalance) and their entries, read on
//! every call without a lock, an atomic read-modify-write or a hash while there are few.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, OnceLock, RwLock};

/// The first this many keys are looked up by comparison, in order; later ones in a hash map.
///
/// A Volo client is built for one callee service, so its balance holds one key (or a few,
/// with a shared balance): comparing a service name costs a few nanoseconds, where hashing it
/// (SipHash) and loading a swapped map cost tens, on every call.
const FEW: usize = 8;

/// A grow-only map from key to entry (a balance never forgets a key).
pub(crate) struct Keys<K, V> {
    few: [OnceLock<(K, V)>; FEW],
    many: RwLock<HashMap<K, V>>,
    /// Orders inserts, so that a key is inserted once.
    insert: Mutex<()>,
}

impl<K, V> Default for Keys<K, V> {
    fn default() -> Self {
        Self {
            few: std::array::from_fn(|_| OnceLock::new()),
            many: RwLock::new(HashMap::new()),
            insert: Mutex::new(()),
        }
    }
}

impl<K: Hash + Eq, V: Clone> Keys<K, V> {
    /// `then` applied to the entry of `key`, if there is one.
    #[inline]
    pub(crate) fn with<R>(&self, key: &K, then: impl FnOnce(&V) -> R) -> Option<R> {
        for slot in &self.few {
            match slot.get() {
                Some((k, v)) if k == key => return Some(then(v)),
                Some(_) => {}
                // Slots fill in order: no later one is set.
                None => return None,
            }
        }
        let many = self
            .many
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        many.get(key).map(then)
    }

    /// The entry of `key`: the existing one, or the one `make` builds (inserted).
    pub(crate) fn get_or_insert_with(&self, key: K, make: impl FnOnce() -> V) -> V {
        let _inserting = self
            .insert
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(existing) = self.with(&key, V::clone) {
            return existing;
        }
        let value = make();
        match self.few.iter().find(|slot| slot.get().is_none()) {
            Some(slot) => {
                // Only inserts set slots, and they hold the lock: this one is still free.
                let _ = slot.set((key, value.clone()));
            }
            None => {
                self.many
                    .write()
                    .unwrap_or_else(|poison| poison.into_inner())
                    .insert(key, value.clone());
            }
        }
        value
    }
}

impl<K: Clone, V> Keys<K, V> {
    /// Every key.
    pub(crate) fn keys(&self) -> Vec<K> {
        let mut keys: Vec<K> = self
            .few
            .iter()
            .filter_map(|slot| slot.get().map(|(k, _)| k.clone()))
            .collect();
        let many = self
            .many
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        keys.extend(many.keys().cloned());
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_key_small_and_large() {
        let keys = Keys::default();
        for n in 0..20u32 {
            assert_eq!(keys.get_or_insert_with(n, || n * 10), n * 10);
            for m in 0..=n {
                assert_eq!(keys.with(&m, |v| *v), Some(m * 10), "{n} keys, key {m}");
            }
            assert_eq!(keys.with(&(n + 1), |v| *v), None);
            assert_eq!(keys.keys().len(), n as usize + 1);
        }
        assert_eq!(
            keys.get_or_insert_with(3, || 0),
            30,
            "an existing entry stays"
        );
    }
}

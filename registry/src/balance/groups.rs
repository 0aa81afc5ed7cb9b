//! [`Groups`]: indexes sorted into groups by a key (a lane, a priority level) while a snapshot is
//! built. Keys are few in practice, so the group is found in a short list, starting with the
//! one the index before went to (neighbours mostly share it); past [`LIST_MAX`] keys an index
//! by hash takes over, so a tag with a value per instance stays O(n).

use std::collections::HashMap;
use std::hash::Hash;

/// Up to this many keys the groups are searched in a list.
const LIST_MAX: usize = 8;

/// Indexes by key, each group in the order its indexes were added.
pub(crate) struct Groups<K> {
    groups: Vec<(K, Vec<u32>)>,
    /// The group the last index went to.
    last: usize,
    /// Past [`LIST_MAX`] keys: where each key's group is.
    index: Option<HashMap<K, usize>>,
}

impl<K: Copy + Eq + Hash> Groups<K> {
    pub(crate) fn new() -> Self {
        Self {
            groups: Vec::new(),
            last: 0,
            index: None,
        }
    }

    /// Adds index `i` to the group of `key`.
    #[inline]
    pub(crate) fn add(&mut self, key: K, i: u32) {
        if self.groups.get(self.last).is_none_or(|(k, _)| *k != key) {
            self.last = self.find(key);
        }
        self.groups[self.last].1.push(i);
    }

    fn find(&mut self, key: K) -> usize {
        let found = match &self.index {
            Some(index) => index.get(&key).copied(),
            None => self.groups.iter().position(|(k, _)| *k == key),
        };
        if let Some(k) = found {
            return k;
        }
        self.groups.push((key, Vec::new()));
        let k = self.groups.len() - 1;
        match &mut self.index {
            Some(index) => {
                index.insert(key, k);
            }
            None if self.groups.len() > LIST_MAX => {
                self.index = Some(
                    self.groups
                        .iter()
                        .enumerate()
                        .map(|(k, g)| (g.0, k))
                        .collect(),
                );
            }
            None => {}
        }
        k
    }

    /// The groups, in the order their keys first came.
    pub(crate) fn into_vec(self) -> Vec<(K, Vec<u32>)> {
        self.groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_land_in_their_keys_group_in_order_with_few_or_many_keys() {
        for keys in [3u32, 50] {
            let mut groups = Groups::new();
            for i in 0..1000u32 {
                groups.add(i % keys, i);
            }
            let groups = groups.into_vec();
            assert_eq!(groups.len(), keys as usize);
            for (k, (key, members)) in groups.iter().enumerate() {
                assert_eq!(*key, k as u32, "keys in the order they came");
                assert!(members.iter().all(|i| i % keys == *key));
                assert!(members.windows(2).all(|w| w[0] < w[1]), "in order");
                assert_eq!(
                    members.len(),
                    (1000 / keys + u32::from(*key < 1000 % keys)) as usize
                );
            }
        }
    }
}

//! Consistent hashing on a caller-given key: the same key goes to the same instance while the
//! set is stable, and adding an instance moves only the keys that now belong to it.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::discovery::Instance;

/// Points per unit of weight on the ring (an instance of weight 10 gets 160 points).
const POINTS_PER_WEIGHT: u32 = 16;

fn hash(value: impl Hash) -> u64 {
    // SipHash with fixed zero keys: the same on every run and every process.
    #[allow(deprecated)]
    let mut hasher = std::hash::SipHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// A hash ring, built once per instance set; picking is a binary search, no lock.
#[derive(Debug)]
pub(crate) struct ConsistentHash {
    instances: Vec<Arc<Instance>>,
    ring: Vec<(u64, usize)>,
}

impl ConsistentHash {
    pub(crate) fn new(instances: Vec<Arc<Instance>>) -> Self {
        let mut ring = Vec::new();
        for (index, instance) in instances.iter().enumerate() {
            let points = instance.weight.clamp(1, 1000) * POINTS_PER_WEIGHT;
            for point in 0..points {
                ring.push((hash((instance.addr, point)), index));
            }
        }
        ring.sort_unstable();
        Self { instances, ring }
    }

    pub(crate) fn pick(&self, key: impl Hash) -> Option<&Arc<Instance>> {
        if self.ring.is_empty() {
            return None;
        }
        let h = hash(key);
        let at = self.ring.partition_point(|(point, _)| *point < h);
        let (_, index) = self.ring[if at == self.ring.len() { 0 } else { at }];
        self.instances.get(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Info;

    fn instances(n: u16) -> Vec<Arc<Instance>> {
        (0..n)
            .map(|i| {
                Arc::new(Instance::from(&Info::new(
                    "s",
                    format!("10.0.0.{}:80", i + 1).parse().unwrap(),
                )))
            })
            .collect()
    }

    #[test]
    fn adding_an_instance_moves_about_one_in_n_keys() {
        for n in [3u16, 5, 10, 20] {
            let before = ConsistentHash::new(instances(n));
            let after = ConsistentHash::new(instances(n + 1));
            let keys = 20_000;
            let moved = (0..keys)
                .filter(|k| before.pick(k).map(|i| i.addr) != after.pick(k).map(|i| i.addr))
                .count();
            let share = moved as f64 / keys as f64;
            // Ideal: exactly the new instance's share, 1/(n+1) ≤ 1/n. Virtual nodes leave a
            // little variance, so allow 2 percentage points over 1/n.
            assert!(
                share <= 1.0 / f64::from(n) + 0.02,
                "n={n}: {share:.3} of keys moved"
            );
            // And every moved key moved to the new instance, never between old ones.
            let new_addr = after.instances.last().unwrap().addr;
            assert!((0..keys).all(|k| {
                let (a, b) = (before.pick(k).unwrap().addr, after.pick(k).unwrap().addr);
                a == b || b == new_addr
            }));
        }
    }

    #[test]
    fn same_key_same_instance() {
        let ring = ConsistentHash::new(instances(7));
        for key in ["user-1", "user-2", "order-99"] {
            assert_eq!(ring.pick(key).unwrap().addr, ring.pick(key).unwrap().addr);
        }
        assert!(ConsistentHash::new(Vec::new()).pick("x").is_none());
    }
}

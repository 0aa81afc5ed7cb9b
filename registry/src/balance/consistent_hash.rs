//! Consistent hashing on a caller-given key: the same key goes to the same instance while the
//! set is stable, and adding an instance moves only the keys that now belong to it.
//!
//! A hash ring with a bucket index: the ring's points are sorted by a counting sort on their
//! top bits (O(points) to build), and a key finds its point through the index of its bucket,
//! about one point per bucket, so a pick costs the same at 10 or 10 000 instances.
//!
//! The ring's size is bounded whatever the registry holds: an instance's points follow its
//! weight bounded to [`MIN_WEIGHT`](crate::MIN_WEIGHT)..=[`MAX_WEIGHT`](crate::MAX_WEIGHT)
//! ([`bounded_weight`]), and the resolution is chosen for the set, so a ring has at most
//! `max(2^19, instances + 2^17)` points (about 2^16 to 2^17 when built afresh, never more than
//! [`KEEP_POINTS`] allows when kept, one point per instance at the coarsest resolution).

use std::hash::{Hash, Hasher};

use super::warmup::bounded_weight;
use crate::discovery::Instance;

/// The ring aims at this many points in all when its resolution is chosen (about 2^16, up to
/// 2^17 with rounding).
const TARGET_POINTS: u64 = 1 << 16;
/// A ring keeps its resolution across set changes while its point count stays in this range,
/// so that adding or removing an instance moves only that instance's keys.
const KEEP_POINTS: std::ops::RangeInclusive<u64> = (1 << 13)..=(1 << 19);

/// splitmix64's finaliser: every input bit flips about half the output bits.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A fast hasher with a fixed seed: the same value hashes the same in every process and on
/// every run, so clients agree on which instance owns a key.
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0 ^ word)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29);
    }

    #[inline]
    fn finish(&self) -> u64 {
        mix(self.0)
    }
}

/// Where `value` falls on the ring.
#[inline]
pub(crate) fn hash(value: impl Hash) -> u64 {
    let mut hasher = KeyHasher(0x51_7cc1_b727_220a);
    value.hash(&mut hasher);
    hasher.finish()
}

/// The `j`-th point of the instance whose address hashes to `addr_hash` (`hash(addr)`): the
/// same whatever else is on the ring.
#[inline]
fn point(addr_hash: u64, j: u64) -> u64 {
    mix(addr_hash.wrapping_add((j + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)))
}

/// Calls `visit(point, index)` for every point of every instance, given each instance's
/// address hash and point count.
#[inline]
fn each_point(owners: &[(u64, u64)], mut visit: impl FnMut(u64, u32)) {
    for (index, (addr_hash, points)) in owners.iter().enumerate() {
        for j in 0..*points {
            visit(point(*addr_hash, j), index as u32);
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Point {
    /// The 32 bits of the point's hash below its bucket bits.
    low: u32,
    index: u32,
}

/// A hash ring, built once per instance set; picking reads one bucket, no lock.
#[derive(Debug)]
pub(crate) struct Ring {
    points: Vec<Point>,
    /// `buckets[b]` is the first point in bucket `b` or after it; one extra entry at the end.
    buckets: Vec<u32>,
    /// A hash's bucket is `hash >> shift`.
    shift: u32,
    /// Points per unit of weight, as a power of two: `weight · 2^scale` (at least one point).
    scale: i32,
}

/// How many points an instance of (bounded) weight `weight` gets at `scale`.
fn points_for(weight: u32, scale: i32) -> u64 {
    let w = u64::from(weight);
    if scale >= 0 {
        w << scale
    } else {
        ((w + (1 << (-scale - 1))) >> -scale).max(1)
    }
}

impl Ring {
    /// Builds the ring for `instances`, keeping the resolution of `previous` when it still
    /// fits (see [`KEEP_POINTS`]).
    pub(crate) fn new<'a>(
        instances: impl ExactSizeIterator<Item = &'a Instance> + Clone,
        previous: Option<&Ring>,
    ) -> Self {
        let total_at = |scale: i32| -> u64 {
            instances
                .clone()
                .map(|i| points_for(bounded_weight(i), scale))
                .sum()
        };
        let scale = match previous {
            Some(ring) if KEEP_POINTS.contains(&total_at(ring.scale)) => ring.scale,
            _ => {
                let weight: u64 = instances
                    .clone()
                    .map(|i| u64::from(bounded_weight(i)))
                    .sum();
                let ratio = TARGET_POINTS as f64 / weight.max(1) as f64;
                (ratio.log2().floor() as i32).clamp(-14, 16)
            }
        };
        let total = total_at(scale) as usize;
        if total == 0 {
            return Self {
                points: Vec::new(),
                buckets: vec![0, 0],
                shift: 63,
                scale,
            };
        }
        let bits = (total.next_power_of_two().trailing_zeros()).max(1);
        let shift = 64 - bits;
        // Each instance's address hash and point count; its points are computed twice (one
        // multiply-xorshift each) rather than stored between the two passes.
        let owners: Vec<(u64, u64)> = instances
            .map(|instance| {
                let points = points_for(bounded_weight(instance), scale);
                (hash(instance.addr), points)
            })
            .collect();
        // Counting sort on the bucket bits, then insertion sort inside each (tiny) bucket:
        // count, sum up to each bucket's end, and place every point just before its bucket's
        // end, which leaves `buckets[b]` at the start of bucket `b`.
        let count = 1usize << bits;
        let mut buckets = vec![0u32; count + 1];
        each_point(&owners, |h, _| buckets[(h >> shift) as usize] += 1);
        for b in 1..count {
            buckets[b] += buckets[b - 1];
        }
        let mut points = vec![Point { low: 0, index: 0 }; total];
        each_point(&owners, |h, index| {
            let b = (h >> shift) as usize;
            buckets[b] -= 1;
            points[buckets[b] as usize] = Point {
                low: (h >> (shift - 32)) as u32,
                index,
            };
        });
        buckets[count] = total as u32;
        for b in buckets.windows(2).filter(|b| b[1] - b[0] > 1) {
            points[b[0] as usize..b[1] as usize].sort_unstable_by_key(|p| (p.low, p.index));
        }
        Self {
            points,
            buckets,
            shift,
            scale,
        }
    }

    /// The index of the instance owning `hash`: the first point at or after it, around the ring.
    #[inline]
    pub(crate) fn pick(&self, hash: u64) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let b = (hash >> self.shift) as usize;
        let low = (hash >> (self.shift - 32)) as u32;
        let (start, end) = (self.buckets[b] as usize, self.buckets[b + 1] as usize);
        let owner = self.points[start..end]
            .iter()
            .find(|p| p.low >= low)
            .or_else(|| self.points.get(end))
            .unwrap_or(&self.points[0]);
        Some(owner.index as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Info;

    fn instances(n: u16) -> Vec<Instance> {
        (0..n)
            .map(|i| {
                Instance::from(&Info::new(
                    "s",
                    format!("10.0.{}.{}:80", i / 250, i % 250 + 1)
                        .parse()
                        .unwrap(),
                ))
            })
            .collect()
    }

    fn addr_of(set: &[Instance], ring: &Ring, key: u64) -> std::net::SocketAddr {
        set[ring.pick(hash(key)).unwrap()].addr
    }

    #[test]
    fn adding_an_instance_moves_about_one_in_n_keys() {
        for n in [3u16, 5, 10, 20, 100, 1000] {
            let (small, large) = (instances(n), instances(n + 1));
            let before = Ring::new(small.iter(), None);
            let after = Ring::new(large.iter(), Some(&before));
            let keys = 20_000;
            let moved = (0..keys)
                .filter(|k| addr_of(&small, &before, *k) != addr_of(&large, &after, *k))
                .count();
            let share = moved as f64 / keys as f64;
            // Ideal: exactly the new instance's share, 1/(n+1) ≤ 1/n. The ring's points leave
            // a little variance, so allow 2 percentage points over 1/n.
            assert!(
                share <= 1.0 / f64::from(n) + 0.02,
                "n={n}: {share:.3} of keys moved"
            );
            // And every moved key moved to the new instance, never between old ones.
            let new_addr = large.last().unwrap().addr;
            assert!((0..keys).all(|k| {
                let (a, b) = (addr_of(&small, &before, k), addr_of(&large, &after, k));
                a == b || b == new_addr
            }));
            // Removing it again gives the first ring back.
            let again = Ring::new(small.iter(), Some(&after));
            assert!((0..keys).all(|k| addr_of(&small, &before, k) == addr_of(&small, &again, k)));
        }
    }

    #[test]
    fn same_key_same_instance() {
        let set = instances(7);
        let ring = Ring::new(set.iter(), None);
        for key in ["user-1", "user-2", "order-99"] {
            assert_eq!(ring.pick(hash(key)), ring.pick(hash(key)));
        }
        assert!(Ring::new([].iter(), None).pick(hash("x")).is_none());
    }

    #[test]
    fn the_key_hash_is_fixed() {
        // Clients in different processes must agree: the hash has no per-process seed.
        assert_eq!(hash("user-42"), hash("user-42"));
        assert_eq!(hash(42u64), 0x5ff8_431f_6828_c848);
    }

    #[test]
    fn large_sets_keep_a_bounded_ring() {
        let set = instances(10_000);
        let ring = Ring::new(set.iter(), None);
        assert!(ring.points.len() <= 1 << 17, "{}", ring.points.len());
        assert!(ring.points.len() >= 10_000);
        // Every instance owns part of the ring.
        let mut owned = vec![false; set.len()];
        for p in &ring.points {
            owned[p.index as usize] = true;
        }
        assert!(owned.iter().all(|o| *o));
    }

    fn weighted(n: u16, weight: u32) -> Vec<Instance> {
        let mut set = instances(n);
        set.iter_mut().for_each(|i| i.weight = weight);
        set
    }

    /// Defect 3 of issue 18: 20 instances of weight `u32::MAX` (one etcd put each) built a
    /// ring of 5 million points (4.8 s, 184 MiB); 100 of them, 26 million.
    #[test]
    fn weights_beyond_the_range_cost_what_the_heaviest_valid_weight_costs() {
        let hostile = Ring::new(weighted(100, u32::MAX).iter(), None);
        let heaviest = Ring::new(weighted(100, crate::MAX_WEIGHT).iter(), None);
        println!(
            "100 instances of weight u32::MAX: {} points (of MAX_WEIGHT: {})",
            hostile.points.len(),
            heaviest.points.len()
        );
        assert_eq!(hostile.points.len(), heaviest.points.len());
        assert!(hostile.points.len() <= 1 << 17, "{}", hostile.points.len());
        // Kept across a change, too: a hostile instance joining a kept ring.
        let mut mixed = weighted(100, 10);
        mixed[0].weight = u32::MAX;
        let before = Ring::new(weighted(100, 10).iter(), None);
        let after = Ring::new(mixed.iter(), Some(&before));
        assert!(after.points.len() <= 1 << 19, "{}", after.points.len());
    }

    /// Key shares follow in-range weights, however different, and an out-of-range weight
    /// counts as the heaviest valid one.
    #[test]
    fn key_shares_follow_the_bounded_weights() {
        let weights = [1, 10, 100, 1_000, crate::MAX_WEIGHT, u32::MAX];
        let mut set = instances(weights.len() as u16);
        for (instance, weight) in set.iter_mut().zip(weights) {
            instance.weight = weight;
        }
        let bounded: Vec<f64> = weights
            .iter()
            .map(|w| f64::from((*w).min(crate::MAX_WEIGHT)))
            .collect();
        let total: f64 = bounded.iter().sum();
        let ring = Ring::new(set.iter(), None);
        let keys = 400_000u64;
        let mut counts = vec![0u64; set.len()];
        for k in 0..keys {
            counts[ring.pick(hash(k)).unwrap()] += 1;
        }
        for (i, w) in bounded.iter().enumerate() {
            let share = counts[i] as f64 / keys as f64;
            let want = w / total;
            // The ring's points leave some variance: within 10 % of the share, or 0.3 points
            // for the lightest.
            assert!(
                (share - want).abs() <= (want * 0.1).max(0.003),
                "weight {}: {share:.5} of keys, want {want:.5}",
                weights[i]
            );
        }
    }
}

//! Smooth weighted round-robin as a precomputed schedule: over every cycle of
//! `sum(weights) / gcd` picks each instance is chosen exactly `weight / gcd` times, its picks
//! spread evenly over the cycle rather than in bursts. Picking reads the next slot: O(1), no
//! lock.

/// The longest schedule kept (1 MiB of slots). A set whose reduced weights add up to more is
/// scaled down to this length, which moves each instance's share by at most `1 / MAX_CYCLE`.
pub(crate) const MAX_CYCLE: u64 = 1 << 18;

/// A smooth weighted round-robin cycle, built in O(n + cycle) when the set changes.
///
/// The `j`-th of instance `i`'s `w_i` picks goes to slot `⌊(j + ½) · cycle / w_i⌋` (the
/// midpoints of `w_i` equal parts of the cycle, as Sainte-Laguë spreads seats), slots sorted
/// by a counting sort; picks that land on the same slot keep the instances' order.
#[derive(Debug)]
pub(crate) struct Schedule {
    slots: Vec<u32>,
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Calls `visit(instance, slot)` for every pick of the cycle. The slot is
/// `(2j + 1) · cycle / (2w)`, with quotient and remainder carried from one `j` to the next
/// instead of a division per pick.
fn each_pick(weights: &[u64], cycle: u64, mut visit: impl FnMut(usize, usize)) {
    for (index, w) in weights.iter().enumerate() {
        let den = 2 * w;
        let (step_q, step_r) = ((2 * cycle) / den, (2 * cycle) % den);
        let (mut q, mut r) = (cycle / den, cycle % den);
        for _ in 0..*w {
            visit(index, q as usize);
            q += step_q;
            r += step_r;
            if r >= den {
                r -= den;
                q += 1;
            }
        }
    }
}

impl Schedule {
    /// Builds the cycle for integer `weights` (each at least 1).
    pub(crate) fn new(weights: &[u64]) -> Self {
        if weights.is_empty() {
            return Self { slots: Vec::new() };
        }
        let g = weights.iter().fold(0, |g, w| gcd(g, (*w).max(1)));
        let mut reduced: Vec<u64> = weights.iter().map(|w| (*w).max(1) / g).collect();
        let total: u64 = reduced.iter().sum();
        if total > MAX_CYCLE {
            // Too long a cycle: keep the proportions to within one slot of MAX_CYCLE.
            for w in &mut reduced {
                *w = ((*w as u128 * u128::from(MAX_CYCLE) + u128::from(total) / 2)
                    / u128::from(total))
                .max(1) as u64;
            }
            let g = reduced.iter().fold(0, |g, w| gcd(g, *w));
            reduced.iter_mut().for_each(|w| *w /= g);
        }
        let cycle: u64 = reduced.iter().sum();
        let len = cycle as usize;
        let mut starts = vec![0u32; len + 1];
        each_pick(&reduced, cycle, |_, slot| starts[slot + 1] += 1);
        for i in 0..len {
            starts[i + 1] += starts[i];
        }
        let mut slots = vec![0u32; len];
        each_pick(&reduced, cycle, |index, slot| {
            slots[starts[slot] as usize] = index as u32;
            starts[slot] += 1;
        });
        Self { slots }
    }

    /// The instance index for the `cursor`-th pick, or `None` for an empty set.
    #[inline]
    pub(crate) fn pick(&self, cursor: usize) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        Some(self.slots[cursor % self.slots.len()] as usize)
    }

    #[cfg(test)]
    pub(crate) fn cycle(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_instance_gets_exactly_its_weight_per_cycle() {
        let weights = [30, 10, 20, 70, 10];
        let schedule = Schedule::new(&weights);
        assert_eq!(schedule.cycle(), 14);
        let mut counts = [0u64; 5];
        for c in 0..14 {
            counts[schedule.pick(c).unwrap()] += 1;
        }
        assert_eq!(counts, [3, 1, 2, 7, 1]);
    }

    #[test]
    fn picks_are_spread_not_bunched() {
        // Over any prefix of the cycle, every instance is within 1.5 picks of its exact share.
        let mut rng = fastrand::Rng::with_seed(9);
        for _ in 0..50 {
            let weights: Vec<u64> = (0..rng.usize(1..40)).map(|_| rng.u64(1..100)).collect();
            let schedule = Schedule::new(&weights);
            let cycle = schedule.cycle();
            let total: u64 = weights.iter().sum();
            let mut counts = vec![0f64; weights.len()];
            for t in 0..cycle {
                counts[schedule.pick(t).unwrap()] += 1.0;
                for (i, w) in weights.iter().enumerate() {
                    let ideal = (t + 1) as f64 * *w as f64 / total as f64;
                    assert!(
                        (counts[i] - ideal).abs() <= 1.5,
                        "{weights:?}: instance {i} at pick {t}: {} vs {ideal:.2}",
                        counts[i]
                    );
                }
            }
        }
    }

    #[test]
    fn huge_totals_are_scaled_to_the_longest_cycle() {
        let weights = [1_000_003, 999_983, 10_000_019, 7];
        let schedule = Schedule::new(&weights);
        assert!(schedule.cycle() as u64 <= MAX_CYCLE + weights.len() as u64);
        let mut counts = [0u64; 4];
        for c in 0..schedule.cycle() {
            counts[schedule.pick(c).unwrap()] += 1;
        }
        let total: u64 = weights.iter().sum();
        for (i, w) in weights.iter().enumerate() {
            let share = counts[i] as f64 / schedule.cycle() as f64;
            assert!((share - *w as f64 / total as f64).abs() <= 1.0 / MAX_CYCLE as f64 * 2.0);
        }
        assert!(counts[3] >= 1, "the lightest instance still gets a slot");
    }
}

//! Least request (gRPC A48, Envoy's `LEAST_REQUEST`): two candidates drawn by weight from an
//! alias table (so weights and warm-up set the shares while nothing is in flight), and the one
//! with fewer calls in flight per unit of weight wins; a tie goes to the first drawn. O(1) per
//! pick: two table lookups and two atomic loads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::weighted_random::AliasTable;

#[derive(Debug)]
pub(crate) struct LeastRequest {
    table: AliasTable,
    /// Per choice, side by side so that a pick reads one entry and one counter: the calls in
    /// flight and `1 / weight` (the score is `in_flight / weight`).
    choices: Vec<(Arc<AtomicUsize>, f64)>,
}

impl LeastRequest {
    /// Over `weights` (effective, warm-up applied) and the in-flight counters of the same
    /// choices.
    pub(crate) fn new(
        weights: &[f64],
        in_flight: impl IntoIterator<Item = Arc<AtomicUsize>>,
    ) -> Self {
        Self {
            table: AliasTable::new(weights),
            choices: in_flight
                .into_iter()
                .zip(weights)
                .map(|(count, w)| (count, if *w > 0.0 { 1.0 / w } else { f64::MAX }))
                .collect(),
        }
    }

    /// The winning choice of two draws.
    #[inline]
    pub(crate) fn pick(&self, rng: &mut fastrand::Rng) -> Option<usize> {
        let a = self.table.pick(rng)?;
        let b = self.table.pick(rng)?;
        if a == b {
            return Some(a);
        }
        let score = |k: usize| {
            let (count, inverse) = &self.choices[k];
            count.load(Ordering::Relaxed) as f64 * inverse
        };
        Some(if score(b) < score(a) { b } else { a })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_less_loaded_of_two_wins_and_idle_shares_follow_the_weights() {
        let counts: Vec<Arc<AtomicUsize>> = (0..2).map(|_| Arc::default()).collect();
        let picker = LeastRequest::new(&[1.0, 3.0], counts.clone());
        let mut rng = fastrand::Rng::with_seed(5);
        let share = |rng: &mut fastrand::Rng| {
            let ones = (0..40_000).filter(|_| picker.pick(rng) == Some(1)).count();
            f64::from(ones as u32) / 40_000.0
        };
        let idle = share(&mut rng);
        assert!((idle - 0.75).abs() < 0.02, "{idle}");
        // Choice 1 has 100 in flight (33 per unit of weight), choice 0 one: 0 wins every time
        // both are drawn, so 1 keeps only the draws of itself twice (9/16).
        counts[1].store(100, Ordering::Relaxed);
        counts[0].store(1, Ordering::Relaxed);
        let loaded = share(&mut rng);
        assert!((loaded - 9.0 / 16.0).abs() < 0.02, "{loaded}");
        assert_eq!(LeastRequest::new(&[], []).pick(&mut rng), None);
    }
}

//! Least request (gRPC A48, Envoy's `LEAST_REQUEST`): two candidates drawn by weight from an
//! alias table (so weights and warm-up set the shares while nothing is in flight), and the one
//! with fewer calls in flight per unit of weight wins; a tie goes to the first drawn. O(1) per
//! pick: two table lookups and two atomic loads.

use super::weighted_random::AliasTable;

#[derive(Debug)]
pub(crate) struct LeastRequest {
    table: AliasTable,
    /// `1 / weight` of each choice: the score is `in_flight / weight`.
    inverse: Vec<f64>,
}

impl LeastRequest {
    /// Over `weights` (effective, warm-up applied), one per choice.
    pub(crate) fn new(weights: &[f64]) -> Self {
        Self {
            table: AliasTable::new(weights),
            inverse: weights
                .iter()
                .map(|w| if *w > 0.0 { 1.0 / w } else { f64::MAX })
                .collect(),
        }
    }

    /// The winning choice of two draws, `in_flight(k)` giving the calls in flight to choice `k`.
    #[inline]
    pub(crate) fn pick(
        &self,
        rng: &mut fastrand::Rng,
        in_flight: impl Fn(usize) -> usize,
    ) -> Option<usize> {
        let a = self.table.pick(rng)?;
        let b = self.table.pick(rng)?;
        if a == b {
            return Some(a);
        }
        let score = |k: usize| in_flight(k) as f64 * self.inverse[k];
        Some(if score(b) < score(a) { b } else { a })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_less_loaded_of_two_wins_and_idle_shares_follow_the_weights() {
        let picker = LeastRequest::new(&[1.0, 3.0]);
        let mut rng = fastrand::Rng::with_seed(5);
        let idle = (0..40_000)
            .filter(|_| picker.pick(&mut rng, |_| 0) == Some(1))
            .count();
        assert!(
            (f64::from(idle as u32) / 40_000.0 - 0.75).abs() < 0.02,
            "{idle}"
        );
        // Choice 1 has 100 in flight (33 per unit of weight), choice 0 one: 0 wins every time
        // both are drawn, so 1 keeps only the draws of itself twice (9/16).
        let loaded = (0..40_000)
            .filter(|_| picker.pick(&mut rng, |k| if k == 1 { 100 } else { 1 }) == Some(1))
            .count();
        let share = f64::from(loaded as u32) / 40_000.0;
        assert!((share - 9.0 / 16.0).abs() < 0.02, "{share}");
        assert_eq!(LeastRequest::new(&[]).pick(&mut rng, |_| 0), None);
    }
}

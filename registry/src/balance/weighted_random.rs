//! Weighted random with Vose's alias method: each pick chooses an instance with probability
//! proportional to its (warm-up adjusted) weight, in O(1) whatever the number of instances.

/// One column of the alias table: keep the column's own instance with probability
/// `threshold / 2^32`, otherwise take `alias`.
#[derive(Clone, Copy, Debug)]
struct Column {
    threshold: u64,
    alias: u32,
}

/// An alias table over one set of weights, built in O(n) when the set changes; picking is one
/// random number, one table read and one comparison, with no lock.
#[derive(Debug)]
pub(crate) struct AliasTable {
    columns: Vec<Column>,
}

const ONE: f64 = (1u64 << 32) as f64;

impl AliasTable {
    /// Builds the table for `weights` (non-negative; all zero or empty gives an empty table).
    pub(crate) fn new(weights: &[f64]) -> Self {
        let n = weights.len();
        let total: f64 = weights.iter().sum();
        if n == 0 || total <= 0.0 || !total.is_finite() {
            return Self {
                columns: Vec::new(),
            };
        }
        // Each column holds `n / total` of the probability mass per unit of weight: on average
        // exactly 1. Vose: pair every column under 1 with one over 1 that tops it up.
        let mut scaled: Vec<f64> = weights.iter().map(|w| w * n as f64 / total).collect();
        let mut columns = vec![
            Column {
                threshold: 1 << 32,
                alias: 0,
            };
            n
        ];
        let (mut small, mut large): (Vec<u32>, Vec<u32>) =
            (0..n as u32).partition(|&i| scaled[i as usize] < 1.0);
        while let (Some(&s), Some(&l)) = (small.last(), large.last()) {
            small.pop();
            let (si, li) = (s as usize, l as usize);
            columns[si] = Column {
                threshold: (scaled[si] * ONE) as u64,
                alias: l,
            };
            scaled[li] -= 1.0 - scaled[si];
            if scaled[li] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        // Whatever is left is 1 up to rounding: it keeps its own column (threshold 2^32).
        for i in small.into_iter().chain(large) {
            columns[i as usize] = Column {
                threshold: 1 << 32,
                alias: i,
            };
        }
        Self { columns }
    }

    /// The index of the picked weight, or `None` for an empty table.
    #[inline]
    pub(crate) fn pick(&self, rng: &mut fastrand::Rng) -> Option<usize> {
        let n = self.columns.len() as u64;
        if n == 0 {
            return None;
        }
        let r = rng.u64(..);
        // The high half picks the column (multiply-shift), the low half tosses its coin.
        let index = (((r >> 32) * n) >> 32) as usize;
        let column = self.columns[index];
        if (r & 0xffff_ffff) < column.threshold {
            Some(index)
        } else {
            Some(column.alias as usize)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_follow_the_weights() {
        let weights = [1.0, 0.0, 3.0, 6.0, 0.5];
        let table = AliasTable::new(&weights);
        let total: f64 = weights.iter().sum();
        let mut rng = fastrand::Rng::with_seed(3);
        let mut counts = [0usize; 5];
        let picks = 200_000;
        for _ in 0..picks {
            counts[table.pick(&mut rng).unwrap()] += 1;
        }
        for (i, w) in weights.iter().enumerate() {
            let share = counts[i] as f64 / picks as f64;
            assert!((share - w / total).abs() < 0.005, "{i}: {share}");
        }
        assert_eq!(counts[1], 0, "a zero weight is never picked");
    }

    #[test]
    fn empty_or_weightless_picks_nothing() {
        let mut rng = fastrand::Rng::with_seed(1);
        assert!(AliasTable::new(&[]).pick(&mut rng).is_none());
        assert!(AliasTable::new(&[0.0, 0.0]).pick(&mut rng).is_none());
    }
}

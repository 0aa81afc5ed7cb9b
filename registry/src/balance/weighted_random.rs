//! Weighted random: each pick chooses an instance with probability proportional to its
//! (warm-up adjusted) weight.

use std::sync::Arc;
use std::time::SystemTime;

use super::warmup::{effective_weight, warming};
use crate::discovery::Instance;

/// An immutable weighted-random picker over one instance set. Picking takes no lock.
#[derive(Debug)]
pub(crate) struct WeightedRandom {
    instances: Vec<Arc<Instance>>,
    /// Running sums of the full weights, for a binary search when nobody is warming up.
    cumulative: Vec<u64>,
    any_warmup: bool,
}

impl WeightedRandom {
    pub(crate) fn new(instances: Vec<Arc<Instance>>) -> Self {
        let mut total = 0u64;
        let cumulative = instances
            .iter()
            .map(|i| {
                total += u64::from(i.weight.max(1));
                total
            })
            .collect();
        let any_warmup = instances
            .iter()
            .any(|i| !i.warmup.is_zero() && i.start_time.is_some());
        Self {
            instances,
            cumulative,
            any_warmup,
        }
    }

    pub(crate) fn pick(
        &self,
        rng: &mut fastrand::Rng,
        now: SystemTime,
        min_fraction: f64,
    ) -> Option<&Arc<Instance>> {
        let total = *self.cumulative.last()?;
        if self.any_warmup && self.instances.iter().any(|i| warming(i, now)) {
            let weights: Vec<f64> = self
                .instances
                .iter()
                .map(|i| effective_weight(i, now, min_fraction))
                .collect();
            let mut point = rng.f64() * weights.iter().sum::<f64>();
            for (instance, weight) in self.instances.iter().zip(&weights) {
                if point < *weight {
                    return Some(instance);
                }
                point -= weight;
            }
            return self.instances.last();
        }
        let point = rng.u64(0..total);
        let index = self.cumulative.partition_point(|sum| *sum <= point);
        self.instances.get(index)
    }
}

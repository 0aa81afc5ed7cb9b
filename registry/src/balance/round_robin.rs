//! Smooth weighted round-robin, as nginx does it: over every `sum(weights)` picks each instance
//! is chosen exactly `weight` times, interleaved rather than in bursts.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::warmup::{effective_weight, warming};
use crate::discovery::Instance;

/// A smooth weighted round-robin picker over one instance set. The running weights sit behind
/// one short mutex (a few additions per pick).
#[derive(Debug)]
pub(crate) struct SmoothRoundRobin {
    instances: Vec<Arc<Instance>>,
    current: Mutex<Vec<i64>>,
    any_warmup: bool,
}

impl SmoothRoundRobin {
    pub(crate) fn new(instances: Vec<Arc<Instance>>) -> Self {
        let any_warmup = instances
            .iter()
            .any(|i| !i.warmup.is_zero() && i.start_time.is_some());
        Self {
            current: Mutex::new(vec![0; instances.len()]),
            instances,
            any_warmup,
        }
    }

    pub(crate) fn pick(&self, now: SystemTime, min_fraction: f64) -> Option<&Arc<Instance>> {
        if self.instances.is_empty() {
            return None;
        }
        let ramping = self.any_warmup && self.instances.iter().any(|i| warming(i, now));
        // Warm-up weights are scaled by 1000 so fractions survive the integer arithmetic.
        let weight = |i: &Instance| -> i64 {
            if ramping {
                (effective_weight(i, now, min_fraction) * 1000.0)
                    .round()
                    .max(1.0) as i64
            } else {
                i64::from(i.weight.max(1)) * 1000
            }
        };
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let mut total = 0;
        let mut best = 0;
        for (index, instance) in self.instances.iter().enumerate() {
            let w = weight(instance);
            current[index] += w;
            total += w;
            if current[index] > current[best] {
                best = index;
            }
        }
        current[best] -= total;
        self.instances.get(best)
    }
}

//! Deterministic subsetting: each client keeps about `size` of a service's instances, chosen
//! from its client id, so that a large fleet of clients does not open a connection to every
//! instance, connections spread evenly over the instances, and one instance more or less
//! moves few clients.

use std::net::SocketAddr;

use super::consistent_hash::hash;

/// Deterministic subsetting, for
/// [`BalancerBuilder::subset`](super::BalancerBuilder::subset): the balancer keeps only the
/// instances of this client's subset (after the tag filter; everything else, locality and
/// lanes included, works on the subset).
///
/// The algorithm is Google's deterministic subsetting (SRE book, "Load Balancing in the
/// Datacenter") with one change that keeps churn low. With `n` instances, `S = round(n /
/// size)` subsets make a *round*, and client `id` is in round `id / S`, subset `id % S`. Where
/// Google shuffles the instances per round and cuts the shuffled list into slices (so that one
/// instance more or less shifts every slice after it), here each instance goes to the subset
/// its hash with the round chooses, independently of the others. So:
///
/// - **Spread**: within a round every instance is in exactly one subset, so with client ids
///   `0..m` (an ordinal: a StatefulSet index, a worker number) every instance has
///   `m / S` clients, to within one. Ids that are not dense (hashes of host names) spread
///   like random subsets do (a binomial count per instance).
/// - **Churn**: an instance that leaves or joins changes one subset per round, so about
///   `1 / S` of the clients (`size / n`, the least possible: those whose subset it is in),
///   except when `S` itself changes (every `size` instances), which reshuffles everyone.
/// - Subset sizes vary around `size` (binomially, standard deviation about `√size`: 14 to 49
///   for `size` 30 over 1 000 clients of 300 instances), never empty while the
///   service has an instance; with `n < 1.5 × size` every client keeps every instance.
///
/// `BENCHMARKS.md` has the measured spread and churn for 1 000 clients of 300 instances.
///
/// ```
/// use service_registry::balance::{Balancer, Strategy, Subset};
/// use service_registry::{Info, Instance};
///
/// let set: Vec<Instance> = (1..=300u16)
///     .map(|p| Instance::from(&Info::new("s", format!("127.0.0.1:{p}").parse().unwrap())))
///     .collect();
/// let balancer = Balancer::builder(Strategy::WeightedRandom)
///     .subset(Subset::new(7, 30))
///     .build(set.clone());
/// let kept = balancer.instances().len();
/// assert!((15..=45).contains(&kept), "{kept}");
/// // Deterministic: the same id gets the same subset.
/// let again = Balancer::builder(Strategy::WeightedRandom).subset(Subset::new(7, 30)).build(set);
/// assert_eq!(again.instances(), balancer.instances());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subset {
    client_id: u64,
    size: usize,
}

impl Subset {
    /// The subset of client `client_id`, of about `size` instances (at least 1).
    ///
    /// See [`Subset`] for an example.
    pub fn new(client_id: u64, size: usize) -> Self {
        Self {
            client_id,
            size: size.max(1),
        }
    }

    /// How many subsets make a round for `n` instances.
    fn subsets(&self, n: usize) -> u64 {
        ((n as f64 / self.size as f64).round() as u64).max(1)
    }

    /// Whether the instance at `addr` is in this client's subset of `n` instances.
    fn keeps(&self, subsets: u64, addr: SocketAddr) -> bool {
        let round = self.client_id / subsets;
        let mine = self.client_id % subsets;
        bin(round, addr, subsets) == mine
    }

    /// The members of `addrs` (all of one service) this client keeps: indexes into `addrs`.
    /// Never empty when `addrs` is not.
    pub(crate) fn choose(&self, addrs: &[SocketAddr]) -> Vec<usize> {
        let subsets = self.subsets(addrs.len());
        if subsets <= 1 {
            return (0..addrs.len()).collect();
        }
        let kept: Vec<usize> = (0..addrs.len())
            .filter(|i| self.keeps(subsets, addrs[*i]))
            .collect();
        if !kept.is_empty() {
            return kept;
        }
        // An empty bin (rare: sizes are binomial around `size`): the one instance that ranks
        // highest for this subset, so that the client still has somewhere to go.
        let round = self.client_id / subsets;
        let mine = self.client_id % subsets;
        (0..addrs.len())
            .max_by_key(|i| hash((round, mine, addrs[*i])))
            .into_iter()
            .collect()
    }
}

/// The subset of round `round` that the instance at `addr` is in.
fn bin(round: u64, addr: SocketAddr, subsets: u64) -> u64 {
    // Multiply-shift: an unbiased bin from the hash's high bits.
    ((u128::from(hash((round, addr))) * u128::from(subsets)) >> 64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: u16) -> Vec<SocketAddr> {
        (1..=n)
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect()
    }

    #[test]
    fn small_sets_are_kept_whole_and_no_subset_is_empty() {
        assert_eq!(Subset::new(3, 10).choose(&addrs(14)).len(), 14);
        assert!(Subset::new(3, 10).choose(&[]).is_empty());
        for id in 0..2_000 {
            assert!(!Subset::new(id, 2).choose(&addrs(7)).is_empty(), "{id}");
        }
    }
}

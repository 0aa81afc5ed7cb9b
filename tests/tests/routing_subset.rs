//! Deterministic subsetting (`balance::Subset`), issue 20: 1 000 simulated clients (ids
//! 0..1000) of a 300-instance service, each keeping a subset of about 30, through
//! `Balancer::instances`. Checks the spread of clients over instances and measures churn when
//! one instance leaves or joins, next to Google's shuffle-and-slice algorithm on the same
//! sets as the baseline (printed with `--nocapture`; the figures are in BENCHMARKS.md).

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;

use service_registry::balance::{Balancer, Strategy, Subset};
use service_registry::{Info, Instance};

const CLIENTS: u64 = 1_000;
const INSTANCES: u16 = 300;
const SIZE: usize = 30;

fn set(ports: impl IntoIterator<Item = u16>) -> Vec<Instance> {
    ports
        .into_iter()
        .map(|p| Instance::from(&Info::new("svc", SocketAddr::from(([127, 0, 0, 1], p)))))
        .collect()
}

/// Every client's subset of `instances`, through a balancer.
fn subsets(instances: &[Instance]) -> Vec<BTreeSet<SocketAddr>> {
    (0..CLIENTS)
        .map(|id| {
            Balancer::builder(Strategy::WeightedRandom)
                .subset(Subset::new(id, SIZE))
                .build(instances.to_vec())
                .instances()
                .iter()
                .map(|i| i.addr)
                .collect()
        })
        .collect()
}

/// Google's deterministic subsetting as the SRE book gives it: per round a seeded shuffle,
/// cut into `n / size` slices.
fn google(instances: &[Instance]) -> Vec<BTreeSet<SocketAddr>> {
    let mut addrs: Vec<SocketAddr> = instances.iter().map(|i| i.addr).collect();
    addrs.sort();
    let count = (addrs.len() / SIZE) as u64;
    (0..CLIENTS)
        .map(|id| {
            let round = id / count;
            let mut shuffled = addrs.clone();
            fastrand::Rng::with_seed(round).shuffle(&mut shuffled);
            let slice = (id % count) as usize;
            shuffled[slice * SIZE..(slice + 1) * SIZE]
                .iter()
                .copied()
                .collect()
        })
        .collect()
}

/// The largest deviation of a per-instance client count from the mean, as a share of it.
fn spread(subsets: &[BTreeSet<SocketAddr>]) -> (f64, usize, usize) {
    let mut counts: HashMap<SocketAddr, usize> = HashMap::new();
    for subset in subsets {
        for addr in subset {
            *counts.entry(*addr).or_default() += 1;
        }
    }
    let total: usize = counts.values().sum();
    let mean = total as f64 / counts.len() as f64;
    let worst = counts
        .values()
        .map(|c| (*c as f64 - mean).abs() / mean)
        .fold(0.0, f64::max);
    let min = counts.values().copied().min().unwrap_or(0);
    let max = counts.values().copied().max().unwrap_or(0);
    (worst, min, max)
}

/// The share of clients whose subset differs.
fn churn(before: &[BTreeSet<SocketAddr>], after: &[BTreeSet<SocketAddr>]) -> f64 {
    let changed = before.iter().zip(after).filter(|(a, b)| a != b).count();
    changed as f64 / before.len() as f64
}

#[test]
fn thousand_clients_spread_evenly_over_300_instances_and_one_change_moves_few() {
    let full = set(1..=INSTANCES);
    let ours = subsets(&full);
    let (worst, min, max) = spread(&ours);
    let sizes: Vec<usize> = ours.iter().map(BTreeSet::len).collect();
    let (small, large) = (
        sizes.iter().min().copied().unwrap_or(0),
        sizes.iter().max().copied().unwrap_or(0),
    );
    println!(
        "subset spread: clients per instance {min}..={max} (mean {:.1}), worst {:.1} % off the mean; subset sizes {small}..={large}",
        CLIENTS as f64 * SIZE as f64 / f64::from(INSTANCES),
        worst * 100.0
    );
    assert!(
        worst <= 0.10,
        "worst instance {:.1} % off the mean",
        worst * 100.0
    );
    assert!(small >= 1, "an empty subset");

    // One instance leaves (each of 10 in turn) or joins (10 new ones in turn).
    let mut removal = Vec::new();
    let mut removal_google = Vec::new();
    let baseline = google(&full);
    for gone in (1..=INSTANCES).step_by(30) {
        let without = set((1..=INSTANCES).filter(|p| *p != gone));
        let after = subsets(&without);
        assert!(spread(&after).0 <= 0.10, "spread after {gone} left");
        removal.push(churn(&ours, &after));
        removal_google.push(churn(&baseline, &google(&without)));
    }
    let mut addition = Vec::new();
    for new in 0..10u16 {
        let with = set((1..=INSTANCES).chain([1_000 + new]));
        addition.push(churn(&ours, &subsets(&with)));
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (gone, joined, google_gone) = (mean(&removal), mean(&addition), mean(&removal_google));
    println!(
        "subset churn (share of clients whose subset changes, mean of 10): one leaves {:.1} %, one joins {:.1} %; Google's shuffle-and-slice when one leaves {:.1} % (ratio {:.2})",
        gone * 100.0,
        joined * 100.0,
        google_gone * 100.0,
        gone / google_gone
    );
    // The least possible is the clients whose subset holds the instance: size / n = 10 %.
    assert!(
        gone <= 0.12,
        "{:.1} % of clients changed subset",
        gone * 100.0
    );
    assert!(
        joined <= 0.12,
        "{:.1} % of clients changed subset",
        joined * 100.0
    );
    assert!(gone < google_gone, "no better than the baseline");
}

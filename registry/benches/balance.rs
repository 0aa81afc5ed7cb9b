//! Pick cost of each balancer for 10 / 100 / 1000 / 10 000 instances (least request also
//! with calls in flight), next to `tower::balance::p2c` on the same instance set (also with a tenth of the instances ejected);
//! the cost of reporting an outcome; the cost of a set change at 10 000 instances (also with
//! every weight `u32::MAX` for consistent hashing); and pick
//! throughput with 4 threads while the set changes 100 times a second.
//!
//! ```text
//! cargo bench -p service-registry --bench balance
//! ```

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkGroup, BenchmarkId, Criterion,
};
use service_registry::balance::{
    Balancer, Lanes, Locality, Outcome, OutlierDetection, Strategy, Subset,
};
use service_registry::{Info, Instance};
use tower::Service;

/// One pick as a caller makes it: by a random key on a hashing balancer (which gives `None` to
/// a keyless pick), an ordinary pick otherwise.
#[inline]
fn pick(balancer: &Balancer, rng: &mut fastrand::Rng) -> Option<Arc<Instance>> {
    if balancer.hashes() {
        balancer.pick_by_key(rng.u64(..))
    } else {
        balancer.pick_with(rng)
    }
}

fn instances(n: usize) -> Vec<Instance> {
    (0..n)
        .map(|i| {
            let mut info = Info::new(
                "bench",
                format!("10.0.{}.{}:80", i / 250, i % 250 + 1)
                    .parse()
                    .unwrap(),
            );
            info.weight = 10 + (i % 7) as u32 * 10;
            info.tags
                .insert("idc".into(), if i % 2 == 0 { "hz" } else { "sh" }.into());
            Instance::from(&info)
        })
        .collect()
}

/// The same set with every tenth instance started just now and warming up for an hour.
fn warming(n: usize) -> Vec<Instance> {
    let mut set = instances(n);
    for instance in set.iter_mut().step_by(10) {
        instance.start_time = Some(std::time::SystemTime::now());
        instance.warmup = Duration::from_secs(3600);
    }
    set
}

const STRATEGIES: [(&str, Strategy); 4] = [
    ("weighted_random", Strategy::WeightedRandom),
    ("smooth_round_robin", Strategy::SmoothRoundRobin),
    ("consistent_hash", Strategy::ConsistentHash),
    ("least_request", Strategy::LeastRequest),
];

fn pick_latency(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    group
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    for n in [10, 100, 1000, 10_000] {
        let set = instances(n);
        for (name, strategy) in STRATEGIES {
            let balancer = Balancer::builder(strategy).build(set.clone());
            let mut rng = fastrand::Rng::with_seed(1);
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| std::hint::black_box(pick(&balancer, &mut rng)))
            });
        }
        for (name, strategy) in [
            ("weighted_random_warming", Strategy::WeightedRandom),
            ("smooth_round_robin_warming", Strategy::SmoothRoundRobin),
        ] {
            let balancer = Balancer::builder(strategy).build(warming(n));
            let mut rng = fastrand::Rng::with_seed(1);
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| std::hint::black_box(pick(&balancer, &mut rng)))
            });
        }
        // Every tenth instance ejected (for an hour: the whole run).
        for (name, strategy) in STRATEGIES {
            let balancer = ejecting(strategy, &set);
            let mut rng = fastrand::Rng::with_seed(1);
            group.bench_with_input(
                BenchmarkId::new(format!("{name}_10pct_ejected"), n),
                &n,
                |b, _| b.iter(|| std::hint::black_box(pick(&balancer, &mut rng))),
            );
        }
        // Least request with calls in flight everywhere (0 to 4 per instance, by position):
        // the loads it compares are real counters, not all zero.
        {
            let balancer = Balancer::builder(Strategy::LeastRequest).build(set.clone());
            let _in_flight: Vec<_> = set
                .iter()
                .enumerate()
                .flat_map(|(i, instance)| (0..i % 5).map(|_| balancer.start(instance.addr)))
                .collect();
            let mut rng = fastrand::Rng::with_seed(1);
            group.bench_with_input(BenchmarkId::new("least_request_loaded", n), &n, |b, _| {
                b.iter(|| std::hint::black_box(pick(&balancer, &mut rng)))
            });
        }
        // tower's power-of-two-choices over the same addresses: poll_ready picks, call sends.
        let services: Vec<_> = set
            .iter()
            .map(|i| {
                let addr = i.addr;
                tower::load::Constant::new(
                    tower::service_fn(move |_: ()| async move { Ok::<_, Infallible>(addr) }),
                    1,
                )
            })
            .collect();
        let mut p2c =
            tower::balance::p2c::Balance::new(tower::discover::ServiceList::new(services));
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        group.bench_with_input(BenchmarkId::new("tower_p2c", n), &n, |b, _| {
            b.iter(|| {
                assert!(matches!(p2c.poll_ready(&mut cx), Poll::Ready(Ok(()))));
                std::hint::black_box(p2c.call(()))
            })
        });
    }
    group.finish();
}

/// A balancer over `set` with every tenth instance ejected for an hour.
fn ejecting(strategy: Strategy, set: &[Instance]) -> Balancer {
    let balancer = Balancer::builder(strategy)
        .outlier_detection(
            OutlierDetection::new()
                .consecutive_failures(1)
                .base_ejection_time(Duration::from_secs(3600))
                .max_ejection_time(Duration::from_secs(3600)),
        )
        .build(set.to_vec());
    for instance in set.iter().step_by(10) {
        balancer.report(instance.addr, Outcome::Failure);
    }
    assert_eq!(balancer.ejected().len(), set.len().div_ceil(10));
    balancer
}

/// `Balancer::report`: a success in a clean set (no health records kept: nothing to do); a
/// success once records are kept (the streak is already 0: nothing written); and a failure
/// followed by a success (two writes), which is what a flaky instance costs; never ejecting.
fn report(c: &mut Criterion) {
    let mut group = c.benchmark_group("report");
    group
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    for n in [10, 10_000] {
        let set = instances(n);
        let balancer = Balancer::builder(Strategy::WeightedRandom).build(set.clone());
        let addr = set[n / 3].addr;
        group.bench_with_input(BenchmarkId::new("success_clean_set", n), &n, |b, _| {
            b.iter(|| balancer.report(std::hint::black_box(addr), Outcome::Success))
        });
        // One failure elsewhere: records are kept from now on.
        balancer.report(set[0].addr, Outcome::Failure);
        group.bench_with_input(BenchmarkId::new("success", n), &n, |b, _| {
            b.iter(|| balancer.report(std::hint::black_box(addr), Outcome::Success))
        });
        group.bench_with_input(BenchmarkId::new("failure_then_success", n), &n, |b, _| {
            b.iter(|| {
                balancer.report(std::hint::black_box(addr), Outcome::Failure);
                balancer.report(std::hint::black_box(addr), Outcome::Success);
            })
        });
    }
    group.finish();
}

/// A set change at 10 000 instances: the instances (moved in, as the watch does with what
/// discovery hands it) are wrapped, filtered and the picker rebuilt.
///
/// `rebuild/*` keeps the previous set alive until after the timing, so it measures our work;
/// `set_change/*` also frees the previous 10 000 instances (their tags and strings), which
/// discovery allocated and the change makes garbage.
fn rebuild(c: &mut Criterion) {
    let mut group = c.benchmark_group("rebuild");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    let n = 10_000;
    let cases = STRATEGIES
        .map(|(name, strategy)| (name, strategy, instances(n)))
        .into_iter()
        .chain([(
            "weighted_random_warming",
            Strategy::WeightedRandom,
            warming(n),
        )]);
    // Every weight `u32::MAX` (any writer can put that into a registry): bounded to MAX_WEIGHT,
    // it costs what the heaviest valid set costs.
    let hostile = instances(n)
        .into_iter()
        .map(|mut i| {
            i.weight = u32::MAX;
            i
        })
        .collect();
    let cases = cases.chain([(
        "consistent_hash_weights_u32_max",
        Strategy::ConsistentHash,
        hostile,
    )]);
    let with_health = (
        "weighted_random_with_health",
        Strategy::WeightedRandom,
        instances(n),
    );
    for (name, strategy, set) in cases.chain([with_health]) {
        let balancer = Balancer::builder(strategy).build(set.clone());
        if name.ends_with("with_health") {
            // A failure kept on record: every rebuild copies the health records.
            balancer.report(set[0].addr, Outcome::Failure);
        }
        timed_update(&mut group, name.to_string(), n, &balancer, &set);
        let id = BenchmarkId::new(format!("set_change/{name}"), n);
        group.bench_with_input(id, &n, |b, _| {
            b.iter_batched(
                || set.clone(),
                |s| balancer.update(s).unwrap(),
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

/// 4 threads picking while another thread replaces the instance set every 10 ms.
fn contended_throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick_4_threads_100_updates_per_s");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(10);
    const PICKS: u64 = 20_000;
    for (n, (name, strategy)) in [100, 10_000]
        .into_iter()
        .flat_map(|n| STRATEGIES.map(|s| (n, s)))
    {
        let set = instances(n);
        let balancer = Balancer::builder(strategy).build(set.clone());
        group.throughput(criterion::Throughput::Elements(4 * PICKS));
        group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
            b.iter_custom(|iters| {
                let stop = Arc::new(AtomicBool::new(false));
                let updater = {
                    let (balancer, stop, set) = (balancer.clone(), stop.clone(), set.clone());
                    std::thread::spawn(move || {
                        let mut flip = false;
                        while !stop.load(Ordering::Relaxed) {
                            // Alternate between the full set and the set without its last instance.
                            balancer
                                .update(if flip { &set } else { &set[..set.len() - 1] }.to_vec())
                                .unwrap();
                            flip = !flip;
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    })
                };
                let started = Instant::now();
                for _ in 0..iters {
                    let workers: Vec<_> = (0..4)
                        .map(|t| {
                            let balancer = balancer.clone();
                            std::thread::spawn(move || {
                                let mut rng = fastrand::Rng::with_seed(t);
                                for _ in 0..PICKS {
                                    std::hint::black_box(pick(&balancer, &mut rng));
                                }
                            })
                        })
                        .collect();
                    for w in workers {
                        w.join().unwrap();
                    }
                }
                let elapsed = started.elapsed();
                stop.store(true, Ordering::Relaxed);
                updater.join().unwrap();
                elapsed
            })
        });
    }
    group.finish();
}

/// `instances(n)` with priorities (`idc = hz` half at 0, the rest of each zone at 1 for every
/// fourth) and lanes (every tenth instance in lane `canary`).
fn routed(n: usize) -> Vec<Instance> {
    let mut set = instances(n);
    for (i, instance) in set.iter_mut().enumerate() {
        let priority = if i % 4 == 3 { "1" } else { "0" };
        instance.tags.insert("priority".into(), priority.into());
        if i % 10 == 0 {
            instance.tags.insert("lane".into(), "canary".into());
        }
    }
    set
}

/// `balancer.update(set)` timed, the previous set kept alive until after the timing (so the
/// figure is the rebuild, not the freeing of what it replaced).
fn timed_update<T: Clone + Into<Arc<Instance>>>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    id: String,
    n: usize,
    balancer: &Balancer,
    set: &[T],
) {
    group.bench_with_input(BenchmarkId::new(id, n), &n, |b, _| {
        b.iter_batched(
            || (set.to_vec(), balancer.instances()),
            |(s, previous)| {
                balancer.update(s).unwrap();
                previous
            },
            BatchSize::LargeInput,
        )
    });
}

/// Issue 20 routing: pick cost with zone-aware routing (local zone healthy; local zone with a
/// third of it ejected, so picks spill over: two alias tables per pick), with lanes (a canary
/// pick, a base pick), with subsetting, next to the plain pick of the same strategy in the same
/// run; and the rebuild of a 10 000 set with zones + priorities + lanes.
fn routing(c: &mut Criterion) {
    let mut group = c.benchmark_group("routing");
    group
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    let zoned = || Locality::new().zone("idc", "hz").priority_tag("priority");
    for n in [10, 1000, 10_000] {
        let set = routed(n);
        for (name, strategy) in [
            ("weighted_random", Strategy::WeightedRandom),
            ("least_request", Strategy::LeastRequest),
            ("smooth_round_robin", Strategy::SmoothRoundRobin),
            ("consistent_hash", Strategy::ConsistentHash),
        ] {
            let plain = Balancer::builder(strategy).build(set.clone());
            let mut rng = fastrand::Rng::with_seed(1);
            group.bench_with_input(BenchmarkId::new(format!("{name}/plain"), n), &n, |b, _| {
                b.iter(|| std::hint::black_box(pick(&plain, &mut rng)))
            });
            let local = Balancer::builder(strategy)
                .locality(zoned())
                .build(set.clone());
            group.bench_with_input(
                BenchmarkId::new(format!("{name}/zone_local"), n),
                &n,
                |b, _| b.iter(|| std::hint::black_box(pick(&local, &mut rng))),
            );
            // A third of the local primaries ejected (for an hour): local 1.4 × 2/3 = 93 %.
            let spilling = Balancer::builder(strategy)
                .locality(zoned())
                .outlier_detection(
                    OutlierDetection::new()
                        .consecutive_failures(1)
                        .base_ejection_time(Duration::from_secs(3600))
                        .max_ejection_time(Duration::from_secs(3600)),
                )
                .build(set.clone());
            for instance in set
                .iter()
                .filter(|i| i.tags["idc"] == "hz" && i.tags["priority"] == "0")
                .step_by(3)
            {
                spilling.report(instance.addr, Outcome::Failure);
            }
            group.bench_with_input(
                BenchmarkId::new(format!("{name}/zone_spill"), n),
                &n,
                |b, _| b.iter(|| std::hint::black_box(pick(&spilling, &mut rng))),
            );
            if strategy != Strategy::ConsistentHash {
                let lanes = Balancer::builder(strategy)
                    .lanes(Lanes::new("lane"))
                    .build(set.clone());
                group.bench_with_input(
                    BenchmarkId::new(format!("{name}/lane_canary"), n),
                    &n,
                    |b, _| {
                        b.iter(|| {
                            std::hint::black_box(lanes.pick_in_lane_with(Some("canary"), &mut rng))
                        })
                    },
                );
                group.bench_with_input(
                    BenchmarkId::new(format!("{name}/lane_base"), n),
                    &n,
                    |b, _| b.iter(|| std::hint::black_box(lanes.pick_in_lane_with(None, &mut rng))),
                );
            }
        }
    }
    let n = 10_000;
    let set = routed(n);
    for (name, builder) in [
        ("plain", Balancer::builder(Strategy::WeightedRandom)),
        (
            "zones_priorities_lanes",
            Balancer::builder(Strategy::WeightedRandom)
                .locality(zoned())
                .lanes(Lanes::new("lane")),
        ),
        (
            "subset_100",
            Balancer::builder(Strategy::WeightedRandom).subset(Subset::new(7, 100)),
        ),
    ] {
        let balancer = builder.build(set.clone());
        timed_update(&mut group, format!("rebuild/{name}"), n, &balancer, &set);
        // What a watched balancer rebuilds on a change: the instances come shared (an
        // `Instances` from discovery), so the rebuild wraps none of them in a new `Arc`.
        let shared: Vec<Arc<Instance>> = set.iter().cloned().map(Arc::new).collect();
        timed_update(
            &mut group,
            format!("rebuild_shared/{name}"),
            n,
            &balancer,
            &shared,
        );
    }
    group.finish();
}

criterion_group!(
    benches,
    pick_latency,
    report,
    rebuild,
    contended_throughput,
    routing
);
criterion_main!(benches);

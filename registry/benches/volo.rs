//! The load-balancing cost of one Volo call, side by side in one run: what Volo's
//! `LoadBalanceService` runs per call (`get_picker` + the first pick) through `VoloDiscover` +
//! `VoloBalance`, against Volo's own `StaticDiscover` + its default `WeightedRandomBalance`,
//! over the same 10 weighted instances. Rounds alternate so drift hits both alike.
//!
//! ```text
//! cargo bench -p service-registry --features volo --bench volo
//! ```

use std::future::Future;
use std::hint::black_box;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use service_registry::volo::{VoloBalance, VoloDiscover};
use service_registry::{Info, MemoryRegistry, Registry};
use volo::context::Endpoint;
use volo::discovery::{Discover, Instance as VoloInstance, StaticDiscover};
use volo::loadbalance::random::WeightedRandomBalance;
use volo::loadbalance::LoadBalance;
use volo::net::Address;
use volo::FastStr;

const ROUNDS: usize = 7;
/// Calls per round; `VOLO_BENCH_CALLS` overrides it (a short run under `valgrind --tool=callgrind`
/// counts the instructions of each side).
fn calls() -> usize {
    std::env::var("VOLO_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// What Volo's `LoadBalanceService` does per call: `get_picker`, then the first pick. Not
/// inlined, so a profile (callgrind) names each side's cost; the future is polled once (a known
/// key is ready at once: it awaits nothing).
#[inline(never)]
fn call<D: Discover, L: LoadBalance<D>>(
    balance: &L,
    endpoint: &Endpoint,
    discover: &D,
) -> Option<Address> {
    let future = std::pin::pin!(balance.get_picker(endpoint, discover));
    match future.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Ok(mut picker)) => picker.next(),
        Poll::Ready(Err(err)) => panic!("get_picker failed: {err}"),
        Poll::Pending => panic!("get_picker of a known key awaited"),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn run() {
    let service = "bench.volo.lb";
    let registry = MemoryRegistry::new();
    let mut volo_instances = Vec::new();
    for i in 0..10u16 {
        let mut info = Info::new(service, format!("10.0.0.{}:80", i + 1).parse().unwrap());
        info.weight = 10 + u32::from(i % 4) * 10;
        registry.register(&info).await.unwrap();
        volo_instances.push(Arc::new(VoloInstance {
            address: Address::Ip(info.addr),
            weight: info.weight,
            tags: Default::default(),
        }));
    }
    let endpoint = Endpoint::new(FastStr::new(service));
    let ours_discover = VoloDiscover::new(registry);
    let ours = VoloBalance::default();
    let theirs_discover = StaticDiscover::new(volo_instances);
    let theirs = WeightedRandomBalance::new();
    // The first call of each discovers its key (it may await); every later one is ready at once.
    ours.get_picker(&endpoint, &ours_discover).await.unwrap();
    theirs
        .get_picker(&endpoint, &theirs_discover)
        .await
        .unwrap();
    let calls = calls();
    let (mut ours_ns, mut theirs_ns) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let start = Instant::now();
        for _ in 0..calls {
            black_box(call(&ours, &endpoint, &ours_discover));
        }
        ours_ns.push(start.elapsed().as_nanos() as f64 / calls as f64);
        let start = Instant::now();
        for _ in 0..calls {
            black_box(call(&theirs, &endpoint, &theirs_discover));
        }
        theirs_ns.push(start.elapsed().as_nanos() as f64 / calls as f64);
    }
    let (o, t) = (median(ours_ns.clone()), median(theirs_ns.clone()));
    println!(
        "per call (get_picker + first pick, 10 instances, {calls} calls x {ROUNDS} rounds, medians): \
         VoloDiscover+VoloBalance {o:.1} ns, StaticDiscover+WeightedRandomBalance {t:.1} ns, ratio {:.2}x"
    , o / t);
    println!("  rounds ours {ours_ns:.1?}");
    println!("  rounds volo {theirs_ns:.1?}");
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing else we read.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

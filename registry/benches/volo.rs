//! The load-balancing cost of one Volo call, side by side in one run: what Volo's
//! `LoadBalanceService` runs per call (`get_picker` + the first pick) through `VoloDiscover` +
//! `VoloBalance`, against Volo's own `StaticDiscover` + its default `WeightedRandomBalance`,
//! over the same 10 weighted instances. Rounds alternate so drift hits both alike.
//!
//! ```text
//! cargo bench -p service-registry --features volo --bench volo
//! ```

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use service_registry::volo::{VoloBalance, VoloDiscover};
use service_registry::{Info, MemoryRegistry, Registry};
use volo::context::Endpoint;
use volo::discovery::{Instance as VoloInstance, StaticDiscover};
use volo::loadbalance::random::WeightedRandomBalance;
use volo::loadbalance::LoadBalance;
use volo::net::Address;
use volo::FastStr;

const ROUNDS: usize = 7;
const CALLS: usize = 1_000_000;

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
    let (mut ours_ns, mut theirs_ns) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let start = Instant::now();
        for _ in 0..CALLS {
            let mut picker = ours.get_picker(&endpoint, &ours_discover).await.unwrap();
            black_box(picker.next());
        }
        ours_ns.push(start.elapsed().as_nanos() as f64 / CALLS as f64);
        let start = Instant::now();
        for _ in 0..CALLS {
            let mut picker = theirs
                .get_picker(&endpoint, &theirs_discover)
                .await
                .unwrap();
            black_box(picker.next());
        }
        theirs_ns.push(start.elapsed().as_nanos() as f64 / CALLS as f64);
    }
    let (o, t) = (median(ours_ns.clone()), median(theirs_ns.clone()));
    println!(
        "per call (get_picker + first pick, 10 instances, {CALLS} calls x {ROUNDS} rounds, medians): \
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

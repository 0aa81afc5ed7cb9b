//! Volo figures (issue 19), side by side in one run:
//!
//! 1. a whole volo-grpc call over loopback to 3 in-process greeters through `VoloDiscover` +
//!    `VoloBalance`, against Volo's own `StaticDiscover` + its default `WeightedRandomBalance`
//!    (the load-balancing part alone: `registry/benches/volo.rs`);
//! 2. change-to-first-call: from a new instance's registration in etcd to its first call from a
//!    client that watches etcd through `VoloDiscover`.
//!
//! Rounds of each pair are interleaved, so drift on a shared machine hits both alike.
//!
//! ```text
//! cargo bench -p tests --features volo,etcd --bench volo_e2e
//! ```

#[path = "../tests/volo_support/mod.rs"]
mod volo_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use examples::volo_common::greeter;
use service_registry::etcd::{EtcdConfig, EtcdDiscovery, EtcdRegistry};
use service_registry::{MemoryRegistry, Registry};
use tests::fixtures::etcd::Etcd;
use volo::discovery::StaticDiscover;
use volo::loadbalance::random::WeightedRandomBalance;

const ROUNDS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

async fn rpc_cost() {
    const CALLS: usize = 5_000;
    let registry = MemoryRegistry::new();
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(volo_support::start_greeter(Arc::new(registry.clone()), Duration::ZERO).await);
    }
    let addrs: Vec<std::net::SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let (ours, _) = volo_support::client(Arc::new(registry.clone()), volo_support::SERVICE);
    let theirs = greeter::GreeterClientBuilder::new(volo_support::SERVICE)
        .load_balance(WeightedRandomBalance::new())
        .discover(StaticDiscover::from(addrs))
        .build();
    for client in [&ours, &theirs] {
        for _ in 0..500 {
            volo_support::hello(client).await.unwrap(); // connections up, caches warm
        }
    }
    let (mut ours_us, mut theirs_us) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        for (client, out) in [(&ours, &mut ours_us), (&theirs, &mut theirs_us)] {
            let start = Instant::now();
            for _ in 0..CALLS {
                volo_support::hello(client).await.unwrap();
            }
            out.push(start.elapsed().as_secs_f64() * 1e6 / CALLS as f64);
        }
    }
    let (o, t) = (median(ours_us.clone()), median(theirs_us.clone()));
    println!(
        "volo-grpc call over loopback (3 greeters, one caller, {CALLS} calls x {ROUNDS} rounds): \
         VoloDiscover+VoloBalance {o:.1} us, StaticDiscover+WeightedRandomBalance {t:.1} us, ratio {:.3}x \
         (rounds ours {ours_us:.1?}, volo {theirs_us:.1?})",
        o / t
    );
    for server in servers {
        server.stop().await;
    }
}

async fn change_to_first_call() {
    const SAMPLES: usize = 10;
    let etcd = Etcd::start().await;
    let config = || EtcdConfig::new(etcd.endpoints());
    let registry: Arc<dyn Registry> = Arc::new(EtcdRegistry::new(config()).unwrap());
    let first = volo_support::start_greeter(registry.clone(), Duration::ZERO).await;
    let (client, _) = volo_support::client(
        Arc::new(EtcdDiscovery::new(config())),
        volo_support::SERVICE,
    );
    volo_support::hello(&client).await.unwrap();
    let mut samples = Vec::new();
    for _ in 0..SAMPLES {
        // Its own registry: `serve` closes the registries it was given when it ends.
        let own: Arc<dyn Registry> = Arc::new(EtcdRegistry::new(config()).unwrap());
        let later = volo_support::start_greeter(own, Duration::ZERO).await;
        let registered = Instant::now();
        while later.served() == 0 {
            volo_support::hello(&client).await.unwrap();
            assert!(registered.elapsed() < Duration::from_secs(10));
        }
        samples.push(registered.elapsed().as_secs_f64() * 1e3);
        later.stop().await;
    }
    let mut sorted = samples.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "change to first call (etcd watch, {SAMPLES} instances added one by one, calls back to back): \
         median {:.2} ms, max {:.2} ms (all {samples:.2?})",
        sorted[SAMPLES / 2],
        sorted[SAMPLES - 1]
    );
    first.stop().await;
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        rpc_cost().await;
        change_to_first_call().await;
    });
}

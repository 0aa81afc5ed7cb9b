//! End-to-end Nacos figures, each approach on the same rnacos in one run, rounds interleaved.
//!
//! ```text
//! cargo bench -p tests --features nacos --bench nacos_e2e
//! ```
//!
//! 1. Register N=1000 instances (1000 services) until the server has acknowledged each, on a
//!    fresh connection each round:
//!    - ours: `NacosRegistry`, all `register` calls at once, as the registrar makes them (one
//!      connection, requests multiplexed on it);
//!    - the Kitex way: one `RegisterInstance` after another, each waiting for its answer (what
//!      nacos-sdk-go v2 does per Kitex `Register` call, on the same gRPC protocol).
//! 2. Register → watch latency: `NacosDiscovery::watch` (Nacos push) vs the floor, a client
//!    polling the open API every millisecond for the instance to appear.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use service_registry::nacos::{NacosConfig, NacosDiscovery, NacosRegistry};
use service_registry::{Discovery, Info, Registry};
use tests::fixtures::nacos::Nacos;

const N: usize = 1000;
const ROUNDS: usize = 6;

fn config(nacos: &Nacos) -> NacosConfig {
    NacosConfig::new("127.0.0.1", nacos.http_port).grpc_port(nacos.grpc_port)
}

fn infos(prefix: &str) -> Vec<Info> {
    (0..N)
        .map(|i| {
            let mut info = Info::new(
                format!("{prefix}{i:04}"),
                SocketAddr::from(([127, 0, 0, 1], 10_000 + i as u16)),
            );
            info.tags.insert("idc".into(), "hz".into());
            info
        })
        .collect()
}

async fn ours(nacos: &Nacos, prefix: &str) -> Duration {
    let registry = NacosRegistry::new(config(nacos)).unwrap();
    let batch = infos(prefix);
    // Connect first: both ways are timed on a live connection.
    registry.register(&batch[0]).await.unwrap();
    let started = Instant::now();
    let results = futures_util::future::join_all(batch.iter().map(|i| registry.register(i))).await;
    let elapsed = started.elapsed();
    assert!(results.iter().all(Result::is_ok));
    registry.close().await;
    elapsed
}

async fn kitex(nacos: &Nacos, prefix: &str) -> Duration {
    let registry = NacosRegistry::new(config(nacos)).unwrap();
    let batch = infos(prefix);
    registry.register(&batch[0]).await.unwrap();
    let started = Instant::now();
    for info in &batch {
        registry.register(info).await.unwrap();
    }
    let elapsed = started.elapsed();
    registry.close().await;
    elapsed
}

fn spread(v: &[Duration]) -> (Duration, Duration, Duration) {
    let mut v = v.to_vec();
    v.sort();
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let nacos = Nacos::start().await;
    println!(
        "N = {N} registrations, rnacos 0.8.8 at {}",
        nacos.http_addr()
    );

    let (mut o, mut k) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let a = ours(&nacos, &format!("ours{round}.")).await;
        let b = kitex(&nacos, &format!("kitex{round}.")).await;
        println!(
            "round {round}: ours {a:>9.1?}  Kitex way {b:>9.1?}  Kitex way/ours {:.1}",
            b.as_secs_f64() / a.as_secs_f64()
        );
        if round > 0 {
            o.push(a);
            k.push(b);
        }
    }
    let (om, omin, omax) = spread(&o);
    let (km, kmin, kmax) = spread(&k);
    println!(
        "\n## register {N}, median (min-max) of rounds 1-{}",
        ROUNDS - 1
    );
    println!("ours {om:.1?} ({omin:.1?}-{omax:.1?})   Kitex way {km:.1?} ({kmin:.1?}-{kmax:.1?})");
    println!(
        "Kitex way/ours = {:.1}",
        km.as_secs_f64() / om.as_secs_f64()
    );

    // 2. Register -> visible: the push to a watch vs polling the open API.
    let registry = NacosRegistry::new(config(&nacos)).unwrap();
    let discovery = NacosDiscovery::new(config(&nacos));
    let service = "latency.svc";
    let mut watch = discovery.watch(service).await.unwrap();
    let _ = watch.next().await;
    let rounds = 40;
    let (mut pushed, mut polled) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        let info = Info::new(
            service,
            SocketAddr::from(([127, 0, 0, 1], 20_000 + i as u16)),
        );
        let started = Instant::now();
        registry.register(&info).await.unwrap();
        // Both observers run at once: the floor polls the open API, the watch waits for the
        // push.
        let floor = async {
            loop {
                if nacos
                    .list(service)
                    .await
                    .iter()
                    .any(|h| h["port"] == info.addr.port())
                {
                    return started.elapsed();
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        let push = async {
            loop {
                let change = watch.next().await.unwrap();
                if change.all.iter().any(|i| i.addr == info.addr) {
                    return started.elapsed();
                }
            }
        };
        let (floor, push) = tokio::join!(floor, push);
        polled.push(floor);
        pushed.push(push);
        registry.deregister(&info).await.unwrap();
        loop {
            let change = watch.next().await.unwrap();
            if !change.all.iter().any(|i| i.addr == info.addr) {
                break;
            }
        }
    }
    pushed.sort();
    polled.sort();
    println!("\n## register -> visible, {rounds} registrations");
    println!(
        "watch (push): p50 {:.1?} p99 {:.1?}   open API poll every 1 ms: p50 {:.1?} p99 {:.1?}   push/poll p50 = {:.1}",
        percentile(&pushed, 0.5),
        percentile(&pushed, 0.99),
        percentile(&polled, 0.5),
        percentile(&polled, 0.99),
        percentile(&pushed, 0.5).as_secs_f64() / percentile(&polled, 0.5).as_secs_f64()
    );
    registry.close().await;
}

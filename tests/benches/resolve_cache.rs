//! `resolve` latency with and without a live watch, against real etcd and ZooKeeper on
//! loopback, side by side in one run.
//!
//! ```text
//! cargo bench -p tests --features etcd,zookeeper --bench resolve_cache
//! ```
//!
//! One service with 10 instances (Kitex values, one tag each). Two discoveries of the same
//! backend: one with no watch (every `resolve` is a round trip: an etcd range read, a ZooKeeper
//! list + 10 reads), one with a live watch on the service (`resolve` answers from the watch's
//! state). Each round makes 200 resolves on each, alternating which goes first; round 0 warms
//! up and is not counted. Reported: each round's median per resolve, then the median of the
//! counted rounds and their spread (lowest, highest), of each and of the ratio.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use service_registry::etcd::{EtcdConfig, EtcdDiscovery};
use service_registry::zookeeper::{ZookeeperConfig, ZookeeperDiscovery};
use service_registry::Discovery;
use tests::fixtures::etcd::Etcd;
use tests::fixtures::zookeeper::ZooKeeper;
use zookeeper_client::{Acls, CreateMode};

const SERVICE: &str = "cache.svc";
const INSTANCES: u16 = 10;
const PER_ROUND: usize = 200;
const ROUNDS: usize = 6;

/// The median time of one resolve over `PER_ROUND` resolves.
async fn median_resolve(discovery: &dyn Discovery) -> Duration {
    let mut times = Vec::with_capacity(PER_ROUND);
    for _ in 0..PER_ROUND {
        let started = Instant::now();
        let found = discovery.resolve(SERVICE).await.expect("resolve");
        times.push(started.elapsed());
        assert_eq!(found.len(), usize::from(INSTANCES));
    }
    times.sort();
    times[times.len() / 2]
}

fn spread<T: Copy + PartialOrd>(values: &[T]) -> (T, T, T) {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    (
        sorted[sorted.len() / 2],
        sorted[0],
        sorted[sorted.len() - 1],
    )
}

async fn compare(backend: &str, uncached: &dyn Discovery, cached: &dyn Discovery) {
    // The watch that serves `cached`; it must be in sync before measuring.
    let mut watch = cached.watch(SERVICE).await.expect("watch");
    let first = watch.next().await.expect("snapshot");
    assert_eq!(first.all.len(), usize::from(INSTANCES));
    println!("\n## {backend}: resolve of {INSTANCES} instances, median per resolve ({PER_ROUND} per round)");
    let mut rows = Vec::new();
    for round in 0..ROUNDS {
        let (u, c) = if round % 2 == 0 {
            let u = median_resolve(uncached).await;
            (u, median_resolve(cached).await)
        } else {
            let c = median_resolve(cached).await;
            (median_resolve(uncached).await, c)
        };
        let ratio = u.as_secs_f64() / c.as_secs_f64();
        println!(
            "round {round}{}: round trip {u:>9.1?}  from the watch {c:>9.1?}  round trip / cached {ratio:.0}",
            if round == 0 { " (warm-up)" } else { "" }
        );
        if round > 0 {
            rows.push((u, c, ratio));
        }
    }
    let (u, u_low, u_high) = spread(&rows.iter().map(|r| r.0).collect::<Vec<_>>());
    let (c, c_low, c_high) = spread(&rows.iter().map(|r| r.1).collect::<Vec<_>>());
    let (r, r_low, r_high) = spread(&rows.iter().map(|r| r.2).collect::<Vec<_>>());
    println!(
        "median [lowest, highest] of rounds 1-{}: round trip {u:.1?} [{u_low:.1?}, {u_high:.1?}]  cached {c:.1?} [{c_low:.1?}, {c_high:.1?}]  ratio {r:.0} [{r_low:.0}, {r_high:.0}]",
        rows.len()
    );
    drop(watch);
}

#[tokio::main]
async fn main() {
    let etcd = Etcd::start().await;
    let mut client = etcd.client().await;
    for port in 1..=INSTANCES {
        client
            .put(
                format!("kitex/registry-etcd/{SERVICE}/127.0.0.1:{port}"),
                format!(
                    r#"{{"network":"tcp","address":"127.0.0.1:{port}","weight":10,"tags":{{"idc":"hz"}}}}"#
                ),
                None,
            )
            .await
            .unwrap();
    }
    let config = EtcdConfig::new(etcd.endpoints());
    compare(
        "etcd",
        &EtcdDiscovery::new(config.clone()),
        &EtcdDiscovery::new(config),
    )
    .await;
    drop(etcd);

    let zk = ZooKeeper::start().await;
    let client = zk.client(None).await;
    let open = CreateMode::Persistent.with_acls(Acls::anyone_all());
    client
        .create(&format!("/{SERVICE}"), b"", &open)
        .await
        .unwrap();
    for port in 1..=INSTANCES {
        client
            .create(
                &format!("/{SERVICE}/127.0.0.1:{port}"),
                br#"{"Weight":10,"Tags":{"idc":"hz"}}"#,
                &open,
            )
            .await
            .unwrap();
    }
    let config = ZookeeperConfig::new(zk.connect_string());
    compare(
        "ZooKeeper",
        &ZookeeperDiscovery::new(config.clone()),
        &ZookeeperDiscovery::new(config),
    )
    .await;
}

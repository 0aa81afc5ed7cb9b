//! End-to-end ZooKeeper figures, each approach on the same ZooKeeper in one run.
//!
//! ```text
//! cargo bench -p tests --features zookeeper --bench zookeeper_e2e
//! ```
//!
//! Register N=1000 instances (10 services × 100 instances, Kitex's layout) until every node
//! exists, three ways, each on its own fresh session and with the service nodes already there
//! (the steady state after a first deployment):
//! - ours: `ZookeeperRegistry`, all `register` calls at once, as the registrar makes them;
//! - the Kitex way: one `Create` round trip after another;
//! - the floor: one raw multi-op holding all N creates.
//!
//! Then the same for ours and the Kitex way when the service nodes do not exist yet.

use std::time::{Duration, Instant};

use service_registry::zookeeper::{ZookeeperConfig, ZookeeperRegistry};
use service_registry::{Info, Registry};
use tests::fixtures::zookeeper::ZooKeeper;
use zookeeper_client::{Acls, Client, CreateMode};

const N: usize = 1000;
const SERVICES: usize = 10;

fn infos(prefix: &str) -> Vec<Info> {
    (0..N)
        .map(|i| {
            let mut info = Info::new(
                format!("{prefix}{}", i % SERVICES),
                format!("127.0.0.1:{}", 10000 + i).parse().unwrap(),
            );
            info.tags.insert("idc".into(), "hz".into());
            info
        })
        .collect()
}

fn data() -> &'static [u8] {
    br#"{"Weight":10,"Tags":{"idc":"hz"}}"#
}

async fn count(client: &Client, prefix: &str) -> usize {
    let mut total = 0;
    for s in 0..SERVICES {
        total += client
            .list_children(&format!("/{prefix}{s}"))
            .await
            .map(|c| c.len())
            .unwrap_or(0);
    }
    total
}

async fn make_parents(client: &Client, prefix: &str) {
    for s in 0..SERVICES {
        client
            .create(
                &format!("/{prefix}{s}"),
                b"",
                &CreateMode::Persistent.with_acls(Acls::anyone_all()),
            )
            .await
            .unwrap();
    }
}

async fn ours(zk: &ZooKeeper, prefix: &str) -> Duration {
    let registry = ZookeeperRegistry::new(ZookeeperConfig::new(zk.connect_string())).unwrap();
    // Let the session come up first: the figure is registration, not connection.
    let warm = Info::new(format!("{prefix}warm"), "127.0.0.1:1".parse().unwrap());
    registry.register(&warm).await.unwrap();
    let batch = infos(prefix);
    let started = Instant::now();
    let calls: Vec<_> = batch
        .into_iter()
        .map(|info| {
            let registry = registry.clone();
            tokio::spawn(async move { registry.register(&info).await.unwrap() })
        })
        .collect();
    for call in calls {
        call.await.unwrap();
    }
    let elapsed = started.elapsed();
    let check = zk.client(None).await;
    assert_eq!(count(&check, prefix).await, N);
    registry.close().await;
    elapsed
}

async fn kitex(zk: &ZooKeeper, prefix: &str) -> Duration {
    let client = zk.client(None).await;
    let ephemeral = CreateMode::Ephemeral.with_acls(Acls::anyone_all());
    let persistent = CreateMode::Persistent.with_acls(Acls::anyone_all());
    let started = Instant::now();
    for info in infos(prefix) {
        // Kitex's createNode: the parent (ignoring "node exists"), then the ephemeral node.
        let parent = format!("/{}", info.service_name);
        match client.create(&parent, b"", &persistent).await {
            Ok(_) | Err(zookeeper_client::Error::NodeExists) => {}
            Err(err) => panic!("{err}"),
        }
        client
            .create(&format!("{parent}/{}", info.addr), data(), &ephemeral)
            .await
            .unwrap();
    }
    let elapsed = started.elapsed();
    assert_eq!(count(&client, prefix).await, N);
    elapsed
}

async fn floor(zk: &ZooKeeper, prefix: &str) -> Duration {
    let client = zk.client(None).await;
    let ephemeral = CreateMode::Ephemeral.with_acls(Acls::anyone_all());
    let paths: Vec<String> = infos(prefix)
        .iter()
        .map(|i| format!("/{}/{}", i.service_name, i.addr))
        .collect();
    let started = Instant::now();
    let mut writer = client.new_multi_writer();
    for path in &paths {
        writer.add_create(path, data(), &ephemeral).unwrap();
    }
    writer.commit().await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(count(&client, prefix).await, N);
    elapsed
}

#[tokio::main]
async fn main() {
    let zk = ZooKeeper::start().await;
    let setup = zk.client(None).await;
    println!(
        "N = {N} instances over {SERVICES} services, ZooKeeper 3.8 at {}",
        zk.connect_string()
    );
    let mut rows = Vec::new();
    for round in 0..6 {
        for prefix in ["ours", "kitex", "floor"] {
            make_parents(&setup, &format!("{prefix}{round}.")).await;
        }
        let o = ours(&zk, &format!("ours{round}.")).await;
        let k = kitex(&zk, &format!("kitex{round}.")).await;
        let f = floor(&zk, &format!("floor{round}.")).await;
        println!("round {round}: ours {o:>9.1?}  Kitex way {k:>9.1?}  floor {f:>9.1?}  ours/floor {:.2}  Kitex/ours {:.1}", o.as_secs_f64() / f.as_secs_f64(), k.as_secs_f64() / o.as_secs_f64());
        // Round 0 warms up the JVM's JIT; it is printed but not counted.
        if round > 0 {
            rows.push((o, k, f));
        }
    }
    let median = |pick: fn(&(Duration, Duration, Duration)) -> Duration| {
        let mut v: Vec<Duration> = rows.iter().map(pick).collect();
        v.sort();
        v[v.len() / 2]
    };
    let (o, k, f) = (median(|r| r.0), median(|r| r.1), median(|r| r.2));
    println!("\n## register {N} (service nodes present), median of rounds 1-5");
    println!("ours {o:.1?}   Kitex way {k:.1?}   floor {f:.1?}");
    println!(
        "ours/floor = {:.2}   Kitex way/ours = {:.1}",
        o.as_secs_f64() / f.as_secs_f64(),
        k.as_secs_f64() / o.as_secs_f64()
    );

    let o = ours(&zk, "fresh.ours.").await;
    let k = kitex(&zk, "fresh.kitex.").await;
    println!("\n## register {N}, service nodes created on the way");
    println!(
        "ours {o:.1?}   Kitex way {k:.1?}   Kitex way/ours = {:.1}",
        k.as_secs_f64() / o.as_secs_f64()
    );
}

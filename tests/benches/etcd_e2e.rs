//! End-to-end etcd figures, each measured side by side with its baseline on one etcd in one run.
//!
//! ```text
//! cargo bench -p tests --features etcd --bench etcd_e2e
//! ```
//!
//! 1. Register N=1000 services until all are visible: `EtcdRegistry` (what the registrar does:
//!    all `register` calls at once) vs the Kitex approach (per instance: grant a lease, put on
//!    it, start its keep-alive; both sequentially, as one server after another starts, and all
//!    at once) vs the floor (one lease, sequential raw transactions of 128 puts).
//! 2. Keep-alive messages per minute for those N registrations (etcd's own
//!    `grpc_server_msg_received_total{grpc_method="LeaseKeepAlive"}`), ours vs Kitex's.
//! 3. Put → watch-notification latency, p50/p99: `EtcdDiscovery::watch` vs a raw etcd-client
//!    watch, both watching while the same puts happen.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions, PutOptions, Txn, TxnOp, WatchOptions};
use futures_util::StreamExt;
use service_registry::etcd::{EtcdConfig, EtcdDiscovery, EtcdRegistry};
use service_registry::{Discovery, Info, Registry};
use tests::fixtures::etcd::Etcd;
use tokio::sync::mpsc;

const N: usize = 1000;
const TTL: i64 = 15;

fn infos(service_prefix: &str) -> Vec<Info> {
    (0..N)
        .map(|i| {
            let mut info = Info::new(
                format!("{service_prefix}{i:04}"),
                format!("127.0.0.1:{}", 10000 + i).parse().unwrap(),
            );
            info.tags.insert("idc".into(), "hz".into());
            info
        })
        .collect()
}

fn value(info: &Info) -> String {
    format!(
        r#"{{"network":"tcp","address":"{}","weight":10,"tags":{{"idc":"hz"}}}}"#,
        info.addr
    )
}

fn key(info: &Info) -> String {
    format!("kitex/registry-etcd/{}/{}", info.service_name, info.addr)
}

async fn wait_visible(client: &mut Client, prefix: &str, count: i64) {
    loop {
        let got = client
            .get(
                prefix,
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await
            .unwrap()
            .count();
        if got >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn clear(client: &mut Client) {
    client
        .delete(
            "kitex/",
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    for lease in client.leases().await.unwrap().leases() {
        let _ = client.lease_revoke(lease.id()).await;
    }
}

/// The Kitex way for one instance: grant, put with the lease, keep it alive every TTL/3.
async fn kitex_register(mut client: Client, info: Info) -> tokio::task::JoinHandle<()> {
    let lease = client.lease_grant(TTL, None).await.unwrap().id();
    client
        .put(
            key(&info),
            value(&info),
            Some(PutOptions::new().with_lease(lease)),
        )
        .await
        .unwrap();
    let (mut keeper, mut stream) = client.lease_keep_alive(lease).await.unwrap();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(TTL as u64 / 3));
        tick.tick().await;
        loop {
            tick.tick().await;
            if keeper.keep_alive().await.is_err() || stream.message().await.is_err() {
                return;
            }
        }
    })
}

fn keepalive_messages(etcd: &Etcd) -> f64 {
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", etcd.members[0].client_port)).unwrap();
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    body.lines()
        .filter(|l| {
            l.starts_with("grpc_server_msg_received_total")
                && l.contains(r#"grpc_method="LeaseKeepAlive""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn per_minute(etcd: &Etcd, window: Duration) -> f64 {
    let before = keepalive_messages(etcd);
    tokio::time::sleep(window).await;
    (keepalive_messages(etcd) - before) * 60.0 / window.as_secs_f64()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let etcd = Etcd::start().await;
    let mut client = etcd.client().await;
    let config = EtcdConfig::new(etcd.endpoints()).lease_ttl(Duration::from_secs(TTL as u64));
    println!(
        "N = {N} registrations, lease TTL {TTL} s, etcd at {}",
        etcd.endpoint()
    );

    // 1. Registration until visible.
    let ours = {
        let registry = EtcdRegistry::new(config.clone()).unwrap();
        let batch = infos("ours.");
        let started = Instant::now();
        let calls = batch.iter().map(|info| {
            let registry = registry.clone();
            let info = info.clone();
            tokio::spawn(async move { registry.register(&info).await.unwrap() })
        });
        let calls: Vec<_> = calls.collect();
        for call in calls {
            call.await.unwrap();
        }
        wait_visible(&mut client, "kitex/registry-etcd/ours.", N as i64).await;
        let elapsed = started.elapsed();
        let rate = per_minute(&etcd, Duration::from_secs(TTL as u64)).await;
        registry.close().await;
        (elapsed, rate)
    };
    clear(&mut client).await;

    let kitex_sequential = {
        let batch = infos("kitexseq.");
        let started = Instant::now();
        let mut keepers = Vec::new();
        for info in batch {
            keepers.push(kitex_register(client.clone(), info).await);
        }
        wait_visible(&mut client, "kitex/registry-etcd/kitexseq.", N as i64).await;
        let elapsed = started.elapsed();
        let rate = per_minute(&etcd, Duration::from_secs(TTL as u64)).await;
        keepers.iter().for_each(|k| k.abort());
        (elapsed, rate)
    };
    clear(&mut client).await;

    let kitex_concurrent = {
        let batch = infos("kitexcon.");
        let started = Instant::now();
        let tasks: Vec<_> = batch
            .into_iter()
            .map(|info| tokio::spawn(kitex_register(client.clone(), info)))
            .collect();
        let mut keepers = Vec::new();
        for task in tasks {
            keepers.push(task.await.unwrap());
        }
        wait_visible(&mut client, "kitex/registry-etcd/kitexcon.", N as i64).await;
        let elapsed = started.elapsed();
        keepers.iter().for_each(|k| k.abort());
        elapsed
    };
    clear(&mut client).await;

    let floor = {
        let batch = infos("floor.");
        let started = Instant::now();
        let lease = client.lease_grant(TTL, None).await.unwrap().id();
        for chunk in batch.chunks(128) {
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|i| TxnOp::put(key(i), value(i), Some(PutOptions::new().with_lease(lease))))
                .collect();
            client.txn(Txn::new().and_then(ops)).await.unwrap();
        }
        wait_visible(&mut client, "kitex/registry-etcd/floor.", N as i64).await;
        started.elapsed()
    };
    clear(&mut client).await;

    println!("\n## register {N} until visible");
    println!("ours (EtcdRegistry, concurrent calls): {:>10.1?}", ours.0);
    println!(
        "Kitex way, sequential:                {:>10.1?}  ours is {:.1}x faster",
        kitex_sequential.0,
        kitex_sequential.0.as_secs_f64() / ours.0.as_secs_f64()
    );
    println!(
        "Kitex way, all at once:               {:>10.1?}  ours is {:.1}x faster",
        kitex_concurrent,
        kitex_concurrent.as_secs_f64() / ours.0.as_secs_f64()
    );
    println!(
        "floor (1 lease, txns of 128):          {:>10.1?}  ours / floor = {:.2}",
        floor,
        ours.0.as_secs_f64() / floor.as_secs_f64()
    );
    println!("\n## keep-alive messages per minute for {N} registrations (measured over {TTL} s)");
    println!(
        "ours: {:.0}/min   Kitex way: {:.0}/min   ratio {:.0}x",
        ours.1,
        kitex_sequential.1,
        kitex_sequential.1 / ours.1.max(1.0)
    );

    // 3. Put -> watch latency, both watchers on the same puts.
    let discovery = EtcdDiscovery::new(config.clone());
    let mut ours_watch = discovery.watch("lat.svc").await.unwrap();
    ours_watch.next().await.unwrap();
    let (ours_tx, mut ours_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while ours_watch.next().await.is_some() {
            let _ = ours_tx.send(Instant::now());
        }
    });
    let mut raw_client = etcd.client().await;
    let mut raw_watch = raw_client
        .watch(
            "kitex/registry-etcd/lat.svc/",
            Some(WatchOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(response)) = raw_watch.message().await {
            for _ in response.events() {
                let _ = raw_tx.send(Instant::now());
            }
        }
    });
    let (warmup, rounds) = (50, 1000);
    let (mut ours_lat, mut raw_lat) = (Vec::new(), Vec::new());
    for i in 0..warmup + rounds {
        let info = Info::new(
            "lat.svc",
            format!("127.0.0.1:{}", 20000 + i as u16).parse().unwrap(),
        );
        let started = Instant::now();
        client.put(key(&info), value(&info), None).await.unwrap();
        let (ours_at, raw_at) = (ours_rx.recv().await.unwrap(), raw_rx.recv().await.unwrap());
        if i >= warmup {
            ours_lat.push(ours_at - started);
            raw_lat.push(raw_at - started);
        }
    }
    ours_lat.sort();
    raw_lat.sort();
    let (o50, o99, r50, r99) = (
        percentile(&ours_lat, 0.5),
        percentile(&ours_lat, 0.99),
        percentile(&raw_lat, 0.5),
        percentile(&raw_lat, 0.99),
    );
    println!("\n## put -> watch notification, {rounds} puts (after {warmup} warm-up puts)");
    println!("EtcdDiscovery::watch: p50 {o50:>8.1?}  p99 {o99:>8.1?}");
    println!("raw etcd-client watch: p50 {r50:>8.1?}  p99 {r99:>8.1?}");
    println!(
        "ratio ours/raw: p50 {:.2}  p99 {:.2}",
        o50.as_secs_f64() / r50.as_secs_f64(),
        o99.as_secs_f64() / r99.as_secs_f64()
    );
}

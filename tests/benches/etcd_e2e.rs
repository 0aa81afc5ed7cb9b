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
//!
//! Method: on a 2-core machine a single measurement of a 20 ms figure moves by a third from one
//! run to the next, so 1. runs in rounds: round 0 warms etcd up and is printed but not counted,
//! then every round runs each approach once, in an order that rotates from round to round, and
//! the figures are the median of the counted rounds with their spread (lowest to highest, of
//! each approach and of each per-round ratio). 3. splits its puts into rounds the same way.
//! 2. counts messages, not time, and is measured once.

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

const ROUNDS: usize = 6;

/// One round of 1.: each approach's time until all N are visible.
#[derive(Clone, Copy, Debug, Default)]
struct Round {
    ours: Duration,
    kitex_sequential: Duration,
    kitex_concurrent: Duration,
    floor: Duration,
}

async fn ours_register(config: &EtcdConfig, client: &mut Client, prefix: &str) -> Duration {
    let registry = EtcdRegistry::new(config.clone()).unwrap();
    let batch = infos(prefix);
    let started = Instant::now();
    let calls: Vec<_> = batch
        .iter()
        .map(|info| {
            let registry = registry.clone();
            let info = info.clone();
            tokio::spawn(async move { registry.register(&info).await.unwrap() })
        })
        .collect();
    for call in calls {
        call.await.unwrap();
    }
    wait_visible(client, &format!("kitex/registry-etcd/{prefix}"), N as i64).await;
    let elapsed = started.elapsed();
    registry.close().await;
    elapsed
}

async fn kitex_sequential(client: &mut Client, prefix: &str) -> Duration {
    let started = Instant::now();
    let mut keepers = Vec::new();
    for info in infos(prefix) {
        keepers.push(kitex_register(client.clone(), info).await);
    }
    wait_visible(client, &format!("kitex/registry-etcd/{prefix}"), N as i64).await;
    let elapsed = started.elapsed();
    keepers.iter().for_each(|k| k.abort());
    elapsed
}

async fn kitex_concurrent(client: &mut Client, prefix: &str) -> Duration {
    let started = Instant::now();
    let tasks: Vec<_> = infos(prefix)
        .into_iter()
        .map(|info| tokio::spawn(kitex_register(client.clone(), info)))
        .collect();
    let mut keepers = Vec::new();
    for task in tasks {
        keepers.push(task.await.unwrap());
    }
    wait_visible(client, &format!("kitex/registry-etcd/{prefix}"), N as i64).await;
    let elapsed = started.elapsed();
    keepers.iter().for_each(|k| k.abort());
    elapsed
}

async fn floor(client: &mut Client, prefix: &str) -> Duration {
    let batch = infos(prefix);
    let started = Instant::now();
    let lease = client.lease_grant(TTL, None).await.unwrap().id();
    for chunk in batch.chunks(128) {
        let ops: Vec<TxnOp> = chunk
            .iter()
            .map(|i| TxnOp::put(key(i), value(i), Some(PutOptions::new().with_lease(lease))))
            .collect();
        client.txn(Txn::new().and_then(ops)).await.unwrap();
    }
    wait_visible(client, &format!("kitex/registry-etcd/{prefix}"), N as i64).await;
    started.elapsed()
}

/// The median of `values` and their lowest and highest.
fn spread<T: Copy + PartialOrd>(values: &[T]) -> (T, T, T) {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    (
        sorted[sorted.len() / 2],
        sorted[0],
        sorted[sorted.len() - 1],
    )
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

#[tokio::main]
async fn main() {
    let etcd = Etcd::start().await;
    let mut client = etcd.client().await;
    let config = EtcdConfig::new(etcd.endpoints()).lease_ttl(Duration::from_secs(TTL as u64));
    println!(
        "N = {N} registrations, lease TTL {TTL} s, etcd at {}, {ROUNDS} rounds (round 0 not counted)",
        etcd.endpoint()
    );

    // 1. Registration until visible, interleaved over rounds.
    println!("\n## register {N} until visible, per round");
    let mut rounds = Vec::new();
    for r in 0..ROUNDS {
        let mut round = Round::default();
        for k in 0..4 {
            // Rotate the order: each approach goes first in some round.
            match (k + r) % 4 {
                0 => round.ours = ours_register(&config, &mut client, &format!("ours{r}.")).await,
                1 => {
                    round.kitex_sequential =
                        kitex_sequential(&mut client, &format!("kitexseq{r}.")).await
                }
                2 => {
                    round.kitex_concurrent =
                        kitex_concurrent(&mut client, &format!("kitexcon{r}.")).await
                }
                _ => round.floor = floor(&mut client, &format!("floor{r}.")).await,
            }
            clear(&mut client).await;
        }
        println!(
            "round {r}{}: ours {:>9.1?}  Kitex seq {:>9.1?}  Kitex all at once {:>9.1?}  floor {:>9.1?}  ours/floor {:.2}  Kitex seq/ours {:.1}  Kitex all/ours {:.1}",
            if r == 0 { " (warm-up)" } else { "" },
            round.ours,
            round.kitex_sequential,
            round.kitex_concurrent,
            round.floor,
            ratio(round.ours, round.floor),
            ratio(round.kitex_sequential, round.ours),
            ratio(round.kitex_concurrent, round.ours),
        );
        if r > 0 {
            rounds.push(round);
        }
    }
    let counted = rounds.len();
    println!("\n## register {N} until visible: median [lowest, highest] of rounds 1-{counted}");
    for (name, pick) in [
        (
            "ours (EtcdRegistry, concurrent calls)",
            (|r: &Round| r.ours) as fn(&Round) -> Duration,
        ),
        ("Kitex way, sequential", |r: &Round| r.kitex_sequential),
        ("Kitex way, all at once", |r: &Round| r.kitex_concurrent),
        ("floor (1 lease, txns of 128)", |r: &Round| r.floor),
    ] {
        let (median, low, high) = spread(&rounds.iter().map(pick).collect::<Vec<_>>());
        println!("{name:<40} {median:>9.1?}  [{low:.1?}, {high:.1?}]");
    }
    for (name, pick) in [
        (
            "ours / floor",
            (|r: &Round| ratio(r.ours, r.floor)) as fn(&Round) -> f64,
        ),
        ("Kitex sequential / ours", |r: &Round| {
            ratio(r.kitex_sequential, r.ours)
        }),
        ("Kitex all at once / ours", |r: &Round| {
            ratio(r.kitex_concurrent, r.ours)
        }),
    ] {
        let (median, low, high) = spread(&rounds.iter().map(pick).collect::<Vec<_>>());
        println!("{name:<40} {median:>9.2}  [{low:.2}, {high:.2}]");
    }

    // 2. Keep-alive messages per minute, measured once for each way (a count, not a time).
    let window = Duration::from_secs(TTL as u64);
    let ours_rate = {
        let registry = EtcdRegistry::new(config.clone()).unwrap();
        for info in infos("rate.ours.") {
            registry.register(&info).await.unwrap();
        }
        let rate = per_minute(&etcd, window).await;
        registry.close().await;
        rate
    };
    clear(&mut client).await;
    let kitex_rate = {
        let mut keepers = Vec::new();
        for info in infos("rate.kitex.") {
            keepers.push(kitex_register(client.clone(), info).await);
        }
        let rate = per_minute(&etcd, window).await;
        keepers.iter().for_each(|k| k.abort());
        rate
    };
    clear(&mut client).await;
    println!("\n## keep-alive messages per minute for {N} registrations (measured over {TTL} s)");
    println!(
        "ours: {ours_rate:.0}/min   Kitex way: {kitex_rate:.0}/min   ratio {:.0}x",
        kitex_rate / ours_rate.max(1.0)
    );

    // 3. Put -> watch latency, both watchers on the same puts, in rounds.
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
    let (warmup, per_round, watch_rounds) = (50, 200, 5);
    println!(
        "\n## put -> watch notification, {watch_rounds} rounds of {per_round} puts (after {warmup} warm-up puts)"
    );
    let mut port = 20000u16;
    let mut put_and_time = async |client: &mut Client| {
        let info = Info::new("lat.svc", format!("127.0.0.1:{port}").parse().unwrap());
        port += 1;
        let started = Instant::now();
        client.put(key(&info), value(&info), None).await.unwrap();
        let (ours_at, raw_at) = (ours_rx.recv().await.unwrap(), raw_rx.recv().await.unwrap());
        (ours_at - started, raw_at - started)
    };
    for _ in 0..warmup {
        put_and_time(&mut client).await;
    }
    let mut ratios = Vec::new();
    let (mut all_ours, mut all_raw) = (Vec::new(), Vec::new());
    for r in 1..=watch_rounds {
        let (mut ours_lat, mut raw_lat) = (Vec::new(), Vec::new());
        for _ in 0..per_round {
            let (o, w) = put_and_time(&mut client).await;
            ours_lat.push(o);
            raw_lat.push(w);
        }
        all_ours.extend_from_slice(&ours_lat);
        all_raw.extend_from_slice(&raw_lat);
        ours_lat.sort();
        raw_lat.sort();
        let (o50, o99, r50, r99) = (
            percentile(&ours_lat, 0.5),
            percentile(&ours_lat, 0.99),
            percentile(&raw_lat, 0.5),
            percentile(&raw_lat, 0.99),
        );
        println!(
            "round {r}: EtcdDiscovery p50 {o50:>8.1?} p99 {o99:>8.1?}   raw p50 {r50:>8.1?} p99 {r99:>8.1?}   ratio p50 {:.2} p99 {:.2}",
            ratio(o50, r50),
            ratio(o99, r99)
        );
        ratios.push((ratio(o50, r50), ratio(o99, r99)));
    }
    all_ours.sort();
    all_raw.sort();
    println!(
        "all {} puts: EtcdDiscovery p50 {:.1?} p99 {:.1?}   raw p50 {:.1?} p99 {:.1?}",
        all_ours.len(),
        percentile(&all_ours, 0.5),
        percentile(&all_ours, 0.99),
        percentile(&all_raw, 0.5),
        percentile(&all_raw, 0.99)
    );
    let (p50, p50_low, p50_high) = spread(&ratios.iter().map(|r| r.0).collect::<Vec<_>>());
    let (p99, p99_low, p99_high) = spread(&ratios.iter().map(|r| r.1).collect::<Vec<_>>());
    println!(
        "ratio ours/raw, median [lowest, highest] of {watch_rounds} rounds: p50 {p50:.2} [{p50_low:.2}, {p50_high:.2}]  p99 {p99:.2} [{p99_low:.2}, {p99_high:.2}]"
    );
}

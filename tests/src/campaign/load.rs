//! Load: many services in one process (etcd, ZooKeeper), many watchers on one service, and a
//! memory watcher that never reads.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use etcd_client::GetOptions;
use futures_util::future::join_all;
use futures_util::{FutureExt, StreamExt};
use service_registry::etcd::{EtcdConfig, EtcdDiscovery, EtcdRegistry, DEFAULT_PREFIX};
use service_registry::zookeeper::{ZookeeperConfig, ZookeeperDiscovery, ZookeeperRegistry};
use service_registry::{Discovery, Info, MemoryRegistry, Registry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::report::Section;
use super::util::{fmt_duration, fmt_mib, loopback, peak_rss, rss, Dist};
use super::{Ctx, Scenario};
use crate::fixtures::etcd::Etcd;
use crate::fixtures::zookeeper::ZooKeeper;
use crate::proxy::FaultProxy;

fn per_minute(count: f64, window: Duration) -> f64 {
    count * 60.0 / window.as_secs_f64()
}

fn window_words(window: Duration) -> String {
    if window == Duration::from_secs(60) {
        "measured over 60 s".to_string()
    } else {
        format!("measured over {}, scaled to a minute", fmt_duration(window))
    }
}

/// One more registration right after the load, timed: the backend's task may still be busy with
/// work the load left behind. Returns whether it succeeded.
async fn probe<R: Registry>(registry: &R, section: &mut Section, n: usize) -> bool {
    let probe = Info::new("load.probe", loopback(30_001));
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(600), registry.register(&probe)).await;
    let took = started.elapsed();
    let (ok, outcome) = match result {
        Ok(Ok(())) => (true, "succeeded"),
        Ok(Err(_)) => (false, "failed"),
        Err(_) => (false, "had no answer"),
    };
    section.figure(format!(
        "one more register call, made right after the {n} registrations returned: {outcome} \
         after {}",
        fmt_duration(took)
    ));
    section.goal(
        format!(
            "that register call answers within 1 s ({})",
            fmt_duration(took)
        ),
        ok && took <= Duration::from_secs(1),
    );
    ok
}

/// `load_services` services registered by one EtcdRegistry.
pub(crate) async fn etcd(ctx: Ctx) -> Section {
    let mut section = Section::new(Scenario::LoadEtcd);
    let n = ctx.options.load_services;
    let window = ctx.options.traffic_window;
    let etcd = Etcd::start().await;
    let relay = FaultProxy::start(etcd.members[0].client_addr()).await;
    section.setup(format!(
        "1 etcd member; one EtcdRegistry (default settings: lease TTL 15 s, 128 operations per \
         transaction) registering {n} services (`load.svcNNNNN`) with one concurrent register \
         call each, through a loopback relay that counts bytes; RSS is this whole process's"
    ));
    let rss_before = rss();
    let registry = EtcdRegistry::new(EtcdConfig::new([format!("http://{}", relay.endpoint())]))
        .expect("an etcd registry");
    let infos: Vec<Info> = (0..n)
        .map(|i| Info::new(format!("load.svc{i:05}"), loopback(30_000)))
        .collect();
    let started = Instant::now();
    let results = join_all(infos.iter().map(|i| registry.register(i))).await;
    let took = started.elapsed();
    let failed = results.iter().filter(|r| r.is_err()).count() as u64;
    let rss_after = rss();
    let (up, down) = relay.bytes();
    let mut raw = etcd.client().await;
    let prefix = format!("{DEFAULT_PREFIX}/load.svc");
    let stored = raw
        .get(
            prefix.as_str(),
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .map(|r| r.count())
        .unwrap_or(-1);
    let lease = raw
        .get(
            format!("{DEFAULT_PREFIX}/load.svc00000/"),
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await
        .ok()
        .and_then(|r| r.kvs().first().map(|kv| kv.lease()))
        .unwrap_or(0);
    section.figure(format!(
        "registered {n} services in {} ({failed} calls failed); etcd holds {stored} keys",
        fmt_duration(took)
    ));
    section.figure(format!(
        "RSS before the registry {}, after registering {} (+{}); peak {}",
        fmt_mib(rss_before),
        fmt_mib(rss_after),
        fmt_mib(rss_after.saturating_sub(rss_before)),
        fmt_mib(peak_rss())
    ));
    section.figure(format!(
        "bytes while registering: {} to etcd, {} back",
        fmt_mib(up),
        fmt_mib(down)
    ));
    probe(&registry, &mut section, n).await;

    // Idle: keep-alive traffic. Every keep-alive resets the lease's remaining TTL, which a
    // separate client polls every 100 ms.
    let (up0, down0) = relay.bytes();
    let window_started = Instant::now();
    let mut renewals = 0u32;
    let mut last_ttl = i64::MAX;
    while window_started.elapsed() < window {
        if let Ok(response) = raw.lease_time_to_live(lease, None).await {
            if response.ttl() > last_ttl {
                renewals += 1;
            }
            last_ttl = response.ttl();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let measured = window_started.elapsed();
    let (up1, down1) = relay.bytes();
    section.figure(format!(
        "idle keep-alive traffic ({}): {:.0} bytes/min to etcd, {:.0} bytes/min back, {:.1} lease \
         renewals/min seen by etcd (1 lease for all {n} services)",
        window_words(measured),
        per_minute((up1 - up0) as f64, measured),
        per_minute((down1 - down0) as f64, measured),
        per_minute(f64::from(renewals), measured),
    ));
    let still = raw
        .get(
            prefix.as_str(),
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .map(|r| r.count())
        .unwrap_or(-1);
    let closing = Instant::now();
    registry.close().await;
    let close_took = closing.elapsed();
    let left = raw
        .get(
            prefix.as_str(),
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .map(|r| r.count())
        .unwrap_or(-1);
    section.figure(format!(
        "close (delete all, revoke the lease) took {}; keys left after it: {left}; connections \
         through the relay over the whole scenario: {}",
        fmt_duration(close_took),
        relay.accepted()
    ));
    section.zero("failed register calls", failed);
    section.zero(
        "registrations missing from etcd (after registering, and after the idle window)",
        (n as i64 - stored).unsigned_abs() + (n as i64 - still).unsigned_abs(),
    );
    section
}

/// `Received:` from ZooKeeper's `srvr` four-letter word.
async fn zk_packets_received(port: u16) -> Option<u64> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    stream.write_all(b"srvr").await.ok()?;
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(2), stream.read_to_string(&mut reply))
        .await
        .ok()?
        .ok()?;
    reply
        .lines()
        .find_map(|l| l.strip_prefix("Received: "))
        .and_then(|v| v.trim().parse().ok())
}

/// `load_services` services registered by one ZookeeperRegistry.
pub(crate) async fn zookeeper(ctx: Ctx) -> Section {
    let mut section = Section::new(Scenario::LoadZookeeper);
    let n = ctx.options.load_services;
    let window = ctx.options.traffic_window;
    let zk = ZooKeeper::start().await;
    let relay = FaultProxy::start(zk.addr()).await;
    section.setup(format!(
        "standalone ZooKeeper; one ZookeeperRegistry (default settings: session timeout 10 s, \
         up to 1000 creates per multi-op; root `/load`) registering {n} services \
         (`load.svcNNNNN`, so {n} parents and {n} ephemeral nodes) with one concurrent register \
         call each, through a loopback relay that counts bytes; RSS is this whole process's"
    ));
    let rss_before = rss();
    let registry = ZookeeperRegistry::new(ZookeeperConfig::new(relay.endpoint()).root("/load"))
        .expect("a ZooKeeper registry");
    let infos: Vec<Info> = (0..n)
        .map(|i| Info::new(format!("load.svc{i:05}"), loopback(30_000)))
        .collect();
    let started = Instant::now();
    let results = join_all(infos.iter().map(|i| registry.register(i))).await;
    let took = started.elapsed();
    let registered = Instant::now();
    let failed = results.iter().filter(|r| r.is_err()).count() as u64;
    let rss_after = rss();
    let (up, down) = relay.bytes();
    let count_nodes = || async {
        let raw = super::zookeeper::connect(&zk.connect_string()).await?;
        raw.count_descendants_number("/load").await.ok()
    };
    let stored = count_nodes().await.unwrap_or(0);
    section.figure(format!(
        "registered {n} services in {} ({failed} calls failed); ZooKeeper holds {stored} nodes \
         under /load (parents and instances)",
        fmt_duration(took)
    ));
    section.figure(format!(
        "RSS before the registry {}, after registering {} (+{}); peak {}",
        fmt_mib(rss_before),
        fmt_mib(rss_after),
        fmt_mib(rss_after.saturating_sub(rss_before)),
        fmt_mib(peak_rss())
    ));
    section.figure(format!(
        "bytes while registering: {} to ZooKeeper, {} back",
        fmt_mib(up),
        fmt_mib(down)
    ));
    let probed = probe(&registry, &mut section, n).await;
    // How long the registry keeps talking to ZooKeeper after the load (beyond its pings).
    let mut last = zk_packets_received(zk.port).await;
    let mut busy_packets = 0u64;
    let settled = loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let now = zk_packets_received(zk.port).await;
        let delta = match (last, now) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => 0,
        };
        last = now;
        if delta < 20 {
            break Some(registered.elapsed());
        }
        busy_packets += delta;
        if registered.elapsed() > Duration::from_secs(900) {
            break None;
        }
    };
    section.figure(format!(
        "ZooKeeper kept receiving 20 or more packets per 5 s until {} after the registrations \
         returned ({busy_packets} packets counted from the end of that register call)",
        settled
            .map(fmt_duration)
            .unwrap_or_else(|| "more than 15 min".into())
    ));
    let (up0, down0) = relay.bytes();
    let packets0 = zk_packets_received(zk.port).await;
    let window_started = Instant::now();
    tokio::time::sleep(window).await;
    let measured = window_started.elapsed();
    let packets1 = zk_packets_received(zk.port).await;
    let (up1, down1) = relay.bytes();
    let packets = match (packets0, packets1) {
        (Some(a), Some(b)) => format!(
            "{:.1} packets/min received by the server (`srvr`)",
            per_minute(b.saturating_sub(a) as f64, measured)
        ),
        _ => "packets not read".to_string(),
    };
    section.figure(format!(
        "idle session traffic ({}): {:.0} bytes/min to ZooKeeper, {:.0} bytes/min back, {packets} \
         (1 session for all {n} services)",
        window_words(measured),
        per_minute((up1 - up0) as f64, measured),
        per_minute((down1 - down0) as f64, measured),
    ));
    let still = count_nodes().await.unwrap_or(0);
    let closing = Instant::now();
    registry.close().await;
    let close_took = closing.elapsed();
    section.figure(format!(
        "close took {}; connections through the relay over the whole scenario: {}",
        fmt_duration(close_took),
        relay.accepted()
    ));
    section.zero("failed register calls", failed);
    section.zero(
        "registrations missing from ZooKeeper (after registering, and after the idle window)",
        (2 * n).abs_diff(stored) as u64 + (2 * n + 2 * usize::from(probed)).abs_diff(still) as u64,
    );
    section
}

/// Waits until `live` watchers reported `port` (or `deadline`); their receipt times.
async fn collect(
    rx: &mut mpsc::UnboundedReceiver<(u16, Instant)>,
    receipts: &mut HashMap<u16, Vec<Instant>>,
    port: u16,
    live: usize,
    deadline: Instant,
) -> Vec<Instant> {
    while receipts.get(&port).map_or(0, Vec::len) < live {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some((p, at))) => receipts.entry(p).or_default().push(at),
            _ => break,
        }
    }
    receipts.remove(&port).unwrap_or_default()
}

struct FanOut {
    setup: Duration,
    last: Dist,
    each: Dist,
    missed: u64,
    failed_watches: u64,
    rss_delta: u64,
}

/// `watchers` watches of `load.watched` through `discovery`; `rounds` new instances registered
/// through `registry`, each timed from the register call until every watcher has seen it.
async fn fan_out<D: Discovery, R: Registry>(
    discovery: &D,
    registry: &R,
    watchers: usize,
    rounds: usize,
) -> FanOut {
    registry
        .register(&Info::new("load.watched", loopback(31_000)))
        .await
        .expect("register the first instance");
    let rss_before = rss();
    let started = Instant::now();
    let streams = join_all((0..watchers).map(|_| discovery.watch("load.watched"))).await;
    let (tx, mut rx) = mpsc::unbounded_channel::<(u16, Instant)>();
    let mut tasks = Vec::new();
    let mut failed_watches = 0;
    for stream in streams {
        let Ok(mut stream) = stream else {
            failed_watches += 1;
            continue;
        };
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = std::collections::HashSet::new();
            while let Some(change) = stream.next().await {
                let now = Instant::now();
                for instance in &change.all {
                    if seen.insert(instance.addr.port()) {
                        let _ = tx.send((instance.addr.port(), now));
                    }
                }
            }
        }));
    }
    let live = tasks.len();
    let mut receipts: HashMap<u16, Vec<Instant>> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = collect(&mut rx, &mut receipts, 31_000, live, deadline).await;
    let setup = started.elapsed();
    let mut missed = (live - first.len()) as u64;
    let mut last = Dist::default();
    let mut each = Dist::default();
    for round in 0..rounds {
        let port = 31_001 + round as u16;
        let put = Instant::now();
        registry
            .register(&Info::new("load.watched", loopback(port)))
            .await
            .expect("register an instance");
        let deadline = Instant::now() + Duration::from_secs(30);
        let seen = collect(&mut rx, &mut receipts, port, live, deadline).await;
        missed += (live - seen.len()) as u64;
        for at in &seen {
            each.push(at.saturating_duration_since(put));
        }
        if let Some(latest) = seen.iter().max() {
            last.push(latest.saturating_duration_since(put));
        }
    }
    let rss_delta = rss().saturating_sub(rss_before);
    for task in tasks {
        task.abort();
    }
    FanOut {
        setup,
        last,
        each,
        missed,
        failed_watches,
        rss_delta,
    }
}

/// `watchers` watchers on one service, on etcd and on ZooKeeper.
pub(crate) async fn watchers(ctx: Ctx) -> Section {
    let mut section = Section::new(Scenario::Watchers);
    let n = ctx.options.watchers;
    let rounds = ctx.options.fanout_rounds;
    section.setup(format!(
        "per backend: one discovery client (EtcdDiscovery / ZookeeperDiscovery, default settings) \
         with {n} concurrent watches of `load.watched`; {rounds} times a new instance is \
         registered (one EtcdRegistry / ZookeeperRegistry, default settings) and timed from the \
         start of the register call until each watcher has it"
    ));
    let mut missed = 0;
    let mut failed = 0;
    {
        let etcd = Etcd::start().await;
        let config = EtcdConfig::new([etcd.endpoint()]);
        let registry = EtcdRegistry::new(config.clone()).expect("an etcd registry");
        let discovery = EtcdDiscovery::new(config);
        let result = fan_out(&discovery, &registry, n, rounds).await;
        report_fan_out(&mut section, "etcd", n, &result);
        missed += result.missed;
        failed += result.failed_watches;
        registry.close().await;
    }
    ctx.progress.note("etcd done");
    {
        let zk = ZooKeeper::start().await;
        let config = ZookeeperConfig::new(zk.connect_string());
        let registry = ZookeeperRegistry::new(config.clone()).expect("a ZooKeeper registry");
        let discovery = ZookeeperDiscovery::new(config);
        let result = fan_out(&discovery, &registry, n, rounds).await;
        report_fan_out(&mut section, "ZooKeeper", n, &result);
        missed += result.missed;
        failed += result.failed_watches;
        registry.close().await;
    }
    section.zero("watches that could not be started", failed);
    section.zero(
        "changes a watcher never reported (watcher × change, 30 s limit)",
        missed,
    );
    section
}

fn report_fan_out(section: &mut Section, name: &str, n: usize, result: &FanOut) {
    section.figure(format!(
        "{name}: {n} watches started and delivered their first snapshot in {}; RSS +{} while they ran",
        fmt_duration(result.setup),
        fmt_mib(result.rss_delta)
    ));
    section.figure(format!(
        "{name}: from the register call to the last watcher seeing the new instance: {}",
        result.last.summary()
    ));
    section.figure(format!(
        "{name}: from the register call to each watcher seeing it: {}",
        result.each.summary()
    ));
}

/// A MemoryRegistry watcher that never reads while `memory_changes` changes happen.
pub(crate) async fn memory_watcher(ctx: Ctx) -> Section {
    let mut section = Section::new(Scenario::MemoryWatcher);
    let changes = ctx.options.memory_changes;
    section.setup(format!(
        "MemoryRegistry with 10 instances of `flappy` and an 11th registered and deregistered in \
         turn {changes} times, while a watch stream is held and never read; then it is read"
    ));
    let registry = MemoryRegistry::new();
    for port in 1..=10 {
        registry
            .register(&Info::new("flappy", loopback(port)))
            .await
            .expect("register");
    }
    let flapping = Info::new("flappy", loopback(100));
    registry.register(&flapping).await.expect("register");
    let mut idle = registry.watch("flappy").await.expect("watch");
    let before = rss();
    let started = Instant::now();
    for i in 0..changes {
        if i % 2 == 0 {
            registry.deregister(&flapping).await.expect("deregister");
        } else {
            registry.register(&flapping).await.expect("register");
        }
    }
    let took = started.elapsed();
    let after = rss();
    // In address order, as every set is.
    let current = registry.resolve("flappy").await.expect("resolve");
    let first = tokio::time::timeout(Duration::from_secs(1), idle.next())
        .await
        .ok()
        .flatten();
    let mut queued = 0u64;
    while idle.next().now_or_never().flatten().is_some() {
        queued += 1;
    }
    let delivered = first.as_ref().map(|c| c.all.clone()).unwrap_or_default();
    let grown = after.saturating_sub(before);
    section.figure(format!(
        "{changes} changes in {}; RSS before {}, after {} (+{})",
        fmt_duration(took),
        fmt_mib(before),
        fmt_mib(after),
        fmt_mib(grown)
    ));
    section.figure(format!(
        "on reading: the first item holds {} instances (the current set: {}), {queued} more queued",
        delivered.len(),
        delivered == current
    ));
    section.zero(
        "items queued behind the latest state",
        queued + u64::from(delivered != current),
    );
    section.goal(
        format!("RSS growth under 20 MiB (+{})", fmt_mib(grown)),
        grown < 20 << 20,
    );
    section
}

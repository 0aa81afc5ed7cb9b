//! Nacos scenarios (against r-nacos): restarts keeping and wiping data and freezes under three
//! registries, many services in one process, many watchers on one service, and bad data next to
//! good data.
//!
//! What the campaign reads to judge the library is the store as Nacos' 1.x open API lists it
//! (`/nacos/v1/ns/instance/list`, the way nacos-sdk-go v1 and Kitex's v1 resolver read it), never
//! the library's own discovery.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::future::join_all;
use futures_util::StreamExt;
use service_registry::nacos::{NacosConfig, NacosDiscovery, NacosRegistry};
use service_registry::{Backoff, Change, Discovery, Info, Registry};

use super::presence::{observe, Present};
use super::report::Section;
use super::util::{
    fmt_duration, fmt_mib, loopback, peak_rss, random_duration, register_all, register_until_ok,
    rss, tally, Dist, EchoCaller,
};
use super::{Ctx, Scenario};
use crate::echo;
use crate::fixtures::nacos::{http, Nacos};

/// Registry instances ("processes") and services per instance in the restart scenario.
const PROCESSES: usize = 3;
const SERVICES: usize = 50;
/// How long after Nacos answers a registration may take before it counts as lost.
const LOST_AFTER: Duration = Duration::from_secs(20);
/// Heartbeat (health check) of the restart scenario's registries: a frozen server is noticed
/// after about twice this.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// `service/ip:port`, the campaign's name of one registration.
fn key(info: &Info) -> String {
    format!("{}/{}", info.service_name, info.addr)
}

/// The registries' settings: defaults except a short heartbeat and request timeout, so a
/// frozen server is noticed in the scenario's time.
fn config(nacos: &Nacos) -> NacosConfig {
    NacosConfig::new("127.0.0.1", nacos.http_port)
        .grpc_port(nacos.grpc_port)
        .heartbeat(HEARTBEAT)
        .request_timeout(Duration::from_secs(2))
}

/// The healthy, enabled instances of `service` as `ip:port`; `None` when Nacos did not answer.
pub(crate) async fn listed(addr: &str, service: &str) -> Option<Vec<String>> {
    let path = format!(
        "/nacos/v1/ns/instance/list?serviceName={service}&groupName=DEFAULT_GROUP&namespaceId="
    );
    let call = http(addr, "GET", &path, "");
    let (status, body) = tokio::time::timeout(Duration::from_secs(2), call)
        .await
        .ok()?
        .ok()?;
    if status != 200 {
        return None;
    }
    let json: serde_json::Value = serde_json::from_str(&body).ok()?;
    Some(
        json["hosts"]
            .as_array()
            .map(|hosts| {
                hosts
                    .iter()
                    .filter(|h| h["healthy"] != false && h["enabled"] != false)
                    .filter_map(|h| Some(format!("{}:{}", h["ip"].as_str()?, h["port"])))
                    .collect()
            })
            .unwrap_or_default(),
    )
}

/// Reads the registrations of a known set of services through the open API (one list per
/// service, all at once).
struct NacosReader {
    addr: String,
    services: BTreeSet<String>,
}

#[async_trait]
impl Present for NacosReader {
    async fn present(&mut self) -> Option<BTreeSet<String>> {
        let addr = self.addr.as_str();
        let lists = join_all(self.services.iter().map(|service| async move {
            listed(addr, service)
                .await
                .map(|addrs| (service.clone(), addrs))
        }))
        .await;
        let mut present = BTreeSet::new();
        for list in lists {
            let (service, addrs) = list?;
            present.extend(addrs.into_iter().map(|a| format!("{service}/{a}")));
        }
        Some(present)
    }
}

/// SIGSTOPs the server (every thread stopped before this returns).
fn freeze(nacos: &Nacos) {
    let pid = nacos.pid();
    assert!(crate::fixtures::stop(pid), "kill -STOP {pid} failed");
}

/// SIGCONT after [`freeze`].
fn thaw(nacos: &Nacos) {
    let pid = nacos.pid();
    assert!(
        crate::fixtures::signal(pid, "CONT"),
        "kill -CONT {pid} failed"
    );
}

fn service_of(key: &str) -> String {
    key.split_once('/')
        .map(|(s, _)| s)
        .unwrap_or(key)
        .to_string()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outage {
    Kept,
    Wiped,
    Frozen,
}

impl Outage {
    fn name(self) -> &'static str {
        match self {
            Outage::Kept => "kept data",
            Outage::Wiped => "wiped data",
            Outage::Frozen => "frozen",
        }
    }
}

#[derive(Default)]
struct PerOutage {
    restarts: usize,
    delays: Dist,
    all_back: Dist,
}

/// r-nacos restarted `nacos_restarts` times while three registries hold 50 services each.
pub(crate) async fn restarts(ctx: Ctx) -> Section {
    let mut section = Section::new(Scenario::NacosRestarts);
    let progress = ctx.progress.clone();
    let mut rng = ctx.rng();
    let count = ctx.options.nacos_restarts;

    let mut nacos = Nacos::start().await;
    let settings = config(&nacos);
    section.setup(format!(
        "1 r-nacos server (rnacos 0.8.8); {PROCESSES} NacosRegistry instances in this one process \
         (each its own gRPC connection; heartbeat {} s, request timeout 2 s, other settings \
         default: backoff 100 ms doubling to 2 s), each with {SERVICES} services pointing at its \
         own echo server",
        HEARTBEAT.as_secs()
    ));
    section.setup(
        "registrations are made like the registrar does (retried with backoff, woken when the \
         backend is healthy again); the store is read through the 1.x open API instance lists \
         (healthy, enabled instances), as nacos-sdk-go v1 reads it",
    );
    section.setup(format!(
        "each restart (a third of each kind, in random order): kept data (SIGKILL, restart), \
         wiped data (SIGKILL, delete the data directory, restart; r-nacos keeps ephemeral \
         instances in memory only, so both lose every instance), down 0.2–5 s, or frozen \
         (SIGSTOP) for 3–6 s (past the registries' heartbeat deadline); during each outage one \
         live service is deregistered and one new service is started; then every registration \
         is polled until all are back and 3 s have passed (a registration absent {} s after \
         r-nacos answered counts as lost); seed {}",
        LOST_AFTER.as_secs(),
        ctx.options.seed
    ));

    let mut processes = Vec::new();
    for _ in 0..PROCESSES {
        let registry = NacosRegistry::new(settings.clone()).expect("a Nacos registry");
        processes.push((registry, echo::Server::start().await));
    }
    let mut live: BTreeMap<String, (usize, Info)> = BTreeMap::new();
    for (i, (registry, echo)) in processes.iter().enumerate() {
        let infos: Vec<Info> = (0..SERVICES)
            .map(|s| Info::new(format!("campaign.svc{s:02}"), echo.addr))
            .collect();
        for info in &infos {
            live.insert(key(info), (i, info.clone()));
        }
        let late = register_all(registry, infos, Duration::from_secs(30)).await;
        assert_eq!(
            late, 0,
            "{late} initial registrations did not succeed in 30 s"
        );
    }
    let mut reader = NacosReader {
        addr: nacos.http_addr(),
        services: live.keys().map(|k| service_of(k)).collect(),
    };
    let initial: BTreeSet<String> = live.keys().cloned().collect();
    let first = observe(
        &mut reader,
        &initial,
        &BTreeSet::new(),
        Instant::now(),
        Duration::ZERO,
        Duration::from_secs(20),
        Duration::from_millis(20),
    )
    .await;
    assert!(
        first.missing.is_empty(),
        "initial registrations missing: {:?}",
        first.missing
    );
    progress.note(format!("{} registrations live", live.len()));
    let caller = EchoCaller::start(
        processes.iter().map(|(_, echo)| echo.addr).collect(),
        Duration::from_millis(100),
    );

    let mut deregistered: BTreeSet<String> = BTreeSet::new();
    let mut started: BTreeSet<String> = BTreeSet::new();
    let mut per: BTreeMap<&'static str, PerOutage> = BTreeMap::new();
    let mut downs: Vec<Duration> = Vec::new();
    let mut kinds: Vec<&'static str> = Vec::new();
    let mut lost = 0u64;
    let mut stale = 0u64;
    let mut dereg_tasks = Vec::new();
    let mut register_tasks = Vec::new();

    let mut outages: Vec<Outage> = (0..count)
        .map(|i| [Outage::Kept, Outage::Wiped, Outage::Frozen][i % 3])
        .collect();
    rng.shuffle(&mut outages);
    for (n, outage) in outages.iter().copied().enumerate() {
        let down = match outage {
            Outage::Frozen => {
                random_duration(&mut rng, Duration::from_secs(3), Duration::from_secs(6))
            }
            _ => random_duration(&mut rng, Duration::from_millis(200), Duration::from_secs(5)),
        };
        downs.push(down);
        kinds.push(outage.name());
        match outage {
            Outage::Kept => nacos.stop(),
            Outage::Wiped => {
                nacos.stop();
                nacos.wipe();
            }
            Outage::Frozen => freeze(&nacos),
        }
        let outage_started = Instant::now();

        // Churn while Nacos is away: one live service goes, one new one comes.
        tokio::time::sleep(random_duration(&mut rng, Duration::ZERO, down / 2)).await;
        let keys: Vec<String> = live.keys().cloned().collect();
        let victim = keys[rng.usize(0..keys.len())].clone();
        let (owner, info) = live.remove(&victim).expect("a live key");
        deregistered.insert(victim);
        let registry = processes[owner].0.clone();
        dereg_tasks.push(tokio::spawn(async move {
            tokio::time::timeout(Duration::from_secs(15), registry.deregister(&info)).await
        }));
        let owner = rng.usize(0..PROCESSES);
        let info = Info::new(format!("campaign.new{n:03}"), processes[owner].1.addr);
        started.insert(key(&info));
        reader.services.insert(info.service_name.to_string());
        live.insert(key(&info), (owner, info.clone()));
        register_tasks.push(tokio::spawn(register_until_ok(
            processes[owner].0.clone(),
            info,
        )));

        tokio::time::sleep_until((outage_started + down).into()).await;
        match outage {
            Outage::Frozen => thaw(&nacos),
            _ => nacos.restart().await,
        }
        let answering = Instant::now();
        let expected: BTreeSet<String> = live.keys().cloned().collect();
        let seen = observe(
            &mut reader,
            &expected,
            &deregistered,
            answering,
            Duration::from_secs(3),
            LOST_AFTER,
            Duration::from_millis(10),
        )
        .await;
        let entry = per.entry(outage.name()).or_default();
        entry.restarts += 1;
        for (_, delay) in &seen.delays {
            entry.delays.push(*delay);
        }
        if let Some(all_back) = seen.all_back {
            entry.all_back.push(all_back);
        }
        lost += seen.missing.len() as u64;
        stale += seen.stale.len() as u64;
        for key in &seen.missing {
            section.detail(format!(
                "restart {n} ({}, down {}): {key} not back {} s after r-nacos answered",
                outage.name(),
                fmt_duration(down),
                LOST_AFTER.as_secs()
            ));
        }
        for key in &seen.stale {
            section.detail(format!(
                "restart {n} ({}): deregistered {key} still listed {} s after r-nacos answered",
                outage.name(),
                LOST_AFTER.as_secs()
            ));
        }
        progress.note(format!(
            "restart {}/{count}: {}, down {}, {} re-registered, all back after {}, {} missing",
            n + 1,
            outage.name(),
            fmt_duration(down),
            seen.delays.len(),
            seen.all_back
                .map(fmt_duration)
                .unwrap_or_else(|| "never".into()),
            seen.missing.len()
        ));
    }

    let mut dereg_errors = 0u64;
    for task in dereg_tasks {
        if !matches!(task.await, Ok(Ok(Ok(())))) {
            dereg_errors += 1;
        }
    }
    let final_seen = observe(
        &mut reader,
        &live.keys().cloned().collect(),
        &deregistered,
        Instant::now(),
        Duration::from_secs(2),
        LOST_AFTER,
        Duration::from_millis(20),
    )
    .await;
    let (calls, call_errors, first_error) = caller.finish();
    if let Some(first) = first_error {
        section.detail(first);
    }
    for task in register_tasks {
        task.abort();
    }

    let mut downs_sorted = downs.clone();
    downs_sorted.sort();
    section.figure(format!(
        "restarts: {count} ({}); down time {} to {}",
        tally(kinds.iter().copied()),
        downs_sorted
            .first()
            .map(|d| fmt_duration(*d))
            .unwrap_or_default(),
        downs_sorted
            .last()
            .map(|d| fmt_duration(*d))
            .unwrap_or_default(),
    ));
    section.figure(format!(
        "during the outages: {} services deregistered ({dereg_errors} deregister calls returned \
         an error or timed out; the instance must go anyway), {} services started",
        deregistered.len(),
        started.len()
    ));
    let mut all_delays = Dist::default();
    for (name, entry) in &per {
        all_delays.extend(&entry.delays);
        section.figure(format!(
            "{name} ({} restarts): re-registration delay after r-nacos answered: {}",
            entry.restarts,
            entry.delays.summary()
        ));
        section.figure(format!(
            "{name}: every registration back after: {}",
            entry.all_back.summary()
        ));
    }
    section.figure(format!(
        "all restarts: re-registration delay after r-nacos answered: {}",
        all_delays.summary()
    ));
    section.figure(format!(
        "echo servers called every 100 ms through every outage: {calls} calls, {call_errors} failed"
    ));
    section.zero(
        "lost registrations (live, not back 20 s after r-nacos answered; instance × restart)",
        lost + final_seen.missing.len() as u64,
    );
    section.zero(
        "deregistered instances still listed 20 s after r-nacos answered",
        stale + final_seen.stale.len() as u64,
    );
    section.zero("serving errors (echo calls that failed)", call_errors);
    let max = all_delays.max().unwrap_or_default();
    section.goal(
        format!(
            "re-registration ≤ 1 s after r-nacos answers (max {})",
            fmt_duration(max)
        ),
        max <= Duration::from_secs(1),
    );
    for (registry, _) in &processes {
        registry.close().await;
    }
    section
}

/// `load_services` services registered by one NacosRegistry.
pub(crate) async fn load(ctx: Ctx) -> Section {
    let mut section = Section::new(Scenario::LoadNacos);
    let n = ctx.options.load_services;
    let nacos = Nacos::start().await;
    section.setup(format!(
        "1 r-nacos server; one NacosRegistry (default settings: one gRPC connection, 64 requests \
         in flight) registering {n} services (`load.svcNNNNN`) with one concurrent register call \
         each; RSS is this whole process's; then every service is listed through the open API"
    ));
    let rss_before = rss();
    let registry = NacosRegistry::new(
        NacosConfig::new("127.0.0.1", nacos.http_port).grpc_port(nacos.grpc_port),
    )
    .expect("a Nacos registry");
    let infos: Vec<Info> = (0..n)
        .map(|i| Info::new(format!("load.svc{i:05}"), loopback(30_000)))
        .collect();
    let started = Instant::now();
    let results = join_all(infos.iter().map(|i| registry.register(i))).await;
    let took = started.elapsed();
    let failed = results.iter().filter(|r| r.is_err()).count() as u64;
    if let Some(Err(err)) = results.iter().find(|r| r.is_err()) {
        section.detail(format!("first failed register: {err}"));
    }
    let rss_after = rss();
    section.figure(format!(
        "{n} register calls: all returned after {} ({:.0} registrations/s), {failed} failed",
        fmt_duration(took),
        n as f64 / took.as_secs_f64().max(1e-9)
    ));
    section.figure(format!(
        "RSS before {}, after {} (peak {})",
        fmt_mib(rss_before),
        fmt_mib(rss_after),
        fmt_mib(peak_rss())
    ));
    // Every registration is listed (checked in batches, so the check itself stays bounded).
    let addr = nacos.http_addr();
    let mut missing = 0u64;
    let check_started = Instant::now();
    for chunk in infos.chunks(200) {
        let lists = join_all(
            chunk
                .iter()
                .map(|info| listed(&addr, info.service_name.as_ref())),
        )
        .await;
        for (info, list) in chunk.iter().zip(lists) {
            let wanted = info.addr.to_string();
            if !list.is_some_and(|l| l.contains(&wanted)) {
                missing += 1;
                if missing <= 3 {
                    section.detail(format!(
                        "{} not listed after its register returned",
                        key(info)
                    ));
                }
            }
        }
    }
    section.figure(format!(
        "listing all {n} services through the open API took {}",
        fmt_duration(check_started.elapsed())
    ));
    let probe_started = Instant::now();
    let probe = Info::new("load.probe", loopback(30_001));
    let probed = tokio::time::timeout(Duration::from_secs(60), registry.register(&probe)).await;
    let probe_took = probe_started.elapsed();
    section.figure(format!(
        "one more register call after the load: {} after {}",
        if matches!(probed, Ok(Ok(()))) {
            "succeeded"
        } else {
            "failed"
        },
        fmt_duration(probe_took)
    ));
    section.goal(
        format!(
            "that register call answers within 1 s ({})",
            fmt_duration(probe_took)
        ),
        matches!(probed, Ok(Ok(()))) && probe_took <= Duration::from_secs(1),
    );
    section.zero("failed register calls", failed);
    section.zero(
        "registrations not listed after their call returned",
        missing,
    );
    registry.close().await;
    section
}

/// `watchers` NacosDiscovery watches on one service, timed on `fanout_rounds` changes.
pub(crate) async fn watchers(ctx: Ctx) -> Section {
    let mut section = Section::new(Scenario::WatchersNacos);
    let watchers = ctx.options.watchers;
    let rounds = ctx.options.fanout_rounds;
    let nacos = Nacos::start().await;
    let settings = NacosConfig::new("127.0.0.1", nacos.http_port).grpc_port(nacos.grpc_port);
    section.setup(format!(
        "1 r-nacos server; {watchers} watches of `fanout.svc` on one NacosDiscovery (one gRPC \
         connection, one subscription); a NacosRegistry adds one instance per round, \
         {rounds} rounds; the time from the register call's return until the last watcher saw \
         the instance"
    ));
    let discovery = NacosDiscovery::new(settings.clone());
    let registry = NacosRegistry::new(settings).expect("a Nacos registry");
    let mut tasks = Vec::new();
    let mut receivers = Vec::new();
    let rss_before = rss();
    for _ in 0..watchers {
        let mut stream = discovery.watch("fanout.svc").await.expect("a watch");
        let (tx, rx) = tokio::sync::mpsc::channel::<usize>(1024);
        receivers.push(rx);
        tasks.push(tokio::spawn(async move {
            while let Some(change) = stream.next().await {
                let change: Change = change;
                if tx.send(change.all.len()).await.is_err() {
                    break;
                }
            }
        }));
    }
    let rss_after = rss();
    let mut fanout = Dist::default();
    let mut missed = 0u64;
    for round in 0..rounds {
        let info = Info::new("fanout.svc", loopback(31_000 + round as u16));
        register_until_ok(registry.clone(), info).await;
        let registered = Instant::now();
        let deadline = registered + Duration::from_secs(10);
        let mut slowest = Duration::ZERO;
        for rx in &mut receivers {
            let mut got = false;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, rx.recv()).await {
                    Ok(Some(len)) if len > round => {
                        got = true;
                        break;
                    }
                    Ok(Some(_)) => continue,
                    _ => break,
                }
            }
            if got {
                slowest = slowest.max(registered.elapsed());
            } else {
                missed += 1;
            }
        }
        fanout.push(slowest);
    }
    section.figure(format!(
        "register → last of {watchers} watchers saw it: {}",
        fanout.summary()
    ));
    section.figure(format!(
        "RSS for {watchers} watches: {} → {}",
        fmt_mib(rss_before),
        fmt_mib(rss_after)
    ));
    section.zero(
        "watchers that did not see a round's instance in 10 s",
        missed,
    );
    for task in tasks {
        task.abort();
    }
    registry.close().await;
    section
}

/// Malformed data next to good data: instances written through the open API with metadata
/// that is not ours to trust, and one service whose answer is over 4 MiB.
pub(crate) async fn bad_data(ctx: Ctx) -> Section {
    let mut section = Section::new(Scenario::BadDataNacos);
    let big = ctx.options.nacos_big_service;
    let nacos = Nacos::start().await;
    let settings = NacosConfig::new("127.0.0.1", nacos.http_port)
        .grpc_port(nacos.grpc_port)
        .backoff(Backoff::new(
            Duration::from_millis(50),
            Duration::from_millis(500),
        ));
    section.setup(format!(
        "1 r-nacos server; `bad.mixed` holds one good instance (written by a NacosRegistry) and \
         instances written through the open API with bad metadata (a weight tag that is not a \
         number, a weight of 10^9, 64 KiB of metadata, a start time in the future, a non-UTF-8 \
         escape); `bad.big` holds {big} instances with 1 KiB of metadata each (an answer over \
         4 MiB at the default count); a NacosDiscovery resolves and watches both"
    ));
    let registry = NacosRegistry::new(settings.clone()).expect("a Nacos registry");
    let good = Info::new("bad.mixed", loopback(32_000));
    register_until_ok(registry.clone(), good.clone()).await;
    let bad_metadata = [
        serde_json::json!({"weight": "heavy"}),
        serde_json::json!({"service-registry.warmup_ms": "-5", "k": "v"}),
        serde_json::json!({"service-registry.start_time_ms": "99999999999999999999"}),
        serde_json::json!({"big": "x".repeat(64 * 1024)}),
        serde_json::json!({"bytes": "\u{fffd}\u{0}\u{1}"}),
    ];
    for (i, metadata) in bad_metadata.iter().enumerate() {
        nacos
            .register_http(
                "bad.mixed",
                "127.0.0.1",
                32_001 + i as u16,
                1.0,
                metadata,
                "",
            )
            .await;
    }
    nacos
        .register_http(
            "bad.mixed",
            "127.0.0.1",
            32_100,
            1e9,
            &serde_json::json!({}),
            "",
        )
        .await;
    let padded = serde_json::json!({"pad": "m".repeat(1024)});
    // Never dialled: the ports only tell the instances apart.
    let writes: Vec<u16> = (0..big.min(20_000)).map(|i| 40_000 + i as u16).collect();
    let started = Instant::now();
    for chunk in writes.chunks(100) {
        join_all(
            chunk
                .iter()
                .map(|port| nacos.register_http("bad.big", "127.0.0.1", *port, 1.0, &padded, "")),
        )
        .await;
    }
    section.figure(format!(
        "wrote {big} instances of `bad.big` through the open API in {}",
        fmt_duration(started.elapsed())
    ));

    let discovery = NacosDiscovery::new(settings.clone().resolve_from_watch(false));
    let mixed = discovery.resolve("bad.mixed").await;
    let mut bad_weights = 0u64;
    let mut good_missing = 0u64;
    match &mixed {
        Ok(instances) => {
            section.figure(format!(
                "`bad.mixed` resolved to {} instances (1 good + {} written with bad data)",
                instances.len(),
                bad_metadata.len() + 1
            ));
            if !instances.iter().any(|i| i.addr == good.addr) {
                good_missing += 1;
            }
            bad_weights = instances
                .iter()
                .filter(|i| {
                    !(service_registry::MIN_WEIGHT..=service_registry::MAX_WEIGHT)
                        .contains(&i.weight)
                })
                .count() as u64;
        }
        Err(err) => {
            good_missing += 1;
            section.detail(format!("resolving `bad.mixed` failed: {err}"));
        }
    }
    let big_started = Instant::now();
    let big_resolved = discovery.resolve("bad.big").await;
    let big_count = big_resolved.as_ref().map(|i| i.len()).unwrap_or(0);
    if let Err(err) = &big_resolved {
        section.detail(format!("resolving `bad.big` failed: {err}"));
    }
    section.figure(format!(
        "`bad.big` ({big} instances × 1 KiB metadata): resolved {big_count} in {}",
        fmt_duration(big_started.elapsed())
    ));
    let watched = match discovery.watch("bad.big").await {
        Ok(mut watch) => tokio::time::timeout(Duration::from_secs(30), async {
            match watch.next().await {
                Some(change) => change.all.len(),
                None => 0,
            }
        })
        .await
        .unwrap_or(0),
        Err(err) => {
            section.detail(format!("watching `bad.big` failed: {err}"));
            0
        }
    };
    section.figure(format!(
        "a watch of `bad.big` saw {watched} instances first"
    ));
    // The shared connection survived: the good service still resolves.
    let after = discovery.resolve("bad.mixed").await;
    let connection_lost = u64::from(!after.is_ok_and(|i| i.iter().any(|i| i.addr == good.addr)));
    section.zero(
        "the good instance of `bad.mixed` not resolved",
        good_missing,
    );
    section.zero(
        "instances handed out with a weight outside MIN_WEIGHT..=MAX_WEIGHT",
        bad_weights,
    );
    section.zero(
        "`bad.big` instances not resolved",
        (big - big_count.min(big)) as u64,
    );
    section.zero(
        "`bad.big` instances not seen by its watch",
        (big - watched.min(big)) as u64,
    );
    section.zero(
        "the good service unresolvable after the big answer (shared connection lost)",
        connection_lost,
    );
    registry.close().await;
    section
}

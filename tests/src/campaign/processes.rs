//! Service processes: the example binaries SIGKILLed at random, and a registrar shut down while a
//! client calls through discovery.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::Client as EtcdClient;
use futures_util::StreamExt;
use service_registry::etcd::{EtcdConfig, EtcdDiscovery, EtcdRegistry, DEFAULT_PREFIX};
use service_registry::nacos::{NacosConfig, NacosDiscovery, NacosRegistry};
use service_registry::zookeeper::{ZookeeperConfig, ZookeeperDiscovery, ZookeeperRegistry};
use service_registry::{Discovery, MemoryRegistry, Registry};
use tokio::process::Child;
use tokio::task::JoinSet;

use super::report::Section;
use super::util::{examples_dir, fmt_duration, random_duration, spawn_example, Dist, Progress};
use super::{Ctx, Scenario};
use crate::echo;
use crate::fixtures::etcd::Etcd;
use crate::fixtures::nacos::Nacos;
use crate::fixtures::zookeeper::ZooKeeper;
use crate::running::Running;

/// Example processes alive at once, per backend.
const POOL: usize = 3;
const LEASE_TTL: u64 = 3;
const SESSION_TIMEOUT: u64 = 4;
/// How long a SIGKILLed process's instances may stay listed on Nacos: the server drops an
/// ephemeral instance when its gRPC connection closes, which the kernel does at once for a
/// killed process.
const NACOS_BOUND: u64 = 2;
/// How often the client of the shutdown scenario calls (one call at a time).
const CALL_PERIOD: Duration = Duration::from_millis(1);

#[derive(Clone)]
enum Store {
    Etcd(String),
    Zookeeper(String),
    /// The HTTP address of the open API.
    Nacos(String),
}

impl Store {
    fn name(&self) -> &'static str {
        match self {
            Store::Etcd(_) => "etcd",
            Store::Zookeeper(_) => "ZooKeeper",
            Store::Nacos(_) => "Nacos",
        }
    }

    /// How long after a SIGKILL the registrations may last.
    fn bound(&self) -> Duration {
        match self {
            Store::Etcd(_) => Duration::from_secs(LEASE_TTL + 1),
            Store::Zookeeper(_) => Duration::from_secs(SESSION_TIMEOUT + 1),
            Store::Nacos(_) => Duration::from_secs(NACOS_BOUND),
        }
    }

    /// Polls every 20 ms until none of `registered` is left; the time since `killed`, or
    /// `None` after `limit`.
    async fn gone(
        &self,
        registered: &[(String, SocketAddr)],
        killed: Instant,
        limit: Duration,
    ) -> Option<Duration> {
        match self {
            Store::Etcd(endpoint) => {
                let keys: Vec<String> = registered
                    .iter()
                    .map(|(s, a)| format!("{DEFAULT_PREFIX}/{s}/{a}"))
                    .collect();
                let mut client = None;
                while killed.elapsed() < limit {
                    if client.is_none() {
                        client = EtcdClient::connect([endpoint.as_str()], None).await.ok();
                    }
                    if let Some(c) = client.as_mut() {
                        let mut left = 0;
                        let mut failed = false;
                        for key in &keys {
                            match c.get(key.as_str(), None).await {
                                Ok(r) if r.kvs().is_empty() => {}
                                Ok(_) => left += 1,
                                Err(_) => failed = true,
                            }
                        }
                        if failed {
                            client = None;
                        } else if left == 0 {
                            return Some(killed.elapsed());
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                None
            }
            Store::Zookeeper(servers) => {
                let paths: Vec<String> = registered
                    .iter()
                    .map(|(s, a)| format!("/{s}/{a}"))
                    .collect();
                let mut client = None;
                while killed.elapsed() < limit {
                    if client.is_none() {
                        client = super::zookeeper::connect(servers).await;
                    }
                    if let Some(c) = client.as_ref() {
                        let stats =
                            futures_util::future::join_all(paths.iter().map(|p| c.check_stat(p)))
                                .await;
                        if stats.iter().any(Result::is_err) {
                            client = None;
                        } else if stats.iter().all(|s| matches!(s, Ok(None))) {
                            return Some(killed.elapsed());
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                None
            }
            Store::Nacos(addr) => {
                while killed.elapsed() < limit {
                    let lists = futures_util::future::join_all(
                        registered
                            .iter()
                            .map(|(s, _)| super::nacos::listed(addr, s)),
                    )
                    .await;
                    let left = registered.iter().zip(&lists).any(|((_, a), list)| {
                        list.as_ref().is_none_or(|l| l.contains(&a.to_string()))
                    });
                    if !left {
                        return Some(killed.elapsed());
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                None
            }
        }
    }
}

#[derive(Default)]
struct Kills {
    gone: Dist,
    late: u64,
    never: u64,
    spawn_failures: u64,
    details: Vec<String>,
}

async fn kill_loop(
    store: Store,
    binary: PathBuf,
    env: Vec<(&'static str, String)>,
    kills: usize,
    mut rng: fastrand::Rng,
    progress: Progress,
) -> Kills {
    let mut result = Kills::default();
    let mut pool: Vec<(Child, Vec<(String, SocketAddr)>)> = Vec::new();
    let spawn = |binary: &Path| {
        let binary = binary.to_path_buf();
        let env = env.clone();
        async move {
            let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, v.clone())).collect();
            spawn_example(&binary, &env).await
        }
    };
    let mut measures = JoinSet::new();
    let mut killed = 0;
    let mut attempts = 0;
    while killed < kills && attempts < kills * 3 {
        attempts += 1;
        while pool.len() < POOL.min(kills - killed) {
            match spawn(&binary).await {
                Ok(child) => pool.push(child),
                Err(err) => {
                    result.spawn_failures += 1;
                    result.details.push(err);
                }
            }
        }
        if pool.is_empty() {
            continue;
        }
        tokio::time::sleep(random_duration(
            &mut rng,
            Duration::from_millis(300),
            Duration::from_millis(1500),
        ))
        .await;
        let (mut child, registered) = pool.swap_remove(rng.usize(0..pool.len()));
        let at = Instant::now();
        let _ = child.start_kill();
        let _ = child.wait().await;
        killed += 1;
        let measured = store.clone();
        measures.spawn(async move {
            let limit = measured.bound() + Duration::from_secs(10);
            (measured.gone(&registered, at, limit).await, registered)
        });
        progress.note(format!(
            "{} process {killed}/{kills} SIGKILLed",
            store.name()
        ));
    }
    while let Some(joined) = measures.join_next().await {
        let Ok((gone, registered)) = joined else {
            result.never += 1;
            continue;
        };
        match gone {
            Some(after) => {
                result.gone.push(after);
                if after > store.bound() {
                    result.late += 1;
                    result.details.push(format!(
                        "{registered:?} gone only {} after the SIGKILL",
                        fmt_duration(after)
                    ));
                }
            }
            None => {
                result.never += 1;
                result.details.push(format!(
                    "{registered:?} still registered long after the SIGKILL"
                ));
            }
        }
    }
    result
}

/// `sigkills` example processes SIGKILLed at random, half registered in etcd and half in
/// ZooKeeper.
pub(crate) async fn sigkills(ctx: Ctx) -> Section {
    let mut section = Section::new(Scenario::Sigkill);
    let dir = match examples_dir(ctx.options.examples_dir.as_deref()) {
        Ok(dir) => dir,
        Err(err) => {
            section.aborted = Some(err);
            return section;
        }
    };
    let mut rng = ctx.rng();
    if !dir.join("nacos").is_file() {
        section.aborted = Some(format!(
            "the `nacos` example binary is not in {}; build it with `cargo build --release -p \
             examples --features etcd,zookeeper,nacos --examples`",
            dir.display()
        ));
        return section;
    }
    let etcd = Etcd::start().await;
    let zk = ZooKeeper::start().await;
    let nacos = Nacos::start().await;
    let count = ctx.options.sigkills;
    let on_nacos = count / 3;
    let (on_etcd, on_zk) = ((count - on_nacos).div_ceil(2), (count - on_nacos) / 2);
    section.setup(format!(
        "the `etcd`, `zookeeper` and `nacos` example binaries from {} (each a registrar with 2 services), \
         {POOL} alive per backend at a time; every 0.3–1.5 s a random one is SIGKILLed and \
         replaced; its registrations are polled every 20 ms until gone; etcd lease TTL {LEASE_TTL} s \
         (REGISTRY_LEASE_TTL), ZooKeeper session timeout {SESSION_TIMEOUT} s \
         (ZOOKEEPER_SESSION_TIMEOUT), Nacos: r-nacos drops the instances of a closed connection \
         (bound {NACOS_BOUND} s); seed {}",
        dir.display(),
        ctx.options.seed
    ));
    let (etcd_kills, zk_kills, nacos_kills) = tokio::join!(
        kill_loop(
            Store::Etcd(etcd.endpoint()),
            dir.join("etcd"),
            vec![
                ("ETCD_ENDPOINTS", etcd.endpoint()),
                ("REGISTRY_LEASE_TTL", LEASE_TTL.to_string()),
            ],
            on_etcd,
            fastrand::Rng::with_seed(rng.u64(..)),
            ctx.progress.clone(),
        ),
        kill_loop(
            Store::Zookeeper(zk.connect_string()),
            dir.join("zookeeper"),
            vec![
                ("ZOOKEEPER_ENDPOINTS", zk.connect_string()),
                ("ZOOKEEPER_SESSION_TIMEOUT", SESSION_TIMEOUT.to_string()),
            ],
            on_zk,
            fastrand::Rng::with_seed(rng.u64(..)),
            ctx.progress.clone(),
        ),
        kill_loop(
            Store::Nacos(nacos.http_addr()),
            dir.join("nacos"),
            vec![
                ("serverAddr", "127.0.0.1".to_string()),
                ("serverPort", nacos.http_port.to_string()),
                ("NACOS_GRPC_PORT", nacos.grpc_port.to_string()),
            ],
            on_nacos,
            fastrand::Rng::with_seed(rng.u64(..)),
            ctx.progress.clone(),
        ),
    );
    let mut late = 0;
    let mut spawn_failures = 0;
    for (name, bound, kills) in [
        ("etcd", LEASE_TTL + 1, &etcd_kills),
        ("ZooKeeper", SESSION_TIMEOUT + 1, &zk_kills),
        ("Nacos", NACOS_BOUND, &nacos_kills),
    ] {
        section.figure(format!(
            "{name}: {} processes SIGKILLed; registrations gone after: {} (bound {bound} s)",
            kills.gone.len() as u64 + kills.never,
            kills.gone.summary()
        ));
        late += kills.late + kills.never;
        spawn_failures += kills.spawn_failures;
        for detail in &kills.details {
            section.detail(format!("{name}: {detail}"));
        }
    }
    section.zero(
        "registrations left past the bound (TTL + 1 s on etcd, session timeout + 1 s on \
         ZooKeeper, 2 s on Nacos)",
        late,
    );
    section.zero(
        "example processes that failed to start and register",
        spawn_failures,
    );
    section
}

#[derive(Default)]
struct CallLog {
    calls: u64,
    failed: u64,
    /// Calls made to an instance that was being shut down, from its stop on.
    after_stop: u64,
    no_instance: u64,
    details: Vec<String>,
}

/// The drain delay of the registrars shut down under traffic.
const SHUTDOWN_DRAIN: Duration = Duration::from_millis(500);
/// The same on Nacos: r-nacos pushes a change to its subscribers 0.7–1 s after it (its own
/// batching; the deregistration itself takes milliseconds), so a watching client needs a drain
/// longer than that.
const NACOS_SHUTDOWN_DRAIN: Duration = Duration::from_secs(2);

/// Registrars for `linked.alpha` started and shut down `rounds` times, each on a registry of its
/// own from `leaving` (a registrar closes its registries when it ends, as a process does), while another
/// instance stays on `staying` and a client resolves through `discovery`'s watch and calls an
/// instance every millisecond (round robin, one call at a time), with no retry.
async fn shutdown_rounds<R, D>(
    leaving: impl Fn() -> R,
    staying: R,
    discovery: D,
    rounds: usize,
    drain: Duration,
    progress: &Progress,
    name: &str,
) -> (CallLog, Dist, Dist)
where
    R: Registry,
    D: Discovery,
{
    let stay = Running::start(staying, &["linked.alpha"]).await;
    stay.registered(Duration::from_secs(30)).await;
    let mut stream = discovery
        .watch("linked.alpha")
        .await
        .expect("watch linked.alpha");
    let current: Arc<Mutex<Vec<SocketAddr>>> = Arc::default();
    let removed_at: Arc<Mutex<BTreeMap<SocketAddr, Instant>>> = Arc::default();
    let stopping: Arc<Mutex<Option<(SocketAddr, Instant)>>> = Arc::default();
    let watcher = tokio::spawn({
        let (current, removed_at) = (current.clone(), removed_at.clone());
        async move {
            while let Some(change) = stream.next().await {
                let now = Instant::now();
                *current.lock().unwrap() = change.all.iter().map(|i| i.addr).collect();
                for gone in &change.removed {
                    removed_at.lock().unwrap().insert(gone.addr, now);
                }
            }
        }
    });
    let log = Arc::new(Mutex::new(CallLog::default()));
    let caller = tokio::spawn({
        let (current, log, stopping) = (current.clone(), log.clone(), stopping.clone());
        async move {
            let mut tick = tokio::time::interval(CALL_PERIOD);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut next = 0usize;
            loop {
                tick.tick().await;
                let addrs = current.lock().unwrap().clone();
                if addrs.is_empty() {
                    let mut log = log.lock().unwrap();
                    log.calls += 1;
                    log.failed += 1;
                    log.no_instance += 1;
                    continue;
                }
                let addr = addrs[next % addrs.len()];
                next += 1;
                let result = echo::call(addr, "hello").await;
                let mut log = log.lock().unwrap();
                log.calls += 1;
                let stop = *stopping.lock().unwrap();
                let since_stop = stop.filter(|(a, _)| *a == addr).map(|(_, at)| at.elapsed());
                if since_stop.is_some() {
                    log.after_stop += 1;
                }
                if !matches!(&result, Ok(reply) if reply == "hello") {
                    log.failed += 1;
                    if log.details.len() < 10 {
                        let when = since_stop
                            .map(|d| format!("{} after its shutdown began", fmt_duration(d)))
                            .unwrap_or_else(|| "not during a shutdown".into());
                        log.details
                            .push(format!("call to {addr} failed {when}: {result:?}"));
                    }
                }
            }
        }
    });
    let mut stop_took = Dist::default();
    let mut removal_seen = Dist::default();
    for round in 0..rounds {
        // Keep serving 500 ms after deregistering: the watching client drops the instance
        // within milliseconds (RELIABILITY.md finding 1).
        let leave = Running::start_with(|b| {
            b.registry(leaving())
                .only(["linked.alpha"])
                .drain_delay(drain)
        })
        .await;
        leave.registered(Duration::from_secs(30)).await;
        let addr = leave.addr;
        let seen = crate::poll::within(
            Duration::from_secs(10),
            Duration::from_millis(5),
            || async { current.lock().unwrap().contains(&addr).then_some(()) },
        )
        .await;
        assert!(seen.is_some(), "the client never saw {addr}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let began = Instant::now();
        *stopping.lock().unwrap() = Some((addr, began));
        leave.stop().await;
        stop_took.push(began.elapsed());
        let removed = crate::poll::within(
            Duration::from_secs(10),
            Duration::from_millis(5),
            || async { removed_at.lock().unwrap().get(&addr).copied() },
        )
        .await;
        if let Some(at) = removed {
            removal_seen.push(at.saturating_duration_since(began));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        progress.note(format!("{name}: shutdown {}/{rounds}", round + 1));
    }
    caller.abort();
    let _ = caller.await;
    watcher.abort();
    stay.stop().await;
    let log = std::mem::take(&mut *log.lock().unwrap());
    (log, stop_took, removal_seen)
}

/// A registrar shut down `shutdown_rounds` times per backend (memory, etcd, ZooKeeper, Nacos) while a
/// client calls through discovery.
pub(crate) async fn shutdown(ctx: Ctx) -> Section {
    let mut section = Section::new(Scenario::Shutdown);
    let rounds = ctx.options.shutdown_rounds;
    section.setup(format!(
        "per backend: a registrar (`tests::running::Running`: the echo server, default registrar \
         settings) for `linked.alpha` stays up; another (drain delay {SHUTDOWN_DRAIN:?}; on Nacos {NACOS_SHUTDOWN_DRAIN:?}, longer than r-nacos' push delay) is \
         started and shut down {rounds} times; a \
         client follows `linked.alpha` with Discovery::watch and calls the instances round robin, \
         one call at a time every millisecond (a new connection each), without retries; etcd: default EtcdRegistry settings, \
         ZooKeeper: default ZookeeperRegistry settings, Nacos: default NacosRegistry settings"
    ));
    let memory = MemoryRegistry::new();
    let mut results = Vec::new();
    results.push((
        "memory",
        shutdown_rounds(
            || memory.clone(),
            memory.clone(),
            memory.clone(),
            rounds,
            SHUTDOWN_DRAIN,
            &ctx.progress,
            "memory",
        )
        .await,
    ));
    {
        let etcd = Etcd::start().await;
        let config = EtcdConfig::new([etcd.endpoint()]);
        let leaving = || EtcdRegistry::new(config.clone()).expect("an etcd registry");
        let staying = EtcdRegistry::new(config.clone()).expect("an etcd registry");
        let discovery = EtcdDiscovery::new(config.clone());
        results.push((
            "etcd",
            shutdown_rounds(
                leaving,
                staying.clone(),
                discovery,
                rounds,
                SHUTDOWN_DRAIN,
                &ctx.progress,
                "etcd",
            )
            .await,
        ));
        staying.close().await;
    }
    {
        let zk = ZooKeeper::start().await;
        let config = ZookeeperConfig::new(zk.connect_string());
        let leaving = || ZookeeperRegistry::new(config.clone()).expect("a ZooKeeper registry");
        let staying = ZookeeperRegistry::new(config.clone()).expect("a ZooKeeper registry");
        let discovery = ZookeeperDiscovery::new(config.clone());
        results.push((
            "ZooKeeper",
            shutdown_rounds(
                leaving,
                staying.clone(),
                discovery,
                rounds,
                SHUTDOWN_DRAIN,
                &ctx.progress,
                "ZooKeeper",
            )
            .await,
        ));
        staying.close().await;
    }
    {
        let nacos = Nacos::start().await;
        let config = NacosConfig::new("127.0.0.1", nacos.http_port).grpc_port(nacos.grpc_port);
        let leaving = || NacosRegistry::new(config.clone()).expect("a Nacos registry");
        let staying = NacosRegistry::new(config.clone()).expect("a Nacos registry");
        let discovery = NacosDiscovery::new(config.clone());
        results.push((
            "Nacos",
            shutdown_rounds(
                leaving,
                staying.clone(),
                discovery,
                rounds,
                NACOS_SHUTDOWN_DRAIN,
                &ctx.progress,
                "Nacos",
            )
            .await,
        ));
        staying.close().await;
    }
    let mut failed = 0;
    for (name, (log, stop_took, removal_seen)) in &results {
        section.figure(format!(
            "{name}: {rounds} shutdowns; {} calls ({} to an instance after its shutdown began), \
             {} failed ({} for want of any instance)",
            log.calls, log.after_stop, log.failed, log.no_instance
        ));
        section.figure(format!(
            "{name}: shutdown (deregister, stop the server) took {}",
            stop_took.summary()
        ));
        section.figure(format!(
            "{name}: the client's watch dropped the instance after its shutdown began: {}",
            removal_seen.summary()
        ));
        failed += log.failed;
        for detail in &log.details {
            section.detail(format!("{name}: {detail}"));
        }
    }
    section.zero("failed calls", failed);
    section
}

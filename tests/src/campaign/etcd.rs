//! etcd scenarios: restarts (data kept, data wiped, frozen past the lease TTL) under three
//! registries, and member kills in a 3-member cluster under a watcher.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use etcd_client::{Client, ConnectOptions, EventType, GetOptions, WatchOptions};
use service_registry::etcd::{EtcdConfig, EtcdDiscovery, EtcdRegistry, DEFAULT_PREFIX};
use service_registry::{Info, Registry};
use tokio::task::JoinHandle;

use super::gaps::GapWatcher;
use super::presence::{observe, Present};
use super::report::Section;
use super::util::{
    fmt_duration, loopback, random_duration, register_all, register_until_ok, tally, Dist,
    EchoCaller,
};
use super::{Ctx, Scenario};
use crate::echo;
use crate::fixtures::etcd::Etcd;

/// The lease TTL of the restart scenario: short, so that a freeze past it stays short.
const TTL: Duration = Duration::from_secs(3);
/// Registry instances ("processes") and services per instance.
const PROCESSES: usize = 3;
const SERVICES: usize = 50;
/// How long after etcd answers a registration may take before it counts as lost.
const LOST_AFTER: Duration = Duration::from_secs(20);

pub(crate) fn key(info: &Info) -> String {
    format!("{DEFAULT_PREFIX}/{}/{}", info.service_name, info.addr)
}

async fn connect(endpoints: &[String]) -> Option<Client> {
    let options = ConnectOptions::new().with_connect_timeout(Duration::from_secs(1));
    tokio::time::timeout(
        Duration::from_secs(2),
        Client::connect(endpoints, Some(options)),
    )
    .await
    .ok()?
    .ok()
}

/// Reads the keys under the prefix through a raw client, reconnecting after errors.
pub(crate) struct EtcdReader {
    endpoints: Vec<String>,
    prefix: String,
    client: Option<Client>,
}

impl EtcdReader {
    pub(crate) fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            prefix: format!("{DEFAULT_PREFIX}/"),
            client: None,
        }
    }

    async fn client(&mut self) -> Option<&mut Client> {
        if self.client.is_none() {
            self.client = connect(&self.endpoints).await;
        }
        self.client.as_mut()
    }

    /// The store's current revision.
    pub(crate) async fn revision(&mut self) -> Option<i64> {
        let client = self.client().await?;
        match tokio::time::timeout(Duration::from_secs(2), client.get("campaign-probe", None)).await
        {
            Ok(Ok(response)) => response.header().map(|h| h.revision()),
            _ => {
                self.client = None;
                None
            }
        }
    }
}

#[async_trait]
impl Present for EtcdReader {
    async fn present(&mut self) -> Option<BTreeSet<String>> {
        let prefix = self.prefix.clone();
        let client = self.client().await?;
        let options = GetOptions::new().with_prefix().with_keys_only();
        match tokio::time::timeout(Duration::from_secs(2), client.get(prefix, Some(options))).await
        {
            Ok(Ok(response)) => Some(
                response
                    .kvs()
                    .iter()
                    .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
                    .collect(),
            ),
            _ => {
                self.client = None;
                None
            }
        }
    }
}

/// A put seen by the raw watch.
struct Put {
    key: String,
    /// Which incarnation of the store (bumped when its data is wiped).
    epoch: u64,
    revision: i64,
}

#[derive(Default)]
struct WatchState {
    next: AtomicI64,
    epoch: AtomicU64,
    puts: Mutex<Vec<Put>>,
    compacted: AtomicU64,
}

/// A raw etcd watch on the whole prefix that resumes from the last revision it saw (or from
/// revision 1 after the data was wiped), so that every put is seen, however briefly the key
/// lived.
pub(crate) struct RawWatch {
    state: Arc<WatchState>,
    task: JoinHandle<()>,
}

impl Drop for RawWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawWatch {
    pub(crate) fn start(endpoint: String) -> Self {
        let state = Arc::new(WatchState::default());
        state.next.store(1, Ordering::SeqCst);
        let task = tokio::spawn({
            let state = state.clone();
            async move {
                let prefix = format!("{DEFAULT_PREFIX}/");
                loop {
                    let epoch = state.epoch.load(Ordering::SeqCst);
                    let next = state.next.load(Ordering::SeqCst);
                    let stream = async {
                        let mut client = connect(std::slice::from_ref(&endpoint)).await?;
                        let options = WatchOptions::new().with_prefix().with_start_revision(next);
                        tokio::time::timeout(
                            Duration::from_secs(2),
                            client.watch(prefix.clone(), Some(options)),
                        )
                        .await
                        .ok()?
                        .ok()
                    };
                    let Some(mut stream) = stream.await else {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    };
                    if state.epoch.load(Ordering::SeqCst) != epoch {
                        continue; // the data was wiped meanwhile: start over from revision 1
                    }
                    while let Ok(Some(response)) = stream.message().await {
                        if response.compact_revision() > 0 {
                            state.compacted.fetch_add(1, Ordering::SeqCst);
                            state
                                .next
                                .store(response.compact_revision(), Ordering::SeqCst);
                            break;
                        }
                        if response.canceled() {
                            break;
                        }
                        let mut puts = state.puts.lock().unwrap();
                        for event in response.events() {
                            let Some(kv) = event.kv() else { continue };
                            if state.epoch.load(Ordering::SeqCst) == epoch {
                                state
                                    .next
                                    .fetch_max(kv.mod_revision() + 1, Ordering::SeqCst);
                            }
                            if event.event_type() == EventType::Put {
                                puts.push(Put {
                                    key: String::from_utf8_lossy(kv.key()).into_owned(),
                                    epoch,
                                    revision: kv.mod_revision(),
                                });
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        Self { state, task }
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.state.epoch.load(Ordering::SeqCst)
    }

    /// The data was wiped: watch the new store from its first revision. Call while etcd is
    /// down.
    pub(crate) fn reset(&self) {
        self.state.next.store(1, Ordering::SeqCst);
        self.state.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Puts of `key` after (`epoch`, `revision`).
    fn puts_after(&self, key: &str, epoch: u64, revision: i64) -> usize {
        self.state
            .puts
            .lock()
            .unwrap()
            .iter()
            .filter(|p| {
                p.key == key && (p.epoch > epoch || (p.epoch == epoch && p.revision > revision))
            })
            .count()
    }

    fn saw_put(&self, key: &str) -> bool {
        self.state.puts.lock().unwrap().iter().any(|p| p.key == key)
    }

    fn compactions(&self) -> u64 {
        self.state.compacted.load(Ordering::SeqCst)
    }
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

/// A key deregistered during an outage, and where the store stood just before it.
struct Deregistered {
    key: String,
    epoch: u64,
    revision: i64,
    restart: usize,
    outage: Outage,
}

#[derive(Default)]
struct PerOutage {
    restarts: usize,
    delays: Dist,
    all_back: Dist,
}

/// etcd restarted `etcd_restarts` times while three registries hold 50 services each.
pub(crate) async fn restarts(ctx: Ctx) -> Section {
    let mut section = Section::new(Scenario::EtcdRestarts);
    let progress = ctx.progress.clone();
    let mut rng = ctx.rng();
    let count = ctx.options.etcd_restarts;

    let mut etcd = Etcd::start().await;
    let endpoint = etcd.endpoint();
    let config = EtcdConfig::new([endpoint.clone()]).lease_ttl(TTL);
    section.setup(format!(
        "1 etcd member ({}); {PROCESSES} EtcdRegistry instances in this one process (each its own \
         lease; TTL {} s, other settings default: backoff 100 ms doubling to 2 s, request timeout \
         5 s), each with {SERVICES} services pointing at its own echo server",
        etcd_version(),
        TTL.as_secs()
    ));
    section.setup(
        "registrations are made like the registrar does (retried with backoff, woken when the \
         backend is healthy again); a raw etcd watch on the prefix, resumed from the last \
         revision it saw (from revision 1 after a wipe), sees every put",
    );
    section.setup(format!(
        "each restart (a third of each kind, in random order): kept data (SIGKILL, restart) or \
         wiped data (SIGKILL, delete the data directory, restart), down 0.2–5 s, or frozen \
         (SIGSTOP) for the TTL + 0.2–2 s; during \
         each outage one live service is deregistered and one new service is started; then \
         every registration is polled every 10 ms until all are back and {} s have passed (a \
         registration absent {} s after etcd answered counts as lost); seed {}",
        (TTL + Duration::from_secs(2)).as_secs(),
        LOST_AFTER.as_secs(),
        ctx.options.seed
    ));

    let mut processes = Vec::new();
    for _ in 0..PROCESSES {
        let registry = EtcdRegistry::new(config.clone()).expect("an etcd registry");
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
    let watch = RawWatch::start(endpoint.clone());
    let mut reader = EtcdReader::new(vec![endpoint.clone()]);
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

    let mut deregistered: Vec<Deregistered> = Vec::new();
    let mut started: BTreeSet<String> = BTreeSet::new();
    let mut started_delays = Dist::default();
    let mut per: BTreeMap<&'static str, PerOutage> = BTreeMap::new();
    let mut downs: Vec<Duration> = Vec::new();
    let mut kinds: Vec<&'static str> = Vec::new();
    let mut lost = 0u64;
    let mut stale = 0u64;
    let mut dereg_errors = 0u64;
    let mut dereg_tasks = Vec::new();
    let mut register_tasks = Vec::new();

    // A third of each kind, in random order.
    let mut outages: Vec<Outage> = (0..count)
        .map(|i| [Outage::Kept, Outage::Wiped, Outage::Frozen][i % 3])
        .collect();
    rng.shuffle(&mut outages);
    for (n, outage) in outages.iter().copied().enumerate() {
        let down = match outage {
            Outage::Frozen => {
                TTL + random_duration(&mut rng, Duration::from_millis(200), Duration::from_secs(2))
            }
            _ => random_duration(&mut rng, Duration::from_millis(200), Duration::from_secs(5)),
        };
        downs.push(down);
        kinds.push(outage.name());
        let revision = reader.revision().await.unwrap_or(0);
        let epoch = watch.epoch();
        match outage {
            Outage::Kept => etcd.stop(),
            Outage::Wiped => {
                etcd.stop();
                etcd.wipe();
                watch.reset();
            }
            Outage::Frozen => etcd.freeze(),
        }
        let outage_started = Instant::now();

        // Churn while etcd is away: one live service goes, one new one comes.
        tokio::time::sleep(random_duration(&mut rng, Duration::ZERO, down / 2)).await;
        let keys: Vec<String> = live.keys().cloned().collect();
        let victim = keys[rng.usize(0..keys.len())].clone();
        let (owner, info) = live.remove(&victim).expect("a live key");
        deregistered.push(Deregistered {
            key: victim,
            epoch,
            revision,
            restart: n,
            outage,
        });
        let registry = processes[owner].0.clone();
        dereg_tasks.push(tokio::spawn(async move {
            tokio::time::timeout(Duration::from_secs(15), registry.deregister(&info)).await
        }));
        let owner = rng.usize(0..PROCESSES);
        let info = Info::new(format!("campaign.new{n:03}"), processes[owner].1.addr);
        started.insert(key(&info));
        live.insert(key(&info), (owner, info.clone()));
        register_tasks.push(tokio::spawn(register_until_ok(
            processes[owner].0.clone(),
            info,
        )));

        tokio::time::sleep_until((outage_started + down).into()).await;
        match outage {
            Outage::Frozen => etcd.thaw(),
            _ => etcd.restart().await,
        }
        let answering = Instant::now();
        let expected: BTreeSet<String> = live.keys().cloned().collect();
        let gone: BTreeSet<String> = deregistered.iter().map(|d| d.key.clone()).collect();
        let seen = observe(
            &mut reader,
            &expected,
            &gone,
            answering,
            TTL + Duration::from_secs(2),
            LOST_AFTER,
            Duration::from_millis(10),
        )
        .await;
        let entry = per.entry(outage.name()).or_default();
        entry.restarts += 1;
        for (key, delay) in &seen.delays {
            entry.delays.push(*delay);
            if started.contains(key) && key.contains(&format!("campaign.new{n:03}/")) {
                started_delays.push(*delay);
            }
        }
        if let Some(all_back) = seen.all_back {
            entry.all_back.push(all_back);
        }
        lost += seen.missing.len() as u64;
        stale += seen.stale.len() as u64;
        for key in &seen.missing {
            section.detail(format!(
                "restart {n} ({}, down {}): {key} not back {} s after etcd answered",
                outage.name(),
                fmt_duration(down),
                LOST_AFTER.as_secs()
            ));
        }
        for key in &seen.stale {
            section.detail(format!(
                "restart {n} ({}): deregistered {key} still present {} s after etcd answered",
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

    for task in dereg_tasks {
        if !matches!(task.await, Ok(Ok(Ok(())))) {
            dereg_errors += 1;
        }
    }
    // Late writes would show within this.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let final_seen = observe(
        &mut reader,
        &live.keys().cloned().collect(),
        &deregistered.iter().map(|d| d.key.clone()).collect(),
        Instant::now(),
        Duration::ZERO,
        LOST_AFTER,
        Duration::from_millis(20),
    )
    .await;
    let mut resurrected = 0u64;
    for d in &deregistered {
        let puts = watch.puts_after(&d.key, d.epoch, d.revision);
        if puts > 0 {
            resurrected += 1;
            section.detail(format!(
                "{} deregistered during restart {} ({}) was written again {puts} time(s)",
                d.key,
                d.restart,
                d.outage.name()
            ));
        }
    }
    let unseen = started.iter().filter(|k| !watch.saw_put(k)).count() as u64;
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
         an error or timed out; the key must go anyway), {} services started",
        deregistered.len(),
        started.len()
    ));
    let mut all_delays = Dist::default();
    for (name, entry) in &per {
        all_delays.extend(&entry.delays);
        section.figure(format!(
            "{name} ({} restarts): re-registration delay after etcd answered: {}",
            entry.restarts,
            entry.delays.summary()
        ));
        section.figure(format!(
            "{name}: every registration back after: {}",
            entry.all_back.summary()
        ));
    }
    section.figure(format!(
        "all restarts: re-registration delay after etcd answered (keys that were absent after it \
         answered, services started during the outage included): {}",
        all_delays.summary()
    ));
    section.figure(format!(
        "services started during an outage, those still absent when etcd was first read after \
         it answered ({} of {}; the others were already written by then): registered after etcd \
         answered: {}",
        started_delays.len(),
        started.len(),
        started_delays.summary()
    ));
    section.figure(format!(
        "echo servers called every 100 ms through every outage: {calls} calls, {call_errors} failed"
    ));
    section.zero(
        "lost registrations (live, not back 20 s after etcd answered; key × restart)",
        lost + final_seen.missing.len() as u64,
    );
    section.zero(
        "resurrected registrations (a deregistered key written again)",
        resurrected,
    );
    section.zero(
        "deregistered keys still present 20 s after etcd answered",
        stale + final_seen.stale.len() as u64,
    );
    section.zero("serving errors (echo calls that failed)", call_errors);
    section.zero(
        "puts of started services the raw watch missed (self-check of the detector)",
        unseen + watch.compactions(),
    );
    let max = all_delays.max().unwrap_or_default();
    section.goal(
        format!(
            "re-registration ≤ 1 s after etcd answers (max {})",
            fmt_duration(max)
        ),
        max <= Duration::from_secs(1),
    );
    for (registry, _) in &processes {
        registry.close().await;
    }
    section
}

fn etcd_version() -> String {
    std::process::Command::new("etcd")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "etcd".into())
}

/// A 3-member cluster; a member killed (the leader every other time) and restarted
/// `member_kills` times under a watcher of a service with three live instances.
pub(crate) async fn member_kills(ctx: Ctx) -> Section {
    let mut section = Section::new(Scenario::EtcdMemberKills);
    let progress = ctx.progress.clone();
    let mut rng = ctx.rng();
    let count = ctx.options.member_kills;
    let mut etcd = Etcd::start_cluster().await;
    let config = EtcdConfig::new(etcd.endpoints());
    section.setup(format!(
        "3 etcd members ({}); 3 EtcdRegistry instances (default settings: TTL 15 s) each \
         registering one instance of `campaign.watched`, all configured with the 3 endpoints; an \
         EtcdDiscovery watch on the service; each kill: SIGKILL a member (the leader every other \
         time), down 0.5–3 s, restart it, wait until every member answers; seed {}",
        etcd_version(),
        ctx.options.seed
    ));
    let mut registries = Vec::new();
    for i in 0..3u16 {
        let registry = EtcdRegistry::new(config.clone()).expect("an etcd registry");
        let info = Info::new("campaign.watched", loopback(21_001 + i));
        assert_eq!(
            register_all(&registry, [info], Duration::from_secs(30)).await,
            0,
            "initial registration"
        );
        registries.push(registry);
    }
    let discovery = EtcdDiscovery::new(config.clone());
    let gaps = GapWatcher::armed(&discovery, "campaign.watched", 3).await;
    let expected: BTreeSet<String> = (0..3u16)
        .map(|i| format!("{DEFAULT_PREFIX}/campaign.watched/{}", loopback(21_001 + i)))
        .collect();
    let mut reader = EtcdReader::new(etcd.endpoints());
    let mut leaders = 0;
    let mut lost = 0u64;
    let mut elections = Dist::default();
    let mut follower_writes = Dist::default();
    for n in 0..count {
        let leader = etcd.leader().await;
        let victim = if n % 2 == 0 {
            leaders += 1;
            leader
        } else {
            let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
            others[rng.usize(0..others.len())]
        };
        etcd.kill_member(victim);
        let killed = Instant::now();
        let down = random_duration(&mut rng, Duration::from_millis(500), Duration::from_secs(3));
        // How long until the remaining two serve a write (a new leader when the leader died).
        let survivors: Vec<String> = (0..3)
            .filter(|i| *i != victim)
            .map(|i| etcd.members[i].endpoint())
            .collect();
        let mut probe = EtcdReader::new(survivors);
        loop {
            let written = async {
                let client = probe.client().await?;
                tokio::time::timeout(
                    Duration::from_secs(1),
                    client.put("campaign-probe", "x", None),
                )
                .await
                .ok()?
                .ok()
            };
            if written.await.is_some() {
                if victim == leader {
                    elections.push(killed.elapsed());
                } else {
                    follower_writes.push(killed.elapsed());
                }
                break;
            }
            if killed.elapsed() > Duration::from_secs(30) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep_until((killed + down).into()).await;
        etcd.restart_member(victim).await;
        let seen = observe(
            &mut reader,
            &expected,
            &BTreeSet::new(),
            Instant::now(),
            Duration::from_secs(1),
            LOST_AFTER,
            Duration::from_millis(20),
        )
        .await;
        lost += seen.missing.len() as u64;
        progress.note(format!(
            "kill {}/{count}: member {victim}{} down {}",
            n + 1,
            if n % 2 == 0 { " (leader)" } else { "" },
            fmt_duration(down)
        ));
    }
    let (gap_count, changes, ended, details) = gaps.finish();
    for detail in details {
        section.detail(detail);
    }
    section.figure(format!(
        "member kills: {count} ({leaders} of the leader, {} of a follower)",
        count - leaders
    ));
    section.figure(format!(
        "leader killed: until the two survivors accepted a write (a new leader): {}",
        elections.summary()
    ));
    section.figure(format!(
        "follower killed: until the two survivors accepted a write: {}",
        follower_writes.summary()
    ));
    section.figure(format!("changes the watcher reported: {changes}"));
    section.zero(
        "gaps (the watcher reported fewer than the 3 live instances)",
        gap_count + u64::from(ended),
    );
    section.zero("registrations missing after a restart (20 s)", lost);
    for registry in &registries {
        registry.close().await;
    }
    section
}

//! ZooKeeper scenarios: forced session expiries, restarts keeping and wiping the data, and
//! leader kills in a 3-server ensemble under a watcher.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use service_registry::zookeeper::{ZookeeperConfig, ZookeeperDiscovery, ZookeeperRegistry};
use service_registry::{Health, Info, Registry};
use zookeeper_client::Client;

use super::gaps::GapWatcher;
use super::presence::{observe, Present};
use super::report::Section;
use super::util::{fmt_duration, loopback, random_duration, register_all, tally, Dist};
use super::{Ctx, Scenario};
use crate::echo;
use crate::fixtures::zookeeper::{ZkEnsemble, ZooKeeper};

/// The session timeout of the expiry and restart scenarios (as in the fault tests).
const SESSION: Duration = Duration::from_secs(4);
const PROCESSES: usize = 3;
const SERVICES: usize = 50;
/// How long after ZooKeeper answers a registration may take before it counts as lost.
const LOST_AFTER: Duration = Duration::from_secs(20);

pub(crate) fn path(info: &Info) -> String {
    format!("/{}/{}", info.service_name, info.addr)
}

pub(crate) async fn connect(servers: &str) -> Option<Client> {
    let connect = Client::connector()
        .with_session_timeout(Duration::from_secs(10))
        .with_connection_timeout(Duration::from_secs(1))
        .connect(servers);
    tokio::time::timeout(Duration::from_secs(3), connect)
        .await
        .ok()?
        .ok()
}

/// Reads which of `paths` exist; an expected path counts only when it is owned by the current
/// session of the registry that registered it.
pub(crate) struct ZkReader {
    servers: String,
    client: Option<Client>,
    owners: BTreeMap<String, usize>,
    registries: Vec<ZookeeperRegistry>,
    extra: BTreeSet<String>,
}

impl ZkReader {
    pub(crate) fn new(
        servers: String,
        owners: BTreeMap<String, usize>,
        registries: Vec<ZookeeperRegistry>,
    ) -> Self {
        Self {
            servers,
            client: None,
            owners,
            registries,
            extra: BTreeSet::new(),
        }
    }

    /// Starts over with a new session (after the server lost its data).
    pub(crate) fn reconnect(&mut self) {
        self.client = None;
    }
}

#[async_trait]
impl Present for ZkReader {
    async fn present(&mut self) -> Option<BTreeSet<String>> {
        if self.client.is_none() {
            self.client = connect(&self.servers).await;
        }
        let client = self.client.as_ref()?;
        let paths: Vec<&String> = self.owners.keys().chain(self.extra.iter()).collect();
        let sessions: Vec<Option<i64>> = self
            .registries
            .iter()
            .map(|r| r.session().map(|s| s.id().0))
            .collect();
        let stats = tokio::time::timeout(
            Duration::from_secs(3),
            futures_util::future::join_all(paths.iter().map(|p| client.check_stat(p))),
        )
        .await;
        let Ok(stats) = stats else {
            self.client = None;
            return None;
        };
        let mut present = BTreeSet::new();
        for (path, stat) in paths.iter().zip(stats) {
            match stat {
                Ok(Some(stat)) => {
                    let owned = match self.owners.get(*path) {
                        Some(r) => sessions[*r] == Some(stat.ephemeral_owner),
                        None => true,
                    };
                    if owned {
                        present.insert((*path).clone());
                    }
                }
                Ok(None) => {}
                Err(_) => {
                    self.client = None;
                    return None;
                }
            }
        }
        Some(present)
    }
}

/// Three registries with 50 services each on `servers`.
async fn three_registries(
    servers: &str,
    session: Duration,
) -> (
    Vec<ZookeeperRegistry>,
    Vec<echo::Server>,
    BTreeMap<String, usize>,
) {
    let config = ZookeeperConfig::new(servers).session_timeout(session);
    let mut registries = Vec::new();
    let mut echoes = Vec::new();
    let mut owners = BTreeMap::new();
    for i in 0..PROCESSES {
        let registry = ZookeeperRegistry::new(config.clone()).expect("a ZooKeeper registry");
        let echo = echo::Server::start().await;
        let infos: Vec<Info> = (0..SERVICES)
            .map(|s| Info::new(format!("campaign.svc{s:02}"), echo.addr))
            .collect();
        for info in &infos {
            owners.insert(path(info), i);
        }
        let late = register_all(&registry, infos, Duration::from_secs(30)).await;
        assert_eq!(
            late, 0,
            "{late} initial registrations did not succeed in 30 s"
        );
        registries.push(registry);
        echoes.push(echo);
    }
    (registries, echoes, owners)
}

/// Takeovers tried per forced expiry. Each is a race the registry may win (it reattaches to its
/// session before the thief's close reaches the server; since the refused-session probe runs
/// beside the session task it reattaches faster): the full run of 2026-11-26 needed up to 6 for
/// 19 expiries and more than 10 for one.
const TAKEOVER_ATTEMPTS: u32 = 30;

/// `zk_expiries` sessions taken over by another client and closed, one registry at a time.
pub(crate) async fn expiries(ctx: Ctx) -> Section {
    let mut section = Section::new(Scenario::ZkExpiry);
    let progress = ctx.progress.clone();
    let count = ctx.options.zk_expiries;
    let zk = ZooKeeper::start().await;
    let servers = zk.connect_string();
    section.setup(format!(
        "standalone ZooKeeper ({}); {PROCESSES} ZookeeperRegistry instances in this process \
         (session timeout {} s, other settings default), {SERVICES} services each; each expiry: \
         a second client takes over one registry's session (`with_session(registry.session())`) \
         and closes it, repeated until the registry's session changes; then the registry's nodes \
         are polled every 10 ms until they exist again, owned by its new session",
        zookeeper_version(),
        SESSION.as_secs()
    ));
    let (registries, _echoes, owners) = three_registries(&servers, SESSION).await;
    let expected: BTreeSet<String> = owners.keys().cloned().collect();
    let mut reader = ZkReader::new(servers.clone(), owners.clone(), registries.clone());
    let first = observe(
        &mut reader,
        &expected,
        &BTreeSet::new(),
        Instant::now(),
        Duration::ZERO,
        Duration::from_secs(20),
        Duration::from_millis(20),
    )
    .await;
    assert!(
        first.missing.is_empty(),
        "initial nodes missing: {:?}",
        first.missing
    );

    let mut takeovers_failed = 0u64;
    let mut attempts: Vec<String> = Vec::new();
    let mut detected = Dist::default();
    let mut delays = Dist::default();
    let mut all_back = Dist::default();
    let mut lost = 0u64;
    for n in 0..count {
        let r = n % PROCESSES;
        let registry = &registries[r];
        let Some(session) = crate::poll::within(
            Duration::from_secs(10),
            Duration::from_millis(10),
            || async { registry.session() },
        )
        .await
        else {
            takeovers_failed += 1;
            section.detail(format!("expiry {n}: registry {r} had no session for 10 s"));
            continue;
        };
        let old = session.id();
        let mut closed_at = None;
        for attempt in 1..=TAKEOVER_ATTEMPTS {
            let connect = Client::connector()
                .with_session(session.clone())
                .with_session_timeout(SESSION)
                .connect(&servers);
            let Ok(Ok(thief)) = tokio::time::timeout(Duration::from_secs(3), connect).await else {
                continue;
            };
            drop(thief);
            let closed = Instant::now();
            let changed =
                crate::poll::within(Duration::from_secs(3), Duration::from_millis(5), || async {
                    registry
                        .session()
                        .is_none_or(|s| s.id() != old)
                        .then_some(())
                })
                .await;
            if changed.is_some() {
                closed_at = Some(closed);
                detected.push(closed.elapsed());
                attempts.push(format!("{attempt} attempt(s):"));
                break;
            }
        }
        let Some(closed) = closed_at else {
            takeovers_failed += 1;
            section.detail(format!(
                "expiry {n}: the session of registry {r} could not be taken over in {TAKEOVER_ATTEMPTS} attempts"
            ));
            continue;
        };
        let seen = observe(
            &mut reader,
            &expected,
            &BTreeSet::new(),
            closed,
            Duration::ZERO,
            LOST_AFTER,
            Duration::from_millis(10),
        )
        .await;
        for (_, delay) in &seen.delays {
            delays.push(*delay);
        }
        if let Some(back) = seen.all_back {
            all_back.push(back);
        }
        lost += seen.missing.len() as u64;
        for path in seen.missing.iter().take(3) {
            section.detail(format!(
                "expiry {n}: {path} not back within {} s",
                LOST_AFTER.as_secs()
            ));
        }
        progress.note(format!(
            "expiry {}/{count} (registry {r}): {} nodes recreated, all back after {}",
            n + 1,
            seen.delays.len(),
            seen.all_back
                .map(fmt_duration)
                .unwrap_or_else(|| "never".into())
        ));
    }
    section.figure(format!(
        "forced expiries: {count}; takeovers needed per expiry (the registry may win its session \
         back first; `n attempt(s): expiries`): {}",
        tally(attempts.iter().map(String::as_str))
    ));
    section.figure(format!(
        "from the thief's close until the registry dropped its session: {}",
        detected.summary()
    ));
    section.figure(format!(
        "from the thief's close until a node was back, owned by the new session: {}",
        delays.summary()
    ));
    section.figure(format!(
        "from the thief's close until all {SERVICES} nodes of the registry were back: {}",
        all_back.summary()
    ));
    section.zero(
        "lost registrations (not back 20 s after the expiry; node × expiry)",
        lost,
    );
    section.zero("expiries that could not be forced", takeovers_failed);
    for registry in &registries {
        registry.close().await;
    }
    section
}

/// ZooKeeper restarted `zk_restarts_kept` times keeping its data and `zk_restarts_wiped` times
/// wiping it, in random order.
pub(crate) async fn restarts(ctx: Ctx) -> Section {
    let mut section = Section::new(Scenario::ZkRestarts);
    let progress = ctx.progress.clone();
    let mut rng = ctx.rng();
    let mut zk = ZooKeeper::start().await;
    let servers = zk.connect_string();
    section.setup(format!(
        "standalone ZooKeeper ({}); {PROCESSES} ZookeeperRegistry instances in this process \
         (session timeout {} s, other settings default), {SERVICES} services each; each restart: \
         SIGKILL, delete the data directory or not, down 0.2–5 s, restart; then every node is \
         polled every 20 ms until it exists owned by its registry's current session and {} s \
         have passed (absent {} s after ZooKeeper answered: lost), and each registry's health \
         and session every 5 ms; a ZookeeperDiscovery watch on `campaign.svc00` (3 instances) \
         across each restart; seed {}",
        zookeeper_version(),
        SESSION.as_secs(),
        (SESSION + Duration::from_secs(2)).as_secs(),
        LOST_AFTER.as_secs(),
        ctx.options.seed
    ));
    let (registries, _echoes, owners) = three_registries(&servers, SESSION).await;
    let expected: BTreeSet<String> = owners.keys().cloned().collect();
    let mut reader = ZkReader::new(servers.clone(), owners.clone(), registries.clone());
    // A watcher of one service (one instance per registry), as a client would see it.
    let discovery =
        ZookeeperDiscovery::new(ZookeeperConfig::new(servers.clone()).session_timeout(SESSION));
    let watched = "campaign.svc00";
    let first = observe(
        &mut reader,
        &expected,
        &BTreeSet::new(),
        Instant::now(),
        Duration::ZERO,
        Duration::from_secs(20),
        Duration::from_millis(20),
    )
    .await;
    assert!(
        first.missing.is_empty(),
        "initial nodes missing: {:?}",
        first.missing
    );

    let mut kinds: Vec<bool> = std::iter::repeat_n(false, ctx.options.zk_restarts_kept)
        .chain(std::iter::repeat_n(true, ctx.options.zk_restarts_wiped))
        .collect();
    rng.shuffle(&mut kinds);
    let total = kinds.len();
    let mut per: BTreeMap<&str, (usize, Dist, Dist)> = BTreeMap::new();
    let mut lost = 0u64;
    // Kept data: ZooKeeper restores every session with a fresh timeout, so each registry must
    // attach to its own session again.
    let mut reattached = Dist::default();
    let mut given_up = 0u64;
    let mut kept_gaps = 0u64;
    let mut wiped_gaps = 0u64;
    for (n, wiped) in kinds.iter().copied().enumerate() {
        let name = if wiped { "wiped data" } else { "kept data" };
        let down = random_duration(&mut rng, Duration::from_millis(200), Duration::from_secs(5));
        let sessions: Vec<Option<i64>> = registries
            .iter()
            .map(|r| r.session().map(|s| s.id().0))
            .collect();
        let gaps = GapWatcher::armed(&discovery, watched, PROCESSES).await;
        zk.stop();
        if wiped {
            zk.wipe();
        }
        tokio::time::sleep(down).await;
        zk.restart().await;
        let answering = Instant::now();
        reader.reconnect();
        // Every registry healthy again; for kept data, on the session it had before. Polled
        // beside the reads of the nodes.
        let healthy = crate::poll::within(LOST_AFTER, Duration::from_millis(5), || async {
            let back = registries.iter().zip(&sessions).all(|(r, before)| {
                let healthy = r.health().is_some_and(|h| *h.borrow() == Health::Healthy);
                let session = r.session().map(|s| s.id().0);
                healthy && session.is_some() && (wiped || session == *before)
            });
            back.then(|| answering.elapsed())
        });
        let none = BTreeSet::new();
        let seen = observe(
            &mut reader,
            &expected,
            &none,
            answering,
            SESSION + Duration::from_secs(2),
            LOST_AFTER,
            Duration::from_millis(20),
        );
        let (healthy, seen) = tokio::join!(healthy, seen);
        if !wiped {
            match healthy {
                Some(took) => reattached.push(took),
                None => given_up += 1,
            }
            let now: Vec<Option<i64>> = registries
                .iter()
                .map(|r| r.session().map(|s| s.id().0))
                .collect();
            if now != sessions {
                section.detail(format!(
                    "restart {n} (kept data, down {}): sessions {sessions:x?} became {now:x?}",
                    fmt_duration(down)
                ));
            }
        }
        let entry = per.entry(name).or_default();
        entry.0 += 1;
        for (_, delay) in &seen.delays {
            entry.1.push(*delay);
        }
        if let Some(back) = seen.all_back {
            entry.2.push(back);
        }
        lost += seen.missing.len() as u64;
        let (gap_count, _, _, gap_details) = gaps.finish();
        if wiped {
            wiped_gaps += gap_count;
        } else {
            kept_gaps += gap_count;
            for line in gap_details.iter().take(3) {
                section.detail(format!(
                    "restart {n} (kept data, down {}): {line}",
                    fmt_duration(down)
                ));
            }
        }
        for path in seen.missing.iter().take(3) {
            section.detail(format!(
                "restart {n} ({name}, down {}): {path} not back within {} s",
                fmt_duration(down),
                LOST_AFTER.as_secs()
            ));
        }
        progress.note(format!(
            "restart {}/{total}: {name}, down {}, first read after {}, {} recreated, all back after {}",
            n + 1,
            fmt_duration(down),
            seen.first_read.map(fmt_duration).unwrap_or_default(),
            seen.delays.len(),
            seen.all_back.map(fmt_duration).unwrap_or_else(|| "never".into())
        ));
    }
    let names: Vec<&str> = kinds
        .iter()
        .map(|w| if *w { "wiped data" } else { "kept data" })
        .collect();
    section.figure(format!(
        "restarts: {total} ({})",
        tally(names.iter().copied())
    ));
    for (name, (restarts, delays, all_back)) in &per {
        section.figure(format!(
            "{name} ({restarts} restarts): node recreated after ZooKeeper answered (nodes that \
             were absent or owned by a dead session after it answered): {}",
            delays.summary()
        ));
        section.figure(format!(
            "{name}: every node back, owned by a live session, after: {}",
            all_back.summary()
        ));
    }
    section.figure(format!(
        "kept data: every registry healthy again on the session it had, after ZooKeeper \
         answered: {} (goal ≤ 1 s)",
        reattached.summary()
    ));
    section.figure(format!(
        "wiped data: watcher gaps (`{watched}` reported with fewer than its {PROCESSES} \
         instances; expected: every node goes with the data): {wiped_gaps}"
    ));
    section.zero(
        "lost registrations (not back 20 s after ZooKeeper answered; node × restart)",
        lost,
    );
    section.zero(
        "kept data: sessions given up although ZooKeeper held them (not healthy on the same \
         session within 20 s; restarts)",
        given_up,
    );
    section.zero(
        format!(
            "kept data: watcher gaps (`{watched}` reported with fewer than its {PROCESSES} \
             instances)"
        ),
        kept_gaps,
    );
    for registry in &registries {
        registry.close().await;
    }
    section
}

pub(crate) fn zookeeper_version() -> String {
    std::fs::read_dir("/usr/share/java")
        .ok()
        .and_then(|dir| {
            dir.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .find(|n| n.starts_with("zookeeper-3") && n.ends_with(".jar"))
        })
        .map(|jar| jar.trim_end_matches(".jar").replace('-', " "))
        .unwrap_or_else(|| "zookeeper".into())
}

/// A 3-server ensemble; the leader killed and restarted `zk_leader_kills` times under a watcher
/// of a service with three live instances.
pub(crate) async fn leader_kills(ctx: Ctx) -> Section {
    let mut section = Section::new(Scenario::ZkLeaderKills);
    let progress = ctx.progress.clone();
    let mut rng = ctx.rng();
    let count = ctx.options.zk_leader_kills;
    let mut ensemble = ZkEnsemble::start(3).await;
    let servers = ensemble.connect_string();
    section.setup(format!(
        "3-server ZooKeeper ensemble ({}); 3 ZookeeperRegistry instances (default settings: \
         session timeout 10 s) each registering one instance of `campaign.watched`, all given \
         the 3 servers; a ZookeeperDiscovery watch on the service; each kill: SIGKILL the leader, \
         down 0.5–3 s, restart it, wait until the ensemble serves again; seed {}",
        zookeeper_version(),
        ctx.options.seed
    ));
    let config = ZookeeperConfig::new(servers.clone());
    let mut registries = Vec::new();
    let mut owners = BTreeMap::new();
    for i in 0..3u16 {
        let registry = ZookeeperRegistry::new(config.clone()).expect("a ZooKeeper registry");
        let info = Info::new("campaign.watched", loopback(22_001 + i));
        owners.insert(path(&info), usize::from(i));
        assert_eq!(
            register_all(&registry, [info], Duration::from_secs(30)).await,
            0,
            "initial registration"
        );
        registries.push(registry);
    }
    let discovery = ZookeeperDiscovery::new(config.clone());
    let gaps = GapWatcher::armed(&discovery, "campaign.watched", 3).await;
    let expected: BTreeSet<String> = owners.keys().cloned().collect();
    let mut reader = ZkReader::new(servers.clone(), owners, registries.clone());
    let mut elections = Dist::default();
    let mut lost = 0u64;
    for n in 0..count {
        let leader = ensemble.leader().await;
        ensemble.kill(leader);
        let killed = Instant::now();
        let down = random_duration(&mut rng, Duration::from_millis(500), Duration::from_secs(3));
        let _ = ensemble.leader().await;
        elections.push(killed.elapsed());
        tokio::time::sleep_until((killed + down).into()).await;
        ensemble.restart(leader).await;
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
            "leader kill {}/{count}: server {leader}, down {}",
            n + 1,
            fmt_duration(down)
        ));
    }
    let (gap_count, changes, ended, details) = gaps.finish();
    for detail in details {
        section.detail(detail);
    }
    section.figure(format!("leader kills: {count}"));
    section.figure(format!(
        "from the kill until another server reported `Mode: leader`: {}",
        elections.summary()
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

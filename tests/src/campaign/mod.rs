//! The reliability campaign: real etcd, ZooKeeper and Nacos (r-nacos) servers restarted, wiped, frozen, killed and
//! loaded while registries, watchers and service processes run against them, with every
//! must-be-zero counter counted and every delay measured.
//!
//! [`run`] executes the selected [`Scenario`]s one after the other, each against servers of its
//! own (started by the fixtures on free loopback ports), and returns a [`Report`]. The
//! `campaign` binary (`cargo run --release -p tests --features etcd,zookeeper,nacos --bin campaign`)
//! prints it; `tests/campaign_quick.rs` runs [`Options::quick`] and asserts that every
//! must-be-zero counter is 0.

mod bad_data;
mod etcd;
mod gaps;
mod load;
mod nacos;
mod presence;
mod processes;
mod report;
mod util;
mod zookeeper;

use std::path::PathBuf;
use std::time::{Duration, Instant};

// The graceful-shutdown scenario runs a registrar for `linked.alpha`, a `#[service]` defined in
// this library: link it.
use linked_services as _;

pub use report::{Report, Section};

/// One scenario of the campaign.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scenario {
    /// etcd restarted with its data, without it, or frozen past the lease TTL, while 3
    /// registries hold 50 services each and services come and go during the outages.
    EtcdRestarts,
    /// A member of a 3-member etcd cluster killed and restarted (the leader every other time)
    /// while a watcher follows a service.
    EtcdMemberKills,
    /// The leader of a 3-server ZooKeeper ensemble killed and restarted while a watcher follows
    /// a service.
    ZkLeaderKills,
    /// ZooKeeper sessions taken over and closed by another client.
    ZkExpiry,
    /// ZooKeeper restarted with and without its data.
    ZkRestarts,
    /// Service processes (the example binaries) SIGKILLed at random.
    Sigkill,
    /// A registrar shut down while a client calls through discovery.
    Shutdown,
    /// 10 000 services in one process on etcd.
    LoadEtcd,
    /// 10 000 services in one process on ZooKeeper.
    LoadZookeeper,
    /// 1 000 watchers on one service (etcd and ZooKeeper).
    Watchers,
    /// A memory-registry watcher that never reads, over 1 000 000 changes.
    MemoryWatcher,
    /// Malformed registry data next to good data (etcd and ZooKeeper).
    BadData,
    /// r-nacos restarted (its data kept or wiped) or frozen while 3 registries hold 50 services
    /// each and services come and go during the outages.
    NacosRestarts,
    /// 10 000 services in one process on Nacos.
    LoadNacos,
    /// 1 000 watchers on one service on Nacos.
    WatchersNacos,
    /// Malformed instance data and a service whose answer is over 4 MiB on Nacos.
    BadDataNacos,
}

impl Scenario {
    /// Every scenario, in the order [`run`] executes them.
    pub const ALL: [Scenario; 16] = [
        Scenario::EtcdRestarts,
        Scenario::EtcdMemberKills,
        Scenario::ZkLeaderKills,
        Scenario::ZkExpiry,
        Scenario::ZkRestarts,
        Scenario::Sigkill,
        Scenario::Shutdown,
        Scenario::LoadEtcd,
        Scenario::LoadZookeeper,
        Scenario::Watchers,
        Scenario::MemoryWatcher,
        Scenario::BadData,
        Scenario::NacosRestarts,
        Scenario::LoadNacos,
        Scenario::WatchersNacos,
        Scenario::BadDataNacos,
    ];

    /// The name used by `--only`.
    pub fn id(self) -> &'static str {
        match self {
            Scenario::EtcdRestarts => "etcd-restarts",
            Scenario::EtcdMemberKills => "etcd-member-kills",
            Scenario::ZkLeaderKills => "zk-leader-kills",
            Scenario::ZkExpiry => "zk-expiry",
            Scenario::ZkRestarts => "zk-restarts",
            Scenario::Sigkill => "sigkill",
            Scenario::Shutdown => "shutdown",
            Scenario::LoadEtcd => "load-etcd",
            Scenario::LoadZookeeper => "load-zk",
            Scenario::Watchers => "watchers",
            Scenario::MemoryWatcher => "memory-watcher",
            Scenario::BadData => "bad-data",
            Scenario::NacosRestarts => "nacos-restarts",
            Scenario::LoadNacos => "load-nacos",
            Scenario::WatchersNacos => "watchers-nacos",
            Scenario::BadDataNacos => "bad-data-nacos",
        }
    }

    /// The scenario named `id`.
    pub fn from_id(id: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.id() == id)
    }

    /// A heading for the report.
    pub fn title(self) -> &'static str {
        match self {
            Scenario::EtcdRestarts => "etcd restarts, wipes and freezes under 3 registries",
            Scenario::EtcdMemberKills => "3-member etcd: member kills under a watcher",
            Scenario::ZkLeaderKills => "3-server ZooKeeper: leader kills under a watcher",
            Scenario::ZkExpiry => "ZooKeeper forced session expiries",
            Scenario::ZkRestarts => "ZooKeeper restarts keeping and wiping data",
            Scenario::Sigkill => "service processes SIGKILLed",
            Scenario::Shutdown => "graceful shutdown under client calls",
            Scenario::LoadEtcd => "load: many services in one process on etcd",
            Scenario::LoadZookeeper => "load: many services in one process on ZooKeeper",
            Scenario::Watchers => "load: many watchers on one service",
            Scenario::MemoryWatcher => "load: a memory watcher that never reads",
            Scenario::BadData => "bad registry data",
            Scenario::NacosRestarts => "r-nacos restarts, wipes and freezes under 3 registries",
            Scenario::LoadNacos => "load: many services in one process on Nacos",
            Scenario::WatchersNacos => "load: many watchers on one service on Nacos",
            Scenario::BadDataNacos => "bad registry data on Nacos (and an answer over 4 MiB)",
        }
    }
}

/// How much of each scenario to do.
#[derive(Clone, Debug)]
pub struct Options {
    /// etcd restarts (kept, wiped or frozen, chosen at random).
    pub etcd_restarts: usize,
    /// Member kills in the 3-member etcd cluster (the leader every other time).
    pub member_kills: usize,
    /// Leader kills in the 3-server ZooKeeper ensemble.
    pub zk_leader_kills: usize,
    /// Forced ZooKeeper session expiries.
    pub zk_expiries: usize,
    /// ZooKeeper restarts keeping the data.
    pub zk_restarts_kept: usize,
    /// ZooKeeper restarts wiping the data.
    pub zk_restarts_wiped: usize,
    /// r-nacos restarts (kept, wiped or frozen, a third each).
    pub nacos_restarts: usize,
    /// Instances (1 KiB of metadata each) of the big service in the Nacos bad-data scenario.
    pub nacos_big_service: usize,
    /// Example processes SIGKILLed (half on etcd, half on ZooKeeper).
    pub sigkills: usize,
    /// Registrar shutdowns per backend in the shutdown scenario.
    pub shutdown_rounds: usize,
    /// Services registered by one process in the load scenarios.
    pub load_services: usize,
    /// Watchers on one service.
    pub watchers: usize,
    /// Changes the watchers are timed on.
    pub fanout_rounds: usize,
    /// Changes under a memory watcher that never reads.
    pub memory_changes: usize,
    /// How long idle keep-alive traffic is measured.
    pub traffic_window: Duration,
    /// The scenarios to run, in order.
    pub scenarios: Vec<Scenario>,
    /// Seed of every random choice (printed, so a run can be repeated).
    pub seed: u64,
    /// Progress lines on stderr.
    pub progress: bool,
    /// Where the example binaries are (see the `sigkill` scenario).
    pub examples_dir: Option<PathBuf>,
    /// A scenario still running after this long is aborted and counted as failed.
    pub scenario_timeout: Duration,
}

impl Options {
    /// The full campaign.
    pub fn full() -> Self {
        Self {
            etcd_restarts: 100,
            member_kills: 20,
            zk_leader_kills: 10,
            zk_expiries: 20,
            zk_restarts_kept: 10,
            zk_restarts_wiped: 5,
            nacos_restarts: 100,
            nacos_big_service: 5_000,
            sigkills: 50,
            shutdown_rounds: 10,
            load_services: 10_000,
            watchers: 1_000,
            fanout_rounds: 20,
            memory_changes: 1_000_000,
            traffic_window: Duration::from_secs(60),
            scenarios: Scenario::ALL.to_vec(),
            seed: 1,
            progress: true,
            examples_dir: None,
            scenario_timeout: Duration::from_secs(60 * 60),
        }
    }

    /// Tiny counts, for CI.
    pub fn quick() -> Self {
        Self {
            etcd_restarts: 3,
            member_kills: 2,
            zk_leader_kills: 1,
            zk_expiries: 2,
            zk_restarts_kept: 1,
            zk_restarts_wiped: 1,
            nacos_restarts: 3,
            nacos_big_service: 5_000,
            sigkills: 4,
            shutdown_rounds: 2,
            load_services: 500,
            watchers: 100,
            fanout_rounds: 5,
            memory_changes: 50_000,
            traffic_window: Duration::from_secs(6),
            scenario_timeout: Duration::from_secs(240),
            ..Self::full()
        }
    }
}

/// What a scenario gets.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub(crate) options: Options,
    pub(crate) progress: util::Progress,
    seed: u64,
}

impl Ctx {
    /// The scenario's own random source (seeded from the run's seed and the scenario).
    pub(crate) fn rng(&self) -> fastrand::Rng {
        fastrand::Rng::with_seed(self.seed)
    }
}

async fn run_one(scenario: Scenario, ctx: Ctx) -> Section {
    match scenario {
        Scenario::EtcdRestarts => etcd::restarts(ctx).await,
        Scenario::EtcdMemberKills => etcd::member_kills(ctx).await,
        Scenario::ZkLeaderKills => zookeeper::leader_kills(ctx).await,
        Scenario::ZkExpiry => zookeeper::expiries(ctx).await,
        Scenario::ZkRestarts => zookeeper::restarts(ctx).await,
        Scenario::Sigkill => processes::sigkills(ctx).await,
        Scenario::Shutdown => processes::shutdown(ctx).await,
        Scenario::LoadEtcd => load::etcd(ctx).await,
        Scenario::LoadZookeeper => load::zookeeper(ctx).await,
        Scenario::Watchers => load::watchers(ctx).await,
        Scenario::MemoryWatcher => load::memory_watcher(ctx).await,
        Scenario::BadData => bad_data::run(ctx).await,
        Scenario::NacosRestarts => nacos::restarts(ctx).await,
        Scenario::LoadNacos => nacos::load(ctx).await,
        Scenario::WatchersNacos => nacos::watchers(ctx).await,
        Scenario::BadDataNacos => nacos::bad_data(ctx).await,
    }
}

/// Runs the selected scenarios one after the other; `on_section` sees each section as soon as
/// its scenario ends. A scenario that panics or outlives its timeout is reported as aborted
/// (which counts as a failure).
pub async fn run(options: &Options, mut on_section: impl FnMut(&Section)) -> Report {
    let started = Instant::now();
    let mut report = Report::default();
    for scenario in options.scenarios.iter().copied() {
        // Each scenario draws from its own seed, so selecting scenarios does not change them.
        let index = Scenario::ALL
            .iter()
            .position(|s| *s == scenario)
            .unwrap_or(0);
        let ctx = Ctx {
            options: options.clone(),
            progress: util::Progress::new(scenario.id(), options.progress),
            seed: options
                .seed
                .wrapping_mul(1_000_003)
                .wrapping_add(index as u64),
        };
        ctx.progress.note("starting");
        let scenario_started = Instant::now();
        let task = tokio::spawn(run_one(scenario, ctx));
        let abort = task.abort_handle();
        let mut section = match tokio::time::timeout(options.scenario_timeout, task).await {
            Ok(Ok(section)) => section,
            Ok(Err(err)) => {
                let mut section = Section::new(scenario);
                let reason = match err.try_into_panic() {
                    Ok(panic) => panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "a panic without a message".into()),
                    Err(err) => err.to_string(),
                };
                section.aborted = Some(format!("panicked: {reason}"));
                section
            }
            Err(_) => {
                abort.abort();
                let mut section = Section::new(scenario);
                section.aborted = Some(format!(
                    "still running after {}",
                    util::fmt_duration(options.scenario_timeout)
                ));
                section
            }
        };
        section.took = scenario_started.elapsed();
        on_section(&section);
        report.sections.push(section);
    }
    report.took = started.elapsed();
    report
}

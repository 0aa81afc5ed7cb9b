//! Small pieces the scenarios share: statistics, RSS, an echo caller, a registration loop that
//! behaves like the registrar's, and the example binaries. The echo server, the byte-counting
//! proxy and child spawning are the test library's own (`echo`, `proxy`, `child`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use service_registry::{Health, Info, Registry};
use tokio::process::{Child, Command};
use tokio::task::{JoinHandle, JoinSet};

use crate::child::spawn_registered;
use crate::echo;

/// `127.0.0.1:port`.
pub(crate) fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// `412 ms`, `3.21 s`, `12 min 3 s`.
pub(crate) fn fmt_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 1.0 {
        format!("{} ms", d.as_millis())
    } else if secs < 120.0 {
        format!("{secs:.2} s")
    } else {
        format!("{} min {} s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

/// Bytes as MiB with one decimal.
pub(crate) fn fmt_mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// The nearest-rank percentile `p` (0–100) of sorted `values`.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A set of measured durations.
#[derive(Clone, Debug, Default)]
pub(crate) struct Dist {
    values: Vec<Duration>,
}

impl Dist {
    pub(crate) fn push(&mut self, value: Duration) {
        self.values.push(value);
    }

    pub(crate) fn extend(&mut self, other: &Dist) {
        self.values.extend_from_slice(&other.values);
    }

    pub(crate) fn len(&self) -> usize {
        self.values.len()
    }

    pub(crate) fn max(&self) -> Option<Duration> {
        self.values.iter().max().copied()
    }

    /// `p50 12 ms, p99 340 ms, max 512 ms (n = 150)`, or `none measured`.
    pub(crate) fn summary(&self) -> String {
        if self.values.is_empty() {
            return "none measured (n = 0)".to_string();
        }
        let mut sorted = self.values.clone();
        sorted.sort();
        format!(
            "min {}, p50 {}, p99 {}, max {} (n = {})",
            fmt_duration(sorted[0]),
            fmt_duration(percentile(&sorted, 50.0)),
            fmt_duration(percentile(&sorted, 99.0)),
            fmt_duration(sorted[sorted.len() - 1]),
            sorted.len()
        )
    }
}

/// This process's resident set size in bytes (`VmRSS` in `/proc/self/status`).
pub(crate) fn rss() -> u64 {
    proc_status_kib("VmRSS:") * 1024
}

/// This process's peak resident set size in bytes (`VmHWM`).
pub(crate) fn peak_rss() -> u64 {
    proc_status_kib("VmHWM:") * 1024
}

fn proc_status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Progress lines on stderr (stdout carries only the report).
#[derive(Clone)]
pub(crate) struct Progress {
    scenario: &'static str,
    started: Instant,
    enabled: bool,
}

impl Progress {
    pub(crate) fn new(scenario: &'static str, enabled: bool) -> Self {
        Self {
            scenario,
            started: Instant::now(),
            enabled,
        }
    }

    pub(crate) fn note(&self, message: impl AsRef<str>) {
        if self.enabled {
            eprintln!(
                "[{:>7.1} s] {}: {}",
                self.started.elapsed().as_secs_f64(),
                self.scenario,
                message.as_ref()
            );
        }
    }
}

/// A uniformly random duration in `[low, high)`.
pub(crate) fn random_duration(rng: &mut fastrand::Rng, low: Duration, high: Duration) -> Duration {
    let span = high.saturating_sub(low).as_millis() as u64;
    low + Duration::from_millis(if span == 0 { 0 } else { rng.u64(0..span) })
}

/// Calls each address with the echo client every `period`, counting calls and failures.
pub(crate) struct EchoCaller {
    calls: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
    first_failure: Arc<std::sync::Mutex<Option<String>>>,
    task: JoinHandle<()>,
}

impl EchoCaller {
    pub(crate) fn start(addrs: Vec<SocketAddr>, period: Duration) -> Self {
        let calls = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(AtomicU64::new(0));
        let first_failure = Arc::new(std::sync::Mutex::new(None));
        let task = tokio::spawn({
            let (calls, failures, first_failure) =
                (calls.clone(), failures.clone(), first_failure.clone());
            async move {
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    for addr in &addrs {
                        calls.fetch_add(1, Ordering::Relaxed);
                        let ok = matches!(echo::call(*addr, "ping").await, Ok(r) if r == "ping");
                        if !ok {
                            failures.fetch_add(1, Ordering::Relaxed);
                            let mut first = first_failure.lock().unwrap();
                            first.get_or_insert_with(|| format!("echo call to {addr} failed"));
                        }
                    }
                }
            }
        });
        Self {
            calls,
            failures,
            first_failure,
            task,
        }
    }

    /// Stops calling; returns (calls, failures, first failure).
    pub(crate) fn finish(self) -> (u64, u64, Option<String>) {
        self.task.abort();
        (
            self.calls.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
            self.first_failure.lock().unwrap().clone(),
        )
    }
}

/// Registers `info` until a call succeeds, pausing like the registrar does: a backoff from
/// 200 ms doubling to 30 s, cut short when the backend reports itself healthy again.
pub(crate) async fn register_until_ok<R: Registry>(registry: R, info: Info) {
    let mut health = registry.health();
    let mut delay = Duration::from_millis(200);
    loop {
        if let Some(rx) = &mut health {
            rx.borrow_and_update();
        }
        let call = tokio::time::timeout(Duration::from_secs(10), registry.register(&info));
        if let Ok(Ok(())) = call.await {
            return;
        }
        let healthy_again = async {
            match &mut health {
                Some(rx) => {
                    let _ = rx.wait_for(|h| *h == Health::Healthy).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = healthy_again => {}
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// Registers every info (each with [`register_until_ok`]) and waits for all, at most `limit`.
/// Returns how many did not finish in time.
pub(crate) async fn register_all<R: Registry + Clone>(
    registry: &R,
    infos: impl IntoIterator<Item = Info>,
    limit: Duration,
) -> usize {
    let mut tasks = JoinSet::new();
    for info in infos {
        tasks.spawn(register_until_ok(registry.clone(), info));
    }
    let total = tasks.len();
    let mut done = 0;
    let deadline = tokio::time::Instant::now() + limit;
    while let Ok(Some(_)) = tokio::time::timeout_at(deadline, tasks.join_next()).await {
        done += 1;
    }
    total - done
}

/// Where the `etcd` and `zookeeper` example binaries are: `dir` if given, else
/// `$CAMPAIGN_EXAMPLES_DIR`, else `examples/` next to this executable or one level up (a test
/// binary runs from `target/<profile>/deps`).
pub(crate) fn examples_dir(dir: Option<&Path>) -> Result<PathBuf, String> {
    let has_both = |d: &Path| d.join("etcd").is_file() && d.join("zookeeper").is_file();
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = dir {
        candidates.push(dir.to_path_buf());
    }
    if let Some(dir) = std::env::var_os("CAMPAIGN_EXAMPLES_DIR") {
        candidates.push(PathBuf::from(dir));
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(parent) = exe.parent() {
            candidates.push(parent.join("examples"));
            if let Some(grand) = parent.parent() {
                candidates.push(grand.join("examples"));
            }
        }
    }
    candidates.into_iter().find(|d| has_both(d)).ok_or_else(|| {
        "the `etcd` and `zookeeper` example binaries were not found next to this executable; \
         build them with the same profile first, e.g. `cargo build --release -p examples \
         --features etcd,zookeeper --examples`, or point --examples-dir / CAMPAIGN_EXAMPLES_DIR \
         at them"
            .to_string()
    })
}

/// Spawns example `binary` with `env`, `LISTEN_ADDR=127.0.0.1:0` and `RUST_LOG=error`, and waits
/// (20 s at most) for its two `registered <service> at <addr>` lines.
pub(crate) async fn spawn_example(
    binary: &Path,
    env: &[(&str, String)],
) -> Result<(Child, Vec<(String, SocketAddr)>), String> {
    let mut command = Command::new(binary);
    command
        .env("RUST_LOG", "error")
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    spawn_registered(&mut command)
        .await
        .map_err(|err| format!("{}: {err}", binary.display()))
}

/// Counts how often each value occurs.
pub(crate) fn tally<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for item in items {
        *counts.entry(item).or_default() += 1;
    }
    counts
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

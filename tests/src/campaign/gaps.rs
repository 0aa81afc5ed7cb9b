//! Follows a watch stream and counts gaps: moments when a service whose instances all stay
//! registered is reported with fewer of them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use service_registry::{Discovery, WatchStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Default)]
struct State {
    /// Seen the full set once.
    armed: bool,
    /// Currently reported with fewer than expected.
    short: bool,
    gaps: u64,
    changes: u64,
    ended: bool,
    details: Vec<String>,
}

/// Counts every time the watched set drops below `expected` after having reached it.
pub(crate) struct GapWatcher {
    state: Arc<Mutex<State>>,
    armed: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl GapWatcher {
    pub(crate) fn start(mut stream: WatchStream, expected: usize) -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let (armed_tx, armed) = watch::channel(false);
        let started = Instant::now();
        let task = tokio::spawn({
            let state = state.clone();
            async move {
                while let Some(change) = stream.next().await {
                    let mut s = state.lock().unwrap();
                    s.changes += 1;
                    let size = change.all.len();
                    if !s.armed {
                        if size >= expected {
                            s.armed = true;
                            let _ = armed_tx.send(true);
                        }
                        continue;
                    }
                    if size < expected && !s.short {
                        s.short = true;
                        s.gaps += 1;
                        if s.details.len() < 10 {
                            let removed: Vec<String> =
                                change.removed.iter().map(|i| i.addr.to_string()).collect();
                            let at = started.elapsed().as_secs_f64();
                            s.details.push(format!(
                                "at {at:.1} s the watcher reported {size} of {expected} instances (removed {removed:?})"
                            ));
                        }
                    } else if size >= expected {
                        s.short = false;
                    }
                }
                let mut s = state.lock().unwrap();
                s.ended = true;
                s.details.push("the watch stream ended".into());
            }
        });
        Self { state, armed, task }
    }

    /// Watches `service` through `discovery` and waits (30 s at most) until the watch has seen
    /// all `expected` instances once.
    pub(crate) async fn armed<D: Discovery>(discovery: &D, service: &str, expected: usize) -> Self {
        let stream = discovery
            .watch(service)
            .await
            .unwrap_or_else(|err| panic!("watch {service}: {err}"));
        let mut gaps = Self::start(stream, expected);
        assert!(
            gaps.wait_armed(Duration::from_secs(30)).await,
            "the watcher never saw the {expected} instances of {service}"
        );
        gaps
    }

    /// Waits until the full set was seen once; false after `limit`.
    pub(crate) async fn wait_armed(&mut self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.armed.wait_for(|a| *a))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// (gaps, changes seen, ended, details).
    pub(crate) fn finish(self) -> (u64, u64, bool, Vec<String>) {
        self.task.abort();
        let s = self.state.lock().unwrap();
        (s.gaps, s.changes, s.ended, s.details.clone())
    }
}

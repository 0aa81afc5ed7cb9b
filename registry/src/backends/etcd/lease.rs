//! The lease: one lease for the whole process, and its keep-alive in a task of its own, so
//! that it never waits behind a write. The [session](super::session) takes, resumes and
//! replaces leases; this module only holds one and keeps it alive.

use std::time::Duration;

use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The keep-alive of one lease, in its own task; aborted when dropped.
pub(super) struct KeepAlive {
    pub(super) lost: oneshot::Receiver<String>,
    task: JoinHandle<()>,
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl KeepAlive {
    /// Sends a keep-alive every TTL/3 and reads the answers; reports the first sign of loss.
    pub(super) fn start(
        mut keeper: LeaseKeeper,
        mut stream: LeaseKeepAliveStream,
        ttl: Duration,
    ) -> Self {
        let (report, lost) = oneshot::channel();
        let task = tokio::spawn(async move {
            let period = (ttl / 3).max(Duration::from_millis(500));
            let mut tick = tokio::time::interval_at(Instant::now() + period, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_ack = Instant::now();
            let mut sent_at: Option<Instant> = None;
            let cause = loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if last_ack.elapsed() >= ttl {
                            break format!("no keep-alive answer for {ttl:?}; the lease has expired");
                        }
                        sent_at = Some(Instant::now());
                        if let Err(err) = keeper.keep_alive().await {
                            break format!("keep-alive request failed: {err}");
                        }
                    }
                    message = stream.message() => match message {
                        Ok(Some(response)) if response.ttl() > 0 => {
                            last_ack = Instant::now();
                            if let Some(sent) = sent_at.take() {
                                crate::metrics::keepalive("etcd", sent.elapsed());
                            }
                        }
                        Ok(Some(_)) => break "etcd reports the lease expired or unknown".into(),
                        Ok(None) => break "the keep-alive stream ended".into(),
                        Err(err) => break format!("the keep-alive stream failed: {err}"),
                    },
                }
            };
            let _ = report.send(cause);
        });
        Self { lost, task }
    }
}

/// A lease being kept alive.
pub(crate) struct Lease {
    pub(super) client: Client,
    pub(super) id: i64,
    pub(super) keep_alive: KeepAlive,
    pub(super) since: Instant,
}

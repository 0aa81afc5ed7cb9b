//! Noticing, while our session is disconnected, that ZooKeeper answers but no longer holds it.
//!
//! A server restarted without its data refuses our session ("client has seen zxid ..., our last
//! zxid is ...") and our client keeps retrying until 1.4 × the session timeout. Meanwhile a new
//! session is accepted at once, so a sentinel task probes with one: if a node this session wrote
//! is gone or owned by another session, the session is not coming back and the session task
//! starts over with the probe's session.
//!
//! The sentinel runs in its own task, beside the session task rather than inside its loop, so it
//! probes on schedule whatever the session task is doing.

use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use zookeeper_client::{Client, SessionId, SessionState, StateWatcher};

use super::config::ZookeeperConfig;
use super::session::connect;

/// How often to probe while our session is disconnected.
const PROBE_EVERY: Duration = Duration::from_millis(200);

/// Connection attempts of the probe waiting for an answer at once.
const MAX_ATTEMPTS: usize = 8;

/// The longest one look at our node may take before the probe starts over (a server that
/// cannot sync with a leader does not answer).
const LOOK_LIMIT: Duration = Duration::from_secs(1);

/// Watches one session from its own task; see the [module docs](self). Ends with its owner.
pub(super) struct Sentinel {
    task: JoinHandle<()>,
    found: mpsc::Receiver<Client>,
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Sentinel {
    /// Starts watching `client`'s session. `witness` names a node this session wrote and still
    /// holds (`None` while there is none: then there is nothing to lose by starting over).
    pub(super) fn spawn(
        client: &Client,
        config: &ZookeeperConfig,
        witness: watch::Receiver<Option<String>>,
    ) -> Self {
        let (sender, found) = mpsc::channel(1);
        // The probe's session becomes ours if it finds ours gone, so it is made as ours is.
        let task = tokio::spawn(watch_session(
            config.clone(),
            client.session_id(),
            client.state_watcher(),
            witness,
            sender,
        ));
        Self { task, found }
    }

    /// A new session to start over with, once ZooKeeper answers without ours; pending until
    /// then (forever if the session comes back or ends otherwise).
    pub(super) async fn refused(&mut self) -> Client {
        match self.found.recv().await {
            Some(fresh) => fresh,
            None => std::future::pending().await,
        }
    }
}

async fn watch_session(
    config: ZookeeperConfig,
    ours: SessionId,
    mut states: StateWatcher,
    witness: watch::Receiver<Option<String>>,
    found: mpsc::Sender<Client>,
) {
    // A session of the probe's own, kept between probes (a new one each time would raise the
    // server's zxid and leave a session behind for every attempt given up).
    let mut probe: Option<Client> = None;
    // Attempts to open it. A server that has just started may take its time with the first
    // sessions (or keep a connection made while it was starting silent until the client's
    // connect timeout): a new attempt starts every `PROBE_EVERY` beside those still waiting,
    // and the first answered wins.
    let mut attempts = FuturesUnordered::new();
    let mut cadence = tokio::time::interval(PROBE_EVERY);
    cadence.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let state = states.state();
        if state.is_terminated() {
            // Expired, closed or refused credentials: the session task sees that itself.
            return;
        }
        if state != SessionState::Disconnected {
            probe = None;
            attempts.clear();
            states.changed().await;
            continue;
        }
        if probe
            .as_ref()
            .is_some_and(|p| p.state() != SessionState::SyncConnected)
        {
            probe = None;
        }
        let Some(fresh) = probe.as_ref() else {
            tokio::select! {
                _ = cadence.tick(), if attempts.len() < MAX_ATTEMPTS => {
                    attempts.push(Box::pin(connect(&config)));
                }
                _ = states.changed() => {}
                Some(attempt) = attempts.next() => match attempt {
                    Ok(fresh) => {
                        probe = Some(fresh);
                        attempts.clear();
                    }
                    Err(err) => {
                        tracing::trace!(error = %err, "probe: ZooKeeper does not answer a new session yet");
                    }
                },
            }
            continue;
        };
        let sample = witness.borrow().clone();
        match look(&config, ours, fresh, sample.as_deref()).await {
            // Ours may have come back meanwhile.
            Some(true) if states.state() == SessionState::Disconnected => {
                if let Some(fresh) = probe.take() {
                    let _ = found.send(fresh).await;
                }
                return;
            }
            Some(_) => {}
            None => probe = None,
        }
        tokio::select! {
            () = tokio::time::sleep(PROBE_EVERY) => {}
            _ = states.changed() => {}
        }
    }
}

/// Whether ZooKeeper, answering the probe's session `fresh`, no longer holds our session:
/// `sample`, a node our session wrote, is gone or owned by another session (with nothing of
/// ours to lose, starting over costs nothing). `None` when unsure (no answer, an error).
async fn look(
    config: &ZookeeperConfig,
    ours: SessionId,
    fresh: &Client,
    sample: Option<&str>,
) -> Option<bool> {
    let Some(path) = sample else {
        return Some(true);
    };
    let limit = config.request_timeout.min(LOOK_LIMIT);
    // The probe may have reached another server than ours did: catch it up with the leader first,
    // so that a node written just before the disconnection is not missed on a lagging follower.
    let look = async {
        fresh.sync(path).await?;
        fresh.check_stat(path).await
    };
    match tokio::time::timeout(limit, look).await {
        Ok(Ok(Some(stat))) => Some(stat.ephemeral_owner != ours.0),
        Ok(Ok(None)) => Some(true),
        Ok(Err(err)) => {
            tracing::debug!(path, error = %err, "probe: cannot read our node; trying again");
            None
        }
        Err(_) => None,
    }
}

//! Noticing, while our session is disconnected, that ZooKeeper answers again, and whether it
//! still holds our session.
//!
//! A server restarted without its data refuses our session ("client has seen zxid ..., our last
//! zxid is ...") and our client keeps retrying until 1.4 × the session timeout. A server restarted
//! with its data holds our session again, but our client only tries on its own reconnect backoff
//! (100 ms doubling without a cap, no setting for it in `zookeeper-client` 0.11), and gives the
//! session up by itself 1.4 × the session timeout after it last heard from the server, although
//! the server restores sessions with a fresh timeout and would take it back. So a sentinel task
//! probes with a session of its own: if a node this session wrote is gone or owned by another
//! session, the session is not coming back and the session task starts over with a new one;
//! if the node is still ours, the sentinel attaches a new client to our session at once (with its
//! id and password) and the session task goes on with that client: same session, same nodes.
//! Only the server's answer ends a session, never the time the client went without one.
//!
//! The sentinel runs in its own task, beside the session task rather than inside its loop, so it
//! probes on schedule whatever the session task is doing.

use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use zookeeper_client::{Client, Error as ZkError, SessionInfo, SessionState, StateWatcher};

use super::client::{attach, connect};
use super::config::ZookeeperConfig;
use crate::registry::RegistryError;

/// How often to probe while our session is disconnected.
const PROBE_EVERY: Duration = Duration::from_millis(200);

/// Connection attempts of the probe waiting for an answer at once.
const MAX_ATTEMPTS: usize = 8;

/// The longest one look at our node may take before the probe starts over (a server that
/// cannot sync with a leader does not answer).
const LOOK_LIMIT: Duration = Duration::from_secs(1);

/// What the sentinel found out about a disconnected session.
pub(super) enum Verdict {
    /// ZooKeeper answers without our session: start over with this new one.
    Replaced(Client),
    /// ZooKeeper answers and still holds our session: this client is attached to it.
    Reattached(Client),
}

/// Watches one session from its own task; see the [module docs](self). Ends with its owner.
pub(super) struct Sentinel {
    task: JoinHandle<()>,
    found: mpsc::Receiver<Verdict>,
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
        let task = tokio::spawn(watch_session(
            config.clone(),
            client.session().clone(),
            client.state_watcher(),
            witness,
            sender,
        ));
        Self { task, found }
    }

    /// What to go on with once ZooKeeper answers while our session is disconnected: a new
    /// session, or a new client on ours. Pending until then (forever if our own client
    /// reconnects first, or the session ends otherwise).
    pub(super) async fn verdict(&mut self) -> Verdict {
        match self.found.recv().await {
            Some(fresh) => fresh,
            None => std::future::pending().await,
        }
    }
}

/// Whether our client is without a connection: disconnected, or given up by the client itself
/// (`Expired`: also what it says after 1.4 × the session timeout without the server; the server
/// may still hold the session, and only its answer to the probe tells).
fn away(state: SessionState) -> bool {
    matches!(state, SessionState::Disconnected | SessionState::Expired)
}

async fn watch_session(
    config: ZookeeperConfig,
    ours: SessionInfo,
    mut states: StateWatcher,
    witness: watch::Receiver<Option<String>>,
    found: mpsc::Sender<Verdict>,
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
    let mut was_away = false;
    loop {
        let state = states.state();
        if matches!(state, SessionState::Closed | SessionState::AuthFailed) {
            // Closed or refused credentials: the session task sees that itself.
            return;
        }
        if !away(state) {
            was_away = false;
            probe = None;
            attempts.clear();
            states.changed().await;
            continue;
        }
        if !was_away {
            // The first probe of an outage goes at once (an expiry the server announced is
            // answered by a server that is up).
            was_away = true;
            cadence.reset_immediately();
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
        let verdict = match look(&config, &ours, fresh, sample.as_deref()).await {
            // Ours may have come back meanwhile.
            Some(_) if !away(states.state()) => None,
            Some(true) => replacement(&config).await,
            Some(false) => match reattach(&config, &ours).await {
                Ok(Some(client)) => Some(Verdict::Reattached(client)),
                // Expired meanwhile: the server said so.
                Ok(None) => replacement(&config).await,
                Err(err) => {
                    tracing::debug!(error = %err, "probe: cannot attach to our session yet; trying again");
                    None
                }
            },
            None => {
                probe = None;
                None
            }
        };
        if let Some(verdict) = verdict {
            let _ = found.send(verdict).await;
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(PROBE_EVERY) => {}
            _ = states.changed() => {}
        }
    }
}

/// A new session to start over with; `None` (tried again at the next probe) if ZooKeeper does
/// not give one now. The probe's own session is not it: ours are detached (see
/// [`attach`]), and a probe, dropped when not needed, closes its session.
async fn replacement(config: &ZookeeperConfig) -> Option<Verdict> {
    match attach(config, None).await {
        Ok(client) => Some(Verdict::Replaced(client)),
        Err(err) => {
            tracing::debug!(error = %err, "probe: cannot open a new session yet; trying again");
            None
        }
    }
}

/// A new client on our session `ours`; `Ok(None)` when the server answers that it has expired.
async fn reattach(
    config: &ZookeeperConfig,
    ours: &SessionInfo,
) -> Result<Option<Client>, RegistryError> {
    match attach(config, Some(ours.clone())).await {
        Ok(client) => Ok(Some(client)),
        Err(RegistryError::Unavailable { source, .. })
            if matches!(
                source.downcast_ref::<ZkError>(),
                Some(ZkError::SessionExpired)
            ) =>
        {
            Ok(None)
        }
        Err(err) => Err(err),
    }
}

/// Whether ZooKeeper, answering the probe's session `fresh`, no longer holds our session:
/// `sample`, a node our session wrote, is gone or owned by another session (with nothing of
/// ours to lose, starting over costs nothing). `None` when unsure (no answer, an error).
async fn look(
    config: &ZookeeperConfig,
    ours: &SessionInfo,
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
        Ok(Ok(Some(stat))) => Some(stat.ephemeral_owner != ours.id().0),
        Ok(Ok(None)) => Some(true),
        Ok(Err(err)) => {
            tracing::debug!(path, error = %err, "probe: cannot read our node; trying again");
            None
        }
        Err(_) => None,
    }
}

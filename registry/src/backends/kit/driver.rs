//! The run loop every session task (etcd lease, ZooKeeper session, Nacos connection) shares:
//! establish → serve → lost → back off, until the registry is closed.
//!
//! The driver owns the loop, the backoff between attempts, the failure count, the health while
//! no session is held (`Recovering` after a failed attempt or a lost session), the wait between
//! attempts (commands answered offline, see [`wait_offline`](super::live::wait_offline)) and the
//! answer to a close. A backend says, through [`Drive`], how a session is established and
//! served, what it keeps of a lost one and how soon to try again.
//!
//! Retries inside a session (pending deletes, held or unwritten registrations) run on one
//! schedule for every backend: from [`RETRY_FIRST`] backing off to [`RETRY_MAX`].

use std::fmt::{Debug, Display};
use std::future::Future;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::handle::{finish, Command};
use super::live::{wait_offline, LiveSet};
use crate::backoff::Backoff;
use crate::registry::{Health, RegistryError};

/// The first retry of what a held session could not write yet (a pending delete, a registration
/// refused for now, a missing guard watch); retries that keep failing back off from here up to
/// [`RETRY_MAX`].
pub(crate) const RETRY_FIRST: Duration = Duration::from_millis(500);
/// The longest wait between two such retries.
pub(crate) const RETRY_MAX: Duration = Duration::from_secs(5);

/// The retry schedule within a session: [`RETRY_FIRST`] doubling up to [`RETRY_MAX`].
#[cfg_attr(not(any(feature = "etcd", feature = "nacos")), allow(dead_code))]
pub(crate) fn retry_backoff() -> Backoff {
    Backoff::new(RETRY_FIRST, RETRY_MAX)
}

/// What an attempt to establish a session came to (besides failing).
pub(crate) enum Established<C> {
    /// A session is held on this connection, with the live set written on it.
    Up(C),
    /// The registry was closed meanwhile: answer whoever waits for it.
    Closed(Option<oneshot::Sender<()>>),
}

/// How serving one session ended.
pub(crate) enum Step {
    /// The session was lost, for this reason: establish another and restore the live set.
    Lost(String),
    /// The backend goes on at once with what it found while serving (ZooKeeper: a new session,
    /// or a new client on ours): establish again, with no backoff and no change of health.
    #[cfg_attr(not(feature = "zookeeper"), allow(dead_code))]
    Again,
    /// A close: end the session ([`Drive::stopped`]), and answer whoever waits for it.
    Stop(Option<oneshot::Sender<()>>),
}

/// How soon to establish a session again after one was lost.
pub(crate) enum Recover {
    /// Start the backoff over and establish again at once (etcd: the lease lived a full TTL;
    /// ZooKeeper: every lost session).
    #[cfg_attr(not(any(feature = "etcd", feature = "zookeeper")), allow(dead_code))]
    Now,
    /// Wait out the next delay of the backoff first, answering commands with `cause`; `reset`
    /// starts the backoff over before (the session was a real one, but is not retried at once).
    #[cfg_attr(not(any(feature = "etcd", feature = "nacos")), allow(dead_code))]
    Wait { cause: RegistryError, reset: bool },
}

/// What a backend's session task supplies to [`drive`].
pub(crate) trait Drive: Send {
    /// The key of a registration in the live set.
    type Key: Ord + Clone + Debug + Send;
    /// The record a registration holds.
    type Value: PartialEq + Clone + Send;
    /// One held session (a lease, a client on a session, a connection).
    type Conn: Send;
    /// Why an attempt to establish a session failed: logged and shown as it is, and the
    /// error puts hear while offline.
    type Error: Display + Into<RegistryError> + Send;

    /// What an attempt does, for the log: "cannot {ESTABLISH}".
    const ESTABLISH: &'static str;
    /// Whether a session starts the backoff over once established (otherwise only a lost
    /// session that lived long enough does, through [`Recover`]).
    const RESET_ON_ESTABLISH: bool = false;

    /// The schedule between attempts to establish a session.
    fn backoff(&self) -> Backoff;
    /// Where the task's health goes.
    fn health(&self) -> &watch::Sender<Health>;
    /// The commands from the handles, and the live set they apply to.
    #[allow(clippy::type_complexity)]
    fn queue(
        &mut self,
    ) -> (
        &mut mpsc::UnboundedReceiver<Command<Self::Key, Self::Value>>,
        &mut LiveSet<Self::Key, Self::Value>,
    );

    /// Establishes a session and writes the live set on it, with every command queued
    /// meanwhile applied first.
    fn establish(
        &mut self,
    ) -> impl Future<Output = Result<Established<Self::Conn>, Self::Error>> + Send;
    /// A session was established: report it (health, log).
    fn up(&mut self, conn: &Self::Conn);
    /// Serves commands on the session until it is lost or the registry closes.
    fn serve(&mut self, conn: &mut Self::Conn) -> impl Future<Output = Step> + Send;
    /// The session was lost after `lived`, for `cause`: keep of it what may still serve (log
    /// it); says how soon to try again. The driver reports the health as `Recovering`.
    fn lost(&mut self, conn: Self::Conn, cause: &str, lived: Duration) -> Recover;
    /// Ends the session after a close (by default: drops it).
    fn stopped(&mut self, conn: Self::Conn) -> impl Future<Output = ()> + Send {
        drop(conn);
        std::future::ready(())
    }
    /// Waits `delay` while no session is held, answering commands (`cause` for puts); `failed`
    /// when an attempt to establish one failed (rather than one being lost). A backend that can
    /// tell the server is back may end the wait early. Returns the close request's reply once
    /// the registry is closed (or every handle is gone: `Some(None)`).
    fn wait_offline(
        &mut self,
        delay: Duration,
        cause: &RegistryError,
        failed: bool,
    ) -> impl Future<Output = Option<Option<oneshot::Sender<()>>>> + Send {
        let _ = failed;
        async move {
            let (commands, live) = self.queue();
            wait_offline(commands, live, delay, cause).await
        }
    }
}

/// Runs `session` until the registry is closed: establish, serve until lost, back off, again.
pub(crate) async fn drive<S: Drive>(mut session: S) {
    let mut backoff = session.backoff();
    let mut failures = 0u32;
    loop {
        let (cause, delay, failed) = match session.establish().await {
            Ok(Established::Closed(done)) => return finish(done),
            Ok(Established::Up(mut conn)) => {
                if S::RESET_ON_ESTABLISH {
                    backoff.reset();
                }
                failures = 0;
                let since = Instant::now();
                session.up(&conn);
                match session.serve(&mut conn).await {
                    Step::Stop(done) => {
                        session.stopped(conn).await;
                        return finish(done);
                    }
                    Step::Again => continue,
                    Step::Lost(cause) => {
                        let recover = session.lost(conn, &cause, since.elapsed());
                        let _ = session.health().send(Health::Recovering {
                            attempt: 0,
                            last_error: cause,
                        });
                        match recover {
                            Recover::Now => {
                                backoff.reset();
                                continue;
                            }
                            Recover::Wait { cause, reset } => {
                                if reset {
                                    backoff.reset();
                                }
                                (cause, backoff.next_delay(), false)
                            }
                        }
                    }
                }
            }
            Err(err) => {
                failures += 1;
                let delay = backoff.next_delay();
                tracing::warn!(attempt = failures, error = %err, retry_in = ?delay, "cannot {}", S::ESTABLISH);
                let _ = session.health().send(Health::Recovering {
                    attempt: failures,
                    last_error: err.to_string(),
                });
                (err.into(), delay, true)
            }
        };
        if let Some(done) = session.wait_offline(delay, &cause, failed).await {
            // Closed while the registry is away: nothing to reach; what the server holds goes
            // with the lease, session or connection.
            session.queue().1.clear();
            return finish(done);
        }
    }
}

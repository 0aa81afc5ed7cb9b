//! The registry's session: one connection for the whole process, the live set written on it,
//! and recovery (a new connection, every live instance registered again) whenever it is lost.
//!
//! One task owns the live set and writes; [`NacosRegistry`](super::NacosRegistry) handles talk
//! to it through a channel. Commands queued together are applied to the live set in order and
//! written concurrently, one request per instance whose state changed. The connection's own
//! tasks keep it alive (stream reader, health check); they never wait behind a write.
//!
//! The live set holds each [`NacosInstance`] to register under its [`InstanceKey`] (address and
//! service), and requests are built from them as they are: nothing is encoded to fit the set.
//!
//! Between attempts to connect the task waits out its backoff, but after a connect failed it
//! probes the server every [`PROBE_EVERY`]: once the server answers again after not answering,
//! it connects at once instead of at its next attempt. A connection lost before it lived
//! [`NacosConfig::heartbeat`] (one health check) does not start the backoff over: a server
//! that takes connections and drops them at once is not rewritten in a tight loop.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::config::NacosConfig;
use super::connection::{probe, Connection};
use super::error::NacosError;
use super::wire::{InstanceRequest, NacosInstance};
use crate::backends::kit::driver::{retry_backoff, Drive, Established, Recover, Step};
use crate::backends::kit::handle::{Command, Reply};
use crate::backends::kit::live::{absorb_queued, LiveSet};
use crate::backoff::Backoff;
use crate::info::Info;
use crate::registry::{Health, RegistryError};

/// The most connections kept for the instances they may hold (see `Session::stale`).
const MAX_STALE: usize = 4;

/// How often the server is probed after a failed connect, while it does not answer.
const PROBE_EVERY: Duration = Duration::from_millis(150);
/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// What one instance is kept under in the live set: the address and service it is registered
/// at. Shown as `{addr}|{service}`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct InstanceKey {
    addr: SocketAddr,
    service: String,
}

impl InstanceKey {
    /// The key of `info`.
    pub(crate) fn of(info: &Info) -> Self {
        Self {
            addr: info.addr,
            service: info.service_name.clone(),
        }
    }
}

impl std::fmt::Display for InstanceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}|{}", self.addr, self.service)
    }
}

/// What a [`NacosRegistry`](super::NacosRegistry) handle sends to the session.
pub(crate) type NacosCommand = Command<InstanceKey, NacosInstance>;

/// One write: register (`Some` instance) or deregister (`None`).
type Op = (InstanceKey, Option<NacosInstance>);

pub(crate) struct Session {
    config: NacosConfig,
    live: LiveSet<InstanceKey, NacosInstance>,
    health: watch::Sender<Health>,
    commands: mpsc::UnboundedReceiver<NacosCommand>,
    /// Puts taken from the queue while (re)connecting, answered once the live set is written.
    pending_puts: Vec<(InstanceKey, Reply)>,
    /// A close taken from the queue while (re)connecting (`Some(None)`: every handle is gone).
    closing: Option<Option<oneshot::Sender<()>>>,
    /// Kept keys whose registration failed on this connection for a reason of the moment (a
    /// server error, an unreadable answer): retried with backoff, the health `Recovering`
    /// until every one is written. Never dropped from the live set for it.
    unwritten: BTreeSet<InstanceKey>,
    /// Why the last attempt at an unwritten key failed.
    unwritten_error: String,
    /// Connections that may still hold instances, kept open until a new one holds every
    /// instance: the one that was lost (a connection we gave up on, say a health check that
    /// timed out on a slow server, may still be alive on the server, and closing it first
    /// would take its instances away for the time it takes to register them again), and new
    /// ones that took some registrations before they failed (a registration moves the
    /// instance to the connection it came on). Those whose stream ended hold nothing and go;
    /// at most [`MAX_STALE`] are kept.
    stale: Vec<Arc<Connection>>,
    /// Deregistrations sent on the stale connection while it is away (see
    /// [`Session::delete_on_stale`]); each ends within the request timeout.
    stale_deletes: tokio::task::JoinSet<()>,
    /// Whether the last probe found the server not answering (see [`back_after_outage`]); kept
    /// from one wait to the next, cleared once connected.
    outage: bool,
}

impl Session {
    pub(crate) fn new(
        config: NacosConfig,
        health: watch::Sender<Health>,
        commands: mpsc::UnboundedReceiver<NacosCommand>,
    ) -> Self {
        Self {
            config,
            live: LiveSet::default(),
            health,
            commands,
            pending_puts: Vec::new(),
            closing: None,
            stale: Vec::new(),
            stale_deletes: tokio::task::JoinSet::new(),
            unwritten: BTreeSet::new(),
            unwritten_error: String::new(),
            outage: false,
        }
    }

    fn unavailable(&self, cause: &str) -> RegistryError {
        NacosError::Lost {
            server: self.config.grpc_addr(),
            reason: cause.to_string(),
        }
        .into_registry()
    }

    /// Connects, applying commands as they arrive meanwhile; `Ok(None)` once a close arrives
    /// (the connect is abandoned).
    async fn connect(&mut self) -> Result<Option<Arc<Connection>>, NacosError> {
        let config = self.config.clone();
        let connecting = Connection::connect(&config);
        tokio::pin!(connecting);
        while self.closing.is_none() {
            tokio::select! {
                result = &mut connecting => return result.map(Some),
                command = self.commands.recv() => match command {
                    None => self.closing = Some(None),
                    Some(Command::Put { key, value, done }) => {
                        self.live.put(key.clone(), value);
                        self.pending_puts.push((key, done));
                    }
                    Some(Command::Delete { key, done }) => {
                        self.delete_on_stale(&key);
                        self.live.delete(key, Some(done));
                    }
                    Some(Command::Close { done }) => self.closing = Some(Some(done)),
                },
            }
        }
        Ok(None)
    }

    /// While no connection is up: answers commands for `delay`. Puts and deletes apply to the
    /// live set at once. A put is answered with `cause` (it is written once Nacos is back; the
    /// registrar shows `Retrying`); a delete succeeds: it is sent on the stale connection at
    /// once (see [`delete_on_stale`](Self::delete_on_stale)) and on the next one, and goes
    /// with the stale connection in any case. Returns the close request's reply once the
    /// registry is closed (or every handle is gone: `Some(None)`).
    async fn answer_offline(
        &mut self,
        delay: Duration,
        cause: &RegistryError,
    ) -> Option<Option<oneshot::Sender<()>>> {
        let deadline = tokio::time::sleep(delay);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => return None,
                command = self.commands.recv() => match command {
                    None => return Some(None),
                    Some(Command::Put { key, value, done }) => {
                        self.live.put(key, value);
                        let _ = done.send(Err(cause.clone()));
                    }
                    Some(Command::Delete { key, done }) => {
                        self.delete_on_stale(&key);
                        self.live.delete(key, None);
                        let _ = done.send(Ok(()));
                    }
                    Some(Command::Close { done }) => return Some(Some(done)),
                },
            }
        }
    }

    /// A connection we gave up on may still be alive on the server (a slow server, a refused
    /// token), holding the instance, and a new connection cannot remove it (rnacos ignores a
    /// deregistration from a connection other than the one that registered). So while the
    /// stale connection's stream is open, the deregistration goes out on it too, at once.
    fn delete_on_stale(&mut self, key: &InstanceKey) {
        while self.stale_deletes.try_join_next().is_some() {}
        for stale in self.stale.iter().filter(|c| c.stream_open()) {
            let (config, key, stale) = (self.config.clone(), key.clone(), stale.clone());
            self.stale_deletes.spawn(async move {
                match write_one(&config, &stale, &key, None, false).await {
                    Ok(()) => tracing::debug!(%key, "deregistered on a stale connection"),
                    Err(err) => {
                        tracing::debug!(%key, error = %err, "deregistering on a stale connection failed")
                    }
                }
            });
        }
    }

    /// Keeps `connection` open for the instances it may hold, beside the others kept.
    fn keep_stale(&mut self, connection: Arc<Connection>) {
        self.stale.retain(|c| c.stream_open());
        self.stale.push(connection);
        if self.stale.len() > MAX_STALE {
            tracing::warn!(
                kept = MAX_STALE,
                "closing the oldest connection kept for its instances"
            );
            self.stale.remove(0);
        }
    }

    /// Closed while (re)connecting: nothing is written; what the connections hold goes with
    /// them.
    fn closed(&mut self) -> Established<Arc<Connection>> {
        let closed = || RegistryError::Backend {
            backend: "nacos",
            source: crate::registry::shared("the nacos registry was closed"),
        };
        for (_, waiter) in std::mem::take(&mut self.pending_puts) {
            let _ = waiter.send(Err(closed()));
        }
        self.live.clear();
        self.stale.clear();
        tracing::info!("Nacos registry closed while connecting; its connections closed");
        Established::Closed(self.closing.take().flatten())
    }

    /// A registration that failed on a working connection. Only a put somebody waits for is
    /// dropped, and only when the server rejects it as invalid (it would be again): that
    /// caller hears it. Anything else is an attempt that failed: the key stays and is retried
    /// with backoff. Returns what the waiter (if any) hears.
    fn put_failed(
        &mut self,
        key: &InstanceKey,
        value: &NacosInstance,
        err: NacosError,
        waiting: bool,
    ) -> Option<RegistryError> {
        match put_outcome(&err, waiting) {
            PutOutcome::Refused => {
                tracing::warn!(%key, error = %err, "Nacos rejected a registration");
                self.live.refused(key, value);
                self.unwritten.remove(key);
            }
            PutOutcome::Retry => {
                tracing::warn!(%key, error = %err, "a registration failed; retrying");
                self.unwritten.insert(key.clone());
                self.unwritten_error = format!("registering `{key}`: {err}");
            }
        }
        waiting.then(|| err.into_registry())
    }

    /// Healthy once every kept key is written on the connection; `Recovering` while some are
    /// being retried.
    fn report(&self, attempt: u32) {
        let health = if self.unwritten.is_empty() {
            Health::Healthy
        } else {
            Health::Recovering {
                attempt,
                last_error: self.unwritten_error.clone(),
            }
        };
        self.health.send_if_modified(|now| {
            let changed = *now != health;
            *now = health;
            changed
        });
    }

    fn absorb(&mut self) {
        if self.closing.is_some() {
            return;
        }
        let doomed: BTreeSet<InstanceKey> = self.live.doomed_keys().into_iter().collect();
        let absorbed = absorb_queued(&mut self.commands, &mut self.live);
        // Deregistrations queued meanwhile: the new connection cannot remove what a stale
        // one holds.
        for key in self.live.doomed_keys() {
            if !doomed.contains(&key) {
                self.delete_on_stale(&key);
            }
        }
        self.pending_puts.extend(absorbed.puts);
        self.closing = absorbed.close.map(Some);
    }

    /// Serves commands until the connection is lost or the registry closes; retries pending
    /// deregistrations.
    async fn serve_connection(&mut self, connection: &Arc<Connection>) -> Step {
        let mut retry_backoff = retry_backoff();
        let retry = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(retry);
        let mut retrying = false;
        let mut attempt = 0u32;
        loop {
            self.unwritten.retain(|key| self.live.value(key).is_some());
            if self.unwritten.is_empty() {
                self.stale.clear();
                attempt = 0;
            }
            self.report(attempt);
            let retry_due = self.live.has_doomed() || !self.unwritten.is_empty();
            if retry_due && !retrying {
                retry_backoff.reset();
                retry
                    .as_mut()
                    .reset(Instant::now() + retry_backoff.next_delay());
            }
            retrying = retry_due;
            tokio::select! {
                biased;
                cause = connection.lost() => return Step::Lost(cause),
                command = self.commands.recv() => {
                    let Some(command) = command else {
                        self.close(connection).await;
                        return Step::Stop(None);
                    };
                    if let Some(step) = self.apply_batch(connection, command).await {
                        return step;
                    }
                }
                () = &mut retry, if retry_due => {
                    attempt += 1;
                    let ops: Vec<Op> = self
                        .live
                        .doomed_keys()
                        .into_iter()
                        .map(|k| (k, None))
                        .chain(self.unwritten.iter().filter_map(|k| {
                            self.live.value(k).map(|v| (k.clone(), Some(v.clone())))
                        }))
                        .collect();
                    let results = write(&self.config, connection, &ops).await;
                    for ((key, value), result) in ops.iter().zip(results) {
                        match (value, result) {
                            (_, Err(err)) if err.is_fatal() => return Step::Lost(err.to_string()),
                            (None, Ok(())) => self.live.deleted(key),
                            (None, Err(err)) => self.live.delete_failed(key, &err.into_registry()),
                            (Some(_), Ok(())) => {
                                self.unwritten.remove(key);
                            }
                            (Some(value), Err(err)) => {
                                self.put_failed(key, value, err, false);
                            }
                        }
                    }
                    retry.as_mut().reset(Instant::now() + retry_backoff.next_delay());
                }
            }
        }
    }

    /// Applies `first` and every command queued behind it to the live set, in order, then
    /// writes the final state of each instance they touched, concurrently.
    async fn apply_batch(
        &mut self,
        connection: &Arc<Connection>,
        first: NacosCommand,
    ) -> Option<Step> {
        let mut batch = vec![first];
        while let Ok(command) = self.commands.try_recv() {
            batch.push(command);
        }
        let mut close = None;
        let mut touched: Vec<InstanceKey> = Vec::new();
        let mut put_waiters: Vec<(InstanceKey, Reply)> = Vec::new();
        for command in batch {
            match command {
                Command::Put { key, value, done } => {
                    self.live.put(key.clone(), value);
                    touched.push(key.clone());
                    put_waiters.push((key, done));
                }
                Command::Delete { key, done } => {
                    // A stale connection still open may hold the instance (it was not written
                    // on this one yet), and only it can remove it.
                    self.delete_on_stale(&key);
                    self.live.delete(key.clone(), Some(done));
                    touched.push(key);
                }
                Command::Close { done } => {
                    close = Some(done);
                    break;
                }
            }
        }
        touched.sort();
        touched.dedup();
        let ops: Vec<Op> = touched
            .into_iter()
            .map(|key| {
                let value = self.live.value(&key).cloned();
                (key, value)
            })
            .collect();
        let results = write(&self.config, connection, &ops).await;
        let mut outcome: BTreeMap<InstanceKey, Result<(), RegistryError>> = BTreeMap::new();
        let mut lost = None;
        for ((key, value), result) in ops.iter().zip(results) {
            match (value, result) {
                (_, Err(err)) if err.is_fatal() => {
                    lost = Some(err.into_registry());
                }
                (None, Ok(())) => self.live.deleted(key),
                (None, Err(err)) => self.live.delete_failed(key, &err.into_registry()),
                (Some(_), Ok(())) => {
                    self.unwritten.remove(key);
                    outcome.insert(key.clone(), Ok(()));
                }
                (Some(value), Err(err)) => {
                    let waiting = put_waiters.iter().any(|(k, _)| k == key);
                    if let Some(err) = self.put_failed(key, value, err, waiting) {
                        outcome.insert(key.clone(), Err(err));
                    }
                }
            }
        }
        if let Some(err) = &lost {
            // Everything stays in the live set and is written on the next connection.
            self.live.deletes_failed(err);
        }
        for (key, waiter) in put_waiters {
            let result = match &lost {
                Some(err) => Err(err.clone()),
                // Deleted later in the same batch: the put was done, then undone.
                None => outcome.get(&key).cloned().unwrap_or(Ok(())),
            };
            let _ = waiter.send(result);
        }
        if let Some(done) = close {
            self.close(connection).await;
            return Some(Step::Stop(Some(done)));
        }
        lost.map(|err| Step::Lost(err.to_string()))
    }

    /// Deregisters everything (within the close timeout) before the connection closes;
    /// whatever is left goes with the connection.
    async fn close(&mut self, connection: &Arc<Connection>) {
        let limit = self.config.close_timeout;
        let ops: Vec<Op> = self
            .live
            .doomed_keys()
            .into_iter()
            .chain(self.live.keys().cloned())
            .map(|k| (k, None))
            .collect();
        let count = ops.len();
        match tokio::time::timeout(limit, write(&self.config, connection, &ops)).await {
            Ok(results) => {
                let failed = results.iter().filter(|r| r.is_err()).count();
                if failed > 0 {
                    tracing::warn!(failed, "some deregistrations failed at close; those instances go when the connection closes");
                } else {
                    tracing::info!(
                        instances = count,
                        "Nacos registry closed; instances deregistered"
                    );
                }
            }
            Err(_) => tracing::warn!(
                ?limit,
                "close ran out of time; the remaining instances go when the connection closes"
            ),
        }
        self.live.clear();
    }
}

impl Drive for Session {
    type Key = InstanceKey;
    type Value = NacosInstance;
    type Conn = Arc<Connection>;
    type Error = NacosError;

    const ESTABLISH: &'static str = "connect to Nacos";

    fn backoff(&self) -> Backoff {
        self.config.backoff.clone()
    }

    fn health(&self) -> &watch::Sender<Health> {
        &self.health
    }

    fn queue(
        &mut self,
    ) -> (
        &mut mpsc::UnboundedReceiver<NacosCommand>,
        &mut LiveSet<InstanceKey, NacosInstance>,
    ) {
        (&mut self.commands, &mut self.live)
    }

    /// Connects, then writes the live set (pending deregistrations first), with every command
    /// queued meanwhile applied first. A close that arrives meanwhile ends it at once: nothing
    /// is written, and the connections close (taking their instances along).
    async fn establish(&mut self) -> Result<Established<Arc<Connection>>, NacosError> {
        let connection = match self.connect().await {
            Ok(connection) => connection,
            Err(err) => {
                // As while offline: puts are written once Nacos is back, deletes go then or
                // with the old connection.
                for (_, waiter) in std::mem::take(&mut self.pending_puts) {
                    let _ = waiter.send(Err(err.clone().into_registry()));
                }
                self.live.owner_pending();
                return Err(err);
            }
        };
        let Some(connection) = connection else {
            return Ok(self.closed());
        };
        self.absorb();
        if self.closing.is_some() {
            return Ok(self.closed());
        }
        let writes = self.live.writes();
        let results = write(&self.config, &connection, &writes).await;
        let mut failure: Option<NacosError> = None;
        let mut refusals = BTreeMap::new();
        let waiting: BTreeSet<InstanceKey> =
            self.pending_puts.iter().map(|(k, _)| k.clone()).collect();
        let mut accepted = 0usize;
        for ((key, value), result) in writes.iter().zip(results) {
            match (value, result) {
                (_, Err(err)) if err.is_fatal() => failure = Some(err),
                (None, Ok(())) => self.live.deleted(key),
                (None, Err(err)) => self.live.delete_failed(key, &err.into_registry()),
                (Some(_), Ok(())) => {
                    accepted += 1;
                    self.unwritten.remove(key);
                }
                (Some(value), Err(err)) => {
                    if let Some(err) = self.put_failed(key, value, err, waiting.contains(key)) {
                        refusals.insert(key.clone(), err);
                    }
                }
            }
        }
        let fatal = failure;
        let failure = fatal.clone().map(NacosError::into_registry);
        for (key, waiter) in std::mem::take(&mut self.pending_puts) {
            let result = match (&failure, refusals.get(&key)) {
                (Some(err), _) | (None, Some(err)) => Err(err.clone()),
                (None, None) => Ok(()),
            };
            let _ = waiter.send(result);
        }
        if let Some(err) = &failure {
            self.live.deletes_failed(err);
        }
        match fatal {
            Some(err) => {
                // The instances it took are on it now: closing it would take them away until
                // the next attempt. Kept while its stream is open.
                if worth_keeping(accepted, connection.stream_open()) {
                    self.keep_stale(connection);
                }
                Err(err)
            }
            None => {
                // Every instance is on the new connection: the old one may go (and with it
                // whatever only it held, such as instances deregistered meanwhile). While some
                // are not, it keeps them listed.
                if self.unwritten.is_empty() {
                    self.stale.clear();
                }
                Ok(Established::Up(connection))
            }
        }
    }

    fn up(&mut self, connection: &Arc<Connection>) {
        self.outage = false;
        self.report(0);
        tracing::info!(
            server = connection.server(),
            instances = self.live.len(),
            "Nacos connection up; registrations live"
        );
    }

    async fn serve(&mut self, connection: &mut Arc<Connection>) -> Step {
        self.serve_connection(connection).await
    }

    fn lost(&mut self, connection: Arc<Connection>, cause: &str, lived: Duration) -> Recover {
        tracing::warn!(%cause, "Nacos connection lost; registering everything again on a new one");
        self.keep_stale(connection);
        // A connection that lived through a health check was a real session: start the backoff
        // over. One lost at once (a server or a proxy that drops connections as soon as they
        // are up) waits its turn, so the live set is not rewritten in a tight loop.
        Recover::Wait {
            cause: self.unavailable(cause),
            reset: lived >= self.config.heartbeat,
        }
    }

    async fn wait_offline(
        &mut self,
        delay: Duration,
        cause: &RegistryError,
        failed: bool,
    ) -> Option<Option<oneshot::Sender<()>>> {
        // After a failed connect the wait ends early once the server answers again
        // (`answer_offline` only awaits a cancel-safe `recv`: ending it early loses nothing).
        let config = self.config.clone();
        let mut outage = self.outage;
        let closed = tokio::select! {
            closed = self.answer_offline(delay, cause) => closed,
            () = back_after_outage(&config, &mut outage), if failed => {
                tracing::info!(
                    server = %config.grpc_addr(),
                    "Nacos answers again; connecting now instead of after the backoff"
                );
                None
            }
        };
        self.outage = outage;
        closed
    }
}

/// Probes the server every [`PROBE_EVERY`] while it does not answer. `outage` says whether the
/// last probe found it not answering; kept from one wait to the next (and cleared once
/// connected), so a server back between a failed connect and the next probe still counts.
/// Completes once the server answers after an outage. When it answers with no outage seen, it
/// never completes and probes no more: the server is up and the connect failed anyway
/// (refused credentials, a connection dropped at once), so the backoff stands.
async fn back_after_outage(config: &NacosConfig, outage: &mut bool) {
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !probe(config, PROBE_TIMEOUT).await {
            *outage = true;
        } else if std::mem::replace(outage, false) {
            return;
        } else {
            tracing::debug!("Nacos answers; waiting out the backoff");
            return std::future::pending().await;
        }
    }
}

/// Writes `ops` on `connection`, up to the configured concurrency at once; one result per op,
/// in order.
async fn write(
    config: &NacosConfig,
    connection: &Arc<Connection>,
    ops: &[Op],
) -> Vec<Result<(), NacosError>> {
    // Boxed: the borrowing closure stays out of the caller's future, which the compiler
    // otherwise cannot prove `Send` for every lifetime of the borrow.
    let requests: futures_util::stream::BoxStream<'_, _> = futures_util::stream::iter(ops)
        .map(|(key, value)| write_one(config, connection, key, value.as_ref(), true))
        .buffered(config.concurrency.max(1))
        .boxed();
    requests.collect().await
}

async fn write_one(
    config: &NacosConfig,
    connection: &Connection,
    key: &InstanceKey,
    value: Option<&NacosInstance>,
    live: bool,
) -> Result<(), NacosError> {
    let InstanceKey { addr, service } = key;
    let deregistration;
    let (kind, instance) = match value {
        Some(instance) => ("registerInstance", instance),
        None => {
            deregistration = NacosInstance {
                ip: addr.ip().to_string(),
                port: u32::from(addr.port()),
                weight: 1.0,
                healthy: true,
                enabled: true,
                ephemeral: true,
                cluster_name: config.cluster.clone(),
                service_name: service.clone(),
                ..Default::default()
            };
            ("deregisterInstance", &deregistration)
        }
    };
    let request = InstanceRequest {
        namespace: &config.namespace,
        service_name: service,
        group_name: &config.group,
        kind,
        instance,
    };
    let what = format!("{kind} of `{service}` at {addr}");
    let answer = if live {
        connection.call("InstanceRequest", &what, request).await
    } else {
        connection
            .call_stale("InstanceRequest", &what, request)
            .await
    };
    answer.map(|_| ())
}

/// What becomes of a kept key whose registration failed (not for want of a connection).
#[derive(Debug, PartialEq)]
enum PutOutcome {
    /// Dropped from the live set: its waiter hears why.
    Refused,
    /// Kept and retried with backoff.
    Retry,
}

fn put_outcome(err: &NacosError, waiting: bool) -> PutOutcome {
    if waiting && err.is_invalid() {
        PutOutcome::Refused
    } else {
        PutOutcome::Retry
    }
}

/// Whether a new connection that failed while the live set was written on it may hold
/// instances: it took some, and the server may still know it.
fn worth_keeping(accepted: usize, stream_open: bool) -> bool {
    accepted > 0 && stream_open
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_invalid_put_with_a_waiter_is_dropped() {
        let refused = |code: u16| NacosError::Refused {
            server: "h:1".into(),
            what: "registerInstance".into(),
            code,
            message: "whatever".into(),
        };
        let invalid = NacosError::Rejected {
            server: "h:1".into(),
            what: "registerInstance".into(),
            reason: "Param check invalid".into(),
        };
        // rnacos' 500, Java Nacos' "server is starting" (300) and rate limit (503), an
        // unreadable answer (0): failed attempts, never a reason to forget an instance.
        for code in [500, 300, 503, 0] {
            assert_eq!(put_outcome(&refused(code), true), PutOutcome::Retry);
            assert_eq!(put_outcome(&refused(code), false), PutOutcome::Retry);
        }
        assert_eq!(put_outcome(&invalid, true), PutOutcome::Refused);
        // Re-registering on a new connection: nobody waits, nothing is dropped.
        assert_eq!(put_outcome(&invalid, false), PutOutcome::Retry);
    }

    #[test]
    fn a_failed_new_connection_is_kept_while_it_may_hold_instances() {
        assert!(worth_keeping(3, true));
        assert!(!worth_keeping(0, true), "it took nothing");
        assert!(
            !worth_keeping(3, false),
            "the server closed it, and its instances"
        );
    }

    #[test]
    fn keys_name_the_address_and_the_service() {
        let info = Info::new("a|b", "[fd00::1]:80".parse().unwrap());
        let key = InstanceKey::of(&info);
        assert_eq!(key.addr, info.addr);
        assert_eq!(key.service, "a|b");
        assert_eq!(key.to_string(), "[fd00::1]:80|a|b");
    }
}

//! The lease session: batched writes on one lease for the whole process, and recovery (the
//! lease resumed, or a new lease + every live key put again) whenever the lease or connection
//! is lost.
//!
//! One task owns the live set and writes; [`EtcdRegistry`](super::EtcdRegistry) handles talk to
//! it through a channel, so concurrent registrations coalesce into as few transactions as etcd
//! allows. The keep-alive runs in a task of its own (see [`lease`](super::lease)): it never
//! waits behind a write.
//!
//! Between attempts to reconnect the task waits out its backoff, but while no endpoint answers
//! it probes them every [`PROBE_EVERY`](super::probe::PROBE_EVERY): the moment one answers
//! again, it reconnects at once instead of at its next attempt. A server that answers and still
//! fails the attempt (refuses it, or loses the new lease at once) gets the whole backoff, so
//! nothing runs in a tight loop.
//!
//! A put etcd refuses for now (`ResourceExhausted`: a full database or too many requests;
//! `PermissionDenied` on one key) stays in the live set, is held, and is retried on the same
//! timer as pending deletes, from [`RETRY_FIRST`](crate::backends::kit::driver::RETRY_FIRST)
//! backing off to [`RETRY_MAX`]. Only a refusal
//! on the value's own merits (too large, ...) drops a key. A key found on another process's
//! lease is left to it (see [`Session::tampered`]); its delete is not sent.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Range;
use std::time::Duration;

use etcd_client::{
    Client, EventType, LeaseTimeToLiveOptions, PutOptions, Txn, TxnOp, WatchResponse,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::chunk::{chunks, Op};
use super::config::EtcdConfig;
use super::error::{bounded, txn_failure, TxnFailure};
use super::guard::{Guard, Scope, Seen};
use super::lease::{KeepAlive, Lease};
use super::probe::{answering_endpoints, back_after_outage};
use crate::backends::kit::driver::{retry_backoff, Drive, Established, Recover, Step, RETRY_MAX};
use crate::backends::kit::handle::{Command, Reply};
use crate::backends::kit::live::{absorb_queued, wait_offline, LiveSet};
use crate::backoff::Backoff;
use crate::registry::shared;
use crate::registry::{Health, RegistryError};

/// Why etcd did not take one operation.
#[derive(Clone, Debug)]
struct Refusal {
    error: RegistryError,
    /// Whether the same write may be accepted later (a full database, a rate limit, a
    /// permission still to be granted): the key is then kept and retried, never dropped.
    passes: bool,
}

/// The outcome of one operation of a write.
type OpResult = Result<(), Refusal>;

/// A registration etcd refused for now: kept in the live set and retried with backoff.
struct Held {
    error: RegistryError,
    /// Whether whoever registered it heard the refusal (its register call failed, so the
    /// registrar shows it as retrying). A refusal nobody heard of (a rewrite after a lost lease
    /// or a restore) is reported through the health instead.
    told: bool,
}

pub(crate) struct Session {
    config: EtcdConfig,
    ttl: i64,
    /// Every registration this process holds, and the removals not yet confirmed.
    live: LiveSet,
    health: watch::Sender<Health>,
    commands: mpsc::UnboundedReceiver<Command>,
    /// The lease of a lost session, resumed if etcd still holds it, else revoked once a new
    /// one holds every key.
    stale_lease: Option<i64>,
    /// Its keep-alive, kept running while we recover (a failed write does not mean the lease
    /// is gone), until the lease is resumed or replaced.
    stale_keep_alive: Option<KeepAlive>,
    /// The most operations etcd accepts in one transaction, as far as we know.
    max_ops: usize,
    /// Puts taken from the queue while (re)connecting, answered once the live set is written.
    pending_puts: Vec<(String, Reply)>,
    /// Puts etcd refused on their own merits in the last write of the live set.
    refusals: std::collections::BTreeMap<String, RegistryError>,
    /// A close taken from the queue while (re)connecting.
    closing: Option<oneshot::Sender<()>>,
    /// The revision at which we last wrote each key: a guard event at or below it is our own.
    written_at: std::collections::HashMap<String, i64>,
    /// The revision of our last write (or of the last guard event seen): the guard watches
    /// from the next one, so no change to our keys falls between.
    revision: std::sync::atomic::AtomicI64,
    /// The endpoints found answering by the probe that ended the last wait, for the next
    /// connection (which then need not probe them again).
    answering: Option<Vec<String>>,
    /// Whether the last probe between attempts found no endpoint answering: the first probe
    /// that finds one answering then ends the wait.
    outage: bool,
    /// Registrations etcd refused for now; retried until written or deregistered.
    held: BTreeMap<String, Held>,
    /// Keys of ours another process holds on its own lease (the same address advertised
    /// twice), with that lease: we leave them to it, and take them back when it deletes them.
    foreign: HashMap<String, i64>,
    /// The keys a shared address was logged for (once each).
    shared_logged: BTreeSet<String>,
    /// What the guard watches: the whole prefix until etcd says the user may not.
    guard_scope: Scope,
    /// The service prefixes the guard may not watch, logged once each.
    unguarded_logged: BTreeSet<String>,
}

impl Session {
    pub(crate) fn new(
        config: EtcdConfig,
        ttl: i64,
        health: watch::Sender<Health>,
        commands: mpsc::UnboundedReceiver<Command>,
    ) -> Self {
        let max_ops = config.max_txn_ops;
        Self {
            config,
            ttl,
            live: LiveSet::default(),
            health,
            commands,
            stale_lease: None,
            stale_keep_alive: None,
            max_ops,
            pending_puts: Vec::new(),
            refusals: Default::default(),
            closing: None,
            written_at: Default::default(),
            revision: std::sync::atomic::AtomicI64::new(0),
            answering: None,
            outage: false,
            held: BTreeMap::new(),
            foreign: HashMap::new(),
            shared_logged: BTreeSet::new(),
            guard_scope: Scope::Prefix,
            unguarded_logged: BTreeSet::new(),
        }
    }

    /// Healthy unless a registration etcd refused for now is one nobody was told about.
    fn report_health(&mut self) {
        let live = &self.live;
        self.held.retain(|key, _| live.contains(key));
        let untold: Vec<(&String, &Held)> = self.held.iter().filter(|(_, h)| !h.told).collect();
        let next = match untold.first() {
            None => Health::Healthy,
            Some((key, held)) => Health::Recovering {
                attempt: 0,
                last_error: format!(
                    "{} registration(s) not written, retried: {key}: {}",
                    untold.len(),
                    held.error
                ),
            },
        };
        self.health.send_if_modified(|health| {
            if *health == next {
                return false;
            }
            *health = next;
            true
        });
    }

    /// `key` was refused for now: keep it and retry it; `told` when its registrant heard.
    fn hold(&mut self, key: &str, error: RegistryError, told: bool) {
        match self.held.get_mut(key) {
            Some(held) => {
                tracing::debug!(key, %error, "etcd still refuses this registration; retrying");
                held.error = error;
                held.told |= told;
            }
            None => {
                tracing::warn!(key, %error, "etcd refuses this registration for now; it is kept and retried");
                self.held.insert(key.to_string(), Held { error, told });
            }
        }
    }

    fn limit(&self) -> Duration {
        self.config.request_timeout
    }

    fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl as u64)
    }

    fn unavailable(&self, cause: &str) -> RegistryError {
        RegistryError::Unavailable {
            backend: "etcd",
            endpoint: self.config.endpoint_list(),
            source: shared(cause.to_string()),
        }
    }

    /// Applies the queued commands to the live set: called right before the live set is
    /// written, so that a deregistration sent while (re)connecting is never written back.
    fn absorb(&mut self) {
        if self.closing.is_some() {
            return;
        }
        let absorbed = absorb_queued(&mut self.commands, &mut self.live);
        self.pending_puts.extend(absorbed.puts);
        self.closing = absorbed.close;
    }

    async fn take_lease(&mut self, client: Client) -> Result<Lease, RegistryError> {
        // A broken stream or connection does not mean the lease is gone: if etcd still holds
        // it, keep it (its keys never disappear); otherwise grant a new one.
        if let Some(stale) = self.stale_lease {
            if let Some(lease) = self.resume(client.clone(), stale).await? {
                self.stale_lease = None;
                return Ok(lease);
            }
        }
        let mut client = client;
        let config = self.config.clone();
        let limit = self.limit();
        let grant = bounded(&config, limit, client.lease_grant(self.ttl, None)).await?;
        let lease = self.keep(client, grant.id()).await?;
        // Keys deregistered while etcd was away may still hang on the old lease: revoking it
        // removes them. Put first, so the live keys never disappear.
        self.absorb();
        let writes = self.live.writes();
        self.write_live(&lease, writes).await?;
        if let Some(stale) = self.stale_lease.take() {
            let mut client = lease.client.clone();
            match bounded(&config, limit, client.lease_revoke(stale)).await {
                Ok(_) => self.live.owner_gone(),
                // Unknown lease: it expired, and its keys with it.
                Err(err) if err.to_string().contains("lease not found") => self.live.owner_gone(),
                Err(err) => {
                    tracing::debug!(lease = stale, error = %err, "could not revoke the previous lease; it expires on its own");
                }
            }
        }
        Ok(lease)
    }

    /// Starts keeping lease `id` alive on `client`.
    async fn keep(&self, mut client: Client, id: i64) -> Result<Lease, RegistryError> {
        let (keeper, stream) =
            bounded(&self.config, self.limit(), client.lease_keep_alive(id)).await?;
        Ok(Lease {
            client,
            id,
            keep_alive: KeepAlive::start(keeper, stream, self.ttl()),
            since: Instant::now(),
        })
    }

    /// Takes the lease `id` back if etcd still holds it: keeps it alive again, deletes its keys
    /// that were deregistered meanwhile, and puts every live key (idempotent). `None` when the
    /// lease has expired or is unknown (etcd restarted without its data).
    async fn resume(
        &mut self,
        mut client: Client,
        id: i64,
    ) -> Result<Option<Lease>, RegistryError> {
        let options = LeaseTimeToLiveOptions::new().with_keys();
        let alive = bounded(
            &self.config,
            self.limit(),
            client.lease_time_to_live(id, Some(options)),
        )
        .await?;
        if alive.ttl() <= 0 {
            return Ok(None);
        }
        let lease = self.keep(client, id).await?;
        let orphans: BTreeSet<String> = alive
            .keys()
            .iter()
            .filter_map(|k| String::from_utf8(k.clone()).ok())
            .filter(|k| !self.live.contains(k))
            .collect();
        for key in orphans {
            self.live.delete(key, None);
        }
        self.absorb();
        let writes = self.live.writes();
        self.write_live(&lease, writes).await?;
        tracing::info!(lease = id, "etcd lease still alive; resumed it");
        Ok(Some(lease))
    }

    /// Writes `ops` from the live set on `lease`, with nobody waiting on them. A put etcd
    /// refuses for now (full, rate-limited, not permitted) is kept and retried; one it refuses
    /// on its own merits is dropped from the live set (logged); a refused delete stays pending.
    async fn write_live(&mut self, lease: &Lease, ops: Vec<Op>) -> Result<(), RegistryError> {
        let results = self.write_all(lease, &ops).await?;
        for ((key, value), result) in ops.iter().zip(results) {
            match (value, result) {
                (None, Ok(())) => self.live.deleted(key),
                (None, Err(refusal)) => self.live.delete_failed(key, &refusal.error),
                (Some(_), Ok(())) => {
                    if self.held.remove(key).is_some() {
                        tracing::info!(key, "etcd took a registration it had refused");
                    }
                }
                (
                    Some(_),
                    Err(Refusal {
                        error,
                        passes: true,
                    }),
                ) => {
                    self.hold(key, error.clone(), false);
                    self.refusals.insert(key.clone(), error);
                }
                (Some(value), Err(Refusal { error, .. })) => {
                    tracing::error!(key, %error, "etcd refuses this registration; it is dropped");
                    self.live.refused(key, value);
                    self.held.remove(key);
                    self.refusals.insert(key.clone(), error);
                }
            }
        }
        self.report_health();
        Ok(())
    }

    /// Writes `ops` in order, in transactions of at most `max_ops` operations without a key
    /// twice. A transaction etcd finds too large shrinks `max_ops` for good; one it refuses
    /// otherwise is split until the refused operation stands alone. Returns one result per
    /// operation; `Err` when the connection, credentials or lease are gone.
    async fn write_all(
        &mut self,
        lease: &Lease,
        all: &[Op],
    ) -> Result<Vec<OpResult>, RegistryError> {
        // A delete of a key another process holds (the same address, its lease) is not sent:
        // the key is theirs now, and deleting it would take their registration down.
        let mut sent = Vec::with_capacity(all.len());
        let mut index = Vec::with_capacity(all.len());
        for (i, (key, value)) in all.iter().enumerate() {
            if value.is_none() && self.foreign.remove(key).is_some() {
                tracing::debug!(key, "not deleting a key another process holds");
                continue;
            }
            sent.push((key.clone(), value.clone()));
            index.push(i);
        }
        let ops = sent.as_slice();
        let mut results: Vec<OpResult> = all.iter().map(|_| Ok(())).collect();
        let mut queue: VecDeque<Range<usize>> = chunks(ops, 0..ops.len(), self.max_ops).into();
        while let Some(range) = queue.pop_front() {
            let failure = match self.txn(lease, &ops[range.clone()]).await {
                Ok(revision) => {
                    for (key, value) in &ops[range] {
                        match value {
                            Some(_) => {
                                self.foreign.remove(key);
                                self.written_at.insert(key.clone(), revision)
                            }
                            None => self.written_at.remove(key),
                        };
                    }
                    continue;
                }
                Err(failure) => failure,
            };
            match failure {
                TxnFailure::Fatal(err) => return Err(err),
                TxnFailure::Busy(error) => {
                    // Everything left would be refused the same way: hold it all for now.
                    let refusal = Refusal {
                        error,
                        passes: true,
                    };
                    for range in std::iter::once(range).chain(queue.drain(..)) {
                        for i in range {
                            results[index[i]] = Err(refusal.clone());
                        }
                    }
                }
                TxnFailure::TooManyOps(err) if range.len() > 1 => {
                    let smaller = (range.len() / 2).max(1);
                    if smaller < self.max_ops {
                        tracing::warn!(from = self.max_ops, to = smaller, "etcd refuses transactions this large (--max-txn-ops); using smaller ones from now on");
                        self.max_ops = smaller;
                    }
                    for part in chunks(ops, range, self.max_ops).into_iter().rev() {
                        queue.push_front(part);
                    }
                    let _ = err;
                }
                TxnFailure::TooManyOps(error) if range.len() == 1 => {
                    results[index[range.start]] = Err(Refusal {
                        error,
                        passes: false,
                    });
                }
                TxnFailure::Refused { error, passes } if range.len() == 1 => {
                    results[index[range.start]] = Err(Refusal { error, passes });
                }
                TxnFailure::TooManyOps(_) | TxnFailure::Refused { .. } => {
                    let middle = range.start + range.len() / 2;
                    queue.push_front(middle..range.end);
                    queue.push_front(range.start..middle);
                }
            }
        }
        Ok(results)
    }

    /// One transaction of `ops`, puts on `lease`.
    async fn txn(&self, lease: &Lease, ops: &[Op]) -> Result<i64, TxnFailure> {
        let ops: Vec<TxnOp> = ops
            .iter()
            .map(|(key, value)| match value {
                Some(value) => TxnOp::put(
                    key.as_str(),
                    value.as_slice(),
                    Some(PutOptions::new().with_lease(lease.id)),
                ),
                None => TxnOp::delete(key.as_str(), None),
            })
            .collect();
        let mut client = lease.client.clone();
        let limit = self.limit();
        match tokio::time::timeout(limit, client.txn(Txn::new().and_then(ops))).await {
            Ok(Ok(response)) => {
                let revision = response.header().map(|h| h.revision()).unwrap_or(0);
                self.revision
                    .fetch_max(revision, std::sync::atomic::Ordering::Relaxed);
                Ok(revision)
            }
            Ok(Err(err)) => Err(txn_failure(&self.config, err)),
            Err(_) => Err(TxnFailure::Fatal(crate::backends::kit::call::timed_out(
                "etcd",
                &self.config.endpoint_list(),
                limit,
            ))),
        }
    }

    /// Opens the guard from just after our last write, so that a key of ours that someone
    /// else deletes or overwrites is seen (and restored) however soon it happens. `None` when
    /// there is nothing to guard yet (per service, with no service registered).
    async fn guard(&self, lease: &Lease) -> Result<Option<Guard>, RegistryError> {
        let revision = self.revision.load(std::sync::atomic::Ordering::Relaxed);
        Guard::open(
            &self.config,
            &lease.client,
            self.guard_scope,
            self.live.keys(),
            revision,
        )
        .await
    }

    /// Whether a guard should run and does not: the whole prefix is always guarded; per
    /// service, only once something is registered.
    fn guard_wanted(&self, guard: &Option<Guard>) -> bool {
        guard.is_none() && (self.guard_scope == Scope::Prefix || self.live.len() > 0)
    }

    /// The keys of ours that `response` shows deleted, or written with another value or
    /// without a lease, to restore. A key another process wrote on its own lease (it advertises
    /// the same address) is left to it, logged once; it is taken back when that process
    /// deletes it or its lease expires, so the key stays as long as one of us lives.
    fn tampered(&mut self, lease: &Lease, response: &WatchResponse) -> Vec<Op> {
        let mut restore = Vec::new();
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            self.revision
                .fetch_max(kv.mod_revision(), std::sync::atomic::Ordering::Relaxed);
            let Ok(key) = std::str::from_utf8(kv.key()) else {
                continue;
            };
            let Some(value) = self.live.value(key) else {
                continue;
            };
            if kv.mod_revision() <= self.written_at.get(key).copied().unwrap_or(0) {
                continue; // our own write, or older than it
            }
            let put = event.event_type() == EventType::Put;
            if put && kv.lease() == lease.id && kv.value() == value {
                continue;
            }
            if put && kv.lease() != 0 && kv.lease() != lease.id {
                let first = self.foreign.insert(key.to_string(), kv.lease()).is_none();
                if first && self.shared_logged.insert(key.to_string()) {
                    tracing::warn!(key, other_lease = kv.lease(), "another process registered the same service and address on its own lease (one address advertised twice?); leaving the key to it, and taking it back if it goes");
                }
                continue;
            }
            if !put && self.foreign.remove(key).is_some() {
                tracing::info!(
                    key,
                    "the other process holding this key removed it; registering ours again"
                );
            } else {
                tracing::warn!(key, "a registration of ours was deleted or overwritten by someone else; restoring it (take instances out through the registrar, not by deleting keys)");
            }
            restore.push((key.to_string(), Some(value.to_vec())));
        }
        restore
    }

    /// Every kept key, to put once (idempotent) after the guard missed a stretch.
    fn all_puts(&self) -> Vec<Op> {
        self.live
            .writes()
            .into_iter()
            .filter(|(_, v)| v.is_some())
            .collect()
    }

    /// Serves commands until the lease is lost or the registry closes; retries pending deletes
    /// and held registrations, and restores keys of ours that someone else deleted or overwrote.
    async fn serve_lease(&mut self, lease: &mut Lease) -> Step {
        // The guard is best effort: without it nothing is restored, but nothing is lost either;
        // it is started again on the retry timer, as pending deletes and held registrations are
        // retried. The timer starts when there is something to retry, and backs off while
        // retries keep failing; a guard that ends soon after it started keeps the backoff
        // where it is, so a guard etcd keeps cancelling is not restarted (and every key put
        // again) in a loop.
        let mut retry_backoff = retry_backoff();
        let retry = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(retry);
        let mut retrying = false;
        let mut guard = self.guard(lease).await.ok().flatten();
        let mut guard_since = Instant::now();
        let mut guard_flapping = false;
        loop {
            // A held key deregistered meanwhile is no longer retried.
            let live = &self.live;
            self.held.retain(|key, _| live.contains(key));
            let guard_missing = self.guard_wanted(&guard);
            let retry_due = guard_missing || self.live.has_doomed() || !self.held.is_empty();
            if retry_due && !retrying {
                if !guard_flapping {
                    retry_backoff.reset();
                }
                retry
                    .as_mut()
                    .reset(Instant::now() + retry_backoff.next_delay());
            }
            retrying = retry_due;
            let next_guard_event = async {
                match guard.as_mut() {
                    Some(guard) => guard.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                cause = &mut lease.keep_alive.lost => {
                    return Step::Lost(cause.unwrap_or_else(|_| "the keep-alive task ended".into()));
                }
                command = self.commands.recv() => {
                    let Some(command) = command else {
                        self.close(lease).await;
                        return Step::Stop(None);
                    };
                    let before = self.revision.load(std::sync::atomic::Ordering::Relaxed);
                    if let Some(step) = self.apply_batch(lease, command).await {
                        return step;
                    }
                    if let Some(open) = guard.as_mut() {
                        if let Err(cause) = open.cover(self.live.keys(), before).await {
                            tracing::debug!(%cause, "the guard is started again");
                            guard = None;
                        }
                    }
                }
                seen = next_guard_event => {
                    let restore = match seen {
                        Seen::Changes(response) => self.tampered(lease, &response),
                        Seen::PrefixDenied => {
                            tracing::warn!(prefix = %self.config.prefix, "etcd does not let this user watch the whole prefix; guarding each service's prefix instead");
                            self.guard_scope = Scope::PerService;
                            // From the same revision: nothing falls between the two.
                            guard = self.guard(lease).await.ok().flatten();
                            guard_since = Instant::now();
                            Vec::new()
                        }
                        Seen::ServiceDenied(prefix) => {
                            if self.unguarded_logged.insert(prefix.clone()) {
                                tracing::warn!(%prefix, "etcd does not let this user watch this service's prefix; its keys are not restored if someone else deletes them");
                            }
                            Vec::new()
                        }
                        Seen::Ended(cause) => {
                            // Watch again on the retry timer, and put every key once then
                            // (idempotent) in case a change fell into the gap.
                            tracing::debug!(%cause, "the guard watch ended; starting it again");
                            guard = None;
                            guard_flapping = guard_since.elapsed() < RETRY_MAX;
                            Vec::new()
                        }
                    };
                    if !restore.is_empty() {
                        if let Err(err) = self.write_live(lease, restore).await {
                            return Step::Lost(err.to_string());
                        }
                    }
                }
                () = &mut retry, if retry_due => {
                    if guard_missing {
                        guard = self.guard(lease).await.ok().flatten();
                        guard_since = Instant::now();
                        if guard.is_some() {
                            // Put every key once (idempotent): a change may have fallen into
                            // the gap.
                            let writes = self.all_puts();
                            if let Err(err) = self.write_live(lease, writes).await {
                                return Step::Lost(err.to_string());
                            }
                        }
                    }
                    // Deletes apart from puts: a full etcd still takes deletes.
                    let deletes: Vec<Op> = self.live.doomed_keys().into_iter().map(|k| (k, None)).collect();
                    let held: Vec<Op> = self.held.keys().filter_map(|k| {
                        self.live.value(k).map(|v| (k.clone(), Some(v.to_vec())))
                    }).collect();
                    for writes in [deletes, held] {
                        if writes.is_empty() {
                            continue;
                        }
                        if let Err(err) = self.write_live(lease, writes).await {
                            return Step::Lost(err.to_string());
                        }
                    }
                    // Whatever is still to do waits longer; once nothing is, `retrying` ends.
                    retry
                        .as_mut()
                        .reset(Instant::now() + retry_backoff.next_delay());
                }
            }
        }
    }

    /// Applies `first` and every command already queued behind it, in order.
    async fn apply_batch(&mut self, lease: &mut Lease, first: Command) -> Option<Step> {
        let mut batch = vec![first];
        while let Ok(command) = self.commands.try_recv() {
            batch.push(command);
        }
        let mut close = None;
        let mut ops: Vec<Op> = Vec::new();
        let mut put_waiters: Vec<Option<Reply>> = Vec::new();
        for command in batch {
            match command {
                Command::Put { key, value, done } => {
                    self.live.put(key.clone(), value.clone());
                    ops.push((key, Some(value)));
                    put_waiters.push(Some(done));
                }
                Command::Delete { key, done } => {
                    self.live.delete(key.clone(), Some(done));
                    self.held.remove(&key);
                    ops.push((key, None));
                    put_waiters.push(None);
                }
                Command::Close { done } => {
                    close = Some(done);
                    break;
                }
            }
        }
        let written = self.write_all(lease, &ops).await;
        let lost = match written {
            Ok(results) => {
                for (((key, value), result), waiter) in ops.iter().zip(results).zip(put_waiters) {
                    match (value, waiter) {
                        (Some(value), Some(waiter)) => {
                            let answer = match result {
                                Ok(()) => {
                                    self.held.remove(key);
                                    Ok(())
                                }
                                Err(Refusal {
                                    error,
                                    passes: true,
                                }) => {
                                    self.hold(key, error.clone(), true);
                                    Err(error)
                                }
                                Err(Refusal { error, .. }) => {
                                    tracing::warn!(key, %error, "etcd refused a registration");
                                    self.live.refused(key, value);
                                    self.held.remove(key);
                                    Err(error)
                                }
                            };
                            let _ = waiter.send(answer);
                        }
                        (None, _) => match result {
                            Ok(()) => self.live.deleted(key),
                            Err(refusal) => self.live.delete_failed(key, &refusal.error),
                        },
                        (Some(_), None) => {}
                    }
                }
                self.report_health();
                None
            }
            Err(err) => {
                // Everything stays in the live set and is written on the next lease.
                for waiter in put_waiters.into_iter().flatten() {
                    let _ = waiter.send(Err(err.clone()));
                }
                self.live.deletes_failed(&err);
                Some(err.to_string())
            }
        };
        if let Some(done) = close {
            self.close(lease).await;
            return Some(Step::Stop(Some(done)));
        }
        lost.map(Step::Lost)
    }

    /// Revokes the lease (which deletes every key on it at once) and deletes what is pending,
    /// all within the close timeout; whatever is left expires with the lease.
    async fn close(&mut self, lease: &mut Lease) {
        let limit = self.config.close_timeout;
        let config = self.config.clone();
        let mut client = lease.client.clone();
        let doomed: Vec<Op> = self
            .live
            .doomed_keys()
            .into_iter()
            .map(|k| (k, None))
            .collect();
        let id = lease.id;
        let work = async {
            if !doomed.is_empty() {
                let _ = self.write_all(lease, &doomed).await;
            }
            bounded(&config, limit, client.lease_revoke(id)).await
        };
        match tokio::time::timeout(limit, work).await {
            Ok(Ok(_)) => tracing::info!(lease = id, "etcd registry closed; lease revoked"),
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "could not revoke the lease at close; it expires after its TTL")
            }
            Err(_) => {
                tracing::warn!(
                    ?limit,
                    "close ran out of time; the lease expires after its TTL"
                )
            }
        }
        self.live.clear();
    }

    /// Closing on a fresh connection before any lease was taken: revoke the stale lease.
    async fn close_without_lease(&mut self, mut client: Client) {
        if let Some(stale) = self.stale_lease.take() {
            let limit = self.config.close_timeout;
            let _ = bounded(&self.config, limit, client.lease_revoke(stale)).await;
        }
        self.live.clear();
    }
}

impl Drive for Session {
    type Key = String;
    type Value = Vec<u8>;
    type Conn = Lease;
    type Error = RegistryError;

    const ESTABLISH: &'static str = "establish an etcd lease";

    fn backoff(&self) -> Backoff {
        self.config.backoff.clone()
    }

    fn health(&self) -> &watch::Sender<Health> {
        &self.health
    }

    fn queue(&mut self) -> (&mut mpsc::UnboundedReceiver<Command>, &mut LiveSet) {
        (&mut self.commands, &mut self.live)
    }

    /// Connects and resumes the stale lease or grants a new one; then writes the live set on
    /// it, with every command queued meanwhile applied first.
    async fn establish(&mut self) -> Result<Established<Lease>, RegistryError> {
        let limit = self.limit() + self.config.connect_timeout;
        let config = self.config.clone();
        let endpoints = match self.answering.take() {
            Some(answering) => answering,
            None => answering_endpoints(&config).await,
        };
        let client = bounded(
            &config,
            limit,
            Client::connect(&endpoints, Some(config.connect_options())),
        )
        .await?;
        let result = self.take_lease(client.clone()).await;
        if result.is_ok() {
            self.stale_keep_alive = None;
        }
        let outcome = result.as_ref().map(|_| ()).map_err(RegistryError::clone);
        for (key, waiter) in std::mem::take(&mut self.pending_puts) {
            let result = match (&outcome, self.refusals.get(&key)) {
                (Err(err), _) | (Ok(()), Some(err)) => Err(err.clone()),
                (Ok(()), None) => Ok(()),
            };
            if result.is_err() {
                if let Some(held) = self.held.get_mut(&key) {
                    held.told = true;
                }
            }
            let _ = waiter.send(result);
        }
        self.refusals.clear();
        if let Err(err) = &outcome {
            self.live.deletes_failed(err);
        }
        if let Some(done) = self.closing.take() {
            match result {
                Ok(mut lease) => self.close(&mut lease).await,
                Err(_) => self.close_without_lease(client).await,
            }
            return Ok(Established::Closed(Some(done)));
        }
        result.map(Established::Up)
    }

    fn up(&mut self, lease: &Lease) {
        self.outage = false;
        self.report_health();
        tracing::info!(
            lease = lease.id,
            keys = self.live.len(),
            "etcd lease granted; registrations live"
        );
    }

    async fn serve(&mut self, lease: &mut Lease) -> Step {
        self.serve_lease(lease).await
    }

    fn lost(&mut self, lease: Lease, cause: &str, _lived: Duration) -> Recover {
        tracing::warn!(lease = lease.id, %cause, "etcd lease lost; recovering");
        self.stale_lease = Some(lease.id);
        let since = lease.since;
        self.stale_keep_alive = Some(lease.keep_alive);
        // A lease that lived a full TTL was a real session: recover at once. One lost at once
        // (something revokes it, a proxy cuts the stream) waits its turn, so keys are not
        // rewritten in a tight loop.
        if since.elapsed() >= self.ttl() {
            Recover::Now
        } else {
            Recover::Wait {
                cause: self.unavailable(cause),
                reset: false,
            }
        }
    }

    async fn wait_offline(
        &mut self,
        delay: Duration,
        cause: &RegistryError,
        _failed: bool,
    ) -> Option<Option<oneshot::Sender<()>>> {
        // Commands are answered throughout the wait; it ends early when etcd answers again
        // after an outage (`wait_offline` only awaits a cancel-safe `recv`, so ending it early
        // loses no command).
        tokio::select! {
            closed = wait_offline(&mut self.commands, &mut self.live, delay, cause) => closed,
            answering = back_after_outage(&self.config, &mut self.outage) => {
                tracing::info!(endpoints = ?answering, "etcd answers again; reconnecting now instead of after the backoff");
                self.answering = Some(answering);
                None
            }
        }
    }
}

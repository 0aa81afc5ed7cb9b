//! The lease session: one lease for the whole process, its keep-alive, batched writes, and
//! recovery (new lease + every live key put again) whenever the lease or connection is lost.
//!
//! One task owns all of it; [`EtcdRegistry`](super::EtcdRegistry) handles talk to it through
//! a channel, so concurrent registrations coalesce into as few transactions as etcd allows.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use etcd_client::{
    Client, LeaseKeepAliveStream, LeaseKeeper, LeaseTimeToLiveOptions, PutOptions, Txn, TxnOp,
};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::config::EtcdConfig;
use super::error::bounded;
use crate::backends::session::{wait_offline, Command};
use crate::registry::{Health, RegistryError};

/// A granted lease being kept alive.
struct Lease {
    client: Client,
    id: i64,
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
    last_ack: Instant,
}

pub(crate) struct Session {
    config: EtcdConfig,
    ttl: i64,
    /// Every registration this process holds: key → value. Put again on every new lease.
    live: BTreeMap<String, Vec<u8>>,
    health: watch::Sender<Health>,
    commands: mpsc::UnboundedReceiver<Command>,
    /// The lease of a lost session, revoked once a new one holds every key.
    stale_lease: Option<i64>,
}

enum Step {
    Continue,
    Lost(String),
    Stop,
}

impl Session {
    pub(crate) fn new(
        config: EtcdConfig,
        ttl: i64,
        health: watch::Sender<Health>,
        commands: mpsc::UnboundedReceiver<Command>,
    ) -> Self {
        Self {
            config,
            ttl,
            live: BTreeMap::new(),
            health,
            commands,
            stale_lease: None,
        }
    }

    fn limit(&self) -> Duration {
        self.config.request_timeout
    }

    pub(crate) async fn run(mut self) {
        let mut backoff = self.config.backoff.clone();
        let mut failures = 0u32;
        loop {
            match self.establish().await {
                Ok(mut lease) => {
                    backoff.reset();
                    failures = 0;
                    let _ = self.health.send(Health::Healthy);
                    tracing::info!(
                        lease = lease.id,
                        keys = self.live.len(),
                        "etcd lease granted; registrations live"
                    );
                    match self.serve(&mut lease).await {
                        Step::Stop => return,
                        Step::Lost(cause) => {
                            tracing::warn!(lease = lease.id, %cause, "etcd lease lost; granting a new one");
                            self.stale_lease = Some(lease.id);
                            let _ = self.health.send(Health::Recovering {
                                attempt: 0,
                                last_error: cause,
                            });
                        }
                        Step::Continue => {}
                    }
                }
                Err(err) => {
                    failures += 1;
                    let delay = backoff.next_delay();
                    tracing::warn!(attempt = failures, error = %err, retry_in = ?delay, "cannot establish an etcd lease");
                    let _ = self.health.send(Health::Recovering {
                        attempt: failures,
                        last_error: err.to_string(),
                    });
                    if wait_offline(&mut self.commands, &mut self.live, delay, &err).await {
                        return;
                    }
                }
            }
        }
    }

    /// Connects, grants a lease, starts its keep-alive, and puts every live key on it.
    async fn establish(&mut self) -> Result<Lease, RegistryError> {
        let limit = self.limit() + self.config.connect_timeout;
        let config = self.config.clone();
        let mut client = bounded(
            &config,
            limit,
            Client::connect(&config.endpoints, Some(config.connect_options())),
        )
        .await?;
        // A broken stream or connection does not mean the lease is gone: if etcd still holds
        // it, keep it (its keys never disappear); otherwise grant a new one and put every key
        // on it.
        if let Some(stale) = self.stale_lease {
            if let Some(lease) = self.resume(client.clone(), stale).await? {
                self.stale_lease = None;
                return Ok(lease);
            }
        }
        let grant = bounded(&config, limit, client.lease_grant(self.ttl, None)).await?;
        let id = grant.id();
        let (keeper, stream) = bounded(&config, limit, client.lease_keep_alive(id)).await?;
        let mut lease = Lease {
            client,
            id,
            keeper,
            stream,
            last_ack: Instant::now(),
        };
        let entries: Vec<(String, Option<Vec<u8>>)> = self
            .live
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect();
        for chunk in chunks(&entries, self.config.max_txn_ops) {
            self.write(&mut lease, chunk).await?;
        }
        if let Some(stale) = self.stale_lease.take() {
            // Keys deregistered while etcd was away may still hang on the old lease.
            let revoked = bounded(&config, self.limit(), lease.client.lease_revoke(stale)).await;
            tracing::debug!(
                lease = stale,
                ok = revoked.is_ok(),
                "revoked the previous lease"
            );
        }
        Ok(lease)
    }

    /// Takes the lease `id` back if etcd still holds it: keeps it alive again, deletes its keys
    /// that were deregistered meanwhile, and puts every live key (idempotent). `None` when the
    /// lease has expired or is unknown (etcd restarted without its data).
    async fn resume(
        &mut self,
        mut client: Client,
        id: i64,
    ) -> Result<Option<Lease>, RegistryError> {
        let limit = self.limit();
        let options = LeaseTimeToLiveOptions::new().with_keys();
        let alive = bounded(
            &self.config,
            limit,
            client.lease_time_to_live(id, Some(options)),
        )
        .await?;
        if alive.ttl() <= 0 {
            return Ok(None);
        }
        let orphans: Vec<(String, Option<Vec<u8>>)> = alive
            .keys()
            .iter()
            .filter_map(|k| String::from_utf8(k.clone()).ok())
            .filter(|k| !self.live.contains_key(k))
            .map(|k| (k, None))
            .collect();
        let (keeper, stream) = bounded(&self.config, limit, client.lease_keep_alive(id)).await?;
        let mut lease = Lease {
            client,
            id,
            keeper,
            stream,
            last_ack: Instant::now(),
        };
        let mut entries = orphans;
        entries.extend(self.live.iter().map(|(k, v)| (k.clone(), Some(v.clone()))));
        for chunk in chunks(&entries, self.config.max_txn_ops) {
            self.write(&mut lease, chunk).await?;
        }
        tracing::info!(lease = id, "etcd lease still alive; resumed it");
        Ok(Some(lease))
    }

    /// One transaction of puts (`Some`) and deletes (`None`), puts on `lease`.
    async fn write(
        &self,
        lease: &mut Lease,
        ops: &[(String, Option<Vec<u8>>)],
    ) -> Result<(), RegistryError> {
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
        let txn = Txn::new().and_then(ops);
        bounded(&self.config, self.limit(), lease.client.txn(txn))
            .await
            .map(|_| ())
    }

    /// Serves commands and keeps the lease alive until it is lost or the registry closes.
    async fn serve(&mut self, lease: &mut Lease) -> Step {
        let period = Duration::from_millis((self.ttl as u64 * 1000 / 3).max(500));
        let mut tick = tokio::time::interval_at(Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ttl = Duration::from_secs(self.ttl as u64);
        loop {
            tokio::select! {
                command = self.commands.recv() => {
                    let Some(command) = command else {
                        self.close(lease).await;
                        return Step::Stop;
                    };
                    match self.apply_batch(lease, command).await {
                        Step::Continue => {}
                        other => return other,
                    }
                }
                _ = tick.tick() => {
                    if lease.last_ack.elapsed() >= ttl {
                        return Step::Lost(format!("no keep-alive answer for {ttl:?}; the lease has expired"));
                    }
                    if let Err(err) = lease.keeper.keep_alive().await {
                        return Step::Lost(format!("keep-alive request failed: {err}"));
                    }
                }
                message = lease.stream.message() => match message {
                    Ok(Some(response)) if response.ttl() > 0 => lease.last_ack = Instant::now(),
                    Ok(Some(_)) => return Step::Lost("etcd reports the lease expired or unknown".into()),
                    Ok(None) => return Step::Lost("the keep-alive stream ended".into()),
                    Err(err) => return Step::Lost(format!("the keep-alive stream failed: {err}")),
                },
            }
        }
    }

    /// Applies `first` and every command already queued behind it, in transactions of at most
    /// `max_txn_ops` operations.
    async fn apply_batch(&mut self, lease: &mut Lease, first: Command) -> Step {
        let mut batch = vec![first];
        while let Ok(command) = self.commands.try_recv() {
            batch.push(command);
        }
        let mut close = None;
        let mut ops: Vec<(String, Option<Vec<u8>>)> = Vec::new();
        let mut waiters = Vec::new();
        for command in batch {
            match command {
                Command::Put { key, value, done } => {
                    ops.push((key, Some(value)));
                    waiters.push(done);
                }
                Command::Delete { key, done } => {
                    ops.push((key, None));
                    waiters.push(done);
                }
                Command::Close { done } => close = Some(done),
            }
        }
        let mut outcome = Step::Continue;
        let mut waiters = waiters.into_iter();
        for chunk in chunks(&ops, self.config.max_txn_ops) {
            let result = match &outcome {
                Step::Lost(cause) => Err(RegistryError::Unavailable {
                    backend: "etcd",
                    endpoint: self.config.endpoint_list(),
                    source: cause.clone().into(),
                }),
                _ => self.write(lease, chunk).await,
            };
            for (key, value) in chunk {
                match value {
                    Some(value) if result.is_ok() => {
                        self.live.insert(key.clone(), value.clone());
                    }
                    Some(_) => {}
                    // A failed delete still leaves the live set: the key is not put again, and
                    // the lease's revocation or expiry removes it.
                    None => {
                        self.live.remove(key);
                    }
                }
            }
            if let Err(err @ RegistryError::Unavailable { .. }) = &result {
                outcome = Step::Lost(err.to_string());
            }
            for _ in chunk {
                if let Some(done) = waiters.next() {
                    let _ = done.send(
                        result
                            .as_ref()
                            .map(|_| ())
                            .map_err(RegistryError::duplicate),
                    );
                }
            }
        }
        if let Some(done) = close {
            self.close(lease).await;
            let _ = done.send(());
            return Step::Stop;
        }
        outcome
    }

    /// Deletes every key and revokes the lease (best effort, bounded).
    async fn close(&mut self, lease: &mut Lease) {
        let keys: Vec<(String, Option<Vec<u8>>)> =
            self.live.keys().map(|k| (k.clone(), None)).collect();
        for chunk in chunks(&keys, self.config.max_txn_ops) {
            if let Err(err) = self.write(lease, chunk).await {
                tracing::warn!(error = %err, "could not delete registrations at close; the lease revocation or expiry removes them");
            }
        }
        self.live.clear();
        if let Err(err) = bounded(
            &self.config,
            self.limit(),
            lease.client.lease_revoke(lease.id),
        )
        .await
        {
            tracing::warn!(error = %err, "could not revoke the lease at close; it expires after its TTL");
        }
        tracing::info!(lease = lease.id, "etcd registry closed");
    }
}

/// Splits `ops` into transactions of at most `max` operations without repeating a key inside
/// one (etcd rejects a transaction that names a key twice).
fn chunks<V>(ops: &[(String, Option<V>)], max: usize) -> Vec<&[(String, Option<V>)]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut keys = BTreeSet::new();
    for (i, (key, _)) in ops.iter().enumerate() {
        if i - start == max || !keys.insert(key.as_str()) {
            out.push(&ops[start..i]);
            start = i;
            keys.clear();
            keys.insert(key.as_str());
        }
    }
    if start < ops.len() {
        out.push(&ops[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(keys: &[&str]) -> Vec<(String, Option<String>)> {
        keys.iter().map(|k| (k.to_string(), None)).collect()
    }

    #[test]
    fn chunks_respect_the_limit_and_unique_keys() {
        let all = ops(&["a", "b", "c", "d", "e"]);
        let sizes: Vec<usize> = chunks(&all, 2).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, [2, 2, 1]);
        let repeated = ops(&["a", "b", "a", "c"]);
        let sizes: Vec<usize> = chunks(&repeated, 128).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, [2, 2]);
        assert!(chunks::<String>(&[], 128).is_empty());
    }
}

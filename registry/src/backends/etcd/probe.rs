//! Endpoint probing: which etcd endpoints answer now, to connect to those that do, and to end
//! the wait between attempts to reconnect as soon as etcd answers again after an outage.

use std::time::Duration;

use etcd_client::{Client, ConnectOptions, Error as EtcdError};

use super::config::EtcdConfig;

/// How often the endpoints are probed while none answers, between attempts to reconnect.
pub(super) const PROBE_EVERY: Duration = Duration::from_millis(150);
/// How long one such probe (a connection and a status call per endpoint) may take.
pub(super) const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// The endpoints that answer now, or all of them when none does (the connect then fails with
/// the real error). A new client balances over its endpoints before it knows which are down,
/// so after a member died its first calls can keep landing on the dead one while the lease
/// runs out; connecting to the members that answer avoids that.
pub(super) async fn answering_endpoints(config: &EtcdConfig) -> Vec<String> {
    if config.endpoints.len() < 2 {
        return config.endpoints.clone();
    }
    let answering = probe(config, config.connect_timeout).await;
    if answering.is_empty() {
        config.endpoints.clone()
    } else {
        answering
    }
}

/// Probes the endpoints every [`PROBE_EVERY`] while none answers. `outage` says whether the
/// last probe found none answering; it is kept from one wait to the next (and cleared when a
/// lease is taken), so etcd coming back between a failed attempt and the next probe still
/// counts. Resolves with the endpoints that answer once one answers after an outage: etcd is
/// back, and the wait for the next attempt can end. When one answers with no outage seen
/// before, it never resolves and probes no more: etcd is up and the last attempt failed anyway
/// (refused, or the new lease was lost at once), so the backoff stands.
pub(super) async fn back_after_outage(config: &EtcdConfig, outage: &mut bool) -> Vec<String> {
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let answering = probe(config, PROBE_TIMEOUT).await;
        if answering.is_empty() {
            *outage = true;
        } else if std::mem::replace(outage, false) {
            return answering;
        } else {
            tracing::debug!(endpoints = ?answering, "etcd answers; waiting out the backoff");
            return std::future::pending().await;
        }
    }
}

/// The endpoints that answer a status call within `limit`, each probed on a connection of its
/// own. Without credentials: etcd (3.4) answers status without them, and authenticating would
/// cost the server a password hash each time.
async fn probe(config: &EtcdConfig, limit: Duration) -> Vec<String> {
    let mut options = ConnectOptions::new().with_connect_timeout(limit);
    if let Some(tls) = &config.tls {
        options = options.with_tls(tls.clone());
    }
    let probes = config.endpoints.iter().map(|endpoint| {
        let options = options.clone();
        async move {
            let status = async {
                let mut client = Client::connect([endpoint.as_str()], Some(options)).await?;
                client.status().await
            };
            match tokio::time::timeout(limit, status).await {
                Ok(Ok(_)) => true,
                // An error etcd itself sends (were it to want credentials for status) is an
                // answer too; one the client makes up for a failed connection is not.
                Ok(Err(EtcdError::GRpcStatus(status))) => {
                    status.message().starts_with("etcdserver:")
                }
                Ok(Err(_)) | Err(_) => false,
            }
        }
    });
    config
        .endpoints
        .iter()
        .zip(futures_util::future::join_all(probes).await)
        .filter(|(_, answered)| *answered)
        .map(|(endpoint, _)| endpoint.clone())
        .collect()
}

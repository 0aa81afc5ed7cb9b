//! What scenarios observe and how they wait: the comparable part of instances, register /
//! resolve / watch calls that panic with the backend's name, and waits with deadlines.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use service_registry::{Change, Discovery, Health, Info, Instances, Registry, WatchStream};
use tokio::sync::watch;

use super::CHANGE;

/// What a scenario compares: address, weight and tags (start time and the rest vary by backend).
pub type Seen = (SocketAddr, u32, BTreeMap<String, String>);

/// The comparable part of instances, sorted by address.
pub fn seen(instances: &Instances) -> Vec<Seen> {
    sorted(instances.iter().map(|i| (i.addr, i.weight, i.tags.clone())))
}

/// The comparable part of `infos`, sorted by address.
pub fn expected(infos: &[&Info]) -> Vec<Seen> {
    sorted(infos.iter().map(|i| (i.addr, i.weight, i.tags.clone())))
}

fn sorted(seen: impl Iterator<Item = Seen>) -> Vec<Seen> {
    let mut seen: Vec<Seen> = seen.collect();
    seen.sort_by_key(|s| s.0);
    seen
}

pub(super) fn addrs(instances: &Instances) -> Vec<SocketAddr> {
    let mut addrs: Vec<_> = instances.iter().map(|i| i.addr).collect();
    addrs.sort();
    addrs
}

/// An instance of `service` on `127.0.0.1:port` with `weight` and `tags`.
pub fn info(service: &str, port: u16, weight: u32, tags: &[(&str, &str)]) -> Info {
    let mut info = Info::new(service, SocketAddr::from(([127, 0, 0, 1], port)));
    info.weight = weight;
    info.tags = tags
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    info
}

pub(super) async fn register(backend: &str, registry: &dyn Registry, info: &Info) {
    registry
        .register(info)
        .await
        .unwrap_or_else(|err| panic!("[{backend}] register {}: {err}", info.addr));
}

pub(super) async fn deregister(backend: &str, registry: &dyn Registry, info: &Info) {
    registry
        .deregister(info)
        .await
        .unwrap_or_else(|err| panic!("[{backend}] deregister {}: {err}", info.addr));
}

pub(crate) async fn resolve(backend: &str, discovery: &dyn Discovery, service: &str) -> Vec<Seen> {
    let found = discovery
        .resolve(service)
        .await
        .unwrap_or_else(|err| panic!("[{backend}] resolve {service}: {err}"));
    seen(&found)
}

pub(crate) async fn watch(backend: &str, discovery: &dyn Discovery, service: &str) -> WatchStream {
    discovery
        .watch(service)
        .await
        .unwrap_or_else(|err| panic!("[{backend}] watch {service}: {err}"))
}

/// The next change that changes something (empty changes are passed over), within [`CHANGE`].
pub(crate) async fn next_change(
    backend: &str,
    watch: &mut WatchStream,
    waiting_for: &str,
) -> Change {
    let deadline = Instant::now() + CHANGE;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let change = tokio::time::timeout(remaining, watch.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "[{backend}] no watch change within {CHANGE:?} while waiting for {waiting_for}"
                )
            })
            .unwrap_or_else(|| {
                panic!("[{backend}] the watch ended while waiting for {waiting_for}")
            });
        if !(change.added.is_empty() && change.updated.is_empty() && change.removed.is_empty()) {
            return change;
        }
    }
}

/// Reads `watch` until the latest complete set (`latest`) equals `want`, within `limit`.
pub(super) async fn watch_until(
    backend: &str,
    watch: &mut WatchStream,
    latest: &mut Vec<Seen>,
    want: &[Seen],
    limit: Duration,
) {
    let deadline = Instant::now() + limit;
    let mut history = Vec::new();
    while latest.as_slice() != want {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, watch.next()).await {
            Ok(Some(change)) => {
                *latest = seen(&change.all);
                history.push(format!(
                    "+{:?} ~{:?} -{:?}",
                    addrs(&change.added),
                    addrs(&change.updated),
                    addrs(&change.removed)
                ));
            }
            Ok(None) => panic!("[{backend}] the watch ended; changes seen: {history:?}"),
            Err(_) => panic!(
                "[{backend}] the watch did not reach {want:?} within {limit:?}; its latest set is \
                 {latest:?}; changes seen: {history:?}"
            ),
        }
    }
}

/// Polls `check` every 50 ms until it returns `Ok`, or panics after `limit` with the last
/// `Err` (what was observed instead).
pub(crate) async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let last = match check().await {
            Ok(value) => return value,
            Err(observed) => observed,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}; last observed: {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `resolve` as an observation: the instances, or the error text.
pub(crate) async fn observe(discovery: &dyn Discovery, service: &str) -> Result<Vec<Seen>, String> {
    match tokio::time::timeout(Duration::from_secs(3), discovery.resolve(service)).await {
        Ok(Ok(found)) => Ok(seen(&found)),
        Ok(Err(err)) => Err(format!("resolve failed: {err}")),
        Err(_) => Err("resolve took over 3 s".into()),
    }
}

/// Until `discovery` lists exactly `want` for `service`, within `limit`.
pub(super) async fn lists(
    name: &str,
    discovery: &dyn Discovery,
    service: &str,
    want: &[Seen],
    limit: Duration,
    what: &str,
) {
    eventually(limit, &format!("[{name}] {what}"), || async {
        let found = observe(discovery, service).await?;
        if found == want {
            Ok(())
        } else {
            Err(format!("{found:?}"))
        }
    })
    .await;
}

/// Watches what `clients` resolve for `service` until `until` (times are measured from
/// `answered`, when the server answered again). An address in `forbidden` showing up fails at
/// once. Any other observation that differs from `want` is a gap: with `strict` it fails the
/// scenario, otherwise it is printed. Resolve errors are tolerated and printed.
#[allow(clippy::too_many_arguments)]
pub(super) async fn stays(
    name: &str,
    clients: [&dyn Discovery; 2],
    service: &str,
    want: &[Seen],
    forbidden: &[SocketAddr],
    answered: Instant,
    until: Instant,
    strict: bool,
) {
    let mut errors = Vec::new();
    let mut timeline: Vec<String> = Vec::new();
    let mut gaps = 0;
    let mut last: [Option<Vec<Seen>>; 2] = [None, None];
    let until = until.max(Instant::now() + Duration::from_secs(1));
    while Instant::now() < until {
        for (i, client) in clients.iter().enumerate() {
            let at = answered.elapsed();
            match observe(*client, service).await {
                Ok(found) => {
                    if last[i].as_ref() != Some(&found) {
                        let addrs: Vec<_> = found.iter().map(|s| s.0).collect();
                        timeline.push(format!("{at:.2?}: client {i} sees {addrs:?}"));
                        last[i] = Some(found.clone());
                    }
                    if let Some(back) = found.iter().find(|s| forbidden.contains(&s.0)) {
                        panic!(
                            "[{name}] the deregistered instance {} came back {at:?} after the \
                             server answered; timeline: {timeline:#?}",
                            back.0
                        );
                    }
                    if found != want {
                        gaps += 1;
                    }
                }
                Err(err) => errors.push(format!("{at:.2?}: client {i}: {err}")),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if gaps > 0 {
        let message = format!(
            "[{name}] after the outage, {gaps} resolve(s) did not show exactly {:?}; \
             timeline (from the server answering): {timeline:#?}; resolve errors: {errors:?}",
            want.iter().map(|s| s.0).collect::<Vec<_>>()
        );
        assert!(!strict, "{message}");
        println!("{message}");
    } else if !errors.is_empty() {
        println!("[{name}] resolve errors after the outage: {errors:?}");
    }
}

/// Waits until a registry's health passes `pred` (its value then), or panics with `what`
/// after `within`.
pub(super) async fn health_until(
    health: &mut watch::Receiver<Health>,
    within: Duration,
    what: &str,
    pred: impl FnMut(&Health) -> bool,
) -> Health {
    tokio::time::timeout(within, health.wait_for(pred))
        .await
        .unwrap_or_else(|_| panic!("{what} within {within:?}"))
        .expect("health")
        .clone()
}

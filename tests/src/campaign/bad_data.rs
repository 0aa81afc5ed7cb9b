//! Malformed registry data written next to good registrations: discovery must leave out what it
//! cannot read and serve the rest, on resolve, on a watch's first snapshot and on later changes.

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::StreamExt;
use service_registry::etcd::{EtcdConfig, EtcdDiscovery, EtcdRegistry, DEFAULT_PREFIX};
use service_registry::zookeeper::{ZookeeperConfig, ZookeeperDiscovery, ZookeeperRegistry};
use service_registry::{Discovery, Info, Registry, WatchStream};
use zookeeper_client::{Acls, CreateMode};

use super::report::Section;
use super::util::{fmt_mib, loopback};
use super::{Ctx, Scenario};
use crate::fixtures::etcd::Etcd;
use crate::fixtures::zookeeper::ZooKeeper;

const SERVICE: &str = "campaign.bad";

/// Ports of the good instances registered through the registry.
const GOOD: std::ops::Range<u16> = 9201..9206;
/// A good instance registered after the watch started.
const LATER_GOOD: u16 = 9206;
/// A bad entry written after the watch started.
const LATER_BAD: u16 = 9099;

fn ports(instances: &service_registry::Instances) -> BTreeSet<u16> {
    instances.iter().map(|i| i.addr.port()).collect()
}

/// What one backend's check came to.
#[derive(Default)]
struct Outcome {
    bad_written: usize,
    bad_served: u64,
    good_missing: u64,
    errors: u64,
    lines: Vec<String>,
}

impl Outcome {
    /// Compares what discovery returned with what it should have.
    fn check(
        &mut self,
        what: &str,
        got: &BTreeSet<u16>,
        good: &BTreeSet<u16>,
        bad: &BTreeSet<u16>,
    ) {
        let served_bad: Vec<u16> = got.intersection(bad).copied().collect();
        let missing: Vec<u16> = good.difference(got).copied().collect();
        self.bad_served += served_bad.len() as u64;
        self.good_missing += missing.len() as u64;
        self.lines.push(format!(
            "{what}: {} of {} good instances served, {} of {} bad entries served{}{}",
            good.len() - missing.len(),
            good.len(),
            served_bad.len(),
            bad.len(),
            if missing.is_empty() {
                String::new()
            } else {
                format!(", missing ports {missing:?}")
            },
            if served_bad.is_empty() {
                String::new()
            } else {
                format!(", served bad ports {served_bad:?}")
            },
        ));
    }
}

/// The next change whose set contains `port`, within 10 s.
async fn until_port(stream: &mut WatchStream, port: u16) -> Option<BTreeSet<u16>> {
    let wait = async {
        while let Some(change) = stream.next().await {
            let got = ports(&change.all);
            if got.contains(&port) {
                return Some(got);
            }
        }
        None
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .ok()
        .flatten()
}

/// Resolve, watch snapshot, and a later change, against `discovery`; `write_later_bad` adds a
/// bad entry after the watch started, then `registry` registers a good one.
async fn check_discovery<D, R, F, Fut>(
    outcome: &mut Outcome,
    discovery: &D,
    registry: &R,
    good: &BTreeSet<u16>,
    bad: &BTreeSet<u16>,
    write_later_bad: F,
) where
    D: Discovery,
    R: Registry,
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    match discovery.resolve(SERVICE).await {
        Ok(instances) => outcome.check("resolve", &ports(&instances), good, bad),
        Err(err) => {
            outcome.errors += 1;
            outcome.lines.push(format!("resolve failed: {err}"));
        }
    }
    let mut stream = match discovery.watch(SERVICE).await {
        Ok(stream) => stream,
        Err(err) => {
            outcome.errors += 1;
            outcome.lines.push(format!("watch failed: {err}"));
            return;
        }
    };
    match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
        Ok(Some(first)) => outcome.check("watch, first snapshot", &ports(&first.all), good, bad),
        _ => {
            outcome.errors += 1;
            outcome
                .lines
                .push("the watch gave no snapshot in 10 s".into());
            return;
        }
    }
    write_later_bad().await;
    registry
        .register(&Info::new(SERVICE, loopback(LATER_GOOD)))
        .await
        .expect("register the later instance");
    let mut good_later = good.clone();
    good_later.insert(LATER_GOOD);
    let mut bad_later = bad.clone();
    bad_later.insert(LATER_BAD);
    match until_port(&mut stream, LATER_GOOD).await {
        Some(got) => outcome.check(
            "watch, after a bad entry and a good instance were added",
            &got,
            &good_later,
            &bad_later,
        ),
        None => {
            outcome.errors += 1;
            outcome
                .lines
                .push("the watch did not report the instance registered later".into());
        }
    }
}

async fn etcd_bad_data(section: &mut Section) -> Outcome {
    let mut outcome = Outcome::default();
    let etcd = Etcd::start().await;
    let config = EtcdConfig::new([etcd.endpoint()]);
    let registry = EtcdRegistry::new(config.clone()).expect("an etcd registry");
    let mut good: BTreeSet<u16> = GOOD.collect();
    for port in GOOD {
        registry
            .register(&Info::new(SERVICE, loopback(port)))
            .await
            .expect("register a good instance");
    }
    let prefix = format!("{DEFAULT_PREFIX}/{SERVICE}/");
    let value = |port: u16| {
        format!(r#"{{"network":"tcp","address":"127.0.0.1:{port}","weight":10,"tags":{{}}}}"#)
    };
    let mut non_utf8 = prefix.as_bytes().to_vec();
    non_utf8.extend_from_slice(b"\xff\xfe:9004");
    let bad_entries: Vec<(&str, u16, Vec<u8>, Vec<u8>)> = vec![
        (
            "invalid JSON",
            9001,
            format!("{prefix}127.0.0.1:9001").into_bytes(),
            b"{not json".to_vec(),
        ),
        (
            "wrong types (address a number, weight a string, tags a list)",
            9002,
            format!("{prefix}127.0.0.1:9002").into_bytes(),
            br#"{"network":"tcp","address":5,"weight":"heavy","tags":[1]}"#.to_vec(),
        ),
        (
            "address in the value not ip:port",
            9003,
            format!("{prefix}127.0.0.1:9003").into_bytes(),
            br#"{"network":"tcp","address":"nohost","weight":1}"#.to_vec(),
        ),
        ("non-UTF-8 key", 9004, non_utf8, value(9004).into_bytes()),
        (
            "key without a port",
            9005,
            format!("{prefix}127.0.0.1").into_bytes(),
            value(9005).into_bytes(),
        ),
        (
            "key below an instance key",
            9006,
            format!("{prefix}127.0.0.1:9006/extra").into_bytes(),
            value(9006).into_bytes(),
        ),
        (
            "empty value",
            9007,
            format!("{prefix}127.0.0.1:9007").into_bytes(),
            Vec::new(),
        ),
    ];
    let mut raw = etcd.client().await;
    let mut bad = BTreeSet::new();
    for (_, port, key, value) in &bad_entries {
        raw.put(key.clone(), value.clone(), None)
            .await
            .expect("raw put");
        bad.insert(*port);
    }
    // Large but valid: 5 values of 1 MiB each, 5 MiB in all (etcd refuses one request over
    // 1.5 MiB, and gRPC clients refuse responses over 4 MiB by default).
    let blob = "x".repeat(1 << 20);
    let mut large = 0u64;
    for port in 9101..9106u16 {
        let value = format!(
            r#"{{"network":"tcp","address":"127.0.0.1:{port}","weight":10,"tags":{{"blob":"{blob}"}}}}"#
        );
        large += value.len() as u64;
        raw.put(format!("{prefix}127.0.0.1:{port}"), value, None)
            .await
            .expect("raw put of a large value");
        good.insert(port);
    }
    outcome.bad_written = bad_entries.len() + 1;
    section.figure(format!(
        "etcd: {} good instances (5 registered, 5 written raw with 1 MiB tags: {} in all), {} bad \
         entries: {}, and later {LATER_BAD} (invalid JSON)",
        good.len(),
        fmt_mib(large),
        bad_entries.len(),
        bad_entries
            .iter()
            .map(|e| e.0)
            .collect::<Vec<_>>()
            .join("; ")
    ));
    let discovery = EtcdDiscovery::new(config);
    let later = {
        let mut raw = raw.clone();
        let key = format!("{prefix}127.0.0.1:{LATER_BAD}");
        move || async move {
            raw.put(key, "[not an object", None).await.expect("raw put");
        }
    };
    check_discovery(&mut outcome, &discovery, &registry, &good, &bad, later).await;
    registry.close().await;
    outcome
}

async fn zookeeper_bad_data(section: &mut Section) -> Outcome {
    let mut outcome = Outcome::default();
    let zk = ZooKeeper::start().await;
    let config = ZookeeperConfig::new(zk.connect_string());
    let registry = ZookeeperRegistry::new(config.clone()).expect("a ZooKeeper registry");
    let mut good: BTreeSet<u16> = GOOD.collect();
    for port in GOOD {
        registry
            .register(&Info::new(SERVICE, loopback(port)))
            .await
            .expect("register a good instance");
    }
    let dir = format!("/{SERVICE}");
    let raw = zk.client(None).await;
    let other = zk.client(Some("other:secret")).await;
    let persistent = CreateMode::Persistent.with_acls(Acls::anyone_all());
    let private = CreateMode::Persistent.with_acls(Acls::creator_all());
    let bad_entries: Vec<(&str, u16, String, Vec<u8>, bool)> = vec![
        (
            "invalid JSON",
            9001,
            "127.0.0.1:9001".into(),
            b"{not json".to_vec(),
            false,
        ),
        (
            "wrong types (Weight a string, Tags a list)",
            9002,
            "127.0.0.1:9002".into(),
            br#"{"Weight":"heavy","Tags":[1]}"#.to_vec(),
            false,
        ),
        (
            "name without a port",
            9003,
            "127.0.0.1".into(),
            br#"{"Weight":10}"#.to_vec(),
            false,
        ),
        (
            "name not an address",
            9004,
            "not-an-address".into(),
            br#"{"Weight":10}"#.to_vec(),
            false,
        ),
        (
            "unreadable child (ACL: another digest user only)",
            9005,
            "127.0.0.1:9005".into(),
            br#"{"Weight":10,"Tags":{}}"#.to_vec(),
            true,
        ),
        (
            "empty data",
            9006,
            "127.0.0.1:9006".into(),
            Vec::new(),
            false,
        ),
    ];
    let mut bad = BTreeSet::new();
    for (_, port, name, data, unreadable) in &bad_entries {
        let path = format!("{dir}/{name}");
        let (client, options) = if *unreadable {
            (&other, &private)
        } else {
            (&raw, &persistent)
        };
        client
            .create(&path, data, options)
            .await
            .expect("raw create");
        bad.insert(*port);
    }
    // Large but valid: 6 children of 750 kB each, 4.5 MB in all (ZooKeeper refuses a node over
    // its 1 MiB jute.maxbuffer).
    let blob = "x".repeat(750_000);
    let mut large = 0u64;
    for port in 9101..9107u16 {
        let data = format!(r#"{{"Weight":10,"Tags":{{"blob":"{blob}"}}}}"#);
        large += data.len() as u64;
        raw.create(
            &format!("{dir}/127.0.0.1:{port}"),
            data.as_bytes(),
            &persistent,
        )
        .await
        .expect("raw create of a large node");
        good.insert(port);
    }
    outcome.bad_written = bad_entries.len() + 1;
    section.figure(format!(
        "ZooKeeper: {} good instances (5 registered, 6 written raw with 750 kB tags: {} in all), \
         {} bad children: {}, and later {LATER_BAD} (invalid JSON)",
        good.len(),
        fmt_mib(large),
        bad_entries.len(),
        bad_entries
            .iter()
            .map(|e| e.0)
            .collect::<Vec<_>>()
            .join("; ")
    ));
    let discovery = ZookeeperDiscovery::new(config);
    let later = || async {
        raw.create(
            &format!("{dir}/127.0.0.1:{LATER_BAD}"),
            b"[not an object",
            &persistent,
        )
        .await
        .expect("raw create");
    };
    check_discovery(&mut outcome, &discovery, &registry, &good, &bad, later).await;
    registry.close().await;
    outcome
}

/// Bad data on etcd and on ZooKeeper.
pub(crate) async fn run(_ctx: Ctx) -> Section {
    let mut section = Section::new(Scenario::BadData);
    section.setup(
        "per backend: good instances registered through the registry and written raw (large), \
         bad entries written raw next to them under the same service; EtcdDiscovery / \
         ZookeeperDiscovery (default settings) resolve, watch (first snapshot), then a bad entry \
         and a good instance are added and the watch must report the good one only",
    );
    let etcd = etcd_bad_data(&mut section).await;
    let zk = zookeeper_bad_data(&mut section).await;
    let mut served = 0;
    let mut missing = 0;
    let mut errors = 0;
    for (name, outcome) in [("etcd", &etcd), ("ZooKeeper", &zk)] {
        for line in &outcome.lines {
            section.figure(format!("{name}: {line}"));
        }
        section.figure(format!(
            "{name}: {} bad entries written in all; bad entries served across the 3 reads \
             (resolve, watch snapshot, watch after the later change): {}",
            outcome.bad_written, outcome.bad_served
        ));
        served += outcome.bad_served;
        missing += outcome.good_missing;
        errors += outcome.errors;
    }
    section.zero("bad entries served (entry × read)", served);
    section.zero("good instances missing (instance × read)", missing);
    section.zero("discovery calls that failed", errors);
    section
}

//! The backend metrics (issue 11) against a real etcd, read through `metrics-util`'s debugging
//! recorder: keep-alive round trips, watch events and instance counts, and a recovery with its
//! duration after etcd restarts. One test: the recorder is process-wide.
#![cfg(feature = "etcd")]

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::StreamExt;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use service_registry::etcd::{EtcdConfig, EtcdDiscovery, EtcdRegistry};
use service_registry::{metrics as names, Discovery, Health, Registry};
use tests::fixtures::etcd::Etcd;
use tests::poll;
use tests::running::Running;

// `linked.alpha` is defined in this library.
use linked_services as _;

/// What the recorder saw, summed over snapshots: the debugging recorder resets every metric
/// when it is read, so counters are added up, histogram samples collected and gauges kept at
/// the last value read (a gauge not set again since reads 0).
#[derive(Default)]
struct Seen {
    values: BTreeMap<(String, Vec<(String, String)>), Value>,
}

#[derive(Debug)]
enum Value {
    Count(u64),
    Level(f64),
    Samples(Vec<f64>),
}

impl Seen {
    fn read(&mut self, snapshotter: &Snapshotter) -> &mut Self {
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let key = key.key();
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_string(), l.value().to_string()))
                .collect();
            labels.sort();
            let slot = self.values.entry((key.name().to_string(), labels));
            match value {
                DebugValue::Counter(n) => {
                    let entry = slot.or_insert(Value::Count(0));
                    if let Value::Count(total) = entry {
                        *total += n;
                    }
                }
                DebugValue::Gauge(g) => {
                    slot.insert_entry(Value::Level(g.into_inner()));
                }
                DebugValue::Histogram(values) => {
                    let entry = slot.or_insert(Value::Samples(Vec::new()));
                    if let Value::Samples(all) = entry {
                        all.extend(values.into_iter().map(|v| v.into_inner()));
                    }
                }
            }
        }
        self
    }

    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<&Value> {
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        labels.sort();
        self.values.get(&(name.to_string(), labels))
    }

    fn count(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        match self.get(name, labels) {
            Some(Value::Count(n)) => *n,
            _ => 0,
        }
    }

    fn level(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        match self.get(name, labels) {
            Some(Value::Level(v)) => Some(*v),
            _ => None,
        }
    }

    fn samples(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        match self.get(name, labels) {
            Some(Value::Samples(all)) => all.clone(),
            _ => Vec::new(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_watch_and_recovery_figures_move() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let mut etcd = Etcd::start().await;
    let config = EtcdConfig::new(etcd.endpoints()).lease_ttl(Duration::from_secs(3));
    let registry = EtcdRegistry::new(config.clone()).unwrap();
    let health = registry.health().unwrap();
    let running = Running::start_with(|b| b.registry(registry).only(["linked.alpha"])).await;
    running.registered(Duration::from_secs(10)).await;
    let discovery = EtcdDiscovery::new(config);
    let mut watch = discovery.watch("linked.alpha").await.unwrap();
    let first = watch.next().await.unwrap();
    assert_eq!(first.all.len(), 1);

    let seen = Mutex::new(Seen::default());
    let read = || {
        let mut seen = seen.lock().unwrap();
        seen.read(&snapshotter);
    };
    read();
    let watch_labels = [("backend", "etcd"), ("service", "linked.alpha")];
    let registered = [("registry", "etcd"), ("state", "registered")];
    {
        let seen = seen.lock().unwrap();
        assert!(seen.count(names::WATCH_EVENTS, &watch_labels) >= 1);
        assert_eq!(
            seen.level(names::WATCHED_INSTANCES, &watch_labels),
            Some(1.0)
        );
        assert_eq!(seen.level(names::REGISTRATIONS, &registered), Some(1.0));
        assert_eq!(
            seen.count(
                names::REGISTER_ATTEMPTS,
                &[("registry", "etcd"), ("service", "linked.alpha")]
            ),
            1
        );
    }
    // A keep-alive every TTL/3 = 1 s.
    let etcd_label = [("registry", "etcd")];
    let round_trips = poll::until(
        Duration::from_secs(5),
        "a keep-alive round trip",
        || async {
            read();
            let s = seen
                .lock()
                .unwrap()
                .samples(names::KEEPALIVE_SECONDS, &etcd_label);
            (!s.is_empty()).then_some(s)
        },
    )
    .await;
    assert!(
        round_trips.iter().all(|rt| *rt > 0.0 && *rt < 1.0),
        "{round_trips:?}"
    );

    // etcd away and back: one recovery, with its duration.
    etcd.stop();
    let mut rx = health.clone();
    tokio::time::timeout(
        Duration::from_secs(10),
        rx.wait_for(|h| matches!(h, Health::Recovering { .. })),
    )
    .await
    .expect("the backend notices the loss")
    .unwrap();
    etcd.restart().await;
    let recoveries = poll::until(Duration::from_secs(15), "a recorded recovery", || async {
        read();
        let n = seen.lock().unwrap().count(names::RECOVERIES, &etcd_label);
        (n >= 1).then_some(n)
    })
    .await;
    assert_eq!(recoveries, 1);
    let took = seen
        .lock()
        .unwrap()
        .samples(names::RECOVERY_SECONDS, &etcd_label);
    assert_eq!(took.len(), 1, "{took:?}");
    assert!(took[0] > 0.0, "{took:?}");
    running.stop().await;
}

//! What our Nacos watch does with one push of a large service, in process (issue 22): every
//! Nacos push carries the whole instance list, so this is the client's per-push cost that the
//! end-to-end `watch_scale` bench shows as *extra*.
//!
//! ```text
//! cargo bench -p service-registry --features nacos --bench nacos_push
//! ```
//!
//! The pushes are `NotifySubscriberRequest` bodies as a Nacos 2.x server writes them, with N
//! instances (1 000 and 10 000) in Java Nacos' instance layout, two metadata entries each (a
//! tag and our start time), as `NacosRegistry` registers them.
//! - `read`: the body parsed as the connection's stream reader does, and its hosts read as
//!   instances.
//! - `push_one_changed`: what a watch does per push after its snapshot: the body parsed, the
//!   instances compared with what the watch shows, and what changed published. The pushes
//!   alternate between two states that differ in one instance's weight, as in `watch_scale`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use service_registry::nacos::__bench::{read, Follower};

const SERVICE: &str = "scale.svc";

/// A push of `n` instances; instance 0 has weight `weight0`.
fn push(n: usize, weight0: u32) -> Vec<u8> {
    let hosts: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let ip = format!("127.0.{}.{}", i / 250, i % 250 + 1);
            let weight = if i == 0 { weight0 } else { 10 };
            serde_json::json!({
                "instanceId": format!("{ip}#8000#DEFAULT#DEFAULT_GROUP@@{SERVICE}"),
                "ip": ip,
                "port": 8000,
                "weight": f64::from(weight),
                "healthy": true,
                "enabled": true,
                "ephemeral": true,
                "clusterName": "DEFAULT",
                "serviceName": format!("DEFAULT_GROUP@@{SERVICE}"),
                "metadata": {
                    "idc": "hz",
                    "service-registry.start_time_ms": (1_764_000_000_000u64 + i as u64).to_string(),
                },
                "instanceHeartBeatInterval": 5000,
                "instanceHeartBeatTimeOut": 15000,
                "ipDeleteTimeout": 30000,
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "headers": {},
        "requestId": "17",
        "module": "naming",
        "namespace": "public",
        "serviceName": SERVICE,
        "groupName": "DEFAULT_GROUP",
        "serviceInfo": {
            "name": SERVICE,
            "groupName": "DEFAULT_GROUP",
            "clusters": "",
            "cacheMillis": 10000,
            "hosts": hosts,
            "lastRefTime": 1_764_000_000_000u64,
            "checksum": "",
            "allIPs": false,
            "reachProtectionThreshold": false,
            "valid": true,
        },
    }))
    .expect("a JSON value serializes")
}

fn nacos_push(c: &mut Criterion) {
    let mut group = c.benchmark_group("nacos_push");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(6));
    for n in [1_000, 10_000] {
        let (a, b) = (push(n, 20), push(n, 30));
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("read", n), &a, |bench, json| {
            bench.iter(|| assert_eq!(read(json), n));
        });
        let mut follower = Follower::new(SERVICE, "DEFAULT");
        assert_eq!(follower.push(&a), n, "the snapshot");
        let mut flip = false;
        group.bench_function(BenchmarkId::new("push_one_changed", n), |bench| {
            bench.iter(|| {
                flip = !flip;
                assert_eq!(follower.push(if flip { &b } else { &a }), n);
            });
        });
    }
    group.finish();
}

criterion_group!(benches, nacos_push);
criterion_main!(benches);

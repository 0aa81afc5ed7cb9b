//! `MemoryRegistry::resolve` of a service with 10 instances (what a client that resolves per
//! call pays), with and without tags, among 100 services; `MemoryRegistry::instances`, the
//! same shared set without the `async` call; and a copy of it into a `Vec` (`to_vec`) alone,
//! what `resolve` cost when it returned `Vec<Instance>`.
//!
//! ```text
//! cargo bench -p service-registry --bench resolve
//! ```

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use futures_util::FutureExt;
use service_registry::{Discovery, Info, MemoryRegistry, Registry};

fn registry(tags: usize) -> MemoryRegistry {
    let registry = MemoryRegistry::new();
    for service in 0..100 {
        for i in 0..10u16 {
            let mut info = Info::new(
                format!("svc-{service}"),
                ([10, 0, service as u8, i as u8 + 1], 80).into(),
            );
            for t in 0..tags {
                info.tags.insert(format!("tag{t}"), format!("value{t}"));
            }
            registry
                .register(&info)
                .now_or_never()
                .expect("memory registration completes at once")
                .expect("memory registration succeeds");
        }
    }
    registry
}

fn resolve(c: &mut Criterion) {
    let mut group = c.benchmark_group("memory_resolve_10_instances");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    for tags in [0, 1] {
        let registry = registry(tags);
        group.bench_with_input(BenchmarkId::new("tags", tags), &tags, |b, _| {
            b.iter(|| {
                let found = registry
                    .resolve(std::hint::black_box("svc-42"))
                    .now_or_never()
                    .expect("memory resolve completes at once")
                    .expect("memory resolve succeeds");
                assert_eq!(found.len(), 10);
                found
            })
        });
    }
    for tags in [0, 1] {
        let registry = registry(tags);
        group.bench_with_input(BenchmarkId::new("shared/tags", tags), &tags, |b, _| {
            b.iter(|| {
                let found = registry.instances(std::hint::black_box("svc-42"));
                assert_eq!(found.len(), 10);
                found
            })
        });
        let list = registry.instances("svc-42");
        group.bench_with_input(BenchmarkId::new("copy_only/tags", tags), &tags, |b, _| {
            b.iter(|| std::hint::black_box(&list).to_vec())
        });
    }
    group.finish();
}

criterion_group!(benches, resolve);
criterion_main!(benches);

//! Watches hold the latest state, not a history: a watcher that never reads costs memory in
//! proportion to the current instance set, and dropped watchers leave nothing behind.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use service_registry::{Discovery, Info, Instance, MemoryRegistry, Registry};

fn info(service: &str, port: u16) -> Info {
    Info::new(service, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// This process's resident set size in bytes, from `/proc/self/status`.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("a VmRSS line");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in kB");
    kib * 1024
}

fn sorted(mut instances: Vec<Instance>) -> Vec<Instance> {
    instances.sort_by_key(|i| i.addr);
    instances
}

#[tokio::test]
async fn a_watcher_that_never_reads_holds_only_the_latest_state() {
    const FLIPS: usize = 200_000;
    const LIMIT: u64 = 20 << 20;
    let registry = MemoryRegistry::new();
    for port in 1..=10 {
        registry.register(&info("flappy", port)).await.unwrap();
    }
    let flapping = info("flappy", 100);
    registry.register(&flapping).await.unwrap();
    let mut idle = registry.watch("flappy").await.unwrap();

    let before = rss();
    for flip in 0..FLIPS {
        if flip % 2 == 0 {
            registry.deregister(&flapping).await.unwrap();
        } else {
            registry.register(&flapping).await.unwrap();
        }
    }
    let grown = rss().saturating_sub(before);
    println!(
        "RSS grew by {:.1} MiB over {FLIPS} flips with an idle watcher",
        grown as f64 / f64::from(1 << 20)
    );
    assert!(
        grown < LIMIT,
        "an idle watcher made RSS grow by {:.1} MiB over {FLIPS} flips (limit {} MiB)",
        grown as f64 / f64::from(1 << 20),
        LIMIT >> 20
    );

    // Read at last: one item, the current set (as a snapshot), and nothing queued behind it.
    let current = sorted(registry.resolve("flappy").await.unwrap());
    assert_eq!(current.len(), 11);
    let first = tokio::time::timeout(Duration::from_secs(1), idle.next())
        .await
        .expect("the watcher has an item")
        .expect("the stream is open");
    assert_eq!(sorted(first.all.clone()), current);
    assert_eq!(first.added, first.all, "the first item is a snapshot");
    assert!(first.updated.is_empty() && first.removed.is_empty());
    let queued = idle.next().now_or_never();
    assert!(
        queued.is_none(),
        "nothing may be queued behind the latest state: {queued:?}"
    );

    // The watcher still follows later changes.
    registry.deregister(&flapping).await.unwrap();
    let change = tokio::time::timeout(Duration::from_secs(1), idle.next())
        .await
        .expect("a change after the last flip")
        .expect("the stream is open");
    assert_eq!(change.removed, vec![Instance::from(&flapping)]);
    assert_eq!(change.all.len(), 10);
}

#[tokio::test]
async fn dropped_watchers_leave_nothing_behind() {
    const WATCHES: u16 = 10_000;
    let registry = MemoryRegistry::new();
    registry.register(&info("busy", 1)).await.unwrap();
    let kept = registry.watch("kept").await.unwrap();
    // Half on one service, half on as many services, none of which changes afterwards.
    for i in 0..WATCHES {
        let service = if i % 2 == 0 {
            "busy".to_string()
        } else {
            format!("quiet-{i}")
        };
        drop(registry.watch(&service).await.unwrap());
    }
    let held = registry.watch_channels();
    println!("watch channels held after {WATCHES} dropped watches: {held}");
    assert!(
        held <= 32,
        "{held} watch channels held after {WATCHES} dropped watch()es (one is still alive)"
    );
    drop(kept);
}

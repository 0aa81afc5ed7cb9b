//! Watches hold the latest state, not a history: a watcher that never reads costs memory in
//! proportion to the current instance set, and dropped watchers leave nothing behind.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use service_registry::{Discovery, Info, Instance, MemoryRegistry, Registry};

fn info(service: &str, port: u16) -> Info {
    Info::new(service, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Counts the bytes that each thread holds: allocated by it and not freed since. The tests
/// here run on one thread each (`#[tokio::test]` is a current-thread runtime: the registry,
/// its watch channels and the watcher all live on the test's thread), so a test reads what it
/// itself holds, whatever the other tests of this binary allocate meanwhile on theirs. (The
/// process-wide RSS this test read before counted every test of the binary, and pages the
/// allocator kept; it could neither pin a growth on the watcher nor see one below its noise.)
struct PerThread;

thread_local! {
    /// Bytes allocated minus bytes freed by this thread (const-initialised, no destructor:
    /// safe to touch from inside the allocator).
    static HELD: Cell<i64> = const { Cell::new(0) };
}

fn count(delta: i64) {
    let _ = HELD.try_with(|held| held.set(held.get() + delta));
}

// SAFETY: every call is passed on to `System` unchanged; only a thread-local counter is added.
unsafe impl GlobalAlloc for PerThread {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            count(layout.size() as i64);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            count(layout.size() as i64);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as i64));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let moved = unsafe { System.realloc(ptr, layout, new_size) };
        if !moved.is_null() {
            count(new_size as i64 - layout.size() as i64);
        }
        moved
    }
}

#[global_allocator]
static ALLOCATOR: PerThread = PerThread;

/// The bytes this thread holds now (see [`PerThread`]).
fn held() -> i64 {
    HELD.with(Cell::get)
}

const MIB: f64 = (1 << 20) as f64;

#[tokio::test]
async fn a_watcher_that_never_reads_holds_only_the_latest_state() {
    const FLIPS: usize = 200_000;
    /// An idle watcher may hold the current set twice (a few KiB here); a history of 200 000
    /// changes of an 11-instance set would be hundreds of MiB.
    const LIMIT: i64 = 1 << 20;
    let registry = MemoryRegistry::new();
    for port in 1..=10 {
        registry.register(&info("flappy", port)).await.unwrap();
    }
    let flapping = info("flappy", 100);
    registry.register(&flapping).await.unwrap();
    let flip = |flip: usize| {
        let (registry, flapping) = (&registry, &flapping);
        async move {
            if flip.is_multiple_of(2) {
                registry.deregister(flapping).await.unwrap();
            } else {
                registry.register(flapping).await.unwrap();
            }
        }
    };

    // The meter sees a history: a reader that keeps every change it reads, over a hundredth
    // of the flips, holds more than the limit.
    let mut reader = registry.watch("flappy").await.unwrap();
    reader.next().await.unwrap();
    let before = held();
    let mut history = Vec::new();
    for f in 0..FLIPS / 100 {
        flip(f).await;
        history.push(reader.next().await.unwrap());
    }
    let kept = held() - before;
    println!(
        "a reader keeping {} changes holds {:.2} MiB",
        history.len(),
        kept as f64 / MIB
    );
    assert!(
        kept > LIMIT,
        "the meter missed a history of {} changes ({kept} bytes)",
        history.len()
    );
    drop((history, reader));

    let mut idle = registry.watch("flappy").await.unwrap();
    let before = held();
    for f in 0..FLIPS {
        flip(f).await;
    }
    let grown = held() - before;
    println!(
        "an idle watcher and the registry hold {grown} bytes more after {FLIPS} flips \
         (limit {} KiB)",
        LIMIT >> 10
    );
    assert!(
        grown < LIMIT,
        "an idle watcher holds {:.1} MiB more after {FLIPS} flips (limit {} KiB)",
        grown as f64 / MIB,
        LIMIT >> 10
    );

    // Read at last: one item, the current set (as a snapshot), and nothing queued behind it.
    let current = registry.resolve("flappy").await.unwrap();
    assert_eq!(current.len(), 11);
    let first = tokio::time::timeout(Duration::from_secs(1), idle.next())
        .await
        .expect("the watcher has an item")
        .expect("the stream is open");
    assert_eq!(first.all, current);
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

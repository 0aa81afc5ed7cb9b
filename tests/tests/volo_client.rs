//! A volo-grpc client through `VoloDiscover` + `VoloBalance` (issue 19, part 5), on memory,
//! etcd, ZooKeeper and Nacos: it calls the registered instance; an instance started later gets
//! calls within 1 s; an instance taken out (`ControlHandle::take_out`) or stopped gets none once
//! the client has seen its removal; no call fails on the way. (Nacos: within 2 s, see
//! [`first_call_limit`].)
#![cfg(feature = "volo")]

mod volo_support;

use std::time::{Duration, Instant};

use tests::conformance::Harness;
use volo_support::{client, hello, holds, start_greeter, SERVICE};

const DRAIN: Duration = Duration::from_secs(2);

/// How soon an instance started later must get its first call. 1 s wherever the registry tells
/// its watchers at once; Nacos (rnacos) pushes a change after its own delay (BENCHMARKS.md,
/// Nacos: `NacosDiscovery::watch` 501.9 ms p50, 1.0 s max), so there the bound is 2 s.
fn first_call_limit(backend: &str) -> Duration {
    match backend {
        "nacos" => Duration::from_secs(2),
        _ => Duration::from_secs(1),
    }
}
const LIMIT: Duration = Duration::from_secs(10);

/// Calls one at a time (so none is in flight when `done` is checked) until `done`, within
/// [`LIMIT`]; returns the number of calls. Every call must succeed.
async fn call_until(
    client: &examples::volo_common::greeter::GreeterClient,
    what: &str,
    mut done: impl FnMut() -> bool,
) -> usize {
    let deadline = Instant::now() + LIMIT;
    let mut calls = 0;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {LIMIT:?}: {what}"
        );
        hello(client)
            .await
            .unwrap_or_else(|err| panic!("a call failed while waiting for {what}: {err}"));
        calls += 1;
    }
    calls
}

async fn calls_follow_the_registry(backend: &Harness) {
    let name = backend.name();
    let a = start_greeter(backend.registry().await, DRAIN).await;
    let (client, balance) = client(backend.discovery().await, SERVICE);
    call_until(&client, &format!("{name}: a call reaches a"), || {
        a.served() > 0
    })
    .await;

    // An instance started later gets calls within 1 s of its registration.
    let b = start_greeter(backend.registry().await, DRAIN).await;
    let registered = Instant::now();
    call_until(&client, &format!("{name}: a call reaches b"), || {
        b.served() > 0
    })
    .await;
    let first_call = registered.elapsed();
    eprintln!("{name}: the later instance got its first call {first_call:?} after registering");
    assert!(
        first_call <= first_call_limit(name),
        "{name}: b's first call came {first_call:?} after it registered"
    );

    // Taken out: none after the client has seen the removal.
    b.control.take_out(SERVICE).unwrap();
    call_until(
        &client,
        &format!("{name}: the client sees b taken out"),
        || !holds(&balance, SERVICE, b.addr),
    )
    .await;
    let (b_then, a_then) = (b.served(), a.served());
    for _ in 0..200 {
        hello(&client).await.unwrap();
    }
    assert_eq!(
        b.served(),
        b_then,
        "{name}: b got calls after its removal was seen"
    );
    assert_eq!(a.served(), a_then + 200, "{name}");

    // Back in, then stopped (deregister, drain, stop): none after the removal is seen.
    b.control.put_back(SERVICE).unwrap();
    call_until(&client, &format!("{name}: b back in rotation"), || {
        b.served() > b_then
    })
    .await;
    let (b_served, b_addr) = (b.served.clone(), b.addr);
    let stopping = tokio::spawn(b.stop());
    call_until(
        &client,
        &format!("{name}: the client sees b stopped"),
        || !holds(&balance, SERVICE, b_addr),
    )
    .await;
    let b_then = b_served.load(std::sync::atomic::Ordering::SeqCst);
    for _ in 0..200 {
        hello(&client).await.unwrap();
    }
    assert_eq!(
        b_served.load(std::sync::atomic::Ordering::SeqCst),
        b_then,
        "{name}: b got calls after its removal was seen"
    );
    stopping.await.unwrap();
    a.stop().await;
}

#[tokio::test]
async fn memory_calls_follow_the_registry() {
    calls_follow_the_registry(&Harness::memory()).await;
}

#[cfg(feature = "etcd")]
#[tokio::test]
async fn etcd_calls_follow_the_registry() {
    let mut backend = Harness::etcd().await;
    calls_follow_the_registry(&backend).await;
    backend.finish().await;
}

#[cfg(feature = "zookeeper")]
#[tokio::test]
async fn zookeeper_calls_follow_the_registry() {
    let mut backend = Harness::zookeeper().await;
    calls_follow_the_registry(&backend).await;
    backend.finish().await;
}

#[cfg(feature = "nacos")]
#[tokio::test]
async fn nacos_calls_follow_the_registry() {
    let mut backend = Harness::nacos().await;
    calls_follow_the_registry(&backend).await;
    backend.finish().await;
}

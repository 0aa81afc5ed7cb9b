//! A Volo client whose etcd view lags the registry by 150 ms each way (a loopback proxy between
//! the client's `EtcdDiscovery` and a real etcd; the greeters register into etcd directly).
//!
//! - A call made after an instance has registered, but before the client has seen it, waits for
//!   it instead of failing with "no instance" (`VoloBalance::wait_for_instance`).
//! - A service that turns empty in the client's view (its one instance deregistered and
//!   draining, its successor not seen yet) keeps its last instance until the successor is seen,
//!   as the crate's `Balancer` does (`BalancerBuilder::hold_when_empty`): no call fails.
#![cfg(all(feature = "volo", feature = "etcd"))]

mod volo_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use service_registry::etcd::{EtcdConfig, EtcdDiscovery, EtcdRegistry};
use service_registry::volo::VoloDiscover;
use service_registry::{Discovery, Registry};
use tests::fixtures::etcd::Etcd;
use volo::discovery::Discover;
use volo_support::{client_with, hello, holds, lagging_discovery, start_greeter, SERVICE};

/// The proxy's delay each way between the client's discovery and etcd.
const LAG: Duration = Duration::from_millis(150);
const LIMIT: Duration = Duration::from_secs(20);

fn registry_of(etcd: &Etcd) -> Arc<dyn Registry> {
    Arc::new(EtcdRegistry::new(EtcdConfig::new(etcd.endpoints())).unwrap())
}

#[tokio::test]
async fn a_call_waits_for_an_instance_the_lagging_view_has_not_seen_yet() {
    let etcd = Etcd::start().await;
    let (_proxy, discovery) = lagging_discovery(&etcd, LAG).await;
    let (client, balance) = client_with(VoloDiscover::new(discovery), SERVICE);

    // Nothing registered: the client follows the service and finds no instance; the call
    // fails (after waiting for one in vain).
    let err = hello(&client).await.expect_err("no instance is registered");
    eprintln!("with no instance registered: {err}");

    let a = start_greeter(registry_of(&etcd), Duration::from_secs(1)).await;
    let registered = Instant::now();
    assert!(
        !holds(&balance, SERVICE, a.addr),
        "the client saw a at once: its view does not lag, the test proves nothing"
    );
    // Registered in etcd, not yet seen by the client: calls made now must wait for it.
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { hello(&client).await })
        })
        .collect();
    for call in calls {
        let answered = call.await.unwrap().unwrap_or_else(|err| {
            panic!(
                "a call {:?} after a registered failed: {err}",
                registered.elapsed()
            )
        });
        assert_eq!(answered, a.addr.to_string());
    }
    eprintln!(
        "4 calls made before the client saw a all answered, {:?} after a registered",
        registered.elapsed()
    );
    a.stop().await;
}

#[tokio::test]
async fn a_service_turning_empty_in_a_lagging_view_keeps_its_last_instance() {
    let etcd = Etcd::start().await;
    let registry = registry_of(&etcd);
    let direct = EtcdDiscovery::new(EtcdConfig::new(etcd.endpoints()));
    let (_proxy, discovery) = lagging_discovery(&etcd, LAG).await;
    let discover = VoloDiscover::new(discovery);
    // What the client's discover reports, to show the empty view really happened.
    let mut changes = discover.watch(None).unwrap();
    let (client, balance) = client_with(discover, SERVICE);

    // `a` keeps serving for 3 s after it deregisters.
    let a = start_greeter(registry.clone(), Duration::from_secs(3)).await;
    let deadline = Instant::now() + LIMIT;
    while !holds(&balance, SERVICE, a.addr) || a.served() == 0 {
        assert!(Instant::now() < deadline, "the client never called a");
        let _ = hello(&client).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(Mutex::new(Vec::<String>::new()));
    let ok = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let (client, stop, failed, ok) =
                (client.clone(), stop.clone(), failed.clone(), ok.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    match hello(&client).await {
                        Ok(_) => {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(err) => failed.lock().unwrap().push(err),
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();

    // a leaves (deregistered now, draining); its successor b registers only once etcd itself
    // lists the service empty, so the client's view goes a -> nothing -> b.
    let a_addr = a.addr;
    let stopping = tokio::spawn(a.stop());
    tests::poll::until(LIMIT, "etcd lists no instance", || async {
        direct
            .resolve(SERVICE)
            .await
            .ok()
            .filter(|set| set.is_empty())
            .map(|_| ())
    })
    .await;
    let b = start_greeter(registry.clone(), Duration::from_secs(1)).await;
    let deadline = Instant::now() + LIMIT;
    while !holds(&balance, SERVICE, b.addr) || holds(&balance, SERVICE, a_addr) || b.served() == 0 {
        assert!(Instant::now() < deadline, "the client never moved to b");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for caller in callers {
        caller.await.unwrap();
    }
    stopping.await.unwrap();

    let mut saw_empty = false;
    while let Ok(change) = changes.try_recv() {
        saw_empty |= change.key == SERVICE && change.all.is_empty();
    }
    assert!(
        saw_empty,
        "the client's discover never reported the service empty: the test proves nothing"
    );
    let failed = std::mem::take(&mut *failed.lock().unwrap());
    let ok = ok.load(Ordering::SeqCst);
    eprintln!(
        "a -> (empty) -> b in the lagging view: {} calls, {} failed (first: {:?})",
        ok + failed.len(),
        failed.len(),
        failed.first()
    );
    assert!(
        failed.is_empty(),
        "{} calls failed, the first: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert!(ok > 20, "too few calls to mean anything: {ok}");
    b.stop().await;
}

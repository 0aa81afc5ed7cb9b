//! Scenarios of other writers in our store: a record of ours deleted or overwritten by someone
//! else, and two registries advertising one address. They read the server's records around our
//! clients ([`Backend::record`](super::Backend::record)): etcd and ZooKeeper only.

use std::time::{Duration, Instant};

use service_registry::{Health, Registry};

use super::observe::{deregister, info, register};
use super::{Harness, Record, EXPIRY};
use crate::poll;

/// How soon a record of ours someone else deleted or overwrote is back, and how soon the
/// survivor of two registries of one address holds it once the other has gone.
const RESTORED: Duration = Duration::from_secs(1);

/// The record of instance `node` of `service`; panics naming `what` when there is none.
async fn record_of(backend: &Harness, service: &str, node: &str, what: &str) -> Record {
    let name = backend.name();
    backend
        .record(service, node)
        .await
        .unwrap_or_else(|| panic!("[{name}] no record of {what}"))
}

/// Issue 18, defect 20: a record of ours deleted or overwritten by someone else while our lease /
/// session lives is restored within a second (Consul's agent does the same), as it was: the
/// same bytes on the same lease / session. A record we deregistered stays gone.
pub async fn records_deleted_or_overwritten_by_others_are_restored(backend: &mut Harness) {
    let name = backend.name();
    let service = "conf.entropy";
    let registry = backend.registry().await;
    let ours = info(service, 7901, 10, &[]);
    let gone = info(service, 7902, 10, &[]);
    register(name, &*registry, &ours).await;
    register(name, &*registry, &gone).await;
    deregister(name, &*registry, &gone).await;
    let node = ours.addr.to_string();
    let original = record_of(backend, service, &node, "our instance").await;
    assert_ne!(
        original.holder, 0,
        "[{name}] {original:?} on no lease / session"
    );

    let restored = |what: &'static str| {
        let (backend, node, original) = (&*backend, &node, &original);
        async move {
            let started = Instant::now();
            poll::until(
                RESTORED,
                &format!("[{name}] the {what} record restored"),
                || async {
                    let now = backend.record(service, node).await?;
                    (now.content() == original.content()).then_some(())
                },
            )
            .await;
            println!(
                "[{name}] the {what} record restored after {:?}",
                started.elapsed()
            );
        }
    };
    backend.delete_raw(service, &node).await;
    restored("deleted").await;
    backend.put_raw(service, &node, b"garbage").await;
    restored("overwritten").await;
    // Our own deregistration is not undone.
    assert_eq!(
        backend.record(service, &gone.addr.to_string()).await,
        None,
        "[{name}] the deregistered instance"
    );
}

/// Issue 18, defect 6: two registries advertising the same address (a VIP in
/// `SERVICE_REGISTRY_ADVERTISE_ADDR`) write one record. They must not fight over it (its version
/// stays put), both stay healthy and neither drops the registration: the one that does not hold
/// the record leaves it alone when it deregisters, and when the holder goes the other's own
/// registration takes the record over within a second and keeps it on a live lease / session
/// (past the TTL). Each registry's own second instance tells which lease / session is whose.
pub async fn two_registries_advertising_one_address_do_not_fight(backend: &mut Harness) {
    let name = backend.name();
    let service = "conf.vip";
    let first = backend.registry().await;
    let second = backend.registry().await;
    let shared = info(service, 7971, 10, &[]);
    let node = shared.addr.to_string();
    let mut holders = Vec::new();
    for (registry, port) in [(&first, 7972), (&second, 7973)] {
        let own = info(service, port, 10, &[]);
        register(name, &**registry, &own).await;
        register(name, &**registry, &shared).await;
        let own = record_of(backend, service, &own.addr.to_string(), "a registry's own").await;
        holders.push(own.holder);
    }
    let before = record_of(backend, service, &node, "the shared address").await;
    let keeper = holders
        .iter()
        .position(|h| *h == before.holder)
        .unwrap_or_else(|| panic!("[{name}] {before:?} held by neither of {holders:?}"));
    println!("[{name}] the shared record is held by registry {keeper} of 0, 1");

    // A fight deletes and writes the record over and over; in 2 s nothing may change.
    let watched = Instant::now();
    let mut changes = Vec::new();
    while watched.elapsed() < Duration::from_secs(2) {
        let now = backend.record(service, &node).await;
        if now.as_ref() != Some(&before) {
            changes.push(now);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        changes.is_empty(),
        "[{name}] the shared record changed while both registries live: {:?}",
        &changes[..changes.len().min(3)]
    );
    for (i, registry) in [&first, &second].into_iter().enumerate() {
        let health = registry
            .health()
            .unwrap_or_else(|| panic!("[{name}] reports no health"));
        assert_eq!(*health.borrow(), Health::Healthy, "[{name}] registry {i}");
    }

    let (keeping, other): (&dyn Registry, &dyn Registry) = match keeper {
        0 => (&*first, &*second),
        _ => (&*second, &*first),
    };
    // The other deregisters: the record is not its to delete.
    deregister(name, other, &shared).await;
    assert_eq!(
        backend.record(service, &node).await.as_ref(),
        Some(&before),
        "[{name}] the holder's record after the other deregistered"
    );
    register(name, other, &shared).await;

    // The holder goes: the address stays registered, now by the other.
    let survivor = holders[1 - keeper];
    keeping.close().await;
    let closed = Instant::now();
    let taken = poll::until(
        Duration::from_secs(3),
        &format!("[{name}] the survivor's own record in place of the holder's"),
        || async {
            let now = backend.record(service, &node).await?;
            (now.holder == survivor).then(|| closed.elapsed())
        },
    )
    .await;
    println!("[{name}] the survivor holds the record {taken:?} after the holder closed");
    assert!(taken <= RESTORED, "[{name}] took over only after {taken:?}");
    // Past a lease TTL / session timeout: it is on a live lease / session, not a leftover.
    let held = Instant::now() + EXPIRY + Duration::from_secs(1);
    while Instant::now() < held {
        let now = backend.record(service, &node).await;
        assert_eq!(
            now.as_ref().map(|r| r.holder),
            Some(survivor),
            "[{name}] the record went although the survivor lives"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    deregister(name, other, &shared).await;
    assert_eq!(
        backend.record(service, &node).await,
        None,
        "[{name}] the shared address once both left"
    );
}

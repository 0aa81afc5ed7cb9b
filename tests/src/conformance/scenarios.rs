//! The scenarios every backend runs: register, resolve, watch and deregister; unreadable data;
//! outages; refused registrations.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use service_registry::{Backoff, Change, Health, Info, InfoOverride, Registrar, ServiceStatus};

use super::observe::{
    addrs, deregister, expected, health_until, info, lists, register, resolve, seen, stays,
    watch_until,
};
use super::{eventually, next_change, watch, Harness, RefusesNext, CHANGE, EXPIRY, RECOVERY};

/// The lease TTL / session timeout of a registry that outlives an outage.
const LASTING: Duration = Duration::from_secs(30);

/// Register → resolve shows exactly it: address, weight and tags; other services stay empty.
pub async fn register_then_resolve(backend: &mut Harness) {
    let name = backend.name();
    let registry = backend.registry().await;
    let discovery = backend.discovery().await;
    let a = info("conf.resolve", 7001, 30, &[("idc", "hz"), ("env", "test")]);
    register(name, &*registry, &a).await;
    assert_eq!(
        resolve(name, &*discovery, "conf.resolve").await,
        expected(&[&a]),
        "[{name}] resolve right after register"
    );
    assert_eq!(
        resolve(name, &*discovery, "conf.nothing").await,
        Vec::new(),
        "[{name}] a service nobody registered"
    );
}

/// A watch gives the snapshot first, then added, updated (weight change) and removed.
pub async fn watch_snapshot_then_changes(backend: &mut Harness) {
    let name = backend.name();
    let service = "conf.watch";
    let registry = backend.registry().await;
    let discovery = backend.discovery().await;
    let mut a = info(service, 7001, 10, &[("idc", "hz")]);
    let b = info(service, 7002, 20, &[]);
    register(name, &*registry, &a).await;

    let mut watch = watch(name, &*discovery, service).await;
    let snapshot = next_change(name, &mut watch, "the snapshot").await;
    assert_change(name, "the snapshot", &snapshot, [&[&a], &[], &[]], &[&a]);

    register(name, &*registry, &b).await;
    let added = next_change(name, &mut watch, "b added").await;
    assert_change(name, "b added", &added, [&[&b], &[], &[]], &[&a, &b]);

    a.weight = 50;
    register(name, &*registry, &a).await;
    let updated = next_change(name, &mut watch, "a's weight updated").await;
    assert_change(name, "a's weight", &updated, [&[], &[&a], &[]], &[&a, &b]);

    deregister(name, &*registry, &b).await;
    let removed = next_change(name, &mut watch, "b removed").await;
    assert_change(name, "b removed", &removed, [&[], &[], &[&b]], &[&a]);
}

/// Asserts that `change` added, updated and removed exactly `[added, updated, removed]` (the
/// removed by address) and that its complete set is `all`.
fn assert_change(name: &str, what: &str, change: &Change, parts: [&[&Info]; 3], all: &[&Info]) {
    let [added, updated, removed] = parts;
    let mut removed: Vec<SocketAddr> = removed.iter().map(|i| i.addr).collect();
    removed.sort();
    assert_eq!(
        (
            seen(&change.added),
            seen(&change.updated),
            addrs(&change.removed),
            seen(&change.all)
        ),
        (expected(added), expected(updated), removed, expected(all)),
        "[{name}] {what}: (added, updated, removed, all) of {change:?}"
    );
}

/// A deregistered instance is gone from the very next resolve, by any client.
pub async fn deregister_removes_at_once(backend: &mut Harness) {
    let name = backend.name();
    let service = "conf.deregister";
    let registry = backend.registry().await;
    let discovery = backend.discovery().await;
    let a = info(service, 7001, 10, &[]);
    let b = info(service, 7002, 10, &[]);
    register(name, &*registry, &a).await;
    register(name, &*registry, &b).await;
    assert_eq!(
        resolve(name, &*discovery, service).await,
        expected(&[&a, &b])
    );

    deregister(name, &*registry, &a).await;
    assert_eq!(
        resolve(name, &*discovery, service).await,
        expected(&[&b]),
        "[{name}] resolve right after deregistering a"
    );
    let fresh = backend.discovery().await;
    assert_eq!(
        resolve(name, &*fresh, service).await,
        expected(&[&b]),
        "[{name}] a new discovery client right after deregistering a"
    );
    deregister(name, &*registry, &b).await;
    assert_eq!(
        resolve(name, &*discovery, service).await,
        Vec::new(),
        "[{name}] resolve right after deregistering the last instance"
    );
}

/// Registering twice and deregistering twice are not errors and leave one / no instance;
/// deregistering what was never registered succeeds.
pub async fn register_and_deregister_are_idempotent(backend: &mut Harness) {
    let name = backend.name();
    let service = "conf.idempotent";
    let registry = backend.registry().await;
    let discovery = backend.discovery().await;
    let a = info(service, 7001, 10, &[("k", "v")]);
    register(name, &*registry, &a).await;
    register(name, &*registry, &a).await;
    assert_eq!(
        resolve(name, &*discovery, service).await,
        expected(&[&a]),
        "[{name}] after registering twice"
    );
    deregister(name, &*registry, &a).await;
    deregister(name, &*registry, &a).await;
    assert_eq!(
        resolve(name, &*discovery, service).await,
        Vec::new(),
        "[{name}] after deregistering twice"
    );
    let never = info(service, 7999, 10, &[]);
    deregister(name, &*registry, &never).await;
    // And the registry still works afterwards.
    register(name, &*registry, &a).await;
    assert_eq!(resolve(name, &*discovery, service).await, expected(&[&a]));
}

/// Unreadable data beside a valid instance is left out and the valid one is served, by resolve
/// and by a watch (also when the unreadable data arrives while watching). Not run on memory,
/// which cannot hold foreign bytes.
pub async fn unreadable_data_is_left_out(backend: &mut Harness) {
    let name = backend.name();
    let service = "conf.unreadable";
    let registry = backend.registry().await;
    let discovery = backend.discovery().await;
    let a = info(service, 7001, 30, &[("idc", "hz")]);
    register(name, &*registry, &a).await;
    backend
        .put_raw(service, "127.0.0.1:7901", b"\xff\xfe not json at all")
        .await;
    backend
        .put_raw(
            service,
            "127.0.0.1:7902",
            br#"{"network":"tcp","address":"127.0.0.1:7902","weight":"#,
        )
        .await;

    assert_eq!(
        resolve(name, &*discovery, service).await,
        expected(&[&a]),
        "[{name}] resolve beside unreadable data"
    );
    let mut watch = watch(name, &*discovery, service).await;
    let snapshot = next_change(name, &mut watch, "the snapshot").await;
    assert_eq!(
        seen(&snapshot.all),
        expected(&[&a]),
        "[{name}] watch snapshot beside unreadable data"
    );

    // More unreadable data while watching, then a valid instance: only the valid one shows.
    backend
        .put_raw(service, "127.0.0.1:7903", b"{\"Weight\": \"heavy\"")
        .await;
    let b = info(service, 7002, 10, &[]);
    register(name, &*registry, &b).await;
    let added = next_change(name, &mut watch, "b added").await;
    assert_eq!(
        (seen(&added.added), seen(&added.all)),
        (expected(&[&b]), expected(&[&a, &b])),
        "[{name}] the change after unreadable data and b: {added:?}"
    );
    assert_eq!(
        resolve(name, &*discovery, service).await,
        expected(&[&a, &b]),
        "[{name}] resolve at the end"
    );
}

/// Register, stop the server past the lease TTL / session timeout, restart it with its data:
/// the instance is back within [`RECOVERY`] of the server answering, and a watch opened before
/// the outage sees it and keeps working. Not run on memory.
pub async fn outage_and_recovery(backend: &mut Harness) {
    let name = backend.name();
    let service = "conf.outage";
    let registry = backend.registry().await;
    let discovery = backend.discovery().await;
    let a = info(service, 7001, 30, &[("idc", "hz")]);
    register(name, &*registry, &a).await;
    let mut watch = watch(name, &*discovery, service).await;
    let snapshot = next_change(name, &mut watch, "the snapshot").await;
    let mut latest = seen(&snapshot.all);
    assert_eq!(
        latest,
        expected(&[&a]),
        "[{name}] snapshot before the outage"
    );

    backend.outage().await;
    tokio::time::sleep(EXPIRY + Duration::from_secs(2)).await; // hold the outage past the TTL
    backend.recover().await;
    let answered = Instant::now();

    let want = expected(&[&a]);
    lists(
        name,
        &*discovery,
        service,
        &want,
        RECOVERY,
        "a resolvable again after the outage",
    )
    .await;
    let back = answered.elapsed();
    watch_until(name, &mut watch, &mut latest, &want, RECOVERY).await;

    // The watch still follows changes after the outage. The registry may still be rebuilding
    // its connection; an `Unavailable` register is retried, as the harness would.
    let b = info(service, 7002, 10, &[]);
    let started = Instant::now();
    let failures = std::sync::Mutex::new(Vec::new());
    eventually(
        RECOVERY,
        &format!("[{name}] registering b after the outage"),
        || {
            let (registry, b, failures) = (&registry, &b, &failures);
            async move {
                let result = registry.register(b).await.map_err(|err| err.to_string());
                if let Err(err) = &result {
                    failures.lock().unwrap().push(err.clone());
                }
                result
            }
        },
    )
    .await;
    let failures = failures.into_inner().unwrap();
    if !failures.is_empty() {
        println!(
            "[{name}] register after the outage failed {} time(s) over {:?} before succeeding; \
             first error: {}",
            failures.len(),
            started.elapsed(),
            failures[0]
        );
    }
    let both = expected(&[&a, &b]);
    watch_until(name, &mut watch, &mut latest, &both, CHANGE).await;
    println!("[{name}] instance back {back:?} after the server answered again");

    // And they stay, past the point where the old lease / session would expire.
    let fresh = backend.discovery().await;
    stays(
        name,
        [&*discovery, &*fresh],
        service,
        &both,
        &[],
        answered,
        answered + EXPIRY + Duration::from_secs(2),
        true,
    )
    .await;
    watch_until(name, &mut watch, &mut latest, &both, CHANGE).await;
}

/// A deregistration made while the server is down stays gone once it is back (the instance
/// registered beside it stays): `a`, whose lease / session expires during the outage, and, where
/// the backend has leases or sessions to configure (etcd, ZooKeeper), `c` of a registry whose
/// 30 s lease / session outlives the outage, deregistered once that registry has noticed it:
/// the server still holds `c` on a live lease / session, so the backend itself must delete it.
/// Not run on memory.
pub async fn deregistration_during_outage_stays_gone(backend: &mut Harness) {
    let name = backend.name();
    let service = "conf.outage-deregister";
    let registry = backend.registry().await;
    let lasting = backend.registry_with_expiry(LASTING).await;
    let discovery = backend.discovery().await;
    let a = info(service, 7001, 10, &[]);
    let b = info(service, 7002, 10, &[]);
    let c = info(service, 7003, 10, &[]);
    register(name, &*registry, &a).await;
    register(name, &*registry, &b).await;
    let mut before = vec![&a, &b];
    if let Some(lasting) = &lasting {
        register(name, &**lasting, &c).await;
        before.push(&c);
    }
    assert_eq!(resolve(name, &*discovery, service).await, expected(&before));

    backend.outage().await;
    let held = Instant::now() + EXPIRY + Duration::from_secs(2); // past the TTL
    let deregistration = tokio::spawn({
        let (registry, a) = (registry.clone(), a.clone());
        async move {
            let started = Instant::now();
            let result = registry.deregister(&a).await;
            (result.map_err(|err| err.to_string()), started.elapsed())
        }
    });
    if let Some(lasting) = &lasting {
        let mut health = lasting
            .health()
            .unwrap_or_else(|| panic!("[{name}] reports no health"));
        let what = format!("[{name}] the {LASTING:?} registry did not notice the outage");
        health_until(&mut health, Duration::from_secs(10), &what, |h| {
            matches!(h, Health::Recovering { .. })
        })
        .await;
        // Accepted while the server is down, as `a`'s is.
        tokio::time::timeout(Duration::from_secs(5), lasting.deregister(&c))
            .await
            .unwrap_or_else(|_| panic!("[{name}] deregistering c waited for the server"))
            .unwrap_or_else(|err| panic!("[{name}] deregister c during the outage: {err}"));
    }
    tokio::time::sleep_until(held.into()).await; // hold the outage past the TTL
    backend.recover().await;
    let answered = Instant::now();

    // Nobody is held up by an outage: the deregistration is accepted while the server is down
    // (the backend removes the instance once the server is back, or it goes with the lease /
    // session), and the backend must not bring the instance back.
    match tokio::time::timeout(Duration::from_secs(10), deregistration).await {
        Ok(Ok((result, took))) => {
            println!("[{name}] deregister during the outage returned {result:?} after {took:?}");
            assert_eq!(
                result,
                Ok(()),
                "[{name}] deregister during the outage failed after {took:?}"
            );
            assert!(
                took < EXPIRY + Duration::from_secs(2),
                "[{name}] deregister during the outage waited {took:?}, until the server was back"
            );
        }
        Ok(Err(err)) => panic!("[{name}] the deregister task failed: {err}"),
        Err(_) => {
            panic!("[{name}] deregister did not return within 10 s of the server coming back")
        }
    }

    let want = expected(&[&b]);
    lists(
        name,
        &*discovery,
        service,
        &want,
        RECOVERY,
        "only b registered after the outage",
    )
    .await;
    println!(
        "[{name}] settled {:?} after the server answered",
        answered.elapsed()
    );
    // Stays gone past the point where the old lease / session would expire. (Whether b, never
    // deregistered, stays visible throughout is `outage_and_recovery`'s business: here a gap
    // is only printed, and b must be there at the end.)
    let fresh = backend.discovery().await;
    stays(
        name,
        [&*discovery, &*fresh],
        service,
        &want,
        &[a.addr, c.addr],
        answered,
        answered + EXPIRY + Duration::from_secs(2),
        false,
    )
    .await;
    lists(
        name,
        &*fresh,
        service,
        &want,
        RECOVERY,
        "only b registered at the end",
    )
    .await;
}

/// Issue 18, defect 2: a registrar moves its service to another address (`ControlHandle::update`
/// with a new address) while the registry refuses the next register once. Afterwards only the
/// new address is listed, and after shutdown neither: every address this process registered is
/// deregistered. Runs on every backend (the refusal is the registrar's to handle).
pub async fn registrar_address_change_leaves_no_old_address(backend: &mut Harness) {
    let name = backend.name();
    let service = "linked.alpha";
    let registry = RefusesNext::new(backend.registry().await);
    let discovery = backend.discovery().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = listener.local_addr().unwrap();
    let b = SocketAddr::from(([127, 0, 0, 1], if a.port() == 7401 { 7402 } else { 7401 }));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let registrar = Registrar::builder()
        .shared_registry(Arc::new(registry.clone()))
        .listen_addr(a)
        .only([service])
        .backoff(Backoff::new(
            Duration::from_millis(50),
            Duration::from_millis(500),
        ))
        .drain_delay(Duration::ZERO)
        .shutdown_signal(async {
            let _ = stopped.await;
        })
        .build()
        .unwrap();
    let status = registrar.status();
    let control = registrar.control();
    let at = |addr: SocketAddr| {
        let mut info = registrar.infos()[0].clone();
        info.addr = addr;
        expected(&[&info])
    };
    let (at_a, at_b) = (at(a), at(b));
    let server = tokio::spawn(registrar.serve(|shutdown| async move {
        let _listener = listener;
        shutdown.await;
        Ok::<_, std::io::Error>(())
    }));
    tokio::time::timeout(
        CHANGE,
        status.wait_for(|s| s[service] == ServiceStatus::Registered),
    )
    .await
    .unwrap_or_else(|_| panic!("[{name}] not registered: {:?}", status.snapshot()));
    lists(
        name,
        &*discovery,
        service,
        &at_a,
        CHANGE,
        "the first address listed",
    )
    .await;

    registry.arm();
    control
        .update(service, InfoOverride::new().addr(b))
        .unwrap();
    lists(
        name,
        &*discovery,
        service,
        &at_b,
        CHANGE,
        "only the new address listed after the refused register",
    )
    .await;
    assert_eq!(
        registry.refused(),
        1,
        "[{name}] the register of the new address was refused once"
    );
    // A watch can list the new address before the registrar has taken the retried register's
    // answer and reported it: wait for the status, with a deadline.
    tokio::time::timeout(
        CHANGE,
        status.wait_for(|s| s[service] == ServiceStatus::Registered),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "[{name}] not registered again after the refused register: {:?}",
            status.snapshot()
        )
    });

    stop.send(()).unwrap();
    tokio::time::timeout(CHANGE * 2, server)
        .await
        .unwrap_or_else(|_| panic!("[{name}] serve did not return"))
        .unwrap()
        .unwrap();
    lists(
        name,
        &*discovery,
        service,
        &[],
        CHANGE,
        "nothing listed after shutdown",
    )
    .await;
}

/// Issue 18, defect 7: an update the server refuses on its own merits (a tag that makes the value
/// larger than the server takes: etcd's `--max-request-bytes`, 1.5 MiB by default; ZooKeeper's
/// `jute.maxbuffer`, 1 MiB; gRPC's 4 MiB message limit on Nacos) fails with the server's error,
/// and the last accepted value stays registered: served now, and written again after an outage
/// past the lease TTL / session timeout. Not run on memory, which takes any size.
pub async fn refused_update_keeps_the_last_accepted_value(backend: &mut Harness) {
    let name = backend.name();
    let service = "conf.refused-update";
    let registry = backend.registry().await;
    let discovery = backend.discovery().await;
    let a = info(service, 7001, 10, &[("v", "1")]);
    register(name, &*registry, &a).await;
    let want = expected(&[&a]);
    lists(name, &*discovery, service, &want, CHANGE, "a listed").await;

    let mut big = a.clone();
    let oversized = backend.oversized_value();
    big.tags.insert("big".into(), "x".repeat(oversized));
    let started = Instant::now();
    let refused = tokio::time::timeout(Duration::from_secs(15), registry.register(&big))
        .await
        .unwrap_or_else(|_| panic!("[{name}] the oversized update did not return within 15 s"));
    println!(
        "[{name}] the oversized update returned after {:?}: {refused:?}",
        started.elapsed()
    );
    assert!(
        refused.is_err(),
        "[{name}] a value of {oversized} bytes was accepted"
    );
    lists(
        name,
        &*discovery,
        service,
        &want,
        CHANGE,
        "a still listed with its old value after the refused update",
    )
    .await;

    backend.outage().await;
    tokio::time::sleep(EXPIRY + Duration::from_secs(2)).await; // hold the outage past the TTL
    backend.recover().await;
    let answered = Instant::now();
    lists(
        name,
        &*discovery,
        service,
        &want,
        RECOVERY,
        "a back with its old value after the outage",
    )
    .await;
    println!(
        "[{name}] a back {:?} after the server answered",
        answered.elapsed()
    );
    // And a later update the server takes still applies.
    let v2 = if backend.updates_tags() { "2" } else { "1" };
    let a2 = info(service, 7001, 20, &[("v", v2)]);
    // The registry may still be rebuilding its connection (a ZooKeeper session reconnecting):
    // an `Unavailable` register is retried, as the harness would.
    eventually(
        RECOVERY,
        &format!("[{name}] the next update after the outage"),
        || {
            let (registry, a2) = (&registry, &a2);
            async move { registry.register(a2).await.map_err(|err| err.to_string()) }
        },
    )
    .await;
    lists(
        name,
        &*discovery,
        service,
        &expected(&[&a2]),
        CHANGE,
        "the next accepted update",
    )
    .await;
}

//! Scenarios of a registrar's life on each backend: registered, resolved, watched and gone at a
//! graceful stop; gone after a SIGKILL; refused for a wrong password; started while the server
//! is down; stopped while the server is down.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use service_registry::{Backoff, Health, ServiceStatus};
use tokio::net::TcpListener;

use super::observe::{
    addrs, deregister, expected, health_until, info, lists, register, resolve, seen,
};
use super::{next_change, watch, Harness, CHANGE};
use crate::child::spawn_example;
use crate::running::Running;
use crate::{echo, poll};

/// `linked.alpha` (weight 7, tag `origin = library`), from the `linked_services` library.
const ALPHA: &str = "linked.alpha";
/// `linked.warm` (a 2 s warm-up), from the `linked_services` library.
const WARM: &str = "linked.warm";
/// What the registrar of these scenarios registers.
const SERVICES: [&str; 2] = [ALPHA, WARM];

/// How long a registrar may take to register once the server answers.
const REGISTERED: Duration = Duration::from_secs(10);

/// A registrar registers its services with their attribute data; a watch opened before sees
/// the instance added, resolve shows it exactly (address, weight, tags, warm-up, start time) and
/// it answers; a graceful stop removes every instance from the server at once (no waiting for a
/// lease, session or heartbeat) and the watch sees the removal. Runs on every backend.
pub async fn register_resolve_watch_and_graceful_stop(backend: &mut Harness) {
    let name = backend.name();
    let discovery = backend.discovery().await;
    let mut watch = watch(name, &*discovery, ALPHA).await;
    let snapshot = tokio::time::timeout(CHANGE, watch.next())
        .await
        .unwrap_or_else(|_| panic!("[{name}] no snapshot within {CHANGE:?}"))
        .unwrap_or_else(|| panic!("[{name}] the watch ended"));
    assert!(
        snapshot.all.is_empty(),
        "[{name}] a service nobody registered: {snapshot:?}"
    );

    let registry = backend.registry().await;
    let running = Running::start(registry, &SERVICES).await;
    running.registered(REGISTERED).await;
    let addr = running.addr;

    // With a watch on the service live in this discovery, resolve answers from the watch: as
    // fresh as the watch, so read the watch's change first.
    let added = next_change(name, &mut watch, "the registrar's instance").await;
    assert_eq!(addrs(&added.added), vec![addr], "[{name}] added: {added:?}");
    let found = discovery.resolve(ALPHA).await.expect("resolve");
    let tags = [("origin".to_string(), "library".to_string())].into();
    assert_eq!(
        seen(&found),
        vec![(addr, 7, tags)],
        "[{name}] the attribute's weight and tags, and no extra tag"
    );
    assert!(found[0].start_time.is_some(), "[{name}] a start time");
    let warm = discovery.resolve(WARM).await.expect("resolve");
    assert_eq!(warm.len(), 1, "[{name}] {warm:?}");
    if backend.stores_warmup() {
        assert_eq!(warm[0].warmup, Duration::from_secs(2), "[{name}] warm-up");
    }
    assert!(warm[0].start_time.is_some(), "[{name}] a start time");
    let message = format!("via {name}");
    assert_eq!(
        echo::call(added.added[0].addr, &message)
            .await
            .expect("echo"),
        message,
        "[{name}] the resolved address answers"
    );

    let stopping = Instant::now();
    running.stop().await;
    // Graceful stop deletes at once: no waiting for the lease, the session or a heartbeat.
    for service in SERVICES {
        let left = backend.stored(service).await;
        assert!(
            left.is_empty(),
            "[{name}] {service} left after graceful stop: {left:?}"
        );
    }
    let removed = next_change(name, &mut watch, "the removal").await;
    assert_eq!(
        addrs(&removed.removed),
        vec![addr],
        "[{name}] removed: {removed:?}"
    );
    assert!(removed.all.is_empty(), "[{name}] {removed:?}");
    println!(
        "[{name}] graceful stop to removal seen by a watch: {:?}",
        stopping.elapsed()
    );
}

/// The backend's example process, SIGKILLed, leaves nothing behind within
/// [`Example::gone_within`](super::Example::gone_within): the lease TTL or session timeout plus
/// a second (Nacos: its connection closes). Not run on memory.
pub async fn sigkilled_process_disappears(backend: &mut Harness) {
    let name = backend.name();
    let example = backend
        .example()
        .unwrap_or_else(|| panic!("[{name}] has no example process to kill"));
    let (mut child, registered) = spawn_example(example.binary, &example.env).await;
    for (service, addr) in &registered {
        assert_eq!(
            backend.stored(service).await,
            vec![*addr],
            "[{name}] {service} registered by the example"
        );
    }

    child.start_kill().expect("SIGKILL the example");
    let killed = Instant::now();
    child.wait().await.expect("the killed example is reaped");
    let limit = example.gone_within;
    let gone = poll::within(limit, Duration::from_millis(100), || async {
        for (service, _) in &registered {
            if !backend.stored(service).await.is_empty() {
                return None;
            }
        }
        Some(killed.elapsed())
    })
    .await
    .unwrap_or_else(|| panic!("[{name}] the killed process's registrations outlived {limit:?}"));
    println!("[{name}] SIGKILLed registrations gone after {gone:?} (limit {limit:?})");
    assert!(
        gone <= limit,
        "[{name}] gone after {gone:?}, later than {limit:?}"
    );
}

/// A registrar whose registry has the wrong password keeps serving and reports a clear error
/// naming the user (and the server, where the backend checks passwords); a direct call fails the
/// same way and takes nothing over; the right password registers. The right user holds the
/// address first: on ZooKeeper, whose digest scheme never checks a password, a wrong one is
/// another identity, refused only on a node that is not its own. Runs on the backends' auth
/// configurations.
pub async fn wrong_password_is_a_clear_error_and_the_service_keeps_serving(backend: &mut Harness) {
    let name = backend.name();
    let user = backend
        .user()
        .unwrap_or_else(|| panic!("[{name}] was started without credentials"));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("local address").port();
    let owner = backend.registry().await;
    let discovery = backend.discovery().await;
    let held = info(ALPHA, port, 10, &[("holder", user)]);
    register(name, &*owner, &held).await;
    let holding = expected(&[&held]);
    lists(
        name,
        &*discovery,
        ALPHA,
        &holding,
        CHANGE,
        "the owner's instance",
    )
    .await;

    let bad = backend.registry_with_password("wrong-password").await;
    let running =
        Running::start_on(listener, |b| b.shared_registry(bad.clone()).only([ALPHA])).await;
    let status = running.retrying(REGISTERED).await;
    let ServiceStatus::Retrying { last_error, .. } = &status[ALPHA] else {
        unreachable!("retrying")
    };
    println!("[{name}] the registrar with a wrong password: {last_error}");
    backend.check_wrong_password(last_error, None);
    assert_eq!(
        echo::call(running.addr, "still").await.expect("echo"),
        "still",
        "[{name}] the service keeps serving"
    );

    let taking_over = info(ALPHA, port, 20, &[]);
    let direct = bad
        .register(&taking_over)
        .await
        .expect_err("a wrong password registers nothing");
    backend.check_wrong_password(&direct.to_string(), Some(&direct));
    assert_eq!(
        resolve(name, &*discovery, ALPHA).await,
        holding,
        "[{name}] the owner's instance is untouched"
    );
    running.stop().await;
    deregister(name, &*owner, &held).await;
    lists(
        name,
        &*discovery,
        ALPHA,
        &[],
        CHANGE,
        "nothing once the owner left",
    )
    .await;

    // The owner's registry (the right password) registers the registrar's instance.
    let running = Running::start(owner, &[ALPHA]).await;
    running.registered(REGISTERED).await;
    let found = resolve(name, &*discovery, ALPHA).await;
    assert_eq!(
        found.iter().map(|s| s.0).collect::<Vec<SocketAddr>>(),
        vec![running.addr],
        "[{name}] registered with the right password"
    );
    running.stop().await;
}

/// A registrar started while the server is down keeps serving and retries; once the server
/// answers it is registered within [`Backend::registers_after_outage_within`](super::Backend),
/// not at its next backoff. The registrar's backoff starts at 20 s (its first wait is 10-20 s),
/// so waiting it out cannot pass, and no outage has to be held for the backoff to grow. Not run
/// on memory.
pub async fn a_service_started_during_an_outage_registers_soon_after_the_server_answers(
    backend: &mut Harness,
) {
    let name = backend.name();
    backend.outage().await;
    let registry = backend.registry().await;
    let running = Running::start_with(|b| {
        b.shared_registry(registry)
            .only(SERVICES)
            .backoff(Backoff::new(
                Duration::from_secs(20),
                Duration::from_secs(60),
            ))
    })
    .await;
    let status = running.retrying(REGISTERED).await;
    let ServiceStatus::Retrying { last_error, .. } = &status[ALPHA] else {
        unreachable!("retrying")
    };
    println!("[{name}] registering during the outage: {last_error}");
    let says = backend.unreachable_says();
    assert!(last_error.contains(says), "[{name}] {last_error}");
    assert_eq!(
        echo::call(running.addr, "serving").await.expect("echo"),
        "serving",
        "[{name}] the service serves during the outage"
    );
    backend.recover().await;
    let answering = Instant::now();
    running.registered(REGISTERED).await;
    let took = answering.elapsed();
    let limit = backend.registers_after_outage_within();
    println!("[{name}] registered {took:?} after the server answered (limit {limit:?})");
    assert!(took <= limit, "[{name}] registered only after {took:?}");
    for service in SERVICES {
        assert_eq!(
            backend.stored(service).await,
            vec![running.addr],
            "[{name}] {service} on the server"
        );
    }
    running.stop().await;
}

/// Shutting down while the server is down is bounded: deregistration is accepted at once (the
/// instance goes once the server is back, or with the lease / session) and close returns at once.
/// Not run on memory.
pub async fn shutdown_while_the_server_is_down_is_quick(backend: &mut Harness) {
    let name = backend.name();
    let registry = backend.registry().await;
    let running = Running::start(registry.clone(), &SERVICES).await;
    running.registered(REGISTERED).await;
    backend.outage().await;
    let mut health = registry
        .health()
        .unwrap_or_else(|| panic!("[{name}] reports no health"));
    let what = format!("[{name}] the outage is not noticed");
    health_until(&mut health, Duration::from_secs(10), &what, |h| {
        *h != Health::Healthy
    })
    .await;
    let started = Instant::now();
    running.stop().await;
    registry.close().await;
    let took = started.elapsed();
    println!("[{name}] shutdown with the server down took {took:?}");
    assert!(
        took < Duration::from_millis(1500),
        "[{name}] shutdown took {took:?}"
    );
}

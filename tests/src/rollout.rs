//! Rollout behaviour of the registrar (issue 11), written once against
//! [`Harness`](crate::conformance::Harness) and run on memory, etcd and ZooKeeper by
//! `tests/tests/rollout.rs`: the readiness gate, the health check (custom and HTTP), taking a
//! service out of rotation, live weight and tag changes, and several registries at once.
//!
//! Each scenario registers `linked.alpha` (from the `linked-services` crate, which the test
//! binary must link) from a [`Running`] registrar on a loopback echo server, and waits on
//! conditions with deadlines.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use service_registry::{Discovery, HealthCheck, MemoryRegistry, ServiceStatus, WatchStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::conformance::{eventually, next_change, observe, watch, Harness, Seen};
use crate::echo;
use crate::running::Running;

/// The service every scenario registers.
pub const SERVICE: &str = "linked.alpha";
/// How long a registration change may take to show.
const SHOWS: Duration = Duration::from_secs(5);

async fn status_becomes(running: &Running, what: &str, want: impl Fn(&ServiceStatus) -> bool) {
    eventually(SHOWS, what, || async {
        match running.status.get(SERVICE) {
            Some(status) if want(&status) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

async fn resolves_to(backend: &str, discovery: &dyn Discovery, want: usize) {
    eventually(
        SHOWS,
        &format!("[{backend}] {want} instance(s) of {SERVICE}"),
        || async {
            let found = observe(discovery, SERVICE).await?;
            if found.len() == want {
                Ok(())
            } else {
                Err(format!("{found:?}"))
            }
        },
    )
    .await
}

/// A watch on [`SERVICE`] read until it lists the instance.
async fn watch_registered(name: &str, discovery: &dyn Discovery) -> WatchStream {
    let mut stream = watch(name, discovery, SERVICE).await;
    let mut change = next_change(name, &mut stream, "the snapshot").await;
    while change.all.is_empty() {
        change = next_change(name, &mut stream, "the instance").await;
    }
    stream
}

/// Nothing is registered before the readiness gate passes; the server answers meanwhile; once
/// it passes the service is registered.
pub async fn readiness_gates_registration(backend: &mut Harness) {
    let name = backend.name();
    let registry = backend.registry().await;
    let discovery = backend.discovery().await;
    let (open, opened) = tokio::sync::oneshot::channel::<()>();
    let running = Running::start_with(|b| {
        b.shared_registry(registry)
            .only([SERVICE])
            .ready_when(async {
                let _ = opened.await;
            })
    })
    .await;
    assert_eq!(
        running.status.get(SERVICE),
        Some(ServiceStatus::WaitingForReady)
    );
    // A readiness check polled every 20 ms has had many chances by now; the gate has not.
    let checks = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let polled = Running::start_with(|b| {
        let checks = checks.clone();
        b.registry(MemoryRegistry::new())
            .only([SERVICE])
            .ready_check(Duration::from_millis(20), move || {
                let checks = checks.clone();
                async move { checks.fetch_add(1, Ordering::SeqCst) >= 4 }
            })
    })
    .await;
    polled.registered(SHOWS).await;
    assert_eq!(checks.load(Ordering::SeqCst), 5, "checked until it passed");
    polled.stop().await;

    assert_eq!(echo::call(running.addr, "up").await.unwrap(), "up");
    assert!(
        observe(discovery.as_ref(), SERVICE)
            .await
            .unwrap()
            .is_empty(),
        "[{name}] registered before ready"
    );
    assert_eq!(
        running.status.get(SERVICE),
        Some(ServiceStatus::WaitingForReady)
    );
    open.send(()).unwrap();
    running.registered(SHOWS).await;
    resolves_to(name, discovery.as_ref(), 1).await;
    running.stop().await;
    resolves_to(name, discovery.as_ref(), 0).await;
}

/// A failing health check withdraws the service while the server keeps answering; passing
/// again registers it again.
pub async fn health_check_withdraws_and_restores(backend: &mut Harness) {
    let name = backend.name();
    let registry = backend.registry().await;
    let discovery = backend.discovery().await;
    let healthy = Arc::new(AtomicBool::new(true));
    let check = {
        let healthy = healthy.clone();
        HealthCheck::new(move || {
            let healthy = healthy.clone();
            async move {
                if healthy.load(Ordering::SeqCst) {
                    Ok(())
                } else {
                    Err("database unreachable")
                }
            }
        })
        .interval(Duration::from_millis(50))
        .failure_threshold(2)
        .success_threshold(2)
    };
    let running = Running::start_with(|b| {
        b.shared_registry(registry)
            .only([SERVICE])
            .health_check(check)
    })
    .await;
    running.registered(SHOWS).await;
    resolves_to(name, discovery.as_ref(), 1).await;

    healthy.store(false, Ordering::SeqCst);
    status_becomes(
        &running,
        "Unhealthy",
        |s| matches!(s, ServiceStatus::Unhealthy { reason } if reason == "database unreachable"),
    )
    .await;
    resolves_to(name, discovery.as_ref(), 0).await;
    assert_eq!(echo::call(running.addr, "still").await.unwrap(), "still");

    healthy.store(true, Ordering::SeqCst);
    running.registered(SHOWS).await;
    resolves_to(name, discovery.as_ref(), 1).await;
    running.stop().await;
}

/// `HealthCheck::http` probes the advertised address: a 503 withdraws, a 200 restores.
pub async fn http_health_check_follows_the_answer(backend: &mut Harness) {
    let name = backend.name();
    let registry = backend.registry().await;
    let discovery = backend.discovery().await;
    let healthy = Arc::new(AtomicBool::new(true));
    let server = {
        let healthy = healthy.clone();
        move |listener: TcpListener, shutdown: service_registry::ShutdownSignal| async move {
            tokio::pin!(shutdown);
            loop {
                tokio::select! {
                    () = &mut shutdown => return Ok::<_, std::io::Error>(()),
                    accepted = listener.accept() => {
                        let (mut socket, _) = accepted?;
                        let status = if healthy.load(Ordering::SeqCst) { "200 OK" } else { "503 Service Unavailable" };
                        tokio::spawn(async move {
                            let mut request = [0u8; 1024];
                            let _ = socket.read(&mut request).await;
                            let _ = socket
                                .write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes())
                                .await;
                        });
                    }
                }
            }
        }
    };
    let check = HealthCheck::http("/healthz")
        .interval(Duration::from_millis(50))
        .failure_threshold(1);
    let running = Running::serve_with(
        |b| {
            b.shared_registry(registry)
                .only([SERVICE])
                .health_check(check)
        },
        server,
    )
    .await;
    running.registered(SHOWS).await;
    healthy.store(false, Ordering::SeqCst);
    status_becomes(
        &running,
        "Unhealthy (503)",
        |s| matches!(s, ServiceStatus::Unhealthy { reason } if reason.contains("503")),
    )
    .await;
    resolves_to(name, discovery.as_ref(), 0).await;
    healthy.store(true, Ordering::SeqCst);
    running.registered(SHOWS).await;
    resolves_to(name, discovery.as_ref(), 1).await;
    running.stop().await;
}

/// Out of rotation: deregistered (watchers see the removal), status `OutOfService`, the server
/// still answers; back in rotation: registered again.
pub async fn take_out_and_put_back_while_serving(backend: &mut Harness) {
    let name = backend.name();
    let registry = backend.registry().await;
    let discovery = backend.discovery().await;
    let running = Running::start_with(|b| b.shared_registry(registry).only([SERVICE])).await;
    running.registered(SHOWS).await;
    let mut stream = watch_registered(name, discovery.as_ref()).await;

    running.control.take_out(SERVICE).unwrap();
    let change = next_change(name, &mut stream, "the removal").await;
    assert_eq!(change.removed.len(), 1, "[{name}] {change:?}");
    assert!(change.all.is_empty(), "[{name}] {change:?}");
    status_becomes(&running, "OutOfService", |s| {
        *s == ServiceStatus::OutOfService
    })
    .await;
    assert_eq!(
        echo::call(running.addr, "serving").await.unwrap(),
        "serving"
    );

    running.control.put_back(SERVICE).unwrap();
    let change = next_change(name, &mut stream, "the return").await;
    assert_eq!(change.added.len(), 1, "[{name}] {change:?}");
    running.registered(SHOWS).await;

    running.control.take_out_all();
    status_becomes(&running, "OutOfService (all)", |s| {
        *s == ServiceStatus::OutOfService
    })
    .await;
    resolves_to(name, discovery.as_ref(), 0).await;
    running.control.put_back_all();
    running.registered(SHOWS).await;
    resolves_to(name, discovery.as_ref(), 1).await;
    running.stop().await;
}

/// A new weight or tag re-registers the instance: watchers see one update (never a removal),
/// and resolve returns the new data.
pub async fn live_changes_are_updates(backend: &mut Harness) {
    live_changes(backend, true).await;
}

/// A new weight re-registers the instance: watchers see one update, never a removal. For
/// servers that keep an instance's first metadata across re-registrations: rnacos 0.8.8 does
/// (its "priority metadata", `naming/service.rs`, kept per ip:port), so a live tag change does
/// not reach its readers.
pub async fn live_weight_change_is_an_update(backend: &mut Harness) {
    live_changes(backend, false).await;
}

async fn live_changes(backend: &mut Harness, tags: bool) {
    let name = backend.name();
    let registry = backend.registry().await;
    let discovery = backend.discovery().await;
    let running = Running::start_with(|b| b.shared_registry(registry).only([SERVICE])).await;
    running.registered(SHOWS).await;
    let mut stream = watch_registered(name, discovery.as_ref()).await;

    running.control.set_weight(SERVICE, 55).unwrap();
    let change = next_change(name, &mut stream, "the new weight").await;
    assert!(
        change.added.is_empty() && change.removed.is_empty(),
        "[{name}] an update, not a remove + add: {change:?}"
    );
    assert_eq!(change.updated.len(), 1, "[{name}] {change:?}");
    assert_eq!(change.updated[0].weight, 55);
    if !tags {
        running.stop().await;
        return;
    }

    running.control.set_tag(SERVICE, "color", "green").unwrap();
    running.control.remove_tag(SERVICE, "origin").unwrap();
    let want_tags = BTreeMap::from([("color".to_string(), "green".to_string())]);
    let seen: Vec<Seen> = eventually(SHOWS, "the new tags", || async {
        let found = observe(discovery.as_ref(), SERVICE).await?;
        match found.as_slice() {
            [(_, 55, tags)] if *tags == want_tags => Ok(found),
            _ => Err(format!("{found:?}")),
        }
    })
    .await;
    assert_eq!(seen.len(), 1);
    assert!(running.control.set_weight(SERVICE, 0).is_err());
    assert!(running.control.take_out("no.such.service").is_err());
    running.stop().await;
}

/// One registrar, two registries: the backend under test and a memory registry. With the
/// backend's server down, the memory registration happens at once and the status names the
/// registry that is down; once it is back, the service is registered there too.
pub async fn one_registry_down_never_delays_another(backend: &mut Harness) {
    let name = backend.name();
    let registry = backend.registry().await;
    let discovery = backend.discovery().await;
    let memory = MemoryRegistry::new();
    backend.outage().await;
    let running = Running::start_with(|b| {
        b.named_registry("remote", registry)
            .named_registry("local", memory.clone())
            .only([SERVICE])
            .register_timeout(Duration::from_secs(1))
    })
    .await;
    eventually(
        SHOWS,
        "registered in memory while the other is down",
        || async {
            let per = running.status.per_registry(SERVICE).unwrap_or_default();
            match (per.get("local"), per.get("remote")) {
                (Some(ServiceStatus::Registered), Some(ServiceStatus::Retrying { .. })) => Ok(()),
                _ => Err(format!("{per:?}")),
            }
        },
    )
    .await;
    assert_eq!(memory.resolve(SERVICE).await.unwrap().len(), 1);
    let combined = running.status.get(SERVICE);
    assert!(
        matches!(&combined, Some(ServiceStatus::Retrying { last_error, .. }) if last_error.starts_with("remote: ")),
        "[{name}] {combined:?}"
    );
    backend.recover().await;
    running.registered(Duration::from_secs(10)).await;
    resolves_to(name, discovery.as_ref(), 1).await;
    running.stop().await;
    resolves_to(name, discovery.as_ref(), 0).await;
    assert!(memory.resolve(SERVICE).await.unwrap().is_empty());
}

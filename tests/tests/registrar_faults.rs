//! Registrar faults from the fault reviews: a registry that panics, a backend whose background
//! task dies, a health check or readiness gate that panics, a status that must not claim more
//! than the registry accepted, and a second SIGTERM while deregistration waits.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use service_registry::{
    service, Discovery, Health, HealthCheck, Info, MemoryRegistry, Registry, RegistryError,
    ServiceStatus,
};
use tests::running::Running;
use tokio::sync::watch;

#[service(name = "faults.panicky")]
pub struct Panicky;

#[service(name = "faults.dying")]
pub struct Dying;

/// Panics in its first `panics` register calls, then registers in memory.
struct PanickyRegistry {
    inner: MemoryRegistry,
    panics: u32,
    calls: AtomicU32,
}

#[async_trait]
impl Registry for PanickyRegistry {
    async fn register(&self, info: &Info) -> Result<(), RegistryError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.panics {
            panic!("injected panic in register");
        }
        self.inner.register(info).await
    }
    async fn deregister(&self, info: &Info) -> Result<(), RegistryError> {
        self.inner.deregister(info).await
    }
}

/// Defect 16: a panic in a custom registry is a failed attempt: shown, and retried.
#[tokio::test]
async fn a_panicking_registry_is_retried() {
    let memory = MemoryRegistry::new();
    let registry = PanickyRegistry {
        inner: memory.clone(),
        panics: 2,
        calls: AtomicU32::new(0),
    };
    let running = Running::start(registry, &["faults.panicky"]).await;
    running.registered(Duration::from_secs(5)).await;
    assert_eq!(
        service_registry::Discovery::resolve(&memory, "faults.panicky")
            .await
            .unwrap()
            .len(),
        1
    );
    running.stop().await;
}

/// A registry whose backend task can be made to die (its health sender dropped).
#[derive(Clone)]
struct DyingRegistry {
    inner: MemoryRegistry,
    health: watch::Receiver<Health>,
    sender: Arc<Mutex<Option<watch::Sender<Health>>>>,
}

#[async_trait]
impl Registry for DyingRegistry {
    async fn register(&self, info: &Info) -> Result<(), RegistryError> {
        self.inner.register(info).await
    }
    async fn deregister(&self, info: &Info) -> Result<(), RegistryError> {
        self.inner.deregister(info).await
    }
    fn health(&self) -> Option<watch::Receiver<Health>> {
        Some(self.health.clone())
    }
}

/// Defect 15: a backend task that dies is not silent: the status says so.
#[tokio::test]
async fn a_dead_backend_task_shows_in_the_status() {
    let (tx, rx) = watch::channel(Health::Healthy);
    let registry = DyingRegistry {
        inner: MemoryRegistry::new(),
        health: rx,
        sender: Arc::new(Mutex::new(Some(tx))),
    };
    let running = Running::start(registry.clone(), &["faults.dying"]).await;
    running.registered(Duration::from_secs(5)).await;
    // The backend's task ends: every sender of its health is gone.
    registry.sender.lock().unwrap().take();
    let status = tokio::time::timeout(
        Duration::from_secs(2),
        running
            .status
            .wait_for(|s| s.values().all(|s| *s != ServiceStatus::Registered)),
    )
    .await
    .expect("the status stops saying Registered once the backend task is gone")
    .unwrap();
    println!("status after the backend task died: {status:?}");
    running.stop().await;
}

#[service(name = "faults.checked")]
pub struct Checked;

#[service(name = "faults.gated")]
pub struct Gated;

#[service(name = "faults.updated")]
pub struct Updated;

#[service(name = "faults.signalled")]
pub struct Signalled;

/// Waits until the status of `service` satisfies `done`, or panics after `limit` with the last
/// status seen.
async fn status_until(
    running: &Running,
    service: &str,
    limit: Duration,
    what: &str,
    done: impl Fn(&ServiceStatus) -> bool,
) -> ServiceStatus {
    let wait = running
        .status
        .wait_for(|s| s.get(service).is_some_and(&done));
    match tokio::time::timeout(limit, wait).await {
        Ok(Some(status)) => status[service].clone(),
        _ => panic!(
            "timed out after {limit:?} waiting for {what}; status: {:?}",
            running.status.get(service)
        ),
    }
}

/// Issue 18, defect 12: a health check that panics counts as a failed check (its message shows
/// in the status), and checking goes on: the service comes back once the check passes again.
#[tokio::test]
async fn a_panicking_health_check_is_a_failed_check_and_checking_goes_on() {
    let memory = MemoryRegistry::new();
    let panicking = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let check = HealthCheck::new({
        let panicking = panicking.clone();
        move || {
            let panicking = panicking.load(Ordering::SeqCst);
            async move {
                if panicking {
                    panic!("the database pool is poisoned");
                }
                true
            }
        }
    })
    .interval(Duration::from_millis(20))
    .failure_threshold(1);
    let running = Running::start_with(|b| {
        b.registry(memory.clone())
            .only(["faults.checked"])
            .health_check(check)
    })
    .await;
    running.registered(Duration::from_secs(5)).await;

    panicking.store(true, Ordering::SeqCst);
    let status = status_until(
        &running,
        "faults.checked",
        Duration::from_secs(5),
        "Unhealthy after the check panicked",
        |s| matches!(s, ServiceStatus::Unhealthy { .. }),
    )
    .await;
    let ServiceStatus::Unhealthy { reason } = status else {
        unreachable!()
    };
    assert!(
        reason.contains("panicked") && reason.contains("the database pool is poisoned"),
        "{reason}"
    );
    assert!(memory.resolve("faults.checked").await.unwrap().is_empty());

    panicking.store(false, Ordering::SeqCst);
    running.registered(Duration::from_secs(5)).await;
    assert_eq!(memory.resolve("faults.checked").await.unwrap().len(), 1);
    running.stop().await;
}

/// Issue 18, defect 12: a readiness gate that panics cannot pass any more: the status says
/// `Failed` with the panic message, nothing is registered, and the registrar serves on and
/// shuts down as usual.
#[tokio::test]
async fn a_panicking_readiness_gate_shows_as_failed() {
    let memory = MemoryRegistry::new();
    let running = Running::start_with(|b| {
        b.registry(memory.clone())
            .only(["faults.gated"])
            .ready_when(async { panic!("the cache cannot warm up") })
    })
    .await;
    let status = status_until(
        &running,
        "faults.gated",
        Duration::from_secs(5),
        "Failed after the readiness gate panicked",
        |s| matches!(s, ServiceStatus::Failed { .. }),
    )
    .await;
    let ServiceStatus::Failed { error } = status else {
        unreachable!()
    };
    assert!(
        error.contains("readiness") && error.contains("the cache cannot warm up"),
        "{error}"
    );
    assert!(memory.resolve("faults.gated").await.unwrap().is_empty());
    assert_eq!(
        tests::echo::call(running.addr, "up").await.unwrap(),
        "up",
        "the server serves on"
    );
    tokio::time::timeout(Duration::from_secs(5), running.stop())
        .await
        .expect("serve returns");
}

/// Issue 18, defect 12: a `ready_check` that panics is "not ready yet" and is called again, as
/// when it returns `false`.
#[tokio::test]
async fn a_panicking_ready_check_is_called_again() {
    let memory = MemoryRegistry::new();
    let calls = Arc::new(AtomicU32::new(0));
    let running = Running::start_with(|b| {
        let calls = calls.clone();
        b.registry(memory.clone())
            .only(["faults.gated"])
            .ready_check(Duration::from_millis(10), move || {
                let call = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if call < 2 {
                        panic!("injected panic in the ready check");
                    }
                    true
                }
            })
    })
    .await;
    running.registered(Duration::from_secs(5)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(memory.resolve("faults.gated").await.unwrap().len(), 1);
    running.stop().await;
}

/// A memory registry with a health channel the test drives; its register calls fail while
/// `refusing`, and the second refused call waits for `release` first.
#[derive(Clone)]
struct Controlled {
    inner: MemoryRegistry,
    health: watch::Receiver<Health>,
    refusing: Arc<std::sync::atomic::AtomicBool>,
    refused: Arc<AtomicU32>,
    release: Arc<tokio::sync::Notify>,
}

#[async_trait]
impl Registry for Controlled {
    async fn register(&self, info: &Info) -> Result<(), RegistryError> {
        if self.refusing.load(Ordering::SeqCst) {
            if self.refused.fetch_add(1, Ordering::SeqCst) == 1 {
                self.release.notified().await;
            }
            return Err(RegistryError::Backend {
                backend: "controlled",
                source: service_registry::kit::shared("the update is refused"),
            });
        }
        self.inner.register(info).await
    }
    async fn deregister(&self, info: &Info) -> Result<(), RegistryError> {
        self.inner.deregister(info).await
    }
    fn health(&self) -> Option<watch::Receiver<Health>> {
        Some(self.health.clone())
    }
}

/// Issue 18, defect 12: while an update (a new weight) is being retried, a backend that reports
/// a blip and then `Healthy` does not turn the status into `Registered`: the update has not
/// been accepted.
#[tokio::test]
async fn status_says_retrying_while_an_update_is_retried_across_a_health_change() {
    let (health, rx) = watch::channel(Health::Healthy);
    let registry = Controlled {
        inner: MemoryRegistry::new(),
        health: rx,
        refusing: Arc::default(),
        refused: Arc::default(),
        release: Arc::default(),
    };
    let running = Running::start_with(|b| {
        b.registry(registry.clone())
            .only(["faults.updated"])
            .backoff(service_registry::Backoff::new(
                Duration::from_secs(30),
                Duration::from_secs(30),
            ))
    })
    .await;
    running.registered(Duration::from_secs(5)).await;

    registry.refusing.store(true, Ordering::SeqCst);
    running.control.set_weight("faults.updated", 50).unwrap();
    status_until(
        &running,
        "faults.updated",
        Duration::from_secs(5),
        "Retrying after the refused update",
        |s| matches!(s, ServiceStatus::Retrying { last_error, .. } if last_error.contains("refused")),
    )
    .await;

    let blip = Health::Recovering {
        attempt: 1,
        last_error: "a blip".into(),
    };
    health.send(blip).unwrap();
    status_until(
        &running,
        "faults.updated",
        Duration::from_secs(5),
        "the blip shown",
        |s| matches!(s, ServiceStatus::Retrying { last_error, .. } if last_error.contains("blip")),
    )
    .await;
    // Healthy again: the retry starts at once and waits for `release`, so the status is the
    // one the health change left.
    health.send(Health::Healthy).unwrap();
    let after = status_until(
        &running,
        "faults.updated",
        Duration::from_secs(5),
        "the health change applied",
        |s| !matches!(s, ServiceStatus::Retrying { last_error, .. } if last_error.contains("blip")),
    )
    .await;
    assert!(
        matches!(&after, ServiceStatus::Retrying { last_error, .. } if last_error.contains("refused")),
        "the update is still refused, yet the status says {after:?}"
    );
    assert_eq!(
        registry.inner.resolve("faults.updated").await.unwrap()[0].weight,
        10,
        "the old registration stays"
    );

    registry.refusing.store(false, Ordering::SeqCst);
    registry.release.notify_one();
    running.stop().await;
}

/// A memory registry whose deregister calls never return.
#[derive(Clone, Default)]
struct HangsOnDeregister {
    inner: MemoryRegistry,
    deregisters: Arc<AtomicU32>,
}

#[async_trait]
impl Registry for HangsOnDeregister {
    async fn register(&self, info: &Info) -> Result<(), RegistryError> {
        self.inner.register(info).await
    }
    async fn deregister(&self, _: &Info) -> Result<(), RegistryError> {
        self.deregisters.fetch_add(1, Ordering::SeqCst);
        std::future::pending().await
    }
}

fn signal_self(signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(std::process::id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// Issue 18, defect 12: a second SIGTERM while the deregistration still waits on a registry
/// that does not answer cuts the rest of that wait short (as it does during the drain), and the
/// server stops. The only test here that listens to the process's own signals.
#[tokio::test]
async fn a_second_sigterm_during_deregistration_cuts_it_short() {
    // Registered first, so that no SIGTERM below can end the test process whatever the timing.
    let mut sigterm =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
    let registry = HangsOnDeregister::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let registrar = service_registry::Registrar::builder()
        .registry(registry.clone())
        .listen_addr(listener.local_addr().unwrap())
        .only(["faults.signalled"])
        .deregister_timeout(Duration::from_secs(30))
        .drain_delay(Duration::from_secs(30))
        .build()
        .unwrap();
    let status = registrar.status();
    let serve = tokio::spawn(registrar.serve(|shutdown| tests::echo::serve(listener, shutdown)));
    tokio::time::timeout(
        Duration::from_secs(5),
        status.wait_for(|s| s["faults.signalled"] == ServiceStatus::Registered),
    )
    .await
    .expect("registered");

    signal_self("TERM");
    sigterm.recv().await;
    tests::poll::until(
        Duration::from_secs(5),
        "the deregistration to start",
        || async { (registry.deregisters.load(Ordering::SeqCst) > 0).then_some(()) },
    )
    .await;
    let second = std::time::Instant::now();
    signal_self("TERM");
    let result = tokio::time::timeout(Duration::from_secs(5), serve)
        .await
        .unwrap_or_else(|_| {
            panic!("serve still waits for the deregistration 5 s after the second SIGTERM")
        });
    result.unwrap().unwrap();
    println!(
        "serve returned {:?} after the second SIGTERM",
        second.elapsed()
    );
}

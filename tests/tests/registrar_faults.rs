//! Registrar faults from the fault review: a registry that panics, and a backend whose
//! background task dies.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use service_registry::{
    service, Health, Info, MemoryRegistry, Registry, RegistryError, ServiceStatus,
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

//! Test implementations of `Registry` that wrap a real `MemoryRegistry`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use service_registry::kit::shared;
use service_registry::{Info, MemoryRegistry, Registry, RegistryError};

/// What a [`Recording`] registry saw, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// `register` for a service; `server_answered` says whether its address echoed at that moment.
    Register {
        service: String,
        server_answered: bool,
    },
    /// `deregister` for a service, with the same probe.
    Deregister {
        service: String,
        server_answered: bool,
    },
}

/// Records every call and probes the server at `info.addr` (loopback) during each call.
#[derive(Clone, Default)]
pub struct Recording {
    pub inner: MemoryRegistry,
    pub events: Arc<Mutex<Vec<Event>>>,
}

impl Recording {
    /// A copy of the events so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }
}

async fn answers(info: &Info) -> bool {
    crate::echo::call(info.addr, "probe")
        .await
        .map(|r| r == "probe")
        .unwrap_or(false)
}

#[async_trait]
impl Registry for Recording {
    async fn register(&self, info: &Info) -> Result<(), RegistryError> {
        let server_answered = answers(info).await;
        self.events.lock().unwrap().push(Event::Register {
            service: info.service_name.clone(),
            server_answered,
        });
        self.inner.register(info).await
    }
    async fn deregister(&self, info: &Info) -> Result<(), RegistryError> {
        let server_answered = answers(info).await;
        self.events.lock().unwrap().push(Event::Deregister {
            service: info.service_name.clone(),
            server_answered,
        });
        self.inner.deregister(info).await
    }
}

/// Fails the first `failures` register calls, then behaves like its `MemoryRegistry`.
#[derive(Clone)]
pub struct Flaky {
    pub inner: MemoryRegistry,
    failures: u32,
    calls: Arc<AtomicU32>,
}

impl Flaky {
    /// A registry whose first `failures` register calls fail.
    pub fn new(failures: u32) -> Self {
        Self {
            inner: MemoryRegistry::new(),
            failures,
            calls: Arc::default(),
        }
    }

    /// How many register calls were made.
    pub fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Registry for Flaky {
    async fn register(&self, info: &Info) -> Result<(), RegistryError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if call < self.failures {
            return Err(RegistryError::Backend {
                backend: "flaky",
                source: shared(format!(
                    "injected failure {} of {}",
                    call + 1,
                    self.failures
                )),
            });
        }
        self.inner.register(info).await
    }
    async fn deregister(&self, info: &Info) -> Result<(), RegistryError> {
        self.inner.deregister(info).await
    }
}

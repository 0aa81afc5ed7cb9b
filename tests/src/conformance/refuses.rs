//! A registry wrapper that refuses one register call on command.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use service_registry::kit::shared;
use service_registry::{Health, Info, Registry, RegistryError};

/// A registry (the backend's own) that refuses the next register call once it is told to, as a
/// registry that is briefly overloaded would.
#[derive(Clone)]
pub struct RefusesNext {
    inner: Arc<dyn Registry>,
    armed: Arc<AtomicBool>,
    refused: Arc<AtomicU32>,
}

impl RefusesNext {
    /// Wraps `inner`; nothing is refused until [`RefusesNext::arm`].
    pub fn new(inner: Arc<dyn Registry>) -> Self {
        Self {
            inner,
            armed: Arc::default(),
            refused: Arc::default(),
        }
    }

    /// The next register call fails.
    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// How many register calls were refused.
    pub fn refused(&self) -> u32 {
        self.refused.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Registry for RefusesNext {
    async fn register(&self, info: &Info) -> Result<(), RegistryError> {
        if self.armed.swap(false, Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(RegistryError::Backend {
                backend: "test",
                source: shared("refused once by the test"),
            });
        }
        self.inner.register(info).await
    }
    async fn deregister(&self, info: &Info) -> Result<(), RegistryError> {
        self.inner.deregister(info).await
    }
    fn health(&self) -> Option<tokio::sync::watch::Receiver<Health>> {
        self.inner.health()
    }
    fn name(&self) -> String {
        self.inner.name()
    }
}

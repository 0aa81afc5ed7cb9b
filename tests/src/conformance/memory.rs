//! The in-process registry as a [`Backend`]: registry and discovery share one
//! [`MemoryRegistry`].

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use service_registry::{Discovery, MemoryRegistry, Registry};

use super::{Backend, Harness};

/// The in-process registry; registry and discovery share one [`MemoryRegistry`].
#[derive(Default)]
pub struct MemoryBackend {
    registry: MemoryRegistry,
}

impl Harness {
    /// A harness around an empty [`MemoryRegistry`].
    pub fn memory() -> Self {
        Self::new(MemoryBackend::default())
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }
    fn connect(&self, _password: Option<&str>) -> Arc<dyn Registry> {
        Arc::new(self.registry.clone())
    }
    async fn discovery(&self) -> Arc<dyn Discovery> {
        Arc::new(self.registry.clone())
    }
    async fn put_raw(&self, _service: &str, _node: &str, _bytes: &[u8]) {
        // Memory holds decoded instances only: there is nowhere to put foreign bytes.
    }
    async fn stored(&self, service: &str) -> Vec<SocketAddr> {
        let found = self.registry.resolve(service).await.unwrap_or_default();
        let mut addrs: Vec<_> = found.iter().map(|i| i.addr).collect();
        addrs.sort();
        addrs
    }
    fn wipe(&mut self) {
        panic!("memory has no server to restart without its data: wiped-restart scenarios do not apply to it");
    }
    async fn outage(&mut self) {
        panic!("memory has no server to take away: outage scenarios do not apply to it");
    }
    async fn recover(&mut self) {
        panic!("memory has no server to bring back: outage scenarios do not apply to it");
    }
}

//! [`NacosServer`]: one node of a Nacos cluster, and the order the nodes are tried in.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// One node of a Nacos cluster: its host, HTTP port (open API and login) and gRPC port (the
/// 2.x API; by Nacos' convention the HTTP port + 1000). A [`NacosConfig`](super::NacosConfig)
/// names its first node in [`NacosConfig::new`](super::NacosConfig::new) and more with
/// [`NacosConfig::add_server`](super::NacosConfig::add_server), as nacos-sdk-go takes a list of
/// `ServerConfig`s.
///
/// ```
/// use service_registry::nacos::NacosServer;
///
/// let node = NacosServer::new("10.0.0.6", 8848);
/// assert_eq!(node.http_addr(), "10.0.0.6:8848");
/// assert_eq!(node.grpc_addr(), "10.0.0.6:9848");
/// assert_eq!(node.grpc_port(7000).grpc_addr(), "10.0.0.6:7000");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NacosServer {
    pub(crate) host: String,
    pub(crate) http_port: u16,
    pub(crate) grpc_port: u16,
}

impl NacosServer {
    /// The node at `host`, HTTP port `http_port`, gRPC port `http_port + 1000` (above 64535,
    /// set [`grpc_port`](Self::grpc_port), or the registry refuses the settings).
    pub fn new(host: impl Into<String>, http_port: u16) -> Self {
        Self {
            host: host.into(),
            http_port,
            grpc_port: grpc_port_of(http_port),
        }
    }

    /// The gRPC port, when it is not the HTTP port + 1000.
    pub fn grpc_port(mut self, port: u16) -> Self {
        self.grpc_port = port;
        self
    }

    /// `host:http_port`.
    pub fn http_addr(&self) -> String {
        format!("{}:{}", self.host, self.http_port)
    }

    /// `host:grpc_port`.
    pub fn grpc_addr(&self) -> String {
        format!("{}:{}", self.host, self.grpc_port)
    }
}

/// Nacos' convention: the HTTP port + 1000; 0 (no port) when that is over 65535.
pub(crate) fn grpc_port_of(http_port: u16) -> u16 {
    http_port.checked_add(1000).unwrap_or(0)
}

/// Which node a connection tries first: shared by every clone of one config. After node `i`
/// answered, the next connection (the one replacing it when it is lost) starts at node `i + 1`,
/// as nacos-sdk-go's `nextRpcServer` moves on: a connection lost with its node is replaced on
/// another node at the first try, not after a timeout on the dead one.
#[derive(Clone, Debug)]
pub(crate) struct Rotation(Arc<AtomicUsize>);

/// No node has answered yet.
const NONE: usize = usize::MAX;

impl Default for Rotation {
    fn default() -> Self {
        Self(Arc::new(AtomicUsize::new(NONE)))
    }
}

impl Rotation {
    /// The order to try `count` nodes in: each once, from the one after the last that answered.
    pub(crate) fn order(&self, count: usize) -> impl Iterator<Item = usize> {
        let start = match self.0.load(Ordering::Relaxed) {
            NONE => 0,
            last => (last + 1) % count.max(1),
        };
        (0..count).map(move |step| (start + step) % count)
    }

    /// Node `index` answered: the next connection starts at the node after it.
    pub(crate) fn answered(&self, index: usize) {
        self.0.store(index, Ordering::Relaxed);
    }

    /// The node that answered last, if any.
    pub(crate) fn last(&self) -> Option<usize> {
        Some(self.0.load(Ordering::Relaxed)).filter(|last| *last != NONE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_starts_after_the_node_that_answered_last_and_tries_each_once() {
        let rotation = Rotation::default();
        assert_eq!(rotation.last(), None);
        assert_eq!(rotation.order(3).collect::<Vec<_>>(), [0, 1, 2]);
        // Nothing answered: the same order again.
        assert_eq!(rotation.order(3).collect::<Vec<_>>(), [0, 1, 2]);
        rotation.answered(0);
        assert_eq!(rotation.order(3).collect::<Vec<_>>(), [1, 2, 0]);
        rotation.answered(2);
        assert_eq!(rotation.order(3).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(rotation.last(), Some(2));
        assert_eq!(rotation.order(1).collect::<Vec<_>>(), [0]);
    }

    #[test]
    fn the_grpc_port_follows_the_http_port_unless_set() {
        assert_eq!(NacosServer::new("h", 18848).grpc_addr(), "h:19848");
        assert_eq!(NacosServer::new("h", 65000).grpc_port, 0);
    }
}

//! What a watch does with each Nacos push, without a server: for `registry/benches/nacos_push.rs`.
//! Not a public API; it changes whenever the code it measures does.

use super::discovery;
use super::wire::ServerRequest;
use crate::backends::kit::watch::Entries;
use crate::discovery::latest::{channel, Publisher};
use crate::discovery::WatchStream;

/// One watch of one service, fed pushes by hand.
pub struct Follower {
    service: String,
    cluster: String,
    entries: Entries,
    known: discovery::Known,
    publisher: Publisher,
    _stream: WatchStream,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl Follower {
    /// A watch of `service` in `cluster` that has shown nothing yet.
    pub fn new(service: &str, cluster: &str) -> Self {
        let (publisher, stream) = channel("nacos", service, crate::Instances::new());
        Self {
            service: service.to_string(),
            cluster: cluster.to_string(),
            entries: Entries::new(),
            known: discovery::Known::default(),
            publisher,
            _stream: stream,
        }
    }

    /// Reads `json`, the body of a `NotifySubscriberRequest`, as the connection's stream
    /// reader does, and applies it as the watch does (its instances made the current entries,
    /// what changed published); returns how many instances the watch shows after it.
    pub fn push(&mut self, json: &[u8]) -> usize {
        let Ok(request) = serde_json::from_slice::<ServerRequest>(json) else {
            return 0;
        };
        let Some(info) = request.service_info else {
            return 0;
        };
        discovery::apply_push(
            &self.service,
            &self.cluster,
            Some(&info),
            &mut self.entries,
            &mut self.known,
        );
        match self.entries.settle() {
            Ok(updates) => self.publisher.apply(updates),
            Err(all) => self.publisher.publish(all),
        }
        self.publisher.sender().borrow().len()
    }
}

/// Only the read: `json` (a `NotifySubscriberRequest` body) parsed as the stream reader does
/// and its hosts read as instances, as a watch does before it compares them; how many.
pub fn read(json: &[u8]) -> usize {
    serde_json::from_slice::<ServerRequest>(json)
        .ok()
        .and_then(|request| request.service_info)
        .map_or(0, |info| info.instances("bench").len())
}

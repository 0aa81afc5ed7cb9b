//! Pushes, from the reader of a connection's stream to the watches that follow a service: the
//! latest push per service (never a history), and the size limits of what is read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use super::wire::ServiceInfo;

/// The largest answer decoded, and the largest push delivered: 10 MiB, as the Java client
/// (`maxInboundMessageSize`). tonic's default, 4 MiB, is already exceeded by a service of 5 000
/// instances with 1 KB of metadata each. A constant rather than a [`NacosConfig`](super::NacosConfig) option: a
/// larger one would only move the point where a service is too large to follow.
pub(crate) const MAX_ANSWER: usize = 10 << 20;
/// The largest message the stream decodes. A push above [`MAX_ANSWER`] (and up to this) is
/// read and passed over, failing only the watch of its service: a message over the decode
/// limit would end the stream, and with it the connection every watch of the discovery shares.
pub(crate) const MAX_STREAM_MESSAGE: usize = 4 * MAX_ANSWER;

/// What the server pushed last for a service.
#[derive(Clone, Debug)]
pub(crate) enum Push {
    /// The service's instances.
    State(Arc<ServiceInfo>),
    /// A push of this many bytes, over [`MAX_ANSWER`]: passed over.
    TooLarge(usize),
}

/// The latest push per `group@@service`, for whoever follows it.
pub(crate) type Pushes = Arc<Mutex<HashMap<String, watch::Sender<Option<Push>>>>>;

/// Locks the pushes (or any map updated the same way).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update is one insert or remove: a poisoned lock is still consistent.
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

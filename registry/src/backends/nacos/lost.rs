//! How a connection is marked lost: its reader, its heartbeat and its callers each may find it
//! dead; the first cause is kept and told to whoever waits on the connection.

use tokio::sync::watch;

/// Records the first cause of a lost connection; later ones are dropped.
pub(crate) fn mark_lost(lost: &watch::Sender<Option<String>>, cause: String) {
    lost.send_if_modified(|slot| {
        if slot.is_some() {
            return false;
        }
        *slot = Some(cause);
        true
    });
}

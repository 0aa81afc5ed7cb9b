//! The reader of a connection's bidirectional stream: answers every request the server sends
//! on it (`ClientDetectionRequest` among them: the server closes connections that do not
//! answer), hands `NotifySubscriberRequest` pushes to their subscribers, and reports the
//! stream's end. It runs in a task of its own, so it never waits behind our requests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use super::connection::{lock, mark_lost, Pushes};
use super::proto::Payload;
use super::wire::{self, Ack, ServerRequest, ServiceInfo};

/// Reads the stream: answers each server request, hands pushes to their subscribers, and
/// reports the stream's end.
pub(crate) async fn read(
    mut stream: tonic::Streaming<Payload>,
    outbound: mpsc::UnboundedSender<Payload>,
    pushes: Pushes,
    lost: watch::Sender<Option<String>>,
    open: Arc<AtomicBool>,
) {
    let cause = loop {
        let payload = match stream.message().await {
            Ok(Some(payload)) => payload,
            Ok(None) => break "the server closed the stream".to_string(),
            Err(status) => break format!("the stream failed: {status}"),
        };
        let kind = payload.kind().to_string();
        let request: ServerRequest = match serde_json::from_slice(payload.json()) {
            Ok(request) => request,
            Err(err) => {
                // Without its request id there is nothing to answer; the server tries again
                // (a push) or decides on its own (a detection).
                tracing::warn!(kind, error = %err, "unreadable request from the server left out");
                continue;
            }
        };
        if kind == "NotifySubscriberRequest" {
            deliver(
                &pushes,
                request.group_name.as_deref(),
                request.service_name.as_deref(),
                request.service_info,
            );
        } else if kind == "ConnectResetRequest" {
            // The server asks us to go elsewhere: this connection is done.
            break "the server asked the client to reconnect".to_string();
        }
        if kind.ends_with("Request") {
            let ack = Ack {
                result_code: 200,
                error_code: 0,
                request_id: request.request_id.unwrap_or_default(),
            };
            let json = serde_json::to_vec(&ack).unwrap_or_default();
            let answer = kind.trim_end_matches("Request").to_string() + "Response";
            let _ = outbound.send(Payload::new(&answer, HashMap::new(), json));
        }
    };
    tracing::debug!(%cause, "the Nacos stream ended");
    open.store(false, Ordering::SeqCst);
    mark_lost(&lost, cause);
}

fn deliver(pushes: &Pushes, group: Option<&str>, service: Option<&str>, info: Option<ServiceInfo>) {
    let (Some(service), Some(info)) = (service, info) else {
        return;
    };
    let group = group.unwrap_or(super::config::DEFAULT_GROUP);
    let key = wire::grouped(group, wire::ungrouped(service));
    if let Some(tx) = lock(pushes).get(&key) {
        tx.send_replace(Some(Arc::new(info)));
    }
}

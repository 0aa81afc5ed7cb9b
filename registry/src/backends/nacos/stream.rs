//! The reader of a connection's bidirectional stream: answers every request the server sends
//! on it (`ClientDetectionRequest` among them: the server closes connections that do not
//! answer), hands `NotifySubscriberRequest` pushes to their subscribers, and reports the
//! stream's end. It runs in a task of its own, so it never waits behind our requests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use serde::Deserialize;

use super::lost::mark_lost;
use super::proto::Payload;
use super::push::{lock, Push, Pushes, MAX_ANSWER};
use super::wire::{self, Ack, ServerRequest};

/// A server request without its service info: all that is read of a push too large to use.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Header {
    request_id: Option<String>,
    service_name: Option<String>,
    group_name: Option<String>,
}

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
        let size = payload.json().len();
        if size > MAX_ANSWER && kind == "NotifySubscriberRequest" {
            // Its subscribers hear it was too large (their watches fail, and list again);
            // the stream, and every other subscription on it, goes on.
            let header: Header = serde_json::from_slice(payload.json()).unwrap_or_default();
            tracing::warn!(
                service = header.service_name.as_deref().unwrap_or_default(),
                size,
                limit = MAX_ANSWER,
                "a push over the size limit passed over"
            );
            deliver(
                &pushes,
                header.group_name.as_deref(),
                header.service_name.as_deref(),
                Some(Push::TooLarge(size)),
            );
            ack(&outbound, &kind, header.request_id);
            continue;
        }
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
                request.service_info.map(|info| Push::State(Arc::new(info))),
            );
        } else if kind == "ConnectResetRequest" {
            // The server asks us to go elsewhere: this connection is done.
            break "the server asked the client to reconnect".to_string();
        }
        if kind.ends_with("Request") {
            ack(&outbound, &kind, request.request_id);
        }
    };
    tracing::debug!(%cause, "the Nacos stream ended");
    open.store(false, Ordering::SeqCst);
    mark_lost(&lost, cause);
}

/// Answers the server's request of type `kind`.
fn ack(outbound: &mpsc::UnboundedSender<Payload>, kind: &str, request_id: Option<String>) {
    let ack = Ack {
        result_code: 200,
        error_code: 0,
        request_id: request_id.unwrap_or_default(),
    };
    let json = serde_json::to_vec(&ack).unwrap_or_default();
    let answer = kind.trim_end_matches("Request").to_string() + "Response";
    let _ = outbound.send(Payload::new(&answer, HashMap::new(), json));
}

fn deliver(pushes: &Pushes, group: Option<&str>, service: Option<&str>, push: Option<Push>) {
    let (Some(service), Some(push)) = (service, push) else {
        return;
    };
    let group = group.unwrap_or(super::config::DEFAULT_GROUP);
    let key = wire::grouped(group, wire::ungrouped(service));
    if let Some(tx) = lock(pushes).get(&key) {
        tx.send_replace(Some(push));
    }
}

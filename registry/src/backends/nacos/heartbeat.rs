//! The connection's heartbeat: a `HealthCheckRequest` on its own schedule, in a task of its
//! own, whatever else is in flight. It keeps the server's idle detection satisfied and tells us
//! when the connection is dead although nothing closed it (a hung server, a black hole).

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::lost::mark_lost;
use super::proto::{NacosGrpc, Payload};
use super::wire::{Empty, Envelope, Response, UNREGISTERED};

/// Sends a `HealthCheckRequest` every `every`; a failure or no answer within `limit` marks
/// the connection lost.
pub(crate) async fn check(
    grpc: NacosGrpc,
    every: Duration,
    limit: Duration,
    lost: watch::Sender<Option<String>>,
) {
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let headers = HashMap::new();
    let cause = loop {
        tick.tick().await;
        let body = Envelope {
            module: "internal",
            request_id: "0".to_string(),
            headers: &headers,
            body: Empty {},
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let payload = Payload::new("HealthCheckRequest", HashMap::new(), json);
        let sent = Instant::now();
        match tokio::time::timeout(limit, grpc.request(payload)).await {
            Ok(Ok(answer)) => {
                if let Some(cause) = verdict(serde_json::from_slice(answer.json())) {
                    break cause;
                }
                crate::metrics::keepalive("nacos", sent.elapsed());
            }
            Ok(Err(status)) => break format!("the health check failed: {status}"),
            Err(_) => break format!("the health check got no answer within {limit:?}"),
        }
    };
    mark_lost(&lost, cause);
}

/// Why a health check's answer says the connection is gone; `None` when it says it lives. An
/// answer that cannot be read says nothing good.
fn verdict(answer: Result<Response, serde_json::Error>) -> Option<String> {
    match answer {
        Err(err) => Some(format!("the health check got an unreadable answer: {err}")),
        Ok(response) if response.result_code != 200 && response.error_code == UNREGISTERED => {
            Some("the server no longer knows this connection".to_string())
        }
        Ok(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_readable_answer_keeps_the_connection() {
        let read = |json: &str| verdict(serde_json::from_str(json));
        assert_eq!(read(r#"{"resultCode":200,"errorCode":0}"#), None);
        assert!(read(r#"{"resultCode":500,"errorCode":301}"#).is_some());
        assert!(read("not json").is_some());
    }
}

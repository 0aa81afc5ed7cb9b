//! One Nacos 2.x connection: the HTTP/2 channel, the bidirectional stream that makes the
//! server know us (our ephemeral instances live exactly as long as it does), its reader
//! (answers the server's requests and hands pushes to subscribers), and the health check.
//!
//! Liveness never waits behind work: the reader and the health check each run in a task of
//! their own, whatever requests are in flight. The tasks end when the [`Connection`] is
//! dropped, and with them the stream: the server then removes every instance registered on it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::transport::Endpoint;

use super::auth::{login, Token};
use super::config::NacosConfig;
use super::error::NacosError;
use super::lost::mark_lost;
use super::proto::{NacosGrpc, Payload};
use super::push::{lock, Push, Pushes, MAX_ANSWER, MAX_STREAM_MESSAGE};
use super::wire::{self, Empty, Envelope, Response, FORBIDDEN, INVALID_PARAM, UNREGISTERED};

/// Our client version, as the server lists it.
const CLIENT_VERSION: &str = concat!(
    "Nacos-Rust-Client:service-registry-",
    env!("CARGO_PKG_VERSION")
);

/// A live connection. Dropping it closes the stream.
pub(crate) struct Connection {
    config: NacosConfig,
    server: String,
    grpc: NacosGrpc,
    token: tokio::sync::Mutex<Option<Token>>,
    lost: watch::Sender<Option<String>>,
    /// Whether the stream is still open: a connection given up on (lost) may still be alive
    /// on the server, holding our instances, as long as it is.
    stream_open: Arc<AtomicBool>,
    pushes: Pushes,
    /// Held while subscribing or unsubscribing: the server keeps one subscription per
    /// connection and service, so these must reach it in the order they were decided.
    subscribing: tokio::sync::Mutex<()>,
    next_id: AtomicU64,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("server", &self.server)
            .finish()
    }
}

impl Connection {
    /// Logs in (when a user is configured), connects, opens the stream and waits until the
    /// server knows it; all within the connect and request timeouts.
    ///
    /// With several nodes ([`NacosConfig::add_server`]), tries each once, from the one after the
    /// node that answered last; the first that connects is used, and the last error is returned
    /// when none does. A refusal of the credentials is final: the next node would refuse them
    /// too.
    pub(crate) async fn connect(config: &NacosConfig) -> Result<Arc<Self>, NacosError> {
        let count = config.servers().len();
        let mut last = None;
        for index in config.rotation.order(count) {
            let node = config.at(index);
            match Self::connect_to(&node).await {
                Ok(connection) => {
                    config.rotation.answered(index);
                    return Ok(connection);
                }
                Err(err @ NacosError::Unauthenticated { .. }) => return Err(err),
                Err(err) => {
                    if count > 1 {
                        tracing::debug!(server = %node.grpc_addr(), error = %err, "Nacos node did not connect; trying the next");
                    }
                    last = Some(err);
                }
            }
        }
        Err(last.unwrap_or(NacosError::Unreachable {
            server: config.grpc_addr(),
            reason: "no Nacos server configured".to_string(),
        }))
    }

    async fn connect_to(config: &NacosConfig) -> Result<Arc<Self>, NacosError> {
        let server = config.grpc_addr();
        let limit = config.connect_timeout + config.request_timeout * 2;
        match tokio::time::timeout(limit, Self::open(config)).await {
            Ok(result) => result,
            Err(_) => Err(NacosError::Unreachable {
                server,
                reason: format!("connecting took over {limit:?}"),
            }),
        }
    }

    async fn open(config: &NacosConfig) -> Result<Arc<Self>, NacosError> {
        let server = config.grpc_addr();
        let unreachable = |reason: String| NacosError::Unreachable {
            server: server.clone(),
            reason,
        };
        let token = login(config).await?;
        let endpoint = Endpoint::from_shared(format!("http://{server}"))
            .map_err(|err| unreachable(format!("not a valid address: {err}")))?
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true);
        // No HTTP/2 pings: Java Nacos' gRPC server answers pings more often than every
        // 5 minutes with GOAWAY (`permitKeepAliveTime`). The health check is the keep-alive.
        let channel = endpoint
            .connect()
            .await
            .map_err(|err| unreachable(error_chain(&err)))?;
        let grpc = NacosGrpc::new(channel, MAX_ANSWER, MAX_STREAM_MESSAGE);
        let (lost, _) = watch::channel(None);
        let (outbound, rx) = mpsc::unbounded_channel::<Payload>();
        let mut connection = Self {
            config: config.clone(),
            server: server.clone(),
            grpc: grpc.clone(),
            token: tokio::sync::Mutex::new(token),
            lost,
            stream_open: Arc::new(AtomicBool::new(true)),
            pushes: Arc::default(),
            subscribing: tokio::sync::Mutex::new(()),
            next_id: AtomicU64::new(1),
            tasks: Vec::new(),
        };
        let check = connection
            .call("ServerCheckRequest", "a server check", Empty {})
            .await?;
        tracing::debug!(connection_id = ?check.connection_id, "Nacos server check passed");
        let setup = wire::SetupRequest {
            client_version: CLIENT_VERSION,
            tenant: &config.namespace,
            labels: HashMap::from([("source", "sdk"), ("module", "naming")]),
            ability_table: HashMap::new(),
        };
        let setup = connection.payload("ConnectionSetupRequest", setup);
        let _ = outbound.send(setup);
        let stream = grpc
            .bi_stream(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
            .await
            .map_err(|status| unreachable(format!("cannot open the stream: {status}")))?;
        connection.tasks.push(tokio::spawn(super::stream::read(
            stream,
            outbound,
            connection.pushes.clone(),
            connection.lost.clone(),
            connection.stream_open.clone(),
        )));
        connection.tasks.push(tokio::spawn(super::heartbeat::check(
            grpc,
            config.heartbeat,
            config.request_timeout,
            connection.lost.clone(),
        )));
        connection.wait_known().await?;
        Ok(Arc::new(connection))
    }

    /// The server registers the stream asynchronously: wait until a request on this
    /// connection is accepted.
    async fn wait_known(&self) -> Result<(), NacosError> {
        let deadline = Instant::now() + self.config.connect_timeout;
        loop {
            match self
                .call("HealthCheckRequest", "a health check", Empty {})
                .await
            {
                Ok(_) => return Ok(()),
                Err(NacosError::Lost { reason, .. })
                    if Instant::now() < deadline && self.lost_cause().is_none() =>
                {
                    tracing::trace!(%reason, "the server does not know the stream yet");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// `host:port` of the gRPC API.
    pub(crate) fn server(&self) -> &str {
        &self.server
    }

    /// Whether the stream is still open (the server may still know this connection).
    pub(crate) fn stream_open(&self) -> bool {
        self.stream_open.load(Ordering::SeqCst)
    }

    /// Why the connection was lost, once it was.
    pub(crate) fn lost_cause(&self) -> Option<String> {
        self.lost.borrow().clone()
    }

    /// Completes with the cause once the connection is lost.
    pub(crate) async fn lost(&self) -> String {
        let mut rx = self.lost.subscribe();
        let cause = match rx.wait_for(Option::is_some).await {
            Ok(cause) => cause.clone().unwrap_or_default(),
            Err(_) => "the connection was closed".to_string(),
        };
        cause
    }

    fn mark_lost(&self, cause: &str) {
        mark_lost(&self.lost, cause.to_string());
    }

    fn payload<T: Serialize>(&self, kind: &str, body: T) -> Payload {
        self.payload_with(kind, body, HashMap::new())
    }

    fn payload_with<T: Serialize>(
        &self,
        kind: &str,
        body: T,
        headers: HashMap<String, String>,
    ) -> Payload {
        let envelope = Envelope {
            module: if kind.contains("Instance") || kind.contains("Service") {
                "naming"
            } else {
                "internal"
            },
            request_id: self.next_id.fetch_add(1, Ordering::Relaxed).to_string(),
            headers: &headers,
            body,
        };
        // Plain strings, numbers and maps: serializing cannot fail.
        let json = serde_json::to_vec(&envelope).unwrap_or_default();
        Payload::new(kind, headers, json)
    }

    /// The headers of a request: the access token, renewed when it is half-way through its
    /// life or when the server refused it (`refused`: the token it refused; a token renewed
    /// meanwhile by a concurrent call is used as it is).
    async fn headers(
        &self,
        refused: Option<&str>,
    ) -> Result<(HashMap<String, String>, Option<String>), NacosError> {
        let mut token = self.token.lock().await;
        let renew = refused.is_some_and(|r| token.as_ref().is_some_and(|t| t.value == r));
        let stale = token
            .as_ref()
            .is_some_and(|t| renew || Instant::now() >= t.renew_at);
        if stale {
            match login(&self.config).await {
                Ok(fresh) => *token = fresh,
                // A renewal that fails for want of an answer keeps the old token (it may
                // still be valid); refused credentials are the caller's error.
                Err(err) if renew || !err.is_connection() => return Err(err),
                Err(err) => tracing::warn!(error = %err, "cannot renew the Nacos access token yet"),
            }
        }
        let value = token.as_ref().map(|t| t.value.clone());
        let headers = value
            .iter()
            .map(|v| ("accessToken".to_string(), v.clone()))
            .collect();
        Ok((headers, value))
    }

    /// One request of type `kind`; `what` names it in errors. A token the server no longer
    /// accepts is renewed once.
    pub(crate) async fn call<T: Serialize + Clone>(
        &self,
        kind: &str,
        what: &str,
        body: T,
    ) -> Result<Response, NacosError> {
        self.call_on(kind, what, body, true).await
    }

    /// [`call`](Self::call) on a connection given up on (lost) whose stream is still open: a
    /// last word to a server that may still hold it. Its failure changes nothing.
    pub(crate) async fn call_stale<T: Serialize + Clone>(
        &self,
        kind: &str,
        what: &str,
        body: T,
    ) -> Result<Response, NacosError> {
        self.call_on(kind, what, body, false).await
    }

    async fn call_on<T: Serialize + Clone>(
        &self,
        kind: &str,
        what: &str,
        body: T,
        live: bool,
    ) -> Result<Response, NacosError> {
        let mut refused: Option<String> = None;
        let mut renewed = false;
        loop {
            let (headers, used) = self.headers(refused.as_deref()).await?;
            let payload = self.payload_with(kind, body.clone(), headers);
            let response = if live {
                self.send(what, payload).await?
            } else {
                self.send_stale(what, payload).await?
            };
            if response.result_code == 200 {
                return Ok(response);
            }
            let message = response.message.clone().unwrap_or_default();
            if response.error_code == UNREGISTERED || message.contains("unregistered") {
                let cause = format!("the server no longer knows this connection ({message})");
                return Err(NacosError::Lost {
                    server: self.server.clone(),
                    reason: cause,
                });
            }
            if forbidden(&response) {
                if self.config.user.is_some() && !renewed {
                    renewed = true;
                    refused = used;
                    continue;
                }
                let reason = if self.config.user.is_some() {
                    message
                } else {
                    format!("{message} (Nacos requires a login: configure a user)")
                };
                return Err(NacosError::Unauthenticated {
                    user: self.config.user_name(),
                    server: self.config.http_addr(),
                    reason,
                });
            }
            if response.error_code == INVALID_PARAM {
                return Err(NacosError::Rejected {
                    server: self.server.clone(),
                    what: what.to_string(),
                    reason: message,
                });
            }
            return Err(NacosError::Refused {
                server: self.server.clone(),
                what: what.to_string(),
                code: response.error_code,
                message,
            });
        }
    }

    /// One request and its answer. Ends as soon as the connection is known to be lost, whoever
    /// found out; only a transport failure (or no answer in time) marks it lost: any other gRPC
    /// error is this request's own.
    async fn send(&self, what: &str, payload: Payload) -> Result<Response, NacosError> {
        let lost = |reason: String| NacosError::Lost {
            server: self.server.clone(),
            reason,
        };
        if let Some(cause) = self.lost_cause() {
            return Err(lost(format!("{what} not sent: {cause}")));
        }
        let limit = self.config.request_timeout;
        let answer = tokio::select! {
            biased;
            cause = self.lost() => return Err(lost(format!("{what} abandoned: {cause}"))),
            answer = tokio::time::timeout(limit, self.grpc.request(payload)) => answer,
        };
        let answer = match answer {
            Ok(Ok(answer)) => answer,
            Ok(Err(status)) if is_transport(status.code()) => {
                let reason = format!("{what} failed: {status}");
                self.mark_lost(&reason);
                return Err(lost(reason));
            }
            Ok(Err(status)) => return Err(rejection(&self.server, what, &status)),
            Err(_) => {
                let err = NacosError::TimedOut {
                    server: self.server.clone(),
                    what: what.to_string(),
                    limit,
                };
                self.mark_lost(&err.to_string());
                return Err(err);
            }
        };
        serde_json::from_slice(answer.json()).map_err(|err| NacosError::Refused {
            server: self.server.clone(),
            what: what.to_string(),
            code: 0,
            message: format!("the answer ({}) is not Nacos JSON: {err}", answer.kind()),
        })
    }

    /// One request on a lost connection, within the request timeout; marks nothing.
    async fn send_stale(&self, what: &str, payload: Payload) -> Result<Response, NacosError> {
        let limit = self.config.request_timeout;
        let failed = |reason: String| NacosError::Lost {
            server: self.server.clone(),
            reason,
        };
        let answer = match tokio::time::timeout(limit, self.grpc.request(payload)).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(status)) => return Err(failed(format!("{what} failed: {status}"))),
            Err(_) => {
                return Err(NacosError::TimedOut {
                    server: self.server.clone(),
                    what: what.to_string(),
                    limit,
                })
            }
        };
        serde_json::from_slice(answer.json()).map_err(|err| {
            failed(format!(
                "the answer ({}) is not Nacos JSON: {err}",
                answer.kind()
            ))
        })
    }

    /// Serializes subscriptions and unsubscriptions on this connection.
    pub(crate) async fn subscribing(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.subscribing.lock().await
    }

    /// Whether anybody follows the pushes of `grouped`.
    pub(crate) fn followed(&self, grouped: &str) -> bool {
        lock(&self.pushes).contains_key(grouped)
    }

    /// Pushes for `group@@service` from now on (the latest one; `None` before the first).
    pub(crate) fn pushes(&self, grouped: &str) -> watch::Receiver<Option<Push>> {
        let mut pushes = lock(&self.pushes);
        match pushes.get(grouped) {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = watch::channel(None);
                pushes.insert(grouped.to_string(), tx);
                rx
            }
        }
    }

    /// Forgets the pushes of `grouped` when nobody follows them; whether it did.
    pub(crate) fn forget_pushes(&self, grouped: &str) -> bool {
        let mut pushes = lock(&self.pushes);
        if pushes
            .get(grouped)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            pushes.remove(grouped);
            return true;
        }
        false
    }
}

/// Whether the server at `config`'s gRPC address answers a `ServerCheckRequest` within `limit`,
/// on a connection of its own that is closed right after. No login: any answer counts (an
/// error code too), only a failed connection or no answer does not.
///
/// With several nodes, whether any of them answers (all asked at once).
pub(crate) async fn probe(config: &NacosConfig, limit: Duration) -> bool {
    let nodes = (0..config.servers().len()).map(|index| config.at(index));
    let asks = nodes.map(|node| Box::pin(async move { probe_node(&node, limit).await }));
    let mut asks: futures_util::stream::FuturesUnordered<_> = asks.collect();
    while let Some(answered) = futures_util::StreamExt::next(&mut asks).await {
        if answered {
            return true;
        }
    }
    false
}

async fn probe_node(config: &NacosConfig, limit: Duration) -> bool {
    let server = config.grpc_addr();
    let check = async {
        let endpoint = Endpoint::from_shared(format!("http://{server}"))
            .ok()?
            .connect_timeout(limit)
            .tcp_nodelay(true);
        let channel = endpoint.connect().await.ok()?;
        let grpc = NacosGrpc::new(channel, MAX_ANSWER, MAX_ANSWER);
        let headers = HashMap::new();
        let envelope = Envelope {
            module: "internal",
            request_id: "0".to_string(),
            headers: &headers,
            body: Empty {},
        };
        let json = serde_json::to_vec(&envelope).unwrap_or_default();
        let check = Payload::new("ServerCheckRequest", HashMap::new(), json);
        grpc.request(check).await.ok()
    };
    matches!(tokio::time::timeout(limit, check).await, Ok(Some(_)))
}

/// Whether the server refused the request's credentials. rnacos says "unknown user!", Java
/// Nacos "token expired!" or "token invalid!": whatever the wording, the token is renewed once,
/// and a refusal after that is `Unauthenticated`.
fn forbidden(response: &Response) -> bool {
    response.error_code == FORBIDDEN || response.result_code == FORBIDDEN
}

/// Whether a gRPC status says the connection (not the request) failed.
fn is_transport(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable
            | tonic::Code::Cancelled
            | tonic::Code::Unknown
            | tonic::Code::DeadlineExceeded
    )
}

/// A gRPC error that is the request's own: an answer over our decode limit is too large (the
/// request was fine; the service is too big to read); a request the server found too large or
/// malformed is rejected for good (it would be again); anything else is refused this time.
fn rejection(server: &str, what: &str, status: &tonic::Status) -> NacosError {
    if answer_too_large(status) {
        return NacosError::TooLarge {
            server: server.to_string(),
            what: what.to_string(),
            reason: status.message().to_string(),
        };
    }
    match status.code() {
        tonic::Code::InvalidArgument | tonic::Code::ResourceExhausted | tonic::Code::OutOfRange => {
            NacosError::Rejected {
                server: server.to_string(),
                what: what.to_string(),
                reason: status.to_string(),
            }
        }
        _ => NacosError::Refused {
            server: server.to_string(),
            what: what.to_string(),
            code: 0,
            message: status.to_string(),
        },
    }
}

/// Whether tonic refused to decode an answer for its size (it says so in these words: "decoded
/// message length too large", or "size limit ... exceeded while decompressing").
fn answer_too_large(status: &tonic::Status) -> bool {
    let message = status.message();
    match status.code() {
        tonic::Code::OutOfRange => message.contains("message length too large"),
        tonic::Code::ResourceExhausted => {
            message.starts_with("Error decompressing") && message.contains("size limit")
        }
        _ => false,
    }
}

/// The chain of an error's sources, for messages.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_403_is_a_refused_token_whatever_its_wording() {
        for json in [
            r#"{"resultCode":500,"errorCode":403,"message":"unknown user!"}"#,
            r#"{"resultCode":500,"errorCode":403,"message":"token expired!"}"#,
            r#"{"resultCode":500,"errorCode":403,"message":"token invalid!"}"#,
        ] {
            assert!(forbidden(&serde_json::from_str(json).unwrap()), "{json}");
        }
        let other: Response =
            serde_json::from_str(r#"{"resultCode":500,"errorCode":500}"#).unwrap();
        assert!(!forbidden(&other));
    }

    #[test]
    fn only_transport_failures_lose_the_connection() {
        for code in [
            tonic::Code::Unavailable,
            tonic::Code::Cancelled,
            tonic::Code::Unknown,
            tonic::Code::DeadlineExceeded,
        ] {
            assert!(is_transport(code), "{code:?}");
        }
        let big = tonic::Status::resource_exhausted("message too large");
        assert!(!is_transport(big.code()));
        assert!(matches!(
            rejection("h:1", "a registration", &big),
            NacosError::Rejected { .. }
        ));
        // What tonic says of an answer over our decode limit: the answer is too large, the
        // query was fine.
        let answer = tonic::Status::out_of_range(
            "Error, decoded message length too large: found 6075979 bytes, the limit is: 4194304 bytes",
        );
        assert!(!is_transport(answer.code()));
        let err = rejection("h:1", "the query of `svc`", &answer);
        assert!(matches!(err, NacosError::TooLarge { .. }), "{err:?}");
        assert!(!err.is_invalid());
        assert!(!err.to_string().contains("invalid"), "{err}");
        let other = tonic::Status::internal("oops");
        assert!(!is_transport(other.code()));
        assert!(matches!(
            rejection("h:1", "a registration", &other),
            NacosError::Refused { .. }
        ));
    }
}

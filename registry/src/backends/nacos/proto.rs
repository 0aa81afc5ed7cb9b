//! Nacos 2.x's gRPC protocol: one generic `Payload` message (a type name, headers, and a JSON
//! body in a `google.protobuf.Any`) over the unary `Request/request` and the bidirectional
//! `BiRequestStream/requestBiStream`. The field numbers are those of Nacos' `nacos_grpc_service.proto`.

use std::collections::HashMap;

use futures_core::Stream;
use tonic::client::Grpc;
use tonic::transport::Channel;
use tonic::{Status, Streaming};
use tonic_prost::ProstCodec;

/// `google.protobuf.Any`: the JSON body, with an empty type URL as Nacos' clients send it.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Any {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// The type name of the body and the headers (the access token among them).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Metadata {
    #[prost(string, tag = "3")]
    pub r#type: String,
    #[prost(string, tag = "8")]
    pub client_ip: String,
    #[prost(map = "string, string", tag = "7")]
    pub headers: HashMap<String, String>,
}

/// Every message in both directions.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Payload {
    #[prost(message, optional, tag = "2")]
    pub metadata: Option<Metadata>,
    #[prost(message, optional, tag = "3")]
    pub body: Option<Any>,
}

impl Payload {
    /// A payload of type `kind` with `json` as its body.
    pub(crate) fn new(kind: &str, headers: HashMap<String, String>, json: Vec<u8>) -> Self {
        Self {
            metadata: Some(Metadata {
                r#type: kind.to_string(),
                client_ip: String::new(),
                headers,
            }),
            body: Some(Any {
                type_url: String::new(),
                value: json,
            }),
        }
    }

    /// The type name (`InstanceResponse`, `NotifySubscriberRequest`, ...).
    pub(crate) fn kind(&self) -> &str {
        self.metadata.as_ref().map_or("", |m| m.r#type.as_str())
    }

    /// The JSON body.
    pub(crate) fn json(&self) -> &[u8] {
        self.body.as_ref().map_or(&[], |b| b.value.as_slice())
    }
}

const REQUEST: &str = "/Request/request";
const BI_STREAM: &str = "/BiRequestStream/requestBiStream";

/// The two calls, on one HTTP/2 connection (the server ties a unary request to the stream
/// opened on the same connection), each with its own decode limit.
#[derive(Clone)]
pub(crate) struct NacosGrpc {
    unary: Grpc<Channel>,
    stream: Grpc<Channel>,
}

impl NacosGrpc {
    /// Calls on `channel` that decode answers of up to `answer_limit` bytes and stream
    /// messages of up to `stream_limit` (a larger stream message fails the whole stream).
    pub(crate) fn new(channel: Channel, answer_limit: usize, stream_limit: usize) -> Self {
        Self {
            unary: Grpc::new(channel.clone()).max_decoding_message_size(answer_limit),
            stream: Grpc::new(channel).max_decoding_message_size(stream_limit),
        }
    }

    /// One unary request.
    pub(crate) async fn request(&self, payload: Payload) -> Result<Payload, Status> {
        let mut grpc = self.unary.clone();
        grpc.ready()
            .await
            .map_err(|err| Status::unavailable(format!("the connection is not ready: {err}")))?;
        let response = grpc
            .unary(
                tonic::Request::new(payload),
                http::uri::PathAndQuery::from_static(REQUEST),
                ProstCodec::<Payload, Payload>::default(),
            )
            .await?;
        Ok(response.into_inner())
    }

    /// Opens the bidirectional stream: `outbound` is what we send.
    pub(crate) async fn bi_stream(
        &self,
        outbound: impl Stream<Item = Payload> + Send + 'static,
    ) -> Result<Streaming<Payload>, Status> {
        let mut grpc = self.stream.clone();
        grpc.ready()
            .await
            .map_err(|err| Status::unavailable(format!("the connection is not ready: {err}")))?;
        let response = grpc
            .streaming(
                tonic::Request::new(outbound),
                http::uri::PathAndQuery::from_static(BI_STREAM),
                ProstCodec::<Payload, Payload>::default(),
            )
            .await?;
        Ok(response.into_inner())
    }
}

//! One HTTP/1.1 exchange over a fresh connection, spoken by hyper: the Nacos login and the
//! registrar's HTTP health check. An answer's body is read up to a cap, as bytes: nothing here
//! decodes text, and nothing grows past the cap whatever the server sends.

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body as _;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// Why an exchange failed. The texts say what went wrong, never what the server sent.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    /// No connection.
    #[error("cannot connect: {0}")]
    Connect(#[source] std::io::Error),
    /// The request could not be built (a path that is not a URI path, a bad header).
    #[error("not a valid request: {0}")]
    Request(#[source] http::Error),
    /// The connection failed, or the server's answer is not HTTP/1.1.
    #[error("{}", chain(.0))]
    Protocol(#[source] hyper::Error),
    /// The body is longer than the cap.
    #[error("the answer's body is over {limit} bytes")]
    TooLarge {
        /// The cap.
        limit: usize,
    },
}

/// What to do with the answer's body.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ReadBody {
    /// Read it, up to this many bytes; a longer body is [`HttpError::TooLarge`].
    // Read by the Nacos login only.
    #[cfg_attr(not(feature = "nacos"), allow(dead_code))]
    UpTo(usize),
    /// Only the status matters: the connection closes once the head is in.
    Skip,
}

/// An answer: its status and (unless skipped) its body.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: StatusCode,
    #[cfg_attr(not(feature = "nacos"), allow(dead_code))]
    pub body: Bytes,
}

/// A request without a body to `addr` (`host:port`).
pub(crate) fn request(method: Method, addr: &str, path: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, addr)
        .header(
            header::USER_AGENT,
            concat!("service-registry/", env!("CARGO_PKG_VERSION")),
        )
}

/// Sends `request` (built by [`request`]) with `body` over a new TCP connection to `addr`.
/// The caller bounds the time.
pub(crate) async fn send(
    addr: &str,
    request: http::request::Builder,
    body: Bytes,
    read: ReadBody,
) -> Result<Answer, HttpError> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(HttpError::Connect)?;
    let _ = stream.set_nodelay(true);
    exchange(stream, request, body, read).await
}

/// One request and its answer on `io`, which closes when this returns.
pub(crate) async fn exchange<IO>(
    io: IO,
    request: http::request::Builder,
    body: Bytes,
    read: ReadBody,
) -> Result<Answer, HttpError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let length = body.len();
    let request = request
        .header(header::CONTENT_LENGTH, length)
        .body(Full::new(body))
        .map_err(HttpError::Request)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(HttpError::Protocol)?;
    let answer = async move {
        let response = sender
            .send_request(request)
            .await
            .map_err(HttpError::Protocol)?;
        let (head, body) = response.into_parts();
        let body = match read {
            ReadBody::Skip => Bytes::new(),
            // A body that says it is longer than the cap is refused before it is read.
            ReadBody::UpTo(limit) if body.size_hint().lower() > limit as u64 => {
                return Err(HttpError::TooLarge { limit })
            }
            ReadBody::UpTo(limit) => Limited::new(body, limit)
                .collect()
                .await
                .map_err(|err| match err.downcast::<hyper::Error>() {
                    Ok(err) => HttpError::Protocol(*err),
                    // `Limited`'s own error: the body is over the cap.
                    Err(_) => HttpError::TooLarge { limit },
                })?
                .to_bytes(),
        };
        Ok(Answer {
            status: head.status,
            body,
        })
    };
    // The connection is driven here, not in a task of its own: it ends with this call. It may
    // finish before the last of the body has been taken; the answer then still completes (or
    // fails with the connection's error).
    tokio::pin!(answer);
    tokio::select! {
        answer = &mut answer => answer,
        _ = connection => answer.await,
    }
}

/// An error and its sources, for messages.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

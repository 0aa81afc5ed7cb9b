//! Logging in to Nacos: secrets never shown, login answers read by a real HTTP client (bounded,
//! byte-exact), and a word in the log when credentials go unencrypted.
//!
//! Bad answers come from a small loopback HTTP server of this file's own, which writes exactly
//! the bytes a test gives it; everything else runs against a real Nacos (rnacos).
#![cfg(feature = "nacos")]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use service_registry::nacos::{NacosConfig, NacosDiscovery, NacosRegistry};
use service_registry::{Backoff, Discovery, Health, Info, Registry};
use tests::fixtures::nacos::Nacos;
use tests::poll;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const PASSWORD: &str = "pw-S3cr3t-8d41";
const TOKEN: &str = "tok-5f3a9c77e1";

/// The login answer's cap in the library (`nacos/auth.rs`).
const LOGIN_ANSWER_LIMIT: usize = 64 * 1024;

/// What the loopback server answers to each login.
#[derive(Clone)]
enum Answer {
    /// These bytes, then the connection closes.
    Bytes(Vec<u8>),
    /// A `200` with a chunked body that never ends (until the client goes).
    Endless,
}

/// A loopback HTTP server that answers every request with the same bytes, and counts them.
struct LoginServer {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LoginServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LoginServer {
    async fn start(answer: Answer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let answer = answer.clone();
                let counted = counted.clone();
                tokio::spawn(async move {
                    // The request: its head, then its Content-Length of body.
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    let complete = |r: &[u8]| {
                        let text = String::from_utf8_lossy(r).to_ascii_lowercase();
                        let Some(end) = text.find("\r\n\r\n") else {
                            return false;
                        };
                        let length = text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        r.len() >= end + 4 + length
                    };
                    while !complete(&request) {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    counted.fetch_add(1, Ordering::SeqCst);
                    match answer {
                        Answer::Bytes(bytes) => {
                            let _ = socket.write_all(&bytes).await;
                        }
                        Answer::Endless => {
                            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
                            if socket.write_all(head.as_bytes()).await.is_err() {
                                return;
                            }
                            let chunk = format!("1000\r\n{}\r\n", "a".repeat(0x1000));
                            while socket.write_all(chunk.as_bytes()).await.is_ok() {}
                        }
                    }
                    let _ = socket.shutdown().await;
                });
            }
        });
        Self {
            addr,
            requests,
            task,
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// A `200` whose chunked body is `chunks`.
fn chunked(chunks: &[&[u8]]) -> Vec<u8> {
    let mut out =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
            .to_vec();
    for chunk in chunks {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// Logs in at `login` (the loopback server) and speaks gRPC to `grpc_port`.
fn config(login: SocketAddr, grpc_port: u16) -> NacosConfig {
    NacosConfig::new("127.0.0.1", login.port())
        .grpc_port(grpc_port)
        .user("admin", PASSWORD)
        .heartbeat(Duration::from_secs(1))
        .request_timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(2))
        .backoff(Backoff::new(
            Duration::from_millis(50),
            Duration::from_millis(200),
        ))
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    tests::fixtures::free_port()
}

fn assert_no_secret(text: &str) {
    assert!(!text.contains(PASSWORD), "the password shows: {text}");
    assert!(!text.contains(TOKEN), "the token shows: {text}");
}

#[tokio::test]
async fn a_login_answer_chunked_inside_a_character_is_read_whole() {
    // "é" is C3 A9: the first chunk ends between the two bytes. The answer is good, and the
    // login must succeed with it: rnacos without auth then takes any token.
    let nacos = Nacos::start().await;
    let body_a = format!(r#"{{"accessToken":"{TOKEN}","tokenTtl":3600,"username":"Andr"#);
    let mut first = body_a.into_bytes();
    first.push(0xC3);
    let second: &[u8] = b"\xA9\"}";
    let server = LoginServer::start(Answer::Bytes(chunked(&[&first, second]))).await;
    let discovery = NacosDiscovery::new(config(server.addr, nacos.grpc_port));
    let found = discovery.resolve("auth.split").await;
    assert!(found.is_ok(), "{:?}", found.unwrap_err());
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn a_login_answer_that_is_not_utf8_is_an_error_not_a_panic() {
    for (what, answer) in [
        (
            "200, chunked",
            chunked(&[b"{\"accessToken\":\"", b"\xff\xfe", b"\"}"]),
        ),
        (
            "403, chunked",
            b"HTTP/1.1 403 Forbidden\r\ntransfer-encoding: chunked\r\n\r\n2\r\n\xff\xff\r\n0\r\n\r\n"
                .to_vec(),
        ),
        (
            "200, plain",
            b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n\xc3\x28\xa0\xa1".to_vec(),
        ),
    ] {
        let server = LoginServer::start(Answer::Bytes(answer)).await;
        let discovery = NacosDiscovery::new(config(server.addr, closed_port()));
        let err = discovery.resolve("auth.utf8").await.unwrap_err();
        let text = format!("{err} {err:?}");
        println!("{what}: {err}");
        assert!(
            text.contains("unusable answer") || text.contains("refused the credentials"),
            "{what}: {text}"
        );
        assert!(text.contains("`admin`"), "{what}: names the user: {text}");
        assert_no_secret(&text);
    }
}

#[tokio::test]
async fn a_login_answer_over_the_cap_is_an_error_at_the_cap() {
    let server = LoginServer::start(Answer::Endless).await;
    let discovery = NacosDiscovery::new(config(server.addr, closed_port()));
    let started = Instant::now();
    let err = discovery.resolve("auth.endless").await.unwrap_err();
    let took = started.elapsed();
    println!("an endless login answer: {err} (after {took:?})");
    let text = err.to_string();
    assert!(
        text.contains(&format!("over {LOGIN_ANSWER_LIMIT} bytes")),
        "cut at the cap, not at the request timeout: {text}"
    );
    // A body that merely claims to be large is refused before it is read.
    let server = LoginServer::start(Answer::Bytes(
        b"HTTP/1.1 200 OK\r\ncontent-length: 1073741824\r\n\r\n{".to_vec(),
    ))
    .await;
    let discovery = NacosDiscovery::new(config(server.addr, closed_port()));
    let err = discovery.resolve("auth.claimed").await.unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("over {LOGIN_ANSWER_LIMIT} bytes")),
        "{err}"
    );
}

#[tokio::test]
async fn a_bad_login_answer_leaves_the_registry_retrying() {
    // The connection task must survive any answer: it logs in again, with backoff, and says why
    // it cannot connect.
    let answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n\xff\xff\r\n0\r\n\r\n";
    let server = LoginServer::start(Answer::Bytes(answer.to_vec())).await;
    let registry = NacosRegistry::new(config(server.addr, closed_port())).unwrap();
    let info = Info::new("auth.retry", "127.0.0.1:7001".parse().unwrap());
    let err = registry.register(&info).await.unwrap_err();
    assert_no_secret(&format!("{err} {err:?}"));
    poll::until(
        Duration::from_secs(10),
        "three logins (the task retries)",
        || async { (server.requests() >= 3).then_some(()) },
    )
    .await;
    let health = registry.health().unwrap().borrow().clone();
    let Health::Recovering { last_error, .. } = &health else {
        panic!("{health:?}")
    };
    assert!(last_error.contains("unusable answer"), "{last_error}");
    assert_no_secret(&format!("{health:?}"));
    registry.close().await;
}

#[tokio::test]
async fn no_login_error_copies_the_token_of_the_answer() {
    for answer in [
        // A good token with a TTL that is not a number: serde's message would quote it.
        format!(r#"{{"accessToken":"{TOKEN}","tokenTtl":"{TOKEN}"}}"#),
        // Cut short.
        format!(r#"{{"accessToken":"{TOKEN}""#),
        // A proxy's page that happens to carry it.
        format!("<html>{TOKEN}</html>"),
    ] {
        let bytes = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        );
        let server = LoginServer::start(Answer::Bytes(bytes.into_bytes())).await;
        let discovery = NacosDiscovery::new(config(server.addr, closed_port()));
        let err = discovery.resolve("auth.token").await.unwrap_err();
        println!("{err}");
        assert!(err.to_string().contains("unusable answer"), "{err}");
        assert_no_secret(&format!("{err} {err:?}"));
    }
    // A refusal that carries a token is not quoted either.
    let body = format!(r#"{{"message":"denied","accessToken":"{TOKEN}"}}"#);
    let bytes = format!(
        "HTTP/1.1 403 Forbidden\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let server = LoginServer::start(Answer::Bytes(bytes.into_bytes())).await;
    let discovery = NacosDiscovery::new(config(server.addr, closed_port()));
    let err = discovery.resolve("auth.token").await.unwrap_err();
    assert!(err
        .to_string()
        .contains("refused the credentials of user `admin`"));
    assert_no_secret(&format!("{err} {err:?}"));
}

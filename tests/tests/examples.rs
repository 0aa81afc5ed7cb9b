//! Runs the built examples as a user would and checks what they print.

use std::net::SocketAddr;

use tests::child::{example_command, next_line, registered_at, spawn_lines, success_output};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn quickstart_prints_the_reply_and_exits_zero() {
    let stdout = success_output(example_command("quickstart").env_remove("IDC")).await;
    assert!(stdout.contains("echo replied: hello, registry"), "{stdout}");
    assert!(stdout.contains(r#"tags {"idc": "hz"}"#), "{stdout}");
    assert!(
        stdout.contains("after shutdown the registry lists 0 services"),
        "{stdout}"
    );
}

/// The whole response to `GET <path>` with `Connection: close`.
async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn axum_server_registers_serves_and_stops_cleanly() {
    let (mut child, mut lines) = spawn_lines(
        example_command("axum_server")
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("SERVICE_REGISTRY_DRAIN_DELAY", "200ms")
            .env("RUST_LOG", "warn"),
    );
    // The first line appears once registered; the child is killed when the test panics.
    let (service, addr) = registered_at(&next_line(&mut lines).await);
    assert_eq!(service, "web.hello");
    assert!(http_get(addr, "/hello")
        .await
        .ends_with("hello from axum\n"));
    assert!(http_get(addr, "/quit").await.ends_with("bye\n"));
    assert_eq!(next_line(&mut lines).await, "deregistered and stopped");
    assert!(child.wait().await.unwrap().success());
}

#[tokio::test]
async fn tonic_greeter_spreads_by_weight_and_survives_stop_and_kill() {
    let stdout =
        success_output(example_command("tonic_greeter").env_remove("ETCD_ENDPOINTS")).await;
    assert!(stdout.contains("registry: in memory"), "{stdout}");
    assert!(
        stdout.contains("discovered 3 greeter instances"),
        "{stdout}"
    );
    assert!(
        stdout.contains("graceful stop of c:") && stdout.contains(", 0 errors\n"),
        "{stdout}"
    );
    assert!(stdout.contains("kill of b:"), "{stdout}");
    assert!(
        stdout.contains("balance_channel: 300 calls") && stdout.contains("all ok: true"),
        "{stdout}"
    );
    assert!(stdout.trim_end().ends_with("ok"), "{stdout}");
}

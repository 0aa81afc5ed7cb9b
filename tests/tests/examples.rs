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
    http(addr, "GET", path).await
}

/// The whole response to `<method> <path>` with `Connection: close`.
async fn http(addr: SocketAddr, method: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
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
        stdout.contains("ejected after the kill: [\"127.0.0.1:"),
        "the killed server is ejected: {stdout}"
    );
    assert!(
        stdout.contains("balance_channel: 300 calls") && stdout.contains("all ok: true"),
        "{stdout}"
    );
    assert!(stdout.trim_end().ends_with("ok"), "{stdout}");
}

/// The value of the Prometheus sample `name{labels}` (labels in the exporter's order), if any.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// Polls `GET path` until `done` holds for the body, or panics after 10 s.
async fn http_until(
    addr: SocketAddr,
    path: &str,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    tests::poll::until(std::time::Duration::from_secs(10), what, || async {
        let body = http_get(addr, path).await;
        done(&body).then_some(body)
    })
    .await
}

/// The admin example: readiness gate, HTTP health check, out-of-service and weight routes, a
/// JSON status view and Prometheus metrics whose figures move with what happens.
#[tokio::test]
async fn admin_example_exports_metrics_and_takes_the_service_out_and_back() {
    let (mut child, mut lines) = spawn_lines(
        example_command("admin")
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("SERVICE_REGISTRY_DRAIN_DELAY", "100ms")
            .env("WARMUP_MS", "200")
            .env_remove("ETCD_ENDPOINTS")
            .env("RUST_LOG", "warn"),
    );
    let admin: SocketAddr = next_line(&mut lines)
        .await
        .strip_prefix("admin at ")
        .unwrap()
        .parse()
        .unwrap();
    let (service, _addr) = registered_at(&next_line(&mut lines).await);
    assert_eq!(service, "admin.demo");
    let registered = r#"service_registry_registrations{registry="memory",state="registered"}"#;
    let out = r#"service_registry_registrations{registry="memory",state="out_of_service"}"#;
    let attempts =
        r#"service_registry_register_attempts_total{registry="memory",service="admin.demo"}"#;
    let deregisters =
        r#"service_registry_deregister_attempts_total{registry="memory",service="admin.demo"}"#;
    let metrics = http_until(admin, "/metrics", "registered in the metrics", |m| {
        sample(m, registered) == Some(1.0)
    })
    .await;
    assert_eq!(sample(&metrics, attempts), Some(1.0), "{metrics}");
    assert!(http_get(admin, "/status")
        .await
        .ends_with(r#"{"admin.demo":{"memory":{"state":"registered"}}}"#));

    assert!(http(admin, "POST", "/services/admin.demo/out")
        .await
        .contains("200 OK"));
    http_until(admin, "/status", "out of service", |s| {
        s.contains("out_of_service")
    })
    .await;
    let metrics = http_get(admin, "/metrics").await;
    assert_eq!(sample(&metrics, out), Some(1.0), "{metrics}");
    assert_eq!(sample(&metrics, registered), Some(0.0), "{metrics}");
    assert_eq!(sample(&metrics, deregisters), Some(1.0), "{metrics}");

    assert!(http(admin, "POST", "/services/admin.demo/weight/50")
        .await
        .contains("200 OK"));
    assert!(http(admin, "POST", "/services/admin.demo/weight/0")
        .await
        .contains("400 Bad Request"));
    assert!(http(admin, "POST", "/services/admin.demo/in")
        .await
        .contains("200 OK"));
    let metrics = http_until(admin, "/metrics", "registered again", |m| {
        sample(m, registered) == Some(1.0)
    })
    .await;
    assert_eq!(sample(&metrics, attempts), Some(2.0), "{metrics}");

    // The health check (every 500 ms, 2 failures) withdraws the service, then restores it.
    assert!(http(admin, "POST", "/health/down").await.contains("200 OK"));
    http_until(admin, "/status", "unhealthy", |s| {
        s.contains(r#""state":"unhealthy""#)
    })
    .await;
    assert!(http(admin, "POST", "/health/up").await.contains("200 OK"));
    http_until(admin, "/status", "registered after recovery", |s| {
        s.ends_with(r#"{"admin.demo":{"memory":{"state":"registered"}}}"#)
    })
    .await;

    tests::child::terminate(&child);
    assert_eq!(next_line(&mut lines).await, "deregistered and stopped");
    assert!(child.wait().await.unwrap().success());
}

//! Runs the built examples as a user would and checks what they print.

use std::path::PathBuf;
use std::process::Command;

/// `target/<profile>/examples/<name>`, next to this test's own binary in `target/<profile>/deps`.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: `cargo test --workspace` builds the examples",
        path.display()
    );
    path
}

#[test]
fn quickstart_prints_the_reply_and_exits_zero() {
    let out = Command::new(example("quickstart"))
        .env_remove("IDC")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("echo replied: hello, registry"), "{stdout}");
    assert!(stdout.contains(r#"tags {"idc": "hz"}"#), "{stdout}");
    assert!(
        stdout.contains("after shutdown the registry lists 0 services"),
        "{stdout}"
    );
}

#[test]
fn axum_server_registers_serves_and_stops_cleanly() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream;

    let mut child = Command::new(example("axum_server"))
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // The first line appears once registered; reading blocks until then (the child is killed
    // by the assertion below if it never comes).
    let first = lines.next().unwrap().unwrap();
    let addr = first
        .strip_prefix("registered web.hello at ")
        .unwrap_or_else(|| {
            let _ = child.kill();
            panic!("unexpected first line: {first}")
        });
    let http_get = |path: &str| {
        let mut stream = TcpStream::connect(addr).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    };
    assert!(http_get("/hello").ends_with("hello from axum\n"));
    assert!(http_get("/quit").ends_with("bye\n"));
    assert_eq!(lines.next().unwrap().unwrap(), "deregistered and stopped");
    assert!(child.wait().unwrap().success());
}

#[test]
fn tonic_greeter_spreads_by_weight_and_survives_stop_and_kill() {
    let out = Command::new(example("tonic_greeter"))
        .env_remove("ETCD_ENDPOINTS")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
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

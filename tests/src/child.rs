//! Running the built example binaries as child processes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, Command};

/// `target/<profile>/examples/<name>`, next to the running test binary in `target/<profile>/deps`.
pub fn example_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: `cargo test --workspace --all-features` builds it",
        path.display()
    );
    path
}

/// The next stdout line of a child, within 20 s.
pub async fn next_line<R: AsyncBufRead + Unpin>(lines: &mut Lines<R>) -> String {
    tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
}

/// Spawns a backend example with `env` and `LISTEN_ADDR=127.0.0.1:0`, and waits for its two
/// `registered <service> at <addr>` lines.
pub async fn spawn_example(
    name: &str,
    env: &[(&str, String)],
) -> (Child, Vec<(String, SocketAddr)>) {
    let mut command = Command::new(example_path(name));
    command
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut registered = Vec::new();
    while registered.len() < 2 {
        let line = next_line(&mut lines).await;
        let rest = line
            .strip_prefix("registered ")
            .unwrap_or_else(|| panic!("unexpected line {line}"));
        let (service, addr) = rest.split_once(" at ").unwrap();
        registered.push((service.to_string(), addr.parse().unwrap()));
    }
    // Keep reading so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, registered)
}

/// Sends SIGTERM to a child.
pub fn terminate(child: &Child) {
    let pid = child.id().expect("the child is running");
    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

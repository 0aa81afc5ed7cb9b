//! Running the built example binaries as child processes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

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

/// A command running example `name` with stdout piped, killed if the test drops it.
pub fn example_command(name: &str) -> Command {
    let mut command = Command::new(example_path(name));
    command.stdout(Stdio::piped()).kill_on_drop(true);
    command
}

/// Spawns `command` (stdout piped, as [`example_command`] sets it) and returns its stdout lines.
pub fn spawn_lines(command: &mut Command) -> (Child, Lines<BufReader<ChildStdout>>) {
    let mut child = command.spawn().unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

/// Runs `command` to the end, asserts that it exited zero and returns its stdout.
pub async fn success_output(command: &mut Command) -> String {
    let out = command.output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The next stdout line of a child, within 20 s.
pub async fn next_line<R: AsyncBufRead + Unpin>(lines: &mut Lines<R>) -> String {
    tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
}

/// The service and address of an example's `registered <service> at <addr>` line.
pub fn registered_at(line: &str) -> (String, SocketAddr) {
    parse_registered(line).unwrap_or_else(|| panic!("unexpected line {line}"))
}

/// [`registered_at`], or `None` for another line.
fn parse_registered(line: &str) -> Option<(String, SocketAddr)> {
    let (service, addr) = line.strip_prefix("registered ")?.split_once(" at ")?;
    Some((service.to_string(), addr.parse().ok()?))
}

/// Spawns a backend example with `env`, `LISTEN_ADDR=127.0.0.1:0` and no drain delay (unless
/// `env` sets one), and waits for its two
/// `registered <service> at <addr>` lines.
pub async fn spawn_example(
    name: &str,
    env: &[(&str, String)],
) -> (Child, Vec<(String, SocketAddr)>) {
    let mut command = example_command(name);
    // No drain after SIGTERM unless the test sets one (tests/tests/drain.rs covers the drain).
    command.env("SERVICE_REGISTRY_DRAIN_DELAY", "0");
    for (key, value) in env {
        command.env(key, value);
    }
    spawn_registered(&mut command)
        .await
        .unwrap_or_else(|err| panic!("example {name}: {err}"))
}

/// Spawns `command` (its stdout piped) with `LISTEN_ADDR=127.0.0.1:0` and waits (20 s at most
/// for each line) for two `registered <service> at <addr>` lines, passing over other lines;
/// then keeps reading its stdout, so that the child never blocks on a full pipe.
pub async fn spawn_registered(
    command: &mut Command,
) -> Result<(Child, Vec<(String, SocketAddr)>), String> {
    let mut child = command
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|err| format!("spawn: {err}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut registered = Vec::new();
    while registered.len() < 2 {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .map_err(|_| "printed nothing for 20 s".to_string())?
            .map_err(|err| err.to_string())?
            .ok_or("exited before registering")?;
        registered.extend(parse_registered(&line));
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, registered))
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

//! The Volo examples on Nacos (issue 19): `volo_greeter_server` (volo-grpc) and
//! `volo_echo_server` (volo-thrift) started with `VOLO_REGISTRY=nacos` and Nacos' own variables
//! (`serverAddr`, `serverPort`, `NACOS_GRPC_PORT`) against a real r-nacos register there, a Volo
//! client that finds them only through `VoloDiscover` over a `NacosDiscovery` reaches both, and
//! after SIGTERM each exits cleanly and is gone from Nacos' own instance list.
//!
//! Build the examples first: `cargo build -p examples --features volo,etcd,nacos --examples`
//! (`cargo test --workspace --all-features` does).
#![cfg(all(feature = "volo", feature = "nacos"))]

mod volo_support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use examples::volo_common::{echo, ECHO, GREETER};
use service_registry::nacos::{NacosConfig, NacosDiscovery};
use service_registry::volo::{VoloBalance, VoloDiscover};
use service_registry::Discovery;
use tests::child::{example_command, next_line, registered_at, spawn_lines, terminate};
use tests::fixtures::nacos::Nacos;
use tokio::process::Child;
use volo::FastStr;
use volo_support::{client, hello, ping};

/// Spawns example `name` registering into `nacos` through its environment variables alone.
async fn spawn_server(name: &str, nacos: &Nacos) -> (Child, SocketAddr) {
    let mut command = example_command(name);
    command
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("VOLO_REGISTRY", "nacos")
        .env("serverAddr", "127.0.0.1")
        .env("serverPort", nacos.http_port.to_string())
        .env("NACOS_GRPC_PORT", nacos.grpc_port.to_string())
        .env("SERVICE_REGISTRY_DRAIN_DELAY", "0")
        .env_remove("ETCD_ENDPOINTS");
    let (child, mut lines) = spawn_lines(&mut command);
    let (_, addr) = registered_at(&next_line(&mut lines).await);
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

fn discovery(nacos: &Nacos) -> Arc<dyn Discovery> {
    let config = NacosConfig::new("127.0.0.1", nacos.http_port).grpc_port(nacos.grpc_port);
    Arc::new(NacosDiscovery::new(config))
}

/// Calls `call` until every one of `servers` has answered (20 s at most).
async fn until_all_answer<F, Fut>(what: &str, servers: &[SocketAddr], call: F) -> usize
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<String, String>>,
{
    let want: BTreeSet<String> = servers.iter().map(SocketAddr::to_string).collect();
    let mut answered = BTreeSet::new();
    let (mut calls, mut last_error) = (0, None);
    let deadline = Instant::now() + Duration::from_secs(20);
    while answered != want {
        assert!(
            Instant::now() < deadline,
            "{what}: answered {answered:?} of {want:?}; last error {last_error:?}"
        );
        calls += 1;
        match call().await {
            Ok(server) => {
                answered.insert(server);
            }
            Err(err) => last_error = Some(err),
        }
    }
    calls
}

/// SIGTERM to `child`: it exits with success, and Nacos lists only `left` for `service` then.
async fn stop(what: &str, nacos: &Nacos, service: &str, mut child: Child, left: &[u16]) {
    terminate(&child);
    let exit = tokio::time::timeout(Duration::from_secs(45), child.wait())
        .await
        .unwrap_or_else(|_| panic!("{what} exits within 45 s of SIGTERM"))
        .unwrap();
    assert!(exit.success(), "{what}: {exit:?}");
    tests::poll::until(
        Duration::from_secs(5),
        &format!("{what} gone from Nacos"),
        || async { (nacos.ports(service).await == left).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn the_volo_grpc_example_registers_in_nacos_and_is_found_through_it() {
    let nacos = Nacos::start().await;
    let (a, a_addr) = spawn_server("volo_greeter_server", &nacos).await;
    let (b, b_addr) = spawn_server("volo_greeter_server", &nacos).await;
    let mut both = vec![a_addr.port(), b_addr.port()];
    both.sort_unstable();
    assert_eq!(nacos.ports(GREETER).await, both, "Nacos' own list");

    let (client, _balance) = client(discovery(&nacos), GREETER);
    let calls = until_all_answer("volo-grpc over Nacos", &[a_addr, b_addr], || {
        let client = client.clone();
        async move { hello(&client).await }
    })
    .await;
    println!("volo-grpc over Nacos: both servers answered within {calls} calls");

    stop("the first greeter", &nacos, GREETER, a, &[b_addr.port()]).await;
    stop("the second greeter", &nacos, GREETER, b, &[]).await;
}

#[tokio::test]
async fn the_volo_thrift_example_registers_in_nacos_and_is_found_through_it() {
    let nacos = Nacos::start().await;
    let (a, a_addr) = spawn_server("volo_echo_server", &nacos).await;
    let (b, b_addr) = spawn_server("volo_echo_server", &nacos).await;
    let mut both = vec![a_addr.port(), b_addr.port()];
    both.sort_unstable();
    assert_eq!(nacos.ports(ECHO).await, both, "Nacos' own list");

    let balance: VoloBalance<FastStr> = VoloBalance::default();
    let client = echo::EchoClientBuilder::new(ECHO)
        .load_balance(balance)
        .discover(VoloDiscover::new(discovery(&nacos)))
        .build();
    let calls = until_all_answer("volo-thrift over Nacos", &[a_addr, b_addr], || {
        let client = client.clone();
        async move { ping(&client).await }
    })
    .await;
    println!("volo-thrift over Nacos: both servers answered within {calls} calls");

    stop("the first echo server", &nacos, ECHO, a, &[b_addr.port()]).await;
    stop("the second echo server", &nacos, ECHO, b, &[]).await;
}

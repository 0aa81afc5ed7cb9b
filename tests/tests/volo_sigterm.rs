//! SIGTERM of a Volo server under a steady stream of calls from a Volo client (issue 19,
//! part 3). The servers are the examples `volo_greeter_server` (volo-grpc, the registrar handles
//! the signal) and `volo_echo_server` (volo-thrift, which handles signals itself; the registrar
//! follows through its shutdown hook), registered into a real etcd. The client finds them only
//! through `VoloDiscover` over an `EtcdDiscovery`, whose view lags etcd by [`LAG`] each way (a
//! loopback proxy between the client and etcd, as for a client far from etcd or an etcd slow to
//! notify).
//!
//! With a drain (1 s, longer than the lag) no call fails: the leaving server deregisters, keeps
//! serving until the client has seen it go, then stops. With the drain set to 0 the server stops
//! right after it deregisters, while the client still picks it for about [`LAG`]: calls fail.
//! (With a client next to etcd the removal reaches the client before the deregistration's reply
//! reaches the server, so even drain 0 loses nothing there; the lag is what the drain is for.)
//!
//! Build the examples first: `cargo build -p examples --features volo,etcd --examples`.
#![cfg(all(feature = "volo", feature = "etcd"))]

mod volo_support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use examples::volo_common::{echo, ECHO, GREETER};
use service_registry::volo::{VoloBalance, VoloDiscover};
use tests::child::{example_command, next_line, registered_at, spawn_lines, terminate};
use tests::fixtures::etcd::Etcd;
use tokio::process::Child;
use volo::FastStr;
use volo_support::{client, hello, holds, lagging_discovery, ping};

const CALLERS: usize = 4;
/// How late the client's view of etcd is, each way.
const LAG: Duration = Duration::from_millis(150);

/// Spawns example `name` registering into `etcd` with `drain`; its registered address.
async fn spawn_server(name: &str, etcd: &Etcd, drain: &str) -> (Child, SocketAddr) {
    let mut command = example_command(name);
    command
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("ETCD_ENDPOINTS", etcd.endpoint())
        .env("SERVICE_REGISTRY_DRAIN_DELAY", drain);
    let (child, mut lines) = spawn_lines(&mut command);
    let (_, addr) = registered_at(&next_line(&mut lines).await);
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    failed: Vec<String>,
}

/// Runs `CALLERS` callers of `call` until `stop`, counting results.
fn callers<F, Fut>(
    call: F,
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
) -> Vec<tokio::task::JoinHandle<()>>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<String, String>> + Send,
{
    (0..CALLERS)
        .map(|_| {
            let (call, stop, tally) = (call.clone(), stop.clone(), tally.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let result = call().await;
                    {
                        let mut tally = tally.lock().unwrap();
                        match result {
                            Ok(_) => tally.ok += 1,
                            Err(err) => tally.failed.push(err),
                        }
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect()
}

/// One round: a staying and a leaving server of `example`, calls from a client built by
/// `make_call`, SIGTERM to the leaving one; returns the tally and the time from SIGTERM to the
/// client seeing the removal.
async fn round<F, Fut>(
    etcd: &Etcd,
    example: &str,
    drain: &str,
    service: &str,
    balance: &VoloBalance<FastStr>,
    call: F,
) -> (Tally, Duration)
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<String, String>> + Send,
{
    let (mut staying, staying_addr) = spawn_server(example, etcd, "0").await;
    let (mut leaving, leaving_addr) = spawn_server(example, etcd, drain).await;
    // Both in the client's balancer and both answering.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut answered = std::collections::BTreeSet::new();
    let mut last_error = None;
    while answered.len() < 2 || !holds(balance, service, leaving_addr) {
        let held = balance
            .balancer(&FastStr::new(service))
            .map(|b| b.instances().iter().map(|i| i.addr).collect::<Vec<_>>());
        assert!(
            Instant::now() < deadline,
            "{example}: both servers never answered: answered {answered:?}, balancer {held:?}, \
             staying {staying_addr}, leaving {leaving_addr}, last error {last_error:?}"
        );
        match call().await {
            Ok(server) => {
                answered.insert(server);
            }
            Err(err) => last_error = Some(err),
        }
    }
    assert!(answered.contains(&staying_addr.to_string()));

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let tasks = callers(call.clone(), stop.clone(), tally.clone());
    tokio::time::sleep(Duration::from_millis(300)).await; // traffic on both before the signal
    let signalled = Instant::now();
    terminate(&leaving);
    tests::poll::until(
        Duration::from_secs(20),
        "the client sees the removal",
        || async { (!holds(balance, service, leaving_addr)).then_some(()) },
    )
    .await;
    let seen_after = signalled.elapsed();
    let exit = tokio::time::timeout(Duration::from_secs(45), leaving.wait())
        .await
        .expect("the leaving server exits within 45 s")
        .unwrap();
    assert!(exit.success(), "{example}: {exit:?}");
    tokio::time::sleep(Duration::from_millis(300)).await; // traffic after the exit
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.unwrap();
    }
    terminate(&staying);
    let _ = tokio::time::timeout(Duration::from_secs(45), staying.wait()).await;
    let tally = std::mem::take(&mut *tally.lock().unwrap());
    (tally, seen_after)
}

/// Two rounds of `example` under calls from `call`: with a 1 s drain (no call may fail) and
/// with none (calls must fail, or the test could not tell the drain's effect).
async fn drained_and_cut<F, Fut>(
    kind: &str,
    etcd: &Etcd,
    example: &str,
    service: &str,
    balance: &VoloBalance<FastStr>,
    call: F,
) where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<String, String>> + Send,
{
    let (drained, drained_seen) = round(etcd, example, "1s", service, balance, call.clone()).await;
    let (cut, cut_seen) = round(etcd, example, "0", service, balance, call).await;
    eprintln!(
        "{kind}, drain 1 s: {} calls, {} failed, removal seen {drained_seen:?} after SIGTERM; \
         drain 0: {} calls, {} failed (first: {:?}), removal seen {cut_seen:?} after SIGTERM",
        drained.ok + drained.failed.len(),
        drained.failed.len(),
        cut.ok + cut.failed.len(),
        cut.failed.len(),
        cut.failed.first(),
    );
    assert!(
        drained.failed.is_empty(),
        "{kind} with the drain: {:?}",
        drained.failed
    );
    assert!(
        drained.ok > 100,
        "{kind}: too few calls to mean anything: {}",
        drained.ok
    );
    assert!(
        !cut.failed.is_empty(),
        "{kind} with drain 0: no call failed either, the test cannot tell the drain's effect"
    );
}

#[tokio::test]
async fn sigterm_of_a_volo_grpc_server_fails_no_call_with_the_drain() {
    let etcd = Etcd::start().await;
    let (_proxy, discovery) = lagging_discovery(&etcd, LAG).await;
    let (client, balance) = client(discovery, GREETER);
    let call = move || {
        let client = client.clone();
        async move { hello(&client).await }
    };
    drained_and_cut(
        "volo-grpc",
        &etcd,
        "volo_greeter_server",
        GREETER,
        &balance,
        call,
    )
    .await;
}

#[tokio::test]
async fn sigterm_of_a_volo_thrift_server_fails_no_call_with_the_drain() {
    let etcd = Etcd::start().await;
    let (_proxy, discovery) = lagging_discovery(&etcd, LAG).await;
    let discover = VoloDiscover::new(discovery);
    let balance = VoloBalance::default();
    let client = echo::EchoClientBuilder::new(ECHO)
        .load_balance(balance.clone())
        .discover(discover)
        .retry_count(0)
        .build();
    let call = move || {
        let client = client.clone();
        async move { ping(&client).await }
    };
    drained_and_cut(
        "volo-thrift",
        &etcd,
        "volo_echo_server",
        ECHO,
        &balance,
        call,
    )
    .await;
}
